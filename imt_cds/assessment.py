"""The result of an evaluation (SPEC §3): findings with their rationale, derived facts, suppressions, trace, provenance.

An ``Assessment`` is built from what the engine reported — which engine rules fired, in which order — and the
compiled program that says what each engine rule means. Nothing here decides whether a rule applies: that was the
engine's job. This module only assembles the engine's verdicts into an explanation a clinician can follow:
finding -> the rule (and version) that produced it -> the input facts and derived facts it matched -> the rules
that derived those -> their input facts, and the evidence (with verbatim quotes) each rule rests on.

Everything in an assessment except ``provenance.evaluated_at`` is a pure function of (input, rulebook): collections
are ordered by catalogue order or by code, never by dict or set iteration order.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from typing import Any

import orjson

from .compiler import EngineRule, Program, ReasonTemplate
from .conditions import Atom, DerivedTest
from .evidence import EvidenceEntry
from .facts import PatientFacts
from .rulebook import FindingSpec, Rule, finding_kind

__all__ = [
    "Assessment",
    "DerivedFact",
    "Finding",
    "Provenance",
    "Reason",
    "RuleRef",
    "Suppression",
    "TraceEntry",
    "build_assessment",
]

SCHEMA = "imt-cds/assessment/1"
Firing = tuple[str, "str | None"]
_RECOMMENDATION_KINDS = ("recommendation", "data_request")


@dataclass(frozen=True, slots=True)
class RuleRef:
    id: str
    version: str

    @classmethod
    def of(cls, rule: Rule) -> RuleRef:
        return cls(rule.id, rule.version)

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "version": self.version}


@dataclass(frozen=True, slots=True)
class Reason:
    """One reason a rule applied: an input fact and the test it passed, or a derived fact that held (or had to be
    absent). ``reasons`` lists, for a multi-reason fact (CONTRADICTION), the reasons that held."""

    fact: str | None = None
    expected: str | None = None
    actual: Any = None
    parameter: str | None = None
    derived: str | None = None
    holds: bool | None = None
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        if self.fact is not None:
            data: dict[str, Any] = {"fact": self.fact, "expected": self.expected, "actual": self.actual}
            if self.parameter:
                data["parameter"] = self.parameter
            return data
        data = {"derived": self.derived, "holds": self.holds}
        if self.reasons:
            data["reasons"] = list(self.reasons)
        return data


@dataclass(frozen=True, slots=True)
class AlsoFrom:
    """Another rule that produced the same finding (the finding appears once, under its first rule)."""

    rule: RuleRef
    evidence: tuple[str, ...]
    because: tuple[Reason, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**self.rule.to_dict(), "evidence": list(self.evidence), "because": [r.to_dict() for r in self.because]}


@dataclass(frozen=True, slots=True)
class Finding:
    code: str
    kind: str  # recommendation | data_request | risk_flag | flag
    title: str
    summary: str
    strength: str
    rule: RuleRef
    evidence: tuple[EvidenceEntry, ...]
    because: tuple[Reason, ...]
    also_from: tuple[AlsoFrom, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = {
            "code": self.code,
            "kind": self.kind,
            "title": self.title,
            "summary": self.summary,
            "strength": self.strength,
            "rule": self.rule.to_dict(),
            "evidence": [e.to_dict() for e in self.evidence],
            "because": [r.to_dict() for r in self.because],
        }
        if self.also_from:
            data["also_from"] = [a.to_dict() for a in self.also_from]
        return data


@dataclass(frozen=True, slots=True)
class DerivedFact:
    """A fact the rules derived, with the rule that derived it and why. For a fact with several reasons
    (CONTRADICTION), one per reason that held: ``reason`` names the reason rule (C1...) and its text."""

    name: str
    rule: RuleRef
    because: tuple[Reason, ...]
    reason: RuleRef | None = None
    reason_text: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "rule": self.rule.to_dict()}
        if self.reason is not None:
            data["reason"] = {**self.reason.to_dict(), "text": self.reason_text}
        data["because"] = [r.to_dict() for r in self.because]
        return data


@dataclass(frozen=True, slots=True)
class Suppression:
    """A finding whose rule fired but which a suppression rule withheld, and why."""

    finding: Finding
    by: RuleRef  # the rule deriving the suppressing fact (D04)
    fact: str  # the suppressing derived fact (CONTRADICTION)
    reasons: tuple[str, ...]  # its reasons that held ("C3: ...")
    suppression_rule: RuleRef  # the rulebook's suppression entry (S01)

    def to_dict(self) -> dict[str, Any]:
        return {
            "finding": self.finding.to_dict(),
            "by": {**self.by.to_dict(), "fact": self.fact},
            "reason": "; ".join(self.reasons) if self.reasons else f"{self.fact} holds",
            "reasons": list(self.reasons),
            "suppression_rule": self.suppression_rule.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class TraceEntry:
    """One rule firing, in the order the engine fired them."""

    seq: int
    rule: RuleRef
    engine_rule: str
    matched: Mapping[str, Any]
    produced: tuple[str, ...]
    suppressed: tuple[str, ...] = ()
    part_of: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"seq": self.seq, "rule": self.rule.to_dict()}
        if self.part_of:
            data["part_of"] = self.part_of
        data["engine_rule"] = self.engine_rule
        data["matched"] = dict(self.matched)
        data["produced"] = list(self.produced)
        if self.suppressed:
            data["suppressed"] = list(self.suppressed)
        return data


@dataclass(frozen=True, slots=True)
class Provenance:
    rulebook_name: str
    rulebook_version: str
    rulebook_sha256: str
    parameters: Mapping[str, float]
    engine: Mapping[str, str]
    input_sha256: str
    evaluated_at: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "rulebook": {"name": self.rulebook_name, "version": self.rulebook_version, "sha256": self.rulebook_sha256},
            "parameters": dict(self.parameters),
            "engine": dict(self.engine),
            "input_sha256": self.input_sha256,
            "evaluated_at": self.evaluated_at,
        }


@dataclass(frozen=True)
class Assessment:
    """The immutable result of evaluating one patient. ``to_json()`` gives the SPEC §3 document."""

    patient_id: str | None
    facts: PatientFacts
    recommendations: tuple[Finding, ...]
    risk_flags: tuple[Finding, ...]
    derived_facts: tuple[DerivedFact, ...]
    suppressed: tuple[Suppression, ...]
    trace: tuple[TraceEntry, ...]
    provenance: Provenance

    @property
    def findings(self) -> tuple[Finding, ...]:
        return self.recommendations + self.risk_flags

    @cached_property
    def codes(self) -> frozenset[str]:
        """Every emitted finding code."""
        return frozenset(f.code for f in self.findings)

    @property
    def derived_names(self) -> frozenset[str]:
        return frozenset(d.name for d in self.derived_facts)

    @property
    def suppressed_codes(self) -> frozenset[str]:
        return frozenset(s.finding.code for s in self.suppressed)

    def finding(self, code: str) -> Finding | None:
        return next((f for f in self.findings if f.code == code), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "patient_id": self.patient_id,
            "recommendations": [f.to_dict() for f in self.recommendations],
            "risk_flags": [f.to_dict() for f in self.risk_flags],
            "derived_facts": [d.to_dict() for d in self.derived_facts],
            "suppressed": [s.to_dict() for s in self.suppressed],
            "trace": [t.to_dict() for t in self.trace],
            "provenance": self.provenance.to_dict(),
        }

    def to_json(self, *, indent: bool = False) -> str:
        """The assessment as JSON text: the same bytes for the same input and rulebook, but for evaluated_at."""
        option = orjson.OPT_INDENT_2 if indent else 0
        return orjson.dumps(self.to_dict(), option=option).decode()


# --- building -----------------------------------------------------------------------------------------------------


def _actual(facts: PatientFacts, path: str) -> Any:
    value = operator.attrgetter(path)(facts)
    if isinstance(value, frozenset):
        return sorted(value)
    return value


class _Collector:
    """Walks the firings once and gathers, per rule, what fired and with which reasons."""

    def __init__(self, program: Program, facts: PatientFacts):
        self.program = program
        self.facts = facts
        # (derived name, reason rule id or None) -> [deriving rule, ordered reason templates]
        self.derived: dict[tuple[str, str | None], tuple[Rule, dict[Any, ReasonTemplate]]] = {}
        # rule id -> code -> ordered reason templates
        self.produced: dict[str, dict[str, dict[Any, ReasonTemplate]]] = {}
        # candidate rule id -> suppression rule id -> {reason rule id or None}
        self.suppressed: dict[str, dict[str, dict[str | None, None]]] = {}
        self.trace_items: list[tuple[int, EngineRule, str | None]] = []
        self.position = {rule.id: i for i, rule in enumerate(program.rulebook.rules)}  # catalogue order

    def collect(self, firings: Iterable[Firing]) -> None:
        for seq, (name, message) in enumerate(firings, 1):
            engine_rule = self.program.rules[name]
            rule = engine_rule.rule
            if rule is None:  # the internal anchor rule has no clinical meaning
                continue
            if engine_rule.suppression is not None:
                candidate, reason = _suppression_match(message)
                self.suppressed.setdefault(candidate, {}).setdefault(rule.id, {})[reason] = None
                self.trace_items.append((seq, engine_rule, candidate))
                continue
            self.trace_items.append((seq, engine_rule, None))
            templates = {t.literal: t for t in engine_rule.reasons}
            if engine_rule.derives is not None:
                key = (engine_rule.derives[0], rule.id if rule.part_of else None)
                _, reasons = self.derived.setdefault(key, (rule, {}))
                reasons.update(templates)
            for spec in engine_rule.produces:
                self.produced.setdefault(rule.id, {}).setdefault(spec.code, {}).update(templates)

    # -- rationale --

    def reasons_of(self, name: str) -> tuple[str, ...]:
        """The reason rules (C1...) that derived a multi-reason fact, in catalogue order."""
        found = [reason for (fact, reason) in self.derived if fact == name and reason is not None]
        return tuple(sorted(found, key=self.position.__getitem__))

    def reason(self, template: ReasonTemplate) -> Reason:
        literal = template.literal
        if isinstance(literal, Atom):
            return Reason(fact=literal.path, expected=template.expected, actual=_actual(self.facts, literal.path),
                          parameter=template.parameter)
        assert isinstance(literal, DerivedTest)
        return Reason(derived=literal.name, holds=literal.present,
                      reasons=self.reasons_of(literal.name) if literal.present else ())

    def because(self, templates: Mapping[Any, ReasonTemplate]) -> tuple[Reason, ...]:
        # In the order of the rule's condition, not the order the engine happened to fire its branches in.
        return tuple(self.reason(t) for t in sorted(templates.values(), key=lambda t: t.order))


def _suppression_match(message: str | None) -> tuple[str, str | None]:
    """A suppression's firing matched a candidate fact ("c") and the suppressing derived fact ("d")."""
    assert message is not None
    (matched,) = orjson.loads(message).values()
    return matched["c"]["rule"], matched["d"].get("reason")


