"""The rationale report: one self-contained HTML page that shows an auditor or clinician how an assessment came about.

The page holds the patient's facts (those the rules used highlighted), each finding with its reasons (derived
facts unfolded down to input facts) and its evidence with verbatim quotes, what was withheld and why, the derived
facts, the provenance (rulebook and its sha256, parameters, engine versions, input sha256, and the audit record
when there is one), and a picture of the derivation graph: input facts -> derived facts -> findings, drawn as an
inline SVG. Everything is inline (CSS, SVG; no script, font, image or link to fetch), so the file opens offline
and can be archived or mailed as it is.

Like the other renderers it reads an assessment *document* (README, section Output; from a live assessment or an
audit record) and decides nothing.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..core.wording import derived_index, reason_text
from ..core.wording import display_value as _value
from .consult_note import DISCLAIMER

__all__ = ["GRAPH_COLORS", "render_report_html"]

# Node fills of the derivation graph, used nowhere else on the page (a test finds the picture by these colors).
GRAPH_COLORS = MappingProxyType({
    "fact": "#cfe3ff",
    "derived": "#ffe7a8",
    "absent": "#fff8e6",
    "recommendation": "#c9f2d4",
    "risk": "#ffd2d2",
    "withheld": "#e2e2e2",
})
_KIND_SECTIONS = (
    ("recommendation", "Recommendations for the team to consider"),
    ("data_request", "Data requests (missing or doubtful data)"),
    ("risk_flag", "Risk flags"),
    ("flag", "Safety and scope flags"),
)
_CSS = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #1b1f24;
       background: #ffffff; margin: 0; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 10px; border-bottom: 2px solid #d8dde3;
     padding-bottom: 4px; } h3 { font-size: 15px; margin: 0 0 6px; }
.muted { color: #5b6570; }
code, .mono { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12.5px; }
.disclaimer { border-left: 4px solid #b45309; background: #fdf6ec; padding: 8px 12px; margin: 12px 0; }
.counts span { display: inline-block; margin-right: 14px; }
.finding { border: 1px solid #d8dde3; border-radius: 6px; padding: 10px 14px; margin: 10px 0; }
.finding.kind-risk_flag, .finding.kind-flag { border-left: 5px solid #c2410c; }
.finding.kind-recommendation { border-left: 5px solid #15803d; }
.finding.kind-data_request { border-left: 5px solid #1d4ed8; }
.finding.withheld { border-left: 5px solid #6b7280; background: #fafafa; }
.meta { font-size: 12.5px; color: #5b6570; }
ul.why { margin: 4px 0 6px 18px; padding: 0; } ul.why ul { margin-left: 16px; }
blockquote { margin: 6px 0 6px 0; padding: 4px 10px; border-left: 3px solid #94a3b8; background: #f6f8fa; }
table { border-collapse: collapse; width: 100%; } th, td { text-align: left; vertical-align: top; padding: 3px 8px;
        border-bottom: 1px solid #eceff2; } th { background: #f3f5f7; }
tr.used td { font-weight: 600; } tr.used td:first-child::before { content: "\\25B6  "; color: #1d4ed8; }
.graph { border: 1px solid #d8dde3; border-radius: 6px; padding: 8px; overflow-x: auto; }
.graph svg { display: block; width: 100%; height: auto; }
.legend span { display: inline-block; margin-right: 16px; font-size: 12.5px; }
.swatch { display: inline-block; width: 12px; height: 12px; border: 1px solid #64748b; vertical-align: -2px;
          margin-right: 4px; }
footer { margin-top: 32px; font-size: 12px; color: #5b6570; }
"""


