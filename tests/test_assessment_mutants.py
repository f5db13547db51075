"""The assessment's objects and document where mutation testing found them unread (tests/mutation-survivors.md)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from imt_cds import Engine

CONTRADICTORY = {"tumor": {"resectability": "resectable", "distant_disease": False},
                 "history": {"margin_status": "R0"},
                 "molecular": {"alk": {"status": "negative", "fusion_partner": "EML4"}}}
TWO_FUSIONS_RESECTABLE = {"tumor": {"resectability": "resectable", "distant_disease": False},
                          "molecular": {"alk": {"status": "positive"}, "ros1": {"status": "positive"}}}
DIAGNOSIS = {"condition": "Condition/imt-1", "code": "http://snomed.info/sct|1162836000", "recorded": "2025-11-02"}


def _all_reasons(assessment):
    for finding in assessment.findings + tuple(s.finding for s in assessment.suppressed):
        yield from finding.because
        for other in finding.also_from:
            yield from other.because
    for fact in assessment.derived_facts:
        yield from fact.because


def test_a_reason_is_either_a_fact_test_or_a_derived_fact_and_leaves_the_other_fields_empty(engine):
    # A Python caller tells the two kinds apart by which fields are set (``reason.fact is not None``).
    assessment = engine.evaluate(CONTRADICTORY)
    reasons = list(_all_reasons(assessment))
    facts = [r for r in reasons if r.fact is not None]
    derived = [r for r in reasons if r.derived is not None]
    assert facts and derived and len(facts) + len(derived) == len(reasons)
    for reason in facts:
        assert reason.derived is None and reason.holds is None and reason.reasons == ()
        assert reason.expected is not None
    for reason in derived:
        assert reason.fact is None and reason.expected is None and reason.actual is None
        assert reason.parameter is None and reason.holds in (True, False)


def test_the_diagnosis_given_is_in_the_provenance_of_the_objects_and_of_the_document(engine):
    assessment = engine.evaluate({"age_years": 8}, diagnosis=DIAGNOSIS)
    assert assessment.provenance.to_dict()["diagnosis"] == DIAGNOSIS
    assert assessment.to_dict()["provenance"]["diagnosis"] == DIAGNOSIS
    assert dict(assessment.diagnosis) == DIAGNOSIS
    without = engine.evaluate({"age_years": 8})
    assert "diagnosis" not in without.provenance.to_dict() and "diagnosis" not in without.to_dict()["provenance"]


def test_a_suppression_by_a_fact_without_reasons_says_the_fact_holds(tmp_path):
    # In the shipped rulebook the one suppression rests on CONTRADICTION, whose reasons are always listed; a
    # suppression resting on a plain derived fact has none, and says so in words.
    from rulebook_copies import copy_rulebook, edit

    directory = copy_rulebook(tmp_path)
    edit(directory, "suppression/S01-contradiction-suppresses-treatment.yaml", "when: {derived: CONTRADICTION}",
         "when: {derived: MULTIPLE_KINASE_FUSIONS}")
    assessment = Engine(directory).evaluate(TWO_FUSIONS_RESECTABLE)
    (suppression,) = assessment.suppressed
    expected = {"by": {"id": "D03", "version": "1.0.0", "fact": "MULTIPLE_KINASE_FUSIONS"},
                "reason": "MULTIPLE_KINASE_FUSIONS holds", "reasons": [],
                "suppression_rule": {"id": "S01", "version": "1.0.0"}}
    written = suppression.to_dict()
    assert {k: written[k] for k in expected} == expected
    assert written["finding"]["code"] == "REC_UPFRONT_SURGICAL_RESECTION"
    assert assessment.to_dict()["suppressed"] == [written]
    assert assessment.suppressed_codes == {"REC_UPFRONT_SURGICAL_RESECTION"}
    assert "REC_UPFRONT_SURGICAL_RESECTION" not in assessment.codes


def test_the_derived_names_are_the_derived_facts_of_the_document(engine):
    assessment = engine.evaluate(CONTRADICTORY)
    names = {d["name"] for d in assessment.to_dict()["derived_facts"]}
    assert "CONTRADICTION" in names and "DATA_BLOCK" in names
    assert assessment.derived_names == names == {d.name for d in assessment.derived_facts}


def test_an_assessment_shows_its_patient_and_codes(engine):
    assessment = engine.evaluate({"patient_id": "P-7", "age_years": 8, "tumor": {"size_cm": 2.0},
                                  "molecular": {"alk": {"status": "negative"}}})
    assert repr(assessment) == f"<Assessment patient_id='P-7' codes={sorted(assessment.codes)}>"
    assert "REC_MULTIDISCIPLINARY_REVIEW" in repr(assessment)


def test_a_finding_produced_by_three_rules_lists_the_other_two_under_also_from_in_catalogue_order(tmp_path):
    # As test_assessment.py's two-rule case, with R35 (a TRK inhibitor) also flagging its agent as off-label: the
    # document lists both other rules, and is the objects written out.
    from rulebook_copies import copy_rulebook, edit

    directory = copy_rulebook(tmp_path)
    edit(directory, "derived/D05-data-block.yaml", "    - {derived: MULTIPLE_KINASE_FUSIONS}\n", "")
    edit(directory, "derived/D05-data-block.yaml", "  any:\n    - {derived: CONTRADICTION}", "  any:\n"
         "    - {derived: CONTRADICTION}\n    - {fact: molecular.alk.fusion_partner, is: NEVERSEEN}")
    r35 = directory / "treatment/R35-trk-inhibitor.yaml"
    text = r35.read_text().replace(
        "    title: Verify labelling for an infant\n    summary: Patient under {trk_infant_check_age_years}; check "
        "each TRK inhibitor's age labelling and infant dosing before use.\n    indicator: critical",
        "    title: Off-label indication\n    summary: The agent suggested is not approved for IMT; its use is "
        "off-label.\n    indicator: warning")
    r35.write_text(text.replace("FLAG_VERIFY_INFANT_LABELING", "FLAG_OFF_LABEL_INDICATION"))
    assessment = Engine(directory).evaluate({
        "age_years": 0.5, "tumor": {"distant_disease": True}, "history": {"progressed_on_alk_inhibitor": True},
        "molecular": {"alk": {"status": "positive"}, "ros1": {"status": "positive"}, "ntrk": {"status": "positive"}}})
    flag = assessment.finding("FLAG_OFF_LABEL_INDICATION")
    assert flag.rule.id == "R33" and [a.rule.id for a in flag.also_from] == ["R34", "R35"]
    (written,) = [f for f in json.loads(assessment.to_json())["risk_flags"] if f["code"] == "FLAG_OFF_LABEL_INDICATION"]
    assert written == flag.to_dict()
    assert {"fact": "molecular.ntrk.status", "expected": "= positive", "actual": "positive"} in \
        written["also_from"][1]["because"]


def test_an_assessment_names_the_rulebook_it_was_made_with(engine, rulebook):
    assert engine.evaluate({"age_years": 8}).rulebook is rulebook


def test_without_an_always_rule_the_internal_anchor_fires_but_is_not_in_the_trace(tmp_path):
    # With no 'always' rule the compiler adds an internal anchor rule (every evaluation must start an action); it
    # fires among the clinical rules, and the trace skips it without losing the firings after it.
    from rulebook_copies import copy_rulebook

    directory = copy_rulebook(tmp_path)
    (directory / "always/R01-multidisciplinary-review.yaml").unlink()
    assessment = Engine(directory).evaluate({"age_years": 8, "tumor": {"resectability": "unresectable"},
                                             "molecular": {"alk": {"status": "positive"}}})
    written = assessment.to_dict()["trace"]
    seqs = [entry["seq"] for entry in written]
    assert seqs != list(range(1, len(seqs) + 1))  # a gap: the anchor's firing (it is not a rule of the rulebook)
    assert [t.to_dict() for t in assessment.trace] == written
    assert "REC_CRIZOTINIB_ALK" in assessment.codes and "R32a" in {entry["rule"]["id"] for entry in written}


def test_only_the_trace_entries_of_a_reason_rule_say_what_they_are_part_of(engine):
    # A caller reads ``entry.part_of is not None`` as "a reason rule of a grouping rule (C1 of D04)".
    assessment = engine.evaluate(CONTRADICTORY)
    parts = {entry.engine_rule: entry.part_of for entry in assessment.trace}
    suppressions = [entry for entry in assessment.trace if "candidate" in entry.matched]
    assert suppressions and all(entry.part_of is None for entry in suppressions)
    assert "D04" in parts.values()
    assert all(part in (None, "D04") for part in parts.values())
    # ... and only a suppression's entry names findings it withheld: the others have none (an empty tuple).
    assert all(entry.suppressed == () for entry in assessment.trace if "candidate" not in entry.matched)
    assert all(entry.suppressed for entry in suppressions)
    assert [t.to_dict() for t in assessment.trace] == assessment.to_dict()["trace"]


def test_an_assessment_refuses_changes_and_deletions_saying_which_attribute(engine):
    import dataclasses

    assessment = engine.evaluate({"patient_id": "P-7"})
    with pytest.raises(dataclasses.FrozenInstanceError) as changed:
        assessment.patient_id = "other"  # type: ignore[misc]
    assert str(changed.value) == "an Assessment is immutable (cannot set 'patient_id')"
    with pytest.raises(dataclasses.FrozenInstanceError) as deleted:
        del assessment.recommendations
    assert str(deleted.value) == "an Assessment is immutable (cannot delete 'recommendations')"
    assert assessment.patient_id == "P-7" and assessment.recommendations


def test_suppressed_findings_sharing_a_code_are_listed_by_rule_id_not_by_firing_order(tmp_path):
    # The shipped rules suppressed by S01 produce distinct codes; give R26 the code of R31 in a working copy. For
    # this patient the suppression of R31 fires before that of R26: the list still goes by code, then rule id.
    from rulebook_copies import copy_rulebook

    directory = copy_rulebook(tmp_path)
    r26 = directory / "treatment/R26-resect-local-recurrence.yaml"
    text = r26.read_text().replace(
        "    title: Resect the local recurrence if feasible\n    summary: Resectable local recurrence without distant "
        "disease; re-resection, if feasible, can be discussed.\n",
        "    title: Consider a clinical trial\n    summary: Advanced disease; ask whether the patient is eligible for "
        "a clinical trial.\n")
    r26.write_text(text.replace("REC_RESECT_LOCAL_RECURRENCE_IF_FEASIBLE", "REC_CLINICAL_TRIAL_CONSIDER"))
    assessment = Engine(directory).evaluate({
        "age_years": 1, "tumor": {"resectability": "resectable", "distant_disease": False},
        "history": {"margin_status": "R1", "recurrence": True}, "molecular": {"ntrk": {"status": "positive"}}})
    fired = [entry.suppressed for entry in assessment.trace if "candidate" in entry.matched]
    assert fired[:2] == [("REC_CLINICAL_TRIAL_CONSIDER",)] * 2  # both suppressions fired (R31's first)
    assert [entry.matched["candidate"] for entry in assessment.trace if "candidate" in entry.matched] == ["R31", "R26"]
    listed = [(s.finding.code, s.finding.rule.id) for s in assessment.suppressed]
    assert listed == [("REC_CLINICAL_TRIAL_CONSIDER", "R26"), ("REC_CLINICAL_TRIAL_CONSIDER", "R31")]
    written = assessment.to_dict()["suppressed"]
    assert [(s["finding"]["code"], s["finding"]["rule"]["id"]) for s in written] == listed


def test_the_attributes_computed_on_first_use_keep_their_documentation():
    # help(Assessment) shows them: the lazy descriptor carries the function's docstring.
    from imt_cds import Assessment

    assert Assessment.codes.__doc__ == "Every emitted finding code."
    assert Assessment.evaluated_at.__doc__.startswith("When the evaluation ran, as RFC 3339 UTC")


def test_an_attribute_computed_on_first_use_is_the_same_object_afterwards(engine):
    assessment = engine.evaluate(CONTRADICTORY)
    assert assessment.recommendations is assessment.recommendations
    assert assessment.trace is assessment.trace and assessment.suppressed is assessment.suppressed


def test_suppressed_findings_are_listed_by_code_not_by_rule(engine):
    # R31's code sorts before R26's; the rule ids sort the other way.
    assessment = engine.evaluate({
        "age_years": 1, "tumor": {"resectability": "resectable", "distant_disease": False},
        "history": {"margin_status": "R1", "recurrence": True}, "molecular": {"ntrk": {"status": "positive"}}})
    listed = [(s.finding.code, s.finding.rule.id) for s in assessment.suppressed]
    assert listed == [("REC_CLINICAL_TRIAL_CONSIDER", "R31"), ("REC_RESECT_LOCAL_RECURRENCE_IF_FEASIBLE", "R26")]
    assert [(s["finding"]["code"], s["finding"]["rule"]["id"]) for s in assessment.to_dict()["suppressed"]] == listed


def test_a_suppressions_trace_entry_names_the_fact_and_the_rule_it_withheld(engine):
    written = [entry for entry in engine.evaluate(CONTRADICTORY).to_dict()["trace"] if entry["rule"]["id"] == "S01"]
    assert written and all(entry["matched"]["derived"] == ["CONTRADICTION"] for entry in written)
    assert "R23" in {entry["matched"]["candidate"] for entry in written}


def test_a_naive_evaluation_time_is_refused_naming_the_argument(engine):
    from imt_cds.core.errors import NaiveDateTimeError

    with pytest.raises(NaiveDateTimeError) as info:
        engine.evaluate({"age_years": 8}, evaluated_at=datetime(2026, 1, 1))
    assert info.value.name == "evaluated_at"
    assert str(info.value).startswith("evaluated_at must be timezone-aware")
    assert engine.evaluate({"age_years": 8}, evaluated_at=datetime(2026, 1, 1, tzinfo=timezone.utc))
