"""The rationale report's parts, in exact HTML, from one small document made to reach every branch: a finding with
reasons two levels deep and a derived fact reached two ways, one required absent, one that applies to every patient,
one merged from two rules, evidence with and without a quote or a level, none at all, a withheld finding, every kind
of section; and each field of a document shown escaped, since a report may be made from a record nobody checked.

test_report_html.py renders real assessments (through the command line, and in Chromium); these read what each part
says, where a planted mistake (a mutant) shows.
"""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report_html_golden import (  # noqa: E402
    FACT_SIZE,
    FACT_SITE,
    INPUT,
    LARGE,
    QUOTED,
    RECORD,
    document,
    finding,
    load_cases,
    render,
)

from imt_cds.render.report_html import _CSS, GRAPH_COLORS, derivation_svg, render_report_html  # noqa: E402

@pytest.fixture(scope="module")
def page() -> str:
    return render_report_html(document(), input_facts=INPUT, audit_record=RECORD)


def between(text: str, start: str, end: str) -> str:
    at = text.index(start)
    return text[at:text.index(end, at) + len(end)]


def article(page: str, code: str) -> str:
    start = page.rindex("<article", 0, page.index(f"<code>{code}</code>"))
    return page[start:page.index("</article>", start) + len("</article>")]


# --- the page -----------------------------------------------------------------------------------------------------


def test_the_header_names_the_patient_the_evaluation_the_rulebook_and_the_record(page):
    assert page.startswith("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n")
    assert "<title>IMT decision support - rationale report - pt-1</title>" in page
    assert ('<div class="muted">Patient <strong>pt-1</strong> · evaluated 2026-12-05T10:00:00Z · rulebook imt 9.9 · '
            "audit record #7</div>") in page
    assert page.endswith("</footer></main></body></html>\n")
    plain = render_report_html({**document(), "patient_id": None})
    assert "<strong>(no patient id)</strong> · evaluated 2026-12-05T10:00:00Z · rulebook imt 9.9</div>" in plain


def test_the_counts_give_each_kind_and_the_withheld(page):
    assert ('<p class="counts"><span><strong>1</strong> recommendations for the team to consider</span>'
            "<span><strong>1</strong> data requests</span><span><strong>1</strong> risk flags</span>"
            "<span><strong>1</strong> safety and scope flags</span><span><strong>1</strong> withheld</span></p>"
            ) in page


def test_the_sections_come_in_order_each_with_its_findings():
    document_ = document()
    document_["risk_flags"] = []
    page = render_report_html(document_)
    headings = re.findall(r"<h2>([^<]*)</h2>", page)
    assert headings == ["How the findings were reached", "Patient facts", "Recommendations for the team to consider",
                        "Data requests (missing or doubtful data)",
                        "Withheld (a rule applied, but its suggestion is suppressed)", "Derived facts", "Provenance"]
    section = between(page, "<section><h2>Recommendations", "</section>")
    assert re.findall(r"<code>(\w+)</code>", section) == ["REC_A"]


def test_the_legend_names_each_color_of_the_graph(page):
    legend = between(page, '<p class="legend">', "</p>")
    shown = re.findall(r'background:(#[0-9a-f]{6})"></i>([^<]+)</span>', legend)
    assert shown == [(GRAPH_COLORS["fact"], "input fact"), (GRAPH_COLORS["derived"], "derived fact"),
                     (GRAPH_COLORS["absent"], "derived fact required absent"),
                     (GRAPH_COLORS["recommendation"], "recommendation / data request"),
                     (GRAPH_COLORS["risk"], "risk or safety flag"), (GRAPH_COLORS["withheld"], "withheld finding")]


def test_the_facts_table_marks_the_facts_a_rule_used(page):
    table = between(page, '<section id="facts">', "</section>")
    assert "Every input fact, as validated (defaults filled in). Facts a rule used are in bold." in table
    assert re.findall(r'<tr class="(used|)"><td class="mono">([^<]+)</td><td>([^<]+)</td></tr>', table) == [
        ("used", "age_years", "9"), ("used", "tumor.site", "thoracic"), ("used", "tumor.size_cm", "6.5"),
        ("", "tumor.margin", "null (not recorded)")]  # patient_id is in the header, not here


