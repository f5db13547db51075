"""The condition language of rule files, as an immutable tree, and its expansion to disjunctive normal form.

In a rule file (YAML)::

    when: always
    when: {fact: molecular.alk.status, is: positive}
    when:
      all:
        - {derived: ADVANCED_DISEASE}
        - {not_derived: DATA_BLOCK}
        - {fact: age_years, gte: {param: crizotinib_min_age_years}}
        - any:
            - {fact: history.surgery_done, is: false}
            - {fact: history.recurrence, is: true}
        - at_least: 2
          of: [{fact: molecular.alk.status, is: positive}, {fact: molecular.ros1.status, is: positive}, ...]

Atoms test one input fact (by dotted path) with one operator: ``is``, ``is_not``, ``in``, ``not_in`` (any field;
``null`` allowed where the field is nullable), ``gt``, ``gte``, ``lt``, ``lte`` (numbers; the operand may be a
``{param: name}`` of the rulebook). The readings are those of rules/README.md (Conditions): a positive test needs
the known value (``null`` and ``unknown`` never satisfy it); ``is_not``/``not_in`` are plain negation and so hold
for ``null``; a numeric comparison never holds for ``null``; ``derived``/``not_derived`` test whether a derived
fact holds. There is deliberately no general ``not`` over a subtree: negation of derived facts needs stratification
(see the compiler), and negated atoms say exactly what they mean.

This module knows the *meaning* of a condition only as structure: it never evaluates one against a patient.
Evaluation is the engine's job, so there is one implementation of the rules' logic.
"""

from __future__ import annotations

import difflib
import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

from .fact_fields import FactField
from .facts import GENE_SYMBOL_PATTERN

__all__ = [
    "All",
    "Always",
    "Any_",
    "Atom",
    "Condition",
    "ConditionContext",
    "Conjunction",
    "DerivedTest",
    "Literal_",
    "ParamRef",
    "parse_condition",
    "to_dnf",
]

OPERATORS = ("is", "is_not", "in", "not_in", "gt", "gte", "lt", "lte")
NUMERIC_OPERATORS = ("gt", "gte", "lt", "lte")
_GENE_SYMBOL = re.compile(GENE_SYMBOL_PATTERN)
_SYMBOL = {"is": "=", "is_not": "!=", "in": "in", "not_in": "not in", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


@dataclass(frozen=True, slots=True)
class ParamRef:
    """A rulebook parameter used as an operand, resolved to its value when the rulebook is compiled."""

    name: str


@dataclass(frozen=True, slots=True)
class Atom:
    """One test of one input fact. ``operand`` is a value, a tuple of values (``in``/``not_in``), a frozenset (a
    test of a set field) or a ``ParamRef``."""

    path: str
    op: str
    operand: Any

    def resolved(self, parameters: Mapping[str, float]) -> Any:
        return parameters[self.operand.name] if isinstance(self.operand, ParamRef) else self.operand

    def expected_text(self, parameters: Mapping[str, float], field: FactField) -> str:
        """The test as a reader sees it in a rationale: ``= positive``, ``> 3.9``, ``in {R1, R2}``."""
        value = self.resolved(parameters)
        if self.op in ("in", "not_in"):
            return f"{_SYMBOL[self.op]} {{{', '.join(_show(v) for v in value)}}}"
        text = f"{_SYMBOL[self.op]} {_show(value)}"
        if field.kind == "gene" and value is not None:
            text += " (case-insensitive)"
        return text

    def describe(self) -> str:
        operand = f"{{param: {self.operand.name}}}" if isinstance(self.operand, ParamRef) else _show(self.operand)
        if self.op in ("in", "not_in"):
            operand = "{" + ", ".join(_show(v) for v in self.operand) + "}"
        return f"{self.path} {_SYMBOL[self.op]} {operand}"


@dataclass(frozen=True, slots=True)
class DerivedTest:
    """Whether a derived fact holds (``present``) or must be absent."""

    name: str
    present: bool = True

    def describe(self) -> str:
        return self.name if self.present else f"not {self.name}"


@dataclass(frozen=True, slots=True)
class All:
    items: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Any_:
    items: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class AtLeast:
    count: int
    items: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Always:
    pass


Condition = Union[Atom, DerivedTest, All, Any_, AtLeast, Always]
Literal_ = Union[Atom, DerivedTest]
Conjunction = tuple[Literal_, ...]


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, frozenset):
        return "{" + ", ".join(sorted(value)) + "}"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# --- parsing ------------------------------------------------------------------------------------------------------


@dataclass
class ConditionContext:
    """What a condition may refer to, and where to report problems (``report(path, message, suggestion)``)."""

    fields: Mapping[str, FactField]
    parameters: Mapping[str, Any]
    report: Any  # Callable[[str, str, str | None], None]


