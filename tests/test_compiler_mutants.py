"""The compiled program where mutation testing found it unread (tests/mutation-survivors.md)."""

from __future__ import annotations

import dataclasses

import pytest

from imt_cds.core.compiler import ANCHOR, compile_probe, compile_rulebook


def _marker(definition):
    """The stratum a compiled engine rule waits for (its marker pattern), or 0 when it waits for none."""
    first = definition["all"][0]
    if "s" not in first:
        return 0
    (kind, number, *settled_facts) = first["s"]["$and"]  # (then the derived facts it reads from the marker)
    assert kind == {"t": "stratum"}
    return number["n"]


def _programs(rulebook):
    without_r01 = dataclasses.replace(rulebook, rules=tuple(r for r in rulebook.rules if r.id != "R01"))
    return {"shipped": compile_rulebook(rulebook), "probe": compile_probe(rulebook)[0],
            "with the anchor": compile_rulebook(without_r01)}


def test_a_compiled_program_cannot_be_changed_after_compiling(rulebook):
    # One program serves every evaluation of an engine (and the engine's threads): nothing may alter it in place.
    program = compile_rulebook(rulebook)
    engine_rule = program.branches("R32a")[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        program.strata = 5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        engine_rule.stratum = 0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        engine_rule.reasons[0].order = 9  # type: ignore[misc]


def test_each_engine_rule_waits_for_the_marker_of_its_stratum_and_every_marker_is_awaited(rulebook):
    # The stratum an engine rule states is the marker it waits for (none in stratum 0), and a program's number of
    # strata is one more than its highest: the engine asserts markers 1..strata-1, each one some rule waits for.
    for label, program in _programs(rulebook).items():
        strata = {name: _marker(program.ruleset[name]) for name in program.rules}
        assert strata == {name: er.stratum for name, er in program.rules.items()}, label
        assert program.strata == max(strata.values()) + 1, label
    assert _programs(rulebook)["shipped"].strata == 2


def test_the_internal_anchor_is_added_only_when_no_rule_matches_every_patient(rulebook):
    # R01 applies to every patient, so the shipped rulebook needs no anchor (it would fire once more per patient).
    assert ANCHOR not in compile_rulebook(rulebook).rules
    assert ANCHOR in _programs(rulebook)["with the anchor"].rules


def test_the_branches_of_a_finding_with_its_own_condition_are_those_producing_it(rulebook):
    # R35 recommends a TRK inhibitor (its branch R35.0) and, with its own extra condition, flags infant labelling
    # (R35.1); "why not?" explains a finding by the branches that produce it.
    r35 = rulebook.rule("R35")
    recommendation, flag = r35.findings
    assert (recommendation.code, flag.code) == ("REC_TRK_INHIBITOR", "FLAG_VERIFY_INFANT_LABELING")
    program = compile_rulebook(rulebook)
    assert [er.name for er in program.branches(r35, flag)] == ["R35.1"]
    assert [er.name for er in program.branches("R35", recommendation)] == ["R35.0"]
    assert [er.name for er in program.branches(r35)] == ["R35.0", "R35.1"]


def test_a_rule_without_a_condition_is_left_out_without_leaving_out_the_rules_after_it(rulebook):
    # Only a grouping rule has no condition once loaded, but a rulebook built in code may hold one: it yields no
    # engine rule, and every other rule is still compiled.
    first = rulebook.rules[0]
    rules = (dataclasses.replace(first, when=None), *rulebook.rules[1:])
    program = compile_rulebook(dataclasses.replace(rulebook, rules=rules))
    compiled = {er.rule.id for er in program.rules.values() if er.rule is not None}
    everything = {er.rule.id for er in compile_rulebook(rulebook).rules.values() if er.rule is not None}
    assert compiled == everything - {first.id}


def test_a_negation_cycle_is_one_problem_naming_the_rule_its_file_and_its_condition(rulebook):
    # What `imt-cds rules lint` prints for a rule that derives a fact only when that fact is absent.
    from imt_cds.core.conditions import DerivedTest
    from imt_cds.core.errors import RulebookError

    d01 = rulebook.rule("D01")
    self_denying = dataclasses.replace(d01, when=DerivedTest(d01.derives, present=False))
    rules = tuple(self_denying if r.id == "D01" else r for r in rulebook.rules)
    with pytest.raises(RulebookError) as caught:
        compile_rulebook(dataclasses.replace(rulebook, rules=rules))
    (problem,) = caught.value.problems
    assert (problem.file, problem.rule, problem.path) == (d01.file, "D01", "when")
    assert problem.message == "the rulebook negates a derived fact that depends on its own negation"


def test_a_suppression_lists_each_reason_of_the_multi_reason_fact_it_rests_on(engine):
    # CONTRADICTION holds for two reasons here (C1 and C3); each reason rule asserts its own fact, naming itself, and
    # the suppression of the upfront resection says which reasons held.
    contradictory = {"tumor": {"resectability": "resectable", "distant_disease": False},
                     "history": {"margin_status": "R0"},
                     "molecular": {"alk": {"status": "negative", "fusion_partner": "EML4"}}}
    (suppression,) = engine.evaluate(contradictory).suppressed
    assert (suppression.finding.code, suppression.fact) == ("REC_UPFRONT_SURGICAL_RESECTION", "CONTRADICTION")
    assert suppression.reasons == ("C1: ALK status negative but an ALK fusion partner is recorded",
                                   "C3: resection margin status recorded but no surgery recorded")


def test_a_negation_cycle_through_several_rules_is_reported_at_the_first_of_them_never_at_a_rule_after_it(rulebook):
    # D01 derives AGE_KNOWN unless MULTIPLE_KINASE_FUSIONS, D02 ADVANCED_DISEASE unless AGE_KNOWN, D03
    # MULTIPLE_KINASE_FUSIONS unless ADVANCED_DISEASE: a cycle. D06 (ALK_INHIBITOR_ELIGIBLE, needing
    # ADVANCED_DISEASE) is not on it, yet its stratum grows with it; which rule's stratum passed the bound first
    # once depended on the rulebook's size (without R38 and S01, D06 was named).
    from imt_cds.core.conditions import DerivedTest
    from imt_cds.core.errors import RulebookError

    negating = {"D01": "D03", "D02": "D01", "D03": "D02"}
    cycle = {rule_id: dataclasses.replace(rulebook.rule(rule_id), when=DerivedTest(
        rulebook.rule(other).derives, present=False)) for rule_id, other in negating.items()}
    rules = [cycle.get(r.id, r) for r in rulebook.rules]
    for kept in (rules, [r for r in rules if r.id not in ("R38", "S01")], rules[:-3]):
        with pytest.raises(RulebookError) as caught:
            compile_rulebook(dataclasses.replace(rulebook, rules=tuple(kept)))
        (problem,) = caught.value.problems
        assert (problem.rule, problem.file) == ("D01", rulebook.rule("D01").file)


def test_a_rule_on_a_cycle_without_negation_is_not_the_one_named_for_a_negation_cycle(rulebook):
    # D01 waits for its own fact (a cycle, but no negation: it can never fire, and needs no stratum); the negation
    # cycle is D02 <-> D03.
    from imt_cds.core.conditions import DerivedTest
    from imt_cds.core.errors import RulebookError

    d01, d02, d03 = (rulebook.rule(rule_id) for rule_id in ("D01", "D02", "D03"))
    changed = {"D01": dataclasses.replace(d01, when=DerivedTest(d01.derives)),
               "D02": dataclasses.replace(d02, when=DerivedTest(d03.derives, present=False)),
               "D03": dataclasses.replace(d03, when=DerivedTest(d02.derives, present=False))}
    rules = tuple(changed.get(r.id, r) for r in rulebook.rules)
    with pytest.raises(RulebookError) as caught:
        compile_rulebook(dataclasses.replace(rulebook, rules=rules))
    assert [(p.rule, p.file) for p in caught.value.problems] == [("D02", d02.file)]
    # Alone, the cycle without negation compiles.
    alone = tuple(changed["D01"] if r.id == "D01" else r for r in rulebook.rules)
    assert compile_rulebook(dataclasses.replace(rulebook, rules=alone)).branches("D01")


def test_a_number_whose_mantissa_has_a_fraction_keeps_it_as_it_is():
    from imt_cds.core.compiler import engine_number

    assert engine_number(1.5e-07) == "1.5e-07"
    assert engine_number(2.5e+20) == "2.5e+20"


def test_each_comparison_of_a_number_holds_exactly_as_it_reads_at_below_and_above_its_bound(rulebook):
    from imt_cds import Engine
    from imt_cds.core.conditions import Any_, Atom

    atoms = {op: Atom("age_years", op, 2.0) for op in ("gt", "gte", "lt", "lte")}
    rules = tuple(dataclasses.replace(r, when=Any_(tuple(atoms.values()))) if r.id == "R37" else r
                  for r in rulebook.rules)
    engine = Engine(dataclasses.replace(rulebook, rules=rules))
    ops = {atom: op for op, atom in atoms.items()}

    def holding(age):
        return {ops[a] for a in engine.true_conditions({"age_years": age}) if a in ops}

    assert holding(1) == {"lt", "lte"}
    assert holding(2) == {"gte", "lte"}
    assert holding(3) == {"gt", "gte"}
    assert holding(None) == set()


def _field_tests(test):
    """(operator, field) of every elementary test inside a compiled pattern test."""
    ((key, value),) = test.items()
    if key in ("$and", "$or"):
        for item in value:
            yield from _field_tests(item)
    elif key.startswith("$"):
        ((field, _),) = value.items()
        yield key, field
    else:
        yield "$eq", key


def test_negations_of_a_field_with_a_finite_domain_compile_to_equality_tests_only(rulebook):
    # "is_not positive" is "negative or unknown": equality tests behave the same for null as for any value, which
    # an engine "$neq" does not. Only open-ended fields (gene symbols, sets, numbers) are tested with "$neq".
    from imt_cds.core.fact_fields import fact_fields

    fields = fact_fields()
    for program in _programs(rulebook).values():
        for name, definition in program.ruleset.items():
            for pattern in definition["all"]:
                ((_, body),) = pattern.items()
                for op, path in _field_tests(body):
                    if op == "$neq":
                        assert fields[path].domain is None, (name, path)
    probe, atoms = compile_probe(rulebook)
    (negated,) = [n for n, a in atoms.items() if (a.path, a.op, a.operand) == ("molecular.alk.status", "is_not",
                                                                               "positive")]
    assert probe.ruleset[negated]["all"][0]["p"]["$and"][1] == {
        "$or": [{"molecular.alk.status": "negative"}, {"molecular.alk.status": "unknown"}]}


def test_facts_changed_after_validation_to_an_unknown_test_method_are_refused_naming_it(engine):
    # model_copy does not validate: the engine form of a set is looked up among the valid sets, never guessed.
    from imt_cds.core.validation import parse_facts

    facts = parse_facts({"molecular": {"alk": {"status": "positive"}}})
    alk = facts.molecular.alk.model_copy(update={"methods": frozenset({"XRAY", "IHC"})})
    changed = facts.model_copy(update={"molecular": facts.molecular.model_copy(update={"alk": alk})})
    with pytest.raises(ValueError) as caught:
        engine.evaluate(changed)
    assert str(caught.value) == "not a valid set of test methods: ['IHC', 'XRAY']"
