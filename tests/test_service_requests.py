"""CDS Hooks requests and feedback bodies are checked against typed models: every field path that is wrong is named,
with what it allows, in one 400 (``details.problems`` lists them); what is accepted goes on exactly as sent."""

from __future__ import annotations

import httpx
import pytest
from service_support import hook_request, running_service

from imt_cds.service.calls import DIAGNOSIS_ATTESTED_EXTENSION, check_request, find_service
from imt_cds.service.errors import BadRequestError, UnsupportedMediaTypeError
from imt_cds.service.feedback import parse_feedback
from imt_cds.service.prefetch import prefetched
from imt_cds.service.request_json import check_json_content_type, parse_request_json

PATIENT_VIEW = find_service("imt-patient-view")
ORDER_SIGN = find_service("imt-order-sign")
BUNDLE = {"resourceType": "Bundle", "entry": []}


def refusal(body, service=PATIENT_VIEW) -> BadRequestError:
    with pytest.raises(BadRequestError) as raised:
        check_request(body, service)
    return raised.value


def paths(error: BadRequestError) -> list[str]:
    return [problem["path"] for problem in error.details["problems"]]


@pytest.mark.parametrize("content_type", [
    "application/json", "application/json; charset=utf-8", "APPLICATION/JSON", " application/json ;x=y",
    "application/cds-hooks+json", "application/problem+json; charset=utf-8",
    "application/a+json",  # (the shortest structured syntax suffix there is: one letter before "+json")
])
def test_a_body_declared_as_json_is_read(content_type):
    check_json_content_type(content_type)  # raises otherwise


@pytest.mark.parametrize("content_type", [
    # what a browser sends cross-site without a preflight, and what merely looks like JSON
    "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "", "json",
    "text/json", "application/jsonp", "application/json-seq", "application/+json", "application", "*/*",
    "application/xml+json/x",
])
def test_a_body_not_declared_as_json_is_refused_naming_what_it_said(content_type):
    with pytest.raises(UnsupportedMediaTypeError) as raised:
        check_json_content_type(content_type)
    assert raised.value.status == 415 and raised.value.code == "cds_unsupported_media_type"
    assert raised.value.message == (f"the request body is declared as {content_type!r} (Content-Type); this service "
                                    "reads JSON only: send Content-Type: application/json")


@pytest.mark.parametrize("encoding", [None, "", "identity", "Identity, IDENTITY", " identity ,"])
def test_a_body_without_a_content_coding_is_read(encoding):
    check_json_content_type("application/json", encoding)  # raises otherwise


@pytest.mark.parametrize("encoding, shown", [
    ("gzip", "gzip"), ("br", "br"), ("deflate", "deflate"), ("x-gzip", "x-gzip"), ("identity, gzip", "identity, gzip"),
    (" gzip ,, br ", "gzip, br"), ("zstd;q=1", "zstd;q=1"),
])
def test_a_body_with_a_content_coding_is_refused_naming_it(encoding, shown):
    # It would otherwise be read as if it were not encoded: a compressed body as malformed JSON, or worse.
    with pytest.raises(UnsupportedMediaTypeError) as raised:
        check_json_content_type("application/json", encoding)
    assert (raised.value.status, raised.value.message) == (415, (
        f"the request body is encoded ({shown!r}, Content-Encoding); this service reads unencoded JSON only: send "
        "it without Content-Encoding"))


def test_a_long_content_coding_is_shown_cut():
    with pytest.raises(UnsupportedMediaTypeError) as raised:
        check_json_content_type("application/json", "gzip, " + "x" * 200)
    assert f"({('gzip, ' + 'x' * 200)[:80] + '...'!r}, Content-Encoding)" in raised.value.message
    with pytest.raises(UnsupportedMediaTypeError) as raised:
        check_json_content_type("application/json", "gzip, " + "x" * 74)  # 80 characters: shown whole
    assert f"({'gzip, ' + 'x' * 74!r}, Content-Encoding)" in raised.value.message


