"""The FHIR data a hook needs: prefetch templates, and fetching what the client did not prefetch from ``fhirServer``.

Per CDS Hooks 2.0.1, a key the client left out of ``prefetch`` (or answered with an OperationOutcome) is fetched from
``fhirServer`` with the ``fhirAuthorization`` bearer token; a key present with ``null`` means "no such data" and is
not fetched. When the data can be had from neither, ``PrefetchUnavailableError`` (412) says which keys and why.

``fhirServer`` is chosen by whoever sends the request, so every outbound call is a request forgery waiting to
happen (SSRF). Safety rules of this module:

- nothing is ever fetched unless the deployer allow-listed FHIR server prefixes (``--fhir-server``); without them a
  missing key is a 412 and no connection is made;
- URLs are compared after normalisation (scheme and host lower-cased, default port made explicit, percent-encoded
  dots decoded and dot segments resolved; encoded slashes and backslashes, user-info, ``..;`` segments and numeric
  hosts other than dotted-decimal IPv4 refused), so ``/fhir/../admin`` is not "under" ``/fhir``. The URL requested
  is the normalised one, the same string that was checked;
- the host is resolved once, every address it resolves to must be public (not loopback, private, link-local,
  multicast, reserved, also as IPv4-mapped IPv6) unless the deployer allowed it (the IP literal of an allow-listed
  prefix, or a network in ``private_networks``), and the connection goes to the checked address (no second
  resolution a rebinding DNS server could answer differently);
- every searchset ``next`` link passes the same checks and must stay under the request's ``fhirServer`` (the access
  token is only ever sent there); pagination is bounded, and a truncated search is an error, never a partial chart;
- one deadline covers all fetches of a request, and responses are read as a stream and abandoned past the size cap;
- nothing fetched, and no address, status or exception text, goes into an answer: the 412 names the missing keys
  and a generic reason; the details go to the service log.

This module never interprets resources (``imt_cds.fhir`` does, in a worker process): Bundles are passed on whole.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from .errors import BadRequestError, PrefetchUnavailableError, log_value

__all__ = ["DEFAULT_FETCH_DEADLINE", "NormalUrl", "Template", "UrlRefused", "collect_resources", "normalise_url",
           "render_template"]

log = logging.getLogger("imt_cds.service.prefetch")

DEFAULT_FETCH_DEADLINE = 20.0  # seconds for all fetches of one request (below the evaluation timeout of 30 s)
_TOKEN = re.compile(r"\{\{\s*context\.([A-Za-z]+)\s*\}\}")
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # FHIR's id type
_DEFAULT_PORTS = {"http": 80, "https": 443}
_UNSAFE_URL_CHARACTERS = re.compile(r"[\\\x00-\x20\x7f]")
_ENCODED_SEPARATOR = re.compile(r"%(2f|5c|00)", re.IGNORECASE)  # a server may decode them before routing
_ENCODED_DOT = re.compile(r"%2e", re.IGNORECASE)
_NUMERIC_HOST = re.compile(r"[0-9a-fx.]+", re.IGNORECASE)
# Longest URL requested (a next link included): httpx refuses URLs over 64 KiB with an error of its own, and no FHIR
# server's URL comes near this.
MAX_URL_CHARS = 8192


@dataclass(frozen=True)
class Template:
    """A prefetch template of a service. Whether its query is a read or a search need not be known: what comes
    back, a resource or a searchset Bundle, is passed on as it is."""

    key: str
    query: str  # a relative FHIR read or search with {{context.x}} tokens


class UrlRefused(ValueError):
    """A URL this module will not request (the reason is for the log, never for the client)."""


@dataclass(frozen=True)
class NormalUrl:
    """An http(s) URL in the one form URLs are compared and requested in."""

    scheme: str
    host: str  # lower case, no brackets, no trailing dot
    port: int
    path: str  # starts with "/", dot segments resolved
    query: str

    def text(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if _DEFAULT_PORTS[self.scheme] == self.port else f":{self.port}"
        return f"{self.scheme}://{host}{port}{self.path}" + (f"?{self.query}" if self.query else "")

    def under(self, prefix: NormalUrl) -> bool:
        """Same origin, and the path is the prefix's path or below it (whole segments: /fhir2 is not under /fhir)."""
        if (self.scheme, self.host, self.port) != (prefix.scheme, prefix.host, prefix.port):
            return False
        base = prefix.path.rstrip("/")
        return self.path == base or self.path.startswith(base + "/")


