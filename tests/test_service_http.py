"""The CDS Hooks service over HTTP: a real uvicorn server (``imt-cds serve``) on loopback, called with httpx.

What an EHR sees: discovery, cards for a patient-view call (the same findings and reasons as ``imt-cds evaluate``
on the same FHIR record), data fetched from a FHIR server when it was not prefetched, 412 when it cannot be had,
every spec example request accepted or refused with a clear reason, order-sign checks, feedback, limits and CORS.
Authentication has its own module (test_service_auth.py); this server runs with --allow-unauthenticated.
"""

from __future__ import annotations

import copy
import gzip
import json
import re
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
from service_support import (
    EXAMPLE_BUNDLE,
    EXAMPLE_PATIENT,
    SCRIPT,
    SHARED,
    FhirServer,
    example_resources,
    hook_request,
    prefetch_for,
    running_service,
)

from imt_cds.core.rule_loader import load_rulebook
from imt_cds.render.cards import CARD_NAMESPACE, escape_markdown, hook_instance_id

# The findings the shipped rule files declare critical (``indicator: critical``).
CRITICAL_FINDINGS = {spec.code for rule in load_rulebook() for spec in rule.findings if spec.indicator == "critical"}

PATIENT_VIEW = "/cds-services/imt-patient-view"
ORDER_SIGN = "/cds-services/imt-order-sign"
SPEC = SHARED / "spec-2.0.1-examples"
LIBRARY = SHARED / "hook-library-1.0.1-examples"
INFERNO = SHARED / "inferno-crd-test-kit-fixtures"
SPEC_PATIENT = "1288992"  # the patient id of the spec's and the hook library's examples
FACT = "urn:imt-cds:fact"


@pytest.fixture(scope="module")
def fhir():
    resources = example_resources() + example_resources(SPEC_PATIENT) + example_resources("example")
    with FhirServer(resources, page_size=2) as server:
        yield server


@pytest.fixture(scope="module")
def service(fhir, tmp_path_factory):
    feedback = tmp_path_factory.mktemp("feedback") / "feedback.ndjson"
    with running_service("--allow-unauthenticated", "--workers", "2", "--feedback-log", str(feedback),
                         "--fhir-server", fhir.base, "--max-body", "262144",
                         "--cors-origin", "https://ehr.example.org") as running:
        running.feedback = feedback  # type: ignore[attr-defined]
        yield running


@pytest.fixture(scope="module")
def client(service):
    with httpx.Client(base_url=service.url, timeout=60) as http:
        yield http


def post(client, path, body):
    return client.post(path, json=body)


def codes(response):
    return [card["source"]["topic"]["code"] for card in response.json()["cards"]]


def card(response, code):
    (found,) = [c for c in response.json()["cards"] if c["source"]["topic"]["code"] == code]
    return found


def with_fact(resources, path, value, resource_id):
    key = {bool: "valueBoolean", str: "valueString"}[type(value)]
    return [*resources, {"resourceType": "Observation", "id": resource_id, "status": "final",
                         "code": {"coding": [{"system": FACT, "code": path}]}, key: value,
                         "subject": {"reference": f"Patient/{EXAMPLE_PATIENT}"}}]


def shown_value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "not recorded" if value is None else str(value)