def test_a_long_content_type_is_shown_cut_and_a_missing_one_is_said_to_be_missing():
    with pytest.raises(UnsupportedMediaTypeError) as raised:
        check_json_content_type("text/" + "x" * 5000)
    assert f"{'text/' + 'x' * 75 + '...'!r} (Content-Type)" in raised.value.message
    with pytest.raises(UnsupportedMediaTypeError) as raised:
        check_json_content_type("text/" + "x" * 75)  # 80 characters: shown whole
    assert f"{'text/' + 'x' * 75!r} (Content-Type)" in raised.value.message
    with pytest.raises(UnsupportedMediaTypeError) as raised:
        check_json_content_type(None)
    assert raised.value.message == ("the request has no Content-Type header; a CDS Hooks request body is JSON: send "
                                    "Content-Type: application/json")


SWITCHES = [DIAGNOSIS_ATTESTED_EXTENSION, "urn:imt-cds:fhir-guidance"]


@pytest.mark.parametrize("url", SWITCHES)
@pytest.mark.parametrize(("value", "shown"), [("true", "'true'"), (1, "1"), (0, "0"), (None, "null"),
                                              ({}, "an object"), ([True], "a list")])
def test_a_switch_of_this_service_is_true_or_false_and_nothing_else(url, value, shown):
    # "true" as text meant as an attestation would otherwise leave the patient without advice, and 1 turn it on
    error = refusal(hook_request("patient-view", extension={url: value, "urn:other": "anything"}))
    assert error.details["problems"] == [{"path": f"extension.{url}",
                                          "message": f"extension.{url} must be true or false, not {shown}"}]
    for switch in (True, False):
        check_request(hook_request("patient-view", extension={url: switch}), PATIENT_VIEW)
        order_sign = hook_request("order-sign", extension={url: switch})
        order_sign["context"]["draftOrders"] = {"resourceType": "Bundle", "entry": []}
        check_request(order_sign, ORDER_SIGN)


def test_both_switches_wrong_are_named_in_one_refusal_and_other_extensions_are_not_judged():
    error = refusal(hook_request("patient-view", extension={SWITCHES[1]: "yes", SWITCHES[0]: "yes"}))
    assert paths(error) == [f"extension.{SWITCHES[0]}", f"extension.{SWITCHES[1]}"]
    check_request(hook_request("patient-view", extension={"urn:someone-else": "true", "urn:x": None}), PATIENT_VIEW)


def test_a_valid_request_goes_on_as_sent_with_fields_the_models_do_not_know():
    body = hook_request("patient-view", prefetch={"patient": None}, extension={"urn:x": True}, fhirServer="https://f",
                        fhirAuthorization={"access_token": "t", "token_type": "Bearer", "expires_in": 300},
                        somethingElse=[1])
    assert check_request(body, PATIENT_VIEW) == body
    signing = hook_request("order-sign")
    signing["context"]["draftOrders"] = BUNDLE
    assert check_request(signing, ORDER_SIGN) == signing


def test_every_wrong_field_of_a_request_is_named_by_its_path_in_one_refusal():
    body = {"hook": "patient-view", "hookInstance": "", "context": {"patientId": 7, "userId": ["x"]},
            "fhirServer": 3, "prefetch": [], "extension": "on", "fhirAuthorization": {"token_type": "Bearer"}}
    error = refusal(body)
    assert sorted(paths(error)) == sorted(["hookInstance", "fhirServer", "fhirAuthorization.access_token", "prefetch",
                                           "extension", "context.patientId", "context.userId"])
    problems = {p["path"]: p["message"] for p in error.details["problems"]}
    assert problems["fhirServer"] == ("fhirServer must be a URL of at most 4096 characters (the base URL of the "
                                      "client's FHIR server), not 3")
    assert problems["prefetch"].startswith("prefetch must be an object") and problems["prefetch"].endswith(
        "not an empty list")
    assert problems["fhirAuthorization.access_token"].startswith("fhirAuthorization.access_token is required")
    assert problems["context.patientId"] == ("context.patientId must be non-empty text (the FHIR id of the patient "
                                             "whose chart is open), not 7")
    assert error.message == "; ".join(problems.values())


