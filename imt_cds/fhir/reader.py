"""A FHIR R4 chart (a Bundle, or CDS Hooks prefetch resources) -> ``PatientFacts``, only when it is safe to.

Real charts are about other diseases, other patients and other times, so reading one is three decisions before any
fact is taken from it, in this order:

1. **Whose data.** The chart must hold exactly one patient (one Patient resource, by id or, without an id, by its
   Bundle ``fullUrl``), and, when the caller names one (CDS Hooks ``context.patientId``), that very patient.
   Otherwise ``ChartRefusedError`` (nothing is read); also when two different resources bear one name (two
   versions), when another record replaces the Patient's (``Patient.link`` ``replaced-by``), and when the Patient
   carries a modifier element (``modifierExtension``, ``implicitRules``: see below). Every other
   resource is used only when its ``subject`` (or ``patient``) reference resolves to that Patient: relative
   (``Patient/p1``), absolute (``https://x/Patient/p1``, on the chart's server when its fullUrls name one),
   versioned, or through a Bundle entry's ``fullUrl`` (``urn:uuid:...``). A resource about anyone else, or about no
   one, is listed as skipped.
2. **Alive.** A Patient with ``deceasedBoolean`` true or a ``deceasedDateTime`` is not evaluated; one whose
   ``deceased[x]`` cannot be read is refused.
3. **An IMT diagnosis.** A Condition about the patient, neither refuted, entered-in-error, resolved (or abated
   without a clinical status) nor otherwise unconfirmed (a verification status without "confirmed"; none at all is
   FHIR's usual default), whose code (or mCODE histology-morphology-behavior extension) is in the rulebook's value
   set ``imt-diagnosis``; or whose text names the tumour (then the diagnosis is *text only*, and the assessment
   says so). Without one, nothing is evaluated, unless the caller attests the diagnosis was established elsewhere
   (recorded in the provenance).

When the chart passes, the facts are read, each traced to the resources it came from. Nothing is guessed: a fact
with no resource behind it stays unknown, and when resources disagree the fact is left unknown and the conflict
reported (a yes/no fact that cannot be unknown makes it an error: nothing is evaluated; so does a resource about
such a fact that cannot be read, since left out the fact would read "no"). Findings that have a date are ordered by
it (a later distant metastasis outranks an earlier cM0); only findings of the same time conflict, and an undated
finding stands beside the latest dated ones (it conflicts with them when they disagree); a finding dated after the
evaluation date is not used.

The reader works on the JSON as sent (no FHIR model library): each element it uses is checked for its FHIR shape,
a resource with a malformed element is reported and skipped, and FHIR it does not need (primitive extensions such
as ``_birthDate``, unknown elements, other resource types) is left alone. A resource that carries a modifier element
(``modifierExtension`` on it, on its Bundle entry or on a BackboneElement the reader reads, or ``implicitRules``),
which FHIR says may change what it means, is not used, as a malformed one is; one this reader would not have used
anyway is left unsaid. Such a finding (of staging, a secondary tumour, a size, a variant, a fact Observation) is
not taken as absent: it stands as a finding of its date that agrees with no other, so that an earlier one never
stands in its place (a variant whose genes cannot be read, beside the result of each gene of the facts). A Condition
that cannot be read far enough to tell what it is may be another cancer, so findings that name no cancer are not
read as the IMT's beside it. The codes it recognises, the genes of the facts and the words that say a variant is a
fusion among them, are the rulebook's value sets (``rules/terminology/``); where the facts come from is the table in
the README.
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

from ..core.drugs import find_drug
from ..core.errors import ChartRefusedError, InputProblem, InvalidInputError
from ..core.fact_fields import fact_fields
from ..core.facts import PatientFacts
from ..core.rulebook import Drug
from ..core.terminology import (
    FACT_STANDARD_ELEMENTS,
    FACT_SYSTEM,
    HGNC_GENE_ID,
    METHOD_SYSTEM,
    SEQUENCE_ONTOLOGY,
    TUMOR_SITE_VALUE_SETS,
    Coding,
    Terminology,
    ValueSet,
)
from ..core.validation import parse_facts

__all__ = [
    "FACT_SYSTEM",
    "MAX_CHART_BYTES",
    "METHOD_SYSTEM",
    "OBSERVATION_CODES",
    "Diagnosis",
    "Eligibility",
    "FhirFacts",
    "FhirProblem",
    "bundle_resources",
    "facts_from_bundle",
    "facts_from_resources",
    "resource_label",
]

# A JSON object: parsed JSON is a dict, checked first (an ABC check on Mapping costs ~10x more per call).
_OBJECT = (dict, Mapping)

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
# The systems charts write HGNC gene ids in, read as one (Genomics Reporting's and mCODE's examples write the first;
# the Medical Informatics Initiative's value sets, and the rulebook's gene value sets, the second); an id is written
# "HGNC:427" or "427".
HGNC_SYSTEMS = ("http://www.genenames.org", HGNC_GENE_ID, "https://www.genenames.org")

SECONDARY_PROFILE = "mcode-secondary-cancer-condition"
PRIMARY_PROFILE = "mcode-primary-cancer-condition"  # (mCODE 4.0.0: Condition-primary-cancer-condition-nsclc)
SURGERY_PROFILE = "mcode-cancer-related-surgical-procedure"
TNM_M_PROFILE = "mcode-tnm-distant-metastases-category"
RELATED_EXTENSION = "http://hl7.org/fhir/StructureDefinition/condition-related"
MORPHOLOGY_EXTENSION = "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-histology-morphology-behavior"

# LOINC codes as the published examples write them: 69548-6 "Genetic variant assessment", LA9633-4 "Present",
# 48018-6 "Gene studied [ID]" (Genomics Reporting 3.0.0 Observation-ROS1-Fusion-var), LA9634-2 "Absent" (mCODE
# 4.0.0's pertinent-negative NRAS/KIT/BRAF variant), 21889-1 "Size Tumor" with component 33728-7 (mCODE 4.0.0's
# tumour sizes, e.g. in its Bundle-mcode-patient-bundle-jenny-m: tests/fixtures/mcode-4.0.0).
VARIANT = "69548-6"
PRESENT, ABSENT = "LA9633-4", "LA9634-2"
GENE_STUDIED = "48018-6"
# Genomics Reporting (HL7/genomics-reporting input/fsh): a variant's genomic source class (CGFindings.fsh, component
# 48002-0) and an implication's clinical significance (CGImplications.fsh, component 53037-8). A tumour's fusion is
# somatic and pathogenic: a "Present" stated otherwise (germline, benign, of uncertain significance) is not read as
# one. Which values say so are the rulebook's value sets variant-somatic-origin and variant-pathogenic-significance.
GENOMIC_SOURCE, CLINICAL_SIGNIFICANCE = "48002-0", "53037-8"
TUMOR_SIZE, LONGEST_DIMENSION = "21889-1", "33728-7"
TNM_M_CATEGORY = "399387003"  # SNOMED: the code of mCODE's TNM distant-metastases category Observation
# What a variant is, beside its genes: a "Present" of one of the rules' genes is read as the tumour's fusion unless it
# is described as a change of sequence or copy number only (a point mutation, a small indel, an amplification) and
# nothing in it says fusion. Components as Genomics Reporting writes them (HL7/genomics-reporting input/fsh/examples:
# 48004-6 DNA change (c.HGVS), 48005-3 Amino acid change (pHGVS), 48019-4 DNA change type, the molecular consequence
# coded "molecular-consequence" in its tbd-codes-cs, 81252-9 Discrete genetic variant) and as the MII molecular
# genetics module writes a fusion's transcript (95123-6 "Gene fusion transcript details", its FGFR2-DBP example, a
# Genomics Reporting STU3 Variant). Which DNA change types and molecular consequences are a change of sequence or copy
# number, and which codes and words say fusion, are the rulebook's value sets variant-sequence-changes and
# variant-fusions (Sequence Ontology codes are read by their code alone: charts write that system in several ways).
HGVS_CHANGES = MappingProxyType({"48004-6": "c.HGVS", "48005-3": "p.HGVS"})
CHANGE_TYPE, DISCRETE_VARIANT, FUSION_TRANSCRIPT = "48019-4", "81252-9", "95123-6"
MOLECULAR_CONSEQUENCE = "molecular-consequence"
# A code means nothing without its system ("48018-6" of a laboratory's own code system is not LOINC's "Gene
# studied"), so what makes a finding is read with LOINC's system, as every published example writes these codes: the
# gene studied, Present and Absent, the longest dimension, and what says a variant is a fusion. What only raises a
# doubt about a finding (a genomic source, a clinical significance, a change of sequence) is read by its code alone,
# whatever its system: a code of another system never makes a finding, and never hides a doubt. The molecular
# consequence is read by its code alone either way: Genomics Reporting 3.0.0 writes it in its TbdCodes code system
# (http://hl7.org/fhir/uv/genomics-reporting/CodeSystem/tbd-codes-cs, its oncology Bundles in tests/fixtures) and
# mCODE's gene fusion example (genomic-variant-fusion, BCR-ABL1) in the placeholder http://loinc.org-requested-cs.

# The Observation codes (system, code) worth fetching for the rules: tumor size, genomic variants, the M category,
# mCODE's history of metastatic cancer and cancer disease status (the codes of the shipped value sets
# tnm-distant-metastases-observation, history-of-metastatic-cancer and cancer-disease-status: a test keeps them
# equal), and every code of the project's own system (an empty code: any code of that system, a FHIR token "system|").
OBSERVATION_CODES = (
    (LOINC, TUMOR_SIZE), (LOINC, VARIANT), (SNOMED, TNM_M_CATEGORY), (SNOMED, "371497001"), (SNOMED, "277208005"),
    (LOINC, "21907-1"), (LOINC, "21901-4"), (LOINC, "21913-9"), (SNOMED, "1287652008"), (SNOMED, "1098951000119108"),
    (LOINC, "97509-4"), (FACT_SYSTEM, ""),
)

MAX_CHART_BYTES = 64 * 1024 * 1024  # a FHIR chart file read by the CLI (a patient's facts are limited to 1 MB)
_FINAL = ("final", "amended", "corrected")
_READ_TYPES = ("Condition", "Observation", "Procedure", "MedicationStatement", "MedicationRequest",
               "MedicationAdministration")
_MEDICATION_TAKEN = {  # statuses that say the drug was (being) given
    "MedicationStatement": ("active", "completed", "stopped", "on-hold"),
    "MedicationRequest": ("active", "completed", "stopped", "on-hold"),
    "MedicationAdministration": ("completed", "in-progress", "stopped", "on-hold"),
}
_PROGRESSION = "history.progressed_on_alk_inhibitor"
_DATA_ABSENT_REASON = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
_SAID_NOT_TO_HAVE = frozenset({"refuted", "entered-in-error"})  # Condition verification statuses: not the patient's
_DISEASE_STATUS = "(a disease status)"  # what a disease status bears on: progression, only beside an ALK inhibitor
_NOT_ORDERED = ("proposal", "plan", "option")  # MedicationRequest intents that are no order for the patient
_HISTORY = re.compile(r"/_history/[^/]*$")
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # FHIR R4's id datatype (its regex: hl7.org/fhir/r4/id.profile.json)
# A finding dated later than this after the evaluation date is not used: the slack covers a chart written in a time
# zone ahead of UTC (the evaluation date is UTC's), nothing more.
_FUTURE_SLACK = timedelta(days=1)
_NUMBER = (int, float)
_CM_PER_UNIT = MappingProxyType({"cm": 1.0, "mm": 0.1})  # tumour size units understood
_CM_UNITS = ("cm", "mm")  # the same, as a tuple: "in" compares any JSON value (a list is no dict key)
UCUM = "http://unitsofmeasure.org"  # a Quantity's code is a unit of UCUM only when its system says so (or none does)


# --- results ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FhirProblem:
    """A resource skipped or a fact left unknown, and why. ``severity`` "error" means no facts were produced.

    ``kind``: "skipped" (a resource, or what it says, is not used), "conflict" (resources disagree about a fact),
    "not_allowed" (a value the facts contract does not allow), "superseded" (an earlier finding outranked by a later
    one), "weak" (used, but recognised by text only), "unreadable" (a resource about a yes/no fact that cannot be
    read: an error), "unattributed" (a finding about a yes/no fact that the chart does not tie to the IMT, where
    another cancer could be its subject: an error) or "incomplete" (the FHIR server said a search failed)."""

    where: str  # "Observation/size-1", or "entry[3]" for a resource without type and id
    message: str
    severity: str = "warning"
    path: str | None = None  # the fact concerned, if any
    kind: str = "skipped"

    def to_dict(self) -> dict[str, Any]:
        return {"where": self.where, "message": self.message, "severity": self.severity, "path": self.path,
                "kind": self.kind}

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(frozen=True)
class Diagnosis:
    """What establishes the IMT diagnosis an assessment was made for (``provenance.diagnosis``).

    ``basis``: "coded" (a Condition coded from the value set), "text" (a Condition whose text only names the tumour:
    weaker, flagged) or "attested" (the caller said the diagnosis was established elsewhere)."""

    basis: str
    sources: tuple[str, ...] = ()
    codes: tuple[str, ...] = ()  # "system|code" of the codes that matched
    attested: bool = False  # the caller attested the diagnosis (whatever the chart held)

    def to_dict(self) -> dict[str, Any]:
        return {"basis": self.basis, "sources": list(self.sources), "codes": list(self.codes),
                "attested": self.attested}


@dataclass(frozen=True)
class Eligibility:
    """Whether a chart may be evaluated: ``reason`` is "imt_diagnosis", "diagnosis_attested", "no_imt_diagnosis" or
    "deceased"; ``message`` says it in a sentence."""

    eligible: bool
    reason: str
    message: str
    diagnosis: Diagnosis | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"eligible": self.eligible, "reason": self.reason, "message": self.message,
                "diagnosis": self.diagnosis.to_dict() if self.diagnosis else None}


@dataclass(frozen=True)
class FhirFacts:
    """Facts read from a FHIR chart, the resources behind each fact, what was skipped, and whether the chart may be
    evaluated at all. ``facts`` is None when it may not (not eligible) or when a conflict prevents facts."""

    facts: PatientFacts | None
    sources: Mapping[str, tuple[str, ...]]  # fact path -> "ResourceType/id" of the resources it came from
    problems: tuple[FhirProblem, ...]
    eligibility: Eligibility = field(default_factory=lambda: Eligibility(True, "imt_diagnosis", ""))
    patient: str | None = None  # "Patient/<id>" of the chart's patient

    @property
    def ok(self) -> bool:
        return self.facts is not None

    def to_dict(self, *, facts: bool = True) -> dict[str, Any]:
        """The JSON form; ``facts=False`` leaves the facts out (for a reader of the sources and problems only)."""
        data: dict[str, Any] = {}
        if facts:
            data["facts"] = self.facts.model_dump(mode="json") if self.facts is not None else None
        data["sources"] = {path: list(refs) for path, refs in self.sources.items()}
        data["problems"] = [p.to_dict() for p in self.problems]
        data["eligibility"] = self.eligibility.to_dict()
        data["patient"] = self.patient
        return data


# --- entry points -------------------------------------------------------------------------------------------------


def facts_from_bundle(bundle: Any, on: date | None = None, *, terminology: Terminology | None = None,
                      drugs: Mapping[str, Drug] | None = None, patient_id: str | None = None,
                      diagnosis_attested: bool = False) -> FhirFacts:
    """Facts from a FHIR Bundle (as parsed JSON). ``on`` is the evaluation date for the age (default: today, UTC);
    ``terminology`` the rulebook's value sets (default: the shipped rulebook's); ``drugs`` its drug table, by which
    a medication record that no code of value set alk-inhibitors names is still known as an ALK inhibitor by its
    name (default: the shipped rulebook's; give the same rulebook's as the terminology); ``patient_id`` the patient the
    caller expects (refused if the chart is about another); ``diagnosis_attested`` that the caller established the
    IMT diagnosis elsewhere (recorded; a chart with no IMT Condition is then evaluated).

    The text of the resources must be Unicode: ids and texts go into the output, which no UTF-8 writer can write with
    a lone surrogate in it. ``imt_cds.core.validation.load_json_object`` (what ``imt-cds evaluate --fhir`` reads files
    with) refuses such JSON by path; a caller with its own parser can find them with ``lone_surrogates``."""
    if not isinstance(bundle, _OBJECT) or bundle.get("resourceType") != "Bundle":
        if not isinstance(bundle, _OBJECT):
            said = f"got {_kind(bundle)}, not a JSON object"
        elif bundle.get("resourceType") is None:
            said = "this object has no resourceType"
        else:
            said = f"got {_short(bundle['resourceType'])!r}"
        kind = bundle.get("resourceType") if isinstance(bundle, _OBJECT) else type(bundle).__name__
        raise InvalidInputError([InputProblem("resourceType", f"expected a FHIR Bundle, {said}", _short(kind))])
    if "entry" in bundle and not isinstance(bundle["entry"], list | type(None)):
        raise InvalidInputError([InputProblem("entry", "Bundle.entry must be a list of entries",
                                              type(bundle["entry"]).__name__)])
    return facts_from_resources([bundle], on, terminology=terminology, drugs=drugs, patient_id=patient_id,
                                diagnosis_attested=diagnosis_attested)


def facts_from_resources(resources: Iterable[Any], on: date | None = None, *, terminology: Terminology | None = None,
                         drugs: Mapping[str, Drug] | None = None, patient_id: str | None = None,
                         diagnosis_attested: bool = False) -> FhirFacts:
    """Facts from FHIR resources (parsed JSON), e.g. a CDS Hooks prefetch: each item a resource or a Bundle of them
    (whose entries' ``fullUrl`` resolve references). See ``facts_from_bundle`` for the options."""
    if terminology is None:
        from ..core.rule_loader import load_rulebook  # the shipped rulebook's value sets

        shipped = load_rulebook()
        terminology, drugs = shipped.terminology, drugs if drugs is not None else shipped.drugs
    missing = terminology.missing()
    if missing:
        raise ValueError(f"this rulebook cannot read FHIR: it lacks the value sets {', '.join(missing)}")
    chart = _Chart.gather(resources)
    reader = _Reader(on or datetime.now(timezone.utc).date(), terminology, chart, drugs)
    return reader.read(patient_id, diagnosis_attested)


def bundle_resources(value: Any) -> list[Any]:
    """The resources of a FHIR Bundle (parsed JSON), one per entry in entry order; a resource that is not a Bundle is
    its own only resource, and what is not a JSON object has none. Entries of a search's outcome (``search.mode``
    "outcome") are left out. Pure JSON."""
    return [item.resource for item in _Chart.gather([value]).items if item.resource is not None]


_BY_PLACE = "entry["  # what names a resource without an id: its place (resource_label, _named_by_place)


def resource_label(resource: Mapping[str, Any], index: int) -> str:
    """How a resource is named in messages and sources: ``Type/id``, or ``Type/entry[i]`` for one without an id
    (``index``: its place among the resources read)."""
    rid = resource.get("id")
    return f"{resource.get('resourceType')}/{rid if isinstance(rid, str) and rid else f'{_BY_PLACE}{index}]'}"


def _named_by_place(label: str) -> bool:
    """Whether ``resource_label`` named a resource by its place in the chart (it has no id), a name that changes
    with the order of the entries. (An id holding "entry[" is not a FHIR id, whose characters are letters, digits,
    '-' and '.'; such a resource is ordered as one without an id, which only orders it by what it says first.)"""
    return label.partition("/")[2].startswith(_BY_PLACE)


# --- the chart: resources with their names -------------------------------------------------------------------------


@dataclass(slots=True)
class _Item:
    resource: Mapping[str, Any] | None
    label: str
    full_url: str | None = None
    problem: str | None = None  # why it cannot be read at all
    entry_modifiers: tuple[str, ...] = ()  # modifier elements of the Bundle entry that holds it (see _modifiers)


@dataclass
class _Chart:
    items: list[_Item]
    aliases: dict[str, str]  # fullUrl -> label
    outcomes: list[tuple[str, Mapping[str, Any]]]  # the server's OperationOutcomes
    bases: frozenset[str]  # server bases of the absolute fullUrls ("https://ehr/fhir")
    copies: bool  # whether two items bear one label (see without_copies)
    # (fullUrl, label, label): two different resources under one fullUrl (see without_copies)
    shared_urls: tuple[tuple[str, str, str], ...] = ()

    @classmethod
    def gather(cls, values: Iterable[Any]) -> _Chart:
        items: list[_Item] = []
        bearer: dict[str, _Item] = {}  # fullUrl -> the first item under it (a reference to it names that one)
        shared_urls: list[tuple[str, str, str]] = []
        outcomes: list[tuple[str, Mapping[str, Any]]] = []
        labels: set[str] = set()
        readable = 0

        def add(resource: Mapping[str, Any], full_url: Any = None, entry_modifiers: tuple[str, ...] = ()) -> None:
            """A resource (an object with a resourceType that is text), named as ``resource_label`` names it."""
            nonlocal readable
            label = resource_label(resource, len(items))
            url = full_url if isinstance(full_url, str) and full_url else None
            item = _Item(resource, label, url, None, entry_modifiers)
            items.append(item)
            labels.add(label)
            readable += 1
            if url is not None:
                first = bearer.setdefault(url, item)
                if first.label != label and first.resource != resource:  # (one resource in two searches is one)
                    one, other = sorted((first.label, label))
                    shared_urls.append((url, one, other))
            if resource["resourceType"] == "OperationOutcome":
                outcomes.append((label, resource))

        for number, value in enumerate(values if isinstance(values, Iterable) else []):
            if not _is_resource(value):
                items.append(_Item(None, f"entry[{number}]", None, "not a FHIR resource (no resourceType); skipped"))
            elif value["resourceType"] != "Bundle":
                add(value)
            else:
                entries = value.get("entry")
                if entries is None:
                    continue
                bundle = f"Bundle/{value.get('id', number)}"
                if not isinstance(entries, list):
                    items.append(_Item(None, bundle, None, "Bundle.entry is not a list; the Bundle is not read"))
                    continue

                def place(position: int, bundle: str = bundle) -> str:
                    """Where an entry is, in words: made only for what is said of it (most entries are read as
                    they are)."""
                    return f"{bundle}.entry[{position}]"

                for position, entry in enumerate(entries):
                    if not isinstance(entry, _OBJECT):
                        items.append(_Item(None, place(position), None,
                                           "a Bundle entry that is not an object; skipped"))
                        continue
                    search = entry.get("search")
                    if search is not None and isinstance(search, _OBJECT) and search.get("mode") == "outcome":
                        # The server's OperationOutcome about the search, not patient data; its errors say the
                        # chart may be incomplete.
                        if isinstance(entry.get("resource"), _OBJECT):
                            outcomes.append((place(position), entry["resource"]))
                        continue
                    request = entry.get("request")
                    if request is not None and isinstance(request, _OBJECT) and request.get("method") == "DELETE":
                        continue  # a transaction's deletion carries no data
                    resource = entry.get("resource")
                    if resource is None:
                        if "response" in entry:
                            continue  # a transaction or batch response's entry: what the server did, no data
                        items.append(_Item(None, place(position), None,
                                           "a Bundle entry without a resource; skipped"))
                    elif not _is_resource(resource):
                        items.append(_Item(None, place(position), None,
                                           "not a FHIR resource (no resourceType); skipped"))
                    elif resource["resourceType"] == "Bundle":
                        items.append(_Item(None, place(position), None,
                                           "a Bundle inside a Bundle is not read; skipped"))
                    else:
                        add(resource, entry.get("fullUrl"), _entry_modifiers(entry))
        aliases = {url: first.label for url, first in bearer.items()}
        bases = frozenset(url.rstrip("/").rsplit("/", 2)[0] for url in aliases
                          if url.startswith(("http://", "https://")) and url.rstrip("/").count("/") >= 4)
        return cls(items, aliases, outcomes, bases, len(labels) < readable, tuple(sorted(shared_urls)))

    def without_copies(self) -> _Chart:
        """The chart with each resource once: identical copies (one resource in two prefetch searches) are read
        once; different contents under one name (two versions of a resource, or two servers' resources of the same
        id), or two different resources under one fullUrl, refuse the chart, since which one is meant cannot be
        established."""
        if self.shared_urls:
            # A reference to the fullUrl resolves to whichever came first: which resource it means (the IMT or
            # another cancer, the patient or someone else) would depend on the order the server sent them in.
            url, one, other = self.shared_urls[0]
            raise ChartRefusedError("conflicting_copies", f"the chart holds two different resources ({one}, {other}) "
                                    f"under one fullUrl, {_short(url)}; which one a reference to it means cannot be "
                                    "established, so nothing is evaluated (a Bundle's fullUrls must be unique)",
                                    _short(url))
        if not self.copies:
            return self
        seen: dict[str, _Item] = {}
        kept: list[_Item] = []
        for item in self.items:
            if item.resource is None:
                kept.append(item)
                continue
            first = seen.setdefault(item.label, item)
            if first is item:
                kept.append(item)
            elif first.resource != item.resource:
                raise ChartRefusedError("conflicting_copies", f"the chart holds two different resources named "
                                        f"{_short(item.label)} (two versions, or two servers' resources of that id); "
                                        "which one is meant cannot be established, so nothing is evaluated (send "
                                        "one version of each resource)", _short(item.label))
        return _Chart(kept, self.aliases, self.outcomes, self.bases, copies=False)


def _is_resource(value: Any) -> bool:
    """A JSON object with a resourceType that is text: what the chart reads as a FHIR resource."""
    return isinstance(value, _OBJECT) and isinstance(value.get("resourceType"), str)


# --- modifier elements: what may change a resource's meaning ------------------------------------------------------
#
# FHIR lets a resource (and each BackboneElement in it) carry ``modifierExtension``: "additional information ... that
# modifies the understanding of the element in which it is contained", usually a negation or a qualification (a
# condition of a family member, a drug not to be given, a result the specimen made unreliable), and "applications
# processing a resource are required to check for modifier extensions" (R4, DomainResource and BackboneElement
# definitions). ``implicitRules`` is a modifier too: rules "which must be understood when processing the content".
# This reader understands none of them, so a resource that carries one is never read as if it did not.

# The BackboneElements inside a resource that this reader reads (Observation.component for sizes, genes and
# significance; Patient.link). A modifier on an element it does not read (e.g. Observation.referenceRange) changes
# nothing it uses.
_READ_BACKBONE_ELEMENTS = ("component", "link")


def _modifier_words(element: Mapping[str, Any], where: str) -> list[str]:
    """The modifier elements an object carries itself, in words ("modifierExtension https://x", "implicitRules
    https://y"); ``where`` prefixes them ("component[0]."). An empty list of extensions carries none."""
    found = []
    extensions = element.get("modifierExtension")
    if extensions is not None and extensions != []:
        urls = [e.get("url") for e in extensions if isinstance(e, _OBJECT)] if isinstance(extensions, list) else []
        named = [_short(url) for url in urls if isinstance(url, str) and url] or ["(without a url)"]
        found += [f"{where}modifierExtension {url}" for url in named]
    rules = element.get("implicitRules")
    if rules is not None:
        found.append(f"{where}implicitRules {_short(rules) if isinstance(rules, str) else '(not text)'}")
    return found


def _entry_modifiers(entry: Mapping[str, Any]) -> tuple[str, ...]:
    """The modifier elements of a Bundle entry (and of its search, request and response): they modify the entry,
    and so the resource it holds."""
    found = _modifier_words(entry, "Bundle entry's ") if "modifierExtension" in entry else []
    for part in ("search", "request", "response"):
        element = entry.get(part)
        if element is not None and isinstance(element, _OBJECT) and "modifierExtension" in element:
            found += _modifier_words(element, f"Bundle entry's {part}.")
    return tuple(found)


def _modifiers(item: _Item) -> str | None:
    """The modifier elements that may change what a resource means, in words, or None (the usual resource: a few
    dictionary lookups): its own, its entry's, those of the BackboneElements this reader reads, and those of its
    contained resources (a MedicationStatement's contained Medication)."""
    resource = item.resource
    assert resource is not None
    found = list(item.entry_modifiers)
    if "modifierExtension" in resource or "implicitRules" in resource:
        found += _modifier_words(resource, "")
    for key in _READ_BACKBONE_ELEMENTS:
        elements = resource.get(key)
        if elements is not None and type(elements) is list:
            for index, element in enumerate(elements):
                if isinstance(element, _OBJECT) and "modifierExtension" in element:
                    found += _modifier_words(element, f"{key}[{index}].")
    contained = resource.get("contained")
    if contained is not None and isinstance(contained, list):
        for index, inner in enumerate(contained):
            if isinstance(inner, _OBJECT):
                found += _modifier_words(inner, f"contained[{index}].")
    return "; ".join(found) if found else None


# --- reading ------------------------------------------------------------------------------------------------------


class _Malformed(Exception):
    """An element of a resource does not have its FHIR shape: the resource is skipped."""


class _NotUnderstood(_Malformed):
    """A resource the reader reads beside another (a referenced Medication) carries a modifier element: the resource
    that needs it is skipped, as if malformed."""


@dataclass(frozen=True)
class _Period:
    """When a finding holds, as the interval its (possibly partial) FHIR date covers."""

    start: date
    end: date

    def before(self, other: _Period) -> bool:
        return self.end < other.start

    def __str__(self) -> str:
        return self.start.isoformat() if self.start == self.end else f"{self.start.isoformat()}..{self.end.isoformat()}"


@dataclass(slots=True)
class _Candidate:
    value: Any
    source: str
    when: _Period | None = None
    note: str = ""  # what was found, in words (for messages)


class _Unread:
    """The value of a finding that is not used (malformed, or carrying a modifier element) about a fact that may be
    unknown: what it says cannot be told, so it agrees with no value. Where it stands (the latest finding, or one of
    the same time or undated) the fact is left unknown; a later finding outranks it as any other. Taken as absent
    instead, it would let an earlier finding stand in its place: an old cM0 read as the stage beside the later M1
    that carries a modifier extension."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "(not read)"


_UNREAD = _Unread()
_UNREAD_NOTE = "a finding not used"  # (how a message that lists the findings of a fact shows one)


# What reading one resource may change in a _Reader: kept and put back around a resource that is not read as it
# stands (_Reader._not_understood). The other fields are the chart and its settings, the patient (settled before any
# resource is read), caches, and the bookkeeping of that very mechanism; a test holds every field to one of the two.
_READING_STATE = ("candidates", "problems", "methods", "symbols", "imt_conditions", "other_conditions",
                  "other_primaries", "unknown_conditions", "imt_secondaries", "alk_inhibitors", "progressions",
                  "unattributed", "unattributed_surgeries", "significance", "unreadable", "doubted")


@dataclass
class _Reader:
    on: date
    terminology: Terminology
    chart: _Chart
    drugs: Mapping[str, Drug] | None  # the drug table (None: the shipped rulebook's, loaded when first needed)
    candidates: dict[str, list[_Candidate]] = field(default_factory=dict)
    problems: list[FhirProblem] = field(default_factory=list)
    methods: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # gene -> (method, source)
    symbols: dict[str, str] = field(default_factory=dict)  # HGNC id -> gene symbol, as the resources display it
    patient_label: str = ""
    patient_keys: set[str] = field(default_factory=set)  # every name the patient goes by (labels, fullUrl)
    imt_conditions: dict[str, tuple[str, ...]] = field(default_factory=dict)  # label -> matched codes (or "text")
    other_conditions: set[str] = field(default_factory=set)  # labels of Conditions about something else
    other_primaries: set[str] = field(default_factory=set)  # of those, the primary cancers (profile, code or words)
    # Conditions whose code or extensions (mCODE's morphology) cannot be read, so what they are cannot be told: each
    # may be another cancer (H13)
    unknown_conditions: set[str] = field(default_factory=set)
    imt_secondaries: set[str] = field(default_factory=set)  # secondary tumours that are the IMT's (see _secondary)
    alk_inhibitors: list[tuple[_Period | None, str]] = field(default_factory=list)
    progressions: list[tuple[_Period | None, str]] = field(default_factory=list)
    unattributed: list[tuple[_Period | None, str]] = field(default_factory=list)  # worsenings of which cancer?
    unattributed_surgeries: list[str] = field(default_factory=list)  # resections of which cancer?
    resolved: dict[str, str] = field(default_factory=dict)  # reference -> what it resolves to (for this chart)
    significance: dict[str, list[Mapping[str, Any]]] = field(default_factory=dict)  # variant -> significance said
    bearing: tuple[str, ...] = ()  # the facts the resource being read was recognised to bear on (see _guarded)
    # "inhibitor"/"progression" -> the records of that kind not used (malformed, or not understood): their labels, and
    # the words around their kind (see _unusable)
    unreadable: dict[str, list[tuple[str, tuple[str, str]]]] = field(default_factory=dict)
    # label -> the modifier elements it carries, in words (see _modifiers): resources not read as they stand
    not_understood: dict[str, str] = field(default_factory=dict)
    # variant label -> why a statement of its clinical significance could not be read as it stands (see _implication)
    doubted: dict[str, str] = field(default_factory=dict)

    def offer(self, path: str, value: Any, source: str, when: _Period | None = None, note: str = "") -> None:
        if when is not None and self._after_today(when, source, path):
            return
        self.candidates.setdefault(path, []).append(_Candidate(value, source, when, note))

    def _after_today(self, when: _Period, source: str, path: str | None = None) -> bool:
        """Whether a finding is dated after the evaluation date (then it is reported and not used: a wrong date,
        which as the latest finding would outrank every true one)."""
        if when.start <= self.on + _FUTURE_SLACK:
            return False
        self.skip(source, f"dated {when}, after the evaluation date {self.on}; not used (check the date)", path)
        return True

    def skip(self, where: str, message: str, path: str | None = None, kind: str = "skipped") -> None:
        self.problems.append(FhirProblem(where, message, "warning", path, kind))

    # -- the three decisions --

    def read(self, expected_patient: str | None, diagnosis_attested: bool) -> FhirFacts:
        patient = self._whose(expected_patient)
        self.chart = self.chart.without_copies()
        for where, outcome in self.chart.outcomes:
            self._server_errors(where, outcome)
        resources: list[tuple[str, Mapping[str, Any]]] = []
        implications: list[Mapping[str, Any]] = []  # Observations derived from others (see _implication)
        for item in self.chart.items:
            if item.resource is None:
                self.skip(item.label, item.problem or "not readable; skipped")
                continue
            kind = item.resource["resourceType"]
            if kind not in _READ_TYPES:
                continue  # other resource types carry nothing the rules use
            about = self._subject(item.resource)
            if about is None:
                self.skip(item.label, "says about whom it is in no subject reference this reader can resolve; "
                                      "not used")
                continue
            if about[0] not in self.patient_keys:
                self.skip(item.label, f"about {_short(about[1])}, not {self.patient_label}; not used")
                continue
            resources.append((item.label, item.resource))
            modifiers = _modifiers(item)
            if modifiers is not None:
                self.not_understood[item.label] = modifiers
            if kind == "Observation" and item.resource.get("derivedFrom") is not None:
                if modifiers is None:
                    implications.append(item.resource)
                else:
                    self._doubt_variants(item.label, item.resource, modifiers)
        self._links(patient)
        self._in_use(patient)
        deceased = self._deceased(patient)
        if deceased is not None:
            return self._not_eligible("deceased", deceased)
        # Conditions first: which of them are the IMT (the surgery and disease-status readers ask); secondary tumours
        # last, so that the primary each names is known by then.
        conditions = [(label, r) for label, r in resources if r["resourceType"] == "Condition"]
        for label, resource in sorted(conditions, key=lambda pair: self._read_last(pair[1])):
            self._guarded(label, resource, self._condition)
        diagnosis = self._diagnosis(diagnosis_attested)
        if diagnosis is None:
            found = (f"; it holds {len(self.other_conditions)} other Condition(s)" if self.other_conditions else "")
            return self._not_eligible(
                "no_imt_diagnosis", f"the chart of {self.patient_label} holds no IMT diagnosis (no Condition coded "
                f"from value set imt-diagnosis or naming the tumour){found}; nothing is evaluated")
        self._guarded(self.patient_label, patient, self._patient)
        for implication in implications:  # what they say of variants, before the variants are read
            self._implication(implication)
        for label, resource in resources:
            kind = resource["resourceType"]
            if kind == "Observation":
                self._guarded(label, resource, self._observation)
            elif kind == "Procedure":
                self._guarded(label, resource, self._procedure)
            elif kind.startswith("Medication"):
                self._guarded(label, resource, self._medication)
        self._progression()
        self._surgery()
        reason = "diagnosis_attested" if diagnosis.basis == "attested" else "imt_diagnosis"
        message = {"coded": "IMT diagnosis coded in the chart", "text": "IMT diagnosis recognised from text only "
                   "(no code from value set imt-diagnosis): confirm it", "attested": "IMT diagnosis attested by the "
                   "caller (established outside this chart)"}[diagnosis.basis]
        return self._result(Eligibility(True, reason, message, diagnosis))

    def _server_errors(self, where: str, outcome: Mapping[str, Any]) -> None:
        """An OperationOutcome in the chart with an error says a search failed or was cut short: what the chart
        lacks may change the advice, so it is said (the chart is read as it is)."""
        issues = outcome.get("issue")
        for issue in issues if isinstance(issues, list) else []:
            if isinstance(issue, _OBJECT) and issue.get("severity") in ("error", "fatal"):
                details = issue.get("details")
                said = issue.get("diagnostics") or (details.get("text") if isinstance(details, _OBJECT) else None)
                shown = f": {_short(said)!r}" if isinstance(said, str) and said else ""
                self.problems.append(FhirProblem(
                    where, f"the FHIR server reported an error{shown}; the chart may be incomplete (what it lacks "
                    "is not evaluated)", "warning", None, "incomplete"))

    def _whose(self, expected: str | None) -> Mapping[str, Any]:
        patients: dict[str, _Item] = {}
        for item in self.chart.items:
            if item.resource is not None and item.resource["resourceType"] == "Patient":
                rid = item.resource.get("id")
                if rid is not None and (not isinstance(rid, str) or not rid):
                    raise ChartRefusedError("patient_without_id", f"{item.label}: Patient.id must be text; the "
                                            "chart's patient cannot be established", _short(rid))
                if rid is not None and not _FHIR_ID.fullmatch(rid):
                    raise ChartRefusedError("patient_without_id", f"{_short(item.label)}: Patient.id must be a FHIR "
                                            "id (1 to 64 letters, digits, '-' or '.'); the chart's patient cannot be "
                                            "established", _short(rid))
                key = f"Patient/{rid}" if rid else item.full_url
                if key is None:
                    raise ChartRefusedError("patient_without_id", "the chart's Patient has no id (and no fullUrl): "
                                            "whose data it is cannot be established")
                patients.setdefault(key, item)
        if len(patients) > 1:
            raise ChartRefusedError("several_patients", f"the chart holds {len(patients)} different patients "
                                    f"({', '.join(sorted(patients))}); a chart is evaluated only for one patient",
                                    sorted(patients))
        if not patients:
            raise ChartRefusedError("no_patient", "the chart holds no Patient resource: whose data it is cannot be "
                                    "established" + (f" (expected Patient/{expected})" if expected else ""))
        ((key, item),) = patients.items()
        assert item.resource is not None
        rid = item.resource.get("id")
        if expected is not None and rid != expected:
            raise ChartRefusedError("other_patient", f"the chart's patient is {key}, not the patient in context "
                                    f"(Patient/{expected}): nothing is evaluated on another patient's record", key)
        modifiers = _modifiers(item)
        if modifiers is not None:
            raise ChartRefusedError("patient_not_understood", f"{_short(key)} carries {modifiers}, which this reader "
                                    "does not understand: FHIR says such an element may change what the record "
                                    "means, so whose record it is, and whether it is in use, cannot be established; "
                                    "nothing is evaluated", modifiers)
        self.patient_label = key
        # Every name the chart may use for its patient: "Patient/<id>", its fullUrl, and (without an id) the label
        # a fullUrl reference resolves to.
        self.patient_keys = {key, item.label} | ({item.full_url} if item.full_url else set())
        return item.resource

    def _subject(self, resource: Mapping[str, Any]) -> tuple[str, str] | None:
        """Whom a resource is about: (the resource its subject reference resolves to, e.g. "Patient/p1"; the
        reference as written). None when it has no reference this reader can resolve."""
        reference = resource.get("subject", resource.get("patient"))
        if not isinstance(reference, _OBJECT) or not isinstance(reference.get("reference"), str):
            return None
        text = reference["reference"]
        return self._resolve(text), text

    def _links(self, patient: Mapping[str, Any]) -> None:
        """A Patient record another one replaces "must no longer be used" (FHIR R4 link-type ``replaced-by``: a
        merged duplicate; what was charted since is on the other record): refused. One that refers to another
        record for more of the patient's information (``refer``) is read, and the chart said to be incomplete."""
        links = patient.get("link")
        if links is None:
            return
        if not isinstance(links, list) or not all(isinstance(link, _OBJECT) for link in links):
            raise ChartRefusedError("patient_link_unreadable", f"{self.patient_label}: Patient.link must be a list of "
                                    f"objects, found {_kind(links)}; whether this record is still in use cannot be "
                                    "established, so nothing is evaluated", _short(links))
        for link in links:
            kind, other = link.get("type"), link.get("other")
            withheld = _absent_reason(link) if kind is None else None
            if withheld is not None:  # (de-identified extracts mask links: a deliberate blank, not a malformed one)
                self.problems.append(FhirProblem(
                    self.patient_label, f"{self.patient_label} links to another record by a link whose type is "
                    f"withheld (data-absent-reason {withheld!r}); whether another record replaces this one cannot be "
                    "told: check that this is the record in use", "warning", None, "incomplete"))
                continue
            if not isinstance(kind, str):
                found = "none" if kind is None else _kind(kind)
                raise ChartRefusedError("patient_link_unreadable", f"{self.patient_label}: Patient.link.type must "
                                        f"be a code, found {found}; whether this record is still in use cannot be "
                                        "established, so nothing is evaluated", _short(kind))
            named = other.get("reference") if isinstance(other, _OBJECT) else None
            said = _short(named) if isinstance(named, str) else "another Patient record"
            if kind == "replaced-by":
                raise ChartRefusedError("patient_replaced", f"{self.patient_label} is replaced by {said} (Patient.link "
                                        "replaced-by: this record must no longer be used); nothing is evaluated: "
                                        "evaluate the record that replaces it", said)
            if kind == "refer":
                self.problems.append(FhirProblem(
                    self.patient_label, f"{self.patient_label} refers to {said} for more of this patient's "
                    "information (Patient.link refer); the chart may be incomplete (what that record holds is not "
                    "evaluated)", "warning", None, "incomplete"))

    def _in_use(self, patient: Mapping[str, Any]) -> None:
        """Patient.active false (a modifier element: the record may not be the one in use) is said, not refused:
        many systems set it for patients not seen for a while, who are the patients a chart is opened for again."""
        active = patient.get("active")
        if active is False or (active is not None and not isinstance(active, bool)):
            said = "marked inactive (active false)" if active is False else (
                f"marked with an active flag that is not true or false ({_kind(active)})")
            self.problems.append(FhirProblem(
                self.patient_label, f"{self.patient_label} is {said}: the record may not be the one in use (a merged "
                "or retired record), or only not seen for a while; check that this is the record in use", "warning",
                None, "incomplete"))

    def _deceased(self, patient: Mapping[str, Any]) -> str | None:
        flag, when = patient.get("deceasedBoolean"), patient.get("deceasedDateTime")
        if (flag is not None and not isinstance(flag, bool)) or (when is not None and not isinstance(when, str)):
            # Read as "alive" it would be a silent default: whether the patient is alive cannot be established.
            element, value = ("deceasedBoolean", flag) if flag is not None and not isinstance(flag, bool) else (
                "deceasedDateTime", when)
            raise ChartRefusedError("deceased_unreadable", f"{self.patient_label}: {element} must be "
                                    f"{'true or false' if element == 'deceasedBoolean' else 'a dateTime'}, found "
                                    f"{_kind(value)}; whether the patient is alive cannot be established, so "
                                    "nothing is evaluated", _short(value))
        if flag is True:
            return f"{self.patient_label} is recorded as deceased (deceasedBoolean); nothing is evaluated"
        if isinstance(patient.get("deceasedDateTime"), str):
            return (f"{self.patient_label} is recorded as deceased on {patient['deceasedDateTime']}; nothing is "
                    "evaluated")
        return None

    def _diagnosis(self, attested: bool) -> Diagnosis | None:
        coded = {label: codes for label, codes in self.imt_conditions.items() if codes != ("text",)}
        if coded:
            codes = tuple(dict.fromkeys(c for matched in coded.values() for c in matched))
            return Diagnosis("coded", tuple(coded), codes, attested)
        if self.imt_conditions:
            for label in self.imt_conditions:
                self.skip(label, "IMT diagnosis recognised from the Condition's text only, not from a code of value "
                                 "set imt-diagnosis: confirm the diagnosis", kind="weak")
            return Diagnosis("text", tuple(self.imt_conditions), (), attested)
        if attested:
            return Diagnosis("attested", (), (), True)
        return None

    def _not_eligible(self, reason: str, message: str) -> FhirFacts:
        return FhirFacts(None, {}, tuple(self.problems), Eligibility(False, reason, message), self.patient_label)

    def _guarded(self, label: str, resource: Mapping[str, Any], reader: Any) -> None:
        self.bearing = ()
        modifiers = self.not_understood.get(label)
        if modifiers is not None:
            self._not_understood(label, resource, reader, modifiers)
            return
        try:
            reader(resource, label)
        except _Malformed as exc:
            if isinstance(exc, _NotUnderstood):
                said, around = f"{resource['resourceType']} whose {exc}", ("", f" whose {exc}")
            else:
                said, around = f"malformed {resource['resourceType']} ({exc})", ("malformed ", "")
            # (the bearing as the reader left it; what it would have said of each of those facts cannot be told)
            self._unusable(label, resource, said, around, self.bearing, self._unread_at(resource, self.bearing))

    def _unusable(self, label: str, resource: Mapping[str, Any], said: str, around: tuple[str, str],
                  bearing: tuple[str, ...], unread: Mapping[str, list[_Period | None]]) -> None:
        """A resource that is not used, of which the reader knew the facts it bears on (``bearing``). ``said``: the
        resource and why, in words ("malformed Procedure (...)"); ``around``: the words before and after a record's
        kind ("malformed ", ""), for what _progression says of a medication record or a disease status; ``unread``:
        the facts it would have been read as a finding about, each with the dates of those findings."""
        # Skipped, a resource that says a yes/no fact would leave it "no" by default: a changed recommendation,
        # so when the reader knew which such fact the resource bears on, nothing is evaluated.
        blocked = [path for path in bearing if _cannot_be_unknown(path)]
        # Progression is decided from two resources: an unreadable one matters only beside the other kind.
        if resource["resourceType"].startswith("Medication"):  # (whether it is an ALK inhibitor may be unread)
            self.unreadable.setdefault("inhibitor", []).append((label, around))
        elif _DISEASE_STATUS in bearing:
            self.unreadable.setdefault("progression", []).append((label, around))
        if blocked:
            self.problems.append(FhirProblem(
                label, f"{said} about {', '.join(blocked)}, which cannot be left unknown, so nothing is evaluated",
                "error", blocked[0], "unreadable"))
        else:
            self.skip(label, f"{said}; skipped")
        # Of a fact that may be unknown, the finding stands as one that agrees with nothing (see _Unread).
        for path, whens in unread.items():
            if not _cannot_be_unknown(path):
                for when in whens:
                    if when is None or when.start <= self.on + _FUTURE_SLACK:
                        self.candidates.setdefault(path, []).append(_Candidate(_UNREAD, label, when, _UNREAD_NOTE))

    @staticmethod
    def _unread_at(resource: Mapping[str, Any], bearing: tuple[str, ...]) -> dict[str, list[_Period | None]]:
        """The facts a resource that could not be read bears on (those of the contract), each with the date its
        finding would have had, as far as it can be read."""
        fields = fact_fields()
        return {path: [_finding_date(resource)] for path in bearing if path in fields}

    def _not_understood(self, label: str, resource: Mapping[str, Any], reader: Any, modifiers: str) -> None:
        """A resource that carries a modifier element (``_modifiers``) is not used, and what it would have said decides
        what that costs. It is read on the reader's state as it stands, which is then put back as it was: one that
        bears on a yes/no fact that cannot be left unknown stops the evaluation, as an unreadable one does; one that
        would have said anything else is reported; one this reader would not have used at all is left unsaid (a
        lipaemic CA-125 is nothing to it)."""
        kept = {name: copy.deepcopy(getattr(self, name)) for name in _READING_STATE}
        try:
            reader(resource, label)
            malformed = False
        except _Malformed:
            malformed = True
        changed = any(getattr(self, name) != kept[name] for name in _READING_STATE)
        # The findings it would have offered, fact by fact, with their dates (offering only ever appends); and,
        # when it could not be read to the end either, a finding about each fact its reader announced.
        unread = {path: [c.when for c in found[len(kept["candidates"].get(path, ())):]]
                  for path, found in self.candidates.items() if found != kept["candidates"].get(path)}
        if malformed:
            unread = {**self._unread_at(resource, self.bearing), **unread}
        # Another primary cancer it would have been stays one (and a Condition that cannot be read, which may be one):
        # whatever the modifier means, the chart may hold that cancer, so a finding that names no cancer is not read
        # as the IMT's (H13), as beside a malformed one.
        primaries = self.other_primaries - kept["other_primaries"]
        unknown = self.unknown_conditions - kept["unknown_conditions"]
        for name, value in kept.items():
            setattr(self, name, value)
        self.other_primaries |= primaries
        self.unknown_conditions |= unknown
        # (malformed after announcing a fact, it changed nothing yet; unsaid, a yes/no fact would read "no")
        if changed or (malformed and self.bearing):
            why = (f"carries {modifiers}, which this reader does not understand (FHIR: such an element may change "
                   "what the resource means)")
            self._unusable(label, resource, f"{resource['resourceType']} that {why}", ("", f" that {why}"),
                           tuple(dict.fromkeys(self.bearing + tuple(unread))), unread)

    # -- resource types --

    def _patient(self, patient: Mapping[str, Any], where: str) -> None:
        rid = patient.get("id")
        if isinstance(rid, str) and rid:
            self.offer("patient_id", rid, where)
        birth = patient.get("birthDate")
        if birth is None:
            return
        if not isinstance(birth, str):  # only the age is lost: the id above is read (so the Patient is not "skipped")
            self.skip(where, f"birthDate must be a date, found {_kind(birth)}; the age is left unknown", "age_years")
            return
        parsed = _full_date(birth)
        if parsed is None:
            self.skip(where, f"birthDate {birth!r} is not a full date; the age is left unknown", "age_years")
            return
        if parsed > self.on:
            self.skip(where, f"birthDate {birth} is after the evaluation date {self.on}", "age_years")
            return
        self.offer("age_years", _age_in_years(parsed, self.on), where)

    def _read_last(self, condition: Mapping[str, Any]) -> bool:
        """Whether a Condition is a secondary tumour, read after every other Condition: its reading asks which ones are
        the IMT and which are other primary cancers. (One too malformed to tell is read in its place, and reported
        there.)"""
        try:
            profiles = _profiles(condition)
            if SECONDARY_PROFILE in profiles:
                return True
            code = _concept(condition, "code")
            matched, named = self._names_the_imt(code, _morphology(condition))
            return not matched and not named and self._other_cancer(code, profiles) == "secondary"
        except _Malformed:
            return False

    def _names_the_imt(self, code: Mapping[str, Any] | None,
                       morphology: Mapping[str, Any] | None) -> tuple[tuple[Coding, ...], bool]:
        """The codes of imt-diagnosis a Condition carries (in its code or its morphology), and, when it carries none,
        whether its words name the IMT."""
        imt = self.terminology["imt-diagnosis"]
        matched = imt.matching(_codings(code) + _codings(morphology))
        return matched, not matched and (imt.names_in_text(_text_of(code)) or imt.names_in_text(_text_of(morphology)))

    def _other_cancer(self, code: Mapping[str, Any] | None, profiles: str) -> str | None:
        """What a Condition that is not the IMT (nor profiled as a secondary tumour) is: "primary", another primary
        cancer (mCODE's profile, a code of primary-cancer-conditions or the words that name one: a chart seldom
        profiles its Conditions, and a lung cancer's ALK fusion must not be read as the IMT's); else "secondary", a
        secondary tumour outside the lymph nodes (a code of secondary-cancer-conditions or the words that name one:
        a metastasis recorded without mCODE's profile is still one); else None."""
        primary = self.terminology["primary-cancer-conditions"]
        if PRIMARY_PROFILE in profiles or primary.matching(_codings(code)) or primary.names_in_text(_text_of(code)):
            return "primary"
        return "secondary" if self._names_a_metastasis(code, None) else None

    def _condition(self, condition: Mapping[str, Any], where: str) -> None:
        try:
            code = _concept(condition, "code")
            morphology = _morphology(condition)
            profiles = _profiles(condition)
            matched, named = self._names_the_imt(code, morphology)
            secondary = SECONDARY_PROFILE in profiles
            kind = None if matched or named or secondary else self._other_cancer(code, profiles)
        except _Malformed:
            # What it is cannot be read, so it may be another cancer: skipped as malformed and forgotten, it would
            # leave that cancer's findings that name no cancer to be read as the IMT's (H13), as another primary
            # cancer whose site cannot be read would.
            if self._said_to_have(condition):
                self.unknown_conditions.add(where)
            raise
        unprofiled = False  # a secondary tumour known by its code or words, not by mCODE's profile
        if secondary or kind == "secondary":
            # Known as a metastasis, what follows it says of distant disease (malformed: a finding not read, _Unread)
            self.bearing = ("tumor.distant_disease",)
        if kind == "primary" and self._said_to_have(condition):
            # Another primary cancer, known by its code or profile, is counted as one before the rest of it is read:
            # skipped as malformed, it would leave its findings that name no cancer to be read as the IMT's (H13).
            self.other_primaries.add(where)
        # The shape of every element used below, checked before anything is recorded: a malformed Condition is
        # skipped whole, never half-read (but for the other primary cancer above, the cautious reading).
        verification = _status(condition, "verificationStatus")
        clinical = _status(condition, "clinicalStatus")
        site_concepts = _concepts(condition, "bodySite")
        site_codings = [coding for site in site_concepts for coding in _codings(site)]
        related = _related(condition)
        if not matched and not named and not secondary:
            if kind != "secondary":
                self.other_conditions.add(where)  # another disease: nothing of it is read
                return
            secondary = unprofiled = True  # read below as a profiled one is
        if _SAID_NOT_TO_HAVE & set(verification):
            self.skip(where, f"verification status {'/'.join(verification)}; not used")
            return
        if _unconfirmed(condition, verification) and not secondary:
            self.skip(where, f"verification status {_verification_said(condition, verification)}, not confirmed; "
                             "not used as the IMT diagnosis")
            return
        if "resolved" in clinical:
            self.skip(where, "clinical status resolved; not used")
            return
        if not clinical and any(key.startswith("abatement") for key in condition):
            # FHIR (con-4): an abated condition is inactive, in remission or resolved; which, the chart does not say,
            # and a resolved one is not used.
            self.skip(where, "abated (abatement given) without a clinical status: resolved or in remission cannot be "
                             "told; not used")
            return
        if not matched and not named:
            self.other_conditions.add(where)
            self._secondary(condition, where, clinical, verification, site_codings, related, unprofiled)
            return
        self.imt_conditions[where] = tuple(f"{c.system}|{c.code}" for c in matched) if matched else ("text",)
        if secondary:
            self._secondary(condition, where, clinical, verification, site_codings, related)
            return
        if set(clinical) & {"recurrence", "relapse"}:
            self.offer("history.recurrence", True, where, note=f"clinical status {'/'.join(clinical)}")
        if self._names_a_metastasis(code, morphology):
            self._metastatic_imt(where, clinical)
        epithelioid = self.terminology["epithelioid-imt"]
        if epithelioid.matching(_codings(code) + _codings(morphology)):
            self.offer("tumor.epithelioid_morphology", True, where)
        elif epithelioid.names_in_text(_text_of(code)) or epithelioid.names_in_text(_text_of(morphology)):
            self.offer("tumor.epithelioid_morphology", True, where)
            self.skip(where, "epithelioid morphology recognised from the Condition's text only (no verified code "
                             "exists): confirm it", "tumor.epithelioid_morphology", kind="weak")
        for body_site in site_concepts:
            codings = _codings(body_site)  # (any system a tumor-site value set lists: a copy may add its own)
            site = next((site for coding in codings for site, name in TUMOR_SITE_VALUE_SETS.items()
                         if self.terminology[name].has(*coding)), None)
            if site is None and any(coding.system == SNOMED for coding in codings):
                site = "other"  # a SNOMED CT body structure that no tumor-site value set places: not a guess
            if site is not None:
                self.offer("tumor.site", site, where)

    @staticmethod
    def _said_to_have(condition: Mapping[str, Any]) -> bool:
        """Whether a Condition may be one the patient has: not refuted nor entered in error (a cancer the patient is
        said not to have is none); one whose verification status cannot be read may be."""
        try:
            return not _SAID_NOT_TO_HAVE & set(_status(condition, "verificationStatus"))
        except _Malformed:
            return True

    def _names_a_metastasis(self, code: Mapping[str, Any] | None, morphology: Mapping[str, Any] | None) -> bool:
        """Whether a Condition's code (and mCODE morphology, when given) names a metastasis: a code of
        secondary-cancer-conditions, or the value set's words ("lung metastases", "metastatic inflammatory
        myofibroblastic tumour") in its text, unless the value set's vetoes say otherwise (negated, hedged, what a
        tumour may do rather than did, in a lymph node). Of another Condition, it makes a secondary tumour; of the
        IMT's own, the tumour's spread."""
        secondary = self.terminology["secondary-cancer-conditions"]
        return bool(secondary.matching(_codings(code))) or any(
            secondary.names_in_text(_text_of(concept)) for concept in (code, morphology))

    def _metastatic_imt(self, where: str, clinical: list[str]) -> None:
        path = "tumor.distant_disease"
        if set(clinical) & {"inactive", "remission"}:
            self.skip(where, f"the IMT's Condition names a metastasis, with clinical status {'/'.join(clinical)}; "
                             "not used for staging", path)
            return
        # Undated on purpose: the Condition's onset and recordedDate are the tumour's, not the day its spread was
        # written, so they cannot put this before or after an M category. Undated, it stands beside the latest
        # dated finding: an M0 of any date is then a conflict (distant disease left unknown, staging requested),
        # never a later finding that silently outranks the chart's own word "metastatic".
        self.offer(path, True, where, None, "the IMT's Condition names a metastasis")
        self.skip(where, "the IMT's Condition names a metastasis in its code or words: read as distant disease; "
                         "confirm it (an M category says it best)", path, kind="weak")

    def _secondary(self, condition: Mapping[str, Any], where: str, clinical: list[str], verification: list[str],
                   sites: list[Coding], references: list[str], unprofiled: bool = False) -> None:
        path = "tumor.distant_disease"
        related = [self._resolve(r) for r in references]
        if related and not any(r in self.imt_conditions for r in related):
            self.skip(where, f"secondary tumour of {', '.join(related)}, not of the IMT; not used for staging", path)
            return
        if not related and self._beside_another_cancer():
            # With another primary cancer in the chart, a metastasis that names no primary may be that cancer's.
            self.skip(where, "secondary tumour that names no primary (extension condition-related), in a chart that "
                             f"holds {self._other_cancers()}; not used for staging: name "
                             "its primary", path)
            return
        self.imt_secondaries.add(where)  # the IMT's, confirmed or not: a finding about it is about the IMT
        if _unconfirmed(condition, verification):
            self.skip(where, f"secondary tumour not confirmed (verification status "
                             f"{_verification_said(condition, verification)}); not used for staging", path)
            return
        if set(clinical) & {"inactive", "remission", "resolved"}:
            self.skip(where, f"secondary tumour with clinical status {'/'.join(clinical)}; not used for staging", path)
            return
        regional = self.terminology["regional-lymph-node-sites"]
        if sites and regional.matching(sites):
            self.skip(where, "secondary tumour in a lymph node, which may be regional: not counted as distant "
                             "disease (stage the patient explicitly)", path)
            return
        self.offer(path, True, where, _when(condition, "onset", "recordedDate"), "a secondary (metastatic) tumour")
        if unprofiled and not related:
            self.skip(where, "secondary tumour known by its code or words (not mCODE's SecondaryCancerCondition "
                             "profile) and naming no primary: read as the IMT's distant disease; confirm it", path,
                      kind="weak")

    def _procedure(self, procedure: Mapping[str, Any], where: str) -> None:
        code = _concept(procedure, "code")
        profiled = SURGERY_PROFILE in _profiles(procedure)
        coded = self.terminology["tumor-resection-procedures"].matching(_codings(code))
        if not profiled and not coded:
            self._other_procedure(procedure, code, where)
            return
        self.bearing = ("history.surgery_done",)
        status = procedure.get("status")
        if status != "completed":
            self.skip(where, f"surgical procedure with status {status!r}; only completed ones count",
                      "history.surgery_done")
            return
        reasons = [self._resolve(r) for r in _references(procedure, "reasonReference")]
        if reasons and not any(r in self.imt_conditions for r in reasons):
            self.skip(where, f"surgery for {', '.join(str(r) for r in reasons)}, not for the IMT; not used",
                      "history.surgery_done")
            return
        if not reasons and self._beside_another_cancer():
            self.unattributed_surgeries.append(where)  # (decided once every resource is read: _surgery)
            return
        self.offer("history.surgery_done", True, where)

    def _other_procedure(self, procedure: Mapping[str, Any], code: Mapping[str, Any] | None, where: str) -> None:
        """A completed procedure for the IMT that is not known as its resection (a biopsy, or a resection coded
        otherwise than the value set) does not make surgery "yes", and says so: surgery left "no" in silence, where
        a resection coded otherwise was done, would have the rules suggest what surgery comes first."""
        if procedure.get("status") != "completed":
            return  # (answered before any reference is resolved: most of a chart's procedures end here or below)
        try:
            reasons = [self._resolve(r) for r in _references(procedure, "reasonReference")]
        except _Malformed:
            return  # (a procedure that is no resection: its shape is not this reader's business)
        if any(r in self.imt_conditions for r in reasons):
            self.skip(where, f"procedure for the IMT ({_said_concept(code)}) not known as a resection (value set "
                             "tumor-resection-procedures, or mCODE's cancer-related surgical procedure profile): not "
                             "counted as surgery; if it was one, code or profile it so", "history.surgery_done")

    def _surgery(self) -> None:
        """Surgeries that name no reason, in a chart that holds another primary cancer: the other cancer's, maybe.
        Left out, surgery would read "no"; taken, it may be the other cancer's: unless another resource says whether
        the IMT was operated on, nothing is evaluated."""
        path = "history.surgery_done"
        for where in self.unattributed_surgeries:
            said = (f"surgery that names no reason (reasonReference), in a chart that holds "
                    f"{self._other_cancers()}")
            if path in self.candidates:
                self.skip(where, f"{said}; not used", path)
            else:
                self.problems.append(FhirProblem(
                    where, f"{said}: whether the IMT was operated on cannot be established, so nothing is evaluated: "
                    "name its reason", "error", path, "unattributed"))

    def _medication(self, resource: Mapping[str, Any], where: str) -> None:
        concept = _concept(resource, "medicationCodeableConcept")
        reference = resource.get("medicationReference")
        if concept is None:
            if isinstance(reference, _OBJECT) and isinstance(reference.get("reference"), str):
                concept = self._medication_code(str(reference["reference"]), resource)
        codings = _codings(concept)
        by_name = None  # why it is an ALK inhibitor, when only its name says so
        if not self.terminology["alk-inhibitors"].matching(codings):
            by_name = self._alk_inhibitor_named(concept, reference, codings)
            if by_name is None:
                return
        status = resource.get("status")
        # MedicationRequest.doNotPerform true is a prohibition ("do not give crizotinib"), a modifier element: read as
        # an order, a drug never given would make a later worsening progression on it.
        prohibited = resource.get("doNotPerform") if resource["resourceType"] == "MedicationRequest" else None
        if prohibited is not None and not isinstance(prohibited, bool):
            raise _Malformed(f"doNotPerform must be true or false, found {_kind(prohibited)}")
        if status not in _MEDICATION_TAKEN[resource["resourceType"]]:
            self.skip(where, f"ALK inhibitor with status {_short(status)!r}; not counted as given")
        elif resource["resourceType"] == "MedicationRequest" and resource.get("intent") in _NOT_ORDERED:
            self.skip(where, f"ALK inhibitor with intent {resource['intent']!r} (not an order); not counted as given")
        elif prohibited:
            self.skip(where, "ALK inhibitor ordered not to be given (doNotPerform true); not counted as given")
        else:
            when = _when(resource, "effective", "authoredOn")
            if when is None or not self._after_today(when, where):
                if by_name is not None:
                    self.skip(where, by_name, _PROGRESSION, kind="weak")
                self.alk_inhibitors.append((when, where))

    def _alk_inhibitor_named(self, concept: Mapping[str, Any] | None, reference: Any,
                             codings: tuple[Coding, ...]) -> str | None:
        """Why a medication that no code of value set alk-inhibitors names is an ALK inhibitor all the same, or None:
        its text, a coding's display or its reference's display names one of the drug table's (``find_drug``, by
        name only: codes are the value set's). Charts code medications as products (RxNorm clinical or branded
        drugs, a formulary's codes) or name them in text only: left out, an ALK inhibitor given would make
        progression on it "no", and the same drug be suggested again."""
        if self.drugs is None:
            from ..core.rule_loader import load_rulebook

            self.drugs = load_rulebook().drugs
        alk_inhibitors = {name: drug for name, drug in self.drugs.items() if "alk" in drug.targets}
        concept = concept or {}
        texts = [text for text in (concept.get("text"), *(c.get("display") for c in concept.get("coding") or []),
                                   reference.get("display") if isinstance(reference, _OBJECT) else None)
                 if isinstance(text, str)]
        drug = find_drug(alk_inhibitors, texts)
        if drug is None:
            return None
        named = next(text for text in texts if find_drug({drug.name: drug}, [text]))
        codes = f"; its codes: {', '.join(f'{c.system}|{c.code}' for c in codings)}" if codings else ""
        return (f"medication {_short(named)!r} read as the ALK inhibitor {drug.name} by its name, not by a code of "
                f"value set alk-inhibitors{codes}: check it")

    def _medication_code(self, reference: str, resource: Mapping[str, Any]) -> Any:
        """The code of a referenced Medication: contained ("#m1") or in the chart."""
        if reference.startswith("#"):
            for contained in _objects(resource, "contained"):
                if contained.get("id") == reference[1:]:
                    return _concept(contained, "code")
            return None
        label = self._resolve(reference)
        for item in self.chart.items:
            if item.label == label and item.resource is not None and item.resource["resourceType"] == "Medication":
                modifiers = _modifiers(item)
                if modifiers is not None:
                    raise _NotUnderstood(f"medication {_short(label)} carries {modifiers}, which this reader does "
                                         "not understand (FHIR: such an element may change what the resource means)")
                return _concept(item.resource, "code")
        return None

    def _resolve(self, reference: str) -> str:
        """The resource a reference names, as "Type/id": through a Bundle entry's fullUrl, else the last two
        segments of a relative, absolute or versioned reference; a reference it cannot read is returned as is."""
        resolved = self.resolved.get(reference)
        if resolved is None:
            resolved = self.resolved[reference] = self._resolve_once(reference)
        return resolved

    def _resolve_once(self, reference: str) -> str:
        if reference in self.chart.aliases:
            return self.chart.aliases[reference]
        bare = _HISTORY.sub("", reference)
        if bare in self.chart.aliases:
            return self.chart.aliases[bare]
        parts = bare.rstrip("/").split("/")
        absolute = bare.startswith(("http://", "https://"))
        # A relative reference is Type/id, nothing more ("Device/x/Patient/p1" is none); an absolute one names its
        # server, and when the chart says which server it came from (its fullUrls), one on another server is about
        # another record, whatever its id.
        if absolute and self.chart.bases and "/".join(parts[:-2]) not in self.chart.bases:
            return bare
        if (len(parts) == 2 or (absolute and len(parts) > 4)) and parts[-2][:1].isupper() and parts[-1]:
            return "/".join(parts[-2:])
        return bare

    def _observation(self, observation: Mapping[str, Any], where: str) -> None:
        status = observation.get("status")
        if status not in _FINAL:
            self.skip(where, f"status {status!r}; only final, amended or corrected results are used")
            return
        code = _concept(observation, "code")
        if code is None:
            raise _Malformed("Observation.code is required")
        codings = _codings(code)
        codes = set(codings)  # (system, code) pairs: a Coding is that tuple
        terms = self.terminology
        if (LOINC, VARIANT) in codes:
            self._variant(observation, where)
        elif (LOINC, TUMOR_SIZE) in codes:
            self._tumor_size(observation, where)
        elif terms["tnm-distant-metastases-observation"].matching(codings) or TNM_M_PROFILE in _profiles(observation):
            self._m_category(observation, where)
        elif terms["history-of-metastatic-cancer"].matching(codings):
            self._metastatic_history(observation, where)
        elif terms["cancer-disease-status"].matching(codings):
            self._disease_status(observation, where)
        for system, value in codes:
            if system == FACT_SYSTEM:
                self._project_fact(value, observation, where)

    def _beside_another_cancer(self) -> bool:
        """Whether the chart holds a Condition that may be a cancer other than the IMT: then a finding that names no
        cancer may be that one's."""
        return bool(self.other_primaries or self.unknown_conditions)

    def _other_cancers(self) -> str:
        """The Conditions that may be another cancer, as a message says them."""
        said = [f"another primary cancer ({', '.join(sorted(self.other_primaries))})"] if self.other_primaries else []
        if self.unknown_conditions:
            said.append(f"a Condition that cannot be read, which may be another cancer "
                        f"({', '.join(sorted(self.unknown_conditions))})")
        return " and ".join(said)

    def _cancer_named(self, observation: Mapping[str, Any]) -> tuple[str, list[str]]:
        """Which cancer a finding is about, by its ``focus`` (resolved): "imt" when it names the IMT's Condition or
        one of its secondary tumours; "other" when it names other Conditions only; "unnamed" when it names no
        Condition (no focus, or mCODE's other choices, a Tumor BodyStructure or a specimen, which a chart of
        Conditions and Observations does not tie to a cancer)."""
        focus = [self._resolve(r) for r in _references(observation, "focus")]
        if any(f in self.imt_conditions or f in self.imt_secondaries for f in focus):
            return "imt", focus
        if any(_is_condition(f) for f in focus):
            return "other", focus
        return "unnamed", focus

    def _not_the_imts(self, observation: Mapping[str, Any], what: str, *, of_the_patient: bool = False) -> str | None:
        """Why a finding is not the IMT's, or None. One about another Condition is not; nor, like a secondary
        tumour that names no primary, one that names none in a chart that holds another primary cancer (its staging,
        its size, its variants may be that cancer's), unless what it says holds of the patient's every cancer
        (``of_the_patient``). In a chart whose only cancer is the IMT, a finding needs no focus. (mCODE's staging
        Observations name their cancer in ``focus``: CancerStageCommonRules, focus only
        Reference(PrimaryCancerCondition), must support.)"""
        if "focus" not in observation and not self._beside_another_cancer():
            return None  # the usual chart, answered without resolving anything (every tumour size comes here)
        whose, focus = self._cancer_named(observation)
        if whose == "other":
            return f"{what} of {', '.join(focus)}, not of the IMT; not used"
        if whose == "unnamed" and self._beside_another_cancer() and not of_the_patient:
            return (f"{what} that names no cancer (focus), in a chart that holds {self._other_cancers()}; not used: "
                    "name its cancer")
        return None

    def _m_category(self, observation: Mapping[str, Any], where: str) -> None:
        path = "tumor.distant_disease"
        self.bearing = (path,)
        not_the_imts = self._not_the_imts(observation, "M category")
        if not_the_imts is not None:
            self.skip(where, not_the_imts, path)
            return
        values = _codings(_concept(observation, "valueCodeableConcept"))
        when = _when(observation, "effective", "issued")
        shown = ", ".join(f"{c.code}" for c in values) or "no value"
        if self.terminology["distant-metastasis-present"].matching(values):
            self.offer(path, True, where, when, f"M category {shown}")
        elif self.terminology["distant-metastasis-absent"].matching(values):
            self.offer(path, False, where, when, f"M category {shown}")
        else:
            self.skip(where, f"distant-metastasis category {shown} is not one this reader recognises (value sets "
                             "distant-metastasis-absent / -present); not used", path)

    def _metastatic_history(self, observation: Mapping[str, Any], where: str) -> None:
        """mCODE's history of metastatic cancer: its code says the history (e.g. "history of cancer metastatic to
        liver"); ``valueBoolean`` false says there is none, and no value or true that there is."""
        self.bearing = ("tumor.distant_disease",)
        value = observation.get("valueBoolean")
        if value is not None and not isinstance(value, bool):
            raise _Malformed(f"valueBoolean must be true or false, found {_kind(value)}")
        present = value is not False
        # "No history of metastatic cancer", naming no cancer, is said of the patient: of the IMT too, whatever other
        # cancer the chart holds. A history of one is the IMT's only as any staging finding is.
        not_the_imts = self._not_the_imts(observation, "history of metastatic cancer", of_the_patient=not present)
        if not_the_imts is not None:
            self.skip(where, not_the_imts, "tumor.distant_disease")
            return
        self.offer("tumor.distant_disease", present, where, _when(observation, "effective", "issued"),
                   "history of metastatic cancer: " + ("yes" if present else "no"))

    def _disease_status(self, observation: Mapping[str, Any], where: str) -> None:
        whose, focus = self._cancer_named(observation)
        if whose == "other":
            self.skip(where, f"disease status of {', '.join(focus)}, not of the IMT; not used")
            return
        # Naming no cancer, the IMT's when it is the chart's only one; beside another, whose cannot be told (and
        # progression, a yes/no fact, cannot be left unknown: see _progression).
        attributed = whose == "imt" or not self._beside_another_cancer()
        self.bearing = (_DISEASE_STATUS,)
        values = _codings(_concept(observation, "valueCodeableConcept"))
        if self.terminology["disease-worsened"].matching(values):
            when = _when(observation, "effective", "issued")
            if when is None or not self._after_today(when, where, _PROGRESSION):
                (self.progressions if attributed else self.unattributed).append((when, where))

    def _progression(self) -> None:
        """Progression on an ALK inhibitor: a disease status "worse" no earlier than an ALK inhibitor was given."""
        # A medication record not used (an ALK inhibitor, for all that can be read) beside a progression, or a
        # disease status not used beside an ALK inhibitor, could have made progression "yes"; left out, "no".
        for kind, other in (("inhibitor", self.progressions), ("progression", self.alk_inhibitors)):
            for where, (before, after) in self.unreadable.get(kind, []):
                if other:
                    what = "medication record" if kind == "inhibitor" else "disease status"
                    self.problems.append(FhirProblem(
                        where, f"{before}{what}{after} beside "
                        f"{'a progression' if kind == 'inhibitor' else 'an ALK inhibitor'}: progression on an ALK "
                        "inhibitor cannot be established, so nothing is evaluated", "error",
                        _PROGRESSION, "unreadable"))
        established = False
        for when, where in self.progressions:
            given = self._given_before(when)
            if given:
                established = True
                for path in ("history.progressed_on_alk_inhibitor", "history.progressed_on_prior_systemic"):
                    self.offer(path, True, where, note=f"progression after {', '.join(given)}")
            else:
                self.skip(where, "disease progression recorded, but no ALK inhibitor given before it was found; "
                                 "progression on prior therapy is not set from it",
                          "history.progressed_on_alk_inhibitor")
        for when, where in self.unattributed:
            said = (f"disease progression that names no cancer (focus), in a chart that holds "
                    f"{self._other_cancers()}")
            given = self._given_before(when)
            if given and not established:
                # Left out, progression would read "no"; taken, it may be the other cancer's: either could change
                # the recommendation, so nothing is evaluated (as for a malformed disease status).
                self.problems.append(FhirProblem(
                    where, f"{said}, after {', '.join(given)}: progression on an ALK inhibitor cannot be established, "
                    "so nothing is evaluated: name its cancer", "error", _PROGRESSION, "unattributed"))
            else:
                self.skip(where, f"{said}; not used", _PROGRESSION)

    def _given_before(self, when: _Period | None) -> list[str]:
        """The ALK inhibitors given no later than a progression found at ``when`` (undated ones count)."""
        return [source for started, source in self.alk_inhibitors
                if started is None or when is None or not when.before(started)]

    def _doubt_variants(self, label: str, observation: Mapping[str, Any], modifiers: str) -> None:
        """An Observation derived from variants (an implication) that carries a modifier element: what it says of
        their clinical significance cannot be read as it stands, and left out, a "benign" would be lost (a variant
        with no such statement reads as the tumour's fusion), so a Present variant it names is not read as one."""
        try:
            said, named = _significance_said(observation), _references(observation, "derivedFrom")
        except _Malformed:
            return  # (as an unreadable implication is: left to the variant's own reading)
        if not said:
            return  # (a therapeutic implication, say, that states no clinical significance: nothing lost)
        for reference in named:
            self.doubted[self._resolve(reference)] = (
                f"a statement about it ({_short(label)}) that carries {modifiers}, which this reader does not "
                "understand")

    def _implication(self, observation: Mapping[str, Any]) -> None:
        """A clinical significance said of variants by another Observation (Genomics Reporting's implications, or an
        Observation coded 53037-8), by its ``derivedFrom`` (``read`` calls it only for those that have one).
        Unreadable ones are left to the variant's own reading."""
        try:
            said = _significance_said(observation)
            if said:
                for reference in _references(observation, "derivedFrom"):
                    self.significance.setdefault(self._resolve(reference), []).extend(said)
        except _Malformed:
            return

    def _not_a_tumour_fusion(self, observation: Mapping[str, Any], where: str, genes: list[str]) -> str | None:
        """Why a "Present" variant is not the tumour's fusion (germline, not stated pathogenic, a change of sequence
        or copy number with nothing saying fusion), or None."""
        if where in self.doubted:
            return self.doubted[where]
        terms = self.terminology
        somatic, pathogenic = terms["variant-somatic-origin"], terms["variant-pathogenic-significance"]
        for component in _objects(observation, "component"):
            codes = [c.code for c in _codings(_concept(component, "code"))]  # (a doubt: by its code alone)
            if GENOMIC_SOURCE in codes:
                value = _concept(component, "valueCodeableConcept")
                sources = _codings(value)
                if sources and not somatic.matching(sources):
                    return f"genomic source {_said_concept(value)}, not somatic"
        stated = [component for component in _objects(observation, "component")
                  if any(c.code == CLINICAL_SIGNIFICANCE for c in _codings(_concept(component, "code")))]
        for statement in stated + self.significance.get(where, []):
            value = _concept(statement, "valueCodeableConcept")
            if value is not None and not pathogenic.matching(_codings(value)):
                return f"clinical significance {_said_concept(value)}, not pathogenic or likely pathogenic"
        change = _sequence_change(observation, terms["variant-sequence-changes"])
        if change is not None and len(set(genes)) == 1 and not _says_fusion(observation, terms["variant-fusions"]):
            return f"{change} and nothing saying it is a fusion (no partner gene, fusion transcript or fusion type)"
        return None

    def _variant(self, observation: Mapping[str, Any], where: str) -> None:
        genes: list[str] = []  # HGNC ids studied
        by_text: list[str] = []
        known = self.terminology.genes  # HGNC id -> (the facts' gene, its symbol): the rulebook's gene value sets
        try:
            for component in _objects(observation, "component"):
                if (LOINC, GENE_STUDIED) not in _codings(_concept(component, "code")):
                    continue
                concept = _concept(component, "valueCodeableConcept")
                hgnc_codings = [c for c in _codings(concept) if c.system in HGNC_SYSTEMS]
                for coding in hgnc_codings:
                    gene = coding.code if coding.code.startswith("HGNC:") else f"HGNC:{coding.code}"
                    genes.append(gene)
                    display = _display(concept, coding)
                    if display:
                        self.symbols[gene] = display
                if not hgnc_codings:  # a gene named by its symbol only: weaker than a code, used and reported
                    symbol = (_text_of(concept) or "").strip().upper()
                    if symbol in self.terminology.gene_by_symbol:
                        genes.append(self.terminology.gene_by_symbol[symbol])
                        by_text.append(symbol)
        except _Malformed:
            # Its genes unread, it may be a result about any gene of the facts: a finding not read about each
            # (_Unread), so that another result of that gene does not stand alone in its place.
            self.bearing = tuple(dict.fromkeys(f"molecular.{gene}.status" for gene, _ in known.values()))
            raise
        ours = [g for g in genes if g in known]
        if not ours:
            return
        # Its genes known, what follows it says of their status (so, malformed, it is a finding not read: _Unread).
        self.bearing = tuple(dict.fromkeys(f"molecular.{known[hgnc][0]}.status" for hgnc in ours))
        value = _codings(_concept(observation, "valueCodeableConcept"))
        read = {c.code for c in value if c.system == LOINC}  # what makes the finding: LOINC's answer
        said = {c.code for c in value}  # what may doubt it: the other answer's code, of any system
        not_the_imts = self._not_the_imts(observation, "variant")
        if not_the_imts is not None:
            for hgnc in ours:
                self.skip(where, f"{known[hgnc][1]} {not_the_imts}", f"molecular.{known[hgnc][0]}.status")
            return
        if PRESENT in read and ABSENT not in said:
            status = "positive"
            why_not = self._not_a_tumour_fusion(observation, where, genes)
            if why_not is not None:
                for hgnc in ours:
                    gene, symbol = known[hgnc]
                    self.skip(where, f"{symbol} variant present with {why_not}: not read as the tumour's fusion "
                                     "(status left unknown)", f"molecular.{gene}.status")
                return
        elif ABSENT in read and PRESENT not in said:
            status = "negative"
        else:
            self.skip(where, "variant Observation is neither clearly Present nor Absent; not used")
            return
        for symbol in by_text:
            self.skip(where, f"gene {symbol} recognised by its symbol text only (no HGNC code); used, but check "
                             "the result", kind="weak")
        methods = [c.code for c in _codings(_concept(observation, "method")) if c.system == METHOD_SYSTEM]
        for hgnc in ours:
            gene = known[hgnc][0]
            self.offer(f"molecular.{gene}.status", status, where)
            for method in methods:
                self.methods.setdefault(gene, []).append((method, where))
            if status == "positive":
                partners = [g for g in genes if g != hgnc and known.get(g, (None,))[0] != gene]
                if len(partners) == 1:
                    partner = self.symbols.get(partners[0]) or (known[partners[0]][1] if partners[0] in known else None)
                    if partner:
                        self.offer(f"molecular.{gene}.fusion_partner", partner, where)
                elif len(partners) > 1:
                    self.skip(where, f"several partner genes for {gene.upper()}; the partner is left unknown",
                              f"molecular.{gene}.fusion_partner")

    def _tumor_size(self, observation: Mapping[str, Any], where: str) -> None:
        self.bearing = ("tumor.size_cm",)
        not_the_imts = self._not_the_imts(observation, "tumor size")
        if not_the_imts is not None:
            self.skip(where, not_the_imts, "tumor.size_cm")
            return
        for component in _objects(observation, "component"):
            if (LOINC, LONGEST_DIMENSION) not in _codings(_concept(component, "code")):
                continue
            quantity = component.get("valueQuantity")
            if not isinstance(quantity, _OBJECT) or quantity.get("value") is None:
                self.skip(where, "tumor size without a value; not used", "tumor.size_cm")
                return
            value = quantity["value"]
            if isinstance(value, bool) or not isinstance(value, _NUMBER):
                raise _Malformed(f"valueQuantity.value must be a number, found {_kind(value)}")
            if quantity.get("comparator") is not None:
                self.skip(where, f"tumor size given as a bound ({_short(quantity['comparator'])} {value}), not a "
                                 "measurement; not used", "tumor.size_cm")
                return
            code, written, system = quantity.get("code"), quantity.get("unit"), quantity.get("system")
            if system is not None and system != UCUM:
                if not isinstance(system, str):
                    raise _Malformed(f"valueQuantity.system must be text, found {_kind(system)}")
                if code is not None:
                    self.skip(where, f"tumor size whose unit code {_short(code)!r} is of the code system "
                                     f"{_short(system)!r}; only UCUM's cm and mm are understood", "tumor.size_cm")
                    return
            unit = code or written
            if code != written and code in _CM_UNITS and written in _CM_UNITS:  # (both text: only texts are in it)
                self.skip(where, f"tumor size whose unit {written!r} and code {code!r} disagree; "
                                 "not used", "tumor.size_cm")
                return
            factor = _CM_PER_UNIT.get(str(unit))
            if factor is None:
                self.skip(where, f"tumor size in unit {_short(unit)!r}; only cm and mm are understood",
                          "tumor.size_cm")
                return
            try:
                self.offer("tumor.size_cm", round(float(value) * factor, 6), where)
            except OverflowError:
                raise _Malformed("valueQuantity.value is out of range") from None
            return
        self.skip(where, f"tumor size without a longest-dimension component (LOINC {LONGEST_DIMENSION}); not used",
                  "tumor.size_cm")

    def _project_fact(self, path: str, observation: Mapping[str, Any], where: str) -> None:
        fields = fact_fields()
        self.bearing = (path,)
        if path in FACT_STANDARD_ELEMENTS:
            self.skip(where, f"{FACT_SYSTEM} code {path!r} is not a fact this code system can carry in a chart: it is "
                             f"read from {FACT_STANDARD_ELEMENTS[path]}")
            return
        if path not in fields:
            usable = [p for p in fields if p not in FACT_STANDARD_ELEMENTS]
            close = difflib.get_close_matches(path, usable, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            self.skip(where, f"{FACT_SYSTEM} code {_short(path)!r} is not a fact this code system can carry{hint}")
            return
        kind = fields[path].kind
        given = [key for key, value in observation.items() if key.startswith("value") and value is not None]
        if len(given) > 1:  # value[x] is one choice in FHIR: which of two values is meant cannot be told
            raise _Malformed(f"value[x] given more than once ({', '.join(_short(key, 40) for key in given[:4])})")
        value: Any
        if isinstance(observation.get("valueBoolean"), bool):
            value = observation["valueBoolean"]
        elif isinstance(observation.get("valueString"), str):
            value = observation["valueString"]
        elif _concept(observation, "valueCodeableConcept") is not None:
            codes = [c.code for c in _codings(_concept(observation, "valueCodeableConcept"))]
            value = codes if kind == "set" else (codes[0] if len(codes) == 1 else None)
        else:
            value = None
        if value is None:
            if _cannot_be_unknown(path):
                self.problems.append(FhirProblem(where, f"no usable value for {path}, which cannot be left unknown, "
                                                 "so nothing is evaluated", "error", path, "unreadable"))
            else:
                self.skip(where, f"no usable value for {path}", path)
            return
        self.offer(path, value, where)

    # -- result --

    def _settle(self, path: str, offered: list[_Candidate]) -> list[_Candidate] | None:
        """The candidates that stand for a fact: all of them when they agree; when they do not, the latest-dated
        ones (earlier ones are reported as superseded), or None when findings of the same time disagree."""
        if len(offered) == 1 or len({_key(c.value) for c in offered}) == 1:  # (most facts have one source)
            return offered
        standing = _latest(offered)
        if len({_key(c.value) for c in standing}) == 1:
            if standing[0].value is not _UNREAD:  # (a finding not read that stands is said by _left_unread)
                for candidate in offered:
                    if candidate not in standing and candidate.value is not _UNREAD:
                        self.problems.append(FhirProblem(
                            candidate.source, f"{_said(candidate)} is superseded by the later "
                            f"{'; '.join(_said(c) for c in standing)}", "warning", path, "superseded"))
            return standing
        return None

    def _left_unread(self, path: str, offered: list[_Candidate], standing: list[_Candidate] | None) -> bool:
        """Whether a fact is left unknown because a finding that is not used stands among those that decide it (see
        _Unread), said when a finding that was read is not used for it."""
        latest = standing if standing is not None else _latest(offered)
        unread = [c for c in latest if c.value is _UNREAD]
        if not unread or len({_key(c.value) for c in latest if c.value is not _UNREAD}) > 1:
            return False  # (findings read that disagree among themselves: a conflict as any, which lists this one)
        read = [c for c in offered if c.value is not _UNREAD]
        if read:
            not_read = "; ".join(f"{c.source}{f' on {c.when}' if c.when else ' (undated)'}" for c in unread)
            earlier = "; an earlier finding does not stand in place of a later one not read" if standing else ""
            self.problems.append(FhirProblem(
                ", ".join(dict.fromkeys(c.source for c in unread + read)),
                f"{path} left unknown: what {not_read} says is not read (see its own message), and it may differ from "
                f"{'; '.join(_said(c) for c in read)}{earlier}", "warning", path, "conflict"))
        return True

    def result_data(self) -> tuple[dict[str, Any], dict[str, tuple[str, ...]], list[FhirProblem]]:
        data: dict[str, Any] = {}
        sources: dict[str, tuple[str, ...]] = {}
        errors = []
        for gene, found in self.methods.items():
            self.offer(f"molecular.{gene}.methods", sorted({m for m, _ in found}), found[0][1])
        for path, findings in self.candidates.items():
            # In the order of time (_in_time_order), not of the entries: a server returns a search's matches in any
            # order, and the same chart must read, and be said, the same.
            offered = sorted(findings, key=_in_time_order) if len(findings) > 1 else findings
            standing = self._settle(path, offered)
            if self._left_unread(path, offered, standing):
                continue
            if standing is None:
                refs = tuple(dict.fromkeys(c.source for c in offered))
                shown = "; ".join(_said(c) for c in offered)
                if not _cannot_be_unknown(path):
                    self.problems.append(FhirProblem(", ".join(refs), f"conflicting values for {path}: {shown}; "
                                                     "left unknown", "warning", path, "conflict"))
                else:
                    errors.append(FhirProblem(", ".join(refs), f"conflicting values for {path}: {shown}; it cannot "
                                              "be left unknown, so nothing is evaluated", "error", path, "conflict"))
                continue
            _set(data, path, standing[0].value)
            sources[path] = tuple(dict.fromkeys(c.source for c in standing))
        return data, sources, errors

    def _result(self, eligibility: Eligibility) -> FhirFacts:
        data, sources, errors = self.result_data()
        # Already not evaluable (a conflict, an unreadable yes/no fact): the values are still checked, so that the
        # chart's every problem is reported at once, not the next one only after the first is mended.
        blocked = bool(errors) or any(problem.severity == "error" for problem in self.problems)
        try:
            facts = parse_facts(data)
        except InvalidInputError as exc:
            # A value the contract does not allow (the project's code system, a size out of range): report it, drop
            # it, read the rest.
            for problem in exc.problems:
                # An item of a set ("molecular.alk.methods[1]") came from the resources of the whole set.
                fact_path = problem.path.split("[")[0]
                # A yes/no fact dropped would read "no": then nothing is evaluated instead.
                severity = "error" if _cannot_be_unknown(fact_path) else "warning"
                outcome = ("it cannot be left unknown, so nothing is evaluated" if severity == "error" else
                           "not used")
                self.problems.append(FhirProblem(", ".join(sources.get(fact_path, ("?",))),
                                                 f"value not allowed for {problem.path}: {problem.message}; {outcome}",
                                                 severity, problem.path, "not_allowed"))
                _unset(data, problem.path)
                sources.pop(fact_path, None)
            if blocked or any(problem.severity == "error" for problem in self.problems):
                return FhirFacts(None, sources, tuple(self.problems + errors), eligibility, self.patient_label)
            try:
                facts = parse_facts(data)
            except InvalidInputError as again:
                return FhirFacts(None, sources, tuple(self.problems) + tuple(
                    FhirProblem("(facts)", str(p), "error", p.path, "not_allowed") for p in again.problems),
                    eligibility, self.patient_label)
        if blocked:
            return FhirFacts(None, sources, tuple(self.problems + errors), eligibility, self.patient_label)
        return FhirFacts(facts, sources, tuple(self.problems), eligibility, self.patient_label)


# --- FHIR shapes, checked -----------------------------------------------------------------------------------------


def _significance_said(observation: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Where an Observation states a clinical significance (53037-8): its components that do, and itself when its
    code is that."""
    said = [component for component in _objects(observation, "component")
            if any(c.code == CLINICAL_SIGNIFICANCE for c in _codings(_concept(component, "code")))]
    if any(c.code == CLINICAL_SIGNIFICANCE for c in _codings(_concept(observation, "code"))):
        said.append(observation)
    return said


def _cannot_be_unknown(path: str) -> bool:
    """A yes/no fact of the contract: it has no "unknown", so a value lost reads as "no" (a changed recommendation)."""
    fields = fact_fields()
    return path in fields and not fields[path].nullable and fields[path].kind not in ("enum", "set", "text")


def _concept(resource: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    value = resource.get(key)
    if value is None:
        return None
    if not isinstance(value, _OBJECT):
        raise _Malformed(f"{key} must be a CodeableConcept (an object), found {_kind(value)}")
    return value


def _concepts(resource: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    return _objects(resource, key)


def _objects(resource: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = resource.get(key)
    if value is None:
        return []
    if type(value) is list:  # the usual shape (a list of dicts), checked cheaply
        for item in value:
            if type(item) is not dict:
                break
        else:
            return value
    if not isinstance(value, list) or not all(isinstance(v, _OBJECT) for v in value):
        raise _Malformed(f"{key} must be a list of objects, found {_kind(value)}")
    return value


_new_coding = tuple.__new__  # Coding(system, code) without the Python-level __new__ of a named tuple (a hot loop)


def _codings(concept: Mapping[str, Any] | None) -> tuple[Coding, ...]:
    """The (system, code) pairs of a CodeableConcept; codings without both are left out."""
    if concept is None:
        return ()
    codings = concept.get("coding")
    if codings is None:
        return ()
    if type(codings) is list:
        # The shape nearly every chart has (a list of objects whose system and code are text or absent), read in
        # one pass; anything else takes the checking path below, which says what is wrong in the same words.
        found = []
        for coding in codings:
            if type(coding) is not dict:
                break
            system, code = coding.get("system"), coding.get("code")
            if type(system) is str and type(code) is str:
                if system and code:
                    found.append(_new_coding(Coding, (system, code)))
            elif (system is not None and type(system) is not str) or (code is not None and type(code) is not str):
                break
        else:
            return tuple(found)
    if not isinstance(codings, list) or not all(isinstance(c, _OBJECT) for c in codings):
        raise _Malformed(f"coding must be a list of objects, found {_kind(codings)}")
    found = []
    for coding in codings:
        system, code = coding.get("system"), coding.get("code")
        for name, value in (("system", system), ("code", code)):
            if value is not None and not isinstance(value, str):
                raise _Malformed(f"coding.{name} must be text, found {_kind(value)}")
        if system and code:
            found.append(Coding(system, code))
    return tuple(found)


def _status(resource: Mapping[str, Any], key: str) -> list[str]:
    """The codes of a status element (clinicalStatus, verificationStatus), with or without their system: a
    "refuted" must not count as confirmed because its coding forgot the system."""
    concept = _concept(resource, key)
    _codings(concept)  # (checks the shape)
    return [c["code"] for c in (concept or {}).get("coding") or [] if isinstance(c.get("code"), str)]


def _unconfirmed(condition: Mapping[str, Any], verification: list[str]) -> bool:
    """A verification status given without "confirmed" (provisional, differential, unconfirmed, a code this reader
    does not know, or text only); none given is taken as FHIR's common default, confirmed."""
    return condition.get("verificationStatus") is not None and "confirmed" not in verification


def _verification_said(condition: Mapping[str, Any], verification: list[str]) -> str:
    if verification:
        return "/".join(_short(code) for code in verification)
    text = _text_of(_concept(condition, "verificationStatus"))
    return f"{_short(text)!r} (text, no code)" if text else "without a code"


def _variant_component_codes(component: Mapping[str, Any]) -> list[str]:
    """The codes of a variant component's code that may say it is a fusion: LOINC's with LOINC's system, and the
    molecular consequence by its code (see MOLECULAR_CONSEQUENCE)."""
    return [c.code for c in _codings(_concept(component, "code"))
            if c.system == LOINC or c.code == MOLECULAR_CONSEQUENCE]


def _in_change_set(value_set: ValueSet, coding: Coding) -> bool:
    """Whether a DNA change type or molecular consequence is in a variant value set (a Sequence Ontology id by its
    code alone: charts write the system with and without "www." and a trailing slash)."""
    if coding.code.startswith("SO:"):
        return value_set.has(SEQUENCE_ONTOLOGY, coding.code)
    return value_set.has(coding.system, coding.code)


def _sequence_change(observation: Mapping[str, Any], sequence_changes: ValueSet) -> str | None:
    """How a variant Observation describes a change of sequence or copy number (a c. or p.HGVS, or a DNA change type
    or molecular consequence coded from ``sequence_changes``), in words, or None."""
    for component in _objects(observation, "component"):
        codes = [c.code for c in _codings(_concept(component, "code"))]  # (a doubt: by its code alone)
        value = _concept(component, "valueCodeableConcept")
        for code in codes:
            if code in HGVS_CHANGES:
                written = component.get("valueString")
                shown = (repr(_short(written)) if isinstance(written, str) and written
                         else _said_concept(value) if value is not None else None)
                if shown is not None:
                    return f"a sequence change ({HGVS_CHANGES[code]} {shown})"
            elif code in (CHANGE_TYPE, MOLECULAR_CONSEQUENCE) and any(
                    _in_change_set(sequence_changes, c) for c in _codings(value)):
                kind = "DNA change type" if code == CHANGE_TYPE else "molecular consequence"
                return f"{kind} {_said_concept(value)}"
    return None


def _says_fusion(observation: Mapping[str, Any], fusions: ValueSet) -> bool:
    """Whether a variant Observation says it is a fusion: a fusion transcript, a DNA change type or molecular
    consequence of a fusion (coded from ``fusions``, or in its words), or a discrete variant named as one
    ("EML4::ALK", "EML4-ALK fusion")."""
    for component in _objects(observation, "component"):
        codes = _variant_component_codes(component)
        if FUSION_TRANSCRIPT in codes:
            return True
        if any(code in (CHANGE_TYPE, MOLECULAR_CONSEQUENCE, DISCRETE_VARIANT) for code in codes):
            value = _concept(component, "valueCodeableConcept")
            coded = _codings(value)
            written = component.get("valueString")
            words = [_text_of(value) or "", *(c.code for c in coded), *([written] if isinstance(written, str) else [])]
            if any(_in_change_set(fusions, c) for c in coded) or any(fusions.names_in_text(w) for w in words):
                return True
    return False


def _said_concept(concept: Mapping[str, Any] | None) -> str:
    """A coded value as a message shows it: its codes with their displays, else its text."""
    codings = [c for c in (concept or {}).get("coding") or []
               if isinstance(c, _OBJECT) and isinstance(c.get("code"), str)]
    if codings:
        return ", ".join(f"{_short(c['code'])}" + (f" ({_short(c['display'])})" if isinstance(c.get("display"), str)
                                                   else "") for c in codings)
    return repr(_short(_text_of(concept) or "(no value)"))


def _display(concept: Mapping[str, Any] | None, coding: Coding) -> str | None:
    for raw in (concept or {}).get("coding") or []:
        if (raw.get("system") == coding.system and raw.get("code") == coding.code
                and isinstance(raw.get("display"), str)):
            return str(raw["display"])
    return None


def _text_of(concept: Mapping[str, Any] | None) -> str | None:
    """A concept's text, else its codings' displays (what a clinician reading it would see)."""
    if concept is None:
        return None
    text = concept.get("text")
    if isinstance(text, str) and text:
        return text
    displays = [c.get("display") for c in concept.get("coding") or [] if isinstance(c, _OBJECT)]
    return " / ".join(d for d in displays if isinstance(d, str)) or None


def _morphology(condition: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for extension in _objects(condition, "extension"):
        if extension.get("url") == MORPHOLOGY_EXTENSION:
            return _concept(extension, "valueCodeableConcept")
    return None


def _related(condition: Mapping[str, Any]) -> list[str]:
    """The Conditions a Condition names as related (mCODE: a secondary tumour's primary)."""
    return [ext["valueReference"]["reference"] for ext in _objects(condition, "extension")
            if ext.get("url") == RELATED_EXTENSION and isinstance(ext.get("valueReference"), _OBJECT)
            and isinstance(ext["valueReference"].get("reference"), str)]


def _is_condition(reference: str) -> bool:
    """Whether a resolved reference names a Condition (``Condition/id``, or one on another server)."""
    return reference.startswith("Condition/") or "/Condition/" in reference


def _profiles(resource: Mapping[str, Any]) -> str:
    """The resource's meta.profile URLs, in one string. Profiles are recognised by their name anywhere in it, not by
    the whole canonical URL: a versioned canonical (``...|4.0.0``) or a profile derived from mCODE's and named after
    it (an institution's or another guide's) counts, so that a secondary tumour or a staging Observation is not
    missed for the way its profile is spelled; the price is that a URL merely containing the name counts too."""
    meta = resource.get("meta")
    if not isinstance(meta, _OBJECT):
        return ""
    profiles = meta.get("profile")
    return " ".join(p for p in profiles if isinstance(p, str)) if isinstance(profiles, list) else ""


def _references(resource: Mapping[str, Any], key: str) -> list[str]:
    return [r["reference"] for r in _objects(resource, key) if isinstance(r.get("reference"), str)]


def _when(resource: Mapping[str, Any], choice: str, *others: str) -> _Period | None:
    """When a finding holds: ``<choice>DateTime``, ``<choice>Period.start`` or ``<choice>Instant``, else the first of
    ``others`` (plain dateTime elements)."""
    period = resource.get(f"{choice}Period")
    candidates = [resource.get(f"{choice}DateTime"), period.get("start") if isinstance(period, _OBJECT) else None,
                  resource.get(f"{choice}Instant"), *(resource.get(name) for name in others)]
    for value in candidates:
        if isinstance(value, str):
            parsed = _period(value)
            if parsed is not None:
                return parsed
    return None


_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")


def _period(text: str) -> _Period | None:
    """The days a FHIR date or dateTime covers: "2019" is the whole year, "2019-05" the month, a day or a time the
    day (time zones are within a day either way, which is as fine as staging needs)."""
    match = _DATE.match(text)
    if not match:
        return None
    try:
        year = int(match.group(1))
        if match.group(3):
            day = date(year, int(match.group(2)), int(match.group(3)))
            return _Period(day, day)
        if match.group(2):
            month = int(match.group(2))
            first = date(year, month, 1)
            last = (date(year + (month == 12), month % 12 + 1, 1)) - timedelta(days=1)
            return _Period(first, last)
        return _Period(date(year, 1, 1), date(year, 12, 31))
    except ValueError:
        return None


_FULL_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _full_date(text: str) -> date | None:
    if not _FULL_DATE.fullmatch(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _age_in_years(birth: date, on: date) -> float:
    """Calendar age: whole years, plus the elapsed fraction of the current year of life (a first birthday is 1.0).

    Rounded to 4 decimals for display; the fraction is at most 365/366, so rounding never reaches the next year."""
    years = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    last = _anniversary(birth, years)
    following = _anniversary(birth, years + 1)
    return round(years + (on - last).days / (following - last).days, 4)


def _anniversary(birth: date, years: int) -> date:
    try:
        return birth.replace(year=birth.year + years)
    except ValueError:  # born on 29 February
        return birth.replace(year=birth.year + years, day=28)


def _in_time_order(candidate: _Candidate) -> tuple[date, date, str, str]:
    """A finding's place when the findings of a fact are listed: by date (undated last), then by the name of its
    resource. A resource without an id is named by its place in the chart, which changes with the order of the
    entries, so what it says comes before its name (and it comes after the named ones of its date)."""
    when = candidate.when
    source = candidate.source
    said = (candidate.note or repr(candidate.value)) if _named_by_place(source) else ""
    if when is None:
        return date.max, date.max, said, source
    return when.start, when.end, said, source


def _latest(offered: list[_Candidate]) -> list[_Candidate]:
    """The findings that decide a fact: the latest-dated ones and the undated ones."""
    dated = [c for c in offered if c.when is not None]
    latest = [c for c in dated if not any(c.when.before(other.when)  # type: ignore[union-attr, arg-type]
                                          for other in dated)]  # (every c.when is a _Period here)
    return latest + [c for c in offered if c.when is None]


def _finding_date(resource: Mapping[str, Any]) -> _Period | None:
    """When a finding not used would have held, as far as it can be read: as the reader dates a staging finding (an
    Observation's effective or issued date, a Condition's onset or recorded date), else undated; an undated one
    stands beside the latest findings. (Sizes and variants are read undated: beside them, a finding not read
    stands whatever its date.) The readers that announce a fact that may be unknown are those of Observations and
    of secondary tumours; a resection's is a yes/no fact, for which no finding not read is offered."""
    kind = resource.get("resourceType")
    if kind == "Observation":
        return _when(resource, "effective", "issued")
    return _when(resource, "onset", "recordedDate") if kind == "Condition" else None


def _said(candidate: _Candidate) -> str:
    """A finding as a message shows it: what was found, where, and when."""
    what = candidate.note or repr(candidate.value)
    when = f" on {candidate.when}" if candidate.when else " (undated)"
    return f"{what} ({candidate.source}{when})"


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "a boolean", int: "a number", float: "a number",
            type(None): "null"}.get(type(value), type(value).__name__)


def _absent_reason(element: Mapping[str, Any]) -> str | None:
    """The code of an element's data-absent-reason extension (FHIR R4 core: why its value is missing, e.g.
    "masked"), or None."""
    extensions = element.get("extension")
    for extension in extensions if isinstance(extensions, list) else []:
        if isinstance(extension, _OBJECT) and extension.get("url") == _DATA_ABSENT_REASON:
            code = extension.get("valueCode")
            return _short(code) if isinstance(code, str) else "(no code)"
    return None


def _short(value: Any, limit: int = 80) -> Any:
    """A value as a message may quote it: long text cut (never a whole hostile payload in an error)."""
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + "..."
    return value


def _key(value: Any) -> Any:
    """What makes two offered values the same: a set fact's list in any order is one value."""
    return frozenset(value) if isinstance(value, list) else (type(value).__name__, value)


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def _unset(data: dict[str, Any], path: str) -> None:
    *parents, leaf = path.split(".")
    node: Any = data
    for part in parents:
        node = node.get(part, {}) if isinstance(node, dict) else {}
    if isinstance(node, dict):
        node.pop(leaf.split("[")[0], None)

