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

ALK_ADVANCED = {"patient_id": "P-7", "age_years": 8, "tumor": {"resectability": "unresectable", "size_cm": 6.2},
                "molecular": {"alk": {"status": "positive", "methods": ["IHC"]}}}
# ALK_ADVANCED in canonical form (SPEC §2), written out by hand: defaults filled in, keys sorted, no spaces.
_UNTESTED = '{"fusion_partner":null,"methods":[],"status":"unknown"}'
ALK_ADVANCED_CANONICAL = (
    '{"age_years":8.0,"history":{"margin_status":null,"progressed_on_alk_inhibitor":false,'
    '"progressed_on_prior_systemic":false,"recurrence":false,"surgery_done":false},'
    '"molecular":{"alk":{"fusion_partner":null,"ihc_pattern":null,"methods":["IHC"],"status":"positive"},'
    f'"ntrk":{_UNTESTED},"pdgfrb":{_UNTESTED},"ret":{_UNTESTED},"rna_fusion_panel_done":false,"ros1":{_UNTESTED}}},'
    '"patient_id":"P-7","symptoms":{"respiratory":null},"tumor":{"distant_disease":null,'
    '"epithelioid_morphology":false,"resectability":"unresectable","site":"unknown","size_cm":6.2}}'
).encode()
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
    assert crizotinib["rule"] == {"id": "R32a", "version": "1.1.0"}
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
    assert size == [{"fact": "tumor.size_cm", "expected": "> 3.9", "actual": 6.2,
                     "parameter": "size_risk_threshold_cm"}]


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
    assert provenance["rulebook"] == {"name": "imt", "version": "0.2.7", "sha256": engine.rulebook.sha256}
    assert provenance["parameters"]["crizotinib_min_age_years"] == 1
    assert provenance["engine"]["durable_rules"] == "2.0.28"
    assert set(provenance["engine"]) == {"imt_cds", "durable_rules", "python"}
    assert provenance["input_sha256"] == hashlib.sha256(ALK_ADVANCED_CANONICAL).hexdigest()
    assert assessment.canonical_input_json() == ALK_ADVANCED_CANONICAL
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


def test_the_json_document_is_byte_for_byte_the_objects_written_by_a_json_library(engine):
    # The document's bytes are what the audit record hashes: the fragments spliced per patient must give exactly the
    # text a JSON library writes for the objects (same keys, same order, same number and string forms), including
    # evidence quotes holding '%' (the fragments are %-format strings) and suppressed findings.
    import random

    import orjson
    from strategies import random_patient

    assert any("%" in orjson.dumps(entry.to_dict()).decode() for entry in engine.rulebook.evidence)  # exercised
    rng = random.Random(9)
    for _ in range(2_000):
        patient = random_patient(rng)
        assessment = engine.evaluate(patient)
        expected = {"schema": "imt-cds/assessment/1", "patient_id": assessment.patient_id,
                    **_objects_document(assessment)}
        assert assessment.to_json() == orjson.dumps(expected).decode()


def test_a_pretty_printed_document_is_the_same_document(engine):
    assessment = engine.evaluate(CONTRADICTORY)
    assert json.loads(assessment.to_json(indent=True)) == json.loads(assessment.to_json()) == assessment.to_dict()
    assert assessment.to_json(indent=True).startswith('{\n  "schema"')


def test_the_card_document_is_the_document_with_an_empty_trace(engine):
    # What the service makes cards from: the same document but for the trace (nobody there reads it), whether it is
    # asked for before or after the whole document was written.
    import random

    from strategies import random_patient

    rng = random.Random(10)
    for index in range(1_000):
        patient = random_patient(rng)
        diagnosis = {"established_by": "attested", "index": index} if index % 2 else None
        assessment = engine.evaluate(patient, diagnosis=diagnosis)
        before = assessment.to_card_dict()
        document = assessment.to_dict()
        assert document["trace"]  # (every evaluation has one: it is what the card document leaves out)
        assert before == {**document, "trace": []} == assessment.to_card_dict()
        assert list(before) == list(document)  # the same keys in the same order
        assert document["provenance"].get("diagnosis") == diagnosis


# --- a rationale names exactly the tests that held --------------------------------------------------------------------


def _value(text):
    return {"null": None, "true": True, "false": False}.get(text, _number_or_text(text))


def _number_or_text(text):
    try:
        return float(text)
    except ValueError:
        return text


def _test_holds(expected, actual):
    """Read a rationale's ``expected`` text ("= positive", "in {R1, R2}", "> 3.9", ...) independently of the
    library and decide it against the value the rationale reports."""
    folded = expected.endswith(" (case-insensitive)")
    if folded:
        expected = expected.removesuffix(" (case-insensitive)")
    for symbol in ("not in", "in", "!=", ">=", "<=", "=", ">", "<"):
        if expected.startswith(symbol + " "):
            operand = expected[len(symbol) + 1:]
            break
    else:
        raise AssertionError(f"unreadable test {expected!r}")
    if isinstance(actual, list):  # a set field: the whole set is compared
        value = set(operand.strip("{}").split(", ")) - {""}
        actual = set(actual)
    elif symbol in ("in", "not in"):
        value = [_value(v) for v in operand.strip("{}").split(", ")]
    else:
        value = _value(operand)
    if folded and actual is not None:
        actual, value = actual.upper(), value.upper()
    if symbol in (">", ">=", "<", "<=") and actual is None:
        return False
    checks = {"=": lambda: actual == value, "!=": lambda: actual != value, "in": lambda: actual in value,
              "not in": lambda: actual not in value, ">": lambda: actual > value, ">=": lambda: actual >= value,
              "<": lambda: actual < value, "<=": lambda: actual <= value}
    return checks[symbol]()


