"""FHIR R4 (mCODE, Genomics Reporting) resources -> patient facts: what is read, from where, and what is refused."""

from __future__ import annotations

import copy
import json
from datetime import date
from pathlib import Path

import pytest

from imt_cds import InvalidInputError, evaluate
from imt_cds.fhir.reader import facts_from_bundle, facts_from_resources

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"  # unmodified copies of published examples (_index.json)
EXAMPLE = json.loads((ROOT / "examples" / "fhir" / "alk-lung-distant-bundle.json").read_text())
ON = date(2026, 11, 21)


def resources(bundle=EXAMPLE):
    return [copy.deepcopy(entry["resource"]) for entry in bundle["entry"]]


def by_id(items, resource_id):
    return next(r for r in items if r.get("id") == resource_id)


def test_the_example_bundle_gives_the_expected_facts_each_with_its_source():
    result = facts_from_bundle(EXAMPLE, ON)
    assert result.ok and result.problems == ()
    facts = result.facts.model_dump(mode="json")
    assert facts["patient_id"] == "imt-example-1"
    assert facts["age_years"] == pytest.approx(10.6904, abs=1e-4)
    assert facts["tumor"] == {"site": "thoracic", "size_cm": 6.0, "resectability": "unresectable",
                                   "distant_disease": True, "epithelioid_morphology": False}
    assert facts["molecular"]["alk"] == {"status": "positive", "methods": ["FISH"], "fusion_partner": "TPM3",
                                         "ihc_pattern": None}
    assert facts["molecular"]["ros1"]["status"] == "unknown"  # no result is unknown, never negative
    assert result.sources["tumor.size_cm"] == ("Observation/imt-size",)
    assert result.sources["tumor.distant_disease"] == ("Condition/imt-distant",)
    assert result.sources["molecular.alk.fusion_partner"] == ("Observation/imt-alk-fusion",)
    assert "REC_CRIZOTINIB_ALK" in evaluate(result.facts).codes


def test_age_is_in_calendar_years_at_the_evaluation_date():
    items = resources()
    by_id(items, "imt-example-1")["birthDate"] = "2025-11-21"
    assert facts_from_resources(items, ON).facts.age_years == 1.0  # the first birthday is exactly 1
    assert facts_from_resources(items, date(2026, 11, 20)).facts.age_years < 1


@pytest.mark.parametrize("birth", ["2016", "2016-03"])
def test_a_partial_birth_date_leaves_the_age_unknown(birth):
    items = resources()
    by_id(items, "imt-example-1")["birthDate"] = birth
    result = facts_from_resources(items, ON)
    assert result.facts.age_years is None
    assert any(p.path == "age_years" and "not a full date" in p.message for p in result.problems)


def test_sizes_in_mm_and_cm_are_read_and_other_units_refused():
    items = resources()
    size = by_id(items, "imt-size")["component"][0]["valueQuantity"]
    size.update(value=4.2, unit="cm", code="cm")
    assert facts_from_resources(items, ON).facts.tumor.size_cm == 4.2
    size.update(value=2, unit="[in_i]", code="[in_i]")
    result = facts_from_resources(items, ON)
    assert result.facts.tumor.size_cm is None
    assert any("only cm and mm" in p.message for p in result.problems)


def test_an_unmapped_body_site_is_other_and_no_primary_condition_is_unknown():
    items = resources()
    by_id(items, "imt-primary")["bodySite"][0]["coding"][0]["code"] = "76752008"  # breast: not an IMT site class
    assert facts_from_resources(items, ON).facts.tumor.site == "other"
    without = [r for r in items if r.get("id") != "imt-primary"]
    assert facts_from_resources(without, ON).facts.tumor.site == "unknown"


def test_a_tested_absent_fusion_is_negative():
    items = resources()
    fusion = by_id(items, "imt-alk-fusion")
    fusion["valueCodeableConcept"]["coding"][0].update(code="LA9634-2", display="Absent")
    facts = facts_from_resources(items, ON).facts
    assert facts.molecular.alk.status == "negative" and facts.molecular.alk.fusion_partner is None


def test_genes_are_matched_by_hgnc_code_not_by_name():
    items = resources()
    gene = by_id(items, "imt-alk-fusion")["component"][0]["valueCodeableConcept"]["coding"][0]
    gene.update(code="HGNC:10261", display="ALK")  # a ROS1 code wrongly displayed as ALK: the code decides
    facts = facts_from_resources(items, ON).facts
    assert facts.molecular.ros1.status == "positive" and facts.molecular.alk.status == "unknown"


