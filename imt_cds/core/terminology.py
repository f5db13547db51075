"""Value sets: the codes by which the FHIR reader recognises clinical things (an IMT diagnosis, a distant-metastasis
category, an ALK inhibitor...), kept as data in the rulebook's ``terminology/`` folder.

They are clinical knowledge like the rules: an institution extends them (a local code for IMT), a rule author can
read them, ``rules diff`` shows their changes, and the rulebook's sha256 covers them, so every assessment names the
exact value sets that decided what its facts were. Every code carries the public source it was verified in: a code
that no one could verify is never shipped.

A value set file (``terminology/<name>.yaml``)::

    value_set: imt-diagnosis
    title: ...
    description: ...
    codes:
      - {system: "http://terminology.hl7.org/CodeSystem/icd-o-3", code: "8825/1", display: "...",
         source: "where this code was verified"}
    text_patterns: ["inflammatory myofibroblastic tumou?r"]   # optional: regular expressions, matched case-blind
    text_exclusions: ["rule out", ...]                          # optional: text that must not be read as a match

Nothing here reads FHIR; ``imt_cds.fhir.reader`` asks a ``Terminology`` whether a coding or a text is in a value set.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

__all__ = [
    "FACT_STANDARD_ELEMENTS",
    "FACT_SYSTEM",
    "GENE_VALUE_SETS",
    "HGNC_GENE_ID",
    "METHOD_SYSTEM",
    "Coding",
    "REQUIRED_VALUE_SETS",
    "SEQUENCE_ONTOLOGY",
    "TUMOR_SITE_VALUE_SETS",
    "Terminology",
    "ValueSet",
    "ValueSetCode",
    "as_read",
    "parse_value_set",
]

TERMINOLOGY_DIR = "terminology"

# The project's own code systems, read by the FHIR reader (an Observation coded with a fact path, a fusion test's
# method) and published as FHIR CodeSystems by ``imt-cds rules codesystems``.
FACT_SYSTEM = "urn:imt-cds:fact"
METHOD_SYSTEM = "urn:imt-cds:test-method"
# The input facts FHIR has a standard element for: read from that element only, never from an Observation coded with
# FACT_SYSTEM (which could name another patient, move the tumour, or set an age beside the birth date's).
FACT_STANDARD_ELEMENTS = MappingProxyType({
    "patient_id": "Patient.id",
    "age_years": "Patient.birthDate",
    "tumor.site": "the IMT Condition's bodySite",
    "tumor.size_cm": "a tumor size Observation (LOINC 21889-1), its longest dimension",
})
_MEMO_TEXTS = 1024  # texts whose verdict a value set remembers (see ValueSet._named)
_MEMO_TEXT_CHARS = 500  # longer texts are searched every time

# Each tumor.site the FHIR reader can read from a body site, and the value set of the body sites that are it. A body
# site is read by its first coding (of any system) in one of them (the loader refuses a code listed in two); one with
# SNOMED CT codes in none of them is "other".
TUMOR_SITE_VALUE_SETS = MappingProxyType({
    "thoracic": "tumor-site-thoracic",
    "abdominal_pelvic": "tumor-site-abdominal-pelvic",
    "genitourinary": "tumor-site-genitourinary",
    "head_neck": "tumor-site-head-neck",
})

# The genes the facts record (molecular.<gene>), and the value set of the HGNC gene ids read as each (NTRK1, NTRK2 and
# NTRK3 are all "ntrk"). A gene id is in one of them only (the loader refuses one listed in two), and each code's
# display is its HGNC symbol, by which a chart that names a gene in text only is read.
GENE_VALUE_SETS = MappingProxyType({
    "alk": "gene-alk",
    "ros1": "gene-ros1",
    "ntrk": "gene-ntrk",
    "ret": "gene-ret",
    "pdgfrb": "gene-pdgfrb",
})
HGNC_GENE_ID = "http://www.genenames.org/geneId"  # the gene value sets' system (the MII value sets' for HGNC ids)
SEQUENCE_ONTOLOGY = "http://www.sequenceontology.org"  # the system of the variant value sets' Sequence Ontology codes

# The value sets the FHIR reader needs, and what each one decides. A rulebook without one of them cannot read FHIR.
REQUIRED_VALUE_SETS = MappingProxyType({
    "imt-diagnosis": "Condition codes (and texts) that establish an IMT diagnosis: the eligibility gate",
    "primary-cancer-conditions": "Condition codes (and texts) of a primary cancer: one not the IMT is another cancer",
    "secondary-cancer-conditions": "Condition codes (and texts) of a secondary tumour outside the lymph nodes",
    "epithelioid-imt": "morphology codes of epithelioid inflammatory myofibroblastic sarcoma",
    "tnm-distant-metastases-observation": "Observation codes of a TNM distant-metastases (M) category",
    "distant-metastasis-absent": "M-category values that say no distant metastasis (cM0)",
    "distant-metastasis-present": "M-category values that say distant metastasis (cM1, pM1 and their subgroups)",
    "history-of-metastatic-cancer": "Observation codes of mCODE's history of metastatic cancer",
    "regional-lymph-node-sites": "body sites of a secondary tumour that may be regional, never counted as distant",
    "cancer-disease-status": "Observation codes of a cancer disease status",
    "disease-worsened": "cancer disease status values that say the disease progressed",
    "alk-inhibitors": "medication codes of ALK tyrosine kinase inhibitors",
    "tumor-resection-procedures": "procedure codes of a surgical resection of a tumour",
    **{name: f"body sites (an IMT Condition's bodySite) read as tumor.site {site}"
       for site, name in TUMOR_SITE_VALUE_SETS.items()},
    **{name: f"HGNC gene ids (a variant's gene studied) read as molecular.{gene}"
       for gene, name in GENE_VALUE_SETS.items()},
    "variant-sequence-changes": "DNA change types and molecular consequences of a change of sequence or copy number: "
                                "a Present variant described only so is not read as the tumour's fusion",
    "variant-fusions": "DNA change types and molecular consequences (codes or words), and variant names, that say a "
                       "variant is a fusion",
    "variant-somatic-origin": "genomic source classes of a tumour's own variant: a Present variant stated of another "
                              "origin (germline) is not read as the tumour's fusion",
    "variant-pathogenic-significance": "clinical significances that keep a Present variant the tumour's fusion: one "
                                       "stated otherwise (benign, uncertain) is not read as one",
})


class Coding(NamedTuple):
    """A coding as read from a FHIR resource: its system and code (a tuple, so a value set's index is searched
    with the coding itself; a chart holds dozens, and a tuple is several times cheaper to make than a frozen
    dataclass)."""

    system: str
    code: str


@dataclass(frozen=True, slots=True)
class ValueSetCode:
    system: str
    code: str
    display: str
    source: str  # where the code was verified (a public document, repository file or package)


@dataclass(frozen=True)
class ValueSet:
    name: str
    title: str
    description: str
    codes: tuple[ValueSetCode, ...]
    text_patterns: tuple[str, ...] = ()
    text_exclusions: tuple[str, ...] = ()
    file: str = ""  # the file it was loaded from, relative to the rulebook directory
    # (system, code) pairs: a plain tuple hashes in C, a dataclass through Python (the FHIR reader asks per coding)
    _index: frozenset[tuple[str, str]] = field(init=False, repr=False, compare=False)
    _patterns: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)
    _exclusions: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)
    # text -> names_in_text(text): a pure function of the text, asked once per Condition of every chart, and charts
    # repeat the same few texts (a code's display); a dozen case-blind searches cost more than reading the rest of
    # the Condition. Bounded (entries and text length), so a stream of distinct texts cannot grow it.
    _named: dict[str, bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", frozenset((c.system, c.code) for c in self.codes))
        object.__setattr__(self, "_patterns", tuple(re.compile(p, re.IGNORECASE) for p in self.text_patterns))
        object.__setattr__(self, "_exclusions", tuple(re.compile(p, re.IGNORECASE) for p in self.text_exclusions))
        object.__setattr__(self, "_named", {})

    def has(self, system: Any, code: Any) -> bool:
        return isinstance(system, str) and isinstance(code, str) and (system, code) in self._index

    def matching(self, codings: Iterable[Coding]) -> tuple[Coding, ...]:
        """The codings (system, code) that are in this value set, in the order given."""
        index = self._index
        return tuple(c for c in codings if c in index)  # (a Coding is the (system, code) tuple itself)

    def names_in_text(self, text: Any) -> bool:
        """Whether a free text names this value set's concept (and says nothing that negates or doubts it)."""
        if not isinstance(text, str) or not self._patterns:
            return False
        named = self._named.get(text)
        if named is None:
            seen = as_read(text)
            named = any(p.search(seen) for p in self._patterns) and not any(x.search(seen) for x in self._exclusions)
            if len(text) <= _MEMO_TEXT_CHARS:
                if len(self._named) >= _MEMO_TEXTS:
                    self._named.clear()  # (rare: start again rather than track which text is oldest)
                self._named[text] = named
        return named

    def display(self, system: str, code: str) -> str | None:
        return next((c.display for c in self.codes if c.system == system and c.code == code), None)


