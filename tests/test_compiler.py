"""The compiled ruleset keeps every invariant the engine's defects require (engineering/durable-rules.md)."""

from __future__ import annotations

import dataclasses
import random
from types import MappingProxyType

import orjson
from helpers import without_time
from strategies import random_patient

from imt_cds import Engine
from imt_cds.core.compiler import ANCHOR, compile_rulebook, engine_number
from imt_cds.core.conditions import DerivedTest
from imt_cds.core.engine import DEFAULT_MAX_FIRINGS, _DurableRuleset


def _patterns(definition):
    for pattern in definition["all"]:
        ((alias, body),) = pattern.items()
        yield alias, body


def _leaves(test):
    ((key, value),) = test.items()
    if key in ("$and", "$or"):
        for item in value:
            yield from _leaves(item)
    elif key.startswith("$"):
        ((field, operand),) = value.items()
        yield key, field, operand
    else:
        yield "$eq", key, value


def test_every_pattern_starts_with_a_positive_type_test_and_no_pattern_is_negative_only(engine):
    for name, rule in engine.program.ruleset.items():
        for alias, body in _patterns(rule):
            tests = body["$and"] if "$and" in body else [body]
            assert "t" in tests[0], (name, alias)
            assert not any(op == "$nex" for t in tests for op, _, _ in _leaves(t)), name


def test_no_pattern_compares_one_fact_with_another(engine):
    # A cross-fact join condition reads like {"$lt": {"x": {"m": "y"}}}: an operand that is an object.
    for name, rule in engine.program.ruleset.items():
        for _, body in _patterns(rule):
            for _, _, operand in _leaves(body):
                assert not isinstance(operand, (dict, list)), name


def test_negated_derived_facts_are_read_from_the_marker_of_a_later_stratum(engine):
    # A negated derived fact is final only once every rule deriving it has run: the rule testing it waits for the
    # marker of a later stratum, which says whether the fact holds. No engine rule joins a $not pattern.
    negating = 0
    for name, engine_rule in engine.program.rules.items():
        patterns = dict(_patterns(engine.program.ruleset[name]))
        assert not any(alias.endswith("$not") for alias in patterns), name
        negated = [lit.name for lit in engine_rule.conjunction if isinstance(lit, DerivedTest) and not lit.present]
        if negated:
            negating += 1
            assert engine_rule.stratum >= 1
            marker = patterns["s"]["$and"]
            assert marker[:2] == [{"t": "stratum"}, {"n": engine_rule.stratum}], name
            assert all({fact: False} in marker for fact in negated), name
            assert all(fact in engine.program.marker_facts[engine_rule.stratum - 1] for fact in negated), name
    assert negating == 9  # D06, R32a, R32b, R33, R34, R35 (two engine rules), R36a, R36b: the DATA_BLOCK gates
    assert engine.program.strata == 2
    assert engine.program.marker_facts == (("ADVANCED_DISEASE", "AGE_KNOWN", "DATA_BLOCK"),)


def test_a_derived_fact_settled_below_a_rules_stratum_is_a_marker_field_and_one_of_its_own_stratum_a_pattern(
        engine):
    # R32a (stratum 1) needs ALK_INHIBITOR_ELIGIBLE, which D06 derives in stratum 1 too:
    # that fact is joined as a pattern (it may come after the marker); AGE_KNOWN, derived in stratum 0, is final by
    # then and is read from the marker, as is the absence of DATA_BLOCK. Stratum-0 rules join their derived facts.
    r32a = dict(_patterns(engine.program.ruleset["R32a.0"]))
    assert {"AGE_KNOWN": True} in r32a["s"]["$and"] and {"DATA_BLOCK": False} in r32a["s"]["$and"]
    joined = [body["$and"][1] for alias, body in r32a.items() if alias.startswith("d")]
    assert joined == [{"name": "ALK_INHIBITOR_ELIGIBLE"}]
    r10 = dict(_patterns(engine.program.ruleset["R10.0"]))
    assert "s" not in r10 and r10["d0"] == {"$and": [{"t": "derived"}, {"name": "ADVANCED_DISEASE"}]}
    assert sum(len(rule["all"]) for rule in engine.program.ruleset.values()) == 89  # was 113 with joins and $nots


