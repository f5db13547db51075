"""Errors of the CDS Hooks service, each with a stable code and the HTTP status it is answered with.

They extend the library's hierarchy (``imt_cds.errors``) under one branch::

    ImtCdsError
    └── ServiceError                   "cds_service_error"      500
        ├── ServiceConfigError         "cds_config"             (refused at start, never answered)
        ├── BadRequestError            "cds_bad_request"        400  the request is not a valid CDS Hooks call
        ├── UnauthorizedError          "cds_unauthorized"       401  no, or an unacceptable, bearer JWT
        ├── NotFoundError              "cds_not_found"          404  no such service or rule
        ├── PayloadTooLargeError       "cds_payload_too_large"  413  the body is over the configured limit
        ├── UnsupportedMediaTypeError  "cds_unsupported_media_type"  415  the body is not declared as JSON
        │   └── UnsupportedContentCodingError  "cds_unsupported_content_coding"  415  the body is compressed (gzip, ...)
        ├── PrefetchUnavailableError   "cds_data_unavailable"   412  neither prefetch nor fhirServer gave the data
        ├── WorkerCrashedError         "cds_worker_crashed"     500  the evaluation process died serving the request
        ├── WorkerTimeoutError         "cds_worker_timeout"     503  no evaluation process answered in time
        ├── ServiceUnavailableError    "cds_unavailable"        503  a store the service needs cannot be reached
        └── EvaluationFailedError      "cds_evaluation_failed"  500  the evaluation raised (engine failure, ...)

Every error is answered as ``{"error": {"code", "message", "status"}}`` (plus ``details`` where there are some).
The HTTP protocol (``connections``) writes a few answers itself, in the same shape, before a request reaches the
app: ``cds_bad_request`` 400 (unparseable, or a head RFC 9112 refuses), ``cds_request_timeout`` 408,
``cds_uri_too_long`` 414, ``cds_headers_too_large`` 431, ``cds_not_implemented`` 501 (a transfer coding but
chunked).
What a body may say is decided here, not by whoever raised the error: ``public_body`` gives a 401 one fixed message
whatever the reason (the reason goes to the log: a client must not learn which check failed or which issuers are
trusted), and a 5xx a fixed message per code (its message may hold paths or exception text: log only). The 4xx
messages of the other errors are written for the client and name only what the client sent.
This module imports nothing but the library's errors.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from ..core.errors import ImtCdsError

__all__ = [
    "INTERNAL_MESSAGE",
    "UNAUTHORIZED_MESSAGE",
    "BadRequestError",
    "EvaluationFailedError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PrefetchUnavailableError",
    "ServiceConfigError",
    "ServiceError",
    "ServiceUnavailableError",
    "UnauthorizedError",
    "UnsupportedContentCodingError",
    "UnsupportedMediaTypeError",
    "WorkerCrashedError",
    "WorkerTimeoutError",
    "error_body",
    "http_reason",
    "log_value",
    "public_body",
]

UNAUTHORIZED_MESSAGE = "the bearer token was not accepted (CDS Hooks 2.0.1 JWT required)"
_SERVER_MESSAGES = {
    "cds_worker_crashed": "the evaluation process stopped while serving this request; it has been replaced",
    "cds_worker_timeout": "no evaluation process answered in time; try again",
    "cds_unavailable": "a store this service needs is unavailable; try again",
    "cds_evaluation_failed": "the evaluation failed; see the server log",
}
INTERNAL_MESSAGE = "internal error; see the server log"
# What a log line shows of a value a client chose (a path, a URL, a token's claims): enough to recognise it, never
# megabytes, and never a line break that would make one problem look like several lines.
LOG_VALUE_CHARS = 200
_CONTROL_CHARACTERS = {code: f"\\x{code:02x}" for code in (*range(32), 127)}


def log_value(value: Any, limit: int = LOG_VALUE_CHARS) -> str:
    """``value`` as text for a log line: at most ``limit`` characters (then how long it was), control characters
    escaped."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        text = f"{text[:limit]}...[{len(text)} characters]"
    return text.translate(_CONTROL_CHARACTERS)


