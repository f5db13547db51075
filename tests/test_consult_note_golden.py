"""The consult note, line for line, as it was reviewed (tests/fixtures/consult-notes/golden.json.gz, written by
``python tests/consult_note_golden.py --write``): its headings, disclaimer, facts line, diagnosis line, each finding
with its reasons, derivations, FHIR sources and evidence, the withheld findings, the derived facts, the sources quoted
and the provenance. The tests of test_cli.py and test_note_wording.py check what the note must say; these check that
nothing else in it moved (a changed word is a deliberate act: regenerate, read, say so in the commit). Each note is
rendered from its stored document, as ``audit show`` renders a record, and the live assessment of the example
patients renders the same note."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import consult_note_golden  # noqa: E402

from imt_cds.render.consult_note import render_consult_note  # noqa: E402

CASES = consult_note_golden.load_cases()


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_the_consult_note_is_the_reviewed_one(case):
    assert consult_note_golden.render(case) == case["note"]


def test_the_cases_reach_every_branch_of_the_note():
    notes = [case["note"] for case in CASES]
    for heading in ("RECOMMENDATIONS FOR THE TEAM TO CONSIDER", "DATA REQUESTS (missing or doubtful data)",
                    "RISK FLAGS", "SAFETY AND SCOPE FLAGS", "WITHHELD (a rule applied", "DERIVED FACTS",
                    "SOURCES QUOTED", "PROVENANCE"):
        assert any(f"\n{heading}" in note for note in notes), heading
    for said in ("Diagnosis: IMT coded in the chart", "Diagnosis: IMT recognised from the chart's text only",
                 "Diagnosis: IMT attested by the caller", "assessment of (no patient id)", "Facts: not stored",
                 "Why: applies to every patient.", "Evidence: none cited", " also gives it:", "Its evidence: ",
                 "[from Observation/", "(citation ", "(level of evidence ", " months)"):
        assert any(said in note for note in notes), said


def test_the_live_assessment_renders_the_note_of_its_recorded_document(engine):
    # What makes the frozen notes stand for ``evaluate``'s: a note rendered from the live objects is the note of
    # their document read back (whatever the rulebook of the day says).
    for case in CASES:
        if case["canonical_input"] is None or case["name"].startswith(("diagnosis basis", "a finding without")):
            continue
        live = engine.evaluate(json.loads(case["canonical_input"]), evaluated_at=consult_note_golden.EVALUATED_AT,
                               diagnosis=case["document"]["provenance"].get("diagnosis"))
        recorded = {**case, "document": live.to_dict()}
        assert render_consult_note(live, case["sources"]) == consult_note_golden.render(recorded), case["name"]
