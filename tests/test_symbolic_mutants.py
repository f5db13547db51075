"""The authoring tools' second reading of the rules (authoring/symbolic.py) against the engine, past the shipped rules.

tests/test_authoring_tools.py compares the two on the shipped rulebook, whose conditions use some of the forms a
rule may take (no `lte`, no `not_in`, no set compared other than with `is`...): an encoding wrong for the others
would pass it, and `rules verify` would then prove properties of rules that the engine reads otherwise. Here a copy
of the rulebook gains one flag for each form, and the two readings must agree on every patient; the symbolic
patient's variables must take exactly the values a patient can have, and read back as the patient they were pinned to.
"""

from __future__ import annotations

import random

import pytest
import yaml
import z3
from rulebook_copies import add_flag, copy_rulebook
from strategies import random_patient

from imt_cds import Engine, load_rulebook, parse_facts
from imt_cds.authoring.symbolic import Encoding, SymbolicPatient, canonical_model, gene_symbols, real
from imt_cds.core.fact_fields import fact_fields

# finding -> a condition of one form (bounds and values from the generated patients' pools, tests/strategies.py, so
# each side of each test is met, the bound itself included)
FORMS = {  # finding: (condition, a patient it fires for, one it stays silent for)
    "FLAG_NUMBER_LTE": ("{fact: tumor.size_cm, lte: 3.9}", "{tumor: {size_cm: 3.9}}", "{tumor: {size_cm: 3.91}}"),
    "FLAG_NUMBER_LT": ("{fact: age_years, lt: 2}", "{age_years: 1}", "{age_years: 2}"),
    "FLAG_NUMBER_GTE": ("{fact: age_years, gte: 39}", "{age_years: 39}", "{age_years: 38.9}"),
    "FLAG_NUMBER_GT": ("{fact: tumor.size_cm, gt: 4}", "{tumor: {size_cm: 5}}", "{tumor: {size_cm: 4}}"),
    "FLAG_NUMBER_UNKNOWN": ("{fact: age_years, is: null}", "{}", "{age_years: 5}"),
    "FLAG_NUMBER_KNOWN": ("{fact: tumor.size_cm, is_not: null}", "{tumor: {size_cm: 5}}", "{}"),
    "FLAG_ENUM_NOT_IN": ("{fact: tumor.site, not_in: [thoracic, head_neck]}", "{tumor: {site: other}}",
                         "{tumor: {site: thoracic}}"),
    "FLAG_ENUM_IN": ("{fact: tumor.resectability, in: [resectable, unknown]}", "{}",
                     "{tumor: {resectability: unresectable}}"),
    "FLAG_ENUM_IS_NOT": ("{fact: molecular.ros1.status, is_not: negative}", "{}",
                         "{molecular: {ros1: {status: negative}}}"),
    "FLAG_NULLABLE_ENUM_KNOWN": ("{fact: history.margin_status, is_not: null}", "{history: {margin_status: R1}}",
                                 "{}"),
    "FLAG_NULLABLE_ENUM_IS": ("{fact: molecular.alk.ihc_pattern, is: cytoplasmic}",
                              "{molecular: {alk: {ihc_pattern: cytoplasmic}}}", "{}"),
    "FLAG_TRISTATE_UNKNOWN": ("{fact: tumor.distant_disease, is: null}", "{}", "{tumor: {distant_disease: false}}"),
    "FLAG_TRISTATE_NOT_IN": ("{fact: symptoms.respiratory, not_in: [true]}", "{}", "{symptoms: {respiratory: true}}"),
    "FLAG_BOOLEAN_IS_NOT": ("{fact: history.recurrence, is_not: true}", "{}", "{history: {recurrence: true}}"),
    "FLAG_SET_IS": ("{fact: molecular.ros1.methods, is: [IHC, FISH]}", "{molecular: {ros1: {methods: [FISH, IHC]}}}",
                    "{molecular: {ros1: {methods: [IHC]}}}"),
    "FLAG_SET_NOT_IN": ("{fact: molecular.ret.methods, not_in: [[IHC], []]}", "{molecular: {ret: {methods: [FISH]}}}",
                        "{}"),
    "FLAG_GENE_IS": ("{fact: molecular.ntrk.fusion_partner, is: etv6}", "{molecular: {ntrk: {fusion_partner: ETV6}}}",
                     "{}"),
    "FLAG_GENE_NOT_IN": ("{fact: molecular.ros1.fusion_partner, not_in: [TPM3, null]}",
                         "{molecular: {ros1: {fusion_partner: X-1}}}", "{molecular: {ros1: {fusion_partner: tpm3}}}"),
    "FLAG_GENE_KNOWN": ("{fact: molecular.pdgfrb.fusion_partner, is_not: null}",
                        "{molecular: {pdgfrb: {fusion_partner: FN1}}}", "{}"),
}
PATIENTS = 500


