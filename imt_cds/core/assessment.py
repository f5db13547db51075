"""The result of an evaluation (README, section Output): findings with their rationale, derived facts, suppressions,
trace, provenance.

An ``Assessment`` is built from what the engine reported — which engine rules fired, in which order — and the
compiled program that says what each engine rule means. Nothing here decides whether a rule applies: that was the
engine's job. This module only assembles the engine's verdicts into an explanation a clinician can follow:
finding -> the rule (and version) that produced it -> the input facts and derived facts it matched -> the rules
that derived those -> their input facts, and the evidence (with verbatim quotes) each rule rests on.

The parts of an assessment are immutable named tuples (cheaper to build than frozen dataclasses, which matters on
this path). Evaluation speed matters (an EHR evaluates on every chart open), so the work is split:
- at ``Engine`` construction, ``OutputTemplates`` precomputes everything static per rule and finding (titles,
  evidence, rule references, and their JSON);
- per evaluation, one pass over the firings records which rules fired and what was suppressed (enough for
  ``codes``);
- findings, rationales, derived facts, the trace and the JSON are materialized on first access and cached. The
  object is immutable, so this is invisible to callers: the document is the same either way.

Everything in an assessment except ``provenance.evaluated_at`` is a pure function of (input, rulebook): collections
are ordered by catalogue order, by the order of a rule's condition, or by code, never by firing order (except the
trace, whose order *is* the firing order, which is itself fixed for a given rulebook).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import FrozenInstanceError
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any, Generic, NamedTuple, TypeVar, overload

import orjson

from .assessment_json import _RECOMMENDATION_KINDS, JsonTemplates, trace_shape, union_of_branches
from .compiler import EngineRule, Program, ReasonTemplate
from .conditions import Atom, DerivedTest
from .errors import NaiveDateTimeError
from .evidence import EvidenceEntry
from .fact_fields import fact_fields
from .facts import PatientFacts
from .rulebook import Rule, Rulebook
from .validation import canonical_json

__all__ = [
    "Assessment",
    "DerivedFact",
    "Finding",
    "OutputTemplates",
    "Provenance",
    "Rationale",
    "Reason",
    "RuleRef",
    "Suppression",
    "TraceEntry",
    "build_assessment",
]

Firing = tuple[str, "str | None"]


class RuleRef(NamedTuple):
    id: str
    version: str

    @classmethod
    def of(cls, rule: Rule) -> RuleRef:
        return cls(rule.id, rule.version)

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "version": self.version}


class Reason(NamedTuple):
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


class AlsoFrom(NamedTuple):
    """Another rule that produced the same finding (the finding appears once, under its first rule)."""

    rule: RuleRef
    evidence: tuple[str, ...]
    because: tuple[Reason, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**self.rule.to_dict(), "evidence": list(self.evidence), "because": [r.to_dict() for r in self.because]}


class Finding(NamedTuple):
    """One thing the rules say about the patient, with what it rests on.

    ``code`` is the stable finding code (``REC_CRIZOTINIB_ALK``); ``kind`` is "recommendation" or "data_request"
    (listed under ``Assessment.recommendations``), "risk_flag" or "flag" (under ``risk_flags``); ``title`` and
    ``summary`` say it in words; ``strength`` is the strength of the evidence as the rule labels it. ``rule`` names
    the rule (id and version) that produced it, ``evidence`` the registry entries it cites, ``because`` the facts and
    derived facts that made the rule fire, and ``also_from`` any other rule that produced the same code (a finding
    appears once, under the first rule)."""

    code: str
    kind: str  # recommendation | data_request | risk_flag | flag
    title: str
    summary: str
    # info | warning | critical: the card indicator the rule file declares for the finding; None (and no
    # "indicator" in the document) only from a rulebook of before findings declared one (a 0.1.0 audit record)
    indicator: str | None
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
            **({"indicator": self.indicator} if self.indicator is not None else {}),
            "strength": self.strength,
            "rule": self.rule.to_dict(),
            "evidence": [e.to_dict() for e in self.evidence],
            "because": [r.to_dict() for r in self.because],
        }
        if self.also_from:
            data["also_from"] = [a.to_dict() for a in self.also_from]
        return data


class DerivedFact(NamedTuple):
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


class Suppression(NamedTuple):
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


class TraceEntry(NamedTuple):
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
        data["matched"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.matched.items()}
        data["produced"] = list(self.produced)
        if self.suppressed:
            data["suppressed"] = list(self.suppressed)
        return data


class Provenance(NamedTuple):
    rulebook_name: str
    rulebook_version: str
    rulebook_sha256: str
    parameters: Mapping[str, float]
    engine: Mapping[str, str]
    input_sha256: str
    evaluated_at: str
    diagnosis: Mapping[str, Any] | None = None  # what established the IMT diagnosis (charts read from FHIR)

    def to_dict(self) -> dict[str, Any]:
        data = {
            "rulebook": {"name": self.rulebook_name, "version": self.rulebook_version, "sha256": self.rulebook_sha256},
            "parameters": dict(self.parameters),
            "engine": dict(self.engine),
            "input_sha256": self.input_sha256,
            "evaluated_at": self.evaluated_at,
        }
        if self.diagnosis is not None:
            data["diagnosis"] = dict(self.diagnosis)
        return data


_Value = TypeVar("_Value")


class _lazy(Generic[_Value]):  # noqa: N801 - used as a decorator, like functools.cached_property
    """Like ``functools.cached_property`` without its per-access lock (Python 3.11): values here are immutable and
    deterministic, so two threads computing one at the same time is harmless, and the lock is measurable. (Generic, so
    that a type checker sees each attribute's type, not ``Any``.)"""

    def __init__(self, function: Callable[[Any], _Value]):
        self.function = function
        self.name = function.__name__
        self.__doc__ = function.__doc__

    @overload
    def __get__(self, instance: None, owner: Any = None) -> _lazy[_Value]: ...

    @overload
    def __get__(self, instance: object, owner: Any = None) -> _Value: ...

    def __get__(self, instance: object | None, owner: Any = None) -> _lazy[_Value] | _Value:
        if instance is None:
            return self
        value = self.function(instance)
        instance.__dict__[self.name] = value
        return value


# --- per-program templates ----------------------------------------------------------------------------------------


class Rationale(NamedTuple):
    """An assessment's findings and derived facts as a renderer of their reasons reads them, without the document
    being written and parsed (``Assessment.rationale()``; the service's cards are made from it).

    ``findings`` in document order (recommendations, then risk flags, each by code) and ``derived`` (by name, in
    document order) are pairs: the fields the document gives it but ``because`` (a dict shared by every assessment
    of the engine: read it, never change it), and its reasons in the document's order (``ReasonTemplate``: an input
    fact's test, or a derived fact that holds or must be absent). ``value_json(path)`` is the JSON text of an input
    fact's value as the document shows it (its ``actual``), ``held(name)`` the reason rules of a multi-reason fact
    that holds (the document's ``reasons``)."""

    findings: tuple[tuple[Mapping[str, Any], tuple[ReasonTemplate, ...]], ...]
    derived: Mapping[str, tuple[tuple[Mapping[str, Any], tuple[ReasonTemplate, ...]], ...]]
    value_json: Callable[[str], str]
    held: Callable[[str], tuple[str, ...]]


class _RationaleShape(NamedTuple):
    findings: tuple[tuple[Mapping[str, Any], tuple[ReasonTemplate, ...]], ...]
    derived: Mapping[str, tuple[tuple[Mapping[str, Any], tuple[ReasonTemplate, ...]], ...]]


_RATIONALES_LIMIT = 1024


class _FindingTemplate(NamedTuple):
    rule: Rule
    kind: str
    title: str
    summary: str
    indicator: str | None  # (None only in a rulebook rebuilt from an 0.1.0 audit archive)
    ref: RuleRef
    evidence: tuple[EvidenceEntry, ...]


class OutputTemplates:
    """Everything about a program's output that does not depend on the patient, computed once per engine."""

    def __init__(self, program: Program, versions: Mapping[str, str]):
        rulebook = program.rulebook
        self.program = program
        self.rules = program.rules
        self.position = {rule.id: i for i, rule in enumerate(rulebook.rules)}  # catalogue order
        self.refs = {rule.id: RuleRef.of(rule) for rule in rulebook.rules}
        self.findings = {
            (rule.id, spec.code): _FindingTemplate(rule, spec.kind, spec.title, spec.summary, spec.indicator,
                                                   self.refs[rule.id],
                                                   tuple(rulebook.evidence[e] for e in rule.evidence))
            for rule in rulebook.rules
            for spec in rule.findings
        }
        self.rule_codes = {rule.id: tuple(spec.code for spec in rule.findings) for rule in rulebook.rules}
        self.deriving_rule = {rule.derives: rule for rule in rulebook.rules if rule.derives and not rule.part_of}
        self.leaf_index = {path: i for i, path in enumerate(fact_fields())}
        # Per engine rule: the codes it produces, and the static part of its trace entry (for a clinical rule that
        # is not a suppression). Its reasons (``EngineRule.reasons``) are in condition order already.
        self.codes = {name: tuple(spec.code for spec in er.produces) for name, er in program.rules.items()}
        self.trace_shapes = {name: trace_shape(er) for name, er in program.rules.items()
                             if er.rule is not None and er.suppression is None}
        self.provenance_static: dict[str, Any] = {
            "rulebook_name": rulebook.name,
            "rulebook_version": rulebook.version,
            "rulebook_sha256": rulebook.sha256,
            "parameters": rulebook.parameter_values,
            "engine": dict(versions),
        }
        self.json = JsonTemplates(program, versions, self.leaf_index, self.trace_shapes)
        # Each finding's and derived fact's fields as its document has them, but "because" (empty): parsed from the
        # document's own pieces, so a renderer given ``Assessment.rationale()`` reads what it reads in the document.
        self.finding_fields = {key: orjson.loads(head + "[]}") for key, head in self.json.finding_head.items()}
        self.derived_fields = {rule_id: orjson.loads(head + "[]}") for rule_id, head in self.json.derived_head.items()}
        # ``Assessment.rationale()``'s findings and derived facts by the names of the rules that fired, in firing order
        # (all they depend on): a memo of a pure function, of values no caller may change (tuples, read-only mappings,
        # the fields above), bounded (cleared when full; an entry is a few KB at most). The service benchmark's charts
        # fire 4 sequences; generated patients, drawn to cross every threshold, a new one nearly every time (8,365 in
        # 8,752 without a suppression: the memo then saves nothing, and a miss does what a call without it did); how
        # many real charts fire is not known.
        self.rationales: dict[tuple[str, ...], _RationaleShape | None] = {}


# --- the assessment -----------------------------------------------------------------------------------------------


class Assessment:
    """The immutable result of evaluating one patient. ``to_json()`` gives its JSON document (README, Output).

    Attributes: ``patient_id``, ``facts`` (the validated input), ``recommendations`` and ``risk_flags`` (findings,
    sorted by code), ``derived_facts``, ``suppressed``, ``trace``, ``provenance``; shortcuts ``codes``,
    ``findings``, ``finding(code)``, ``derived_names``, ``suppressed_codes``.
    """

    # Set once by __init__ through __dict__ (__setattr__ refuses every assignment); declared for type checkers.
    facts: PatientFacts
    patient_id: str | None
    input_sha256: str
    diagnosis: Mapping[str, Any] | None
    _templates: OutputTemplates
    _leaves: list[str]
    _firings: Sequence[Firing]
    _fired: dict[str, list[EngineRule]]
    _produced_sets: dict[str, set[str]]
    _suppressed_by: dict[str, dict[str, dict[str | None, None]]]
    _moment: datetime

    def __init__(self, templates: OutputTemplates, facts: PatientFacts, leaves: list[str], firings: Sequence[Firing],
                 input_sha256: str, evaluated_at: datetime, diagnosis: Mapping[str, Any] | None = None):
        fired: dict[str, list[EngineRule]] = {}
        produced: dict[str, set[str]] = {}
        suppressed: dict[str, dict[str, dict[str | None, None]]] = {}
        rules = templates.rules
        codes = templates.codes
        for name, message in firings:
            engine_rule = rules[name]
            rule = engine_rule.rule
            if rule is None:  # the internal anchor rule has no clinical meaning
                continue
            if engine_rule.suppression is not None:
                candidate, reason = _suppression_match(message)
                suppressed.setdefault(candidate, {}).setdefault(rule.id, {})[reason] = None
                continue
            if rule.id in fired:
                fired[rule.id].append(engine_rule)
            else:
                fired[rule.id] = [engine_rule]
            if codes[name]:
                produced.setdefault(rule.id, set()).update(codes[name])
        state = self.__dict__  # (__setattr__ refuses every assignment: the object is immutable once built)
        state["_templates"] = templates
        state["_leaves"] = leaves
        state["_firings"] = firings
        state["_fired"] = fired
        state["_produced_sets"] = produced
        state["_suppressed_by"] = suppressed
        state["facts"] = facts
        state["patient_id"] = facts.patient_id
        state["input_sha256"] = input_sha256
        state["_moment"] = evaluated_at
        state["diagnosis"] = MappingProxyType(dict(diagnosis)) if diagnosis is not None else None

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"an Assessment is immutable (cannot set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"an Assessment is immutable (cannot delete {name!r})")

    def __repr__(self) -> str:
        return f"<Assessment patient_id={self.patient_id!r} codes={sorted(self.codes)}>"

    @property
    def rulebook(self) -> Rulebook:
        """The rulebook this assessment was made with."""
        return self._templates.program.rulebook

    def canonical_input_json(self) -> bytes:
        """The canonical JSON of the validated input (what ``provenance.input_sha256`` is the hash of)."""
        return canonical_json(self.facts, self._leaves)

    @_lazy
    def evaluated_at(self) -> str:
        """When the evaluation ran, as RFC 3339 UTC (formatted on first use: most callers never look)."""
        return rfc3339(self._moment)

    # -- what fired: the plan both the objects and the JSON are written from --

    @_lazy
    def _produced(self) -> dict[str, tuple[str, ...]]:
        """rule id -> the codes its fired branches produced, in the rule's order."""
        rule_codes = self._templates.rule_codes
        return {rule_id: (tuple(c for c in rule_codes[rule_id] if c in codes) if len(codes) > 1 else tuple(codes))
                for rule_id, codes in self._produced_sets.items()}

    @_lazy
    def _emitted(self) -> dict[str, tuple[str, ...]]:
        """code -> ids of the unsuppressed rules that produced it (catalogue order), codes in sorted order."""
        position = self._templates.position
        emitted: dict[str, list[str]] = {}
        for rule_id in sorted(self._produced, key=position.__getitem__):
            if rule_id not in self._suppressed_by:
                for code in self._produced[rule_id]:
                    emitted.setdefault(code, []).append(rule_id)
        return {code: tuple(emitted[code]) for code in sorted(emitted)}

    def _branches(self, rule_id: str, code: str | None) -> tuple[str, ...]:
        """The fired branches (engine rules) of a rule that produced ``code`` (None: all of them)."""
        fired = self._fired[rule_id]
        if len(fired) == 1:  # the usual case: one branch of the condition fired
            return (fired[0].name,)
        codes = self._templates.codes
        return tuple(dict.fromkeys(er.name for er in fired if code is None or code in codes[er.name]))

    def _reason_plan(self, rule_id: str, code: str | None) -> tuple[ReasonTemplate, ...]:
        """The reasons behind one rule's finding (or, with code None, its derived fact), in condition order: the
        union over the rule's fired branches that produced it."""
        branches = self._branches(rule_id, code)
        rules = self._templates.rules
        if len(branches) == 1:
            return rules[branches[0]].reasons
        return union_of_branches(rules[name].reasons for name in branches)

    @_lazy
    def _deriving_rules(self) -> tuple[str, ...]:
        """Ids of the rules that derived a fact, in catalogue order."""
        return tuple(sorted((rule_id for rule_id, ers in self._fired.items() if ers[0].derives is not None),
                            key=self._templates.position.__getitem__))

    @_lazy
    def _derived_reasons(self) -> dict[str, tuple[str, ...]]:
        """For multi-reason facts (CONTRADICTION): the reason rules that derived them, in catalogue order."""
        found: dict[str, list[str]] = {}
        for rule_id in self._deriving_rules:
            engine_rule = self._fired[rule_id][0]
            if engine_rule.rule.part_of:  # type: ignore[union-attr]
                found.setdefault(engine_rule.derives, []).append(rule_id)  # type: ignore[arg-type]
        return {name: tuple(ids) for name, ids in found.items()}

    def _reasons_of(self, name: str) -> tuple[str, ...]:
        return self._derived_reasons.get(name, ())

    def rationale(self) -> Rationale | None:
        """The findings and derived facts with their reasons (``Rationale``): what the document says of them, for a
        renderer that need not write and parse the document. None when a finding was suppressed or comes from two
        rules (the document's ``suppressed`` and ``also_from``, which it does not carry): render the document then."""
        if self._suppressed_by:
            return None
        rationales = self._templates.rationales
        fired_names = tuple([name for name, _ in self._firings])
        try:
            shape = rationales[fired_names]
        except KeyError:
            shape = self._rationale_shape()
            if len(rationales) >= _RATIONALES_LIMIT:
                rationales.clear()
            rationales[fired_names] = shape
        if shape is None:
            return None
        return Rationale(shape.findings, shape.derived, self._value_json, self._reasons_of)

    def _rationale_shape(self) -> _RationaleShape | None:
        """What ``rationale()`` gives but the two functions: None when a finding comes from two rules."""
        fields = self._templates.finding_fields
        recommendations: list[tuple[Mapping[str, Any], tuple[ReasonTemplate, ...]]] = []
        risk_flags: list[tuple[Mapping[str, Any], tuple[ReasonTemplate, ...]]] = []
        for code, rule_ids in self._emitted.items():
            if len(rule_ids) > 1:
                return None
            finding = fields[(rule_ids[0], code)]
            (recommendations if finding["kind"] in _RECOMMENDATION_KINDS else risk_flags).append(
                (finding, self._reason_plan(rule_ids[0], code)))
        derived: dict[str, list[tuple[Mapping[str, Any], tuple[ReasonTemplate, ...]]]] = {}
        derived_fields = self._templates.derived_fields
        for rule_id in self._deriving_rules:
            entry = derived_fields[rule_id]
            derived.setdefault(entry["name"], []).append((entry, self._reason_plan(rule_id, None)))
        return _RationaleShape((*recommendations, *risk_flags),
                               MappingProxyType({name: tuple(entries) for name, entries in derived.items()}))

    def _value_json(self, path: str) -> str:
        return self._leaves[self._templates.leaf_index[path]]

    # -- cheap views --

    @_lazy
    def codes(self) -> frozenset[str]:
        """Every emitted finding code."""
        if not self._suppressed_by:
            return frozenset().union(*self._produced_sets.values())
        return frozenset(self._emitted)

    @_lazy
    def suppressed_codes(self) -> frozenset[str]:
        return frozenset(code for rule_id in self._suppressed_by for code in self._produced.get(rule_id, ()))

    @_lazy
    def derived_names(self) -> frozenset[str]:
        return frozenset(self._fired[r][0].derives for r in self._deriving_rules)  # type: ignore[misc]

    # -- objects, materialized on first access --

    def _finding(self, rule_id: str, code: str) -> Finding:
        t = self._templates.findings[(rule_id, code)]
        return Finding(code, t.kind, t.title, t.summary, t.indicator, t.rule.strength, t.ref, t.evidence,
                       self._because(self._reason_plan(rule_id, code)))

    @_lazy
    def _findings(self) -> tuple[Finding, ...]:
        findings = []
        for code, (first, *others) in self._emitted.items():
            finding = self._finding(first, code)
            if others:
                extra = tuple(AlsoFrom(self._templates.refs[r], self._templates.findings[(r, code)].rule.evidence,
                                       self._because(self._reason_plan(r, code))) for r in others)
                finding = finding._replace(also_from=extra)
            findings.append(finding)
        return tuple(findings)

    @_lazy
    def recommendations(self) -> tuple[Finding, ...]:
        return tuple(f for f in self._findings if f.kind in _RECOMMENDATION_KINDS)

    @_lazy
    def risk_flags(self) -> tuple[Finding, ...]:
        return tuple(f for f in self._findings if f.kind not in _RECOMMENDATION_KINDS)

    @property
    def findings(self) -> tuple[Finding, ...]:
        return self.recommendations + self.risk_flags

    def finding(self, code: str) -> Finding | None:
        return next((f for f in self._findings if f.code == code), None)

    @_lazy
    def derived_facts(self) -> tuple[DerivedFact, ...]:
        refs = self._templates.refs
        facts = []
        for rule_id in self._deriving_rules:
            engine_rule = self._fired[rule_id][0]
            rule = engine_rule.rule
            assert rule is not None and engine_rule.derives is not None
            facts.append(DerivedFact(
                name=engine_rule.derives,
                rule=refs[rule.part_of] if rule.part_of else refs[rule_id],
                because=self._because(self._reason_plan(rule_id, None)),
                reason=refs[rule_id] if rule.part_of else None,
                reason_text=rule.reason if rule.part_of else None,
            ))
        return tuple(facts)

    @_lazy
    def _suppression_plan(self) -> tuple[tuple[str, str, RuleRef, str, tuple[str, ...], RuleRef], ...]:
        """Each suppressed finding as (code, rule id, by, fact, reasons, suppression rule), in the order of the
        suppressions (by code, then rule id): what both ``suppressed`` and the JSON are written from."""
        templates = self._templates
        rulebook = templates.program.rulebook
        items = []
        for rule_id, by_rule in self._suppressed_by.items():
            for code in self._produced.get(rule_id, ()):
                for suppression_id, reasons in by_rule.items():
                    suppression_rule = rulebook.rule(suppression_id)
                    assert isinstance(suppression_rule.when, DerivedTest)
                    fact = suppression_rule.when.name
                    held = sorted((r for r in reasons if r is not None), key=templates.position.__getitem__)
                    texts = tuple(rulebook.rule(r).reason or r for r in held)
                    items.append((code, rule_id, RuleRef.of(templates.deriving_rule[fact]), fact, texts,
                                  templates.refs[suppression_id]))
        return tuple(sorted(items, key=lambda item: (item[0], item[1])))

    @_lazy
    def suppressed(self) -> tuple[Suppression, ...]:
        return tuple(Suppression(self._finding(rule_id, code), by, fact, texts, suppression_rule)
                     for code, rule_id, by, fact, texts, suppression_rule in self._suppression_plan)

    @_lazy
    def trace(self) -> tuple[TraceEntry, ...]:
        templates = self._templates
        entries = []
        for seq, (name, message) in enumerate(self._firings, 1):
            engine_rule = templates.rules[name]
            rule = engine_rule.rule
            if rule is None:
                continue
            if engine_rule.suppression is not None:
                entries.append(self._suppression_entry(seq, engine_rule, message))
                continue
            shape = templates.trace_shapes[name]
            facts = {path: self._actual(path) for path in shape.paths}
            entries.append(TraceEntry(seq, templates.refs[rule.id], name,
                                      {"facts": facts, "derived": shape.derived, "absent": shape.absent},
                                      shape.produced, part_of=rule.part_of))
        return tuple(entries)

    def _suppression_entry(self, seq: int, engine_rule: EngineRule, message: str | None) -> TraceEntry:
        candidate, _ = _suppression_match(message)
        literal = engine_rule.conjunction[0]
        assert isinstance(literal, DerivedTest) and engine_rule.rule is not None
        return TraceEntry(seq, self._templates.refs[engine_rule.rule.id], engine_rule.name,
                          {"derived": (literal.name,), "candidate": candidate}, (),
                          self._templates.rule_codes[candidate])

    @_lazy
    def provenance(self) -> Provenance:
        return Provenance(**self._templates.provenance_static, input_sha256=self.input_sha256,
                          evaluated_at=self.evaluated_at, diagnosis=self.diagnosis)

    def _actual(self, path: str) -> Any:
        # The value as the JSON document shows it (sets as sorted lists), decoded from the rendered leaf.
        return orjson.loads(self._leaves[self._templates.leaf_index[path]])

    def _because(self, plan: tuple[ReasonTemplate, ...]) -> tuple[Reason, ...]:
        reasons = []
        for template in plan:
            literal = template.literal
            if isinstance(literal, Atom):
                reasons.append(Reason(fact=literal.path, expected=template.expected, actual=self._actual(literal.path),
                                      parameter=template.parameter))
            else:
                reasons.append(Reason(derived=literal.name, holds=literal.present,
                                      reasons=self._reasons_of(literal.name) if literal.present else ()))
        return tuple(reasons)

    # -- the document --

    def to_json(self, *, indent: bool = False) -> str:
        """The assessment as JSON text: the same bytes for the same input and rulebook, but for evaluated_at."""
        if indent:
            return orjson.dumps(orjson.loads(self._json), option=orjson.OPT_INDENT_2).decode()
        return self._json

    def to_dict(self) -> dict[str, Any]:
        """The assessment document as plain Python data (a fresh copy each call)."""
        return orjson.loads(self._json)  # type: ignore[no-any-return]

    def to_card_dict(self) -> dict[str, Any]:
        """``to_dict()`` with an empty trace (``"trace": []``), the rest the same: all a renderer of findings reads
        (cards, the FHIR guidance bundle). The trace, a sixth of the document, is then neither written nor parsed."""
        return orjson.loads(self._document_json(()))  # type: ignore[no-any-return]

    @_lazy
    def _json(self) -> str:
        return self._document_json(self._trace_json)

    def _document_json(self, trace: Sequence[str]) -> str:
        writer = self._templates.json
        recommendations, risk_flags, derived, suppressed = self._findings_json
        return writer.document(self.patient_id, recommendations, risk_flags, derived, suppressed, trace,
                               self.input_sha256, self.evaluated_at, self.diagnosis)

    @_lazy
    def _findings_json(self) -> tuple[list[str], list[str], list[str], list[str]]:
        """The document's recommendations, risk flags, derived facts and suppressed findings, each as JSON texts."""
        writer = self._templates.json
        leaves = self._leaves
        fired = self._fired
        recommendations: list[str] = []
        risk_flags: list[str] = []
        finding_writer = writer.finding_writer
        for code, rule_ids in self._emitted.items():
            first = rule_ids[0]
            if len(rule_ids) == 1 and len(fired[first]) == 1:
                # the usual case: one fired branch of one rule, written from its fragments in a few C calls
                found = finding_writer.get((fired[first][0].name, code))
                if found is not None:
                    write, recommendation = found
                    (recommendations if recommendation else risk_flags).append(write(leaves))
                    continue
            text = self._finding_json(first, code)
            if len(rule_ids) > 1:
                extra = [writer.rule_ref[r][:-1] + ',"evidence":' + writer.evidence_ids[r] + ',"because":'
                         + writer.because(self._branches(r, code), leaves, self._reasons_of) + "}"
                         for r in rule_ids[1:]]
                text = text[:-1] + ',"also_from":[' + ",".join(extra) + "]}"
            kind = self._templates.findings[(first, code)].kind
            (recommendations if kind in _RECOMMENDATION_KINDS else risk_flags).append(text)
        derived = []
        derived_writer = writer.derived_writer
        for rule_id in self._deriving_rules:
            branches = fired[rule_id]
            if len(branches) == 1 and (write_derived := derived_writer.get(branches[0].name)) is not None:
                derived.append(write_derived(leaves))
            else:
                derived.append(writer.derived_head[rule_id] + writer.because(self._branches(rule_id, None), leaves,
                                                                             self._reasons_of) + "}")
        suppressed = []
        if self._suppressed_by:
            for code, rule_id, by, fact, texts, suppression_rule in self._suppression_plan:
                # The finding is written as in the findings; the rest (small) through orjson, as the objects say it.
                rest = orjson.dumps({"by": {**by.to_dict(), "fact": fact},
                                     "reason": "; ".join(texts) if texts else f"{fact} holds",
                                     "reasons": list(texts), "suppression_rule": suppression_rule.to_dict()})
                suppressed.append('{"finding":' + self._finding_json(rule_id, code) + "," + rest[1:].decode())
        return recommendations, risk_flags, derived, suppressed

    @_lazy
    def _trace_json(self) -> list[str]:
        """The document's trace entries as JSON texts."""
        trace = []
        leaves = self._leaves
        trace_writer = self._templates.json.trace_writer
        rules = self._templates.rules
        for seq, (name, message) in enumerate(self._firings, 1):
            write = trace_writer.get(name)
            if write is not None:
                trace.append(f'{{"seq":{seq}' + write(leaves))
                continue
            engine_rule = rules[name]
            if engine_rule.rule is not None and engine_rule.suppression is not None:
                trace.append(orjson.dumps(self._suppression_entry(seq, engine_rule, message).to_dict()).decode())
        return trace

    def _finding_json(self, rule_id: str, code: str) -> str:
        """One rule's finding as JSON, without ``also_from`` (as ``_finding(rule_id, code).to_dict()`` says it)."""
        writer = self._templates.json
        branches = self._branches(rule_id, code)
        if len(branches) == 1 and (found := writer.finding_writer.get((branches[0], code))) is not None:
            return found[0](self._leaves)
        return (writer.finding_head[(rule_id, code)] + writer.because(branches, self._leaves, self._reasons_of)
                + "}")


def _suppression_match(message: str | None) -> tuple[str, str | None]:
    """A suppression's firing matched a candidate fact ("c") and the suppressing derived fact ("d")."""
    assert message is not None
    (matched,) = orjson.loads(message).values()
    return matched["c"]["rule"], matched["d"].get("reason")


def build_assessment(templates: OutputTemplates, facts: PatientFacts, leaves: list[str], firings: Sequence[Firing],
                     input_sha256: str, evaluated_at: datetime,
                     diagnosis: Mapping[str, Any] | None = None) -> Assessment:
    if evaluated_at.tzinfo is None:
        raise NaiveDateTimeError("evaluated_at", evaluated_at)
    return Assessment(templates, facts, leaves, firings, input_sha256, evaluated_at, diagnosis)


def rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise NaiveDateTimeError("evaluated_at", moment)
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