def test_some_rule_matches_every_patient(engine):
    always = [r for r in engine.program.rules.values() if r.rule is not None and not r.conjunction]
    assert [r.rule.id for r in always] == ["R01"]


def test_an_internal_anchor_is_added_when_no_rule_matches_every_patient(rulebook):
    without_r01 = dataclasses.replace(rulebook, rules=tuple(r for r in rulebook.rules if r.id != "R01"))
    program = compile_rulebook(without_r01)
    assert ANCHOR in program.rules
    engine = Engine(without_r01)
    assert "REC_MULTIDISCIPLINARY_REVIEW" not in engine.evaluate({}).codes  # and no crash on an empty patient


def test_or_branches_in_one_pattern_are_mutually_exclusive(engine):
    # A pattern with $or fires once per matching branch; branches on one field with different values (or null
    # versus not null) can never both match.
    for name, rule in engine.program.ruleset.items():
        for _, body in _patterns(rule):
            for test in body.get("$and", [body]):
                if "$or" in test:
                    fields = set()
                    for branch in test["$or"]:
                        fields |= {f for _, f, _ in _leaves(branch)}
                    assert len(fields) == 1, (name, test)


def test_the_result_does_not_depend_on_the_order_rules_are_defined_or_fire(rulebook, engine):
    # durable-rules fires in rule-definition order; define the engine rules in another order and the firing order
    # changes, but findings, rationales, derived facts and suppressions must not (only the trace's order may).
    names = list(engine.program.ruleset)
    random.Random(3).shuffle(names)
    program = dataclasses.replace(engine.program,
                                  ruleset=MappingProxyType({n: engine.program.ruleset[n] for n in names}))
    shuffled = Engine(rulebook)
    shuffled._ruleset = _DurableRuleset(program, DEFAULT_MAX_FIRINGS)
    rng = random.Random(5)
    reordered_traces = 0
    for _ in range(1_000):
        patient = random_patient(rng)
        a, b = without_time(engine.evaluate(patient)), without_time(shuffled.evaluate(patient))
        reordered_traces += a.pop("trace") != b.pop("trace")
        assert a == b
    assert reordered_traces > 500  # the firing order really was different


def test_engine_numbers_are_written_so_durable_can_parse_them():
    assert engine_number(5e-324) == "5.0e-324"
    assert engine_number(1e20) == "1.0e+20"
    assert engine_number(3.9) == "3.9"
    assert engine_number(8) == "8.0"
    for value in (5e-324, 1e-7, 1e20, 3.9, 120.0, 0.0):
        assert orjson.loads(engine_number(value)) == value


def _parse(condition):
    from imt_cds.core.conditions import ConditionContext, parse_condition
    from imt_cds.core.fact_fields import fact_fields

    problems = []
    context = ConditionContext(fact_fields(), {"size_risk_threshold_cm": 3.9},
                               lambda where, message, hint: problems.append((where, message)))
    return parse_condition(condition, context), problems


def test_every_operator_is_accepted_on_a_field_it_fits_and_reads_as_written():
    from imt_cds.core.fact_fields import fact_fields

    fields = fact_fields()
    cases = [  # written out by hand: the operator, its operand, and how a rationale shows the test
        ("molecular.alk.status", "is", "positive", "= positive"),
        ("molecular.alk.status", "is_not", "positive", "!= positive"),
        ("history.margin_status", "in", ["R1", "R2"], "in {R1, R2}"),
        ("history.margin_status", "not_in", ["R1", "R2"], "not in {R1, R2}"),
        ("tumor.size_cm", "gt", {"param": "size_risk_threshold_cm"}, "> 3.9"),
        ("tumor.size_cm", "gte", 4, ">= 4"),
        ("age_years", "lt", 1.5, "< 1.5"),
        ("age_years", "lte", 2, "<= 2"),
        ("molecular.alk.fusion_partner", "is", "RANBP2", "= RANBP2 (case-insensitive)"),
    ]
    for path, op, operand, shown in cases:
        atom, problems = _parse({"fact": path, op: operand})
        assert problems == [] and atom.op == op, (op, problems)
        assert atom.expected_text({"size_risk_threshold_cm": 3.9}, fields[path]) == shown



