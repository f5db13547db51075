"""Who may call the service: CDS Hooks 2.0.1 bearer JWTs from allow-listed issuers, checked on every call.

A CDS client signs a short JWT with its private key and sends it as ``Authorization: Bearer <jwt>`` on every call,
discovery included. ``Authenticator.authenticate`` accepts it only when all of these hold, and otherwise says which
one failed (``UnauthorizedError``; the answer is a 401 naming the reason):

- the header's ``alg`` is ES384 or RS384 (``none`` and every HMAC algorithm are refused: the spec forbids unsigned
  and symmetric tokens, and accepting a public key as an HMAC secret is the classic forgery);
- ``iss`` is a trusted issuer, and the key comes from *that issuer's* JWK Set: a file given at start, or an
  allow-listed URL (``https``, or ``http`` on loopback for tests). A ``jku`` header must name the issuer's
  allow-listed URL; the service never fetches keys from a URL a token names. With a pinned key file, ``jku`` is
  not used at all (the keys were exchanged out of band, as the spec allows);
- the key is the one ``kid`` names (``kid`` may be left out only when the set holds one key), its type fits the
  algorithm (EC P-384 for ES384, RSA for RS384), the algorithm it is bound to is the token's, and the signature
  verifies. PyJWT reads the set (``PyJWKSet``) and binds each key to one algorithm: its own ``alg``, or for a key
  published without one, the algorithm this service accepts for its type (never the token header's ``alg``);
  private, symmetric and encryption keys in the set are never used;
- ``aud`` (a string or a list) contains the URL of the endpoint called, built from the configured public URL;
- ``exp`` and ``iat`` are numbers (a string or a boolean is refused, not converted), ``exp`` is in the future,
  ``iat`` is not in the future, each with a small clock skew (``leeway_seconds``; these PyJWT checks), and the
  token's lifetime ``exp - iat`` is at most ``max_lifetime_seconds`` (default 5 minutes: CDS Hooks 2.0.1 recommends
  tokens that expire within minutes, so a stolen one is soon worthless), which with ``exp`` in the future also
  refuses an ``iat`` older than that;
- the token is at most ``max_token_bytes`` long (8 KiB by default; a CDS client's token is well under 2 KiB);
- ``jti`` is present and was not seen before from that issuer while the token is valid (``replay_cache.py``: in the
  audit store's database when there is one, shared by replicas and kept across restarts; else in memory).

Every refusal is an ``UnauthorizedError`` (a 401), whatever is wrong with the token or with the keys: malformed
JSON, claims or header values of the wrong type, a key of the wrong type in the JWK Set. Its message names the
check that failed; it goes to the server log, and the client gets one generic 401 body (``errors.public_body``), so
the answer does not tell an attacker which check to work on or which issuers are trusted.

Keys fetched from a URL are cached for an hour and fetched again (at most every 30 seconds) when a token names a key
id the cached set lacks, so a client can rotate keys (as ``jwt.PyJWKClient`` does; it is not used itself: it fetches
with blocking urllib calls, which would stall the event loop, and reads a response of any size, where this module
reads at most 256 kB). A fetch may take ``AuthSettings.jwks_timeout_seconds`` altogether (default 10 s, at most 60);
past it, or on any other failure, the token that needed the keys is refused, and so is every token that needs that
set for the next ``JWKS_FAILURE_MEMORY_SECONDS`` (30 s), at once and without fetching again: otherwise a set that
hangs would hold each call for the whole timeout, one after another behind the issuer's lock. The failure is logged
once. This module never logs a token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from .errors import ServiceConfigError, ServiceError, UnauthorizedError, log_value
from .replay_cache import ReplayCache, open_replay_cache

__all__ = ["ALLOWED_ALGORITHMS", "DEFAULT_STORE_TIMEOUT_SECONDS", "AuthSettings", "Authenticator", "TrustedIssuer"]

log = logging.getLogger("imt_cds.service.auth")

ALLOWED_ALGORITHMS = ("ES384", "RS384")
_KEY_TYPES = {"ES384": ("EC", "P-384"), "RS384": ("RSA", None)}
JWKS_TTL_SECONDS = 3600.0
JWKS_MIN_REFRESH_SECONDS = 30.0
# How long a failed JWK Set fetch is remembered: tokens needing the set are refused without a new fetch meanwhile.
JWKS_FAILURE_MEMORY_SECONDS = 30.0
MAX_JWKS_BYTES = 256 * 1024
# A JWK Set fetch holds the call that needed it, and every other call for that issuer waits on the same fetch: past
# a minute no EHR is still waiting for the answer.
MAX_JWKS_TIMEOUT_SECONDS = 60.0
# Seconds a token id's write to the replay store may wait for the database's write lock before the call is refused
# (503). The service's --store-timeout default (ServiceConfig.store_timeout) is this same value, so a library caller
# that gives a replay store and no timeout gets what the service documents.
DEFAULT_STORE_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class TrustedIssuer:
    """An allow-listed JWT issuer and where its public keys are: a JWK Set file, or an http(s) URL."""

    iss: str
    jwks: str  # a file path, or an https:// URL (http:// only on loopback)

    @property
    def jwks_url(self) -> str | None:
        return self.jwks if self.jwks.startswith(("https://", "http://")) else None


@dataclass(frozen=True)
class AuthSettings:
    issuers: tuple[TrustedIssuer, ...]
    leeway_seconds: int = 60
    replay_cache_size: int = 100_000  # in-memory replay cache entries (without an audit store)
    max_lifetime_seconds: int = 300  # longest exp - iat accepted (CDS Hooks: tokens live for minutes)
    max_token_bytes: int = 8192  # longest bearer token accepted
    # Seconds a JWK Set fetch from an issuer's URL may take altogether (connecting, sending, the whole answer); past
    # it the token that needed the keys is refused, and the next one tries again. At most MAX_JWKS_TIMEOUT_SECONDS.
    jwks_timeout_seconds: float = 10.0


@dataclass
class _KeySet:
    keys: Any  # jwt.PyJWKSet: the issuer's usable public signing keys, each bound to one algorithm
    fetched_at: float


class Authenticator:
    """Checks bearer JWTs against the trusted issuers. Build it once (key files are read and checked here)."""

    def __init__(self, settings: AuthSettings, replay_store: str | None = None,
                 replay_timeout: float = DEFAULT_STORE_TIMEOUT_SECONDS, clock: Callable[[], float] = time.time):
        """``replay_store``: the audit store's target (SQLite path or ``postgresql://``) to keep token ids in, so
        that replicas share them and a restart forgets none; None keeps them in this process's memory.
        ``replay_timeout``: seconds a token id's write to ``replay_store`` may wait for the database's write lock
        before the call is refused (``ServiceUnavailableError``, a 503); default ``DEFAULT_STORE_TIMEOUT_SECONDS``
        (5), the service's ``--store-timeout`` default.
        ``clock``: the seconds (since the epoch) that the key cache and the replay cache go by; a test passes its
        own to see an hour-old key set. A token's ``exp`` and ``iat`` are checked by PyJWT against the system clock."""
        try:
            import jwt
        except ImportError as exc:  # never let a missing library look like a bad token
            raise ServiceConfigError("JWT authentication needs PyJWT with cryptography: "
                                     "pip install 'imt-cds[service]'") from exc
        self._jwt = jwt
        _check_jwks_timeout(settings.jwks_timeout_seconds)
        self._clock = clock
        self.settings = settings
        self._issuers: dict[str, TrustedIssuer] = {}
        self._pinned: dict[str, _KeySet] = {}
        self._fetched: dict[str, _KeySet] = {}
        self._failed: dict[str, tuple[float, str]] = {}  # JWK Set URL -> when its last fetch failed, and why
        self._locks: dict[str, asyncio.Lock] = {}
        self.replays: ReplayCache = open_replay_cache(replay_store, settings.replay_cache_size, replay_timeout)
        self._replay_blocks = replay_store is not None
        for issuer in settings.issuers:
            if issuer.iss in self._issuers:
                raise ServiceConfigError(f"issuer {issuer.iss} is configured twice")
            self._issuers[issuer.iss] = issuer
            if issuer.jwks_url is None:
                self._pinned[issuer.iss] = self._load_file(issuer)
            else:
                _check_jwks_url(issuer.jwks_url)

    # -- configuration ---------------------------------------------------------------------------------------------

    def _load_file(self, issuer: TrustedIssuer) -> _KeySet:
        path = Path(issuer.jwks)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ServiceConfigError(f"cannot read the JWK Set of {issuer.iss} at {path}: {exc.strerror}") from exc
        except ValueError as exc:
            raise ServiceConfigError(f"the JWK Set of {issuer.iss} at {path} is not JSON: {exc}") from exc
        try:
            return _KeySet(self._keys(data), self._clock())
        except ValueError as exc:
            raise ServiceConfigError(f"the JWK Set of {issuer.iss} at {path}: {exc}") from exc

    def _keys(self, data: Any) -> Any:
        """The usable public signing keys of a JWK Set (a ``jwt.PyJWKSet``), or ``ValueError`` saying why none."""
        if not isinstance(data, Mapping) or not isinstance(data.get("keys"), list):
            raise ValueError('expected a JWK Set: {"keys": [...]}')
        usable = [_with_algorithm(raw) for raw in data["keys"] if _public_signing_key(raw)]
        try:
            # PyJWKSet skips entries it cannot turn into a key (an unknown kty, a malformed curve point, ...).
            return self._jwt.PyJWKSet(usable)
        except self._jwt.PyJWTError:
            raise ValueError("no usable public signing key (EC P-384 or RSA) in it") from None

    # -- checking a request ----------------------------------------------------------------------------------------

    async def authenticate(self, authorization: str | None, audiences: Iterable[str]) -> dict[str, Any]:
        """The verified claims of the request's bearer JWT, or ``UnauthorizedError`` saying what is wrong."""
        token = _bearer(authorization)
        if len(token) > self.settings.max_token_bytes:
            raise UnauthorizedError(f"the bearer token is {len(token)} bytes long; at most "
                                    f"{self.settings.max_token_bytes} are accepted")
        try:
            return await self._check(token, audiences)
        except ServiceError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever a hostile token makes a library raise, it is refused
            raise UnauthorizedError(f"the JWT could not be checked ({type(exc).__name__}: {log_value(exc)})") from None

    async def _check(self, token: str, audiences: Iterable[str]) -> dict[str, Any]:
        try:
            # Header and claims from one parse (the signature is checked below, once the key is known).
            parsed = self._jwt.decode_complete(token, options={"verify_signature": False})
            header, unverified = parsed["header"], parsed["payload"]
        except self._jwt.PyJWTError as exc:
            raise UnauthorizedError(f"the bearer token is not a well-formed JWT ({log_value(exc)})") from None
        if not isinstance(header, Mapping) or not isinstance(unverified, Mapping):
            raise UnauthorizedError("the JWT header and payload must be JSON objects")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
            raise UnauthorizedError(f"JWT algorithm {_shown(alg)} is not accepted: CDS Hooks forbids unsigned and "
                                    f"symmetric (HMAC) tokens; this service accepts {' and '.join(ALLOWED_ALGORITHMS)}")
        if header.get("typ") not in (None, "JWT"):
            raise UnauthorizedError(f"JWT header typ must be JWT, not {_shown(header.get('typ'))}")
        for name in ("kid", "jku"):
            if header.get(name) is not None and not isinstance(header[name], str):
                raise UnauthorizedError(f"JWT header {name} must be a string")
        for name in ("exp", "iat", "nbf"):
            value = unverified.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise UnauthorizedError(f"JWT claim {name} must be a number of seconds, not {type(value).__name__}")
        iss = unverified.get("iss")
        issuer = self._issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise UnauthorizedError(f"JWT issuer {_shown(iss)} is not trusted by this service")
        jku = header.get("jku")
        if jku is not None and issuer.jwks_url is not None and jku != issuer.jwks_url:
            raise UnauthorizedError(f"JWT jku {_shown(jku)} is not the JWK Set URL allow-listed for issuer {iss}")
        key = await self._key(issuer, header.get("kid"))
        kty, crv = _KEY_TYPES[alg]
        if key.key_type != kty or (crv is not None and _curve(key) != crv):
            raise UnauthorizedError(f"key {_shown(header.get('kid'))} of {iss} cannot verify {alg} "
                                    f"(needs {kty}{' ' + crv if crv else ''})")
        if key.algorithm_name != alg:  # the key's own alg, e.g. an RSA key published for RS256 only
            raise UnauthorizedError(f"key {_shown(header.get('kid'))} of {iss} is for {key.algorithm_name}, not {alg}")
        expected = list(audiences)
        leeway = self.settings.leeway_seconds
        try:
            claims = self._jwt.decode(
                token, key, algorithms=[alg], audience=expected, issuer=iss, leeway=leeway,
                options={"require": ["iss", "aud", "exp", "iat", "jti"], "verify_iat": True})
        except self._jwt.ExpiredSignatureError:
            raise UnauthorizedError("the JWT has expired (exp is in the past)") from None
        except self._jwt.InvalidAudienceError:
            raise UnauthorizedError(f"JWT aud {_shown(unverified.get('aud'))} is not this endpoint: expected "
                                    f"{expected[0]!r}") from None
        except self._jwt.ImmatureSignatureError:
            raise UnauthorizedError("the JWT is not valid yet (iat or nbf is in the future)") from None
        except self._jwt.MissingRequiredClaimError as exc:
            raise UnauthorizedError(f"the JWT lacks the required claim {exc.claim!r}") from None
        except self._jwt.InvalidSignatureError:
            raise UnauthorizedError("the JWT signature does not verify with the issuer's key") from None
        except self._jwt.PyJWTError as exc:
            raise UnauthorizedError(f"the JWT is not acceptable: {log_value(exc)}") from None
        # PyJWT has refused an exp or iat that is not a finite number, an exp in the past and an iat in the future
        # (each with the leeway). What CDS Hooks asks beyond that is a short life: exp - iat within the cap. With exp
        # in the future, that cap also bounds the token's age (now - iat < lifetime + leeway), so an old token needs
        # no check of its own.
        now = self._clock()
        exp, iat = claims["exp"], claims["iat"]
        lifetime = self.settings.max_lifetime_seconds
        if exp - iat > lifetime:
            raise UnauthorizedError(f"the JWT lives {exp - iat:.0f} s (exp - iat); at most {lifetime} s are accepted")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise UnauthorizedError("the JWT jti must be a non-empty string")
        seen_key = (cast(str, iss), jti)  # (iss named a trusted issuer above: it is text)
        if self._replay_blocks:  # a database round trip: off the event loop
            fresh = await asyncio.to_thread(self.replays.add, seen_key, float(exp) + leeway, now)
        else:
            fresh = self.replays.add(seen_key, float(exp) + leeway, now)
        if not fresh:
            raise UnauthorizedError(f"JWT jti {_shown(jti)} was already used: a replayed token is refused")
        return claims

    async def _key(self, issuer: TrustedIssuer, kid: Any) -> Any:
        if issuer.jwks_url is None:
            found = _pick(self._pinned[issuer.iss], kid)
            if found is None:
                raise UnauthorizedError(_no_key(issuer, kid))
            return found
        url = issuer.jwks_url
        lock = self._locks.setdefault(url, asyncio.Lock())
        async with lock:
            cached = self._fetched.get(url)
            now = self._clock()
            stale = cached is None or now - cached.fetched_at > JWKS_TTL_SECONDS
            found = None if cached is None else _pick(cached, kid)
            if stale or (found is None and now - cached.fetched_at > JWKS_MIN_REFRESH_SECONDS):  # type: ignore[union-attr]
                failed = self._failed.get(url)
                if failed is not None and now - failed[0] < JWKS_FAILURE_MEMORY_SECONDS:
                    raise UnauthorizedError(f"cannot get the JWK Set of {issuer.iss} from {url}: {failed[1]} (a fetch "
                                            f"{now - failed[0]:.0f} s ago; not fetched again for "
                                            f"{JWKS_FAILURE_MEMORY_SECONDS:g} s)")
                try:
                    cached = _KeySet(self._keys(json.loads(await self._get(url))), now)
                except (ValueError, OSError) as exc:
                    reason = log_value(exc)
                    self._failed[url] = (self._clock(), reason)  # from the failure: the fetch may have taken long
                    log.warning("imt-cds: cannot get the JWK Set of %s from %s: %s; tokens that need it are refused "
                                "without fetching it again for %g s", issuer.iss, url, reason,
                                JWKS_FAILURE_MEMORY_SECONDS)
                    raise UnauthorizedError(f"cannot get the JWK Set of {issuer.iss} from {url}: {reason}") from None
                self._failed.pop(url, None)
                self._fetched[url] = cached
                found = _pick(cached, kid)
        if found is None:
            raise UnauthorizedError(_no_key(issuer, kid))
        return found

    async def _get(self, url: str) -> bytes:
        import httpx

        deadline = self.settings.jwks_timeout_seconds
        try:
            # One deadline for the whole fetch: httpx's own timeout bounds each step (connect, each read) alone, so
            # a server sending its answer a byte at a time could hold the call for ever.
            async with asyncio.timeout(deadline), httpx.AsyncClient(timeout=None, follow_redirects=False) as client:
                async with client.stream("GET", url, headers={"Accept": "application/json"}) as response:
                    if response.status_code != 200:
                        raise OSError(f"HTTP {response.status_code}")
                    # Read the body a chunk at a time and stop past the limit: a server (or a compressed body that
                    # expands) must not make the service hold an answer of any size in memory.
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > MAX_JWKS_BYTES:
                            raise OSError("the JWK Set is larger than 256 kB")
        except TimeoutError:
            raise OSError(f"no complete answer within {deadline:g} s (jwks_timeout_seconds)") from None
        except httpx.HTTPError as exc:
            raise OSError(f"{type(exc).__name__}: {exc}") from exc
        return bytes(body)


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise UnauthorizedError("no Authorization header: CDS Hooks clients must send a bearer JWT on every call")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError("the Authorization header must be 'Bearer <JWT>'")
    return token.strip()


