"""What answering a hook call means, independent of the HTTP framework (the services themselves: ``calls.py``).

``imt-patient-view`` (hook ``patient-view``): the patient's FHIR record -> facts -> assessment -> one card per
finding, plus a card about what could not be read from the record (or, when conflicting resources prevent any
evaluation, one card saying so instead of findings). ``imt-order-sign`` (hook ``order-sign``): the targeted-drug
orders among ``context.draftOrders`` checked against the same record (``order_sign.py``).

A request is checked before anything is fetched or evaluated (``calls.check_request``): a call this service cannot
answer is refused with a 400 naming what is wrong. Reading FHIR and evaluating happen in a worker process
(``workers.py``; for a patient-view call with its prefetch complete, the check too); fetching from ``fhirServer`` in
``prefetch.py``; cards are rendered by ``cards.py`` (for patient-view in the worker, ``patient_view.py``) and
``order_sign.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import orjson

from ..core.rulebook import Rulebook
from ..render.cards import conflict_card, fact_origins, hook_instance_id, problems_card, sort_cards
from .calls import CdsService, check_request, patient_view_options, read_job, same_patient
from .config import ServiceConfig
from .errors import BadRequestError, PrefetchUnavailableError
from .feedback import CardIndex
from .order_sign import check_orders, targeted_orders
from .patient_view import not_eligible_cards
from .prefetch import collect_resources
from .request_json import parse_request_json
from .workers import WorkerPool

__all__ = ["HookRunner"]


class HookRunner:
    """Answers hook calls: gathers the FHIR data, runs the worker job, renders the cards."""

    def __init__(self, config: ServiceConfig, pool: WorkerPool, rulebook: Rulebook, cards: CardIndex):
        self.config = config
        self.pool = pool
        self.rulebook = rulebook
        self.cards = cards

    async def answer(self, service: CdsService, body: bytes) -> dict[str, Any] | orjson.Fragment:
        """The response to a hook call given as its body's bytes, for ``orjson.dumps`` (a patient-view one comes
        serialised already).

        A patient-view body goes to a worker as it is: the worker parses and checks it as ``parse_request_json``,
        ``check_request`` and ``collect_resources`` would, with the same refusals, and answers with the cards when
        the prefetch holds every key. Parsing a chart is then done once, in a worker, instead of in this one process
        and again in the worker from the job's JSON. When keys are missing (to fetch from ``fhirServer``, or refused
        with a 412) this process reads the call itself; so it does for every other hook."""
        if service.hook == "patient-view":
            result = await self._run({"op": "hook", "service": service.id, "on": _today(),
                                      "guidance_endpoint": self._guidance_endpoint(service)}, body)
            if not result.get("fetch"):
                return self._patient_view_answer(service, result)
        request = check_request(parse_request_json(body), service)
        if service.hook == "order-sign":
            return await self._order_sign(service, request)
        return await self._patient_view(service, request)

    async def _resources(self, service: CdsService, request: Mapping[str, Any]) -> list[Any]:
        resources = await collect_resources(
            service.prefetch, request, allowed_servers=self.config.fhir_servers, timeout=self.config.fhir_timeout,
            max_pages=self.config.fhir_max_pages, max_bytes=self.config.max_body_bytes,
            deadline=self.config.fhir_deadline, private_networks=self.config.fhir_private_networks)
        same_patient(resources, request["context"]["patientId"])
        return resources

    async def _read(self, service: CdsService, request: Mapping[str, Any], op: str,
                    more: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The worker's answer to job ``op`` on the chart ("facts": its reading; "cards": the patient-view
        response)."""
        return await self._run(read_job(request, await self._resources(service, request), op, _today(), more))

    async def _run(self, job: dict[str, Any], body: bytes | None = None) -> dict[str, Any]:
        """The worker's answer to ``job``; a refusal it answered with raised here: the request's own (400, as the
        checks of this process word it), or a chart whose patient cannot be established (412 when the client sent
        no Patient, 400 otherwise)."""
        result = await self.pool.run(job, body)
        rejected = result.get("rejected")
        if rejected is not None:
            raise BadRequestError(rejected["message"], rejected.get("details"))
        refused = result.get("refused")
        if refused is not None:
            if refused["reason"] == "no_patient":
                raise PrefetchUnavailableError(refused["message"], {"missing": {"patient": "no Patient resource"}})
            raise BadRequestError(refused["message"])
        return result

    def _guidance_endpoint(self, service: CdsService) -> str:
        return self.config.service_url(f"/cds-services/{service.id}")

    def _not_eligible_cards(self, request: Mapping[str, Any], read: Mapping[str, Any]) -> list[dict[str, Any]]:
        return not_eligible_cards(read, str(request["hookInstance"]), self.config.not_eligible_card)

    async def _patient_view(self, service: CdsService, request: Mapping[str, Any]) -> orjson.Fragment:
        # The worker renders the cards too (``patient_view_response``): the one server process only passes them on.
        result = await self._read(service, request, "cards",
                                  patient_view_options(request, self._guidance_endpoint(service)))
        return self._patient_view_answer(service, result)

    def _patient_view_answer(self, service: CdsService, result: Mapping[str, Any]) -> orjson.Fragment:
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

