"""Render an assessment as a short consult note (plain text) that a clinician can read top to bottom.

Findings are grouped by kind; each shows what is suggested, why (the input facts it matched, and for each derived
fact, the facts that derived it, recursively), and the evidence with its verbatim quote. Suppressed findings,
derived facts and the provenance follow. This is a renderer: it reads an ``Assessment`` (or a recorded one, see
``audit/recorded.py``) and decides nothing.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping, Sequence

from ..core.assessment import Assessment, DerivedFact, Finding, Reason
from ..core.wording import display_value as _value
from ..core.wording import enum_words, reason_text

__all__ = ["render_consult_note"]

WIDTH = 100
_SECTIONS = (
    ("recommendation", "RECOMMENDATIONS FOR THE TEAM TO CONSIDER"),
    ("data_request", "DATA REQUESTS (missing or doubtful data)"),
    ("risk_flag", "RISK FLAGS"),
    ("flag", "SAFETY AND SCOPE FLAGS"),
)
DISCLAIMER = (
    "Decision support for a multidisciplinary team, not a prescription. Every suggestion must be weighed by the "
    "treating team against the full clinical picture."
)

_DIAGNOSIS = {
    "coded": "IMT coded in the chart",
    "text": "IMT recognised from the chart's text only, not from a code: CONFIRM THE DIAGNOSIS before using this",
    "attested": "IMT attested by the caller (established outside the chart)",
}


def render_consult_note(assessment: Assessment, sources: Mapping[str, Sequence[str]] | None = None) -> str:
    """The consult note. ``sources`` (fact path -> FHIR resources, from ``imt_cds.fhir``) adds, to each input fact a
    rationale cites, the resources it was read from."""
    lines: list[str] = []
    patient = assessment.patient_id or "(no patient id)"
    lines.append(f"IMT decision support - assessment of {patient}")
    lines.extend(_wrap(DISCLAIMER, ""))
    lines.append("")
    lines.extend(_wrap("Facts: " + _facts_summary(assessment), ""))
    diagnosis = getattr(assessment.provenance, "diagnosis", None)  # set when the facts were read from a chart
    if diagnosis:
        lines.extend(_wrap("Diagnosis: " + _DIAGNOSIS.get(diagnosis.get("basis"), "?")
                           + (f" ({', '.join(diagnosis['sources'])})" if diagnosis.get("sources") else ""), ""))

    derived = {d.name: [] for d in assessment.derived_facts}  # type: dict[str, list[DerivedFact]]
    for fact in assessment.derived_facts:
        derived[fact.name].append(fact)

    for kind, heading in _SECTIONS:
        findings = [f for f in assessment.findings if f.kind == kind]
        if not findings:
            continue
        lines.append("")
        lines.append(heading)
        for number, finding in enumerate(findings, 1):
            lines.extend(_finding(number, finding, derived, sources or {}))

    if assessment.suppressed:
        lines.append("")
        lines.append("WITHHELD (a rule applied, but its suggestion is suppressed until the record is reconciled)")
        for item in assessment.suppressed:
            f = item.finding
            reasons = "; ".join(item.reasons) or item.fact
            lines.extend(_wrap(f"- {f.title} [{f.code}, rule {f.rule.id}]: withheld because {item.fact} "
                               f"({item.by.id}) holds: {reasons}", "  ", "    "))

    if assessment.derived_facts:
        lines.append("")
        lines.append("DERIVED FACTS")
        for fact in assessment.derived_facts:
            label = fact.name + (f" ({fact.reason_text})" if fact.reason_text else "")
            lines.extend(_wrap(f"- {label} [rule {fact.rule.id} v{fact.rule.version}], because: "
                               + "; ".join(reason_text(r.to_dict()) for r in fact.because), "  ", "    "))

    quoted = _sources(assessment.findings)
    if quoted:
        lines.append("")
        lines.append("SOURCES QUOTED")
        for key, citation in quoted:
            lines.extend(_wrap(f"- {key}: {citation}", "  ", "    "))

    p = assessment.provenance
    lines.append("")
    lines.append("PROVENANCE")
    lines.append(f"  rulebook {p.rulebook_name} {p.rulebook_version}, sha256 {p.rulebook_sha256}")
    lines.extend(_wrap("parameters: " + ", ".join(f"{k}={_value(v)}" for k, v in p.parameters.items()), "  ",
                       "    "))
    lines.append(f"  input sha256 {p.input_sha256}")
    lines.extend(_wrap("engine: " + ", ".join(f"{k} {v}" for k, v in p.engine.items())
                       + f"; evaluated {p.evaluated_at}", "  ", "    "))
    return "\n".join(lines) + "\n"


def _finding(number: int, finding: Finding, derived: dict[str, list[DerivedFact]],
             sources: Mapping[str, Sequence[str]]) -> list[str]:
    lines = _wrap(f"{number}. {finding.title}", "  ", "     ")
    lines.extend(_wrap(finding.summary, "     "))
    rules = ", ".join([f"{finding.rule.id} v{finding.rule.version}"]
                      + [f"{a.rule.id} v{a.rule.version}" for a in finding.also_from])
    lines.append(f"     [{finding.code}; rule {rules}; strength: {finding.strength}]")
    if finding.because:
        lines.append("     Why:")
        for reason in finding.because:
            lines.extend(_reason_tree(reason, derived, depth=0, seen=set(), sources=sources))
    else:
        lines.append("     Why: applies to every patient.")
    for other in finding.also_from:  # each other rule that gave the same finding, for reasons of its own
        heading = f"     Why rule {other.rule.id} v{other.rule.version} also gives it:"
        lines.append(heading if other.because else f"{heading} applies to every patient.")
        for reason in other.because:
            lines.extend(_reason_tree(reason, derived, depth=0, seen=set(), sources=sources))
        lines.extend(_wrap(f"Its evidence: {', '.join(other.evidence) or 'none cited'}.", "     ", "       "))
    if finding.evidence:
        lines.append("     Evidence:")
        for entry in finding.evidence:
            if entry.quote is not None:
                level = f" (level of evidence {entry.level})" if entry.level else ""
                lines.extend(_wrap(f'[{entry.id}] "{entry.quote}"{level}', "       ", "         "))
            else:
                lines.extend(_wrap(f"[{entry.id}] {entry.citation}. {entry.claim} (citation {entry.verification})",
                                   "       ", "         "))
    else:
        lines.append("     Evidence: none cited - a safety or data-quality choice of this library.")
    return lines


def _reason_tree(reason: Reason, derived: dict[str, list[DerivedFact]], depth: int, seen: set[str],
                 sources: Mapping[str, Sequence[str]]) -> list[str]:
    indent = "       " + "    " * depth
    text = reason_text(reason.to_dict())
    if reason.fact is not None and sources.get(reason.fact):
        text += f" [from {', '.join(sources[reason.fact])}]"
    if reason.derived and reason.holds and derived.get(reason.derived):
        rule = derived[reason.derived][0].rule
        text += f" [derived by rule {rule.id}]" + (", because:" if reason.derived not in seen else "")
    lines = _wrap(f"- {text}", indent, indent + "  ")
    if reason.derived and reason.holds and reason.derived not in seen:
        for fact in derived.get(reason.derived, []):
            if fact.reason_text and len(derived[reason.derived]) > 1:
                lines.extend(_wrap(f"{fact.reason_text}:", indent + "    "))
            for sub in fact.because:
                lines.extend(_reason_tree(sub, derived, depth + 1, seen | {reason.derived}, sources))
    return lines


def _facts_summary(assessment: Assessment) -> str:
    f = assessment.facts
    if f is None:  # an audit record made with store_input=False
        return f"not stored (the audit record keeps only the input's sha256, {assessment.provenance.input_sha256})"
    # Facts the input did not give read as "not recorded" (or "unknown"), never as a clinical negative: a yes/no
    # fact of the contract that was left out is false to the rules, and the note must not turn that into "no".
    t, m, h = f.tumor, f.molecular, f.history
    parts = [_age_text(f.age_years)]
    site = "tumor site unknown" if t.site == "unknown" else f"{enum_words(t.site)} tumor"
    size = f"{_value(t.size_cm)} cm" if t.size_cm is not None else "size not recorded"
    resectability = "resectability unknown" if t.resectability == "unknown" else enum_words(t.resectability)
    distant = {True: "distant disease", False: "no distant disease", None: "distant disease not staged"}
    parts.append(f"{site}, {size}, {resectability}, {distant[t.distant_disease]}")
    if t.epithelioid_morphology:
        parts.append("epithelioid morphology")
    resp = {True: "respiratory symptoms", False: "no respiratory symptoms", None: "respiratory symptoms not recorded"}
    parts.append(resp[f.symptoms.respiratory])
    genes = []
    for name in ("alk", "ros1", "ntrk", "ret", "pdgfrb"):
        result = getattr(m, name)
        text = f"{name.upper()} " + ("status unknown" if result.status == "unknown" else result.status)
        if result.methods:
            text += f" ({'+'.join(sorted(result.methods))})"
        if result.fusion_partner:
            text += f" partner {result.fusion_partner}"
        genes.append(text)
    panel = "RNA fusion panel done" if m.rna_fusion_panel_done else "RNA fusion panel not recorded as done"
    parts.append(", ".join(genes) + f"; {panel}")
    margin = f"margin {h.margin_status}" if h.margin_status and h.margin_status != "unknown" else None
    if h.surgery_done:
        history = ["surgery done" + (f" ({margin})" if margin else "")]
    else:
        history = ["surgery not recorded as done" + (f" ({margin} recorded)" if margin else "")]
    for flag, text in ((h.recurrence, "recurrence"), (h.progressed_on_alk_inhibitor, "progressed on ALK inhibitor"),
                       (h.progressed_on_prior_systemic, "progressed on prior systemic therapy")):
        if flag:
            history.append(text)
    parts.append(", ".join(history))
    return "; ".join(parts) + "."


def _age_text(age: float | None) -> str:
    if age is None:
        return "age not recorded"
    if age < 2:
        return f"age {round(age, 2):g} years (about {round(age * 12)} months)"
    return f"age {round(age, 1):g} years"


def _sources(findings: Iterable[Finding]) -> list[tuple[str, str]]:
    seen: dict[str, str] = {}
    for finding in findings:
        for entry in finding.evidence:
            if entry.source and entry.id.split(":")[0] not in seen:
                seen[entry.id.split(":")[0]] = f"{entry.citation} (file seeds/{entry.source})"
    return sorted(seen.items())


def _wrap(text: str, indent: str, subsequent: str | None = None) -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=subsequent or indent,
                         break_on_hyphens=False) or [indent]
