"""The two CDS services and what answering a hook call means, independent of the HTTP framework.

``imt-patient-view`` (hook ``patient-view``): the patient's FHIR record -> facts -> assessment -> one card per
finding, plus a card about what could not be read from the record (or, when conflicting resources prevent any
evaluation, one card saying so instead of findings). ``imt-order-sign`` (hook ``order-sign``): the targeted-drug
orders among ``context.draftOrders`` checked against the same record (``order_sign.py``).

A request is checked before anything is fetched or evaluated (``check_request``): a call this service cannot answer
is refused with a 400 naming what is wrong. Reading FHIR and evaluating happen in a worker process (``workers.py``);
fetching from ``fhirServer`` in ``prefetch.py``; cards are rendered by ``cards.py`` (for patient-view in the worker,
``patient_view.py``) and ``order_sign.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson

from ..core.rulebook import Rulebook
from ..fhir.reader import OBSERVATION_CODES
from ..render.cards import conflict_card, fact_origins, hook_instance_id, problems_card, sort_cards
from .config import ServiceConfig
from .errors import BadRequestError, NotFoundError, PrefetchUnavailableError
from .feedback import CardIndex
from .models import refuse, request_problems
from .order_sign import check_orders, targeted_orders
from .patient_view import FHIR_GUIDANCE_EXTENSION, not_eligible_cards
from .prefetch import Template, collect_resources
from .workers import WorkerPool

__all__ = [
    "DIAGNOSIS_ATTESTED_EXTENSION",
    "FHIR_GUIDANCE_EXTENSION",
    "SERVICES",
    "CdsService",
    "HookRunner",
    "check_request",
    "find_service",
]

# {"extension": {<this>: true}}: the caller established the IMT diagnosis outside the chart (recorded in provenance)
DIAGNOSIS_ATTESTED_EXTENSION = "urn:imt-cds:imt-diagnosis-attested"

PATIENT = Template("patient", "Patient/{{context.patientId}}", single=True)
CONDITIONS = Template("conditions", "Condition?patient={{context.patientId}}", single=False)
# Only the Observations imt_cds.fhir reads (its OBSERVATION_CODES: tumor size, genomic variants, the mCODE cM
# category, and any fact of the project's own code system, "system|" matching every code of that system).
OBSERVATIONS = Template(
    "observations",
    "Observation?patient={{context.patientId}}&code=" + ",".join(f"{s}|{c}" for s, c in OBSERVATION_CODES),
    single=False)
PROCEDURES = Template("procedures", "Procedure?patient={{context.patientId}}", single=False)


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
    problems = request_problems(body, service.hook, service.id)
    if problems:
        raise refuse(problems)
    return dict(body)


class HookRunner:
    """Answers hook calls: gathers the FHIR data, runs the worker job, renders the cards."""

    def __init__(self, config: ServiceConfig, pool: WorkerPool, rulebook: Rulebook, cards: CardIndex):
        self.config = config
        self.pool = pool
        self.rulebook = rulebook
        self.cards = cards

    async def answer(self, service: CdsService, request: Mapping[str, Any]) -> dict[str, Any] | orjson.Fragment:
        """The response to a hook call, for ``orjson.dumps`` (a patient-view one comes serialised already)."""
        if service.hook == "order-sign":
            return await self._order_sign(service, request)
        return await self._patient_view(service, request)

    async def _resources(self, service: CdsService, request: Mapping[str, Any]) -> list[Any]:
        resources = await collect_resources(
            service.prefetch, request, allowed_servers=self.config.fhir_servers, timeout=self.config.fhir_timeout,
            max_pages=self.config.fhir_max_pages, max_bytes=self.config.max_body_bytes,
            deadline=self.config.fhir_deadline, private_networks=self.config.fhir_private_networks)
        patient_id = request["context"]["patientId"]
        for resource in resources:
            if isinstance(resource, Mapping) and resource.get("resourceType") == "Patient" and resource.get(
                    "id") not in (None, patient_id):
                raise BadRequestError(f"the prefetched Patient/{resource.get('id')} is not the patient in "
                                      f"context ({patient_id}): nothing is evaluated on another patient's record")
        return resources

    async def _read(self, service: CdsService, request: Mapping[str, Any], op: str,
                    more: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The worker's answer to job ``op`` on the chart ("facts": its reading; "cards": the patient-view
        response); a chart whose patient cannot be established is refused here: 412 when the client sent no
        Patient, 400 otherwise."""
        resources = await self._resources(service, request)
        extension = request.get("extension") or {}
        result = await self.pool.run({"op": op, "resources": resources, "on": _today(),
                                      "patient_id": request["context"]["patientId"],
                                      "attested": extension.get(DIAGNOSIS_ATTESTED_EXTENSION) is True, **(more or {})})
        refused = result.get("refused")
        if refused is not None:
            if refused["reason"] == "no_patient":
                raise PrefetchUnavailableError(refused["message"], {"missing": {"patient": "no Patient resource"}})
            raise BadRequestError(refused["message"])
        return result

    def _not_eligible_cards(self, request: Mapping[str, Any], read: Mapping[str, Any]) -> list[dict[str, Any]]:
        return not_eligible_cards(read, str(request["hookInstance"]), self.config.not_eligible_card)

    async def _patient_view(self, service: CdsService, request: Mapping[str, Any]) -> orjson.Fragment:
        # The worker renders the cards too (``patient_view_response``): the one server process only passes them on.
        extension = request.get("extension") or {}
        guidance = extension.get(FHIR_GUIDANCE_EXTENSION) is True
        result = await self._read(service, request, "cards", {
            "hook_instance": str(request["hookInstance"]),
            "fhir_guidance_endpoint": self.config.service_url(f"/cds-services/{service.id}") if guidance else None})
        if result["evaluation_id"] is not None:
            # The cards as the index reads them (uuid, finding code): the worker sent only that and the bytes.
            self.cards.add(service.id, result["evaluation_id"],
                           [{"uuid": uuid, "source": {"topic": {"code": code}}} for uuid, code in result["index"]])
        return orjson.Fragment(result["raw"])  # the response as the worker serialised it: sent as it is

    async def _order_sign(self, service: CdsService, request: Mapping[str, Any]) -> dict[str, Any]:
        orders = targeted_orders(request["context"]["draftOrders"], self.rulebook.drugs)
        if not orders:
            return {"cards": []}  # nothing to check: no need to read the record at all
        result = await self._read(service, request, "facts")
        read = result["fhir"]
        if not read["eligibility"]["eligible"]:  # the checks are IMT knowledge: not for other patients
            return {"cards": self._not_eligible_cards(request, read)}
        check_id = hook_instance_id("order-sign", str(request["hookInstance"]))
        if read["facts"] is None:
            cards = [conflict_card(read["problems"], evaluation_id=check_id)]
        else:
            cards = check_orders(orders, read["facts"], fact_origins(read["sources"], read["problems"]),
                                 self.rulebook, check_id=check_id)
            paths = {"age_years"} | {f"molecular.{g}.status" for o in orders for g in o.drug.targets}
            problems = problems_card(read["problems"], evaluation_id=check_id, paths=paths)
            if problems is not None and cards:
                cards.insert(0, problems)
        cards = sort_cards(cards)
        self.cards.add(service.id, check_id, cards)
        return {"cards": cards}


def _today() -> str:
    return datetime.now(timezone.utc).date().isoformat()

