"""The project's code systems as FHIR CodeSystem resources: built from the rulebook and the fact catalogue (a rule
author's change shows up without anyone editing a list), written by ``imt-cds rules codesystems``, and covering every
``urn:imt-cds`` coding the FHIR export uses. Their R4 invariants are evaluated in test_fhir_invariants.py."""

from __future__ import annotations

import json
import subprocess
import sys
import typing
from pathlib import Path

import codesystems_golden
from fhir.resources.R4B.codesystem import CodeSystem
from rulebook_copies import copy_rulebook, edit

from imt_cds.core.fact_fields import fact_fields
from imt_cds.core.facts import TestMethod
from imt_cds.render.fhir_codesystems import code_systems
from imt_cds.render.fhir_output import assessment_bundle

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("imt-cds")
EXAMPLES = sorted((ROOT / "examples").glob("*.json"))


def _write(output: Path, *options: str) -> dict[str, dict]:
    result = subprocess.run([str(SCRIPT), "rules", "codesystems", "-o", str(output), *options],
                            check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    written = {path.name: json.loads(path.read_text()) for path in output.glob("CodeSystem-*.json")}
    assert len(result.stdout.splitlines()) == len(written)
    return written


def test_the_command_writes_one_r4_codesystem_per_system_of_the_project(tmp_path):
    written = _write(tmp_path / "out")
    assert {system["url"] for system in written.values()} == {
        "urn:imt-cds:finding-code", "urn:imt-cds:fact", "urn:imt-cds:test-method", "urn:imt-cds:service-card",
        "urn:imt-cds:override-reason"}
    for name, system in written.items():
        parsed = CodeSystem.model_validate(system)
        assert name == f"CodeSystem-{parsed.id}.json"
        assert parsed.count == len(parsed.concept) and parsed.content == "complete"
        assert parsed.text.status == "generated" and parsed.url in parsed.text.div


def test_the_codesystems_are_built_from_the_rulebook_and_the_fact_catalogue(rulebook, tmp_path):
    systems = {system["url"]: system for system in code_systems(rulebook)}
    assert [c["code"] for c in systems["urn:imt-cds:finding-code"]["concept"]] == list(rulebook.finding_codes)
    assert systems["urn:imt-cds:finding-code"]["version"] == rulebook.version
    assert [c["code"] for c in systems["urn:imt-cds:fact"]["concept"]] == list(fact_fields())
    assert [c["code"] for c in systems["urn:imt-cds:test-method"]["concept"]] == list(typing.get_args(TestMethod))
    # a rule author renames a finding: the published CodeSystem follows, with nothing else edited
    rules = copy_rulebook(tmp_path)
    edit(rules, "treatment/R32a-crizotinib-alk.yaml", "title: Consider crizotinib (ALK inhibitor)",
         "title: Consider crizotinib, an ALK inhibitor")
    written = _write(tmp_path / "out", "--rules", str(rules))
    findings = written["CodeSystem-imt-cds-finding-code.json"]["concept"]
    assert {c["code"]: c["display"] for c in findings}["REC_CRIZOTINIB_ALK"] == "Consider crizotinib, an ALK inhibitor"


def test_every_project_coding_in_an_export_is_defined_by_a_published_codesystem(engine, rulebook):
    defined = {(s["url"], s["version"], c["code"]) for s in code_systems(rulebook) for c in s["concept"]}
    versions = {s["url"]: s["version"] for s in code_systems(rulebook)}

    def codings(node):
        if isinstance(node, dict):
            if isinstance(node.get("system"), str) and "code" in node:
                yield node
            for value in node.values():
                yield from codings(value)
        elif isinstance(node, list):
            for value in node:
                yield from codings(value)

    used = 0
    for path in EXAMPLES:
        bundle = assessment_bundle(engine.evaluate(json.loads(path.read_text())).to_dict())
        for coding in codings(bundle):
            if coding["system"].startswith("urn:imt-cds:"):
                used += 1
                version = coding.get("version", versions[coding["system"]])
                assert (coding["system"], version, coding["code"]) in defined, coding
    assert used > 50


def test_an_output_directory_that_cannot_be_made_is_one_line_and_exit_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = subprocess.run([str(SCRIPT), "rules", "codesystems", "-o", str(blocker / "out")],
                            check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--output" in result.stderr and "Traceback" not in result.stderr


def test_the_published_codesystems_are_word_for_word_the_reviewed_ones():
    # What a receiver's terminology server shows clinicians for each code (tests/codesystems_golden.py says why every
    # word is frozen and how to regenerate the file after a deliberate change).
    frozen, live = codesystems_golden.load(), codesystems_golden.published()
    assert [s["url"] for s in live] == [s["url"] for s in frozen]
    for now, then in zip(live, frozen):
        changed = [c["code"] for c, was in zip(now["concept"], then["concept"]) if c != was]
        assert now["concept"] == then["concept"], f"{now['url']}: concepts changed: {changed}"
        assert now == then, f"{now['url']}: the CodeSystem's own elements changed"


def test_a_finding_code_is_defined_by_the_rules_that_produce_it_with_their_versions(rulebook):
    # An auditor reads a finding code back to its rules: every producing rule is named with its version.
    (findings,) = [s for s in code_systems(rulebook) if s["url"] == "urn:imt-cds:finding-code"]
    shared = 0
    for concept in findings["concept"]:
        producers = rulebook.producers(concept["code"])
        named = concept["definition"].split(", produced by rule ", 1)[1].split(": ", 1)[0]
        assert named == ", ".join(f"{rule.id} v{rule.version}" for rule in producers)
        shared += len(producers) > 1
    assert shared >= 2  # (codes two rules produce are among them: FLAG_OFF_LABEL_AGE, FLAG_OFF_LABEL_INDICATION)


def test_every_service_card_code_published_is_one_the_service_makes_cards_with():
    # A code in the published CodeSystem that no card ever carries tells a receiver of a card that does not exist
    # (ORDER_NOT_CHECKED was one, left from an early order check).
    from imt_cds.render.cards import ServiceCard

    source = "\n".join(path.read_text() for path in (ROOT / "imt_cds").rglob("*.py"))
    assert [card.name for card in ServiceCard if f"ServiceCard.{card.name}" not in source] == []
