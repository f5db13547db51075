"""The frozen texts of ``imt-cds explain`` (tests/test_explain_mutants.py): each explanation's JSON with the text it
renders to.

    python tests/explain_golden.py --write   # regenerate tests/fixtures/explain-golden/golden.json.gz (deliberate)

The text is rendered from the stored JSON alone (``Explanation.to_text``), so the file tests the text renderer: a
change of the rulebook or the engine does not touch it. Cases: every finding code of the shipped rulebook (why when
present, why not when absent) for four example patients (surgery first, ALK-positive unresectable, a contradictory
record, a mostly missing record), every finding of each example patient, and a record whose contradiction blocks
targeted therapy (a derived fact that must be absent holds). Regenerate only when the text is meant
to change, read the changed texts, and say so in the commit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import golden_files

ROOT = Path(__file__).resolve().parents[1]
USAGE = ("python tests/explain_golden.py --write   "
         "(regenerates tests/fixtures/explain-golden/golden.json.gz: a deliberate act)")
GOLDEN = ROOT / "tests" / "fixtures" / "explain-golden" / "golden.json.gz"
JSON_INDENT = 1  # how the file was first written: a rewrite of unchanged cases changes no byte
FULL = ("01_surgery_first_lung.json", "02_alk_positive_unresectable.json", "05_contradictory_record.json",
        "06_mostly_missing.json")


def build_cases() -> list[dict[str, Any]]:
    from imt_cds import Engine
    from imt_cds.authoring.explain import explain

    engine = Engine()
    cases = []
    for path in sorted((ROOT / "examples").glob("*.json")):
        facts = json.loads(path.read_text())
        codes: list[str | None] = [None]
        if path.name in FULL:
            codes += sorted(engine.rulebook.finding_codes)
        for code in codes:
            explanation = explain(engine, facts, code)
            cases.append({"name": f"{path.name} {code or 'every finding'}", "explanation": explanation.to_dict(),
                          "text": explanation.to_text()})
    # a derived fact that must be absent holds (DATA_BLOCK from a contradiction): the why-not shows its derivation
    blocked = {"patient_id": "EX-BLOCKED", "age_years": 8, "tumor": {"resectability": "unresectable"},
               "molecular": {"alk": {"status": "positive"}},
               "history": {"margin_status": "R1"}}
    for code in ("REC_CRIZOTINIB_ALK", "REC_UPFRONT_SURGICAL_RESECTION", "REC_CLINICAL_TRIAL_CONSIDER"):
        explanation = explain(engine, blocked, code)
        cases.append({"name": f"a blocked record {code}", "explanation": explanation.to_dict(),
                      "text": explanation.to_text()})
    return cases


def render(case: dict[str, Any]) -> str:
    from imt_cds.authoring.explain import Explanation

    data = case["explanation"]
    return Explanation(data["patient_id"], tuple(data["why"]), tuple(data["why_not"]), data["code"]).to_text()


def load_cases() -> list[dict[str, Any]]:
    return golden_files.load(GOLDEN)  # type: ignore[no-any-return]


def main(argv: list[str]) -> int:
    return golden_files.write_command(argv, usage=USAGE, path=GOLDEN, build=build_cases, indent=JSON_INDENT,
                                      describe=lambda cases: f"{len(cases)} explanations")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
