"""The service's cards are made from an assessment's rationale (``Assessment.rationale()``, ``cards_of_assessment``)
instead of its document: they must be the cards of its document, byte for byte, for every patient.

The document's renderer (``assessment_cards``) is the reference: it is what the frozen cards of
tests/test_cards_golden.py hold. Here both render the same assessments, generated (both sides of every threshold of
the catalogue), with facts read from some resources, from none, or left unknown by a conflict, and the rationale
itself is checked against the document it stands for.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))

from strategies import patients, random_patient  # noqa: E402

from imt_cds import Engine, parse_facts  # noqa: E402
from imt_cds.core.assessment import Rationale  # noqa: E402
from imt_cds.core.compiler import ReasonTemplate  # noqa: E402
from imt_cds.core.conditions import Atom, DerivedTest  # noqa: E402
from imt_cds.render.cards import _fact_sentence, _TemplateReasons, assessment_cards, cards_of_assessment  # noqa: E402

PATHS = ("age_years", "tumor.site", "tumor.size_cm", "molecular.alk.status", "tumor.resectability",
         "history.progressed_on_alk_inhibitor")


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine()


def chart_of(rng: random.Random) -> dict:
    """Where the facts came from, as the FHIR reader says it: some from resources, some unknown by a conflict or an
    unusable resource (the cards say which), the rest from nothing."""
    sources = {path: [f"Observation/o-{rng.randint(1, 3)}", *(["Condition/c-1"] if rng.random() < 0.3 else [])]
               for path in PATHS if rng.random() < 0.5}
    problems = [{"where": f"Observation/x-{n}", "message": "unusable", "path": path,
                 "kind": rng.choice(["conflict", "skipped", "superseded", "not_allowed"])}
                for n, path in enumerate(PATHS) if path not in sources and rng.random() < 0.3]
    return {"sources": sources, "problems": problems}


def both_renderings(assessment, chart: dict, evaluation_id: str = "e-1") -> tuple[str, str]:
    options = {"evaluation_id": evaluation_id, "public_url": "https://cds.example.org", **chart}
    fast = cards_of_assessment(assessment, **options)
    reference = assessment_cards(assessment.to_card_dict(), **options)
    return json.dumps(fast, ensure_ascii=False), json.dumps(reference, ensure_ascii=False)


def test_the_cards_of_generated_patients_are_their_documents_cards(engine):
    rng = random.Random(20261205)
    made = {"rationale": 0, "document": 0, "held reasons": 0}
    for number in range(1500):
        assessment = engine.evaluate(parse_facts(random_patient(rng)))
        rationale = assessment.rationale()
        made["document" if rationale is None else "rationale"] += 1
        if rationale is not None and any(rationale.held(name) for name in rationale.derived):
            made["held reasons"] += 1
        fast, reference = both_renderings(assessment, chart_of(rng), f"e-{number}")
        assert fast == reference, number
    # Both ways were taken, and a multi-reason fact (CONTRADICTION) was written from a rationale.
    assert made["rationale"] > 300 and made["document"] > 300 and made["held reasons"] > 10, made


@settings(max_examples=300, deadline=None)
@given(patient=patients(), seed=st.integers(0, 2**32))
def test_the_cards_of_any_patient_are_its_documents_cards(engine, patient, seed):
    fast, reference = both_renderings(engine.evaluate(parse_facts(patient)), chart_of(random.Random(seed)))
    assert fast == reference


def test_the_example_patients_cards_are_their_documents_cards(engine):
    examples = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.json"))
    assert len(examples) >= 8
    for path in examples:
        fast, reference = both_renderings(engine.evaluate(json.loads(path.read_text())), {"sources": {}})
        assert fast == reference, path.name


def reasons_as_the_document_writes_them(rationale: Rationale, reasons: tuple[ReasonTemplate, ...]) -> list[dict]:
    written = []
    for template in reasons:
        literal = template.literal
        if isinstance(literal, Atom):
            reason = {"fact": literal.path, "expected": template.expected,
                      "actual": orjson.loads(rationale.value_json(literal.path))}
            if template.parameter:
                reason["parameter"] = template.parameter
        else:
            reason = {"derived": literal.name, "holds": literal.present}
            if literal.present and rationale.held(literal.name):
                reason["reasons"] = list(rationale.held(literal.name))
        written.append(reason)
    return written


def test_the_rationale_says_what_the_document_says(engine):
    rng = random.Random(7)
    checked = 0
    for _ in range(800):
        assessment = engine.evaluate(parse_facts(random_patient(rng)))
        rationale = assessment.rationale()
        if rationale is None:
            continue
        document = assessment.to_dict()
        findings = [{**fields, "because": reasons_as_the_document_writes_them(rationale, reasons)}
                    for fields, reasons in rationale.findings]
        assert findings == document["recommendations"] + document["risk_flags"]
        derived = [{**fields, "because": reasons_as_the_document_writes_them(rationale, reasons)}
                   for entries in rationale.derived.values() for fields, reasons in entries]
        by_name = {}
        for fact in document["derived_facts"]:
            by_name.setdefault(fact["name"], []).append(fact)
        assert derived == [fact for facts in by_name.values() for fact in facts]
        assert list(rationale.derived) == list(by_name)
        checked += 1
    assert checked > 150


def test_without_suppressions_and_merged_findings_there_is_a_rationale(engine):
    """A suppressed finding (a contradictory record) and a finding from two rules (``also_from``) are in the
    document only: then there is no rationale, and the cards come from the document."""
    contradictory = {"tumor": {"resectability": "resectable", "distant_disease": False},  # (R0 margins, no surgery)
                     "history": {"margin_status": "R0"},
                     "molecular": {"alk": {"status": "negative", "fusion_partner": "EML4"}}}
    assessment = engine.evaluate(contradictory)
    assert assessment.to_dict()["suppressed"] and assessment.rationale() is None
    fast, reference = both_renderings(assessment, {"sources": {"age_years": ["Patient/p"]}})
    assert fast == reference
    plain = engine.evaluate({"age_years": 30, "molecular": {"alk": {"status": "positive"}}})
    assert not plain.to_dict()["suppressed"] and plain.rationale() is not None


def test_a_finding_from_two_rules_is_carded_from_the_document(tmp_path):
    from rulebook_copies import copy_rulebook, edit

    directory = copy_rulebook(tmp_path)  # (as tests/test_assessment.py makes two rules give one finding)
    edit(directory, "derived/D05-data-block.yaml", "    - {derived: MULTIPLE_KINASE_FUSIONS}\n", "")
    edit(directory, "derived/D05-data-block.yaml", "  any:\n    - {derived: CONTRADICTION}", "  any:\n"
         "    - {derived: CONTRADICTION}\n    - {fact: molecular.alk.fusion_partner, is: NEVERSEEN}")
    assessment = Engine(directory).evaluate({
        "age_years": 10, "history": {"progressed_on_alk_inhibitor": True},
        "molecular": {"alk": {"status": "positive"}, "ros1": {"status": "positive"}}})
    assert any(f.get("also_from") for f in assessment.to_dict()["risk_flags"])
    assert assessment.rationale() is None
    fast, reference = both_renderings(assessment, {"sources": {}})
    assert fast == reference
    # The card names the second rule too (R34, ROS1 positive), with its own reasons and the evidence it cites,
    # after the first rule's (R33, progression on an ALK inhibitor), as the HTML report and the consult note do.
    (card,) = [c for c in json.loads(fast) if c["source"]["topic"]["code"] == "FLAG_OFF_LABEL_INDICATION"]
    detail = card["detail"].split("\n")
    r34 = Engine(directory).rulebook.rule("R34")
    heading = detail.index(f"**Why rule R34 v{r34.version} also gives it:**")
    ros1 = "- `molecular.ros1.status` is **positive** (rule needs = positive) — no FHIR resource recorded it"
    assert detail[heading - 1] == "" and detail[heading + 1] == ros1 and ros1 not in detail[:heading]
    assert detail.index("**Why:**") < heading < detail.index("**Evidence:**")
    evidence = detail.index(f"Its evidence: {', '.join(r34.evidence)}.")
    assert heading < evidence < detail.index("**Evidence:**") and detail[evidence - 1] == ""
    assert card["detail"].count("also gives it") == 1
    # A second rule that applies to every patient and cites nothing (no rule of the shipped rulebook) says so.
    document = assessment.to_card_dict()
    (flag,) = [f for f in document["risk_flags"] if f.get("also_from")]
    flag["also_from"][0].update(because=[], evidence=[])
    (card,) = [c for c in assessment_cards(document, evaluation_id="e-1", sources={}, public_url="https://x")
               if c["source"]["topic"]["code"] == "FLAG_OFF_LABEL_INDICATION"]
    detail = card["detail"].split("\n")
    heading = detail.index(f"**Why rule R34 v{r34.version} also gives it:** applies to every patient.")
    assert detail[heading - 1:heading + 3] == ["", detail[heading], "", "Its evidence: none cited."]


def test_a_fact_reason_without_a_test_in_words_reads_as_in_the_document():
    """A reason whose test is not text (no rule of the shipped rulebook has one) is written the long way, as the
    document's renderer writes it."""
    rationale = Rationale((), {}, lambda path: "12.5", lambda name: ())
    for template in (ReasonTemplate(Atom("age_years", "=", None), None, None),
                     ReasonTemplate(Atom("age_years", ">", 1), None, "crizotinib_min_age_years"),
                     ReasonTemplate(Atom("age_years", ">", 1), "> 1", "")):  # (no parameter: none in the document)
        written = {"fact": "age_years", "expected": template.expected, "actual": 12.5}
        if template.parameter:
            written["parameter"] = template.parameter
        assert _TemplateReasons(rationale).fact_sentence(template) == _fact_sentence(written)
    sentence = _TemplateReasons(rationale).fact_sentence(ReasonTemplate(Atom("age_years", ">", 1), "> 1", None))
    assert sentence == "`age_years` is **12.5** (rule needs \\> 1)"
    derived = _TemplateReasons(Rationale((), {}, str, lambda name: ("C1", "C2")))
    assert derived.derived(ReasonTemplate(DerivedTest("CONTRADICTION"), None, None)) == (
        "CONTRADICTION", True, "CONTRADICTION holds: C1, C2")
    assert derived.derived(ReasonTemplate(DerivedTest("DATA_BLOCK", present=False), None, None)) == (
        "DATA_BLOCK", False, "DATA_BLOCK does not hold (required to be absent)")


