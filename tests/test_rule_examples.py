"""The examples written in every rule file behave as written (generated from the rulebook itself)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from imt_cds import load_rulebook
from imt_cds.authoring.rule_examples import run_example

_RULEBOOK = load_rulebook()
_CASES = [(rule.id, i) for rule in _RULEBOOK.rules for i, _ in enumerate(rule.examples)]


@pytest.mark.parametrize(("rule_id", "index"), _CASES, ids=[f"{r}-{i}" for r, i in _CASES])
def test_rule_example_behaves_as_written(engine, rule_id, index):
    rule = engine.rulebook.rule(rule_id)
    example = rule.examples[index]
    outcome = run_example(engine, rule, example)
    assert outcome.passed, f"{rule_id} example {example.name!r}: " + "; ".join(outcome.failures)


def test_every_rule_has_an_example_that_fires_and_one_that_stays_silent(rulebook):
    for rule in rulebook.rules:
        assert any(e.fires for e in rule.examples), rule.id
        if rule.when is not None and rule.when.__class__.__name__ == "Always":
            continue  # a rule that always applies cannot stay silent (R01)
        assert any(not e.fires for e in rule.examples), rule.id


def test_an_example_written_wrong_is_reported_in_words_a_rule_author_can_act_on(engine):
    rule = engine.rulebook.rule("R16")
    firing = next(example for example in rule.examples if example.fires)
    silent = next(example for example in rule.examples if not example.fires)
    assert run_example(engine, rule, replace(firing, fires=False)).failures == ("R16 should stay silent but fired",)
    assert run_example(engine, rule, replace(silent, fires=True)).failures == ("R16 should fire but did not",)
    produced = "RISK_TUMOR_SIZE_ABOVE_COHORT_MEDIAN"
    wrong = replace(firing, expect=("FLAG_CONTRADICTORY_INPUT",), expect_not=(produced,), expect_suppressed=(produced,))
    outcome = run_example(engine, rule, wrong)
    assert outcome.fired and not outcome.passed and outcome.failures == (
        "expected FLAG_CONTRADICTORY_INPUT in the output; it is not",
        f"expected {produced} not to be in the output; it is", f"expected {produced} to be suppressed; it is not")


def test_a_rule_that_fires_without_its_effect_showing_is_a_failure(engine):
    # A rule file out of step with the engine that runs it (a finding or derived fact renamed in one of them only):
    # the rule fires, but what it says it makes is neither in the output nor suppressed.
    finding_rule, deriving_rule = engine.rulebook.rule("R13"), engine.rulebook.rule("D02")
    request, flag = finding_rule.findings
    renamed = replace(finding_rule, findings=(replace(request, code="REQUEST_RENAMED"), flag,
                                              replace(flag, code="FLAG_RENAMED")))
    example = next(example for example in finding_rule.examples if example.fires)
    assert run_example(engine, renamed, example).failures == (
        "R13 fired but REQUEST_RENAMED, FLAG_RENAMED is neither in the output nor suppressed",)
    example = next(example for example in deriving_rule.examples if example.fires)
    assert run_example(engine, replace(deriving_rule, derives="RENAMED"), example).failures == (
        "D02 fired but RENAMED is neither in the output nor suppressed",)
    assert run_example(engine, deriving_rule, example).passed