def cli_assessment(bundle: Path) -> dict:
    result = subprocess.run([str(SCRIPT), "evaluate", "--fhir", str(bundle), "--format", "json"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# --- discovery and the end-to-end path ----------------------------------------------------------------------------


def test_discovery_lists_both_services_with_their_prefetch_templates(client):
    response = client.get("/cds-services")
    assert response.status_code == 200
    services = {s["id"]: s for s in response.json()["services"]}
    assert set(services) == {"imt-patient-view", "imt-order-sign"}
    assert services["imt-patient-view"]["hook"] == "patient-view"
    assert services["imt-order-sign"]["hook"] == "order-sign"
    view = services["imt-patient-view"]["prefetch"]
    assert view["patient"] == "Patient/{{context.patientId}}"
    assert set(view) == {"patient", "conditions", "observations", "procedures"}
    assert all("{{context.patientId}}" in template for template in view.values())
    assert set(services["imt-order-sign"]["prefetch"]) == {"patient", "conditions", "observations"}
    assert all(s["title"] and s["description"] for s in services.values())


def test_the_example_bundle_gives_the_cards_and_reasons_imt_cds_evaluate_gives(client):
    resources = example_resources()
    response = post(client, PATIENT_VIEW, hook_request("patient-view", prefetch=prefetch_for(resources)))
    assert response.status_code == 200, response.text
    expected = cli_assessment(EXAMPLE_BUNDLE)
    findings = {f["code"]: f for f in expected["recommendations"] + expected["risk_flags"]}
    assert sorted(codes(response)) == sorted(findings)
    assert {"REC_CRIZOTINIB_ALK", "RISK_DISTANT_DISEASE", "RISK_TUMOR_SIZE_ABOVE_COHORT_MEDIAN"} <= set(findings)
    derived = {d["name"] for d in expected["derived_facts"]}
    for code, finding in findings.items():
        shown = card(response, code)
        assert shown["summary"] == finding["summary"]
        assert shown["source"]["topic"] == {"system": "urn:imt-cds:finding-code", "code": code,
                                            "display": finding["title"]}
        assert shown["source"]["url"].endswith(f"/rules/{finding['rule']['id']}")
        for reason in finding["because"]:
            if "fact" in reason:  # every input fact the rule used, with the value it had and the test it passed
                assert f"`{reason['fact']}` is **{shown_value(reason['actual'])}** (rule needs" in shown["detail"]
            elif reason["holds"]:
                assert f"{reason['derived']} holds" in shown["detail"] and reason["derived"] in derived
            else:
                assert f"{reason['derived']} does not hold" in shown["detail"]
        for entry in finding["evidence"]:
            assert f"[{entry['id']}" in shown["detail"]
            if entry["quote"]:
                assert escape_markdown(entry["quote"]) in shown["detail"]
    crizotinib = card(response, "REC_CRIZOTINIB_ALK")["detail"]
    assert "`molecular.alk.status` is **positive**" in crizotinib
    assert "from Observation/imt-alk-fusion" in crizotinib  # the FHIR resource the fact was read from
    assert "ADVANCED_DISEASE holds (rule D02), because:" in crizotinib
    assert "`tumor.distant_disease` is **true** (rule needs = true) — from Condition/imt-distant" in crizotinib
    links = {link["url"] for link in card(response, "REC_CRIZOTINIB_ALK")["links"]}
    assert "https://pubmed.ncbi.nlm.nih.gov/20979472/" in links  # Butrynski 2010, PMID in the citation


def test_every_card_is_a_well_formed_cds_hooks_card(client):
    resources = with_fact(example_resources(), "history.margin_status", "R1", "margin")  # a contradiction too
    response = post(client, PATIENT_VIEW, hook_request("patient-view", prefetch=prefetch_for(resources)))
    cards = response.json()["cards"]
    assert cards
    for shown in cards:
        assert isinstance(shown["summary"], str) and 0 < len(shown["summary"]) < 140
        assert shown["indicator"] in ("info", "warning", "critical")
        assert shown["source"]["label"]
        assert shown["source"]["topic"]["system"] in ("urn:imt-cds:finding-code", "urn:imt-cds:service-card")
        assert str(uuid.UUID(shown["uuid"])) == shown["uuid"]
        assert all(link["type"] == "absolute" and link["url"].startswith("https://") for link in shown["links"])
        assert all(reason["display"] for reason in shown["overrideReasons"])
    order = [{"critical": 0, "warning": 1, "info": 2}[c["indicator"]] for c in cards]
    assert order == sorted(order)  # most severe first


def test_card_uuids_derive_from_the_evaluation_and_the_rule(client):
    response = post(client, PATIENT_VIEW, hook_request("patient-view", prefetch=prefetch_for(example_resources())))
    shown = card(response, "REC_CRIZOTINIB_ALK")
    evaluation = re.search(r"evaluation ([0-9a-f-]{36})", shown["detail"]).group(1)
    assert shown["uuid"] == str(uuid.uuid5(CARD_NAMESPACE, f"{evaluation}|R32a|REC_CRIZOTINIB_ALK"))
    again = post(client, PATIENT_VIEW, hook_request("patient-view", prefetch=prefetch_for(example_resources())))
    assert card(again, "REC_CRIZOTINIB_ALK")["uuid"] != shown["uuid"]  # another evaluation, another card


def test_indicators_follow_the_documented_mapping(client):
    resources = with_fact(example_resources(), "history.margin_status", "R1", "margin")
    response = post(client, PATIENT_VIEW, hook_request("patient-view", prefetch=prefetch_for(resources)))
    for shown in response.json()["cards"]:
        code = shown["source"]["topic"]["code"]
        if code in CRITICAL_FINDINGS:
            assert shown["indicator"] == "critical"
        elif code.startswith(("RISK_", "FLAG_")):
            assert shown["indicator"] == "warning"
        elif code.startswith(("REC_", "REQUEST_")):
            assert shown["indicator"] == "info"


def test_a_contradictory_record_gets_a_critical_card_that_lists_what_was_withheld(client, service):
    resources = with_fact(example_resources(), "history.margin_status", "R1", "margin")  # a margin, no surgery
    request = hook_request("patient-view", prefetch=prefetch_for(resources),
                           extension={"urn:imt-cds:fhir-guidance": True})
    response = post(client, PATIENT_VIEW, request)
    assert response.json()["cards"][0]["source"]["topic"]["code"] == "FLAG_CONTRADICTORY_INPUT"
    flag = card(response, "FLAG_CONTRADICTORY_INPUT")
    assert flag["indicator"] == "critical"
    assert "Withheld until the record is reconciled" in flag["detail"]
    assert "REC_CLINICAL_TRIAL_CONSIDER" in flag["detail"]  # suppressed by the contradiction
    assert "REC_CLINICAL_TRIAL_CONSIDER" not in codes(response)
    # The same assessment as FHIR (GuidanceResponse + RequestGroup + DetectedIssue), with the same severities.
    bundle = response.json()["extension"]["urn:imt-cds:fhir-guidance"]
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert kinds[:2] == ["GuidanceResponse", "RequestGroup"] and "DetectedIssue" in kinds
    group = bundle["entry"][1]["resource"]
    priorities = {a["id"]: a["priority"] for a in group["action"]}
    assert priorities["FLAG_CONTRADICTORY_INPUT"] == "stat" and group["priority"] == "stat"
    assert priorities["REC_MULTIDISCIPLINARY_REVIEW"] == "routine"
    assert set(priorities) == set(codes(response))
    assert bundle["entry"][0]["resource"]["requestIdentifier"]["value"] == f"urn:uuid:{request['hookInstance']}"
    # The GuidanceResponse names the service that answered: the URL the request was sent to.
    assert [e["valueUri"] for e in bundle["entry"][0]["resource"]["extension"]] == [service.url + PATIENT_VIEW]


def test_fhir_output_is_only_sent_when_asked_for(client):
    response = post(client, PATIENT_VIEW, hook_request("patient-view", prefetch=prefetch_for(example_resources())))
    assert "extension" not in response.json()
    response = post(client, PATIENT_VIEW, hook_request("patient-view", prefetch=prefetch_for(example_resources()),
                                                       extension={"urn:imt-cds:fhir-guidance": False}))
    assert response.status_code == 200 and response.json()["cards"] and "extension" not in response.json()


def test_resources_that_could_not_be_used_are_shown_on_a_card(client):
    resources = example_resources()
    second_size = copy.deepcopy(next(r for r in resources if r["id"] == "imt-size"))
    second_size["id"] = "imt-size-2"
    second_size["component"][0]["valueQuantity"]["value"] = 45
    broken = {"resourceType": "Observation", "id": "broken", "status": "final", "code": {"coding": [
        {"system": "http://loinc.org", "code": "21889-1"}]}, "subject": {"reference": "Patient/imt-example-1"},
        "component": "not a list"}
    response = post(client, PATIENT_VIEW, hook_request("patient-view", prefetch=prefetch_for(
        [*resources, second_size, broken])))
    problems = card(response, "FHIR_INPUT_PROBLEMS")
    assert problems["indicator"] == "warning" and len(problems["summary"]) < 140
    assert "conflicting values for tumor.size\\_cm" in problems["detail"]
    assert "Observation/broken" in problems["detail"] and "malformed Observation" in problems["detail"]
    assert "REQUEST_TUMOR_SIZE" in codes(response)  # the size is unknown to the rules, and asked for
    # Read before the findings: first among the cards of its severity (the cards are sorted by severity only).
    warnings = [c["source"]["topic"]["code"] for c in response.json()["cards"] if c["indicator"] == "warning"]
    assert warnings[0] == "FHIR_INPUT_PROBLEMS" and len(warnings) > 1


def test_conflicting_records_give_one_critical_card_instead_of_findings(client):
    resources = example_resources()
    resources.append({"resourceType": "Procedure", "id": "resection", "status": "completed",
                      "subject": {"reference": f"Patient/{EXAMPLE_PATIENT}"}, "code": {"text": "resection"},
                      "meta": {"profile": ["http://hl7.org/fhir/us/mcode/StructureDefinition/"
                                           "mcode-cancer-related-surgical-procedure"]}})
    resources = with_fact(resources, "history.surgery_done", False, "no-surgery")
    response = post(client, PATIENT_VIEW, hook_request("patient-view", prefetch=prefetch_for(resources)))
    assert response.status_code == 200
    (only,) = response.json()["cards"]
    assert only["indicator"] == "critical" and only["source"]["topic"]["code"] == "FHIR_INPUT_CONFLICT"
    assert "Nothing was evaluated" in only["detail"] and "history.surgery\\_done" in only["detail"]
    # Nothing evaluated, so no FHIR guidance either, even when asked for: the same one card, no extension.
    asked = post(client, PATIENT_VIEW, hook_request("patient-view", prefetch=prefetch_for(resources),
                                                    extension={"urn:imt-cds:fhir-guidance": True}))
    assert asked.status_code == 200 and [c["source"]["topic"]["code"] for c in asked.json()["cards"]] == [
        "FHIR_INPUT_CONFLICT"] and "extension" not in asked.json()


# --- FHIR data: prefetch, fhirServer, 412 -------------------------------------------------------------------------


def test_data_not_prefetched_is_fetched_from_the_fhir_server_with_the_access_token(client, fhir):
    prefetched = post(client, PATIENT_VIEW, hook_request("patient-view", prefetch=prefetch_for(example_resources())))
    fhir.requests.clear()
    request = hook_request("patient-view", fhirServer=fhir.base, fhirAuthorization={
        "access_token": "token-for-the-cds-service", "token_type": "Bearer", "expires_in": 300,
        "scope": "patient/*.read", "subject": "imt-cds"})
    response = post(client, PATIENT_VIEW, request)
    assert response.status_code == 200, response.text
    assert sorted(codes(response)) == sorted(codes(prefetched))
    paths = [path for path, _ in fhir.requests]
    assert f"/fhir/Patient/{EXAMPLE_PATIENT}" in paths
    assert any(p.startswith("/fhir/Observation?") and "_page=2" in p for p in paths)  # searchset pages followed
    assert all(headers.get("authorization") == "Bearer token-for-the-cds-service" for _, headers in fhir.requests)


def test_only_the_keys_missing_from_prefetch_are_fetched(client, fhir):
    prefetch = prefetch_for(example_resources())
    del prefetch["observations"]
    fhir.requests.clear()
    response = post(client, PATIENT_VIEW, hook_request("patient-view", prefetch=prefetch, fhirServer=fhir.base))
    assert response.status_code == 200
    assert "REC_CRIZOTINIB_ALK" in codes(response)
    assert {p.split("?")[0] for p, _ in fhir.requests} == {"/fhir/Observation"}


def test_a_null_prefetch_key_means_no_data_and_is_not_fetched(client, fhir):
    prefetch = prefetch_for(example_resources())
    prefetch["procedures"] = None
    fhir.requests.clear()
    response = post(client, PATIENT_VIEW, hook_request("patient-view", prefetch=prefetch, fhirServer=fhir.base))
    assert response.status_code == 200 and fhir.requests == []


def test_412_when_neither_prefetch_nor_a_fhir_server_can_supply_the_data(client):
    response = post(client, PATIENT_VIEW, hook_request("patient-view"))
    assert response.status_code == 412
    error = response.json()["error"]
    assert error["code"] == "cds_data_unavailable" and "no fhirServer" in error["message"]
    assert set(error["details"]["missing"]) == {"patient", "conditions", "observations", "procedures"}


def test_412_when_the_client_could_not_prefetch_and_gives_no_fhir_server(client):
    prefetch = prefetch_for(example_resources())
    prefetch["observations"] = {"resourceType": "OperationOutcome", "issue": [{"severity": "error",
                                                                             "code": "timeout"}]}
    response = post(client, PATIENT_VIEW, hook_request("patient-view", prefetch=prefetch))
    assert response.status_code == 412
    assert response.json()["error"]["details"]["missing"] == {
        "observations": "the client could not prefetch it (OperationOutcome)"}


def test_412_without_any_request_when_the_fhir_server_is_not_allowed(client, fhir):
    fhir.requests.clear()
    response = post(client, PATIENT_VIEW, hook_request("patient-view", fhirServer="http://127.0.0.1:9/fhir"))
    assert response.status_code == 412
    assert "is not one this service is allowed to call" in response.json()["error"]["message"]


@pytest.mark.parametrize(("change", "message"), [
    ({"status": ("Condition", 500)}, "answered HTTP 500"),
    ({"status": ("Observation", 401)}, "answered HTTP 401"),
    ({"patient": "nobody"}, "answered HTTP 404"),
    ({"next": "http://127.0.0.1:9/elsewhere"}, "outside fhirServer; not followed"),
])
def test_412_when_the_fhir_server_cannot_supply_the_data(client, fhir, service, change, message):
    if "status" in change:
        kind, status = change["status"]
        fhir.status_override[kind] = status
    if "next" in change:
        fhir.next_link_base = change["next"]
    try:
        response = post(client, PATIENT_VIEW, hook_request("patient-view", change.get("patient", EXAMPLE_PATIENT),
                                                           fhirServer=fhir.base))
    finally:
        fhir.status_override.clear()
        fhir.next_link_base = None
    assert response.status_code == 412, response.text
    error = response.json()["error"]
    assert error["message"].endswith("fetching from fhirServer failed")  # what went wrong is for the log only
    assert all("could not be fetched from fhirServer" in why for why in error["details"]["missing"].values())
    assert "127.0.0.1" not in response.text
    assert message in service.log_text()
    if "next" in change:
        assert not any(path.startswith("/elsewhere") for path, _ in fhir.requests)


def test_a_prefetched_patient_other_than_the_one_in_context_is_refused(client):
    prefetch = prefetch_for(example_resources())
    response = post(client, PATIENT_VIEW, hook_request("patient-view", "someone-else", prefetch=prefetch))
    assert response.status_code == 400
    assert "is not the patient in context" in response.json()["error"]["message"]


def test_a_chart_with_modifier_extensions_is_not_read_as_if_it_had_none(client):
    """A Patient that carries a modifier extension refuses the call (400); a resection that carries one stops the
    evaluation (the one critical card), since left out, surgery would read "no"."""
    negated = [{"url": "https://example.org/fhir/StructureDefinition/negated", "valueBoolean": True}]
    resources = example_resources()
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    patient["modifierExtension"] = negated
    response = post(client, PATIENT_VIEW, hook_request("patient-view", prefetch=prefetch_for(resources)))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"].startswith(
        f"Patient/{EXAMPLE_PATIENT} carries modifierExtension https://example.org/fhir/StructureDefinition/negated, "
        "which this reader does not understand")
    resources = example_resources()
    resources.append({"resourceType": "Procedure", "id": "resection", "status": "completed",
                      "modifierExtension": negated, "subject": {"reference": f"Patient/{EXAMPLE_PATIENT}"},
                      "code": {"text": "resection"},
                      "meta": {"profile": ["http://hl7.org/fhir/us/mcode/StructureDefinition/"
                                           "mcode-cancer-related-surgical-procedure"]}})
    response = post(client, PATIENT_VIEW, hook_request("patient-view", prefetch=prefetch_for(resources)))
    (only,) = response.json()["cards"]
    assert only["source"]["topic"]["code"] == "FHIR_INPUT_CONFLICT" and "Procedure/resection" in only["detail"]
    assert "which this reader does not understand" in only["detail"]


# --- the spec's example requests ----------------------------------------------------------------------------------


def _library(name: str) -> dict:
    context = json.loads((LIBRARY / name).read_text())["context"]
    hook = name.split("-context")[0]
    return {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context}


SPEC_REQUESTS = {
    # file: (service path, expected status, what the answer must say)
    "spec/request-patient-view.json": (PATIENT_VIEW, 412, "not one this service is allowed to call"),
    "spec/request-prefetch-data-fragment.json": (PATIENT_VIEW, 400, "hook is required"),
    "spec/request-with-extension.json": (PATIENT_VIEW, 400, "context.patientId is required"),
    "library/patient-view-context-example-1.json": (PATIENT_VIEW, 412, "no fhirServer"),
    "library/patient-view-context-example-2.json": (PATIENT_VIEW, 412, "no fhirServer"),
    "library/order-sign-context-R4.json": (ORDER_SIGN, 200, None),
    "library/order-sign-context-STU3.json": (ORDER_SIGN, 200, None),
    "library/order-sign-context-DSTU2.json": (ORDER_SIGN, 200, None),
    "library/order-select-context-R4.json": (ORDER_SIGN, 400, "answers the order-sign hook, not 'order-select'"),
    "library/order-select-context-STU3.json": (ORDER_SIGN, 400, "answers the order-sign hook, not 'order-select'"),
    "library/order-select-context-DSTU2.json": (ORDER_SIGN, 400, "answers the order-sign hook, not 'order-select'"),
    "inferno/order_sign_hook_request.json": (ORDER_SIGN, 200, None),
    "inferno/order_select_hook_request.json": (ORDER_SIGN, 400, "not 'order-select'"),
}


def _spec_request(name: str) -> dict:
    folder, file = name.split("/")
    if folder == "library":
        return _library(file)
    return json.loads(({"spec": SPEC, "inferno": INFERNO}[folder] / file).read_text())


def test_the_table_covers_every_request_example_of_the_fixtures():
    requests = {f"spec/{p.name}" for p in SPEC.glob("request-*.json")}
    requests |= {f"library/{p.name}" for p in LIBRARY.glob("*-context*.json")}
    requests |= {f"inferno/{p.name}" for p in INFERNO.glob("*_hook_request.json")}
    assert requests == set(SPEC_REQUESTS)


@pytest.mark.parametrize("name", sorted(SPEC_REQUESTS))
def test_every_spec_example_request_is_accepted_or_refused_with_a_clear_reason(client, name):
    path, status, says = SPEC_REQUESTS[name]
    response = post(client, path, _spec_request(name))
    assert response.status_code == status, response.text
    if status == 200:
        assert response.json() == {"cards": []}  # none of their orders is a targeted drug: nothing to say
    else:
        error = response.json()["error"]
        assert error["status"] == status and says in error["message"]


@pytest.mark.parametrize("name", ["spec/request-patient-view.json", "library/patient-view-context-example-1.json",
                                  "library/patient-view-context-example-2.json"])
def test_spec_patient_view_examples_get_cards_once_their_fhir_server_is_reachable(client, fhir, name):
    request = _spec_request(name)
    request["fhirServer"] = fhir.base  # the examples name servers off this machine: point them at ours
    response = post(client, PATIENT_VIEW, request)
    assert response.status_code == 200, response.text
    assert "REC_CRIZOTINIB_ALK" in codes(response)


def test_the_inferno_order_sign_request_is_checked_against_the_record_when_it_orders_a_targeted_drug(client, fhir):
    request = _spec_request("inferno/order_sign_hook_request.json")
    order = next(e["resource"] for e in request["context"]["draftOrders"]["entry"]
                 if e["resource"]["resourceType"] == "MedicationRequest")
    order["medicationCodeableConcept"] = {"text": "Larotrectinib 20 MG/ML Oral Solution"}
    request["fhirServer"] = fhir.base
    response = post(client, ORDER_SIGN, request)
    assert response.status_code == 200, response.text
    assert codes(response) == ["ORDER_TARGET_NOT_POSITIVE"]


# --- order-sign ---------------------------------------------------------------------------------------------------


def order_request(medication: dict, resources=None, **extra) -> dict:
    resources = example_resources() if resources is None else resources
    prefetch = prefetch_for(resources)
    orders = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {
        "resourceType": "MedicationRequest", "id": "draft-1", "status": "draft", "intent": "order",
        "subject": {"reference": f"Patient/{EXAMPLE_PATIENT}"}, **medication}}]}
    request = hook_request("order-sign", prefetch={"patient": prefetch["patient"],
                                                   "conditions": prefetch["conditions"],
                                                   "observations": prefetch["observations"]}, **extra)
    request["context"]["draftOrders"] = orders
    return request


