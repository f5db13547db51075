"""The audit store's details that mutation testing of audit/store.py found no test reading: a database of another
schema refused, the input kept by default by any backend, a rulebook already archived by another store never read
again from its files, the exact words of a record that cannot be found, how a reference of digits is read, and what
``verify`` says of an anchor or a checkpoint (the exact words; checkpoints of the empty trail and of the head)."""

from __future__ import annotations

import gc
import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from audit_support import disable_append_only, raw_sql
from rulebook_copies import copy_rulebook

from imt_cds import Engine, load_rulebook
from imt_cds.audit import (
    GENESIS_HASH,
    ArchiveMissingError,
    AuditStore,
    NotAnAuditStoreError,
    RecordNotFoundError,
    generate_key_pair,
    open_store,
    read_checkpoint,
    sign_checkpoint,
)

ROOT = Path(__file__).resolve().parents[1]
ALK = json.loads((ROOT / "examples" / "02_alk_positive_unresectable.json").read_text())
KEYS = generate_key_pair()


@pytest.fixture
def path(tmp_path):
    return tmp_path / "audit.db"


def test_a_database_of_another_audit_schema_is_refused_naming_both_schemas(path):
    open_store(path).close()
    raw_sql(path, "UPDATE audit_meta SET value = '2' WHERE key = 'schema'")
    with pytest.raises(NotAnAuditStoreError) as caught:
        open_store(path)
    assert str(caught.value) == f"{path} has audit schema 2; this version of imt-cds reads schema 1"
    raw_sql(path, "DELETE FROM audit_meta")
    with pytest.raises(NotAnAuditStoreError) as caught:
        open_store(path, create=False)
    assert str(caught.value) == f"{path} has audit schema unknown; this version of imt-cds reads schema 1"


class _Backend(AuditStore):
    """A backend that keeps nothing: enough to see what the interface itself decides."""

    location = "nowhere"

    def close(self) -> None: ...
    def _append_rows(self, contents, archive): raise NotImplementedError  # type: ignore[no-untyped-def]
    def _has_archive(self, sha256): return False  # type: ignore[no-untyped-def]
    def _load_archive(self, sha256): return None  # type: ignore[no-untyped-def]
    def _last_row(self): return None  # type: ignore[no-untyped-def]
    def _row_at(self, seq): return None  # type: ignore[no-untyped-def]
    def _rows_with_id_prefix(self, prefix): return []  # type: ignore[no-untyped-def]
    def _select_rows(self, *, patient_id, last): return []  # type: ignore[no-untyped-def]
    def _iter_all_rows(self): return iter(())  # type: ignore[no-untyped-def]


def test_a_backend_that_does_not_say_otherwise_keeps_the_input_so_that_records_can_be_replayed():
    assert _Backend().store_input is True
    assert _Backend(store_input=False).store_input is False


def test_a_rulebook_another_store_already_archived_is_not_read_again_from_its_files(path, tmp_path):
    directory = copy_rulebook(tmp_path / "working-copy")
    rulebook = load_rulebook(directory)
    with open_store(path) as first:
        Engine(rulebook, audit=first).evaluate(ALK)
    shutil.rmtree(directory)  # the files are gone; the archive in the store has them
    with open_store(path) as second:  # another process: it has not archived anything itself
        Engine(rulebook, audit=second).evaluate(ALK)
        assert [r.seq for r in second.records()] == [1, 2]


def test_an_empty_trail_has_no_last_record(path):
    with open_store(path) as store, pytest.raises(RecordNotFoundError) as caught:
        store.record("last")
    assert str(caught.value) == f"the audit trail in {path} is empty"


