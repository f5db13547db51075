"""``imt-cds explain`` (authoring/explain.py) in process: its JSON and text say exactly what the assessment holds (each
finding's rule, reasons, derivations and the reason of each derivation; a finding several rules produce), an unknown
code is refused with its nearest codes, and an assessment of another rulebook is refused. Written for the planted
mistakes of that module that the tests of test_authoring_tools.py did not see (tests/mutation-survivors.md)."""

from __future__ import annotations

import json
from pathlib import Path

import explain_golden
import pytest
from rulebook_copies import copy_rulebook, edit, set_parameters

from imt_cds import Engine, InvalidInputError, load_rulebook
from imt_cds.authoring.explain import explain

ROOT = Path(__file__).resolve().parents[1]
CONTRADICTORY = json.loads((ROOT / "examples" / "05_contradictory_record.json").read_text())


def test_the_json_is_the_assessment_traced(engine):
    assessment = engine.evaluate(CONTRADICTORY)
    result = explain(engine, CONTRADICTORY, "REQUEST_DATA_RECONCILIATION").to_dict()
    assert set(result) == {"patient_id", "code", "why", "why_not"}
    assert (result["patient_id"], result["code"], result["why_not"]) == (CONTRADICTORY["patient_id"],
                                                                         "REQUEST_DATA_RECONCILIATION", [])
    (tree,) = result["why"]
    finding = assessment.finding("REQUEST_DATA_RECONCILIATION")
    assert (tree["code"], tree["title"], tree["rule"]) == (finding.code, finding.title, finding.rule._asdict())
    assert "also_from" not in tree
    (contradiction,) = tree["because"]
    assert (contradiction["derived"], contradiction["holds"]) == ("CONTRADICTION", True)
    derived = [f for f in assessment.derived_facts if f.name == "CONTRADICTION"]
    assert len(derived) == 2  # C1 and C3: each derivation with its own reason
    assert [d["reason"] for d in contradiction["derived_by"]] == [
        {**f.reason._asdict(), "text": f.reason_text} for f in derived]
    assert [d["rule"] for d in contradiction["derived_by"]] == [f.rule._asdict() for f in derived]


def test_the_text_says_the_same_tree(engine):
    assessment = engine.evaluate(CONTRADICTORY)
    text = explain(engine, CONTRADICTORY, "REQUEST_DATA_RECONCILIATION").to_text()
    finding = assessment.finding("REQUEST_DATA_RECONCILIATION")
    derived = [f for f in assessment.derived_facts if f.name == "CONTRADICTION"]
    lines = text.splitlines()
    assert lines[0] == f"Why {finding.code} ({finding.title}): rule {finding.rule.id} v{finding.rule.version}"
    assert lines[1] == "  - CONTRADICTION holds"
    assert lines[2] == f"    - derived by {derived[0].rule.id} ({derived[0].reason_text}), because:"
    assert lines[3].startswith("      - `molecular.alk.status` is `negative` (needs ")
    assert text.endswith("\n") and not text.endswith("\n\n")
    every = explain(engine, CONTRADICTORY).to_text().splitlines()
    always = every.index(next(line for line in every if line.startswith("Why REC_MULTIDISCIPLINARY_REVIEW ")))
    assert every[always + 1] == "  - applies to every patient"


def test_why_not_names_the_code_then_each_rule(engine):
    text = explain(engine, {}, "REC_CRIZOTINIB_ALK").to_text().splitlines()
    assert text[0] == "Why not REC_CRIZOTINIB_ALK:"
    assert text[1].startswith("- rule R32a v") and text[1].endswith("did not apply:")
    assert text[2].startswith("  - ")


def test_a_finding_two_rules_produce_is_explained_with_both(tmp_path):
    directory = copy_rulebook(tmp_path)
    r01 = (directory / "always" / "R01-multidisciplinary-review.yaml").read_text()
    (directory / "always" / "R00-review-again.yaml").write_text(r01.replace("id: R01", "id: R00"))
    engine = Engine(load_rulebook(directory))
    result = explain(engine, {}, "REC_MULTIDISCIPLINARY_REVIEW")
    (tree,) = result.to_dict()["why"]
    finding = engine.evaluate({}).finding("REC_MULTIDISCIPLINARY_REVIEW")
    assert finding.also_from and tree["also_from"] == [a.rule._asdict() for a in finding.also_from]
    others = ", ".join(a.rule.id for a in finding.also_from)
    assert result.to_text().splitlines()[1] == f"  (also produced by {others})"


