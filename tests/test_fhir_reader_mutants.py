"""The FHIR chart reader, element by element: tests written against the mutants that survived the other FHIR tests.

Each test pins one outcome the reader promises (a JSON key, a status that counts or not, a unit, a date's reach)
on a small hand-made chart, so that a one-token change to ``imt_cds/fhir/reader.py`` shows up as a failure. The mutants
that no chart can tell apart are listed, with the reason, in tests/mutation-survivors.md.
"""

from __future__ import annotations

import copy
import json
import types
from datetime import date

import pytest

from imt_cds.core.errors import ChartRefusedError, InvalidInputError
from imt_cds.fhir.reader import (  # the private helpers, pinned directly: each is one promise
    Diagnosis,
    Eligibility,
    FhirFacts,
    FhirProblem,
    _age_in_years,
    _Candidate,
    _full_date,
    _key,
    _kind,
    _Period,
    _period,
    _said,
    _set,
    _short,
    _unset,
    bundle_resources,
    facts_from_bundle,
    facts_from_resources,
    resource_label,
)

ON = date(2026, 11, 21)
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
FACT = "urn:imt-cds:fact"
ICDO3 = "http://terminology.hl7.org/CodeSystem/icd-o-3"
IMT_CODE = f"{ICDO3}|8825/1"
PATIENT = {"resourceType": "Patient", "id": "p1", "birthDate": "2016-02-03"}
IMT = {"resourceType": "Condition", "id": "imt", "subject": {"reference": "Patient/p1"},
       "code": {"coding": [{"system": ICDO3, "code": "8825/1"}]}}


def chart(*resources, patient=PATIENT, imt=IMT):
    return [copy.deepcopy(r) for r in (patient, imt, *resources) if r is not None]


def read(resources, **options):
    return facts_from_resources(resources, ON, **options)


def observation(resource_id, system, code, **elements):
    return {"resourceType": "Observation", "id": resource_id, "status": "final",
            "subject": {"reference": "Patient/p1"}, "code": {"coding": [{"system": system, "code": code}]},
            **elements}


def fact(resource_id, path, **value):
    return observation(resource_id, FACT, path, **value)


def problems_of(result, where):
    return [p for p in result.problems if p.where == where]


# --- the result's JSON form ---------------------------------------------------------------------------------------


def test_the_json_form_has_every_part_and_leaves_out_the_facts_only_when_asked():
    result = read(chart(fact("o1", "tumor.resectability",
                             valueCodeableConcept={"coding": [{"system": FACT, "code": "unresectable"}]})))
    data = result.to_dict()
    assert list(data) == ["facts", "sources", "problems", "eligibility", "patient"]
    assert data["facts"]["tumor"]["resectability"] == "unresectable"
    assert data["sources"] == {"patient_id": ["Patient/p1"], "age_years": ["Patient/p1"],
                               "tumor.resectability": ["Observation/o1"]}
    assert data["problems"] == []
    assert data["eligibility"] == {
        "eligible": True, "reason": "imt_diagnosis", "message": "IMT diagnosis coded in the chart",
        "diagnosis": {"basis": "coded", "sources": ["Condition/imt"], "codes": [IMT_CODE], "attested": False}}
    assert data["patient"] == "Patient/p1"
    assert list(result.to_dict(facts=False)) == ["sources", "problems", "eligibility", "patient"]


def test_a_chart_that_may_not_be_evaluated_says_so_in_its_json_form():
    result = read(chart(imt=None))
    assert not result.ok and result.facts is None
    data = result.to_dict()
    assert data["facts"] is None and data["sources"] == {}
    assert data["eligibility"]["eligible"] is False and data["eligibility"]["reason"] == "no_imt_diagnosis"
    assert data["eligibility"]["diagnosis"] is None


def test_a_problem_reads_as_where_and_message_and_has_every_field_in_its_json_form():
    problem = FhirProblem("Observation/o1", "not used", "error", "tumor.size_cm", "conflict")
    assert str(problem) == "Observation/o1: not used"
    assert problem.to_dict() == {"where": "Observation/o1", "message": "not used", "severity": "error",
                                 "path": "tumor.size_cm", "kind": "conflict"}
    assert (FhirProblem("x", "y").severity, FhirProblem("x", "y").kind) == ("warning", "skipped")


def test_diagnosis_and_eligibility_defaults():
    assert Diagnosis("attested").to_dict() == {"basis": "attested", "sources": [], "codes": [], "attested": False}
    default = FhirFacts(None, {}, ()).eligibility
    assert default == Eligibility(True, "imt_diagnosis", "")
    assert FhirFacts(None, {}, ()).patient is None


# --- the chart: which entries are resources, and how they are named ------------------------------------------------


def bundle(*entries, bundle_id="b1"):
    return {"resourceType": "Bundle", "id": bundle_id, "type": "collection", "entry": list(entries)}


def test_what_is_not_a_bundle_is_refused_naming_what_it_is():
    with pytest.raises(InvalidInputError) as raised:
        facts_from_bundle({"resourceType": "Patient", "id": "p1"}, ON)
    (problem,) = raised.value.problems
    assert (problem.path, problem.value) == ("resourceType", "Patient")
    assert "expected a FHIR Bundle, got 'Patient'" in problem.message
    with pytest.raises(InvalidInputError) as raised:
        facts_from_bundle(["not", "a", "bundle"], ON)
    assert raised.value.problems[0].value == "list"
    with pytest.raises(InvalidInputError) as raised:
        facts_from_bundle({"resourceType": "Bundle", "entry": {"resource": PATIENT}}, ON)
    (problem,) = raised.value.problems
    assert (problem.path, problem.value) == ("entry", "dict")
    with pytest.raises(ChartRefusedError, match="no Patient"):  # "entry": null is an empty Bundle, not an error
        facts_from_bundle({"resourceType": "Bundle", "entry": None}, ON)


def test_entries_that_carry_no_patient_data_are_left_out_and_the_unreadable_ones_reported():
    outcome = {"resourceType": "OperationOutcome", "id": "oo"}
    entries = [
        {"fullUrl": "urn:uuid:pat", "resource": PATIENT},
        {"resource": outcome, "search": {"mode": "outcome"}},
        {"resource": {"resourceType": "Observation", "id": "gone"}, "request": {"method": "DELETE"}},
        {"response": {"status": "201 Created"}},
        {"resource": IMT, "search": {"mode": "match"}, "request": {"method": "PUT"}},
        "not an entry",
        {"fullUrl": "urn:uuid:nothing"},
        {"resource": bundle()},
        {"resource": {"id": "no-type"}},
    ]
    resources = bundle_resources(bundle(*entries))
    assert [r.get("id") for r in resources] == ["p1", "imt"]
    result = facts_from_bundle(bundle(*entries), ON)
    assert result.ok
    skipped = {p.where: p.message for p in result.problems}
    assert skipped == {
        "Bundle/b1.entry[5]": "a Bundle entry that is not an object; skipped",
        "Bundle/b1.entry[6]": "a Bundle entry without a resource; skipped",
        "Bundle/b1.entry[7]": "a Bundle inside a Bundle is not read; skipped",
        "Bundle/b1.entry[8]": "not a FHIR resource (no resourceType); skipped",
    }
    assert all(p.severity == "warning" and p.kind == "skipped" and p.path is None for p in result.problems)


def test_a_bundle_whose_entry_is_not_a_list_is_reported_among_other_resources():
    result = read([*chart(), {"resourceType": "Bundle", "id": "odd", "entry": "x"}, {"resourceType": "Bundle"}])
    assert result.ok
    assert [(p.where, p.message) for p in result.problems] == [
        ("Bundle/odd", "Bundle.entry is not a list; the Bundle is not read")]
    unnamed = read([*chart(), {"resourceType": "Bundle", "entry": 5}])
    assert [p.where for p in unnamed.problems] == ["Bundle/2"]  # its place among the values read


def test_a_resource_without_an_id_is_named_by_its_place():
    assert resource_label({"resourceType": "Observation", "id": "o1"}, 3) == "Observation/o1"
    assert resource_label({"resourceType": "Observation"}, 3) == "Observation/entry[3]"
    assert resource_label({"resourceType": "Observation", "id": ""}, 0) == "Observation/entry[0]"
    assert resource_label({"resourceType": "Observation", "id": 7}, 1) == "Observation/entry[1]"
    assert bundle_resources("text") == [] and bundle_resources({"resourceType": "Patient"}) == [
        {"resourceType": "Patient"}]
    other = {"resourceType": "Observation", "status": "final", "subject": {"reference": "Patient/p2"},
             "code": {"coding": [{"system": LOINC, "code": "21889-1"}]}}
    result = read(chart(other))
    assert [p.where for p in result.problems] == ["Observation/entry[2]"]


# --- whose data ---------------------------------------------------------------------------------------------------


def test_the_patient_is_named_by_id_else_by_full_url_and_refusals_say_why():
    with pytest.raises(ChartRefusedError) as raised:
        read(chart(patient={"resourceType": "Patient", "id": 12}))
    assert raised.value.reason == "patient_without_id" and "Patient.id must be text" in str(raised.value)
    with pytest.raises(ChartRefusedError) as raised:
        read(chart(patient={"resourceType": "Patient", "id": ""}))
    assert raised.value.reason == "patient_without_id"
    with pytest.raises(ChartRefusedError) as raised:
        read([], patient_id="p9")
    assert raised.value.reason == "no_patient" and "(expected Patient/p9)" in str(raised.value)
    with pytest.raises(ChartRefusedError) as raised:
        read([])
    assert [p.message for p in raised.value.problems] == [
        "the chart holds no Patient resource: whose data it is cannot be established"]
    twins = [{"resourceType": "Patient", "id": "b"}, {"resourceType": "Patient", "id": "a"}]
    with pytest.raises(ChartRefusedError, match=r"2 different patients \(Patient/a, Patient/b\)"):
        read(twins)
    with pytest.raises(ChartRefusedError) as raised:
        read(chart(), patient_id="p2")
    assert raised.value.reason == "other_patient" and "is Patient/p1, not the patient in context (Patient/p2)" in \
        str(raised.value)
    assert read(chart(), patient_id="p1").ok


