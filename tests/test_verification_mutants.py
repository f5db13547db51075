"""``rules verify`` sees a violation of every safety property it checks (authoring/verification.py).

The shipped rulebook keeps every property (test_authoring_tools.py), which a property weakened in the checker would
keep too: a checker is only trusted once it has caught each kind of violation. Each case below breaks a copy of the
rulebook the way a rule author could, and the checker must call that property violated, with a counterexample the
real engine confirms (the property's concrete form, evaluated on the engine's own assessment of that patient)."""

from __future__ import annotations

import dataclasses
import operator

import pytest
from rulebook_copies import add_flag, copy_rulebook, edit

from imt_cds import Engine, load_rulebook, parse_facts
from imt_cds.authoring.verification import SAFETY_PROPERTIES, verify
from imt_cds.core.fact_fields import fact_fields



@pytest.fixture(scope="module")
def shipped_checks(rulebook):
    return {check.name: check for check in verify(rulebook)}


# (property, why it breaks, [(file, old text, new text)])
ALK_ELIGIBLE = "derived/D06-alk-inhibitor-eligible.yaml"
BREAKS = [
    (2, "an ALK inhibitor whenever ALK is not negative",
     [(ALK_ELIGIBLE, "{fact: molecular.alk.status, is: positive}", "{fact: molecular.alk.status, is_not: negative}")]),
    (3, "an ALK inhibitor whenever ALK is not negative",
     [(ALK_ELIGIBLE, "{fact: molecular.alk.status, is: positive}", "{fact: molecular.alk.status, is_not: negative}")]),
    (4, "the team review only when the age is known",
     [("always/R01-multidisciplinary-review.yaml", "when: always", "when: {fact: age_years, is_not: null}"),
      ("always/R01-multidisciplinary-review.yaml", "examples:\n",
       "examples:\n  - {name: silent, facts: {}, fires: false}\n")]),
    (5, "the clinical trial no longer withheld when the record contradicts itself",
     [("suppression/S01-contradiction-suppresses-treatment.yaml", "R30, R31, R38]", "R30, R38]")]),
    (7, "crizotinib for a localised tumour",
     [(ALK_ELIGIBLE, "    - {derived: ADVANCED_DISEASE}\n", "")]),
    (9, "respiratory symptoms flagged when absent",
     [("flags/R15-respiratory-symptoms.yaml", "when: {fact: symptoms.respiratory, is: true}",
       "when: {fact: symptoms.respiratory, is: false}")]),
    (10, "the tumour-size flag only after a clear margin",
     [("flags/R16-tumor-size.yaml", "when: {fact: tumor.size_cm, gt: {param: size_risk_threshold_cm}}",
       "when: {all: [{fact: tumor.size_cm, gt: {param: size_risk_threshold_cm}}, "
       "{fact: history.margin_status, is: R0}]}")]),
    (11, "an ALK inhibitor when ALK goes from negative to unknown",
     [(ALK_ELIGIBLE, "{fact: molecular.alk.status, is: positive}", "{fact: molecular.alk.status, is_not: negative}")]),
    (12, "upfront surgery without distant disease ruled out",
     [("treatment/R23-upfront-surgical-resection.yaml", "    - {fact: tumor.distant_disease, is: false}\n", "")]),
    (13, "the age asked for when it is known",
     [("data_requests/R02-request-age.yaml", "when: {fact: age_years, is: null}", "when: {fact: age_years, lt: 1}")]),
    (15, "crizotinib again after progression on an ALK inhibitor",
     [(ALK_ELIGIBLE, "    - {fact: history.progressed_on_alk_inhibitor, is: false}\n", "")]),
]


def test_every_checkable_property_has_a_break_here():
    checkable = {p.number for p in SAFETY_PROPERTIES if p.violation is not None}
    # 1: below (the loader refuses such a rulebook); 6 and 8: test_authoring_tools.py (crizotinib below its labelled
    # age; the size flag turned around)
    assert checkable - {number for number, _, _ in BREAKS} == {1, 6, 8}


