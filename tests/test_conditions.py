"""The condition language of rule files (imt_cds.core.conditions): parsing with its reports, one-line reading, and the
normal form the compiler builds engine rules from. Its meaning for patients is tested through the engine elsewhere."""

from __future__ import annotations

import dataclasses

import pytest

from imt_cds.core.conditions import ConditionContext, describe, literals, parse_condition, to_dnf
from imt_cds.core.fact_fields import fact_fields

PARAMETERS = {"size_risk_threshold_cm": 3.9}


def _parse(condition):
    reports = []
    context = ConditionContext(fact_fields(), PARAMETERS, lambda where, message, hint: reports.append((where, message)))
    return parse_condition(condition, context), reports


def _reports(condition):
    reports = []
    context = ConditionContext(fact_fields(), PARAMETERS,
                               lambda where, message, hint: reports.append((where, message, hint)))
    assert parse_condition(condition, context) is None
    return reports


def test_a_condition_reads_back_in_one_line_as_rules_show_prints_it():
    cases = [  # the rule file's condition, and its one-line form, written out by hand
        ("always", "always"),
        ({"fact": "tumor.size_cm", "gt": {"param": "size_risk_threshold_cm"}},
         "tumor.size_cm > {param: size_risk_threshold_cm}"),
        ({"fact": "tumor.size_cm", "gte": 4}, "tumor.size_cm >= 4"),
        ({"fact": "age_years", "lt": 1.5}, "age_years < 1.5"),
        ({"fact": "history.margin_status", "in": ["R1", "R2"]}, "history.margin_status in {R1, R2}"),
        ({"fact": "history.margin_status", "not_in": ["R0", None]}, "history.margin_status not in {R0, null}"),
        ({"fact": "tumor.distant_disease", "is": True}, "tumor.distant_disease = true"),
        ({"fact": "history.recurrence", "is_not": False}, "history.recurrence != false"),
        ({"fact": "age_years", "is": None}, "age_years = null"),
        ({"fact": "molecular.alk.methods", "is": ["NGS_RNA", "FISH"]}, "molecular.alk.methods = {FISH, NGS_RNA}"),
        ({"derived": "ADVANCED_DISEASE"}, "ADVANCED_DISEASE"),
        ({"not_derived": "DATA_BLOCK"}, "not DATA_BLOCK"),
        ({"all": [{"derived": "A"}, {"any": [{"derived": "B"}, {"not_derived": "C"}]}]}, "A and (B or not C)"),
        ({"any": [{"derived": "A"}, {"all": [{"derived": "B"}, {"derived": "C"}]}]}, "A or (B and C)"),
        ({"at_least": 2, "of": [{"derived": "A"}, {"derived": "B"}, {"any": [{"derived": "C"}, {"derived": "D"}]}]},
         "at least 2 of (A; B; C or D)"),
        ({"all": [{"derived": "A"}, {"at_least": 1, "of": [{"derived": "B"}, {"derived": "C"}]}]},
         "A and (at least 1 of (B; C))"),
    ]
    for condition, shown in cases:
        parsed, problems = _parse(condition)
        assert problems == [], (condition, problems)
        assert describe(parsed) == shown


def test_a_parsed_condition_is_an_immutable_tree_equal_to_its_own_reparse():
    condition = {"all": [{"fact": "history.margin_status", "in": ["R1", "R2"]},
                         {"any": [{"derived": "A"}, {"not_derived": "B"}]},
                         {"at_least": 1, "of": [{"fact": "tumor.size_cm", "gt": {"param": "size_risk_threshold_cm"}},
                                                {"fact": "age_years", "is": None}]}]}
    parsed, problems = _parse(condition)
    assert problems == []
    assert parsed == _parse(condition)[0] and hash(parsed) == hash(_parse(condition)[0])
    assert hash(_parse("always")[0]) == hash(_parse("always")[0])  # every node hashes, as a frozen value does
    nodes = [parsed, *parsed.items, *parsed.items[1].items, *parsed.items[2].items, parsed.items[2].items[0].operand]
    for node in nodes:
        name = dataclasses.fields(node)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(node, name, getattr(node, name))


MARGIN = "one of R0, R1, R2, unknown, or null"
SITES = "one of thoracic, abdominal_pelvic, head_neck, genitourinary, other, unknown"
A, B = {"derived": "A"}, {"derived": "B"}


