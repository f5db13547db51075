"""The CDS Hooks service fails safe on real charts: no card for a chart that is not an IMT patient's, a refusal for a
chart whose patient cannot be established, and never a 500 for malformed FHIR (a real uvicorn server on loopback).

patient-view fires on every chart opened in an EHR, so "no IMT diagnosis" must mean silence, not a card."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import httpx
import pytest
from service_support import EXAMPLE_PATIENT, example_resources, hook_request, prefetch_for, running_service

PATIENT_VIEW = "/cds-services/imt-patient-view"
ORDER_SIGN = "/cds-services/imt-order-sign"
# The request extension as README documents it to EHR integrators (written out, not imported: a client sends this
# text, so a change to the service's constant must fail here, not follow silently).
DIAGNOSIS_ATTESTED_EXTENSION = "urn:imt-cds:imt-diagnosis-attested"
CORPUS = Path(__file__).resolve().parent / "fixtures" / "fhir-charts"
INDEX = json.loads((CORPUS / "_index.json").read_text())


def single_patient_charts():
    """Published charts with exactly one top-level Patient, as (name, patient id, resources)."""
    found = []
    for entry in INDEX:
        facts = entry["facts"]
        if set(facts["patient_resources_by_location"]) - {"contained"} and len(set(facts["patient_ids"])) == 1:
            chart = json.loads((CORPUS / entry["file"]).read_text())
            resources = ([e["resource"] for e in chart.get("entry", []) if isinstance(e.get("resource"), dict)]
                         if chart["resourceType"] == "Bundle" else [chart])
            patient = next(r for r in resources if r["resourceType"] == "Patient")
            if "id" in patient:
                found.append((entry["file"], patient["id"], resources))
    return found


CHARTS = single_patient_charts()
# A second primary cancer of the example patient (mCODE's profile, SNOMED CT non-small cell lung cancer).
LUNG_CANCER = {"resourceType": "Condition", "id": "nsclc", "subject": {"reference": f"Patient/{EXAMPLE_PATIENT}"},
               "meta": {"profile": ["http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-primary-cancer-condition"]},
               "code": {"coding": [{"system": "http://snomed.info/sct", "code": "254637007"}]}}
# The same, as most EHRs send it: no profile, coded in ICD-10-CM (C34.90, a code of mCODE's primary malignant
# neoplasms, the rulebook's value set primary-cancer-conditions).
CODED_LUNG_CANCER = {"resourceType": "Condition", "id": "nsclc", "subject": {"reference": f"Patient/{EXAMPLE_PATIENT}"},
                     "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "C34.90"}]}}


@pytest.fixture(scope="module")
def client():
    with running_service("--allow-unauthenticated", "--workers", "1") as service, \
            httpx.Client(base_url=service.url, timeout=60) as http:
        yield http


def test_there_are_enough_published_single_patient_charts():
    assert len(CHARTS) >= 15


@pytest.mark.parametrize("name, patient_id, resources", CHARTS, ids=[c[0] for c in CHARTS])
def test_a_chart_without_an_imt_diagnosis_gets_no_card(client, name, patient_id, resources):
    response = client.post(PATIENT_VIEW, json=hook_request("patient-view", patient_id,
                                                           prefetch=prefetch_for(resources)))
    assert response.status_code == 200, response.text
    assert response.json() == {"cards": []}


def test_order_sign_for_a_patient_without_an_imt_diagnosis_gets_no_card(client):
    name, patient_id, resources = next(c for c in CHARTS if "jenny-m" in c[0])
    orders = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {
        "resourceType": "MedicationRequest", "id": "o1", "status": "draft", "intent": "order",
        "subject": {"reference": f"Patient/{patient_id}"},
        "medicationCodeableConcept": {"text": "crizotinib"}}}]}
    request = hook_request("order-sign", patient_id, prefetch=prefetch_for(resources))
    request["context"]["draftOrders"] = orders
    response = client.post(ORDER_SIGN, json=request)
    assert response.status_code == 200, response.text
    assert response.json() == {"cards": []}


def test_the_imt_example_still_gets_its_cards_and_a_deceased_imt_patient_none(client):
    resources = example_resources()
    response = client.post(PATIENT_VIEW, json=hook_request("patient-view", prefetch=prefetch_for(resources)))
    assert response.status_code == 200 and len(response.json()["cards"]) > 3
    for resource in resources:
        if resource["resourceType"] == "Patient":
            resource["deceasedDateTime"] = "2025-01-01"
    response = client.post(PATIENT_VIEW, json=hook_request("patient-view", prefetch=prefetch_for(resources)))
    assert response.json() == {"cards": []}


@pytest.mark.parametrize("lung_cancer", [LUNG_CANCER, CODED_LUNG_CANCER], ids=["profiled", "icd-10-cm"])
def test_beside_another_primary_cancer_what_names_no_cancer_is_not_the_imts(client, lung_cancer):
    """The example chart with a lung cancer in the conditions prefetch: its ALK fusion, tumour size and metastasis
    name no cancer and may be the lung cancer's. No ALK inhibitor card; ALK testing, staging and a size are asked
    for, and the record's card says why each was not used."""
    resources = example_resources()
    cards = client.post(PATIENT_VIEW, json=hook_request("patient-view", prefetch=prefetch_for(resources))).json()[
        "cards"]
    assert any("crizotinib" in card["summary"].lower() for card in cards)  # (the example alone: an ALK inhibitor)
    request = hook_request("patient-view", prefetch=prefetch_for([*resources, lung_cancer]))
    response = client.post(PATIENT_VIEW, json=request)
    assert response.status_code == 200, response.text
    cards = response.json()["cards"]
    summaries = " | ".join(card["summary"] for card in cards).lower()
    assert "crizotinib" not in summaries and "alk inhibitor" not in summaries, summaries
    assert "alk status unknown" in summaries and "size not recorded" in summaries and "not staged" in summaries
    details = "\n".join(card["detail"] for card in cards).replace("\\(", "(").replace("\\)", ")")  # (markdown)
    for resource, what in (("Observation/imt-alk-fusion", "ALK variant"), ("Observation/imt-size", "tumor size")):
        assert (f"{resource}: {what} that names no cancer (focus), in a chart that holds another primary cancer "
                "(Condition/nsclc); not used: name its cancer") in details, details


