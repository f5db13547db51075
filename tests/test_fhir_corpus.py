"""Real, published FHIR R4 charts that are not IMT patients never get IMT advice (tests/fixtures/fhir-charts/).

The corpus is 42 unmodified charts (HL7 FHIR R4 core, mCODE STU4 and Genomics Reporting STU3 examples, Synthea
patients, MITRE mCODE test data; sources, licences and sha256 in its ``_index.json``). What each must come out as
is derived from the facts ``_index.json`` records about it (computed by a script when the corpus was gathered, not
by the code under test): several patients or none -> refused; one deceased patient -> not evaluated; otherwise ->
not evaluated for want of an IMT diagnosis. By the library, by ``imt-cds evaluate --fhir`` and by the service.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from imt_cds.core.errors import ChartRefusedError
from imt_cds.fhir.reader import facts_from_bundle, facts_from_resources

CORPUS = Path(__file__).resolve().parent / "fixtures" / "fhir-charts"
INDEX = json.loads((CORPUS / "_index.json").read_text())
ON = date(2026, 12, 1)


def expected(entry: dict) -> tuple[str, str]:
    """("refused" | "not_eligible", reason) from the facts the index records about a chart."""
    facts = entry["facts"]
    top_level = {key: n for key, n in facts["patient_resources_by_location"].items() if key != "contained"}
    distinct = len(set(facts["patient_ids"])) if top_level else 0
    if distinct > 1:
        return "refused", "several_patients"
    if distinct == 0:
        return "refused", "no_patient"
    if facts["deceased"]:
        return "not_eligible", "deceased"
    return "not_eligible", "no_imt_diagnosis"


def read(chart: dict):
    if chart.get("resourceType") == "Bundle":
        return facts_from_bundle(chart, ON)
    return facts_from_resources([chart], ON)


def test_the_corpus_is_as_published_and_large_enough():
    assert len(INDEX) >= 40
    for entry in INDEX:
        data = (CORPUS / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["file"]
        assert entry["facts"]["imt"] is False and entry["source"] and entry["license"]
    outcomes = {expected(e) for e in INDEX}
    assert outcomes == {("refused", "several_patients"), ("refused", "no_patient"), ("not_eligible", "deceased"),
                        ("not_eligible", "no_imt_diagnosis")}  # every path of the gate is exercised


@pytest.mark.parametrize("entry", INDEX, ids=[e["file"] for e in INDEX])
def test_no_published_non_imt_chart_is_evaluated(entry):
    chart = json.loads((CORPUS / entry["file"]).read_text())
    outcome, reason = expected(entry)
    if outcome == "refused":
        with pytest.raises(ChartRefusedError) as raised:
            read(chart)
        assert raised.value.reason == reason
        return
    result = read(chart)
    assert result.facts is None and not result.ok
    assert not result.eligibility.eligible
    assert result.eligibility.reason == reason, result.eligibility.message
    assert result.eligibility.diagnosis is None


def test_attesting_the_diagnosis_is_what_makes_a_non_imt_chart_evaluable_and_it_is_recorded():
    """The one way around the gate is explicit: the caller says the diagnosis was established elsewhere."""
    entry = next(e for e in INDEX if expected(e) == ("not_eligible", "no_imt_diagnosis")
                 and e["file"].startswith("mcode-4.0.0__Bundle-mcode-patient-bundle-jenny-m"))
    chart = json.loads((CORPUS / entry["file"]).read_text())
    result = facts_from_bundle(chart, ON, diagnosis_attested=True)
    assert result.ok and result.eligibility.reason == "diagnosis_attested"
    assert result.eligibility.diagnosis.to_dict() == {"basis": "attested", "sources": [], "codes": [],
                                                      "attested": True}
    # The breast cancer's site, surgery and stage are not taken as the IMT's: only IMT Conditions give a site.
    assert result.facts.tumor.site == "unknown"


@pytest.mark.parametrize("entry", [e for e in INDEX if e["file"].endswith((
    "Darin_Skiles_31c343e9-5d7f-444e-9be4-56b1a6ec6146.json", "mcode-patient-bundle-jenny-m.json",
    "Patient-pat4.json", "Bundle-bundle-transaction.json", "Condition-primary-cancer-condition-nsclc.json"))],
    ids=lambda e: e["file"])
def test_the_command_line_says_why_in_one_line_with_its_exit_code(entry):
    outcome, reason = expected(entry)
    run = subprocess.run([sys.executable, "-m", "imt_cds", "evaluate", "--fhir", str(CORPUS / entry["file"])],
                         capture_output=True, text=True, timeout=120)
    assert run.stdout == ""  # no note, no finding
    if outcome == "refused":
        assert run.returncode == 2
        assert "refused, nothing was evaluated" in run.stderr
    else:
        assert run.returncode == 4
        word = {"deceased": "deceased", "no_imt_diagnosis": "no IMT diagnosis"}[reason]
        assert "imt-cds: not evaluated: " in run.stderr and word in run.stderr
    assert "Traceback" not in run.stderr


def _imt_and_alk_fusion(subject: dict) -> list[dict]:
    """An IMT Condition (ICD-O-3 8825/1) and an ALK fusion ("Present", LOINC 69548-6; the gene by its HGNC code)
    that names no cancer (no focus), both of the patient ``subject`` refers to."""
    imt = {"resourceType": "Condition", "id": "imt", "subject": subject,
           "code": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/icd-o-3", "code": "8825/1"}]}}
    alk = {"resourceType": "Observation", "id": "alk", "status": "final", "subject": subject,
           "code": {"coding": [{"system": "http://loinc.org", "code": "69548-6"}]},
           "valueCodeableConcept": {"coding": [{"system": "http://loinc.org", "code": "LA9633-4"}]},
           "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "48018-6"}]},
                          "valueCodeableConcept": {"coding": [{"system": "http://www.genenames.org",
                                                               "code": "HGNC:427"}]}}]}
    return [imt, alk]


@pytest.mark.parametrize("name, patient", [("fhir-r4-examples__Condition-f002.json", "f001"),
                                           ("fhir-r4-examples__Condition-f202.json", "f201")])
def test_a_published_cancer_condition_without_a_profile_is_another_primary_cancer_beside_the_imt(name, patient):
    """FHIR R4's own examples code a lung cancer (SNOMED CT 254637007, active) and a head and neck malignancy
    (363346000, resolved) without mCODE's profile, as EHRs do. Beside an IMT of the same patient, an ALK fusion that
    names no cancer may be theirs: it is not used, and the message names the published Condition."""
    cancer = json.loads((CORPUS / name).read_text())
    chart = [{"resourceType": "Patient", "id": patient, "birthDate": "2010-01-01"},
             *_imt_and_alk_fusion({"reference": f"Patient/{patient}"})]
    assert facts_from_resources(chart, ON).facts.molecular.alk.status == "positive"  # the IMT alone
    read = facts_from_resources([*chart, cancer], ON)
    assert read.facts.molecular.alk.status == "unknown"
    assert [(p.where, p.message) for p in read.problems] == [
        ("Observation/alk", "ALK variant that names no cancer (focus), in a chart that holds another primary cancer "
                            f"(Condition/{cancer['id']}); not used: name its cancer")]


@pytest.mark.parametrize("name", ["synthea-smart-r4__Darin_Skiles_31c343e9-5d7f-444e-9be4-56b1a6ec6146.json",
                                  "synthea-smart-r4__Lavelle_Kuvalis_9f0fb46c-c9f5-4c50-a983-9f87bf591ce9.json"])
def test_a_published_synthea_patient_with_colon_cancer_and_an_imt_gets_no_unattributed_alk_fusion(name):
    """Synthea writes its Conditions as an EHR export does, coded, unprofiled: a patient's (resolved) colon cancer,
    SNOMED CT 93761005 or 109838007, is another primary cancer beside an IMT added to the unmodified chart, so an ALK
    fusion that names no cancer is not read as the IMT's."""
    bundle = json.loads((CORPUS / name).read_text())
    (patient,) = [e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    (colon,) = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Condition"
                and {c.get("code") for c in e["resource"]["code"]["coding"]} & {"93761005", "109838007"}]
    added = _imt_and_alk_fusion({"reference": patient["fullUrl"]})  # (Synthea refers by urn:uuid fullUrl)
    read = facts_from_resources([bundle, *added], ON)
    assert read.facts.molecular.alk.status == "unknown"
    assert [(p.where, p.message) for p in read.problems if p.where == "Observation/alk"] == [
        ("Observation/alk", "ALK variant that names no cancer (focus), in a chart that holds another primary cancer "
                            f"(Condition/{colon['id']}); not used: name its cancer")]
    without = {**bundle, "entry": [e for e in bundle["entry"] if e["resource"] is not colon]}
    assert facts_from_resources([without, *added], ON).facts.molecular.alk.status == "positive"