def test_conflicting_resources_are_reported_and_the_fact_left_unknown():
    items = resources()
    second = copy.deepcopy(by_id(items, "imt-size"))
    second["id"] = "imt-size-2"
    second["component"][0]["valueQuantity"]["value"] = 45
    absent = copy.deepcopy(by_id(items, "imt-alk-fusion"))
    absent["id"] = "imt-alk-absent"
    absent["valueCodeableConcept"]["coding"][0].update(code="LA9634-2", display="Absent")
    result = facts_from_resources([*items, second, absent], ON)
    assert result.facts.tumor.size_cm is None and result.facts.molecular.alk.status == "unknown"
    messages = " ".join(p.message for p in result.problems)
    assert ("conflicting values for tumor.size_cm" in messages
            and "conflicting values for molecular.alk.status" in messages)


def test_a_conflict_about_a_yes_no_fact_stops_evaluation():
    items = resources()
    items.append({"resourceType": "Procedure", "id": "resection", "status": "completed", "subject": {
        "reference": "Patient/imt-example-1"}, "code": {"text": "resection"}, "meta": {"profile": [
        "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-cancer-related-surgical-procedure"]}})
    items.append({"resourceType": "Observation", "id": "no-surgery", "status": "final", "code": {"coding": [
        {"system": "urn:imt-cds:fact", "code": "history.surgery_done"}]}, "valueBoolean": False,
        "subject": {"reference": "Patient/imt-example-1"}})
    result = facts_from_resources(items, ON)
    assert result.facts is None and not result.ok
    (error,) = [p for p in result.problems if p.severity == "error"]
    assert error.path == "history.surgery_done" and "nothing is evaluated" in error.message


def test_a_malformed_resource_is_reported_and_skipped():
    items = resources()
    by_id(items, "imt-size")["component"] = 5  # FHIR: a list of components
    result = facts_from_resources(items, ON)
    assert result.ok and result.facts.tumor.size_cm is None
    assert any(p.where == "Observation/imt-size" and "malformed Observation" in p.message for p in result.problems)
    assert facts_from_resources([*items, "not a resource", {"no": "type"}], ON).ok


def test_resources_about_another_patient_are_not_used():
    items = resources()
    by_id(items, "imt-size")["subject"]["reference"] = "Patient/someone-else"
    result = facts_from_resources(items, ON)
    assert result.facts.tumor.size_cm is None
    assert any("about Patient/someone-else" in p.message for p in result.problems)


def test_the_project_code_system_is_checked():
    items = resources()
    by_id(items, "imt-resectability")["code"]["coding"][0]["code"] = "tumor.resectabilty"
    by_id(items, "imt-respiratory")["valueBoolean"] = None
    by_id(items, "imt-respiratory")["valueString"] = "sometimes"
    result = facts_from_resources(items, ON)
    assert result.facts.tumor.resectability == "unknown" and result.facts.symptoms.respiratory is None
    messages = " ".join(p.message for p in result.problems)
    assert "did you mean 'tumor.resectability'" in messages and "value not allowed for symptoms.respiratory" in messages


def test_only_final_results_are_used():
    items = resources()
    by_id(items, "imt-alk-fusion")["status"] = "preliminary"
    result = facts_from_resources(items, ON)
    assert result.facts.molecular.alk.status == "unknown"


def test_anything_but_a_bundle_is_refused():
    with pytest.raises(InvalidInputError, match="expected a FHIR Bundle"):
        facts_from_bundle({"resourceType": "Patient"}, ON)


