"""The service's configuration: one immutable value, built by ``imt-cds serve`` (or a test) and passed in.

Nothing here reads the environment or the disk at import; ``ServiceConfig.check`` validates a configuration once,
before the server starts, and refuses one that would run without authentication unless that was asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import ip_network
from pathlib import Path
from urllib.parse import urlsplit

from .auth import DEFAULT_STORE_TIMEOUT_SECONDS, AuthSettings
from .errors import ServiceConfigError
from .prefetch import DEFAULT_FETCH_DEADLINE

__all__ = ["DEFAULT_MAX_BODY_BYTES", "AuditStoreUnavailableError", "ServiceConfig"]

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024  # a prefetch of a long chart is large; 8 MiB holds thousands of resources
# Bounds of the settings an operator may change. A token lifetime over an hour would defeat the point of short-lived
# tokens (CDS Hooks 2.0.1: minutes); a token cap under 1 KiB refuses ordinary tokens, one over 64 KiB lets a header
# cost more to check than a request; a fetch deadline over 5 minutes holds a request longer than any EHR waits.
MAX_TOKEN_LIFETIME_SECONDS = 3600
TOKEN_BYTES_RANGE = (1024, 65536)
MAX_FHIR_DEADLINE_SECONDS = 300.0
# One job queued behind the running one keeps a worker busy; more only make the queued ones wait behind a long job.
MAX_WORKER_DEPTH = 8


class AuditStoreUnavailableError(ServiceConfigError):
    """The audit store (where feedback goes too) cannot be opened: a folder that does not exist, a file that is not
    a database, a PostgreSQL server that does not answer. Found before the server listens."""

    code = "cds_audit_store_unavailable"


@dataclass(frozen=True)
class ServiceConfig:
    """Everything the service needs to know. ``public_url`` is the base URL clients call (scheme, host, port and any
    path prefix, no trailing slash): JWT ``aud`` values and card links are built from it."""

    public_url: str
    auth: AuthSettings | None = None
    allow_unauthenticated: bool = False
    rules: Path | None = None  # rulebook directory (default: the shipped one)
    audit: str | None = None  # audit store: SQLite path or postgresql:// URL; also where feedback is kept
    audit_input: bool = True  # keep each input in the audit records (False: only its sha256)
    feedback_log: Path | None = None  # NDJSON file for feedback when there is no audit store
    workers: int = 2  # evaluation processes
    worker_depth: int = 2  # jobs one worker may hold: the one it runs and, while all are busy, those queued behind it
    cache_size: int = 4096  # memo cache entries per worker (an EHR re-evaluates the same chart on every open)
    request_timeout: float = 30.0  # seconds an evaluation may take before its process is killed and replaced
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    cors_origins: tuple[str, ...] = ()
    fhir_servers: tuple[str, ...] = ()  # allowed fhirServer URL prefixes; empty: nothing is ever fetched
    fhir_timeout: float = 10.0  # seconds per FHIR request to fhirServer
    fhir_max_pages: int = 20  # searchset pages followed per prefetch query
    not_eligible_card: bool = False  # one info card for a chart without an IMT diagnosis (default: no card at all)
    # seconds a store write (feedback, audit record, token id) may wait before a 503; the Authenticator's default too
    store_timeout: float = DEFAULT_STORE_TIMEOUT_SECONDS
    fhir_deadline: float = DEFAULT_FETCH_DEADLINE  # seconds for all fetches from fhirServer of one request together
    fhir_private_networks: tuple[str, ...] = ()  # CIDR networks an allowed FHIR server may resolve into

    def __post_init__(self) -> None:
        # Paths are appended to it, so a trailing slash goes; but not when the slashes are all there is after the
        # scheme ("https://"): the check's refusal then quotes the URL as given, not a bare "https:".
        stripped = self.public_url.rstrip("/")
        if urlsplit(stripped).netloc:
            object.__setattr__(self, "public_url", stripped)

    def check(self) -> None:
        """Refuse a configuration the service must not run with."""
        parts = urlsplit(self.public_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ServiceConfigError(f"public URL {self.public_url!r} must be an absolute http(s) URL without query "
                                     "or fragment, e.g. https://cds.example.org")
        if self.auth is None and not self.allow_unauthenticated:
            raise ServiceConfigError("no authentication configured: trust at least one JWT issuer (--trust ISS JWKS) "
                                     "or, for a local test only, pass --allow-unauthenticated")
        if self.auth is not None and not self.auth.issuers:
            raise ServiceConfigError("authentication configured without any trusted issuer")
        if self.workers < 1:
            raise ServiceConfigError("at least one evaluation worker is needed")
        if not 1 <= self.worker_depth <= MAX_WORKER_DEPTH:
            raise ServiceConfigError(f"--worker-depth {self.worker_depth} must be from 1 to {MAX_WORKER_DEPTH}")
        if not 0 < self.store_timeout <= 300:
            raise ServiceConfigError(f"--store-timeout {self.store_timeout:g} must be more than 0 and at most 300 "
                                     "seconds")
        if self.store_timeout >= self.request_timeout:
            # The audit record is written inside the evaluation: past --request-timeout the worker is killed
            # instead of answering that the store is busy.
            raise ServiceConfigError(f"--store-timeout {self.store_timeout:g} must be less than --request-timeout "
                                     f"{self.request_timeout:g}")
        if self.auth is not None:
            _check_auth_limits(self.auth)
        if not 0 < self.fhir_deadline <= MAX_FHIR_DEADLINE_SECONDS:
            raise ServiceConfigError(f"--fhir-deadline {self.fhir_deadline:g} must be more than 0 and at most "
                                     f"{MAX_FHIR_DEADLINE_SECONDS:g} seconds")
        for network in self.fhir_private_networks:
            _check_private_network(network)
        if self.max_body_bytes < 1024:
            raise ServiceConfigError("the body size limit must be at least 1024 bytes")
        for origin in self.cors_origins:
            if origin != "*" and urlsplit(origin).scheme not in ("http", "https"):
                raise ServiceConfigError(f"CORS origin {origin!r} must be an http(s) origin or *")
        for prefix in self.fhir_servers:
            if urlsplit(prefix).scheme not in ("http", "https"):
                raise ServiceConfigError(f"allowed FHIR server {prefix!r} must be an http(s) URL")
        if self.feedback_log is not None and self.audit is not None:
            raise ServiceConfigError("feedback goes to the audit store when there is one: give --audit or "
                                     "--feedback-log, not both")

    def service_url(self, path: str) -> str:
        """The public URL of one of the service's paths (``/cds-services/imt-patient-view``)."""
        return self.public_url + path


