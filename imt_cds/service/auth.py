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
  algorithm (EC P-384 for ES384, RSA for RS384), and the signature verifies;
- ``aud`` (a string or a list) contains the URL of the endpoint called, built from the configured public URL;
- ``exp`` and ``iat`` are numbers (a string or a boolean is refused, not converted), ``exp`` is in the future,
  ``iat`` is neither in the future nor older than the longest lifetime, each with a small clock skew
  (``leeway_seconds``), and the token's lifetime ``exp - iat`` is at most ``max_lifetime_seconds`` (default 5
  minutes: CDS Hooks 2.0.1 recommends tokens that expire within minutes, so a stolen one is soon worthless);
- the token is at most ``max_token_bytes`` long (8 KiB by default; a CDS client's token is well under 2 KiB);
- ``jti`` is present and was not seen before from that issuer while the token is valid (``replay_cache.py``: in the
  audit store's database when there is one, shared by replicas and kept across restarts; else in memory).

Every refusal is an ``UnauthorizedError`` (a 401), whatever is wrong with the token or with the keys: malformed
JSON, claims or header values of the wrong type, a key of the wrong type in the JWK Set. Its message names the
check that failed; it goes to the server log, and the client gets one generic 401 body (``errors.public_body``), so
the answer does not tell an attacker which check to work on or which issuers are trusted.

Keys fetched from a URL are cached for an hour and fetched again (at most every 30 seconds) when a token names a key
id the cached set lacks, so a client can rotate keys. This module never logs a token.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import ServiceConfigError, ServiceError, UnauthorizedError
from .replay_cache import ReplayCache, open_replay_cache

__all__ = ["ALLOWED_ALGORITHMS", "AuthSettings", "Authenticator", "TrustedIssuer"]

ALLOWED_ALGORITHMS = ("ES384", "RS384")
_KEY_TYPES = {"ES384": ("EC", "P-384"), "RS384": ("RSA", None)}
JWKS_TTL_SECONDS = 3600.0
JWKS_MIN_REFRESH_SECONDS = 30.0
MAX_JWKS_BYTES = 256 * 1024


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


@dataclass
class _KeySet:
    keys: dict[str | None, Any]  # kid -> jwt.PyJWK (None: a key without kid)
    fetched_at: float


class Authenticator:
    """Checks bearer JWTs against the trusted issuers. Build it once (key files are read and checked here)."""

    def __init__(self, settings: AuthSettings, replay_store: str | None = None, replay_timeout: float = 30.0):
        """``replay_store``: the audit store's target (SQLite path or ``postgresql://``) to keep token ids in, so
        that replicas share them and a restart forgets none; None keeps them in this process's memory."""
        try:
            import jwt
        except ImportError as exc:  # never let a missing library look like a bad token
            raise ServiceConfigError("JWT authentication needs PyJWT with cryptography: "
                                     "pip install 'imt-cds[service]'") from exc
        self._jwt = jwt
        self.settings = settings
        self._issuers: dict[str, TrustedIssuer] = {}
        self._pinned: dict[str, _KeySet] = {}
        self._fetched: dict[str, _KeySet] = {}
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
            return _KeySet(self._keys(data), time.time())
        except ValueError as exc:
            raise ServiceConfigError(f"the JWK Set of {issuer.iss} at {path}: {exc}") from exc

    def _keys(self, data: Any) -> dict[str | None, Any]:
        if not isinstance(data, Mapping) or not isinstance(data.get("keys"), list):
            raise ValueError('expected a JWK Set: {"keys": [...]}')
        keys: dict[str | None, Any] = {}
        for raw in data["keys"]:
            if not isinstance(raw, Mapping) or "d" in raw or "k" in raw:
                continue  # never use private or symmetric key material, even if someone put it there
            if raw.get("use") not in (None, "sig"):
                continue
            try:
                key = self._jwt.PyJWK(dict(raw))
            except Exception:  # noqa: BLE001 - a key this library cannot use is skipped, like an unknown kty
                continue
            keys[raw.get("kid") if isinstance(raw.get("kid"), str) else None] = (key, dict(raw))
        if not keys:
            raise ValueError("no usable public signing key (EC P-384 or RSA) in it")
        return keys

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
            raise UnauthorizedError(f"the JWT could not be checked ({type(exc).__name__}: {exc})") from None

    async def _check(self, token: str, audiences: Iterable[str]) -> dict[str, Any]:
        try:
            header = self._jwt.get_unverified_header(token)
            unverified = self._jwt.decode(token, options={"verify_signature": False})
        except self._jwt.PyJWTError as exc:
            raise UnauthorizedError(f"the bearer token is not a well-formed JWT ({exc})") from None
        if not isinstance(header, Mapping) or not isinstance(unverified, Mapping):
            raise UnauthorizedError("the JWT header and payload must be JSON objects")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
            raise UnauthorizedError(f"JWT algorithm {alg!r} is not accepted: CDS Hooks forbids unsigned and symmetric "
                                    f"(HMAC) tokens; this service accepts {' and '.join(ALLOWED_ALGORITHMS)}")
        if header.get("typ") not in (None, "JWT"):
            raise UnauthorizedError(f"JWT header typ must be JWT, not {header.get('typ')!r}")
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
            raise UnauthorizedError(f"JWT issuer {iss!r} is not trusted by this service")
        jku = header.get("jku")
        if jku is not None and issuer.jwks_url is not None and jku != issuer.jwks_url:
            raise UnauthorizedError(f"JWT jku {jku!r} is not the JWK Set URL allow-listed for issuer {iss}")
        key, jwk = await self._key(issuer, header.get("kid"))
        if jwk.get("alg") not in (None, alg):
            raise UnauthorizedError(f"key {header.get('kid')!r} of {iss} is for {jwk.get('alg')}, not {alg}")
        kty, crv = _KEY_TYPES[alg]
        if jwk.get("kty") != kty or (crv is not None and jwk.get("crv") != crv):
            raise UnauthorizedError(f"key {header.get('kid')!r} of {iss} cannot verify {alg} "
                                    f"(needs {kty}{' ' + crv if crv else ''})")
        expected = list(audiences)
        leeway = self.settings.leeway_seconds
        try:
            claims = self._jwt.decode(
                token, key.key, algorithms=[alg], audience=expected, issuer=iss, leeway=leeway,
                options={"require": ["iss", "aud", "exp", "iat", "jti"], "verify_iat": True})
        except self._jwt.ExpiredSignatureError:
            raise UnauthorizedError("the JWT has expired (exp is in the past)") from None
        except self._jwt.InvalidAudienceError:
            raise UnauthorizedError(f"JWT aud {unverified.get('aud')!r} is not this endpoint: expected "
                                    f"{expected[0]!r}") from None
        except self._jwt.ImmatureSignatureError:
            raise UnauthorizedError("the JWT is not valid yet (iat or nbf is in the future)") from None
        except self._jwt.MissingRequiredClaimError as exc:
            raise UnauthorizedError(f"the JWT lacks the required claim {exc.claim!r}") from None
        except self._jwt.InvalidSignatureError:
            raise UnauthorizedError("the JWT signature does not verify with the issuer's key") from None
        except self._jwt.PyJWTError as exc:
            raise UnauthorizedError(f"the JWT is not acceptable: {exc}") from None
        now = time.time()
        exp, iat = claims["exp"], claims["iat"]
        for name, value in (("exp", exp), ("iat", iat)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                raise UnauthorizedError(f"JWT claim {name} must be a number of seconds")
        if iat > now + leeway:
            raise UnauthorizedError("the JWT is not valid yet (iat is in the future)")
        lifetime = self.settings.max_lifetime_seconds
        if exp - iat > lifetime:
            raise UnauthorizedError(f"the JWT lives {exp - iat:.0f} s (exp - iat); at most {lifetime} s are accepted")
        if now - iat > lifetime + leeway:
            raise UnauthorizedError(f"the JWT was issued {now - iat:.0f} s ago (iat); tokens older than "
                                    f"{lifetime} s are refused")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise UnauthorizedError("the JWT jti must be a non-empty string")
        if self._replay_blocks:  # a database round trip: off the event loop
            fresh = await asyncio.to_thread(self.replays.add, (iss, jti), float(exp) + leeway, now)
        else:
            fresh = self.replays.add((iss, jti), float(exp) + leeway, now)
        if not fresh:
            raise UnauthorizedError(f"JWT jti {jti!r} was already used: a replayed token is refused")
        return claims  # type: ignore[no-any-return]

    async def _key(self, issuer: TrustedIssuer, kid: Any) -> tuple[Any, dict[str, Any]]:
        if issuer.jwks_url is None:
            found = _pick(self._pinned[issuer.iss], kid)
            if found is None:
                raise UnauthorizedError(_no_key(issuer, kid))
            return found
        url = issuer.jwks_url
        lock = self._locks.setdefault(url, asyncio.Lock())
        async with lock:
            cached = self._fetched.get(url)
            now = time.time()
            stale = cached is None or now - cached.fetched_at > JWKS_TTL_SECONDS
            found = None if cached is None else _pick(cached, kid)
            if stale or (found is None and now - cached.fetched_at > JWKS_MIN_REFRESH_SECONDS):  # type: ignore[union-attr]
                try:
                    cached = _KeySet(self._keys(json.loads(await self._get(url))), now)
                except (ValueError, OSError) as exc:
                    raise UnauthorizedError(f"cannot get the JWK Set of {issuer.iss} from {url}: {exc}") from None
                self._fetched[url] = cached
                found = _pick(cached, kid)
        if found is None:
            raise UnauthorizedError(_no_key(issuer, kid))
        return found

    async def _get(self, url: str) -> bytes:
        import httpx

        try:
            async with httpx.AsyncClient(timeout=10.0, follow_redirects=False) as client:
                response = await client.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise OSError(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise OSError(f"HTTP {response.status_code}")
        if len(response.content) > MAX_JWKS_BYTES:
            raise OSError("the JWK Set is larger than 256 kB")
        return response.content


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise UnauthorizedError("no Authorization header: CDS Hooks clients must send a bearer JWT on every call")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError("the Authorization header must be 'Bearer <JWT>'")
    return token.strip()


def _pick(keyset: _KeySet, kid: Any) -> tuple[Any, dict[str, Any]] | None:
    if isinstance(kid, str):
        return keyset.keys.get(kid)  # type: ignore[no-any-return]
    if kid is None and len(keyset.keys) == 1:
        return next(iter(keyset.keys.values()))  # type: ignore[no-any-return]
    return None


def _no_key(issuer: TrustedIssuer, kid: Any) -> str:
    if kid is None:
        return f"the JWT has no kid and the JWK Set of {issuer.iss} holds several keys"
    return f"no key with kid {kid!r} in the JWK Set of {issuer.iss}"


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