@pytest.mark.parametrize("number, why, edits", BREAKS, ids=[f"property {n}: {why}" for n, why, _ in BREAKS])
def test_a_broken_copy_of_the_rulebook_violates_the_property_and_the_engine_confirms_it(tmp_path, number, why,
                                                                                          edits):
    directory = copy_rulebook(tmp_path)
    for relative, old, new in edits:
        edit(directory, relative, old, new)
    checks = {check.name: check for check in verify(load_rulebook(directory))}
    check = checks[f"safety property {number}"]
    assert check.status == "violated", (why, check)
    assert check.confirmed_by_engine is True, (why, check)
    # The counterexample is a patient the engine accepts, as the rule author would try it, and the detail says what
    # the engine gives it (of two patients: what the second gains and loses).
    engine = Engine(directory)
    codes = sorted(engine.evaluate(check.counterexample).codes)
    if check.counterexample_after is None:
        assert check.detail == "the engine gives: " + ", ".join(codes)
    else:
        after = sorted(engine.evaluate(check.counterexample_after).codes)
        # ... two patients alike in every fact but those the property varies
        (varies,) = [prop.varies for prop in SAFETY_PROPERTIES if prop.number == number]
        first, second = parse_facts(check.counterexample), parse_facts(check.counterexample_after)
        differ = {path for path in fact_fields() if _value(first, path) != _value(second, path)}
        assert differ and differ <= set(varies), (differ, varies)
        gained, lost = [c for c in after if c not in codes], [c for c in codes if c not in after]
        assert check.detail == (f"from the first patient to the second, the engine adds {gained or 'nothing'} and "
                                f"drops {lost or 'nothing'}")


def test_a_finding_without_evidence_violates_property_1_even_past_the_loader(rulebook):
    # The loader refuses a rule that is not a DESIGN choice and cites nothing; the checker does not lean on that
    # (a rulebook built in code, or a loader changed later): R16 stripped of its evidence in memory.
    stripped = dataclasses.replace(rulebook, rules=tuple(
        dataclasses.replace(rule, evidence=()) if rule.id == "R16" else rule for rule in rulebook.rules))
    checks = {check.name: check for check in verify(stripped)}
    check = checks["safety property 1"]
    assert check.status == "violated" and check.confirmed_by_engine is True
    assert "RISK_TUMOR_SIZE_ABOVE_COHORT_MEDIAN" in Engine(stripped).evaluate(check.counterexample).codes
    assert all(checks[f"safety property {n}"].status == "holds" for n in (2, 3, 4, 5, 7, 12, 13, 15))


def test_the_checkers_tables_are_the_catalogues(rulebook):
    # RULES.md section 5: property 2 names the targeted recommendations (the tests' own reading of it: helpers.py),
    # property 10 the recurrence predictors; a finding misspelt in a table would silently weaken its property.
    from helpers import ALK_INHIBITORS as READ_ALK_INHIBITORS
    from helpers import TARGETED as READ_TARGETED

    from imt_cds.authoring import verification

    assert dict(verification.TARGETED) == READ_TARGETED
    assert set(verification.ALK_INHIBITORS) == READ_ALK_INHIBITORS
    assert verification.RECURRENCE_PREDICTORS == (
        "RISK_RESPIRATORY_SYMPTOMS", "RISK_TUMOR_SIZE_ABOVE_COHORT_MEDIAN", "RISK_DISTANT_DISEASE")
    codes = set(rulebook.finding_codes)
    assert {code for first, second, _ in verification.EXCLUSIVE_PAIRS for code in (first, second)} <= codes


