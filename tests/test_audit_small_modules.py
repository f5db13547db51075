"""The audit package's small modules, tested directly: which backend a target names (``backends.py``), SQLite's
write transaction (``locking.py``) and what the SQLite store does when built by hand (``sqlite.py``: its defaults
and its refusals). The store tests go through all three, but only with SQLite paths (the server backend's tests
start a real PostgreSQL server; these need none), through ``open_store`` (which passes every setting), and with
transactions that succeed or fail in the store's own code."""

from __future__ import annotations

import json
import multiprocessing
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from imt_cds import Engine
from imt_cds.audit import AuditStoreError, NotAnAuditStoreError, RecordNotFoundError
from imt_cds.audit.backends import is_postgres_target
from imt_cds.audit.locking import write_transaction
from imt_cds.audit.sqlite import SQLiteAuditStore

EXAMPLE = json.loads((Path(__file__).resolve().parents[1] / "examples"
                      / "02_alk_positive_unresectable.json").read_text())


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


# --- the SQLite store built by hand ---------------------------------------------------------------------------------


def test_a_store_built_without_settings_keeps_the_input_and_waits_a_minute_for_the_write_lock(tmp_path):
    # The same defaults as open_store's and the documented 60 s of a batch run (the service passes its own, shorter).
    with SQLiteAuditStore(tmp_path / "audit.db") as store:
        Engine(audit=store).evaluate(EXAMPLE)
        assert store.record("last").input is not None
        assert store._db.get().execute("PRAGMA busy_timeout").fetchone() == (60_000,)
    with SQLiteAuditStore(tmp_path / "audit.db", timeout=2.5) as store:  # seconds, given to SQLite in milliseconds
        assert store._db.get().execute("PRAGMA busy_timeout").fetchone() == (2_500,)


def test_a_store_names_its_file_in_what_it_reports(tmp_path):
    path = tmp_path / "empty.db"
    with SQLiteAuditStore(path) as store:
        assert store.location == str(path)
        with pytest.raises(RecordNotFoundError, match=f"the audit trail in {re.escape(str(path))} is empty"):
            store.record("last")


def test_a_store_that_cannot_be_opened_says_which_file_and_why(tmp_path):
    missing = tmp_path / "missing.db"
    with pytest.raises(NotAnAuditStoreError, match=f"^no audit database at {re.escape(str(missing))}$"):
        SQLiteAuditStore(missing, create=False)
    with pytest.raises(NotAnAuditStoreError,
                       match=f"^cannot open the audit database {re.escape(str(tmp_path))}: unable to open"):
        SQLiteAuditStore(tmp_path)  # a folder: SQLite cannot open it as a file


def test_an_sqlite_database_of_something_else_is_named_and_left_alone(tmp_path):
    other = tmp_path / "other.db"
    connection = sqlite3.connect(other)
    connection.execute("CREATE TABLE patients (x)")
    connection.execute("CREATE TABLE orders (x)")
    connection.commit()
    connection.close()
    with pytest.raises(NotAnAuditStoreError, match=f"^{re.escape(str(other))} is an SQLite database of something "
                       r"else \(tables orders, patients\); refusing to add audit tables to it$"):
        SQLiteAuditStore(other)
    with pytest.raises(NotAnAuditStoreError,
                       match=f"^{re.escape(str(other))} is an SQLite database without imt-cds audit tables$"):
        SQLiteAuditStore(other, create=False)
    connection = sqlite3.connect(other)
    assert (connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
            == [("patients",), ("orders",)])
    connection.close()


