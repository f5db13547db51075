"""The rulebook archive: the files that rebuild a rulebook exactly, kept once per rulebook sha256.

A rulebook's sha256 covers its parsed rules, parameters and evidence registry (with the source documents' bytes),
not its file layout. To replay a record years later, the store keeps the files the loaded rulebook was built from:
the manifest, the parameters and every file that held a rule (part ``rules``), and the evidence registry with
every source document it names (part ``seeds``), exactly the files that sha256 covers. An archive is accepted only
if those files, copied to a fresh directory, load into a rulebook with the very same sha256: a rule author editing
the working copy after the engine loaded it must not leave an archive that replays something else. Loading an
archive goes the same way (materialize in a temporary directory, ``load_rulebook``, compare the sha256), so an
altered archive is refused rather than replayed.

The rulebook sha256 does not cover comments or layout, so the rebuild alone would let a comment be rewritten.
The bytes are held too: each file is stored under the sha256 of its bytes (``stored_digests``), and every record
carries ``files_sha256``, the digest of the archive's whole file list (``files_sha256()``: part, path and the sha256
of each file's bytes), which the record's hash and thus the chain cover. ``problems`` compares both, naming the file.

This module reads and writes files only in directories it is given or creates; it never touches a database.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import orjson

from ..core.errors import AuditError, EvidenceError, ReplayError, RulebookError
from ..core.evidence import REGISTRY_FILE
from ..core.rule_loader import DRUGS_FILE, MANIFEST_FILE, PARAMETERS_FILE, load_rulebook
from ..core.rulebook import Rulebook

__all__ = ["PARTS", "RulebookArchive", "listing_sha256"]

PARTS = ("rules", "seeds")  # the rulebook directory and the evidence (seeds) directory


@dataclass(frozen=True)
class RulebookArchive:
    """The files of one rulebook version: ``files[(part, relative posix path)] = bytes``. Read from a store,
    ``stored_digests`` holds the sha256 each file was stored under (None: the files were just read from disk)."""

    sha256: str
    name: str
    version: str
    files: Mapping[tuple[str, str], bytes] = field(repr=False)
    stored_digests: Mapping[tuple[str, str], str] | None = field(default=None, repr=False)

    @classmethod
    def collect(cls, rulebook: Rulebook) -> RulebookArchive:
        """Read the files of a loaded rulebook and check that they rebuild it (raises ``AuditError`` if not)."""
        evidence = rulebook.evidence
        parts = {  # part -> (its directory, the files in it that the rulebook was built from)
            "rules": (rulebook.directory, [MANIFEST_FILE, PARAMETERS_FILE, *(rule.file for rule in rulebook.rules),
                                           *(value_set.file for value_set in rulebook.terminology.value_sets.values()),
                                           *((DRUGS_FILE,) if "drugs" in rulebook.source else ())]),
            "seeds": (evidence.directory, [REGISTRY_FILE, *(source.file for source in evidence.sources.values())]),
        }
        files: dict[tuple[str, str], bytes] = {}
        for part, (directory, names) in parts.items():
            if directory is None:
                raise AuditError(f"rulebook {rulebook.name} {rulebook.version} was not loaded from files, so it "
                                 "cannot be archived; load it with load_rulebook(rules_dir, seeds_dir)")
            try:
                for name in sorted(set(names)):
                    files[(part, name)] = Path(directory).joinpath(*PurePosixPath(name).parts).read_bytes()
            except OSError as exc:
                raise AuditError(f"cannot read the rulebook files in {directory} to archive them: {exc}") from exc
        archive = cls(rulebook.sha256, rulebook.name, rulebook.version, files)
        try:
            rebuilt = archive._rebuild()
        except (RulebookError, EvidenceError) as exc:
            raise AuditError(f"the rulebook files in {rulebook.directory} no longer load ({_first_line(exc)}); "
                             f"cannot archive rulebook {rulebook.name} {rulebook.version}") from exc
        if rebuilt.sha256 != rulebook.sha256:
            raise AuditError(f"the rulebook files in {rulebook.directory} changed after the rulebook was loaded "
                             f"(they hash to {rebuilt.sha256[:12]}, the engine's rulebook to "
                             f"{rulebook.sha256[:12]}): reload the rulebook before recording")
        return archive

    def file_digests(self) -> dict[tuple[str, str], str]:
        return {key: hashlib.sha256(content).hexdigest() for key, content in self.files.items()}

    def files_sha256(self) -> str:
        """The digest of the file list as the bytes are now (what a record's ``rulebook.files_sha256`` holds)."""
        return listing_sha256((part, path, digest) for (part, path), digest in self.file_digests().items())

    def problems(self, recorded: Mapping[str, int]) -> list[str]:
        """What differs from the bytes that were archived, one line each, naming the file: a file whose bytes no
        longer hash to the sha256 it was stored under, and (``recorded``: files_sha256 -> the first record that
        carries it) a file list that is not the one those records recorded. Empty when the files are intact."""
        label = f"{self.name} {self.version} ({self.sha256[:12]})"
        found = [f"rulebook archive: {label}: file {part}/{path} was altered (its bytes no longer hash to the sha256 "
                 "it was archived under)"
                 for (part, path), digest in sorted(self.file_digests().items())
                 if self.stored_digests is not None and self.stored_digests.get((part, path)) != digest]
        actual = self.files_sha256()
        for digest, seq in sorted(recorded.items(), key=lambda item: item[1]):
            if digest != actual:
                found.append(f"rulebook archive: {label}: its files are not the ones record #{seq} recorded (a file "
                             "was altered, added, removed or renamed since it was archived)")
        return found

    def materialize(self, directory: Path) -> tuple[Path, Path]:
        """Write the files under ``directory``; return the (rules, seeds) directories to load."""
        roots = {part: directory / part for part in PARTS}
        for root in roots.values():
            root.mkdir(parents=True, exist_ok=True)
        for (part, relative), content in self.files.items():
            pure = PurePosixPath(relative)
            if part not in roots or pure.is_absolute() or ".." in pure.parts or not pure.parts:
                raise ReplayError(f"archived rulebook {self.sha256[:12]} holds an unsafe file name {part}/{relative}")
            target = roots[part].joinpath(*pure.parts)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
            except (OSError, ValueError) as exc:  # a name that is also a directory, a NUL byte: an altered archive
                raise ReplayError(f"archived rulebook {self.sha256[:12]} cannot be written out: {part}/{relative}: "
                                  f"{exc}") from exc
        return roots["rules"], roots["seeds"]

    def load(self) -> Rulebook:
        """Rebuild the rulebook; raise ``ReplayError`` if it no longer loads or hashes to another sha256."""
        try:
            rulebook = self._rebuild()
        except (RulebookError, EvidenceError) as exc:
            raise ReplayError(f"archived rulebook {self.name} {self.version} ({self.sha256[:12]}) does not load "
                              f"with this version of imt-cds: {_first_line(exc)}") from exc
        if rulebook.sha256 != self.sha256:
            raise ReplayError(f"archived rulebook {self.name} {self.version} rebuilds to sha256 {rulebook.sha256}, "
                              f"not {self.sha256}: the archive was altered")
        if (rulebook.name, rulebook.version) != (self.name, self.version):
            raise ReplayError(f"archived rulebook {self.sha256[:12]} is listed as {self.name} {self.version} but "
                              f"rebuilds as {rulebook.name} {rulebook.version}: the archive was altered")
        return rulebook

    def _rebuild(self) -> Rulebook:
        with tempfile.TemporaryDirectory(prefix="imt-cds-rulebook-") as scratch:
            rules, seeds = self.materialize(Path(scratch))
            return load_rulebook(rules, seeds, archived=True)


def listing_sha256(entries: Iterable[tuple[str, str, str]]) -> str:
    """sha256 of the canonical JSON of the sorted ``[part, path, sha256 of the bytes]`` triples of an archive."""
    return hashlib.sha256(orjson.dumps(sorted([part, path, digest] for part, path, digest in entries))).hexdigest()


def _first_line(exc: Exception) -> str:
    problems = getattr(exc, "problems", ())
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return f"{problems[0]}{more}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
