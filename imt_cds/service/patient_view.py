"""The answer to a patient-view call, made from the worker's reading and assessment: the cards (and the FHIR guidance
extension when asked for). Data in, data out (the assessment is read, never changed); run in the worker process
(``workers.py``), so the server's one process only passes the answer on. Imports nothing of the service but its
constants, so the worker can use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..core.assessment import Assessment
from ..render.cards import (
    cards_of_assessment,
    conflict_card,
    hook_instance_id,
    not_eligible_card,
    problems_card,
    sort_cards,
)
from ..render.fhir_output import assessment_bundle

__all__ = ["FHIR_GUIDANCE_EXTENSION", "not_eligible_cards", "patient_view_response"]

FHIR_GUIDANCE_EXTENSION = "urn:imt-cds:fhir-guidance"  # request it with {"extension": {<this>: true}}


def not_eligible_cards(read: Mapping[str, Any], hook_instance: str, wanted: bool) -> list[dict[str, Any]]:
    """No cards for a chart that may not be evaluated (no IMT diagnosis, deceased): a service called on every chart
    opened must stay silent about patients it is not for. One info card only when configured (``wanted``)."""
    if not wanted:
        return []
    card_id = hook_instance_id("not-eligible", hook_instance)
    return [not_eligible_card(read["eligibility"]["message"], evaluation_id=card_id)]


def patient_view_response(read: Mapping[str, Any], assessment: Assessment | None, evaluation_id: str | None, *,
                          hook_instance: str, public_url: str, not_eligible: bool,
                          fhir_guidance_endpoint: str | None) -> tuple[dict[str, Any], str | None]:
    """The answer to a patient-view call, from the FHIR reading (``FhirFacts.to_dict()``) and the assessment (None
    when conflicting resources prevented it); and the id the cards are known by for feedback (None when there are
    none to know: a chart not evaluated). Run in the worker process (data in, data out; the assessment is read,
    never changed). ``fhir_guidance_endpoint``: the service's URL when the client asked for the FHIR guidance
    extension."""
    if not read["eligibility"]["eligible"]:
        return {"cards": not_eligible_cards(read, hook_instance, not_eligible)}, None
    if assessment is None:
        evaluation_id = hook_instance_id("hook", hook_instance)
        cards = [conflict_card(read["problems"], evaluation_id=evaluation_id)]
    else:
        assert evaluation_id is not None
        cards = cards_of_assessment(assessment, evaluation_id=evaluation_id, sources=read["sources"],
                                    public_url=public_url, problems=read["problems"])
        problems = problems_card(read["problems"], evaluation_id=evaluation_id)
        if problems is not None:
            cards.insert(0, problems)
    response: dict[str, Any] = {"cards": sort_cards(cards)}
    if assessment is not None and fhir_guidance_endpoint is not None:
        bundle = assessment_bundle(assessment.to_card_dict(), request_id=hook_instance,
                                   service_endpoint=fhir_guidance_endpoint)
        response["extension"] = {FHIR_GUIDANCE_EXTENSION: bundle}
    return response, evaluation_id