def test_beside_another_primary_cancer_a_resection_that_names_no_reason_gets_one_critical_card(client):
    resection = {"resourceType": "Procedure", "id": "resection", "status": "completed",
                 "subject": {"reference": f"Patient/{EXAMPLE_PATIENT}"},
                 "code": {"coding": [{"system": "http://snomed.info/sct", "code": "359615001"}]}}
    request = hook_request("patient-view", prefetch=prefetch_for([*example_resources(), LUNG_CANCER, resection]))
    response = client.post(PATIENT_VIEW, json=request)
    assert response.status_code == 200, response.text
    (card,) = response.json()["cards"]
    assert card["indicator"] == "critical" and card["summary"].startswith("Records not tied to the IMT")
    assert "Procedure/resection: surgery that names no reason" in card["detail"].replace("\\", "")


def test_an_attested_diagnosis_is_evaluated(client):
    name, patient_id, resources = next(c for c in CHARTS if "jenny-m" in c[0])
    request = hook_request("patient-view", patient_id, prefetch=prefetch_for(resources),
                           extension={DIAGNOSIS_ATTESTED_EXTENSION: True})
    response = client.post(PATIENT_VIEW, json=request)
    assert response.status_code == 200 and response.json()["cards"]
    # Only true attests: false leaves the chart as it is (no IMT diagnosis: silence), and a value that is not a
    # JSON boolean is refused rather than guessed either way.
    request["extension"] = {DIAGNOSIS_ATTESTED_EXTENSION: False}
    response = client.post(PATIENT_VIEW, json=request)
    assert response.status_code == 200 and response.json() == {"cards": []}
    request["extension"] = {DIAGNOSIS_ATTESTED_EXTENSION: "true"}
    response = client.post(PATIENT_VIEW, json=request)
    assert response.status_code == 400 and response.json()["error"]["message"] == (
        f"extension.{DIAGNOSIS_ATTESTED_EXTENSION} must be true or false, not 'true'")


def test_a_prefetch_without_the_patient_is_412_and_two_patients_400(client):
    resources = example_resources()
    prefetch = prefetch_for(resources)
    prefetch["patient"] = None
    response = client.post(PATIENT_VIEW, json=hook_request("patient-view", prefetch=prefetch))
    assert response.status_code == 412 and "no Patient" in response.json()["error"]["message"]
    assert response.json()["error"]["details"] == {"missing": {"patient": "no Patient resource"}}  # the key to send
    twin = copy.deepcopy(next(r for r in resources if r["resourceType"] == "Patient"))
    twin["id"] = "twin"
    prefetch = prefetch_for(resources)
    prefetch["conditions"]["entry"].append({"resource": twin})
    response = client.post(PATIENT_VIEW, json=hook_request("patient-view", prefetch=prefetch))
    assert response.status_code == 400 and "2 different patients" in response.json()["error"]["message"]
    nameless = prefetch_for(resources)
    del nameless["patient"]["id"]
    response = client.post(PATIENT_VIEW, json=hook_request("patient-view", prefetch=nameless))
    assert response.status_code == 400  # the reader's refusal: whose chart it is cannot be established
    assert response.json()["error"]["message"].startswith("the chart's Patient has no id (and no fullUrl): whose "
                                                          "data it is cannot be established")