def imt_condition(patient_id):
    """An IMT Condition for a published example's patient (the examples are other cancers: without one, or an
    attestation, nothing of them is read)."""
    return {"resourceType": "Condition", "id": "imt", "subject": {"reference": f"Patient/{patient_id}"},
            "code": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/icd-o-3", "code": "8825/1"}]}}


def test_published_mcode_and_genomics_reporting_examples_are_read():
    jenny = json.loads((FIXTURES / "mcode-4.0.0/Bundle-mcode-patient-bundle-jenny-m.json").read_text())
    assert not facts_from_bundle(jenny, ON).eligibility.eligible  # breast cancer: not an IMT chart
    read = facts_from_resources([jenny, imt_condition("cancer-patient-jenny-m")], ON)
    assert read.ok
    # Beside the breast cancer, nothing of it is the IMT's: the surgery names it; its tumour size (2.5 cm) and its
    # M category (cM0) name no cancer (the stage group that names the breast cancer holds the M category as a
    # member), so they could be the breast cancer's, and are not used: size and staging are left unknown.
    assert (read.facts.tumor.size_cm, read.facts.history.surgery_done, read.facts.tumor.distant_disease) == (
        None, False, None)
    breast = "Condition/primary-cancer-condition-jenny-m"
    assert [(p.where, p.message, p.path) for p in read.problems] == [
        ("Observation/cancer-disease-status-jenny-m", f"disease status of {breast}, not of the IMT; not used", None),
        ("Procedure/cancer-related-surgical-procedure-jenny-m", f"surgery for {breast}, not for the IMT; not used",
         "history.surgery_done"),
        ("Observation/tnm-clinical-distant-metastases-category-jenny-m", "M category that names no cancer (focus), in "
         f"a chart that holds another primary cancer ({breast}); not used: name its cancer", "tumor.distant_disease"),
        ("Observation/tumor-size-jenny-m", "tumor size that names no cancer (focus), in a chart that holds another "
         f"primary cancer ({breast}); not used: name its cancer", "tumor.size_cm")]
    # Without the breast cancer's Condition, the IMT is the chart's only cancer: the same findings are its.
    alone = {**jenny, "entry": [e for e in jenny["entry"] if e["resource"]["resourceType"] != "Condition"]}
    read = facts_from_resources([alone, imt_condition("cancer-patient-jenny-m")], ON)
    assert (read.facts.tumor.size_cm, read.facts.tumor.distant_disease) == (2.5, False)
    met_alk = json.loads((FIXTURES / "mcode-4.0.0/Observation-gx-genomic-variant-fusion-met-alk.json")
                         .read_text())
    subject = met_alk["subject"]["reference"].split("/")[1]
    patient = {"resourceType": "Patient", "id": subject}
    alk = facts_from_resources([patient, imt_condition(subject), met_alk], ON).facts.molecular.alk
    assert (alk.status, alk.fusion_partner) == ("positive", "MET")
    ros1 = json.loads((FIXTURES / "genomics-reporting-3.0.0/Observation-ROS1-Fusion-var.json").read_text())
    subject = ros1["subject"]["reference"].split("/")[1]
    read = facts_from_resources([{"resourceType": "Patient", "id": subject}, imt_condition(subject), ros1], ON)
    assert read.facts.molecular.ros1.status == "positive"
    negative = json.loads((FIXTURES / "mcode-4.0.0/"
                                    "Observation-gx-genomic-variant-pertinent-negative-nras-kit-braf.json").read_text())
    subject = negative["subject"]["reference"].split("/")[1]
    read = facts_from_resources([{"resourceType": "Patient", "id": subject}, imt_condition(subject), negative], ON)
    assert read.facts.molecular.alk.status == "unknown"  # NRAS/KIT/BRAF: not ours


def test_the_published_breast_cancer_without_its_profile_is_still_another_cancer():
    """An EHR seldom profiles its Conditions: mCODE's published breast cancer Condition, its profile taken away, is
    another primary cancer by its code (SNOMED CT 353431000119107, the code mCODE's example gives it), and the
    findings that name no cancer are not used, exactly as beside the profiled one."""
    jenny = json.loads((FIXTURES / "mcode-4.0.0/Bundle-mcode-patient-bundle-jenny-m.json").read_text())
    profiled = facts_from_resources([jenny, imt_condition("cancer-patient-jenny-m")], ON)
    unprofiled = copy.deepcopy(jenny)
    (breast,) = [e["resource"] for e in unprofiled["entry"] if e["resource"]["resourceType"] == "Condition"]
    del breast["meta"]
    read = facts_from_resources([unprofiled, imt_condition("cancer-patient-jenny-m")], ON)
    assert read.facts == profiled.facts and read.problems == profiled.problems
    assert (read.facts.tumor.size_cm, read.facts.tumor.distant_disease) == (None, None)
    # Coded otherwise, its display still names it (the value set's words: "malignant neoplasm"); with neither a
    # listed code nor words, unprofiled, it is not known to be a cancer: its findings read as the IMT's (the limit
    # that README and the hazard log state). (254837009 "Malignant neoplasm of breast": mCODE's examples give it to
    # a relative's history, not to a PrimaryCancerCondition, so the value set does not list it.)
    breast["code"]["coding"][0]["code"] = "254837009"
    read = facts_from_resources([unprofiled, imt_condition("cancer-patient-jenny-m")], ON)
    assert read.facts == profiled.facts and read.problems == profiled.problems
    del breast["code"]["coding"][0]["display"]
    read = facts_from_resources([unprofiled, imt_condition("cancer-patient-jenny-m")], ON)
    assert (read.facts.tumor.size_cm, read.facts.tumor.distant_disease) == (2.5, False)


def _fact_observation(resource_id, subject, path="tumor.resectability", **value):
    return {"resourceType": "Observation", "id": resource_id, "status": "final",
            "code": {"coding": [{"system": "urn:imt-cds:fact", "code": path}]},
            "subject": {"reference": subject}, **(value or {"valueString": "unresectable"})}


def test_a_transaction_bundle_naming_the_patient_by_its_full_url_is_read():
    patient = {"resourceType": "Patient", "id": "p1"}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:1111", "resource": patient},
        {"fullUrl": "urn:uuid:2222", "resource": _fact_observation("res", "urn:uuid:1111")},
        {"fullUrl": "urn:uuid:3333", "resource": {**imt_condition("p1"), "subject": {"reference": "urn:uuid:1111"}}}]}
    result = facts_from_bundle(bundle, ON)
    assert result.facts.tumor.resectability == "unresectable" and result.problems == ()
    assert result.sources["tumor.resectability"] == ("Observation/res",)
    # The relative and absolute forms of the reference still name the patient; another fullUrl does not.
    for subject, used in [("Patient/p1", True), ("https://x.example/fhir/Patient/p1", True),
                          ("urn:uuid:2222", False), ("urn:uuid:9999", False)]:
        bundle["entry"][1]["resource"] = _fact_observation("res", subject)
        result = facts_from_bundle(bundle, ON)
        assert (result.facts.tumor.resectability == "unresectable") is used, subject
        if not used:
            assert any(f"about {subject}, not Patient/p1" in p.message for p in result.problems)


