"""Who may call the service: CDS Hooks 2.0.1 bearer JWTs, checked by a real server (``imt-cds serve --trust ...``).

The spec's own example token and JWK Set (from the fixtures), then tokens signed here: valid (ES384 and RS384,
keys from a file or from an allow-listed URL), expired, for another audience, with a forbidden algorithm (HS384,
none), replayed, and the other ways a token can be wrong. The same server records evaluations in an audit store
and keeps card feedback beside them.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time

import httpx
import jwt
import pytest
from service_support import (
    SCRIPT,
    SHARED,
    FhirServer,
    Signer,
    bearer,
    example_resources,
    hmac_token,
    hook_request,
    prefetch_for,
    running_service,
    unsigned_token,
)

from imt_cds.service.errors import UNAUTHORIZED_MESSAGE
from imt_cds.service.replay_cache import MemoryReplayCache as ReplayCache

SPEC = SHARED / "spec-2.0.1-examples"
PUBLIC = "https://cds.example.org"
DISCOVERY = PUBLIC + "/cds-services"
VIEW = PUBLIC + "/cds-services/imt-patient-view"
SPEC_ISSUER = "https://fhir-ehr.example.com/"


@pytest.fixture(scope="module")
def issuers():
    return {"es": Signer("https://ehr.example.org/"), "rs": Signer("https://other-ehr.example.org", "rsa-1", "RS384"),
            "url": Signer("https://rotating-ehr.example.org", "url-kid")}


@pytest.fixture(scope="module")
def jwks_server(issuers):
    with FhirServer([], documents={"/jwks.json": issuers["url"].jwks}) as server:
        yield server


@pytest.fixture(scope="module")
def service(issuers, jwks_server, tmp_path_factory):
    directory = tmp_path_factory.mktemp("auth")
    with running_service(
            "--trust", issuers["es"].iss, str(issuers["es"].write_jwks(directory)),
            "--trust", issuers["rs"].iss, str(issuers["rs"].write_jwks(directory)),
            "--trust", issuers["url"].iss, jwks_server.origin + "/jwks.json",
            "--trust", SPEC_ISSUER, str(SPEC / "jwks-public.json"),
            "--audit", str(directory / "audit.db"), "--workers", "1",
            public_url=PUBLIC) as running:
        running.audit = directory / "audit.db"  # type: ignore[attr-defined]
        yield running


@pytest.fixture(scope="module")
def client(service):
    with httpx.Client(base_url=service.url, timeout=60) as http:
        yield http


@pytest.fixture
def unauthorized(service):
    """Check a refusal: a 401 with the one generic body, and the reason (``says``) in the server log only."""

    def check(response, says):
        assert response.status_code == 401, response.text
        assert response.json() == {"error": {"code": "cds_unauthorized", "status": 401,
                                             "message": UNAUTHORIZED_MESSAGE}}
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        refusals = [line for line in service.log_text().splitlines() if "refused (401)" in line]
        # This refusal's own line: one more than the last check saw (the module shares the server and its log).
        assert len(refusals) > getattr(service, "refusals_seen", 0), "no line logged for this refusal"
        service.refusals_seen = len(refusals)
        assert says in refusals[-1], refusals[-1:]

    return check


def view_request():
    return hook_request("patient-view", prefetch=prefetch_for(example_resources()))


# --- the spec's example ---------------------------------------------------------------------------------------------


def test_the_spec_example_token_is_refused_because_it_has_expired(client, unauthorized):
    token = (SPEC / "jwt-example.txt").read_text().strip()
    # Its aud is https://cds.example.org/cds-services/some-service: called there, only its age is wrong.
    unauthorized(client.post("/cds-services/some-service", json={}, headers=bearer(token)),
                 "the JWT has expired")


def test_a_fresh_token_signed_with_the_spec_example_key_is_accepted(client):
    private = json.loads((SPEC / "jwk-private-EXAMPLE-ONLY.json").read_text())
    header = json.loads((SPEC / "jwt-header.json").read_text())  # ES384, kid example-kid, jku of the example
    payload = json.loads((SPEC / "jwt-payload.json").read_text())
    now = int(time.time())
    payload.update(aud=DISCOVERY, iat=now, exp=now + 300, jti=f"fresh-{now}-{time.monotonic_ns()}")
    key = jwt.PyJWK(private).key
    token = jwt.encode(payload, key, algorithm="ES384", headers={k: v for k, v in header.items() if k != "alg"})
    response = client.get("/cds-services", headers=bearer(token))
    assert response.status_code == 200, response.text


# --- tokens signed here ---------------------------------------------------------------------------------------------


def test_a_call_without_a_token_is_refused(client, unauthorized):
    unauthorized(client.get("/cds-services"), "no Authorization header")
    unauthorized(client.get("/cds-services", headers={"Authorization": "Basic abc"}), "must be 'Bearer <JWT>'")


@pytest.mark.parametrize("which", ["es", "rs"])
def test_valid_es384_and_rs384_tokens_are_accepted_on_every_endpoint(client, issuers, which):
    signer = issuers[which]
    assert client.get("/cds-services", headers=bearer(signer.token(DISCOVERY))).status_code == 200
    response = client.post("/cds-services/imt-patient-view", json=view_request(), headers=bearer(signer.token(VIEW)))
    assert response.status_code == 200, response.text
    assert response.json()["cards"]


def test_keys_can_come_from_an_allow_listed_url(client, issuers, jwks_server, unauthorized):
    signer = issuers["url"]
    jwks_server.requests.clear()
    headers = {"jku": jwks_server.origin + "/jwks.json"}
    assert client.get("/cds-services", headers=bearer(signer.token(DISCOVERY, headers=headers))).status_code == 200
    assert client.get("/cds-services", headers=bearer(signer.token(DISCOVERY))).status_code == 200
    assert [path for path, _ in jwks_server.requests] == ["/jwks.json"]  # fetched once, then cached
    # A kid the cached set lacks is refused; the set is fetched again only after a pause (not on every such token).
    unauthorized(client.get("/cds-services", headers=bearer(signer.token(DISCOVERY, headers={"kid": "rotated-kid"}))),
                 "no key with kid")
    assert [path for path, _ in jwks_server.requests] == ["/jwks.json"]
    unauthorized(client.get("/cds-services", headers=bearer(signer.token(
        DISCOVERY, headers={"jku": "https://attacker.example.net/jwks.json"}))), "is not the JWK Set URL allow-listed")


def _now() -> int:
    return int(time.time())


@pytest.mark.parametrize(("case", "says"), [
    ("expired", "the JWT has expired"),
    ("wrong audience", "is not this endpoint"),
    ("audience of another endpoint", "is not this endpoint"),
    ("issued in the future", "not valid yet"),
    ("no jti", "lacks the required claim 'jti'"),
    ("untrusted issuer", "is not trusted"),
    ("signed by another key", "signature does not verify"),
    ("unknown kid", "no key with kid"),
    ("HS384 with a shared secret", "algorithm 'HS384' is not accepted"),
    ("HS384 with the public key as secret", "algorithm 'HS384' is not accepted"),
    ("none", "algorithm 'none' is not accepted"),
    ("not a JWT", "not a well-formed JWT"),
    ("wrong typ", "typ must be JWT"),
])
def test_unacceptable_tokens_are_refused_with_the_reason(client, issuers, case, says, unauthorized):
    signer = issuers["es"]
    claims = signer.claims(DISCOVERY)
    tokens = {
        "expired": lambda: signer.token(DISCOVERY, exp=_now() - 3600, iat=_now() - 4000),
        "wrong audience": lambda: signer.token("https://cds.example.org/somewhere-else"),
        "audience of another endpoint": lambda: signer.token(VIEW),
        "issued in the future": lambda: signer.token(DISCOVERY, iat=_now() + 3600, exp=_now() + 4000),
        "no jti": lambda: signer.token(DISCOVERY, jti=None),
        "untrusted issuer": lambda: Signer("https://unknown.example.net/").token(DISCOVERY),
        "signed by another key": lambda: Signer(signer.iss, signer.kid).token(DISCOVERY),
        "unknown kid": lambda: signer.token(DISCOVERY, headers={"kid": "other-kid"}),
        "HS384 with a shared secret": lambda: hmac_token(claims, b"a shared secret"),
        "HS384 with the public key as secret": lambda: hmac_token(claims, signer.public_pem()),
        "none": lambda: unsigned_token(claims),
        "not a JWT": lambda: "this.is.not-a-jwt",
        "wrong typ": lambda: signer.token(DISCOVERY, headers={"typ": "at+jwt"}),
    }
    unauthorized(client.get("/cds-services", headers=bearer(tokens[case]())), says)


def test_a_token_cannot_inject_headers_through_the_reason_it_is_refused(client, unauthorized):
    token = Signer("https://evil.example/\r\nX-Injected: yes").token(DISCOVERY)
    response = client.get("/cds-services", headers=bearer(token))
    unauthorized(response, "is not trusted")
    assert "x-injected" not in response.headers and "\n" not in response.headers["www-authenticate"]


def test_a_replayed_token_is_refused(client, issuers, unauthorized):
    token = issuers["es"].token(DISCOVERY)
    assert client.get("/cds-services", headers=bearer(token)).status_code == 200
    unauthorized(client.get("/cds-services", headers=bearer(token)), "was already used")


def test_an_audience_list_is_accepted_when_it_names_the_endpoint(client, issuers):
    token = issuers["es"].token(["https://elsewhere.example.org", DISCOVERY])
    assert client.get("/cds-services", headers=bearer(token)).status_code == 200


def test_the_rules_page_and_health_need_no_token(client):
    assert client.get("/rules/R01").status_code == 200
    assert client.get("/healthz").json()["status"] == "ok"


# --- audit and feedback on the authenticated server ---------------------------------------------------------------


def test_evaluations_are_audited_and_feedback_is_kept_beside_the_audit_trail(client, issuers, service):
    signer = issuers["es"]
    response = client.post("/cds-services/imt-patient-view", json=view_request(), headers=bearer(signer.token(VIEW)))
    cards = response.json()["cards"]
    crizotinib = next(c for c in cards if c["source"]["topic"]["code"] == "REC_CRIZOTINIB_ALK")
    listing = subprocess.run([str(SCRIPT), "audit", "list", "--db", str(service.audit), "--format", "json"],
                             capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0, listing.stderr
    records = json.loads(listing.stdout)
    last = records[-1]
    assert f"evaluation {last['id']}" in crizotinib["detail"]  # the evaluation id is the audit record id
    feedback = {"feedback": [{"card": crizotinib["uuid"], "outcome": "overridden",
                              "outcomeTimestamp": "2026-01-02T03:04:05Z"}]}
    for aud in (VIEW + "/feedback", VIEW):  # the feedback endpoint's URL, or the service's, as clients send it
        stored = client.post("/cds-services/imt-patient-view/feedback", json=feedback,
                             headers=bearer(signer.token(aud)))
        assert stored.status_code == 200 and stored.json() == {"stored": 1}
    with sqlite3.connect(service.audit) as db:
        rows = db.execute("SELECT card, outcome, evaluation_id, finding_code, body FROM cds_feedback").fetchall()
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("DELETE FROM cds_feedback")
    assert rows[-1][:4] == (crizotinib["uuid"], "overridden", last["id"], "REC_CRIZOTINIB_ALK")
    body = json.loads(rows[-1][4])
    assert body["client"] == {"iss": signer.iss, "tenant": "test-tenant"}
    verify = subprocess.run([str(SCRIPT), "audit", "verify", "--db", str(service.audit)], capture_output=True,
                            text=True, timeout=120)
    assert verify.returncode == 0 and "intact" in verify.stdout, verify.stdout + verify.stderr


# --- the replay cache ---------------------------------------------------------------------------------------------


def test_the_replay_cache_forgets_expired_tokens_and_stays_bounded():
    cache = ReplayCache(max_entries=3)
    assert cache.add(("iss", "a"), expires_at=100, now=0)
    assert not cache.add(("iss", "a"), expires_at=100, now=50)  # a replay while valid
    assert cache.add(("iss", "a"), expires_at=300, now=150)  # expired, so forgotten (the token is refused anyway)
    for jti, expiry in (("b", 400), ("c", 500), ("d", 600)):
        assert cache.add(("iss", jti), expires_at=expiry, now=160)
    assert len(cache) == 3
    assert cache.add(("iss", "a"), expires_at=300, now=160)  # the soonest-expiring was dropped to make room
    assert not cache.add(("iss", "d"), expires_at=600, now=160)  # the others are still remembered
    assert not cache.add(("iss", "c"), expires_at=500, now=160)