def test_a_patient_without_an_id_goes_by_its_full_url_and_resources_naming_it_are_read():
    anonymous = {k: v for k, v in PATIENT.items() if k != "id"}
    imt = copy.deepcopy(IMT) | {"subject": {"reference": "urn:uuid:pat"}}
    size = observation("size", LOINC, "21889-1", subject={"reference": "urn:uuid:pat"}, component=[
        {"code": {"coding": [{"system": LOINC, "code": "33728-7"}]}, "valueQuantity": {"value": 3, "unit": "cm"}}])
    result = facts_from_bundle(bundle({"fullUrl": "urn:uuid:pat", "resource": anonymous}, {"resource": imt},
                                      {"resource": size}), ON)
    assert result.ok and result.patient == "urn:uuid:pat"
    assert result.facts.tumor.size_cm == 3 and result.facts.patient_id is None
    assert result.sources["age_years"] == ("urn:uuid:pat",)


def test_resources_of_other_types_are_ignored_and_the_others_need_a_resolvable_subject():
    encounter = {"resourceType": "Encounter", "id": "e1", "subject": {"reference": "Patient/p2"}}
    nobody = observation("nobody", LOINC, "21889-1")
    del nobody["subject"]
    text_subject = observation("odd", LOINC, "21889-1", subject={"display": "John"})
    by_patient = {"resourceType": "MedicationStatement", "id": "m1", "patient": {"reference": "Patient/p2"}}
    result = read(chart(encounter, nobody, text_subject, by_patient))
    assert result.ok
    messages = {p.where: p.message for p in result.problems}
    assert "Encounter/e1" not in messages  # not a type the reader uses: not even mentioned
    assert messages["Observation/nobody"] == messages["Observation/odd"] == (
        "says about whom it is in no subject reference this reader can resolve; not used")
    assert messages["MedicationStatement/m1"] == "about Patient/p2, not Patient/p1; not used"


@pytest.mark.parametrize("death, says", [
    ({"deceasedBoolean": True}, "Patient/p1 is recorded as deceased (deceasedBoolean); nothing is evaluated"),
    ({"deceasedDateTime": "2025-01-02"}, "Patient/p1 is recorded as deceased on 2025-01-02; nothing is evaluated"),
])
def test_a_deceased_patient_is_not_evaluated_and_the_message_says_how_it_is_recorded(death, says):
    result = read(chart(patient=PATIENT | death))
    assert not result.ok
    assert (result.eligibility.eligible, result.eligibility.reason, result.eligibility.message) == (
        False, "deceased", says)
    assert result.patient == "Patient/p1"


def test_a_living_patient_may_say_so():
    assert read(chart(patient=PATIENT | {"deceasedBoolean": False})).ok
    assert read(chart(patient=PATIENT | {"deceasedDateTime": None})).ok


# --- the diagnosis ------------------------------------------------------------------------------------------------


def test_without_an_imt_diagnosis_the_message_counts_the_other_conditions():
    asthma = {"resourceType": "Condition", "id": "asthma", "subject": {"reference": "Patient/p1"},
              "code": {"coding": [{"system": SNOMED, "code": "195967001"}]}}
    none = read(chart(imt=None))
    assert none.eligibility.message == ("the chart of Patient/p1 holds no IMT diagnosis (no Condition coded from value "
                                        "set imt-diagnosis or naming the tumour); nothing is evaluated")
    some = read(chart(asthma, imt=None))
    assert "; it holds 1 other Condition(s); nothing is evaluated" in some.eligibility.message


def test_how_the_diagnosis_was_established_is_said_in_the_eligibility():
    coded = read(chart()).eligibility
    assert (coded.reason, coded.message, coded.diagnosis.basis) == (
        "imt_diagnosis", "IMT diagnosis coded in the chart", "coded")
    assert coded.diagnosis.codes == (IMT_CODE,) and coded.diagnosis.sources == ("Condition/imt",)
    text = {"resourceType": "Condition", "id": "t", "subject": {"reference": "Patient/p1"},
            "code": {"text": "Inflammatory myofibroblastic tumour of the lung"}}
    by_text = read(chart(text, imt=None))
    assert (by_text.eligibility.reason, by_text.eligibility.diagnosis.basis) == ("imt_diagnosis", "text")
    assert by_text.eligibility.message == ("IMT diagnosis recognised from text only (no code from value set "
                                           "imt-diagnosis): confirm it")
    assert [(p.where, p.kind) for p in by_text.problems] == [("Condition/t", "weak")]
    attested = read(chart(imt=None), diagnosis_attested=True).eligibility
    assert (attested.reason, attested.diagnosis) == ("diagnosis_attested", Diagnosis("attested", (), (), True))
    assert attested.message == "IMT diagnosis attested by the caller (established outside this chart)"
    both = read(chart(), diagnosis_attested=True).eligibility
    assert (both.reason, both.diagnosis.basis, both.diagnosis.attested) == ("imt_diagnosis", "coded", True)


# --- dates, ages and the small helpers ----------------------------------------------------------------------------

@pytest.mark.parametrize("text, first, last", [
    ("2019", date(2019, 1, 1), date(2019, 12, 31)),
    ("2019-02", date(2019, 2, 1), date(2019, 2, 28)),
    ("2020-02", date(2020, 2, 1), date(2020, 2, 29)),
    ("2019-11", date(2019, 11, 1), date(2019, 11, 30)),
    ("2019-12", date(2019, 12, 1), date(2019, 12, 31)),
    ("2019-12-31T23:59:00+14:00", date(2019, 12, 31), date(2019, 12, 31)),
])
def test_a_fhir_date_covers_the_days_it_names(text, first, last):
    assert _period(text) == _Period(first, last)


@pytest.mark.parametrize("text", ["", "19", "May 2019", "2019-13", "2019-02-30", "2019-00"])
def test_what_is_not_a_date_covers_no_days(text):
    assert _period(text) is None


def test_periods_are_ordered_only_when_they_do_not_overlap_and_read_as_dates():
    may, june, year = _period("2019-05"), _period("2019-06-01"), _period("2019")
    assert may.before(june) and not june.before(may)
    assert not may.before(year) and not year.before(may)  # the year holds May: neither is earlier
    assert not june.before(june)
    assert str(june) == "2019-06-01" and str(may) == "2019-05-01..2019-05-31"


def test_only_a_full_valid_date_is_a_birth_date():
    assert _full_date("2016-02-03") == date(2016, 2, 3)
    for text in ("2016-2-3", "2016-02", "2016-02-30", "2016-02-03T10:00:00Z", " 2016-02-03"):
        assert _full_date(text) is None, text


def test_age_counts_whole_years_and_the_fraction_of_the_current_one():
    assert _age_in_years(date(2016, 2, 3), date(2026, 2, 3)) == 10.0
    assert _age_in_years(date(2016, 2, 3), date(2026, 2, 2)) == pytest.approx(9.9973, abs=1e-4)
    assert _age_in_years(date(2025, 1, 1), date(2025, 7, 2)) == round(182 / 365, 4)
    # Born on 29 February: the birthday is 28 February in other years.
    assert _age_in_years(date(2016, 2, 29), date(2017, 2, 28)) == 1.0
    assert _age_in_years(date(2016, 2, 29), date(2017, 2, 27)) < 1.0
    assert _age_in_years(date(2016, 2, 29), date(2020, 2, 29)) == 4.0


def test_a_birth_date_after_the_evaluation_date_leaves_the_age_unknown():
    result = read(chart(patient=PATIENT | {"birthDate": "2026-11-22"}))
    assert result.facts.age_years is None
    assert [(p.where, p.message, p.path) for p in result.problems] == [
        ("Patient/p1", "birthDate 2026-11-22 is after the evaluation date 2026-11-21", "age_years")]
    assert read(chart(patient=PATIENT | {"birthDate": "2026-11-21"})).facts.age_years == 0.0
    no_birth = read(chart(patient={"resourceType": "Patient", "id": "p1"}))
    assert no_birth.facts.age_years is None and no_birth.problems == ()
    wrong = read(chart(patient=PATIENT | {"birthDate": 20160203}))
    assert wrong.facts.age_years is None and wrong.facts.patient_id == "p1"  # the Patient is read, but for the age
    assert [(p.where, p.message, p.path) for p in wrong.problems] == [
        ("Patient/p1", "birthDate must be a date, found a number; the age is left unknown", "age_years")]


def test_values_are_quoted_short_and_named_by_their_json_kind():
    assert _short("x" * 80) == "x" * 80 and _short("x" * 81) == "x" * 80 + "..."
    assert _short("y" * 10, limit=4) == "yyyy..." and _short(12345) == 12345
    assert [_kind(v) for v in ({}, [], "", True, 1, 1.5, None, (1,))] == [
        "an object", "a list", "text", "a boolean", "a number", "a number", "null", "tuple"]


def test_values_are_the_same_when_equal_in_kind_and_value_and_sets_in_any_order():
    assert _key(["FISH", "IHC"]) == _key(["IHC", "FISH"]) and _key(["IHC"]) != _key(["IHC", "FISH"])
    assert _key(True) != _key(1) and _key(1) == _key(1) and _key("a") != _key("b")


def test_a_finding_is_said_with_what_where_and_when():
    assert _said(_Candidate(True, "Condition/m1", _period("2026-01-10"), "a metastasis")) == (
        "a metastasis (Condition/m1 on 2026-01-10)")
    assert _said(_Candidate(False, "Observation/o1")) == "False (Observation/o1 (undated))"


def test_facts_are_set_and_unset_by_their_dotted_path():
    data: dict = {}
    _set(data, "molecular.alk.status", "positive")
    _set(data, "molecular.alk.methods", ["FISH"])
    _set(data, "age_years", 3)
    assert data == {"molecular": {"alk": {"status": "positive", "methods": ["FISH"]}}, "age_years": 3}
    _unset(data, "molecular.alk.methods[0]")  # a problem's path may name an item: the whole field goes
    _unset(data, "tumor.size_cm")  # not there: nothing happens
    _unset(data, "age_years")
    assert data == {"molecular": {"alk": {"status": "positive"}}}
    _unset({"molecular": "text"}, "molecular.alk.status")  # no object on the way: nothing to unset


# --- tumour size --------------------------------------------------------------------------------------------------


def size(resource_id, quantity, *others, dimension="33728-7"):
    return observation(resource_id, LOINC, "21889-1", component=[
        *others, {"code": {"coding": [{"system": LOINC, "code": dimension}]}, "valueQuantity": quantity}])


@pytest.mark.parametrize("quantity, cm", [
    ({"value": 42, "code": "mm", "unit": "millimetre"}, 4.2),  # the UCUM code wins over the free-text unit
    ({"value": 4.2, "unit": "cm"}, 4.2),
    ({"value": 7, "code": "cm"}, 7.0),
    ({"value": 1, "unit": "mm"}, 0.1),
])
def test_the_longest_dimension_is_read_in_cm_or_mm(quantity, cm):
    other = {"code": {"coding": [{"system": LOINC, "code": "33729-5"}]}, "valueQuantity": {"value": 99, "unit": "cm"}}
    result = read(chart(size("s", quantity, other)))
    assert result.facts.tumor.size_cm == cm and result.sources["tumor.size_cm"] == ("Observation/s",)
    assert result.problems == ()


