"""The frozen CodeSystems (tests/test_fhir_codesystems.py): what ``imt-cds rules codesystems`` publishes.

    python tests/codesystems_golden.py --write   # regenerate tests/fixtures/codesystems/golden.json.gz (deliberate)

A CodeSystem is loaded once into a receiver's terminology server and its displays and definitions are shown to
clinicians from there: a word of this package changed here changes what a code means to them, so every word is
frozen, not only the codes. The words a rule author owns are not: the finding codes, their titles, summaries and
rules come from the rule files (``rules diff`` shows their changes), so the finding-code system is kept as the words
around them, one definition per kind of finding, with ``{rules}`` and ``{summary}`` in their places, and its
rulebook as ``{rulebook}``. The imt-cds version the other four carry is written as ``{imt-cds version}`` (it changes
with every release, which is not a change of meaning).

Regenerate only when a CodeSystem is meant to change, read the changed concepts, and say so in the commit.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
USAGE = ("python tests/codesystems_golden.py --write   "
         "(regenerates tests/fixtures/codesystems/golden.json.gz: a deliberate act)")
GOLDEN = ROOT / "tests" / "fixtures" / "codesystems" / "golden.json.gz"
JSON_INDENT = 1
PACKAGE_VERSION = "{imt-cds version}"
sys.path.insert(0, str(ROOT / "tests"))

import golden_files  # noqa: E402


def published() -> list[dict[str, Any]]:
    """The shipped rulebook's CodeSystems as the file keeps them (see the docstring)."""
    from imt_cds.core.engine import installed_version
    from imt_cds.core.rule_loader import load_rulebook
    from imt_cds.render.fhir_codesystems import code_systems

    rulebook = load_rulebook()
    version = installed_version("imt-cds")
    systems = code_systems(rulebook)
    for system in systems:
        if system["url"] == "urn:imt-cds:finding-code":
            _rule_authors_words_out(system, rulebook)
            continue
        assert system["version"] == version, system["url"]
        system["version"] = PACKAGE_VERSION
        said = f", version {version})"
        assert system["text"]["div"].count(said) == 1, system["url"]
        system["text"]["div"] = system["text"]["div"].replace(said, f", version {PACKAGE_VERSION})")
    return systems


def _rule_authors_words_out(system: dict[str, Any], rulebook: Any) -> None:
    """The finding-code system without what the rule files say: one definition per kind of finding, the rules and
    summary as placeholders; its narrative (the codes and titles, listed) and count left out."""
    named = f"{rulebook.name} {rulebook.version}"
    assert system["version"] == rulebook.version and named in system["description"]
    system["version"] = "{rulebook version}"
    system["description"] = system["description"].replace(named, "{rulebook}")
    per_kind: dict[str, str] = {}
    for concept in system["concept"]:
        spec = next(f for f in rulebook.producers(concept["code"])[0].findings if f.code == concept["code"])
        assert concept["display"] == spec.title and concept["definition"].endswith(f": {spec.summary}")
        said, rules = concept["definition"].removesuffix(f": {spec.summary}").split(", produced by rule ", 1)
        template = f"{said}, produced by rule {{rules}}: {{summary}}"
        assert per_kind.setdefault(spec.kind, template) == template, concept["code"]
    system["concept"] = [{"kind": kind, "definition": per_kind[kind]} for kind in sorted(per_kind)]
    del system["count"], system["text"]


def load() -> list[dict[str, Any]]:
    return golden_files.load(GOLDEN)  # type: ignore[no-any-return]


def main(argv: list[str]) -> int:
    return golden_files.write_command(argv, usage=USAGE, path=GOLDEN, build=published, indent=JSON_INDENT,
                                      describe=lambda systems: f"{len(systems)} CodeSystems")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