def normalise_url(url: Any) -> NormalUrl:
    """``url`` in normal form, or ``UrlRefused`` for a URL that is not a plain absolute http(s) URL."""
    if not isinstance(url, str) or not url or _UNSAFE_URL_CHARACTERS.search(url):
        raise UrlRefused("not a URL without spaces, control characters or backslashes")
    if len(url) > MAX_URL_CHARS:
        raise UrlRefused(f"{len(url)} characters long, over the {MAX_URL_CHARS} this service requests")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise UrlRefused(f"scheme {scheme!r} is not http or https")
    if "@" in parts.netloc:
        raise UrlRefused("user-info in the URL")
    host = (parts.hostname or "").rstrip(".")
    if not host or "%" in host:
        raise UrlRefused("no host, or a percent-encoded or zoned host")
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        raise UrlRefused("the port is not a number from 0 to 65535") from None
    _check_numeric_host(host)
    path = parts.path or "/"
    if _ENCODED_SEPARATOR.search(path):
        raise UrlRefused("percent-encoded slash, backslash or NUL in the path")
    return NormalUrl(scheme, host, port, _remove_dot_segments(_ENCODED_DOT.sub(".", path)), parts.query)


def _shown(url: NormalUrl) -> str:
    """A URL as a log line shows it: it came from a client (fhirServer) or a FHIR server (a next link)."""
    return log_value(url.text())


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4 on an absolute path; ``..;x`` segments (read as ``..`` by some servlet containers)
    are refused rather than guessed at."""
    kept: list[str] = []
    segments = path.split("/")[1:]
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment.split(";", 1)[0] in (".", "..") and ";" in segment:
            raise UrlRefused("a dot segment with parameters (..;) in the path")
        if segment == ".":
            if last:
                kept.append("")
        elif segment == "..":
            if kept:
                kept.pop()
            if last:
                kept.append("")
        else:
            kept.append(segment)
    return "/" + "/".join(kept)


def _check_numeric_host(host: str) -> None:
    try:
        ip_address(host)
        return  # a canonical IP literal: checked with the resolved addresses
    except ValueError:
        pass
    if _NUMERIC_HOST.fullmatch(host):
        try:
            socket.inet_aton(host)  # what the system resolver would make of 2130706433, 0x7f.1, 0177.0.0.1
        except OSError:
            return
        raise UrlRefused("a numeric host that is not a dotted-decimal IPv4 address")


def render_template(template: Template, context: Mapping[str, Any]) -> str:
    """The relative FHIR URL of a template for this hook context (tokens URL-encoded)."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        found = context.get(name)
        if not isinstance(found, str) or not found:
            raise BadRequestError(f"context.{name} is needed to fetch {template.key} and is missing")
        if name.endswith("Id") and (not _FHIR_ID.fullmatch(found) or found.strip(".") == ""):
            raise BadRequestError(f"context.{name} must be a FHIR id (letters, digits, '-' and '.', at most 64 "
                                  "characters) to fetch data with it")
        return quote(found, safe="")

    return _TOKEN.sub(value, template.query)


@dataclass(frozen=True)
class _Policy:
    prefixes: tuple[NormalUrl, ...]
    private_networks: tuple[Any, ...]
    timeout: float
    max_pages: int
    max_bytes: int


@dataclass
class _Budget:
    """What one request has read so far (all keys, all pages): one size cap per request."""

    bytes_read: int = 0
    requested: list[str] = field(default_factory=list)


def prefetched(templates: Sequence[Template], request: Mapping[str, Any]) -> tuple[list[Any], dict[str, str]]:
    """What the request's prefetch holds for the service's keys: the resources (parsed JSON, in key order) and the
    keys it lacks, each with why (not prefetched, or the client's OperationOutcome in its place); a prefetch of the
    wrong shape is a ``BadRequestError``. Nothing is fetched here (``collect_resources`` fetches what is lacking)."""
    prefetch = request.get("prefetch")
    if prefetch is None:  # absent or null: nothing prefetched (an empty list or string is a wrong shape, refused)
        prefetch = {}
    if not isinstance(prefetch, Mapping):
        raise BadRequestError("prefetch must be an object keyed by prefetch key")
    resources: list[Any] = []
    missing: dict[str, str] = {}
    for template in templates:
        if template.key not in prefetch:
            missing[template.key] = "not prefetched"
            continue
        value = prefetch[template.key]
        if value is None:  # the client has no such data: an empty search, or no resource
            continue
        if not isinstance(value, Mapping) or not isinstance(value.get("resourceType"), str):
            raise BadRequestError(f"prefetch.{template.key} must be a FHIR resource, a Bundle or null")
        if value["resourceType"] == "OperationOutcome":
            missing[template.key] = "the client could not prefetch it (OperationOutcome)"
            continue
        resources.append(value)  # a Bundle stays whole: the reader resolves references through its fullUrls
    return resources, missing