def build_assessment(program: Program, facts: PatientFacts, firings: list[Firing], input_sha256: str,
                     versions: Mapping[str, str], evaluated_at: datetime) -> Assessment:
    rulebook = program.rulebook
    collector = _Collector(program, facts)
    collector.collect(firings)

    def finding(rule: Rule, spec: FindingSpec) -> Finding:
        templates = collector.produced[rule.id][spec.code]
        return Finding(
            code=spec.code,
            kind=finding_kind(spec.code),
            title=spec.title,
            summary=spec.summary,
            strength=rule.strength,
            rule=RuleRef.of(rule),
            evidence=tuple(rulebook.evidence[e] for e in rule.evidence),
            because=collector.because(templates),
        )

    emitted: dict[str, Finding] = {}
    suppressions: list[Suppression] = []
    for rule in rulebook.rules:  # catalogue order: the first rule producing a code owns its finding
        produced = collector.produced.get(rule.id)
        if not produced:
            continue
        for spec in rule.findings:
            if spec.code not in produced:
                continue
            item = finding(rule, spec)
            suppressed_by = collector.suppressed.get(rule.id)
            if suppressed_by:
                for suppression_id, reasons in suppressed_by.items():
                    suppression_rule = rulebook.rule(suppression_id)
                    assert isinstance(suppression_rule.when, DerivedTest)
                    fact = suppression_rule.when.name
                    by = _deriving_rule(rulebook.rules, fact)
                    held = sorted((r for r in reasons if r is not None), key=collector.position.__getitem__)
                    texts = tuple(rulebook.rule(r).reason or r for r in held)
                    suppressions.append(Suppression(item, RuleRef.of(by), fact, texts, RuleRef.of(suppression_rule)))
                continue
            if spec.code in emitted:
                first = emitted[spec.code]
                extra = AlsoFrom(item.rule, rule.evidence, item.because)
                emitted[spec.code] = Finding(**{**_fields(first), "also_from": first.also_from + (extra,)})
            else:
                emitted[spec.code] = item

    findings = sorted(emitted.values(), key=lambda f: f.code)
    derived = tuple(
        DerivedFact(
            name=name,
            rule=RuleRef.of(rulebook.rule(rule.part_of) if rule.part_of else rule),
            because=collector.because(templates),
            reason=RuleRef.of(rule) if rule.part_of else None,
            reason_text=rule.reason if rule.part_of else None,
        )
        for (name, _), (rule, templates) in sorted(
            collector.derived.items(), key=lambda item: collector.position[item[1][0].id]
        )
    )
    return Assessment(
        patient_id=facts.patient_id,
        facts=facts,
        recommendations=tuple(f for f in findings if f.kind in _RECOMMENDATION_KINDS),
        risk_flags=tuple(f for f in findings if f.kind not in _RECOMMENDATION_KINDS),
        derived_facts=derived,
        suppressed=tuple(sorted(suppressions, key=lambda s: (s.finding.code, s.finding.rule.id))),
        trace=tuple(_trace(collector)),
        provenance=Provenance(
            rulebook_name=rulebook.name,
            rulebook_version=rulebook.version,
            rulebook_sha256=rulebook.sha256,
            parameters=rulebook.parameter_values,
            engine=versions,
            input_sha256=input_sha256,
            evaluated_at=_rfc3339(evaluated_at),
        ),
    )