def test_an_unknown_code_is_refused_with_the_nearest_ones(engine):
    with pytest.raises(InvalidInputError) as refused:
        explain(engine, {}, "REC_CRIZOTINIB")
    (problem,) = refused.value.problems
    assert (problem.path, problem.value) == ("code", "REC_CRIZOTINIB")
    assert problem.message.startswith("'REC_CRIZOTINIB' is not a finding code of rulebook imt 0.2.7; did you mean "
                                      "REC_CRIZOTINIB_ALK")
    assert problem.message.endswith("?")
    with pytest.raises(InvalidInputError) as refused:
        explain(engine, {}, "ZZZZZZZZZZZZZZZZZZZZ")
    assert refused.value.problems[0].message == ("'ZZZZZZZZZZZZZZZZZZZZ' is not a finding code of rulebook imt "
                                                 "0.2.7")


def test_an_assessment_of_another_rulebook_is_refused(tmp_path, engine):
    directory = copy_rulebook(tmp_path)
    set_parameters(directory, {"size_risk_threshold_cm": 4.5})
    other = Engine(load_rulebook(directory)).evaluate(CONTRADICTORY)
    with pytest.raises(ValueError, match="^the assessment was made with another rulebook than the engine's$"):
        explain(engine, CONTRADICTORY, assessment=other)
    own = engine.evaluate(CONTRADICTORY)
    assert explain(engine, CONTRADICTORY, assessment=own).to_dict() == explain(engine, CONTRADICTORY).to_dict()


GOLDEN = explain_golden.load_cases()


@pytest.mark.parametrize("case", GOLDEN, ids=[case["name"] for case in GOLDEN])
def test_the_text_is_the_reviewed_one(case):
    assert explain_golden.render(case) == case["text"]


def test_the_live_text_is_the_text_of_its_own_json(engine):
    # What makes the frozen texts stand for the command's: the text of an explanation is a function of its JSON.
    for path in sorted((ROOT / "examples").glob("*.json")):
        facts = json.loads(path.read_text())
        for code in (None, "REC_CRIZOTINIB_ALK", "REC_UPFRONT_SURGICAL_RESECTION", "REQUEST_ALK_TESTING"):
            explanation = explain(engine, facts, code)
            case = {"explanation": explanation.to_dict()}
            assert explain_golden.render(case) == explanation.to_text(), (path.name, code)


def test_why_not_says_how_a_suppressed_finding_was_withheld(engine):
    assessment = engine.evaluate(CONTRADICTORY)
    (item,) = [s for s in assessment.suppressed if s.finding.code == "REC_UPFRONT_SURGICAL_RESECTION"]
    (entry,) = explain(engine, CONTRADICTORY, "REC_UPFRONT_SURGICAL_RESECTION").to_dict()["why_not"]
    assert entry["outcome"] == "suppressed" and entry["title"] == engine.rulebook.rule(item.finding.rule.id).title
    assert entry["suppressed_by"] == {"rule": item.suppression_rule._asdict(), "fact": item.fact,
                                      "derived_by": item.by._asdict(), "reasons": list(item.reasons)}


def test_why_not_goes_past_the_conditions_that_hold_to_the_first_that_fails(engine):
    # R32a needs ALK_INHIBITOR_ELIGIBLE, AGE_KNOWN, no DATA_BLOCK and an age within the label: for a resectable
    # ALK-positive tumor in an 8-year-old, AGE_KNOWN holds and ALK_INHIBITOR_ELIGIBLE does not (it is required).
    patient = {"age_years": 8, "tumor": {"resectability": "resectable"}, "molecular": {"alk": {"status": "positive"}}}
    (entry,) = explain(engine, patient, "REC_CRIZOTINIB_ALK").to_dict()["why_not"]
    (failure,) = entry["branches"]
    assert (failure["derived"], failure["holds"], failure["required"]) == ("ALK_INHIBITOR_ELIGIBLE", False, True)
    (deriving,) = failure["why_not"]
    assert deriving["rule"]["id"] == "D06" and deriving["title"] == engine.rulebook.rule("D06").title
    # and a derived fact that must be absent but holds is shown with how it was derived
    contradictory = {**CONTRADICTORY, "tumor": {**CONTRADICTORY.get("tumor", {}), "resectability": "unresectable"},
                     "molecular": {"alk": {"status": "positive", "fusion_partner": "EML4"}}, "age_years": 8}
    contradictory["history"] = {"margin_status": "R1"}
    blocked = [node for node in nodes(explain(engine, contradictory, "REC_CRIZOTINIB_ALK").to_dict()["why_not"])
               if node.get("derived") == "DATA_BLOCK" and "required" in node]
    assert blocked and all(node["holds"] is True and node["required"] is False for node in blocked)
    assert all(node["derived_by"] and {d["rule"]["id"] for d in node["derived_by"]} == {"D05"} for node in blocked)


