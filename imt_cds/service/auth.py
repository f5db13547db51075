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
- ``exp`` is in the future and ``iat`` not in the future, each with a small clock skew (``leeway_seconds``);
- ``jti`` is present and was not seen before from that issuer while the token is valid. The replay cache is bounded
  (``replay_cache_size``): when full, the entries closest to expiry are dropped first.

Keys fetched from a URL are cached for an hour and fetched again (at most every 30 seconds) when a token names a key
id the cached set lacks, so a client can rotate keys. This module never logs a token.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import ServiceConfigError, UnauthorizedError

__all__ = ["ALLOWED_ALGORITHMS", "AuthSettings", "Authenticator", "ReplayCache", "TrustedIssuer"]

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
    replay_cache_size: int = 100_000


class ReplayCache:
    """Seen ``(iss, jti)`` pairs until their token expires; bounded, dropping the soonest-expiring when full."""

    def __init__(self, max_entries: int):
        self.max_entries = max_entries
        self._expiry: dict[tuple[str, str], float] = {}
        self._heap: list[tuple[float, tuple[str, str]]] = []
        self._lock = threading.Lock()

    def add(self, key: tuple[str, str], expires_at: float, now: float) -> bool:
        """Record a token id; False when it was already recorded and has not expired (a replay)."""
        with self._lock:
            while self._heap and self._heap[0][0] < now:
                expiry, old = heapq.heappop(self._heap)
                if self._expiry.get(old) == expiry:
                    del self._expiry[old]
            if key in self._expiry:
                return False
            while len(self._expiry) >= self.max_entries and self._heap:
                expiry, old = heapq.heappop(self._heap)
                if self._expiry.get(old) == expiry:
                    del self._expiry[old]
            self._expiry[key] = expires_at
            heapq.heappush(self._heap, (expires_at, key))
            return True

    def __len__(self) -> int:
        return len(self._expiry)


@dataclass
class _KeySet:
    keys: dict[str | None, Any]  # kid -> jwt.PyJWK (None: a key without kid)
    fetched_at: float


class Authenticator:
    """Checks bearer JWTs against the trusted issuers. Build it once (key files are read and checked here)."""

    def __init__(self, settings: AuthSettings):
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
        self.replays = ReplayCache(settings.replay_cache_size)
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
        try:
            header = self._jwt.get_unverified_header(token)
            unverified = self._jwt.decode(token, options={"verify_signature": False})
        except self._jwt.PyJWTError as exc:
            raise UnauthorizedError(f"the bearer token is not a well-formed JWT ({exc})") from None
        alg = header.get("alg")
        if alg not in ALLOWED_ALGORITHMS:
            raise UnauthorizedError(f"JWT algorithm {alg!r} is not accepted: CDS Hooks forbids unsigned and symmetric "
                                    f"(HMAC) tokens; this service accepts {' and '.join(ALLOWED_ALGORITHMS)}")
        if header.get("typ") not in (None, "JWT"):
            raise UnauthorizedError(f"JWT header typ must be JWT, not {header.get('typ')!r}")
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
        iat = claims.get("iat")
        if not isinstance(iat, (int, float)) or iat > now + leeway:
            raise UnauthorizedError("the JWT is not valid yet (iat is in the future)")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise UnauthorizedError("the JWT jti must be a non-empty string")
        if not self.replays.add((iss, jti), float(claims["exp"]) + leeway, now):
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
