"""What a hostile client can make ``imt-cds serve`` do with one call, or with many: real servers on loopback.

- Feedback: a call holds at most 500 items (refused, before any item is checked, with the limit), and every 400
  lists at most 20 problems, then how many more: a 0.9 MB body can no longer make a 171 MB answer.
- A client that goes away, or stalls, in the middle of a body sent to a FastAPI route is the client's fault: no
  "internal error", no traceback in the log.
- ``fhirServer`` is bounded when the request is checked (400 naming the field and the limit); a next link too long
  to request is a 412 like any other unusable one, never a 500.
- Log lines show at most a few hundred characters of what a client sent, and the repeated-log filter counts by
  message template, so a flood of refusals varying their text is still cut to a few lines.
- A JWK Set fetch that failed is remembered for a while: calls waiting behind it, and later ones, are refused at once.
- A connection answered before its body had arrived (404, 401, streamed 413) is closed once idle, with both parsers.
- An order-sign call holds at most 200 draft orders.
- Protocol-level answers are JSON; a 405 says what is allowed; a trailing slash is a 404, not a redirect.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import httpx
import pytest
from service_support import (FhirServer, Signer, bearer, example_resources, hook_request, prefetch_for,
                             responses_in, running_service)

from imt_cds.service.auth import AuthSettings, Authenticator, TrustedIssuer
from imt_cds.service.connections import RepeatedLogFilter
from imt_cds.service.errors import UnauthorizedError

VIEW = "/cds-services/imt-patient-view"
ORDER_SIGN = "/cds-services/imt-order-sign"
FEEDBACK = VIEW + "/feedback"
ORIGIN = "https://ehr.example.org"


def item(number: int = 0) -> dict:
    return {"card": f"a0b1c2d3-0000-4000-8000-{number:012d}", "outcome": "accepted",
            "outcomeTimestamp": "2026-01-02T03:04:05Z"}


def open_socket(url: str) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=10)


def read_response(connection: socket.socket) -> bytes:
    """One response (headers and a Content-Length body) from ``connection``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        assert chunk, f"closed before a response: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(
        b"content-length")))
    while len(body) < length:
        body += connection.recv(65536)
    return head + b"\r\n\r\n" + body


