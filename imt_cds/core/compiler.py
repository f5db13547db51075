"""Compile a checked rulebook into durable-rules' JSON ruleset, plus the table that says what each engine rule means.

This module produces data only; it never imports ``durable`` (that is ``engine``'s job alone). How each rulebook
construct becomes engine rules, and which engine defect (engineering/durable-rules.md) each choice avoids:

- **One patient fact** per evaluation, flat, every field a pattern names present with an explicit ``null`` (a
  missing key never matches anything) and one JSON type per field (the engine coerces ``false == 0 == 'false'``).
  Gene symbols are sent upper-cased and sets as a canonical sorted string, so both compare by plain equality. A
  field no pattern names is not sent: the engine parses the fact once and copies it into the message of every rule
  that fires on it (nine of the shipped rulebook's 29 fields are never tested: leaving them out made
  ``evaluate()`` ~6 % faster, docs/performance.md).
- **One engine rule per disjunct** of a rule's condition (``conditions.to_dnf``). Disjuncts may overlap; each firing
  then tells exactly which branch held, which is what the rationale (``because``) reports. Inside one pattern the
  only ``$or``s are between values of the same field (or null versus not null), which cannot both match, so no
  pattern fires twice for one fact (a ``$or`` fires once per matching branch).
- **Derived facts are engine facts** asserted by the actions of their rules and matched by other rules: forward
  chaining happens in the engine. Asserting one twice would raise inside the action, so the engine module asserts
  each distinct derived fact once per evaluation.
- **Negation of derived facts is stratified.** durable-rules has no truth maintenance: a ``$not`` would be decided
  when the rule is evaluated, so it would depend on assertion order. Each rule gets a stratum: one more than the
  strata of the facts it negates. Rules of stratum k > 0 also match a marker fact ``{t: stratum, n: k}`` that the
  engine module asserts only after everything below k has run to completion. A negation cycle is a rulebook error.
- **The marker says which settled derived facts hold.** A derived fact all of whose rules are in strata below k is
  final when marker k is asserted, so the marker carries it as a field (``"DATA_BLOCK": false``) and a rule of
  stratum k tests that field instead of joining the fact (or a ``$not`` of it) as a pattern of its own: every
  negation is read so, and no ``$not`` is compiled. Same matches, fewer patterns: durable-rules allocates and
  zeroes ~8 KiB per pattern of the ruleset in every new session, whatever the patient (docs/performance.md). A
  derived fact that a rule of the same stratum derives is still joined. Derived names are upper-case (the schema's
  ``DERIVED_NAME``), so no field of a marker is ``sid``, ``t`` or ``n``.
- **Suppression is done by rules:** a suppressible rule's action also asserts a *candidate* fact; the suppression
  rule joins candidates with its derived fact (two facts, no property compared between them: no cross-fact join
  condition, which the engine can crash on) and its firing marks the candidate suppressed.
- Every pattern has a positive type test (a pattern of negative tests only loops forever), and some rule matches
  every patient fact, so every evaluation starts an action (deleting a session where none started can segfault).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import orjson

from .conditions import Atom, Conjunction, DerivedTest, to_dnf
from .errors import RulebookError, RulebookProblem
from .fact_fields import FactField, fact_fields
from .rulebook import FindingSpec, Rule, Rulebook

__all__ = ["EngineRule", "Program", "ReasonTemplate", "compile_probe", "compile_rulebook"]

PATIENT = "patient"
DERIVED = "derived"
CANDIDATE = "candidate"
STRATUM = "stratum"
ANCHOR = "$anchor"  # internal rule matching every patient, added when no 'always' rule does it
_MAX_SLOTS = 30  # the engine allows 32 expression slots per pattern (error 113); keep a margin


@dataclass(frozen=True, slots=True)
class ReasonTemplate:
    """One item of a rationale, known at compile time except for the patient's actual value."""

    literal: Atom | DerivedTest
    expected: str | None  # for atoms: the test as text ("= positive", "> 3.9")
    parameter: str | None  # for atoms compared with a rulebook parameter
    order: int = 0  # position of the literal in its rule's condition: rationales list reasons in this order,
    # whatever order the engine fired the rule's branches in