@pytest.fixture(scope="module")
def every_form(tmp_path_factory):
    directory = copy_rulebook(tmp_path_factory.mktemp("forms"))
    for number, (finding, (when, fires, silent)) in enumerate(FORMS.items()):
        add_flag(directory, when, [(fires, True), (silent, False)], rule_id=f"R{80 + number}", finding=finding,
                 title=f"Flag {finding.lower()}")
    rulebook = load_rulebook(directory)
    engine = Engine(rulebook)
    for finding, (_, fires, silent) in FORMS.items():  # each form means what its examples say, to the engine
        assert finding in engine.evaluate(yaml.safe_load(fires)).codes, finding
        assert finding not in engine.evaluate(yaml.safe_load(silent)).codes, finding
    return rulebook, engine


def test_the_encoding_agrees_with_the_engine_on_every_form_of_condition(every_form):
    rulebook, engine = every_form
    encoding = Encoding(rulebook, gene_symbols([rulebook]))
    p = encoding.patient()
    emitted = {code: encoding.emitted(p, code) for code in rulebook.finding_codes}
    fired = {code: 0 for code in FORMS}
    rng = random.Random(4242)
    for _ in range(PATIENTS):
        facts = parse_facts(random_patient(rng))
        solver = z3.Solver()
        solver.add(p.domain_constraints + p.fix(facts))
        assert solver.check() == z3.sat
        model = solver.model()
        holding = {code for code, formula in emitted.items() if z3.is_true(model.eval(formula, model_completion=True))}
        codes = set(engine.evaluate(facts).codes)
        assert holding == codes, (facts, holding ^ codes)
        for code in codes & FORMS.keys():
            fired[code] += 1
    # each form was met by some patients and missed by others: the agreement is on both sides of every test
    assert all(0 < count < PATIENTS for count in fired.values()), fired


def test_a_pinned_patient_reads_back_as_itself(every_form):
    rulebook, _ = every_form
    p = Encoding(rulebook, gene_symbols([rulebook])).patient()
    rng = random.Random(99)
    for _ in range(200):
        facts = parse_facts(random_patient(rng))
        solver = z3.Solver()
        solver.add(p.domain_constraints + p.fix(facts))
        assert solver.check() == z3.sat
        read = parse_facts(p.read(solver.model()))
        # as the rules see it: a fusion partner the rules never name reads back as another such symbol
        expected = facts.model_dump(mode="json")
        for gene, values in expected["molecular"].items():
            partner = values.get("fusion_partner") if isinstance(values, dict) else None
            if partner is not None and partner.upper() not in p.symbols:
                assert read.model_dump(mode="json")["molecular"][gene]["fusion_partner"].upper() not in p.symbols
                values["fusion_partner"] = read.model_dump(mode="json")["molecular"][gene]["fusion_partner"]
        used = {path for path, field in fact_fields().items() if field.usable_by_rules}
        assert _fields(read.model_dump(mode="json"), used) == _fields(expected, used)