async def collect_resources(templates: Sequence[Template], request: Mapping[str, Any], *,
                            allowed_servers: Sequence[str], timeout: float, max_pages: int, max_bytes: int,
                            deadline: float = DEFAULT_FETCH_DEADLINE,
                            private_networks: Sequence[str] = ()) -> list[Any]:
    """Every resource of the service's prefetch keys (parsed JSON, in key order): from the request's prefetch, else
    from its fhirServer (only under ``allowed_servers``; ``private_networks``: CIDR networks a server there may be
    in; ``deadline``: seconds for all fetches together)."""
    resources, missing = prefetched(templates, request)
    if missing:
        policy = _policy(allowed_servers, private_networks, timeout, max_pages, max_bytes)
        fetched = await _fetch(templates, missing, request, policy, deadline)
        for template in templates:
            resources.extend(fetched.get(template.key, []))
    return resources


def _policy(allowed_servers: Sequence[str], private_networks: Sequence[str], timeout: float, max_pages: int,
            max_bytes: int) -> _Policy:
    prefixes = []
    for prefix in allowed_servers:
        try:
            prefixes.append(normalise_url(prefix))
        except UrlRefused as exc:  # config.check refuses non-http(s) prefixes; anything odder matches nothing
            log.error("imt-cds: allowed FHIR server %r is ignored: %s", prefix, exc)  # the deployer's own text
    return _Policy(tuple(prefixes), tuple(ip_network(n, strict=False) for n in private_networks), timeout,
                   max_pages, max_bytes)


def _unavailable(missing: Mapping[str, str], message: str, reason: str) -> PrefetchUnavailableError:
    """The 412: which keys are missing and a generic reason (no address, status or exception text)."""
    return PrefetchUnavailableError(f"prefetch lacks {', '.join(missing)}: {message}",
                                    {"missing": {key: f"{why}; {reason}" for key, why in missing.items()}})


async def _fetch(templates: Sequence[Template], missing: Mapping[str, str], request: Mapping[str, Any],
                 policy: _Policy, deadline: float) -> dict[str, list[Any]]:
    server = request.get("fhirServer")
    if not server:
        raise PrefetchUnavailableError(
            f"prefetch lacks {', '.join(missing)} and the request gives no fhirServer to fetch them from",
            {"missing": dict(missing)})
    if not policy.prefixes:
        raise _unavailable(missing, "this service fetches nothing from fhirServer (no FHIR server is allowed)",
                           "this service fetches nothing from fhirServer")
    try:
        base = normalise_url(server)
    except UrlRefused as exc:
        log.warning("imt-cds: fhirServer %s refused: %s", log_value(server), log_value(exc))
        raise BadRequestError("fhirServer is not an absolute http(s) URL this service can use") from None
    prefix = next((p for p in policy.prefixes if base.under(p)), None)
    if prefix is None:
        log.warning("imt-cds: fhirServer %s is not under an allowed FHIR server prefix", log_value(base.text()))
        raise _unavailable(missing, "fhirServer is not one this service is allowed to call",
                           "fhirServer is not one this service is allowed to call")
    headers = {"Accept": "application/fhir+json, application/json"}
    authorization = request.get("fhirAuthorization")
    if authorization is not None:
        if not isinstance(authorization, Mapping) or not isinstance(authorization.get("access_token"), str):
            raise BadRequestError("fhirAuthorization must be an object with an access_token")
        if str(authorization.get("token_type", "Bearer")).lower() != "bearer":
            raise BadRequestError("fhirAuthorization.token_type must be Bearer")
        if _UNSAFE_URL_CHARACTERS.search(authorization["access_token"].strip()):
            raise BadRequestError("fhirAuthorization.access_token must not contain spaces or control characters")
        headers["Authorization"] = f"Bearer {authorization['access_token'].strip()}"
    relative = {t.key: render_template(t, request["context"]) for t in templates if t.key in missing}
    import httpx

    budget = _Budget()
    fetched: dict[str, list[Any]] = {}
    key = next(iter(relative))
    try:
        async with asyncio.timeout(deadline):
            async with httpx.AsyncClient(timeout=policy.timeout, follow_redirects=False, headers=headers,
                                         trust_env=False) as client:
                for template in templates:
                    if template.key not in relative:
                        continue
                    key = template.key
                    fetched[key] = await _get_all(client, base, prefix, relative[key], template, policy, budget)
    except TimeoutError:
        log.warning("imt-cds: fetching %s from %s took longer than the %s s deadline (requested: %s)", key,
                    log_value(base.text()), deadline, log_value(budget.requested, 400))
        raise _unavailable({k: missing[k] for k in relative if k not in fetched}, "fetching from fhirServer "
                           "failed", "could not be fetched from fhirServer in time") from None
    except UrlRefused as exc:
        log.warning("imt-cds: fetching %s from %s failed: %s (requested: %s)", key, log_value(base.text()),
                    log_value(exc, 600), log_value(budget.requested, 400))
        raise _unavailable({k: missing[k] for k in relative if k not in fetched}, "fetching from fhirServer "
                           "failed", "could not be fetched from fhirServer (details in the service log)") from None
    return fetched


