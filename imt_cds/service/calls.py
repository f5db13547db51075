"""The two CDS services and what a hook call asks of them, apart from the server: their definitions and prefetch
templates, the check of a request (``check_request``: a call this service cannot answer is refused with a 400 naming
what is wrong), and the worker job a call makes.

Both sides use it: the server's ``HookRunner`` (``hooks.py``) and the worker that parses a patient-view call's body
itself (``workers.py``), so a call is checked with the same functions and refused with the same words wherever it
is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..fhir.reader import OBSERVATION_CODES
from .errors import BadRequestError, NotFoundError
from .models import refuse, request_problems, shown_value
from .patient_view import FHIR_GUIDANCE_EXTENSION
from .prefetch import Template

__all__ = [
    "DIAGNOSIS_ATTESTED_EXTENSION",
    "SERVICES",
    "CdsService",
    "check_request",
    "find_service",
    "patient_view_options",
    "read_job",
    "same_patient",
]

# {"extension": {<this>: true}}: the caller established the IMT diagnosis outside the chart (recorded in provenance)
DIAGNOSIS_ATTESTED_EXTENSION = "urn:imt-cds:imt-diagnosis-attested"

PATIENT = Template("patient", "Patient/{{context.patientId}}")
CONDITIONS = Template("conditions", "Condition?patient={{context.patientId}}")
# Only the Observations imt_cds.fhir reads (its OBSERVATION_CODES: tumor size, genomic variants, the mCODE cM
# category, and any fact of the project's own code system, "system|" matching every code of that system).
OBSERVATIONS = Template(
    "observations",
    "Observation?patient={{context.patientId}}&code=" + ",".join(f"{s}|{c}" for s, c in OBSERVATION_CODES))
PROCEDURES = Template("procedures", "Procedure?patient={{context.patientId}}")


@dataclass(frozen=True)
class CdsService:
    id: str
    hook: str
    title: str
    description: str
    prefetch: tuple[Template, ...]
    usage: str

    def discovery(self) -> dict[str, Any]:
        return {
            "hook": self.hook,
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "prefetch": {t.key: t.query for t in self.prefetch},
            "usageRequirements": self.usage,
        }


SERVICES: tuple[CdsService, ...] = (
    CdsService(
        "imt-patient-view", "patient-view",
        "IMT decision support (inflammatory myofibroblastic tumor)",
        "Explained, evidence-linked recommendations, data requests and risk flags for a patient with an "
        "inflammatory myofibroblastic tumor, from the mCODE / Genomics Reporting record. Decision support for a "
        "multidisciplinary team, never a prescription.",
        (PATIENT, CONDITIONS, OBSERVATIONS, PROCEDURES),
        "Reads FHIR R4 mCODE and Genomics Reporting resources; facts without a standard element come from "
        "Observations coded urn:imt-cds:fact. Prefetch, or a fhirServer with a token, is required."),
    CdsService(
        "imt-order-sign", "order-sign",
        "IMT targeted-drug order check",
        "Checks draft orders of ALK, ROS1, TRK and RET inhibitors against the patient's documented alterations "
        "and the drugs' labelled ages, and warns with the reason when they do not fit.",
        (PATIENT, CONDITIONS, OBSERVATIONS),
        "Reads context.draftOrders (MedicationRequest) and the patient's age and genomic results; prefetch, or "
        "a fhirServer with a token, is needed only when a targeted drug is ordered."),
)


def find_service(service_id: str) -> CdsService:
    for service in SERVICES:
        if service.id == service_id:
            return service
    raise NotFoundError(f"no CDS service {service_id!r} here; the services are "
                        f"{', '.join(s.id for s in SERVICES)} (see /cds-services)")


def check_request(body: Any, service: CdsService) -> dict[str, Any]:
    """The request if it is a CDS Hooks call this service can answer; ``BadRequestError`` naming every field path
    that is wrong and what it allows otherwise (the models are in ``models.py``)."""
    problems = request_problems(body, service.hook, service.id) + _extension_problems(body)
    if problems:
        raise refuse(problems)
    return dict(body)


# This service's own request extensions, each a switch: only JSON true turns it on. Any other value is refused
# rather than read as off: "true" (text) meant as an attestation must not silently leave a patient without advice,
# nor 1 turn the attestation on.
_SWITCH_EXTENSIONS = (DIAGNOSIS_ATTESTED_EXTENSION, FHIR_GUIDANCE_EXTENSION)


def _extension_problems(body: Any) -> list[dict[str, str]]:
    extension = body.get("extension") if isinstance(body, Mapping) else None
    if not isinstance(extension, Mapping):
        return []  # (none, or not an object: the models say so)
    return [{"path": f"extension.{url}", "message": f"extension.{url} must be true or false, not "
                                                    f"{shown_value(extension[url])}"}
            for url in _SWITCH_EXTENSIONS if url in extension and type(extension[url]) is not bool]


def same_patient(resources: list[Any], patient_id: str) -> None:
    """``BadRequestError`` when the resources hold a Patient other than the one in context."""
    for resource in resources:
        if isinstance(resource, Mapping) and resource.get("resourceType") == "Patient" and resource.get(
                "id") not in (None, patient_id):
            raise BadRequestError(f"the prefetched Patient/{resource.get('id')} is not the patient in context "
                                  f"({patient_id}): nothing is evaluated on another patient's record")


def read_job(request: Mapping[str, Any], resources: list[Any], op: str, on: str,
             more: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The worker job reading a call's resources: ``op`` "facts" (the reading) or "cards" (the patient-view answer,
    ``more`` from ``patient_view_options``)."""
    extension = request.get("extension") or {}
    return {"op": op, "resources": resources, "on": on, "patient_id": request["context"]["patientId"],
            "attested": extension.get(DIAGNOSIS_ATTESTED_EXTENSION) is True, **(more or {})}


def patient_view_options(request: Mapping[str, Any], guidance_endpoint: str) -> dict[str, Any]:
    """What a patient-view answer needs besides the chart: the hook instance (card ids) and, when the client asked
    for the FHIR guidance extension, the service's URL (``guidance_endpoint``)."""
    extension = request.get("extension") or {}
    return {"hook_instance": str(request["hookInstance"]),
            "fhir_guidance_endpoint": guidance_endpoint if extension.get(FHIR_GUIDANCE_EXTENSION) is True else None}