@pytest.mark.parametrize(("condition", "reports"), [
    ("sometimes", [("when", "a condition must be 'always' or a mapping, got 'sometimes'", None)]),
    ({"all": []}, [("when.all", "must be a non-empty list of conditions", None)]),
    ({"any": "ADVANCED"}, [("when.any", "must be a non-empty list of conditions", None)]),
    ({"at_least": 1, "of": [A]}, [("when.of", "must be a list of at least two conditions", None)]),
    ({"at_least": 3, "of": [A, B]}, [("when.at_least", "must be a whole number from 1 to 2, got 3", None)]),
    ({"at_least": True, "of": [A, B]}, [("when.at_least", "must be a whole number from 1 to 2, got True", None)]),
    ({"at_least": 0, "of": [A, B]}, [("when.at_least", "must be a whole number from 1 to 2, got 0", None)]),
    ({"derived": "advanced"}, [("when.derived", "must name a derived fact in UPPER_CASE, got 'advanced'", None)]),
    ({"not_derived": 3}, [("when.not_derived", "must name a derived fact in UPPER_CASE, got 3", None)]),
    ({"facts": "age_years", "gt": 3}, [("when", "not a condition: expected one of 'always', all, any, at_least/of, "
                                                "derived, not_derived or fact, got keys ['facts', 'gt']", "fact")]),
    ({"alll": [A]}, [("when", "not a condition: expected one of 'always', all, any, at_least/of, derived, not_derived "
                              "or fact, got keys ['alll']", "all")]),
    ({"all": [A], "of": [B]}, [("when", "not a condition: expected one of 'always', all, any, at_least/of, derived, "
                                        "not_derived or fact, got keys ['all', 'of']", None)]),
    ({"fact": 3, "is": 1}, [("when.fact", "must be a dotted fact path, got 3", None)]),
    ({"fact": "patient_id", "is": "x"}, [("when.fact", "'patient_id' is not used by rules", None)]),
    ({"fact": "tumor.sise_cm", "gt": 3}, [("when.fact", "'tumor.sise_cm' is not a known fact path", "tumor.size_cm")]),
    ({"fact": "age_years", "gt": 3, "lt": 9}, [("when", "a fact test needs exactly one operator of is, is_not, in, "
                                                        "not_in, gt, gte, lt, lte; got ['gt', 'lt']", None)]),
    ({"fact": "age_years", "gtt": 3}, [("when", "a fact test needs exactly one operator of is, is_not, in, not_in, gt, "
                                                "gte, lt, lte; got ['gtt']", "gt")]),
    ({"fact": "tumor.site", "gt": 3}, [("when.gt", f"gt compares numbers, but tumor.site is {SITES}", None)]),
    ({"fact": "age_years", "gt": {"param": "size_risk_threshold"}},
     [("when.gt", "unknown parameter 'size_risk_threshold'", "size_risk_threshold_cm")]),
    ({"fact": "age_years", "gt": True}, [("when.gt", "must be a number or {param: name}, got True", None)]),
    ({"fact": "age_years", "gt": "3"}, [("when.gt", "must be a number or {param: name}, got '3'", None)]),
    ({"fact": "history.margin_status", "in": []}, [("when.in", "in needs a non-empty list of values, got []", None)]),
    ({"fact": "history.margin_status", "not_in": "R1"},
     [("when.not_in", "not_in needs a non-empty list of values, got 'R1'", None)]),
    ({"fact": "history.margin_status", "in": ["R1", "R1"]}, [("when.in", "lists a value twice", None)]),
    ({"fact": "history.margin_status", "in": ["R1", "R3"]},
     [("when.in[1]", f"'R3' is not a value of history.margin_status; allowed: {MARGIN}", "R2")]),
    ({"fact": "tumor.site", "is": None}, [("when.is", f"tumor.site is never null; allowed: {SITES}", None)]),
    ({"fact": "tumor.distant_disease", "is": "yes"},
     [("when.is", "tumor.distant_disease is true, false, or null (not recorded); got 'yes'", None)]),
    ({"fact": "molecular.alk.methods", "is": "IHC"},
     [("when.is", "a test of molecular.alk.methods compares the whole set: give a list of values from IHC, FISH, "
                  "NGS_RNA, NGS_DNA; got 'IHC'", None)]),
    ({"fact": "molecular.alk.fusion_partner", "is": "ranbp2 x"},
     [("when.is", "'ranbp2 x' is not a gene symbol", None)]),
    ({"fact": "age_years", "is": 3},
     [("when.is", "age_years is a number: compare it with gt/gte/lt/lte, or test is/is_not null", None)]),
    ({"all": [A, {"fact": "tumor.sise", "is": 1}]}, [("when.all[1].fact", "'tumor.sise' is not a known fact path",
                                                      "tumor.site")]),
    ({"at_least": 1, "of": [A, {"derived": "b"}]},
     [("when.of[1].derived", "must name a derived fact in UPPER_CASE, got 'b'", None)]),
    ({"any": [{"derived": "a"}, B, {"not_derived": "c"}]},  # every problem at once, each where it is
     [("when.any[0].derived", "must name a derived fact in UPPER_CASE, got 'a'", None),
      ("when.any[2].not_derived", "must name a derived fact in UPPER_CASE, got 'c'", None)]),
])
def test_an_unusable_condition_is_reported_where_it_is_with_what_is_allowed(condition, reports):
    assert _reports(condition) == reports