def test_opening_a_store_needs_no_write_lock_but_a_locked_new_file_is_reported(tmp_path):
    path = tmp_path / "audit.db"
    SQLiteAuditStore(path).close()
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process appending: it holds the write lock
    try:
        SQLiteAuditStore(path, timeout=0.2).close()  # an existing store opens at once all the same
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    new = tmp_path / "new.db"
    holder = sqlite3.connect(new, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # nobody may even read it
    try:
        with pytest.raises(AuditStoreError, match=f"^cannot open the audit database {re.escape(str(new))}: "
                                                  "database is locked$"):
            SQLiteAuditStore(new, timeout=0.2)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def _open_in_a_thread(path: Path, timeout: float) -> tuple[threading.Thread, dict[str, Any]]:
    """Start opening a store in another thread; the dict gets its "store" or its "error"."""
    outcome: dict[str, Any] = {}

    def open_store() -> None:
        try:
            outcome["store"] = SQLiteAuditStore(path, timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    opening = threading.Thread(target=open_store)
    opening.start()
    return opening, outcome


def test_a_new_file_whose_tables_another_process_creates_meanwhile_is_opened_not_created_twice(tmp_path):
    # Two processes open the same new file at once: both see no tables; the one that gets the write lock second
    # must find the other's tables inside its own transaction and leave them alone. Here the other process is a
    # connection that holds the write lock while the store looks (reading is allowed), then creates the tables
    # exactly as a store does (copied from one) and commits.
    template = tmp_path / "template.db"
    SQLiteAuditStore(template).close()
    with sqlite3.connect(template) as source:
        schema = [sql for (sql,) in source.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL "
                                                   "ORDER BY rowid")]
        meta = source.execute("SELECT * FROM audit_meta").fetchall()
    source.close()
    path = tmp_path / "audit.db"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    opening, opened = _open_in_a_thread(path, timeout=30)
    time.sleep(1.0)  # the store has read the (empty) table list and waits for the lock to set up the file
    for sql in schema:
        other.execute(sql)
    other.executemany(f"INSERT INTO audit_meta VALUES ({', '.join('?' * len(meta[0]))})", meta)
    other.execute("COMMIT")
    other.close()
    opening.join(60)
    assert "error" not in opened, opened.get("error")
    store = opened["store"]
    try:
        store.append(Engine().evaluate(EXAMPLE))
        assert store.verify().ok
    finally:
        store.close()
    with sqlite3.connect(path) as check:
        assert check.execute("SELECT * FROM audit_meta").fetchall() == meta
    check.close()


def test_a_new_file_another_process_keeps_writing_is_reported_once_the_store_timeout_is_spent(tmp_path):
    # The wait for the journal-mode switch is bounded by the store's timeout: a new file whose write lock another
    # connection keeps is reported as locked, not waited for until the lock goes.
    path = tmp_path / "audit.db"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # reading stays allowed; the switch to WAL is not
    opening, outcome = _open_in_a_thread(path, timeout=0.5)
    opening.join(20)  # far beyond the half second it may take
    gave_up = not opening.is_alive()
    other.execute("ROLLBACK")
    other.close()
    opening.join(20)
    assert gave_up, "the store went on waiting past its timeout"
    assert str(outcome.get("error")) == f"cannot open the audit database {path}: database is locked"


def _open_and_close(path: Path, start: Any, answers: Any) -> None:
    start.wait()
    try:
        SQLiteAuditStore(path, timeout=30).close()
        answers.put("opened")
    except Exception as exc:  # noqa: BLE001 - reported to the test process
        answers.put(f"{type(exc).__name__}: {exc}")


def test_processes_opening_one_new_file_at_the_same_moment_all_get_the_store(tmp_path):
    # Several workers started together against a new audit file: each must open it, none may fail because another
    # is setting it up (the journal-mode switch is not covered by SQLite's busy timeout: seen 3 times in 30 rounds).
    context = multiprocessing.get_context("fork")
    for round_ in range(50):
        path = tmp_path / f"audit-{round_}.db"
        start, answers = context.Barrier(4), context.Queue()
        openers = [context.Process(target=_open_and_close, args=(path, start, answers)) for _ in range(4)]
        for opener in openers:
            opener.start()
        for opener in openers:
            opener.join(60)
        assert [answers.get(timeout=5) for _ in openers] == ["opened"] * 4, f"round {round_}"
        with SQLiteAuditStore(path, create=False) as store:
            assert store.verify().ok


def test_a_file_that_is_not_a_database_is_named(tmp_path):
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are not the records you are looking for\n" * 100)
    with pytest.raises(NotAnAuditStoreError, match=f"^{re.escape(str(path))} is not a usable audit database: "
                                                   "file is not a database$"):
        SQLiteAuditStore(path)


def test_a_record_is_found_by_any_prefix_of_its_id(tmp_path):
    # The lookup is a range from the prefix up (the prefix plus the highest character): every id that starts with
    # the prefix, whatever character comes next (a digit, a hyphen, a letter a-f), falls in it.
    with SQLiteAuditStore(tmp_path / "audit.db") as store:
        engine = Engine(audit=store)
        ids = []
        for _ in range(6):  # random ids: among them, prefixes followed by each kind of character
            engine.evaluate(EXAMPLE)
            ids.append(store.record("last").id)
        for record_id in ids:
            for length in range(8, len(record_id) + 1):
                assert store.record(record_id[:length]).id == record_id
