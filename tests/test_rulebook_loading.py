"""Loading the rulebook checks everything, reports every problem at once, and says where and what to do."""

from __future__ import annotations

import shutil

import pytest
from rulebook_copies import CRIZOTINIB, copy_rulebook, edit, load_problems, only

from imt_cds import Engine, RulebookError, load_rulebook
from imt_cds.core.rulebook import SUMMARY_LIMIT


def test_the_shipped_rulebook_loads_and_covers_the_whole_catalogue(rulebook):
    ids = {r.id for r in rulebook.rules}
    expected = {f"R{n:02d}" for n in range(1, 39) if n not in (19, 21, 32, 36)}
    expected |= {"R19a", "R19b", "R21a", "R21b", "R32a", "R32b", "R36a", "R36b"}
    expected |= {f"D0{n}" for n in range(1, 9)} | {"C1", "C2", "C3", "C4", "S01"}
    assert ids == expected
    assert len(rulebook.finding_codes) == 48
    assert set(rulebook.parameter_values) == {"size_risk_threshold_cm", "evidence_age_limit_years",
                                              "crizotinib_min_age_years", "selpercatinib_min_age_years",
                                              "trk_infant_check_age_years"}


def test_every_summary_is_shorter_than_140_characters(rulebook):
    for rule in rulebook.rules:
        for finding in rule.findings:
            assert len(finding.summary) < SUMMARY_LIMIT, finding.code


def test_a_misspelt_fact_path_names_file_line_rule_and_suggests_the_right_path(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, CRIZOTINIB, "fact: age_years", "fact: age_yaers")
    problem = only(load_problems(directory))
    assert problem.file == CRIZOTINIB and problem.rule == "R32a"
    assert problem.path == "when.all[3].fact" and problem.suggestion == "age_years"
    assert problem.line == 12
    assert "age_yaers" in str(problem) and "did you mean 'age_years'" in str(problem)


def test_the_typo_from_the_issue_is_caught(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, "data_requests/R03-request-alk-testing.yaml", "molecular.alk.status", "molecular.alk.statsu")
    assert only(load_problems(directory)).suggestion == "molecular.alk.status"


def test_a_value_outside_the_fields_enum_is_an_error_with_a_suggestion(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, "data_requests/R03-request-alk-testing.yaml", "is: unknown}", "is: unknwon}")
    problem = only(load_problems(directory))
    assert problem.suggestion == "unknown" and "positive, negative, unknown" in problem.message


def test_an_unknown_evidence_id_is_an_error(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, CRIZOTINIB, "EXT-BUTRYNSKI2010", "EXT-BUTRYNSKY2010")
    problem = only(load_problems(directory))
    assert problem.rule == "R32a" and problem.suggestion == "EXT-BUTRYNSKI2010"
    assert "not in the evidence registry" in problem.message


def test_a_duplicate_rule_id_is_an_error(tmp_path):
    directory = copy_rulebook(tmp_path)
    shutil.copy(directory / CRIZOTINIB, directory / "treatment" / "R32a-copy.yaml")
    problem = only(load_problems(directory))
    assert "duplicate rule id R32a" in problem.message


def test_a_summary_of_140_characters_or_more_is_an_error(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, CRIZOTINIB, "can be considered by the team.", "can be considered by the team. " + "x" * 60)
    problem = only(load_problems(directory))
    assert "summary of REC_CRIZOTINIB_ALK" in problem.message and problem.path == "then[0].summary"


def test_an_unknown_derived_fact_is_an_error_with_a_suggestion(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, CRIZOTINIB, "derived: ALK_INHIBITOR_ELIGIBLE", "derived: ALK_INHIBITOR_ELIGBLE")
    problem = only(load_problems(directory))
    assert problem.suggestion == "ALK_INHIBITOR_ELIGIBLE"


def test_an_unknown_parameter_is_an_error_with_a_suggestion(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, CRIZOTINIB, "param: crizotinib_min_age_years", "param: crizotinib_min_age")
    assert only(load_problems(directory)).suggestion == "crizotinib_min_age_years"


def test_yaml_yes_and_no_are_not_booleans(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, "treatment/R23-upfront-surgical-resection.yaml", "surgery_done, is: false}",
         "surgery_done, is: no}")
    problem = only(load_problems(directory))
    assert "'no'" in problem.message and "true or false" in problem.message


def test_a_version_must_be_a_quoted_semantic_version(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, CRIZOTINIB, "version: 1.1.0", "version: 1.1")
    assert "MAJOR.MINOR.PATCH" in only(load_problems(directory)).message


def test_an_unknown_operator_is_an_error_with_a_suggestion(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, "data_requests/R03-request-alk-testing.yaml", "is: unknown}", "iss: unknown}")
    assert only(load_problems(directory)).suggestion == "is"


def test_an_example_that_is_not_a_valid_patient_is_an_error(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, CRIZOTINIB, "facts: {age_years: 8,", "facts: {age_years: 800,")
    problem = only(load_problems(directory))
    assert problem.path == "examples[0].facts.age_years" and "not a valid patient" in problem.message


def test_a_rule_without_a_silent_example_is_an_error(tmp_path):
    directory = copy_rulebook(tmp_path)
    path = directory / "flags/R20-ranbp2-alk.yaml"
    text = path.read_text()
    path.write_text(text[: text.index("  - name: TPM3-ALK")])
    assert "stays silent" in only(load_problems(directory)).message


def test_malformed_yaml_reports_its_line(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, CRIZOTINIB, "kind: recommendation", "kind: [recommendation")
    problem = only(load_problems(directory))
    assert problem.file == CRIZOTINIB and "not valid YAML" in problem.message and problem.line