def _check_rationale(because, facts, derived, contradictions, rule):
    assert bool(because) == (rule != "R01"), rule  # only R01 (always) applies for no reason
    for reason in because:
        if "fact" in reason:
            node = facts
            for part in reason["fact"].split("."):
                node = node[part]
            assert reason["actual"] == node, reason  # the value reported is the patient's
            assert _test_holds(reason["expected"], node), reason
        else:
            assert (reason["derived"] in derived) == reason["holds"], reason
            assert reason.get("reasons", []) == (contradictions if reason["derived"] == "CONTRADICTION" and
                                                 reason["holds"] else []), reason


def test_every_reason_in_every_rationale_holds_for_the_patient(engine):
    # A reason copied from a branch of the rule that did not fire (or from another rule) would be a test the patient
    # fails: every fact test listed must hold on the patient's own value, and every derived fact must (not) hold.
    import random

    from strategies import random_patient

    rng = random.Random(31)
    for _ in range(400):
        assessment = engine.evaluate(random_patient(rng))
        document = assessment.to_dict()
        facts = assessment.facts.model_dump(mode="json")
        derived = {d["name"] for d in document["derived_facts"]}
        contradictions = [d["reason"]["id"] for d in document["derived_facts"] if d["name"] == "CONTRADICTION"]
        findings = document["recommendations"] + document["risk_flags"] + [s["finding"] for s in document["suppressed"]]
        for item in findings + document["derived_facts"]:
            _check_rationale(item["because"], facts, derived, contradictions, item["rule"]["id"])
            for other in item.get("also_from", []):
                _check_rationale(other["because"], facts, derived, contradictions, other["id"])


def test_the_rationale_reader_refuses_tests_that_do_not_hold():
    assert _test_holds("= positive", "positive") and not _test_holds("= positive", "unknown")
    assert _test_holds("!= positive", None) and not _test_holds("!= R2", "R2")
    assert _test_holds("in {R1, R2}", "R2") and not _test_holds("in {R1, R2}", None)
    assert _test_holds("not in {R1, R2}", None) and not _test_holds("not in {R1, R2}", "R1")
    assert _test_holds("> 3.9", 3.91) and not _test_holds("> 3.9", 3.9) and not _test_holds("> 3.9", None)
    assert _test_holds(">= 1", 1.0) and not _test_holds(">= 1", 0.99)
    assert _test_holds("< 2", 1.99) and not _test_holds("< 2", 2.0) and _test_holds("<= 2", 2.0)
    assert _test_holds("= false", False) and not _test_holds("= false", None) and _test_holds("= null", None)
    assert _test_holds("= RANBP2 (case-insensitive)", "RanBP2") and not _test_holds("= RANBP2", "RanBP2")
    assert _test_holds("= {IHC}", ["IHC"]) and not _test_holds("= {IHC}", ["FISH", "IHC"])


R08_CODE = "REQUEST_RESECTABILITY_ASSESSMENT"
RESECTABILITY_UNKNOWN = {"fact": "tumor.resectability", "expected": "= unknown", "actual": "unknown"}
NO_SURGERY = {"fact": "history.surgery_done", "expected": "= false", "actual": False}
RECURRENCE = {"fact": "history.recurrence", "expected": "= true", "actual": True}


def test_a_finding_lists_the_tests_of_the_branch_that_fired_and_no_other(engine):
    # R08: resectability unknown and (no surgery yet or recurrence). After surgery, only the recurrence branch fires.
    after_surgery = engine.evaluate({"tumor": {"resectability": "unknown"},
                                     "history": {"surgery_done": True, "recurrence": True, "margin_status": "R0"}})
    assert after_surgery.finding(R08_CODE).to_dict()["because"] == [RESECTABILITY_UNKNOWN, RECURRENCE]
    no_recurrence = engine.evaluate({"tumor": {"resectability": "unknown"}})
    assert no_recurrence.finding(R08_CODE).to_dict()["because"] == [RESECTABILITY_UNKNOWN, NO_SURGERY]


def test_when_two_branches_fire_the_rationale_is_their_union_in_condition_order(engine):
    both = engine.evaluate({"tumor": {"resectability": "unknown"}, "history": {"recurrence": True}})
    assert both.finding(R08_CODE).to_dict()["because"] == [RESECTABILITY_UNKNOWN, NO_SURGERY, RECURRENCE]
    assert json.loads(both.to_json())["recommendations"] == both.to_dict()["recommendations"]
    # D02 (any of five): three hold, listed in the order the rule states them, the two that fail left out.
    advanced = engine.evaluate({"tumor": {"resectability": "unresectable", "distant_disease": True},
                                "history": {"progressed_on_prior_systemic": True}})
    (fact,) = [d for d in advanced.to_dict()["derived_facts"] if d["name"] == "ADVANCED_DISEASE"]
    assert fact["because"] == [
        {"fact": "tumor.resectability", "expected": "in {unresectable, resectable_only_with_mutilation}",
         "actual": "unresectable"},
        {"fact": "tumor.distant_disease", "expected": "= true", "actual": True},
        {"fact": "history.progressed_on_prior_systemic", "expected": "= true", "actual": True},
    ]
    (objects,) = [d for d in advanced.derived_facts if d.name == "ADVANCED_DISEASE"]
    assert [r.to_dict() for r in objects.because] == fact["because"]
