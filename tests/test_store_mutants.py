"""The audit store's details that mutation testing of audit/store.py found no test reading: a database of another
schema refused, the input kept by default by any backend, a rulebook already archived by another store never read
again from its files, the exact words of a record that cannot be found, and how a reference of digits is read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from audit_support import raw_sql
from rulebook_copies import copy_rulebook

from imt_cds import Engine, load_rulebook
from imt_cds.audit import AuditStore, NotAnAuditStoreError, RecordNotFoundError, open_store

ROOT = Path(__file__).resolve().parents[1]
ALK = json.loads((ROOT / "examples" / "02_alk_positive_unresectable.json").read_text())


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
    def _append_row(self, content, archive): raise NotImplementedError  # type: ignore[no-untyped-def]
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
