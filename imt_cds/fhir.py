"""FHIR R4 (mCODE STU4, Genomics Reporting) resources -> ``PatientFacts``, each fact traced to its resources.

Lenient where it must be: every resource is parsed on its own with the ``fhir.resources`` R4B models, and one that
does not parse is reported and skipped, never fatal. Strict where it matters: nothing is ever guessed. A fact with no
resource behind it stays unknown (as the rules read "unknown"), and when resources disagree (two different tumor
sizes; Present and Absent for one gene) the conflict is reported and the fact left unknown. A conflict about a fact
that cannot be unknown (a yes/no such as ``history.surgery_done``) is an *error*: no facts are produced, so nothing
is evaluated on a guess.

Where the facts come from:

====================================  ===========================================================================
``patient_id``, ``age_years``         Patient.id; Patient.birthDate, in calendar years at the evaluation date (a
                                      partial birth date leaves the age unknown: thresholds at 1 and 2 years matter)
``tumor.site``                        bodySite (SNOMED) of the mCODE primary cancer Condition, mapped below;
                                      unmapped -> ``other``; no primary Condition or no bodySite -> ``unknown``
``tumor.size_cm``                     tumor-size Observation (LOINC 21889-1), component 33728-7 (longest
                                      dimension), in cm or mm
``molecular.<gene>.status``           variant Observations (LOINC 69548-6) valued LA9633-4 Present / LA9634-2
``molecular.<gene>.fusion_partner``   Absent, genes from components 48018-6 by HGNC code (never by Sequence
                                      Ontology); in a Present fusion, the other gene is the partner
``tumor.distant_disease``             an mCODE secondary cancer Condition -> true; an mCODE TNM distant-metastases
                                      category of cM0 (SNOMED 1229901006) -> false
``history.surgery_done``              a completed mCODE cancer-related surgical Procedure -> true
everything else                       Observations coded ``urn:imt-cds:fact`` (the code is the fact's path, e.g.
                                      ``tumor.resectability``), valued with valueBoolean, valueString or a coding
====================================  ===========================================================================

Test methods may be given on a variant Observation's ``method`` as codings of ``urn:imt-cds:test-method`` (IHC,
FISH, NGS_RNA, NGS_DNA).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

from .errors import InputProblem, InvalidInputError
from .fact_fields import fact_fields
from .facts import PatientFacts
from .validation import parse_facts

__all__ = [
    "FACT_SYSTEM",
    "METHOD_SYSTEM",
    "OBSERVATION_CODES",
    "FhirFacts",
    "FhirProblem",
    "bundle_resources",
    "facts_from_bundle",
    "facts_from_resources",
    "resource_label",
]

FACT_SYSTEM = "urn:imt-cds:fact"
METHOD_SYSTEM = "urn:imt-cds:test-method"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
HGNC_SYSTEMS = ("http://www.genenames.org", "http://www.genenames.org/geneId", "https://www.genenames.org")

PRIMARY_PROFILE = "mcode-primary-cancer-condition"
SECONDARY_PROFILE = "mcode-secondary-cancer-condition"
SURGERY_PROFILE = "mcode-cancer-related-surgical-procedure"
TNM_M_PROFILE = "mcode-tnm-distant-metastases-category"

VARIANT = "69548-6"
PRESENT, ABSENT = "LA9633-4", "LA9634-2"
GENE_STUDIED = "48018-6"
TUMOR_SIZE, LONGEST_DIMENSION = "21889-1", "33728-7"
TNM_M_CATEGORY = "399387003"  # SNOMED: the code of mCODE's TNM distant-metastases category Observation
CM0 = "1229901006"

# The Observation codes (system, code) worth fetching for the rules: tumor size, genomic variants, the cM category,
# and every code of the project's own system (an empty code: any code of that system, as a FHIR token "system|").
OBSERVATION_CODES = ((LOINC, TUMOR_SIZE), (LOINC, VARIANT), (SNOMED, TNM_M_CATEGORY), (FACT_SYSTEM, ""))

# HGNC identifiers of the genes the rules look at -> (the facts' gene, the gene's symbol); NTRK1/2/3 all count as NTRK.
GENE_BY_HGNC = {
    "HGNC:427": ("alk", "ALK"), "HGNC:10261": ("ros1", "ROS1"), "HGNC:8031": ("ntrk", "NTRK1"),
    "HGNC:8032": ("ntrk", "NTRK2"), "HGNC:8033": ("ntrk", "NTRK3"), "HGNC:9967": ("ret", "RET"),
    "HGNC:8804": ("pdgfrb", "PDGFRB"),
}

# SNOMED CT body structures -> tumor.site. Codes as used by mCODE's examples and DICOM's "Common Anatomic Region"
# value set (CID 4031); a code not listed here maps to "other" (never to a guess).
SITE_BY_SNOMED = {
    **dict.fromkeys(("39607008", "31094006", "86598002", "955009", "44567001", "72410000", "816094009", "113197003",
                     "56873002", "80891009"), "thoracic"),
    # lung, lobe of lung, apex of lung, bronchus, trachea, mediastinum, chest, rib, sternum, heart
    **dict.fromkeys(("818981001", "818983003", "113345001", "818982008", "816092008", "10200004", "69695003",
                     "15776009", "78961009", "71854001", "14742008", "30315005", "38848004", "21306003", "34516001",
                     "34402009", "28231008", "34707002", "63337009"), "abdominal_pelvic"),
    # abdomen (x3), abdomen and pelvis, pelvis, liver, stomach, pancreas, spleen, colon, large intestine, small
    # intestine, duodenum, jejunum, ileum, rectum, gallbladder, biliary tract, lower trunk
    **dict.fromkeys(("89837001", "64033007", "87953007", "13648007", "41216001", "431491007", "110639002"),
                    "genitourinary"),
    # urinary bladder, kidney, ureter, urethra, prostate, upper urinary tract, uterus and fallopian tubes
    **dict.fromkeys(("69536005", "45048000", "774007", "4596009", "363654007", "2095001", "45289007", "91609006",
                     "70925003", "371398005", "661005", "54019009"), "head_neck"),
    # head, neck, head and neck, larynx, orbit, paranasal sinus, parotid, mandible, maxilla, eye region, jaw region,
    # submandibular gland
}
_STANDARD_PATHS = ("patient_id", "age_years", "tumor.site", "tumor.size_cm")  # not settable through FACT_SYSTEM
_FINAL = ("final", "amended", "corrected")


@dataclass(frozen=True)
class FhirProblem:
    """A resource skipped or a fact left unknown, and why. ``severity`` "error" means no facts were produced.

    ``kind``: "skipped" (a resource, or what it says, is not used), "conflict" (resources disagree about a fact) or
    "not_allowed" (a value the facts contract does not allow)."""

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
class FhirFacts:
    """Facts read from FHIR resources, the resources behind each fact, and what was skipped or left unknown."""

    facts: PatientFacts | None  # None when an error-level conflict prevents producing facts
    sources: Mapping[str, tuple[str, ...]]  # fact path -> "ResourceType/id" of the resources it came from
    problems: tuple[FhirProblem, ...]

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
        return data


def facts_from_bundle(bundle: Any, on: date | None = None) -> FhirFacts:
    """Facts from a FHIR Bundle (as parsed JSON). ``on`` is the evaluation date for the age (default: today, UTC).

    An entry's ``fullUrl`` is another name of its resource: a subject given as ``urn:uuid:...`` (transaction and
    collection Bundles) is the Patient entry with that ``fullUrl``."""
    if not isinstance(bundle, Mapping) or bundle.get("resourceType") != "Bundle":
        kind = bundle.get("resourceType") if isinstance(bundle, Mapping) else type(bundle).__name__
        raise InvalidInputError([InputProblem("resourceType", f"expected a FHIR Bundle, got {kind!r}", kind)])
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise InvalidInputError([InputProblem("entry", "Bundle.entry must be a list", None)])
    aliases: dict[str, str] = {}
    for entry in entries:
        if isinstance(entry, Mapping) and isinstance(entry.get("fullUrl"), str):
            resource = entry.get("resource")
            if isinstance(resource, Mapping) and isinstance(resource.get("resourceType"), str) and \
                    resource.get("id") is not None:
                aliases[entry["fullUrl"]] = resource_label(resource, 0)
    return _read(bundle_resources(bundle), on, aliases)


def facts_from_resources(resources: Iterable[Any], on: date | None = None) -> FhirFacts:
    """Facts from FHIR resources (parsed JSON), e.g. a CDS Hooks prefetch or a Bundle's entries."""
    return _read(resources, on, {})


