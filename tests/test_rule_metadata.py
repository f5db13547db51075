"""Rule metadata lives in the rule files: parameters named in titles and summaries, each finding's card indicator,
gene and drugs, and the drug table (drugs.yaml) that order-sign recognises orders by."""

from __future__ import annotations

import re

import pytest
from rulebook_copies import copy_rulebook, edit, set_parameters

from imt_cds import Engine, RulebookError, load_rulebook
from imt_cds.core.rule_loader import parameter_text
from imt_cds.authoring.rulebook_diff import diff_rulebooks
from imt_cds.render.cards import assessment_cards
from imt_cds.service.order_sign import check_orders, targeted_orders

R32B = "treatment/R32b-alk-inhibitor-off-label-age.yaml"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
# A value no shipped text could hold by chance, for each parameter; ages stay plausible.
NEW_VALUES = {"size_risk_threshold_cm": 4.7, "evidence_age_limit_years": 45, "crizotinib_min_age_years": 2,
              "selpercatinib_min_age_years": 3, "trk_infant_check_age_years": 0.5}


def problems_of(directory):
    with pytest.raises(RulebookError) as info:
        load_rulebook(directory)
    return info.value.problems


def texts_naming(rulebook, name):
    """(rule id, key, finding code) of every raw title and summary that names parameter ``name``."""
    found = []
    for raw in rulebook.source["rules"]:
        if "{" + name + "}" in raw["title"]:
            found.append((raw["id"], "title", None))
        for item in raw.get("then", []):
            for key in ("title", "summary"):
                if "{" + name + "}" in item[key]:
                    found.append((raw["id"], key, item["finding"]))
    return found


def rendered(rulebook, rule_id, key, code):
    rule = rulebook.rule(rule_id)
    if code is None:
        return getattr(rule, key)
    return getattr(next(s for s in rule.findings if s.code == code), key)


def test_every_parameter_is_named_in_some_text(rulebook):
    assert set(NEW_VALUES) == set(rulebook.parameters)
    for name in rulebook.parameters:
        assert texts_naming(rulebook, name), name


@pytest.mark.parametrize("name", sorted(NEW_VALUES))
def test_a_changed_parameter_shows_its_new_value_in_every_text_that_names_it(tmp_path, rulebook, name):
    directory = copy_rulebook(tmp_path)
    set_parameters(directory, {name: NEW_VALUES[name]})
    changed = load_rulebook(directory)
    old_text, new_text = parameter_text(rulebook.parameters[name]), parameter_text(changed.parameters[name])
    for rule_id, key, code in texts_naming(rulebook, name):
        before, after = rendered(rulebook, rule_id, key, code), rendered(changed, rule_id, key, code)
        assert old_text in before and new_text in after, (rule_id, key, before, after)
        assert not re.search(rf"(?<![\w.]){re.escape(old_text)}", after), after
        assert after == before.replace(old_text, new_text)


def test_parameters_render_with_their_unit_and_number(rulebook):
    assert parameter_text(rulebook.parameters["crizotinib_min_age_years"]) == "1 year"
    assert parameter_text(rulebook.parameters["selpercatinib_min_age_years"]) == "2 years"
    assert parameter_text(rulebook.parameters["size_risk_threshold_cm"]) == "3.9 cm"


def test_the_issue_example_gives_a_true_summary(tmp_path):
    directory = copy_rulebook(tmp_path)
    set_parameters(directory, {"crizotinib_min_age_years": 2})
    engine = Engine(load_rulebook(directory))
    assessment = engine.evaluate({"age_years": 1.5, "tumor": {"resectability": "unresectable"},
                                  "molecular": {"alk": {"status": "positive"}}}).to_dict()
    (finding,) = [f for f in assessment["recommendations"] if f["code"] == "REC_ALK_INHIBITOR_OFF_LABEL_AGE_REVIEW"]
    assert "in a child under 2 years, below the crizotinib label" in finding["summary"]


def test_a_number_equal_to_a_parameter_must_be_written_as_the_parameter(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, R32B, "under {crizotinib_min_age_years},", "under 1 year,")
    (problem,) = problems_of(directory)
    assert (problem.file, problem.rule, problem.path) == (R32B, "R32b", "then[0].summary")
    assert problem.line == 16
    assert "1 in the summary equals parameter crizotinib_min_age_years" in problem.message
    assert "{crizotinib_min_age_years}" in problem.message


