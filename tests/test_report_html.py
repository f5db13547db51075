"""The HTML rationale report: self-contained (nothing to fetch), complete (facts, reasons, quotes, withheld findings,
provenance), and its derivation graph really drawn: a real headless Chromium renders it to PNG and the picture is
looked for in the pixels."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from audit_support import chromium_screenshot
from PIL import Image

from imt_cds import Engine
from imt_cds.audit import open_store
from imt_cds.render.report_html import GRAPH_COLORS, render_report_html

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("imt-cds")
CONTRADICTORY = ROOT / "examples" / "05_contradictory_record.json"


def run(*args):
    return subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    result = run("report", CONTRADICTORY, "--html", out)
    assert result.returncode == 0, result.stderr
    return out


def test_the_report_is_self_contained(report):
    page = report.read_text()
    assert page.startswith("<!DOCTYPE html>")
    # (url(#id) is an in-page reference: the arrow heads of the graph)
    assert not re.search(r"<script|<link|<img|<iframe|@import|url\((?!#)", page, flags=re.IGNORECASE)
    assert not re.search(r"\b(src|href)\s*=", page, flags=re.IGNORECASE)
    assert set(re.findall(r"https?://[^\s\"'<>]+", page)) <= {"http://www.w3.org/2000/svg"}  # the SVG namespace


def test_the_report_shows_facts_reasons_quotes_withheld_findings_and_provenance(report, engine):
    page = html.unescape(report.read_text())
    assessment = engine.evaluate(json.loads(CONTRADICTORY.read_text()))
    for finding in assessment.findings:
        assert finding.code in page and finding.title in page and finding.summary in page
        for entry in finding.evidence:
            assert (entry.quote or entry.claim) in page
    (withheld,) = assessment.suppressed
    assert "Withheld" in page and withheld.finding.code in page and withheld.reasons[0] in page
    for derived in assessment.derived_facts:
        assert derived.name in page
    p = assessment.provenance
    assert p.rulebook_sha256 in page and p.input_sha256 in page and "size_risk_threshold_cm" in page
    assert "molecular.alk.fusion_partner" in page and "EML4" in page  # the input facts
    assert "not a prescription" in page


def test_the_derivation_graph_goes_from_input_facts_through_derived_facts_to_findings(engine):
    assessment = engine.evaluate(json.loads(CONTRADICTORY.read_text()))
    page = render_report_html(assessment.to_dict())
    svg = page[page.index("<svg"):page.index("</svg>")]
    assert "molecular.alk.status = negative" in svg  # an input fact
    assert ">CONTRADICTION<" in svg and ">DATA_BLOCK<" in svg  # derived facts
    assert ">REQUEST_DATA_RECONCILIATION<" in svg and "REC_UPFRONT_SURGICAL_RESECTION (withheld)" in svg
    assert svg.count("<path d=\"M") >= 10  # edges


def test_a_record_without_its_input_still_shows_the_facts_the_rules_used(tmp_path, rulebook):
    db = tmp_path / "audit.db"
    with open_store(db, store_input=False) as store:
        Engine(rulebook, audit=store).evaluate(json.loads(CONTRADICTORY.read_text()))
    out = tmp_path / "report.html"
    result = run("report", "--audit-id", "last", "--db", db, "--html", out)
    assert result.returncode == 0, result.stderr
    page = html.unescape(out.read_text())
    assert "keeps only the input's sha256" in page and "molecular.alk.fusion_partner" in page
    assert "audit record #1" in page


def test_chromium_renders_the_report_with_its_derivation_graph(report, tmp_path):
    png = tmp_path / "report.png"
    chromium_screenshot(report, png, 1400, 1800)
    image = Image.open(png).convert("RGB")
    assert image.size == (1400, 1800)
    pixels = image.load()
    found: dict[str, list[tuple[int, int]]] = {}
    wanted = {name: tuple(int(GRAPH_COLORS[name][i:i + 2], 16) for i in (1, 3, 5))
              for name in ("fact", "derived", "recommendation", "risk", "withheld")}
    for y in range(0, 1800, 2):
        for x in range(0, 1400, 2):
            rgb = pixels[x, y]
            for name, color in wanted.items():
                if all(abs(a - b) <= 3 for a, b in zip(rgb, color, strict=True)):
                    found.setdefault(name, []).append((x, y))
    # Every kind of node is drawn, as boxes of real size (sampled every second pixel).
    for name in wanted:
        assert len(found.get(name, ())) > 200, (name, len(found.get(name, ())))
    # The nodes form a picture of the graph's shape: facts left of derived facts, derived facts left of findings.
    mean_x = {name: sum(x for x, _ in points) / len(points) for name, points in found.items()}
    assert mean_x["fact"] < mean_x["derived"] < mean_x["recommendation"]
    xs = [x for points in found.values() for x, _ in points]
    ys = [y for points in found.values() for _, y in points]
    assert max(xs) - min(xs) > 800 and max(ys) - min(ys) > 200
    # Edges: the slate stroke of the arrows is drawn between the columns.
    edge = (0x64, 0x74, 0x8B)
    between = sum(1 for y in range(min(ys), max(ys), 2) for x in range(int(mean_x["fact"]) + 150,
                                                                         int(mean_x["derived"]) - 40, 2)
                  if all(abs(a - b) <= 40 for a, b in zip(pixels[x, y], edge, strict=True)))
    assert between > 50
