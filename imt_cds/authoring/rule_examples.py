"""Run the examples written in the rule files against an engine and say, for each, whether it behaved as written.

Every rule carries examples: patients on which it must fire and patients on which it must stay silent, plus
optional expectations about the output (codes or derived facts present, absent, or suppressed). "Fires" is read
from the engine's trace: the rule (or, for a grouping rule such as D04, one of its reasons) fired at least once.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.assessment import Assessment
from ..core.engine import Engine
from ..core.rulebook import Example, Rule

__all__ = ["ExampleOutcome", "fired_rules", "run_example", "run_rule_examples"]


@dataclass(frozen=True)
class ExampleOutcome:
    rule: Rule
    example: Example
    assessment: Assessment
    failures: tuple[str, ...]
    fired: bool  # the rule (or, for a grouping rule, one of its reasons) fired

    @property
    def passed(self) -> bool:
        return not self.failures


def fired_rules(assessment: Assessment) -> frozenset[str]:
    """Ids of the rules that fired (a grouping rule counts as fired when one of its reasons did)."""
    fired = {entry.rule.id for entry in assessment.trace}
    fired.update(entry.part_of for entry in assessment.trace if entry.part_of)
    return frozenset(fired)


def run_example(engine: Engine, rule: Rule, example: Example) -> ExampleOutcome:
    assessment = engine.evaluate(example.patient)
    fired = rule.id in fired_rules(assessment)
    present = assessment.codes | assessment.derived_names
    failures: list[str] = []
    if example.fires and not fired:
        failures.append(f"{rule.id} should fire but did not")
    if not example.fires and fired:
        failures.append(f"{rule.id} should stay silent but fired")
    if example.fires and fired:
        # A rule that fires must show its effect: its findings (emitted or suppressed) or its derived fact.
        expected_effect = [f.code for f in rule.findings if f.when is None] or ([rule.derives] if rule.derives else [])
        effect = present | assessment.suppressed_codes
        missing = [code for code in expected_effect if code not in effect]
        if missing:
            failures.append(f"{rule.id} fired but {', '.join(missing)} is neither in the output nor suppressed")
    for code in example.expect:
        if code not in present:
            failures.append(f"expected {code} in the output; it is not")
    for code in example.expect_not:
        if code in present:
            failures.append(f"expected {code} not to be in the output; it is")
    for code in example.expect_suppressed:
        if code not in assessment.suppressed_codes:
            failures.append(f"expected {code} to be suppressed; it is not")
    return ExampleOutcome(rule, example, assessment, tuple(failures), fired)


def run_rule_examples(engine: Engine) -> list[ExampleOutcome]:
    """Every example of every rule of the engine's rulebook, in catalogue order."""
    return [run_example(engine, rule, example) for rule in engine.rulebook.rules for example in rule.examples]