def test_up_to_seven_digits_are_a_record_number_and_eight_are_the_start_of_an_id(path):
    # A record id is a UUID, whose first eight characters may all be digits.
    with open_store(path) as store:
        with pytest.raises(RecordNotFoundError) as number:
            store.record("1234567")
        with pytest.raises(RecordNotFoundError) as prefix:
            store.record("12345678")
    assert str(number.value) == f"no audit record #1234567 in {path}"
    assert str(prefix.value) == f"no audit record with id 12345678 in {path}"


def test_a_reference_shorter_than_eight_characters_that_is_not_a_number_is_refused_saying_what_to_give(path):
    with open_store(path) as store, pytest.raises(RecordNotFoundError) as caught:
        store.record("abc1234")
    assert str(caught.value) == ("record id 'abc1234' is too short: give the whole id, at least 8 of its first "
                                 "characters, a record number or 'last'")


def test_a_prefix_two_ids_start_with_is_refused_as_ambiguous_asking_for_more(path, rulebook):
    with open_store(path) as store:
        Engine(rulebook, audit=store).evaluate(ALK)
        (record,) = store.records()
        twin = record.id[:8] + "-0"  # another id with the same first eight characters
        raw_sql(path, "INSERT INTO audit_records (seq, id, recorded_at, patient_id, rulebook_sha256, prev_hash, "
                      f"hash, body) VALUES (2, '{twin}', 'x', NULL, 'x', '{'1' * 64}', '{'2' * 64}', '{{}}')")
        with pytest.raises(RecordNotFoundError) as caught:
            store.record(record.id[:8].upper())
    assert str(caught.value) == (f"record id prefix {record.id[:8].upper()} is ambiguous in {path}: "
                                 "give more of it")


def _checkpoint(records: int, head: str):  # type: ignore[no-untyped-def]
    """A checkpoint as ``verify`` gets it: signed, then read back with the public key."""
    return read_checkpoint(sign_checkpoint(records, head, KEYS[0]).to_json().encode(), KEYS[1])


@pytest.fixture
def trail(path, rulebook):
    """A store holding two recorded evaluations."""
    with open_store(path) as store:
        engine = Engine(rulebook, audit=store)
        engine.evaluate(ALK)
        engine.evaluate(ALK)
        yield store


def test_a_checkpoint_of_the_empty_trail_holds_for_every_trail(path, trail):
    with open_store(path.with_name("empty.db")) as empty:
        assert empty.verify(checkpoints=[_checkpoint(0, GENESIS_HASH)]).ok
    assert trail.verify(checkpoints=[_checkpoint(0, GENESIS_HASH)]).ok


def test_a_checkpoint_signed_at_the_head_holds_while_nothing_is_removed(trail):
    records = trail.records()
    assert trail.verify(checkpoints=[_checkpoint(2, records[1].hash)]).ok


def test_what_verify_says_of_a_checkpoint_the_trail_does_not_reach_or_does_not_match(trail):
    records = trail.records()
    longer, other = _checkpoint(3, "a" * 64), _checkpoint(2, records[0].hash)
    report = trail.verify(checkpoints=[longer, other])
    assert report.problems == (
        f"{longer.describe()}: the trail holds only 2 records (records were removed, or the chain broken, since it "
        "was signed)",
        f"{other.describe()}: record #2 has hash {records[1].hash}, not the signed {records[0].hash} (records up to "
        "it were changed, removed, inserted or forged since it was signed)")


def test_what_verify_says_of_an_anchor_that_is_not_in_the_chain_or_not_a_hash(trail):
    report = trail.verify(anchor=f" {'A' * 64} ")
    assert report.problems == (f"anchored hash {'A' * 64} is not in the chain: records were removed or the chain was "
                               "rewritten since it was anchored",)
    with pytest.raises(ValueError) as caught:
        trail.verify(anchor="abc123")
    assert str(caught.value) == "anchor must be the full 64-hex-digit hash printed by `audit head`, got 'abc123'"