def parse_condition(data: Any, ctx: ConditionContext, where: str = "when") -> Condition | None:
    """Parse and check a condition; report every problem through ``ctx`` and return None if it is unusable."""
    if data == "always":
        return Always()
    if not isinstance(data, dict):
        ctx.report(where, f"a condition must be 'always' or a mapping, got {data!r}", None)
        return None
    keys = set(data)
    if keys == {"all"} or keys == {"any"}:
        (key,) = keys
        items = data[key]
        if not isinstance(items, list) or not items:
            ctx.report(f"{where}.{key}", "must be a non-empty list of conditions", None)
            return None
        parsed = [parse_condition(item, ctx, f"{where}.{key}[{i}]") for i, item in enumerate(items)]
        if any(p is None for p in parsed):
            return None
        return All(tuple(parsed)) if key == "all" else Any_(tuple(parsed))  # type: ignore[arg-type]
    if keys == {"at_least", "of"}:
        count, items = data["at_least"], data["of"]
        if not isinstance(items, list) or len(items) < 2:
            ctx.report(f"{where}.of", "must be a list of at least two conditions", None)
            return None
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= len(items):
            ctx.report(f"{where}.at_least", f"must be a whole number from 1 to {len(items)}, got {count!r}", None)
            return None
        parsed = [parse_condition(item, ctx, f"{where}.of[{i}]") for i, item in enumerate(items)]
        if any(p is None for p in parsed):
            return None
        return AtLeast(count, tuple(parsed))  # type: ignore[arg-type]
    if keys in ({"derived"}, {"not_derived"}):
        (key,) = keys
        name = data[key]
        if not isinstance(name, str) or not name.isupper():
            ctx.report(f"{where}.{key}", f"must name a derived fact in UPPER_CASE, got {name!r}", None)
            return None
        return DerivedTest(name, present=(key == "derived"))
    if "fact" in data:
        return _parse_atom(data, ctx, where)
    known = ["all", "any", "at_least", "derived", "not_derived", "fact"]
    # A YAML key need not be text (`1:`, `true:`, `null:`): sorting or matching it as is would raise a TypeError.
    unknown = sorted(map(str, keys - set(known) - set(OPERATORS) - {"of"}))
    suggestion = difflib.get_close_matches(unknown[0], known, n=1) if unknown else []
    ctx.report(
        where,
        f"not a condition: expected one of 'always', all, any, at_least/of, derived, not_derived or fact, "
        f"got keys {sorted(map(str, keys))}",
        suggestion[0] if suggestion else None,
    )
    return None


def _parse_atom(data: dict[str, Any], ctx: ConditionContext, where: str) -> Atom | None:
    path = data["fact"]
    ops = [k for k in data if k != "fact"]
    if not isinstance(path, str):
        ctx.report(f"{where}.fact", f"must be a dotted fact path, got {path!r}", None)
        return None
    field = ctx.fields.get(path)
    if field is None or not field.usable_by_rules:
        usable = [p for p, f in ctx.fields.items() if f.usable_by_rules]
        close = difflib.get_close_matches(path, usable, n=1, cutoff=0.5)
        why = "is not used by rules" if field is not None else "is not a known fact path"
        ctx.report(f"{where}.fact", f"{path!r} {why}", close[0] if close else None)
        return None
    if len(ops) != 1 or ops[0] not in OPERATORS:
        bad = [o for o in ops if o not in OPERATORS]
        close = difflib.get_close_matches(str(bad[0]), OPERATORS, n=1) if bad else []
        ctx.report(where, f"a fact test needs exactly one operator of {', '.join(OPERATORS)}; got {ops}",
                   close[0] if close else None)
        return None
    (op,) = ops
    operand = _parse_operand(field, op, data[op], ctx, f"{where}.{op}")
    if operand is _INVALID:
        return None
    return Atom(path, op, operand)


_INVALID = object()


def _parse_operand(field: FactField, op: str, raw: Any, ctx: ConditionContext, where: str) -> Any:
    if op in NUMERIC_OPERATORS:
        if field.kind != "number":
            ctx.report(where, f"{op} compares numbers, but {field.path} is {field.allowed()}", None)
            return _INVALID
        if isinstance(raw, dict) and set(raw) == {"param"}:
            name = raw["param"]
            if name not in ctx.parameters:
                close = difflib.get_close_matches(str(name), list(ctx.parameters), n=1)
                ctx.report(where, f"unknown parameter {name!r}", close[0] if close else None)
                return _INVALID
            return ParamRef(name)
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            ctx.report(where, f"must be a number or {{param: name}}, got {raw!r}", None)
            return _INVALID
        return float(raw)
    if op in ("in", "not_in"):
        if not isinstance(raw, list) or not raw:
            ctx.report(where, f"{op} needs a non-empty list of values, got {raw!r}", None)
            return _INVALID
        values = [_parse_value(field, v, ctx, f"{where}[{i}]") for i, v in enumerate(raw)]
        if any(v is _INVALID for v in values):
            return _INVALID
        if len(set(map(_key, values))) != len(values):
            ctx.report(where, "lists a value twice", None)
            return _INVALID
        return tuple(values)
    return _parse_value(field, raw, ctx, where)


