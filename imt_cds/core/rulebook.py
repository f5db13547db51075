"""The rulebook as an immutable value: rules, parameters and evidence (``rule_loader`` builds one from files).

A ``Rulebook`` carries a sha256 over its rules, parameters and evidence: the provenance of every assessment made
with it. Its rules are in catalogue order. Nothing here keeps module-level mutable state.
"""

from __future__ import annotations

import difflib
import itertools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .conditions import Condition, Literal_, literals
from .errors import UnknownRuleError
from .evidence import EvidenceRegistry
from .facts import PatientFacts
from .terminology import Terminology

__all__ = [
    "Drug",
    "Example",
    "FindingSpec",
    "INDICATORS",
    "Parameter",
    "Rule",
    "Rulebook",
    "finding_kind",
    "natural_key",
    "strength_labels",
]

SUMMARY_LIMIT = 140  # CDS Hooks card summaries must be shorter than this
INDICATORS = ("info", "warning", "critical")  # CDS Hooks card indicators a finding can declare
RXNORM_SYSTEM = "http://www.nlm.nih.gov/research/umls/rxnorm"
RULE_KINDS = ("derived_fact", "recommendation", "data_request", "risk_flag", "suppression")
FINDING_PREFIXES = MappingProxyType(
    {"REC_": "recommendation", "REQUEST_": "data_request", "RISK_": "risk_flag", "FLAG_": "flag"})
# Strength labels (listed in rules/README.md, A rule file), plus the two free readings the catalogue uses.
STRENGTH_LABELS = (
    "REG", "SA-TRIAL", "PROSP-REG", "OBS-MC", "OBS", "SR", "CASE", "NARR", "DESIGN",
    "conflicting", "absence of evidence",
)  # fmt: skip


def natural_key(rule_id: str) -> tuple[str, int, str, str]:
    """Catalogue order: by letter, then number, then variant (R02 < R10 < R19a < R19b).

    An id that is not capital letters then digits sorts as its whole text with number 0, so ``R`` comes before
    ``R1``. Ids that would still tie (``R1`` and ``R01``; ``R`` and ``R0``) are ordered by their plain text
    (``R01`` < ``R1``, ``R`` < ``R0``): distinct ids never tie, so the order is total and never depends on the
    order the ids came in (the rulebook's hash is taken over its rules sorted this way)."""
    match = re.match(r"^([A-Z]+)([0-9]+)(.*)$", rule_id)
    if not match:
        return (rule_id, 0, "", rule_id)
    return (match.group(1), int(match.group(2)), match.group(3), rule_id)


def finding_kind(code: str) -> str:
    for prefix, kind in FINDING_PREFIXES.items():
        if code.startswith(prefix):
            return kind
    raise ValueError(f"not a finding code: {code}")


@dataclass(frozen=True, slots=True)
class Parameter:
    name: str
    value: float
    unit: str | None
    meaning: str
    evidence: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FindingSpec:
    """A finding a rule produces: its code, texts (parameters already rendered), its card indicator, the gene and
    drugs it is about (rule metadata, from the rule file), and an optional extra condition (R35's infant flag)."""

    code: str
    title: str
    summary: str
    when: Condition | None = None
    # One of INDICATORS: the loader requires every finding to declare it. None only in a rulebook rebuilt from an
    # audit archive that was written before findings declared their indicator (rulebook 0.1.0, see rule_loader).
    indicator: str | None = "info"
    gene: str | None = None  # molecular.<gene> of the facts (alk, ros1, ntrk, ret) a targeted finding is about
    drugs: tuple[str, ...] = ()  # names of the rulebook's drug table (drugs.yaml)

    @property
    def kind(self) -> str:
        return finding_kind(self.code)


@dataclass(frozen=True, slots=True)
class Drug:
    """A targeted drug of the rulebook's drug table (``drugs.yaml``): what an order is recognised by (its RxNorm
    ingredient code where one was verified, else only its names), the alterations its use rests on, and the
    parameter holding its lowest labelled age for a target."""

    name: str  # the ingredient, lower case
    brands: tuple[str, ...]
    targets: tuple[str, ...]  # molecular.<gene> of the facts
    inhibitor_class: str
    label_min_age: Mapping[str, str]  # target -> rulebook parameter (minimum age, years)
    evidence: tuple[str, ...]
    rxnorm: str | None = None  # RxNorm ingredient code (system RXNORM_SYSTEM); None: matched by name only
    rxnorm_source: str | None = None  # where the code was verified

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.brands)