def test_each_pair_that_must_never_co_occur_is_checked_and_says_why(rulebook):
    checks = [(check.name, check.description, check.status) for check in verify(rulebook)
              if " never with " in check.name]
    assert checks == [
        ("REC_UPFRONT_SURGICAL_RESECTION never with REC_AVOID_MUTILATING_SURGERY",
         "must never co-occur (safety property 12)", "holds"),
        ("REC_CRIZOTINIB_ALK never with REC_ALK_INHIBITOR_OFF_LABEL_AGE_REVIEW",
         "must never co-occur (R32a/R32b split on the label age)", "holds"),
        ("REC_SELPERCATINIB_RET never with REC_RET_INHIBITOR_OFF_LABEL_AGE_REVIEW",
         "must never co-occur (R36a/R36b split on the label age)", "holds"),
        ("REC_CRIZOTINIB_ALK never with REC_NEXT_GEN_ALK_INHIBITOR_CONSIDER",
         "must never co-occur (safety property 15)", "holds"),
        ("REC_UPFRONT_SURGICAL_RESECTION never with REC_POSTTREATMENT_SURVEILLANCE",
         "must never co-occur (upfront surgery is before any surgery)", "holds"),
    ]


def test_a_pair_that_co_occurs_is_reported_with_a_patient_the_engine_gives_both(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, "treatment/R25-avoid-mutilating-surgery.yaml", "{fact: tumor.resectability, is: "
         "resectable_only_with_mutilation}", "{fact: tumor.resectability, in: [resectable, "
         "resectable_only_with_mutilation]}")
    checks = {check.name: check for check in verify(load_rulebook(directory))}
    check = checks["REC_UPFRONT_SURGICAL_RESECTION never with REC_AVOID_MUTILATING_SURGERY"]
    assert (check.description, check.status, check.detail, check.confirmed_by_engine) == (
        "must never co-occur (safety property 12)", "violated", "both can be produced for one patient", True)
    codes = Engine(directory).evaluate(check.counterexample).codes
    assert {"REC_UPFRONT_SURGICAL_RESECTION", "REC_AVOID_MUTILATING_SURGERY"} <= set(codes)
    assert checks["safety property 12"].status == "violated"


def test_the_json_of_a_check_holds_only_what_it_found(tmp_path, rulebook):
    # rules verify --format json: a check that holds has no detail and no counterexample; a violated one-patient
    # property its patient and whether the engine confirmed it, and no second patient.
    holding = [check.to_dict() for check in verify(rulebook) if check.status == "holds"]
    assert holding and all(data == {"name": data["name"], "description": data["description"], "status": "holds",
                                    "detail": None} for data in holding)
    directory = copy_rulebook(tmp_path)
    edit(directory, "data_requests/R02-request-age.yaml", "when: {fact: age_years, is: null}",
         "when: {fact: age_years, lt: 1}")
    data = {check.name: check for check in verify(load_rulebook(directory))}["safety property 13"].to_dict()
    assert set(data) == {"name", "description", "status", "detail", "counterexample", "confirmed_by_engine"}
    assert data["confirmed_by_engine"] is True and isinstance(data["counterexample"], dict)


def test_the_json_of_a_two_patient_violation_holds_both_patients(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, "flags/R15-respiratory-symptoms.yaml", "when: {fact: symptoms.respiratory, is: true}",
         "when: {fact: symptoms.respiratory, is: false}")
    data = {check.name: check for check in verify(load_rulebook(directory))}["safety property 9"].to_dict()
    assert data["status"] == "violated" and data["confirmed_by_engine"] is True
    before, after = data["counterexample"], data["counterexample_after"]
    assert before["symptoms"]["respiratory"] is False and after["symptoms"]["respiratory"] is True


def test_the_engines_confirmation_is_no_rubber_stamp(engine):
    # Each property's concrete form says "violated" only of a violation: on the shipped rulebook, which keeps every
    # property, it is false for every patient (and for two-patient properties, for a patient beside itself).
    import random

    from strategies import random_patient

    rng = random.Random(20261205)
    patients = [random_patient(rng) for _ in range(400)]
    assessments = [engine.evaluate(patient) for patient in patients]
    for prop in SAFETY_PROPERTIES:
        if prop.concrete is None:
            continue
        for patient, assessment in zip(patients, assessments, strict=True):
            second = assessment if prop.varies else None
            assert prop.concrete(assessment, second) is False, (prop.number, patient)
    # ... and for the sampled patients the properties are not vacuous: targeted advice and flags were given.
    codes = set().union(*(a.codes for a in assessments))
    assert {"REC_CRIZOTINIB_ALK", "REC_SELPERCATINIB_RET", "FLAG_CONTRADICTORY_INPUT", "REQUEST_AGE"} <= codes