def render_report_html(document: Mapping[str, Any], *, input_facts: Mapping[str, Any] | None = None,
                       audit_record: Mapping[str, Any] | None = None) -> str:
    """The report for one assessment document. ``input_facts``: the canonical input (None when the record kept
    only its sha256); ``audit_record``: ``{"id", "seq", "hash", "prev_hash", "recorded_at"}`` when from a record."""
    patient = document.get("patient_id") or "(no patient id)"
    findings = [*document["recommendations"], *document["risk_flags"]]
    used = _used_facts(document)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>IMT decision support - rationale report - {_e(patient)}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        "<header><h1>IMT decision support: rationale report</h1>",
        f'<div class="muted">Patient <strong>{_e(patient)}</strong> · evaluated '
        f'{_e(document["provenance"]["evaluated_at"])} · rulebook {_e(document["provenance"]["rulebook"]["name"])} '
        f'{_e(document["provenance"]["rulebook"]["version"])}'
        + (f' · audit record #{_e(audit_record["seq"])}' if audit_record else "") + "</div>",
        f'<p class="disclaimer">{_e(DISCLAIMER)}</p>',
        '<p class="counts">' + "".join(
            f"<span><strong>{sum(1 for f in findings if f['kind'] == kind)}</strong> {_e(label.split(' (')[0].lower())}"
            "</span>" for kind, label in _KIND_SECTIONS)
        + f"<span><strong>{len(document['suppressed'])}</strong> withheld</span></p></header>",
        '<section id="derivation"><h2>How the findings were reached</h2>',
        '<p class="legend">' + "".join(
            f'<span><i class="swatch" style="background:{GRAPH_COLORS[key]}"></i>{label}</span>'
            for key, label in (("fact", "input fact"), ("derived", "derived fact"),
                               ("absent", "derived fact required absent"),
                               ("recommendation", "recommendation / data request"), ("risk", "risk or safety flag"),
                               ("withheld", "withheld finding")))
        + "</p>",
        f'<div class="graph">{derivation_svg(document)}</div></section>',
        _facts_section(input_facts, used, document),
    ]
    derived = derived_index(document)
    for kind, heading in _KIND_SECTIONS:
        of_kind = [f for f in findings if f["kind"] == kind]
        if of_kind:
            parts.append(f'<section><h2>{_e(heading)}</h2>')
            parts.extend(_finding_html(f, derived) for f in of_kind)
            parts.append("</section>")
    if document["suppressed"]:
        parts.append("<section><h2>Withheld (a rule applied, but its suggestion is suppressed)</h2>")
        for item in document["suppressed"]:
            parts.append(_finding_html(item["finding"], derived, withheld=item))
        parts.append("</section>")
    parts.append(_derived_section(document))
    parts.append(_provenance_section(document, audit_record))
    parts.append("<footer>Generated by imt-cds from the assessment document; this file is self-contained (no "
                 "external resources).</footer></main></body></html>")
    return "\n".join(parts) + "\n"


# --- sections -----------------------------------------------------------------------------------------------------


def _facts_section(input_facts: Mapping[str, Any] | None, used: Mapping[str, Any], document: Mapping[str, Any]) -> str:
    rows = []
    if input_facts is not None:
        for path, value in _flatten(input_facts):
            if path == "patient_id":
                continue
            rows.append(f'<tr class="{"used" if path in used else ""}"><td class="mono">{_e(path)}</td>'
                        f"<td>{_e(_value(value))}</td></tr>")
        note = ("<p class=\"muted\">Every input fact, as validated (defaults filled in). Facts a rule used are in "
                "bold.</p>")
    else:
        for path in sorted(used):
            rows.append(f'<tr class="used"><td class="mono">{_e(path)}</td><td>{_e(_value(used[path]))}</td></tr>')
        note = ("<p class=\"muted\">The audit record keeps only the input's sha256 "
                f"(<span class=\"mono\">{_e(document['provenance']['input_sha256'])}</span>); shown here are the "
                "facts the rules used, as their reasons quote them.</p>")
    return ('<section id="facts"><h2>Patient facts</h2>' + note
            + "<table><thead><tr><th>fact</th><th>value</th></tr></thead><tbody>" + "".join(rows)
            + "</tbody></table></section>")