def test_without_the_input_the_facts_table_shows_the_facts_the_reasons_quote(page):
    table = between(render_report_html(document()), '<section id="facts">', "</section>")
    assert ("The audit record keeps only the input's sha256 (<span class=\"mono\">" + "cd" * 32 + "</span>); shown "
            "here are the facts the rules used, as their reasons quote them.") in table
    assert re.findall(r'<tr class="used"><td class="mono">([^<]+)</td><td>([^<]+)</td></tr>', table) == [
        ("age_years", "9"), ("tumor.site", "thoracic"), ("tumor.size_cm", "6.5")]


def test_a_finding_shows_its_rules_its_reasons_unfolded_and_its_evidence(page):
    shown = article(page, "REC_A")
    assert shown.startswith('<article class="finding kind-recommendation"><h3>Title of REC_A</h3>'
                            "<div>Summary of REC_A.</div>")
    assert ('<div class="meta"><code>REC_A</code> · rule R-REC_A v1.2.0, R-OTHER v2.0.0 · strength of evidence: '
            "NARR</div>") in shown
    why = between(shown, "<div><strong>Why</strong>", "</ul></div>")
    assert why == (
        '<div><strong>Why</strong><ul class="why">'
        '<li>ADVANCED holds <span class="meta">[derived by rule D2], because:</span><ul class="why">'
        '<li>LARGE holds: C1, C2 <span class="meta">[derived by rule D1], because:</span>'
        '<div class="meta">measured large:</div><ul class="why"><li>tumor.size_cm is 6.5 (rule needs &gt;= 5, '
        "parameter size_risk_threshold_cm)</li></ul>"
        '<div class="meta">site counts as large:</div><ul class="why"><li>tumor.site is thoracic (rule needs = '
        "thoracic)</li></ul></li></ul></li>"
        "<li>CONFLICT does not hold (required to be absent)</li></ul></div>")
    # the other rule's own reasons, after the first rule's: an auditor sees why each rule fired
    assert ('</ul></div><div><strong>Why rule R-OTHER v2.0.0 also gives it</strong><ul class="why"><li>age_years is 9 '
            '(rule needs != null)</li></ul><div class="meta">Its evidence: SEED:s1, EXT-1.</div></div>') in shown
    assert ("<div><strong>Evidence</strong><blockquote>“A quote.” (level of evidence 3iiA)<br><span class=\"meta\">"
            "[SEED:s1] Author A. A paper. PMID 12345678. (file seeds/001_seed.txt); verbatim: quote found</span>"
            "</blockquote><blockquote>A claim without a quote.<br><span class=\"meta\">[EXT-1] Author B. Another. "
            "doi:10.1000/xyz; citation verified in PubMed</span></blockquote></div></article>") in shown


def test_a_finding_for_every_patient_and_without_evidence_says_both(page):
    assert article(page, "REQ_B").endswith(
        "<div><strong>Why:</strong> applies to every patient.</div><div class=\"meta\">Evidence: none cited (a "
        "safety or data-quality choice of this library).</div></article>")
    assert 'class="finding kind-data_request"' in article(page, "REQ_B")
    quote = article(render_report_html({**document(), "recommendations": [
        finding("REC_X", "recommendation", [], [{**QUOTED, "level": None}])]}), "REC_X")
    assert "<blockquote>“A quote.”<br>" in quote  # no level: none said


def test_a_derived_fact_already_unfolded_above_is_not_unfolded_again_inside_itself():
    document_ = document()
    document_["derived_facts"][0]["because"] = [LARGE]  # (a malformed document: LARGE because of LARGE)
    shown = article(render_report_html(document_), "FLAG_D")
    assert shown.count("[derived by rule D1]") == 1 and "<li>LARGE holds: C1, C2</li>" in shown


def test_a_withheld_finding_says_what_holds_and_which_rule_holds_it(page):
    shown = article(page, "REC_E")
    assert shown.startswith('<article class="finding kind-recommendation withheld"><h3>Title of REC_E</h3>')
    assert "<p><strong>Withheld</strong> because LARGE holds (rule S1): held for now.</p>" in shown


