"""Attacks with bearer tokens, each a test: long-lived and stale tokens, non-numeric time claims, oversized tokens,
hostile headers and key sets, replays across a restart and across replicas (SQLite and a real PostgreSQL server),
and what a refusal tells the caller.

Every server here is real: ``imt-cds serve`` through its console script, PostgreSQL started privately.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import jwt
import pytest
from audit_support import new_database, running_postgres
from service_support import Signer, bearer, hmac_token, running_service

from imt_cds.service.auth import AuthSettings, Authenticator, TrustedIssuer
from imt_cds.service.errors import UNAUTHORIZED_MESSAGE, UnauthorizedError

PUBLIC = "https://cds.example.org"
DISCOVERY = PUBLIC + "/cds-services"
YEAR = 365 * 24 * 3600
GENERIC_401 = {"error": {"code": "cds_unauthorized", "status": 401, "message": UNAUTHORIZED_MESSAGE}}


@pytest.fixture(scope="module")
def signer():
    return Signer("https://ehr.example.org/")


@pytest.fixture(scope="module")
def jwks(signer, tmp_path_factory):
    directory = tmp_path_factory.mktemp("jwks")
    path = directory / "jwks.json"
    # Entries of the wrong types beside the real key: they are skipped, never a crash.
    path.write_text(json.dumps({"keys": [{"kty": 5}, {"kty": "EC", "crv": ["P-384"], "kid": 7}, "text", None,
                                         *signer.jwks["keys"]]}))
    return path


@pytest.fixture(scope="module")
def service(signer, jwks, tmp_path_factory):
    audit = tmp_path_factory.mktemp("audit") / "audit.db"
    with running_service("--trust", signer.iss, str(jwks), "--audit", str(audit), "--workers", "1",
                         public_url=PUBLIC) as running:
        running.audit = audit  # type: ignore[attr-defined]
        yield running


def discover(service, token):
    return httpx.get(service.url + "/cds-services", headers=bearer(token), timeout=60)


def refused(service, response, reason):
    """A 401 with the one generic body and header; the reason is in the server log, not in the answer."""
    assert response.status_code == 401, response.text
    assert response.json() == GENERIC_401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    lines = [line for line in service.log_text().splitlines() if "refused (401)" in line]
    # This refusal's own line: one more than the last check saw (the module shares the server and its log).
    assert len(lines) > getattr(service, "refusals_seen", 0), "no line logged for this refusal"
    service.refusals_seen = len(lines)
    assert reason in lines[-1], lines[-1:]


def forged(signer, claims, header=None):
    """A token signed with the real key whose claims or header hold whatever an attacker likes."""
    return jwt.encode(claims, signer.key, algorithm="ES384", headers={"kid": signer.kid, **(header or {})})


# --- lifetime and age ----------------------------------------------------------------------------------------------


def test_a_fresh_short_lived_token_is_accepted(service, signer):
    assert discover(service, signer.token(DISCOVERY)).status_code == 200


def test_a_token_valid_for_ten_years_is_refused(service, signer):
    now = int(time.time())
    refused(service, discover(service, signer.token(DISCOVERY, iat=now, exp=now + 10 * YEAR)), "at most 300 s")


def test_a_token_issued_a_year_ago_is_refused_even_if_it_has_not_expired(service, signer):
    now = int(time.time())
    refused(service, discover(service, signer.token(DISCOVERY, iat=now - YEAR, exp=now + 120)), "lives")


def test_a_token_that_lives_just_over_the_limit_is_refused_and_one_at_the_limit_accepted(service, signer):
    now = int(time.time())
    refused(service, discover(service, signer.token(DISCOVERY, iat=now, exp=now + 301)), "at most 300 s")
    assert discover(service, signer.token(DISCOVERY, iat=now, exp=now + 300)).status_code == 200


def test_the_lifetime_limit_is_a_setting(tmp_path):
    signer = Signer("https://ehr.example.org/")
    path = signer.write_jwks(tmp_path)
    checker = Authenticator(AuthSettings((TrustedIssuer(signer.iss, str(path)),), max_lifetime_seconds=60))
    now = int(time.time())
    assert asyncio.run(checker.authenticate(f"Bearer {signer.token(DISCOVERY, exp=now + 60)}", [DISCOVERY]))
    with pytest.raises(UnauthorizedError, match="at most 60 s"):
        asyncio.run(checker.authenticate(f"Bearer {signer.token(DISCOVERY, exp=now + 61)}", [DISCOVERY]))


@pytest.mark.parametrize(("claim", "value"), [("exp", "9999999999"), ("iat", "0"), ("exp", True), ("iat", [1]),
                                              ("nbf", "0")])
def test_time_claims_must_be_numbers(service, signer, claim, value):
    now = int(time.time())
    claims = {"iss": signer.iss, "aud": DISCOVERY, "iat": now, "exp": now + 120, "jti": str(uuid.uuid4()),
              claim: value}
    refused(service, discover(service, forged(signer, claims)), f"{claim} must be a number")


def test_a_token_over_the_size_cap_is_refused(service, signer):
    token = signer.token(DISCOVERY, padding="x" * 12 * 1024)  # over the 8 KiB cap, within HTTP's header limits
    refused(service, discover(service, token), "bytes long")


def token_of_length(signer, audience, length):
    """A valid token exactly ``length`` characters long (base64url cannot make every length from the payload alone,
    so a header member of 0-2 characters takes up the rest)."""
    start = max(0, (length - len(signer.token(audience, padding=""))) * 3 // 4 - 8)  # a padding char is 4/3
    for extra in range(3):
        for padding in range(start, start + 24):
            token = signer.token(audience, padding="x" * padding, headers={"x": "y" * extra})
            if len(token) >= length:
                break
        if len(token) == length:
            return token
    raise AssertionError(f"no token of {length} characters")


def test_a_token_of_8_kib_is_accepted_and_one_byte_more_refused(tmp_path):
    signer = Signer("https://ehr.example.org/")
    checker = Authenticator(AuthSettings((TrustedIssuer(signer.iss, str(signer.write_jwks(tmp_path))),)))
    assert asyncio.run(checker.authenticate(f"Bearer {token_of_length(signer, DISCOVERY, 8192)}", [DISCOVERY]))
    with pytest.raises(UnauthorizedError, match="is 8193 bytes long; at most 8192 are accepted"):
        asyncio.run(checker.authenticate(f"Bearer {token_of_length(signer, DISCOVERY, 8193)}", [DISCOVERY]))


def test_a_64_kb_token_is_refused(service, signer):
    """So large a header is refused by the HTTP layer before the token is even read: a 4xx, or the connection
    closed; never accepted, never a 5xx."""
    token = signer.token(DISCOVERY, padding="x" * 64 * 1024)
    try:
        response = discover(service, token)
    except (httpx.ReadError, httpx.RemoteProtocolError):
        return  # the server closed the connection on the oversized header
    assert 400 <= response.status_code < 500, response.text


@pytest.mark.parametrize("header", [{"kid": ["test-kid"]}, {"kid": {"a": 1}}, {"jku": 5}, {"alg": ["ES384"]},
                                    {"typ": ["JWT"]}])
def test_header_values_of_the_wrong_type_are_a_401_never_a_500(service, signer, header):
    now = int(time.time())
    claims = {"iss": signer.iss, "aud": DISCOVERY, "iat": now, "exp": now + 120, "jti": str(uuid.uuid4())}
    token = _with_header(signer, claims, header)
    response = discover(service, token)
    assert response.status_code == 401 and response.json() == GENERIC_401, response.text


def _with_header(signer, claims, header):
    import base64

    def b64(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    token = forged(signer, claims)
    # alg stays ES384 unless the test replaces it, so the value under test is what the check meets first.
    return ".".join([b64({"alg": "ES384", "kid": signer.kid, "typ": "JWT", **header}), *token.split(".")[1:]])


@pytest.mark.parametrize("aud", [{"a": 1}, [["x"]], 5])
def test_claims_of_the_wrong_type_are_a_401_never_a_500(service, signer, aud):
    now = int(time.time())
    claims = {"iss": signer.iss, "aud": aud, "iat": now, "exp": now + 120, "jti": str(uuid.uuid4())}
    response = discover(service, forged(signer, claims))
    assert response.status_code == 401 and response.json() == GENERIC_401, response.text


def test_trusted_and_untrusted_issuers_get_the_same_refusal(service, signer):
    untrusted = Signer("https://attacker.example.net/")
    trusted_but_expired = signer.token(DISCOVERY, iat=int(time.time()) - 200, exp=int(time.time()) - 100)
    first = discover(service, untrusted.token(DISCOVERY))
    second = discover(service, trusted_but_expired)
    assert first.status_code == second.status_code == 401
    assert first.content == second.content and first.headers["www-authenticate"] == second.headers["www-authenticate"]


def test_a_token_id_is_remembered_as_long_as_the_token_could_be_accepted(tmp_path):
    # An expired token is still accepted within the leeway (60 s by default) after its exp: its jti must be
    # remembered that long, or a replay inside the leeway would pass; after that it may be forgotten.
    signer = Signer("https://ehr.example.org/")
    checker = Authenticator(AuthSettings((TrustedIssuer(signer.iss, str(signer.write_jwks(tmp_path))),)))
    token = signer.token(DISCOVERY)
    claims = asyncio.run(checker.authenticate(f"Bearer {token}", [DISCOVERY]))
    key, exp = (signer.iss, claims["jti"]), claims["exp"]
    with pytest.raises(UnauthorizedError) as caught:
        asyncio.run(checker.authenticate(f"Bearer {token}", [DISCOVERY]))
    assert str(caught.value) == f"JWT jti {claims['jti']!r} was already used: a replayed token is refused"
    assert not checker.replays.add(key, exp + 600, now=exp + 59.5)  # still remembered: a replay is refused
    assert checker.replays.add(key, exp + 600, now=exp + 60.5)  # forgotten once no leeway can accept the token


@pytest.mark.parametrize(("case", "reason"), [
    ("HS384", "JWT algorithm 'HS384' is not accepted: CDS Hooks forbids unsigned and symmetric (HMAC) tokens; this "
              "service accepts ES384 and RS384"),
    ("typ", "JWT header typ must be JWT, not 'at+jwt'"),
    ("jku", "JWT header jku must be a string"),
    ("aud", "JWT aud 'https://cds.example.org/elsewhere' is not this endpoint: expected "
            "'https://cds.example.org/cds-services'"),
    ("lifetime", "the JWT lives 301 s (exp - iat); at most 300 s are accepted"),
    ("empty jti", "the JWT jti must be a non-empty string"),
    ("issued in the future", "the JWT is not valid yet (iat or nbf is in the future)"),
    ("jti a number", "the JWT is not acceptable: JWT ID must be a string"),
    ("not a JWT", "the bearer token is not a well-formed JWT (Invalid header string: 'utf-8' codec can't decode "
                  "byte 0xb6 in position 0: invalid start byte)"),
])
def test_the_reason_a_token_is_refused_reads_as_written(tmp_path, case, reason):
    # The reason goes to the server log (the caller gets the generic 401): it is what an operator reads.
    signer = Signer("https://ehr.example.org/")
    checker = Authenticator(AuthSettings((TrustedIssuer(signer.iss, str(signer.write_jwks(tmp_path))),)))
    now = int(time.time())
    tokens = {
        "HS384": lambda: hmac_token(signer.claims(DISCOVERY), b"a shared secret"),
        "typ": lambda: signer.token(DISCOVERY, headers={"typ": "at+jwt"}),
        "jku": lambda: _with_header(signer, signer.claims(DISCOVERY), {"jku": 5}),
        "aud": lambda: signer.token(PUBLIC + "/elsewhere"),
        "lifetime": lambda: signer.token(DISCOVERY, iat=now - 1, exp=now + 300),
        "empty jti": lambda: signer.token(DISCOVERY, jti=""),
        "issued in the future": lambda: signer.token(DISCOVERY, iat=now + 3600, exp=now + 3700),
        "not a JWT": lambda: "this.is.not-a-jwt",
        "jti a number": lambda: signer.token(DISCOVERY, jti=5),
    }
    with pytest.raises(UnauthorizedError) as caught:
        asyncio.run(checker.authenticate(f"Bearer {tokens[case]()}", [DISCOVERY]))
    assert str(caught.value) == reason


# --- replays across processes --------------------------------------------------------------------------------------


def test_a_token_used_once_is_refused_by_a_second_server_sharing_the_store_and_after_a_restart(service, signer, jwks):
    token = signer.token(DISCOVERY)
    assert discover(service, token).status_code == 200
    with running_service("--trust", signer.iss, str(jwks), "--audit", str(service.audit), "--workers", "1",
                         public_url=PUBLIC) as replica:
        refused(replica, discover(replica, token), "already used")
        other = signer.token(DISCOVERY)
        assert discover(replica, other).status_code == 200
    refused(service, discover(service, other), "already used")  # and the other way round
    with running_service("--trust", signer.iss, str(jwks), "--audit", str(service.audit), "--workers", "1",
                         public_url=PUBLIC) as restarted:
        refused(restarted, discover(restarted, token), "already used")


def test_on_postgresql_replicas_share_the_replay_cache(signer, jwks):
    with running_postgres() as server:
        database = new_database(server)
        arguments = ("--trust", signer.iss, str(jwks), "--audit", database, "--workers", "1")
        with running_service(*arguments, public_url=PUBLIC) as first, \
                running_service(*arguments, public_url=PUBLIC) as second:
            token = signer.token(DISCOVERY)
            assert discover(first, token).status_code == 200
            refused(second, discover(second, token), "already used")
            refused(first, discover(first, token), "already used")
        with running_service(*arguments, public_url=PUBLIC) as restarted:
            refused(restarted, discover(restarted, token), "already used")
        import psycopg

        with psycopg.connect(database) as connection:
            rows = connection.execute("SELECT iss, jti FROM cds_jti").fetchall()
        assert (signer.iss, jwt.decode(token, options={"verify_signature": False})["jti"]) in rows