def bundle_resources(value: Any) -> list[Any]:
    """The resources of a FHIR Bundle (parsed JSON), one per entry in entry order; a resource that is not a Bundle is
    its own only resource, and what is not a JSON object has none.

    An entry of a search's outcome (``search.mode`` "outcome": the server's OperationOutcome about the search, not
    patient data) is left out. Anything else is kept as found (an entry that is not an object, or the ``None`` of an
    entry without a resource), for the reader to report. Pure JSON: needs no FHIR library."""
    if not isinstance(value, Mapping):
        return []
    if value.get("resourceType") != "Bundle":
        return [value]
    entries = value.get("entry") or []
    found: list[Any] = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, Mapping):
            found.append(entry)
            continue
        search = entry.get("search")
        if isinstance(search, Mapping) and search.get("mode") == "outcome":
            continue
        found.append(entry.get("resource"))
    return found


def resource_label(resource: Mapping[str, Any], index: int) -> str:
    """How a resource is named in messages and sources: ``Type/id``, or ``Type/entry[i]`` for one without an id
    (``index``: its place among the resources read)."""
    return f"{resource.get('resourceType')}/{resource.get('id', f'entry[{index}]')}"


def _read(resources: Iterable[Any], on: date | None, aliases: Mapping[str, str]) -> FhirFacts:
    try:
        from fhir.resources.R4B import get_fhir_model_class
    except ImportError as exc:  # never let a missing library look like malformed resources
        raise ImportError("reading FHIR needs the fhir.resources package: pip install 'imt-cds[fhir]'") from exc
    reader = _Reader(on or datetime.now(timezone.utc).date(), get_fhir_model_class, aliases=dict(aliases))
    for index, resource in enumerate(resources):
        reader.read(index, resource)
    return reader.result()