def nodes(value):
    """Every dict inside a JSON value, depth first."""
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from nodes(item)
    elif isinstance(value, list):
        for item in value:
            yield from nodes(item)


def test_a_set_value_is_shown_sorted(engine):
    patient = {"molecular": {"alk": {"status": "negative", "methods": ["NGS_RNA", "FISH", "IHC"]}}}
    values = [node["actual"] for node in nodes(explain(engine, patient, "FLAG_ALK_IHC_ONLY_NEGATIVE").to_dict())
              if node.get("fact") == "molecular.alk.methods"]
    assert values == [["FISH", "IHC", "NGS_RNA"]] * len(values) and values


# --- trees the guards cut: a derivation cycle, and a chain deeper than the bound ------------------------------------
# The loader refuses cycles through a negation only, so a rulebook may have two derived facts derive each other, or
# derived facts nested deeper than the shipped ones (three): explain's trees must end there, and say why they end.


def _cycle_engine(tmp_path: Path) -> Engine:
    """ADVANCED_DISEASE and DATA_BLOCK derive each other (each is also derived from input facts)."""
    directory = copy_rulebook(tmp_path)
    last_branch = "    - {fact: history.progressed_on_prior_systemic, is: true}\n"
    edit(directory, "derived/D02-advanced-disease.yaml", last_branch, last_branch + "    - {derived: DATA_BLOCK}\n")
    last_branch = "    - {derived: MULTIPLE_KINASE_FUSIONS}\n"
    edit(directory, "derived/D05-data-block.yaml", last_branch, last_branch + "    - {derived: ADVANCED_DISEASE}\n")
    return Engine(load_rulebook(directory))


def _chain_engine(tmp_path: Path, links: int) -> Engine:
    """CHAIN_1 from distant disease, each CHAIN_k from CHAIN_k-1, and R17's flag from the last link."""
    directory = copy_rulebook(tmp_path)
    for k in range(1, links + 1):
        condition = "{fact: tumor.distant_disease, is: true}" if k == 1 else f"{{derived: CHAIN_{k - 1}}}"
        (directory / "derived" / f"D9{k}-chain.yaml").write_text(
            f"id: D9{k}\nversion: 1.0.0\ntitle: Link {'ABCDEFGHI'[k - 1]} of a chain\nkind: derived_fact\n"
            f"strength: DESIGN\nevidence: []\ndescription: A link of a test chain.\nderives: CHAIN_{k}\n"
            f"when: {condition}\nexamples:\n"
            "  - {name: distant disease, facts: {tumor: {distant_disease: true}}, fires: true}\n"
            "  - {name: nothing known, facts: {}, fires: false}\n")
    edit(directory, "flags/R17-distant-disease.yaml", "when: {fact: tumor.distant_disease, is: true}",
         f"when: {{derived: CHAIN_{links}}}")
    return Engine(load_rulebook(directory))


DISTANT = {"tumor": {"distant_disease": True}}
CIRCULAR = " (circular: it is one of its own conditions, see above)"


def test_a_derivation_cycle_is_followed_once_and_marked(tmp_path):
    engine = _cycle_engine(tmp_path)
    result = explain(engine, DISTANT, "REC_CLINICAL_TRIAL_CONSIDER")
    (tree,) = result.to_dict()["why"]
    (advanced,) = tree["because"]
    assert (advanced["derived"], advanced["holds"], "not_expanded" in advanced) == ("ADVANCED_DISEASE", True, False)
    (by_d02,) = advanced["derived_by"]
    assert by_d02["rule"]["id"] == "D02"
    distant, block = by_d02["because"]  # both branches fired: the union of their reasons
    assert distant["fact"] == "tumor.distant_disease"
    (by_d05,) = block["derived_by"]
    assert by_d05["because"] == [{"derived": "ADVANCED_DISEASE", "holds": True, "not_expanded": "cycle"}]
    assert result.to_text().splitlines()[-1] == "          - ADVANCED_DISEASE holds" + CIRCULAR


