"""The bearer-token checker, where the other authentication tests did not look: written against the mutants of
``imt_cds/service/auth.py`` that survived them.

Each test calls the real ``Authenticator`` with real key files or a real JWK Set server on loopback and real signed
tokens, and pins what an operator or a caller sees: the exact reason a token is refused (it is what the server log
says), how long a key set fetched from a URL is trusted and that a redirect is not followed, how long a token id is
kept. The key and replay caches go by the clock the authenticator is given, so here an hour passes without waiting
for it. The mutants that no input can tell apart are listed, with the reason, in tests/mutation-survivors.md.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from service_support import FhirServer, Signer

from imt_cds.service.auth import DEFAULT_STORE_TIMEOUT_SECONDS, Authenticator, AuthSettings, TrustedIssuer
from imt_cds.service.config import ServiceConfig
from imt_cds.service.errors import ServiceConfigError, UnauthorizedError
from imt_cds.service.replay_cache import SqlReplayCache
from imt_cds.service.workers import WorkerSettings

ISSUER = "https://ehr.example.org/"
AUDIENCE = "https://cds.example.org/cds-services"
README = Path(__file__).resolve().parent.parent / "README.md"


class Clock:
    """Seconds since the epoch as the test sets them."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def check(auth: Authenticator, token: str) -> dict[str, Any]:
    return asyncio.run(auth.authenticate(f"Bearer {token}", [AUDIENCE]))


def refused(auth: Authenticator, token: str) -> str:
    with pytest.raises(UnauthorizedError) as caught:
        check(auth, token)
    return str(caught.value)


def pinned(tmp_path: Path, signer: Signer) -> Authenticator:
    return Authenticator(AuthSettings(issuers=(TrustedIssuer(ISSUER, str(signer.write_jwks(tmp_path))),)))


def test_without_pyjwt_the_authenticator_says_what_to_install_instead_of_refusing_tokens(tmp_path, monkeypatch):
    # A missing library must stop the service at start with an instruction, never look like a bad token.
    path = Signer(ISSUER).write_jwks(tmp_path)
    monkeypatch.setitem(sys.modules, "jwt", None)  # what `import jwt` meets when PyJWT is not installed
    with pytest.raises(ServiceConfigError) as caught:
        Authenticator(AuthSettings(issuers=(TrustedIssuer(ISSUER, str(path)),)))
    assert str(caught.value) == "JWT authentication needs PyJWT with cryptography: pip install 'imt-cds[service]'"


def forged(signer: Signer, **changes: Any) -> str:
    """A token signed with the trusted key whose claims hold whatever the caller likes (``None`` drops one)."""
    return jwt.encode(signer.claims(AUDIENCE, **changes), signer.key, algorithm="ES384", headers={"kid": signer.kid})


@pytest.mark.parametrize(("changes", "reason"), [
    ({"exp": "9999999999"}, "JWT claim exp must be a number of seconds, not str"),
    ({"nbf": [0]}, "JWT claim nbf must be a number of seconds, not list"),
    ({"iss": "https://other.example.org/"},
     "JWT issuer 'https://other.example.org/' is not trusted by this service"),
    ({"iss": None}, "JWT issuer None is not trusted by this service"),
    # An exp too large for a float makes the lifetime arithmetic raise; whatever a token makes the code raise is
    # a refusal naming the exception, never a 500.
    ({"exp": 10**400}, "the JWT could not be checked (OverflowError: int too large to convert to float)"),
], ids=["exp a string", "nbf a list", "untrusted issuer", "no issuer", "exp beyond a float"])
def test_the_reason_a_token_is_refused_reads_as_written(tmp_path, changes, reason):
    # The reason goes to the server log (the caller gets the generic 401): it is what an operator reads.
    signer = Signer(ISSUER)
    assert refused(pinned(tmp_path, signer), forged(signer, **changes)) == reason