def test_a_title_is_checked_as_well_and_names_such_as_r1_are_not_numbers(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, R32B, "title: Off-label by age", "title: Off-label by age (R1, ROS1, below 2)")
    (problem,) = problems_of(directory)
    assert problem.path == "then[1].title" and "parameter selpercatinib_min_age_years" in problem.message


def test_an_unknown_parameter_in_a_text_is_an_error_with_a_suggestion(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, R32B, "{crizotinib_min_age_years},", "{crizotinib_min_age_year},")
    problem = problems_of(directory)[0]
    assert problem.path == "then[0].summary" and problem.suggestion == "crizotinib_min_age_years"
    assert "{crizotinib_min_age_year} in the summary names no parameter" in problem.message


def test_the_summary_length_is_checked_on_the_rendered_text(tmp_path, rulebook):
    directory = copy_rulebook(tmp_path)
    summary = rulebook.rule("R32b").findings[0].summary  # rendered: "... under 1 year, ..."
    edit(directory, R32B, "needs specialist review.", "needs specialist review." + "x" * (139 - len(summary)))
    assert len(load_rulebook(directory).rule("R32b").findings[0].summary) == 139  # loads: shorter than 140
    set_parameters(directory, {"crizotinib_min_age_years": 1.25})  # "1.25 years": 4 characters longer than "1 year"
    (problem,) = problems_of(directory)
    assert problem.path == "then[0].summary" and "143 characters once its parameters are rendered" in problem.message


@pytest.mark.parametrize(("old", "new", "path", "words"), [
    ("indicator: critical", "indicator: severe", "then[1].indicator", "indicator must be one of"),
    ("gene: alk\n    drugs: [crizotinib]\n  - finding: FLAG", "gene: akl\n    drugs: [crizotinib]\n  - finding: FLAG",
     "then[0].gene", "unknown gene 'akl'"),
    ("drugs: [crizotinib]\n  - finding: FLAG", "drugs: [crizotnib]\n  - finding: FLAG", "then[0].drugs[0]",
     "unknown drug 'crizotnib'"),
])
def test_unknown_metadata_is_an_error_naming_file_and_line(tmp_path, old, new, path, words):
    directory = copy_rulebook(tmp_path)
    edit(directory, R32B, old, new)
    (problem,) = problems_of(directory)
    assert (problem.file, problem.path) == (R32B, path) and words in problem.message
    assert problem.line is not None


def test_a_finding_must_declare_its_indicator(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, R32B, "    indicator: critical\n", "")
    (problem,) = problems_of(directory)
    assert problem.path == "then[1].indicator"


def test_the_drug_table_is_checked(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, "drugs.yaml", "label_min_age: {ret: selpercatinib_min_age_years}",
         "label_min_age: {ret: selpercatinib_min_age}")
    edit(directory, "drugs.yaml", 'code: "1727455"', 'code: "1727456"')
    problems = problems_of(directory)
    messages = " | ".join(f"{p.file}:{p.path}: {p.message}" for p in problems)
    assert "unknown parameter 'selpercatinib_min_age'" in messages
    # a changed ALK inhibitor code no longer agrees with the FHIR reader's value set: both sides are reported
    assert "alectinib's RxNorm code 1727456 is not in terminology/alk-inhibitors.yaml" in messages
    assert "RxNorm 1727455 (alectinib) is an ALK inhibitor here but not in drugs.yaml" in messages
    assert all(p.line is not None for p in problems if p.file == "drugs.yaml")


def test_the_hash_covers_indicators_and_the_drug_table(tmp_path, rulebook):
    first = copy_rulebook(tmp_path / "a")
    edit(first, R32B, "indicator: critical", "indicator: warning")
    second = copy_rulebook(tmp_path / "b")
    edit(second, "drugs.yaml", "brands: [Gavreto]", "brands: [Gavreto, Gavretto]")
    assert len({rulebook.sha256, load_rulebook(first).sha256, load_rulebook(second).sha256}) == 3


