"""Errors raised by imt-cds.

Every error the library raises on purpose is an ``ImtCdsError``; each carries a stable ``code`` that callers
(and the CLI's JSON output) can rely on, and typed context instead of information buried in a message::

    ImtCdsError                      code
    ├── InvalidInputError            "invalid_input"     patient facts failed validation; .problems lists each one
    │   └── ChartRefusedError        "chart_refused"     a FHIR chart whose patient cannot be established (several
    │                                                    patients, none, no id, another than the context's)
    ├── RulebookError                "invalid_rulebook"  rule files / parameters are malformed; .problems lists each one
    ├── EvidenceError                "invalid_evidence"  evidence registry malformed or a seed quote not in its document
    ├── EngineError                  "engine_failure"    the engine failed while evaluating (fail closed: no result)
    ├── NaiveDateTimeError           "naive_datetime"    evaluated_at (or another moment) has no time zone; also a
    │                                                    ValueError
    ├── InvalidSettingError          "invalid_setting"   an argument outside what is allowed (a negative
    │                                                    cache_size ...); .name, .value; also a ValueError
    ├── UnknownRuleError             "unknown_rule"      Rulebook.rule(id) for an id the rulebook lacks; .rule_id,
    │                                                    .suggestion; also a KeyError
    └── AuditError                   "audit_error"       the audit trail could not record, read or replay
        ├── AuditStoreError          "audit_store"       the store failed to read or write (I/O, lock, corrupt page)
        ├── NotAnAuditStoreError     "audit_store_invalid"  no audit database there (missing, not a database, no tables)
        ├── RecordNotFoundError      "audit_record_not_found"  no record with that id in the store
        ├── ArchiveMissingError      "audit_archive_missing"   the rulebook a record names is not in the archive
        ├── ReplayError              "audit_replay_impossible"  a record cannot be replayed (input not stored, ...)
        ├── CheckpointError          "audit_checkpoint_invalid"  a checkpoint or key file is not one (malformed)
        └── CheckpointSignatureError "audit_checkpoint_forged"   a checkpoint's signature does not verify with the key

The CDS Hooks service adds its own branch, defined in ``imt_cds.service.errors`` (each maps to an HTTP status)::

    ImtCdsError
    └── ServiceError                 "cds_service_error"
        ├── ServiceConfigError       "cds_config"             the server cannot start with this configuration
        ├── BadRequestError          "cds_bad_request"        400: the hook request is malformed
        ├── UnauthorizedError        "cds_unauthorized"       401: the bearer JWT is missing or not acceptable
        ├── NotFoundError            "cds_not_found"          404: no such service
        ├── PayloadTooLargeError     "cds_payload_too_large"  413: the body is over the size limit
        ├── UnsupportedMediaTypeError "cds_unsupported_media_type"  415: the body is not declared as JSON
        ├── PrefetchUnavailableError "cds_data_unavailable"   412: neither prefetch nor the FHIR server gave the data
        ├── WorkerCrashedError       "cds_worker_crashed"     500: the worker evaluating the request died
        ├── WorkerTimeoutError       "cds_worker_timeout"     503: the evaluation took too long
        └── EvaluationFailedError    "cds_evaluation_failed"  500: the engine failed (fail closed)

Validation errors collect *every* problem before raising, so a user fixes a file once rather than once per error.
This module must never import anything else from the package: every other module imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "ArchiveMissingError",
    "AuditError",
    "AuditStoreError",
    "CheckpointError",
    "CheckpointSignatureError",
    "EngineError",
    "EvidenceError",
    "ChartRefusedError",
    "ImtCdsError",
    "InputProblem",
    "InvalidInputError",
    "InvalidSettingError",
    "NaiveDateTimeError",
    "NotAnAuditStoreError",
    "RecordNotFoundError",
    "ReplayError",
    "RulebookError",
    "RulebookProblem",
    "UnknownRuleError",
]


class ImtCdsError(Exception):
    """Base class of every error imt-cds raises on purpose."""

    code = "imt_cds_error"


class _ProblemsError(ImtCdsError):
    """An error listing every problem found (``problems``), one per line of its message after a heading."""

    heading = "invalid"

    def __init__(self, problems: Any):
        self.problems: tuple[Any, ...] = tuple(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{self.heading} ({self._count()}):\n{lines}")

    def _count(self) -> str:
        count = len(self.problems)
        return f"{count} problem{'s' if count != 1 else ''}"


@dataclass(frozen=True, slots=True)
class InputProblem:
    """One thing wrong with a patient's facts.

    ``path`` is the dotted field path (``molecular.alk.status``; list items as ``methods[1]``; ``""`` is the whole
    document), ``value`` the offending value as given, ``message`` what is wrong and what is allowed.
    """

    path: str
    message: str
    value: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "message": self.message, "value": _jsonable(self.value)}

    def __str__(self) -> str:
        where = self.path or "(document)"
        return f"{where}: {self.message}"


class InvalidInputError(_ProblemsError, ValueError):
    """Patient facts were rejected. Nothing was evaluated; ``problems`` lists every problem found."""

    code = "invalid_input"
    heading = "invalid patient facts"
    problems: tuple[InputProblem, ...]

    def __init__(self, problems: list[InputProblem] | tuple[InputProblem, ...]):
        super().__init__(problems)

    def to_dict(self) -> dict[str, Any]:
        return {"errors": [p.to_dict() for p in self.problems]}


class ChartRefusedError(InvalidInputError):
    """A FHIR chart that is not evaluated because whose data it is, or what it says of the patient, cannot be
    established: more than one patient, no Patient, a Patient without a valid id, a Patient other than the one the
    caller named, two different resources of one name, a Patient record that another replaces (or whose links
    cannot be read), a Patient that carries a modifier element (``modifierExtension``, ``implicitRules``), or a death
    record that cannot be read. ``reason`` is one of ``several_patients``, ``no_patient``, ``patient_without_id``,
    ``other_patient``, ``conflicting_copies``, ``patient_replaced``, ``patient_link_unreadable``,
    ``patient_not_understood``, ``deceased_unreadable``."""

    code = "chart_refused"
    heading = "FHIR chart refused; nothing was evaluated"

    def __init__(self, reason: str, message: str, value: Any = None):
        self.reason = reason
        super().__init__([InputProblem("", message, value)])


@dataclass(frozen=True, slots=True)
class RulebookProblem:
    """One thing wrong with the rulebook: where it is (file, line, rule, path inside the rule) and what to do."""

    file: str
    message: str
    rule: str | None = None
    path: str | None = None
    line: int | None = None
    suggestion: str | None = None

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line else "")
        parts = [where]
        if self.rule:
            parts.append(f"rule {self.rule}")
        if self.path:
            parts.append(self.path)
        text = ": ".join([", ".join(parts), self.message])
        if self.suggestion:
            text += f" (did you mean {self.suggestion!r}?)"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "rule": self.rule,
            "path": self.path,
            "message": self.message,
            "suggestion": self.suggestion,
        }


class RulebookError(_ProblemsError):
    """The rulebook (rules, parameters or manifest) is malformed; ``problems`` lists every problem found."""

    code = "invalid_rulebook"
    heading = "invalid rulebook"
    problems: tuple[RulebookProblem, ...]

    def __init__(self, problems: list[RulebookProblem] | tuple[RulebookProblem, ...]):
        super().__init__(problems)


class EvidenceError(_ProblemsError):
    """The evidence registry is malformed, or a seed quote is not found verbatim in its source document."""

    code = "invalid_evidence"
    heading = "invalid evidence registry"
    problems: tuple[str, ...]

    def __init__(self, problems: list[str] | tuple[str, ...]):
        super().__init__(problems)

    def _count(self) -> str:
        return f"{len(self.problems)} problem(s)"


class EngineError(ImtCdsError, RuntimeError):
    """The rules engine failed during an evaluation. No partial result is ever returned (fail closed)."""

    code = "engine_failure"


class NaiveDateTimeError(ImtCdsError, ValueError):
    """A moment without a time zone was given where an instant is needed (``evaluated_at``): a naive datetime
    means a different instant on every server, so it is refused rather than guessed. ``name`` is the argument."""

    code = "naive_datetime"

    def __init__(self, name: str, value: Any):
        self.name = name
        self.value = value
        super().__init__(f"{name} must be timezone-aware (e.g. datetime.now(timezone.utc)), not the naive "
                         f"{value!r}")


class InvalidSettingError(ImtCdsError, ValueError):
    """An argument outside what is allowed (``Engine(cache_size=-1)``): ``name`` is the argument, ``value`` what
    was given, and the message says what is allowed."""

    code = "invalid_setting"

    def __init__(self, name: str, value: Any, allowed: str):
        self.name = name
        self.value = value
        super().__init__(f"{name} must be {allowed}, not {value!r}")


class UnknownRuleError(ImtCdsError, KeyError):
    """``Rulebook.rule(rule_id)`` for an id the rulebook has no rule with. A ``KeyError`` too, as it was before
    it had a code; ``suggestion`` is the closest existing id, if any."""

    code = "unknown_rule"

    def __init__(self, rule_id: str, suggestion: str | None = None):
        self.rule_id = rule_id
        self.suggestion = suggestion
        hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
        super().__init__(f"the rulebook has no rule {rule_id!r}{hint}")

    def __str__(self) -> str:  # KeyError would show the message's repr, quotes and all
        return str(self.args[0])


class AuditError(ImtCdsError):
    """The audit trail could not record, read or replay. An evaluation whose record could not be written raises
    this instead of returning (fail closed). Messages are one line; the only argument is the message (so the error
    crosses process boundaries intact, e.g. out of a ``batch`` worker)."""

    code = "audit_error"


class AuditStoreError(AuditError):
    """The audit store failed to read or write (I/O error, lock not obtained in time, corrupt data)."""

    code = "audit_store"


class NotAnAuditStoreError(AuditError):
    """There is no audit database where one was expected: the file is missing, is not a database, or has no audit
    tables."""

    code = "audit_store_invalid"


class RecordNotFoundError(AuditError):
    """No audit record has the given id (or the id prefix is ambiguous)."""

    code = "audit_record_not_found"


class ArchiveMissingError(AuditError):
    """The rulebook an audit record names is not in the store's rulebook archive."""

    code = "audit_archive_missing"


class ReplayError(AuditError):
    """An audit record cannot be replayed: its input was not stored, or its archived rulebook does not load or does
    not hash to the recorded sha256."""

    code = "audit_replay_impossible"


class CheckpointError(AuditError):
    """A signed checkpoint or a key file cannot be used: not JSON, not a checkpoint, not an Ed25519 PEM key."""

    code = "audit_checkpoint_invalid"


class CheckpointSignatureError(AuditError):
    """A checkpoint's signature does not verify with the public key given: it was altered, forged, or signed with
    another key. Nothing it claims about the trail can be trusted."""

    code = "audit_checkpoint_forged"


def _jsonable(value: Any) -> Any:
    """Make an offending input value safe to put in a JSON error report (it may be anything)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        # NaN and infinities are not JSON; report them as text rather than producing invalid JSON.
        return value if value == value and value not in (float("inf"), float("-inf")) else repr(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)
