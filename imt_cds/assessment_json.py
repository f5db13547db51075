"""Write an assessment's JSON document (SPEC §3) fast, from fragments serialized once per engine.

Most of an assessment's text is static per rule: titles, summaries, evidence with its quotes, rule references,
the tests a rule makes. ``JsonTemplates`` serializes all of it when the engine is built; writing a document then
joins those fragments with the few per-patient values (each input fact's value, already rendered as JSON once per
evaluation for the canonical hash). The document is the same one the assessment's objects describe: a test holds
``to_json()`` equal to the objects' ``to_dict()`` for thousands of patients.

This module never decides anything and knows nothing about the engine: it formats what the assessment collected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson

from .compiler import EngineRule, Program, ReasonTemplate
from .conditions import Atom, DerivedTest
from .rulebook import finding_kind

__all__ = ["JsonTemplates"]

SCHEMA = "imt-cds/assessment/1"


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


class JsonTemplates:
    """Pre-serialized pieces of every document a program can produce."""

    def __init__(self, program: Program, versions: Mapping[str, str], leaf_index: Mapping[str, int]):
        rulebook = program.rulebook
        self.leaf_index = leaf_index
        refs = {rule.id: _json({"id": rule.id, "version": rule.version}) for rule in rulebook.rules}
        self.rule_ref = refs
        # Per (rule, code): the finding's static head, up to and including '"because":'.
        self.finding_head: dict[tuple[str, str], str] = {}
        for rule in rulebook.rules:
            evidence = _json([rulebook.evidence[e].to_dict() for e in rule.evidence])
            for spec in rule.findings:
                head = _json({"code": spec.code, "kind": finding_kind(spec.code), "title": spec.title,
                              "summary": spec.summary, "strength": rule.strength})[:-1]
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
        # Per engine rule: its rationale as (order, head, leaf index or -1, tail, derived name or None) items, in
        # condition order; and its trace entry's pieces.
        self.because_plan: dict[str, tuple[tuple[int, str, int, str, str | None], ...]] = {}
        self.trace_parts: dict[str, tuple[str, tuple[tuple[str, int], ...], str]] = {}
        for name, engine_rule in program.rules.items():
            ordered = sorted(engine_rule.reasons, key=lambda t: t.order)
            self.because_plan[name] = tuple(self._reason_item(t) for t in ordered)
            if engine_rule.rule is not None and engine_rule.suppression is None:
                self.trace_parts[name] = self._trace_parts(name, engine_rule, refs)
        static = {
            "rulebook": {"name": rulebook.name, "version": rulebook.version, "sha256": rulebook.sha256},
            "parameters": rulebook.parameter_values,
            "engine": dict(versions),
        }
        self.provenance_head = _json(static)[:-1] + ',"input_sha256":'

    def _reason_item(self, template: ReasonTemplate) -> tuple[int, str, int, str, str | None]:
        literal = template.literal
        if isinstance(literal, Atom):
            head = f'{{"fact":{_json(literal.path)},"expected":{_json(template.expected)},"actual":'
            tail = f',"parameter":{_json(template.parameter)}}}' if template.parameter else "}"
            return template.order, head, self.leaf_index[literal.path], tail, None
        assert isinstance(literal, DerivedTest)
        head = f'{{"derived":{_json(literal.name)},"holds":{_json(literal.present)}'
        return template.order, head, -1, "}", literal.name if literal.present else None

    def _trace_parts(self, name: str, engine_rule: EngineRule,
                     refs: Mapping[str, str]) -> tuple[str, tuple[tuple[str, int], ...], str]:
        rule = engine_rule.rule
        assert rule is not None
        part_of = f',"part_of":{_json(rule.part_of)}' if rule.part_of else ""
        head = f',"rule":{refs[rule.id]}{part_of},"engine_rule":{_json(name)},"matched":{{"facts":{{'
        atoms = [lit for lit in engine_rule.conjunction if isinstance(lit, Atom)]
        paths = tuple((_json(lit.path) + ":", self.leaf_index[lit.path]) for lit in dict.fromkeys(atoms))
        derived = [lit.name for lit in engine_rule.conjunction if isinstance(lit, DerivedTest) and lit.present]
        absent = [lit.name for lit in engine_rule.conjunction if isinstance(lit, DerivedTest) and not lit.present]
        produced = ([engine_rule.derives[0]] if engine_rule.derives is not None
                    else [spec.code for spec in engine_rule.produces])
        tail = f'}},"derived":{_json(derived)},"absent":{_json(absent)}}},"produced":{_json(produced)}}}'
        return head, paths, tail

    # -- writing --

    def because(self, branches: Sequence[str], leaves: Sequence[str],
                reasons_of: Callable[[str], tuple[str, ...]]) -> str:
        """The rationale of one rule's finding or derived fact: the union of the reasons of the branches (engine
        rules) of it that fired, in the order of the rule's condition."""
        if len(branches) == 1:
            items: Iterable[tuple[int, str, int, str, str | None]] = self.because_plan[branches[0]]
        else:
            merged = {item[0]: item for name in branches for item in self.because_plan[name]}
            items = [merged[order] for order in sorted(merged)]
        parts = []
        for _, head, index, tail, derived in items:
            if index >= 0:
                parts.append(head + leaves[index] + tail)
            elif derived is not None and (held := reasons_of(derived)):
                parts.append(f'{head},"reasons":{_json(list(held))}{tail}')
            else:
                parts.append(head + tail)
        return "[" + ",".join(parts) + "]"

    def trace_entry(self, seq: int, name: str, leaves: Sequence[str]) -> str:
        head, paths, tail = self.trace_parts[name]
        facts = ",".join(key + leaves[index] for key, index in paths)
        return f'{{"seq":{seq}{head}{facts}{tail}'

    def document(self, patient_id: str | None, recommendations: list[str], risk_flags: list[str],
                 derived: list[str], suppressed: list[str], trace: list[str], input_sha256: str,
                 evaluated_at: str) -> str:
        return (
            f'{{"schema":"{SCHEMA}","patient_id":{_json(patient_id)},'
            f'"recommendations":[{",".join(recommendations)}],"risk_flags":[{",".join(risk_flags)}],'
            f'"derived_facts":[{",".join(derived)}],"suppressed":[{",".join(suppressed)}],'
            f'"trace":[{",".join(trace)}],'
            f'"provenance":{self.provenance_head}"{input_sha256}","evaluated_at":"{evaluated_at}"}}}}'
        )