def as_read(text: str) -> str:
    """A text as a reader sees it: compatibility forms folded (fullwidth letters, ligatures) and invisible format
    characters (zero-width spaces and joiners, soft hyphens) removed, so that they neither hide a word that vetoes a
    text ("rule\u200bout") nor break the name of the concept."""
    folded = unicodedata.normalize("NFKC", text)
    return "".join(c for c in folded if unicodedata.category(c) != "Cf") if not folded.isascii() else folded


@dataclass(frozen=True)
class Terminology:
    """The rulebook's value sets by name, and the genes of its gene value sets."""

    value_sets: Mapping[str, ValueSet]
    # HGNC gene id -> (the facts' gene, its HGNC symbol), and HGNC symbol -> gene id: the gene value sets indexed
    # once, as the FHIR reader asks for every gene a variant names.
    genes: Mapping[str, tuple[str, str]] = field(init=False, repr=False, compare=False)
    gene_by_symbol: Mapping[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        genes: dict[str, tuple[str, str]] = {}
        for gene, name in GENE_VALUE_SETS.items():
            for code in self.value_sets[name].codes if name in self.value_sets else ():
                genes.setdefault(code.code, (gene, code.display))  # (a code in two sets: refused by the loader)
        object.__setattr__(self, "genes", MappingProxyType(genes))
        object.__setattr__(self, "gene_by_symbol", MappingProxyType(
            {symbol.upper(): hgnc for hgnc, (_, symbol) in genes.items()}))

    def __getitem__(self, name: str) -> ValueSet:
        try:
            return self.value_sets[name]
        except KeyError:
            raise KeyError(f"the rulebook has no value set {name!r} (terminology/{name}.yaml)") from None

    def __contains__(self, name: object) -> bool:
        return name in self.value_sets

    def missing(self) -> tuple[str, ...]:
        """Required value sets this terminology lacks."""
        return tuple(name for name in REQUIRED_VALUE_SETS if name not in self.value_sets)


def parse_value_set(data: Mapping[str, Any], file: str) -> tuple[ValueSet | None, list[tuple[str, str | None]]]:
    """A value set from one parsed YAML document whose structure fits ``rule_schema.ValueSetDocument`` (the loader
    checks that first), or None and the problems of its meaning as (message, path) pairs."""
    problems: list[tuple[str, str | None]] = []
    name = data["value_set"]
    if file.rsplit("/", 1)[-1] != f"{name}.yaml":
        problems.append((f"value set {name!r} must be in a file named {name}.yaml", "value_set"))
    codes: list[ValueSetCode] = []
    seen: set[tuple[str, str]] = set()
    for index, entry in enumerate(data.get("codes", [])):
        if (entry["system"], entry["code"]) in seen:
            problems.append((f"code {entry['system']}|{entry['code']} is listed twice", f"codes[{index}].code"))
        seen.add((entry["system"], entry["code"]))
        codes.append(ValueSetCode(entry["system"], entry["code"], entry["display"], entry["source"]))
    patterns = _patterns(data, "text_patterns", problems)
    exclusions = _patterns(data, "text_exclusions", problems)
    if not codes and not patterns:
        problems.append(("a value set needs at least one code or text pattern", "codes"))
    if problems:
        return None, problems
    return ValueSet(name, data["title"], str(data.get("description") or ""), tuple(codes), patterns, exclusions,
                    file), []


def _patterns(data: Mapping[str, Any], key: str, problems: list[tuple[str, str | None]]) -> tuple[str, ...]:
    raw = data.get(key, [])
    for index, pattern in enumerate(raw):
        try:
            re.compile(pattern)
        except re.error as exc:
            problems.append((f"not a regular expression: {exc}", f"{key}[{index}]"))
    return tuple(raw)
