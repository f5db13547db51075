"""FHIR R4 input: a chart (a Bundle, or CDS Hooks prefetch resources) read into patient facts, only when it is safe
to (one identified, living patient with an IMT diagnosis). Above the core only; see ``reader`` for the decisions.

    from imt_cds.fhir import facts_from_bundle
    chart = facts_from_bundle(bundle_json)  # FhirFacts: .eligibility, .facts (None when not evaluated), .problems
"""

from .reader import (
    MAX_CHART_BYTES,
    Diagnosis,
    Eligibility,
    FhirFacts,
    FhirProblem,
    facts_from_bundle,
    facts_from_resources,
)

__all__ = [
    "MAX_CHART_BYTES",
    "Diagnosis",
    "Eligibility",
    "FhirFacts",
    "FhirProblem",
    "facts_from_bundle",
    "facts_from_resources",
]