def _check_auth_limits(auth: AuthSettings) -> None:
    if not 0 < auth.max_lifetime_seconds <= MAX_TOKEN_LIFETIME_SECONDS:
        raise ServiceConfigError(f"--jwt-max-lifetime {auth.max_lifetime_seconds} must be more than 0 and at most "
                                 f"{MAX_TOKEN_LIFETIME_SECONDS} seconds (CDS Hooks tokens live for minutes)")
    low, high = TOKEN_BYTES_RANGE
    if not low <= auth.max_token_bytes <= high:
        raise ServiceConfigError(f"--jwt-max-bytes {auth.max_token_bytes} must be from {low} to {high} bytes")


def _check_private_network(network: str) -> None:
    """A network in CIDR form with no host bits set: ``10.0.0.5/8`` is refused rather than read as ``10.0.0.0/8``
    (the deployer may have meant the one host), and a default route (``0.0.0.0/0``, ``::/0``) would switch the
    address check off altogether."""
    try:
        parsed = ip_network(network, strict=True)
    except ValueError as exc:
        hint = ""
        try:
            hint = f" (did you mean {ip_network(network, strict=False)}?)"
        except ValueError:
            pass
        raise ServiceConfigError(f"--fhir-private-network {network!r} is not a network in CIDR form such as "
                                 f"10.20.0.0/16 or fd00::/8: {exc}{hint}") from exc
    if parsed.prefixlen == 0:
        raise ServiceConfigError(f"--fhir-private-network {network!r} allows every address; name the network your "
                                 "FHIR server is in (e.g. 10.20.0.0/16)")
