"""The frozen rationale reports (tests/test_report_html_mutants.py): whole pages, as they were reviewed.

    python tests/report_html_golden.py --write   # regenerate tests/fixtures/report-html/golden.json.gz (deliberate)

Each case keeps what the page is made from beside the page: the assessment document, the input facts (or none, as a
record kept without its input) and the audit record's chain reference (or none). The test renders each page from the
stored parts, so the file tests the renderer alone: a change of the rulebook or the engine does not touch it. Cases:
a small document made to reach every branch of the renderer (below), with and without its input and record, and the
example patients as `imt-cds report` renders them.

Regenerate only when a page is meant to change, read the changed pages, and say so in the commit.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
USAGE = ("python tests/report_html_golden.py --write   "
         "(regenerates tests/fixtures/report-html/golden.json.gz: a deliberate act)")
GOLDEN = ROOT / "tests" / "fixtures" / "report-html" / "golden.json.gz"
JSON_INDENT = 1
sys.path.insert(0, str(ROOT / "tests"))

import golden_files  # noqa: E402

EVALUATED_AT = datetime(2026, 6, 1, 9, 30, tzinfo=timezone.utc)

# --- a document made to reach every branch: reasons two levels deep, a derived fact reached two ways, one required
# absent, a finding for every patient, one merged from two rules, evidence with and without a quote or a level and
# none at all, a withheld finding, one finding of each kind ---------------------------------------------------------

FACT_SIZE = {"fact": "tumor.size_cm", "expected": ">= 5", "actual": 6.5, "parameter": "size_risk_threshold_cm"}
FACT_SITE = {"fact": "tumor.site", "expected": "= thoracic", "actual": "thoracic"}
FACT_AGE = {"fact": "age_years", "expected": "!= null", "actual": 9}
LARGE = {"derived": "LARGE", "holds": True, "reasons": ["C1", "C2"]}
ADVANCED = {"derived": "ADVANCED", "holds": True}
NO_CONFLICT = {"derived": "CONFLICT", "holds": False}
QUOTED = {"id": "SEED:s1", "citation": "Author A. A paper. PMID 12345678.", "quote": "A quote.", "claim": "A quote.",
          "level": "3iiA", "source": "001_seed.txt", "verification": "verbatim: quote found"}
CLAIMED = {"id": "EXT-1", "citation": "Author B. Another. doi:10.1000/xyz", "quote": None,
           "claim": "A claim without a quote.", "level": None, "source": None, "verification": "verified in PubMed"}


def finding(code: str, kind: str, because: list, evidence: list, **more) -> dict:
    return {"code": code, "kind": kind, "title": f"Title of {code}", "summary": f"Summary of {code}.",
            "indicator": "info", "strength": "NARR", "rule": {"id": f"R-{code}", "version": "1.2.0"},
            "evidence": evidence, "because": because, **more}


def document() -> dict:
    return {
        "schema": "imt-cds/assessment/v1", "patient_id": "pt-1",
        "recommendations": [
            finding("REC_A", "recommendation", [ADVANCED, NO_CONFLICT], [QUOTED, CLAIMED],
                    also_from=[{"id": "R-OTHER", "version": "2.0.0", "evidence": ["SEED:s1", "EXT-1"],
                               "because": [FACT_AGE]}]),
            finding("REQ_B", "data_request", [], []),
        ],
        "risk_flags": [finding("RISK_C", "risk_flag", [FACT_SITE], [CLAIMED]),
                       finding("FLAG_D", "flag", [LARGE], [])],
        "derived_facts": [
            {"name": "LARGE", "rule": {"id": "D1", "version": "1.0.0"}, "because": [FACT_SIZE],
             "reason": {"id": "C1", "text": "measured large"}},
            {"name": "LARGE", "rule": {"id": "D1", "version": "1.0.0"}, "because": [FACT_SITE],
             "reason": {"id": "C2", "text": "site counts as large"}},
            {"name": "ADVANCED", "rule": {"id": "D2", "version": "1.1.0"}, "because": [LARGE]},
        ],
        "suppressed": [{"finding": finding("REC_E", "recommendation", [FACT_SITE], [QUOTED]),
                        "by": {"id": "S1", "version": "1.0.0", "fact": "LARGE"}, "reason": "held for now",
                        "reasons": ["held for now"], "suppression_rule": {"id": "S1", "version": "1.0.0"}}],
        "trace": [],
        "provenance": {"rulebook": {"name": "imt", "version": "9.9", "sha256": "ab" * 32},
                       "parameters": {"size_risk_threshold_cm": 5},
                       "engine": {"durable_rules": "2.0.28"}, "input_sha256": "cd" * 32,
                       "evaluated_at": "2026-12-05T10:00:00Z", "diagnosis": None},
    }


INPUT = {"patient_id": "pt-1", "age_years": 9, "tumor": {"site": "thoracic", "size_cm": 6.5, "margin": None}}
RECORD = {"id": "rec-1", "seq": 7, "hash": "ef" * 32, "prev_hash": "01" * 32, "recorded_at": "2026-12-05T10:00:01Z"}




def build_cases() -> list[dict[str, Any]]:
    from imt_cds import Engine

    cases = [{"name": "every-branch", "document": document(), "input_facts": INPUT, "audit_record": RECORD},
             {"name": "every-branch-without-input-or-record", "document": document(), "input_facts": None,
              "audit_record": None}]
    engine = Engine()
    for path in sorted((ROOT / "examples").glob("0*.json")):
        assessment = engine.evaluate(json.loads(path.read_text()), evaluated_at=EVALUATED_AT)
        cases.append({"name": path.stem, "document": assessment.to_dict(),
                      "input_facts": json.loads(assessment.canonical_input_json()), "audit_record": None})
    for case in cases:
        case["page"] = render(case)
    return cases


def render(case: dict[str, Any]) -> str:
    from imt_cds.render.report_html import render_report_html

    return render_report_html(case["document"], input_facts=case["input_facts"], audit_record=case["audit_record"])


def load_cases() -> list[dict[str, Any]]:
    return golden_files.load(GOLDEN)  # type: ignore[no-any-return]


def main(argv: list[str]) -> int:
    return golden_files.write_command(argv, usage=USAGE, path=GOLDEN, build=build_cases, indent=JSON_INDENT,
                                      describe=lambda cases: f"{len(cases)} reports")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
