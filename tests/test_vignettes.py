"""Golden clinical vignettes: patients written by hand from clinical/RULES.md, with the complete expected set of
findings, derived facts and suppressions derived by hand (tests/vignettes/*.json; each file explains its reasoning).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import outcome

VIGNETTES = sorted((Path(__file__).parent / "vignettes").glob("*.json"))


def test_there_are_at_least_twenty_vignettes():
    assert len(VIGNETTES) >= 20


@pytest.mark.parametrize("path", VIGNETTES, ids=[p.stem for p in VIGNETTES])
def test_vignette_gives_exactly_the_expected_outcome(engine, path):
    vignette = json.loads(path.read_text(encoding="utf-8"))
    assessment = engine.evaluate(vignette["facts"])
    assert outcome(assessment) == vignette["expect"], vignette["name"]


def test_vignettes_together_produce_every_finding_code(engine, rulebook):
    seen: set[str] = set()
    for path in VIGNETTES:
        seen |= engine.evaluate(json.loads(path.read_text(encoding="utf-8"))["facts"]).codes
    assert seen == set(rulebook.finding_codes)
