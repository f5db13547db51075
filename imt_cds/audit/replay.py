"""Replay an audit record: evaluate its recorded input again and say whether the result is the same.

By default the record is replayed with the *archived* rulebook it names (rebuilt from the archive, its sha256
checked), which answers "does this library still reproduce what was recorded?". ``with_current=True`` uses the
current rulebook instead (the shipped one, or a directory), which answers "would today's rulebook say the same?".

What is compared is the assessment document minus ``provenance.evaluated_at`` and ``provenance.engine`` (the
versions of imt-cds, durable-rules and Python may legitimately change between the two runs). With the current
rulebook, ``provenance.rulebook`` and ``provenance.parameters`` differ by design: they are reported as context,
not as differences. Findings, suppressions, derived facts and the trace must be identical.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from ..core.errors import InvalidInputError, ReplayError
from ..core.rulebook import Rulebook
from .record import AuditRecord

if TYPE_CHECKING:
    from .store import AuditStore

__all__ = ["Difference", "ReplayResult", "compare_documents", "replay"]


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()
_IGNORED = ("evaluated_at", "engine")  # provenance keys that may differ between the recorded run and the replay
_CONTEXT = ("rulebook", "parameters")  # provenance keys that differ by design with the current rulebook


@dataclass(frozen=True)
class Difference:
    """One place where the two documents differ: ``path`` into the document, the recorded value and the new one
    (``MISSING`` when a side has nothing there)."""

    path: str
    recorded: Any
    replayed: Any

    def describe(self, now: str = "now") -> str:
        if self.recorded is MISSING:
            return f"{self.path}: only {now}: {_short(self.replayed)}"
        if self.replayed is MISSING:
            return f"{self.path}: only in the record: {_short(self.recorded)}"
        return f"{self.path}: recorded {_short(self.recorded)}; {now} {_short(self.replayed)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "recorded": None if self.recorded is MISSING else self.recorded,
            "replayed": None if self.replayed is MISSING else self.replayed,
            "only_in": "replayed" if self.recorded is MISSING else "recorded" if self.replayed is MISSING else None,
        }


@dataclass(frozen=True)
class ReplayResult:
    """The outcome of a replay: the record, the rulebook used, the replayed document and the differences."""

    record: AuditRecord
    with_current: bool
    rulebook: Mapping[str, str]  # name, version, sha256 of the rulebook the replay used
    document: Mapping[str, Any]
    differences: tuple[Difference, ...]
    context: tuple[Difference, ...] = ()  # with the current rulebook: its version and parameter changes

    @property
    def identical(self) -> bool:
        return not self.differences

    def to_dict(self) -> dict[str, Any]:
        return {
            "record": {"id": self.record.id, "seq": self.record.seq, "rulebook": dict(self.record.rulebook)},
            "with_current": self.with_current,
            "rulebook": dict(self.rulebook),
            "identical": self.identical,
            "differences": [d.to_dict() for d in self.differences],
            "context": [d.to_dict() for d in self.context],
        }


def replay(store: AuditStore, ref: str, *, with_current: bool = False,
           rulebook: Rulebook | str | Path | None = None) -> ReplayResult:
    """Re-evaluate a record's input (``ref``: an id, a unique id prefix, a number or ``last``) with its archived
    rulebook, or with ``with_current`` the current one (``rulebook``: a loaded rulebook or directory; default the
    shipped one). Raises ``ReplayError`` when the record cannot be replayed and ``ArchiveMissingError``."""
    from ..core.engine import Engine  # the engine module imports durable-rules: only when a replay is asked for
    from ..core.validation import parse_facts_json

    record = store.record(ref)
    try:  # what the replay needs of the record (a forger may have rewritten it with its hash: see verify)
        record_id, recorded_rulebook = record.id, str(record.rulebook["sha256"])
        evaluated_at = datetime.fromisoformat(record.evaluated_at)
        source = record.canonical_input_json()
        intact = record.input_intact()
    except (KeyError, TypeError, ValueError) as exc:
        raise ReplayError(f"audit record {ref} is not a well-formed imt-cds audit record ({type(exc).__name__}: "
                          f"{exc}); run `imt-cds audit verify`") from exc
    if source is None:
        raise ReplayError(f"record {record_id} was made with store_input=False: only the input's sha256 was kept, "
                          "so it cannot be replayed")
    if not intact:
        raise ReplayError(f"record {record_id}: its stored input does not match its input_sha256 (altered)")
    engine = Engine(rulebook if with_current else store.rulebook_archive(recorded_rulebook).load())
    used = engine.rulebook
    try:
        facts = parse_facts_json(source)
    except InvalidInputError as exc:
        raise ReplayError(f"record {record_id}: the recorded input is no longer valid input for this version of "
                          f"imt-cds ({exc.problems[0] if exc.problems else exc})") from exc
    # What established the diagnosis (a chart read from FHIR) is part of what was decided: replay states it again.
    recorded = record.assessment.get("provenance") if isinstance(record.assessment, dict) else None
    diagnosis = recorded.get("diagnosis") if isinstance(recorded, dict) else None
    assessment = engine.evaluate(facts, evaluated_at=evaluated_at,
                                 diagnosis=diagnosis if isinstance(diagnosis, dict) else None)
    document = assessment.to_dict()
    differences, context = compare_documents(record.assessment, document, with_current=with_current)
    return ReplayResult(record, with_current, {"name": used.name, "version": used.version, "sha256": used.sha256},
                        document, differences, context)


def compare_documents(recorded: Mapping[str, Any], replayed: Mapping[str, Any], *, with_current: bool = False
                      ) -> tuple[tuple[Difference, ...], tuple[Difference, ...]]:
    """The differences between two assessment documents that matter for a replay, and (with the current
    rulebook) the provenance context that differs by design."""
    left, right = _comparable(recorded), _comparable(replayed)
    context: list[Difference] = []
    if with_current:
        for key in _CONTEXT:
            context.extend(_diff(_provenance(left).pop(key, MISSING), _provenance(right).pop(key, MISSING),
                                 f"provenance.{key}"))
    return tuple(_diff(left, right, "")), tuple(context)


def _comparable(document: Mapping[str, Any]) -> Any:
    data = orjson.loads(orjson.dumps(document))  # a deep copy
    provenance = _provenance(data)
    for key in _IGNORED:
        provenance.pop(key, None)
    return data


def _provenance(document: Any) -> dict[str, Any]:
    """A document's provenance, to take keys out of (a new empty one when a recorded document has none)."""
    provenance = document.get("provenance") if isinstance(document, dict) else None
    return provenance if isinstance(provenance, dict) else {}


