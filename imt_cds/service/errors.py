"""Errors of the CDS Hooks service, each with a stable code and the HTTP status it is answered with.

They extend the library's hierarchy (``imt_cds.errors``) under one branch::

    ImtCdsError
    └── ServiceError                   "cds_service_error"      500
        ├── ServiceConfigError         "cds_config"             (refused at start, never answered)
        ├── BadRequestError            "cds_bad_request"        400  the request is not a valid CDS Hooks call
        ├── UnauthorizedError          "cds_unauthorized"       401  no, or an unacceptable, bearer JWT
        ├── NotFoundError              "cds_not_found"          404  no such service or rule
        ├── PayloadTooLargeError       "cds_payload_too_large"  413  the body is over the configured limit
        ├── PrefetchUnavailableError   "cds_data_unavailable"   412  neither prefetch nor fhirServer gave the data
        ├── WorkerCrashedError         "cds_worker_crashed"     500  the evaluation process died serving the request
        ├── WorkerTimeoutError         "cds_worker_timeout"     503  no evaluation process answered in time
        └── EvaluationFailedError      "cds_evaluation_failed"  500  the evaluation raised (engine failure, ...)

Every error is answered as ``{"error": {"code", "message", "status"}}`` (plus ``details`` where there are some).
This module imports nothing but the library's errors.
"""

from __future__ import annotations

from typing import Any

from ..errors import ImtCdsError

__all__ = [
    "BadRequestError",
    "EvaluationFailedError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PrefetchUnavailableError",
    "ServiceConfigError",
    "ServiceError",
    "UnauthorizedError",
    "WorkerCrashedError",
    "WorkerTimeoutError",
    "error_body",
]


def error_body(code: str, status: int, message: str, details: Any = None) -> dict[str, Any]:
    """The JSON body every error is answered with: ``{"error": {"code", "status", "message"[, "details"]}}``."""
    error: dict[str, Any] = {"code": code, "status": status, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


class ServiceError(ImtCdsError):
    """An error the service answers with a JSON body; ``status`` is the HTTP status, ``details`` optional context."""

    code = "cds_service_error"
    status = 500

    def __init__(self, message: str, details: Any = None):
        super().__init__(message)
        self.message = message
        self.details = details

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


class EvaluationFailedError(ServiceError):
    """The evaluation raised an error in the worker (an engine failure, an audit store that cannot record...)."""

    code = "cds_evaluation_failed"
