"""JSON text that is not Unicode: refused by path, never an internal error, never a worker's death.

JSON's ``\\ud800`` escape can give text holding a lone surrogate (half of a UTF-16 pair), which is not Unicode text:
no UTF-8 writer, FHIR reader or store can take it. Before it was refused, one in a resource's id went through the FHIR
reading into the output, which could not be written: in the service a 500 "evaluation failed" (for the Patient's id
the worker process died and was replaced), from ``imt-cds evaluate --fhir`` an internal error (exit 1). Now any such
text in a request body or an input file is refused (400, exit 2; each by its path) before anything reads it; a valid
pair (an emoji) is text like any other.
"""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_support import example_resources, hook_request, prefetch_for, running_service, worker_pids

from imt_cds.core.errors import InvalidInputError
from imt_cds.core.validation import load_json_object, parse_facts_json
from imt_cds.service import workers
from imt_cds.service.errors import BadRequestError
from imt_cds.service.request_json import parse_request_json

SURROGATE = "not valid Unicode text: it holds a lone surrogate (\\ud800-\\udfff)"
VIEW = "/cds-services/imt-patient-view"


def refusal(body: bytes) -> tuple[str, Any]:
    with pytest.raises(BadRequestError) as caught:
        parse_request_json(body)
    return caught.value.message, caught.value.details


@pytest.mark.parametrize("text, path, shown", [
    (b'"\\ud800"', "", "the request body '\\ud800'"),
    (b'["ok", "x\\uDC00y"]', "[1]", "[1] 'x\\udc00y'"),  # upper-case hex, a low surrogate alone
    (b'{"a": {"b": [1, {"c": "\\udfff"}]}}', "a.b[1].c", "a.b[1].c '\\udfff'"),
    (b'{"a": "\\ude00\\ud83d"}', "a", "a '\\ude00\\ud83d'"),  # a pair in the wrong order is two lone halves
])
def test_text_with_a_lone_surrogate_is_refused_by_its_path(text, path, shown):
    message = f"{shown} is {SURROGATE}"
    assert refusal(text) == (message, {"problems": [{"path": path, "message": message}]})


def test_every_one_is_listed_and_a_key_is_named_at_its_object():
    body = b'{"\\ud800k": {"inner": "\\ud800"}, "ok": ["\\udc00", "\\udc01"], "fine": "a"}'
    message, details = refusal(body)
    assert details == {"problems": [
        {"path": "", "message": f"the request body has a key '\\ud800k' that is {SURROGATE}"},
        {"path": "ok[0]", "message": f"ok[0] '\\udc00' is {SURROGATE}"},
        {"path": "ok[1]", "message": f"ok[1] '\\udc01' is {SURROGATE}"},
    ]}
    assert message == "; ".join(problem["message"] for problem in details["problems"])


def test_they_are_listed_in_the_order_the_body_has_them():
    body = b'{"b": "\\ud800", "a": {"z": "\\udc00", "y": 1}, "c": ["\\udc01"]}'
    _, details = refusal(body)
    assert [problem["path"] for problem in details["problems"]] == ["b", "a.z", "c[0]"]


@pytest.mark.parametrize("text, value", [
    (b'{"a": "\\ud83d\\ude00"}', {"a": "\U0001F600"}),  # a valid pair: an emoji
    (b'{"a": "\\\\ud800"}', {"a": "\\ud800"}),  # an escaped backslash, then the letters: text, not an escape
    (b'{"\\u00e9": "\\u65e5"}', {"é": "日"}),  # other escapes
])
def test_valid_text_written_with_escapes_is_read_as_it_is(text, value):
    assert parse_request_json(text) == value


# --- through the service --------------------------------------------------------------------------------------------


def chart_request(surrogate_in: str | None = None) -> dict[str, Any]:
    """A patient-view call on the example chart, with a lone surrogate in one place of it when asked."""
    resources = example_resources()
    for resource in resources:
        if surrogate_in == "Patient.id" and resource["resourceType"] == "Patient":
            resource["id"] += "\ud800"
        if surrogate_in == "Condition.note" and resource["resourceType"] == "Condition":
            resource["note"] = [{"text": "seen \udc00"}]
            break
    return hook_request("patient-view", prefetch=prefetch_for(resources))


@pytest.fixture(scope="module")
def service():
    with running_service("--allow-unauthenticated", "--workers", "1") as running:
        yield running