def test_a_rulebook_not_in_the_archive_is_named_with_the_store(path):
    with open_store(path) as store, pytest.raises(ArchiveMissingError) as caught:
        store.rulebook_archive("f" * 64)
    assert str(caught.value) == f"rulebook {'f' * 64} is not in the archive of {path}"


def test_a_store_shows_its_backend_and_where_it_lives(path):
    with open_store(path) as store:
        assert repr(store) == f"<SQLiteAuditStore {path}>"


PRIMITIVES = ("close", "_append_rows", "_has_archive", "_load_archive", "_last_row", "_row_at", "_rows_with_id_prefix",
              "_select_rows", "_iter_all_rows")


@pytest.mark.parametrize("missing", PRIMITIVES)
def test_a_backend_that_leaves_out_a_primitive_cannot_be_made(missing):
    partial = type("Partial", (AuditStore,), {k: v for k, v in vars(_Backend).items() if k != missing})
    with pytest.raises(TypeError, match=missing):
        partial()


def test_a_store_closed_twice_is_closed(path):
    store = open_store(path)
    store.close()
    store.close()
    with open_store(path) as again:  # nothing was left half-closed
        assert again.records() == []


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_store_reads_and_writes_through_one_connection_however_many_calls(path, rulebook):
    with open_store(path) as store:
        engine = Engine(rulebook, audit=store)
        engine.evaluate(ALK)
        store.head()
        before = _open_descriptors()
        for _ in range(5):
            engine.evaluate(ALK)
            store.head()
            store.records(last=1)
        assert _open_descriptors() == before


def test_a_forked_child_appends_through_its_own_connection_and_the_parent_goes_on(path, rulebook):
    with open_store(path) as store:
        engine = Engine(rulebook, audit=store)
        engine.evaluate(ALK)
        inherited = store._db.get()
        child = os.fork()
        if child == 0:  # the child: record once more through the store it inherited, then leave at once
            code = 1
            try:
                engine.evaluate(ALK)
                code = 0 if [r.seq for r in store.records()] == [1, 2] else 2
                if store._db.get() is inherited:  # it must never talk through its parent's connection
                    code = 3
            finally:
                os._exit(code)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        engine.evaluate(ALK)  # the parent's connection is still its own and still open
        assert [r.seq for r in store.records()] == [1, 2, 3]
        assert store.verify().ok


def test_a_forked_child_leaves_its_parents_server_session_alone(postgres_server, rulebook):
    # On a server the parent's connection is a socket the child shares: were the child to drop its copy of it, the
    # driver would end the session (libpq sends "terminate" as it frees the connection) under the parent's feet.
    # (Named without the server backend's word: the store module's SQLite selection keeps this one test.)
    from audit_support import new_database

    with open_store(new_database(postgres_server)) as store:
        engine = Engine(rulebook, audit=store)
        engine.evaluate(ALK)
        child = os.fork()
        if child == 0:  # the child: record through its own connection, drop nothing it inherited, leave at once
            code = 1
            try:
                engine.evaluate(ALK)
                gc.collect()
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        engine.evaluate(ALK)  # the parent's session is still there
        assert [r.seq for r in store.records()] == [1, 2, 3]
        assert store.verify().ok


def test_closing_a_store_closes_its_connection(path, rulebook):
    store = open_store(path)
    Engine(rulebook, audit=store).evaluate(ALK)
    connection = store._db.get()
    store.close()  # explicitly: a connection only dropped is closed when collected, and a server driver warns
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        connection.execute("SELECT 1")


def test_verify_names_a_rulebook_missing_from_the_archive_as_an_archive_problem(path, rulebook):
    with open_store(path) as store:
        Engine(rulebook, audit=store).evaluate(ALK)
        disable_append_only(path)
        raw_sql(path, "DELETE FROM audit_rulebook_files", "DELETE FROM audit_rulebooks")
        report = store.verify()
    assert report.first_break is None
    assert report.problems == (f"rulebook archive: rulebook {rulebook.sha256} is not in the archive of {path}",)
