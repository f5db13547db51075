"""The safety properties of clinical/RULES.md §5, each as a Hypothesis property over generated valid patients.

The properties are fixed clinical facts: the thresholds below (age 1 for crizotinib, 2 for selpercatinib) are
written here, not read from the rulebook's parameters, so a rulebook whose parameters break them fails.
"""

from __future__ import annotations

import copy
import json
import random

from helpers import ALK_INHIBITORS, TARGETED, without_time
from hypothesis import assume, given
from hypothesis import strategies as st
from strategies import MARGINS, patients

from imt_cds import parse_facts


def _risks(assessment):
    return {code for code in assessment.codes if code.startswith("RISK_")}


def _with(patient, path, value):
    changed = copy.deepcopy(patient)
    *parents, leaf = path.split(".")
    node = changed
    for part in parents:
        node = node[part]
    node[leaf] = value
    return changed


@given(patients())
def test_1_every_finding_cites_resolvable_evidence_or_is_a_design_choice(engine, patient):
    rulebook = engine.rulebook
    assessment = engine.evaluate(patient)
    for finding in assessment.findings + tuple(s.finding for s in assessment.suppressed):
        rule = rulebook.rule(finding.rule.id)
        resolved = [e for e in finding.evidence if e.id in rulebook.evidence]
        assert resolved or rule.is_design, finding.code
        assert len(resolved) == len(finding.evidence)


@given(patients())
def test_2_no_targeted_recommendation_without_the_matching_alteration(engine, patient):
    assessment = engine.evaluate(patient)
    for code, gene in TARGETED.items():
        if code in assessment.codes:
            assert patient["molecular"][gene]["status"] == "positive", code


@given(patients())
def test_3_no_alk_inhibitor_when_alk_is_negative_or_unknown(engine, patient):
    assessment = engine.evaluate(patient)
    if patient["molecular"]["alk"]["status"] != "positive":
        assert not (assessment.codes & ALK_INHIBITORS)


@given(patients())
def test_4_multidisciplinary_review_is_always_present(engine, patient):
    assert "REC_MULTIDISCIPLINARY_REVIEW" in engine.evaluate(patient).codes


@given(patients())
def test_5_contradictory_input_leaves_no_recommendation_but_team_review(engine, patient):
    codes = engine.evaluate(patient).codes
    if "FLAG_CONTRADICTORY_INPUT" in codes:
        assert {c for c in codes if c.startswith("REC_")} == {"REC_MULTIDISCIPLINARY_REVIEW"}


@given(patients())
def test_6_targeted_recommendations_respect_age(engine, patient):
    codes = engine.evaluate(patient).codes
    age = patient["age_years"]
    if "REC_CRIZOTINIB_ALK" in codes:
        assert age is not None and age >= 1
    if "REC_SELPERCATINIB_RET" in codes:
        assert age is not None and age >= 2
    if codes & TARGETED.keys():
        assert age is not None


@given(patients())
def test_7_targeted_recommendations_need_advanced_disease(engine, patient):
    assessment = engine.evaluate(patient)
    if assessment.codes & TARGETED.keys():
        assert "ADVANCED_DISEASE" in assessment.derived_names


@given(patients(), st.floats(min_value=0.01, max_value=100), st.floats(min_value=0.01, max_value=100))
def test_8_a_larger_tumor_never_loses_a_risk_flag(engine, patient, size_a, size_b):
    smaller, larger = sorted((size_a, size_b))
    before = _risks(engine.evaluate(_with(patient, "tumor.size_cm", smaller)))
    after = _risks(engine.evaluate(_with(patient, "tumor.size_cm", larger)))
    assert before <= after


@given(patients(), st.sampled_from(["symptoms.respiratory", "tumor.distant_disease"]))
def test_9_a_symptom_or_distant_disease_turning_true_never_removes_a_risk_flag(engine, patient, path):
    before = _risks(engine.evaluate(_with(patient, path, False)))
    after = _risks(engine.evaluate(_with(patient, path, True)))
    assert before <= after


RECURRENCE_PREDICTORS = {"RISK_RESPIRATORY_SYMPTOMS", "RISK_TUMOR_SIZE_ABOVE_COHORT_MEDIAN", "RISK_DISTANT_DISEASE"}


@given(patients(), st.sampled_from(MARGINS))
def test_10_margin_status_never_changes_the_recurrence_predictors(engine, patient, margin):
    before = engine.evaluate(patient).codes & RECURRENCE_PREDICTORS
    after = engine.evaluate(_with(patient, "history.margin_status", margin)).codes & RECURRENCE_PREDICTORS
    assert before == after


@given(patients(), st.sampled_from(["alk", "ros1", "ntrk", "ret", "pdgfrb"]))
def test_11_negative_to_unknown_never_adds_a_targeted_recommendation(engine, patient, gene):
    negative = _with(patient, f"molecular.{gene}.status", "negative")
    unknown = _with(patient, f"molecular.{gene}.status", "unknown")
    before, after = engine.evaluate(negative).codes, engine.evaluate(unknown).codes
    assume("FLAG_CONTRADICTORY_INPUT" not in before and "FLAG_CONTRADICTORY_INPUT" not in after)
    assert (after & TARGETED.keys()) <= (before & TARGETED.keys())


@given(patients())
def test_12_upfront_resection_only_untreated_without_mutilation_and_without_distant_disease(engine, patient):
    codes = engine.evaluate(patient).codes
    if "REC_UPFRONT_SURGICAL_RESECTION" in codes:
        assert "REC_AVOID_MUTILATING_SURGERY" not in codes
        assert patient["history"]["surgery_done"] is False
        assert patient["tumor"]["distant_disease"] is False


@given(patients())
def test_13_data_requests_match_missing_data_exactly(engine, patient):
    codes = engine.evaluate(patient).codes
    assert ("REQUEST_AGE" in codes) == (patient["age_years"] is None)
    assert ("REQUEST_TUMOR_SIZE" in codes) == (patient["tumor"]["size_cm"] is None)
    assert ("REQUEST_ALK_TESTING" in codes) == (patient["molecular"]["alk"]["status"] == "unknown")


@given(patients(), st.lists(patients(), max_size=3), st.randoms(use_true_random=False))
def test_14_same_input_same_output_whatever_the_key_order_or_history(engine, patient, others, rng):
    first = without_time(engine.evaluate(patient))
    for other in others:
        engine.evaluate(other)
    shuffled = _shuffled(patient, rng)
    assert json.dumps(without_time(engine.evaluate(shuffled))) == json.dumps(first)
    assert parse_facts(shuffled) == parse_facts(patient)


def _shuffled(value, rng: random.Random):
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: _shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        items = list(value)
        rng.shuffle(items)
        return items
    return value


@given(patients())
def test_15_no_crizotinib_after_progression_on_an_alk_inhibitor(engine, patient):
    if patient["history"]["progressed_on_alk_inhibitor"]:
        assert "REC_CRIZOTINIB_ALK" not in engine.evaluate(patient).codes