def test_an_expired_token_and_one_without_jti_are_refused_as_written(tmp_path):
    signer = Signer(ISSUER)
    auth = pinned(tmp_path, signer)
    now = int(time.time())
    expired = forged(signer, iat=now - 300, exp=now - 120)  # past exp by more than the 60 s leeway
    assert refused(auth, expired) == "the JWT has expired (exp is in the past)"
    assert refused(auth, forged(signer, jti=None)) == "the JWT lacks the required claim 'jti'"


def test_a_key_published_for_another_algorithm_is_refused_as_written(tmp_path):
    signer = Signer(ISSUER, "rsa-1", "RS384")
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{**signer.jwks["keys"][0], "alg": "RS256"}]}))
    auth = Authenticator(AuthSettings(issuers=(TrustedIssuer(ISSUER, str(path)),)))
    assert refused(auth, signer.token(AUDIENCE)) == f"key 'rsa-1' of {ISSUER} is for RS256, not RS384"

def test_a_jku_other_than_the_issuers_allow_listed_url_is_refused_as_written_before_any_fetch():
    # The jku is compared with the allow-listed URL before any key is looked for: nothing listens at the URL.
    url = "http://127.0.0.1:9/jwks.json"
    auth = Authenticator(AuthSettings(issuers=(TrustedIssuer(ISSUER, url),)))
    signer = Signer(ISSUER)
    token = signer.token(AUDIENCE, headers={"jku": "https://attacker.example.net/jwks.json"})
    assert refused(auth, token) == ("JWT jku 'https://attacker.example.net/jwks.json' is not the JWK Set URL "
                                    f"allow-listed for issuer {ISSUER}")


def url_authenticator(server: FhirServer, clock: Clock) -> Authenticator:
    return Authenticator(AuthSettings(issuers=(TrustedIssuer(ISSUER, server.origin + "/jwks.json"),)), clock=clock)


def test_a_key_set_fetched_from_a_url_is_trusted_for_an_hour_then_fetched_again():
    # The issuer replaces its key under the same kid: the cached set is used for an hour to the second, so the new
    # key's tokens are refused until then, and the next token after the hour has the set fetched again.
    old, new = Signer(ISSUER), Signer(ISSUER)
    clock = Clock(1_000_000.0)
    with FhirServer([], documents={"/jwks.json": old.jwks}) as server:
        auth = url_authenticator(server, clock)
        assert check(auth, old.token(AUDIENCE))["iss"] == ISSUER
        server.documents["/jwks.json"] = new.jwks
        clock.now += 3600.0
        assert refused(auth, new.token(AUDIENCE)) == "the JWT signature does not verify with the issuer's key"
        assert len(server.requests) == 1
        clock.now += 0.5
        assert check(auth, new.token(AUDIENCE))["iss"] == ISSUER
        assert len(server.requests) == 2


def test_an_unknown_kid_has_the_set_fetched_again_only_after_30_seconds_and_a_known_one_never_early():
    # A rotation: the issuer adds a key. A token naming it is refused until 30 s after the last fetch (one hostile
    # token per second cannot make the service fetch every second), then the set is fetched again and it verifies.
    first, rotated = Signer(ISSUER, "key-1"), Signer(ISSUER, "key-2")
    clock = Clock(1_000_000.0)
    with FhirServer([], documents={"/jwks.json": first.jwks}) as server:
        auth = url_authenticator(server, clock)
        assert check(auth, first.token(AUDIENCE))["iss"] == ISSUER
        server.documents["/jwks.json"] = {"keys": [*first.jwks["keys"], *rotated.jwks["keys"]]}
        clock.now += 30.0
        assert refused(auth, rotated.token(AUDIENCE)) == f"no key with kid 'key-2' in the JWK Set of {ISSUER}"
        assert len(server.requests) == 1
        clock.now += 0.5
        assert check(auth, rotated.token(AUDIENCE))["iss"] == ISSUER
        assert len(server.requests) == 2
        clock.now += 600.0  # long past the pause, but within the hour: a kid the set holds fetches nothing
        assert check(auth, first.token(AUDIENCE))["iss"] == ISSUER
        assert len(server.requests) == 2