@pytest.mark.parametrize("quantity, message", [
    (None, "tumor size without a value; not used"),
    ({"unit": "cm"}, "tumor size without a value; not used"),
    ({"value": 3, "unit": "in"}, "tumor size in unit 'in'; only cm and mm are understood"),
    ({"value": 3}, "tumor size in unit None; only cm and mm are understood"),
    ({"value": True, "unit": "cm"}, "malformed Observation (valueQuantity.value must be a number, found a boolean); "
                                    "skipped"),
    ({"value": "3", "unit": "cm"}, "malformed Observation (valueQuantity.value must be a number, found text); skipped"),
    ({"value": 10 ** 400, "unit": "cm"}, "malformed Observation (valueQuantity.value is out of range); skipped"),
])
def test_a_size_that_cannot_be_read_is_not_used_and_says_why(quantity, message):
    result = read(chart(size("s", quantity)))
    assert result.facts.tumor.size_cm is None
    assert [(p.where, p.message) for p in result.problems] == [("Observation/s", message)]


def test_a_size_observation_without_the_longest_dimension_says_why_it_is_not_used():
    result = read(chart(size("s", {"value": 3, "unit": "cm"}, dimension="33729-5")))
    assert result.facts.tumor.size_cm is None
    assert [(p.where, p.message, p.path) for p in result.problems] == [
        ("Observation/s", "tumor size without a longest-dimension component (LOINC 33728-7); not used",
         "tumor.size_cm")]


# --- the project's own code system --------------------------------------------------------------------------------


def test_a_project_fact_takes_a_boolean_text_or_coded_value():
    result = read(chart(
        fact("b", "symptoms.respiratory", valueBoolean=True),
        fact("t", "molecular.alk.fusion_partner", valueString="EML4"),
        fact("c", "history.margin_status", valueCodeableConcept={"coding": [{"system": FACT, "code": "R1"}]}),
        fact("m", "molecular.ros1.methods", valueCodeableConcept={"coding": [
            {"system": FACT, "code": "FISH"}, {"system": FACT, "code": "IHC"}]}),
    ))
    facts = result.facts
    assert facts.symptoms.respiratory is True and facts.molecular.alk.fusion_partner == "EML4"
    assert facts.history.margin_status == "R1" and set(facts.molecular.ros1.methods) == {"FISH", "IHC"}
    assert result.problems == ()


def test_a_project_fact_with_no_single_value_is_not_used():
    two = fact("two", "history.margin_status", valueCodeableConcept={"coding": [
        {"system": FACT, "code": "R1"}, {"system": FACT, "code": "R2"}]})
    none = fact("none", "history.margin_status")
    result = read(chart(two, none))
    assert result.facts.history.margin_status is None
    assert [(p.where, p.message, p.path) for p in result.problems] == [
        ("Observation/two", "no usable value for history.margin_status", "history.margin_status"),
        ("Observation/none", "no usable value for history.margin_status", "history.margin_status")]
    assert read(chart(fact("f", "symptoms.respiratory", valueBoolean=False))).facts.symptoms.respiratory is False


@pytest.mark.parametrize("path, message", [
    ("tumor.size_cm", "urn:imt-cds:fact code 'tumor.size_cm' is not a fact this code system can carry in a chart: it "
                      "is read from a tumor size Observation (LOINC 21889-1), its longest dimension"),
    ("age_years", "urn:imt-cds:fact code 'age_years' is not a fact this code system can carry in a chart: it is read "
                  "from Patient.birthDate"),
    ("history.recurence", "urn:imt-cds:fact code 'history.recurence' is not a fact this code system can carry; did "
                          "you mean 'history.recurrence'?"),
    ("blood.pressure", "urn:imt-cds:fact code 'blood.pressure' is not a fact this code system can carry"),  # no hint
])
def test_the_standard_facts_and_unknown_paths_are_refused_with_a_suggestion(path, message):
    result = read(chart(fact("x", path, valueString="1")))
    assert [(p.where, p.message) for p in result.problems] == [("Observation/x", message)]


# --- the IMT Condition, surgery, medication, progression ---------------------------------------------------------

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SURGERY_PROFILE = "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-cancer-related-surgical-procedure"


def imt_with(**elements):
    return copy.deepcopy(IMT) | elements


@pytest.mark.parametrize("body_sites, site", [
    ([{"coding": [{"system": SNOMED, "code": "39607008"}]}], "thoracic"),
    ([{"coding": [{"system": SNOMED, "code": "12345"}, {"system": SNOMED, "code": "71854001"}]}], "abdominal_pelvic"),
    ([{"coding": [{"system": SNOMED, "code": "64033007"}]}], "genitourinary"),
    ([{"coding": [{"system": SNOMED, "code": "45048000"}]}], "head_neck"),
    ([{"coding": [{"system": SNOMED, "code": "12345"}]}], "other"),  # a SNOMED code not mapped: other, not a guess
    ([{"coding": [{"system": "http://example.org/sites", "code": "39607008"}]}], "unknown"),  # not SNOMED: no site
    ([{"text": "lung"}], "unknown"),
])
def test_the_site_comes_from_the_imt_conditions_snomed_body_site(body_sites, site):
    result = read(chart(imt=imt_with(bodySite=body_sites)))
    assert result.facts.tumor.site == site
    assert ("tumor.site" in result.sources) is (site != "unknown")


@pytest.mark.parametrize("status, recurrence", [("recurrence", True), ("relapse", True), ("active", False)])
def test_recurrence_is_the_imt_conditions_clinical_status(status, recurrence):
    imt = imt_with(clinicalStatus={"coding": [{"code": status}]})
    result = read(chart(imt=imt))
    assert result.facts.history.recurrence is recurrence
    assert ("history.recurrence" in result.sources) is recurrence


@pytest.mark.parametrize("element, code, message", [
    ("verificationStatus", "refuted", "verification status refuted; not used"),
    ("verificationStatus", "entered-in-error", "verification status entered-in-error; not used"),
    ("clinicalStatus", "resolved", "clinical status resolved; not used"),
])
def test_an_imt_condition_that_does_not_stand_is_reported(element, code, message):
    result = read(chart(imt_with(id="old", **{element: {"coding": [{"code": code}]}})))
    assert [(p.where, p.message) for p in result.problems] == [("Condition/old", message)]
    assert result.eligibility.diagnosis.sources == ("Condition/imt",)


def procedure(resource_id, status="completed", code="359615001", **elements):
    return {"resourceType": "Procedure", "id": resource_id, "status": status, "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": SNOMED, "code": code}]}, **elements}


def test_a_completed_resection_for_the_imt_is_surgery_done():
    assert read(chart(procedure("s"))).facts.history.surgery_done is True
    assert read(chart(procedure("s", reasonReference=[{"reference": "Condition/imt"}]))).facts.history.surgery_done
    profiled = procedure("s", code="0000", meta={"profile": [SURGERY_PROFILE]})
    assert read(chart(profiled)).sources["history.surgery_done"] == ("Procedure/s",)
    assert read(chart(procedure("s", code="0000"))).facts.history.surgery_done is False  # not a resection


@pytest.mark.parametrize("resource, message", [
    (procedure("s", status="in-progress"), "surgical procedure with status 'in-progress'; only completed ones count"),
    (procedure("s", status=None), "surgical procedure with status None; only completed ones count"),
    (procedure("s", reasonReference=[{"reference": "Condition/other"}]),
     "surgery for Condition/other, not for the IMT; not used"),
])
def test_surgery_that_is_not_done_or_not_for_the_imt_does_not_count(resource, message):
    result = read(chart(resource))
    assert result.facts.history.surgery_done is False
    assert [(p.where, p.message, p.path) for p in result.problems] == [
        ("Procedure/s", message, "history.surgery_done")]


