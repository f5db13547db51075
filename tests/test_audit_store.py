"""The audit stores, SQLite and PostgreSQL alike: recording through the engine, reading back, the rulebook archive,
lookup by id, append-only, fail closed. The PostgreSQL variant runs against a real private server."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from audit_support import new_database, raw_sql
from rulebook_copies import copy_rulebook, set_parameters

from imt_cds import Engine, InvalidInputError, load_rulebook
from imt_cds.audit import (
    GENESIS_HASH,
    AuditError,
    AuditStoreError,
    NotAnAuditStoreError,
    RecordNotFoundError,
    open_store,
)
from imt_cds.audit.record import canonical_bytes, new_record_content

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.json"))
PATIENTS = [json.loads(p.read_text()) for p in EXAMPLES]


@pytest.fixture
def store(target):
    with open_store(target) as opened:
        yield opened


def test_every_evaluation_is_recorded_with_its_input_rulebook_and_whole_assessment(store, rulebook):
    engine = Engine(rulebook, audit=store)
    assessments = [engine.evaluate(p) for p in PATIENTS]
    records = store.records()
    assert [r.seq for r in records] == list(range(1, len(PATIENTS) + 1))
    for assessment, record in zip(assessments, records, strict=True):
        assert record.assessment == assessment.to_dict()
        assert record.content["assessment_json"] == assessment.to_json()  # the very bytes the caller got
        assert record.canonical_input_json() == assessment.canonical_input_json()
        assert hashlib.sha256(record.canonical_input_json()).hexdigest() == record.input_sha256
        assert record.patient_id == assessment.patient_id
        assert dict(record.rulebook) == {"name": rulebook.name, "version": rulebook.version,
                                         "sha256": rulebook.sha256,
                                         "files_sha256": store.rulebook_archive(rulebook.sha256).files_sha256()}
        assert record.parameters == rulebook.parameter_values
        assert set(record.engine) == {"imt_cds", "durable_rules", "python"}
        assert record.evaluated_at == assessment.evaluated_at
        assert record.codes("suppressed") == sorted(assessment.suppressed_codes)


def test_each_record_hash_covers_its_content_and_the_previous_hash(store, engine):
    Engine(engine.rulebook, audit=store).evaluate(PATIENTS[0])
    Engine(engine.rulebook, audit=store).evaluate(PATIENTS[1])
    first, second = store.records()
    assert first.prev_hash == GENESIS_HASH and second.prev_hash == first.hash
    for record in (first, second):
        assert hashlib.sha256(canonical_bytes(record.content)).hexdigest() == record.hash
    assert store.head_hash() == second.hash == store.head().hash


def test_an_empty_trail_verifies_and_its_head_is_the_genesis_hash(store):
    report = store.verify()
    assert report.ok and report.records == 0 and report.head == GENESIS_HASH == store.head_hash()
    assert store.head() is None


def test_the_memo_cache_does_not_skip_the_audit(store, rulebook):
    engine = Engine(rulebook, cache_size=16, audit=store)
    for _ in range(3):
        engine.evaluate(PATIENTS[0])
    assert engine.cache_stats().hits == 2
    assert len(store.records()) == 3 and store.verify().ok


def test_the_rulebook_is_archived_once_and_rebuilds_to_its_sha256(store, target, rulebook):
    engine = Engine(rulebook, audit=store)
    for patient in PATIENTS:
        engine.evaluate(patient)
    assert raw_sql(target, "SELECT count(*) FROM audit_rulebooks")[0][0][0] == 1
    archive = store.rulebook_archive(rulebook.sha256)
    assert ("rules", "rulebook.yaml") in archive.files and ("seeds", "evidence.yaml") in archive.files
    assert archive.load().sha256 == rulebook.sha256


def test_a_second_rulebook_version_is_archived_beside_the_first(store, target, rulebook, tmp_path):
    directory = copy_rulebook(tmp_path)
    set_parameters(directory, {"size_risk_threshold_cm": 5.0})
    other = load_rulebook(directory)
    Engine(rulebook, audit=store).evaluate(PATIENTS[1])
    Engine(other, audit=store).evaluate(PATIENTS[1])
    assert {r.rulebook["sha256"] for r in store.records()} == {rulebook.sha256, other.sha256}
    assert store.rulebook_archive(other.sha256).load().parameter_values["size_risk_threshold_cm"] == 5.0
    # The source documents are the same bytes in both versions: they are stored once.
    blobs = raw_sql(target, "SELECT count(*) FROM audit_blobs")[0][0][0]
    assert blobs < len(store.rulebook_archive(rulebook.sha256).files) + len(store.rulebook_archive(other.sha256).files)
    assert store.verify().ok


def test_a_rulebook_whose_files_changed_after_loading_is_refused_and_nothing_is_returned(store, tmp_path):
    directory = copy_rulebook(tmp_path)
    loaded = load_rulebook(directory)
    set_parameters(directory, {"size_risk_threshold_cm": 7.0})  # a rule author edits the working copy
    engine = Engine(loaded, audit=store)
    with pytest.raises(AuditError, match="changed after the rulebook was loaded"):
        engine.evaluate(PATIENTS[1])
    assert store.records() == []


def test_store_input_false_keeps_only_the_inputs_sha256(target, rulebook):
    with open_store(target, store_input=False) as store:
        assessment = Engine(rulebook, audit=store).evaluate(PATIENTS[0])
        (record,) = store.records()
        assert record.input is None and record.canonical_input_json() is None
        assert record.content["input_json"] is None
        assert record.input_sha256 == assessment.provenance.input_sha256
        assert assessment.canonical_input_json().decode() not in json.dumps(record.content)
        assert store.verify().ok


def test_records_are_found_by_id_prefix_number_and_last(store, engine):
    audited = Engine(engine.rulebook, audit=store)
    for patient in PATIENTS[:3]:
        audited.evaluate(patient)
    records = store.records()
    second = records[1]
    assert store.record(second.id).seq == 2
    assert store.record(second.id[:8]).id == second.id
    assert store.record(second.id.upper()).id == second.id
    assert store.record("2").id == second.id
    assert store.record("last").id == records[-1].id
    assert [r.seq for r in store.records(last=2)] == [2, 3]
    assert [r.patient_id for r in store.records(patient_id=PATIENTS[0]["patient_id"])] == [PATIENTS[0]["patient_id"]]


@pytest.mark.parametrize("ref, message", [
    ("7", "no audit record #7"),
    ("ffffffff-0000", "no audit record with id"),
    ("abc", "too short"),
])
def test_an_unknown_record_is_a_clear_error(store, engine, ref, message):
    Engine(engine.rulebook, audit=store).evaluate(PATIENTS[0])
    with pytest.raises(RecordNotFoundError, match=message):
        store.record(ref)


def test_last_in_an_empty_trail_is_a_clear_error(store):
    with pytest.raises(RecordNotFoundError, match="empty"):
        store.record("last")


def test_the_tables_refuse_update_and_delete(store, target, engine):
    Engine(engine.rulebook, audit=store).evaluate(PATIENTS[0])
    for statement in ("UPDATE audit_records SET patient_id = 'someone else'", "DELETE FROM audit_records",
                      "DELETE FROM audit_rulebook_files"):
        with pytest.raises(Exception, match="append-only"):
            raw_sql(target, statement)
    assert store.verify().ok


def test_the_api_offers_no_way_to_change_or_remove_a_record(store):
    public = {name for name in dir(store) if not name.startswith("_")}
    assert not {n for n in public if any(w in n for w in ("update", "delete", "remove", "truncate", "set_"))}


def test_an_invalid_patient_is_not_recorded(store, engine):
    with pytest.raises(InvalidInputError):
        Engine(engine.rulebook, audit=store).evaluate({"age_years": -1})
    assert store.records() == []


def in_threads(*calls: tuple[Callable[[int], None], int]) -> list[BaseException]:
    """Run each ``(function, argument)`` in a thread of its own, all at once; what they raised."""
    errors: list[BaseException] = []

    def guarded(function: Callable[[int], None], argument: int) -> None:
        try:
            function(argument)
        except BaseException as exc:  # noqa: BLE001 - returned to the test, which asserts there is none
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=call) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_several_threads_sharing_one_engine_keep_one_chain(store, rulebook):
    engine = Engine(rulebook, audit=store)

    def work(offset: int) -> None:
        for i in range(6):
            engine.evaluate(PATIENTS[(offset + i) % len(PATIENTS)])

    assert not in_threads(*((work, n) for n in range(6)))
    report = store.verify()
    assert report.ok and report.records == 36


# --- records prepared elsewhere, appended several at a time (the service's group commit) -------------------------


def test_prepared_records_are_appended_in_order_each_as_the_engine_would_have(store, target, engine):
    store.archive(engine.rulebook)
    assessments = [engine.evaluate(p) for p in PATIENTS]
    contents = [new_record_content(a) for a in assessments]
    statements: list[str] = []
    sqlite = not isinstance(target, str) or not target.startswith("postgresql")
    if sqlite:
        store._db.get().set_trace_callback(statements.append)
    assert store.append_contents(contents) == [c["id"] for c in contents]
    if sqlite:  # one write transaction, one commit, for all of them
        assert [s for s in statements if s in ("BEGIN IMMEDIATE", "COMMIT")] == ["BEGIN IMMEDIATE", "COMMIT"]
    Engine(engine.rulebook, audit=store).evaluate(PATIENTS[0])  # an append through the engine goes on the chain
    records = store.records()
    assert [r.id for r in records[:-1]] == [c["id"] for c in contents]
    assert [r.seq for r in records] == list(range(1, len(PATIENTS) + 2))
    for assessment, record in zip(assessments, records, strict=False):
        assert record.content["assessment_json"] == assessment.to_json()
        assert record.canonical_input_json() == assessment.canonical_input_json()
        assert dict(record.rulebook) == dict(records[-1].rulebook)  # files_sha256 too, as append gives it
    assert store.verify().ok
    assert store.append_contents([]) == []
    assert len(store.records()) == len(PATIENTS) + 1


def test_a_group_of_records_is_appended_all_or_none(store, engine):
    store.archive(engine.rulebook)
    good = new_record_content(engine.evaluate(PATIENTS[0]))
    foreign = new_record_content(engine.evaluate(PATIENTS[1]))
    foreign["rulebook"] = {**foreign["rulebook"], "sha256": "f" * 64}  # made with a rulebook nobody archived
    with pytest.raises(AuditStoreError, match=f"rulebook {'f' * 64} is not in its archive"):
        store.append_contents([good, foreign])
    assert store.records() == []  # not even the first
    assert store.append_contents([good]) == [good["id"]]
    assert store.verify().ok


def test_an_append_that_failed_leaves_no_memory_of_the_archive_it_rolled_back(store, target, engine):
    """An append that archives its rulebook and then fails (the disk, say) is rolled back whole, archive included:
    the store must not go on believing the files archived, or the records it is given next would commit to files
    that are not there (and could never be replayed)."""
    refusal = "the disk is full"
    if target.startswith("postgresql://"):
        raw_sql(target, f"CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION "
                        f"'{refusal}'; END $$",
                "CREATE TRIGGER refuse BEFORE INSERT ON audit_records FOR EACH ROW EXECUTE FUNCTION refuse()")
        lift = "DROP TRIGGER refuse ON audit_records"
    else:
        raw_sql(target, f"CREATE TRIGGER refuse BEFORE INSERT ON audit_records BEGIN SELECT RAISE(ABORT, '{refusal}'); "
                        "END")
        lift = "DROP TRIGGER refuse"
    with pytest.raises(AuditStoreError, match=refusal):
        Engine(engine.rulebook, audit=store).evaluate(PATIENTS[0])  # archives the rulebook, then fails to insert
    raw_sql(target, lift)
    content = new_record_content(engine.evaluate(PATIENTS[1]))
    with pytest.raises(AuditStoreError, match="is not in its archive"):
        store.append_contents([content])
    store.archive(engine.rulebook)
    assert store.append_contents([content]) == [content["id"]]
    assert store.verify().ok


def test_a_rulebook_is_archived_once_however_many_stores_archive_it(store, target, engine):
    store.archive(engine.rulebook)
    with open_store(target) as another:  # another process, say: it finds the archive in the database
        another.archive(engine.rulebook)
        content = new_record_content(engine.evaluate(PATIENTS[0]))
        assert another.append_contents([content]) == [content["id"]]
    assert store.rulebook_archive(engine.rulebook.sha256).sha256 == engine.rulebook.sha256
    assert store.verify().ok


def test_threads_appending_groups_and_single_records_keep_one_chain(store, rulebook):
    engine, unaudited = Engine(rulebook, audit=store), Engine(rulebook)
    store.archive(rulebook)

    def singles(offset: int) -> None:
        for i in range(4):
            engine.evaluate(PATIENTS[(offset + i) % len(PATIENTS)])

    def groups(offset: int) -> None:
        for i in range(2):
            store.append_contents([new_record_content(unaudited.evaluate(PATIENTS[(offset + i + k) % len(PATIENTS)]))
                                   for k in range(3)])

    assert not in_threads(*((work, n) for n in range(3) for work in (singles, groups)))
    report = store.verify()
    assert report.ok and report.records == 3 * 4 + 3 * 2 * 3


# --- SQLite specifics ---------------------------------------------------------------------------------------------


def test_the_sqlite_store_needs_no_set_up_and_uses_wal(tmp_path, engine):
    path = tmp_path / "new" / "audit.db"
    path.parent.mkdir()
    with open_store(path) as store:
        Engine(engine.rulebook, audit=store).evaluate(PATIENTS[0])
    assert raw_sql(path, "PRAGMA journal_mode")[0][0][0] == "wal"


def test_a_writer_that_cannot_get_the_lock_in_time_fails_closed(tmp_path, engine):
    from imt_cds.audit.sqlite import SQLiteAuditStore

    path = tmp_path / "audit.db"
    store = SQLiteAuditStore(path, timeout=0.2)
    audited = Engine(engine.rulebook, audit=store)
    audited.evaluate(PATIENTS[0])
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        with pytest.raises(AuditStoreError, match="cannot append"):
            audited.evaluate(PATIENTS[1])
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    audited.evaluate(PATIENTS[2])
    assert [r.patient_id for r in store.records()] == [PATIENTS[0]["patient_id"], PATIENTS[2]["patient_id"]]
    assert store.verify().ok
    store.close()


def test_readers_do_not_create_a_database(tmp_path):
    missing = tmp_path / "missing.db"
    with pytest.raises(NotAnAuditStoreError, match="no audit database"):
        open_store(missing, create=False)
    assert not missing.exists()


@pytest.mark.parametrize("content", [b"this is not a database" * 100, b"SQLite format 3\x00" + b"\x01" * 300])
def test_a_file_that_is_not_an_audit_database_is_refused(tmp_path, content):
    path = tmp_path / "audit.db"
    path.write_bytes(content)
    with pytest.raises(NotAnAuditStoreError, match="not a usable audit database"):
        open_store(path)


def test_another_applications_database_is_left_alone(tmp_path):
    path = tmp_path / "app.db"
    raw_sql(path, "CREATE TABLE patients (id TEXT)")
    with pytest.raises(NotAnAuditStoreError, match="database of something else"):
        open_store(path)
    with pytest.raises(NotAnAuditStoreError, match="without imt-cds audit tables"):
        open_store(path, create=False)
    assert raw_sql(path, "SELECT name FROM sqlite_master WHERE type = 'table'")[0] == [("patients",)]


def test_a_record_is_one_canonical_json_document(tmp_path, engine):
    path = tmp_path / "audit.db"
    with open_store(path) as store:
        Engine(engine.rulebook, audit=store).evaluate(PATIENTS[4])
    ((body, digest),) = raw_sql(path, "SELECT body, hash FROM audit_records")[0]
    assert hashlib.sha256(body.encode()).hexdigest() == digest  # an auditor needs nothing but sha256
    assert orjson.dumps(orjson.loads(body), option=orjson.OPT_SORT_KEYS).decode() == body


# --- PostgreSQL specifics -----------------------------------------------------------------------------------------


def test_postgres_readers_do_not_create_tables(postgres_server):
    target = new_database(postgres_server)
    with pytest.raises(NotAnAuditStoreError, match="no imt-cds audit tables"):
        open_store(target, create=False)
    assert raw_sql(target, "SELECT to_regclass('audit_records')")[0] == [(None,)]


def test_an_unreachable_postgres_server_is_a_one_line_error():
    from audit_support import _free_port

    with pytest.raises(AuditStoreError, match="cannot connect") as caught:
        open_store(f"postgresql://imt:secret@127.0.0.1:{_free_port()}/nowhere")
    assert "\n" not in str(caught.value) and "secret" not in str(caught.value)


def test_a_record_read_back_cannot_be_changed_in_memory(store, engine):
    import dataclasses

    Engine(engine.rulebook, audit=store).evaluate(PATIENTS[0])
    (record,) = store.records()
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.hash = "0" * 64  # a record is evidence: what was read is what is shown
    assert record == store.records()[0]


def test_a_records_summary_and_dictionary_carry_the_input(store, engine):
    assessment = Engine(engine.rulebook, audit=store).evaluate(PATIENTS[0])
    (record,) = store.records()
    assert record.summary()["input_stored"] is True
    data = record.to_dict()
    assert data["input"] == orjson.loads(assessment.canonical_input_json()) and data["hash"] == record.hash
    assert "input_json" not in data and "assessment_json" not in data


def test_a_chain_given_a_record_twice_breaks_at_the_repeat(store, engine):
    from imt_cds.audit.record import StoredRow, verify_chain

    audited = Engine(engine.rulebook, audit=store)
    for patient in PATIENTS[:2]:
        audited.evaluate(patient)
    rows = [StoredRow(r.seq, r.id, r.recorded_at, r.patient_id, r.content["rulebook"]["sha256"], r.prev_hash, r.hash,
                      canonical_bytes(r.content)) for r in store.records()]
    assert verify_chain(rows)[0].ok
    report, _ = verify_chain([*rows, rows[1]])
    assert (report.first_break.seq, report.first_break.reason) == (2, "it follows record #2 (reordered or duplicated)")
