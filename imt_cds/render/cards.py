"""CDS Hooks cards from an assessment document: one card per finding, plus cards about the FHIR record itself. The
service makes the same cards from the assessment itself where it can (``cards_of_assessment``: its rationale, without
the document written and parsed).

A card carries what the consult note says about a finding, in the shape an EHR shows: ``summary`` (the finding's
summary, under 140 characters by the rulebook's own check), ``indicator`` (below), ``detail`` in Markdown (the
reasons, each input fact with the FHIR resources it was read from, each derived fact with its own reasons, and the
evidence with verbatim quotes), ``source`` (the rule, a link to its page on this service, and the finding code as
``topic`` in ``urn:imt-cds:finding-code``), ``links`` to the cited literature (PubMed, PMC and DOI links made from
the identifiers in the evidence citations), override reasons for feedback, and a ``uuid`` that is a uuid5 of the
evaluation id, the rule id and the finding code (the code too: one rule may produce two findings), so feedback
about a card can be traced to its evaluation and rule.

Indicator by finding: the one each finding declares in its rule file (``indicator: info|warning|critical``),
carried in the assessment document, so the FHIR export of the same assessment shows the same severity. The shipped
rulebook makes ``critical`` the findings that say acting on a suggestion as it stands could harm (a contradictory
record, more than one kinase fusion, a targeted drug below or at the edge of its labelled age), ``warning`` every
other risk and safety flag, and ``info`` recommendations and data requests.

This module is a renderer: it reads documents and decides nothing clinical.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any

import orjson

from ..core.assessment import Assessment, Rationale
from ..core.compiler import ReasonTemplate
from ..core.conditions import Atom, DerivedTest
from ..core.wording import derived_index, display_value, reason_text
from .fhir_output import Indicator, System, finding_indicator

__all__ = [
    "CARD_NAMESPACE",
    "OVERRIDE_REASONS",
    "ServiceCard",
    "assessment_cards",
    "card_summary",
    "card_uuid",
    "cards_of_assessment",
    "conflict_card",
    "escape_markdown",
    "evidence_lines",
    "fact_line",
    "fact_origins",
    "finding_indicator",
    "hook_instance_id",
    "make_card",
    "problems_card",
    "service_source",
    "sort_cards",
]

CARD_NAMESPACE = uuid.UUID("6b1f0d3e-7c2a-4f5e-9d8b-2a4c6e8f0b1d")  # uuid5 namespace of card ids
SERVICE_CARD_SYSTEM = "urn:imt-cds:service-card"
OVERRIDE_REASON_SYSTEM = "urn:imt-cds:override-reason"
LABEL = "imt-cds (IMT decision support)"
DISCLAIMER = ("*Decision support for a multidisciplinary team, not a prescription: weigh it against the full "
              "clinical picture.*")

OVERRIDE_REASONS = (
    {"system": OVERRIDE_REASON_SYSTEM, "code": "not-applicable", "display": "Not applicable to this patient"},
    {"system": OVERRIDE_REASON_SYSTEM, "code": "record-incorrect", "display": "The record it relies on is wrong"},
    {"system": OVERRIDE_REASON_SYSTEM, "code": "already-addressed", "display": "Already addressed"},
    {"system": OVERRIDE_REASON_SYSTEM, "code": "disagree", "display": "Clinical judgment differs"},
)

_SEVERITY = {Indicator.CRITICAL: 0, Indicator.WARNING: 1, Indicator.INFO: 2}
_SEVERITY_OF_VALUE = {indicator.value: rank for indicator, rank in _SEVERITY.items()}
_PMID = re.compile(r"\bPMID:?\s*(\d{5,9})\b")
_PMC = re.compile(r"\b(PMC\d{4,9})\b")
_DOI = re.compile(r"\bdoi:\s*(10\.\d{4,9}/\S+)", re.IGNORECASE)
# Every character with a meaning in CommonMark or GitHub-flavoured Markdown inline text, or in inline HTML and entity
# references (& < >): escaped with a backslash, which CommonMark allows before any ASCII punctuation.
_MARKDOWN_SPECIALS = "\\`*_{}[]()<>#+!|~&"
_LINE_BREAKS = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")  # data never starts a line: it could open a block
# Renderers with "autolinking" turn bare URLs into links without any markup; data from a request never becomes a
# clickable link, so the URL is shown defanged (the usual security convention: hxxp, [.]).
_AUTOLINK = re.compile(r"(?i)(://|\bwww\.)")
# Every character without which nothing above can match (":" of "://", "w" or "W" of "www."): a text with none of
# them is its own escape, found by one short scan.
_MAYBE_MARKUP = re.compile(r"[\\`*_{}\[\]()<>#+!|~&:wW\x00-\x1f\x7f\u2028\u2029]")
# The specials escaped with str.replace (a C loop), only those present: a regular expression substituting a group
# calls back into Python for every character it escapes. The backslash goes first, so that the backslashes added for
# the others are not escaped again.
_ESCAPES = tuple((special, "\\" + special) for special in _MARKDOWN_SPECIALS)


class ServiceCard(StrEnum):
    """Topic codes (system ``urn:imt-cds:service-card``) of the cards that are not findings of the rulebook."""

    FHIR_INPUT_PROBLEMS = "FHIR_INPUT_PROBLEMS"
    FHIR_INPUT_CONFLICT = "FHIR_INPUT_CONFLICT"
    ORDER_TARGET_NOT_POSITIVE = "ORDER_TARGET_NOT_POSITIVE"
    ORDER_BELOW_LABELLED_AGE = "ORDER_BELOW_LABELLED_AGE"
    ORDER_AGE_UNKNOWN = "ORDER_AGE_UNKNOWN"
    NOT_ELIGIBLE = "NOT_ELIGIBLE"


def card_uuid(evaluation_id: str, rule_id: str, code: str) -> str:
    """``str(uuid.uuid5(CARD_NAMESPACE, "evaluation_id|rule_id|code"))``, without making the UUID object (one card
    in the service costs this for every finding): the SHA-1 of the namespace and the name, cut to 16 bytes, with the
    version (5) and the RFC 4122 variant bits set as ``uuid.UUID(bytes=..., version=5)`` sets them."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + f"{evaluation_id}|{rule_id}|{code}".encode()).digest()[:16])
    digest[6] = digest[6] & 0x0F | 0x50
    digest[8] = digest[8] & 0x3F | 0x80
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


