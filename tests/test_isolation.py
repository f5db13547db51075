"""No state leaks between evaluations: a stateful Hypothesis machine interleaving patients (and failures) on shared
engines, and eight threads evaluating at once give the serial results."""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor

from helpers import outcome, without_time
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule
from reference import evaluate_reference
from strategies import patients, random_patient

from imt_cds import Engine, InvalidInputError, load_rulebook, parse_facts

_RULEBOOK = load_rulebook()
CANARY = {"age_years": 8, "tumor": {"resectability": "unresectable", "size_cm": 2.0, "distant_disease": False},
          "symptoms": {"respiratory": False}, "molecular": {"alk": {"status": "positive", "methods": ["FISH"]}}}
CANARY_FINDINGS = ["REC_CLINICAL_TRIAL_CONSIDER", "REC_CRIZOTINIB_ALK", "REC_MULTIDISCIPLINARY_REVIEW"]


class InterleavedPatients(RuleBasedStateMachine):
    """Two engines evaluate an interleaved stream of patients and invalid inputs. Every result must equal the first
    result seen for the same input on either engine and the reference evaluator's outcome: a session that kept
    facts from an earlier patient, or a failure that left state behind, would change a later result."""

    seen = Bundle("seen")

    @initialize()
    def engines(self):
        self.engines = [Engine(_RULEBOOK), Engine(_RULEBOOK)]
        self.first: dict[str, str] = {}
        self.canary = json.dumps(without_time(Engine(_RULEBOOK).evaluate(CANARY)), sort_keys=True)

    def _check(self, engine_index, patient):
        assessment = self.engines[engine_index].evaluate(patient)
        key = parse_facts(patient).model_dump_json()
        result = json.dumps(without_time(assessment), sort_keys=True)
        assert self.first.setdefault(key, result) == result
        reference = evaluate_reference(parse_facts(patient).model_dump(mode="json"))
        assert outcome(assessment)["findings"] == sorted(reference.findings)
        return patient

    @rule(target=seen, patient=patients(), engine_index=st.integers(0, 1))
    def evaluate_new(self, patient, engine_index):
        return self._check(engine_index, patient)

    @rule(patient=seen, engine_index=st.integers(0, 1))
    def evaluate_again(self, patient, engine_index):
        self._check(engine_index, patient)

    @rule(engine_index=st.integers(0, 1), bad=st.sampled_from([{"age_years": -1}, {"tumor": {"size_cm": 0}},
                                                                {"molecular": {"alk": {"status": "yes"}}}]))
    def evaluate_invalid(self, engine_index, bad):
        try:
            self.engines[engine_index].evaluate(bad)
        except InvalidInputError:
            return
        raise AssertionError("invalid input was evaluated")

    @invariant()
    def a_known_patient_still_gets_its_known_result(self):
        # Checked after every step, invalid inputs included: whatever an earlier step left in an engine would show
        # here, on a patient whose findings are written out by hand (and agree with the reference evaluator).
        for engine in self.engines:
            assessment = engine.evaluate(CANARY)
            assert sorted(assessment.codes) == CANARY_FINDINGS
            assert json.dumps(without_time(assessment), sort_keys=True) == self.canary


TestInterleavedPatients = InterleavedPatients.TestCase
TestInterleavedPatients.settings = settings(
    stateful_step_count=30, max_examples=settings.default.max_examples // 5 or 10, deadline=None
)


def test_eight_threads_evaluating_at_once_give_the_serial_results(engine):
    rng = random.Random(42)
    batch = [random_patient(rng) for _ in range(800)]
    serial = [json.dumps(without_time(engine.evaluate(p))) for p in batch]
    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(lambda p: json.dumps(without_time(engine.evaluate(p))), batch))
    assert parallel == serial


def test_threads_on_two_engines_at_once_stay_correct(rulebook):
    engines = [Engine(rulebook), Engine(rulebook)]
    rng = random.Random(43)
    batch = [random_patient(rng) for _ in range(400)]
    expected = [outcome(engines[0].evaluate(p)) for p in batch]
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda ip: outcome(engines[ip[0] % 2].evaluate(ip[1])), enumerate(batch)))
    assert got == expected


def test_the_known_patients_findings_agree_with_the_reference_evaluator():
    assert sorted(evaluate_reference(parse_facts(CANARY).model_dump(mode="json")).findings) == CANARY_FINDINGS