def test_the_probe_tells_which_fact_tests_hold_for_a_patient(engine):
    # Read by hand (parameters: crizotinib from 1 year, selpercatinib from 2, the TRK infant check below 1, evidence
    # up to 39 years, size risk above 3.9 cm): which of the rulebook's tests of these three facts hold.
    watched = ("age_years", "tumor.size_cm", "molecular.alk.status")

    def holding(patient):
        return sorted(a.describe() for a in engine.true_conditions(patient) if a.path in watched)

    assert holding({"age_years": 8, "tumor": {"size_cm": 5}, "molecular": {"alk": {"status": "positive"}}}) == [
        "age_years != null", "age_years >= {param: crizotinib_min_age_years}",
        "age_years >= {param: selpercatinib_min_age_years}", "molecular.alk.status != negative",
        "molecular.alk.status = positive", "tumor.size_cm > {param: size_risk_threshold_cm}"]
    assert holding({}) == ["age_years = null", "molecular.alk.status != negative", "molecular.alk.status != positive",
                           "molecular.alk.status = unknown", "tumor.size_cm = null"]
    assert holding({"age_years": 0.5, "tumor": {"size_cm": 3.9}, "molecular": {"alk": {"status": "negative"}}}) == [
        "age_years != null", "age_years < {param: crizotinib_min_age_years}",
        "age_years < {param: selpercatinib_min_age_years}", "age_years < {param: trk_infant_check_age_years}",
        "molecular.alk.status != positive", "molecular.alk.status = negative"]


def test_strata_do_not_depend_on_the_order_rules_are_defined_in(rulebook, engine):
    from imt_cds.core.conditions import DerivedTest

    strata = {name: rule.stratum for name, rule in engine.program.rules.items()}
    assert max(strata.values()) == 1
    for order in (reversed, lambda rules: random.Random(7).sample(rules, len(rules))):
        reordered = dataclasses.replace(rulebook, rules=tuple(order(list(rulebook.rules))))
        program = compile_rulebook(reordered)
        assert {name: rule.stratum for name, rule in program.rules.items()} == strata
    # A rule needing a fact that only a stratum-1 rule (D06, behind "not DATA_BLOCK") derives runs in stratum 1,
    # whether it is defined before or after D06.
    needing = dataclasses.replace(rulebook.rule("R37"), when=DerivedTest("ALK_INHIBITOR_ELIGIBLE"))
    others = [r for r in rulebook.rules if r.id != "R37"]
    for rules in ([needing, *others], [*others, needing]):
        program = compile_rulebook(dataclasses.replace(rulebook, rules=tuple(rules)))
        assert {er.stratum for er in program.branches("R37")} == {1}


def test_a_branch_the_engine_cannot_hold_is_refused_with_its_size(rulebook):
    import pytest

    from imt_cds.core.conditions import Atom
    from imt_cds.core.errors import RulebookError

    partners = tuple(f"GENE{i}" for i in range(28))
    for count, slots in ((27, 31), (26, 30)):  # not_in on a nullable gene: null, or none of the symbols
        atom = Atom("molecular.alk.fusion_partner", "not_in", partners[:count])
        rules = tuple(dataclasses.replace(r, when=atom) if r.id == "R37" else r for r in rulebook.rules)
        if slots <= 30:
            assert compile_rulebook(dataclasses.replace(rulebook, rules=rules)).branches("R37")
            continue
        with pytest.raises(RulebookError) as caught:
            compile_rulebook(dataclasses.replace(rulebook, rules=rules))
        (problem,) = caught.value.problems
        assert (problem.rule, problem.path) == ("R37", "when")
        assert problem.message == (f"condition branch R37.0 needs {slots} engine expression slots (limit 30); "
                                   "split the rule")