def _fields(document, paths):
    values = {}
    for path in paths:
        node = document
        for part in path.split("."):
            node = node[part]
        if isinstance(node, list):
            node = sorted(node)
        elif isinstance(node, str) and fact_fields()[path].kind == "gene":
            node = node.upper()  # (the rules compare symbols in any case)
        values[path] = node
    return values


def _values(p, path):
    """Every value the solver lets the symbolic patient's field take (models enumerated, each one blocked after)."""
    var = p.vars[path]
    solver = z3.Solver()
    solver.add(p.domain_constraints)
    found = []
    while solver.check() == z3.sat and len(found) < 100:
        value = solver.model().eval(var, model_completion=True)
        found.append(value.as_long())
        solver.add(var != value)
    return found


def test_each_field_of_the_symbolic_patient_takes_exactly_the_values_a_patient_can_have(every_form):
    rulebook, _ = every_form
    p = Encoding(rulebook, gene_symbols([rulebook])).patient()
    for path, field in fact_fields().items():
        if not field.usable_by_rules:
            continue
        if field.kind in ("enum", "tristate"):
            assert sorted(_values(p, path)) == list(range(len(field.domain))), path
        elif field.kind == "gene":  # null, each symbol a rule names, any other symbol
            assert sorted(_values(p, path)) == list(range(len(p.symbols) + 2)), path
        elif field.kind == "number":
            known, value = p.vars[path]
            for bound, inside in ((field.minimum, not field.minimum_exclusive), (field.maximum, True)):
                solver = z3.Solver()
                solver.add(p.domain_constraints + [known, value == bound])
                assert (solver.check() == z3.sat) is inside, (path, bound)
            for outside in (field.minimum - 1, field.maximum + 1):
                solver = z3.Solver()
                solver.add(p.domain_constraints + [known, value == outside])
                assert solver.check() == z3.unsat, (path, outside)


# --- the canonical counterexample ---------------------------------------------------------------------------------


def canonical(formula_of, *names: str, symbols: tuple[str, ...] = ()) -> list[dict]:
    patients = [SymbolicPatient(name, symbols) for name in names or ("p",)]
    model = canonical_model(formula_of(*patients), *patients)
    return [patient.read(model) for patient in patients]


def test_a_canonical_counterexample_changes_the_fewest_fields_and_of_those_the_latest_in_the_input_order():
    def formula(p):
        return z3.Or(z3.And(p.equals("tumor.epithelioid_morphology", True), p.equals("symptoms.respiratory", True)),
                     p.equals("molecular.rna_fusion_panel_done", True), p.equals("history.recurrence", True))
    assert canonical(formula) == [{"history": {"recurrence": True}}]
    assert canonical(lambda p: z3.Or(formula(p), p.equals("age_years", None) == z3.BoolVal(False))) == [
        {"history": {"recurrence": True}}]
    assert canonical(lambda p: z3.And(p.equals("tumor.epithelioid_morphology", True),
                                      p.equals("symptoms.respiratory", True))) == [
        {"tumor": {"epithelioid_morphology": True}, "symptoms": {"respiratory": True}}]
    order = list(SymbolicPatient("p", ()).vars)
    first, last = order[0], order[-1]
    assert (first, last) == ("age_years", "history.progressed_on_prior_systemic")  # (the order the cases below use)

    def known(p, path):
        return z3.Not(p.equals(path, None if fact_fields()[path].kind == "number" else "unknown"))
    # two changes of the first fields rather than three of the last: the count comes first, however late the fields
    assert canonical(lambda p: z3.Or(z3.And(known(p, "age_years"), known(p, "tumor.site")), z3.And(
        p.equals("history.recurrence", True), p.equals("history.progressed_on_alk_inhibitor", True),
        p.equals(last, True)))) == [{"age_years": 0.0, "tumor": {"site": "thoracic"}}]
    # of two pairs, the one that keeps the earliest field at its default (not the smaller sum of positions)
    assert canonical(lambda p: z3.Or(z3.And(known(p, "age_years"), p.equals(last, True)),
                                     z3.And(known(p, "tumor.site"), known(p, "tumor.size_cm")))) == [
        {"tumor": {"site": "thoracic", "size_cm": 0.5}}]


