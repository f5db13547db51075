"""``imt-cds rules diff OLD NEW``: what changed between two rulebooks, and for which patients it matters.

Structure: rules added, removed and changed (a change to what a rule does — its condition, findings, texts,
evidence, strength or kind — without a version bump is an error; a change to examples or description alone is
not), each changed finding metadata (card indicator, gene, drugs), changed parameters, changed evidence, changed
drugs of the drug table (``drugs.yaml``), and whether the rulebook's own version was bumped.

Outcome: over the whole input space, which patients get a different assessment (any finding emitted or suppressed
differently). The input space is finite once every field is split into *classes* on which all tests of both
rulebooks are constant (each enum value; for numbers the intervals between the thresholds the rules use; ...).
The number of classes of the fields involved whose outcome changes is counted exactly, by splitting on fields and
asking z3 whether a sub-space is all-changed, all-unchanged or mixed; a few example patients are evaluated with both
real engines. When the count would take too many solver calls it is reported as a lower bound.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import z3
from z3.z3util import get_vars

from ..core.conditions import Atom
from ..core.engine import Engine
from ..core.fact_fields import fact_fields
from ..core.rulebook import Rulebook
from .symbolic import Encoding, SymbolicPatient, canonical_model, gene_symbols, real

__all__ = ["RulebookDiff", "diff_rulebooks"]

_UNVERSIONED_KEYS = ("version", "examples", "description")  # changes to these alone need no version bump
_COUNT_BUDGET = 20_000  # solver calls for the exact count before settling for a lower bound


@dataclass
class RuleChange:
    rule: str
    change: str  # added | removed | changed | documentation
    old_version: str | None = None
    new_version: str | None = None
    fields: tuple[str, ...] = ()
    error: str | None = None


@dataclass
class RulebookDiff:
    old: str
    new: str
    rules: list[RuleChange] = field(default_factory=list)
    parameters: list[tuple[str, Any, Any]] = field(default_factory=list)
    evidence: list[tuple[str, str]] = field(default_factory=list)  # (evidence id, added | removed | changed)
    metadata: list[str] = field(default_factory=list)  # "R32b FLAG_OFF_LABEL_AGE indicator: critical -> warning"
    drugs: list[tuple[str, str]] = field(default_factory=list)  # (drug, added | removed | what changed)
    value_sets: list[tuple[str, str]] = field(default_factory=list)  # (value set, added | removed | what changed)
    # Every code added to or removed from a value set that changed, as "system|code" (what changed may only count
    # them: a site's terminology update adds hundreds).
    value_set_codes: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    changed_classes: int = 0
    count_is_exact: bool = True
    class_fields: tuple[str, ...] = ()
    total_classes: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and not any(c.error for c in self.rules)

    def to_dict(self) -> dict[str, Any]:
        return {
            "old": self.old, "new": self.new, "ok": self.ok, "errors": self.errors,
            "rules": [c.__dict__ | {"fields": list(c.fields)} for c in self.rules],
            "parameters": [{"name": n, "old": o, "new": v} for n, o, v in self.parameters],
            "evidence": [{"id": i, "change": c} for i, c in self.evidence],
            "metadata": list(self.metadata),
            "drugs": [{"name": n, "change": c} for n, c in self.drugs],
            "value_sets": [{"name": n, "change": c} | self._codes_of(n) for n, c in self.value_sets],
            "outcome": {"changed_classes": self.changed_classes, "exact": self.count_is_exact,
                        "over_fields": list(self.class_fields), "classes_of_these_fields": self.total_classes,
                        "examples": self.examples},
        }

    def _codes_of(self, value_set: str) -> dict[str, list[str]]:
        if value_set not in self.value_set_codes:
            return {}
        added, removed = self.value_set_codes[value_set]
        return {"added_codes": added, "removed_codes": removed}


# A value set's change lists its codes one by one up to this many; beyond, it counts them by code system.
MAX_CODES_LISTED = 10


def _version_tuple(version: str | None) -> tuple[int, ...]:
    return tuple(int(part) for part in (version or "0.0.0").split("."))


def _raw_rules(rulebook: Rulebook) -> dict[str, dict[str, Any]]:
    """Each rule's data as written, reasons (C1...) as rules of their own."""
    rules: dict[str, dict[str, Any]] = {}
    for raw in rulebook.source["rules"]:
        rules[raw["id"]] = {k: v for k, v in raw.items() if k != "reasons"}
        for reason in raw.get("reasons", []):
            rules[reason["id"]] = dict(reason)
    return rules