def test_a_branch_reading_more_settled_facts_than_a_marker_can_hold_is_refused(rulebook):
    # The derived facts a rule of stratum k reads from marker k are tests of the marker's one pattern, which holds
    # 30 of the engine's expression slots (t and n take two): past them, a clear refusal, not the engine's error 113.
    import pytest

    from imt_cds.core.conditions import All
    from imt_cds.core.errors import RulebookError

    d01 = rulebook.rule("D01")
    for count in (28, 29):
        extra = [dataclasses.replace(d01, id=f"D{60 + i}", derives=f"EXTRA_{i}") for i in range(count)]
        gate = dataclasses.replace(rulebook.rule("R37"), when=All(tuple(
            DerivedTest(f"EXTRA_{i}", present=False) for i in range(count))))
        rules = (*(gate if r.id == "R37" else r for r in rulebook.rules), *extra)
        if count == 28:
            (branch,) = compile_rulebook(dataclasses.replace(rulebook, rules=rules)).branches("R37")
            assert branch.stratum == 1 and len(branch.definition["all"][0]["s"]["$and"]) == 30
            continue
        with pytest.raises(RulebookError) as caught:
            compile_rulebook(dataclasses.replace(rulebook, rules=rules))
        (problem,) = caught.value.problems
        assert (problem.rule, problem.path) == ("R37", "when")
        assert problem.message == "condition branch R37.0 tests 29 derived facts (limit 28); split the rule"


def test_a_negation_the_marker_cannot_settle_is_an_invariant_broken_not_a_rule_left_out(rulebook):
    # The loader refuses a derived fact no rule derives; a rulebook built in code that negates one (with a fact
    # that is derived, so that the rule has a joined pattern to keep) must not compile into a rule that silently
    # drops the negation.
    import pytest

    from imt_cds.core.conditions import All

    gate = dataclasses.replace(rulebook.rule("R37"), when=All((DerivedTest("AGE_KNOWN"),
                                                               DerivedTest("NO_RULE_DERIVES_IT", present=False))))
    rules = tuple(gate if r.id == "R37" else r for r in rulebook.rules)
    with pytest.raises(AssertionError) as caught:
        compile_rulebook(dataclasses.replace(rulebook, rules=rules))
    assert str(caught.value) == "R37.0: negation of NO_RULE_DERIVES_IT, which is not settled below stratum 0"


def test_a_third_stratum_reads_from_its_marker_what_the_second_derived(rulebook):
    # R37 rebuilt to negate ALK_INHIBITOR_ELIGIBLE, which D06 derives in stratum 1: R37 runs in stratum 2 and reads
    # that fact (and ADVANCED_DISEASE, from stratum 0) from marker 2, which the engine asserts once stratum 1 is done.
    from imt_cds.core.conditions import All

    gate = dataclasses.replace(rulebook.rule("R37"), when=All((
        DerivedTest("ADVANCED_DISEASE"), DerivedTest("ALK_INHIBITOR_ELIGIBLE", present=False))))
    three = dataclasses.replace(rulebook, rules=tuple(gate if r.id == "R37" else r for r in rulebook.rules))
    engine = Engine(three)
    assert engine.program.strata == 3 and {er.stratum for er in engine.program.branches("R37")} == {2}
    assert engine.program.marker_facts[1] == ("ADVANCED_DISEASE", "ALK_INHIBITOR_ELIGIBLE")
    unresectable = {"age_years": 8, "tumor": {"resectability": "unresectable"}}
    eligible = engine.evaluate({**unresectable, "molecular": {"alk": {"status": "positive"}}})
    assert "REC_CRIZOTINIB_ALK" in eligible.codes and "FLAG_NO_APPROVED_TARGETED_AGENT" not in eligible.codes
    not_eligible = engine.evaluate({**unresectable, "molecular": {"alk": {"status": "negative"}}})
    assert "FLAG_NO_APPROVED_TARGETED_AGENT" in not_eligible.codes
    local = engine.evaluate({"age_years": 8, "tumor": {"resectability": "resectable", "distant_disease": False}})
    assert "FLAG_NO_APPROVED_TARGETED_AGENT" not in local.codes  # not advanced: the marker's true is tested too