def post(service, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(service.url + path, content=json.dumps(body).encode(),
                      headers={"content-type": "application/json"}, timeout=60)


@pytest.mark.parametrize("where, path, shown", [
    ("Patient.id", "prefetch.patient.id", "'imt-example-1\\ud800'"),
    ("Condition.note", "prefetch.conditions.entry[0].resource.note[0].text", "'seen \\udc00'"),
])
def test_a_chart_with_a_lone_surrogate_is_a_400_by_path_and_the_worker_lives_on(service, where, path, shown):
    before = worker_pids(service)
    response = post(service, VIEW, chart_request(surrogate_in=where))
    message = f"{path} {shown} is {SURROGATE}"
    assert response.status_code == 400
    assert response.json()["error"] == {"code": "cds_bad_request", "status": 400, "message": message,
                                        "details": {"problems": [{"path": path, "message": message}]}}
    assert worker_pids(service) == before
    log = service.log_text()
    assert "Traceback" not in log and "died" not in log and "evaluation failed" not in log


def test_order_sign_and_feedback_bodies_are_refused_the_same_way(service):
    draft = {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "MedicationRequest",
                                                               "status": "draft", "intent": "order",
                                                               "note": [{"text": "\ud800"}]}}]}
    request = hook_request("order-sign", context={"patientId": "imt-example-1", "draftOrders": draft})
    response = post(service, "/cds-services/imt-order-sign", request)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        f"context.draftOrders.entry[0].resource.note[0].text '\\ud800' is {SURROGATE}")
    feedback = {"feedback": [{"card": "c", "outcome": "accepted", "outcomeTimestamp": "2026-01-02T03:04:05Z",
                              "\udfff": 1}]}
    response = post(service, VIEW + "/feedback", feedback)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == f"feedback[0] has a key '\\udfff' that is {SURROGATE}"


@pytest.mark.parametrize("encoding, named", [
    ("utf-16", "UTF-16"), ("utf-16-le", "UTF-16-LE"), ("utf-16-be", "UTF-16-BE"), ("utf-32", "UTF-32"),
    ("utf-32-le", "UTF-32-LE"), ("utf-32-be", "UTF-32-BE"),
])
def test_a_body_in_another_unicode_encoding_is_refused_as_not_utf8(service, encoding, named):
    # The stdlib parser reads UTF-16 and UTF-32 as well; a lone surrogate's escape in them is not the bytes the
    # check looks for, and one in a Patient.id made the worker's answer unwritable (a 500). JSON is UTF-8.
    message = (f"the request body is not UTF-8 (it reads as {named}); a CDS Hooks body is JSON, and JSON between "
               "systems is UTF-8 (RFC 8259)")
    assert refusal(json.dumps({"a": 1}).encode(encoding)) == (message, None)
    for body in (chart_request(surrogate_in="Patient.id"), chart_request()):
        response = httpx.post(service.url + VIEW, content=json.dumps(body).encode(encoding),
                              headers={"content-type": "application/json"}, timeout=60)
        assert (response.status_code, response.json()["error"]["message"]) == (400, message)
    assert "Traceback" not in service.log_text()


def test_a_utf8_body_with_a_byte_order_mark_is_read():
    assert parse_request_json(b"\xef\xbb\xbf" + b'{"a": "\xc3\xa9"}') == {"a": "\u00e9"}


def test_a_chart_with_an_emoji_is_answered(service):
    request = chart_request()
    request["prefetch"]["conditions"]["entry"][0]["resource"]["note"] = [{"text": "seen \U0001F600"}]
    response = post(service, VIEW, request)  # json.dumps writes the emoji as its escaped pair
    assert response.status_code == 200
    assert response.json()["cards"]


# --- the worker: an answer it cannot write is that job's error, not the worker's end --------------------------------


def _worker(server_end: Any, worker_end: Any, settings: workers.WorkerSettings) -> None:
    server_end.close()
    workers._worker_main(worker_end, settings)


def _unwritable_failure(body: bytes) -> Any:
    raise ValueError("cannot read \ud800")