def diff_rulebooks(old: Rulebook, new: Rulebook, examples: int = 3) -> RulebookDiff:
    result = RulebookDiff(f"{old.name} {old.version}", f"{new.name} {new.version}")
    _structure(old, new, result)
    _outcome(old, new, result, examples)
    return result


def _structure(old: Rulebook, new: Rulebook, result: RulebookDiff) -> None:
    before, after = _raw_rules(old), _raw_rules(new)
    for rule_id in sorted(before.keys() | after.keys()):
        a, b = before.get(rule_id), after.get(rule_id)
        if a is None:
            result.rules.append(RuleChange(rule_id, "added", None, b["version"]))  # type: ignore[index]
            continue
        if b is None:
            result.rules.append(RuleChange(rule_id, "removed", a["version"], None))
            continue
        changed = tuple(sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k) and k != "version"))
        if not changed:
            continue
        behavioural = tuple(k for k in changed if k not in _UNVERSIONED_KEYS)
        change = RuleChange(rule_id, "changed" if behavioural else "documentation", a["version"], b["version"],
                            changed)
        if behavioural and _version_tuple(b["version"]) <= _version_tuple(a["version"]):
            change.error = (f"{rule_id} changed ({', '.join(behavioural)}) but its version was not bumped "
                            f"(still {b['version']})")
        result.rules.append(change)
    for name in sorted(old.parameters.keys() | new.parameters.keys()):
        a_value = old.parameters[name].value if name in old.parameters else None
        b_value = new.parameters[name].value if name in new.parameters else None
        if a_value != b_value:
            result.parameters.append((name, a_value, b_value))
    if old.evidence.sha256 != new.evidence.sha256:
        for evidence_id in sorted(old.evidence.entries.keys() | new.evidence.entries.keys()):
            a_entry, b_entry = old.evidence.entries.get(evidence_id), new.evidence.entries.get(evidence_id)
            if a_entry != b_entry:
                kind = "added" if a_entry is None else "removed" if b_entry is None else "changed"
                result.evidence.append((evidence_id, kind))
        if not result.evidence:
            result.evidence.append(("(source documents)", "changed"))
    _metadata(old, new, result)
    _value_sets(old, new, result)
    content_changed = (any(c.change != "documentation" for c in result.rules) or result.parameters
                       or result.evidence or result.drugs or result.value_sets)
    if content_changed and _version_tuple(new.version) <= _version_tuple(old.version):
        result.errors.append(f"the rulebook changed but its version in rulebook.yaml was not bumped (still "
                             f"{new.version})")


def _metadata(old: Rulebook, new: Rulebook, result: RulebookDiff) -> None:
    """Finding metadata (indicator, gene, drugs) that changed in a rule of both, and the drug table's changes."""
    for rule in new.rules:
        before = old.get(rule.id)
        if before is None:
            continue
        specs = {spec.code: spec for spec in before.findings}
        for spec in rule.findings:
            was = specs.get(spec.code)
            for key in ("indicator", "gene", "drugs") if was is not None else ():
                a, b = getattr(was, key), getattr(spec, key)
                if a != b:
                    result.metadata.append(f"{rule.id} {spec.code} {key}: {_shown(key, a)} -> {_shown(key, b)}")
    for name in sorted(old.drugs.keys() | new.drugs.keys()):
        a, b = old.drugs.get(name), new.drugs.get(name)
        if a is None or b is None:
            result.drugs.append((name, "added" if a is None else "removed"))
            continue
        changed = [key for key in ("brands", "targets", "inhibitor_class", "label_min_age", "evidence", "rxnorm",
                                   "rxnorm_source") if getattr(a, key) != getattr(b, key)]
        if changed:
            result.drugs.append((name, "changed " + ", ".join(changed)))


def _shown(key: str, value: Any) -> str:
    """A finding's indicator, gene or drugs as the metadata lines write them ("none" for none)."""
    if key == "drugs":
        return ", ".join(value) or "none"
    return str(value or "none")