def test_each_reason_names_the_rulebook_parameter_its_test_compares_with(engine):
    from imt_cds.core.conditions import Atom, ParamRef

    named = set()
    for engine_rule in engine.program.rules.values():
        for reason in engine_rule.reasons:
            literal = reason.literal
            if isinstance(literal, Atom) and isinstance(literal.operand, ParamRef):
                assert reason.parameter == literal.operand.name
                named.add(reason.parameter)
            else:
                assert reason.parameter is None
    assert {"size_risk_threshold_cm", "crizotinib_min_age_years"} <= named


def test_a_rules_branches_are_named_by_the_rule_and_their_place_from_zero(engine):
    # A trace names the engine rule that fired (e.g. "R35.1"), and a replay compares traces by these names.
    counted = 0
    for rule in engine.program.rulebook.rules:
        names = [er.name for er in engine.program.branches(rule)]
        assert names == [f"{rule.id}.{i}" for i in range(len(names))]
        counted += len(names) > 1
    assert counted >= 3


def test_negated_tests_of_open_ended_fields_hold_exactly_as_the_rules_readme_reads_them(rulebook):
    # Gene symbols and sets have no finite domain, so their negations compile to "not equal" tests (and null is
    # "not any of these" unless listed). Read by hand: is_not/not_in are plain negation, so they hold for null.
    from imt_cds.core.conditions import Any_, Atom

    gene, methods = "molecular.alk.fusion_partner", "molecular.alk.methods"
    atoms = {
        "not in {null, RANBP2}": Atom(gene, "not_in", (None, "RANBP2")),
        "not in {RANBP2, TPM3}": Atom(gene, "not_in", ("RANBP2", "TPM3")),
        "in {RANBP2, null}": Atom(gene, "in", ("RANBP2", None)),
        "!= null": Atom(gene, "is_not", None),
        "!= RANBP2": Atom(gene, "is_not", "RANBP2"),
        "methods != {IHC}": Atom(methods, "is_not", frozenset({"IHC"})),
        "methods not in {{}, {IHC}}": Atom(methods, "not_in", (frozenset(), frozenset({"IHC"}))),
    }
    rules = tuple(dataclasses.replace(r, when=Any_(tuple(atoms.values()))) if r.id == "R37" else r
                  for r in rulebook.rules)
    engine = Engine(dataclasses.replace(rulebook, rules=rules))
    names = {atom: name for name, atom in atoms.items()}

    def holding(partner, tests=("IHC",)):
        patient = {"molecular": {"alk": {"status": "positive", "fusion_partner": partner, "methods": list(tests)}}}
        return {names[a] for a in engine.true_conditions(patient) if a in names}

    assert holding(None) == {"in {RANBP2, null}", "not in {RANBP2, TPM3}", "!= RANBP2"}
    assert holding("RANBP2") == {"in {RANBP2, null}", "!= null"}
    assert holding("tpm3") == {"not in {null, RANBP2}", "!= null", "!= RANBP2"}  # symbols compare case-insensitively
    assert holding("EML4", ("IHC", "FISH")) == {
        "methods != {IHC}", "methods not in {{}, {IHC}}", "not in {null, RANBP2}", "not in {RANBP2, TPM3}",
        "!= null", "!= RANBP2"}
    assert "methods not in {{}, {IHC}}" not in holding("EML4", ())