def gene_result(gene_hgnc: str, symbol: str, present: bool, resource_id: str) -> dict:
    return {"resourceType": "Observation", "id": resource_id, "status": "final",
            "subject": {"reference": f"Patient/{EXAMPLE_PATIENT}"},
            "code": {"coding": [{"system": "http://loinc.org", "code": "69548-6"}]},
            "valueCodeableConcept": {"coding": [{"system": "http://loinc.org",
                                                 "code": "LA9633-4" if present else "LA9634-2"}]},
            "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "48018-6"}]},
                           "valueCodeableConcept": {"coding": [{"system": "http://www.genenames.org/geneId",
                                                                "code": gene_hgnc, "display": symbol}]}}]}


def test_an_order_that_fits_the_record_gets_no_card(client):
    response = post(client, ORDER_SIGN, order_request({"medicationCodeableConcept": {"text": "crizotinib 200 mg"}}))
    assert response.status_code == 200 and response.json() == {"cards": []}


def test_a_targeted_drug_without_a_positive_target_is_warned_about_with_the_reason(client):
    response = post(client, ORDER_SIGN, order_request({"medicationCodeableConcept": {
        "coding": [{"system": "http://example.org/formulary", "code": "123", "display": "VITRAKVI 100 MG CAPSULE"}]}}))
    (warning,) = response.json()["cards"]
    assert warning["indicator"] == "warning" and warning["source"]["topic"]["code"] == "ORDER_TARGET_NOT_POSITIVE"
    assert warning["summary"].startswith("Larotrectinib ordered, but no NTRK alteration is documented positive")
    assert "`molecular.ntrk.status` is **unknown** — no FHIR resource recorded it" in warning["detail"]
    assert "EXT-FDA-LARO-2018" in warning["detail"]