def error_body(code: str, status: int, message: str, details: Any = None) -> dict[str, Any]:
    """The JSON body every error is answered with: ``{"error": {"code", "status", "message"[, "details"]}}``."""
    error: dict[str, Any] = {"code": code, "status": status, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


def http_reason(status: int) -> str:
    """The standard reason phrase of an HTTP status (what a framework error says, without its own detail)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "HTTP error"


def public_body(error: ServiceError) -> dict[str, Any]:
    """The body ``error`` is answered with: only a code and a message that is safe to show (see the docstring)."""
    if isinstance(error, UnauthorizedError):
        return error_body(error.code, error.status, UNAUTHORIZED_MESSAGE)
    if error.status >= 500:
        message = error.public_message or _SERVER_MESSAGES.get(error.code, INTERNAL_MESSAGE)
        return error_body(error.code, error.status, message)
    return error.to_dict()


class ServiceError(ImtCdsError):
    """An error the service answers with a JSON body; ``status`` is the HTTP status, ``details`` optional context."""

    code = "cds_service_error"
    status = 500
    # Headers HTTP asks for with this status (a 401's WWW-Authenticate is added where its refusal is logged).
    response_headers: tuple[tuple[str, str], ...] = ()

    def __init__(self, message: str, details: Any = None, *, public_message: str | None = None):
        super().__init__(message)
        self.message = message
        self.details = details
        # For a 5xx: a message made of fixed text only, safe to answer with (``message`` goes to the log).
        self.public_message = public_message

    def to_dict(self) -> dict[str, Any]:
        return error_body(self.code, self.status, self.message, self.details)


class ServiceConfigError(ServiceError):
    """The service's configuration is unusable (no authentication configured, an unreadable JWKS, ...)."""

    code = "cds_config"


class BadRequestError(ServiceError):
    """The request is not a CDS Hooks call this service can answer (malformed JSON, a required field missing...)."""

    code = "cds_bad_request"
    status = 400


class UnauthorizedError(ServiceError):
    """The bearer JWT is missing or not acceptable (untrusted issuer, bad signature, expired, replayed...)."""

    code = "cds_unauthorized"
    status = 401


class NotFoundError(ServiceError):
    """No CDS service (or rule) with that id."""

    code = "cds_not_found"
    status = 404


class PayloadTooLargeError(ServiceError):
    """The request body is larger than the configured limit."""

    code = "cds_payload_too_large"
    status = 413


class UnsupportedMediaTypeError(ServiceError):
    """A request body not declared as JSON (``Content-Type``). Refused before it is read: a web page on any site can
    make a browser POST ``text/plain``, a form or an unlabelled body to the service without asking first (no CORS
    preflight), but never ``application/json``; so no such request can record feedback or start an evaluation."""

    code = "cds_unsupported_media_type"
    status = 415
    response_headers = (("Accept", "application/json"),)  # RFC 9110 15.5.16: what would have been accepted


class UnsupportedContentCodingError(UnsupportedMediaTypeError):
    """A request body with a content coding (``Content-Encoding: gzip``): it would be read as if it had none."""

    code = "cds_unsupported_content_coding"
    response_headers = (("Accept-Encoding", "identity"),)  # RFC 9110 12.5.3: the codings that would be accepted


class PrefetchUnavailableError(ServiceError):
    """The data the service needs was neither prefetched nor obtainable from ``fhirServer`` (CDS Hooks: 412)."""

    code = "cds_data_unavailable"
    status = 412


class WorkerCrashedError(ServiceError):
    """The evaluation process died while serving this request (only this request fails; the process is replaced)."""

    code = "cds_worker_crashed"


class WorkerTimeoutError(ServiceError):
    """No evaluation process answered in time (the one that was working is killed and replaced)."""

    code = "cds_worker_timeout"
    status = 503


class ServiceUnavailableError(ServiceError):
    """A store the service needs for this call (the shared token replay cache) cannot be reached."""

    code = "cds_unavailable"
    status = 503


class EvaluationFailedError(ServiceError):
    """The evaluation raised an error in the worker (an engine failure, an audit store that cannot record...)."""

    code = "cds_evaluation_failed"
