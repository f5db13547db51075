"""The structure of the rulebook's YAML documents (which keys, which types, what is required) comes from the models
of ``rule_schema``; a document that does not fit them gives one problem per mistake, each naming the file, the line,
the path, the value and what is allowed, with a did-you-mean for an unknown key."""

from __future__ import annotations

import pytest
from rulebook_copies import copy_rulebook, edit

from imt_cds import RulebookError, load_rulebook

CRIZOTINIB = "treatment/R32a-crizotinib-alk.yaml"
R32B = "treatment/R32b-alk-inhibitor-off-label-age.yaml"
D04 = "derived/D04-contradiction.yaml"


def load_problems(directory):
    with pytest.raises(RulebookError) as info:
        load_rulebook(directory)
    for problem in info.value.problems:
        assert "\n" not in str(problem), problem
    return info.value.problems


def only(problems):
    assert len(problems) == 1, problems
    return problems[0]


def line_of(directory, relative, text, occurrence=1):
    """The 1-based line of the ``occurrence``-th line of a file that contains ``text``."""
    lines = [i + 1 for i, line in enumerate((directory / relative).read_text().splitlines()) if text in line]
    return lines[occurrence - 1]


def test_a_wrong_type_in_an_example_names_the_path_line_value_and_what_is_allowed(tmp_path):
    directory = copy_rulebook(tmp_path)
    text = (directory / CRIZOTINIB).read_text()
    (directory / CRIZOTINIB).write_text(text.replace("    fires: true\n", "    fires: 'yes'\n", 2).replace(
        "    fires: 'yes'\n", "    fires: true\n", 1))  # the second example only
    problem = only(load_problems(directory))
    assert (problem.file, problem.rule, problem.path) == (CRIZOTINIB, "R32a", "examples[1].fires")
    assert problem.line == line_of(directory, CRIZOTINIB, "fires: 'yes'")
    assert "got 'yes'" in problem.message and "true (the rule fires) or false" in problem.message


def test_a_wrong_type_inside_a_reason_names_the_nested_path_and_its_line(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, D04, "        fires: false\n", "        fires: 0\n")
    problem = only(load_problems(directory))
    assert (problem.rule, problem.path) == ("D04", "reasons[0].examples[1].fires")
    assert problem.line == line_of(directory, D04, "fires: 0") and "got 0" in problem.message


def test_an_unknown_key_in_a_finding_suggests_the_key_meant(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, CRIZOTINIB, "    indicator: info", "    indicatr: info")
    problems = {p.path: p for p in load_problems(directory)}
    unknown = problems["then[0].indicatr"]
    assert unknown.suggestion == "indicator" and unknown.line == line_of(directory, CRIZOTINIB, "indicatr:")
    assert "unknown key 'indicatr'; allowed: finding, title, summary, indicator" in unknown.message
    assert "missing 'indicator'" in problems["then[0].indicator"].message  # the key meant is missing as well
    assert set(problems) == {"then[0].indicatr", "then[0].indicator"}


def test_an_unknown_top_level_key_of_a_rule_suggests_the_key_meant(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, CRIZOTINIB, "evidence: [", "evidense: [")
    problems = {p.path: p for p in load_problems(directory)}
    assert problems["evidense"].suggestion == "evidence" and problems["evidense"].line == 6


def test_a_kind_outside_the_list_names_the_kinds_and_suggests_one(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, CRIZOTINIB, "kind: recommendation", "kind: recomendation")
    problem = only(load_problems(directory))
    assert problem.path == "kind" and problem.line == 4 and problem.suggestion == "recommendation"
    assert "kind must be one of derived_fact, recommendation" in problem.message
    assert "'recomendation'" in problem.message


def test_a_quoted_parameter_value_is_not_read_as_a_number(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, "parameters.yaml", "value: 3.9", 'value: "3.9"')
    problems = load_problems(directory)
    problem = next(p for p in problems if p.file == "parameters.yaml")
    assert problem.path == "parameters.size_risk_threshold_cm.value" and problem.line == 5
    assert problem.message == "value must be a number; got '3.9'"


def test_a_wrong_type_in_the_drug_table_names_the_drug_and_item(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, "drugs.yaml", "brands: [Xalkori]", "brands: [Xalkori, 5]")
    problem = only(load_problems(directory))
    assert (problem.file, problem.path, problem.line) == ("drugs.yaml", "drugs[0].brands[1]", 14)
    assert problem.message == "brands[1] must be text; got 5"


