"""Small helpers shared by tests: how an assessment compares with the reference evaluator's result."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from typing import Any

from imt_cds import Assessment

TARGETED = {
    "REC_CRIZOTINIB_ALK": "alk",
    "REC_ALK_INHIBITOR_OFF_LABEL_AGE_REVIEW": "alk",
    "REC_NEXT_GEN_ALK_INHIBITOR_CONSIDER": "alk",
    "REC_ROS1_INHIBITOR_CONSIDER": "ros1",
    "REC_TRK_INHIBITOR": "ntrk",
    "REC_SELPERCATINIB_RET": "ret",
    "REC_RET_INHIBITOR_OFF_LABEL_AGE_REVIEW": "ret",
}
ALK_INHIBITORS = {code for code, gene in TARGETED.items() if gene == "alk"}


def derived_labels(assessment: Assessment) -> frozenset[str]:
    """Derived facts as the reference and vignettes name them ("CONTRADICTION:C1" per reason)."""
    return frozenset(f"{d.name}:{d.reason.id}" if d.reason else d.name for d in assessment.derived_facts)


def outcome(assessment: Assessment) -> dict[str, Any]:
    return {
        "findings": sorted(assessment.codes),
        "derived": sorted(derived_labels(assessment)),
        "suppressed": sorted(assessment.suppressed_codes),
    }


def without_time(assessment: Assessment) -> dict[str, Any]:
    data = assessment.to_dict()
    data["provenance"] = {k: v for k, v in data["provenance"].items() if k != "evaluated_at"}
    return data


def ended_within(seconds: float, function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)``'s result, computed in a forked process that is killed if it has not ended within
    ``seconds`` (the test then fails with ``multiprocessing.TimeoutError``): for a walk over data that holds itself,
    which a regression would make endless, filling the machine's memory instead of failing."""
    with multiprocessing.get_context("fork").Pool(1) as pool:  # (leaving the block terminates the process)
        return pool.apply_async(function, args).get(timeout=seconds)


def named_crizotinib_then_worse(patient: str, text: str) -> list[dict[str, Any]]:
    """For the example chart's patient (``patient``: "Patient/<id>"), crizotinib given as a MedicationStatement that
    names it in text only (``text``, e.g. its brand: no RxNorm ingredient code), and after it a disease status
    "worse" (mCODE, LOINC 97509-4; SNOMED CT 271299001) of the chart's IMT, Condition/imt-primary."""
    subject = {"reference": patient}
    return [{"resourceType": "MedicationStatement", "id": "xalkori", "status": "active", "subject": subject,
             "medicationCodeableConcept": {"text": text}, "effectiveDateTime": "2025-03-01"},
            {"resourceType": "Observation", "id": "worse", "status": "final", "subject": subject,
             "code": {"coding": [{"system": "http://loinc.org", "code": "97509-4"}]},
             "effectiveDateTime": "2026-01-05", "focus": [{"reference": "Condition/imt-primary"}],
             "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "271299001"}]}}]
