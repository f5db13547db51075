"""The audit record: what is kept of one evaluation, its canonical bytes, and the hash that chains it to the last one.

A record's *content* is a JSON object::

    {"schema": "imt-cds/audit-record/1",
     "seq": 7,                                 # its position in the chain, from 1
     "id": "5f0c...",                          # a random UUID: the record id users quote
     "recorded_at": "RFC 3339 UTC",            # when the store appended it
     "patient_id": ..., "input_sha256": "...", # from the assessment
     "input_json": "{...}" | null,             # the canonical input's text (null when store_input=False)
     "rulebook": {"name", "version", "sha256",
                  "files_sha256"},             # the digest of the archived files' bytes (see archive.py)
     "assessment_json": "{...}",               # the assessment document's text exactly as the engine wrote it:
                                               # findings, suppressed, derived facts, trace, provenance
                                               # (parameters, engine versions, evaluated_at)
     "prev_hash": "..."}                       # the previous record's hash ("0" * 64 for the first)

The input and the assessment are kept as the exact text the library produced (the input's sha256 is over those
very bytes, and the document's key order is part of what the caller saw). The record's *body* is the canonical
JSON of the content (UTF-8, keys sorted, no whitespace, as orjson writes it; parsing and writing again reproduces
it exactly), and its *hash* is the sha256 of the body.
Because the content includes ``prev_hash``, each hash covers every record before it: changing, removing, inserting
or reordering any record breaks a link that ``verify_chain`` finds. An auditor can check a chain without this
library: for each record in ``seq`` order, sha256(body) must equal its hash, and its ``prev_hash`` the hash before.

With ``store_input=False`` only the input's sha256 is kept. The findings' reasons still quote the input values they
used (``because``, ``trace``): they are what the rules said, and an audit needs them.

This module builds and checks records; it never touches a database (see ``store``).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from typing import Any, Protocol

import orjson

from ..core.assessment import Provenance, rfc3339

__all__ = [
    "GENESIS_HASH",
    "RECORD_SCHEMA",
    "AuditRecord",
    "ChainBreak",
    "ChainReport",
    "Recordable",
    "StoredRow",
    "canonical_bytes",
    "new_record_content",
    "seal",
    "verify_chain",
]

RECORD_SCHEMA = "imt-cds/audit-record/1"
GENESIS_HASH = "0" * 64  # the "previous hash" of the first record


def canonical_bytes(content: Mapping[str, Any]) -> bytes:
    """The canonical JSON of a record's content: what its hash is over and what a store keeps."""
    return orjson.dumps(content, option=orjson.OPT_SORT_KEYS)


class Recordable(Protocol):
    """What ``new_record_content`` reads of an assessment: an ``Assessment``, or what ``imt-cds batch`` keeps of one
    it has written to its output (its document and input as text, not the objects)."""

    @property
    def patient_id(self) -> str | None: ...

    @property
    def provenance(self) -> Provenance: ...

    def canonical_input_json(self) -> bytes: ...

    def to_json(self) -> str: ...


def new_record_content(assessment: Recordable, *, store_input: bool = True) -> dict[str, Any]:
    """Everything a record holds about one assessment, before the store gives it its place in the chain."""
    provenance = assessment.provenance
    return {
        "schema": RECORD_SCHEMA,
        "id": str(uuid.uuid4()),
        "patient_id": assessment.patient_id,
        "input_sha256": provenance.input_sha256,
        "input_json": assessment.canonical_input_json().decode() if store_input else None,
        "rulebook": {"name": provenance.rulebook_name, "version": provenance.rulebook_version,
                     "sha256": provenance.rulebook_sha256},
        "assessment_json": assessment.to_json(),
    }


def seal(content: Mapping[str, Any], *, seq: int, prev_hash: str) -> tuple[dict[str, Any], bytes, str]:
    """Give a record its place after the chain's head, recorded now: returns (content, body, hash)."""
    sealed = {**content, "seq": seq, "prev_hash": prev_hash, "recorded_at": rfc3339(datetime.now(timezone.utc))}
    body = canonical_bytes(sealed)
    return sealed, body, hashlib.sha256(body).hexdigest()


@dataclass(frozen=True)
class StoredRow:
    """A record as a store keeps it: index columns (for listing and lookup) and the body (the record itself)."""

    seq: int
    id: str
    recorded_at: str
    patient_id: str | None
    rulebook_sha256: str
    prev_hash: str
    hash: str
    body: bytes