def test_a_published_synthea_secondary_colon_tumour_beside_an_imt_is_the_imts_distant_disease():
    """Synthea codes a metastasis as EHR exports do, without mCODE's profile: one published patient's only cancer
    Condition is SNOMED CT 94260004 "Secondary malignant neoplasm of colon" (active, confirmed). That Condition,
    unmodified, beside an IMT and no other primary cancer is the IMT's distant disease, with a weak warning that says
    so; it is no other primary cancer, so an ALK fusion is still the IMT's. (The published patient is deceased, which
    stops any evaluation: the chart is a Bundle of a living patient under the same fullUrl, and that Condition.)"""
    name = "synthea-smart-r4__Micah_Schinner_d4d72610-ec40-42ed-b34f-09e286181ee9.json"
    bundle = json.loads((CORPUS / name).read_text())
    (patient,) = [e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    (metastasis,) = [e for e in bundle["entry"] if e["resource"]["resourceType"] == "Condition"
                     and {c.get("code") for c in e["resource"]["code"]["coding"]} == {"94260004"}]
    living = {"fullUrl": patient["fullUrl"], "resource": {"resourceType": "Patient", "id": patient["resource"]["id"],
                                                         "birthDate": "2012-05-01"}}
    added = _imt_and_alk_fusion({"reference": patient["fullUrl"]})
    chart = {"resourceType": "Bundle", "type": "collection", "entry": [living, metastasis]}
    read = facts_from_resources([chart, *added], ON)
    where = f"Condition/{metastasis['resource']['id']}"
    assert read.facts.tumor.distant_disease is True
    assert read.sources["tumor.distant_disease"] == (where,)
    assert read.facts.molecular.alk.status == "positive"
    assert [(p.kind, p.path) for p in read.problems] == [("weak", "tumor.distant_disease")]
    without = {**chart, "entry": [living]}
    assert facts_from_resources([without, *added], ON).facts.tumor.distant_disease is None
