"""Attacks through what the service writes back, each a test: Markdown and HTML smuggled into cards through request
data, error bodies that leak paths or exception text, JSON with duplicate keys, and bodies a web page on another
site can make a browser send.

The service is real (``imt-cds serve`` through its console script, with an audit store).
"""

from __future__ import annotations

import contextlib
import json
import re

import httpx
import pytest
from audit_support import raw_sql
from service_support import example_resources, hook_request, prefetch_for, running_service

from imt_cds.render.cards import escape_markdown, problems_card

PATIENT_VIEW = "/cds-services/imt-patient-view"
ORDER_SIGN = "/cds-services/imt-order-sign"
PAYLOAD = "x)[click me](https://evil.example/steal) <img src=x onerror=alert(1)> www.evil.example\n# Heading"


@contextlib.contextmanager
def audited(tmp_path_factory, folder: str):
    """A real server with a SQLite audit store of its own (``.audit`` is its path)."""
    audit = tmp_path_factory.mktemp(folder) / "audit.db"
    with running_service("--allow-unauthenticated", "--workers", "1", "--audit", str(audit)) as running:
        running.audit = audit  # type: ignore[attr-defined]
        yield running


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    with audited(tmp_path_factory, "audit") as running:
        yield running


def post(service, path, body):
    return httpx.post(service.url + path, json=body, timeout=60)


def assert_inert(markdown: str) -> None:
    """Nothing in the text can render as a link, an image, HTML or a new block."""
    assert not re.search(r"(?<!\\)\]\(|(?<!\\)<img|(?<!\\)\[click", markdown), markdown
    assert "https://evil" not in markdown
    assert "www.evil" not in markdown and "\n# Heading" not in markdown


def order_sign_request(order_id: str, text: str) -> dict:
    prefetch = prefetch_for(example_resources())
    request = hook_request("order-sign", prefetch={"patient": prefetch["patient"],
                                                   "conditions": prefetch["conditions"],
                                                   "observations": prefetch["observations"]})
    request["context"]["draftOrders"] = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {
        "resourceType": "MedicationRequest", "id": order_id, "status": "draft", "intent": "order",
        "medicationCodeableConcept": {"text": text}}}]}
    return request


# --- cards ---------------------------------------------------------------------------------------------------------


def test_a_draft_order_id_and_text_cannot_inject_markdown_or_html_into_a_card(service):
    # ALK is positive in the example; selpercatinib targets RET, which is not: the order gets a card.
    response = post(service, ORDER_SIGN, order_sign_request(PAYLOAD, f"selpercatinib {PAYLOAD}"))
    assert response.status_code == 200, response.text
    (card,) = response.json()["cards"]
    assert_inert(card["detail"])
    assert escape_markdown(PAYLOAD) in card["detail"]  # shown, as written, not dropped
    assert "\\[click me\\]" in card["detail"] and "\\<img" in card["detail"]


def test_text_from_the_fhir_record_cannot_inject_markdown_or_html_into_a_card():
    card = problems_card([{"where": f"Observation/{PAYLOAD}", "message": PAYLOAD, "severity": "warning",
                           "path": None}], evaluation_id="e")
    assert card is not None
    assert_inert(card["detail"])


@pytest.mark.parametrize("text", ["a & b", "**bold**", "`code`", "<b>", "[x]", "![i](u)", "1) x", "~~s~~", "a\r\nb",
                                  "line\u2028break", "a|b"])
def test_escaped_text_reads_as_written(text):
    escaped = escape_markdown(text)
    assert "\n" not in escaped and "\r" not in escaped and "\u2028" not in escaped
    unescaped = re.sub(r"\\(.)", r"\1", escaped)
    assert unescaped == re.sub(r"[\r\n\u2028]+", " ", text)
    assert not re.search(r"(?<!\\)[\[\]<>*`&!~|()]", escaped)


# --- error bodies --------------------------------------------------------------------------------------------------


def test_an_evaluation_that_fails_does_not_leak_the_audit_path_or_the_exception(service):
    raw_sql(service.audit, "DROP TABLE audit_records")  # the audit store can no longer record
    response = post(service, PATIENT_VIEW, hook_request("patient-view", prefetch=prefetch_for(example_resources())))
    assert response.status_code == 503, response.text  # fail closed: no cards without a record
    assert response.json()["error"]["code"] == "cds_audit_unavailable"
    assert str(service.audit) not in response.text and "audit_records" not in response.text
    assert "audit_records" in service.log_text()  # the operator sees what happened


