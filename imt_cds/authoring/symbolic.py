"""The rulebook as logic: z3 formulas over a symbolic patient, for checks over the *whole* input space.

The engine decides what applies to a patient; this module is the one deliberate second reading of the rules'
semantics, used only by the authoring tools (``rules verify``, ``rules diff``) to reason about every possible patient
at once rather than sampling. It must agree with the engine: a test evaluates both on thousands of concrete patients
and compares every finding, and every counterexample the tools print is re-checked on the real engine.

A symbolic patient has one z3 variable per input field (per field kind: an integer index into the field's finite
domain, a boolean, a known-flag plus a real number, one boolean per possible set member, or an index over the gene
symbols the rules mention plus "any other symbol"). Readings follow rules/README.md (Conditions) exactly as the
compiler does: a positive test needs the known value, a negated test is plain negation, numeric tests never hold for
null.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

try:
    import z3
except ImportError as exc:  # pragma: no cover - exercised only without the authoring extra
    raise ImportError("the rule verification tools need z3: pip install 'imt-cds[authoring]'") from exc

from ..core.conditions import All, Always, Any_, AtLeast, Atom, Condition, DerivedTest
from ..core.fact_fields import FactField, fact_fields, set_path
from ..core.facts import PatientFacts
from ..core.rulebook import FindingSpec, Rule, Rulebook

__all__ = ["Encoding", "SymbolicPatient", "canonical_model", "gene_symbols", "real", "solver_for"]

_OTHER_SYMBOLS = ("EML4", "TPM3", "ETV6", "FN1", "CLTC", "X-OTHER")


def gene_symbols(rulebooks: Iterable[Rulebook]) -> tuple[str, ...]:
    """Every gene symbol a rule compares with (upper-cased: comparisons are case-insensitive)."""
    found: dict[str, None] = {}
    for rulebook in rulebooks:
        for rule in rulebook.rules:
            for literal in rule.literals:
                if isinstance(literal, Atom) and fact_fields()[literal.path].kind == "gene":
                    operand = literal.operand
                    values = operand if isinstance(operand, tuple) else (operand,)
                    for value in values:
                        if isinstance(value, str):
                            found[value.upper()] = None
    return tuple(found)


def _domain(field: FactField) -> tuple[Any, ...]:
    """The values of an enum or tristate field, which a symbolic patient holds as an index into them."""
    domain = field.domain
    if field.kind not in ("enum", "tristate") or domain is None:
        raise TypeError(field.kind)
    return domain


class SymbolicPatient:
    """z3 variables standing for one patient's facts (``name`` keeps two patients of one formula apart)."""

    def __init__(self, name: str, symbols: tuple[str, ...]):
        self.name = name
        self.symbols = symbols
        self.vars: dict[str, Any] = {}
        self.domain_constraints: list[Any] = []
        for path, field in fact_fields().items():
            if not field.usable_by_rules:
                continue
            key = f"{name}.{path}"
            if field.kind in ("enum", "tristate"):
                var = z3.Int(key)
                self.vars[path] = var
                self.domain_constraints.append(z3.And(var >= 0, var < len(_domain(field))))
            elif field.kind == "boolean":
                self.vars[path] = z3.Bool(key)
            elif field.kind == "number":
                known, value = z3.Bool(f"{key}.known"), z3.Real(f"{key}.value")
                self.vars[path] = (known, value)
                low = value > field.minimum if field.minimum_exclusive else value >= field.minimum
                self.domain_constraints.append(z3.Implies(known, z3.And(low, value <= field.maximum)))
                # an unknown number has no value: pin it so that models (and counts) do not vary on it
                self.domain_constraints.append(z3.Implies(z3.Not(known), value == 0))
            elif field.kind == "set":
                self.vars[path] = {m: z3.Bool(f"{key}.{m}") for m in field.values}
            elif field.kind == "gene":
                var = z3.Int(key)
                self.vars[path] = var
                # 0 = null, 1..n = the symbols rules mention, n+1 = any other symbol
                self.domain_constraints.append(z3.And(var >= 0, var <= len(symbols) + 1))
            else:  # pragma: no cover
                raise TypeError(field.kind)

    # -- atoms --

    def equals(self, path: str, value: Any) -> Any:
        field = fact_fields()[path]
        var = self.vars[path]
        if field.kind in ("enum", "tristate"):
            return var == _domain(field).index(value)
        if field.kind == "boolean":
            return var if value else z3.Not(var)
        if field.kind == "number":
            if value is not None:
                raise ValueError("numbers are compared with gt/gte/lt/lte")
            return z3.Not(var[0])
        if field.kind == "set":
            return z3.And([bit if member in value else z3.Not(bit) for member, bit in var.items()])
        if field.kind == "gene":
            return var == (0 if value is None else self.symbols.index(value.upper()) + 1)
        raise TypeError(field.kind)  # pragma: no cover

    def atom(self, atom: Atom, parameters: Mapping[str, float]) -> Any:
        value = atom.resolved(parameters)
        if atom.op in ("gt", "gte", "lt", "lte"):
            known, number = self.vars[atom.path]
            bound = real(value)
            test = {"gt": number > bound, "gte": number >= bound, "lt": number < bound, "lte": number <= bound}
            return z3.And(known, test[atom.op])
        values = (value,) if atom.op in ("is", "is_not") else tuple(value)
        member = z3.Or([self.equals(atom.path, v) for v in values])
        return z3.Not(member) if atom.op in ("is_not", "not_in") else member

    # -- concrete values --

    def fix(self, facts: PatientFacts) -> list[Any]:
        """Constraints pinning every variable to a concrete patient's value."""
        import operator

        constraints = []
        for path, var in self.vars.items():
            field = fact_fields()[path]
            value = operator.attrgetter(path)(facts)
            if field.kind == "number":
                known, number = var
                constraints.append(known == (value is not None))
                constraints.append(number == (real(value) if value is not None else 0))
            elif field.kind == "set":
                constraints.extend(bit == (member in value) for member, bit in var.items())
            elif field.kind == "gene":
                upper = value.upper() if value is not None else None
                index = 0 if upper is None else (self.symbols.index(upper) + 1 if upper in self.symbols
                                                 else len(self.symbols) + 1)
                constraints.append(var == index)
            else:
                constraints.append(self.equals(path, value))
        return constraints

    def read(self, model: Any) -> dict[str, Any]:
        """The patient (facts JSON, default values left out) that a z3 model describes."""
        patient: dict[str, Any] = {}
        for path, var in self.vars.items():
            field = fact_fields()[path]
            if field.kind in ("enum", "tristate"):
                value = _domain(field)[model.eval(var, model_completion=True).as_long()]
            elif field.kind == "boolean":
                value = z3.is_true(model.eval(var, model_completion=True))
            elif field.kind == "number":
                known, number = var
                if z3.is_true(model.eval(known, model_completion=True)):
                    fraction = model.eval(number, model_completion=True).as_fraction()
                    value = float(Fraction(fraction.numerator, fraction.denominator))
                else:
                    value = None
            elif field.kind == "set":
                value = sorted(m for m, bit in var.items() if z3.is_true(model.eval(bit, model_completion=True)))
            else:
                index = model.eval(var, model_completion=True).as_long()
                value = None if index == 0 else (self.symbols[index - 1] if index <= len(self.symbols)
                                                 else next(s for s in _OTHER_SYMBOLS if s not in self.symbols))
            if value != field.default:
                set_path(patient, path, value)
        return patient

    def defaults(self) -> list[Any]:
        """One soft constraint per field: 'this field keeps its default' (for minimal counterexamples)."""
        return [self.equals(path, fact_fields()[path].default) for path in self.vars]

    def choices(self, path: str) -> list[list[Any]]:
        """The values a field that is not a number can take, each as a constraint, in one fixed order, in groups to
        choose from one after the other (a set field: one group per member)."""
        field, var = fact_fields()[path], self.vars[path]
        if field.kind in ("enum", "tristate"):
            return [[var == index for index in range(len(_domain(field)))]]
        if field.kind == "gene":
            return [[var == index for index in range(len(self.symbols) + 2)]]
        if field.kind == "boolean":
            return [[z3.Not(var), var]]
        if field.kind == "set":
            return [[z3.Not(bit), bit] for bit in var.values()]
        raise TypeError(field.kind)  # pragma: no cover

    def same_as(self, other: SymbolicPatient, except_: Iterable[str] = ()) -> Any:
        """The two patients have the same value in every field but those of ``except_``."""
        skip = set(except_)
        equal = []
        for path, var in self.vars.items():
            if path in skip:
                continue
            twin = other.vars[path]
            if isinstance(var, tuple):
                equal.extend([var[0] == twin[0], var[1] == twin[1]])
            elif isinstance(var, dict):
                equal.extend(bit == twin[m] for m, bit in var.items())
            else:
                equal.append(var == twin)
        return z3.And(equal)