def medication(resource_id, kind="MedicationStatement", status="active", when="2025-03-01", **elements):
    concept = {"medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "1148495"}]}}
    return {"resourceType": kind, "id": resource_id, "status": status, "subject": {"reference": "Patient/p1"},
            "effectiveDateTime": when, **(elements or concept)}


def worse(resource_id="worse", when="2026-01-05", **elements):
    return observation(resource_id, LOINC, "97509-4", effectiveDateTime=when,
                       valueCodeableConcept={"coding": [{"system": SNOMED, "code": "271299001"}]}, **elements)


@pytest.mark.parametrize("kind, status, given", [
    ("MedicationStatement", "on-hold", True), ("MedicationStatement", "stopped", True),
    ("MedicationStatement", "completed", True), ("MedicationStatement", "not-taken", False),
    ("MedicationRequest", "on-hold", True), ("MedicationRequest", "completed", True),
    ("MedicationRequest", "active", True), ("MedicationRequest", "stopped", True),
    ("MedicationRequest", "draft", False),
    ("MedicationStatement", "active", True), ("MedicationAdministration", "completed", True),
    ("MedicationAdministration", "in-progress", True), ("MedicationAdministration", "stopped", True),
    ("MedicationAdministration", "on-hold", True), ("MedicationAdministration", "active", False),
    ("MedicationAdministration", "not-done", False),
])
def test_a_drug_counts_as_given_by_its_resources_status(kind, status, given):
    result = read(chart(medication("m", kind, status), worse()))
    assert result.facts.history.progressed_on_alk_inhibitor is given
    if not given:
        assert (f"{kind}/m", f"ALK inhibitor with status {status!r}; not counted as given") in [
            (p.where, p.message) for p in result.problems]


def test_a_drug_named_through_a_medication_resource_or_a_contained_one_is_recognised():
    drug = {"resourceType": "Medication", "id": "criz", "code": {"coding": [{"system": RXNORM, "code": "1148495"}]}}
    referenced = medication("m", medicationReference={"reference": "Medication/criz"})
    assert read(chart(drug, referenced, worse())).facts.history.progressed_on_alk_inhibitor is True
    assert read(chart(referenced, worse())).facts.history.progressed_on_alk_inhibitor is False  # not in the chart
    contained = medication("m", medicationReference={"reference": "#c1"}, contained=[
        {"resourceType": "Medication", "id": "other"}, dict(drug, id="c1")])
    assert read(chart(contained, worse())).facts.history.progressed_on_alk_inhibitor is True
    missing = medication("m", medicationReference={"reference": "#c2"}, contained=[dict(drug, id="c1")])
    assert read(chart(missing, worse())).facts.history.progressed_on_alk_inhibitor is False
    observation_named = {"resourceType": "Observation", "id": "criz"}
    wrong_type = medication("m", medicationReference={"reference": "Observation/criz"})
    assert read(chart(observation_named, wrong_type, worse())).facts.history.progressed_on_alk_inhibitor is False


def test_progression_counts_only_from_a_drug_given_no_later_than_it_was_found():
    same_day = read(chart(medication("m", when="2026-01-05"), worse(when="2026-01-05")))
    assert same_day.facts.history.progressed_on_alk_inhibitor is True
    assert same_day.sources["history.progressed_on_alk_inhibitor"] == ("Observation/worse",)
    assert same_day.sources["history.progressed_on_prior_systemic"] == ("Observation/worse",)
    later = read(chart(medication("m", when="2026-01-06"), worse(when="2026-01-05")))
    assert later.facts.history.progressed_on_alk_inhibitor is False
    assert [(p.where, p.path) for p in later.problems] == [("Observation/worse", "history.progressed_on_alk_inhibitor")]
    assert later.problems[0].message == ("disease progression recorded, but no ALK inhibitor given before it was "
                                         "found; progression on prior therapy is not set from it")
    undated = read(chart(medication("m", when=None), worse(when="2026-01-05")))
    assert undated.facts.history.progressed_on_alk_inhibitor is True
    unknown_when = read(chart(medication("m", when="2026-02-01"), worse(when=None)))
    assert unknown_when.facts.history.progressed_on_alk_inhibitor is True
    requested = medication("m", "MedicationRequest", when=None, authoredOn="2026-02-01")
    requested["medicationCodeableConcept"] = {"coding": [{"system": RXNORM, "code": "1148495"}]}
    assert read(chart(requested, worse())).facts.history.progressed_on_alk_inhibitor is False  # authored after


def test_a_disease_status_about_another_condition_or_not_worse_is_not_progression():
    other = read(chart(medication("m"), worse(focus=[{"reference": "Condition/other"}])))
    assert other.facts.history.progressed_on_alk_inhibitor is False
    assert [(p.where, p.message) for p in other.problems] == [
        ("Observation/worse", "disease status of Condition/other, not of the IMT; not used")]
    stable = worse()
    stable["valueCodeableConcept"] = {"coding": [{"system": SNOMED, "code": "359746009"}]}
    assert read(chart(medication("m"), stable)).facts.history.progressed_on_alk_inhibitor is False
    focused = worse(focus=[{"reference": "Condition/other"}, {"reference": "Condition/imt"}])
    assert read(chart(medication("m"), focused)).facts.history.progressed_on_alk_inhibitor is True


# --- staging ------------------------------------------------------------------------------------------------------

SECONDARY_PROFILE = "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-secondary-cancer-condition"
RELATED = "http://hl7.org/fhir/StructureDefinition/condition-related"


def secondary(resource_id, site="12738006", **elements):
    return {"resourceType": "Condition", "id": resource_id, "subject": {"reference": "Patient/p1"},
            "meta": {"profile": [SECONDARY_PROFILE]}, "code": {"text": "metastasis"},
            "bodySite": [{"coding": [{"system": SNOMED, "code": site}]}], **elements}


def m_category(resource_id, code, **elements):
    return observation(resource_id, SNOMED, "399387003",
                       valueCodeableConcept={"coding": [{"system": SNOMED, "code": code}]}, **elements)


@pytest.mark.parametrize("elements, message", [
    ({"verificationStatus": {"coding": [{"code": "provisional"}]}},
     "secondary tumour not confirmed (verification status provisional); not used for staging"),
    ({"verificationStatus": {"coding": [{"code": "differential"}]}},
     "secondary tumour not confirmed (verification status differential); not used for staging"),
    ({"verificationStatus": {"coding": [{"code": "unconfirmed"}]}},
     "secondary tumour not confirmed (verification status unconfirmed); not used for staging"),
    ({"clinicalStatus": {"coding": [{"code": "inactive"}]}},
     "secondary tumour with clinical status inactive; not used for staging"),
    ({"clinicalStatus": {"coding": [{"code": "remission"}]}},
     "secondary tumour with clinical status remission; not used for staging"),
    ({"extension": [{"url": RELATED, "valueReference": {"reference": "Condition/lung"}}]},
     "secondary tumour of Condition/lung, not of the IMT; not used for staging"),
])
def test_a_secondary_tumour_that_does_not_stage_the_imt_says_why(elements, message):
    result = read(chart(secondary("met", **elements)))
    assert result.facts.tumor.distant_disease is None
    assert [(p.where, p.message, p.path) for p in result.problems] == [("Condition/met", message,
                                                                          "tumor.distant_disease")]


def test_a_secondary_tumour_in_a_lymph_node_is_not_counted_and_one_without_a_site_is():
    node = read(chart(secondary("node", "59441001")))
    assert [p.message for p in node.problems] == [
        "secondary tumour in a lymph node, which may be regional: not counted as distant disease (stage the patient "
        "explicitly)"]
    no_site = secondary("met")
    del no_site["bodySite"]
    assert read(chart(no_site)).facts.tumor.distant_disease is True
    related = secondary("met", extension=[{"url": RELATED, "valueReference": {"reference": "Condition/imt"}},
                                          {"url": RELATED, "valueReference": {"display": "lung"}}])
    assert read(chart(related)).facts.tumor.distant_disease is True


def test_a_secondary_tumour_is_dated_by_its_onset_else_its_recorded_date():
    for dated in ({"onsetDateTime": "2026-03-01"}, {"onsetPeriod": {"start": "2026-03-01"}},
                  {"recordedDate": "2026-03-01"}):
        result = read(chart(m_category("m0", "1229901006", effectiveDateTime="2026-02-01"), secondary("met", **dated)))
        assert result.facts.tumor.distant_disease is True, dated
        (superseded,) = result.problems
        assert superseded.message == ("M category 1229901006 (Observation/m0 on 2026-02-01) is superseded by the later "
                                      "a secondary (metastatic) tumour (Condition/met on 2026-03-01)")
        assert (superseded.where, superseded.path, superseded.kind) == (
            "Observation/m0", "tumor.distant_disease", "superseded")


def test_the_m_category_is_dated_by_effective_else_issued_and_an_unknown_one_is_reported():
    for dated in ({"effectiveInstant": "2026-03-01T10:00:00Z"}, {"issued": "2026-03-01T10:00:00Z"},
                  {"effectivePeriod": {"start": "2026-03"}}):
        result = read(chart(m_category("m1", "1229903009", **dated), secondary("met", onsetDateTime="2026-01-01",
                      verificationStatus={"coding": [{"code": "confirmed"}]})))
        assert result.facts.tumor.distant_disease is True and result.problems == ()
        later_m0 = read(chart(m_category("m0", "1229901006", **dated), secondary("met", onsetDateTime="2026-01-01")))
        assert later_m0.facts.tumor.distant_disease is False, dated
    odd = read(chart(m_category("mx", "1229999999")))
    assert odd.facts.tumor.distant_disease is None
    assert [(p.message, p.path) for p in odd.problems] == [
        ("distant-metastasis category 1229999999 is not one this reader recognises (value sets "
         "distant-metastasis-absent / -present); not used", "tumor.distant_disease")]
    empty = read(chart(observation("mx", SNOMED, "399387003")))
    assert empty.problems[0].message.startswith("distant-metastasis category no value is not one")


def test_the_m_category_is_recognised_by_its_mcode_profile_too():
    profiled = observation("m", LOINC, "00000-0", meta={"profile": [
        "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-tnm-distant-metastases-category"]},
        valueCodeableConcept={"coding": [{"system": SNOMED, "code": "1229903009"}]})
    assert read(chart(profiled)).facts.tumor.distant_disease is True


def test_findings_that_agree_all_stand_and_undated_ones_always_stand():
    agree = read(chart(m_category("a", "1229903009", effectiveDateTime="2026-01-01"),
                       m_category("b", "1229903009", effectiveDateTime="2026-02-01")))
    assert agree.sources["tumor.distant_disease"] == ("Observation/a", "Observation/b") and agree.problems == ()
    undated = read(chart(m_category("m0", "1229901006"), secondary("met", onsetDateTime="2026-03-01")))
    assert undated.facts.tumor.distant_disease is None  # an undated M0 is never outranked: a conflict
    (conflict,) = undated.problems
    assert conflict.kind == "conflict" and conflict.severity == "warning" and conflict.path == "tumor.distant_disease"
    assert conflict.where == "Condition/met, Observation/m0"  # Conditions are read first
    assert conflict.message == (
        "conflicting values for tumor.distant_disease: a secondary (metastatic) tumour (Condition/met on 2026-03-01); "
        "M category 1229901006 (Observation/m0 (undated)); left unknown")


# --- results: status, conflicts that stop, values the facts do not allow ------------------------------------------


@pytest.mark.parametrize("status, used", [("final", True), ("amended", True), ("corrected", True),
                                          ("preliminary", False), ("registered", False), (None, False)])
def test_only_final_amended_or_corrected_results_are_used(status, used):
    result = read(chart(fact("o", "symptoms.respiratory", valueBoolean=True, status=status)))
    assert (result.facts.symptoms.respiratory is True) is used
    if not used:
        assert [(p.where, p.message) for p in result.problems] == [
            ("Observation/o", f"status {status!r}; only final, amended or corrected results are used")]


def test_an_observation_without_a_code_is_malformed():
    coded = fact("o", "symptoms.respiratory", valueBoolean=True)
    del coded["code"]
    result = read(chart(coded))
    assert [p.message for p in result.problems] == ["malformed Observation (Observation.code is required); skipped"]


def test_a_yes_no_conflict_stops_evaluation_and_says_which_resources_disagree():
    result = read(chart(procedure("s"), fact("no", "history.surgery_done", valueBoolean=False)))
    assert result.facts is None and not result.ok and result.eligibility.eligible
    (error,) = result.problems
    assert (error.where, error.severity, error.path, error.kind) == (
        "Observation/no, Procedure/s", "error", "history.surgery_done", "conflict")
    assert error.message == ("conflicting values for history.surgery_done: False (Observation/no (undated)); True "
                             "(Procedure/s (undated)); it cannot be left unknown, so nothing is evaluated")
    assert result.sources == {"patient_id": ("Patient/p1",), "age_years": ("Patient/p1",)}
    assert result.patient == "Patient/p1"


def test_a_conflict_about_a_fact_that_may_be_unknown_leaves_it_unknown_and_the_rest_is_read():
    result = read(chart(fact("a", "symptoms.respiratory", valueBoolean=True),
                        fact("b", "symptoms.respiratory", valueBoolean=False),
                        fact("r1", "history.margin_status", valueCodeableConcept={"coding": [{"system": FACT,
                                                                                              "code": "R1"}]}),
                        fact("r2", "history.margin_status", valueCodeableConcept={"coding": [{"system": FACT,
                                                                                              "code": "R2"}]}),
                        fact("e", "tumor.resectability", valueCodeableConcept={"coding": [{"system": FACT,
                                                                                           "code": "unresectable"}]})))
    assert result.ok and result.facts.symptoms.respiratory is None and result.facts.history.margin_status is None
    assert result.facts.tumor.resectability == "unresectable"
    assert [(p.path, p.severity, p.kind) for p in result.problems] == [
        ("symptoms.respiratory", "warning", "conflict"), ("history.margin_status", "warning", "conflict")]
    assert "symptoms.respiratory" not in result.sources


def test_a_value_the_facts_do_not_allow_is_dropped_and_the_rest_read():
    result = read(chart(fact("bad", "tumor.resectability", valueString="maybe"),
                        fact("ok", "symptoms.respiratory", valueBoolean=True)))
    assert result.ok and result.facts.tumor.resectability == "unknown" and result.facts.symptoms.respiratory is True
    (problem,) = result.problems
    assert (problem.where, problem.severity, problem.path, problem.kind) == (
        "Observation/bad", "warning", "tumor.resectability", "not_allowed")
    assert problem.message.startswith("value not allowed for tumor.resectability: ") and problem.message.endswith(
        "; not used")
    assert "tumor.resectability" not in result.sources and result.sources["symptoms.respiratory"] == ("Observation/ok",)


def test_methods_are_gathered_per_gene_from_every_variant_and_sourced_to_the_first():
    method = {"coding": [{"system": "urn:imt-cds:test-method", "code": "FISH"},
                         {"system": "http://example.org", "code": "NGS_RNA"}]}
    first = variant("v1", "HGNC:427", method=method)
    second = variant("v2", "HGNC:427", method={"coding": [{"system": "urn:imt-cds:test-method", "code": "IHC"}]})
    result = read(chart(first, second))
    assert result.facts.molecular.alk.methods == frozenset({"FISH", "IHC"})  # NGS_RNA: not the method system
    assert result.sources["molecular.alk.methods"] == ("Observation/v1",)
    assert result.sources["molecular.alk.status"] == ("Observation/v1", "Observation/v2")


# --- genomic variants ---------------------------------------------------------------------------------------------

HGNC = "http://www.genenames.org"


def gene(code=None, display=None, text=None, system=HGNC):
    concept: dict = {}
    if code is not None:
        concept["coding"] = [{"system": system, "code": code, **({"display": display} if display else {})}]
    if text is not None:
        concept["text"] = text
    return {"code": {"coding": [{"system": LOINC, "code": "48018-6"}]}, "valueCodeableConcept": concept}


def variant(resource_id, *genes, value=("LA9633-4",), **elements):
    components = [g if isinstance(g, dict) else gene(g) for g in genes]
    return observation(resource_id, LOINC, "69548-6", component=components,
                       valueCodeableConcept={"coding": [{"system": LOINC, "code": c} for c in value]}, **elements)


def test_a_fusion_names_its_partner_by_the_symbol_the_chart_displays_or_the_known_one():
    shown = read(chart(variant("v", "HGNC:427", gene("HGNC:12012", display="TPM3"))))
    assert shown.facts.molecular.alk.status == "positive" and shown.facts.molecular.alk.fusion_partner == "TPM3"
    known = read(chart(variant("v", "HGNC:427", gene("HGNC:10261"))))
    assert known.facts.molecular.alk.fusion_partner == "ROS1" and known.facts.molecular.ros1.fusion_partner == "ALK"
    unnamed = read(chart(variant("v", "HGNC:427", gene("HGNC:12012"))))
    assert unnamed.facts.molecular.alk.fusion_partner is None and unnamed.facts.molecular.alk.status == "positive"
    ntrk = read(chart(variant("v", "HGNC:8031", "HGNC:8033")))  # NTRK1 with NTRK3: one gene here, no partner
    assert ntrk.facts.molecular.ntrk.status == "positive" and ntrk.facts.molecular.ntrk.fusion_partner is None
    assert ntrk.problems == ()  # not two partners (NTRK3 for NTRK1, NTRK1 for NTRK3) in conflict
    three = read(chart(variant("v", "HGNC:427", gene("HGNC:1", display="A"), gene("HGNC:2", display="B"))))
    assert three.facts.molecular.alk.fusion_partner is None
    assert [(p.message, p.path) for p in three.problems] == [
        ("several partner genes for ALK; the partner is left unknown", "molecular.alk.fusion_partner")]


def test_a_negative_variant_names_no_partner_and_an_unclear_one_is_not_used():
    negative = read(chart(variant("v", "HGNC:427", gene("HGNC:12012", display="TPM3"), value=("LA9634-2",))))
    assert negative.facts.molecular.alk.status == "negative" and negative.facts.molecular.alk.fusion_partner is None
    for value in (("LA9633-4", "LA9634-2"), ()):
        unclear = read(chart(variant("v", "HGNC:427", value=value)))
        assert unclear.facts.molecular.alk.status == "unknown"
        assert [p.message for p in unclear.problems] == [
            "variant Observation is neither clearly Present nor Absent; not used"]
    other_gene = read(chart(variant("v", "HGNC:1100")))  # BRCA1: not a gene of the rules, nothing said
    assert other_gene.problems == () and other_gene.facts.molecular.alk.status == "unknown"


def test_genes_by_symbol_text_are_used_and_flagged_and_other_systems_are_not_hgnc():
    by_text = read(chart(variant("v", gene(text=" ros1 "))))
    assert by_text.facts.molecular.ros1.status == "positive"
    assert [(p.message, p.kind) for p in by_text.problems] == [
        ("gene ROS1 recognised by its symbol text only (no HGNC code); used, but check the result", "weak")]
    by_display = read(chart(variant("v", {"code": gene()["code"], "valueCodeableConcept": {
        "coding": [{"system": "http://example.org/genes", "code": "x", "display": "RET"}]}})))
    assert by_display.facts.molecular.ret.status == "positive"
    for system in ("http://www.genenames.org/geneId", "https://www.genenames.org"):
        assert read(chart(variant("v", gene("HGNC:9967", system=system)))).facts.molecular.ret.status == "positive"
    not_a_gene = gene("HGNC:427")
    not_a_gene["code"] = {"coding": [{"system": LOINC, "code": "48002-0"}]}
    assert read(chart(variant("v", not_a_gene))).facts.molecular.alk.status == "unknown"


# --- FHIR shapes --------------------------------------------------------------------------------------------------

MORPHOLOGY = "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-histology-morphology-behavior"


@pytest.mark.parametrize("break_it, message", [
    (lambda c: c.update(code="8825/1"), "code must be a CodeableConcept (an object), found text"),
    (lambda c: c.update(bodySite={"coding": []}), "bodySite must be a list of objects, found an object"),
    (lambda c: c.update(bodySite=["lung"]), "bodySite must be a list of objects, found a list"),
    (lambda c: c["code"].update(coding={"system": ICDO3}), "coding must be a list of objects, found an object"),
    (lambda c: c["code"].update(coding=[{"system": 1, "code": "8825/1"}]), "coding.system must be text, found a "
                                                                           "number"),
    (lambda c: c["code"].update(coding=[{"system": ICDO3, "code": 8825}]), "coding.code must be text, found a number"),
    (lambda c: c.update(extension={"url": MORPHOLOGY}), "extension must be a list of objects, found an object"),
    # a well-formed item first, then a malformed one: every item is checked, not only the first
    (lambda c: c.update(bodySite=[{"coding": []}, "lung"]), "bodySite must be a list of objects, found a list"),
    (lambda c: c["code"].update(coding=[{"system": ICDO3, "code": "8825/1"}, "8825/1"]), "coding must be a list of "
                                                                                          "objects, found a list"),
    (lambda c: c["code"].update(coding=[{"system": ICDO3, "code": "8825/1"}, {"system": ICDO3, "code": 1}]),
     "coding.code must be text, found a number"),
])
def test_a_malformed_imt_condition_is_skipped_naming_the_element(break_it, message):
    imt = copy.deepcopy(IMT)
    break_it(imt)
    result = read(chart(imt=imt), diagnosis_attested=True)
    assert result.ok and result.facts.tumor.site == "unknown"
    assert [(p.where, p.message) for p in result.problems] == [("Condition/imt", f"malformed Condition ({message}); "
                                                                                 "skipped")]


def test_codings_without_a_system_or_a_code_are_left_out_and_a_status_without_a_system_still_counts():
    half = imt_with(code={"coding": [{"code": "8825/1"}, {"system": ICDO3}, {"system": ICDO3, "code": ""}]})
    assert read(chart(imt=half)).eligibility.reason == "no_imt_diagnosis"
    empty = imt_with(code={"text": ""})
    assert read(chart(imt=empty)).eligibility.reason == "no_imt_diagnosis"
    no_codings = imt_with(code={"coding": None, "text": "inflammatory myofibroblastic tumour"})
    assert read(chart(imt=no_codings)).eligibility.diagnosis.basis == "text"
    refuted = imt_with(verificationStatus={"coding": [{"code": "refuted"}, {"system": "x"}, {"code": 5}]})
    assert read(chart(imt=refuted)).eligibility.reason == "no_imt_diagnosis"


def test_the_imt_may_be_named_in_the_morphology_extension_by_code_or_text():
    def with_morphology(concept, url=MORPHOLOGY):
        return imt_with(code={"text": "tumour of the lung"}, extension=[
            {"url": "http://example.org/other", "valueCodeableConcept": {"text": "x"}},
            {"url": url, "valueCodeableConcept": concept}])

    coded = read(chart(imt=with_morphology({"coding": [{"system": ICDO3, "code": "8825/1"}]})))
    assert coded.eligibility.diagnosis.basis == "coded" and coded.eligibility.diagnosis.codes == (IMT_CODE,)
    by_display = read(chart(imt=with_morphology({"coding": [{"system": "http://example.org", "code": "1",
                                                             "display": "Inflammatory myofibroblastic tumor"}]})))
    assert by_display.eligibility.diagnosis.basis == "text"
    elsewhere = read(chart(imt=with_morphology({"coding": [{"system": ICDO3, "code": "8825/1"}]},
                                               url="http://example.org/not-morphology")))
    assert elsewhere.eligibility.reason == "no_imt_diagnosis"


def test_epithelioid_morphology_from_the_morphology_text_is_used_and_flagged():
    imt = imt_with(extension=[{"url": MORPHOLOGY, "valueCodeableConcept": {
        "text": "Epithelioid inflammatory myofibroblastic sarcoma"}}])
    result = read(chart(imt=imt))
    assert result.facts.tumor.epithelioid_morphology is True
    assert [(p.where, p.path, p.kind) for p in result.problems] == [
        ("Condition/imt", "tumor.epithelioid_morphology", "weak")]
    assert result.problems[0].message == ("epithelioid morphology recognised from the Condition's text only (no "
                                          "verified code exists): confirm it")
    assert read(chart()).facts.tumor.epithelioid_morphology is False


def test_mcodes_history_of_metastatic_cancer_reads_its_boolean():
    def history(**value):
        return observation("h", SNOMED, "1287652008", effectiveDateTime="2026-01-01", **value)

    assert read(chart(history())).facts.tumor.distant_disease is True
    assert read(chart(history(valueBoolean=True))).facts.tumor.distant_disease is True
    assert read(chart(history(valueBoolean=False))).facts.tumor.distant_disease is False
    odd = read(chart(history(valueBoolean="no")))
    assert odd.facts.tumor.distant_disease is None
    assert [p.message for p in odd.problems] == [
        "malformed Observation (valueBoolean must be true or false, found text); skipped"]
    both = read(chart(history(valueBoolean=False), m_category("m1", "1229903009", effectiveDateTime="2026-02-01")))
    (superseded,) = both.problems
    assert superseded.message.startswith("history of metastatic cancer: no (Observation/h on 2026-01-01) is "
                                         "superseded")


def test_profiles_are_read_only_from_a_list_of_texts():
    # (a code whose words name no metastasis: known as a secondary tumour by its profile or not at all)
    for meta in ({"profile": SECONDARY_PROFILE}, "x", {"profile": [5]}):
        met = secondary("met", meta=meta, code={"text": "lung nodule"})
        result = read(chart(met))
        assert result.facts.tumor.distant_disease is None, meta  # not known as secondary: another Condition
    mixed = secondary("met", meta={"profile": [5, "http://example.org/x", SECONDARY_PROFILE]},
                      code={"text": "lung nodule"})
    assert read(chart(mixed)).facts.tumor.distant_disease is True


@pytest.mark.parametrize("hgnc, gene", [("HGNC:427", "alk"), ("HGNC:10261", "ros1"), ("HGNC:8031", "ntrk"),
                                        ("HGNC:8032", "ntrk"), ("HGNC:8033", "ntrk"), ("HGNC:9967", "ret"),
                                        ("HGNC:8804", "pdgfrb")])
def test_every_gene_of_the_rules_is_known_by_its_hgnc_code(hgnc, gene):
    result = read(chart(variant("v", hgnc)))
    assert getattr(result.facts.molecular, gene).status == "positive"
    assert result.sources[f"molecular.{gene}.status"] == ("Observation/v",)


def test_a_concepts_text_must_be_text_else_its_displays_are_read():
    imt = imt_with(code={"text": 5, "coding": [{"system": "http://example.org", "code": "1",
                                                "display": "Inflammatory myofibroblastic tumour"}, {"display": 7}]})
    assert read(chart(imt=imt)).eligibility.diagnosis.basis == "text"


def test_a_rulebook_without_the_value_sets_the_reader_needs_cannot_read_fhir():
    from imt_cds import load_rulebook
    from imt_cds.core.terminology import Terminology

    full = load_rulebook().terminology
    partial = Terminology({name: vs for name, vs in full.value_sets.items() if name != "imt-diagnosis"})
    with pytest.raises(ValueError, match="this rulebook cannot read FHIR: it lacks the value sets imt-diagnosis"):
        read(chart(), terminology=partial)
    assert read(chart(), terminology=full).ok


# --- the whole-module mutation run: what the tests above did not tell apart -----------------------------------------


def test_the_observation_codes_to_fetch_are_exactly_those_the_reader_reads():
    """The CDS Hooks prefetch asks for these codes (README, service table): a code missing from the list is a result
    the service never sees; one not read is fetched for nothing."""
    from imt_cds import load_rulebook
    from imt_cds.fhir.reader import OBSERVATION_CODES

    terminology = load_rulebook().terminology
    read_by_value_set = {(c.system, c.code) for name in ("tnm-distant-metastases-observation",
                                                         "history-of-metastatic-cancer", "cancer-disease-status")
                         for c in terminology[name].codes}
    assert len(OBSERVATION_CODES) == len(set(OBSERVATION_CODES))
    assert set(OBSERVATION_CODES) == {(LOINC, "21889-1"), (LOINC, "69548-6"), (FACT, "")} | read_by_value_set
    # the M category's own code is among them (mCODE's TNM distant metastases category Observation)
    assert (SNOMED, "399387003") in OBSERVATION_CODES


# SNOMED CT body structures and the site each one is, as the shipped rulebook's tumor-site-*.yaml value sets list
# them (each code with its source there): a chart coding its IMT in any of them gets that site, never "other".
BODY_SITES = {
    "thoracic": {"39607008": "lung", "31094006": "lobe of lung", "86598002": "apex of lung", "955009": "bronchus",
                 "44567001": "trachea", "72410000": "mediastinum", "816094009": "chest", "113197003": "rib",
                 "56873002": "sternum", "80891009": "heart"},
    "abdominal_pelvic": {"818981001": "abdomen", "818983003": "abdomen", "113345001": "abdomen",
                         "818982008": "abdomen and pelvis", "816092008": "pelvis", "10200004": "liver",
                         "69695003": "stomach", "15776009": "pancreas", "78961009": "spleen", "71854001": "colon",
                         "14742008": "large intestine", "30315005": "small intestine", "38848004": "duodenum",
                         "21306003": "jejunum", "34516001": "ileum", "34402009": "rectum", "28231008": "gallbladder",
                         "34707002": "biliary tract", "63337009": "lower trunk"},
    "genitourinary": {"89837001": "urinary bladder", "64033007": "kidney", "87953007": "ureter",
                      "13648007": "urethra", "41216001": "prostate", "431491007": "upper urinary tract",
                      "110639002": "uterus and fallopian tubes"},
    "head_neck": {"69536005": "head", "45048000": "neck", "774007": "head and neck", "4596009": "larynx",
                  "363654007": "orbit", "2095001": "paranasal sinus", "45289007": "parotid", "91609006": "mandible",
                  "70925003": "maxilla", "371398005": "eye region", "661005": "jaw region",
                  "54019009": "submandibular gland"},
}


@pytest.mark.parametrize("code, site", [(code, site) for site, codes in BODY_SITES.items() for code in codes],
                         ids=[f"{name}-{code}" for codes in BODY_SITES.values() for code, name in codes.items()])
def test_every_mapped_body_structure_gives_its_site(code, site):
    result = read(chart(imt=imt_with(bodySite=[{"coding": [{"system": SNOMED, "code": code}]}])))
    assert result.facts.tumor.site == site
    assert result.sources["tumor.site"] == ("Condition/imt",)


@pytest.mark.parametrize(("path", "element"), [("patient_id", "Patient.id"),
                                             ("tumor.site", "the IMT Condition's bodySite")])
def test_the_patient_and_the_site_cannot_be_set_through_the_projects_code_system(path, element):
    """Whose chart it is comes from the Patient, the site from the coded body site: an Observation of the project's
    code system must not name another patient or move the tumour."""
    result = read(chart(fact("x", path, valueString="thoracic" if path == "tumor.site" else "p2")))
    (problem,) = result.problems
    assert problem.where == "Observation/x"
    assert problem.message == (f"urn:imt-cds:fact code {path!r} is not a fact this code system can carry in a chart: "
                               f"it is read from {element}")
    assert result.facts.patient_id == "p1" and result.facts.tumor.site == "unknown"
    assert "Observation/x" not in {ref for refs in result.sources.values() for ref in refs}


MIB = 1024 * 1024


def test_a_fhir_chart_file_may_be_up_to_64_mib_and_a_larger_one_is_refused(tmp_path, capsys):
    """README: `evaluate --fhir` reads a chart file of up to 64 MiB (a patient's facts: 1 MB)."""
    from imt_cds.cli.main import main

    body = json.dumps({"resourceType": "Bundle", "type": "collection",
                       "entry": [{"resource": r} for r in chart()]}).encode()
    at_limit = tmp_path / "at-limit.json"
    at_limit.write_bytes(body + b" " * (64 * MIB - len(body)))
    assert main(["evaluate", "--fhir", str(at_limit), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["patient_id"] == "p1"
    over = tmp_path / "over.json"
    over.write_bytes(body + b" " * (64 * MIB + 1 - len(body)))
    assert main(["evaluate", "--fhir", str(over)]) == 2
    assert f"input is larger than {64 * MIB} bytes" in capsys.readouterr().err


def test_what_the_reader_returns_cannot_be_changed_by_whoever_receives_it():
    from dataclasses import FrozenInstanceError

    result = read(chart(imt=None))
    problem = FhirProblem("Observation/o1", "not used")
    diagnosis = Diagnosis("coded", ("Condition/imt",))
    for value, attribute in ((result, "facts"), (result.eligibility, "eligible"), (problem, "severity"),
                             (diagnosis, "basis")):
        with pytest.raises(FrozenInstanceError):
            setattr(value, attribute, None)


def test_a_problem_about_no_fact_and_an_eligibility_without_a_diagnosis_say_none():
    assert FhirProblem("x", "y").path is None and FhirProblem("x", "y").to_dict()["path"] is None
    refused = read(chart(imt=None))
    assert refused.eligibility.diagnosis is None and Eligibility(True, "imt_diagnosis", "").diagnosis is None


def test_an_empty_full_url_names_no_one():
    """An entry's fullUrl "" is no name: a Patient without an id has no other one, and a reference "" is no one's."""
    entry_of = {"resourceType": "Bundle", "type": "collection"}
    anonymous = dict(entry_of, entry=[{"fullUrl": "", "resource": {"resourceType": "Patient"}},
                                      {"fullUrl": "urn:uuid:c1", "resource": copy.deepcopy(IMT)}])
    with pytest.raises(ChartRefusedError) as raised:
        facts_from_bundle(anonymous, ON)
    assert raised.value.reason == "patient_without_id"
    nobody = copy.deepcopy(IMT) | {"subject": {"reference": ""}}
    named = dict(entry_of, entry=[{"fullUrl": "", "resource": copy.deepcopy(PATIENT)}, {"resource": nobody}])
    result = facts_from_bundle(named, ON)
    assert not result.ok and result.eligibility.reason == "no_imt_diagnosis"
    assert [p.where for p in result.problems] == ["Condition/imt"]


@pytest.mark.parametrize("reference, about_the_patient", [
    ("Patient/p1/_history/3", True),
    ("https://ehr.example.org/fhir/Patient/p1/_history/3", True),
    ("Patient/p2/_history/3", False),
    ("Patient/p1/_history/3/extra", False),  # not a version: the last two segments are not the patient
])
def test_a_versioned_reference_names_the_resource_whatever_its_version(reference, about_the_patient):
    imt = copy.deepcopy(IMT) | {"subject": {"reference": reference}}
    result = read(chart(imt=imt))
    assert result.ok is about_the_patient
    assert ("Condition/imt" in result.eligibility.to_dict()["diagnosis"]["sources"]) if about_the_patient else \
        result.eligibility.reason == "no_imt_diagnosis"


def test_a_versioned_reference_to_an_entrys_full_url_names_that_entry():
    entries = [{"fullUrl": "https://ehr.example.org/fhir/Patient/abc", "resource": {"resourceType": "Patient"}},
               {"resource": copy.deepcopy(IMT) | {
                   "subject": {"reference": "https://ehr.example.org/fhir/Patient/abc/_history/2"}}}]
    result = facts_from_bundle({"resourceType": "Bundle", "type": "collection", "entry": entries}, ON)
    assert result.ok and result.patient == "https://ehr.example.org/fhir/Patient/abc"


def test_a_rulebook_lacking_several_value_sets_names_each_of_them():
    from imt_cds import load_rulebook
    from imt_cds.core.terminology import Terminology

    full = load_rulebook().terminology
    lacking = {"imt-diagnosis", "alk-inhibitors"}
    partial = Terminology({name: vs for name, vs in full.value_sets.items() if name not in lacking})
    with pytest.raises(ValueError) as raised:
        read(chart(), terminology=partial)
    assert str(raised.value) == ("this rulebook cannot read FHIR: it lacks the value sets imt-diagnosis, "
                                 "alk-inhibitors")


@pytest.mark.parametrize("odd_bundle", [{"resourceType": "Bundle", "id": "empty"},
                                        {"resourceType": "Bundle", "id": "odd", "entry": "x"}])
def test_a_bundle_with_no_entries_to_read_does_not_stop_the_reading_of_the_values_after_it(odd_bundle):
    result = read([odd_bundle, *chart()])
    assert result.ok and result.patient == "Patient/p1"
    assert result.eligibility.diagnosis.sources == ("Condition/imt",)


@pytest.mark.parametrize("reference, about_the_patient", [
    ("Patient/p1/", True),  # a trailing slash names the same resource
    ("https://ehr.example.org/fhir/Patient/p1/", True),
    ("urn:example:x/Patient/p1", False),  # a URN names a resource only as an entry's fullUrl, never by its text
])
def test_how_a_reference_is_read_into_type_and_id(reference, about_the_patient):
    imt = copy.deepcopy(IMT) | {"subject": {"reference": reference}}
    result = read(chart(imt=imt))
    assert result.ok is about_the_patient
    if not about_the_patient:
        assert [(p.where, p.message) for p in result.problems] == [
            ("Condition/imt", f"about {reference}, not Patient/p1; not used")]


def test_the_json_form_is_json_and_a_refused_bundle_says_exactly_what_is_wrong():
    methods = variant("v", "HGNC:427", method={"coding": [{"system": "urn:imt-cds:test-method", "code": "FISH"}]})
    data = read(chart(methods)).to_dict()
    assert json.loads(json.dumps(data))["facts"]["molecular"]["alk"]["methods"] == ["FISH"]
    with pytest.raises(InvalidInputError) as raised:
        facts_from_bundle({"resourceType": "Patient", "id": "p1"}, ON)
    assert raised.value.problems[0].message == "expected a FHIR Bundle, got 'Patient'"
    with pytest.raises(InvalidInputError) as raised:
        facts_from_bundle({"resourceType": "Bundle", "entry": {"resource": PATIENT}}, ON)
    assert raised.value.problems[0].message == "Bundle.entry must be a list of entries"


# --- written against the survivors of the whole-file run past id 214 (tests/mutation-survivors.md) ----------------


def test_a_value_given_among_the_resources_that_is_not_one_is_named_by_its_place():
    result = read([*chart(), 42, {"id": "no-type"}])
    assert result.ok
    assert [(p.where, p.message) for p in result.problems] == [
        ("entry[2]", "not a FHIR resource (no resourceType); skipped"),
        ("entry[3]", "not a FHIR resource (no resourceType); skipped")]


def test_an_m_category_is_said_with_every_code_it_holds():
    m1 = observation("m1", SNOMED, "399387003", effectiveDateTime="2026-01-01", valueCodeableConcept={"coding": [
        {"system": SNOMED, "code": "1229903009"}, {"system": SNOMED, "code": "1229999999"}]})
    result = read(chart(m1, m_category("m0", "1229901006", effectiveDateTime="2026-02-01")))
    assert result.facts.tumor.distant_disease is False
    assert [p.message for p in result.problems] == [
        "M category 1229903009, 1229999999 (Observation/m1 on 2026-01-01) is superseded by the later M category "
        "1229901006 (Observation/m0 on 2026-02-01)"]


def test_a_history_of_metastatic_cancer_is_dated_by_effective_else_issued_and_said_as_yes_or_no():
    issued = observation("h", SNOMED, "1287652008", issued="2026-03-01T09:00:00Z")
    result = read(chart(m_category("m0", "1229901006", effectiveDateTime="2026-02-01"), issued))
    assert result.facts.tumor.distant_disease is True
    assert [(p.where, p.message, p.severity, p.kind) for p in result.problems] == [(
        "Observation/m0", "M category 1229901006 (Observation/m0 on 2026-02-01) is superseded by the later history "
        "of metastatic cancer: yes (Observation/h on 2026-03-01)", "warning", "superseded")]


def test_a_finding_superseded_by_several_is_said_with_each_of_them():
    # Two M1 findings stand (one dated, one undated: neither outranks the other); the older M0 gives way to both.
    result = read(chart(m_category("m0", "1229901006", effectiveDateTime="2026-01-01"),
                        m_category("a", "1229903009", effectiveDateTime="2026-02-01"),
                        m_category("b", "1229903009")))
    assert result.facts.tumor.distant_disease is True
    assert result.sources["tumor.distant_disease"] == ("Observation/a", "Observation/b")
    assert [(p.where, p.message, p.severity, p.path, p.kind) for p in result.problems] == [(
        "Observation/m0", "M category 1229901006 (Observation/m0 on 2026-01-01) is superseded by the later M category "
        "1229903009 (Observation/a on 2026-02-01); M category 1229903009 (Observation/b (undated))", "warning",
        "tumor.distant_disease", "superseded")]


def test_a_disease_status_about_several_other_conditions_names_each():
    other = read(chart(medication("m"), worse(focus=[{"reference": "Condition/a"}, {"reference": "Condition/b"}])))
    assert [(p.where, p.message) for p in other.problems] == [
        ("Observation/worse", "disease status of Condition/a, Condition/b, not of the IMT; not used")]


def test_a_disease_status_is_dated_by_effective_else_issued():
    issued_before = worse(when=None, issued="2025-01-01T00:00:00Z")  # found before the drug was started (2025-03-01)
    del issued_before["effectiveDateTime"]
    result = read(chart(medication("m"), issued_before))
    assert result.facts.history.progressed_on_alk_inhibitor is False
    assert [p.path for p in result.problems] == ["history.progressed_on_alk_inhibitor"]


def test_progression_is_said_with_every_drug_given_before_it():
    said_not = fact("f", "history.progressed_on_alk_inhibitor", valueBoolean=False)
    result = read(chart(medication("m"), medication("n"), worse(), said_not))
    assert result.facts is None
    (error,) = result.problems
    assert error.message == (
        "conflicting values for history.progressed_on_alk_inhibitor: False (Observation/f (undated)); progression "
        "after MedicationStatement/m, MedicationStatement/n (Observation/worse (undated)); it cannot be left unknown, "
        "so nothing is evaluated")



@pytest.mark.parametrize("quantity", [None, {"unit": "cm"}, {"value": 3, "unit": "in"}, {"value": 3}])
def test_a_size_that_is_not_used_is_reported_against_the_size(quantity):
    (problem,) = read(chart(size("s", quantity))).problems
    assert (problem.path, problem.severity, problem.kind) == ("tumor.size_cm", "warning", "skipped")


def test_a_size_is_kept_to_six_decimals_of_a_centimetre():
    # Enough for any measurement, and no float noise from the unit conversion (23 mm is 2.3 cm, not 2.3000000000000003).
    assert read(chart(size("s", {"value": 12.3456789, "code": "mm"}))).facts.tumor.size_cm == 1.234568
    assert read(chart(size("s", {"value": 23, "code": "mm"}))).facts.tumor.size_cm == 2.3


def test_a_value_not_allowed_is_reported_against_every_resource_it_came_from():
    too_large = {"value": 150, "unit": "cm"}
    result = read(chart(size("a", too_large), size("b", too_large)))
    assert result.ok and result.facts.tumor.size_cm is None and "tumor.size_cm" not in result.sources
    (problem,) = result.problems
    assert (problem.where, problem.path, problem.kind) == ("Observation/a, Observation/b", "tumor.size_cm",
                                                           "not_allowed")


def test_a_method_not_allowed_is_reported_against_the_resource_that_gave_it():
    odd = fact("o", "molecular.alk.methods", valueCodeableConcept={"coding": [
        {"system": FACT, "code": "IHC"}, {"system": FACT, "code": "BOGUS"}]})
    result = read(chart(odd))
    assert result.ok and result.facts.molecular.alk.methods == frozenset()
    (problem,) = result.problems
    assert (problem.where, problem.path, problem.kind) == ("Observation/o", "molecular.alk.methods[1]", "not_allowed")
    assert "molecular.alk.methods" not in result.sources  # dropped: no resource stands behind the default


@pytest.mark.parametrize("patient, expected, message", [
    ({"resourceType": "Patient", "id": 12}, None,
     "Patient/entry[0]: Patient.id must be text; the chart's patient cannot be established"),
    ({"resourceType": "Patient"}, None,
     "the chart's Patient has no id (and no fullUrl): whose data it is cannot be established"),
    (None, "p9", "the chart holds no Patient resource: whose data it is cannot be established (expected Patient/p9)"),
])
def test_a_chart_whose_patient_cannot_be_established_is_refused_in_these_words(patient, expected, message):
    with pytest.raises(ChartRefusedError) as raised:
        read(chart(patient=patient), patient_id=expected)
    assert [p.message for p in raised.value.problems] == [message]


def test_a_diagnosis_from_text_only_is_flagged_on_its_condition_in_these_words():
    text = {"resourceType": "Condition", "id": "t", "subject": {"reference": "Patient/p1"},
            "code": {"text": "Inflammatory myofibroblastic tumour of the lung"}}
    result = read(chart(text, imt=None))
    assert [(p.where, p.message, p.severity, p.kind) for p in result.problems] == [(
        "Condition/t", "IMT diagnosis recognised from the Condition's text only, not from a code of value set "
        "imt-diagnosis: confirm the diagnosis", "warning", "weak")]


def test_a_birth_date_that_is_not_a_full_date_is_said_in_these_words():
    result = read(chart(patient={"resourceType": "Patient", "id": "p1", "birthDate": "2016-02"}))
    assert result.facts.age_years is None
    assert [(p.where, p.message, p.path) for p in result.problems] == [
        ("Patient/p1", "birthDate '2016-02' is not a full date; the age is left unknown", "age_years")]


@pytest.mark.parametrize("coding, found", [(5, "a number"), ("x", "text"), ({"code": "x"}, "an object")])
def test_a_coding_element_that_is_not_a_list_is_malformed(coding, found):
    odd = observation("o", LOINC, "21889-1")
    odd["code"]["coding"] = coding
    result = read(chart(odd))
    assert [(p.where, p.message) for p in result.problems] == [
        ("Observation/o", f"malformed Observation (coding must be a list of objects, found {found}); skipped")]


def test_a_refuted_condition_is_said_with_every_verification_status_code():
    refuted = copy.deepcopy(IMT) | {"id": "old", "verificationStatus": {"coding": [
        {"code": "refuted"}, {"system": "http://example.org", "code": "checked"}]}}
    result = read(chart(refuted))
    assert [(p.where, p.message) for p in result.problems] == [
        ("Condition/old", "verification status refuted/checked; not used")]


def test_a_recurrence_is_said_with_every_clinical_status_code():
    recurred = copy.deepcopy(IMT) | {"clinicalStatus": {"coding": [{"code": "recurrence"}, {"code": "active"}]}}
    result = read(chart(fact("f", "history.recurrence", valueBoolean=False), imt=recurred))
    (error,) = result.problems
    assert error.message == (
        "conflicting values for history.recurrence: clinical status recurrence/active (Condition/imt (undated)); "
        "False (Observation/f (undated)); it cannot be left unknown, so nothing is evaluated")


@pytest.mark.parametrize("status", ["clinicalStatus", "verificationStatus"])
def test_a_status_whose_coding_is_not_a_list_makes_the_condition_malformed(status):
    odd = copy.deepcopy(IMT) | {"id": "odd", status: {"coding": "refuted"}}
    result = read(chart(odd))
    assert [(p.where, p.message) for p in result.problems] == [
        ("Condition/odd", "malformed Condition (coding must be a list of objects, found text); skipped")]


def test_a_code_added_to_the_epithelioid_value_set_sets_the_morphology(tmp_path):
    from rulebook_copies import copy_rulebook, edit

    from imt_cds import load_rulebook

    rules = copy_rulebook(tmp_path)
    edit(rules, "terminology/epithelioid-imt.yaml", "codes: []", 'codes:\n  - system: "http://example.org/local"\n'
         '    code: "EIMS"\n    display: "Epithelioid inflammatory myofibroblastic sarcoma"\n'
         '    source: "a local code, for this test"\n')
    coded = copy.deepcopy(IMT)
    coded["code"]["coding"].append({"system": "http://example.org/local", "code": "EIMS"})
    result = read(chart(imt=coded), terminology=load_rulebook(rules).terminology)
    assert result.facts.tumor.epithelioid_morphology is True and result.problems == ()  # a code: nothing to confirm
    assert result.sources["tumor.epithelioid_morphology"] == ("Condition/imt",)


class _OtherList(list):
    """A list of another type, as a Python caller may build a chart: it takes the reader's checking path."""


def _other_types(value):
    if isinstance(value, dict):
        return types.MappingProxyType({key: _other_types(item) for key, item in value.items()})
    if isinstance(value, list):
        return _OtherList(_other_types(item) for item in value)
    return value


@pytest.mark.parametrize("convert", [lambda value: value, _other_types], ids=["JSON types", "other mapping types"])
def test_a_coding_with_an_empty_system_or_code_is_left_out(convert):
    for coding in ({"system": "", "code": "33728-7"}, {"system": LOINC, "code": ""}):
        odd = size("s", {"value": 3, "unit": "cm"})
        odd["component"][0]["code"]["coding"] = [coding]
        result = read(convert(chart(odd)))
        assert result.ok and result.facts.tumor.size_cm is None, coding
    assert read(convert(chart(size("s", {"value": 3, "unit": "cm"})))).facts.tumor.size_cm == 3


@pytest.mark.parametrize("elements, message", [
    ({"extension": [{"url": RELATED, "valueReference": {"reference": "Condition/lung"}},
                    {"url": RELATED, "valueReference": {"reference": "Condition/liver"}}]},
     "secondary tumour of Condition/lung, Condition/liver, not of the IMT; not used for staging"),
    ({"verificationStatus": {"coding": [{"code": "provisional"}, {"code": "checked"}]}},
     "secondary tumour not confirmed (verification status provisional/checked); not used for staging"),
    ({"clinicalStatus": {"coding": [{"code": "inactive"}, {"code": "checked"}]}},
     "secondary tumour with clinical status inactive/checked; not used for staging"),
])
def test_a_secondary_tumour_that_does_not_stage_is_said_with_every_code_and_reference(elements, message):
    result = read(chart(secondary("met", **elements)))
    assert [(p.where, p.message) for p in result.problems] == [("Condition/met", message)]


def test_surgery_for_several_other_conditions_names_each():
    other = procedure("s", reasonReference=[{"reference": "Condition/a"}, {"reference": "Condition/b"}])
    result = read(chart(other))
    assert result.facts.history.surgery_done is False
    assert [(p.where, p.message) for p in result.problems] == [
        ("Procedure/s", "surgery for Condition/a, Condition/b, not for the IMT; not used")]


@pytest.mark.parametrize("elements", [{}, {"medicationReference": "Medication/criz"},
                                      {"medicationReference": {"display": "one tablet"}}])
def test_a_drug_resource_without_a_usable_code_or_reference_is_not_counted(elements):
    # {} leaves out both medication[x] elements (the helper's coded default is replaced by what is given). (A
    # display that names an ALK inhibitor is one by its name: test_fhir_safety.py, progression.)
    drug = {"resourceType": "Medication", "id": "criz", "code": {"coding": [{"system": RXNORM, "code": "1148495"}]}}
    unnamed = medication("m", **(elements or {"note": []}))
    result = read(chart(drug, unnamed, worse()))
    assert result.ok and result.facts.history.progressed_on_alk_inhibitor is False


def test_a_referenced_medication_is_the_one_named_not_another_in_the_chart():
    crizotinib = {"resourceType": "Medication", "id": "criz",
                  "code": {"coding": [{"system": RXNORM, "code": "1148495"}]}}
    other = {"resourceType": "Medication", "id": "other", "code": {"coding": [{"system": RXNORM, "code": "0"}]}}
    referenced = medication("m", medicationReference={"reference": "Medication/other"})
    assert read(chart(crizotinib, other, referenced, worse())).facts.history.progressed_on_alk_inhibitor is False


def test_the_displays_of_a_concept_without_text_are_read_as_one_text():
    # The codings' displays read together, as a clinician sees them: "excluded" in one of them excludes the IMT the
    # other names (a word of its own: nothing is glued to it).
    condition = {"resourceType": "Condition", "id": "c", "subject": {"reference": "Patient/p1"}, "code": {"coding": [
        {"system": "http://example.org", "code": "1", "display": "Inflammatory myofibroblastic tumour"},
        {"system": "http://example.org", "code": "2", "display": "excluded"}]}}
    result = read(chart(condition, imt=None))
    assert not result.eligibility.eligible and result.eligibility.reason == "no_imt_diagnosis"
    named = copy.deepcopy(condition)
    named["code"]["coding"][1]["display"] = "lung"
    assert read(chart(named, imt=None)).eligibility.diagnosis.basis == "text"


def test_a_reference_is_read_whatever_letters_its_id_ends_with():
    # Only a trailing slash is cut from a reference: "Condition/imtX/" and "Condition/imtX" name the same resource.
    imt = copy.deepcopy(IMT) | {"id": "imtX"}
    for reference in ("Condition/imtX", "Condition/imtX/"):
        surgery = procedure("s", reasonReference=[{"reference": reference}])
        result = read(chart(surgery, imt=imt))
        assert result.facts.history.surgery_done is True and result.problems == (), reference


@pytest.mark.parametrize("hgnc, fact_gene, symbol", [
    ("HGNC:427", "alk", "ALK"), ("HGNC:10261", "ros1", "ROS1"), ("HGNC:8031", "ntrk", "NTRK1"),
    ("HGNC:8032", "ntrk", "NTRK2"), ("HGNC:8033", "ntrk", "NTRK3"), ("HGNC:9967", "ret", "RET"),
    ("HGNC:8804", "pdgfrb", "PDGFRB")])
def test_every_gene_of_the_rules_goes_by_its_hgnc_symbol(hgnc, fact_gene, symbol):
    # As a fusion partner named by code only, the gene is shown by its symbol ...
    partner_of, other = ("HGNC:10261", "ros1") if fact_gene == "alk" else ("HGNC:427", "alk")
    result = read(chart(variant("v", partner_of, hgnc)))
    assert getattr(result.facts.molecular, other).fusion_partner == symbol
    # ... and a gene named by its symbol's text alone is recognised (and flagged as such).
    by_text = read(chart(variant("v", gene(text=symbol.lower()))))
    assert getattr(by_text.facts.molecular, fact_gene).status == "positive"
    assert [p.kind for p in by_text.problems] == ["weak"]