def test_a_targeted_drug_whose_target_was_tested_negative_is_critical(client):
    resources = [r for r in example_resources() if r["id"] != "imt-alk-fusion"]
    resources.append(gene_result("HGNC:427", "ALK", False, "alk-absent"))
    response = post(client, ORDER_SIGN, order_request({"medicationCodeableConcept": {"text": "Alectinib 150 mg"}},
                                                      resources))
    (critical,) = response.json()["cards"]
    assert critical["indicator"] == "critical"
    assert "ALK was tested negative" in critical["summary"]
    assert "`molecular.alk.status` is **negative** — from Observation/alk-absent" in critical["detail"]


def test_a_drug_below_its_labelled_age_is_critical_and_an_unknown_age_is_warned(client):
    resources = [r for r in example_resources() if r["id"] != "imt-alk-fusion"]
    resources.append(gene_result("HGNC:9967", "RET", True, "ret-fusion"))
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    young = copy.deepcopy(resources)
    next(r for r in young if r["resourceType"] == "Patient")["birthDate"] = _years_ago(1)
    response = post(client, ORDER_SIGN, order_request({"medicationCodeableConcept": {"text": "selpercatinib"}},
                                                      young))
    (below,) = response.json()["cards"]
    assert below["indicator"] == "critical" and below["source"]["topic"]["code"] == "ORDER_BELOW_LABELLED_AGE"
    assert "selpercatinib_min_age_years" in below["detail"]
    del patient["birthDate"]
    response = post(client, ORDER_SIGN, order_request({"medicationCodeableConcept": {"text": "Retevmo 40 mg"}},
                                                      resources))
    (unknown,) = response.json()["cards"]
    assert unknown["indicator"] == "warning" and unknown["source"]["topic"]["code"] == "ORDER_AGE_UNKNOWN"