@pytest.mark.parametrize("age, gene, code", [(1, "alk", "REC_CRIZOTINIB_ALK"), (2, "ret", "REC_SELPERCATINIB_RET")])
def test_a_targeted_recommendation_at_exactly_its_labelled_age_is_no_violation(engine, age, gene, code):
    patient = {"age_years": age, "tumor": {"resectability": "unresectable", "distant_disease": False},
               "molecular": {gene: {"status": "positive"}}}
    assessment = engine.evaluate(patient)
    assert code in assessment.codes
    (property_6,) = [prop for prop in SAFETY_PROPERTIES if prop.number == 6]
    assert property_6.concrete(assessment, None) is False


def test_selpercatinib_below_its_labelled_age_violates_property_6(tmp_path):
    from rulebook_copies import set_parameters

    directory = copy_rulebook(tmp_path)
    set_parameters(directory, {"selpercatinib_min_age_years": 1})
    check = {check.name: check for check in verify(load_rulebook(directory))}["safety property 6"]
    assert check.status == "violated" and check.confirmed_by_engine is True
    assert 1 <= check.counterexample["age_years"] < 2
    assert "REC_SELPERCATINIB_RET" in Engine(directory).evaluate(check.counterexample).codes


def _changed(patient: dict, number: int) -> dict | None:
    """The patient changed the way two-patient property ``number`` relates its patients, or None when it cannot be."""
    import copy

    changed = copy.deepcopy(patient)
    tumor, history = changed.setdefault("tumor", {}), changed.setdefault("history", {})
    if number == 8 and tumor.get("size_cm") is not None and tumor["size_cm"] <= 99:
        tumor["size_cm"] += 1
    elif number == 9 and tumor.get("distant_disease") is False:
        tumor["distant_disease"] = True
    elif number == 10:
        history["margin_status"] = "R1" if history.get("margin_status") != "R1" else "R0"
    elif number == 11 and any(gene.get("status") == "negative" for gene in changed.get("molecular", {}).values()
                              if isinstance(gene, dict)):
        gene = next(gene for gene in changed["molecular"].values() if isinstance(gene, dict)
                    and gene.get("status") == "negative")
        gene["status"] = "unknown"
    else:
        return None
    return changed


def test_the_engines_confirmation_of_a_two_patient_property_is_no_rubber_stamp(engine):
    # Pairs related as each property relates them, on the shipped rulebook (which keeps every property): no pair is
    # confirmed as a violation, and each property saw pairs whose findings did change.
    import random

    from strategies import random_patient

    rng = random.Random(5)
    patients = [random_patient(rng) for _ in range(600)]
    for prop in SAFETY_PROPERTIES:
        if not prop.varies:
            continue
        changed_findings = 0
        for patient in patients:
            other = _changed(patient, prop.number)
            if other is None:
                continue
            a, b = engine.evaluate(patient), engine.evaluate(other)
            changed_findings += a.codes != b.codes
            assert prop.concrete(a, b) is False, (prop.number, patient, other)
        assert changed_findings > 5, prop.number


def test_distant_disease_turned_around_violates_property_9(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, "flags/R17-distant-disease.yaml", "{fact: tumor.distant_disease, is: true}",
         "{fact: tumor.distant_disease, is: false}")
    check = {check.name: check for check in verify(load_rulebook(directory))}["safety property 9"]
    assert check.status == "violated" and check.confirmed_by_engine is True
    assert (check.counterexample["tumor"]["distant_disease"], check.counterexample_after["tumor"]["distant_disease"]) \
        == (False, True)