def _finding_key(item: Any) -> str:
    return str(item.get("code")) if isinstance(item, dict) else repr(item)


def _suppression_key(item: Any) -> str:
    finding = item.get("finding") if isinstance(item, dict) else None
    finding = finding if isinstance(finding, dict) else {}
    rule = finding.get("rule")
    return f"{finding.get('code')}/{rule.get('id') if isinstance(rule, dict) else None}"


def _derived_key(item: Any) -> str:
    if not isinstance(item, dict):
        return repr(item)
    reason = item.get("reason")
    return str(item.get("name")) + (f"/{reason.get('id')}" if isinstance(reason, dict) else "")


def _firing_key(item: Any) -> str:
    return str(item.get("engine_rule")) if isinstance(item, dict) else repr(item)


# Lists whose items are compared by identity (a finding by its code, a firing by its engine rule...) rather than by
# position, so that one firing more does not make every later one look different. Their order is compared apart.
_KEYED: dict[str, Callable[[Any], str]] = {
    "recommendations": _finding_key,
    "risk_flags": _finding_key,
    "suppressed": _suppression_key,
    "derived_facts": _derived_key,
    "trace": _firing_key,
}
_POSITION = {"trace": "seq"}  # a keyed item's own position field, compared through the order instead


def _diff(a: Any, b: Any, path: str) -> list[Difference]:
    if a is MISSING or b is MISSING:
        return [Difference(path, a, b)]
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[Difference] = []
        for key in sorted(set(a) | set(b), key=str):
            out.extend(_diff(a.get(key, MISSING), b.get(key, MISSING), f"{path}.{key}" if path else str(key)))
        return out
    if isinstance(a, list) and isinstance(b, list):
        keyer = _KEYED.get(path)
        if keyer is not None:
            position = _POSITION.get(path)
            left = {keyer(item): _without(item, position) for item in a}
            right = {keyer(item): _without(item, position) for item in b}
            out = []
            for key in dict.fromkeys([*left, *right]):
                out.extend(_diff(left.get(key, MISSING), right.get(key, MISSING), f"{path}[{key}]"))
            common_left = [k for k in left if k in right]
            common_right = [k for k in right if k in left]
            if common_left != common_right:
                out.append(Difference(f"{path} (order)", common_left, common_right))
            return out
        out = []
        for index in range(max(len(a), len(b))):
            out.extend(_diff(a[index] if index < len(a) else MISSING, b[index] if index < len(b) else MISSING,
                             f"{path}[{index}]"))
        return out
    if a != b or type(a) is not type(b):
        return [Difference(path, a, b)]
    return []


def _without(item: Any, key: str | None) -> Any:
    if key is None or not isinstance(item, dict):
        return item
    return {k: v for k, v in item.items() if k != key}


def _short(value: Any, limit: int = 160) -> str:
    if isinstance(value, dict) and "code" in value and "title" in value:
        return f"{value['code']} ({value['title']})"
    if isinstance(value, dict) and "finding" in value and isinstance(value["finding"], dict):
        return f"{_short(value['finding'])} withheld"
    text = orjson.dumps(value).decode()
    return text if len(text) <= limit else text[: limit - 3] + "..."
