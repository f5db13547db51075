"""A recorded assessment document read back as objects, so the text renderers show a record exactly as they showed
the live assessment (``audit show`` prints the very consult note ``evaluate`` printed).

The objects are the assessment module's own immutable parts (``Finding``, ``Reason``...), rebuilt from the assessment
document kept in the record; nothing is re-evaluated. ``facts`` is None when only the input's sha256 was stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..core.assessment import AlsoFrom, DerivedFact, Finding, Provenance, Reason, RuleRef, Suppression
from ..core.evidence import EvidenceEntry
from ..core.facts import PatientFacts
from ..core.validation import parse_facts_json

__all__ = ["RecordedAssessment", "recorded_assessment"]


@dataclass(frozen=True)
class RecordedAssessment:
    """The read-only view of a recorded assessment that renderers use (the same attributes as ``Assessment``)."""

    patient_id: str | None
    facts: PatientFacts | None
    recommendations: tuple[Finding, ...]
    risk_flags: tuple[Finding, ...]
    derived_facts: tuple[DerivedFact, ...]
    suppressed: tuple[Suppression, ...]
    provenance: Provenance

    @property
    def findings(self) -> tuple[Finding, ...]:
        return self.recommendations + self.risk_flags


def recorded_assessment(document: Mapping[str, Any], canonical_input: bytes | None = None) -> RecordedAssessment:
    """Rebuild the objects of an assessment document (and, if given, its validated input facts)."""
    p = document["provenance"]
    return RecordedAssessment(
        patient_id=document["patient_id"],
        facts=parse_facts_json(canonical_input) if canonical_input is not None else None,
        recommendations=tuple(_finding(f) for f in document["recommendations"]),
        risk_flags=tuple(_finding(f) for f in document["risk_flags"]),
        derived_facts=tuple(_derived(d) for d in document["derived_facts"]),
        suppressed=tuple(_suppression(s) for s in document["suppressed"]),
        provenance=Provenance(p["rulebook"]["name"], p["rulebook"]["version"], p["rulebook"]["sha256"],
                              p["parameters"], p["engine"], p["input_sha256"], p["evaluated_at"],
                              p.get("diagnosis")),
    )


def _ref(data: Mapping[str, Any]) -> RuleRef:
    return RuleRef(data["id"], data["version"])


def _reason(data: Mapping[str, Any]) -> Reason:
    if "fact" in data:
        return Reason(fact=data["fact"], expected=data["expected"], actual=data["actual"],
                      parameter=data.get("parameter"))
    return Reason(derived=data["derived"], holds=data["holds"], reasons=tuple(data.get("reasons", ())))


def _evidence(data: Mapping[str, Any]) -> EvidenceEntry:
    return EvidenceEntry(id=data["id"], citation=data["citation"], claim=data["claim"],
                         verification=data["verification"], quote=data.get("quote"), level=data.get("level"),
                         source=data.get("source"))


def _finding(data: Mapping[str, Any]) -> Finding:
    return Finding(
        code=data["code"], kind=data["kind"], title=data["title"], summary=data["summary"],
        indicator=data.get("indicator"), strength=data["strength"], rule=_ref(data["rule"]),
        evidence=tuple(_evidence(e) for e in data["evidence"]),
        because=tuple(_reason(r) for r in data["because"]),
        also_from=tuple(AlsoFrom(_ref(a), tuple(a["evidence"]), tuple(_reason(r) for r in a["because"]))
                        for a in data.get("also_from", ())),
    )


def _derived(data: Mapping[str, Any]) -> DerivedFact:
    reason = data.get("reason")
    return DerivedFact(name=data["name"], rule=_ref(data["rule"]), because=tuple(_reason(r) for r in data["because"]),
                       reason=_ref(reason) if reason else None, reason_text=reason.get("text") if reason else None)


def _suppression(data: Mapping[str, Any]) -> Suppression:
    by = data["by"]
    return Suppression(finding=_finding(data["finding"]), by=_ref(by), fact=by["fact"],
                       reasons=tuple(data.get("reasons", ())), suppression_rule=_ref(data["suppression_rule"]))
