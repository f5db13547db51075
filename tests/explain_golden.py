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

import gzip
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "fixtures" / "explain-golden" / "golden.json.gz"
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
    return json.loads(gzip.decompress(GOLDEN.read_bytes()))  # type: ignore[no-any-return]


def main(argv: list[str]) -> int:
    if argv != ["--write"]:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    cases = build_cases()
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN.write_bytes(gzip.compress(json.dumps(cases, ensure_ascii=False, indent=1).encode(), mtime=0))
    print(f"wrote {len(cases)} explanations to {GOLDEN.relative_to(ROOT)} ({GOLDEN.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "tests"))
    sys.exit(main(sys.argv[1:]))