def test_the_derived_facts_table_gives_each_way_each_fact_was_reached(page):
    table = between(page, "<section><h2>Derived facts</h2>", "</section>")
    assert re.findall(r"<tr><td class=\"mono\">([^<]+)</td><td>([^<]+)</td><td>([^<]+)</td></tr>", table) == [
        ("LARGE (measured large)", "D1 v1.0.0",
         "tumor.size_cm is 6.5 (rule needs &gt;= 5, parameter size_risk_threshold_cm)"),
        ("LARGE (site counts as large)", "D1 v1.0.0", "tumor.site is thoracic (rule needs = thoracic)"),
        ("ADVANCED", "D2 v1.1.0", "LARGE holds: C1, C2")]
    assert "<h2>Derived facts</h2>" not in render_report_html({**document(), "derived_facts": []})


def test_the_provenance_lists_the_rulebook_parameters_engine_input_and_record(page):
    table = between(page, '<section id="provenance">', "</section>")
    assert re.findall(r'<tr><th>([^<]+)</th><td class="mono">([^<]+)</td></tr>', table) == [
        ("rulebook", "imt 9.9"), ("rulebook sha256 (rules, parameters, evidence)", "ab" * 32),
        ("parameter size_risk_threshold_cm", "5"), ("engine: durable_rules", "2.0.28"),
        ("input sha256 (canonical input)", "cd" * 32), ("evaluated at", "2026-12-05T10:00:00Z"),
        ("audit record", "#7 id rec-1"), ("recorded at", "2026-12-05T10:00:01Z"),
        ("record hash (chain)", "ef" * 32), ("previous record hash", "01" * 32)]


# --- the graph ----------------------------------------------------------------------------------------------------


def nodes(svg: str) -> dict[str, tuple[str, str, float, float, bool]]:
    """label -> (tooltip, fill, x, y, dashed)"""
    found = re.findall(r'<g><title>([^<]*)</title><rect x="([\d.]+)" y="([\d.]+)" width="[\d.]+" height="24" '
                       r'rx="5" fill="(#[0-9a-f]+)" stroke="#475569"( stroke-dasharray="4 3")?/><text [^>]*>([^<]*)'
                       r"</text></g>", svg)
    return {label: (tip, fill, float(x), float(y), bool(dash)) for tip, x, y, fill, dash, label in found}


def test_the_graph_draws_facts_derived_facts_and_findings_in_layers_with_their_colors():
    svg = derivation_svg(document())
    drawn = nodes(svg)
    assert {label: (tip, fill, dashed) for label, (tip, fill, _, _, dashed) in drawn.items()} == {
        "tumor.size_cm = 6.5": ("tumor.size_cm = 6.5", GRAPH_COLORS["fact"], False),
        "tumor.site = thoracic": ("tumor.site = thoracic", GRAPH_COLORS["fact"], False),
        "age_years = 9": ("age_years = 9", GRAPH_COLORS["fact"], False),
        "LARGE": ("LARGE (rule D1)", GRAPH_COLORS["derived"], False),
        "ADVANCED": ("ADVANCED (rule D2)", GRAPH_COLORS["derived"], False),
        "not CONFLICT": ("CONFLICT had to be absent", GRAPH_COLORS["absent"], True),
        "REC_A": ("Title of REC_A (rule R-REC_A)", GRAPH_COLORS["recommendation"], False),
        "REQ_B": ("Title of REQ_B (rule R-REQ_B)", GRAPH_COLORS["recommendation"], False),
        "RISK_C": ("Title of RISK_C (rule R-RISK_C)", GRAPH_COLORS["risk"], False),
        "FLAG_D": ("Title of FLAG_D (rule R-FLAG_D)", GRAPH_COLORS["risk"], False),
        "REC_E (withheld)": ("Title of REC_E: withheld because LARGE holds", GRAPH_COLORS["withheld"], True)}
    x = {label: node[2] for label, node in drawn.items()}
    # Layers left to right: input facts, then derived facts by depth, then every finding in one column.
    assert x["age_years = 9"] == x["tumor.site = thoracic"] == x["tumor.size_cm = 6.5"] == 12.0
    assert x["tumor.size_cm = 6.5"] < x["LARGE"] == x["not CONFLICT"] < x["ADVANCED"] < x["REC_A"]
    assert x["REC_A"] == x["REQ_B"] == x["RISK_C"] == x["FLAG_D"] == x["REC_E (withheld)"]
    y = {label: node[3] for label, node in drawn.items()}
    assert [label for label in sorted(x, key=lambda k: (x[k], y[k])) if x[label] == 12.0] == [
        "age_years = 9", "tumor.site = thoracic", "tumor.size_cm = 6.5"]  # facts by path, top to bottom