def _dnf(condition):
    parsed, reports = _parse(condition)
    assert reports == []
    return [[literal.describe() for literal in conjunction] for conjunction in to_dnf(parsed)]


def test_the_normal_form_lists_each_branch_once_in_source_order():
    C, D = {"derived": "C"}, {"not_derived": "D"}
    assert _dnf("always") == [[]]
    assert _dnf(A) == [["A"]]
    assert _dnf({"any": [A, B, A]}) == [["A"], ["B"]]
    assert _dnf({"all": [A, {"any": [B, C]}, A]}) == [["A", "B"], ["A", "C"]]
    assert _dnf({"all": [{"any": [A, B]}, {"any": [C, D]}]}) == [["A", "C"], ["A", "not D"], ["B", "C"], ["B", "not D"]]
    assert _dnf({"any": [{"all": [A, B]}, {"all": [B, A]}, {"all": [A, B]}]}) == [["A", "B"], ["B", "A"]]
    assert _dnf({"at_least": 2, "of": [A, B, C]}) == [["A", "B"], ["A", "C"], ["B", "C"]]
    assert _dnf({"at_least": 2, "of": [A, B]}) == [["A", "B"]]
    assert _dnf({"at_least": 1, "of": [A, {"all": [B, D]}]}) == [["A"], ["B", "not D"]]
    assert _dnf({"at_least": 3, "of": [A, B, C]}) == [["A", "B", "C"]]


def test_the_literals_of_a_condition_are_listed_once_each_in_source_order():
    parsed, _ = _parse({"any": [{"all": [B, {"fact": "age_years", "lt": 2}]}, {"at_least": 1, "of": [A, B]},
                                {"fact": "age_years", "lt": 2}]})
    assert [literal.describe() for literal in literals(parsed)] == ["B", "age_years < 2", "A"]
    assert literals(_parse("always")[0]) == ()
    with pytest.raises(TypeError, match=r"^not a condition: 'always'$"):
        to_dnf("always")


def test_a_rationale_shows_each_test_as_written_with_parameters_resolved():
    fields = fact_fields()
    cases = [  # the fact test, and how a rationale shows what it expects
        ({"fact": "molecular.alk.fusion_partner", "is": None}, "= null"),
        ({"fact": "molecular.alk.fusion_partner", "is_not": "RANBP2"}, "!= RANBP2 (case-insensitive)"),
        ({"fact": "history.margin_status", "in": ["R1", None]}, "in {R1, null}"),
        ({"fact": "history.margin_status", "not_in": ["R0"]}, "not in {R0}"),
        ({"fact": "molecular.alk.methods", "is": ["NGS_RNA", "FISH"]}, "= {FISH, NGS_RNA}"),
        ({"fact": "molecular.alk.methods", "is": []}, "= {}"),
        ({"fact": "tumor.epithelioid_morphology", "is": True}, "= true"),
        ({"fact": "tumor.distant_disease", "is_not": False}, "!= false"),
        ({"fact": "tumor.size_cm", "lte": 4.0}, "<= 4"),
        ({"fact": "tumor.size_cm", "lte": 4.25}, "<= 4.25"),
        ({"fact": "tumor.size_cm", "gt": {"param": "size_risk_threshold_cm"}}, "> 3.9"),
    ]
    for condition, shown in cases:
        atom, reports = _parse(condition)
        assert reports == [], (condition, reports)
        assert atom.expected_text(PARAMETERS, fields[atom.path]) == shown


@pytest.mark.parametrize(("misspelt", "meant"), [
    ({"alll": [A]}, "all"), ({"anny": [A]}, "any"), ({"at_leest": 1, "of": [A, B]}, "at_least"),
    ({"derivd": "A"}, "derived"), ({"not_derivd": "A"}, "not_derived"), ({"fakt": "age_years", "gt": 1}, "fact"),
])
def test_a_misspelt_condition_keyword_is_answered_with_the_keyword_meant(misspelt, meant):
    ((where, message, suggestion),) = _reports(misspelt)
    assert (where, suggestion) == ("when", meant) and message.startswith("not a condition: expected one of")