def _value_sets(old: Rulebook, new: Rulebook, result: RulebookDiff) -> None:
    """The value sets (rules/terminology/) added, removed, or whose codes or text patterns changed: they decide what
    the FHIR reader takes as an IMT diagnosis, a metastasis, an ALK inhibitor..."""
    before, after = old.terminology.value_sets, new.terminology.value_sets
    for name in sorted(before.keys() | after.keys()):
        a, b = before.get(name), after.get(name)
        if a is None or b is None:
            result.value_sets.append((name, "added" if a is None else "removed"))
            continue
        a_codes = {(c.system, c.code) for c in a.codes}
        b_codes = {(c.system, c.code) for c in b.codes}
        added, removed = sorted(b_codes - a_codes), sorted(a_codes - b_codes)
        if len(added) + len(removed) <= MAX_CODES_LISTED:
            changes = [f"+{system}|{code}" for system, code in added]
            changes += [f"-{system}|{code}" for system, code in removed]
        else:
            changes = [f"{sign}{len(codes)} codes ({_per_system(codes)})"
                       for sign, codes in (("+", added), ("-", removed)) if codes]
        if (a.text_patterns, a.text_exclusions) != (b.text_patterns, b.text_exclusions):
            changes.append("text patterns changed")
        if changes:
            result.value_sets.append((name, "changed " + ", ".join(changes)))
            result.value_set_codes[name] = ([f"{system}|{code}" for system, code in added],
                                            [f"{system}|{code}" for system, code in removed])


def _per_system(codes: list[tuple[str, str]]) -> str:
    """How many of the codes each code system has: "http://hl7.org/fhir/sid/icd-10 498, ..."."""
    counts = Counter(system for system, _ in codes)
    return ", ".join(f"{system} {count}" for system, count in sorted(counts.items()))


# --- outcome over the input space ---------------------------------------------------------------------------------


def _classes(path: str, p: SymbolicPatient, rulebooks: Iterable[Rulebook]) -> list[Any]:
    """Constraints splitting one field into classes on which every test of the rulebooks is constant."""
    field_ = fact_fields()[path]
    var = p.vars[path]
    if field_.kind in ("enum", "tristate"):
        return [var == i for i in range(len(field_.domain or ()))]
    if field_.kind == "boolean":
        return [var, z3.Not(var)]
    if field_.kind == "gene":
        return [var == i for i in range(len(p.symbols) + 2)]
    atoms = [lit for rb in rulebooks for rule in rb.rules for lit in rule.literals
             if isinstance(lit, Atom) and lit.path == path]
    if field_.kind == "set":
        mentioned: list[frozenset[str]] = []
        for atom in atoms:
            values = atom.operand if isinstance(atom.operand, tuple) else (atom.operand,)
            mentioned.extend(v for v in values if isinstance(v, frozenset) and v not in mentioned)
        exact = [p.equals(path, s) for s in mentioned]
        return [*exact, z3.And([z3.Not(e) for e in exact]) if exact else z3.BoolVal(True)]
    known, number = var
    thresholds = sorted({float(a.resolved(rb.parameter_values)) for rb in rulebooks for a in atoms
                         if a.op in ("gt", "gte", "lt", "lte")})
    classes = [z3.Not(known)]
    bounds = [None, *thresholds, None]
    for low, high in zip(bounds, bounds[1:], strict=False):
        parts = [known]
        if low is not None:
            parts.append(number > real(low))
        if high is not None:
            parts.append(number < real(high))
        classes.append(z3.And(parts))
        if high is not None:
            classes.append(z3.And(known, number == real(high)))
    return classes


def _outcome(old: Rulebook, new: Rulebook, result: RulebookDiff, examples: int) -> None:
    symbols = gene_symbols([old, new])
    before, after = Encoding(old, symbols), Encoding(new, symbols)
    p = SymbolicPatient("p", symbols)
    differs = _differs(before, after, p)
    # the fields the difference mentions (z3 variables are named "<patient>.<path>[.<part>]") ...
    names = {str(v)[len(p.name) + 1:] for v in get_vars(differs)}
    mentioned = [path for path in p.vars if any(n == path or n.startswith(path + ".") for n in names)]
    # ... and those it really depends on: a field matters if two patients differing only in it can disagree
    paths = _support(differs, mentioned, before, after, p)
    result.class_fields = tuple(paths)
    classes = {path: _classes(path, p, [old, new]) for path in paths}
    feasible: dict[str, list[Any]] = {}
    for path, options in classes.items():
        solver = z3.Solver()
        solver.add(p.domain_constraints)
        feasible[path] = [c for c in options if solver.check(_indicator(solver, c)) == z3.sat]
    result.total_classes = math.prod(len(v) for v in feasible.values()) if paths else 1
    result.changed_classes, result.count_is_exact = _count(differs, p, [feasible[path] for path in paths])
    if result.changed_classes:
        result.examples = _examples(differs, p, (before, after), feasible, examples)