@dataclass(frozen=True, slots=True)
class Example:
    """A patient a rule must fire on (``fires``) or stay silent on, with optional expectations about the output."""

    name: str
    facts: Mapping[str, Any]
    patient: PatientFacts
    fires: bool
    expect: tuple[str, ...] = ()
    expect_not: tuple[str, ...] = ()
    expect_suppressed: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Rule:
    """One entry of the catalogue. Exactly one of these holds:
    - ``findings``: it produces findings (recommendations, data requests, flags);
    - ``derives``: it asserts a derived fact (``reason`` set for one reason of a multi-reason fact like D04's);
    - ``reasons``: it groups the reason rules that each derive its fact (D04 and C1–C4);
    - ``suppresses``: it suppresses the findings of the listed rules when its (derived) condition holds.
    """

    id: str
    version: str
    title: str
    kind: str
    strength: str
    evidence: tuple[str, ...]
    file: str
    when: Condition | None
    findings: tuple[FindingSpec, ...] = ()
    derives: str | None = None
    reason: str | None = None  # for a reason rule: its text ("C3: margin status recorded but no surgery")
    part_of: str | None = None  # for a reason rule: the rule it is a reason of (D04)
    reasons: tuple[str, ...] = ()
    suppresses: tuple[str, ...] = ()
    examples: tuple[Example, ...] = ()
    description: str | None = None

    @property
    def ref(self) -> dict[str, str]:
        return {"id": self.id, "version": self.version}

    @property
    def strength_labels(self) -> tuple[str, ...]:
        return strength_labels(self.strength)

    @property
    def is_design(self) -> bool:
        """A safety or data-quality choice of this library, with no clinical claim (needs no evidence)."""
        return "DESIGN" in self.strength_labels

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(f.code for f in self.findings)

    @property
    def conditions(self) -> tuple[Condition, ...]:
        """The rule's conditions that are set: its ``when``, then each finding's own ``when``."""
        return tuple(c for c in (self.when, *(f.when for f in self.findings)) if c is not None)

    @property
    def literals(self) -> tuple[Literal_, ...]:
        """Every literal (fact test or derived-fact test) of the rule's conditions, once each, in source order."""
        return tuple(dict.fromkeys(itertools.chain.from_iterable(literals(c) for c in self.conditions)))


@dataclass(frozen=True)
class Rulebook:
    """A loaded, checked rulebook. Immutable; build one with ``load_rulebook``."""

    name: str
    version: str
    title: str
    parameters: Mapping[str, Parameter]
    rules: tuple[Rule, ...]  # catalogue order; reason rules (C1–C4) follow the rule they belong to
    evidence: EvidenceRegistry
    sha256: str
    source: Mapping[str, Any] = field(repr=False)  # the canonical data the hash is over (for archiving)
    directory: Path | None = None
    terminology: Terminology = field(default_factory=lambda: Terminology(MappingProxyType({})))  # value sets
    drugs: Mapping[str, Drug] = field(default_factory=lambda: MappingProxyType({}))  # drugs.yaml, by name

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", MappingProxyType({r.id: r for r in self.rules}))
        deriving: dict[str, list[Rule]] = {}
        suppressors: dict[str, list[Rule]] = {}
        for rule in self.rules:
            if rule.derives and not rule.reasons:
                deriving.setdefault(rule.derives, []).append(rule)
            for target in rule.suppresses:
                suppressors.setdefault(target, []).append(rule)
        object.__setattr__(self, "_deriving", {name: tuple(rules) for name, rules in deriving.items()})
        object.__setattr__(self, "_suppressors", {rule_id: tuple(rules) for rule_id, rules in suppressors.items()})

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def rule(self, rule_id: str) -> Rule:
        """The rule with this id; ``UnknownRuleError`` (a ``KeyError``) naming the closest id when there is none."""
        try:
            return self._by_id[rule_id]  # type: ignore[attr-defined, no-any-return]
        except (KeyError, TypeError):
            close = difflib.get_close_matches(str(rule_id), [r.id for r in self.rules], n=1)
            raise UnknownRuleError(rule_id, close[0] if close else None) from None

    def get(self, rule_id: str) -> Rule | None:
        return self._by_id.get(rule_id)  # type: ignore[attr-defined, no-any-return]

    @property
    def parameter_values(self) -> dict[str, float]:
        return {name: p.value for name, p in self.parameters.items()}

    def producers(self, code: str) -> tuple[Rule, ...]:
        """Rules that can produce a finding code, in catalogue order."""
        return tuple(r for r in self.rules if code in r.codes)

    def deriving(self, name: str) -> tuple[Rule, ...]:
        """Rules whose own condition derives a fact, in catalogue order (for a multi-reason fact like CONTRADICTION:
        its reason rules C1..., not the grouping rule D04)."""
        return self._deriving.get(name, ())  # type: ignore[attr-defined, no-any-return]

    def suppressors(self, rule_id: str) -> tuple[Rule, ...]:
        """Suppression rules that suppress the findings of a rule, in catalogue order."""
        return self._suppressors.get(rule_id, ())  # type: ignore[attr-defined, no-any-return]

    def finding(self, code: str) -> FindingSpec:
        """The specification of a finding code (the first rule producing it, in catalogue order)."""
        for rule in self.rules:
            for spec in rule.findings:
                if spec.code == code:
                    return spec
        raise KeyError(f"rulebook {self.name} has no finding {code}")

    @property
    def finding_codes(self) -> tuple[str, ...]:
        return tuple(sorted({c for r in self.rules for c in r.codes}))

    @property
    def derived_names(self) -> tuple[str, ...]:
        return tuple(sorted({r.derives for r in self.rules if r.derives}))


def strength_labels(strength: str) -> tuple[str, ...]:
    """``"REG + SA-TRIAL (PDQ level C3)"`` -> ``("REG", "SA-TRIAL")``: the labels, without the note."""
    head = strength.split("(", 1)[0]
    return tuple(part.strip() for part in head.split("+") if part.strip())