def test_a_key_written_twice_in_a_rule_file_is_a_problem_at_its_line(tmp_path):
    # PyYAML keeps the last of two equal keys without a word: a rule with two `when:` would be evaluated on the
    # second one. The facts' JSON reader refuses duplicate keys; so does the rule files' YAML reader.
    directory = copy_rulebook(tmp_path)
    path = directory / CRIZOTINIB
    lines = path.read_text().splitlines(keepends=True)
    at = next(n for n, line in enumerate(lines) if line.startswith("kind: "))
    lines.insert(at + 1, "kind: risk_flag\n")
    path.write_text("".join(lines))
    problem = only(load_problems(directory))
    assert problem.file == CRIZOTINIB and problem.line == at + 2
    assert problem.message == (f"not valid YAML: the key 'kind' is written twice in one mapping (first on line "
                               f"{at + 1}); say it once")


def test_a_drug_table_without_its_list_is_one_problem_not_one_per_finding_naming_a_drug(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, "drugs.yaml", "\ndrugs:", "\ndrgus:")
    problems = load_problems(directory)  # the typo, and the list it leaves missing; nothing about the findings
    assert [(p.file, p.path) for p in problems] == [("drugs.yaml", "drgus"), ("drugs.yaml", "drugs")]


def test_an_unreadable_drug_table_is_one_problem(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, "drugs.yaml", "\ndrugs:", "\ndrugs: [")
    problem = only(load_problems(directory))
    assert problem.file == "drugs.yaml" and "not valid YAML" in problem.message


def test_every_problem_is_reported_at_once(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, CRIZOTINIB, "EXT-BUTRYNSKI2010", "EXT-NOPE")
    edit(directory, "data_requests/R03-request-alk-testing.yaml", "molecular.alk.status", "molecular.alk.statsu")
    edit(directory, "flags/R14-age-outside-evidence.yaml", "kind: risk_flag", "kind: risk")
    problems = load_problems(directory)
    assert {p.rule for p in problems} == {"R32a", "R03", "R14"}


def test_suppressing_an_unknown_rule_is_an_error(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, "suppression/S01-contradiction-suppresses-treatment.yaml", "R38]", "R99]")
    problem = only(load_problems(directory))
    assert "unknown rule R99" in problem.message and problem.suggestion


def test_a_negation_cycle_is_refused_when_compiling(tmp_path):
    directory = copy_rulebook(tmp_path)
    (directory / "derived" / "D09-cycle.yaml").write_text(
        "id: D09\nversion: 1.0.0\ntitle: t\nkind: derived_fact\nstrength: DESIGN\nevidence: []\n"
        "derives: SELF_DENYING\nwhen: {not_derived: SELF_DENYING}\n"
        "examples:\n  - {name: a, facts: {}, fires: true}\n  - {name: b, facts: {age_years: 1}, fires: false}\n"
    )
    with pytest.raises(RulebookError, match="depends on its own negation"):
        Engine(directory)


def test_a_missing_rulebook_directory_is_a_clear_error(tmp_path):
    with pytest.raises(RulebookError, match="not found"):
        load_rulebook(tmp_path / "nowhere")


def test_the_rulebook_hash_changes_with_a_rule_or_a_parameter(tmp_path, rulebook):
    from rulebook_copies import set_parameters

    directory = copy_rulebook(tmp_path)
    assert load_rulebook(directory).sha256 == rulebook.sha256
    set_parameters(directory, {"size_risk_threshold_cm": 4.0})
    changed_parameter = load_rulebook(directory).sha256
    assert changed_parameter != rulebook.sha256
    edit(directory, CRIZOTINIB, "title: Consider crizotinib (ALK inhibitor)", "title: Consider crizotinib")
    assert load_rulebook(directory).sha256 not in (rulebook.sha256, changed_parameter)


def test_comments_and_layout_do_not_change_the_hash(tmp_path, rulebook):
    directory = copy_rulebook(tmp_path)
    path = directory / CRIZOTINIB
    path.write_text("# a comment that changes nothing\n" + path.read_text())
    (directory / CRIZOTINIB).rename(directory / "R32a-moved.yaml")
    assert load_rulebook(directory).sha256 == rulebook.sha256


@pytest.mark.parametrize("operator", ["gt", "gte", "lt", "lte"])
@pytest.mark.parametrize(
    ("file", "before", "path", "allowed"),
    [
        ("data_requests/R03-request-alk-testing.yaml", "{fact: molecular.alk.status, is: unknown}",
         "molecular.alk.status", "positive, negative, unknown"),
        ("treatment/R23-upfront-surgical-resection.yaml", "{fact: history.surgery_done, is: false}",
         "history.surgery_done", "true or false"),
        ("treatment/R23-upfront-surgical-resection.yaml", "{fact: tumor.distant_disease, is: false}",
         "tumor.distant_disease", "true, false, or null"),
    ],
    ids=["enum", "boolean", "tristate"],
)
def test_an_ordering_operator_on_an_enum_or_boolean_field_is_refused_at_load(tmp_path, operator, file, before,
                                                                               path, allowed):
    directory = copy_rulebook(tmp_path)
    edit(directory, file, before, before.replace("is:", f"{operator}:").replace("unknown}", "1}")
         .replace("false}", "1}"))
    problem = only(load_problems(directory))
    assert problem.file == file and problem.path.endswith(f".{operator}")
    assert f"{operator} compares numbers, but {path} is" in problem.message
    assert allowed in problem.message