def _pick(keyset: _KeySet, kid: Any) -> Any:
    """The ``jwt.PyJWK`` that ``kid`` names, or the set's only key when the token names none; else None."""
    if isinstance(kid, str):
        try:
            return keyset.keys[kid]
        except KeyError:
            return None
    if kid is None and len(keyset.keys.keys) == 1:
        return keyset.keys.keys[0]
    return None


def _curve(key: Any) -> str | None:
    """The JWK name of an EC key's curve (P-384), read from the key itself; None for a key without a curve."""
    name = getattr(getattr(key.key, "curve", None), "name", None)
    if not isinstance(name, str):
        return None
    return {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}.get(name, name)


def _public_signing_key(raw: Any) -> bool:
    """Whether a JWK Set entry may be used at all: a public key for signatures. Private or symmetric key material
    (``d``, ``k``) is never used, even if someone put it in the set, nor a key meant for encryption, nor one whose
    ``alg`` is not even a name (PyJWK would raise a TypeError on it rather than skip it)."""
    return (isinstance(raw, Mapping) and "d" not in raw and "k" not in raw and raw.get("use") in (None, "sig")
            and isinstance(raw.get("alg", ""), str))


def _with_algorithm(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The JWK with the algorithm it will verify: its own ``alg`` when it has one, else the one algorithm this
    service accepts for its key type (ES384 for EC P-384, RS384 for RSA). Without that, PyJWK would guess RS256 for
    an RSA key and refuse every RS384 token; the token header's ``alg`` is never what binds a key."""
    jwk = dict(raw)
    if "alg" not in jwk:
        for alg, (kty, crv) in _KEY_TYPES.items():
            if jwk.get("kty") == kty and (crv is None or jwk.get("crv") == crv):
                jwk["alg"] = alg
    return jwk


def _shown(value: Any) -> str:
    """A value a token chose, as a refusal's reason shows it (the reason goes to the log): repr, shortened."""
    return log_value(repr(value), 80)


def _no_key(issuer: TrustedIssuer, kid: Any) -> str:
    if kid is None:
        return f"the JWT has no kid and the JWK Set of {issuer.iss} holds several keys"
    return f"no key with kid {_shown(kid)} in the JWK Set of {issuer.iss}"


def _check_jwks_timeout(seconds: Any) -> None:
    is_number = isinstance(seconds, (int, float)) and not isinstance(seconds, bool)
    if not is_number or not 0 < seconds <= MAX_JWKS_TIMEOUT_SECONDS:
        raise ServiceConfigError(f"jwks_timeout_seconds {seconds!r} must be a number of seconds more than 0 and at "
                                 f"most {MAX_JWKS_TIMEOUT_SECONDS:g}")


def _check_jwks_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and _is_loopback(parts.hostname):
        return
    raise ServiceConfigError(f"JWK Set URL {url!r} must be https:// (http:// is allowed only on loopback)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False