def test_a_malformed_drug_is_reported_once_not_again_by_every_finding_that_names_it(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, "drugs.yaml", "class: ALK/ROS1 inhibitor", "class: 5")
    problem = only(load_problems(directory))
    assert (problem.path, problem.line) == ("drugs[0].class", 15)


def test_a_malformed_rule_is_reported_once_not_again_by_every_rule_that_uses_it(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, "derived/D06-alk-inhibitor-eligible.yaml", "version: 1", "version: x1")
    problem = only(load_problems(directory))  # not: "ALK_INHIBITOR_ELIGIBLE is not derived by any rule" in R32a ...
    assert (problem.rule, problem.path) == ("D06", "version") and "MAJOR.MINOR.PATCH" in problem.message


def test_a_manifest_version_must_be_a_semantic_version(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, "rulebook.yaml", "version: 0.2.7", "version: 0.2")
    problem = only(load_problems(directory))
    assert (problem.file, problem.path, problem.line) == ("rulebook.yaml", "version", 3)
    assert "got 0.2" in problem.message


def test_a_rule_in_a_group_file_is_located_by_its_place_in_the_group(tmp_path):
    directory = copy_rulebook(tmp_path)
    first = (directory / CRIZOTINIB).read_text()
    second = (directory / R32B).read_text()
    (directory / R32B).unlink()
    group = "rules:\n" + "".join("  - " + "\n    ".join(doc.rstrip("\n").splitlines()).replace("\n    \n", "\n\n")
                                 + "\n" for doc in (first, second.replace("gene: alk", "gene: 7", 1)))
    (directory / CRIZOTINIB).write_text(group)
    problem = only(load_problems(directory))
    assert (problem.rule, problem.path) == ("R32b", "then[0].gene")
    assert problem.line == line_of(directory, CRIZOTINIB, "gene: 7") and "got 7" in problem.message


def test_the_shipped_rulebook_fits_the_models(rulebook):
    assert rulebook.version and len(rulebook.rules) > 40


def test_a_finding_code_must_start_with_a_known_prefix(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, CRIZOTINIB, "finding: REC_CRIZOTINIB_ALK", "finding: CRIZOTINIB_ALK")
    problem = next(p for p in load_problems(directory) if p.path == "then[0].finding")
    assert "UPPER_SNAKE_CASE starting with REC_" in problem.message and "'CRIZOTINIB_ALK'" in problem.message
    assert problem.line == line_of(directory, CRIZOTINIB, "finding: CRIZOTINIB_ALK")


def test_a_parameter_value_must_be_a_finite_number(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, "parameters.yaml", "value: 3.9", "value: .nan")
    problem = next(p for p in load_problems(directory) if p.file == "parameters.yaml")
    assert (problem.path, problem.message) == ("parameters.size_risk_threshold_cm.value",
                                               "value must be a finite number; got nan")


def test_a_blank_title_is_refused(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, CRIZOTINIB, "    title: Consider crizotinib (ALK inhibitor)", "    title: '  '")
    problem = only(load_problems(directory))
    assert (problem.path, problem.message) == ("then[0].title", "title must be non-empty text; got '  '")


VALUE_SET = "terminology/imt-diagnosis.yaml"


def test_an_unquoted_numeric_code_in_a_value_set_is_refused_with_the_hint(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, VALUE_SET, 'code: "8825/1"', "code: 88251")
    problem = only(load_problems(directory))  # and the value set is not reported missing as well
    assert (problem.file, problem.path) == (VALUE_SET, "codes[0].code")
    assert problem.line == line_of(directory, VALUE_SET, "code: 88251") and "write codes in quotes" in problem.message


def test_a_value_set_code_system_must_be_a_uri_and_unknown_keys_are_named(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, VALUE_SET, 'system: "http://terminology.hl7.org/CodeSystem/icd-o-3"', 'system: "icd-o-3"')
    edit(directory, VALUE_SET, "    display:", "    dispaly:")
    problems = {p.path: p for p in load_problems(directory)}
    assert "system must be a URI" in problems["codes[0].system"].message
    assert problems["codes[0].dispaly"].suggestion == "display"
    assert "missing 'display'" in problems["codes[0].display"].message


def test_a_value_set_code_listed_twice_is_still_refused(tmp_path):
    directory = copy_rulebook(tmp_path)
    text = (directory / VALUE_SET).read_text()
    start = text.index("  - system:")
    end = text.index("  - system:", start + 1)
    (directory / VALUE_SET).write_text(text[:end] + text[start:end] + text[end:])
    problem = only(load_problems(directory))
    assert "is listed twice" in problem.message and problem.path.endswith(".code")