def test_why_not_through_a_derivation_cycle_is_followed_once_and_marked(tmp_path):
    engine = _cycle_engine(tmp_path)
    (entry,) = explain(engine, {}, "REC_CLINICAL_TRIAL_CONSIDER").to_dict()["why_not"]
    (advanced,) = entry["branches"]
    (d02,) = advanced["why_not"]
    block = d02["branches"][-1]  # the branch of DATA_BLOCK, whose rule D05 in turn needs ADVANCED_DISEASE
    (d05,) = block["why_not"]
    assert d05["branches"][-1] == {"derived": "ADVANCED_DISEASE", "holds": False, "required": True,
                                   "not_expanded": "cycle"}
    text = explain(engine, {}, "REC_CLINICAL_TRIAL_CONSIDER").to_text().splitlines()
    assert text[-3:] == ["            - branch 3:",
                         "              - ADVANCED_DISEASE does not hold; it is required (circular: it is one of its "
                         "own conditions, see", "                above)"]
    # a fact that had to be absent, held through the cycle: its derivation, then the cycle marked
    alk = {**DISTANT, "age_years": 10, "molecular": {"alk": {"status": "positive"}}}
    (entry,) = explain(engine, alk, "REC_CRIZOTINIB_ALK").to_dict()["why_not"]
    (eligible,) = entry["branches"]
    (d06,) = eligible["why_not"]
    (block,) = d06["branches"]
    assert (block["derived"], block["holds"], block["required"]) == ("DATA_BLOCK", True, False)
    (by_d05,) = block["derived_by"]
    (advanced,) = by_d05["because"]
    (by_d02,) = advanced["derived_by"]
    assert by_d02["because"][-1] == {"derived": "DATA_BLOCK", "holds": True, "not_expanded": "cycle"}


def _derived_path(node: dict) -> list[tuple[str, str | None]]:
    """Down the only chain of a tree: each derived fact met, and why its tree ends, if it does."""
    path = []
    while "derived" in node:
        path.append((node["derived"], node.get("not_expanded")))
        below = node.get("derived_by") or node.get("why_not")
        if not below:
            break
        (next_rule,) = below
        (node,) = next_rule["because"] if "because" in next_rule else next_rule["branches"]
    return path


def test_a_chain_deeper_than_six_derived_facts_is_cut_there_and_says_so(tmp_path):
    engine = _chain_engine(tmp_path, links=8)
    shown = [(f"CHAIN_{k}", None) for k in range(8, 2, -1)] + [("CHAIN_2", "depth")]
    why = explain(engine, DISTANT, "RISK_DISTANT_DISEASE")
    (tree,) = why.to_dict()["why"]
    (top,) = tree["because"]
    assert _derived_path(top) == shown
    assert why.to_text().splitlines()[-1].endswith(
        "- CHAIN_2 holds (not followed further: more than 6 derived facts deep)")
    why_not = explain(engine, {}, "RISK_DISTANT_DISEASE")
    (entry,) = why_not.to_dict()["why_not"]
    (top,) = entry["branches"]
    assert _derived_path(top) == shown
    assert why_not.to_text().splitlines()[-2:] == [
        " " * 26 + "- CHAIN_2 does not hold; it is required (not followed further: more than 6 derived",
        " " * 28 + "facts deep)"]


def test_a_chain_six_derived_facts_deep_is_shown_whole(tmp_path):
    engine = _chain_engine(tmp_path, links=6)
    (tree,) = explain(engine, DISTANT, "RISK_DISTANT_DISEASE").to_dict()["why"]
    (top,) = tree["because"]
    assert _derived_path(top) == [(f"CHAIN_{k}", None) for k in range(6, 0, -1)]


def test_a_derived_fact_that_had_to_be_absent_is_a_leaf_of_why(engine):
    patient = {"age_years": 10, **DISTANT, "molecular": {"alk": {"status": "positive"}}}
    (tree,) = explain(engine, patient, "REC_CRIZOTINIB_ALK").to_dict()["why"]
    assert {"derived": "DATA_BLOCK", "holds": False} in tree["because"]