def solver_for(formula: Any, *patients: SymbolicPatient) -> Any:
    """A solver asserting the formula over valid patients (each field within its domain)."""
    solver = z3.Solver()
    for patient in patients:
        solver.add(patient.domain_constraints)
    solver.add(formula)
    return solver


def canonical_model(formula: Any, *patients: SymbolicPatient) -> Any | None:
    """A model of the formula over valid patients, or None: the first patient as few fields away from its defaults
    as any model has it, and the one model that a fixed order of preferences picks among those.

    z3 returns one of the models that differ least from the defaults, and which one depends on what the process
    asked z3 before (the same rulebook got a tumour of 2.9 cm, then 3.4 cm; distant disease, then progression),
    so a counterexample is made canonical here: (1) the fields kept at their defaults are the optimum of weighted
    soft constraints whose weights order the ties (fewest fields changed first, then the later fields in the input's
    order changed rather than the earlier), a unique choice; (2) every field left free is then fixed in turn to the
    first of its values (``SymbolicPatient.choices``) that still has a model. A number is tried at each constant of
    the question and halfway between two neighbours (and at the numbers already fixed): with every other field fixed,
    the numbers a field can take are intervals bounded by those constants, so one of them lies in each."""
    first = patients[0]
    defaults = first.defaults()
    optimizer = z3.Optimize()
    for patient in patients:
        optimizer.add(patient.domain_constraints)
    optimizer.add(formula)
    ties = len(defaults)
    for position, soft in enumerate(defaults):  # each weight above the sum of all tie-breakers: the count comes first
        optimizer.add_soft(soft, 2 ** (ties + 1) + 2 ** (ties - 1 - position))
    if optimizer.check() != z3.sat:
        return None
    optimum = optimizer.model()
    kept = [z3.is_true(optimum.eval(soft, model_completion=True)) for soft in defaults]
    solver = solver_for(formula, *patients)
    solver.add([soft if keep else z3.Not(soft) for soft, keep in zip(defaults, kept)])
    constants = _rationals([formula, *(c for patient in patients for c in patient.domain_constraints)])
    fixed: set[Fraction] = set()
    for patient in patients:
        for position, (path, var) in enumerate(patient.vars.items()):
            if patient is first and kept[position]:
                continue  # at its default
            if isinstance(var, tuple):  # a number: unknown if it can be, else the first probe that keeps a model
                known, value = var
                if not _first_possible(solver, [z3.Not(known)]):
                    for number in _probes(constants | fixed):
                        if _first_possible(solver, [z3.And(known, value == real(number))]):
                            fixed.add(number)
                            break
            else:
                for group in patient.choices(path):
                    if not _first_possible(solver, group):  # pragma: no cover - the choices are the field's domain
                        raise AssertionError(f"no value of {path} fits a question that has a model")
    if solver.check() != z3.sat:  # pragma: no cover - every choice above kept a model
        raise AssertionError("no model left after fixing the fields one by one")
    return solver.model()