def _finding_html(finding: Mapping[str, Any], derived: Mapping[str, list[Mapping[str, Any]]],
                  withheld: Mapping[str, Any] | None = None) -> str:
    rule = finding["rule"]
    also = "".join(f", {a['id']} v{a['version']}" for a in finding.get("also_from", ()))
    parts = [f'<article class="finding kind-{_e(finding["kind"])}{" withheld" if withheld else ""}">',
             f"<h3>{_e(finding['title'])}</h3>",
             f"<div>{_e(finding['summary'])}</div>",
             (f'<div class="meta"><code>{_e(finding["code"])}</code> · rule {_e(rule["id"])} v{_e(rule["version"])}'
              f"{_e(also)} · strength of evidence: {_e(finding['strength'])}</div>")]
    if withheld:
        parts.append(f'<p><strong>Withheld</strong> because {_e(withheld["by"]["fact"])} holds (rule '
                     f'{_e(withheld["by"]["id"])}): {_e(withheld["reason"])}.</p>')
    if finding["because"]:
        parts.append("<div><strong>Why</strong>" + _reasons_html(finding["because"], derived, set()) + "</div>")
    else:
        parts.append("<div><strong>Why:</strong> applies to every patient.</div>")
    # Each other rule that produced the same finding fired for reasons of its own: an auditor sees them too.
    for other in finding.get("also_from", ()):
        reasons = (_reasons_html(other["because"], derived, set()) if other["because"]
                   else " applies to every patient.")
        cited = ", ".join(other.get("evidence") or ()) or "none"
        parts.append(f"<div><strong>Why rule {_e(other['id'])} v{_e(other['version'])} also gives it</strong>"
                     f"{reasons}<div class=\"meta\">Its evidence: {_e(cited)}.</div></div>")
    if finding["evidence"]:
        parts.append("<div><strong>Evidence</strong>")
        for entry in finding["evidence"]:
            if entry.get("quote"):
                level = f" (level of evidence {_e(entry['level'])})" if entry.get("level") else ""
                parts.append(f"<blockquote>“{_e(entry['quote'])}”{level}<br><span class=\"meta\">"
                             f"[{_e(entry['id'])}] {_e(entry['citation'])} (file seeds/{_e(entry['source'])}); "
                             f"{_e(entry['verification'])}</span></blockquote>")
            else:
                parts.append(f"<blockquote>{_e(entry['claim'])}<br><span class=\"meta\">[{_e(entry['id'])}] "
                             f"{_e(entry['citation'])}; citation {_e(entry['verification'])}</span></blockquote>")
        parts.append("</div>")
    else:
        parts.append('<div class="meta">Evidence: none cited (a safety or data-quality choice of this library).</div>')
    parts.append("</article>")
    return "".join(parts)


def _reasons_html(reasons: Iterable[Mapping[str, Any]], derived: Mapping[str, list[Mapping[str, Any]]],
                  seen: set[str]) -> str:
    items = []
    for reason in reasons:
        text = _e(reason_text(reason))
        name = reason.get("derived")
        if name and reason.get("holds") and name in derived and name not in seen:
            rule = derived[name][0]["rule"]
            sub = []
            for fact in derived[name]:
                label = (f"<div class=\"meta\">{_e(fact['reason']['text'])}:</div>"
                         if fact.get("reason") and len(derived[name]) > 1 else "")
                sub.append(label + _reasons_html(fact["because"], derived, seen | {name}))
            items.append(f"<li>{text} <span class=\"meta\">[derived by rule {_e(rule['id'])}], because:</span>"
                         + "".join(sub) + "</li>")
        else:
            items.append(f"<li>{text}</li>")
    return '<ul class="why">' + "".join(items) + "</ul>"


def _derived_section(document: Mapping[str, Any]) -> str:
    if not document["derived_facts"]:
        return ""
    rows = []
    for fact in document["derived_facts"]:
        reason = f" ({fact['reason']['text']})" if fact.get("reason") else ""
        why = "; ".join(reason_text(r) for r in fact["because"])
        rows.append(f"<tr><td class=\"mono\">{_e(fact['name'])}{_e(reason)}</td><td>{_e(fact['rule']['id'])} "
                    f"v{_e(fact['rule']['version'])}</td><td>{_e(why)}</td></tr>")
    return ("<section><h2>Derived facts</h2><table><thead><tr><th>fact</th><th>rule</th><th>because</th></tr>"
            "</thead><tbody>" + "".join(rows) + "</tbody></table></section>")


def _provenance_section(document: Mapping[str, Any], audit_record: Mapping[str, Any] | None) -> str:
    p = document["provenance"]
    rows = [
        ("rulebook", f"{p['rulebook']['name']} {p['rulebook']['version']}"),
        ("rulebook sha256 (rules, parameters, evidence)", p["rulebook"]["sha256"]),
        *((f"parameter {k}", _value(v)) for k, v in p["parameters"].items()),
        *((f"engine: {k}", v) for k, v in p["engine"].items()),
        ("input sha256 (canonical input)", p["input_sha256"]),
        ("evaluated at", p["evaluated_at"]),
    ]
    if audit_record:
        rows += [("audit record", f"#{audit_record['seq']} id {audit_record['id']}"),
                 ("recorded at", audit_record["recorded_at"]),
                 ("record hash (chain)", audit_record["hash"]),
                 ("previous record hash", audit_record["prev_hash"])]
    return ('<section id="provenance"><h2>Provenance</h2><table><tbody>'
            + "".join(f"<tr><th>{_e(k)}</th><td class=\"mono\">{_e(v)}</td></tr>" for k, v in rows)
            + "</tbody></table></section>")