def test_a_canonical_counterexample_takes_the_first_value_of_a_field_that_fits():
    alk, site = "molecular.alk.status", "tumor.site"
    assert canonical(lambda p: z3.Not(p.equals(alk, "unknown"))) == [{"molecular": {"alk": {"status": "positive"}}}]
    assert canonical(lambda p: z3.Not(p.equals(alk, "unknown")) == z3.Not(p.equals(alk, "positive"))) == [
        {"molecular": {"alk": {"status": "negative"}}}]
    assert canonical(lambda p: z3.Not(z3.Or(p.equals(site, "unknown"), p.equals(site, "thoracic")))) == [
        {"tumor": {"site": "abdominal_pelvic"}}]
    partner = "molecular.ros1.fusion_partner"
    assert canonical(lambda p: z3.Not(p.equals(partner, None)), symbols=("TPM3", "ETV6")) == [
        {"molecular": {"ros1": {"fusion_partner": "TPM3"}}}]  # the first symbol the rules name
    assert canonical(lambda p: z3.Not(z3.Or([p.equals(partner, v) for v in (None, "TPM3", "ETV6")])),
                     symbols=("TPM3", "ETV6")) == [{"molecular": {"ros1": {"fusion_partner": "EML4"}}}]  # any other
    members = fact_fields()["molecular.ros1.methods"].values
    assert canonical(lambda p: z3.Not(p.equals("molecular.ros1.methods", []))) == [
        {"molecular": {"ros1": {"methods": [members[-1]]}}}]  # the members left out while a model remains


def test_a_canonical_number_is_the_least_constant_of_the_question_or_midpoint_between_two_that_fits():
    def age_below_one(p):
        known, age = p.vars["age_years"]
        return z3.And(known, age < real(1))

    def size_between(p):
        known, size = p.vars["tumor.size_cm"]
        return z3.And(known, size > real(3.9), size < real(3.92))
    assert canonical(age_below_one) == [{"age_years": 0.0}]  # the domain's least, allowed (a size's is not)
    assert canonical(size_between) == [{"tumor": {"size_cm": 3.91}}]

    def larger(p, q):  # two patients: the second one's size is fixed after the first one's, above it
        return z3.And(p.same_as(q, except_=["tumor.size_cm"]), p.vars["tumor.size_cm"][0], q.vars["tumor.size_cm"][0],
                      p.vars["tumor.size_cm"][1] < q.vars["tumor.size_cm"][1], q.vars["tumor.size_cm"][1] < real(0.5))
    assert canonical(larger, "p", "q") == [{"tumor": {"size_cm": 0.25}}, {"tumor": {"size_cm": 0.375}}]


def test_a_canonical_counterexample_does_not_depend_on_what_z3_was_asked_before(every_form):
    rulebook, _ = every_form
    encoding = Encoding(rulebook, gene_symbols([rulebook]))

    def some_flags(p):
        return z3.Or([encoding.emitted(p, code) for code in ("FLAG_NUMBER_GT", "FLAG_ENUM_NOT_IN", "FLAG_GENE_IS")])
    first = canonical(some_flags, symbols=encoding.symbols)
    rng = random.Random(3)
    for _ in range(3):  # other questions in between, with other terms made in z3's shared context
        p = encoding.patient(f"other{rng.random()}")
        z3.Solver().check(z3.And(encoding.emitted(p, "FLAG_SET_IS"), p.vars["age_years"][1] > real(rng.random())))
        assert canonical(some_flags, symbols=encoding.symbols) == first