def test_without_an_audit_store_100000_token_ids_are_remembered_then_the_soonest_to_expire_is_dropped(tmp_path):
    # The in-memory replay cache is bounded (README, SECURITY.md): it holds 100,000 token ids, and when full drops the
    # one whose token expires first. The other ids are put in directly: signing 100,000 tokens would take minutes.
    signer = Signer(ISSUER)
    auth = pinned(tmp_path, signer)
    token = signer.token(AUDIENCE)
    jti = check(auth, token)["jti"]
    later = time.time() + 3600.0  # every other id outlives the token's
    for n in range(99_999):
        assert auth.replays.add((ISSUER, f"other-{n}"), later, time.time())
    assert refused(auth, token) == f"JWT jti {jti!r} was already used: a replayed token is refused"
    assert auth.replays.add((ISSUER, str(uuid.uuid4())), later, time.time())
    assert len(auth.replays) == 100_000  # type: ignore[arg-type]
    assert check(auth, token)["jti"] == jti  # its id was the one dropped



def test_with_an_audit_store_a_token_id_is_remembered_until_exp_plus_the_leeway(tmp_path):
    # An expired token is still accepted within the leeway (60 s) after its exp, so the database must keep its id
    # that long. The replay cache goes by the authenticator's clock; PyJWT checks exp against the system clock.
    signer = Signer(ISSUER)
    clock = Clock(time.time())
    auth = Authenticator(AuthSettings(issuers=(TrustedIssuer(ISSUER, str(signer.write_jwks(tmp_path))),)),
                         replay_store=str(tmp_path / "audit.db"), clock=clock)
    try:
        token = signer.token(AUDIENCE)
        claims = check(auth, token)
        clock.now = claims["exp"] + 59.5
        assert refused(auth, token) == f"JWT jti {claims['jti']!r} was already used: a replayed token is refused"
    finally:
        auth.replays.close()


@pytest.mark.parametrize(("authorization", "reason"), [
    (None, "no Authorization header: CDS Hooks clients must send a bearer JWT on every call"),
    ("", "no Authorization header: CDS Hooks clients must send a bearer JWT on every call"),
    ("Basic dXNlcjpwYXNz", "the Authorization header must be 'Bearer <JWT>'"),
    ("Bearer   ", "the Authorization header must be 'Bearer <JWT>'"),
], ids=["none", "empty", "basic", "bearer without token"])
def test_a_missing_or_malformed_authorization_header_is_refused_as_written(tmp_path, authorization, reason):
    auth = pinned(tmp_path, Signer(ISSUER))
    with pytest.raises(UnauthorizedError) as caught:
        asyncio.run(auth.authenticate(authorization, [AUDIENCE]))
    assert str(caught.value) == reason


@contextmanager
def loopback_server(handler: type[BaseHTTPRequestHandler], on_exit: threading.Event | None = None) -> Iterator[str]:
    """Serves ``handler`` on 127.0.0.1 in a thread; yields the URL of its /jwks.json. ``on_exit`` is set before the
    server stops, so that a handler waiting on it ends with the test."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    finally:
        if on_exit is not None:
            on_exit.set()
        server.shutdown()
        server.server_close()


@contextmanager
def redirecting_to(location: str) -> Iterator[str]:
    """A loopback server answering every GET with a 302 to ``location``; yields its own URL for /jwks.json."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # http.server's naming
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

    with loopback_server(Handler) as url:
        yield url