def test_an_order_on_a_record_with_problems_gets_the_problems_card_first_only_when_it_has_a_card(client):
    resources = copy.deepcopy(example_resources())
    next(r for r in resources if r["resourceType"] == "Patient")["birthDate"] = "not a date"  # the age is lost
    warned = post(client, ORDER_SIGN, order_request({"medicationCodeableConcept": {"text": "larotrectinib"}},
                                                    resources)).json()["cards"]
    assert [(c["source"]["topic"]["code"], c["indicator"]) for c in warned] == [
        ("FHIR_INPUT_PROBLEMS", "warning"), ("ORDER_TARGET_NOT_POSITIVE", "warning")]  # read first: same severity
    assert "Facts affected: `age_years`" in warned[0]["detail"]
    # A sound order says nothing, not even about a resource of the record that could not be used.
    resources = [*example_resources(), {**gene_result("HGNC:9967", "RET", True, "ret-preliminary"),
                                        "status": "preliminary"}]
    sound = post(client, ORDER_SIGN, order_request({"medicationCodeableConcept": {"text": "crizotinib"}}, resources))
    assert sound.status_code == 200 and sound.json() == {"cards": []}
    flagged = post(client, ORDER_SIGN, order_request({"medicationCodeableConcept": {"text": "larotrectinib"}},
                                                     resources)).json()["cards"]
    assert [c["source"]["topic"]["code"] for c in flagged] == ["ORDER_TARGET_NOT_POSITIVE", "FHIR_INPUT_PROBLEMS"]
    assert "Observation/ret-preliminary" in flagged[1]["detail"]  # (an info card: no fact named, after the warning)
    # A problem about a fact the order does not rest on (a tumour size in inches) is not the order check's to show.
    resources = copy.deepcopy(example_resources())
    size = next(r for r in resources if r["id"] == "imt-size")
    size["component"][0]["valueQuantity"].update({"unit": "in", "code": "[in_i]"})
    unrelated = post(client, ORDER_SIGN, order_request({"medicationCodeableConcept": {"text": "larotrectinib"}},
                                                       resources)).json()["cards"]
    assert [c["source"]["topic"]["code"] for c in unrelated] == ["ORDER_TARGET_NOT_POSITIVE"]


