"""Replaying audit records: with the archived rulebook (identical, even when the rulebook's files are long gone), and
with the current rulebook (what would differ). Also what cannot be replayed, and why."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from audit_support import disable_append_only, raw_sql
from rulebook_copies import copy_rulebook, set_parameters

from imt_cds import Engine, InvalidInputError, load_rulebook
from imt_cds.audit import ArchiveMissingError, ReplayError, open_store, replay
from imt_cds.audit.record import canonical_bytes
from imt_cds.audit.replay import MISSING, Difference, compare_documents
from imt_cds.core.validation import parse_facts_json

ROOT = Path(__file__).resolve().parents[1]
PATIENTS = {p.stem: json.loads(p.read_text()) for p in sorted((ROOT / "examples").glob("*.json"))}
ALK = PATIENTS["02_alk_positive_unresectable"]  # an 11.5 cm tumor: above the 3.9 cm cohort median


@pytest.fixture
def store(tmp_path):
    with open_store(tmp_path / "audit.db") as opened:
        yield opened


def test_every_record_replays_identically_with_its_archived_rulebook(store, rulebook):
    engine = Engine(rulebook, audit=store)
    for patient in PATIENTS.values():
        engine.evaluate(patient)
    records = list(store.records())
    assert len(records) == len(PATIENTS) >= 8  # (one per example: a loop over none would prove nothing)
    for record in records:
        result = replay(store, record.id)
        assert result.identical, [d.describe() for d in result.differences]
        assert result.rulebook["sha256"] == record.rulebook["sha256"]
        # Only the evaluation time and the engine versions are set aside; everything else is byte for byte.
        assert {k: v for k, v in result.document.items() if k != "provenance"} == \
            {k: v for k, v in record.assessment.items() if k != "provenance"}


def test_a_record_replays_with_its_own_rulebook_after_the_files_are_gone(store, tmp_path):
    directory = copy_rulebook(tmp_path / "working-copy")
    set_parameters(directory, {"size_risk_threshold_cm": 20})
    institution = load_rulebook(directory)
    Engine(institution, audit=store).evaluate(ALK)
    shutil.rmtree(directory)  # the working copy is deleted (or edited) afterwards

    result = replay(store, "last")
    assert result.identical
    assert result.rulebook["sha256"] == institution.sha256
    assert "RISK_TUMOR_SIZE_ABOVE_COHORT_MEDIAN" not in {f["code"] for f in result.document["risk_flags"]}


def test_with_the_current_rulebook_a_replay_shows_what_would_differ(store, tmp_path):
    old = copy_rulebook(tmp_path / "old")
    set_parameters(old, {"size_risk_threshold_cm": 20})
    Engine(load_rulebook(old), audit=store).evaluate(ALK)

    result = replay(store, "last", with_current=True)  # the shipped rulebook: threshold 3.9 cm
    assert not result.identical
    added = [d for d in result.differences if d.recorded is MISSING]
    assert [d.path for d in added] == ["risk_flags[RISK_TUMOR_SIZE_ABOVE_COHORT_MEDIAN]", "trace[R16.0]"]
    assert [d.path for d in result.differences if d not in added] == []
    assert "only now: RISK_TUMOR_SIZE_ABOVE_COHORT_MEDIAN" in added[0].describe()
    context = {d.path: (d.recorded, d.replayed) for d in result.context}
    assert context["provenance.parameters.size_risk_threshold_cm"] == (20, 3.9)
    assert "provenance.rulebook.sha256" in context
    # With the archived rulebook the same record is still reproduced exactly.
    assert replay(store, "last").identical


def test_with_an_unchanged_current_rulebook_nothing_differs(store, rulebook):
    Engine(rulebook, audit=store).evaluate(PATIENTS["05_contradictory_record"])
    result = replay(store, "1", with_current=True, rulebook=rulebook)
    assert result.identical and result.context == ()
    record = store.record("1")
    assert result.to_dict() == {  # what `imt-cds audit replay --format json` prints
        "record": {"id": record.id, "seq": 1, "rulebook": dict(record.rulebook)}, "with_current": True,
        "rulebook": {"name": rulebook.name, "version": rulebook.version, "sha256": rulebook.sha256},
        "identical": True, "differences": [], "context": []}


def test_a_record_that_the_rules_no_longer_reproduce_shows_the_difference(store, rulebook, tmp_path):
    Engine(rulebook, audit=store).evaluate(ALK)
    disable_append_only(store.location)
    raw_sql(store.location, "UPDATE audit_records SET body = replace(body, 'RISK_TUMOR_SIZE_ABOVE_COHORT_MEDIAN', "
                            "'RISK_TUMOR_SIZE_HUGE')")
    result = replay(store, "1")
    paths = {d.path for d in result.differences}
    assert {"risk_flags[RISK_TUMOR_SIZE_HUGE]", "risk_flags[RISK_TUMOR_SIZE_ABOVE_COHORT_MEDIAN]"} <= paths


def test_a_record_without_its_input_cannot_be_replayed(tmp_path, rulebook):
    with open_store(tmp_path / "audit.db", store_input=False) as store:
        Engine(rulebook, audit=store).evaluate(ALK)
        with pytest.raises(ReplayError) as caught:
            replay(store, "last")
        record_id = store.record("last").id
    assert str(caught.value) == (f"record {record_id} was made with store_input=False: only the input's sha256 was "
                                 "kept, so it cannot be replayed")


def test_a_missing_archive_is_a_clear_error(store, rulebook):
    Engine(rulebook, audit=store).evaluate(ALK)
    disable_append_only(store.location)
    raw_sql(store.location, "DELETE FROM audit_rulebook_files", "DELETE FROM audit_rulebooks")
    with pytest.raises(ArchiveMissingError, match=rulebook.sha256):
        replay(store, "last")


def test_an_altered_archive_is_refused_rather_than_replayed(store, rulebook):
    Engine(rulebook, audit=store).evaluate(ALK)
    disable_append_only(store.location)
    # Change a parameter in the archived parameters.yaml: it still loads, but hashes to something else.
    ((blob,),) = raw_sql(store.location, "SELECT b.sha256 FROM audit_blobs b JOIN audit_rulebook_files f ON "
                                         "f.blob_sha256 = b.sha256 WHERE f.path = 'parameters.yaml'")[0]
    raw_sql(store.location, f"UPDATE audit_blobs SET content = CAST(replace(CAST(content AS TEXT), 'value: 3.9', "
                            f"'value: 2.9') AS BLOB) WHERE sha256 = '{blob}'")
    with pytest.raises(ReplayError, match="the archive was altered"):
        replay(store, "last")


def test_compare_documents_keys_findings_and_firings_and_reports_changed_fields():
    base = {"schema": "x", "recommendations": [{"code": "REC_A", "summary": "a"}, {"code": "REC_B", "summary": "b"}],
            "risk_flags": [], "suppressed": [], "derived_facts": [],
            "trace": [{"seq": 1, "engine_rule": "R01.0"}, {"seq": 2, "engine_rule": "R02.0"}],
            "provenance": {"evaluated_at": "t1", "engine": {"imt_cds": "1"}, "input_sha256": "i"}}
    other = json.loads(json.dumps(base))
    other["recommendations"] = [{"code": "REC_B", "summary": "b, reworded"}]
    other["provenance"].update(evaluated_at="t2", engine={"imt_cds": "2"})  # set aside: not differences
    other["trace"] = [{"seq": 1, "engine_rule": "R02.0"}, {"seq": 2, "engine_rule": "R01.0"},
                      {"seq": 3, "engine_rule": "R03.0"}]
    differences, context = compare_documents(base, other)
    assert [(d.path, d.recorded, d.replayed) for d in differences] == [
        ("recommendations[REC_A]", {"code": "REC_A", "summary": "a"}, MISSING),
        ("recommendations[REC_B].summary", "b", "b, reworded"),
        ("trace[R03.0]", MISSING, {"engine_rule": "R03.0"}),
        ("trace (order)", ["R01.0", "R02.0"], ["R02.0", "R01.0"]),
    ]
    assert context == ()


def test_a_difference_reads_and_serialises_by_which_side_has_a_value():
    # What `imt-cds audit replay` prints (describe) and writes with --format json (to_dict), for each kind.
    changed = Difference("recommendations[REC_B].summary", "b", "b, reworded")
    added = Difference("trace[R03.0]", MISSING, {"engine_rule": "R03.0"})
    removed = Difference("recommendations[REC_A]", {"code": "REC_A", "title": "Do A"}, MISSING)
    assert changed.describe() == 'recommendations[REC_B].summary: recorded "b"; now "b, reworded"'
    assert changed.describe("today") == 'recommendations[REC_B].summary: recorded "b"; today "b, reworded"'
    assert added.describe() == 'trace[R03.0]: only now: {"engine_rule":"R03.0"}'
    assert removed.describe() == "recommendations[REC_A]: only in the record: REC_A (Do A)"
    assert changed.to_dict() == {"path": "recommendations[REC_B].summary", "recorded": "b",
                                 "replayed": "b, reworded", "only_in": None}
    assert added.to_dict() == {"path": "trace[R03.0]", "recorded": None, "replayed": {"engine_rule": "R03.0"},
                               "only_in": "replayed"}
    assert removed.to_dict() == {"path": "recommendations[REC_A]", "recorded": {"code": "REC_A", "title": "Do A"},
                                 "replayed": None, "only_in": "recorded"}
    assert repr(added) == "Difference(path='trace[R03.0]', recorded=<missing>, replayed={'engine_rule': 'R03.0'})"


def test_a_record_made_from_a_chart_replays_with_what_established_its_diagnosis(store, rulebook):
    diagnosis = {"basis": "coded", "sources": ["Condition/imt-1"], "codes": ["http://snomed.info/sct|1234567"],
                 "attested": False}
    Engine(rulebook, audit=store).evaluate(ALK, diagnosis=diagnosis)
    result = replay(store, "last")
    assert result.identical, [d.describe() for d in result.differences]
    assert result.document["provenance"]["diagnosis"] == diagnosis


def test_withheld_findings_and_derived_facts_are_compared_by_what_they_are_not_by_position():
    def suppressed(code, rule):
        return {"finding": {"code": code, "rule": {"id": rule}}, "by": "C1"}

    def derived(name, rule):
        return {"name": name, "value": True, "reason": {"id": rule}}

    recorded = {"suppressed": [suppressed("REC_A", "R01"), suppressed("REC_A", "R02"), suppressed("REC_B", "R02")],
                "derived_facts": [derived("unresectable", "R10"), derived("unresectable", "R11"),
                                  {"name": "adult", "value": True}]}
    replayed = {"suppressed": [suppressed("REC_A", "R02"), suppressed("REC_B", "R02")],
                "derived_facts": [derived("unresectable", "R11"), {"name": "adult", "value": False}]}
    differences, _ = compare_documents(recorded, replayed)
    assert [(d.path, d.recorded, d.replayed) for d in differences] == [
        ("derived_facts[unresectable/R10]", derived("unresectable", "R10"), MISSING),
        ("derived_facts[adult].value", True, False),
        ("suppressed[REC_A/R01]", suppressed("REC_A", "R01"), MISSING),
    ]


def test_a_withheld_finding_and_a_long_value_read_briefly_in_a_difference():
    withheld = Difference("suppressed[REC_A/R01]", {"finding": {"code": "REC_A", "title": "Do A"}, "by": "C1"}, MISSING)
    assert withheld.describe() == "suppressed[REC_A/R01]: only in the record: REC_A (Do A) withheld"
    at_limit, over_limit = "x" * 158, "x" * 159  # 160 and 161 characters of JSON with the quotes
    assert Difference("note", MISSING, at_limit).describe() == f'note: only now: "{at_limit}"'
    assert Difference("note", MISSING, over_limit).describe() == f'note: only now: "{"x" * 156}...'


def test_lists_compared_by_position_report_the_items_only_one_side_has():
    differences, _ = compare_documents({"notes": ["a"]}, {"notes": ["a", "b", "c"]})
    assert [(d.path, d.recorded, d.replayed) for d in differences] == [("notes[1]", MISSING, "b"),
                                                                       ("notes[2]", MISSING, "c")]
    differences, _ = compare_documents({"notes": ["a", "b"]}, {"notes": ["a"]})
    assert [(d.path, d.recorded, d.replayed) for d in differences] == [("notes[1]", "b", MISSING)]


def test_a_recorded_input_that_is_no_longer_valid_input_is_a_replay_error_naming_its_first_problem(store, rulebook):
    # Its input and input_sha256 agree (rewritten together, the record's hash recomputed): only validation objects.
    Engine(rulebook, audit=store).evaluate(ALK)
    record = store.record("last")
    content = dict(record.content)
    content["input_json"] = '{"age_years": "eight"}'
    content["input_sha256"] = hashlib.sha256(content["input_json"].encode()).hexdigest()
    body = canonical_bytes(content).decode()
    disable_append_only(store.location)
    raw_sql(store.location, "UPDATE audit_records SET body = '" + body.replace("'", "''") + "', "
                            f"hash = '{hashlib.sha256(body.encode()).hexdigest()}' WHERE seq = {record.seq}")
    with pytest.raises(InvalidInputError) as invalid:
        parse_facts_json(content["input_json"].encode())
    with pytest.raises(ReplayError) as caught:
        replay(store, "last")
    assert str(caught.value) == (f"record {record.id}: the recorded input is no longer valid input for this version "
                                 f"of imt-cds ({invalid.value.problems[0]})")
