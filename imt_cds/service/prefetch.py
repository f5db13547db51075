"""The FHIR data a hook needs: prefetch templates, and fetching what the client did not prefetch from ``fhirServer``.

Per CDS Hooks 2.0.1, a key the client left out of ``prefetch`` (or answered with an OperationOutcome) is fetched from
``fhirServer`` with the ``fhirAuthorization`` bearer token; a key present with ``null`` means "no such data" and is
not fetched. When the data can be had from neither, ``PrefetchUnavailableError`` (412) says which keys and why.

Safety rules of this module:
- the access token is only ever sent to URLs under the request's ``fhirServer`` (a searchset's ``next`` link to
  anywhere else is not followed);
- ``fhirServer`` must be an http(s) URL, and, when the service is configured with allowed FHIR servers, start with
  one of them (otherwise nothing is requested at all);
- pagination is followed up to a bound, and a truncated search is an error, never a silent partial chart.

This module never interprets resources (``imt_cds.fhir`` does, in a worker process): Bundles are passed on whole.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from .errors import BadRequestError, PrefetchUnavailableError

__all__ = ["Template", "collect_resources", "render_template"]

_TOKEN = re.compile(r"\{\{\s*context\.([A-Za-z]+)\s*\}\}")


@dataclass(frozen=True)
class Template:
    key: str
    query: str  # a relative FHIR read or search with {{context.x}} tokens
    single: bool  # a read (one resource) rather than a search (a searchset Bundle)


def render_template(template: Template, context: Mapping[str, Any]) -> str:
    """The relative FHIR URL of a template for this hook context (tokens URL-encoded)."""

    def value(match: re.Match[str]) -> str:
        found = context.get(match.group(1))
        if not isinstance(found, str) or not found:
            raise BadRequestError(f"context.{match.group(1)} is needed to fetch {template.key} and is missing")
        return quote(found, safe="")

    return _TOKEN.sub(value, template.query)


async def collect_resources(templates: Sequence[Template], request: Mapping[str, Any], *,
                            allowed_servers: Sequence[str], timeout: float, max_pages: int,
                            max_bytes: int) -> list[Any]:
    """Every resource of the service's prefetch keys (parsed JSON, in key order): from the request's prefetch, else
    from its fhirServer."""
    prefetch = request.get("prefetch") or {}
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
    if missing:
        fetched = await _fetch(templates, missing, request, allowed_servers, timeout, max_pages, max_bytes)
        for template in templates:
            resources.extend(fetched.get(template.key, []))
    return resources


async def _fetch(templates: Sequence[Template], missing: Mapping[str, str], request: Mapping[str, Any],
                 allowed_servers: Sequence[str], timeout: float, max_pages: int,
                 max_bytes: int) -> dict[str, list[Any]]:
    keys = ", ".join(missing)
    server = request.get("fhirServer")
    if not server:
        raise PrefetchUnavailableError(
            f"prefetch lacks {keys} and the request gives no fhirServer to fetch them from",
            {"missing": dict(missing)})
    if not isinstance(server, str) or urlsplit(server).scheme not in ("http", "https") or not urlsplit(server).netloc:
        raise BadRequestError(f"fhirServer {server!r} is not an absolute http(s) URL")
    base = server.rstrip("/")
    if allowed_servers and not any(_under(base, prefix.rstrip("/")) for prefix in allowed_servers):
        raise PrefetchUnavailableError(
            f"prefetch lacks {keys} and fhirServer {server} is not one this service is allowed to call",
            {"missing": dict(missing), "fhirServer": server})
    headers = {"Accept": "application/fhir+json, application/json"}
    authorization = request.get("fhirAuthorization")
    if authorization is not None:
        if not isinstance(authorization, Mapping) or not isinstance(authorization.get("access_token"), str):
            raise BadRequestError("fhirAuthorization must be an object with an access_token")
        if str(authorization.get("token_type", "Bearer")).lower() != "bearer":
            raise BadRequestError("fhirAuthorization.token_type must be Bearer")
        headers["Authorization"] = f"Bearer {authorization['access_token']}"
    import httpx

    fetched: dict[str, list[Any]] = {}
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False, headers=headers) as client:
        for template in templates:
            if template.key not in missing:
                continue
            url = f"{base}/{render_template(template, request['context'])}"
            fetched[template.key] = await _get_all(client, base, url, template, max_pages, max_bytes)
    return fetched


async def _get_all(client: Any, base: str, url: str, template: Template, max_pages: int,
                   max_bytes: int) -> list[Any]:
    import httpx

    found: list[Any] = []
    total = 0
    next_url: str | None = url
    pages = 0
    while next_url is not None:
        if pages >= max_pages:
            raise PrefetchUnavailableError(f"{url} has more than {max_pages} pages; refusing to evaluate a "
                                           "partial chart", {"url": url})
        try:
            response = await client.get(next_url)
        except httpx.HTTPError as exc:
            raise PrefetchUnavailableError(f"cannot fetch {template.key} from {next_url}: {type(exc).__name__}",
                                           {"url": next_url}) from None
        pages += 1
        total += len(response.content)
        if total > max_bytes:
            raise PrefetchUnavailableError(f"{template.key} from {url} is larger than {max_bytes} bytes",
                                           {"url": url})
        if template.single and response.status_code in (404, 410):
            raise PrefetchUnavailableError(f"{next_url} answered {response.status_code}: the patient in context is "
                                           "not on the FHIR server", {"url": next_url, "status": response.status_code})
        if response.status_code != 200:
            raise PrefetchUnavailableError(f"{next_url} answered HTTP {response.status_code}",
                                           {"url": next_url, "status": response.status_code})
        try:
            body = response.json()
        except ValueError:
            raise PrefetchUnavailableError(f"{next_url} did not answer with JSON", {"url": next_url}) from None
        if not isinstance(body, Mapping) or not isinstance(body.get("resourceType"), str):
            raise PrefetchUnavailableError(f"{next_url} did not answer with a FHIR resource", {"url": next_url})
        if body["resourceType"] == "OperationOutcome":
            raise PrefetchUnavailableError(f"{next_url} answered with an OperationOutcome", {"url": next_url})
        found.append(body)
        next_url = None
        if body["resourceType"] == "Bundle":
            for link in body.get("link") or []:
                if isinstance(link, Mapping) and link.get("relation") == "next" and isinstance(link.get("url"), str):
                    if not _under(link["url"], base):
                        raise PrefetchUnavailableError(
                            f"{url}: the next page is at {link['url']}, outside fhirServer; not followed (the "
                            "access token is only sent to fhirServer)", {"url": url})
                    next_url = link["url"]
    return found


def _under(url: str, prefix: str) -> bool:
    return url == prefix or url.startswith((prefix + "/", prefix + "?"))