def _key(value: Any) -> Any:
    # True == 1 in Python; keep them apart when checking a list of values for repeats.
    return (type(value).__name__, value)


def _parse_value(field: FactField, raw: Any, ctx: ConditionContext, where: str) -> Any:
    if raw is None:
        if field.nullable:
            return None
        ctx.report(where, f"{field.path} is never null; allowed: {field.allowed()}", None)
        return _INVALID
    if field.kind == "enum":
        if isinstance(raw, str) and raw in field.values:
            return raw
        close = difflib.get_close_matches(str(raw), field.values, n=1, cutoff=0.5)
        ctx.report(where, f"{raw!r} is not a value of {field.path}; allowed: {field.allowed()}",
                   close[0] if close else None)
        return _INVALID
    if field.kind in ("boolean", "tristate"):
        if isinstance(raw, bool):
            return raw
        ctx.report(where, f"{field.path} is {field.allowed()}; got {raw!r}", None)
        return _INVALID
    if field.kind == "set":
        if isinstance(raw, list) and all(isinstance(v, str) and v in field.values for v in raw):
            return frozenset(raw)
        ctx.report(where, f"a test of {field.path} compares the whole set: give a list of values from "
                          f"{', '.join(field.values)}; got {raw!r}", None)
        return _INVALID
    if field.kind == "gene":
        if isinstance(raw, str) and _GENE_SYMBOL.match(raw):
            return raw
        ctx.report(where, f"{raw!r} is not a gene symbol", None)
        return _INVALID
    if field.kind == "number":
        ctx.report(where, f"{field.path} is a number: compare it with gt/gte/lt/lte, or test is/is_not null", None)
        return _INVALID
    ctx.report(where, f"{field.path} cannot be tested by rules", None)
    return _INVALID


# --- normal form --------------------------------------------------------------------------------------------------


def to_dnf(condition: Condition) -> tuple[Conjunction, ...]:
    """The condition as a disjunction of conjunctions of literals (atoms and derived tests), in source order.

    ``Always`` is the single empty conjunction. Disjuncts may overlap (several may hold for one patient): the
    compiler gives each its own engine rule, so that the engine itself reports which branches held, and merges
    the firings of one rule into one finding.
    """
    if isinstance(condition, Always):
        return ((),)
    if isinstance(condition, (Atom, DerivedTest)):
        return ((condition,),)
    if isinstance(condition, Any_):
        return _dedupe(tuple(itertools.chain.from_iterable(to_dnf(item) for item in condition.items)))
    if isinstance(condition, All):
        result: tuple[Conjunction, ...] = ((),)
        for item in condition.items:
            result = tuple(left + right for left in result for right in to_dnf(item))
        return _dedupe(tuple(_dedupe_literals(c) for c in result))
    if isinstance(condition, AtLeast):
        alternatives = [All(combo) for combo in itertools.combinations(condition.items, condition.count)]
        return to_dnf(Any_(tuple(alternatives)))
    raise TypeError(f"not a condition: {condition!r}")


def _dedupe_literals(conjunction: Conjunction) -> Conjunction:
    return tuple(dict.fromkeys(conjunction))


def _dedupe(disjuncts: tuple[Conjunction, ...]) -> tuple[Conjunction, ...]:
    return tuple(dict.fromkeys(disjuncts))


def literals(condition: Condition) -> tuple[Literal_, ...]:
    """Every literal of a condition, once each, in source order."""
    if isinstance(condition, (Atom, DerivedTest)):
        return (condition,)
    if isinstance(condition, Always):
        return ()
    return tuple(dict.fromkeys(itertools.chain.from_iterable(literals(item) for item in condition.items)))


def describe(condition: Condition) -> str:
    """A condition in readable one-line form (for ``rules show`` and error messages)."""
    if isinstance(condition, Always):
        return "always"
    if isinstance(condition, (Atom, DerivedTest)):
        return condition.describe()
    if isinstance(condition, AtLeast):
        return f"at least {condition.count} of (" + "; ".join(describe(i) for i in condition.items) + ")"
    joiner = " and " if isinstance(condition, All) else " or "
    parts = [describe(item) for item in condition.items]
    parts = [f"({p})" if isinstance(item, (All, Any_, AtLeast)) else p
             for p, item in zip(parts, condition.items, strict=True)]
    return joiner.join(parts)
