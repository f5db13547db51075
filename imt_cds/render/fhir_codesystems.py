"""The project's own code systems (``urn:imt-cds:*``) as FHIR R4 ``CodeSystem`` resources.

Codings in the FHIR export (``fhir_output``), the FHIR input (``fhir``) and the CDS Hooks cards (``service.cards``)
name these systems by their canonical URL. Each CodeSystem here is built from the source the code comes from, never
from a copy kept by hand:

=================================  ===================================================  =======================
``urn:imt-cds:finding-code``       the rulebook's findings (code, title, kind, rules)    version: the rulebook's
``urn:imt-cds:fact``               the fact catalogue (``fact_fields``, read off the     version: imt-cds's
                                   input models): the codes of fact Observations
``urn:imt-cds:test-method``        the facts model's ``TestMethod`` values               version: imt-cds's
``urn:imt-cds:service-card``       ``service.cards.ServiceCard`` (cards of the service   version: imt-cds's
                                   that are not findings)
``urn:imt-cds:override-reason``    ``service.cards.OVERRIDE_REASONS``                    version: imt-cds's
=================================  ===================================================  =======================

The other ``urn:imt-cds:*`` URIs are identifier systems (patient id, audit record, sha256 of rulebook and input),
an endpoint and a rulebook module URI: none holds codes, so none is a CodeSystem.

They are published once (``imt-cds rules codesystems -o DIR``) rather than put into every exported Bundle: a
CodeSystem is a canonical resource a receiver loads into its terminology server once; copying the whole finding and
fact vocabulary into each patient's Bundle would repeat the same resources in every audit export, and would make
each Bundle look like it defines terminology. Finding codings carry the rulebook version as ``Coding.version``, so
each is tied to the exact CodeSystem version that defines it. This module only reads; it never evaluates anything.
"""

from __future__ import annotations

import typing
from importlib import metadata
from typing import Any

from ..core.fact_fields import fact_fields
from ..core.facts import TestMethod
from ..core.rulebook import Rulebook
from ..core.terminology import FACT_STANDARD_ELEMENTS, FACT_SYSTEM, METHOD_SYSTEM
from .fhir_output import DISCLAIMER, System, narrative

__all__ = ["code_systems"]

PUBLISHER = "imt-cds developers"
_KIND_LABEL = {"recommendation": "recommendation", "data_request": "request for missing data",
               "risk_flag": "risk flag", "flag": "safety or data-quality flag"}
_METHOD_MEANING = {  # what each value of the facts model's TestMethod means (the model holds only the code)
    "IHC": "Immunohistochemistry",
    "FISH": "Fluorescence in situ hybridization",
    "NGS_RNA": "Next-generation sequencing of RNA (fusion panel)",
    "NGS_DNA": "Next-generation sequencing of DNA",
}


def code_systems(rulebook: Rulebook) -> list[dict[str, Any]]:
    """Every CodeSystem of the project, for ``rulebook`` (the finding codes are the rulebook's)."""
    from .cards import OVERRIDE_REASON_SYSTEM, OVERRIDE_REASONS, SERVICE_CARD_SYSTEM, ServiceCard

    version = _package_version()
    findings = []
    for code in rulebook.finding_codes:
        producers = rulebook.producers(code)
        spec = next(f for f in producers[0].findings if f.code == code)
        rules = ", ".join(f"{r.id} v{r.version}" for r in producers)
        findings.append({"code": code, "display": spec.title,
                         "definition": f"A {_KIND_LABEL[spec.kind]} of imt-cds, produced by rule {rules}: "
                                       f"{spec.summary}"})
    facts = [{"code": path, "definition": _fact_definition(path, field.allowed())} for path, field in
             fact_fields().items()]
    methods = [{"code": code, "display": _METHOD_MEANING[code]} for code in typing.get_args(TestMethod)]
    cards = [{"code": card.value, "display": card.value.replace("_", " ").capitalize().replace("Fhir", "FHIR")}
             for card in ServiceCard]
    reasons = [{"code": reason["code"], "display": reason["display"]} for reason in OVERRIDE_REASONS]
    return [
        _code_system(System.FINDING, "ImtCdsFindingCode", "imt-cds finding codes", rulebook.version,
                     f"The findings of rulebook {rulebook.name} {rulebook.version}: recommendations, requests for "
                     "missing data and flags, each a suggestion for a multidisciplinary team to weigh.", findings),
        _code_system(FACT_SYSTEM, "ImtCdsFact", "imt-cds patient facts", version,
                     "The input facts imt-cds reads, by dotted path: the code of an Observation that carries one "
                     "(but for the four facts FHIR has a standard element for), and of each fact in an export.",
                     facts),
        _code_system(METHOD_SYSTEM, "ImtCdsTestMethod", "imt-cds fusion test methods", version,
                     "The test methods a fusion result may name (Observation.method).", methods),
        _code_system(SERVICE_CARD_SYSTEM, "ImtCdsServiceCard", "imt-cds service cards", version,
                     "Topics of the CDS Hooks cards that are not findings of the rulebook (input problems, order "
                     "checks).", cards),
        _code_system(OVERRIDE_REASON_SYSTEM, "ImtCdsOverrideReason", "imt-cds override reasons", version,
                     "Why a clinician set a card aside (CDS Hooks overrideReasons).", reasons),
    ]


def _fact_definition(path: str, allowed: str) -> str:
    definition = f"The input fact {path}: {allowed}."
    if path in FACT_STANDARD_ELEMENTS:  # (the code names the fact in exports; a chart gives it through FHIR's element)
        definition += (f" In a FHIR chart it is read from {FACT_STANDARD_ELEMENTS[path]}, never from an "
                       "Observation with this code.")
    return definition


def _code_system(url: str, name: str, title: str, version: str, description: str,
                 concepts: list[dict[str, str]]) -> dict[str, Any]:
    lines = [f"{c['code']}: {c.get('display') or c.get('definition')}" for c in concepts]
    return {
        "resourceType": "CodeSystem",
        "id": url.removeprefix("urn:").replace(":", "-"),
        "text": narrative(f"{title} ({url}, version {version}). {description}", lines, DISCLAIMER),
        "url": url,
        "version": version,
        "name": name,
        "title": title,
        "status": "active",
        "publisher": PUBLISHER,
        "description": description,
        "caseSensitive": True,
        "content": "complete",
        "count": len(concepts),
        "concept": concepts,
    }


def _package_version() -> str:
    try:
        return metadata.version("imt-cds")
    except metadata.PackageNotFoundError:  # a source checkout that was never installed
        return "unknown"
