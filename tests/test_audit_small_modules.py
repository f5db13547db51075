"""The audit package's two smallest modules, tested directly: which backend a target names (``backends.py``) and
SQLite's write transaction (``locking.py``). The store tests go through both, but only with SQLite paths (the
server backend's tests start a real PostgreSQL server; these need none) and only with transactions that succeed or
fail in the store's own code."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from imt_cds.audit.backends import is_postgres_target
from imt_cds.audit.locking import write_transaction


@pytest.mark.parametrize(("target", "server"), [
    ("postgresql://cds@db.example.org:5432/audit", True),
    ("postgres://cds@db.example.org/audit", True),  # the short scheme libpq accepts too
    ("audit.db", False),
    ("data/postgresql/audit.db", False),  # a file path that merely contains the word
    ("postgresql", False),
    (Path("postgresql://cds@db/audit"), False),  # a Path is always a file
], ids=["server URL", "short scheme", "file", "file path with the word", "the bare word", "a Path"])  # ids without
# the backend's name: the mutation selections of the SQLite modules leave out tests named after it
def test_which_backend_a_target_names(target, server):
    assert is_postgres_target(target) is server


@pytest.fixture
def db(tmp_path):
    connection = sqlite3.connect(tmp_path / "lock.db", isolation_level=None)
    connection.execute("CREATE TABLE t (x)")
    yield connection
    connection.close()


def test_a_write_transaction_commits_what_it_wrote(db):
    with write_transaction(db):
        db.execute("INSERT INTO t VALUES (1)")
        assert db.in_transaction
    assert not db.in_transaction
    assert db.execute("SELECT count(*) FROM t").fetchone() == (1,)


def test_a_failed_write_transaction_is_rolled_back_and_its_own_error_raised(db):
    with pytest.raises(ValueError, match="the caller's own failure"):  # not an error of the rollback
        with write_transaction(db):
            db.execute("INSERT INTO t VALUES (1)")
            raise ValueError("the caller's own failure")
    assert not db.in_transaction
    assert db.execute("SELECT count(*) FROM t").fetchone() == (0,)