def closed_within(connection: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``connection`` within ``seconds`` (anything it sends meanwhile is skipped)."""
    connection.settimeout(seconds)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            if not connection.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return False


def wait_for_log(service, text: str, seconds: float = 10.0) -> str:
    deadline = time.monotonic() + seconds
    while text not in service.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    return service.log_text()


@pytest.fixture(scope="module")
def fhir():
    with FhirServer(example_resources(), page_size=100) as server:
        yield server


@pytest.fixture(scope="module")
def service(fhir, tmp_path_factory):
    feedback = tmp_path_factory.mktemp("feedback") / "feedback.ndjson"
    with running_service("--allow-unauthenticated", "--workers", "1", "--feedback-log", str(feedback),
                         "--fhir-server", fhir.base, "--cors-origin", ORIGIN, "--body-timeout", "2") as running:
        running.feedback = feedback  # type: ignore[attr-defined]
        yield running


@pytest.fixture(scope="module")
def client(service):
    with httpx.Client(base_url=service.url, timeout=60) as http:
        yield http


# --- feedback: bounded work, bounded answers ------------------------------------------------------------------------


def test_a_feedback_call_over_the_item_limit_is_refused_with_the_limit_and_nothing_is_stored(client, service):
    stored_before = service.feedback.read_text().count("\n")
    response = client.post(FEEDBACK, json={"feedback": [item(n) for n in range(501)]})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == ("feedback holds 501 items; at most 500 are accepted in one call "
                                                   "(send the rest in further calls)")
    assert service.feedback.read_text().count("\n") == stored_before
    assert client.post(FEEDBACK, json={"feedback": [item(n) for n in range(500)]}).json() == {"stored": 500}


def test_a_huge_feedback_list_gets_a_small_400_at_once_and_health_keeps_answering(client):
    body = json.dumps({"feedback": [{}] * 300_000}).encode()  # 0.9 MB: once a 171 MB answer
    started = time.monotonic()
    response = client.post(FEEDBACK, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and len(response.content) < 1000, len(response.content)
    assert "feedback holds 300000 items; at most 500" in response.json()["error"]["message"]
    assert time.monotonic() - started < 5
    assert client.get("/healthz").status_code == 200


def test_a_400_lists_the_first_20_problems_then_says_how_many_more(client):
    response = client.post(FEEDBACK, json={"feedback": [{}] * 100})  # 3 problems each
    error = response.json()["error"]
    problems = error["details"]["problems"]
    assert response.status_code == 400 and len(problems) == 21
    assert problems[0]["path"] == "feedback[0].card"
    assert problems[-1]["message"] == "... and 280 more problems (only the first 20 are listed)"
    assert error["message"] == "; ".join(p["message"] for p in problems)


def test_accepted_suggestions_are_bounded_too(client):
    response = client.post(FEEDBACK, json={"feedback": [{**item(), "acceptedSuggestions": [{"id": "a"}] * 101}]})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == ('feedback[0].acceptedSuggestions must be a list of at most 100 '
                                                   '{"id": ...}, not a list of 101 items')


# --- a client that goes away mid-body on a FastAPI route ------------------------------------------------------------


@pytest.mark.parametrize("route", ["feedback", "hook with an Origin"])
def test_a_client_that_leaves_or_stalls_mid_body_is_no_internal_error(service, route):
    path, origin = (FEEDBACK, "") if route == "feedback" else (ORDER_SIGN, f"Origin: {ORIGIN}\r\n")
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{origin}"
            "Content-Length: 1000\r\n\r\n").encode()
    with open_socket(service.url) as leaving:
        leaving.sendall(head + b'{"feedback": [')
        time.sleep(0.3)  # the route is reading the body now
    with open_socket(service.url) as stalling:
        stalling.sendall(head + b'{"feedback": [')
        assert closed_within(stalling, 15)  # the 2 s body deadline
    log = wait_for_log(service, "did not arrive")
    assert "did not arrive within 2 s" in log
    for sign in ("internal error", "Traceback", "ClientDisconnect", "Exception in ASGI application"):
        assert sign not in log, log[-3000:]


# --- pipelining ---------------------------------------------------------------------------------------------------


def test_requests_pipelined_before_a_malformed_one_are_answered_in_order_then_the_400(service):
    # Two hook calls and a malformed request sent at once on one connection: uvicorn wrote its 400 at once and
    # closed, so the two answers (evaluated and recorded all the same) were lost, each with a traceback.
    body = json.dumps(hook_request("patient-view", prefetch=prefetch_for(example_resources()))).encode()
    call = (b"POST " + VIEW.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body
    before = service.log_text()
    with open_socket(service.url) as connection:
        connection.sendall(call + call + b"GARBAGE\r\n\r\n")
        stream = b""  # everything the server sends until it closes (answers may come in one read or several)
        while chunk := connection.recv(65536):
            stream += chunk
    answers = responses_in(stream)
    assert len(answers) == 3, answers
    statuses = [answer.split(b"\r\n", 1)[0] for answer in answers]
    assert statuses == [b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK", b"HTTP/1.1 400 Bad Request"]
    assert json.loads(answers[0].split(b"\r\n\r\n", 1)[1])["cards"]
    assert json.loads(answers[2].split(b"\r\n\r\n", 1)[1])["error"]["code"] == "cds_bad_request"
    time.sleep(0.5)
    new = service.log_text()[len(before):]
    assert "Traceback" not in new and "Exception in ASGI application" not in new, new


# --- fhirServer ---------------------------------------------------------------------------------------------------


def missing_patient_call(fhir_server: str) -> dict:
    prefetch = prefetch_for(example_resources())
    del prefetch["patient"]
    return hook_request("patient-view", prefetch=prefetch, fhirServer=fhir_server)


def test_a_fhir_server_url_over_4096_characters_is_refused_naming_the_field_and_the_limit(client, fhir):
    response = client.post(VIEW, json=missing_patient_call(fhir.base + "/" + "x" * 70_000))
    assert response.status_code == 400
    assert response.json()["error"]["message"] == ("fhirServer must be a URL of at most 4096 characters (the base "
                                                   "URL of the client's FHIR server), not 70035 characters long"
                                                   .replace("70035", str(len(fhir.base) + 70_001)))


def test_an_integer_past_64_bits_in_a_chart_the_server_hands_to_a_worker_is_no_500(client, fhir, service):
    # A FHIR decimal may be any number. The server reads an order-sign call, and a patient-view call with keys left
    # to fetch, itself and hands the chart to a worker as JSON; orjson writes no integer past 64 bits (was a 500).
    resources = example_resources()
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    patient["x-big"] = 10**20
    draft = {"resourceType": "Bundle", "entry": [{"resource": {
        "resourceType": "MedicationRequest", "id": "o1", "status": "draft", "intent": "order",
        "medicationCodeableConcept": {"text": "larotrectinib"}}}]}
    order_sign = client.post("/cds-services/imt-order-sign", json=hook_request(
        "order-sign", prefetch=prefetch_for(resources), context={"patientId": "imt-example-1", "draftOrders": draft}))
    assert order_sign.status_code == 200, order_sign.text
    assert [c["summary"].split(",")[0] for c in order_sign.json()["cards"]] == ["Larotrectinib ordered"]
    fetched = client.post(VIEW, json=hook_request("patient-view", prefetch={"patient": patient}, fhirServer=fhir.base))
    assert fetched.status_code == 200, fetched.text
    prefetched = client.post(VIEW, json=hook_request("patient-view", prefetch=prefetch_for(example_resources())))
    assert [(c["summary"], c["indicator"]) for c in fetched.json()["cards"]] == [
        (c["summary"], c["indicator"]) for c in prefetched.json()["cards"]]
    assert "Traceback" not in service.log_text()


def test_a_next_link_too_long_to_request_is_a_412_not_a_500(service, fhir):
    resources = example_resources()
    with FhirServer(resources, page_size=1, next_link_base=None) as long_links:
        long_links.next_link_base = long_links.base + "/" + "x" * 70_000  # under fhirServer, too long for any URL
        with running_service("--allow-unauthenticated", "--workers", "1", "--fhir-server", long_links.base) as other, \
                httpx.Client(base_url=other.url, timeout=60) as http:
            prefetch = prefetch_for(resources)
            del prefetch["conditions"]
            response = http.post(VIEW, json=hook_request("patient-view", prefetch=prefetch,
                                                          fhirServer=long_links.base))
            assert response.status_code == 412, response.text
            log = other.log_text()
    assert "over the 8192 this service requests" in log
    assert "internal error" not in log
    assert max(len(line) for line in log.splitlines()) < 2000


# --- what a log line shows of a client's text, and the rate filter ---------------------------------------------------


def test_log_lines_show_a_shortened_fhir_server_and_path(client, service, fhir):
    outside = "https://outside.example.org/" + "y" * 3000
    assert client.post(VIEW, json=missing_patient_call(outside)).status_code == 412
    assert client.post("/cds-services/" + "z" * 5000 + "/feedback", json={"feedback": [item()]}).status_code == 404
    line = next(line for line in wait_for_log(service, "not under an allowed").splitlines()
                if "not under an allowed" in line)
    assert "...[3028 characters]" in line and len(line) < 500


def test_varying_client_text_does_not_get_a_flood_of_refusals_through_the_log(tmp_path):
    signer = Signer("https://ehr.example.org/")
    jwks = signer.write_jwks(tmp_path)
    with running_service("--trust", signer.iss, str(jwks), "--workers", "1") as service, \
            httpx.Client(base_url=service.url, timeout=30) as http:
        for number in range(30):
            stranger = Signer(f"https://stranger-{number}.example.net/" + "s" * 4000)
            token = stranger.token(service.url + "/cds-services")
            assert http.get("/cds-services", headers=bearer(token)).status_code == 401
        log = service.log_text()
    refusals = [line for line in log.splitlines() if "refused (401)" in line]
    assert 1 <= len(refusals) <= 5, len(refusals)
    assert all(len(line) < 700 for line in refusals), max(map(len, refusals))


def test_the_filter_keys_on_the_template_not_on_the_arguments_a_client_chose():
    log_filter = RepeatedLogFilter(burst=3, window=60, clock=lambda: 0.0)
    passed = []
    for number in range(50):
        record = logging.LogRecord("imt_cds.service", logging.WARNING, __file__, 1, "imt-cds: %s %s refused (401): %s",
                                   ("GET", f"/path-{number}", f"JWT issuer 'https://{number}' is not trusted"), None)
        record.log_key = "JWT issuer "
        passed.append(log_filter.filter(record))
    assert sum(passed) == 3
    other = logging.LogRecord("imt_cds.service", logging.WARNING, __file__, 1, "imt-cds: %s %s refused (401): %s",
                              ("GET", "/", "the JWT has expired"), None)
    other.log_key = "the JWT has expired "
    assert log_filter.filter(other)  # another reason is counted apart


# --- a JWK Set that hangs -------------------------------------------------------------------------------------------


class HangingJwks:
    """A loopback JWK Set URL that answers nothing for ``seconds``; counts the requests."""

    def __init__(self, seconds: float):
        outer = self
        self.requests = 0

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.requests += 1
                time.sleep(seconds)

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}/jwks.json"
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._http.shutdown()
        self._http.server_close()


def test_a_failed_jwk_set_fetch_is_remembered_so_waiting_and_later_calls_are_refused_at_once(caplog):
    issuer = "https://ehr.hanging.test/"
    signer = Signer(issuer)
    audience = "https://cds.example.org/cds-services"
    with HangingJwks(seconds=4) as hanging:
        auth = Authenticator(AuthSettings(issuers=(TrustedIssuer(issuer, hanging.url),), jwks_timeout_seconds=1))

        async def call() -> tuple[float, str]:
            started = time.monotonic()
            try:
                await auth.authenticate(f"Bearer {signer.token(audience)}", [audience])
            except UnauthorizedError as exc:
                return time.monotonic() - started, exc.message
            raise AssertionError("accepted")

        async def calls() -> list[tuple[float, str]]:
            return list(await asyncio.gather(*(call() for _ in range(4))))

        with caplog.at_level(logging.WARNING, logger="imt_cds.service.auth"):
            first = asyncio.run(calls())
            later = asyncio.run(call())
        assert max(seconds for seconds, _ in first) < 2.5, first  # not 1 s, 2 s, 3 s, 4 s one after another
        assert later[0] < 0.5 and "not fetched again for 30 s" in later[1], later
        assert hanging.requests == 1
    assert all(f"cannot get the JWK Set of {issuer} from {hanging.url}" in message for _, message in first)
    warnings = [r.getMessage() for r in caplog.records if "cannot get the JWK Set" in r.getMessage()]
    assert len(warnings) == 1 and "without fetching it again for 30 s" in warnings[0]


# --- a connection answered before its body arrived ------------------------------------------------------------------


@pytest.fixture(scope="module", params=["httptools", "h11"])
def keep_alive_service(request):
    # A long body deadline: only the keep-alive timeout may close the connections of this test.
    with running_service("--allow-unauthenticated", "--workers", "1", "--keep-alive-timeout", "1",
                         "--body-timeout", "120", "--max-body", "4096", "--http-parser", request.param) as service:
        yield service


@pytest.mark.parametrize("case", ["404 unknown service", "413 while streaming", "415 text/plain"])
def test_a_connection_answered_before_its_body_arrived_is_closed_once_idle(keep_alive_service, case):
    if case == "404 unknown service":
        head = b"POST /cds-services/no-such-service HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n"
        first, rest = head + b"x" * 10, b"x" * 90
    elif case == "415 text/plain":
        head = (b"POST " + VIEW.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
                b"Content-Length: 100\r\n\r\n")
        first, rest = head + b"x" * 10, b"x" * 90
    else:
        head = (b"POST " + VIEW.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                b"Content-Type: application/json\r\n\r\n")
        first, rest = head + b"1400\r\n" + b"y" * 5120 + b"\r\n", b"10\r\n" + b"y" * 16 + b"\r\n0\r\n\r\n"
    with open_socket(keep_alive_service.url) as connection:
        connection.sendall(first)
        answer = read_response(connection)
        assert answer.startswith(f"HTTP/1.1 {case[:3]} ".encode()), answer[:200]
        connection.sendall(rest)  # the rest of the body, after the answer: then nothing more
        assert closed_within(connection, 8), "the connection stayed open after its keep-alive timeout"
    assert "did not arrive" not in keep_alive_service.log_text()


# --- order-sign -----------------------------------------------------------------------------------------------------


def test_an_order_sign_call_with_more_than_200_draft_orders_is_refused_naming_the_limit(client):
    order = {"resource": {"resourceType": "MedicationRequest", "status": "draft", "intent": "order",
                          "medicationCodeableConcept": {"text": "paracetamol 500 mg"}}}
    request = hook_request("order-sign")
    request["context"]["draftOrders"] = {"resourceType": "Bundle", "type": "collection", "entry": [order] * 201}
    response = client.post(ORDER_SIGN, json=request)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == ("context.draftOrders.entry must be a list of at most 200 entries "
                                                   "(the draft orders of one call), not a list of 201 items")
    request["context"]["draftOrders"]["entry"] = [order] * 200
    assert client.post(ORDER_SIGN, json=request).json() == {"cards": []}


# --- protocol-level answers ---------------------------------------------------------------------------------------


def test_protocol_answers_are_json_and_a_405_says_what_is_allowed(client, service):
    wrong_method = client.get(VIEW)
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    slash = client.post(VIEW + "/", json=hook_request("patient-view"), headers={"Host": "evil.example.net"})
    assert slash.status_code == 404 and slash.json()["error"]["code"] == "cds_not_found"
    assert "location" not in slash.headers
    huge = client.post(VIEW, content=b'{"hook": ' + b"1" * 5000 + b"}", headers={"Content-Type": "application/json"})
    assert huge.json()["error"]["message"] == "the request body is not valid JSON (a number has more than 4300 digits)"
    with open_socket(service.url) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n")
        invalid = read_response(connection)
    assert invalid.startswith(b"HTTP/1.1 400 ") and b"content-type: application/json" in invalid
    assert json.loads(invalid.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "cds_bad_request"
    with open_socket(service.url) as connection:
        connection.sendall(b"POST " + ORDER_SIGN.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 50\r\n"
                           b"Content-Type: application/json\r\n\r\n{")
        timed_out = read_response(connection)
    assert timed_out.startswith(b"HTTP/1.1 408 ") and b"content-type: application/json" in timed_out
    assert json.loads(timed_out.split(b"\r\n\r\n", 1)[1])["error"]["status"] == 408