@dataclass(frozen=True, slots=True)
class EngineRule:
    """One rule of the compiled engine ruleset and what its firing means."""

    name: str
    rule: Rule | None  # None for the internal anchor
    stratum: int
    conjunction: Conjunction
    reasons: tuple[ReasonTemplate, ...]  # one per literal of the conjunction, in the order of the rule's condition
    produces: tuple[FindingSpec, ...] = ()
    derives: str | None = None  # the derived fact its action asserts
    asserts: tuple[str, ...] = ()  # facts the action asserts, as JSON with a "%s" placeholder for the session id
    suppression: Rule | None = None  # set on a suppression's engine rule: its firing suppresses a candidate
    definition: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # the engine rule (durable-rules JSON)


@dataclass(frozen=True)
class Program:
    """A compiled rulebook: the engine's ruleset and the meaning of each of its rules."""

    rulebook: Rulebook
    ruleset: Mapping[str, Any]
    rules: Mapping[str, EngineRule]
    strata: int  # number of strata; markers 1..strata-1 are asserted in turn
    # marker_facts[k - 1]: the settled derived facts marker k says hold or not (each a field, true or false)
    marker_facts: tuple[tuple[str, ...], ...]
    encode_patient: Callable[[tuple[Any, ...], list[str], str], str]  # (leaf values, their JSON, session id)

    def __post_init__(self) -> None:
        by_rule: dict[str, list[EngineRule]] = {}
        for engine_rule in self.rules.values():
            if engine_rule.rule is not None:
                by_rule.setdefault(engine_rule.rule.id, []).append(engine_rule)
        object.__setattr__(self, "_by_rule", {rule_id: tuple(ers) for rule_id, ers in by_rule.items()})

    def ruleset_json(self) -> str:
        return orjson.dumps({name: dict(rule) for name, rule in self.ruleset.items()}).decode()

    def branches(self, rule: Rule | str, spec: FindingSpec | None = None) -> tuple[EngineRule, ...]:
        """The engine rules of a rule (one per branch of its condition), in order; with ``spec``, only those
        producing that finding (for a finding with its own condition: the rule's branches times the finding's)."""
        rule_id = rule if isinstance(rule, str) else rule.id
        found: tuple[EngineRule, ...] = self._by_rule.get(rule_id, ())  # type: ignore[attr-defined]
        if spec is None:
            return found
        return tuple(er for er in found if any(f.code == spec.code for f in er.produces))


def compile_rulebook(rulebook: Rulebook) -> Program:
    fields = fact_fields()
    parameters = rulebook.parameter_values
    strata = _strata(rulebook)
    engine_rules: list[EngineRule] = []
    problems: list[RulebookProblem] = []
    marker_facts: dict[int, set[str]] = {}  # stratum -> the settled derived facts its marker reports

    for rule in rulebook.rules:
        if rule.reasons:  # a grouping rule (D04): its reason rules carry the conditions
            continue
        if rule.suppresses:
            engine_rules.append(_suppression_rule(rule, strata))
            continue
        if rule.when is None:
            continue
        stratum = strata[rule.id]
        settled = _settled(rulebook, strata, rule, stratum)
        if settled:
            marker_facts.setdefault(stratum, set()).update(settled)
        order = _literal_order(rule)
        # the suppression whose candidate fact this rule's findings assert (the last one, if several name it)
        suppressors = rulebook.suppressors(rule.id)
        candidate_for = suppressors[-1].id if suppressors else None
        groups: list[tuple[tuple[FindingSpec, ...], Any]] = []
        if rule.findings:
            plain = tuple(f for f in rule.findings if f.when is None)
            if plain:
                groups.append((plain, None))
            groups.extend(((f,), f.when) for f in rule.findings if f.when is not None)
        else:
            groups.append(((), None))
        index = 0
        for findings, extra in groups:
            for disjunct in to_dnf(rule.when):
                for extra_disjunct in to_dnf(extra) if extra is not None else ((),):
                    conjunction = tuple(dict.fromkeys(disjunct + extra_disjunct))
                    name = f"{rule.id}.{index}"
                    index += 1
                    engine_rules.append(
                        _engine_rule(name, rule, stratum, conjunction, findings, candidate_for, order, fields,
                                     parameters, problems, settled)
                    )
    if not any(r.rule is not None and not r.conjunction and not r.suppression for r in engine_rules):
        engine_rules.append(_anchor())
    if problems:
        raise RulebookError(problems)
    return _program(rulebook, engine_rules, max(strata.values(), default=0) + 1, fields, marker_facts)


