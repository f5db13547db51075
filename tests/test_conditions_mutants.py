"""The condition language's answers that the mutation run of imt_cds/core/conditions.py found unread: what a test of a
set field accepts, the did-you-mean beside a stray `of`, and a condition whose keys are not text (YAML allows `1:`,
`true:`, `null:`), which the loader must report as a problem of the rule, never crash on."""

from __future__ import annotations

import pytest
from rulebook_copies import CRIZOTINIB, copy_rulebook, load_problems, only

from imt_cds.core.conditions import ConditionContext, parse_condition
from imt_cds.core.fact_fields import fact_fields

NOT_A_CONDITION = "not a condition: expected one of 'always', all, any, at_least/of, derived, not_derived or fact, "
A, B = {"derived": "A"}, {"derived": "B"}


def _reports(condition):
    reports = []
    context = ConditionContext(fact_fields(), {}, lambda where, message, hint: reports.append((where, message, hint)))
    assert parse_condition(condition, context) is None
    return reports


@pytest.mark.parametrize("values", [["IHC", "PCR"], ["PCR"], ["IHC", 1]])
def test_a_test_of_a_set_field_takes_only_values_of_that_set(values):
    # A value outside the set would make a test that can never hold (or always holds, negated) pass the loader.
    assert _reports({"fact": "molecular.alk.methods", "is": values}) == [
        ("when.is", "a test of molecular.alk.methods compares the whole set: give a list of values from IHC, FISH, "
                    f"NGS_RNA, NGS_DNA; got {values!r}", None)]


def test_a_misspelt_at_least_beside_its_of_is_answered_with_at_least():
    # `of` belongs to at_least/of, so the keyword suggested is the one for the misspelt key, even when that key
    # sorts after `of` (a transposed "ta_least").
    assert _reports({"ta_least": 2, "of": [A, B]}) == [
        ("when", NOT_A_CONDITION + "got keys ['of', 'ta_least']", "at_least")]


@pytest.mark.parametrize(("condition", "shown", "meant"), [
    ({1: "x"}, "['1']", None),
    ({None: "x"}, "['None']", None),
    ({True: "x", "of": [A, B]}, "['True', 'of']", None),
    ({1: "x", "all": [A]}, "['1', 'all']", None),
])
def test_a_condition_whose_keys_are_not_text_is_reported_not_a_crash(condition, shown, meant):
    assert _reports(condition) == [("when", NOT_A_CONDITION + f"got keys {shown}", meant)]


def test_a_rule_file_whose_condition_has_a_number_for_a_key_is_a_problem_of_that_rule(tmp_path):
    rules = copy_rulebook(tmp_path)
    path = rules / CRIZOTINIB
    text = path.read_text()
    start, end = text.index("\nwhen:"), text.index("\nthen:")
    path.write_text(text[:start] + "\nwhen: {1: ALK_INHIBITOR_ELIGIBLE}" + text[end:])
    problem = only(load_problems(rules))
    assert (problem.file, problem.rule, problem.path, problem.line) == (CRIZOTINIB, "R32a", "when", 7)
    assert problem.message == NOT_A_CONDITION + "got keys ['1']"