@dataclass(frozen=True)
class AuditRecord:
    """One recorded evaluation, read back from a store. ``content`` is the parsed body; the properties are views."""

    hash: str
    content: Mapping[str, Any] = field(repr=False)

    @classmethod
    def from_row(cls, row: StoredRow) -> AuditRecord:
        return cls(row.hash, orjson.loads(row.body))

    @property
    def id(self) -> str:
        return str(self.content["id"])

    @property
    def seq(self) -> int:
        return int(self.content["seq"])

    @property
    def recorded_at(self) -> str:
        return str(self.content["recorded_at"])

    @property
    def prev_hash(self) -> str:
        return str(self.content["prev_hash"])

    @property
    def patient_id(self) -> str | None:
        return self.content["patient_id"]  # type: ignore[no-any-return]

    @cached_property
    def input(self) -> Mapping[str, Any] | None:
        """The canonical input (None when the record was made with ``store_input=False``)."""
        text = self.content["input_json"]
        return None if text is None else orjson.loads(text)

    @property
    def input_sha256(self) -> str:
        return str(self.content["input_sha256"])

    def canonical_input_json(self) -> bytes | None:
        """The canonical input's bytes (their sha256 is ``input_sha256``), or None when the input was not stored."""
        text = self.content.get("input_json")
        return None if text is None else str(text).encode()

    def input_intact(self) -> bool:
        """Whether the stored input still hashes to ``input_sha256`` (True when only the sha256 was stored)."""
        source = self.canonical_input_json()
        return source is None or hashlib.sha256(source).hexdigest() == self.content.get("input_sha256")

    @property
    def rulebook(self) -> Mapping[str, str]:
        """``{"name", "version", "sha256"}`` of the rulebook that made the assessment."""
        return self.content["rulebook"]  # type: ignore[no-any-return]

    @cached_property
    def assessment(self) -> Mapping[str, Any]:
        """The assessment document (README, Output) as the engine produced it (``assessment_json`` is its text)."""
        return orjson.loads(self.content["assessment_json"])  # type: ignore[no-any-return]

    @property
    def parameters(self) -> Mapping[str, float]:
        return self.assessment["provenance"]["parameters"]  # type: ignore[no-any-return]

    @property
    def engine(self) -> Mapping[str, str]:
        return self.assessment["provenance"]["engine"]  # type: ignore[no-any-return]

    @property
    def evaluated_at(self) -> str:
        return str(self.assessment["provenance"]["evaluated_at"])

    def codes(self, part: str) -> list[str]:
        """Finding codes of one part of the assessment: ``recommendations``, ``risk_flags`` or ``suppressed``."""
        if part == "suppressed":
            return [s["finding"]["code"] for s in self.assessment["suppressed"]]
        return [f["code"] for f in self.assessment[part]]

    def summary(self) -> dict[str, Any]:
        """What ``audit list`` shows of a record."""
        return {
            "seq": self.seq,
            "id": self.id,
            "recorded_at": self.recorded_at,
            "patient_id": self.patient_id,
            "rulebook": dict(self.rulebook),
            "input_sha256": self.input_sha256,
            "input_stored": self.content["input_json"] is not None,
            "recommendations": self.codes("recommendations"),
            "risk_flags": self.codes("risk_flags"),
            "suppressed": self.codes("suppressed"),
            "hash": self.hash,
        }

    def chain_ref(self) -> dict[str, Any]:
        """The record's place in the chain, as reports and exports cite it."""
        return {"id": self.id, "seq": self.seq, "hash": self.hash, "prev_hash": self.prev_hash,
                "recorded_at": self.recorded_at}

    def to_dict(self) -> dict[str, Any]:
        """The record's content and its hash, with the input and the assessment as JSON (not as text)."""
        data = {**self.content, "hash": self.hash}
        data["input"] = self.input
        data["assessment"] = self.assessment
        del data["input_json"], data["assessment_json"]
        return data


# --- verification -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainBreak:
    """The first record at which the chain does not hold, and why."""

    position: int  # 1-based position in seq order of the stored rows
    seq: int | None
    id: str | None
    reason: str

    def __str__(self) -> str:
        name = f"record #{self.seq}" if self.seq is not None else f"the record at position {self.position}"
        return f"{name} (id {self.id or '?'}): {self.reason}"


