"""The issuer's JWK Set as the authenticator reads it: which keys it uses, which algorithm binds each key, and the
one-line error a malformed set gives at start.

These call the real ``Authenticator`` with real key files and real signed tokens (no server is needed to read a key
file; the HTTP path is covered by ``test_service_auth.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from service_support import FhirServer, Signer

from imt_cds.service.auth import Authenticator, AuthSettings, TrustedIssuer
from imt_cds.service.errors import ServiceConfigError, UnauthorizedError

ISSUER = "https://ehr.example.org/"
AUDIENCE = "https://cds.example.org/cds-services"


def authenticator(tmp_path: Path, jwks: Any) -> Authenticator:
    path = tmp_path / f"jwks-{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps(jwks))
    return Authenticator(AuthSettings(issuers=(TrustedIssuer(ISSUER, str(path)),)))


def check(auth: Authenticator, token: str) -> dict[str, Any]:
    return asyncio.run(auth.authenticate(f"Bearer {token}", [AUDIENCE]))


def refused(auth: Authenticator, token: str) -> str:
    with pytest.raises(UnauthorizedError) as caught:
        check(auth, token)
    message = str(caught.value)
    assert "\n" not in message
    return message


def public_jwk(signer: Signer, **changes: Any) -> dict[str, Any]:
    jwk = {**signer.jwks["keys"][0], **changes}
    return {k: v for k, v in jwk.items() if v is not None}


@pytest.mark.parametrize("stray", [{}, {"crv": "P-384"}], ids=["plain", "with a member RSA keys do not define"])
def test_an_rsa_key_published_without_alg_verifies_rs384(tmp_path, stray):
    # A member the key type does not define is ignored (RFC 7517, section 4), so it cannot change the algorithm.
    signer = Signer(ISSUER, "rsa-1", "RS384")
    auth = authenticator(tmp_path, {"keys": [public_jwk(signer, alg=None, **stray)]})
    assert check(auth, signer.token(AUDIENCE))["iss"] == ISSUER


def test_an_ec_p384_key_published_without_alg_verifies_es384(tmp_path):
    signer = Signer(ISSUER)
    auth = authenticator(tmp_path, {"keys": [public_jwk(signer, alg=None)]})
    assert check(auth, signer.token(AUDIENCE))["iss"] == ISSUER


def test_a_key_published_for_rs256_does_not_verify_an_rs384_token(tmp_path):
    signer = Signer(ISSUER, "rsa-1", "RS384")
    auth = authenticator(tmp_path, {"keys": [public_jwk(signer, alg="RS256")]})
    assert "key 'rsa-1' of https://ehr.example.org/ is for RS256, not RS384" in refused(auth, signer.token(AUDIENCE))


def test_a_p256_key_without_alg_cannot_verify_es384(tmp_path):
    signer = Signer(ISSUER)
    other_curve = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key()))
    auth = authenticator(tmp_path, {"keys": [{**other_curve, "kid": signer.kid}]})
    assert refused(auth, signer.token(AUDIENCE)) == f"key 'test-kid' of {ISSUER} cannot verify ES384 (needs EC P-384)"


def test_an_rsa_key_cannot_verify_es384_whatever_the_token_header_says(tmp_path):
    rsa_signer, ec_signer = Signer(ISSUER, "test-kid", "RS384"), Signer(ISSUER)
    auth = authenticator(tmp_path, {"keys": [public_jwk(rsa_signer, alg=None)]})
    assert refused(auth, ec_signer.token(AUDIENCE)) == \
        f"key 'test-kid' of {ISSUER} cannot verify ES384 (needs EC P-384)"


def test_private_and_encryption_keys_in_the_set_are_never_used(tmp_path):
    signer = Signer(ISSUER)
    private = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(signer.key))  # holds "d": the private scalar
    with pytest.raises(ServiceConfigError, match="no usable public signing key"):
        authenticator(tmp_path, {"keys": [{**private, "kid": signer.kid}]})
    with pytest.raises(ServiceConfigError, match="no usable public signing key"):
        authenticator(tmp_path, {"keys": [public_jwk(signer, use="enc")]})


def test_entries_of_the_wrong_types_are_skipped_beside_a_usable_key(tmp_path):
    signer = Signer(ISSUER)
    junk = [{"kty": 5}, {"kty": "EC", "crv": ["P-384"], "kid": 7}, "text", None,
            public_jwk(signer, kid="odd-alg", alg=["ES384"]), public_jwk(signer, kid="odd-alg2", alg={"x": 1})]
    auth = authenticator(tmp_path, {"keys": [*junk, *signer.jwks["keys"]]})
    assert check(auth, signer.token(AUDIENCE))["iss"] == ISSUER
    assert refused(auth, signer.token(AUDIENCE, headers={"kid": "odd-alg"})) == \
        f"no key with kid 'odd-alg' in the JWK Set of {ISSUER}"


@pytest.mark.parametrize(("jwks", "says"), [
    ([], 'expected a JWK Set: {"keys": [...]}'),
    ({"keys": {}}, 'expected a JWK Set: {"keys": [...]}'),
    ({"keys": []}, "no usable public signing key (EC P-384 or RSA) in it"),
    ({"keys": [{"kty": "EC", "crv": "P-384", "x": "bad", "y": "bad"}]},
     "no usable public signing key (EC P-384 or RSA) in it"),
])
def test_a_malformed_jwk_set_is_a_one_line_error_naming_the_issuer_and_file(tmp_path, jwks, says):
    with pytest.raises(ServiceConfigError) as caught:
        authenticator(tmp_path, jwks)
    (path,) = tmp_path.glob("jwks-*.json")
    assert str(caught.value) == f"the JWK Set of {ISSUER} at {path}: {says}"


def test_a_jwk_set_file_that_cannot_be_read_or_is_not_json_is_a_one_line_error(tmp_path):
    missing = tmp_path / "missing.json"
    with pytest.raises(ServiceConfigError) as caught:
        Authenticator(AuthSettings(issuers=(TrustedIssuer(ISSUER, str(missing)),)))
    assert str(caught.value) == f"cannot read the JWK Set of {ISSUER} at {missing}: No such file or directory"
    garbled = tmp_path / "garbled.json"
    garbled.write_text("{not json")
    with pytest.raises(ServiceConfigError) as caught:
        Authenticator(AuthSettings(issuers=(TrustedIssuer(ISSUER, str(garbled)),)))
    assert str(caught.value) == (f"the JWK Set of {ISSUER} at {garbled} is not JSON: "
                                 "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)")


def test_a_token_without_kid_is_checked_with_the_sets_only_key_and_refused_when_it_holds_several(tmp_path):
    signer, other = Signer(ISSUER), Signer(ISSUER, "other-kid")
    token = jwt.encode(signer.claims(AUDIENCE), signer.key, algorithm="ES384")  # no kid in the header
    assert check(authenticator(tmp_path, signer.jwks), token)["iss"] == ISSUER
    several = authenticator(tmp_path, {"keys": [*other.jwks["keys"], *signer.jwks["keys"]]})
    assert refused(several, token) == f"the JWT has no kid and the JWK Set of {ISSUER} holds several keys"


@pytest.mark.parametrize("claim", ["iat", "exp"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_time_claim_that_is_not_a_finite_number_is_refused(tmp_path, claim, value):
    # JSON as Python reads it allows NaN and Infinity; PyJWT refuses them as time claims, so no check of our own.
    signer = Signer(ISSUER)
    auth = authenticator(tmp_path, signer.jwks)
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 120, "jti": str(uuid.uuid4()), claim: value}
    token = jwt.encode(claims, signer.key, algorithm="ES384", headers={"kid": signer.kid})
    assert f"({claim})" in refused(auth, token)


def test_the_lifetime_cap_also_refuses_an_old_token_that_has_not_expired(tmp_path):
    signer = Signer(ISSUER)
    auth = authenticator(tmp_path, signer.jwks)
    now = int(time.time())
    assert "at most 300 s are accepted" in refused(auth, signer.token(AUDIENCE, iat=now - 3600, exp=now + 60))
    assert check(auth, signer.token(AUDIENCE, iat=now - 200, exp=now + 60))["iss"] == ISSUER


def padded_to(jwks: dict[str, Any], size: int) -> dict[str, Any]:
    """The JWK Set with a padding member that makes its JSON (as the test server sends it) exactly ``size`` bytes."""
    bare = len(json.dumps({**jwks, "padding": ""}).encode())
    padded = {**jwks, "padding": "x" * (size - bare)}
    assert len(json.dumps(padded).encode()) == size
    return padded


def test_a_jwk_set_url_answering_more_than_256_kib_or_an_error_is_refused_and_256_kib_are_read(tmp_path):
    # The cap bounds what one token naming an unknown kid can make the service download and parse.
    signer = Signer(ISSUER)
    documents = {"/at-cap.json": padded_to(signer.jwks, 256 * 1024),
                 "/over-cap.json": padded_to(signer.jwks, 256 * 1024 + 1)}
    with FhirServer([], documents=documents) as server:
        at_cap = Authenticator(AuthSettings(issuers=(TrustedIssuer(ISSUER, server.origin + "/at-cap.json"),)))
        assert check(at_cap, signer.token(AUDIENCE))["iss"] == ISSUER
        over_cap = Authenticator(AuthSettings(issuers=(TrustedIssuer(ISSUER, server.origin + "/over-cap.json"),)))
        assert f"cannot get the JWK Set of {ISSUER} from {server.origin}/over-cap.json: the JWK Set is larger " \
               "than 256 kB" in refused(over_cap, signer.token(AUDIENCE))
        missing = Authenticator(AuthSettings(issuers=(TrustedIssuer(ISSUER, server.origin + "/missing.json"),)))
        assert refused(missing, signer.token(AUDIENCE)) == \
            f"cannot get the JWK Set of {ISSUER} from {server.origin}/missing.json: HTTP 404"
    assert [headers.get("accept") for _, headers in server.requests] == ["application/json"] * 3


@pytest.mark.parametrize("url", ["http://ehr.example.org/jwks.json", "http://10.0.0.1/jwks.json",
                                 "http://localhost.example.org/jwks.json", "https:///jwks.json"])
def test_a_jwk_set_url_must_be_https_or_http_on_loopback(url):
    # Keys fetched over plain http from another host could be swapped by anyone on the way. Nothing is fetched here.
    with pytest.raises(ServiceConfigError) as caught:
        Authenticator(AuthSettings(issuers=(TrustedIssuer(ISSUER, url),)))
    assert str(caught.value) == f"JWK Set URL {url!r} must be https:// (http:// is allowed only on loopback)"


@pytest.mark.parametrize("url", ["https://ehr.example.org/jwks.json", "http://127.0.0.1:1/jwks.json",
                                 "http://[::1]:1/jwks.json", "http://localhost:1/jwks.json"])
def test_an_https_url_or_an_http_url_on_loopback_is_accepted_as_a_jwk_set_url(url):
    assert Authenticator(AuthSettings(issuers=(TrustedIssuer(ISSUER, url),))).settings.issuers[0].jwks_url == url


def test_a_jwk_set_url_that_does_not_answer_refuses_the_token_naming_the_url(tmp_path):
    with socket.socket() as probe:  # a loopback port nothing listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/jwks.json"
    signer = Signer(ISSUER)
    auth = Authenticator(AuthSettings(issuers=(TrustedIssuer(ISSUER, url),)))
    assert refused(auth, signer.token(AUDIENCE)).startswith(f"cannot get the JWK Set of {ISSUER} from {url}: "
                                                             "ConnectError: ")


def test_an_issuer_configured_twice_is_a_one_line_error(tmp_path):
    signer = Signer(ISSUER)
    path = signer.write_jwks(tmp_path)
    with pytest.raises(ServiceConfigError) as caught:
        Authenticator(AuthSettings(issuers=(TrustedIssuer(ISSUER, str(path)), TrustedIssuer(ISSUER, str(path)))))
    assert str(caught.value) == f"issuer {ISSUER} is configured twice"


def test_the_settings_cannot_be_changed_once_given(tmp_path):
    # One AuthSettings is handed to every worker's authenticator: none may change what the others check.
    settings = AuthSettings(issuers=(TrustedIssuer(ISSUER, str(Signer(ISSUER).write_jwks(tmp_path))),))
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.max_lifetime_seconds = 10**9  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.issuers[0].jwks = "https://attacker.example.net/jwks.json"  # type: ignore[misc]


def test_an_ec_key_cannot_verify_rs384(tmp_path):
    ec_signer, rsa_signer = Signer(ISSUER), Signer(ISSUER, "test-kid", "RS384")
    auth = authenticator(tmp_path, {"keys": [public_jwk(ec_signer, alg=None)]})
    assert refused(auth, rsa_signer.token(AUDIENCE)) == f"key 'test-kid' of {ISSUER} cannot verify RS384 (needs RSA)"