def compile_probe(rulebook: Rulebook) -> tuple[Program, dict[str, Atom]]:
    """A program with one engine rule per distinct fact test of the rulebook, and which test each rule is.

    Evaluating a patient with it tells which tests hold, *according to the engine*: explanations ("why not?") need
    the truth of single conditions, and must not get it from a second evaluator of conditions written in Python.
    """
    fields = fact_fields()
    parameters = rulebook.parameter_values
    atoms = dict.fromkeys(lit for rule in rulebook.rules for lit in rule.literals if isinstance(lit, Atom))
    names = {f"a{i}": atom for i, atom in enumerate(atoms)}
    rules = [
        EngineRule(name, None, 0, (atom,), (), definition={
            "all": [_pattern("p", PATIENT, [_compile_atom(atom, fields[atom.path], parameters)])]})
        for name, atom in names.items()
    ]
    return _program(rulebook, [*rules, _anchor()], 1, fields), names


def _anchor() -> EngineRule:
    """The internal rule matching every patient fact (so that every evaluation starts an action)."""
    return EngineRule(ANCHOR, None, 0, (), (), definition={"all": [_pattern("p", PATIENT, [])]})


def _program(rulebook: Rulebook, engine_rules: list[EngineRule], strata: int, fields: Mapping[str, FactField],
             marker_facts: Mapping[int, set[str]] | None = None) -> Program:
    return Program(
        rulebook=rulebook,
        ruleset=MappingProxyType({r.name: dict(r.definition) for r in engine_rules}),
        rules=MappingProxyType({r.name: r for r in engine_rules}),
        strata=strata,
        marker_facts=tuple(tuple(sorted((marker_facts or {}).get(k, ()))) for k in range(1, strata)),
        encode_patient=_patient_encoder(fields, _named_fields(r.definition for r in engine_rules)),
    )


def _named_fields(definitions: Iterable[Mapping[str, Any]]) -> frozenset[str]:
    """Every name the engine rules' definitions hold, at any depth: among them, every fact field a pattern tests.
    Read from the definitions the engine is given, whatever built them and however they nest (``all``, ``$and``,
    ``$or``, an operator's ``{field: operand}``), so that the patient fact cannot lack a field a pattern names. The
    other names (``all``, aliases, operators, ``t``) are no field's, and the encoder sends fields only."""
    named: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, Mapping):
            named.update(node)
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for item in node:
                visit(item)

    for definition in definitions:
        visit(definition)
    return frozenset(named)


# --- strata -------------------------------------------------------------------------------------------------------


def _strata(rulebook: Rulebook) -> dict[str, int]:
    """Stratum of every rule: 0, or one more than the strata of the rules deriving a fact it negates."""
    deps = {rule.id: [lit for lit in rule.literals if isinstance(lit, DerivedTest)] for rule in rulebook.rules}
    strata = {rule.id: 0 for rule in rulebook.rules}
    limit = len(strata) + 1
    changed = True
    while changed:
        changed = False
        for rule in rulebook.rules:
            needed = 0
            for test in deps[rule.id]:
                for producer in rulebook.deriving(test.name):
                    needed = max(needed, strata[producer.id] + (0 if test.present else 1))
            for target in rule.suppresses:  # a suppression runs with (or after) the rules it suppresses
                needed = max(needed, strata[target])
            if needed > strata[rule.id]:
                if needed > limit:
                    # The rule whose stratum passes the bound first may merely depend on the cycle: name one on it.
                    culprit = _first_on_a_negation_cycle(rulebook, deps)
                    raise RulebookError([RulebookProblem(culprit.file, "the rulebook negates a derived fact that "
                                                                       "depends on its own negation", culprit.id,
                                                         "when")])
                strata[rule.id] = needed
                changed = True
    for rule in rulebook.rules:  # a grouping rule sits with its reasons
        if rule.reasons:
            strata[rule.id] = max(strata[r] for r in rule.reasons)
    return strata