def test_the_graph_draws_each_edge_once_in_the_style_of_its_kind():
    svg = derivation_svg(document())
    edges = re.findall(r'<path d="M [^"]+" fill="none" stroke="(#[0-9a-f]+)" stroke-width="1.3"'
                       r'( stroke-dasharray="5 4")? marker-end="url\(#arrow-(\w+)\)"/>', svg)
    styles = [(color, bool(dash), kind) for color, dash, kind in edges]
    assert styles.count(("#b45309", True, "absent")) == 1  # not CONFLICT -> REC_A
    assert styles.count(("#b91c1c", True, "suppress")) == 1  # LARGE -> REC_E (withheld)
    # size -> LARGE, site -> LARGE, LARGE -> ADVANCED, ADVANCED -> REC_A, age -> REC_A (also from R-OTHER),
    # site -> RISK_C, LARGE -> FLAG_D, site -> REC_E: each once, though site -> LARGE is given twice over
    assert styles.count(("#64748b", False, "normal")) == 8 and len(styles) == 10
    for name, color in (("normal", "#64748b"), ("absent", "#b45309"), ("suppress", "#b91c1c")):
        assert f'<marker id="arrow-{name}" ' in svg and f'<path d="M 0 0 L 10 5 L 0 10 z" fill="{color}"/>' in svg


def test_the_graph_is_as_big_as_its_columns_and_rows():
    svg = derivation_svg(document())
    width, height = map(float, re.search(r'viewBox="0 0 ([\d.]+) ([\d.]+)"', svg).groups())
    # Four columns; the widest label of each, 7.2 px a character and 20 px of padding, 90 px between columns and
    # 12 px of margin; the tallest column (5 findings) 5 rows of 24 px with 10 px between them, and the margins.
    labels = [["tumor.site = thoracic"], ["not CONFLICT"], ["ADVANCED"], ["REC_E (withheld)"]]
    expected = 12 + sum(max(map(len, column)) * 7.2 + 20 for column in labels) + 3 * 90 + 12
    assert width == round(expected) and height == 12 * 2 + 5 * (24 + 10) - 10
    assert f'width="{width:.0f}" height="{height:.0f}"' in svg


def test_a_document_where_no_rule_fired_gets_a_graph_that_says_so():
    empty = {**document(), "recommendations": [], "risk_flags": [], "derived_facts": [], "suppressed": []}
    assert derivation_svg(empty) == (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 400 40" width="400" height="40"><text x="10" y="25" '
        'font-size="13">No rule fired.</text></svg>')


# --- escaping -----------------------------------------------------------------------------------------------------

HOSTILE = "<img src=x onerror=alert(1)>&\"'"
ESCAPED = "&lt;img src=x onerror=alert(1)&gt;&amp;&quot;&#x27;"


@pytest.mark.parametrize("where", [
    "patient_id", "recommendations.0.title", "recommendations.0.summary", "recommendations.0.code",
    "recommendations.0.strength", "recommendations.0.rule.id", "recommendations.0.rule.version",
    "recommendations.0.evidence.0.quote", "recommendations.0.evidence.0.level", "recommendations.0.evidence.0.id",
    "recommendations.0.evidence.0.citation", "recommendations.0.evidence.0.source",
    "recommendations.0.evidence.0.verification", "recommendations.0.evidence.1.claim",
    "recommendations.0.also_from.0.id", "recommendations.0.also_from.0.version",
    "recommendations.0.also_from.0.evidence.1", "recommendations.0.also_from.0.because.0.actual",
    "recommendations.0.because.1.derived", "risk_flags.0.because.0.actual",
    "risk_flags.0.because.0.expected", "derived_facts.0.reason.text", "derived_facts.2.rule.id",
    "suppressed.0.reason", "suppressed.0.by.id", "provenance.evaluated_at", "provenance.rulebook.name",
    "provenance.rulebook.version", "provenance.input_sha256", "provenance.engine.durable_rules",
])
def test_every_field_of_the_document_is_shown_escaped(where):
    document_ = copy.deepcopy(document())
    *path, last = where.split(".")
    holder = document_
    for key in path:
        holder = holder[int(key)] if key.isdigit() else holder[key]
    holder[int(last) if last.isdigit() else last] = HOSTILE
    page = render_report_html(document_, audit_record=RECORD)
    assert "<img" not in page and ESCAPED in page