NEVER = "all: [{fact: age_years, gt: 50}, {fact: age_years, lt: 10}]"  # a condition that contradicts itself


def test_an_unreachable_rule_first_leaves_every_other_rule_checked_and_a_dead_branch_is_a_warning(tmp_path):
    directory = copy_rulebook(tmp_path)
    examples = [("{age_years: 60}", True), ({}, False)]
    add_flag(directory, f"any: [{{fact: age_years, gt: 50}}, {NEVER}]", examples)  # a branch that can never match
    add_flag(directory, f"any: [{NEVER}]", examples, rule_id="R00a", finding="FLAG_NEVER")  # a rule never firing
    rulebook = load_rulebook(directory)
    checks = verify(rulebook)
    fire_checks = {check.name: check for check in checks if check.name.endswith(" can fire")}
    assert set(fire_checks) == {f"rule {rule.id} can fire" for rule in rulebook.rules}  # R00a comes early
    assert fire_checks["rule R00a can fire"].status == "violated"
    assert fire_checks["rule R00 can fire"].status == "holds"
    branches = [(check.name, check.description, check.status, check.detail) for check in checks
                if check.name.startswith("rule R00 branch")]
    assert branches == [("rule R00 branch 1", "branch of R00", "warning",
                         "this branch of R00 can never match: age_years > 50 and age_years < 10")]


def test_a_redundant_rule_is_found_behind_a_rule_of_the_same_finding_that_never_fires(tmp_path, shipped_checks):
    # R00 (first in the catalogue) can never produce RISK_DISTANT_DISEASE; R40 produces it only where R17 does too.
    directory = copy_rulebook(tmp_path)
    add_flag(directory, NEVER, [("{age_years: 60}", True), ({}, False)], finding="RISK_DISTANT_DISEASE")
    add_flag(directory, "all: [{fact: tumor.distant_disease, is: true}, {fact: age_years, gt: 10}]",
             [("{age_years: 60, tumor: {distant_disease: true}}", True), ({}, False)],
             rule_id="R40", finding="RISK_DISTANT_DISEASE")
    rulebook = load_rulebook(directory)
    assert [rule.id for rule in rulebook.producers("RISK_DISTANT_DISEASE")][0] == "R00"
    checks = {check.name: check for check in verify(rulebook)}
    redundant = checks["rule R40 is not redundant"]
    assert (redundant.description, redundant.status, redundant.detail) == (
        "R40 adds RISK_DISTANT_DISEASE on its own", "violated",
        "whenever R40 produces RISK_DISTANT_DISEASE, R17 does too: R40 is redundant")
    assert "rule R17 is not redundant" not in checks and "rule R00 is not redundant" not in checks
    summary = checks["no redundant rules"]
    assert (summary.description, summary.status) == (
        "no rule is always accompanied by another with the same finding", "violated")
    assert shipped_checks["no redundant rules"].status == "holds"


def _value(facts, path):
    return operator.attrgetter(path)(facts)


def test_a_rulebook_gets_the_same_counterexamples_whatever_the_process_asked_before(tmp_path):
    """Of the counterexamples fewest fields away from the defaults, z3 returns one that depends on what the process
    asked it before; verify() prints the canonical one (see canonical_model), so one rulebook's checks are the same
    on every call (for this copy, a 2.9 cm tumour and then 3.4 cm, before)."""
    directory = copy_rulebook(tmp_path)
    edit(directory, "flags/R16-tumor-size.yaml", "gt: {param: size_risk_threshold_cm}",
         "lt: {param: size_risk_threshold_cm}")
    broken = load_rulebook(directory)
    first = [check.to_dict() for check in verify(broken)]
    assert any(check["status"] == "violated" and check.get("counterexample") for check in first)
    verify(load_rulebook())  # other questions in between
    assert [check.to_dict() for check in verify(broken)] == first
    assert [check.to_dict() for check in verify(broken)] == first
