"""The audit record's documented format and what ``verify`` says about each way a record can be wrong, pinned where
mutation testing of audit/record.py found no test: the record schema and the genesis hash an auditor checks without
this library, the exact reason given for each kind of break (and no crash on a forged record of the wrong shape),
where a break is (position and seq), the summary ``audit list`` shows, the chain reference exports cite, and that
what was read or verified cannot be changed afterwards."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import orjson
import pytest
from audit_support import raw_sql, recorded_trail, verify_store

from imt_cds import Engine
from imt_cds.audit import ChainBreak, ChainReport, open_store
from imt_cds.audit.record import StoredRow, canonical_bytes, new_record_content, verify_chain
from imt_cds.audit.sql import COLUMNS, stored_row

ROOT = Path(__file__).resolve().parents[1]
PATIENTS = [json.loads(p.read_text()) for p in sorted((ROOT / "examples").glob("*.json"))]
GENESIS = "0" * 64  # the documented "previous hash" of the first record (module docstring, README)


@pytest.fixture
def trail(tmp_path, rulebook):
    """Four recorded evaluations in a new SQLite store, the append-only triggers gone; returns (path, records)."""
    path = str(tmp_path / "audit.db")
    return path, recorded_trail(path, rulebook, PATIENTS[:4])


def _rows(path: str) -> list[StoredRow]:
    """The stored rows in chain order, read as the store reads them."""
    return [stored_row(row) for row in raw_sql(path, f"SELECT {COLUMNS} FROM audit_records ORDER BY seq")[0]]


def _rewrite(path: str, seq: int, body: bytes, digest: str | None = None) -> None:
    """A forger's edit of record ``seq``: a new body and (unless given) the hash that matches it; columns kept."""
    digest = hashlib.sha256(body).hexdigest() if digest is None else digest
    text = body.decode().replace("'", "''")
    raw_sql(path, f"UPDATE audit_records SET body = '{text}', hash = '{digest}' WHERE seq = {seq}")


def _content(path: str, seq: int) -> dict:
    return orjson.loads(_rows(path)[seq - 1].body)


def _break(path: str) -> tuple[int, int | None, str]:
    bad = verify_store(path).first_break
    assert bad is not None
    return bad.position, bad.seq, bad.reason


# --- the format an auditor checks without this library --------------------------------------------------------------


def test_a_record_is_in_the_documented_format_and_the_first_one_starts_from_sixty_four_zeros(trail):
    path, records = trail
    first, second = (orjson.loads(row.body) for row in _rows(path)[:2])
    assert first["schema"] == second["schema"] == "imt-cds/audit-record/1"
    assert first["prev_hash"] == GENESIS and second["prev_hash"] == records[0].hash
    assert set(first) == {"schema", "seq", "id", "recorded_at", "patient_id", "input_sha256", "input_json",
                          "rulebook", "assessment_json", "prev_hash"}
    with open_store(path, create=False) as store:
        assert store.head_hash() == records[-1].hash
    # an empty trail's head is the genesis hash as well
    with open_store(str(Path(path).with_name("empty.db"))) as empty:
        assert empty.head_hash() == GENESIS == empty.verify().head


def test_a_new_record_keeps_the_input_unless_told_not_to(engine):
    assessment = engine.evaluate(PATIENTS[0])
    kept = new_record_content(assessment)
    assert kept["input_json"] == assessment.canonical_input_json().decode()
    assert new_record_content(assessment, store_input=False)["input_json"] is None


# --- what a record read back shows ------------------------------------------------------------------------------------


def test_a_records_summary_is_exactly_what_audit_list_shows(trail):
    _, records = trail
    record = records[1]
    assessment = record.assessment
    assert record.summary() == {
        "seq": 2,
        "id": record.content["id"],
        "recorded_at": record.content["recorded_at"],
        "patient_id": PATIENTS[1]["patient_id"],
        "rulebook": dict(record.content["rulebook"]),
        "input_sha256": record.content["input_sha256"],
        "input_stored": True,
        "recommendations": [f["code"] for f in assessment["recommendations"]],
        "risk_flags": [f["code"] for f in assessment["risk_flags"]],
        "suppressed": [s["finding"]["code"] for s in assessment["suppressed"]],
        "hash": record.hash,
    }
    assert any(record.summary()[part] for record in records for part in ("recommendations", "risk_flags"))


def test_a_records_chain_reference_names_its_place_in_the_chain(trail):
    _, records = trail
    second = records[1]
    assert second.chain_ref() == {"id": second.content["id"], "seq": 2, "hash": second.hash,
                                  "prev_hash": records[0].hash, "recorded_at": second.content["recorded_at"]}


def test_a_records_dictionary_has_the_input_and_the_assessment_as_json(trail):
    _, records = trail
    record = records[0]
    data = record.to_dict()
    assert data["assessment"] == orjson.loads(record.content["assessment_json"])
    assert data["input"] == orjson.loads(record.content["input_json"])
    assert set(data) == {"schema", "seq", "id", "recorded_at", "patient_id", "input_sha256", "input", "rulebook",
                         "assessment", "prev_hash", "hash"}


def test_a_records_repr_does_not_spill_the_patients_data(trail):
    # A record in a log line or a traceback shows its hash, not the whole input and assessment.
    _, records = trail
    text = repr(records[0])
    assert records[0].hash in text
    assert PATIENTS[0]["patient_id"] not in text and "input_json" not in text