def test_the_input_facts_and_the_record_are_shown_escaped():
    page = render_report_html(document(), input_facts={**INPUT, HOSTILE: HOSTILE},
                              audit_record={**RECORD, "seq": HOSTILE, "id": HOSTILE})
    assert "<img" not in page and page.count(ESCAPED) >= 4


# --- whole pages, as reviewed -------------------------------------------------------------------------------------

CASES = load_cases()


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_the_report_is_the_reviewed_one(case):
    assert render(case) == case["page"]


def test_the_page_carries_the_style_its_words_rely_on(page):
    # "Facts a rule used are in bold": the stylesheet makes them so, and it is in the page (nothing is fetched).
    assert f"<style>{_CSS}</style>" in page
    assert "tr.used td { font-weight: 600; }" in _CSS


# --- the branches the every-branch document does not reach ------------------------------------------------------------


def test_a_finding_from_three_rules_names_all_three():
    also = [{"id": "R-B", "version": "2.0.0", "because": []}, {"id": "R-C", "version": "3.0.0", "because": []}]
    page = render_report_html({**document(), "recommendations": [
        finding("REC_X", "recommendation", [], [], also_from=also)]})
    assert "<code>REC_X</code> · rule R-REC_X v1.2.0, R-B v2.0.0, R-C v3.0.0 · strength" in page
    for rule in ("R-B v2.0.0", "R-C v3.0.0"):  # neither with reasons or evidence of its own
        assert (f"<div><strong>Why rule {rule} also gives it</strong> applies to every patient.<div class=\"meta\">"
                "Its evidence: none.</div></div>") in page


def test_a_derivation_is_labelled_only_when_the_fact_was_reached_more_than_one_way_and_it_has_a_label():
    document_ = document()
    document_["derived_facts"] = [
        {"name": "LARGE", "rule": {"id": "D1", "version": "1.0.0"}, "because": [FACT_SIZE],
         "reason": {"id": "C1", "text": "measured large"}},  # one way, labelled: no label shown
        {"name": "ADVANCED", "rule": {"id": "D2", "version": "1.1.0"}, "because": [LARGE]},
        {"name": "ADVANCED", "rule": {"id": "D2", "version": "1.1.0"}, "because": [FACT_SITE],
         "reason": {"id": "C9", "text": "by site"}},  # two ways, one of them labelled
    ]
    shown = article(render_report_html(document_), "REC_A")
    assert "measured large:" not in shown
    assert re.findall(r'<div class="meta">([^<]*):</div>', shown) == ["by site"]  # the labels of derivations


def test_the_graph_keeps_apart_facts_required_absent_and_findings_withheld():
    document_ = document()
    document_["recommendations"][1]["because"] = [{"derived": "OTHER", "holds": False}]
    document_["suppressed"].append({**document_["suppressed"][0], "finding": finding("REC_F", "recommendation",
                                                                                     [], [])})
    drawn = nodes(derivation_svg(document_))
    assert {"not CONFLICT", "not OTHER", "REC_E (withheld)", "REC_F (withheld)"} <= set(drawn)


def test_the_graph_draws_a_derived_fact_the_document_does_not_list_by_its_name():
    # A document whose derived facts were left out (an edited record): the facts its findings cite are still drawn.
    document_ = {**document(), "derived_facts": []}
    drawn = nodes(derivation_svg(document_))
    assert drawn["ADVANCED"][:2] == ("ADVANCED holds", GRAPH_COLORS["derived"])
    assert drawn["LARGE"][:2] == ("LARGE holds", GRAPH_COLORS["derived"])  # cited by FLAG_D
    document_["risk_flags"] = []  # LARGE now only as what withholds REC_E
    assert nodes(derivation_svg(document_))["LARGE"][:2] == ("LARGE", GRAPH_COLORS["derived"])
