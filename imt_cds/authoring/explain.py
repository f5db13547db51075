"""Why a finding is in an assessment, and why one is not.

- *Why*: the finding's derivation tree, from the rule (and version) that produced it through the derived facts it
  used, each with the rule that derived it, down to the input facts and the tests they passed.
- *Why not*: for a finding code that did not appear, every rule that can produce it and, for each, either the
  suppression that withheld it, or, for each branch of its condition, the first condition that failed with the
  patient's actual value ("molecular.alk.status is unknown; needs = positive"). A derived fact that did not hold is
  explained the same way, recursively; a derived fact that had to be absent is shown with why it held.

Nothing here evaluates a condition: which fact tests hold comes from the engine (``Engine.true_conditions``) and
which derived facts hold from the assessment. This module only reads those verdicts in the order of the conditions.
"""

from __future__ import annotations

import difflib
import operator
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..core.assessment import Assessment, DerivedFact, Reason
from ..core.conditions import Atom, Conjunction, DerivedTest
from ..core.engine import Engine
from ..core.errors import InputProblem, InvalidInputError
from ..core.fact_fields import fact_fields
from ..core.facts import PatientFacts
from ..core.rulebook import Rule, Rulebook
from ..core.wording import display_value as _value

__all__ = ["Explanation", "explain"]

_MAX_DEPTH = 6  # derived facts nest three deep in v0.1; the bound only guards against a malformed rulebook


def _not_expanded(name: str, seen: set[str]) -> str | None:
    """Why a derived fact's own tree is left out under ``seen`` (the derived facts above it), if it is: "cycle" when
    it is among its own reasons (the loader refuses cycles through negation only, so two derived facts may derive
    each other), "depth" below ``_MAX_DEPTH`` derived facts. The node says so, so a cut tree never reads as whole."""
    if name in seen:
        return "cycle"
    if len(seen) >= _MAX_DEPTH:
        return "depth"
    return None


@dataclass(frozen=True)
class Explanation:
    patient_id: str | None
    why: tuple[dict[str, Any], ...]  # one tree per finding explained
    why_not: tuple[dict[str, Any], ...]  # for a requested code that is absent: one entry per producing rule
    code: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"patient_id": self.patient_id, "code": self.code, "why": list(self.why),
                "why_not": list(self.why_not)}

    def to_text(self) -> str:
        lines: list[str] = []
        for tree in self.why:
            lines.append(f"Why {tree['code']} ({tree['title']}): rule {tree['rule']['id']} v{tree['rule']['version']}")
            if tree.get("also_from"):
                lines.append(f"  (also produced by {', '.join(r['id'] for r in tree['also_from'])})")
            lines.extend(_render_reasons(tree["because"], 1) or ["  - applies to every patient"])
        if self.code is not None and not self.why:
            lines.append(f"Why not {self.code}:")
            for entry in self.why_not:
                lines.extend(_render_why_not(entry, 1))
        return "\n".join(lines) + "\n"