def test_a_jwk_set_url_answering_a_redirect_is_refused_and_the_redirect_not_followed():
    # The allow-listed URL is the only place keys come from: a redirect (an open redirect on the issuer's host, a
    # hijacked host) would let another server choose the keys.
    signer = Signer(ISSUER)
    with FhirServer([], documents={"/jwks.json": signer.jwks}) as elsewhere, \
            redirecting_to(elsewhere.origin + "/jwks.json") as url:
        auth = Authenticator(AuthSettings(issuers=(TrustedIssuer(ISSUER, url),)))
        assert refused(auth, signer.token(AUDIENCE)) == f"cannot get the JWK Set of {ISSUER} from {url}: HTTP 302"
    assert elsewhere.requests == []


def test_a_jwk_set_holding_only_a_symmetric_key_is_refused_at_start(tmp_path):
    # A shared secret ("k") is never a key this service verifies with, even one published without alg (which PyJWK
    # would take as HS256): a set with nothing else has no usable key, and says so before any token arrives.
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0LXNoYXJlZC13aXRoLXRoZS1laHI", "kid": "shared"}]}))
    with pytest.raises(ServiceConfigError) as caught:
        Authenticator(AuthSettings(issuers=(TrustedIssuer(ISSUER, str(path)),)))
    assert str(caught.value) == \
        f"the JWK Set of {ISSUER} at {path}: no usable public signing key (EC P-384 or RSA) in it"


def test_a_replay_store_given_without_a_timeout_waits_the_services_documented_store_timeout(tmp_path):
    # A library caller and the service must not differ: both wait DEFAULT_STORE_TIMEOUT_SECONDS (5 s, the README's
    # --store-timeout default) for the replay store's write lock before refusing the call.
    signer = Signer(ISSUER)
    settings = AuthSettings(issuers=(TrustedIssuer(ISSUER, str(signer.write_jwks(tmp_path))),))
    auth = Authenticator(settings, replay_store=str(tmp_path / "audit.db"))
    try:
        assert check(auth, signer.token(AUDIENCE))["iss"] == ISSUER  # the store works with it
        assert isinstance(auth.replays, SqlReplayCache)
        assert auth.replays.lock_timeout == DEFAULT_STORE_TIMEOUT_SECONDS == 5.0
    finally:
        auth.replays.close()
    assert ServiceConfig("http://127.0.0.1:8080").store_timeout == DEFAULT_STORE_TIMEOUT_SECONDS
    assert WorkerSettings().store_timeout == DEFAULT_STORE_TIMEOUT_SECONDS  # a worker's audit appends, too
    row = next(line for line in README.read_text(encoding="utf-8").splitlines()
               if line.startswith("| `--store-timeout S`"))
    assert "(default 5;" in row


def test_the_jwk_set_fetch_timeout_is_ten_seconds_unless_set_as_the_readme_says():
    assert AuthSettings(issuers=()).jwks_timeout_seconds == 10.0
    readme = " ".join(README.read_text(encoding="utf-8").split())
    assert "a fetch that takes more than 10 s altogether (`AuthSettings.jwks_timeout_seconds`, at most 60)" in readme