def test_the_cards_of_an_assessment_with_a_rationale_write_no_document(engine):
    """The point of the rationale: a hook call's cards without the document written (its findings' JSON is made
    lazily, on the first call that needs it) or parsed."""
    assessment = engine.evaluate({"age_years": 30, "molecular": {"alk": {"status": "positive"}}})
    assert assessment.rationale() is not None
    cards_of_assessment(assessment, evaluation_id="e", sources={}, public_url="https://x")
    assert "_findings_json" not in vars(assessment)
    assessment.to_json()
    assert "_findings_json" in vars(assessment)  # (what the check above would see, had the document been written)


def test_a_rationale_is_remembered_by_what_fired_within_a_bound(monkeypatch):
    """``rationale()`` remembers the findings and derived facts of each sequence of fired rules (per engine, at most
    ``_RATIONALES_LIMIT`` sequences): two evaluations that fired the same rules share them; the cards stay right
    while the memo is emptied and filled again."""
    import imt_cds.core.assessment as assessment_module

    monkeypatch.setattr(assessment_module, "_RATIONALES_LIMIT", 3)
    engine = Engine(cache_size=0)  # (no memo of whole assessments: each evaluation is a new one)
    rng = random.Random(11)
    shared = 0
    for _ in range(150):
        facts = parse_facts(random_patient(rng))
        first, second = engine.evaluate(facts), engine.evaluate(facts)
        assert first is not second
        fired = tuple(name for name, _ in first._firings)
        memo = first._templates.rationales
        assert len(memo) <= 3
        if first.rationale() is None:
            continue
        assert fired in memo and first.rationale().findings is second.rationale().findings
        assert first.rationale().derived is second.rationale().derived
        with pytest.raises(TypeError):  # (shared: no caller may change it)
            first.rationale().derived["ANY"] = ()  # type: ignore[index]
        shared += 1
        fast, reference = both_renderings(second, chart_of(rng))
        assert fast == reference
    assert shared > 40