def _settled(rulebook: Rulebook, strata: Mapping[str, int], rule: Rule, stratum: int) -> frozenset[str]:
    """The derived facts a rule tests that only rules of strata below its own derive: final at its marker."""
    if stratum == 0:
        return frozenset()
    return frozenset(lit.name for lit in rule.literals if isinstance(lit, DerivedTest)
                     and all(strata[producer.id] < stratum for producer in rulebook.deriving(lit.name)))


# --- engine rules -------------------------------------------------------------------------------------------------


def _engine_rule(name: str, rule: Rule, stratum: int, conjunction: Conjunction, findings: tuple[FindingSpec, ...],
                 candidate_for: str | None, order: Mapping[Atom | DerivedTest, int], fields: Mapping[str, FactField],
                 parameters: Mapping[str, float], problems: list[RulebookProblem],
                 settled: frozenset[str]) -> EngineRule:
    atoms = [lit for lit in conjunction if isinstance(lit, Atom)]
    # Derived facts settled below this stratum are read from its marker; the others are joined as facts.
    derived = [lit for lit in conjunction if isinstance(lit, DerivedTest)]
    from_marker = [lit for lit in derived if lit.name in settled]
    present = [lit for lit in derived if lit.present and lit.name not in settled]
    absent = [lit for lit in derived if not lit.present and lit.name not in settled]
    patterns: list[dict[str, Any]] = []
    if stratum > 0:
        marker_tests: list[dict[str, Any]] = [{"t": STRATUM}, {"n": stratum}]
        marker_tests.extend({lit.name: lit.present} for lit in from_marker)
        if len(marker_tests) > _MAX_SLOTS:
            problems.append(RulebookProblem(rule.file, f"condition branch {name} tests {len(from_marker)} derived "
                                                       f"facts (limit {_MAX_SLOTS - 2}); split the rule", rule.id,
                                            "when"))
        patterns.append({"s": {"$and": marker_tests}})
    if atoms or not (present or absent):
        tests = [_compile_atom(atom, fields[atom.path], parameters) for atom in atoms]
        slots = 1 + sum(_slots(t) for t in tests)
        if slots > _MAX_SLOTS:
            problems.append(RulebookProblem(rule.file, f"condition branch {name} needs {slots} engine expression "
                                                       f"slots (limit {_MAX_SLOTS}); split the rule", rule.id, "when"))
        patterns.append(_pattern("p", PATIENT, tests))
    for i, lit in enumerate(present):
        patterns.append(_pattern(f"d{i}", DERIVED, [{"name": lit.name}]))
    if absent:  # cannot happen: a negated fact's rules are all in lower strata; guard the invariant relied on
        raise AssertionError(f"{name}: negation of {absent[0].name}, which is not settled below stratum {stratum}")

    asserts: list[str] = []
    if rule.derives:
        fact: dict[str, Any] = {"t": DERIVED, "name": rule.derives}
        if rule.reason:
            fact["reason"] = rule.id
        asserts.append(_template(fact))
    if candidate_for and findings:
        asserts.append(_template({"t": CANDIDATE, "by": candidate_for, "rule": rule.id}))
    reasons = sorted((_reason(lit, fields, parameters, order[lit]) for lit in conjunction), key=_by_order)
    return EngineRule(name, rule, stratum, conjunction, tuple(reasons), produces=findings, derives=rule.derives,
                      asserts=tuple(asserts), definition={"all": patterns})


def _suppression_rule(rule: Rule, strata: Mapping[str, int]) -> EngineRule:
    assert isinstance(rule.when, DerivedTest)  # enforced by the loader
    patterns = [
        _pattern("c", CANDIDATE, [{"by": rule.id}]),
        _pattern("d", DERIVED, [{"name": rule.when.name}]),
    ]
    reasons = (ReasonTemplate(rule.when, None, None),)
    return EngineRule(f"{rule.id}.0", rule, strata[rule.id], (rule.when,), reasons, suppression=rule,
                      definition={"all": patterns})


