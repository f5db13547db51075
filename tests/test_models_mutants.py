"""The words and bounds of the request and feedback checks (imt_cds/service/models.py), held exactly.

A mutation run of the module (tests/mutation-survivors.md) left most of its text unchecked: each field's description
(the second half of every refusal), the bounds (draft orders, accepted suggestions, feedback items, fhirServer, the
problems listed) and the quick acceptance of a plain patient-view request, which must say yes to the plain shape (the
service's speed rests on it) and never to anything the models refuse. In process, no server: ~1 s.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from helpers import ended_within

from imt_cds.service.models import (
    MAX_ACCEPTED_SUGGESTIONS,
    MAX_DRAFT_ORDERS,
    MAX_FEEDBACK_ITEMS,
    MAX_FHIR_SERVER_CHARS,
    MAX_LISTED_PROBLEMS,
    HookRequest,
    PatientViewContext,
    _plainly_valid_patient_view,
    feedback_problems,
    refuse,
    request_problems,
    shown_value,
)

VIEW = {"hook": "patient-view", "hookInstance": "h", "context": {"patientId": "p"}}
SIGN = {"hook": "order-sign", "hookInstance": "h",
        "context": {"patientId": "p", "draftOrders": {"resourceType": "Bundle", "entry": []}}}
ITEM = {"card": "c", "outcome": "accepted", "outcomeTimestamp": "2026-01-02T03:04:05Z"}
ENVELOPE = "(a CDS Hooks request has hook, hookInstance and context)"


def with_value(body: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    body = copy.deepcopy(body)
    target = body
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value
    return body


def only_message(problems: list[dict[str, str]]) -> str:
    assert len(problems) == 1, problems
    return problems[0]["message"]


@pytest.mark.parametrize("path, value, message", [
    (("hook",), 1, f"hook must be non-empty text {ENVELOPE}, not 1"),
    (("hookInstance",), 1, f"hookInstance must be non-empty text {ENVELOPE}, not 1"),
    (("context",), 1, "context must be an object (what the hook's context holds), not 1"),
    (("fhirServer",), 1, "fhirServer must be a URL of at most 4096 characters (the base URL of the client's FHIR "
                         "server), not 1"),
    (("fhirAuthorization",), 1, "fhirAuthorization must be an object with an access_token (CDS Hooks 2.0.1 FHIR "
                                "resource access), not 1"),
    (("prefetch",), 1, "prefetch must be an object (prefetch key -> FHIR resource or null), not 1"),
    (("extension",), 1, "extension must be an object (extension URL -> value), not 1"),
    (("fhirAuthorization", "access_token"), 1, "fhirAuthorization.access_token must be non-empty text (the OAuth 2.0 "
                                               "access token for fhirServer), not 1"),
    (("fhirAuthorization", "token_type"), 1, 'fhirAuthorization.token_type must be text ("Bearer"), not 1'),
    (("fhirAuthorization", "expires_in"), "1", "fhirAuthorization.expires_in must be a whole number of seconds, not "
                                               "'1'"),
    (("fhirAuthorization", "scope"), 1, "fhirAuthorization.scope must be text (the granted OAuth scopes), not 1"),
    (("fhirAuthorization", "subject"), 1, "fhirAuthorization.subject must be text (the OAuth client id of this "
                                          "service), not 1"),
    (("fhirAuthorization", "patient"), 1, "fhirAuthorization.patient must be text (the FHIR id of the patient in "
                                          "context), not 1"),
    (("context", "patientId"), 1, "context.patientId must be non-empty text (the FHIR id of the patient whose chart "
                                  "is open), not 1"),
    (("context", "userId"), 1, "context.userId must be text (a FHIR reference to the user), not 1"),
    (("context", "encounterId"), 1, "context.encounterId must be text (the FHIR id of the encounter), not 1"),
])
def test_each_field_of_a_patient_view_request_says_what_it_allows(path, value, message):
    body = with_value(VIEW, path, value)
    if path[0] == "fhirAuthorization" and len(path) > 1 and path[1] != "access_token":
        body["fhirAuthorization"]["access_token"] = "t"
    assert only_message(request_problems(body, "patient-view", "imt-patient-view")) == message


@pytest.mark.parametrize("path, value, message", [
    (("context", "patientId"), 1, "context.patientId must be non-empty text (the FHIR id of the patient the orders "
                                  "are for), not 1"),
    (("context", "userId"), 1, "context.userId must be text (a FHIR reference to the user), not 1"),
    (("context", "encounterId"), 1, "context.encounterId must be text (the FHIR id of the encounter), not 1"),
    (("context", "draftOrders"), 1, "context.draftOrders must be a FHIR Bundle (of the orders to sign), not 1"),
    (("context", "draftOrders", "resourceType"), "X", "context.draftOrders.resourceType must be \"Bundle\" "
                                                      "(draftOrders is a FHIR Bundle), not 'X'"),
    (("context", "draftOrders", "entry"), 1, "context.draftOrders.entry must be a list of at most 200 entries (the "
                                             "draft orders of one call), not 1"),
])
def test_each_field_of_an_order_sign_context_says_what_it_allows(path, value, message):
    body = with_value(SIGN, path, value)
    assert only_message(request_problems(body, "order-sign", "imt-order-sign")) == message


def test_what_is_missing_is_said_with_what_it_must_be_and_the_hook_that_requires_it():
    assert request_problems({"hook": "patient-view"}, "patient-view", "imt-patient-view") == [
        {"path": "hookInstance", "message": f"hookInstance is required: non-empty text {ENVELOPE}"},
        {"path": "context", "message": "context is required: an object (what the hook's context holds)"}]
    assert request_problems({"hook": "order-sign", "hookInstance": "h", "context": {}}, "order-sign", "s") == [
        {"path": "context.patientId", "message": "context.patientId is required by the order-sign hook: non-empty "
                                                 "text (the FHIR id of the patient the orders are for)"},
        {"path": "context.draftOrders", "message": "context.draftOrders is required by the order-sign hook: a FHIR "
                                                   "Bundle (of the orders to sign)"}]
    assert request_problems(dict(VIEW, fhirAuthorization={}), "patient-view", "s") == [
        {"path": "fhirAuthorization.access_token", "message": "fhirAuthorization.access_token is required: non-empty "
                                                              "text (the OAuth 2.0 access token for fhirServer)"}]
    assert request_problems([], "patient-view", "s") == [
        {"path": "", "message": "the request body must be a JSON object (a CDS Hooks request)"}]
    assert request_problems(dict(VIEW, hook="order-sign"), "patient-view", "svc-x") == [
        {"path": "hook", "message": "service svc-x answers the patient-view hook, not 'order-sign'"}]


def test_the_bounds_of_a_request_are_exact():
    assert MAX_FHIR_SERVER_CHARS == 4096 and MAX_DRAFT_ORDERS == 200
    assert request_problems(dict(VIEW, fhirServer="h" * 4096), "patient-view", "s") == []
    assert request_problems(dict(VIEW, fhirServer="h" * 4097), "patient-view", "s") == [
        {"path": "fhirServer", "message": "fhirServer must be a URL of at most 4096 characters (the base URL of the "
                                          "client's FHIR server), not 4097 characters long"}]
    orders = with_value(SIGN, ("context", "draftOrders", "entry"), [{}] * 200)
    assert request_problems(orders, "order-sign", "s") == []
    orders["context"]["draftOrders"]["entry"].append({})
    assert request_problems(orders, "order-sign", "s") == [
        {"path": "context.draftOrders.entry", "message": "context.draftOrders.entry must be a list of at most 200 "
                                                         "entries (the draft orders of one call), not a list of 201 "
                                                         "items"}]


@pytest.mark.parametrize("field, value, path, message", [
    ("card", 1, "card", "must be the card's uuid, non-empty text, not 1"),
    ("outcome", 1, "outcome", 'must be "accepted" or "overridden", not 1'),
    ("outcomeTimestamp", 1, "outcomeTimestamp", "must be an RFC 3339 date-time, UTC, not 1"),
    ("outcomeTimestamp", "yesterday", "outcomeTimestamp", "'yesterday' is not an RFC 3339 date-time with its "
                                                          "offset, e.g. 2026-01-02T03:04:05Z"),
    ("acceptedSuggestions", 1, "acceptedSuggestions", 'must be a list of at most 100 {"id": ...}, not 1'),
    ("overrideReason", 1, "overrideReason", "must be an object, not 1"),
    ("overrideReason", {"reason": 1}, "overrideReason.reason", "must be a Coding with code and system (one of the "
                                                               "card's overrideReasons), not 1"),
    ("overrideReason", {"userComment": 1}, "overrideReason.userComment", "must be text, not 1"),
])
def test_each_field_of_a_feedback_item_says_what_it_allows(field, value, path, message):
    assert feedback_problems({"feedback": [dict(ITEM, **{field: value})]}) == [
        {"path": f"feedback[0].{path}", "message": f"feedback[0].{path} {message}"}]


@pytest.mark.parametrize("timestamp", ["2026-01-02T03:04:05Z", "2026-01-02T03:04:05.123+02:00",
                                       "2026-01-02t03:04:05.5z", "2026-12-31T23:59:59-00:00"])
def test_an_rfc_3339_date_time_is_accepted(timestamp):
    assert feedback_problems({"feedback": [dict(ITEM, outcomeTimestamp=timestamp)]}) == []


@pytest.mark.parametrize("timestamp", [
    "2026-01-02",  # a date: no time
    "2026-01-02T03:04:05",  # no offset: an instant no one can place
    "2026-01-02T03:04Z",  # no seconds
    "2026-01-02 03:04:05Z",  # ISO 8601's space, which RFC 3339 only notes
    "20260102T030405Z", "2026-W01-2T03:04:05Z", "2026-002T03:04:05Z",  # other ISO 8601 forms
    "2026-13-02T03:04:05Z", "2026-02-30T03:04:05Z", "2026-01-02T24:00:00Z",  # numbers out of range
    "2026-01-02T03:04:05+0200", "2026-01-02T03:04:05Z ", "\uff12026-01-02T03:04:05Z",  # offset, blank, a digit
])
def test_other_timestamps_are_refused_saying_the_form_wanted(timestamp):
    message = f"{shown_value(timestamp)} is not an RFC 3339 date-time with its offset, e.g. 2026-01-02T03:04:05Z"
    assert feedback_problems({"feedback": [dict(ITEM, outcomeTimestamp=timestamp)]}) == [
        {"path": "feedback[0].outcomeTimestamp", "message": f"feedback[0].outcomeTimestamp {message}"}]


def test_the_parts_of_an_override_reason_and_a_suggestion_say_what_they_allow():
    reason = {"reason": {"code": 1, "system": 1, "display": 1}}
    item = dict(ITEM, overrideReason=reason, acceptedSuggestions=[{"id": 1}, {}])
    assert feedback_problems({"feedback": [item]}) == [
        {"path": "feedback[0].acceptedSuggestions[0].id", "message": "feedback[0].acceptedSuggestions[0].id must be "
                                                                     "text (the id of a suggestion of the card), "
                                                                     "not 1"},
        {"path": "feedback[0].acceptedSuggestions[1].id", "message": "feedback[0].acceptedSuggestions[1].id is "
                                                                     "required: text (the id of a suggestion of the "
                                                                     "card)"},
        {"path": "feedback[0].overrideReason.reason.code", "message": "feedback[0].overrideReason.reason.code must be "
                                                                      "text (a Coding has a code and a system), not 1"},
        {"path": "feedback[0].overrideReason.reason.system", "message": "feedback[0].overrideReason.reason.system must "
                                                                        "be text (a Coding has a code and a system), "
                                                                        "not 1"},
        {"path": "feedback[0].overrideReason.reason.display", "message": "feedback[0].overrideReason.reason.display "
                                                                         "must be text, not 1"},
    ]


def test_a_feedback_body_needs_a_list_of_one_to_500_items():
    assert feedback_problems({"feedback": [ITEM]}) == []
    list_of = 'a list of at least one feedback item (the body is {"feedback": [...]})'
    assert feedback_problems({"feedback": []}) == [
        {"path": "feedback", "message": f"feedback must be {list_of}, not an empty list"}]
    assert feedback_problems({}) == [{"path": "feedback", "message": f"feedback is required: {list_of}"}]
    assert feedback_problems([ITEM]) == [
        {"path": "", "message": 'feedback must be an object {"feedback": [...]} with at least one item'}]
    assert MAX_FEEDBACK_ITEMS == 500
    assert feedback_problems({"feedback": [ITEM] * 500}) == []
    assert feedback_problems({"feedback": [{}] * 501}) == [  # refused as a whole: no item is looked at
        {"path": "feedback", "message": "feedback holds 501 items; at most 500 are accepted in one call (send the "
                                        "rest in further calls)"}]


def test_an_item_holds_at_most_100_accepted_suggestions():
    assert MAX_ACCEPTED_SUGGESTIONS == 100
    assert feedback_problems({"feedback": [dict(ITEM, acceptedSuggestions=[{"id": "a"}] * 100)]}) == []
    assert feedback_problems({"feedback": [dict(ITEM, acceptedSuggestions=[{"id": "a"}] * 101)]}) == [
        {"path": "feedback[0].acceptedSuggestions", "message": 'feedback[0].acceptedSuggestions must be a list of at '
                                                               'most 100 {"id": ...}, not a list of 101 items'}]


def test_a_400_lists_20_problems_then_says_how_many_more():
    assert MAX_LISTED_PROBLEMS == 20
    twenty = [{"path": f"p{n}", "message": f"m{n}"} for n in range(20)]
    error = refuse(twenty)
    assert error.details == {"problems": twenty}
    assert error.message == "; ".join(f"m{n}" for n in range(20))
    error = refuse([*twenty, {"path": "p20", "message": "m20"}, {"path": "p21", "message": "m21"}])
    more = {"path": "", "message": "... and 2 more problems (only the first 20 are listed)"}
    assert error.details == {"problems": [*twenty, more]}
    assert error.message == "; ".join(f"m{n}" for n in range(20)) + "; ... and 2 more problems (only the first 20 " \
                                                                     "are listed)"


@pytest.mark.parametrize("value, shown", [
    ("a" * 60, repr("a" * 60)), ("a" * 61, repr("a" * 60 + "...")), ([], "an empty list"), ([1], "a list"),
    ({}, "an object"), (None, "null"), (True, "True"), (1.5, "1.5"),
])
def test_an_offending_value_is_shown_short(value, shown):
    assert shown_value(value) == shown


# --- the quick acceptance of a plain patient-view request ------------------------------------------------------------

PLAIN = {"hook": "patient-view", "hookInstance": "h", "fhirServer": "https://ehr.example/fhir",
         "fhirAuthorization": {"access_token": "t", "token_type": "Bearer", "expires_in": 300, "scope": "s",
                               "subject": "c", "patient": "p"},
         "context": {"patientId": "p", "userId": "Practitioner/1", "encounterId": "e"},
         "prefetch": {"patient": None}, "extension": {"urn:x": True}}


@pytest.mark.parametrize("body", [PLAIN, VIEW, dict(VIEW, fhirServer=None, prefetch=None, extension=None),
                                  dict(VIEW, fhirServer="h" * 4096),
                                  dict(PLAIN, fhirAuthorization={"access_token": "t"})],
                         ids=["every field", "the least", "nulls", "the longest fhirServer", "a bare token"])
def test_a_plain_patient_view_request_is_accepted_without_the_models(body):
    assert _plainly_valid_patient_view(body) is True
    HookRequest.model_validate(body)  # and the models agree
    PatientViewContext.model_validate(body["context"])


@pytest.mark.parametrize("change", [
    ("hook", None), ("hook", ""), ("hook", "é"), ("hookInstance", None), ("hookInstance", 1), ("fhirServer", 1),
    ("fhirServer", "é"), ("fhirServer", "h" * 4097), ("prefetch", []), ("prefetch", {"é": None}), ("extension", 1),
    ("context", None), ("context", []), ("other", 1), ("fhirAuthorization", 1), ("fhirAuthorization", {}),
    ("fhirAuthorization.access_token", ""), ("fhirAuthorization.token_type", 1), ("fhirAuthorization.scope", "é"),
    ("fhirAuthorization.subject", 1), ("fhirAuthorization.patient", 1), ("fhirAuthorization.expires_in", "300"),
    ("fhirAuthorization.expires_in", 1.5), ("fhirAuthorization.other", 1), ("context.patientId", ""),
    ("context.patientId", "é"), ("context.userId", 1), ("context.encounterId", 1), ("context.other", 1),
], ids=repr)
def test_anything_but_the_plain_shape_goes_to_the_models(change):
    path, value = change
    assert _plainly_valid_patient_view(with_value(PLAIN, tuple(path.split(".")), value)) is False


def test_a_mapping_that_is_not_a_dict_goes_to_the_models():
    from types import MappingProxyType

    assert _plainly_valid_patient_view(MappingProxyType(PLAIN)) is False
    assert request_problems(MappingProxyType(PLAIN), "patient-view", "s") == []  # a mapping is an object
    assert feedback_problems(MappingProxyType({"feedback": [ITEM]})) == []



@pytest.mark.parametrize("body, path, message", [
    (with_value(VIEW, ("prefetch",), {1: None}), "prefetch", "prefetch has a key 1 that is not text"),
    (with_value(VIEW, ("context",), {"patientId": "p", 3: 4}), "context", "context has a key 3 that is not text"),
    ({**VIEW, 5: 1}, "", "the request body has a key 5 that is not text"),
    ({"feedback": [{**ITEM, "overrideReason": {(1, 2): "x"}}]}, "feedback[0].overrideReason",
     "feedback[0].overrideReason has a key (1, 2) that is not text"),
    ({"feedback": [{**ITEM, 7: 1}]}, "feedback[0]", "feedback[0] has a key 7 that is not text"),
])
def test_a_key_that_is_not_text_is_said_alone(body, path, message):
    # Only a Python caller's dict can hold one; pydantic's own words for it read "prefetch[1].[key] must be
    # something else" or "feedback[0][7] must be an object".
    problems = request_problems(body, "patient-view", "s") if "hook" in body else feedback_problems(body)
    assert problems == [{"path": path, "message": message + " (JSON keys are text)"}]


def test_keys_are_looked_at_only_in_a_body_the_models_refuse():
    # A prefetched resource is the FHIR reader's to judge, whatever its keys; and every key is listed, in path order.
    body = with_value({**VIEW, "hookInstance": "h\u00e9"}, ("prefetch",), {"patient": {1: None}})
    assert not _plainly_valid_patient_view(body) and request_problems(body, "patient-view", "s") == []
    body = {"feedback": [{**ITEM, 2: 1}, {**ITEM, "overrideReason": {3: 1}}], 1: 0}
    assert [p["path"] for p in feedback_problems(body)] == ["", "feedback[0]", "feedback[1].overrideReason"]


def test_feedback_is_stored_as_sent_so_a_key_that_is_not_text_is_refused_even_in_a_clients_own_field():
    assert feedback_problems({"feedback": [{**ITEM, "note": {"kept": [{"as": "sent"}]}}]}) == []
    problems = feedback_problems({"feedback": [{**ITEM, "note": {"kept": [{4: "sent"}]}}]})
    assert problems == [{"path": "feedback[0].note.kept[0]",
                         "message": "feedback[0].note.kept[0] has a key 4 that is not text (JSON keys are text)"}]


def test_data_that_holds_itself_is_refused_not_walked_forever():
    # Only a Python caller's data can (JSON cannot); a walk of its keys or its texts must end.
    context = {"patientId": "p", 3: 4}
    context["self"] = context
    problems = ended_within(20, request_problems, {**VIEW, "context": context}, "patient-view", "s")
    assert problems == [{"path": "context", "message": "context has a key 3 that is not text (JSON keys are text)"}]
    item = {**ITEM, "note": ["\ud800"]}
    item["again"] = item
    item["note"].append(item["note"])
    problems = ended_within(20, feedback_problems, {"feedback": [item]})
    assert [p["path"] for p in problems] == ["feedback[0].note[0]"]
