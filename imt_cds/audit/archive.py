"""The rulebook archive: the files that rebuild a rulebook exactly, kept once per rulebook sha256.

A rulebook's sha256 covers its parsed rules, parameters and evidence registry (with the source documents' bytes),
not its file layout. To replay a record years later, the store keeps the files the loaded rulebook was built from:
the manifest, the parameters and every file that held a rule (part ``rules``), and the evidence registry with
every source document it names (part ``seeds``), exactly the files that sha256 covers. An archive is accepted only
if those files, copied to a fresh directory, load into a rulebook with the very same sha256: a rule author editing
the working copy after the engine loaded it must not leave an archive that replays something else. Loading an
archive goes the same way (materialize in a temporary directory, ``load_rulebook``, compare the sha256), so an
altered archive is refused rather than replayed.

This module reads and writes files only in directories it is given or creates; it never touches a database.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..errors import AuditError, EvidenceError, ReplayError, RulebookError
from ..evidence import REGISTRY_FILE
from ..rule_loader import MANIFEST_FILE, PARAMETERS_FILE, load_rulebook
from ..rulebook import Rulebook

__all__ = ["PARTS", "RulebookArchive"]

PARTS = ("rules", "seeds")  # the rulebook directory and the evidence (seeds) directory


@dataclass(frozen=True)
class RulebookArchive:
    """The files of one rulebook version: ``files[(part, relative posix path)] = bytes``."""

    sha256: str
    name: str
    version: str
    files: Mapping[tuple[str, str], bytes] = field(repr=False)

    @classmethod
    def collect(cls, rulebook: Rulebook) -> RulebookArchive:
        """Read the files of a loaded rulebook and check that they rebuild it (raises ``AuditError`` if not)."""
        evidence = rulebook.evidence
        parts = {  # part -> (its directory, the files in it that the rulebook was built from)
            "rules": (rulebook.directory, [MANIFEST_FILE, PARAMETERS_FILE, *(rule.file for rule in rulebook.rules),
                                           *(value_set.file for value_set in rulebook.terminology.value_sets.values())]),
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
        return rulebook

    def _rebuild(self) -> Rulebook:
        with tempfile.TemporaryDirectory(prefix="imt-cds-rulebook-") as scratch:
            rules, seeds = self.materialize(Path(scratch))
            return load_rulebook(rules, seeds)


def _first_line(exc: Exception) -> str:
    problems = getattr(exc, "problems", ())
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return f"{problems[0]}{more}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
