"""What the two SQL backends share (audit/sql.py) that mutation testing found no test reading: the exact words of a
read or an append the database refuses, the hooks a SQL backend must supply, the archived files' digest kept per
store (one query per rulebook, not per append), and the statements' placeholders turned into the server driver's (the
SQLite tests cannot tell: their placeholder is the one the statements are written with)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from audit_support import new_database, raw_sql

from imt_cds import Engine
from imt_cds.audit import AuditStoreError, open_store
from imt_cds.audit.sql import SQLAuditStore

ROOT = Path(__file__).resolve().parents[1]
ALK = json.loads((ROOT / "examples" / "02_alk_positive_unresectable.json").read_text())


@pytest.fixture
def path(tmp_path):
    return tmp_path / "audit.db"


def test_a_read_the_database_refuses_names_the_store_and_the_reason(path):
    with open_store(path) as store:
        raw_sql(path, "DROP TABLE audit_records")
        with pytest.raises(AuditStoreError) as caught:
            store.records()
    assert str(caught.value) == f"cannot read the audit database {path}: no such table: audit_records"


def test_an_append_the_database_refuses_names_the_store_and_the_reason(path, rulebook):
    with open_store(path) as store:
        raw_sql(path, "CREATE TRIGGER refuse BEFORE INSERT ON audit_records "
                      "BEGIN SELECT RAISE(ABORT, 'the disk is full'); END")
        with pytest.raises(AuditStoreError) as caught:
            Engine(rulebook, audit=store).evaluate(ALK)
    assert str(caught.value) == f"cannot append to the audit database {path}: the disk is full"


def test_the_archived_files_digest_is_read_once_per_store_and_rulebook(path, rulebook):
    # Every evaluation the service records is one append: after the first, the digest of the rulebook's archived
    # files comes from the store's memory (an archive never changes), not from a query of the file listing.
    with open_store(path) as store:
        engine = Engine(rulebook, audit=store)
        statements: list[str] = []
        store._db.get().set_trace_callback(statements.append)
        for _ in range(3):
            engine.evaluate(ALK)
        listings = [s for s in statements if "FROM audit_rulebook_files" in s]
        assert len(listings) == 1, listings
        assert len([s for s in statements if s.startswith("INSERT INTO audit_records")]) == 3
        records = store.records()
    assert len({r.content["rulebook"]["files_sha256"] for r in records}) == 1


class _Backend(SQLAuditStore):
    location = "nowhere"

    def _connect(self): raise NotImplementedError  # type: ignore[no-untyped-def]
    def _write_transaction(self, connection): raise NotImplementedError  # type: ignore[no-untyped-def]
    def _id_prefix_condition(self, prefix): raise NotImplementedError  # type: ignore[no-untyped-def]
    def _iter_all_rows(self): raise NotImplementedError  # type: ignore[no-untyped-def]


@pytest.mark.parametrize("missing", ["_connect", "_write_transaction", "_id_prefix_condition"])
def test_a_sql_backend_that_leaves_out_a_hook_cannot_be_made(missing):
    _Backend()  # with every hook it can
    partial = type("Partial", (SQLAuditStore,), {k: v for k, v in vars(_Backend).items() if k != missing})
    with pytest.raises(TypeError, match=missing):
        partial()


def test_the_shared_statements_reach_a_server_database_with_its_own_placeholders(postgres_server, rulebook):
    # (named without the server's name: the SQLite-only selection of this module keeps it)
    target = new_database(postgres_server)
    with open_store(target) as store:
        Engine(rulebook, audit=store).evaluate(ALK)
        record = store.record("last")
        assert store.record(record.id[:8]).id == record.id
        assert store.record("1").id == record.id
        assert [r.id for r in store.records(patient_id=record.patient_id, last=1)] == [record.id]
        assert store.rulebook_archive(rulebook.sha256).sha256 == rulebook.sha256
        assert store.verify().ok