def test_an_order_whose_target_results_conflict_gets_the_problems_card_naming_that_status(client):
    # Two NTRK1 results, one present and one absent: the status is left unknown, and the order of a TRK inhibitor,
    # which rests on it, shows why beside its own card.
    resources = [*example_resources(), gene_result("HGNC:8031", "NTRK1", True, "ntrk-present"),
                 gene_result("HGNC:8031", "NTRK1", False, "ntrk-absent")]
    cards = post(client, ORDER_SIGN, order_request({"medicationCodeableConcept": {"text": "larotrectinib"}},
                                                   resources)).json()["cards"]
    assert [c["source"]["topic"]["code"] for c in cards] == ["FHIR_INPUT_PROBLEMS", "ORDER_TARGET_NOT_POSITIVE"]
    assert "Facts affected: `molecular.ntrk.status`" in cards[0]["detail"].replace("\\_", "_")


def test_an_order_on_a_record_that_contradicts_itself_gets_one_conflict_card(client):
    # a yes/no fact that cannot be left unknown, said both ways at once: nothing can be read as the patient's
    resources = with_fact(with_fact(example_resources(), "history.surgery_done", True, "surgery-yes"),
                          "history.surgery_done", False, "surgery-no")
    cards = post(client, ORDER_SIGN, order_request({"medicationCodeableConcept": {"text": "crizotinib"}},
                                                   resources)).json()["cards"]
    assert [(c["source"]["topic"]["code"], c["indicator"]) for c in cards] == [("FHIR_INPUT_CONFLICT", "critical")]
    assert "history.surgery_done" in cards[0]["detail"].replace("\\_", "_")


def test_feedback_about_an_order_card_is_stored_with_its_check_and_code(client, service):
    request = order_request({"medicationCodeableConcept": {"text": "larotrectinib"}})
    (shown,) = post(client, ORDER_SIGN, request).json()["cards"]
    feedback = {"feedback": [{"card": shown["uuid"], "outcome": "accepted",
                              "outcomeTimestamp": "2026-01-02T03:04:05Z"}]}
    assert client.post(ORDER_SIGN + "/feedback", json=feedback).json() == {"stored": 1}
    stored = json.loads(service.feedback.read_text().splitlines()[-1])
    assert stored["service"] == "imt-order-sign" and stored["finding_code"] == "ORDER_TARGET_NOT_POSITIVE"
    assert stored["evaluation_id"] == hook_instance_id("order-sign", request["hookInstance"])


def test_a_patient_fetched_from_the_fhir_server_that_is_not_the_one_in_context_is_refused(client, fhir):
    fhir.documents[f"/fhir/Patient/{EXAMPLE_PATIENT}"] = {"resourceType": "Patient", "id": "someone-else"}
    try:
        prefetch = prefetch_for(example_resources())
        del prefetch["patient"]
        response = post(client, PATIENT_VIEW, hook_request("patient-view", prefetch=prefetch, fhirServer=fhir.base))
    finally:
        del fhir.documents[f"/fhir/Patient/{EXAMPLE_PATIENT}"]
    assert response.status_code == 400 and response.json()["error"]["message"] == (
        f"the prefetched Patient/someone-else is not the patient in context ({EXAMPLE_PATIENT}): nothing is "
        "evaluated on another patient's record")