def _pattern(alias: str, fact_type: str, tests: list[dict[str, Any]]) -> dict[str, Any]:
    if not tests:
        return {alias: {"t": fact_type}}
    return {alias: {"$and": [{"t": fact_type}, *tests]}}


def _template(fact: Mapping[str, Any]) -> str:
    # '%' in a value would break the %-template; derived names and rule ids cannot contain one (checked at load).
    body = orjson.dumps(fact).decode()
    return '{"sid":"%s",' + body[1:]


def _slots(test: Mapping[str, Any]) -> int:
    (key, value), = test.items()
    if key in ("$or", "$and"):
        return 1 + sum(_slots(t) for t in value)
    return 1


def _literal_order(rule: Rule) -> dict[Atom | DerivedTest, int]:
    return {lit: i for i, lit in enumerate(rule.literals)}


def _by_order(template: ReasonTemplate) -> int:
    return template.order


def _reason(literal: Atom | DerivedTest, fields: Mapping[str, FactField], parameters: Mapping[str, float],
            order: int) -> ReasonTemplate:
    if isinstance(literal, DerivedTest):
        return ReasonTemplate(literal, None, None, order)
    parameter = getattr(literal.operand, "name", None)
    return ReasonTemplate(literal, literal.expected_text(parameters, fields[literal.path]), parameter, order)


# --- atoms --------------------------------------------------------------------------------------------------------


def encode_value(field: FactField, value: Any) -> Any:
    """A fact value as the engine sees it: in rule tests (``_compile_atom``) and in the patient fact
    (``_patient_encoder``) alike, so that the two cannot disagree."""
    if value is None:
        return None
    if field.kind == "gene":
        return value.upper()
    if field.kind == "set":
        return "+".join(sorted(value))
    return value


def engine_number(value: float) -> str:
    """A number as JSON text that durable-rules' parser reads correctly.

    Its parser accepts an exponent only after a fraction: ``1.0e-07`` is read correctly but ``1e-07`` (how Python
    and orjson write some valid values, e.g. an age of 5e-324 years) is a parse error that would fail the
    evaluation. So numbers are written as the shortest round-trip text with ``.0`` added to a bare mantissa.
    """
    text = repr(float(value))
    if "e" in text:
        mantissa, exponent = text.split("e")
        if "." not in mantissa:
            text = f"{mantissa}.0e{exponent}"
    return text


def _compile_atom(atom: Atom, field: FactField, parameters: Mapping[str, float]) -> dict[str, Any]:
    path = atom.path
    value = atom.resolved(parameters)
    if atom.op in ("gt", "gte", "lt", "lte"):
        return {f"${atom.op}": {path: orjson.Fragment(engine_number(value).encode())}}
    if atom.op in ("is", "is_not"):
        values: tuple[Any, ...] = (value,)
        negate = atom.op == "is_not"
    else:
        values = tuple(value)
        negate = atom.op == "not_in"
    encoded = tuple(encode_value(field, v) for v in values)
    domain = field.domain
    if negate and domain is not None:
        # Plain logical negation over a finite domain is membership in the complement: equality tests only,
        # which behave the same for null as for any other value (a $neq is false on null).
        encoded = tuple(v for v in domain if v not in encoded)
        negate = False
    if not negate:
        tests = [{path: v} for v in encoded]
        return tests[0] if len(tests) == 1 else {"$or": tests}
    # Infinite domain (gene symbol, set, number-null): "not any of these values", and null counts as "not".
    non_null = [{"$neq": {path: v}} for v in encoded if v is not None]
    if None in encoded:
        tests = [{"$neq": {path: None}}, *non_null]
        return tests[0] if len(tests) == 1 else {"$and": tests}
    inner = non_null[0] if len(non_null) == 1 else {"$and": non_null}
    if not field.nullable:
        return inner
    return {"$or": [{path: None}, inner]}