def test_what_was_read_or_verified_cannot_be_changed_afterwards(trail):
    path, _ = trail
    row = _rows(path)[0]
    report = verify_chain(_rows(path))[0]
    broken = ChainBreak(1, 1, "x", "its body is not valid JSON (modified)")
    for value, name in ((row, "hash"), (report, "records"), (broken, "reason")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, name, getattr(value, name))


# --- the report and the break ---------------------------------------------------------------------------------------


def test_a_break_reads_as_the_record_its_id_and_the_reason():
    assert str(ChainBreak(3, 3, "abc", "why")) == "record #3 (id abc): why"
    # a row without a number (given to verify_chain directly) is named by its position; a missing id as "?"
    assert str(ChainBreak(5, None, None, "why")) == "the record at position 5 (id ?): why"


def test_the_reports_dictionary_has_the_outcome_and_the_first_bad_record(trail):
    path, records = trail
    rows = _rows(path)
    report = verify_chain(rows)[0]
    assert report.problems == () and report.to_dict() == {
        "ok": True, "records": 4, "head": records[-1].hash, "first_bad_record": None, "problems": []}
    report = verify_chain([rows[0], rows[2]])[0]
    assert report.to_dict() == {
        "ok": False, "records": 1, "head": records[0].hash, "problems": [],
        "first_bad_record": {"seq": 3, "id": records[2].id,
                             "reason": "it follows record #1: record #2 is missing (deleted)"}}
    assert report.first_break.position == 2
    assert ChainReport(1, "h", None, ("an archive problem",)).to_dict()["problems"] == ["an archive problem"]


# --- each kind of break, in the words verify uses ------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"null", b"[]", b'{"schema": "something else"}'])
def test_a_body_that_is_not_a_record_is_named_as_such(trail, body):
    path, _ = trail
    _rewrite(path, 2, body)  # its hash recomputed: only its shape is wrong
    assert _break(path) == (2, 2, "its body is not an imt-cds audit record (modified)")


def test_a_body_not_in_canonical_form_is_named_as_such(trail):
    path, _ = trail
    _rewrite(path, 2, orjson.dumps(_content(path, 2), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    assert _break(path) == (2, 2, "its body is not in canonical form (modified after it was recorded)")


def test_a_hash_that_does_not_match_the_body_is_named_as_such(trail):
    path, _ = trail
    _rewrite(path, 2, _rows(path)[1].body, "c" * 64)
    assert _break(path) == (2, 2, "its content does not match its hash (modified after it was recorded)")


def test_a_record_stored_under_another_number_is_named_as_reordered(trail):
    path, _ = trail
    raw_sql(path, "UPDATE audit_records SET seq = 9 WHERE seq = 4")
    assert _break(path) == (4, 9, "it is stored at #9 but its content says #4 (reordered)")


@pytest.mark.parametrize("deleted, missing", [("2", "#2"), ("2, 3", "#2 to #3")])
def test_deleted_records_are_named_by_number(trail, deleted, missing):
    path, _ = trail
    raw_sql(path, f"DELETE FROM audit_records WHERE seq IN ({deleted})")
    assert _break(path) == (2, 4 if "3" in deleted else 3,
                            f"it follows record #1: record {missing} is missing (deleted)")


def test_a_record_chained_to_another_previous_record_is_named_as_such(trail):
    path, _ = trail
    content = _content(path, 2)
    content["prev_hash"] = "1" * 64
    _rewrite(path, 2, canonical_bytes(content))
    raw_sql(path, f"UPDATE audit_records SET prev_hash = '{'1' * 64}' WHERE seq = 2")
    assert _break(path) == (2, 2, "its previous-record hash does not match the record before it (a record before "
                                  "it was deleted, inserted or reordered)")


def test_a_column_that_differs_from_the_content_is_named(trail):
    path, _ = trail
    raw_sql(path, "UPDATE audit_records SET recorded_at = '2020-01-01T00:00:00.000000Z' WHERE seq = 2")
    assert _break(path) == (2, 2, "its recorded_at column differs from its content (modified)")


@pytest.mark.parametrize("forged", [None, "a rulebook", {"name": "imt"}])
def test_a_forged_rulebook_of_the_wrong_shape_is_a_break_not_a_crash(trail, forged):
    path, _ = trail
    content = _content(path, 2)
    content["rulebook"] = forged
    _rewrite(path, 2, canonical_bytes(content))
    assert _break(path) == (2, 2, "its rulebook_sha256 column differs from its content (modified)")


@pytest.mark.parametrize("files_sha256", [5, None, ["a"]])
def test_a_files_digest_that_is_not_text_is_a_break(trail, files_sha256):
    path, _ = trail
    content = _content(path, 2)
    content["rulebook"]["files_sha256"] = files_sha256
    _rewrite(path, 2, canonical_bytes(content))
    assert _break(path) == (2, 2, "its rulebook files_sha256 is not a sha256 (modified)")


def test_a_stored_input_changed_with_its_record_rehashed_is_named(trail):
    path, records = trail
    content = _content(path, 2)
    content["input_json"] = content["input_json"].replace('"age_years":', '"age_years": ', 1)
    assert content["input_json"] != records[1].content["input_json"]
    _rewrite(path, 2, canonical_bytes(content))
    assert _break(path) == (2, 2, "its stored input does not match its input_sha256")
    with open_store(path, create=False) as store:
        assert not store.record("2").input_intact() and store.record("1").input_intact()


def test_a_record_without_its_input_is_intact(tmp_path, rulebook):
    with open_store(tmp_path / "audit.db", store_input=False) as store:
        Engine(rulebook, audit=store).evaluate(PATIENTS[0])
        assert store.record("1").input_intact() and store.verify().ok