@dataclass(frozen=True)
class ChainReport:
    """The outcome of ``verify_chain``: how many records were checked, the head hash, the first break if any."""

    records: int
    head: str
    first_break: ChainBreak | None = None
    problems: tuple[str, ...] = ()  # further problems found outside the chain (archive, anchor)

    @property
    def ok(self) -> bool:
        return self.first_break is None and not self.problems

    def to_dict(self) -> dict[str, Any]:
        bad = self.first_break
        return {
            "ok": self.ok,
            "records": self.records,
            "head": self.head,
            "first_bad_record": None if bad is None else {"seq": bad.seq, "id": bad.id, "reason": bad.reason},
            "problems": list(self.problems),
        }


def verify_chain(rows: Iterable[StoredRow]) -> tuple[ChainReport, dict[str, dict[str, int]]]:
    """Recompute every hash and link of rows given in ``seq`` order; stop at the first bad record. Returns the report
    and, for the archive check, the rulebooks the intact records name: ``{rulebook sha256: {files_sha256: the first
    record that carries it}}`` (records made before files_sha256 existed add only the rulebook)."""
    previous_hash = GENESIS_HASH
    previous_seq = 0
    count = 0
    rulebooks: dict[str, dict[str, int]] = {}
    for position, row in enumerate(rows, 1):
        content = _parsed(row.body)
        problem = _check_row(row, content, previous_seq, previous_hash)
        if problem is not None:
            return ChainReport(count, previous_hash, ChainBreak(position, row.seq, row.id, problem)), rulebooks
        files_sha256 = content["rulebook"].get("files_sha256")
        recorded = rulebooks.setdefault(row.rulebook_sha256, {})
        if files_sha256 is not None:
            recorded.setdefault(files_sha256, row.seq)
        previous_hash, previous_seq, count = row.hash, row.seq, count + 1
    return ChainReport(count, previous_hash), rulebooks


def _parsed(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return _NOT_JSON


_NOT_JSON = object()  # the content of a body that does not parse


def _check_row(row: StoredRow, content: Any, previous_seq: int, previous_hash: str) -> str | None:
    if content is _NOT_JSON:
        return "its body is not valid JSON (modified)"
    if not isinstance(content, dict) or content.get("schema") != RECORD_SCHEMA:
        return "its body is not an imt-cds audit record (modified)"
    if canonical_bytes(content) != row.body:
        return "its body is not in canonical form (modified after it was recorded)"
    if hashlib.sha256(row.body).hexdigest() != row.hash:
        return "its content does not match its hash (modified after it was recorded)"
    if content.get("seq") != row.seq:
        return f"it is stored at #{row.seq} but its content says #{content.get('seq')} (reordered)"
    if row.seq != previous_seq + 1:
        if row.seq <= previous_seq:
            return f"it follows record #{previous_seq} (reordered or duplicated)"
        missing = (f"#{previous_seq + 1}" if row.seq == previous_seq + 2
                   else f"#{previous_seq + 1} to #{row.seq - 1}")
        return f"it follows record #{previous_seq}: record {missing} is missing (deleted)"
    if content.get("prev_hash") != previous_hash:
        return ("its previous-record hash does not match the record before it (a record before it was deleted, "
                "inserted or reordered)" if row.seq > 1 else "it is the first record but does not start the chain")
    for column, key in (("id", "id"), ("recorded_at", "recorded_at"), ("patient_id", "patient_id"),
                        ("prev_hash", "prev_hash")):
        if getattr(row, column) != content.get(key):
            return f"its {column} column differs from its content (modified)"
    # (a forger may have rewritten the content and its hash: nothing in it is assumed to have the right shape)
    rulebook = content.get("rulebook")
    if (not isinstance(rulebook, dict) or not isinstance(row.rulebook_sha256, str)
            or row.rulebook_sha256 != rulebook.get("sha256")):
        return "its rulebook_sha256 column differs from its content (modified)"
    if not isinstance(rulebook.get("files_sha256", ""), str):
        return "its rulebook files_sha256 is not a sha256 (modified)"
    if not AuditRecord(row.hash, content).input_intact():
        return "its stored input does not match its input_sha256"
    return None

