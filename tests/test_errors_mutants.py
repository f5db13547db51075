"""The errors the library raises (``errors.py``): their codes, messages and JSON form, which callers rely on.

Written for the mutants of errors.py that the other tests let through (tests/mutation-survivors.md).
"""

from __future__ import annotations

import dataclasses
import math
import re

import pytest

from imt_cds.core import errors
from imt_cds.core.errors import (
    ChartRefusedError,
    EvidenceError,
    ImtCdsError,
    InputProblem,
    InvalidInputError,
    InvalidSettingError,
    NaiveDateTimeError,
    RulebookError,
    RulebookProblem,
    UnknownRuleError,
)


def test_every_error_has_the_code_the_errors_module_documents():
    # The codes are a contract: the CLI's JSON output carries them and callers branch on them.
    documented = dict(re.findall(r"^[\s│├└─]*(\w+Error)\s+\"([a-z_]+)\"", errors.__doc__ or "", re.MULTILINE))
    defined = {name: getattr(errors, name) for name in errors.__all__ if name.endswith("Error")}
    assert set(defined) - {"ImtCdsError"} <= set(documented)
    assert {name: cls.code for name, cls in defined.items() if name != "ImtCdsError"} == {
        name: documented[name] for name in defined if name != "ImtCdsError"}
    assert ImtCdsError.code == "imt_cds_error"


@pytest.mark.parametrize(("problems", "message"), [
    ([RulebookProblem("a.yaml", "first")], "invalid rulebook (1 problem):\n  - a.yaml: first"),
    ([RulebookProblem("a.yaml", "first"), RulebookProblem("b.yaml", "second")],
     "invalid rulebook (2 problems):\n  - a.yaml: first\n  - b.yaml: second"),
])
def test_an_error_listing_problems_counts_them_and_lists_one_a_line(problems, message):
    error = RulebookError(problems)
    assert str(error) == message and error.problems == tuple(problems)


def test_each_kind_of_problem_list_has_its_own_heading():
    problem = InputProblem("age_years", "must be a number", "x")
    assert str(InvalidInputError([problem])) == "invalid patient facts (1 problem):\n  - age_years: must be a number"
    assert str(EvidenceError(["a", "b"])) == "invalid evidence registry (2 problem(s)):\n  - a\n  - b"
    refused = ChartRefusedError("no_patient", "the Bundle holds no Patient", {"n": 0})
    assert str(refused) == ("FHIR chart refused; nothing was evaluated (1 problem):\n"
                            "  - (document): the Bundle holds no Patient")
    assert refused.reason == "no_patient" and refused.code == "chart_refused"
    assert refused.to_dict() == {"errors": [{"path": "", "message": "the Bundle holds no Patient", "value": {"n": 0}}]}


def test_an_input_problem_is_a_frozen_value_written_as_json_with_null_for_no_value():
    problem = InputProblem("tumor.site", "not allowed")
    assert problem.value is None
    assert problem.to_dict() == {"path": "tumor.site", "message": "not allowed", "value": None}
    assert str(problem) == "tumor.site: not allowed"
    assert str(InputProblem("", "not an object")) == "(document): not an object"
    with pytest.raises(dataclasses.FrozenInstanceError):
        problem.path = "x"  # type: ignore[misc]
    assert InvalidInputError([problem]).to_dict() == {"errors": [problem.to_dict()]}


@pytest.mark.parametrize(("value", "written"), [
    (None, None), (True, True), (7, 7), ("text", "text"), (1.5, 1.5),
    (math.nan, "nan"), (math.inf, "inf"), (-math.inf, "-inf"),
    ((1, [2.5, math.nan]), [1, [2.5, "nan"]]), ({3: {"k": math.inf}}, {"3": {"k": "inf"}}),
    (frozenset({"IHC"}), ["IHC"]), (b"raw", "b'raw'"),
])
def test_an_offending_value_is_written_as_json_whatever_it_is(value, written):
    assert InputProblem("p", "m", value).to_dict()["value"] == written


def test_a_rulebook_problem_says_where_then_what_then_what_was_meant():
    bare = RulebookProblem("rules/a.yaml", "bad")
    assert (bare.rule, bare.path, bare.line, bare.suggestion) == (None, None, None, None)
    assert str(bare) == "rules/a.yaml: bad"
    assert bare.to_dict() == {"file": "rules/a.yaml", "line": None, "rule": None, "path": None, "message": "bad",
                              "suggestion": None}
    full = RulebookProblem("rules/a.yaml", "unknown gene 'akl'", "R32a", "then[0].gene", 12, "alk")
    assert str(full) == "rules/a.yaml:12, rule R32a, then[0].gene: unknown gene 'akl' (did you mean 'alk'?)"
    assert full.to_dict() == {"file": "rules/a.yaml", "line": 12, "rule": "R32a", "path": "then[0].gene",
                              "message": "unknown gene 'akl'", "suggestion": "alk"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        full.line = 3  # type: ignore[misc]


def test_the_errors_for_a_bad_argument_name_it_and_keep_what_was_given():
    naive = NaiveDateTimeError("evaluated_at", "2026-01-02")
    assert (naive.name, naive.value) == ("evaluated_at", "2026-01-02")
    assert str(naive) == ("evaluated_at must be timezone-aware (e.g. datetime.now(timezone.utc)), not the naive "
                          "'2026-01-02'")
    setting = InvalidSettingError("cache_size", -1, "0 or more")
    assert (setting.name, setting.value, str(setting)) == ("cache_size", -1, "cache_size must be 0 or more, not -1")


def test_an_unknown_rule_without_a_close_id_is_named_without_a_suggestion():
    error = UnknownRuleError("Z99")
    assert (error.rule_id, error.suggestion, str(error)) == ("Z99", None, "the rulebook has no rule 'Z99'")
    hinted = UnknownRuleError("R32x", "R32a")
    assert (hinted.rule_id, hinted.suggestion) == ("R32x", "R32a")
    assert str(hinted) == "the rulebook has no rule 'R32x' (did you mean 'R32a'?)"