def _patient_encoder(fields: Mapping[str, FactField],
                     named: frozenset[str]) -> Callable[[tuple[Any, ...], list[str], str], str]:
    """Build the function writing validated facts as the engine's flat patient fact.

    Its inputs are the facts' ``leaf_values`` and their canonical JSON texts (``validation.render_leaves``, computed
    once per evaluation for the input hash). Enum and boolean values are sent exactly as in the canonical JSON;
    the other kinds have an engine form, the one rule tests compare with (``encode_value``): numbers through
    ``engine_number``, gene symbols upper-cased, sets as their canonical string. Only the fields some pattern names
    (``named``) are sent: not patient_id, which no rule may use, nor a field no rule tests. The text comes from a
    template, not a JSON library, because this runs on every evaluation; a value outside its field's domain cannot
    occur (the facts are validated, and the canonical writer rejects it).
    """
    engine_form: list[tuple[int, Callable[[Any], str] | None]] = []
    keys: list[str] = []
    for index, (path, field) in enumerate(fields.items()):
        if field.usable_by_rules and path in named:
            keys.append(path)
            engine_form.append((index, _engine_text(field)))
    # '%' cannot occur in a field path, so the only placeholders are ours.
    template = '{"sid":"%s","t":"' + PATIENT + '"' + "".join(f",{orjson.dumps(k).decode()}:%s" for k in keys) + "}"
    plan = tuple(engine_form)

    def encode(values: tuple[Any, ...], leaves: list[str], sid: str) -> str:
        return template % (sid, *[leaves[i] if write is None else write(values[i]) for i, write in plan])

    return encode


def _engine_text(field: FactField) -> Callable[[Any], str] | None:
    """The function writing a value of the field as JSON text of its engine form (``encode_value``); None for the
    kinds whose engine form is the value itself, which the patient fact takes from the canonical JSON."""
    if field.kind in ("enum", "boolean", "tristate"):
        return None
    if field.kind == "number":
        return _number_text
    if field.kind == "gene":
        return functools.partial(_gene_text, field)
    if field.kind == "set":
        # A set field has few possible members (test methods: 16 subsets): every subset's text, written once.
        subsets = itertools.chain.from_iterable(itertools.combinations(field.values, n)
                                                for n in range(len(field.values) + 1))
        texts = {frozenset(s): orjson.dumps(encode_value(field, frozenset(s))).decode() for s in subsets}
        return functools.partial(_set_text, texts)
    raise TypeError(f"cannot encode {field.path} ({field.kind})")  # pragma: no cover - no other kind usable by rules


def _number_text(value: float | None) -> str:
    return "null" if value is None else engine_number(value)


def _gene_text(field: FactField, value: str | None) -> str:
    return "null" if value is None else orjson.dumps(encode_value(field, value)).decode()


def _set_text(texts: Mapping[frozenset[str], str], values: frozenset[str]) -> str:
    try:
        return texts[values]
    except KeyError:
        raise ValueError(f"not a valid set of test methods: {sorted(values)}") from None


# --- errors ---------------------------------------------------------------------------------------------------------


def _first_on_a_negation_cycle(rulebook: Rulebook, deps: Mapping[str, list[DerivedTest]]) -> Rule:
    """The first rule, in catalogue order, that depends on itself through a negated derived fact (one exists when
    the strata grow without bound)."""
    def needs(rule: Rule) -> list[tuple[Rule, bool]]:  # the rules it waits for, and whether through a negation
        edges = [(producer, not test.present) for test in deps[rule.id] for producer in rulebook.deriving(test.name)]
        return edges + [(rulebook.rule(target), False) for target in rule.suppresses]

    for start in rulebook.rules:
        seen: set[tuple[str, bool]] = set()
        pending = [(start, False)]
        while pending:  # bounded: each (rule, negated so far) is visited once
            rule, negated = pending.pop()
            for needed, negation in needs(rule):
                state = (needed.id, negated or negation)
                if state == (start.id, True):
                    return start
                if state not in seen:
                    seen.add(state)
                    pending.append((needed, state[1]))
    raise AssertionError("the strata grew without bound but no rule is on a negation cycle")  # pragma: no cover