def test_two_versions_of_the_patient_or_an_unreadable_death_record_are_400_without_cards(client):
    resources = example_resources()
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    for changed, said in (({**copy.deepcopy(patient), "deceasedBoolean": True}, "two different resources named"),
                          (None, "whether the patient is alive cannot be established")):
        prefetch = prefetch_for(resources)
        if changed is not None:
            prefetch["conditions"]["entry"].append({"resource": changed})  # (a deceased copy of the Patient)
        else:
            prefetch["patient"]["deceasedBoolean"] = "true"
        response = client.post(PATIENT_VIEW, json=hook_request("patient-view", prefetch=prefetch))
        assert response.status_code == 400 and said in response.json()["error"]["message"]
        assert "cards" not in response.json()


def test_a_patient_record_another_replaces_is_400_without_cards(client):
    prefetch = prefetch_for(example_resources())
    prefetch["patient"]["link"] = [{"other": {"reference": "Patient/survivor"}, "type": "replaced-by"}]
    response = client.post(PATIENT_VIEW, json=hook_request("patient-view", prefetch=prefetch))
    assert response.status_code == 400 and "cards" not in response.json()
    assert response.json()["error"]["message"] == (
        "Patient/imt-example-1 is replaced by Patient/survivor (Patient.link replaced-by: this record must no longer "
        "be used); nothing is evaluated: evaluate the record that replaces it")


def _observation_code_null(prefetch):
    prefetch["observations"]["entry"][0]["resource"]["code"] = None


def _entry_a_number(prefetch):
    prefetch["observations"]["entry"] = 5


def _deep(prefetch):
    value: object = "x"
    for _ in range(200):
        value = [value]
    prefetch["observations"]["entry"][0]["resource"]["valueCodeableConcept"] = {"coding": value}


def _primitive_extension(prefetch):
    prefetch["patient"]["_birthDate"] = {"extension": [{"url": "urn:x", "_valueString": {"id": "a"}}]}


def _wrong_types(prefetch):
    prefetch["conditions"]["entry"][0]["resource"].update(subject=7, code={"coding": {"code": 1}})


@pytest.mark.parametrize("damage", [_observation_code_null, _entry_a_number, _deep, _primitive_extension,
                                    _wrong_types])
def test_malformed_prefetch_never_gives_500(client, damage):
    prefetch = prefetch_for(example_resources())
    damage(prefetch)
    response = client.post(PATIENT_VIEW, json=hook_request("patient-view", EXAMPLE_PATIENT, prefetch=prefetch))
    assert response.status_code in (200, 400, 412), response.text
    assert "Traceback" not in response.text


def test_the_not_eligible_info_card_is_off_by_default_and_one_card_when_asked():
    name, patient_id, resources = CHARTS[0]
    with running_service("--allow-unauthenticated", "--workers", "1", "--not-eligible-card") as service, \
            httpx.Client(base_url=service.url, timeout=60) as http:
        response = http.post(PATIENT_VIEW, json=hook_request("patient-view", patient_id,
                                                             prefetch=prefetch_for(resources)))
    (card,) = response.json()["cards"]
    assert card["indicator"] == "info" and "No IMT decision support" in card["summary"]


def test_a_card_never_says_no_resource_recorded_a_fact_that_conflicting_resources_left_unknown():
    from datetime import date

    from imt_cds import evaluate
    from imt_cds.fhir.reader import facts_from_resources
    from imt_cds.render.cards import assessment_cards

    resources = example_resources()
    m0 = {"resourceType": "Observation", "id": "m0", "status": "final",
          "subject": {"reference": f"Patient/{EXAMPLE_PATIENT}"},
          "code": {"coding": [{"system": "http://snomed.info/sct", "code": "399387003"}]},
          "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "1229901006"}]}}
    read = facts_from_resources([*resources, m0], date(2026, 11, 21))  # undated cM0 against the metastasis
    assert read.facts.tumor.distant_disease is None
    document = evaluate(read.facts).to_dict()
    cards = assessment_cards(document, evaluation_id="e", sources=read.sources, public_url="https://x",
                             problems=[p.to_dict() for p in read.problems])
    lines = [line for card in cards for line in card["detail"].splitlines() if "`tumor.distant_disease` is" in line]
    assert lines and all("left unknown: the FHIR resources disagree (Condition/imt-distant, Observation/m0" in line
                         for line in lines)
    assert not any("no FHIR resource recorded it" in line for line in lines)