# --- the derivation graph -----------------------------------------------------------------------------------------


@dataclass
class _Node:
    key: str
    label: str
    style: str  # a GRAPH_COLORS key
    tooltip: str
    layer: int = 0
    order: float = 0.0
    dashed: bool = False
    parents: list[str] = field(default_factory=list)


_CHAR_WIDTH = 7.2  # 12px monospace
_NODE_HEIGHT = 24
_ROW_GAP = 10
_LAYER_GAP = 90
_MARGIN = 12


def derivation_svg(document: Mapping[str, Any]) -> str:
    """The derivation graph as an inline SVG: input facts (left) -> derived facts (by depth) -> findings (right)."""
    nodes: dict[str, _Node] = {}
    edges: list[tuple[str, str, str]] = []  # (from, to, style: normal | absent | suppress)

    def source(reason: Mapping[str, Any]) -> tuple[str, str]:
        if "fact" in reason:
            key = f"fact:{reason['fact']}"
            if key not in nodes:
                label = f"{reason['fact']} = {_value(reason['actual'])}"
                nodes[key] = _Node(key, label, "fact", label)
            return key, "normal"
        name = reason["derived"]
        if reason.get("holds"):
            key = f"derived:{name}"
            nodes.setdefault(key, _Node(key, name, "derived", f"{name} holds"))
            return key, "normal"
        key = f"absent:{name}"
        nodes.setdefault(key, _Node(key, f"not {name}", "absent", f"{name} had to be absent", dashed=True))
        return key, "absent"

    def connect(reasons: Iterable[Mapping[str, Any]], target: str) -> None:
        for reason in reasons:
            key, style = source(reason)
            if (key, target, style) not in edges:
                edges.append((key, target, style))

    for fact in document["derived_facts"]:
        key = f"derived:{fact['name']}"
        tip = f"{fact['name']} (rule {fact['rule']['id']})"
        nodes.setdefault(key, _Node(key, fact["name"], "derived", tip))
        connect(fact["because"], key)
    for part, style in (("recommendations", "recommendation"), ("risk_flags", "risk")):
        for finding in document[part]:
            key = f"finding:{finding['code']}"
            nodes[key] = _Node(key, finding["code"], style, f"{finding['title']} (rule {finding['rule']['id']})")
            connect(finding["because"], key)
            for other in finding.get("also_from", ()):
                connect(other["because"], key)
    for item in document["suppressed"]:
        finding = item["finding"]
        key = f"withheld:{finding['code']}"
        nodes[key] = _Node(key, f"{finding['code']} (withheld)", "withheld",
                           f"{finding['title']}: withheld because {item['by']['fact']} holds", dashed=True)
        connect(finding["because"], key)
        suppressor = f"derived:{item['by']['fact']}"
        nodes.setdefault(suppressor, _Node(suppressor, item["by"]["fact"], "derived", item["by"]["fact"]))
        edges.append((suppressor, key, "suppress"))
    if not nodes:
        return _empty_svg()
    _layout(nodes, edges)
    return _draw(nodes, edges)


def _layout(nodes: dict[str, _Node], edges: list[tuple[str, str, str]]) -> None:
    for source, target, _ in edges:
        nodes[target].parents.append(source)
    derived = [n for n in nodes.values() if n.style in ("derived", "absent")]
    depth: dict[str, int] = {}

    def layer_of(key: str, visiting: frozenset[str] = frozenset()) -> int:
        node = nodes[key]
        if node.style == "fact":
            return 0
        if key in depth:
            return depth[key]
        if key in visiting:  # cannot happen with a stratified rulebook; never loop on a malformed document
            return 1
        parents = [p for p in node.parents if nodes[p].style != "fact"]
        depth[key] = 1 + max((layer_of(p, visiting | {key}) for p in parents), default=0)
        return depth[key]

    for node in derived:
        node.layer = layer_of(node.key)
    last = max((n.layer for n in derived), default=0) + 1
    for node in nodes.values():
        if node.style not in ("fact", "derived", "absent"):
            node.layer = last
    # Order within a layer: facts by path; each later layer by the mean position of its parents (barycenter).
    layers = _layers(nodes)
    for index, node in enumerate(sorted(layers.get(0, []), key=lambda n: n.label)):
        node.order = index
    for layer in sorted(layers)[1:]:
        for node in layers[layer]:
            positions = [nodes[p].order for p in node.parents if nodes[p].layer < layer]
            node.order = sum(positions) / len(positions) if positions else -1.0
        for index, node in enumerate(sorted(layers[layer], key=lambda n: (n.order, n.label))):
            node.order = index