def _first_possible(solver: Any, options: Iterable[Any]) -> bool:
    """Add the first of the options that keeps the solver satisfiable; False if none does."""
    for option in options:
        solver.push()
        solver.add(option)
        possible = solver.check() == z3.sat
        solver.pop()
        if possible:
            solver.add(option)
            return True
    return False


def _rationals(formulas: Iterable[Any]) -> set[Fraction]:
    """Every rational constant in the formulas (their thresholds, and the bounds of the fields' domains)."""
    found: set[Fraction] = set()
    seen: set[int] = set()
    stack = list(formulas)
    while stack:
        term = stack.pop()
        if term.get_id() in seen:
            continue
        seen.add(term.get_id())
        if z3.is_rational_value(term):
            found.add(Fraction(term.as_fraction()))
        elif z3.is_int_value(term):
            found.add(Fraction(term.as_long()))
        else:
            stack.extend(term.children())
    return found


def _probes(constants: set[Fraction]) -> list[Fraction]:
    """The constants in increasing order, each followed by the point halfway to the next one."""
    ordered = sorted(constants)
    probes: list[Fraction] = []
    for low, high in zip(ordered, ordered[1:]):
        probes += [low, (low + high) / 2]
    return probes + ordered[-1:]


def real(value: float | Fraction) -> Any:
    """A number as an exact z3 rational (thresholds and patient values compare exactly)."""
    fraction = Fraction(value).limit_denominator(10**12) if value == value else Fraction(0)
    return z3.RealVal(f"{fraction.numerator}/{fraction.denominator}")