def test_the_same_test_methods_in_another_order_are_not_a_conflict():
    def methods(resource_id, *codes):
        return {"resourceType": "Observation", "id": resource_id, "status": "final",
                "code": {"coding": [{"system": "urn:imt-cds:fact", "code": "molecular.alk.methods"}]},
                "subject": {"reference": "Patient/imt-example-1"},
                "valueCodeableConcept": {"coding": [{"system": "urn:imt-cds:test-method", "code": c}
                                                    for c in codes]}}

    patient = [{"resourceType": "Patient", "id": "imt-example-1"}, imt_condition("imt-example-1")]
    result = facts_from_resources([*patient, methods("m1", "IHC", "FISH"), methods("m2", "FISH", "IHC")], ON)
    assert set(result.facts.molecular.alk.methods) == {"IHC", "FISH"} and result.problems == ()
    # Also when one list comes from a variant's method (read sorted) and the other from the project's code system.
    items = resources()
    fusion = by_id(items, "imt-alk-fusion")
    fusion["method"] = {"coding": [{"system": "urn:imt-cds:test-method", "code": c} for c in ("IHC", "FISH")]}
    result = facts_from_resources([*items, methods("m1", "IHC", "FISH")], ON)
    assert set(result.facts.molecular.alk.methods) == {"IHC", "FISH"}
    assert not any(p.kind == "conflict" for p in result.problems)
    # A different set is still a conflict, and says so in its kind.
    result = facts_from_resources([*items, methods("m1", "IHC")], ON)
    assert not result.facts.molecular.alk.methods
    assert [p.kind for p in result.problems if p.path == "molecular.alk.methods"] == ["conflict"]


def test_each_problem_says_what_kind_of_problem_it_is():
    items = resources()
    second = copy.deepcopy(by_id(items, "imt-size"))
    second["id"] = "imt-size-2"
    second["component"][0]["valueQuantity"]["value"] = 45
    by_id(items, "imt-respiratory")["valueBoolean"] = None
    by_id(items, "imt-respiratory")["valueString"] = "sometimes"
    result = facts_from_resources([*items, second, "not a resource"], ON)
    kinds = {p.path: p.kind for p in result.problems}
    assert kinds["tumor.size_cm"] == "conflict" and kinds["symptoms.respiratory"] == "not_allowed"
    assert kinds[None] == "skipped"
    assert all(p.to_dict()["kind"] == p.kind for p in result.problems)
