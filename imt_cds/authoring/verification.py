"""``imt-cds rules verify``: checks over the whole input space, not by sampling.

For a rulebook, with the formulas of ``symbolic``:
- every rule (and every finding a rule produces only under an extra condition) can fire for some patient;
- every branch of a rule's condition can match (an unmatchable branch is reported as a warning);
- no rule is redundant, i.e. always accompanied by another rule producing the same finding;
- no pair of findings that the catalogue says must never co-occur can appear together;
- every safety property (``SAFETY_PROPERTIES`` below, numbered as `rules verify` reports them) holds.

The safety properties are fixed clinical facts written here, not derived from the rulebook's parameters: a copy of
the rulebook with ``crizotinib_min_age_years: 0`` must fail property 6. A violated check comes with a minimal
counterexample (the patient differing least from the defaults), which is then evaluated on the real engine to
confirm the violation concretely; a counterexample the engine does not confirm is reported as an internal error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import z3

from ..core.assessment import Assessment
from ..core.conditions import to_dnf
from ..core.engine import Engine
from ..core.fact_fields import fusion_genes
from ..core.rulebook import Rulebook
from .symbolic import Encoding, SymbolicPatient, canonical_model, gene_symbols, solver_for

__all__ = ["Check", "EXCLUSIVE_PAIRS", "SAFETY_PROPERTIES", "verify"]

TARGETED = MappingProxyType({
    "REC_CRIZOTINIB_ALK": "alk",
    "REC_ALK_INHIBITOR_OFF_LABEL_AGE_REVIEW": "alk",
    "REC_NEXT_GEN_ALK_INHIBITOR_CONSIDER": "alk",
    "REC_ROS1_INHIBITOR_CONSIDER": "ros1",
    "REC_TRK_INHIBITOR": "ntrk",
    "REC_SELPERCATINIB_RET": "ret",
    "REC_RET_INHIBITOR_OFF_LABEL_AGE_REVIEW": "ret",
})
ALK_INHIBITORS = tuple(code for code, gene in TARGETED.items() if gene == "alk")
RECURRENCE_PREDICTORS = ("RISK_RESPIRATORY_SYMPTOMS", "RISK_TUMOR_SIZE_ABOVE_COHORT_MEDIAN", "RISK_DISTANT_DISEASE")
GENES = fusion_genes()  # alk, ros1, ntrk, ret, pdgfrb

# Findings that must never appear together, and why (the safety property that says so, or the reason).
EXCLUSIVE_PAIRS = (
    ("REC_UPFRONT_SURGICAL_RESECTION", "REC_AVOID_MUTILATING_SURGERY", "safety property 12"),
    ("REC_CRIZOTINIB_ALK", "REC_ALK_INHIBITOR_OFF_LABEL_AGE_REVIEW", "R32a/R32b split on the label age"),
    ("REC_SELPERCATINIB_RET", "REC_RET_INHIBITOR_OFF_LABEL_AGE_REVIEW", "R36a/R36b split on the label age"),
    ("REC_CRIZOTINIB_ALK", "REC_NEXT_GEN_ALK_INHIBITOR_CONSIDER", "safety property 15"),
    ("REC_UPFRONT_SURGICAL_RESECTION", "REC_POSTTREATMENT_SURVEILLANCE", "upfront surgery is before any surgery"),
)


@dataclass
class Check:
    """The outcome of one check. ``status``: holds | violated | warning | not_checked."""

    name: str
    description: str
    status: str
    detail: str | None = None
    counterexample: dict[str, Any] | None = None
    counterexample_after: dict[str, Any] | None = None  # the second patient of a two-patient property
    confirmed_by_engine: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "description": self.description, "status": self.status,
                                "detail": self.detail}
        if self.counterexample is not None:
            data["counterexample"] = self.counterexample
            if self.counterexample_after is not None:
                data["counterexample_after"] = self.counterexample_after
            data["confirmed_by_engine"] = self.confirmed_by_engine
        return data


@dataclass(frozen=True)
class _Property:
    number: int
    text: str
    # (encoding, p, q) -> the formula of a violation; q is None for one-patient properties (typed Any: a two-patient
    # property's formula reads q, which its check always gives)
    violation: Callable[[Encoding, SymbolicPatient, Any], Any] | None
    # (before, after) -> True when the concrete assessments violate the property
    concrete: Callable[[Assessment, Assessment | None], bool] | None
    # for two-patient properties: the fields that may differ between the patients
    varies: tuple[str, ...] = ()
    relation: Callable[[SymbolicPatient, SymbolicPatient], Any] | None = None
    note: str | None = None


def _status_is(p: SymbolicPatient, gene: str, status: str) -> Any:
    return p.equals(f"molecular.{gene}.status", status)


def _age_known(p: SymbolicPatient) -> Any:
    return p.vars["age_years"][0]


def _age_below(p: SymbolicPatient, years: int) -> Any:
    known, value = p.vars["age_years"]
    return z3.Or(z3.Not(known), value < years)


def _any(enc: Encoding, p: SymbolicPatient, codes: Any) -> Any:
    return z3.Or([enc.emitted(p, c) for c in codes])


SAFETY_PROPERTIES: tuple[_Property, ...] = (
    _Property(1, "Every emitted finding carries resolvable evidence or comes from a DESIGN rule.",
              lambda e, p, q: z3.Or([e.emission(p, r, s)
                                     for r in e.rulebook.rules for s in r.findings
                                     if not r.is_design and not (r.evidence and all(x in e.rulebook.evidence
                                                                                   for x in r.evidence))]),
              lambda a, b: any(not (a.rulebook.rule(f.rule.id).is_design or f.evidence) for f in a.findings)),
    _Property(2, "No targeted recommendation without the matching alteration positive.",
              lambda e, p, q: z3.Or([z3.And(e.emitted(p, c), z3.Not(_status_is(p, g, "positive")))
                                     for c, g in TARGETED.items()]),
              lambda a, b: any(getattr(a.facts.molecular, g).status != "positive"
                               for c, g in TARGETED.items() if c in a.codes)),
    _Property(3, "No ALK-inhibitor recommendation when ALK is negative or unknown.",
              lambda e, p, q: z3.And(_any(e, p, ALK_INHIBITORS), z3.Not(_status_is(p, "alk", "positive"))),
              lambda a, b: bool(a.codes & set(ALK_INHIBITORS)) and a.facts.molecular.alk.status != "positive"),
    _Property(4, "REC_MULTIDISCIPLINARY_REVIEW is always present.",
              lambda e, p, q: z3.Not(e.emitted(p, "REC_MULTIDISCIPLINARY_REVIEW")),
              lambda a, b: "REC_MULTIDISCIPLINARY_REVIEW" not in a.codes),
    _Property(5, "FLAG_CONTRADICTORY_INPUT implies no REC_* other than REC_MULTIDISCIPLINARY_REVIEW.",
              lambda e, p, q: z3.And(e.emitted(p, "FLAG_CONTRADICTORY_INPUT"),
                                     _any(e, p, [c for c in e.rulebook.finding_codes
                                                 if c.startswith("REC_") and c != "REC_MULTIDISCIPLINARY_REVIEW"])),
              lambda a, b: "FLAG_CONTRADICTORY_INPUT" in a.codes and any(
                  c.startswith("REC_") and c != "REC_MULTIDISCIPLINARY_REVIEW" for c in a.codes)),
    _Property(6, "REC_CRIZOTINIB_ALK needs age >= 1, REC_SELPERCATINIB_RET age >= 2, any targeted one a known age.",
              lambda e, p, q: z3.Or(z3.And(e.emitted(p, "REC_CRIZOTINIB_ALK"), _age_below(p, 1)),
                                    z3.And(e.emitted(p, "REC_SELPERCATINIB_RET"), _age_below(p, 2)),
                                    z3.And(_any(e, p, TARGETED), z3.Not(_age_known(p)))),
              lambda a, b: (("REC_CRIZOTINIB_ALK" in a.codes and (a.facts.age_years is None or a.facts.age_years < 1))
                            or ("REC_SELPERCATINIB_RET" in a.codes
                                and (a.facts.age_years is None or a.facts.age_years < 2))
                            or (bool(a.codes & TARGETED.keys()) and a.facts.age_years is None))),
    _Property(7, "Any targeted recommendation implies ADVANCED_DISEASE.",
              lambda e, p, q: z3.And(_any(e, p, TARGETED), z3.Not(e.derived(p, "ADVANCED_DISEASE"))),
              lambda a, b: bool(a.codes & TARGETED.keys()) and "ADVANCED_DISEASE" not in a.derived_names),
    _Property(8, "For valid sizes, a larger tumor never loses a RISK_* flag.",
              lambda e, p, q: z3.Or([z3.And(e.emitted(p, c), z3.Not(e.emitted(q, c)))
                                     for c in e.rulebook.finding_codes if c.startswith("RISK_")]),
              lambda a, b: b is not None and not {c for c in a.codes if c.startswith("RISK_")} <= set(b.codes),
              varies=("tumor.size_cm",),
              relation=lambda p, q: z3.And(p.vars["tumor.size_cm"][0], q.vars["tumor.size_cm"][0],
                                           p.vars["tumor.size_cm"][1] < q.vars["tumor.size_cm"][1])),
    _Property(9, "Respiratory symptoms or distant disease turning from false to true never remove a RISK_* flag.",
              lambda e, p, q: z3.Or([z3.And(e.emitted(p, c), z3.Not(e.emitted(q, c)))
                                     for c in e.rulebook.finding_codes if c.startswith("RISK_")]),
              lambda a, b: b is not None and not {c for c in a.codes if c.startswith("RISK_")} <= set(b.codes),
              varies=("symptoms.respiratory", "tumor.distant_disease"),
              relation=lambda p, q: z3.Or(*[
                  z3.And(p.equals(f, False), q.equals(f, True), p.vars[other] == q.vars[other])
                  for f, other in (("symptoms.respiratory", "tumor.distant_disease"),
                                   ("tumor.distant_disease", "symptoms.respiratory"))])),
    _Property(10, "Changing the margin status never changes the recurrence-predictor risk flags.",
              lambda e, p, q: z3.Or([e.emitted(p, c) != e.emitted(q, c) for c in RECURRENCE_PREDICTORS]),
              lambda a, b: b is not None and (set(a.codes) & set(RECURRENCE_PREDICTORS))
              != (set(b.codes) & set(RECURRENCE_PREDICTORS)),
              varies=("history.margin_status",),
              relation=lambda p, q: z3.BoolVal(True)),
    _Property(11, "Without a contradiction before and after, a fusion status going from negative to unknown never "
                  "adds a targeted recommendation.",
              lambda e, p, q: z3.And(z3.Not(e.derived(p, "CONTRADICTION")), z3.Not(e.derived(q, "CONTRADICTION")),
                                     z3.Or([z3.And(e.emitted(q, c), z3.Not(e.emitted(p, c))) for c in TARGETED])),
              lambda a, b: b is not None and "CONTRADICTION" not in a.derived_names
              and "CONTRADICTION" not in b.derived_names and bool((set(b.codes) - set(a.codes)) & TARGETED.keys()),
              varies=tuple(f"molecular.{g}.status" for g in GENES),
              relation=lambda p, q: z3.Or(*[z3.And(_status_is(p, g, "negative"), _status_is(q, g, "unknown"),
                                                   *[p.vars[f"molecular.{o}.status"] == q.vars[f"molecular.{o}.status"]
                                                     for o in GENES if o != g]) for g in GENES])),
    _Property(12, "REC_UPFRONT_SURGICAL_RESECTION never with REC_AVOID_MUTILATING_SURGERY, after surgery, or unless "
                  "distant disease is known to be absent.",
              lambda e, p, q: z3.And(e.emitted(p, "REC_UPFRONT_SURGICAL_RESECTION"), z3.Or(
                  e.emitted(p, "REC_AVOID_MUTILATING_SURGERY"), p.vars["history.surgery_done"],
                  z3.Not(p.equals("tumor.distant_disease", False)))),
              lambda a, b: "REC_UPFRONT_SURGICAL_RESECTION" in a.codes and (
                  "REC_AVOID_MUTILATING_SURGERY" in a.codes or a.facts.history.surgery_done
                  or a.facts.tumor.distant_disease is not False)),
    _Property(13, "REQUEST_AGE iff age null; REQUEST_TUMOR_SIZE iff size null; REQUEST_ALK_TESTING iff ALK unknown.",
              lambda e, p, q: z3.Or(e.emitted(p, "REQUEST_AGE") != z3.Not(_age_known(p)),
                                    e.emitted(p, "REQUEST_TUMOR_SIZE") != z3.Not(p.vars["tumor.size_cm"][0]),
                                    e.emitted(p, "REQUEST_ALK_TESTING") != _status_is(p, "alk", "unknown")),
              lambda a, b: (("REQUEST_AGE" in a.codes) != (a.facts.age_years is None)
                            or ("REQUEST_TUMOR_SIZE" in a.codes) != (a.facts.tumor.size_cm is None)
                            or ("REQUEST_ALK_TESTING" in a.codes) != (a.facts.molecular.alk.status == "unknown"))),
    _Property(14, "Determinism: the same input gives the same output, whatever the key order or history.",
              None, None,
              note="a property of the engine, not of a rulebook: established by its design (fresh session per "
                   "patient, order-independent assembly) and proved by the test suite (property 14 and the "
                   "stateful test); not checkable here"),
    _Property(15, "No REC_CRIZOTINIB_ALK after progression on an ALK inhibitor.",
              lambda e, p, q: z3.And(e.emitted(p, "REC_CRIZOTINIB_ALK"), p.vars["history.progressed_on_alk_inhibitor"]),
              lambda a, b: "REC_CRIZOTINIB_ALK" in a.codes and a.facts.history.progressed_on_alk_inhibitor),
)


@dataclass
class _Context:
    encoding: Encoding
    engine: Engine
    checks: list[Check] = field(default_factory=list)

    @property
    def rulebook(self) -> Rulebook:
        return self.encoding.rulebook


def verify(rulebook: Rulebook) -> list[Check]:
    """Run every check; the result lists them all, holding or not."""
    encoding = Encoding(rulebook, gene_symbols([rulebook]))
    context = _Context(encoding, Engine(rulebook))
    _reachability(context)
    _redundancy(context)
    _exclusive_pairs(context)
    for prop in SAFETY_PROPERTIES:
        context.checks.append(_safety(context, prop))
    return context.checks


# --- solving ------------------------------------------------------------------------------------------------------


def _satisfiable(formula: Any, *patients: SymbolicPatient) -> bool:
    """Whether some valid patients satisfy the formula."""
    return bool(solver_for(formula, *patients).check() == z3.sat)


def _counterexample(formula: Any, *patients: SymbolicPatient) -> Any | None:
    """A model of the formula over valid patients, fewest fields away from their defaults, or None: the canonical
    one, so the counterexample printed is the same on every call (see ``canonical_model``)."""
    return canonical_model(formula, *patients)


# --- the checks ---------------------------------------------------------------------------------------------------


def _reachability(context: _Context) -> None:
    encoding = context.encoding
    p = encoding.patient()
    for rule in context.rulebook.rules:
        if rule.suppresses:
            formula = z3.And(z3.Or([encoding.fires(p, context.rulebook.rule(t)) for t in rule.suppresses]),
                             encoding.condition(p, rule.when))
        else:
            formula = encoding.fires(p, rule)
        name = f"rule {rule.id} can fire"
        if not _satisfiable(formula, p):
            context.checks.append(Check(name, f"{rule.id} ({rule.title}) applies to some patient", "violated",
                                        f"no valid patient satisfies the condition of {rule.id}: it can never fire"))
            continue
        context.checks.append(Check(name, f"{rule.id} ({rule.title}) applies to some patient", "holds"))
        for spec in rule.findings:
            if spec.when is not None and not _satisfiable(encoding.fires(p, rule, spec), p):
                context.checks.append(Check(f"rule {rule.id} can produce {spec.code}",
                                            f"{rule.id} produces {spec.code} for some patient", "violated",
                                            f"the extra condition of {spec.code} can never hold when {rule.id} fires"))
        if rule.when is not None and not rule.suppresses:
            branches = to_dnf(rule.when)
            for index, branch in enumerate(branches if len(branches) > 1 else ()):
                formula = z3.And([encoding.condition(p, literal) for literal in branch])
                if not _satisfiable(formula, p):
                    readable = " and ".join(literal.describe() for literal in branch)
                    context.checks.append(Check(f"rule {rule.id} branch {index}", f"branch of {rule.id}", "warning",
                                                f"this branch of {rule.id} can never match: {readable}"))


def _redundancy(context: _Context) -> None:
    encoding = context.encoding
    p = encoding.patient()
    for code in context.rulebook.finding_codes:
        producers = context.rulebook.producers(code)
        for a in producers:
            # a is redundant when it can emit the code, and whenever it does, another rule b does too
            others = [b for b in producers if b is not a]
            if not others:
                continue
            a_emits = encoding.emits(p, a, code)
            if not _satisfiable(a_emits, p):
                continue
            for b in others:
                if not _satisfiable(z3.And(a_emits, z3.Not(encoding.emits(p, b, code))), p):
                    context.checks.append(Check(f"rule {a.id} is not redundant", f"{a.id} adds {code} on its own",
                                                "violated", f"whenever {a.id} produces {code}, {b.id} does too: "
                                                            f"{a.id} is redundant"))
    context.checks.append(Check("no redundant rules", "no rule is always accompanied by another with the same "
                                "finding", "violated" if any(c.name.endswith("is not redundant")
                                                             for c in context.checks) else "holds"))


def _exclusive_pairs(context: _Context) -> None:
    encoding = context.encoding
    p = encoding.patient()
    for first, second, source in EXCLUSIVE_PAIRS:
        name = f"{first} never with {second}"
        model = _counterexample(z3.And(encoding.emitted(p, first), encoding.emitted(p, second)), p)
        if model is None:
            context.checks.append(Check(name, f"must never co-occur ({source})", "holds"))
            continue
        patient = p.read(model)
        codes = context.engine.evaluate(patient).codes
        context.checks.append(Check(name, f"must never co-occur ({source})", "violated",
                                    "both can be produced for one patient", patient, None,
                                    first in codes and second in codes))


def _safety(context: _Context, prop: _Property) -> Check:
    name = f"safety property {prop.number}"
    if prop.violation is None:
        return Check(name, prop.text, "not_checked", prop.note)
    encoding = context.encoding
    p = encoding.patient("p")
    if not prop.varies:
        model = _counterexample(prop.violation(encoding, p, None), p)
        if model is None:
            return Check(name, prop.text, "holds")
        patient = p.read(model)
        assessment = context.engine.evaluate(patient)
        confirmed = prop.concrete(assessment, None) if prop.concrete else None
        return Check(name, prop.text, "violated", _violation_detail(assessment, None), patient, None, confirmed)
    q = encoding.patient("q")
    assert prop.relation is not None
    formula = z3.And(p.same_as(q, except_=prop.varies), prop.relation(p, q), prop.violation(encoding, p, q))
    model = _counterexample(formula, p, q)
    if model is None:
        return Check(name, prop.text, "holds")
    before, after = p.read(model), q.read(model)
    a, b = context.engine.evaluate(before), context.engine.evaluate(after)
    confirmed = prop.concrete(a, b) if prop.concrete else None
    return Check(name, prop.text, "violated", _violation_detail(a, b), before, after, confirmed)


def _violation_detail(before: Assessment, after: Assessment | None) -> str:
    if after is None:
        return "the engine gives: " + ", ".join(sorted(before.codes))
    gained = sorted(set(after.codes) - set(before.codes))
    lost = sorted(set(before.codes) - set(after.codes))
    return f"from the first patient to the second, the engine adds {gained or 'nothing'} and drops {lost or 'nothing'}"