def _fields(finding: Finding) -> dict[str, Any]:
    return {name: getattr(finding, name) for name in Finding.__slots__}


def _deriving_rule(rules: tuple[Rule, ...], fact: str) -> Rule:
    """The catalogue entry that derives a fact (for a multi-reason fact, the grouping rule, e.g. D04)."""
    return next(r for r in rules if r.derives == fact and r.part_of is None)


def _trace(collector: _Collector) -> Iterable[TraceEntry]:
    for seq, engine_rule, candidate in collector.trace_items:
        rule = engine_rule.rule
        assert rule is not None
        if engine_rule.suppression is not None:
            candidate_rule = collector.program.rulebook.rule(candidate or "")
            literal = engine_rule.conjunction[0]
            assert isinstance(literal, DerivedTest)
            yield TraceEntry(
                seq=seq,
                rule=RuleRef.of(rule),
                engine_rule=engine_rule.name,
                matched={"derived": [literal.name], "candidate": candidate},
                produced=(),
                suppressed=candidate_rule.codes,
            )
            continue
        facts: dict[str, Any] = {}
        derived: list[str] = []
        absent: list[str] = []
        for literal in engine_rule.conjunction:
            if isinstance(literal, Atom):
                facts[literal.path] = _actual(collector.facts, literal.path)
            elif literal.present:
                derived.append(literal.name)
            else:
                absent.append(literal.name)
        produced: tuple[str, ...] = tuple(spec.code for spec in engine_rule.produces)
        if engine_rule.derives is not None:
            produced = (engine_rule.derives[0],)
        yield TraceEntry(
            seq=seq,
            rule=RuleRef.of(rule),
            engine_rule=engine_rule.name,
            matched={"facts": facts, "derived": derived, "absent": absent},
            produced=produced,
            part_of=rule.part_of,
        )


def _rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("evaluated_at must be timezone-aware")
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