def test_a_rulebook_without_rules_compiles_to_the_anchor_alone_in_one_stratum(rulebook):
    program = compile_rulebook(dataclasses.replace(rulebook, rules=()))
    assert (list(program.rules), program.strata) == ([ANCHOR], 1)  # no rule, so no stratum marker to assert


def _named(program):
    """The fields the patterns of a program test, read by this file's own walker."""
    return {field for rule in program.ruleset.values() for _, body in _patterns(rule)
            for _, field, _ in _leaves(body)} - {"t", "n", "name", "by"}


def _patient_fields(program, facts):
    from imt_cds.core.fact_fields import leaf_values
    from imt_cds.core.validation import parse_facts, render_leaves

    values = leaf_values(parse_facts(facts))
    return set(orjson.loads(program.encode_patient(values, render_leaves(values), "s"))) - {"sid", "t"}


def test_the_patient_fact_carries_exactly_the_fields_some_pattern_tests(rulebook, engine):
    # Every field a pattern names must be in the fact (a missing key never matches, not even a test for null); a
    # field no pattern names is left out (the engine copies the fact into the message of every rule that fires).
    # Markers' fields (derived names) are not the patient's.
    program = engine.program
    named = _named(program) - set(program.marker_facts[0])
    assert _patient_fields(program, {}) == named
    assert {"molecular.alk.status", "age_years", "tumor.size_cm"} <= named  # an equality, a $neq, a $gt
    assert "tumor.site" not in named and "molecular.ros1.fusion_partner" not in named  # no shipped rule tests them
    # A rulebook whose rule tests them: the fact carries them, and the rule fires on them. The rule negates a
    # derived fact, so it is of stratum 1 and its patient pattern comes after its marker's.
    from imt_cds.core.conditions import All, Atom

    site = Atom("tumor.site", "is", "thoracic")
    partner = Atom("molecular.ros1.fusion_partner", "is_not", None)  # compiles to a $neq
    r37 = dataclasses.replace(rulebook.rule("R37"), when=All((DerivedTest("CONTRADICTION", present=False), site,
                                                              partner)))
    wider = Engine(dataclasses.replace(rulebook, rules=tuple(r37 if r.id == "R37" else r for r in rulebook.rules)))
    assert [alias for alias, _ in _patterns(wider.program.ruleset["R37.0"])] == ["s", "p"]
    assert _patient_fields(wider.program, {}) == named | {"tumor.site", "molecular.ros1.fusion_partner"}
    thoracic = {"tumor": {"site": "thoracic"}, "molecular": {"ros1": {"status": "positive", "fusion_partner": "TPM3"}}}
    assert "FLAG_NO_APPROVED_TARGETED_AGENT" in wider.evaluate(thoracic).codes
    assert "FLAG_NO_APPROVED_TARGETED_AGENT" not in wider.evaluate({"tumor": {"site": "thoracic"}}).codes
    # The probe's program (one rule per fact test) sends the fields its own patterns test.
    from imt_cds.core.compiler import compile_probe

    probe, _ = compile_probe(wider.rulebook)
    assert _patient_fields(probe, {}) == _named(probe) == named | {"tumor.site", "molecular.ros1.fusion_partner"}


def test_the_fields_sent_are_read_from_a_definition_at_any_depth():
    # The compiler writes "all" rules only; were it to write another shape, the fields it tests must still be sent
    # (a field left out would make its tests silently never match).
    from imt_cds.core.compiler import _named_fields

    definition = {"any": [{"p": {"$and": [{"t": "patient"}, {"$or": [{"a.b": 1}, {"$lt": {"c.d": 2}}]}]}},
                          {"$not": {"p": {"e": None}}}]}
    named = _named_fields([definition, {"all": [{"p": {"f.g": True}}]}])
    assert {"a.b", "c.d", "e", "f.g"} <= named
