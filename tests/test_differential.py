"""Differential test: the engine agrees with tests/reference.py, an independent plain-Python evaluator of the whole
catalogue (it imports neither imt_cds nor durable), on thousands of generated patients and on every parameter set."""

from __future__ import annotations

import os
import random

import pytest
from conftest import IS_CI_PROFILE
from helpers import outcome
from hypothesis import given
from reference import evaluate_reference
from strategies import patients, random_patient, without_defaults

from imt_cds import Engine, parse_facts

SWEEP = int(os.environ.get("IMT_CDS_SWEEP", 20_000 if IS_CI_PROFILE else 3_000))


def _reference_outcome(canonical, params=None):
    ref = evaluate_reference(canonical, params)
    return {"findings": sorted(ref.findings), "derived": sorted(ref.derived), "suppressed": sorted(ref.suppressed)}


def test_engine_agrees_with_the_reference_on_a_seeded_sweep(engine):
    rng = random.Random(20261121)
    disagreements = []
    for _ in range(SWEEP):
        patient = random_patient(rng)
        facts = parse_facts(patient)
        got = outcome(engine.evaluate(facts))
        expected = _reference_outcome(facts.model_dump(mode="json"))
        if got != expected:
            disagreements.append((patient, got, expected))
    assert not disagreements, f"{len(disagreements)} of {SWEEP} disagree; first: {disagreements[0]}"


def test_the_sweep_exercises_every_finding_and_derived_fact(engine, rulebook):
    # Guards against a vacuous differential test: the generated patients must reach every outcome.
    rng = random.Random(20261121)
    codes: set[str] = set()
    derived: set[str] = set()
    suppressed: set[str] = set()
    for _ in range(min(SWEEP, 3_000)):
        result = outcome(engine.evaluate(random_patient(rng)))
        codes.update(result["findings"])
        derived.update(result["derived"])
        suppressed.update(result["suppressed"])
    assert codes == set(rulebook.finding_codes)
    assert {d.split(":")[0] for d in derived} == set(rulebook.derived_names)
    assert {f"CONTRADICTION:C{i}" for i in range(1, 5)} <= derived
    assert len(suppressed) == 10


@given(patients())
def test_engine_agrees_with_the_reference_on_generated_patients(engine, patient):
    facts = parse_facts(patient)
    assert outcome(engine.evaluate(facts)) == _reference_outcome(facts.model_dump(mode="json"))


def test_partial_input_means_the_same_as_the_filled_in_input(engine):
    rng = random.Random(7)
    for _ in range(500):
        patient = random_patient(rng)
        partial = without_defaults(patient, rng)
        facts = parse_facts(partial)
        assert outcome(engine.evaluate(partial)) == _reference_outcome(facts.model_dump(mode="json"))


ALTERED_PARAMETERS = [
    {"size_risk_threshold_cm": 6.0},
    {"evidence_age_limit_years": 18},
    {"crizotinib_min_age_years": 2, "selpercatinib_min_age_years": 12},
    {"trk_infant_check_age_years": 2},
    {"crizotinib_min_age_years": 0, "selpercatinib_min_age_years": 0, "trk_infant_check_age_years": 0},
]


@pytest.mark.parametrize("changes", ALTERED_PARAMETERS, ids=lambda c: ",".join(c))
def test_engine_agrees_with_the_reference_under_other_parameters(tmp_path, changes):
    from rulebook_copies import copy_rulebook, set_parameters

    directory = copy_rulebook(tmp_path)
    set_parameters(directory, changes)
    engine = Engine(directory)
    rng = random.Random(11)
    for _ in range(1_000):
        facts = parse_facts(random_patient(rng))
        assert outcome(engine.evaluate(facts)) == _reference_outcome(facts.model_dump(mode="json"), changes)