@contextmanager
def slow_jwks_server(jwks: dict[str, Any], wait_before: float = 0.0, pause_between_chunks: float = 0.0,
                     chunks: int = 1) -> Iterator[str]:
    """A loopback server answering GET /jwks.json with ``jwks`` after ``wait_before`` seconds, its body sent in
    ``chunks`` pieces ``pause_between_chunks`` apart; yields its URL. Every wait ends when the test is over."""
    body = json.dumps(jwks).encode()
    over = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # http.server's naming
            try:
                if over.wait(wait_before):
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                size = -(-len(body) // chunks)
                for start in range(0, len(body), size):
                    self.wfile.write(body[start:start + size])
                    if start + size < len(body) and over.wait(pause_between_chunks):
                        return
            except OSError:  # the client gave up waiting: what these tests are about
                pass

    with loopback_server(Handler, on_exit=over) as url:
        yield url


def test_a_jwk_set_server_slower_than_the_fetch_timeout_has_the_token_refused_and_a_longer_timeout_waits_for_it():
    # The server answers after 1 s: with a 0.3 s timeout the token is refused naming the setting (well before the
    # 10 s default would have let the answer in), with a 5 s one the same answer is waited for and the token passes.
    signer = Signer(ISSUER)
    with slow_jwks_server(signer.jwks, wait_before=1.0) as url:
        impatient = Authenticator(AuthSettings(issuers=(TrustedIssuer(ISSUER, url),), jwks_timeout_seconds=0.3))
        assert refused(impatient, signer.token(AUDIENCE)) == (
            f"cannot get the JWK Set of {ISSUER} from {url}: no complete answer within 0.3 s (jwks_timeout_seconds)")
        patient = Authenticator(AuthSettings(issuers=(TrustedIssuer(ISSUER, url),), jwks_timeout_seconds=5))
        assert check(patient, signer.token(AUDIENCE))["iss"] == ISSUER


def test_the_fetch_timeout_bounds_the_whole_answer_not_each_read():
    # A server that sends its answer a piece every 0.1 s never leaves a read waiting 0.5 s, yet takes 1.5 s in all.
    signer = Signer(ISSUER)
    with slow_jwks_server(signer.jwks, pause_between_chunks=0.1, chunks=16) as url:
        auth = Authenticator(AuthSettings(issuers=(TrustedIssuer(ISSUER, url),), jwks_timeout_seconds=0.5))
        assert refused(auth, signer.token(AUDIENCE)) == (
            f"cannot get the JWK Set of {ISSUER} from {url}: no complete answer within 0.5 s (jwks_timeout_seconds)")


@pytest.mark.parametrize("seconds", [0, -1, 60.5, float("nan"), float("inf"), "10", True, None],
                         ids=["zero", "negative", "over a minute", "nan", "infinite", "text", "boolean", "none"])
def test_a_jwk_set_fetch_timeout_that_is_not_a_number_of_seconds_up_to_a_minute_is_refused_at_start(seconds):
    with pytest.raises(ServiceConfigError) as caught:
        Authenticator(AuthSettings(issuers=(TrustedIssuer(ISSUER, "https://ehr.example.org/jwks.json"),),
                                   jwks_timeout_seconds=seconds))
    assert str(caught.value) == (f"jwks_timeout_seconds {seconds!r} must be a number of seconds more than 0 and at "
                                 "most 60")


def test_a_jwk_set_fetch_timeout_of_a_minute_is_accepted():
    auth = Authenticator(AuthSettings(issuers=(TrustedIssuer(ISSUER, "https://ehr.example.org/jwks.json"),),
                                      jwks_timeout_seconds=60))
    assert auth.settings.jwks_timeout_seconds == 60


def test_a_jwk_set_answer_that_never_ends_is_refused_for_its_size_not_held_in_memory_until_the_deadline():
    # The body is read a chunk at a time and the fetch stops past 256 kB: a server sending an endless answer (no
    # Content-Length, data until the client hangs up) is refused for its size long before the 5 s deadline.
    signer = Signer(ISSUER)
    over = threading.Event()
    sent: list[int] = []

    class Endless(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # http.server's naming
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                self.wfile.write(b'{"keys": [], "padding": "')
                # 64 KiB every 10 ms: past the cap within a tenth of a second, far from 256 MB within the deadline
                # (the bound that ends the loop even if the client never hangs up).
                while sum(sent) < 256 * 1024 * 1024 and not over.wait(0.01):
                    self.wfile.write(b"x" * 65536)
                    sent.append(65536)
            except OSError:  # the client hung up: what this test is about
                pass

    with loopback_server(Endless, on_exit=over) as url:
        auth = Authenticator(AuthSettings(issuers=(TrustedIssuer(ISSUER, url),), jwks_timeout_seconds=5))
        assert refused(auth, signer.token(AUDIENCE)) == (
            f"cannot get the JWK Set of {ISSUER} from {url}: the JWK Set is larger than 256 kB")