@dataclass
class Encoding:
    """A rulebook's rules, derived facts, suppressions and findings as formulas over symbolic patients."""

    rulebook: Rulebook
    symbols: tuple[str, ...]

    def __post_init__(self) -> None:
        self.parameters = self.rulebook.parameter_values
        self._memo: dict[tuple[str, ...], Any] = {}

    def patient(self, name: str = "p") -> SymbolicPatient:
        return SymbolicPatient(name, self.symbols)

    # -- formulas --

    def condition(self, p: SymbolicPatient, condition: Condition | None) -> Any:
        if condition is None or isinstance(condition, Always):
            return z3.BoolVal(True)
        if isinstance(condition, Atom):
            return p.atom(condition, self.parameters)
        if isinstance(condition, DerivedTest):
            holds = self.derived(p, condition.name)
            return holds if condition.present else z3.Not(holds)
        if isinstance(condition, All):
            return z3.And([self.condition(p, c) for c in condition.items])
        if isinstance(condition, Any_):
            return z3.Or([self.condition(p, c) for c in condition.items])
        if isinstance(condition, AtLeast):
            return z3.AtLeast(*[self.condition(p, c) for c in condition.items], condition.count)
        raise TypeError(condition)  # pragma: no cover

    def derived(self, p: SymbolicPatient, name: str) -> Any:
        key = (p.name, f"derived:{name}")
        if key not in self._memo:
            self._memo[key] = z3.Or([self.condition(p, rule.when) for rule in self.rulebook.deriving(name)])
        return self._memo[key]

    def fires(self, p: SymbolicPatient, rule: Rule, finding: FindingSpec | None = None) -> Any:
        """The rule applies (for a finding with its own extra condition, the finding is produced)."""
        if rule.reasons:
            return z3.Or([self.condition(p, self.rulebook.rule(r).when) for r in rule.reasons])
        base = self.condition(p, rule.when)
        return z3.And(base, self.condition(p, finding.when)) if finding is not None and finding.when else base

    def suppressed(self, p: SymbolicPatient, rule: Rule) -> Any:
        return z3.Or([self.condition(p, s.when) for s in self.rulebook.suppressors(rule.id)])

    def emission(self, p: SymbolicPatient, rule: Rule, spec: FindingSpec) -> Any:
        """The rule produces the finding and is not suppressed."""
        key = (p.name, "emission", rule.id, spec.code)
        if key not in self._memo:
            self._memo[key] = z3.And(self.fires(p, rule, spec), z3.Not(self.suppressed(p, rule)))
        return self._memo[key]

    def emits(self, p: SymbolicPatient, rule: Rule, code: str) -> Any:
        """The rule puts the finding code in the assessment (produces it and is not suppressed)."""
        key = (p.name, "emits", rule.id, code)
        if key not in self._memo:
            self._memo[key] = z3.Or([self.emission(p, rule, spec) for spec in rule.findings if spec.code == code])
        return self._memo[key]

    def emitted(self, p: SymbolicPatient, code: str) -> Any:
        """The finding code is in the assessment (produced by some rule and not suppressed)."""
        key = (p.name, f"code:{code}")
        if key not in self._memo:
            self._memo[key] = z3.Or([self.emission(p, rule, spec) for rule in self.rulebook.producers(code)
                                     for spec in rule.findings if spec.code == code])
        return self._memo[key]

    def withheld(self, p: SymbolicPatient, code: str) -> Any:
        """The finding code is listed as suppressed."""
        return z3.Or([
            z3.And(self.fires(p, rule, spec), self.suppressed(p, rule))
            for rule in self.rulebook.rules for spec in rule.findings if spec.code == code
        ])