def test_orders_without_a_targeted_drug_need_no_patient_data(client):
    request = order_request({"medicationCodeableConcept": {"text": "Amoxicillin 250 mg"}})
    del request["prefetch"]
    response = post(client, ORDER_SIGN, request)
    assert response.status_code == 200 and response.json() == {"cards": []}


def test_a_targeted_order_without_patient_data_is_a_412(client):
    request = order_request({"medicationCodeableConcept": {"text": "crizotinib"}})
    del request["prefetch"]
    assert post(client, ORDER_SIGN, request).status_code == 412


def _years_ago(years: float) -> str:
    from datetime import date, timedelta

    return (date.today() - timedelta(days=round(365.25 * years))).isoformat()


# --- feedback -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["feedback-accepted.json", "feedback-overridden.json",
                                  "feedback-overridden-with-reason.json"])
def test_the_spec_feedback_examples_are_accepted_and_stored(client, service, name):
    body = json.loads((SPEC / name).read_text())
    response = client.post(PATIENT_VIEW + "/feedback", json=body)
    assert response.status_code == 200 and response.json() == {"stored": 1}
    stored = [json.loads(line) for line in service.feedback.read_text().splitlines()]
    assert stored[-1]["feedback"] == body["feedback"][0] and stored[-1]["service"] == "imt-patient-view"


def test_feedback_about_an_issued_card_is_stored_with_its_evaluation_and_finding(client, service):
    response = post(client, PATIENT_VIEW, hook_request("patient-view", prefetch=prefetch_for(example_resources())))
    shown = card(response, "REC_CRIZOTINIB_ALK")
    evaluation = re.search(r"evaluation ([0-9a-f-]{36})", shown["detail"]).group(1)
    feedback = {"feedback": [{"card": shown["uuid"], "outcome": "overridden", "outcomeTimestamp":
                              "2026-01-02T03:04:05Z", "overrideReason": {"reason": shown["overrideReasons"][0],
                                                                         "userComment": "discussed at the board"}}]}
    assert client.post(PATIENT_VIEW + "/feedback", json=feedback).json() == {"stored": 1}
    stored = json.loads(service.feedback.read_text().splitlines()[-1])
    assert stored["evaluation_id"] == evaluation and stored["finding_code"] == "REC_CRIZOTINIB_ALK"


@pytest.mark.parametrize(("body", "message"), [
    ({}, "feedback is required: a list of at least one feedback item"),
    ({"feedback": []}, "feedback must be a list of at least one feedback item (the body is {\"feedback\": [...]}), "
                       "not an empty list"),
    ({"feedback": [{"card": "x", "outcome": "maybe", "outcomeTimestamp": "2020-12-11T00:00:00Z"}]},
     "feedback[0].outcome must be \"accepted\" or \"overridden\", not 'maybe'"),
    ({"feedback": [{"card": "x", "outcome": "accepted"}]}, "outcomeTimestamp is required"),
    ({"feedback": [{"card": "x", "outcome": "accepted", "outcomeTimestamp": "yesterday"}]}, "RFC 3339"),
])
def test_malformed_feedback_is_refused_with_the_reason(client, body, message):
    response = client.post(PATIENT_VIEW + "/feedback", json=body)
    assert response.status_code == 400 and message in response.json()["error"]["message"]


# --- the HTTP edges -----------------------------------------------------------------------------------------------