def _layers(nodes: Mapping[str, _Node]) -> dict[int, list[_Node]]:
    layers: dict[int, list[_Node]] = {}
    for node in nodes.values():
        layers.setdefault(node.layer, []).append(node)
    return layers


def _draw(nodes: Mapping[str, _Node], edges: Sequence[tuple[str, str, str]]) -> str:
    layers = _layers(nodes)
    widths = {layer: max(len(n.label) for n in members) * _CHAR_WIDTH + 20 for layer, members in layers.items()}
    xs: dict[int, float] = {}
    x = float(_MARGIN)
    for layer in sorted(layers):
        xs[layer] = x
        x += widths[layer] + _LAYER_GAP
    width = x - _LAYER_GAP + _MARGIN
    tallest = max(len(members) for members in layers.values())
    height = _MARGIN * 2 + tallest * (_NODE_HEIGHT + _ROW_GAP) - _ROW_GAP
    boxes: dict[str, tuple[float, float, float]] = {}  # key -> (x, y, width)
    for layer, members in layers.items():
        column_height = len(members) * (_NODE_HEIGHT + _ROW_GAP) - _ROW_GAP
        top = (height - column_height) / 2
        for node in sorted(members, key=lambda n: n.order):
            boxes[node.key] = (xs[layer], top + node.order * (_NODE_HEIGHT + _ROW_GAP), widths[layer])
    out = [(f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" '
            f'height="{height:.0f}" role="img" aria-label="derivation graph: input facts, derived facts, findings" '
            'font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="12">'),
           "<defs>" + "".join(
               f'<marker id="arrow-{name}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
               f'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="{color}"/></marker>'
               for name, color in (("normal", "#64748b"), ("absent", "#b45309"), ("suppress", "#b91c1c")))
           + "</defs>"]
    for source, target, style in edges:
        sx, sy, sw = boxes[source]
        tx, ty, _ = boxes[target]
        x1, y1, x2, y2 = sx + sw, sy + _NODE_HEIGHT / 2, tx, ty + _NODE_HEIGHT / 2
        bend = max((x2 - x1) / 2, 30)
        color = {"normal": "#64748b", "absent": "#b45309", "suppress": "#b91c1c"}[style]
        dash = ' stroke-dasharray="5 4"' if style != "normal" else ""
        out.append(f'<path d="M {x1:.1f} {y1:.1f} C {x1 + bend:.1f} {y1:.1f}, {x2 - bend:.1f} {y2:.1f}, {x2:.1f} '
                   f'{y2:.1f}" fill="none" stroke="{color}" stroke-width="1.3"{dash} '
                   f'marker-end="url(#arrow-{style})"/>')
    for key, node in nodes.items():
        bx, by, bw = boxes[key]
        dash = ' stroke-dasharray="4 3"' if node.dashed else ""
        out.append(f'<g><title>{_e(node.tooltip)}</title><rect x="{bx:.1f}" y="{by:.1f}" width="{bw:.1f}" '
                   f'height="{_NODE_HEIGHT}" rx="5" fill="{GRAPH_COLORS[node.style]}" stroke="#475569"{dash}/>'
                   f'<text x="{bx + 10:.1f}" y="{by + _NODE_HEIGHT / 2 + 4:.1f}" fill="#111827">{_e(node.label)}'
                   "</text></g>")
    out.append("</svg>")
    return "".join(out)


def _empty_svg() -> str:
    return ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 400 40" width="400" height="40">'
            '<text x="10" y="25" font-size="13">No rule fired.</text></svg>')


# --- helpers ------------------------------------------------------------------------------------------------------


def _used_facts(document: Mapping[str, Any]) -> dict[str, Any]:
    used: dict[str, Any] = {}

    def take(reasons: Iterable[Mapping[str, Any]]) -> None:
        for reason in reasons:
            if "fact" in reason:
                used[reason["fact"]] = reason["actual"]

    for finding in [*document["recommendations"], *document["risk_flags"],
                    *(s["finding"] for s in document["suppressed"])]:
        take(finding["because"])
        for other in finding.get("also_from", ()):
            take(other["because"])
    for fact in document["derived_facts"]:
        take(fact["because"])
    return used


def _flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            items.extend(_flatten(value, path + "."))
        else:
            items.append((path, value))
    return items


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)