@pytest.mark.parametrize(("body", "message"), [
    ([], "the request body must be a JSON object (a CDS Hooks request)"),
    ({"hookInstance": "1", "context": {"patientId": "p"}}, "hook is required: non-empty text"),
    ({"hook": "patient-view", "hookInstance": "1"}, "context is required: an object"),
    ({"hook": "patient-view", "hookInstance": "1", "context": "p"}, "context must be an object"),
    ({"hook": "patient-view", "hookInstance": "1", "context": {}},
     "context.patientId is required by the patient-view hook: non-empty text"),
    ({"hook": "order-select", "hookInstance": "1", "context": {}},
     "service imt-patient-view answers the patient-view hook, not 'order-select'"),
    ({"hook": "patient-view", "hookInstance": True, "context": {"patientId": "p"}},
     "hookInstance must be non-empty text (a CDS Hooks request has hook, hookInstance and context), not True"),
])
def test_a_request_that_is_not_a_call_this_service_answers_is_refused_with_the_reason(body, message):
    assert refusal(body).message.startswith(message)


@pytest.mark.parametrize(("orders", "path", "message"), [
    (None, "context.draftOrders",
     "context.draftOrders is required by the order-sign hook: a FHIR Bundle (of the orders to sign)"),
    ({"resourceType": "MedicationRequest"}, "context.draftOrders.resourceType",
     "context.draftOrders.resourceType must be \"Bundle\" (draftOrders is a FHIR Bundle), not 'MedicationRequest'"),
    ([BUNDLE], "context.draftOrders", "context.draftOrders must be a FHIR Bundle (of the orders to sign), not a list"),
])
def test_order_sign_requires_its_draft_orders_as_a_bundle(orders, path, message):
    body = hook_request("order-sign")
    if orders is not None:
        body["context"]["draftOrders"] = orders
    error = refusal(body, ORDER_SIGN)
    assert paths(error) == [path] and error.message == message


def test_patient_view_does_not_require_draft_orders():
    assert check_request(hook_request("patient-view"), PATIENT_VIEW)["context"]["patientId"]


def test_types_are_never_coerced():
    body = hook_request("patient-view", fhirAuthorization={"access_token": "t", "expires_in": "300"})
    assert paths(refusal(body)) == ["fhirAuthorization.expires_in"]


# --- feedback -----------------------------------------------------------------------------------------------------

ITEM = {"card": "c", "outcome": "accepted", "outcomeTimestamp": "2024-01-01T00:00:00Z"}


def test_valid_feedback_items_are_returned_as_sent():
    items = [dict(ITEM, extra={"kept": True}),
             dict(ITEM, outcome="overridden", acceptedSuggestions=[{"id": "s"}],
                  overrideReason={"reason": {"code": "x", "system": "urn:s", "display": "X"}, "userComment": "ok"})]
    assert parse_feedback({"feedback": items}) == items


@pytest.mark.parametrize(("item", "path", "message"), [
    ({"outcome": "accepted", "outcomeTimestamp": "2024-01-01T00:00:00Z"}, "feedback[0].card",
     "feedback[0].card is required: the card's uuid, non-empty text"),
    (dict(ITEM, outcome="maybe"), "feedback[0].outcome",
     "feedback[0].outcome must be \"accepted\" or \"overridden\", not 'maybe'"),
    (dict(ITEM, outcomeTimestamp="yesterday"), "feedback[0].outcomeTimestamp",
     "feedback[0].outcomeTimestamp 'yesterday' is not an RFC 3339 date-time with its offset, e.g. "
     "2026-01-02T03:04:05Z"),
    (dict(ITEM, acceptedSuggestions=[{"id": 1}]), "feedback[0].acceptedSuggestions[0].id",
     "feedback[0].acceptedSuggestions[0].id must be text (the id of a suggestion of the card), not 1"),
    (dict(ITEM, overrideReason={"reason": {"code": "x"}}), "feedback[0].overrideReason.reason.system",
     "feedback[0].overrideReason.reason.system is required: text (a Coding has a code and a system)"),
    (dict(ITEM, overrideReason={"userComment": 5}), "feedback[0].overrideReason.userComment",
     "feedback[0].overrideReason.userComment must be text, not 5"),
    ("c", "feedback[0]", "feedback[0] must be an object, not 'c'"),
])
def test_each_wrong_feedback_field_is_named_by_its_path(item, path, message):
    with pytest.raises(BadRequestError) as raised:
        parse_feedback({"feedback": [ITEM, item][1:]})
    assert paths(raised.value) == [path] and raised.value.message == message


