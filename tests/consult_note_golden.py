"""The frozen consult notes (tests/test_consult_note_golden.py): what ``imt-cds evaluate`` and ``audit show`` print.

    python tests/consult_note_golden.py --write   # regenerate tests/fixtures/consult-notes/golden.json.gz (deliberate)

Each case keeps its input beside the note: the assessment document, the canonical input facts (or none, as an audit
record made without the input) and the FHIR sources of the facts (or none). The test renders the note from the stored
document through ``audit.recorded`` (what ``audit show`` does), so the file tests the renderer alone: a change of the
rulebook, the engine or the FHIR reader does not touch it. Cases: the example patients (with and without sources),
the patients of examples/patients.ndjson, the shipped FHIR example as ``evaluate --fhir`` reads it, seeded random
patients, and documents edited to reach the renderer's other branches (no patient id, no stored input, a diagnosis
read from text or attested, a finding without evidence or reasons, reasons of a derived fact with several
derivations, a finding two rules produce, a derived fact among its own reasons, words long enough to wrap).

Regenerate only when a note is meant to change, read the changed notes, and say so in the commit.
"""

from __future__ import annotations

import copy
import json
import random
import sys
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
USAGE = ("python tests/consult_note_golden.py --write   "
         "(regenerates tests/fixtures/consult-notes/golden.json.gz: a deliberate act)")
GOLDEN = ROOT / "tests" / "fixtures" / "consult-notes" / "golden.json.gz"
JSON_INDENT = 1  # how the file was first written: a rewrite of unchanged cases changes no byte
sys.path.insert(0, str(ROOT / "tests"))

import golden_files  # noqa: E402

EVALUATED_AT = datetime(2026, 6, 1, 9, 30, tzinfo=timezone.utc)


def build_cases() -> list[dict[str, Any]]:
    from strategies import random_patient

    from imt_cds import Engine, parse_facts
    from imt_cds.core.validation import canonical_json
    from imt_cds.fhir.reader import facts_from_bundle

    engine = Engine()
    rng = random.Random(20261205)
    cases: list[dict[str, Any]] = []

    def add(name: str, facts: Any, sources: dict[str, list[str]] | None = None,
            diagnosis: dict[str, Any] | None = None) -> None:
        assessment = engine.evaluate(facts, evaluated_at=EVALUATED_AT, diagnosis=diagnosis)
        cases.append({"name": name, "document": assessment.to_dict(),
                      "canonical_input": canonical_json(parse_facts(facts)).decode(), "sources": sources})

    for index, path in enumerate(sorted((ROOT / "examples").glob("*.json"))):
        facts = json.loads(path.read_text())
        add(f"example {path.name}", facts)
        if index % 2 == 0:  # as if read from a chart: every other leaf with a resource or two
            paths = _leaf_paths(facts)
            add(f"example {path.name}, with sources", facts,
                {p: [f"Observation/{p.replace('.', '-')}"] + (["Condition/c1"] if i % 3 == 0 else [])
                 for i, p in enumerate(paths[::2])})
    for line_no, line in enumerate((ROOT / "examples" / "patients.ndjson").read_text().splitlines()):
        if line.strip():
            add(f"patients.ndjson line {line_no + 1}", json.loads(line))
    chart = json.loads((ROOT / "examples" / "fhir" / "alk-lung-distant-bundle.json").read_text())
    read = facts_from_bundle(chart, date(2026, 6, 1), terminology=engine.rulebook.terminology)
    assert read.facts is not None and read.eligibility.diagnosis is not None
    add("shipped FHIR example (evaluate --fhir)", read.facts, {k: list(v) for k, v in read.sources.items()},
        read.eligibility.diagnosis.to_dict())
    for index in range(24):
        add(f"random patient {index}", random_patient(rng))
    cases += _edited_cases(cases)
    for case in cases:
        case["note"] = render(case)
    return cases


def _leaf_paths(facts: Any, prefix: str = "") -> list[str]:
    if isinstance(facts, dict):
        return [p for k, v in facts.items() for p in _leaf_paths(v, f"{prefix}{k}.")]
    return [prefix[:-1]]


def _edited_cases(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Documents edited to reach the renderer's branches no evaluation of the shipped rulebook reaches."""
    fhir = next(c for c in cases if c["name"].startswith("shipped FHIR example"))
    edited = []
    for basis in ("text", "attested", "unheard-of"):
        case = copy.deepcopy(fhir)
        case["name"] = f"diagnosis basis {basis}"
        case["document"]["provenance"]["diagnosis"]["basis"] = basis
        if basis == "attested":
            case["document"]["provenance"]["diagnosis"]["sources"] = []
        edited.append(case)
    base = next(c for c in cases if c["document"]["recommendations"] and c["document"]["derived_facts"])
    case = copy.deepcopy(base)
    case["name"] = f"no patient id, no stored input ({base['name']})"
    case["document"]["patient_id"] = None
    case["canonical_input"] = None
    edited.append(case)
    case = copy.deepcopy(base)
    case["name"] = f"a finding without evidence or reasons, one with long words ({base['name']})"
    first = case["document"]["recommendations"][0]
    first["evidence"] = []
    first["because"] = []
    first["summary"] = " ".join(["a-very-long-hyphenated-clinical-word-that-must-not-break"] * 4)
    edited.append(case)
    case = copy.deepcopy(fhir)
    case["name"] = "two rules behind one finding, a diagnosis from two Conditions, long titles and engine versions"
    document = case["document"]
    document["provenance"]["diagnosis"]["sources"] = ["Condition/imt-primary", "Condition/imt-review"]
    document["provenance"]["engine"] = {**document["provenance"]["engine"],
                                        "build": "a long build description " * 6}
    finding = document["recommendations"][0]
    finding["title"] = "A title long enough to be wrapped over two lines of the note " * 2
    finding["also_from"] = [{"id": "R99", "version": "2.0.0", "evidence": [], "because": finding["because"]}]
    edited.append(case)
    case = copy.deepcopy(fhir)
    case["name"] = "a derived fact among its own reasons (the renderer never loops)"
    derived = case["document"]["derived_facts"][0]
    derived["because"] = [*derived["because"], {"derived": derived["name"], "holds": True}]
    edited.append(case)
    case = copy.deepcopy(base)
    case["name"] = f"an infant's age to the hundredth of a year ({base['name']})"
    facts = json.loads(case["canonical_input"])
    facts["age_years"] = 0.8333  # ten months
    case["canonical_input"] = json.dumps(facts)
    edited.append(case)
    several = next((c for c in cases if len({d["name"] for d in c["document"]["derived_facts"]})
                    < len(c["document"]["derived_facts"])), None)
    if several is not None:  # a derived fact with two derivations (two reasons of D04, say)
        case = copy.deepcopy(several)
        case["name"] = f"several derivations of one fact ({several['name']})"
        edited.append(case)
    return edited


def render(case: dict[str, Any]) -> str:
    from imt_cds.audit.recorded import recorded_assessment
    from imt_cds.render.consult_note import render_consult_note

    canonical = case["canonical_input"]
    assessment = recorded_assessment(case["document"], canonical.encode() if canonical is not None else None)
    return render_consult_note(assessment, case["sources"])


def load_cases() -> list[dict[str, Any]]:
    return golden_files.load(GOLDEN)  # type: ignore[no-any-return]


def main(argv: list[str]) -> int:
    return golden_files.write_command(argv, usage=USAGE, path=GOLDEN, build=build_cases, indent=JSON_INDENT,
                                      describe=lambda cases: f"{len(cases)} consult notes")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
