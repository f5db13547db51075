"""The FastAPI side of the service (everything but the hook call's own path), answered in the test's own process
through ASGI: discovery, feedback and who sent it, rule pages, health and readiness, the JSON error for each kind of
refusal, the CORS preflight refusal, and the audit folder checked at the start.

test_service_http.py asks the same questions of a real server over HTTP; these ask them where a planted mistake
(a mutant) can be seen, in exact words, and in a second or two.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from service_support import Signer, bearer, example_resources, hook_request, prefetch_for

from imt_cds import load_rulebook
from imt_cds.service import AuthSettings, ServiceConfig, TrustedIssuer, create_app
from imt_cds.service.config import AuditStoreUnavailableError

PUBLIC = "http://cds.test"
ISSUER = "https://ehr.app-mutants.test"
ORIGIN = "https://ehr.example.org"
JSON = "application/json"


def call(app: Any, request: Callable[[httpx.AsyncClient], Any], *, started: bool = False, root_path: str = "") -> Any:
    """``request(client)`` against ``app`` in process; with ``started``, between the app's ASGI lifespan startup
    and shutdown, as a server sends them (its worker pool, feedback sink and hook runner: real worker processes)."""

    async def run() -> Any:
        # (as a server: an exception the app re-raises after its 500 is sent is not the client's to see)
        transport = httpx.ASGITransport(app=app, root_path=root_path, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url=PUBLIC) as client:
            if not started:
                return await request(client)
            to_app: asyncio.Queue[dict] = asyncio.Queue()
            from_app: asyncio.Queue[dict] = asyncio.Queue()
            lifespan = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                               to_app.get, from_app.put))
            await to_app.put({"type": "lifespan.startup"})
            assert (await from_app.get())["type"] == "lifespan.startup.complete"
            try:
                return await request(client)
            finally:
                await to_app.put({"type": "lifespan.shutdown"})
                assert (await from_app.get())["type"] == "lifespan.shutdown.complete"
                await lifespan

    return asyncio.run(run())


def plain_app(**settings: Any) -> Any:
    return create_app(ServiceConfig(public_url=PUBLIC, allow_unauthenticated=True, workers=1, **settings))


@pytest.fixture(scope="module")
def app() -> Any:
    return plain_app()


def error(response: httpx.Response) -> dict:
    assert response.headers["content-type"] == JSON
    return response.json()["error"]


def authenticated_app(tmp_path: Any, **settings: Any) -> tuple[Any, Signer]:
    """An app that wants a token from ``ISSUER``, and the signer of such tokens."""
    signer = Signer(ISSUER)
    app = create_app(ServiceConfig(public_url=PUBLIC, workers=1, auth=AuthSettings(
        (TrustedIssuer(ISSUER, str(signer.write_jwks(tmp_path))),)), **settings))
    return app, signer


def feedback_scope(*headers: tuple[bytes, bytes]) -> dict:
    """The ASGI scope of a feedback POST declared as JSON, with ``headers`` besides, as a server would send it."""
    return {"type": "http", "method": "POST", "path": "/cds-services/imt-patient-view/feedback", "root_path": "",
            "headers": [(b"content-type", b"application/json"), *headers], "query_string": b"",
            "http_version": "1.1", "scheme": "http", "server": ("cds.test", 80), "client": ("127.0.0.1", 5000)}


# --- discovery and rule pages -------------------------------------------------------------------------------------


def test_discovery_answers_every_service_in_json(app):
    response = call(app, lambda c: c.get("/cds-services"))
    assert response.status_code == 200 and response.headers["content-type"] == JSON
    assert [s["id"] for s in response.json()["services"]] == ["imt-patient-view", "imt-order-sign"]


def test_a_rule_page_is_made_once_and_an_unknown_rule_is_a_404_naming_the_rulebook(app):
    rulebook = load_rulebook(None)
    rule_id = rulebook.rules[0].id

    async def two_pages(client: httpx.AsyncClient) -> list[httpx.Response]:
        return [await client.get(f"/rules/{rule_id}"), await client.get(f"/rules/{rule_id}"),
                await client.get("/rules/NOPE")]

    first, again, unknown = call(app, two_pages)
    assert first.status_code == 200 and first.headers["content-type"].startswith("text/html")
    assert rule_id in first.text and again.text == first.text
    assert app.state.rule_pages[rule_id] == first.text  # kept: the rulebook never changes under a server
    assert unknown.status_code == 404
    assert error(unknown) == {"code": "cds_not_found", "status": 404,
                              "message": f"no rule 'NOPE' in rulebook {rulebook.name} {rulebook.version}"}


# --- refusals: one JSON shape -------------------------------------------------------------------------------------


def test_an_unknown_path_and_a_wrong_method_are_refused_in_json_with_their_own_codes(app):
    async def refusals(client: httpx.AsyncClient) -> list[httpx.Response]:
        return [await client.get("/nowhere"), await client.delete("/cds-services"),
                await client.get("/healthz/")]

    unknown, method, slash = call(app, refusals)
    assert (unknown.status_code, error(unknown)["code"]) == (404, "cds_not_found")
    assert (method.status_code, error(method)["code"]) == (405, "cds_method_not_allowed")
    assert sorted(method.headers["allow"].split(", ")) == ["GET", "HEAD"]  # (Starlette lists a set: any order)
    assert (slash.status_code, error(slash)["code"]) == (404, "cds_not_found")  # not a redirect


def test_a_cors_preflight_refused_is_a_json_400_naming_what_was_not_allowed():
    app = plain_app(cors_origins=(ORIGIN,))

    async def preflights(client: httpx.AsyncClient) -> list[httpx.Response]:
        asked = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
        return [await client.options("/cds-services", headers={"Origin": "https://evil.example", **asked}),
                await client.options("/cds-services", headers={"Origin": ORIGIN, **asked}),
                await client.options("/cds-services", headers={
                    "Origin": ORIGIN, "Access-Control-Request-Method": "PUT"})]

    refused, allowed, method = call(app, preflights)
    assert refused.status_code == 400
    assert error(refused) == {"code": "cds_bad_request", "status": 400, "message": (
        "CORS preflight refused: origin not allowed (a browser may call this service from the origins its "
        "--cors-origin names, with GET or POST and the headers Authorization and Content-Type)")}
    assert refused.headers["content-length"] == str(len(refused.content))  # Starlette's own, not the text's
    assert "access-control-allow-methods" in refused.headers  # the rest of Starlette's headers kept
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == ORIGIN
    assert set(allowed.headers["access-control-allow-headers"].lower().replace(" ", "").split(",")) >= {
        "authorization", "content-type"}
    assert allowed.headers["access-control-max-age"] == "600"
    assert error(method)["message"].startswith("CORS preflight refused: method not allowed (")


# --- with the workers started -------------------------------------------------------------------------------------


def test_health_and_readiness_describe_the_running_service(app):
    async def both(client: httpx.AsyncClient) -> list[httpx.Response]:
        return [await client.get("/healthz"), await client.get("/readyz")]

    health, ready = call(app, both, started=True)
    rulebook = load_rulebook(None)
    assert health.status_code == 200 and health.json() == {
        "status": "ok", "workers": 1, "worker_crashes": 0, "jobs": {"in_workers": 0, "waiting": 0},
        "rulebook": {"name": rulebook.name, "version": rulebook.version, "sha256": rulebook.sha256}}
    assert ready.status_code == 200 and ready.json() == {"ready": True, "not_ready": []}


def test_feedback_is_stored_with_the_client_its_token_names(tmp_path):
    log = tmp_path / "feedback.ndjson"
    app, signer = authenticated_app(tmp_path, feedback_log=log)
    view = PUBLIC + "/cds-services/imt-patient-view"
    item = {"card": "9a872e21-4e45-5ff7-a992-88916db1c97d", "outcome": "accepted",
            "outcomeTimestamp": "2026-11-21T10:00:00Z"}

    async def send(client: httpx.AsyncClient) -> list[httpx.Response]:
        path = "/cds-services/imt-patient-view/feedback"
        return [
            await client.post(path, json={"feedback": [item]}, headers=bearer(signer.token(
                view + "/feedback", sub="dr-who", tenant="clinic-1"))),
            await client.post(path, json={"feedback": [item]}, headers=bearer(signer.token(view, tenant=None))),
            await client.post(path, json={"feedback": [item]}, headers=bearer(signer.token(PUBLIC + "/x"))),
            await client.post(path, json={"feedback": [item]}),
        ]

    by_feedback_url, by_service_url, elsewhere, anonymous = call(app, send, started=True)
    assert by_feedback_url.json() == {"stored": 1} and by_service_url.json() == {"stored": 1}
    for refused in (elsewhere, anonymous):
        assert refused.status_code == 401 and error(refused)["code"] == "cds_unauthorized"
        assert refused.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [row["client"] for row in rows] == [{"iss": ISSUER, "sub": "dr-who", "tenant": "clinic-1"},
                                               {"iss": ISSUER}]
    assert rows[0]["card"] == item["card"] and rows[0]["outcome"] == "accepted"
    assert rows[0]["service"] == "imt-patient-view" and rows[0]["evaluation_id"] is None  # a card never issued


def test_discovery_wants_a_token_for_its_own_url(tmp_path):
    app, signer = authenticated_app(tmp_path)

    async def tokens(client: httpx.AsyncClient) -> list[httpx.Response]:
        return [await client.get("/cds-services", headers=bearer(signer.token(PUBLIC + "/cds-services"))),
                await client.get("/cds-services", headers=bearer(signer.token(PUBLIC + "/cds-services/x")))]

    right, wrong = call(app, tokens)
    assert right.status_code == 200 and wrong.status_code == 401


# --- the start ----------------------------------------------------------------------------------------------------


def test_an_audit_store_in_a_folder_that_does_not_exist_stops_the_start_naming_both(tmp_path):
    path = tmp_path / "missing" / "audit.db"
    with pytest.raises(AuditStoreUnavailableError) as refused:
        plain_app(audit=str(path))
    assert str(refused.value) == (f"cannot open the audit store {path}: its folder {path.parent} does not exist "
                                  "(create it, or give another --audit path)")
    assert refused.value.code == "cds_audit_store_unavailable"  # what serve prints: error [cds_audit_store_unavailable]
    assert not path.parent.exists()


def test_a_rule_page_shows_the_rule_its_findings_its_evidence_and_its_literature_escaped(app):
    # R28: a recommendation with a description, a quote and claims, and two literature links; D04: a derived fact
    # with a description and neither findings nor evidence. Both pages are read line by line.
    import html

    from imt_cds.render.cards import citation_links

    rulebook = load_rulebook(None)
    pages = call(app, lambda c: asyncio.gather(c.get("/rules/R28"), c.get("/rules/D04")))
    rule = rulebook.rule("R28")
    entries = [rulebook.evidence[i].to_dict() for i in rule.evidence]
    quotes = [entry for entry in entries if entry.get("quote")]
    links = citation_links(entries)
    assert (len(rule.findings), len(quotes), len(entries) - len(quotes), len(links)) == (1, 1, 3, 2)
    lines = pages[0].text.split("\n")
    e = html.escape
    assert lines[:4] == [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>R28: {e(rule.title)}</title></head><body>",
        f"<h1>R28 v{rule.version}: {e(rule.title)}</h1>",
        f"<p>Rulebook {rulebook.name} {rulebook.version} (sha256 {rulebook.sha256}). Kind: recommendation. "
        f"Strength of evidence: {rule.strength}.</p>",
        f"<p>{e(rule.description)}</p>"]
    finding = rule.findings[0]
    assert lines[4:7] == ["<h2>Findings</h2><ul>", f"<li><code>{finding.code}</code>: {e(finding.summary)}</li>",
                          "</ul>"]
    assert lines[7] == "<h2>Evidence</h2><ul>" and lines[8 + len(entries)] == "</ul>"
    for line, entry in zip(lines[8:8 + len(entries)], entries):
        shown = f"&ldquo;{e(entry['quote'])}&rdquo;" if entry.get("quote") else e(entry["claim"])
        assert line == f"<li>{shown}<br><small>{e(entry['citation'])} [{entry['id']}]</small></li>"
    assert lines[9 + len(entries):] == [
        "<h2>Literature</h2><ul>", *(f"<li><a href='{e(link['url'])}'>{e(link['label'])}</a></li>" for link in links),
        "</ul>", "<p><em>Decision support for a multidisciplinary team, not a prescription.</em></p></body></html>"]
    derived = rulebook.rule("D04")
    assert pages[1].text.split("\n")[3:] == [
        f"<p>{e(derived.description)}</p>",
        "<p><em>Decision support for a multidisciplinary team, not a prescription.</em></p></body></html>"]


# --- more of the FastAPI side -------------------------------------------------------------------------------------


def test_an_unexpected_failure_in_a_route_is_a_500_in_the_services_words_and_logged(caplog):
    # The app never started (no lifespan: no worker pool), so /healthz fails inside.
    with caplog.at_level(logging.INFO, logger="imt_cds.service"):
        response = call(plain_app(), lambda c: c.get("/healthz"))
    assert response.status_code == 500
    assert error(response) == {"code": "cds_internal_error", "status": 500,
                               "message": "internal error; see the server log"}
    (record,) = [r for r in caplog.records if r.name == "imt_cds.service"]
    assert record.getMessage() == "imt-cds: internal error answering GET /healthz" and record.exc_info


def test_without_fastapi_the_service_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # (an import of it then fails, as when it is not installed)
    with pytest.raises(ImportError) as refused:
        plain_app()
    assert str(refused.value) == "the CDS Hooks service needs FastAPI and uvicorn: pip install 'imt-cds[service]'"


def test_a_hook_call_is_answered_on_its_own_path_and_behind_a_proxys_root_path():
    # Under a root path (a proxy mounting the service at /cds) the call goes through FastAPI's route instead.
    request = hook_request("patient-view", prefetch=prefetch_for(example_resources()))
    view = "/cds-services/imt-patient-view"

    async def calls(client: httpx.AsyncClient) -> list[httpx.Response]:
        return [await client.post(view, json=request),
                await client.post(view, content=json.dumps(request), headers={"content-type": "text/plain"}),
                await client.post("/cds-services/nope", json=request)]

    for root_path, prefix in (("", ""), ("/cds", "/cds")):
        app = plain_app()
        answered, text, unknown = call(app, lambda c, p=prefix: calls(_Prefixed(c, p)), started=True,
                                       root_path=root_path)
        assert answered.status_code == 200, answered.text
        codes = [card["source"]["topic"]["code"] for card in answered.json()["cards"]]
        assert "REC_CRIZOTINIB_ALK" in codes
        assert text.status_code == 415 and text.headers["accept"] == "application/json"
        assert unknown.status_code == 404 and error(unknown)["message"].startswith("no CDS service 'nope' here")


class _Prefixed:
    """A client whose request paths start with ``prefix`` (what a proxy mounting the service at a root path sends)."""

    def __init__(self, client: httpx.AsyncClient, prefix: str):
        self.client, self.prefix = client, prefix

    async def post(self, path: str, **given: Any) -> httpx.Response:
        return await self.client.post(self.prefix + path, **given)


def test_feedback_not_declared_as_json_is_a_415_saying_what_is_accepted(app):
    response = call(app, lambda c: c.post("/cds-services/imt-patient-view/feedback", content=b"{}",
                                          headers={"content-type": "text/plain"}), started=True)
    assert response.status_code == 415 and response.headers["accept"] == "application/json"
    assert error(response)["code"] == "cds_unsupported_media_type"


def test_a_body_over_the_limit_is_refused_on_fastapis_routes_whether_declared_or_streamed():
    app = plain_app(max_body_bytes=1024)
    body = json.dumps({"feedback": [{"card": "x" * 2000, "outcome": "accepted"}]}).encode()

    async def chunks():
        for start in range(0, len(body), 500):
            yield body[start:start + 500]

    async def both(client: httpx.AsyncClient) -> list[httpx.Response]:
        path = "/cds-services/imt-patient-view/feedback"
        return [await client.post(path, content=body, headers={"content-type": JSON}),
                await client.post(path, content=chunks(), headers={"content-type": JSON})]

    declared, streamed = call(app, both, started=True)
    for response in (declared, streamed):
        assert response.status_code == 413
        assert error(response) == {"code": "cds_payload_too_large", "status": 413,
                                   "message": "the request body is larger than this service accepts (1024 bytes)"}
    assert "content-length" not in streamed.request.headers  # (it really streamed)


def test_a_client_gone_before_its_body_arrived_is_logged_as_its_doing_and_gets_a_bare_400(app, caplog):
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = feedback_scope()

    with caplog.at_level(logging.INFO, logger="imt_cds.service"):
        asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 400 and sent[1].get("body", b"") == b""
    (record,) = [r for r in caplog.records if r.name == "imt_cds.service"]
    assert record.levelno == logging.INFO and record.getMessage() == (
        "imt-cds: POST /cds-services/imt-patient-view/feedback: the client went away before its request body arrived")


def test_a_get_preflight_from_the_configured_origin_is_allowed():
    app = plain_app(cors_origins=(ORIGIN,))
    response = call(app, lambda c: c.options("/cds-services", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}))
    assert response.status_code == 200 and response.headers["access-control-allow-origin"] == ORIGIN
    assert set(response.headers["access-control-allow-methods"].replace(" ", "").split(",")) == {"GET", "POST"}


def test_a_declared_body_over_the_limit_is_refused_before_any_of_it_is_read():
    app = plain_app(max_body_bytes=1024)
    read: list[dict] = []
    sent: list[dict] = []

    async def receive() -> dict:  # a client that declared 5,000 bytes and sends them slowly, if asked
        read.append({})
        await asyncio.sleep(0.1)
        return {"type": "http.request", "body": b"x" * 100, "more_body": True}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = feedback_scope((b"content-length", b"5000"))
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 10))
    assert read == [] and sent[0]["status"] == 413
    body = sent[1]["body"]
    assert dict(sent[0]["headers"])[b"content-length"] == str(len(body)).encode()
    assert json.loads(body)["error"]["code"] == "cds_payload_too_large"


def test_with_no_worker_alive_health_says_degraded_and_the_service_is_not_ready():
    import os
    import signal
    import time

    async def scenario(client: httpx.AsyncClient) -> list[httpx.Response]:
        for pid in app.state.pool.load()["pids"]:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)  # (the event loop held: no replacement can start before the two checks)
        return [await client.get("/healthz"), await client.get("/readyz")]

    app = plain_app()
    health, ready = call(app, scenario, started=True)
    assert health.status_code == 200  # (the server answers; its workers do not)
    assert {key: health.json()[key] for key in ("status", "workers")} == {"status": "degraded", "workers": 0}
    assert ready.status_code == 503 and ready.json() == {"ready": False, "not_ready": ["no_workers"]}


def test_readiness_waits_two_seconds_for_an_audit_store_busy_behind_a_lock_and_says_so(tmp_path):
    # Another writer holds the SQLite store's write lock: a hook call's record waits in the recorder's thread, and the
    # readiness read queued behind it is not answered; /readyz does not wait for it past its own timeout.
    import sqlite3
    import time

    audit = tmp_path / "audit.db"
    app = plain_app(audit=str(audit), store_timeout=8.0)
    request = hook_request("patient-view", prefetch=prefetch_for(example_resources()))

    async def scenario(client: httpx.AsyncClient) -> tuple[httpx.Response, float, httpx.Response]:
        lock = sqlite3.connect(audit, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        try:
            hook_call = asyncio.create_task(client.post("/cds-services/imt-patient-view", json=request))
            await asyncio.sleep(1.0)  # its record is with the recorder by now, waiting for the lock
            start = time.monotonic()
            ready = await client.get("/readyz")
            waited = time.monotonic() - start
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        return ready, waited, await hook_call

    ready, waited, answered = call(app, scenario, started=True)
    assert ready.status_code == 503 and ready.json() == {"ready": False, "not_ready": ["audit_store"]}
    assert 1.9 < waited < 2.8, waited  # (its timeout, 2 s: under a proxy's usual health-check timeout)
    assert answered.status_code == 200  # recorded once the lock was released, then answered


def test_a_hook_call_behind_a_root_path_wants_a_token_for_the_services_own_url(tmp_path):
    app, signer = authenticated_app(tmp_path)
    request = hook_request("patient-view", prefetch=prefetch_for(example_resources()))
    view = "/cds-services/imt-patient-view"

    async def tokens(client: httpx.AsyncClient) -> list[httpx.Response]:
        return [await client.post("/cds" + view, json=request, headers=bearer(signer.token(PUBLIC + view))),
                await client.post("/cds" + view, json=request, headers=bearer(signer.token(PUBLIC + "/x")))]

    right, wrong = call(app, tokens, started=True, root_path="/cds")
    assert right.status_code == 200 and right.json()["cards"]
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == 'Bearer error="invalid_token"'