async def _get_all(client: Any, base: NormalUrl, prefix: NormalUrl, relative: str, template: Template,
                   policy: _Policy, budget: _Budget) -> list[Any]:
    first = normalise_url(f"{base.text().rstrip('/')}/{relative}")
    if not first.under(base):
        raise UrlRefused(f"{_shown(first)} leaves fhirServer")
    found: list[Any] = []
    url: NormalUrl | None = first
    pages = 0
    while url is not None:
        if pages >= policy.max_pages:
            raise UrlRefused(f"more than {policy.max_pages} pages: refusing to evaluate a partial chart")
        pages += 1
        body = await _get_json(client, url, prefix, policy, budget)
        if not isinstance(body, Mapping) or not isinstance(body.get("resourceType"), str):
            raise UrlRefused(f"{_shown(url)} did not answer with a FHIR resource")
        if body["resourceType"] == "OperationOutcome":
            raise UrlRefused(f"{_shown(url)} answered with an OperationOutcome")
        found.append(body)  # a Bundle stays whole: the reader resolves references through its fullUrls
        url = None
        if body["resourceType"] == "Bundle":
            for link in body.get("link") or []:
                if isinstance(link, Mapping) and link.get("relation") == "next" and isinstance(link.get("url"), str):
                    url = normalise_url(link["url"])
                    if not url.under(base):  # the access token is only ever sent under fhirServer
                        raise UrlRefused(f"the next page is at {_shown(url)}, outside fhirServer; not followed")
    return found


async def _get_json(client: Any, url: NormalUrl, prefix: NormalUrl, policy: _Policy, budget: _Budget) -> Any:
    import httpx

    address = await _checked_address(url, prefix, policy)
    target = NormalUrl(url.scheme, str(address), url.port, url.path, url.query).text()
    host_header = (f"[{url.host}]" if ":" in url.host else url.host) + (
        "" if _DEFAULT_PORTS[url.scheme] == url.port else f":{url.port}")
    budget.requested.append(url.text())
    chunks: list[bytes] = []
    try:
        # The connection goes to the address just checked; Host and TLS SNI (certificate check) name the host.
        async with client.stream("GET", target, headers={"Host": host_header},
                                 extensions={"sni_hostname": url.host}) as response:
            if response.status_code != 200:
                raise UrlRefused(f"{_shown(url)} answered HTTP {response.status_code}")
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and budget.bytes_read + int(declared) > policy.max_bytes:
                raise UrlRefused(f"{_shown(url)} announces more than the {policy.max_bytes}-byte cap")
            async for chunk in response.aiter_bytes():
                budget.bytes_read += len(chunk)
                if budget.bytes_read > policy.max_bytes:
                    raise UrlRefused(f"the answers are larger than the {policy.max_bytes}-byte cap; stopped reading")
                chunks.append(chunk)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:  # InvalidURL is no HTTPError (a URL httpx will not build)
        raise UrlRefused(f"cannot fetch {_shown(url)}: {type(exc).__name__}") from None
    try:
        return orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError:
        raise UrlRefused(f"{_shown(url)} did not answer with JSON") from None


async def _checked_address(url: NormalUrl, prefix: NormalUrl, policy: _Policy) -> IPv4Address | IPv6Address:
    """The address to connect to: every address the host resolves to must be allowed."""
    try:
        addresses = [ip_address(url.host)]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(url.host, url.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise UrlRefused(f"cannot resolve {log_value(url.host)}: {exc}") from None
        addresses = list(dict.fromkeys(ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos))
    if not addresses:
        raise UrlRefused(f"{log_value(url.host)} resolves to no address")
    for address in addresses:
        if not _allowed_address(address, prefix, policy):
            raise UrlRefused(f"{log_value(url.host)} resolves to {address}, a non-public address that is not allowed")
    return addresses[0]


def _allowed_address(address: IPv4Address | IPv6Address, prefix: NormalUrl, policy: _Policy) -> bool:
    plain = address.ipv4_mapped if isinstance(address, IPv6Address) and address.ipv4_mapped else address
    if plain.is_global and not plain.is_multicast:
        return True
    try:
        if ip_address(prefix.host) in (address, plain):
            return True  # the deployer allow-listed this very address
    except ValueError:
        pass
    return any(plain in network or address in network for network in policy.private_networks)