def test_unknown_services_wrong_hooks_and_bad_json_are_refused_with_json_errors(client):
    unknown = post(client, "/cds-services/nope", hook_request("patient-view"))
    assert unknown.status_code == 404 and "imt-patient-view" in unknown.json()["error"]["message"]
    wrong = post(client, PATIENT_VIEW, hook_request("order-sign"))
    assert wrong.status_code == 400 and "answers the patient-view hook" in wrong.json()["error"]["message"]
    bad = client.post(PATIENT_VIEW, content=b"{not json", headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "cds_bad_request"
    assert client.get("/nothing-here").json()["error"]["code"] == "cds_not_found"


def test_bodies_over_the_limit_are_refused_before_they_are_read(client):
    big = {"filler": "x" * 300_000}
    response = post(client, PATIENT_VIEW, big)
    assert response.status_code == 413 and response.json()["error"]["code"] == "cds_payload_too_large"

    def chunks():  # no Content-Length: the limit is enforced while the body streams in
        for _ in range(40):
            yield b"x" * 10_000

    streamed = client.post(PATIENT_VIEW, content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413


def test_cors_headers_are_sent_only_to_the_configured_origin(client):
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    allowed = client.options(PATIENT_VIEW, headers={"Origin": "https://ehr.example.org", **preflight})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://ehr.example.org"
    other = client.options(PATIENT_VIEW, headers={"Origin": "https://evil.example.com", **preflight})
    assert "access-control-allow-origin" not in other.headers
    assert other.status_code == 400 and other.headers["content-type"] == "application/json"
    assert client.get("/cds-services", headers={"Origin": "https://ehr.example.org"}).headers[
        "access-control-allow-origin"] == "https://ehr.example.org"


@pytest.mark.parametrize(("origin", "method", "headers", "refused"), [
    ("https://evil.example.com", "POST", "content-type", "origin"),
    ("https://ehr.example.org", "DELETE", "authorization", "method"),
    ("https://ehr.example.org", "POST", "authorization, x-evil", "headers"),
    ("https://evil.example.com", "PUT", "x-evil", "origin, method, headers"),
])
def test_a_refused_cors_preflight_is_answered_in_json_naming_what_was_not_allowed(client, origin, method, headers,
                                                                                   refused):
    response = client.options(PATIENT_VIEW, headers={"Origin": origin, "Access-Control-Request-Method": method,
                                                     "Access-Control-Request-Headers": headers})
    assert response.status_code == 400 and response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.json() == {"error": {
        "code": "cds_bad_request", "status": 400,
        "message": f"CORS preflight refused: {refused} not allowed (a browser may call this service from the origins "
                   "its --cors-origin names, with GET or POST and the headers Authorization and Content-Type)"}}
    # the CORS headers granted are still sent (none to another origin: the browser stops there)
    assert ("access-control-allow-origin" in response.headers) == (origin == "https://ehr.example.org")
    assert response.headers["access-control-allow-methods"] == "GET, POST"


def test_a_cards_source_url_opens_the_rules_page(client):
    response = post(client, PATIENT_VIEW, hook_request("patient-view", prefetch=prefetch_for(example_resources())))
    page = client.get(httpx.URL(card(response, "REC_CRIZOTINIB_ALK")["source"]["url"]).path)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "R32a" in page.text and "crizotinib" in page.text.lower() and "pubmed.ncbi.nlm.nih.gov" in page.text
    assert client.get("/rules/R99").status_code == 404


def test_unauthenticated_mode_says_so_loudly(service):
    assert "WARNING: serving WITHOUT authentication" in service.log_text()


def test_without_authentication_configured_the_server_refuses_to_start():
    result = subprocess.run([str(SCRIPT), "serve", "--port", "1"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "no authentication configured" in result.stderr and "--allow-unauthenticated" in result.stderr


def test_many_searchset_pages_are_refused_rather_than_evaluating_part_of_a_chart(client, fhir, service):
    extra = [{"resourceType": "Condition", "id": f"c{i}", "subject": {"reference": f"Patient/{EXAMPLE_PATIENT}"},
              "code": {"text": "other"}} for i in range(50)]
    fhir.resources.extend(extra)
    try:
        response = post(client, PATIENT_VIEW, hook_request("patient-view", fhirServer=fhir.base))
    finally:
        del fhir.resources[-len(extra):]
    assert response.status_code == 412 and "more than 20 pages" in service.log_text()


def test_a_prefetch_search_bundle_with_outcome_entries_is_read_without_them(client):
    prefetch = prefetch_for(example_resources())
    prefetch["conditions"]["entry"].append({"resource": {"resourceType": "OperationOutcome", "issue": [
        {"severity": "warning", "code": "informational"}]}, "search": {"mode": "outcome"}})
    assert post(client, PATIENT_VIEW, hook_request("patient-view", prefetch=prefetch)).status_code == 200



def test_every_error_body_has_one_shape(client):
    wrong_method = client.get(PATIENT_VIEW)
    assert wrong_method.status_code == 405
    assert wrong_method.json() == {"error": {"code": "cds_method_not_allowed", "status": 405,
                                             "message": "Method Not Allowed"}}
    missing = client.get("/rules/R99").json()["error"]
    assert set(missing) == {"code", "status", "message"} and missing["status"] == 404


def test_every_reading_endpoint_answers_head_as_get_but_without_a_body(client):
    # HTTP requires HEAD wherever GET is answered (RFC 9110 section 9.1); a proxy's health check may use it.
    for path in ("/cds-services", "/rules/R32a", "/healthz", "/readyz"):
        get, head = client.get(path), client.head(path)
        assert (head.status_code, head.content) == (get.status_code, b"") == (200, b""), path
        assert head.headers["content-type"] == get.headers["content-type"], path
        assert head.headers["content-length"] == str(len(get.content)), path
    assert client.head("/rules/R99").status_code == 404
    refused = client.head(PATIENT_VIEW)
    assert (refused.status_code, refused.headers["allow"], refused.content) == (405, "POST", b"")


def test_a_compressed_body_is_refused_with_415_on_every_path_that_reads_one(client):
    # A gzip body was read as malformed JSON (a 400 about a byte 0x8b); "br" on a plain body was read as plain.
    body = gzip.compress(json.dumps(hook_request("patient-view", prefetch=prefetch_for(example_resources()))).encode())
    message = ("the request body is encoded ('gzip', Content-Encoding); this service reads unencoded JSON only: send "
               "it without Content-Encoding")
    headers = {"content-type": "application/json", "content-encoding": "gzip"}
    for path, extra in ((PATIENT_VIEW, {}), (PATIENT_VIEW, {"origin": "https://ehr.example.org"}),
                        (PATIENT_VIEW + "/feedback", {})):
        response = client.post(path, content=body, headers={**headers, **extra})
        assert (response.status_code, response.json()["error"]["message"]) == (415, message), path
        assert response.json()["error"]["code"] == "cds_unsupported_content_coding", path
        assert response.headers["accept-encoding"] == "identity" and "accept" not in response.headers, path
    plain = client.post(PATIENT_VIEW, content=gzip.decompress(body), headers={**headers, "content-encoding": "br"})
    assert plain.status_code == 415 and "('br', Content-Encoding)" in plain.json()["error"]["message"]


def test_a_rules_page_is_the_same_page_every_time(client):
    first, again = client.get("/rules/R32a"), client.get("/rules/R32a")
    assert first.status_code == again.status_code == 200 and first.text == again.text
    assert client.get("/rules/R99").status_code == 404 and client.get("/rules/R99").status_code == 404


def test_health_reports_the_workers_and_the_crashes_since_start(client):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["workers"] == 2 and health["worker_crashes"] == 0


def test_readiness_without_an_audit_store_asks_only_for_live_workers(client):
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"ready": True, "not_ready": []}
    assert client.post("/readyz").status_code == 405  # a check reads; it changes nothing
