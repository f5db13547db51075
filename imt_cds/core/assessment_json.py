"""Write an assessment's JSON document (README, section Output) fast, from fragments serialized once per engine.

Most of an assessment's text is static per rule: titles, summaries, evidence with its quotes, rule references,
the tests a rule makes. ``JsonTemplates`` serializes all of it when the engine is built; writing a document then
joins those fragments with the few per-patient values (each input fact's value, already rendered as JSON once per
evaluation for the canonical hash). The document is the same one the assessment's objects describe: a test holds
``to_json()`` equal to the objects' ``to_dict()`` for thousands of patients.

This module never decides anything and knows nothing about the engine: it formats what the assessment collected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Any, NamedTuple, Protocol, TypeVar

import orjson

from .compiler import EngineRule, Program, ReasonTemplate
from .conditions import Atom, DerivedTest

__all__ = ["JsonTemplates", "TraceShape", "trace_shape", "union_of_branches"]

SCHEMA = "imt-cds/assessment/1"
_RECOMMENDATION_KINDS = ("recommendation", "data_request")  # listed under recommendations; the others are risk flags


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _escaped(text: str) -> str:
    """Static JSON text as a %-format string (a test's or a reason's text may hold '%')."""
    return text.replace("%", "%%")


def _filler(pieces: Sequence[str | int]) -> Callable[[Sequence[str]], str]:
    """A function writing ``pieces`` (static JSON text, and leaf indices where a patient's value goes): the static
    text before the first value and after the last is joined on as it is (a copy), and what lies between is one
    %-format of the leaves. So the per-patient work of a fragment is a few C calls, not a loop of joins; and the
    long static parts (evidence quotes) are never scanned for '%' (formatting is several times slower than
    copying)."""
    positions = [n for n, piece in enumerate(pieces) if isinstance(piece, int)]
    if not positions:
        static = "".join(str(piece) for piece in pieces)
        return lambda leaves: static
    first, last = positions[0], positions[-1]
    prefix = "".join(str(piece) for piece in pieces[:first])
    suffix = "".join(str(piece) for piece in pieces[last + 1:])
    if first == last:
        index = int(pieces[first])
        return lambda leaves: prefix + leaves[index] + suffix
    middle = "".join(_escaped(piece) if isinstance(piece, str) else "%s" for piece in pieces[first:last + 1])
    pick = itemgetter(*(int(pieces[n]) for n in positions))
    return lambda leaves: prefix + middle % pick(leaves) + suffix


class TraceShape(NamedTuple):
    """The static part of the trace entry of one engine rule's firing (both the objects and the JSON use it)."""

    paths: tuple[str, ...]  # the input facts its conjunction tests, once each, in condition order
    derived: tuple[str, ...]  # the derived facts it needs
    absent: tuple[str, ...]  # the derived facts that must be absent
    produced: tuple[str, ...]  # the derived fact it asserts, or the codes of the findings it produces


def trace_shape(engine_rule: EngineRule) -> TraceShape:
    conjunction = engine_rule.conjunction
    return TraceShape(
        tuple(dict.fromkeys(lit.path for lit in conjunction if isinstance(lit, Atom))),
        tuple(lit.name for lit in conjunction if isinstance(lit, DerivedTest) and lit.present),
        tuple(lit.name for lit in conjunction if isinstance(lit, DerivedTest) and not lit.present),
        ((engine_rule.derives,) if engine_rule.derives is not None
         else tuple(spec.code for spec in engine_rule.produces)),
    )


class _Ordered(Protocol):
    @property
    def order(self) -> int: ...


_Reason = TypeVar("_Reason", bound=_Ordered)


def union_of_branches(plans: Iterable[Sequence[_Reason]]) -> tuple[_Reason, ...]:
    """The union of the reasons of several fired branches of one rule, in the order of the rule's condition.
    Each plan lists one branch's reasons; ``order`` is a reason's literal's position in the rule's condition."""
    merged = {item.order: item for plan in plans for item in plan}
    return tuple(merged[order] for order in sorted(merged))


class _ReasonItem(NamedTuple):
    """One reason of a rationale as JSON pieces: head + (the fact's value | its reasons) + tail."""

    order: int
    head: str
    leaf: int  # the input fact's leaf index, or -1 for a derived fact
    tail: str
    derived: str | None  # the derived fact that must hold (its reasons, if several, are listed)


class JsonTemplates:
    """Pre-serialized pieces of every document a program can produce."""

    def __init__(self, program: Program, versions: Mapping[str, str], leaf_index: Mapping[str, int],
                 trace_shapes: Mapping[str, TraceShape]):
        rulebook = program.rulebook
        self.leaf_index = leaf_index
        refs = {rule.id: _json(rule.ref) for rule in rulebook.rules}
        self.rule_ref = refs
        # Per (rule, code): the finding's static head, up to and including '"because":'.
        self.finding_head: dict[tuple[str, str], str] = {}
        for rule in rulebook.rules:
            evidence = _json([rulebook.evidence[e].to_dict() for e in rule.evidence])
            for spec in rule.findings:
                # (no indicator: a finding of a rulebook of before they declared one, rebuilt to replay its records)
                indicator = {"indicator": spec.indicator} if spec.indicator is not None else {}
                head = _json({"code": spec.code, "kind": spec.kind, "title": spec.title,
                              "summary": spec.summary, **indicator, "strength": rule.strength})[:-1]
                self.finding_head[(rule.id, spec.code)] = (
                    f'{head},"rule":{refs[rule.id]},"evidence":{evidence},"because":'
                )
        self.evidence_ids = {rule.id: _json(list(rule.evidence)) for rule in rulebook.rules}
        # Per derived fact rule: the head up to '"because":'.
        self.derived_head: dict[str, str] = {}
        for rule in rulebook.rules:
            if not rule.derives or rule.reasons:
                continue
            if rule.part_of:
                owner = rulebook.rule(rule.part_of)
                reason = _json({"id": rule.id, "version": rule.version, "text": rule.reason})
                self.derived_head[rule.id] = (f'{{"name":{_json(rule.derives)},"rule":{refs[owner.id]},'
                                              f'"reason":{reason},"because":')
            else:
                self.derived_head[rule.id] = f'{{"name":{_json(rule.derives)},"rule":{refs[rule.id]},"because":'
        # Per engine rule: its rationale's items, in condition order; and its trace entry's pieces.
        self.because_plan = {name: tuple(self._reason_item(t) for t in engine_rule.reasons)
                             for name, engine_rule in program.rules.items()}
        self.trace_parts = {name: self._trace_parts(name, program.rules[name], shape, refs)
                            for name, shape in trace_shapes.items()}
        # The same pieces as writers (``_filler``) of what one fired branch (engine rule) writes on its own (the
        # usual case): its trace entry after '"seq":N', its finding(s) and its derived fact. A rationale that names
        # a multi-reason fact (CONTRADICTION) lists the reasons that held, so it has no writer and goes the long way.
        multi_reason = {rule.derives for rule in rulebook.rules if rule.part_of and rule.derives}
        self.trace_writer: dict[str, Callable[[Sequence[str]], str]] = {}
        for name, (head, paths, tail) in self.trace_parts.items():
            pieces: list[str | int] = [head]
            for n, (key, index) in enumerate(paths):
                pieces += [("," if n else "") + key, index]
            self.trace_writer[name] = _filler([*pieces, tail])
        # (engine rule, code) -> (the writer of the finding, whether it is listed under recommendations)
        self.finding_writer: dict[tuple[str, str], tuple[Callable[[Sequence[str]], str], bool]] = {}
        self.derived_writer: dict[str, Callable[[Sequence[str]], str]] = {}
        for name, engine_rule in program.rules.items():
            of_rule = engine_rule.rule
            items = self.because_plan[name]
            if of_rule is None or engine_rule.suppression is not None or any(i.derived in multi_reason for i in items):
                continue
            because: list[str | int] = ["["]
            for n, (_, head, index, tail, _) in enumerate(items):
                comma = "," if n else ""
                because += [comma + head, index, tail] if index >= 0 else [comma + head + tail]
            because.append("]")
            for spec in engine_rule.produces:
                self.finding_writer[(name, spec.code)] = (
                    _filler([self.finding_head[(of_rule.id, spec.code)], *because, "}"]),
                    spec.kind in _RECOMMENDATION_KINDS)
            if engine_rule.derives is not None and of_rule.id in self.derived_head:
                self.derived_writer[name] = _filler([self.derived_head[of_rule.id], *because, "}"])
        static = {
            "rulebook": {"name": rulebook.name, "version": rulebook.version, "sha256": rulebook.sha256},
            "parameters": rulebook.parameter_values,
            "engine": dict(versions),
        }
        self.provenance_head = _json(static)[:-1] + ',"input_sha256":'

    def _reason_item(self, template: ReasonTemplate) -> _ReasonItem:
        literal = template.literal
        if isinstance(literal, Atom):
            head = f'{{"fact":{_json(literal.path)},"expected":{_json(template.expected)},"actual":'
            tail = f',"parameter":{_json(template.parameter)}}}' if template.parameter else "}"
            return _ReasonItem(template.order, head, self.leaf_index[literal.path], tail, None)
        assert isinstance(literal, DerivedTest)
        head = f'{{"derived":{_json(literal.name)},"holds":{_json(literal.present)}'
        return _ReasonItem(template.order, head, -1, "}", literal.name if literal.present else None)

    def _trace_parts(self, name: str, engine_rule: EngineRule, shape: TraceShape,
                     refs: Mapping[str, str]) -> tuple[str, tuple[tuple[str, int], ...], str]:
        rule = engine_rule.rule
        assert rule is not None
        part_of = f',"part_of":{_json(rule.part_of)}' if rule.part_of else ""
        head = f',"rule":{refs[rule.id]}{part_of},"engine_rule":{_json(name)},"matched":{{"facts":{{'
        paths = tuple((_json(path) + ":", self.leaf_index[path]) for path in shape.paths)
        tail = (f'}},"derived":{_json(shape.derived)},"absent":{_json(shape.absent)}}},'
                f'"produced":{_json(shape.produced)}}}')
        return head, paths, tail

    # -- writing --

    def because(self, branches: Sequence[str], leaves: Sequence[str],
                reasons_of: Callable[[str], tuple[str, ...]]) -> str:
        """The rationale of one rule's finding or derived fact: the union of the reasons of the branches (engine
        rules) of it that fired, in the order of the rule's condition."""
        plan = self.because_plan
        items = plan[branches[0]] if len(branches) == 1 else union_of_branches(plan[name] for name in branches)
        parts = []
        for _, head, index, tail, derived in items:
            if index >= 0:
                parts.append(head + leaves[index] + tail)
            elif derived is not None and (held := reasons_of(derived)):
                parts.append(f'{head},"reasons":{_json(list(held))}{tail}')
            else:
                parts.append(head + tail)
        return "[" + ",".join(parts) + "]"

    def document(self, patient_id: str | None, recommendations: list[str], risk_flags: list[str],
                 derived: list[str], suppressed: list[str], trace: Sequence[str], input_sha256: str,
                 evaluated_at: str, diagnosis: Mapping[str, Any] | None = None) -> str:
        extra = f',"diagnosis":{_json(dict(diagnosis))}' if diagnosis is not None else ""
        return (
            f'{{"schema":"{SCHEMA}","patient_id":{_json(patient_id)},'
            f'"recommendations":[{",".join(recommendations)}],"risk_flags":[{",".join(risk_flags)}],'
            f'"derived_facts":[{",".join(derived)}],"suppressed":[{",".join(suppressed)}],'
            f'"trace":[{",".join(trace)}],'
            f'"provenance":{self.provenance_head}"{input_sha256}","evaluated_at":"{evaluated_at}"{extra}}}}}'
        )