def _differs(before: Encoding, after: Encoding, p: SymbolicPatient) -> Any:
    """The patient's assessment differs between the rulebooks: some finding emitted or withheld differently."""
    codes = sorted(set(before.rulebook.finding_codes) | set(after.rulebook.finding_codes))
    # A finding whose formula is the same in both rulebooks (z3 shares identical terms) cannot differ: leave it out,
    # so that only the fields the change involves are split into classes.
    parts = [a != b for c in codes for a, b in ((before.emitted(p, c), after.emitted(p, c)),
                                                (before.withheld(p, c), after.withheld(p, c))) if not a.eq(b)]
    return z3.Or(parts) if parts else z3.BoolVal(False)


def _support(differs: Any, mentioned: list[str], before: Encoding, after: Encoding, p: SymbolicPatient) -> list[str]:
    """The fields whose value can change whether the outcome differs (the others do not matter at all)."""
    q = SymbolicPatient("q", p.symbols)
    differs_q = _differs(before, after, q)
    support = []
    for path in mentioned:
        solver = z3.Solver()
        solver.add(*p.domain_constraints, *q.domain_constraints, p.same_as(q, except_=(path,)), differs != differs_q)
        if solver.check() == z3.sat:
            support.append(path)
    return support


def _indicator(solver: Any, constraint: Any) -> Any:
    flag = z3.FreshBool()
    solver.add(z3.Implies(flag, constraint))
    return flag


def _count(formula: Any, p: SymbolicPatient, fields: list[list[Any]]) -> tuple[int, bool]:
    """How many combinations of classes (one per field) satisfy the formula everywhere in them.

    Classes are chosen so that every test is constant on each, so a combination either satisfies the formula
    throughout or nowhere; sub-spaces where the formula is valid or unsatisfiable are counted without splitting.
    """
    positive, negative = z3.Solver(), z3.Solver()
    for solver, goal in ((positive, formula), (negative, z3.Not(formula))):
        solver.add(p.domain_constraints)
        solver.add(goal)
    flags = [[(_indicator(positive, c), _indicator(negative, c)) for c in options] for options in fields]
    budget = [_COUNT_BUDGET]
    exact = [True]

    def count(level: int, chosen_pos: list[Any], chosen_neg: list[Any]) -> int:
        if budget[0] <= 0:
            exact[0] = False
            return 0
        budget[0] -= 2
        if positive.check(*chosen_pos) == z3.unsat:
            return 0
        if negative.check(*chosen_neg) == z3.unsat:
            return math.prod(len(options) for options in fields[level:])
        if level == len(fields):
            return 1  # pragma: no cover - with classes on which all tests are constant, one of the above holds
        return sum(count(level + 1, chosen_pos + [fp], chosen_neg + [fn]) for fp, fn in flags[level])

    return count(0, [], []), exact[0]


def _examples(formula: Any, p: SymbolicPatient, encodings: tuple[Encoding, Encoding],
              feasible: dict[str, list[Any]], limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` patients whose assessment differs, each canonical (the same on every call, see
    ``canonical_model``) and outside the classes of the ones before; a change not shown yet (other findings gained
    or lost) is preferred, so that the examples show as many different consequences of the change as they can."""
    before, after = encodings
    engines = (Engine(before.rulebook), Engine(after.rulebook))
    codes = sorted(set(before.rulebook.finding_codes) | set(after.rulebook.finding_codes))
    found: list[dict[str, Any]] = []
    other_classes: list[Any] = []
    other_changes: list[Any] = []
    while len(found) < limit:
        model = canonical_model(z3.And(formula, *other_classes, *other_changes), p) if other_changes else None
        if model is None:  # (every change shown: another class with a change already shown)
            model = canonical_model(z3.And(formula, *other_classes), p)
        if model is None:
            break
        patient = p.read(model)
        a, b = (engine.evaluate(patient) for engine in engines)
        found.append({"patient": patient, "old": sorted(a.codes), "new": sorted(b.codes),
                      "old_suppressed": sorted(a.suppressed_codes), "new_suppressed": sorted(b.suppressed_codes)})
        # the next one differs in some field that matters, and if it can, in what it gains or loses
        in_class = [next(c for c in options if z3.is_true(model.eval(c, model_completion=True)))
                    for options in feasible.values()]
        other_classes.append(z3.Not(z3.And(in_class)) if in_class else z3.BoolVal(False))
        gained, lost = b.codes - a.codes, a.codes - b.codes
        same_change = [part for c in codes for part in (
            z3.And(after.emitted(p, c), z3.Not(before.emitted(p, c))) == (c in gained),
            z3.And(before.emitted(p, c), z3.Not(after.emitted(p, c))) == (c in lost))]
        other_changes.append(z3.Not(z3.And(same_change)))
    return found
