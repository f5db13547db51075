"""Which rules, and which branches of their conditions, a set of patients exercises (``imt-cds rules coverage``).

A *branch* is one disjunct of a rule's condition: the unit the compiler turns into one engine rule (a rule with
``any`` over three conditions has three branches). A rule is covered when one of its branches fired for some
patient. The patients are every rule's own examples and, by default, the project's clinical vignettes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.engine import Engine
from .rule_examples import fired_rules

__all__ = ["Coverage", "default_vignettes", "measure_coverage", "vignette_patients"]


@dataclass(frozen=True)
class RuleCoverage:
    rule: str
    branches: tuple[str, ...]  # engine rule names of the rule's branches
    exercised: tuple[str, ...]
    patients: int  # how many patients fired it

    @property
    def fired(self) -> bool:
        return bool(self.exercised)


@dataclass(frozen=True)
class Coverage:
    rules: tuple[RuleCoverage, ...]
    patients: int
    sources: tuple[str, ...]

    @property
    def never_fired(self) -> tuple[str, ...]:
        return tuple(r.rule for r in self.rules if not r.fired)

    @property
    def unexercised_branches(self) -> tuple[tuple[str, str], ...]:
        return tuple((r.rule, b) for r in self.rules for b in r.branches if b not in r.exercised)

    def to_dict(self) -> dict[str, Any]:
        return {
            "patients": self.patients,
            "sources": list(self.sources),
            "rules": [{"rule": r.rule, "fired": r.fired, "patients": r.patients, "branches": list(r.branches),
                       "exercised": list(r.exercised)} for r in self.rules],
            "never_fired": list(self.never_fired),
            "unexercised_branches": [list(pair) for pair in self.unexercised_branches],
        }


def default_vignettes() -> Path | None:
    """The project's clinical vignettes (tests/vignettes in a checkout), if this installation has them."""
    candidate = Path(__file__).resolve().parents[2] / "tests" / "vignettes"  # from imt_cds/authoring/
    return candidate if candidate.is_dir() else None


def vignette_patients(directory: Path) -> list[tuple[str, dict[str, Any]]]:
    patients = []
    for path in sorted(directory.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        patients.append((f"vignette {path.stem}", data["facts"] if "facts" in data else data))
    return patients


def measure_coverage(engine: Engine, extra: Iterable[tuple[str, Any]] = (), sources: tuple[str, ...] = ()) -> Coverage:
    """Coverage of the rulebook by its own examples plus ``extra`` (label, patient) pairs."""
    rulebook = engine.rulebook
    patients: list[tuple[str, Any]] = [(f"{rule.id} example {e.name!r}", e.patient)
                                       for rule in rulebook.rules for e in rule.examples]
    patients.extend(extra)
    fired_branches: dict[str, set[str]] = {}
    fired_count: dict[str, int] = {}
    for _, patient in patients:
        assessment = engine.evaluate(patient)
        for entry in assessment.trace:
            fired_branches.setdefault(entry.rule.id, set()).add(entry.engine_rule)
        for rule_id in fired_rules(assessment):
            fired_count[rule_id] = fired_count.get(rule_id, 0) + 1

    def branches(rule_id: str) -> tuple[str, ...]:
        return tuple(er.name for er in engine.program.branches(rule_id))

    result = []
    for rule in rulebook.rules:
        if rule.reasons:  # a grouping rule (D04) is covered through its reason rules
            own = tuple(b for r in rule.reasons for b in branches(r))
            done = tuple(b for r in rule.reasons for b in sorted(fired_branches.get(r, set())))
        else:
            own = branches(rule.id)
            done = tuple(b for b in own if b in fired_branches.get(rule.id, set()))
        result.append(RuleCoverage(rule.id, own, done, fired_count.get(rule.id, 0)))
    return Coverage(tuple(result), len(patients), ("rule examples", *sources))
