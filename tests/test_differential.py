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


# The defaults of the input contract (SPEC section 2), written out here: the reference reads a partial input filled
# in with these, independently of the model's own defaults.
_GENE_DEFAULTS = {"status": "unknown", "methods": [], "fusion_partner": None}
SPEC_DEFAULTS = {
    "patient_id": None, "age_years": None,
    "tumor": {"site": "unknown", "size_cm": None, "resectability": "unknown", "distant_disease": None,
              "epithelioid_morphology": False},
    "symptoms": {"respiratory": None},
    "molecular": {"alk": {**_GENE_DEFAULTS, "ihc_pattern": None}, "ros1": _GENE_DEFAULTS, "ntrk": _GENE_DEFAULTS,
                  "ret": _GENE_DEFAULTS, "pdgfrb": _GENE_DEFAULTS, "rna_fusion_panel_done": False},
    "history": {"surgery_done": False, "margin_status": None, "recurrence": False,
                "progressed_on_alk_inhibitor": False, "progressed_on_prior_systemic": False},
}


def filled_in(partial: dict, defaults: dict = SPEC_DEFAULTS) -> dict:
    return {key: filled_in(partial.get(key, {}), default) if isinstance(default, dict)
            else partial.get(key, default) for key, default in defaults.items()}


def test_partial_input_means_the_same_as_the_input_filled_in_with_the_contracts_defaults(engine):
    rng = random.Random(7)
    dropped = 0
    for _ in range(500):
        patient = random_patient(rng)
        partial = without_defaults(patient, rng)
        full = filled_in(partial)
        dropped += sum(a != b for a, b in zip(leaves(full), leaves(patient)))
        assert parse_facts(partial).model_dump(mode="json") == with_method_sets(full)  # the defaults themselves
        assert outcome(engine.evaluate(partial)) == _reference_outcome(full)
    assert dropped > 1000  # (most partial inputs differ from the patient they were made from)


def with_method_sets(tree: dict) -> dict:
    """``methods`` as the canonical input writes a set: sorted, each once."""
    return {key: with_method_sets(value) if isinstance(value, dict)
            else sorted(set(value)) if key == "methods" else value for key, value in tree.items()}


def leaves(tree: dict) -> list:
    return [value for key in sorted(tree) for value in (leaves(tree[key]) if isinstance(tree[key], dict)
                                                       else [tree[key]])]


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