_NAMESPACE_BYTES = CARD_NAMESPACE.bytes


def hook_instance_id(kind: str, hook_instance: str) -> str:
    """An id that stands for one hook call (``kind`` "hook": an evaluation that could not be made; "order-sign": an
    order check), stable for its ``hookInstance``: the cards' uuids derive from it."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:imt-cds:{kind}:{hook_instance}"))


def sort_cards(cards: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Most severe first; otherwise in the order given (stable)."""
    return sorted(cards, key=_severity)


def _severity(card: Mapping[str, Any]) -> int:
    value = card["indicator"]
    rank = _SEVERITY_OF_VALUE.get(value) if type(value) is str else None
    return _SEVERITY[Indicator(value)] if rank is None else rank  # anything else: Indicator's own answer or error


def card_summary(text: str, limit: int = 140) -> str:
    """A card's summary, shorter than ``limit`` characters (CDS Hooks: "<140 characters"), cut with an ellipsis."""
    return text if len(text) < limit else text[: limit - 2] + "…"


def make_card(*, card_id: str, summary: str, indicator: Indicator, detail: Sequence[str], source: Mapping[str, Any],
              links: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """A CDS Hooks card: ``detail`` lines joined as Markdown, the summary kept short, the override reasons offered."""
    card: dict[str, Any] = {
        "uuid": card_id,
        "summary": card_summary(summary),
        "indicator": indicator.value,
        "detail": "\n".join(detail),
        "source": dict(source),
    }
    if links is not None:
        card["links"] = links
    card["overrideReasons"] = list(OVERRIDE_REASONS)
    return card


def service_source(code: ServiceCard, display: str) -> dict[str, Any]:
    """The ``source`` of a card that is not a finding of the rulebook (its topic in ``urn:imt-cds:service-card``)."""
    return {"label": LABEL, "topic": {"system": SERVICE_CARD_SYSTEM, "code": code.value, "display": display}}


# --- findings -----------------------------------------------------------------------------------------------------


def assessment_cards(document: Mapping[str, Any], *, evaluation_id: str, sources: Mapping[str, Sequence[str]],
                     public_url: str, problems: Sequence[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    """One card per finding of an assessment document, in document order. ``problems`` (the FHIR reader's) say why
    a fact that no resource gave is unknown, when a resource was there but could not be used."""
    index = derived_index(document)
    why = _Why({name: [(entry, entry["because"]) for entry in entries] for name, entries in index.items()},
               fact_origins(sources, problems), _DocumentReasons())
    rulebook = document["provenance"]["rulebook"]
    suppressed = document["suppressed"]
    ending = _ending(rulebook["name"], rulebook["version"], rulebook["sha256"], evaluation_id)
    return [_finding_card(finding, why.lines(finding["because"]) + why.also(finding.get("also_from", ())),
                          _withheld(finding, suppressed), evaluation_id, ending, public_url)
            for finding in [*document["recommendations"], *document["risk_flags"]]]


def cards_of_assessment(assessment: Assessment, *, evaluation_id: str, sources: Mapping[str, Sequence[str]],
                        public_url: str, problems: Sequence[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    """``assessment_cards(assessment.to_card_dict(), ...)``: the same cards, made from the assessment's rationale
    (``Assessment.rationale()``) without its document being written and parsed, which with the cards' own Markdown
    was about a third of a hook call's work in its worker. An assessment whose rationale the document alone carries
    (a suppressed finding, a finding from two rules) is rendered from its document."""
    rationale = assessment.rationale()
    if rationale is None:
        return assessment_cards(assessment.to_card_dict(), evaluation_id=evaluation_id, sources=sources,
                                public_url=public_url, problems=problems)
    why = _Why(rationale.derived, fact_origins(sources, problems), _TemplateReasons(rationale))
    rulebook = assessment.rulebook
    ending = _ending(rulebook.name, rulebook.version, rulebook.sha256, evaluation_id)
    return [_finding_card(finding, why.lines(reasons), [], evaluation_id, ending, public_url)
            for finding, reasons in rationale.findings]


def _ending(name: str, version: str, sha256: str, evaluation_id: str) -> str:
    return f", rulebook {name} {version} (sha256 {sha256[:12]}); evaluation {evaluation_id}."


def _finding_card(finding: Mapping[str, Any], why: list[str], withheld: list[str], evaluation_id: str, ending: str,
                  public_url: str) -> dict[str, Any]:
    rule = finding["rule"]
    text = _finding_text(finding)
    detail = [text.head, "", *why, *withheld, *text.evidence]
    if detail[-1]:
        detail.append("")
    detail.append(f"{DISCLAIMER} Rule {rule['id']} v{rule['version']}{ending}")
    return make_card(
        card_id=card_uuid(evaluation_id, rule["id"], finding["code"]),
        summary=finding["summary"],
        indicator=_indicator(finding),
        detail=detail,
        source={
            "label": f"{LABEL}, rule {rule['id']}",
            "url": f"{public_url}/rules/{rule['id']}",
            "topic": {"system": _FINDING_SYSTEM, "code": finding["code"], "display": finding["title"]},
        },
        links=[{"label": label, "url": url, "type": kind} for label, url, kind in text.links],
    )


_FINDING_SYSTEM = System.FINDING.value
_INDICATORS = {indicator.value: indicator for indicator in Indicator}


def _indicator(finding: Mapping[str, Any]) -> Indicator:
    """``finding_indicator(finding)``, by a dict lookup where the finding declares a valid one (every finding the
    engine writes): calling the enum costs more than the rest of the card's source."""
    declared = finding.get("indicator")
    known = _INDICATORS.get(declared) if type(declared) is str else None
    return finding_indicator(finding) if known is None else known


class _FindingText:
    """The parts of a finding's card that depend on its title, strength and evidence alone (the rulebook's text,
    escaped, and the citation links), and the values they were made from."""

    __slots__ = ("title", "strength", "evidence_entries", "head", "evidence", "links")

    def __init__(self, finding: Mapping[str, Any]):
        self.title = finding["title"]
        self.strength = finding["strength"]
        self.evidence_entries = finding["evidence"]
        self.head = f"**{_md(self.title)}** (strength of evidence: {_md(self.strength)})"
        self.evidence = tuple(_evidence(self.evidence_entries))
        self.links = tuple((link["label"], link["url"], link["type"]) for link in citation_links(self.evidence_entries))

    def made_from(self, finding: Mapping[str, Any]) -> bool:
        return bool(self.title == finding["title"] and self.strength == finding["strength"]
                    and self.evidence_entries == finding["evidence"])


# The rulebook's text of each finding, escaped once rather than on every hook call (it is the same in every document
# of a rulebook, and most of a card). A memo, not state: an entry is used only for a finding whose title, strength and
# evidence equal (==) the ones it was made from, and only entries made of text (str or None, which == cannot confuse
# with 1, 1.0 or True) are kept; it is cleared when it reaches _FINDING_TEXT_LIMIT (a rulebook has a few dozen).
_FINDING_TEXT: dict[tuple[str, str, str], _FindingText] = {}
_FINDING_TEXT_LIMIT = 1024


def _finding_text(finding: Mapping[str, Any]) -> _FindingText:
    rule = finding["rule"]
    key = (rule["id"], rule["version"], finding["code"])  # only a way to find the entry: made_from decides
    try:
        known = _FINDING_TEXT.get(key)
    except TypeError:  # a part that cannot be hashed (never in a document the engine wrote)
        known = None
    if known is not None and known.made_from(finding):
        return known
    text = _FindingText(finding)
    if _only_text(text.title, text.strength, text.evidence_entries) and all(type(part) is str for part in key):
        if len(_FINDING_TEXT) >= _FINDING_TEXT_LIMIT:
            _FINDING_TEXT.clear()
        text.evidence_entries = copy.deepcopy(text.evidence_entries)  # the caller's document may change later
        _FINDING_TEXT[key] = text
    return text


def _only_text(title: Any, strength: Any, evidence: Any) -> bool:
    return (type(title) is str and type(strength) is str and type(evidence) is list
            and all(type(entry) is dict and all(type(k) is str and (v is None or type(v) is str)
                                                 for k, v in entry.items()) for entry in evidence))


class _Why:
    """The "Why" lines of one document's cards: a derived fact cited by several findings is unfolded once, and each
    fact's origin is written once. ``derived``: each derived fact's entries as (the entry's fields, its reasons);
    ``reasons`` reads a reason, in whichever form the reasons come (``_DocumentReasons``, ``_TemplateReasons``)."""

    def __init__(self, derived: Mapping[str, Sequence[tuple[Mapping[str, Any], Sequence[Any]]]],
                 sources: Mapping[str, Sequence[str]], reasons: _DocumentReasons | _TemplateReasons):
        self.derived = derived
        self.sources = sources
        self.reasons = reasons
        self.origins: dict[str, str] = {}
        self.unfolded: dict[tuple[str, int, frozenset[str]], list[str]] = {}

    def lines(self, because: Sequence[Any]) -> list[str]:
        if not because:
            return ["**Why:** applies to every patient."]
        lines = ["**Why:**"]
        for reason in because:
            lines += self.reason_lines(reason, 0, frozenset())
        return lines

    def also(self, others: Sequence[Mapping[str, Any]]) -> list[str]:
        """Why each other rule that produced the same finding (the document's ``also_from``) gave it, and the
        evidence it cites: the card names every rule behind it, as the HTML report and the consult note do."""
        lines = []
        for other in others:
            heading = f"**Why rule {_md(other['id'])} v{_md(other['version'])} also gives it:**"
            lines += ["", heading] if other["because"] else ["", f"{heading} applies to every patient."]
            for reason in other["because"]:
                lines += self.reason_lines(reason, 0, frozenset())
            lines += ["", f"Its evidence: {_md(', '.join(other.get('evidence') or ()) or 'none cited')}."]
        return lines

    def origin(self, path: str) -> str:
        known = self.origins.get(path)
        if known is None:
            known = self.origins[path] = _origin(path, self.sources)
        return known

    def reason_lines(self, reason: Any, depth: int, seen: frozenset[str]) -> list[str]:
        indent = "  " * depth
        fact = self.reasons.fact(reason)
        if fact is not None:
            return [f"{indent}- {self.reasons.fact_sentence(reason)}{self.origin(fact)}"]
        name, holds, sentence = self.reasons.derived(reason)
        if not holds:
            return [f"{indent}- {sentence}"]
        entries = self.derived.get(name, [])
        rule = f" (rule {entries[0][0]['rule']['id']})" if entries else ""
        lines = [f"{indent}- {sentence}{rule}" + (", because:" if entries and name not in seen else "")]
        if name in seen:
            return lines
        key = (name, depth, seen)
        unfolded = self.unfolded.get(key)
        if unfolded is None:
            unfolded = self.unfolded[key] = self.unfold(name, entries, depth, seen)
        return lines + unfolded

    def unfold(self, name: str, entries: Sequence[tuple[Mapping[str, Any], Sequence[Any]]], depth: int,
               seen: frozenset[str]) -> list[str]:
        indent = "  " * depth
        lines = []
        for entry, because in entries:
            if entry.get("reason") and len(entries) > 1:
                lines.append(f"{indent}  - {_rule_md(entry['reason'].get('text') or entry['reason']['id'])}:")
                sub_depth = depth + 2
            else:
                sub_depth = depth + 1
            for sub in because:
                lines += self.reason_lines(sub, sub_depth, seen | {name})
        return lines


class _DocumentReasons:
    """Reasons as a document has them (``Reason.to_dict()``)."""

    @staticmethod
    def fact(reason: Mapping[str, Any]) -> str | None:
        return reason["fact"] if "fact" in reason else None

    @staticmethod
    def fact_sentence(reason: Mapping[str, Any]) -> str:
        return _fact_sentence(reason)

    @staticmethod
    def derived(reason: Mapping[str, Any]) -> tuple[str, bool, str]:
        return (reason["derived"], bool(reason.get("holds")),
                reason_text(reason, fact=_code, value=_bold_value, text=_rule_md))  # every renderer's words


class _TemplateReasons:
    """Reasons as an assessment's rationale has them (``ReasonTemplate``), in the words of the same reasons in its
    document: a sentence's words around the value are the rule's own and made once (as ``_fact_sentence`` makes
    them), a value's Markdown once per value written (``_bold_json``)."""

    def __init__(self, rationale: Rationale):
        self.value_json = rationale.value_json
        self.held = rationale.held

    @staticmethod
    def fact(template: ReasonTemplate) -> str | None:
        literal = template.literal
        return literal.path if isinstance(literal, Atom) else None

    def fact_sentence(self, template: ReasonTemplate) -> str:
        path = template.literal.path  # type: ignore[union-attr]
        value = self.value_json(path)
        parameter = template.parameter
        if type(template.expected) is str:
            around = _fact_sentence_around(path, template.expected, parameter)
            if around is not None:
                return around[0] + _bold_json(value) + around[1]
        reason = {"fact": path, "expected": template.expected, "actual": orjson.loads(value)}
        if parameter:  # (as the document has it)
            reason["parameter"] = parameter
        return _fact_sentence(reason)

    def derived(self, template: ReasonTemplate) -> tuple[str, bool, str]:
        literal = template.literal
        assert isinstance(literal, DerivedTest)
        held = self.held(literal.name) if literal.present else ()
        return literal.name, literal.present, _derived_sentence(literal.name, literal.present, held)


@functools.lru_cache(maxsize=4096)
def _bold_json(value: str) -> str:
    """``_bold_value`` of the value a JSON text holds (a bounded memo of a pure function: the same few values of
    facts recur on every hook call)."""
    return _bold_value(orjson.loads(value))


@functools.lru_cache(maxsize=1024)
def _derived_sentence(name: str, holds: bool, held: tuple[str, ...]) -> str:
    """``reason_text`` of a reason about a derived fact, as its document writes it (``"reasons"`` only when some
    reason rules held)."""
    reason: dict[str, Any] = {"derived": name, "holds": holds}
    if held:
        reason["reasons"] = list(held)
    return reason_text(reason, fact=_code, value=_bold_value, text=_rule_md)


def _fact_sentence(reason: Mapping[str, Any]) -> str:
    """``reason_text`` of a reason about an input fact, in Markdown: the words around the value are the rule's own,
    the same on every hook call, so they are made once (``_fact_sentence_around``) and only the value is written."""
    parameter = reason.get("parameter")
    if (type(reason) is dict and _FACT_REASON_KEYS.issuperset(reason) and type(reason["fact"]) is str
            and type(reason["expected"]) is str and (parameter is None or type(parameter) is str)):
        around = _fact_sentence_around(reason["fact"], reason["expected"], parameter)
        if around is not None:
            return around[0] + _bold_value(reason["actual"]) + around[1]
    return reason_text(reason, fact=_code, value=_bold_value, text=_rule_md)


_FACT_REASON_KEYS = frozenset({"fact", "expected", "actual", "parameter"})  # another key: reason_text itself decides
# Stands for the value while the words around it are made: escaped text never has it (\x00 becomes a space); a fact
# path that has it is written the plain way (the split finds it more than once).
_VALUE_MARK = "\x00\ufdd0value\ufdd0\x00"


@functools.lru_cache(maxsize=4096)
def _fact_sentence_around(fact: str, expected: str, parameter: str | None) -> tuple[str, str] | None:
    """What ``reason_text`` writes before and after the value of such a reason (None if the mark is not found once)."""
    reason = {"fact": fact, "expected": expected, "actual": None}
    if parameter is not None:
        reason["parameter"] = parameter
    parts = reason_text(reason, fact=_code, value=lambda _: _VALUE_MARK, text=_rule_md).split(_VALUE_MARK)
    return (parts[0], parts[1]) if len(parts) == 2 else None


def _withheld(finding: Mapping[str, Any], suppressed: Sequence[Mapping[str, Any]]) -> list[str]:
    if not suppressed:  # (most documents)
        return []
    facts = {r["derived"] for r in finding["because"] if "derived" in r and r.get("holds")}
    held = [s for s in suppressed if s["by"].get("fact") in facts]
    if not held:
        return []
    lines = ["", "**Withheld until the record is reconciled:**"]
    lines += [f"- {s['finding']['code']}: {_rule_md(s['finding']['summary'])}" for s in held]
    return lines


def fact_line(path: str, value: Any, sources: Mapping[str, Sequence[str]]) -> str:
    """One input fact as a Markdown list item: its value and the FHIR resources it was read from."""
    return f"- {_code(path)} is {_bold_value(value)}{_origin(path, sources)}"


class _Origins(dict[str, Sequence[str]]):
    """The resources each fact was read from, and why a fact no resource gave is unknown when resources about it
    were there (conflicting, malformed...): a card must never say no resource recorded it then."""

    def __init__(self, sources: Mapping[str, Sequence[str]], problems: Sequence[Mapping[str, Any]]):
        super().__init__(sources)
        self.unused: dict[str, list[Mapping[str, Any]]] = {}
        for problem in problems:
            if problem.get("path") and problem.get("kind") != "superseded":
                self.unused.setdefault(str(problem["path"]), []).append(problem)


def fact_origins(sources: Mapping[str, Sequence[str]], problems: Sequence[Mapping[str, Any]]) -> _Origins:
    """What the cards say of where each fact came from (``sources``), and why one is unknown (``problems``)."""
    return _Origins(sources, problems)


def _origin(path: str, sources: Mapping[str, Sequence[str]]) -> str:
    origin = sources.get(path)
    if origin:
        return f" — from {', '.join(_md(s) for s in origin)}"
    unused = getattr(sources, "unused", {}).get(path)
    if unused:
        kind = "the FHIR resources disagree" if any(p.get("kind") == "conflict" for p in unused) else \
            "FHIR resources about it could not be used"
        return f" — left unknown: {kind} ({', '.join(_md(p['where']) for p in unused)}; see the card on what " \
               "could not be used)"
    return " — no FHIR resource recorded it"


def _evidence(evidence: Sequence[Mapping[str, Any]]) -> list[str]:
    if not evidence:
        return ["", "**Evidence:** none cited (a safety or data-quality choice of this library)."]
    return ["", "**Evidence:**", *evidence_lines(evidence)]


def evidence_lines(evidence: Sequence[Mapping[str, Any]]) -> list[str]:
    """Evidence entries (``EvidenceEntry.to_dict()``) in Markdown: a quote as a block quote with its level of
    evidence and citation, a claim without a quote as a list item with the state of its citation."""
    lines = []
    for entry in evidence:
        if entry.get("quote"):
            level = f" (level of evidence {_md(entry['level'])})" if entry.get("level") else ""
            lines.append(f"> \"{_md(entry['quote'])}\"{level}  ")
            lines.append(f"> — {_md(entry['citation'])} [{entry['id']}]")
            lines.append("")
        else:
            lines.append(f"- {_md(entry['claim'])} — {_md(entry['citation'])} [{entry['id']}; citation "
                         f"{_md(entry['verification'])}]")
    return lines


def citation_links(evidence: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """PubMed, PMC and DOI links for the identifiers found in the evidence citations (each URL once)."""
    links: dict[str, dict[str, str]] = {}
    for entry in evidence:
        citation = entry.get("citation") or ""
        short = _short(citation)
        for pmid in _PMID.findall(citation):
            links.setdefault(f"https://pubmed.ncbi.nlm.nih.gov/{pmid}/",
                             {"label": f"PubMed {pmid}: {short}", "type": "absolute"})
        for pmc in _PMC.findall(citation):
            links.setdefault(f"https://pmc.ncbi.nlm.nih.gov/articles/{pmc}/",
                             {"label": f"{pmc}: {short}", "type": "absolute"})
        for doi in _DOI.findall(citation):
            doi = doi.rstrip(".,;)")
            links.setdefault(f"https://doi.org/{doi}", {"label": f"DOI {doi}: {short}", "type": "absolute"})
    return [{"label": link["label"], "url": url, "type": link["type"]} for url, link in links.items()]


def _short(citation: str, limit: int = 80) -> str:
    text = citation.split(". ", 1)[0] if len(citation) > limit else citation
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- cards about the FHIR record ----------------------------------------------------------------------------------


def problems_card(problems: Sequence[Mapping[str, Any]], *, evaluation_id: str,
                  paths: Iterable[str] | None = None) -> dict[str, Any] | None:
    """One card listing what was skipped or left unknown while reading the FHIR record (None when nothing was).
    ``paths``: only problems about these facts (and problems about no fact in particular)."""
    wanted = None if paths is None else set(paths)
    shown = [p for p in problems if wanted is None or p.get("path") is None or p.get("path") in wanted]
    if not shown:
        return None
    conflicts = [p for p in shown if p.get("kind") == "conflict"]
    facts = sorted({p["path"] for p in shown if p.get("path")})
    if conflicts:
        summary = (f"FHIR record: {len(conflicts)} conflict(s) left facts unknown; {len(shown)} issue(s) in all. "
                   "Reconcile the record.")
    else:
        summary = f"FHIR record: {len(shown)} resource(s) or value(s) not used; see why before relying on the cards."
    detail = ["**What could not be used from the FHIR record** (nothing is ever guessed: a fact without a usable "
              "resource is *unknown* to the rules):", ""]
    detail += [f"- {_md(p['where'])}: {_md(p['message'])}" for p in shown]
    if facts:
        detail += ["", "Facts affected: " + ", ".join(_code(f) for f in facts)]
    return make_card(card_id=card_uuid(evaluation_id, "FHIR", ServiceCard.FHIR_INPUT_PROBLEMS), summary=summary,
                     indicator=Indicator.WARNING if conflicts or facts else Indicator.INFO, detail=detail,
                     source=service_source(ServiceCard.FHIR_INPUT_PROBLEMS, "Problems reading the FHIR record"))


def conflict_card(problems: Sequence[Mapping[str, Any]], *, evaluation_id: str) -> dict[str, Any]:
    """The card returned instead of findings when conflicting (or unreadable) resources prevent any evaluation."""
    errors = [p for p in problems if p.get("severity") == "error"]
    others = [p for p in problems if p.get("severity") != "error"]
    # Most often resources that disagree; also a resource about a yes/no fact that cannot be read (left out, the
    # fact would read "no"): the card says which it is.
    only_conflicts = all(p.get("kind") == "conflict" for p in errors)
    # Or, beside another cancer, a resource about such a fact that does not say it is the IMT's (kind "unattributed").
    unattributed = any(p.get("kind") == "unattributed" for p in errors)
    detail = ["**Nothing was evaluated.** The FHIR record " + (
        "disagrees with itself about facts" if only_conflicts else
        "holds resources that disagree, cannot be read or are not tied to the IMT, about facts" if unattributed else
        "holds resources that disagree or cannot be read, about facts") +
        " that cannot be left unknown, and imt-cds never evaluates a guess:", ""]
    detail += [f"- {_md(p['where'])}: {_md(p['message'])}" for p in errors]
    if others:
        detail += ["", "Also not used:"] + [f"- {_md(p['where'])}: {_md(p['message'])}" for p in others]
    detail += ["", "Correct or retire the " + ("conflicting" if only_conflicts else "listed") +
               " resources, then open the chart again."]
    summary = ("Conflicting records: no IMT decision support until they are reconciled." if only_conflicts else
               "Records not tied to the IMT, unreadable or conflicting: no IMT decision support until they are "
               "corrected." if unattributed else
               "Unreadable or conflicting records: no IMT decision support until they are corrected.")
    return make_card(card_id=card_uuid(evaluation_id, "FHIR", ServiceCard.FHIR_INPUT_CONFLICT),
                     summary=summary,
                     indicator=Indicator.CRITICAL, detail=detail,
                     source=service_source(ServiceCard.FHIR_INPUT_CONFLICT, "Conflicting FHIR resources"))


def not_eligible_card(message: str, *, evaluation_id: str) -> dict[str, Any]:
    """The one info card (only when the service is configured for it) for a chart imt-cds does not evaluate."""
    detail = [f"imt-cds did not evaluate this chart: {_md(message)}.", "",
              "imt-cds gives decision support only for a living patient with a documented inflammatory "
              "myofibroblastic tumor (IMT). If the diagnosis was established elsewhere, record it as a Condition."]
    return make_card(card_id=card_uuid(evaluation_id, "FHIR", ServiceCard.NOT_ELIGIBLE),
                     summary="No IMT decision support for this chart (no IMT diagnosis recorded).",
                     indicator=Indicator.INFO, detail=detail,
                     source=service_source(ServiceCard.NOT_ELIGIBLE, "Chart not evaluated"))


# --- text -------------------------------------------------------------------------------------------------------


def escape_markdown(text: Any) -> str:
    """Text that comes from data (resource ids, messages, values, order texts), made inert in a card's Markdown: it
    shows as written (line breaks as spaces, URLs defanged) and can open no link, image, HTML or block."""
    escaped = str(text)
    if _MAYBE_MARKUP.search(escaped) is None:  # most values ("8", "true", "Observation/x1"): nothing to do
        return escaped
    if not escaped.isprintable():  # every character _LINE_BREAKS matches is unprintable: most text skips the scan
        escaped = _LINE_BREAKS.sub(" ", escaped)
    if "://" in escaped or "w." in escaped or "W." in escaped:  # what every match of _AUTOLINK contains
        escaped = _AUTOLINK.sub(_defang, escaped)
    for special, replacement in _ESCAPES:
        if special in escaped:
            escaped = escaped.replace(special, replacement)
    return escaped


def _defang(match: re.Match[str]) -> str:
    return "[:]//" if match.group(1) == "://" else match.group(1)[:-1] + "[.]"


@functools.lru_cache(maxsize=4096)
def _escaped_rule_text(text: str) -> str:
    return escape_markdown(text)


def _rule_md(text: Any) -> str:
    """``escape_markdown`` for the rulebook's own text in a document (a rule's test, a derived fact's reasons, a
    withheld finding's summary): the same few hundred strings on every hook call, so each is escaped once (a bounded
    memo of a pure function; only ``str``, so 1, 1.0 and True never share an entry)."""
    return _escaped_rule_text(text) if type(text) is str else escape_markdown(text)


def _code(name: str) -> str:
    return f"`{name.replace('`', '')}`"  # fact paths are the rulebook's; a backtick would end the code span


def _bold_value(value: Any) -> str:
    return f"**{escape_markdown(display_value(value))}**"


_md = escape_markdown  # a short name for the templates above
