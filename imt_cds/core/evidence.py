"""The evidence registry: what the rules cite, loaded from ``seeds/evidence.yaml`` and checked against the seeds.

Two kinds of entry (clinical/EVIDENCE.md):
- *seed* entries quote a sentence of one of the two source documents shipped in ``seeds/``. Every quote is
  checked against its document each time the registry loads, with all whitespace removed from both sides (the PDQ
  text breaks lines inside sentences). A quote that is not found refuses the whole registry: a recommendation must
  never rest on a quotation that its source does not contain.
- *external* entries carry a citation, a one-line claim and a statement of how far the citation was verified.

The registry is an immutable value; nothing here keeps module-level state.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ._yaml import YAMLError, load_yaml
from .errors import EvidenceError

__all__ = ["EvidenceEntry", "EvidenceRegistry", "EvidenceSource", "load_evidence"]

REGISTRY_FILE = "evidence.yaml"
SEED_VERIFICATION = "verbatim: quote found in the shipped source document when the registry was loaded"
_WHITESPACE = re.compile(r"\s+")
_ID = re.compile(r"^[A-Z0-9][A-Za-z0-9-]*(:[a-z][0-9]{2})?$")


@dataclass(frozen=True, slots=True)
class EvidenceSource:
    """A shipped source document that seed entries quote."""

    key: str
    file: str
    citation: str
    study_type: str
    sha256: str
    note: str | None = None


@dataclass(frozen=True, slots=True)
class EvidenceEntry:
    """One citable piece of evidence, resolved: what a finding shows to the clinician."""

    id: str
    citation: str
    claim: str
    verification: str
    quote: str | None = None  # seed entries only: the verbatim sentence
    level: str | None = None  # PDQ level-of-evidence designation, kept as printed
    source: str | None = None  # seed entries only: the source document's file name
    note: str | None = None

    @property
    def is_seed(self) -> bool:
        return self.quote is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "citation": self.citation,
            "quote": self.quote,
            "claim": self.claim,
            "level": self.level,
            "source": self.source,
            "verification": self.verification,
        }


@dataclass(frozen=True)
class EvidenceRegistry:
    name: str
    version: str
    sources: Mapping[str, EvidenceSource]
    entries: Mapping[str, EvidenceEntry]
    sha256: str  # over the registry data and the bytes of every source document
    directory: Path | None = None  # where it was loaded from (to archive it with a rulebook)

    def __contains__(self, evidence_id: object) -> bool:
        return evidence_id in self.entries

    def __getitem__(self, evidence_id: str) -> EvidenceEntry:
        return self.entries[evidence_id]

    def __iter__(self) -> Iterator[EvidenceEntry]:
        return iter(self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)


def squash(text: str) -> str:
    """Text with all whitespace removed: how quotes are compared with their documents."""
    return _WHITESPACE.sub("", text)


def load_evidence(seeds_dir: Path) -> EvidenceRegistry:
    """Load and check the registry in ``seeds_dir``; raise ``EvidenceError`` listing every problem."""
    registry_path = seeds_dir / REGISTRY_FILE
    try:
        raw_bytes = registry_path.read_bytes()
        data = load_yaml(raw_bytes)
    except OSError as exc:
        raise EvidenceError([f"{registry_path.name}: cannot read the evidence registry: {exc.strerror}"]) from None
    except YAMLError as exc:
        raise EvidenceError([f"{registry_path.name}: not valid YAML: {exc}"]) from None
    problems: list[str] = []
    if not isinstance(data, dict):
        raise EvidenceError([f"{REGISTRY_FILE}: expected a mapping with 'sources' and 'entries'"])

    sources, documents = _load_sources(seeds_dir, data.get("sources"), problems)
    entries: dict[str, EvidenceEntry] = {}
    raw_entries = data.get("entries")
    if not isinstance(raw_entries, list):
        problems.append(f"{REGISTRY_FILE}: 'entries' must be a list")
        raw_entries = []
    for index, raw in enumerate(raw_entries):
        entry = _load_entry(index, raw, sources, documents, problems)
        if entry is None:
            continue
        if entry.id in entries:
            problems.append(f"{REGISTRY_FILE}: duplicate evidence id {entry.id}")
        entries[entry.id] = entry
    if problems:
        raise EvidenceError(problems)

    digest = hashlib.sha256(raw_bytes)
    for key in sorted(sources):
        digest.update(f"\0{key}\0{sources[key].sha256}".encode())
    return EvidenceRegistry(
        name=str(data.get("registry", "evidence")),
        version=str(data.get("version", "")),
        sources=MappingProxyType(sources),
        entries=MappingProxyType(entries),
        sha256=digest.hexdigest(),
        directory=seeds_dir,
    )


def _load_sources(
    seeds_dir: Path, raw: Any, problems: list[str]
) -> tuple[dict[str, EvidenceSource], dict[str, str]]:
    sources: dict[str, EvidenceSource] = {}
    documents: dict[str, str] = {}
    if not isinstance(raw, dict):
        problems.append(f"{REGISTRY_FILE}: 'sources' must be a mapping of source key to document")
        return sources, documents
    for key, spec in raw.items():
        if not isinstance(spec, dict) or not all(isinstance(spec.get(k), str) for k in ("file", "citation")):
            problems.append(f"{REGISTRY_FILE}: source {key} needs 'file' and 'citation' strings")
            continue
        path = seeds_dir / spec["file"]
        if path.name != spec["file"]:
            problems.append(f"{REGISTRY_FILE}: source {key}: file must be a plain file name in seeds/")
            continue
        try:
            content = path.read_bytes()
        except OSError:
            problems.append(f"{REGISTRY_FILE}: source {key}: document {spec['file']} not found in seeds/")
            continue
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(f"{REGISTRY_FILE}: source {key}: document {spec['file']} is not UTF-8 text "
                            f"({exc.reason} at byte {exc.start})")
            continue
        documents[key] = squash(text)
        sources[key] = EvidenceSource(
            key=key,
            file=spec["file"],
            citation=spec["citation"],
            study_type=str(spec.get("study_type", "")),
            sha256=hashlib.sha256(content).hexdigest(),
            note=spec.get("note"),
        )
    return sources, documents


def _load_entry(
    index: int,
    raw: Any,
    sources: Mapping[str, EvidenceSource],
    documents: Mapping[str, str],
    problems: list[str],
) -> EvidenceEntry | None:
    where = f"{REGISTRY_FILE}: entry #{index + 1}"
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
        problems.append(f"{where}: needs an 'id' string")
        return None
    entry_id = raw["id"]
    where = f"{REGISTRY_FILE}: {entry_id}"
    if not _ID.match(entry_id):
        problems.append(f"{where}: malformed id (expected e.g. RICH2022:c06 or EXT-LOVLY2014)")
    if "quote" in raw:  # a seed entry
        source_key = raw.get("source")
        if not isinstance(source_key, str) or source_key not in sources:
            problems.append(f"{where}: unknown source {source_key!r}; known: {', '.join(sorted(sources))}")
            return None
        if not entry_id.startswith(f"{source_key}:"):
            problems.append(f"{where}: a seed entry's id must start with its source key {source_key}:")
        quote = raw["quote"]
        if not isinstance(quote, str) or not quote.strip():
            problems.append(f"{where}: 'quote' must be non-empty text")
            return None
        if squash(quote) not in documents[source_key]:
            problems.append(
                f"{where}: quote not found in {sources[source_key].file} (compared with whitespace removed): "
                f"{quote[:80]!r}"
            )
        source = sources[source_key]
        return EvidenceEntry(
            id=entry_id,
            citation=source.citation,
            claim=quote,
            verification=SEED_VERIFICATION,
            quote=quote,
            level=_optional_text(raw.get("level")),
            source=source.file,
            note=_optional_text(raw.get("note")),
        )
    missing = [k for k in ("citation", "claim", "verification") if not isinstance(raw.get(k), str) or not raw[k]]
    if missing:
        problems.append(f"{where}: an external entry needs {', '.join(missing)}")
        return None
    return EvidenceEntry(
        id=entry_id,
        citation=raw["citation"],
        claim=raw["claim"],
        verification=raw["verification"],
        level=_optional_text(raw.get("level")),
        note=_optional_text(raw.get("note")),
    )


def _optional_text(value: Any) -> str | None:
    return None if value is None else str(value)