def explain(engine: Engine, facts: PatientFacts | Mapping[str, Any], code: str | None = None, *,
            assessment: Assessment | None = None) -> Explanation:
    """Explain every finding of a patient's assessment, or one code (why if present, why not if absent).

    ``assessment``: the patient's assessment by this engine, when the caller has it already (it is not made again).
    """
    rulebook = engine.rulebook
    if code is not None and code not in rulebook.finding_codes:
        close = difflib.get_close_matches(code, rulebook.finding_codes, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise InvalidInputError([InputProblem("code", f"{code!r} is not a finding code of rulebook "
                                                      f"{rulebook.name} {rulebook.version}{hint}", code)])
    if assessment is None:
        assessment = engine.evaluate(facts)
    elif assessment.rulebook.sha256 != rulebook.sha256:
        raise ValueError("the assessment was made with another rulebook than the engine's")
    builder = _Builder(engine, assessment)
    if code is None:
        return Explanation(assessment.patient_id, tuple(builder.why(f.code) for f in assessment.findings), (), None)
    if code in assessment.codes:
        return Explanation(assessment.patient_id, (builder.why(code),), (), code)
    return Explanation(assessment.patient_id, (), tuple(builder.why_not(code)), code)


class _Builder:
    def __init__(self, engine: Engine, assessment: Assessment):
        self.rulebook: Rulebook = engine.rulebook
        self.assessment = assessment
        self.engine = engine
        self.derived: dict[str, list[DerivedFact]] = {}
        for fact in assessment.derived_facts:
            self.derived.setdefault(fact.name, []).append(fact)
        self._true: frozenset[Atom] | None = None

    @property
    def true_conditions(self) -> frozenset[Atom]:
        if self._true is None:
            self._true = self.engine.true_conditions(self.assessment.facts)
        return self._true

    # -- why --

    def why(self, code: str) -> dict[str, Any]:
        finding = self.assessment.finding(code)
        assert finding is not None
        tree: dict[str, Any] = {"code": code, "title": finding.title, "rule": finding.rule._asdict(),
                                "because": [self._reason(r, set()) for r in finding.because]}
        if finding.also_from:
            tree["also_from"] = [a.rule._asdict() for a in finding.also_from]
        return tree

    def _reason(self, reason: Reason, seen: set[str]) -> dict[str, Any]:
        if reason.fact is not None:
            return {"fact": reason.fact, "expected": reason.expected, "actual": reason.actual, "holds": True}
        assert reason.derived is not None
        node: dict[str, Any] = {"derived": reason.derived, "holds": reason.holds}
        if reason.holds:
            stop = _not_expanded(reason.derived, seen)
            if stop is not None:
                node["not_expanded"] = stop
            else:
                node["derived_by"] = [self._derivation(f, seen | {reason.derived})
                                      for f in self.derived.get(reason.derived, [])]
        return node

    def _derivation(self, fact: DerivedFact, seen: set[str]) -> dict[str, Any]:
        node: dict[str, Any] = {"rule": fact.rule._asdict(), "because": [self._reason(r, seen) for r in fact.because]}
        if fact.reason is not None:
            node["reason"] = {**fact.reason._asdict(), "text": fact.reason_text}
        return node

    # -- why not --

    def why_not(self, code: str) -> list[dict[str, Any]]:
        entries = []
        suppressed = {s.finding.rule.id: s for s in self.assessment.suppressed if s.finding.code == code}
        for rule in self.rulebook.producers(code):
            spec = next(f for f in rule.findings if f.code == code)
            entry: dict[str, Any] = {"rule": rule.ref, "title": rule.title}
            if rule.id in suppressed:
                item = suppressed[rule.id]
                entry["outcome"] = "suppressed"
                entry["suppressed_by"] = {"rule": item.suppression_rule._asdict(), "fact": item.fact,
                                          "derived_by": item.by._asdict(), "reasons": list(item.reasons)}
            else:
                entry["outcome"] = "did not apply"
                entry["branches"] = [self._first_failure(branch.conjunction, set())
                                     for branch in self.engine.program.branches(rule, spec)]
            entries.append(entry)
        return entries

    def _first_failure(self, branch: Conjunction, seen: set[str]) -> dict[str, Any]:
        """The first condition of a branch that failed, with the patient's actual value (or the derived fact)."""
        for literal in branch:
            if isinstance(literal, Atom):
                if literal in self.true_conditions:
                    continue
                field = fact_fields()[literal.path]
                actual = operator.attrgetter(literal.path)(self.assessment.facts)
                if isinstance(actual, frozenset):
                    actual = sorted(actual)
                return {"fact": literal.path, "actual": actual,
                        "expected": literal.expected_text(self.rulebook.parameter_values, field), "holds": False}
            assert isinstance(literal, DerivedTest)
            holds = literal.name in self.assessment.derived_names
            if holds == literal.present:
                continue
            node: dict[str, Any] = {"derived": literal.name, "holds": holds, "required": literal.present}
            stop = _not_expanded(literal.name, seen)
            if stop is not None:
                node["not_expanded"] = stop
            elif literal.present:  # needed but absent: why was it not derived?
                node["why_not"] = [self._why_not_derived(rule, seen | {literal.name})
                                   for rule in self.rulebook.deriving(literal.name)]
            else:  # had to be absent but held: how it was derived
                node["derived_by"] = [self._derivation(f, seen | {literal.name})
                                      for f in self.derived.get(literal.name, [])]
            return node
        return {"note": "every condition of this branch holds"}  # pragma: no cover - then the rule would have fired

    def _why_not_derived(self, rule: Rule, seen: set[str]) -> dict[str, Any]:
        return {"rule": rule.ref, "title": rule.title,
                "branches": [self._first_failure(branch.conjunction, seen)
                             for branch in self.engine.program.branches(rule)]}


# --- text -----------------------------------------------------------------------------------------------------------


def _line(text: str, depth: int) -> list[str]:
    indent = "  " * depth
    return textwrap.wrap(text, 110, initial_indent=f"{indent}- ", subsequent_indent=f"{indent}  ")


def _cut(node: dict[str, Any]) -> str:
    """What the text says of a derived fact whose tree is left out (``_not_expanded``)."""
    stop = node.get("not_expanded")
    if stop == "cycle":
        return " (circular: it is one of its own conditions, see above)"
    if stop == "depth":
        return f" (not followed further: more than {_MAX_DEPTH} derived facts deep)"
    return ""


def _render_reasons(reasons: list[dict[str, Any]], depth: int) -> list[str]:
    lines: list[str] = []
    for node in reasons:
        if "fact" in node:
            lines += _line(f"`{node['fact']}` is `{_value(node['actual'])}` (needs {node['expected']})", depth)
        elif node["holds"]:
            lines += _line(f"{node['derived']} holds{_cut(node)}", depth)
            lines += _render_derivations(node, depth + 1)
        else:
            lines += _line(f"{node['derived']} does not hold (as required)", depth)
    return lines


def _render_derivations(node: dict[str, Any], depth: int) -> list[str]:
    """How a derived fact that holds was derived: each derivation (with its reason, for a fact of several) and what
    it rested on."""
    lines: list[str] = []
    for derivation in node.get("derived_by", []):
        reason = f" ({derivation['reason']['text']})" if "reason" in derivation else ""
        lines += _line(f"derived by {derivation['rule']['id']}{reason}, because:", depth)
        lines += _render_reasons(derivation["because"], depth + 1)
    return lines


def _render_failure(node: dict[str, Any], depth: int) -> list[str]:
    if "fact" in node:
        return _line(f"`{node['fact']}` is `{_value(node['actual'])}`; needs {node['expected']}", depth)
    if "derived" not in node:
        return _line(node.get("note", ""), depth)
    state = "does not hold; it is required" if node["required"] else "holds; it must be absent"
    lines = _line(f"{node['derived']} {state}{_cut(node)}", depth)
    if node["required"]:
        for entry in node.get("why_not", []):
            lines += _line(f"{entry['rule']['id']} did not derive it:", depth + 1)
            lines += _render_branches(entry["branches"], depth + 2)
        return lines
    return lines + _render_derivations(node, depth + 1)


def _render_why_not(entry: dict[str, Any], depth: int) -> list[str]:
    rule = entry["rule"]
    if entry["outcome"] == "suppressed":
        by = entry["suppressed_by"]
        reasons = "; ".join(by["reasons"]) or by["fact"]
        return _line(f"rule {rule['id']} v{rule['version']} ({entry['title']}) applied, but its finding was "
                     f"suppressed by {by['rule']['id']} because {by['fact']} holds ({reasons})", depth - 1)
    return (_line(f"rule {rule['id']} v{rule['version']} ({entry['title']}) did not apply:", depth - 1)
            + _render_branches(entry["branches"], depth))


def _render_branches(branches: list[dict[str, Any]], depth: int) -> list[str]:
    """The first failure of each branch of a rule; numbered when there are several, so that the failures of
    different branches never read as the conditions of one."""
    if len(branches) == 1:
        return _render_failure(branches[0], depth)
    lines: list[str] = []
    for index, branch in enumerate(branches, 1):
        lines += _line(f"branch {index}:", depth)
        lines += _render_failure(branch, depth + 1)
    return lines