# --- over HTTP ----------------------------------------------------------------------------------------------------


def test_the_400_body_lists_every_problem_with_its_path():
    with running_service("--allow-unauthenticated", "--workers", "1") as service:
        response = httpx.post(service.url + "/cds-services/imt-patient-view",
                              json={"hook": "patient-view", "hookInstance": 1, "context": {}}, timeout=60)
        feedback = httpx.post(service.url + "/cds-services/imt-patient-view/feedback",
                              json={"feedback": [dict(ITEM, outcome="maybe")]}, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "cds_bad_request"
    assert [p["path"] for p in error["details"]["problems"]] == ["hookInstance", "context.patientId"]
    assert "context.patientId is required by the patient-view hook" in error["message"]
    assert feedback.status_code == 400
    assert feedback.json()["error"]["details"]["problems"][0]["path"] == "feedback[0].outcome"


@pytest.mark.parametrize("body", [{}, {"feedback": []}, {"feedback": {}}, ["feedback"]])
def test_feedback_without_a_list_of_at_least_one_item_is_refused(body):
    with pytest.raises(BadRequestError, match="feedback"):
        parse_feedback(body)


# --- what the prefetch holds (nothing fetched here) ------------------------------------------------------------------


def test_the_prefetch_gives_its_resources_in_key_order_and_says_which_keys_it_lacks_and_why():
    patient = {"resourceType": "Patient", "id": "p"}
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": []}
    outcome = {"resourceType": "OperationOutcome", "issue": []}
    request = hook_request("patient-view", "p", prefetch={"procedures": bundle, "patient": patient,
                                                          "conditions": None, "observations": outcome})
    resources, missing = prefetched(PATIENT_VIEW.prefetch, request)
    assert resources == [patient, bundle]  # key order; null is "no such data", not missing
    assert missing == {"observations": "the client could not prefetch it (OperationOutcome)"}
    assert prefetched(PATIENT_VIEW.prefetch, hook_request("patient-view")) == ([], {
        key: "not prefetched" for key in ("patient", "conditions", "observations", "procedures")})


@pytest.mark.parametrize("value", ["Patient/p", [], {"id": "p"}, {"resourceType": 5}, {"resourceType": None},
                                   True])
def test_a_prefetch_value_that_is_not_a_resource_is_refused_naming_its_key(value):
    request = hook_request("patient-view", "p", prefetch={"patient": {"resourceType": "Patient", "id": "p"},
                                                          "conditions": value})
    with pytest.raises(BadRequestError) as raised:
        prefetched(PATIENT_VIEW.prefetch, request)
    assert raised.value.message == "prefetch.conditions must be a FHIR resource, a Bundle or null"


def test_a_key_given_twice_is_named_whole_up_to_80_characters_then_cut():
    for key, shown in (("hookInstance", "hookInstance"), ("k" * 80, "k" * 80), ("k" * 81, "k" * 80 + "...")):
        with pytest.raises(BadRequestError) as refused:
            parse_request_json(f'{{"{key}": 1, "{key}": 2}}'.encode())
        assert refused.value.message == f"the request body has the key {shown!r} twice in one JSON object"
