"""The FastAPI side of the service (everything but the hook call's own path), answered in the test's own process
through ASGI: discovery, feedback and who sent it, rule pages, health and readiness, the JSON error for each kind of
refusal, the CORS preflight refusal, and the audit folder checked at the start.

test_service_http.py asks the same questions of a real server over HTTP; these ask them where a planted mistake
(a mutant) can be seen, in exact words, and in a second or two.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from service_support import Signer, bearer

from imt_cds import load_rulebook
from imt_cds.service import AuthSettings, ServiceConfig, TrustedIssuer, create_app
from imt_cds.service.config import AuditStoreUnavailableError

PUBLIC = "http://cds.test"
ISSUER = "https://ehr.app-mutants.test"
ORIGIN = "https://ehr.example.org"
JSON = "application/json"


def call(app: Any, request: Callable[[httpx.AsyncClient], Any], *, started: bool = False) -> Any:
    """``request(client)`` against ``app`` in process; with ``started``, inside the app's lifespan (its worker pool,
    feedback sink and hook runner: real worker processes)."""

    async def run() -> Any:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=PUBLIC) as client:
            if not started:
                return await request(client)
            async with app.router.lifespan_context(app):
                return await request(client)

    return asyncio.run(run())


def plain_app(**settings: Any) -> Any:
    return create_app(ServiceConfig(public_url=PUBLIC, allow_unauthenticated=True, workers=1, **settings))


@pytest.fixture(scope="module")
def app() -> Any:
    return plain_app()


def error(response: httpx.Response) -> dict:
    assert response.headers["content-type"] == JSON
    return response.json()["error"]


# --- discovery and rule pages -------------------------------------------------------------------------------------


def test_discovery_answers_every_service_in_json(app):
    response = call(app, lambda c: c.get("/cds-services"))
    assert response.status_code == 200 and response.headers["content-type"] == JSON
    assert [s["id"] for s in response.json()["services"]] == ["imt-patient-view", "imt-order-sign"]


def test_a_rule_page_is_made_once_and_an_unknown_rule_is_a_404_naming_the_rulebook(app):
    rulebook = load_rulebook(None)
    rule_id = next(iter(rulebook.rules)).id if not isinstance(rulebook.rules, dict) else next(iter(rulebook.rules))

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
    assert method.headers["allow"] == "GET"
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
    signer = Signer(ISSUER)
    log = tmp_path / "feedback.ndjson"
    app = create_app(ServiceConfig(public_url=PUBLIC, workers=1, feedback_log=log, auth=AuthSettings(
        (TrustedIssuer(ISSUER, str(signer.write_jwks(tmp_path))),))))
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
    signer = Signer(ISSUER)
    app = create_app(ServiceConfig(public_url=PUBLIC, workers=1, auth=AuthSettings(
        (TrustedIssuer(ISSUER, str(signer.write_jwks(tmp_path))),))))

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
    assert not path.parent.exists()