def test_a_changed_indicator_changes_the_card(tmp_path):
    patient = {"age_years": 0.75, "tumor": {"resectability": "unresectable"},
               "molecular": {"alk": {"status": "positive"}}}

    def indicator(rules):
        document = Engine(rules).evaluate(patient).to_dict()
        cards = assessment_cards(document, evaluation_id="e", sources={}, public_url="https://cds.example.org")
        return {c["source"]["topic"]["code"]: c["indicator"] for c in cards}["FLAG_OFF_LABEL_AGE"]

    directory = copy_rulebook(tmp_path)
    assert indicator(load_rulebook(directory)) == "critical"
    edit(directory, R32B, "indicator: critical", "indicator: warning")
    assert indicator(load_rulebook(directory)) == "warning"


def order(**concept):
    return {"resourceType": "Bundle", "entry": [{"resource": {
        "resourceType": "MedicationRequest", "id": "d1", "medicationCodeableConcept": concept}}]}


FACTS_ALK = {"age_years": 8, "molecular": {g: {"status": "positive" if g == "alk" else "unknown"}
                                           for g in ("alk", "ros1", "ntrk", "ret")}}


def test_an_order_is_recognised_by_its_rxnorm_code_before_its_name(rulebook):
    coded = order(coding=[{"system": RXNORM, "code": "1727455"}])  # alectinib, no name anywhere
    assert [o.drug.name for o in targeted_orders(coded, rulebook.drugs)] == ["alectinib"]
    both = order(text="larotrectinib", coding=[{"system": RXNORM, "code": "1148495"}])  # the code decides
    assert [o.drug.name for o in targeted_orders(both, rulebook.drugs)] == ["crizotinib"]
    other_system = order(coding=[{"system": "http://example.org/formulary", "code": "1727455"}])
    assert targeted_orders(other_system, rulebook.drugs) == []


def test_a_changed_drug_entry_changes_the_order_check(tmp_path, rulebook):
    coded = order(coding=[{"system": RXNORM, "code": "2103164", "display": "Lorbrena 100 MG"}])
    (before,) = targeted_orders(coded, rulebook.drugs)
    assert check_orders([before], FACTS_ALK, {}, rulebook, check_id="c") == []  # ALK-positive: a sound order
    directory = copy_rulebook(tmp_path)
    edit(directory, "drugs.yaml", "  - name: lorlatinib\n    brands: [Lorbrena, Lorviqua]\n    class: ALK inhibitor\n"
         "    targets: [alk]\n", "  - name: lorlatinib\n    brands: [Lorbrena, Lorviqua]\n    class: ALK inhibitor\n"
         "    targets: [alk]\n    label_min_age: {alk: evidence_age_limit_years}\n")
    changed = load_rulebook(directory)
    (after,) = targeted_orders(coded, changed.drugs)
    (card,) = check_orders([after], FACTS_ALK, {}, changed, check_id="c")
    assert card["source"]["topic"]["code"] == "ORDER_BELOW_LABELLED_AGE"
    assert "labelled from age 39" in card["summary"]


def test_rules_diff_shows_metadata_and_drug_changes(tmp_path, rulebook):
    directory = copy_rulebook(tmp_path)
    edit(directory, R32B, "indicator: critical", "indicator: warning")
    edit(directory, "drugs.yaml", "brands: [Gavreto]", "brands: [Gavreto, Gavretto]")
    result = diff_rulebooks(rulebook, load_rulebook(directory), examples=0)
    assert result.metadata == ["R32b FLAG_OFF_LABEL_AGE indicator: critical -> warning"]
    assert result.drugs == [("pralsetinib", "changed brands")]
    assert any(c.rule == "R32b" and c.error for c in result.rules)  # a metadata change needs a version bump
    assert any("rulebook changed" in e for e in result.errors)


def test_rules_show_names_indicator_gene_and_drugs(capsys):
    from imt_cds.cli.main import main

    assert main(["rules", "show", "R32b"]) == 0
    out = capsys.readouterr().out
    assert "produces FLAG_OFF_LABEL_AGE [flag, indicator critical]" in out
    assert "about: gene ALK; crizotinib (ALK/ROS1 inhibitor; RxNorm 1148495" in out
    assert "in a child under 1 year, below the crizotinib label" in out