# --- reading ------------------------------------------------------------------------------------------------------


@dataclass
class _Candidate:
    value: Any
    source: str


@dataclass
class _Reader:
    on: date
    model_class: Any  # fhir.resources.R4B.get_fhir_model_class
    candidates: dict[str, list[_Candidate]] = field(default_factory=dict)
    problems: list[FhirProblem] = field(default_factory=list)
    methods: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # gene -> (method, source)
    symbols: dict[str, str] = field(default_factory=dict)  # HGNC id -> gene symbol, as the resources display it
    subjects: dict[str, str] = field(default_factory=dict)  # resource -> the Patient reference it is about
    aliases: dict[str, str] = field(default_factory=dict)  # a Bundle entry's fullUrl -> "Type/id" of its resource

    def offer(self, path: str, value: Any, source: str) -> None:
        self.candidates.setdefault(path, []).append(_Candidate(value, source))

    def skip(self, where: str, message: str, path: str | None = None) -> None:
        self.problems.append(FhirProblem(where, message, "warning", path, "skipped"))

    def read(self, index: int, raw: Any) -> None:
        if not isinstance(raw, Mapping) or not isinstance(raw.get("resourceType"), str):
            self.skip(f"entry[{index}]", "not a FHIR resource (no resourceType); skipped")
            return
        kind = raw["resourceType"]
        where = resource_label(raw, index)
        subject = raw.get("subject")
        if isinstance(subject, Mapping) and isinstance(subject.get("reference"), str):
            self.subjects[where] = subject["reference"]
        handler = getattr(self, f"_{kind.lower()}", None)
        if handler is None:
            return  # other resource types carry nothing the rules use
        try:
            resource = self.model_class(kind).model_validate(dict(raw))
        except Exception as exc:  # noqa: BLE001 - any parse failure of one resource: report it and go on
            first = str(exc).splitlines()
            detail = first[1].strip() + ": " + first[2].strip() if len(first) > 2 else str(exc)[:200]
            self.skip(where, f"malformed {kind}, skipped ({detail})")
            return
        handler(resource, where)

    # -- resource types --

    def _patient(self, patient: Any, where: str) -> None:
        if patient.id:
            self.offer("patient_id", patient.id, where)
        birth = patient.birthDate
        if birth is None:
            return
        if not isinstance(birth, date) or isinstance(birth, datetime):
            self.skip(where, f"birthDate {birth} is not a full date; the age is left unknown", "age_years")
            return
        if birth > self.on:
            self.skip(where, f"birthDate {birth} is after the evaluation date {self.on}", "age_years")
            return
        self.offer("age_years", _age_in_years(birth, self.on), where)

    def _condition(self, condition: Any, where: str) -> None:
        profiles = _profiles(condition)
        if _coded(condition.verificationStatus, ("refuted", "entered-in-error")):
            self.skip(where, "verification status refuted or entered-in-error; not used")
            return
        if PRIMARY_PROFILE in profiles:
            for body_site in condition.bodySite or []:
                codes = _codes(body_site, SNOMED)
                site = next((SITE_BY_SNOMED[c] for c in codes if c in SITE_BY_SNOMED), "other" if codes else None)
                if site is not None:
                    self.offer("tumor.site", site, where)
        elif SECONDARY_PROFILE in profiles:
            if _coded(condition.clinicalStatus, ("inactive", "remission", "resolved")):
                self.skip(where, "secondary cancer condition is not active; not used", "tumor.distant_disease")
                return
            self.offer("tumor.distant_disease", True, where)

    def _procedure(self, procedure: Any, where: str) -> None:
        if SURGERY_PROFILE in _profiles(procedure):
            if procedure.status == "completed":
                self.offer("history.surgery_done", True, where)
            else:
                self.skip(where, f"surgical procedure with status {procedure.status!r}; only completed ones count",
                          "history.surgery_done")

    def _observation(self, observation: Any, where: str) -> None:
        if observation.status not in _FINAL:
            self.skip(where, f"status {observation.status!r}; only final, amended or corrected results are used")
            return
        codes = {(c.system, c.code) for c in observation.code.coding or []}
        if (LOINC, VARIANT) in codes:
            self._variant(observation, where)
        elif (LOINC, TUMOR_SIZE) in codes:
            self._tumor_size(observation, where)
        elif TNM_M_PROFILE in _profiles(observation):
            if CM0 in _codes(observation.valueCodeableConcept):
                self.offer("tumor.distant_disease", False, where)
            else:
                self.skip(where, "distant metastasis category other than cM0 is not interpreted; not used",
                          "tumor.distant_disease")
        for system, code in codes:
            if system == FACT_SYSTEM:
                self._project_fact(code, observation, where)

    def _variant(self, observation: Any, where: str) -> None:
        value = _codes(observation.valueCodeableConcept)
        genes: list[str] = []  # HGNC ids studied
        for component in observation.component or []:
            if any(c.code == GENE_STUDIED for c in component.code.coding or []) and component.valueCodeableConcept:
                for coding in component.valueCodeableConcept.coding or []:
                    if coding.system in HGNC_SYSTEMS and coding.code:
                        genes.append(coding.code if str(coding.code).startswith("HGNC:") else f"HGNC:{coding.code}")
                        symbol = coding.display
                        if symbol:
                            self.symbols[genes[-1]] = str(symbol)
        ours = [g for g in genes if g in GENE_BY_HGNC]
        if not ours:
            return
        if PRESENT in value and ABSENT not in value:
            status = "positive"
        elif ABSENT in value and PRESENT not in value:
            status = "negative"
        else:
            self.skip(where, "variant Observation is neither clearly Present nor Absent; not used")
            return
        methods = _codes(observation.method, METHOD_SYSTEM)
        for hgnc in ours:
            gene = GENE_BY_HGNC[hgnc][0]
            self.offer(f"molecular.{gene}.status", status, where)
            for method in methods:
                self.methods.setdefault(gene, []).append((str(method), where))
            if status == "positive":
                partners = [g for g in genes if g != hgnc and GENE_BY_HGNC.get(g, (None,))[0] != gene]
                if len(partners) == 1:
                    known = GENE_BY_HGNC.get(partners[0])
                    symbol = self.symbols.get(partners[0]) or (known[1] if known else None)
                    if symbol:
                        self.offer(f"molecular.{gene}.fusion_partner", symbol, where)
                elif len(partners) > 1:
                    self.skip(where, f"several partner genes for {gene.upper()}; the partner is left unknown",
                              f"molecular.{gene}.fusion_partner")

    def _tumor_size(self, observation: Any, where: str) -> None:
        for component in observation.component or []:
            if not any(c.code == LONGEST_DIMENSION for c in component.code.coding or []):
                continue
            quantity = component.valueQuantity
            if quantity is None or quantity.value is None:
                self.skip(where, "tumor size without a value; not used", "tumor.size_cm")
                return
            unit = quantity.code or quantity.unit
            factor = {"cm": 1.0, "mm": 0.1}.get(str(unit))
            if factor is None:
                self.skip(where, f"tumor size in unit {unit!r}; only cm and mm are understood", "tumor.size_cm")
                return
            self.offer("tumor.size_cm", round(float(quantity.value) * factor, 6), where)
            return

    def _project_fact(self, path: str, observation: Any, where: str) -> None:
        fields = fact_fields()
        if path not in fields or path in _STANDARD_PATHS:
            usable = [p for p in fields if p not in _STANDARD_PATHS]
            close = difflib.get_close_matches(path, usable, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            self.skip(where, f"{FACT_SYSTEM} code {path!r} is not a fact this code system can carry{hint}")
            return
        kind = fields[path].kind
        if observation.valueBoolean is not None:
            value: Any = bool(observation.valueBoolean)
        elif observation.valueString is not None:
            value = observation.valueString
        elif observation.valueCodeableConcept is not None:
            codes = _codes(observation.valueCodeableConcept)
            value = codes if kind == "set" else (codes[0] if len(codes) == 1 else None)
        else:
            value = None
        if value is None:
            self.skip(where, f"no usable value for {path}", path)
            return
        self.offer(path, value, where)

    # -- result --

    def _other_patients(self) -> None:
        """Drop what resources about another patient said: with one Patient, every subject must be that patient."""
        patients = {c.source for c in self.candidates.get("patient_id", [])}
        if len(patients) != 1:
            return
        (patient,) = patients
        for path in list(self.candidates):
            kept = []
            for candidate in self.candidates[path]:
                subject = self.subjects.get(candidate.source)
                if subject is not None and not self._refers_to(subject, patient):
                    self.skip(candidate.source, f"about {subject}, not {patient}; not used", path)
                else:
                    kept.append(candidate)
            self.candidates[path] = kept
            if not kept:
                del self.candidates[path]

    def _refers_to(self, reference: str, label: str) -> bool:
        """Whether a reference names the resource ``label`` ("Patient/p1"): relative, absolute, or a fullUrl alias."""
        return reference == label or reference.endswith("/" + label) or self.aliases.get(reference) == label

    def result(self) -> FhirFacts:
        self._other_patients()
        data: dict[str, Any] = {}
        sources: dict[str, tuple[str, ...]] = {}
        errors = []
        fields = fact_fields()
        for gene, found in self.methods.items():
            self.offer(f"molecular.{gene}.methods", sorted({m for m, _ in found}), found[0][1])
        for path, offered in self.candidates.items():
            values = {_key(c.value) for c in offered}
            refs = tuple(dict.fromkeys(c.source for c in offered))
            if len(values) > 1:
                shown = ", ".join(f"{c.value!r} ({c.source})" for c in offered)
                if fields[path].nullable or fields[path].kind in ("enum", "set", "text"):
                    self.problems.append(FhirProblem(", ".join(refs), f"conflicting values for {path}: {shown}; "
                                                     "left unknown", "warning", path, "conflict"))
                else:
                    errors.append(FhirProblem(", ".join(refs), f"conflicting values for {path}: {shown}; it cannot "
                                              "be left unknown, so nothing is evaluated", "error", path, "conflict"))
                continue
            _set(data, path, offered[0].value)
            sources[path] = refs
        if errors:
            return FhirFacts(None, sources, tuple(self.problems + errors))
        try:
            facts = parse_facts(data)
        except InvalidInputError as exc:
            # A value of the project's code system that the contract does not allow: report it, drop it, retry.
            for problem in exc.problems:
                self.problems.append(FhirProblem(", ".join(sources.get(problem.path, ("?",))),
                                                 f"value not allowed for {problem.path}: {problem.message}; not used",
                                                 "warning", problem.path, "not_allowed"))
                _unset(data, problem.path)
                sources.pop(problem.path, None)
            try:
                facts = parse_facts(data)
            except InvalidInputError as again:
                return FhirFacts(None, sources, tuple(self.problems) + tuple(
                    FhirProblem("(facts)", str(p), "error", p.path, "not_allowed") for p in again.problems))
        return FhirFacts(facts, sources, tuple(self.problems))


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


def _profiles(resource: Any) -> str:
    """The resource's meta.profile URLs, in one string (profiles are recognised by name)."""
    return " ".join(str(p) for p in (resource.meta.profile or [])) if resource.meta else ""


def _codes(concept: Any, system: str | None = None) -> list[str]:
    """The codes of a CodeableConcept (of one system, when given), in coding order; none for no concept."""
    if not concept:
        return []
    return [str(c.code) for c in concept.coding or [] if c.code and (system is None or c.system == system)]


def _coded(concept: Any, codes: tuple[str, ...]) -> bool:
    return any(code in codes for code in _codes(concept))


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
    node = data
    for part in parents:
        node = node.get(part, {})
    if isinstance(node, dict):
        node.pop(leaf.split("[")[0], None)