# --- what the shipped rulebook's explanations never show: several other producers and close codes, a finding with a
# condition of its own, a reason under a fact that had to be absent, a suppression without reasons, a wrap --------


def test_several_other_producers_and_several_close_codes_are_listed_with_commas(tmp_path):
    directory = copy_rulebook(tmp_path)
    r01 = (directory / "always" / "R01-multidisciplinary-review.yaml").read_text()
    for copy in ("R00", "R98"):
        (directory / "always" / f"{copy}-review-again.yaml").write_text(r01.replace("id: R01", f"id: {copy}"))
    engine = Engine(load_rulebook(directory))
    text = explain(engine, {}, "REC_MULTIDISCIPLINARY_REVIEW").to_text().splitlines()
    others = [a.rule.id for a in engine.evaluate({}).finding("REC_MULTIDISCIPLINARY_REVIEW").also_from]
    assert len(others) == 2 and text[1] == f"  (also produced by {others[0]}, {others[1]})"
    with pytest.raises(InvalidInputError) as refused:
        explain(engine, {}, "REQUEST_AGE_")  # four codes are close; the three closest are offered
    assert refused.value.problems[0].message == (
        "'REQUEST_AGE_' is not a finding code of rulebook imt 0.2.7; did you mean REQUEST_AGE, REQUEST_MARGIN_STATUS, "
        "REQUEST_ALK_TESTING?")


def test_why_not_a_finding_with_a_condition_of_its_own_names_that_condition(engine):
    # R35 gives REC_TRK_INHIBITOR to this patient; its FLAG_VERIFY_INFANT_LABELING also needs an infant's age
    patient = {"age_years": 10, **DISTANT, "molecular": {"ntrk": {"status": "positive"}}}
    assert "REC_TRK_INHIBITOR" in engine.evaluate(patient).codes
    (entry,) = explain(engine, patient, "FLAG_VERIFY_INFANT_LABELING").to_dict()["why_not"]
    (branch,) = entry["branches"]
    assert (branch["fact"], branch["actual"], branch["holds"]) == ("age_years", 10.0, False)


def _text(why=(), why_not=(), code=None) -> str:
    from imt_cds.authoring.explain import Explanation

    return Explanation("p", tuple(why), tuple(why_not), code).to_text()


def test_a_reason_of_a_derivation_of_a_fact_that_had_to_be_absent_is_shown():
    derivation = {"rule": {"id": "D04", "version": "1.0.0"}, "reason": {"id": "C3", "version": "1.0.0",
                                                                        "text": "margin without surgery"},
                  "because": [{"fact": "history.margin_status", "actual": "R0", "expected": "in {R0}", "holds": True}]}
    entry = {"rule": {"id": "R99", "version": "1.0.0"}, "title": "A rule", "outcome": "did not apply",
             "branches": [{"derived": "CONTRADICTION", "holds": True, "required": False, "derived_by": [derivation]}]}
    assert _text(why_not=[entry], code="X").splitlines()[1:] == [
        "- rule R99 v1.0.0 (A rule) did not apply:",
        "  - CONTRADICTION holds; it must be absent",
        "    - derived by D04 (margin without surgery), because:",
        "      - `history.margin_status` is `R0` (needs in {R0})"]


def test_a_suppression_without_reasons_names_the_fact():
    entry = {"rule": {"id": "R32a", "version": "1.0.0"}, "title": "Crizotinib", "outcome": "suppressed",
             "suppressed_by": {"rule": {"id": "S01", "version": "1.0.0"}, "fact": "CONTRADICTION",
                               "derived_by": {"id": "D04", "version": "1.0.0"}, "reasons": []}}
    assert _text(why_not=[entry], code="X").splitlines()[1:] == [
        "- rule R32a v1.0.0 (Crizotinib) applied, but its finding was suppressed by S01 because CONTRADICTION holds",
        "  (CONTRADICTION)"]


def test_a_line_is_wrapped_past_110_characters():
    def tree(width: int) -> dict:
        line = "  - `f` is `v` (needs = )"
        return {"code": "X", "title": "t", "rule": {"id": "R", "version": "1"},
                "because": [{"fact": "f", "actual": "v", "expected": "= " + "x" * (width - len(line)), "holds": True}]}

    assert len(_text(why=[tree(110)]).splitlines()) == 2  # the title, and the reason on one line
    assert len(_text(why=[tree(111)]).splitlines()) == 3