@pytest.mark.parametrize("parser, error", [
    (json.loads, {"code": "TypeError", "message": "TypeError: str is not valid UTF-8: surrogates not allowed"}),
    (_unwritable_failure, {"code": "ValueError", "message": "ValueError: cannot read \\ud800"}),
], ids=["answer", "error"])
def test_a_worker_whose_answer_cannot_be_written_answers_an_error_and_serves_the_next_job(monkeypatch, parser,
                                                                                          error):
    """The refusal above keeps lone surrogates out; this is the worker's own containment behind it, checked by
    letting one through: the stdlib's parser in place of the service's (as the service read bodies before), or a
    failure whose own message holds one (the error answer must be writable too)."""
    monkeypatch.setattr(workers, "parse_request_json", parser)  # before the fork: the worker runs with it
    server_end, worker_end = multiprocessing.get_context("fork").Pipe()
    process = multiprocessing.get_context("fork").Process(
        target=_worker, args=(server_end, worker_end, workers.WorkerSettings(cache_size=0)))
    process.start()
    worker_end.close()  # the worker's only: closing ours (and it ours) lets it see the end of the pipe
    try:
        assert server_end.poll(120), "the worker did not start"
        assert "ready" in json.loads(server_end.recv_bytes())
        job = {"op": "hook", "service": "imt-patient-view", "on": "2026-12-05", "guidance_endpoint": None}

        def answer(request: dict[str, Any]) -> dict[str, Any]:
            server_end.send_bytes(workers.encode_job(job, json.dumps(request).encode()))
            assert server_end.poll(60), "no answer: the worker died"
            return workers.decode_answer(server_end.recv_bytes())

        assert answer(chart_request(surrogate_in="Patient.id")) == {"ok": False, "error": error}
        following = answer(chart_request())  # the same worker takes the next job
        if parser is json.loads:
            assert following["ok"] is True and json.loads(following["raw"])["cards"]
        else:
            assert following == {"ok": False, "error": error}
        assert process.is_alive()
    finally:
        server_end.close()
        process.join(30)
    assert process.exitcode == 0


# --- files: imt-cds evaluate, with --fhir and without ----------------------------------------------------------------

SCRIPT = Path(sys.executable).with_name("imt-cds")
BUNDLE = Path(__file__).resolve().parents[1] / "examples" / "fhir" / "alk-lung-distant-bundle.json"


def test_a_fhir_chart_with_lone_surrogates_is_invalid_input_naming_each_not_an_internal_error(tmp_path):
    chart = json.loads(BUNDLE.read_text())
    chart["entry"][0]["resource"]["\udc00"] = 1
    chart["entry"][1]["resource"]["id"] += "\ud800"
    path = tmp_path / "chart.json"
    path.write_text(json.dumps(chart))  # as \udc00 and \ud800 escapes
    for output in ("text", "json"):
        done = subprocess.run([str(SCRIPT), "evaluate", "--fhir", str(path), "--format", output],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2
        assert done.stderr.splitlines() == [
            f"imt-cds: invalid FHIR chart in {path} (2 problems); nothing was evaluated:",
            f"  - entry[0].resource: a key ('\\udc00') is {SURROGATE}",
            f"  - entry[1].resource.id: 'imt-primary\\ud800' is {SURROGATE}",
        ]
        if output == "json":  # the same, as a document; each value as its escape (a writable text)
            assert json.loads(done.stdout) == {"errors": [
                {"path": "entry[0].resource", "message": f"a key ('\\udc00') is {SURROGATE}", "value": "\\udc00"},
                {"path": "entry[1].resource.id", "message": f"'imt-primary\\ud800' is {SURROGATE}",
                 "value": "imt-primary\\ud800"}]}


def test_patient_facts_with_lone_surrogates_are_refused_when_read_in_the_same_words_as_their_validation():
    text = '{"age_years": 5, "tumor": {"site": "lung\\ud800", "\\udc00": 1}}'
    with pytest.raises(InvalidInputError) as caught:
        parse_facts_json(text)
    assert [(p.path, p.message) for p in caught.value.problems] == [
        ("tumor", f"a key ('\\udc00') is {SURROGATE}"), ("tumor.site", f"'lung\\ud800' is {SURROGATE}")]
    with pytest.raises(InvalidInputError) as validated:  # the same text, given as an object (no JSON read)
        from imt_cds.core.validation import parse_facts
        parse_facts({"age_years": 5, "tumor": {"site": "lung\ud800"}})
    assert [(p.path, p.message) for p in validated.value.problems] == [("tumor.site", f"'lung\\ud800' is {SURROGATE}")]


@pytest.mark.parametrize("text", ['{"a": "\\ud83d\\ude00"}', '{"a": "\\\\ud800"}', '"\\u00e9"'])
def test_files_with_valid_escapes_are_read(text):
    assert load_json_object(text) == json.loads(text)
    assert load_json_object(text.encode()) == json.loads(text)