def test_a_malformed_body_is_refused_without_echoing_internals(service):
    response = httpx.post(service.url + PATIENT_VIEW, content=b"{\"hook\": ", timeout=60,
                          headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"code", "status", "message"}
    assert "Traceback" not in response.text and "orjson" not in response.text


def test_unknown_paths_and_methods_get_a_code_and_the_standard_reason_only(service):
    response = httpx.delete(service.url + PATIENT_VIEW, timeout=60)
    assert response.json() == {"error": {"code": "cds_method_not_allowed", "status": 405,
                                         "message": "Method Not Allowed"}}


# --- duplicate keys ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "key"), [
    (b'{"hook": "patient-view", "hook": "order-sign", "hookInstance": "1", "context": {"patientId": "p"}}', "hook"),
    (b'{"hook": "patient-view", "hookInstance": "1", "context": {"patientId": "a", "patientId": "b"}}', "patientId"),
    (b'{"hook": "patient-view", "hookInstance": "1", "fhirServer": "https://a", "fhirServer": "https://b", '
     b'"context": {"patientId": "p"}}', "fhirServer"),
])
def test_a_request_with_a_duplicate_key_is_refused_naming_the_key(service, body, key):
    response = httpx.post(service.url + PATIENT_VIEW, content=body, timeout=60,
                          headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert f"the key {key!r} twice" in response.json()["error"]["message"]


def test_feedback_with_a_duplicate_key_is_refused(service):
    body = (b'{"feedback": [{"card": "c", "outcome": "accepted", "outcome": "overridden", '
            b'"outcomeTimestamp": "2024-01-01T00:00:00Z"}]}')
    response = httpx.post(service.url + PATIENT_VIEW + "/feedback", content=body, timeout=60,
                          headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and "'outcome' twice" in response.json()["error"]["message"]


# --- bodies a browser sends cross-site without asking ----------------------------------------------------------------

# What a page on any site can make a visitor's browser POST to the service with no CORS preflight: a form
# (urlencoded or multipart), text/plain, or a body with no type at all (fetch with a Blob). None is JSON by its type.
CROSS_SITE_TYPES = ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
                    "multipart/form-data; boundary=x", None]


@pytest.fixture(scope="module")
def audited_service(tmp_path_factory):  # its own store: a test above drops the first one's records table
    with audited(tmp_path_factory, "cross-site") as running:
        yield running


def counts(audit) -> tuple[int, int]:
    records, feedback = raw_sql(audit, "SELECT count(*) FROM audit_records", "SELECT count(*) FROM cds_feedback")
    return records[0][0], feedback[0][0]


@pytest.mark.parametrize("content_type", CROSS_SITE_TYPES)
def test_a_body_a_browser_sends_cross_site_without_asking_starts_nothing_and_records_nothing(audited_service,
                                                                                            content_type):
    call = httpx.post(audited_service.url + PATIENT_VIEW, json=hook_request(
        "patient-view", prefetch=prefetch_for(example_resources())), timeout=60)
    assert call.status_code == 200 and call.json()["cards"], call.text
    card = call.json()["cards"][0]["uuid"]
    reason = {"system": "urn:imt-cds:override-reason", "code": "disagree"}
    feedback = {"feedback": [{"card": card, "outcome": "overridden", "outcomeTimestamp": "2024-01-01T00:00:00Z",
                              "overrideReason": {"reason": reason}}]}
    before = counts(audited_service.audit)
    headers = {} if content_type is None else {"Content-Type": content_type}
    for path, body in ((PATIENT_VIEW, hook_request("patient-view", prefetch=prefetch_for(example_resources()))),
                       (PATIENT_VIEW + "/feedback", feedback)):
        request = httpx.Request("POST", audited_service.url + path, content=json.dumps(body).encode(),
                                headers=headers)
        assert ("content-type" in request.headers) == (content_type is not None)  # none added by the client
        response = httpx.Client(timeout=60).send(request)
        assert response.status_code == 415, response.text
        assert response.json()["error"]["code"] == "cds_unsupported_media_type"
        assert response.headers["accept"] == "application/json"
    assert counts(audited_service.audit) == before  # no evaluation recorded, no feedback stored
    # The same feedback declared as JSON is taken: the refusal was for its type, nothing else.
    taken = httpx.post(audited_service.url + PATIENT_VIEW + "/feedback", json=feedback, timeout=60)
    assert taken.status_code == 200 and taken.json() == {"stored": 1}, taken.text
    assert counts(audited_service.audit) == (before[0], before[1] + 1)
