"""The assessment document (SPEC §3): its shape, its rationale chain, and byte-identical output."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from datetime import datetime, timezone

import pytest
from helpers import without_time

from imt_cds import Engine, evaluate
from imt_cds.validation import canonical_json

ALK_ADVANCED = {"patient_id": "P-7", "age_years": 8, "tumor": {"resectability": "unresectable", "size_cm": 6.2},
                "molecular": {"alk": {"status": "positive", "methods": ["IHC"]}}}
CONTRADICTORY = {"tumor": {"resectability": "resectable", "distant_disease": False},
                 "history": {"margin_status": "R0"},
                 "molecular": {"alk": {"status": "negative", "fusion_partner": "EML4"}}}


def test_the_document_has_the_contracted_fields(engine):
    data = engine.evaluate(ALK_ADVANCED).to_dict()
    assert list(data) == ["schema", "patient_id", "recommendations", "risk_flags", "derived_facts", "suppressed",
                          "trace", "provenance"]
    assert data["schema"] == "imt-cds/assessment/1" and data["patient_id"] == "P-7"
    for finding in data["recommendations"] + data["risk_flags"]:
        assert {"code", "kind", "title", "summary", "strength", "rule", "evidence", "because"} <= set(finding)
        assert set(finding["rule"]) == {"id", "version"}
        assert len(finding["summary"]) < 140
        for entry in finding["evidence"]:
            assert set(entry) == {"id", "citation", "quote", "claim", "level", "source", "verification"}
            assert (entry["quote"] is None) == (entry["source"] is None) == entry["id"].startswith("EXT-")


def test_findings_are_grouped_by_prefix_and_sorted_by_code(engine):
    assessment = engine.evaluate(ALK_ADVANCED)
    recs = [f.code for f in assessment.recommendations]
    risks = [f.code for f in assessment.risk_flags]
    assert recs == sorted(recs) and risks == sorted(risks)
    assert all(c.startswith(("REC_", "REQUEST_")) for c in recs)
    assert all(c.startswith(("RISK_", "FLAG_")) for c in risks)


def test_a_finding_explains_itself_down_to_input_facts(engine):
    assessment = engine.evaluate(ALK_ADVANCED)
    crizotinib = assessment.finding("REC_CRIZOTINIB_ALK").to_dict()
    assert crizotinib["rule"] == {"id": "R32a", "version": "1.0.0"}
    assert {"derived": "ALK_INHIBITOR_ELIGIBLE", "holds": True} in crizotinib["because"]
    assert {"derived": "DATA_BLOCK", "holds": False} in crizotinib["because"]
    assert {"fact": "age_years", "expected": ">= 1", "actual": 8.0,
            "parameter": "crizotinib_min_age_years"} in crizotinib["because"]
    quotes = {e["id"]: e["quote"] for e in crizotinib["evidence"]}
    assert quotes["PDQ-PULM-IMT:s12"].startswith("The U.S. Food and Drug Administration (FDA) approved crizotinib")
    derived = {d["name"]: d for d in assessment.to_dict()["derived_facts"]}
    eligible = derived["ALK_INHIBITOR_ELIGIBLE"]
    assert eligible["rule"]["id"] == "D06"
    assert {"fact": "molecular.alk.status", "expected": "= positive", "actual": "positive"} in eligible["because"]
    assert {"derived": "ADVANCED_DISEASE", "holds": True} in eligible["because"]
    assert derived["ADVANCED_DISEASE"]["because"] == [
        {"fact": "tumor.resectability", "expected": "in {unresectable, resectable_only_with_mutilation}",
         "actual": "unresectable"}]
    size = assessment.finding("RISK_TUMOR_SIZE_ABOVE_COHORT_MEDIAN").to_dict()["because"]
    assert size == [{"fact": "tumor.size_cm", "expected": "> 3.9", "actual": 6.2, "parameter": "size_risk_threshold_cm"}]


def test_suppressed_findings_stay_visible_with_what_suppressed_them(engine):
    assessment = engine.evaluate(CONTRADICTORY)
    assert "REC_UPFRONT_SURGICAL_RESECTION" not in assessment.codes
    (item,) = assessment.to_dict()["suppressed"]
    assert item["finding"]["code"] == "REC_UPFRONT_SURGICAL_RESECTION"
    assert item["by"] == {"id": "D04", "version": "1.0.0", "fact": "CONTRADICTION"}
    assert item["reasons"] == ["C1: ALK status negative but an ALK fusion partner is recorded",
                               "C3: resection margin status recorded but no surgery recorded"]
    assert item["suppression_rule"] == {"id": "S01", "version": "1.0.0"}
    trace = assessment.to_dict()["trace"]
    assert any(t["rule"]["id"] == "R23" for t in trace)
    assert any(t["rule"]["id"] == "S01" and t["suppressed"] == ["REC_UPFRONT_SURGICAL_RESECTION"] for t in trace)
    contradictions = [d for d in assessment.to_dict()["derived_facts"] if d["name"] == "CONTRADICTION"]
    assert [(d["rule"]["id"], d["reason"]["id"]) for d in contradictions] == [("D04", "C1"), ("D04", "C3")]


def test_the_trace_lists_every_firing_in_order(engine):
    trace = engine.evaluate(ALK_ADVANCED).to_dict()["trace"]
    assert [t["seq"] for t in trace] == list(range(1, len(trace) + 1))
    by_rule = {t["rule"]["id"]: t for t in trace}
    assert by_rule["D02"]["matched"]["facts"] == {"tumor.resectability": "unresectable"}
    assert by_rule["D06"]["matched"]["absent"] == ["DATA_BLOCK"]
    assert by_rule["R32a"]["produced"] == ["REC_CRIZOTINIB_ALK"]
    assert [t["rule"]["id"] for t in trace].index("D06") < [t["rule"]["id"] for t in trace].index("R32a")


def test_provenance_names_rulebook_parameters_versions_and_input_hash(engine):
    assessment = engine.evaluate(ALK_ADVANCED)
    provenance = assessment.to_dict()["provenance"]
    assert provenance["rulebook"] == {"name": "imt", "version": "0.1.0", "sha256": engine.rulebook.sha256}
    assert provenance["parameters"]["crizotinib_min_age_years"] == 1
    assert provenance["engine"]["durable_rules"] == "2.0.28"
    assert set(provenance["engine"]) == {"imt_cds", "durable_rules", "python"}
    assert provenance["input_sha256"] == hashlib.sha256(canonical_json(assessment.facts)).hexdigest()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", provenance["evaluated_at"])


def test_the_same_input_gives_the_same_bytes_but_for_the_evaluation_time(engine):
    moment = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)
    first = engine.evaluate(ALK_ADVANCED, evaluated_at=moment).to_json()
    engine.evaluate(CONTRADICTORY)
    again = Engine(engine.rulebook).evaluate(json.loads(json.dumps(ALK_ADVANCED)), evaluated_at=moment).to_json()
    assert first == again
    assert json.dumps(without_time(evaluate(ALK_ADVANCED))) == json.dumps(without_time(engine.evaluate(ALK_ADVANCED)))


def test_an_assessment_is_immutable(engine):
    assessment = engine.evaluate(ALK_ADVANCED)
    with pytest.raises(dataclasses.FrozenInstanceError):
        assessment.patient_id = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        assessment.recommendations[0].code = "X"  # type: ignore[misc]


def test_a_finding_produced_by_two_rules_appears_once_with_the_other_under_also_from(tmp_path):
    # In the shipped catalogue two rules sharing a code never both fire (two fusions block targeted therapy); let
    # two positive fusions stop blocking it in a working copy to see the merge.
    from rulebook_copies import copy_rulebook, edit

    directory = copy_rulebook(tmp_path)
    edit(directory, "derived/D05-data-block.yaml", "    - {derived: MULTIPLE_KINASE_FUSIONS}\n", "")
    edit(directory, "derived/D05-data-block.yaml", "  any:\n    - {derived: CONTRADICTION}", "  any:\n"
         "    - {derived: CONTRADICTION}\n    - {fact: molecular.alk.fusion_partner, is: NEVERSEEN}")
    engine = Engine(directory)
    assessment = engine.evaluate({"age_years": 10, "history": {"progressed_on_alk_inhibitor": True},
                                  "molecular": {"alk": {"status": "positive"}, "ros1": {"status": "positive"}}})
    flag = assessment.finding("FLAG_OFF_LABEL_INDICATION").to_dict()
    assert flag == next(f for f in assessment.to_dict()["risk_flags"] if f["code"] == "FLAG_OFF_LABEL_INDICATION")
    assert flag["rule"]["id"] == "R33"
    assert [a["id"] for a in flag["also_from"]] == ["R34"]
    assert {"derived": "ADVANCED_DISEASE", "holds": True} in flag["also_from"][0]["because"]


def _objects_document(assessment):
    return {
        "recommendations": [f.to_dict() for f in assessment.recommendations],
        "risk_flags": [f.to_dict() for f in assessment.risk_flags],
        "derived_facts": [d.to_dict() for d in assessment.derived_facts],
        "suppressed": [s.to_dict() for s in assessment.suppressed],
        "trace": [t.to_dict() for t in assessment.trace],
        "provenance": assessment.provenance.to_dict(),
    }


def test_the_json_document_and_the_objects_describe_the_same_assessment(engine):
    # to_json() is written from pre-serialized fragments; the objects are built separately for Python callers.
    import random

    from strategies import random_patient

    rng = random.Random(8)
    for _ in range(2_000):
        patient = random_patient(rng)
        fresh = engine.evaluate(patient)
        document = json.loads(fresh.to_json())
        objects = _objects_document(engine.evaluate(patient, evaluated_at=datetime.fromisoformat(
            document["provenance"]["evaluated_at"].replace("Z", "+00:00"))))
        assert {k: document[k] for k in objects} == objects
        assert document["patient_id"] == fresh.patient_id
        assert set(fresh.codes) == {f["code"] for f in document["recommendations"] + document["risk_flags"]}
        assert set(fresh.suppressed_codes) == {s["finding"]["code"] for s in document["suppressed"]}


def test_a_pretty_printed_document_is_the_same_document(engine):
    assessment = engine.evaluate(CONTRADICTORY)
    assert json.loads(assessment.to_json(indent=True)) == json.loads(assessment.to_json()) == assessment.to_dict()
    assert assessment.to_json(indent=True).startswith('{\n  "schema"')
