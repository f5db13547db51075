"""The hook call's own path (``POST /cds-services/{id}`` answered without FastAPI's layers, see ``app._HookCalls``):
real servers on loopback, raw HTTP/1.1 on sockets.

- Its answers are the FastAPI path's answers: with CORS configured, a request carrying an ``Origin`` header goes
  through FastAPI, the same request without one takes the hook path; status, body and headers (but the CORS ones)
  must be the same for every refusal (413 by Content-Length and while streaming, 400 for malformed JSON, a
  duplicate key, a call of the wrong hook; 404; 412) and for the cards themselves (but their evaluation's uuids).
- With authentication on, the 401 (with ``WWW-Authenticate``) comes before the 404 and the streamed 413, as before.
- Every other route and method is still FastAPI's: discovery, feedback, rule pages, health, the 405 of a GET on a
  hook's URL, a path under a service.
- Which requests take the hook path and which go on to FastAPI (in process: the answers being the same, only a
  stand-in for FastAPI can tell).
- Several requests on one kept-alive connection are answered in order, errors among them.
- A worker killed while serving a request fails that request only; the same connection goes on being served.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from service_support import Signer, example_resources, hook_request, prefetch_for, running_service, worker_pids

from imt_cds.service import AuthSettings, ServiceConfig, TrustedIssuer, create_app

VIEW = "/cds-services/imt-patient-view"
ORIGIN = "https://ehr.example.org"
LIMIT = 262_144
ISSUER = "https://ehr.hook-path.test"


class Connection:
    """One kept-alive HTTP/1.1 connection: ``request`` sends, ``response`` reads one (status, headers, body)."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        self.socket = socket.create_connection((parts.hostname, parts.port), timeout=30)
        self.buffer = b""

    def close(self) -> None:
        self.socket.close()

    def send(self, data: bytes) -> None:
        self.socket.sendall(data)

    def _fill(self) -> None:
        chunk = self.socket.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk

    def response(self) -> tuple[int, list[tuple[str, str]], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = [(k.strip().lower(), v.strip()) for k, v in (line.split(":", 1) for line in lines[1:])]
        length = int(dict(headers).get("content-length", "0"))
        while len(self.buffer) < length:
            self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    def exchange(self, data: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        self.send(data)
        return self.response()


def raw_request(method: str, path: str, body: bytes | None = b"", headers: tuple[tuple[str, str], ...] = (),
                content_length: bool = True, content_type: str | None = "application/json") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if content_type is not None and method == "POST":
        head += f"Content-Type: {content_type}\r\n"
    for name, value in headers:
        head += f"{name}: {value}\r\n"
    if content_length and body is not None:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + (body or b"")


def chunked(path: str, chunks: int, size: int, headers: tuple[tuple[str, str], ...] = (), last: int = 0) -> bytes:
    """A request whose body comes in ``chunks`` chunks of ``size`` bytes, and one of ``last`` bytes when not 0."""
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
    head += "Content-Type: application/json\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers)
    sizes = [size] * chunks + ([last] if last else [])
    return head.encode() + b"\r\n" + b"".join(b"%x\r\n%s\r\n" % (n, b"y" * n) for n in sizes) + b"0\r\n\r\n"


def good_call(hook_instance: str = "00000000-0000-4000-8000-000000000001") -> bytes:
    request = hook_request("patient-view", prefetch=prefetch_for(example_resources()))
    request["hookInstance"] = hook_instance
    return json.dumps(request).encode()


def call_with(**changes) -> bytes:
    """A patient-view call on the example chart with some of its members changed (a prefetch key set to
    ``None`` is left out)."""
    request = json.loads(good_call())
    prefetch = request["prefetch"]
    for key, value in changes.items():
        if key == "prefetch":
            request["prefetch"] = value
        elif value is None:
            del prefetch[key]
        else:
            prefetch[key] = value
    return json.dumps(request).encode()


def answer(url: str, data: bytes) -> tuple[int, dict[str, str], bytes]:
    connection = Connection(url)
    try:
        status, headers, body = connection.exchange(data)
    finally:
        connection.close()
    return status, {k: v for k, v in headers if k != "date"}, body


def without_cors(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if not k.startswith("access-control-")}


@pytest.fixture(scope="module")
def cors_service():
    with running_service("--allow-unauthenticated", "--workers", "1", "--max-body", str(LIMIT),
                         "--cors-origin", ORIGIN) as service:
        yield service


@pytest.fixture(scope="module")
def service():
    with running_service("--allow-unauthenticated", "--workers", "1", "--request-timeout", "20") as running:
        yield running


REFUSALS = {
    "413 by Content-Length": raw_request("POST", VIEW, b"x" * (LIMIT + 1)),
    "413 while streaming": chunked(VIEW, 3, 100_000),
    # At the limit a body is read (and refused as what it is, not JSON); one byte more is too large.
    "400 a body of exactly the limit": raw_request("POST", VIEW, b"x" * LIMIT),
    "400 a body streamed to exactly the limit": chunked(VIEW, 4, LIMIT // 4),
    "413 streamed one byte past the limit": chunked(VIEW, 4, LIMIT // 4, last=1),
    "400 malformed JSON": raw_request("POST", VIEW, b"{not json"),
    "400 not UTF-8": raw_request("POST", VIEW, b'{"hook": "\xff"}'),
    "400 empty body": raw_request("POST", VIEW, b""),
    "400 duplicate key": raw_request("POST", VIEW, b'{"hook": "patient-view", "hook": "order-sign"}'),
    "400 a JSON array": raw_request("POST", VIEW, b"[]"),
    "400 wrong hook": raw_request("POST", VIEW, json.dumps(hook_request("order-sign")).encode()),
    "404 no such service": raw_request("POST", "/cds-services/no-such-service", good_call()),
    # Bodies a page on another site can make a browser send without a CORS preflight: refused before they are read.
    "415 no Content-Type": raw_request("POST", VIEW, good_call(), content_type=None),
    "415 text/plain": raw_request("POST", VIEW, good_call(), content_type="text/plain;charset=UTF-8"),
    "415 a form": raw_request("POST", VIEW, good_call(), content_type="application/x-www-form-urlencoded"),
    "415 two Content-Types, the first not JSON": raw_request("POST", VIEW, good_call(), content_type="text/plain",
                                                             headers=(("Content-Type", "application/json"),)),
    "200 cards, JSON declared in capitals with a charset": raw_request("POST", VIEW, good_call(),
                                                                       content_type="Application/JSON; charset=utf-8"),
    "200 cards, a +json type": raw_request("POST", VIEW, good_call(), content_type="application/cds-hooks+json"),
    "412 no data": raw_request("POST", VIEW, json.dumps(hook_request("patient-view")).encode()),
    "200 cards": raw_request("POST", VIEW, good_call()),
    # A patient-view body is parsed and checked in a worker when its prefetch holds every key (else in the server):
    # the refusals of each check there, and the calls it hands back (a key missing, an OperationOutcome in its place).
    "400 NaN": raw_request("POST", VIEW, good_call().replace(b'"hook": "patient-view"', b'"hook": NaN')),
    "400 prefetch not an object": raw_request("POST", VIEW, call_with(prefetch=[])),
    "400 a prefetch value that is not a resource": raw_request("POST", VIEW, call_with(patient="Patient/x")),
    "400 another patient's Patient": raw_request("POST", VIEW, call_with(
        patient={**json.loads(good_call())["prefetch"]["patient"], "id": "someone-else"})),
    "400 a Patient without an id beside the chart's": raw_request("POST", VIEW, call_with(procedures={
        "resourceType": "Patient"})),
    "412 a key not prefetched": raw_request("POST", VIEW, call_with(procedures=None)),
    "412 an OperationOutcome for a key": raw_request("POST", VIEW, call_with(conditions={
        "resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "processing"}]})),
    "200 no cards for a chart without the tumour": raw_request("POST", VIEW, call_with(
        conditions={"resourceType": "Bundle", "type": "searchset", "entry": []})),
}


@pytest.mark.parametrize("name", list(REFUSALS))
def test_the_hook_path_answers_as_the_fastapi_path_does(cors_service, name):
    data = REFUSALS[name]
    head, rest = data.split(b"\r\n", 1)
    through_fastapi = head + b"\r\n" + f"Origin: {ORIGIN}\r\n".encode() + rest  # CORS requests go through FastAPI
    status, headers, body = answer(cors_service.url, data)
    cors_status, cors_headers, cors_body = answer(cors_service.url, through_fastapi)
    assert cors_headers["access-control-allow-origin"] == ORIGIN  # that one did go through the CORS middleware
    assert "access-control-allow-origin" not in headers
    assert status == int(name.split()[0]) == cors_status
    uuid = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
    assert uuid.sub(b"U", body) == uuid.sub(b"U", cors_body)  # a new evaluation each: new uuids, same cards
    assert headers == without_cors(cors_headers)
    assert headers["content-type"] == "application/json" and int(headers["content-length"]) == len(body)
    assert headers["vary"] == "Origin"  # as the CORS middleware says to a request without an Origin
    if status != 200:
        error = json.loads(body)["error"]
        assert error["status"] == status and set(error) <= {"code", "status", "message", "details"}


def test_the_refusals_say_what_they_said_before(cors_service):
    def error(name: str) -> dict:
        return json.loads(answer(cors_service.url, REFUSALS[name])[2])["error"]

    assert error("413 by Content-Length") == error("413 while streaming") == {
        "code": "cds_payload_too_large", "status": 413,
        "message": f"the request body is larger than this service accepts ({LIMIT} bytes)"}
    assert error("400 duplicate key")["message"] == "the request body has the key 'hook' twice in one JSON object"
    assert error("400 malformed JSON")["message"].startswith("the request body is not valid JSON (")
    assert "answers the patient-view hook" in error("400 wrong hook")["message"]
    assert error("404 no such service") == {
        "code": "cds_not_found", "status": 404,
        "message": "no CDS service 'no-such-service' here; the services are imt-patient-view, imt-order-sign "
                   "(see /cds-services)"}
    assert error("412 no data")["code"] == "cds_data_unavailable"
    assert error("415 no Content-Type") == {
        "code": "cds_unsupported_media_type", "status": 415,
        "message": "the request has no Content-Type header; a CDS Hooks request body is JSON: send Content-Type: "
                   "application/json"}
    assert error("415 text/plain") == {
        "code": "cds_unsupported_media_type", "status": 415,
        "message": "the request body is declared as 'text/plain;charset=UTF-8' (Content-Type); this service reads "
                   "JSON only: send Content-Type: application/json"}
    assert answer(cors_service.url, REFUSALS["415 a form"])[1]["accept"] == "application/json"  # RFC 9110 15.5.16


@pytest.mark.parametrize("origin", [(), (("Origin", ORIGIN),)], ids=["hook path", "through FastAPI"])
def test_a_body_declared_too_large_is_refused_before_it_is_sent(cors_service, origin):
    connection = Connection(cors_service.url)
    try:  # the headers alone: the answer may not wait for a body (the client may be waiting for it: Expect)
        status, _, body = connection.exchange(raw_request("POST", VIEW, None, headers=(
            *origin, ("Content-Length", str(LIMIT + 1)))))
    finally:
        connection.close()
    assert status == 413 and json.loads(body)["error"]["code"] == "cds_payload_too_large"


ROUTES = {  # name: (scope members, whether FastAPI gets it)
    "a hook call": ({}, False),  # (of a service not here: answered before a worker is needed)
    "a hook call without a Content-Type": ({"headers": []}, False),
    "a hook call under CORS without an Origin": ({"cors": True}, False),
    "a hook call under CORS from an Origin": ({"cors": True, "headers": [
        (b"content-type", b"application/json"), (b"origin", ORIGIN.encode())]}, True),
    "an Origin when CORS is not configured": ({"headers": [
        (b"content-type", b"application/json"), (b"origin", ORIGIN.encode())]}, False),
    "feedback": ({"path": VIEW + "/feedback"}, True),
    "no service id": ({"path": "/cds-services/"}, True),
    "discovery": ({"path": "/cds-services"}, True),
    "a GET of a hook's URL": ({"method": "GET"}, True),
    "another root path": ({"root_path": "/cds"}, True),
    "a WebSocket": ({"type": "websocket"}, True),
}


@pytest.mark.parametrize("name", list(ROUTES))
def test_hook_calls_take_the_hook_path_and_everything_else_goes_on_to_fastapi(name):
    members, to_fastapi = ROUTES[name]
    cors = members.pop("cors", False)
    app = create_app(ServiceConfig(public_url="http://127.0.0.1:1", allow_unauthenticated=True,
                                   cors_origins=(ORIGIN,) if cors else ()))
    given: list[str] = []
    sent: list[dict] = []

    async def fastapi(scope, receive, send):  # a stand-in for the rest of the app: it only records the request
        given.append(scope["path"])

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message):
        sent.append(message)

    app.hook_calls.app = fastapi
    scope = {"type": "http", "method": "POST", "path": "/cds-services/nope", "root_path": "",
             "headers": [(b"content-type", b"application/json")], **members}
    asyncio.run(app(scope, receive, send))
    assert given == ([scope["path"]] if to_fastapi else [])
    if not to_fastapi:  # answered on the hook path itself (no service named "nope": before any worker is needed)
        assert sent[0]["status"] in (404, 415), sent


def test_an_unexpected_failure_on_the_hook_path_is_a_500_in_the_service_s_words_and_logged(caplog):
    # The app never started (no lifespan: no worker pool, no hook runner), so answering a call fails inside.
    app = create_app(ServiceConfig(public_url="http://127.0.0.1:1", allow_unauthenticated=True))
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": good_call(), "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": VIEW, "root_path": "",
             "headers": [(b"content-type", b"application/json")]}
    with caplog.at_level(logging.ERROR, logger="imt_cds.service"):
        asyncio.run(app(scope, receive, send))
    start, body = sent
    assert start["status"] == 500 and (b"content-type", b"application/json") in start["headers"]
    assert json.loads(body["body"]) == {"error": {"code": "cds_internal_error", "status": 500,
                                                  "message": "internal error; see the server log"}}
    (record,) = [r for r in caplog.records if r.name == "imt_cds.service"]
    assert record.getMessage() == f"imt-cds: internal error answering POST {VIEW}" and record.exc_info


@pytest.mark.parametrize("parts", [2, 3])
def test_a_body_arriving_in_parts_is_read_whole(service, parts):
    data = raw_request("POST", VIEW, good_call())
    head, body = data.split(b"\r\n\r\n", 1)
    connection = Connection(service.url)
    try:
        connection.send(head + b"\r\n\r\n")
        size = len(body) // parts + 1
        for start in range(0, len(body), size):
            time.sleep(0.2)  # each part read by the server on its own (one ASGI message each)
            connection.send(body[start:start + size])
        status, _, answered = connection.response()
    finally:
        connection.close()
    assert status == 200 and json.loads(answered)["cards"]


def test_a_refused_token_on_the_hook_path_is_logged_by_its_kind_of_reason(tmp_path, caplog):
    signer = Signer(ISSUER)
    app = create_app(ServiceConfig(public_url="http://127.0.0.1:1", auth=AuthSettings(
        (TrustedIssuer(ISSUER, str(signer.write_jwks(tmp_path))),))))
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message):
        sent.append(message)

    def call(token: str | None) -> None:
        headers = [(b"content-type", b"application/json")]
        if token is not None:
            headers.append((b"authorization", f"Bearer {token}".encode()))
        asyncio.run(app({"type": "http", "method": "POST", "path": VIEW, "root_path": "", "headers": headers},
                        receive, send))

    others = [Signer(f"https://other-{n}.example.org") for n in range(2)]
    with caplog.at_level(logging.WARNING, logger="imt_cds.service"):
        call(None)
        for other in others:  # two untrusted issuers: one kind of reason, whatever the issuer's name
            call(other.token(f"http://127.0.0.1:1{VIEW}"))
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert [m["status"] for m in starts] == [401, 401, 401]
    assert all((b"www-authenticate", b'Bearer error="invalid_token"') in m["headers"] for m in starts)
    records = [r for r in caplog.records if r.name == "imt_cds.service"]
    assert [r.getMessage().split("): ", 1)[0] for r in records] == [f"imt-cds: POST {VIEW} refused (401"] * 3
    reasons = [r.getMessage().split("refused (401): ", 1)[1] for r in records]
    assert reasons == ["no Authorization header: CDS Hooks clients must send a bearer JWT on every call",
                       "JWT issuer 'https://other-0.example.org' is not trusted by this service",
                       "JWT issuer 'https://other-1.example.org' is not trusted by this service"]
    assert [r.log_key for r in records] == [reasons[0], "JWT issuer ", "JWT issuer "]  # (up to 80 characters)


def test_other_routes_and_methods_are_still_served_by_fastapi(service):
    status, headers, body = answer(service.url, raw_request("GET", VIEW, None))
    assert status == 405 and json.loads(body) == {"error": {"code": "cds_method_not_allowed", "status": 405,
                                                            "message": "Method Not Allowed"}}
    status, _, body = answer(service.url, raw_request("PUT", VIEW, b"{}"))
    assert status == 405 and json.loads(body)["error"]["code"] == "cds_method_not_allowed"
    status, _, body = answer(service.url, raw_request("GET", "/cds-services", None))
    assert status == 200 and {s["id"] for s in json.loads(body)["services"]} == {"imt-patient-view", "imt-order-sign"}
    feedback = {"feedback": [{"card": "a0b1c2d3-0000-4000-8000-000000000000", "outcome": "accepted",
                              "outcomeTimestamp": "2026-01-02T03:04:05Z"}]}
    status, _, body = answer(service.url, raw_request("POST", VIEW + "/feedback", json.dumps(feedback).encode()))
    assert (status, json.loads(body)) == (200, {"stored": 1})
    status, headers, body = answer(service.url, raw_request("GET", "/rules/R32a", None))
    assert status == 200 and headers["content-type"].startswith("text/html") and b"R32a" in body
    status, _, body = answer(service.url, raw_request("GET", "/healthz", None))
    assert status == 200 and json.loads(body)["workers"] == 1
    status, _, body = answer(service.url, raw_request("POST", VIEW + "/other", good_call()))
    assert status == 404 and json.loads(body)["error"]["code"] == "cds_not_found"
    status, headers, body = answer(service.url, raw_request("POST", "/cds-services/", good_call()))
    assert status == 404 and "location" not in headers  # no slash redirect built from the client's Host header
    assert json.loads(body)["error"]["code"] == "cds_not_found"
    status, _, body = answer(service.url, raw_request("POST", "/cds-services", good_call()))
    assert status == 405 and json.loads(body)["error"]["code"] == "cds_method_not_allowed"


def test_a_kept_alive_connection_is_answered_request_after_request_in_order(service):
    connection = Connection(service.url)
    try:
        for round_ in range(3):
            status, _, body = connection.exchange(raw_request("POST", VIEW, good_call(f"{round_:08d}-0000-4000-8000"
                                                                                     "-000000000000")))
            assert status == 200 and json.loads(body)["cards"]
            status, _, body = connection.exchange(raw_request("POST", VIEW, b"{not json"))
            assert status == 400 and json.loads(body)["error"]["code"] == "cds_bad_request"
            status, _, body = connection.exchange(raw_request("POST", "/cds-services/nope", good_call()))
            assert status == 404
            # refused before its body was read: the body is dropped, not read as the next request
            status, _, body = connection.exchange(raw_request("POST", VIEW, good_call(), content_type="text/plain"))
            assert status == 415
            status, _, body = connection.exchange(raw_request("GET", "/healthz", None))
            assert status == 200 and json.loads(body)["status"] == "ok"
        # A body sent in pieces, apart in time (chunked): read whole before it is parsed.
        body = good_call()
        pieces = [body[:100], body[100:2000], body[2000:]]  # none empty: an empty chunk ends the body
        connection.send(f"POST {VIEW} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                        "Content-Type: application/json\r\n\r\n".encode())
        for piece in pieces:
            connection.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            time.sleep(0.05)
        connection.send(b"0\r\n\r\n")
        status, _, body = connection.response()
        assert status == 200 and json.loads(body)["cards"]
        # Pipelined: three requests sent at once, three answers in order.
        connection.send(raw_request("POST", VIEW, good_call()) + raw_request("POST", VIEW, b"[]")
                        + raw_request("GET", "/cds-services", None))
        statuses = [connection.response()[0] for _ in range(3)]
        assert statuses == [200, 400, 200]
    finally:
        connection.close()


def test_with_authentication_the_401_comes_first_and_says_how_to_authenticate(tmp_path: Path):
    signer = Signer(ISSUER)
    jwks = signer.write_jwks(tmp_path)
    with running_service("--trust", ISSUER, str(jwks), "--workers", "1", "--max-body", str(LIMIT)) as service:
        for data in (raw_request("POST", VIEW, good_call()),
                     raw_request("POST", VIEW, good_call(), (("Authorization", "Bearer not.a.token"),)),
                     raw_request("POST", "/cds-services/no-such-service", good_call()),
                     chunked(VIEW, 3, 100_000)):
            status, headers, body = answer(service.url, data)
            assert status == 401 and headers["www-authenticate"] == 'Bearer error="invalid_token"'
            assert json.loads(body) == {"error": {
                "code": "cds_unauthorized", "status": 401,
                "message": "the bearer token was not accepted (CDS Hooks 2.0.1 JWT required)"}}
        # A Content-Length over the limit is refused before the token is looked at, as before.
        assert answer(service.url, raw_request("POST", VIEW, b"x" * (LIMIT + 1)))[0] == 413
        token = signer.token(service.url + VIEW)
        status, _, body = answer(service.url, raw_request("POST", VIEW, good_call(),
                                                          (("Authorization", f"Bearer {token}"),)))
        assert status == 200 and json.loads(body)["cards"]
        wrong_audience = signer.token(service.url + "/cds-services/imt-order-sign")
        assert answer(service.url, raw_request("POST", VIEW, good_call(),
                                               (("Authorization", f"Bearer {wrong_audience}"),)))[0] == 401
        assert "refused (401)" in service.log_text()


@pytest.mark.parametrize("through_fastapi", [False, True], ids=["hook path", "through FastAPI"])
def test_a_worker_killed_while_serving_fails_that_request_and_the_connection_goes_on(request, through_fastapi):
    # Either way the server's log says which request failed and why, as for every 5xx (the client's body does not).
    service = request.getfixturevalue("cors_service" if through_fastapi else "service")
    origin = (("Origin", ORIGIN),) if through_fastapi else ()
    connection = Connection(service.url)
    try:
        assert connection.exchange(raw_request("POST", VIEW, good_call()))[0] == 200
        (worker,) = worker_pids(service)
        os.kill(worker, signal.SIGSTOP)  # its next job waits there until it is killed
        try:
            connection.send(raw_request("POST", VIEW, good_call("11111111-0000-4000-8000-000000000000"), origin))
            time.sleep(0.5)
            os.kill(worker, signal.SIGKILL)
            status, _, body = connection.response()
        finally:
            try:
                os.kill(worker, signal.SIGCONT)
            except ProcessLookupError:
                pass
        assert status == 500 and json.loads(body)["error"]["code"] == "cds_worker_crashed"
        assert (f"imt_cds.service: imt-cds: POST {VIEW}: [cds_worker_crashed] the evaluation process died while "
                "serving this request; it has been replaced and the service goes on: retry the request\n"
                in service.log_text())
        status, _, body = connection.exchange(raw_request("POST", VIEW, good_call()))  # a new worker serves it
        assert status == 200 and json.loads(body)["cards"]
        assert connection.exchange(raw_request("GET", "/healthz", None))[0] == 200
    finally:
        connection.close()
