"""What a rule author sees when the rulebook is wrong, pinned where mutation testing of core/rule_loader.py found no
test looking: the exact message and place of each problem, and the problems that only some layouts of a rulebook
directory can show (an empty rule file, a rulebook without a drug table)."""

from __future__ import annotations

from pathlib import Path

import pytest
from rulebook_copies import CRIZOTINIB, copy_rulebook, edit, load_problems, only

from imt_cds import load_rulebook

ROOT = Path(__file__).resolve().parents[1]


def test_a_missing_rulebook_directory_names_the_directory(tmp_path):
    problem = only(load_problems(tmp_path / "nowhere"))
    assert (problem.file, problem.message) == (str(tmp_path / "nowhere"), "rulebook directory not found")


def test_an_empty_rule_file_is_reported_not_skipped(tmp_path):
    directory = copy_rulebook(tmp_path)
    (directory / "flags" / "R99-empty.yaml").write_text("# nothing yet\n")
    problem = only(load_problems(directory))
    assert (problem.file, problem.message) == ("flags/R99-empty.yaml", "empty rule file")


def test_without_a_drug_table_every_drug_a_finding_names_is_unknown(tmp_path):
    directory = copy_rulebook(tmp_path)
    (directory / "drugs.yaml").unlink()
    problems = load_problems(directory)
    crizotinib = [p for p in problems if p.rule == "R32a"]
    assert [(p.path, p.message) for p in crizotinib] == [
        ("then[0].drugs[0]", "unknown drug 'crizotinib': not in drugs.yaml")]
    assert all(p.message.startswith("unknown drug ") and p.message.endswith(": not in drugs.yaml") for p in problems)


def test_a_rule_file_that_is_not_utf8_is_the_one_problem_not_every_reference_to_its_rules(tmp_path):
    directory = copy_rulebook(tmp_path)
    path = directory / "derived" / "D06-alk-inhibitor-eligible.yaml"  # derives what R32a and others test
    path.write_bytes(path.read_bytes().replace(b"title:", b"title: \xff", 1))
    problem = only(load_problems(directory))
    assert problem.file == "derived/D06-alk-inhibitor-eligible.yaml" and problem.line is None
    assert problem.message.startswith("cannot read: 'utf-8' codec can't decode byte 0xff")


def test_malformed_yaml_is_reported_at_the_line_of_the_mistake_in_the_parsers_words(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, CRIZOTINIB, "kind: recommendation", "kind: recommendation: now")  # line 4
    problem = only(load_problems(directory))
    assert (problem.file, problem.line, problem.rule) == (CRIZOTINIB, 4, None)
    assert problem.message == "not valid YAML: mapping values are not allowed in this context"


def test_a_rulebook_directory_without_rule_files_says_so(tmp_path):
    directory = copy_rulebook(tmp_path)
    for path in directory.rglob("*.yaml"):
        if path.parent == directory and path.name not in ("rulebook.yaml", "parameters.yaml"):
            path.unlink()
        elif path.parent != directory and path.parent.name != "terminology":
            path.unlink()
    problem = only(load_problems(directory))
    assert (problem.file, problem.message, problem.line) == (".", "no rule files (*.yaml) found", None)


def test_a_duplicate_rule_id_names_the_file_that_has_it_first(tmp_path):
    directory = copy_rulebook(tmp_path)
    (directory / "treatment" / "R32a-copy.yaml").write_text((directory / CRIZOTINIB).read_text())
    problem = only(load_problems(directory))  # files are read in name order: the copy first
    assert (problem.file, problem.rule, problem.path, problem.line) == (CRIZOTINIB, "R32a", "id", 1)
    assert problem.message == "duplicate rule id R32a (also in treatment/R32a-copy.yaml)"


def test_a_value_set_the_fhir_reader_needs_is_reported_missing_by_name_and_purpose(tmp_path):
    directory = copy_rulebook(tmp_path)
    (directory / "terminology" / "cancer-disease-status.yaml").unlink()
    problem = only(load_problems(directory))
    assert (problem.file, problem.message) == (
        "terminology/cancer-disease-status.yaml",
        "missing: the FHIR reader needs value set 'cancer-disease-status' (Observation codes of a cancer disease "
        "status)")


def test_the_drug_table_is_checked_against_genes_its_own_targets_its_codes_and_the_value_set(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, "drugs.yaml", "    targets: [alk, ros1]\n", "    targets: [alkk, ros1]\n")  # crizotinib
    edit(directory, "drugs.yaml", '      code: "1535457"', '      code: "1148495"')  # ceritinib given crizotinib's
    problems = load_problems(directory)
    found = [(p.file, p.path, p.message, p.suggestion) for p in problems
             if p.file in ("drugs.yaml", "terminology/alk-inhibitors.yaml")]
    [r32a] = [p for p in problems if p.rule == "R32a"]  # its finding is about alk, which crizotinib no longer targets
    assert (r32a.path, r32a.message) == ("then[0].drugs[0]",
                                         "crizotinib does not target alk (drugs.yaml lists alkk, ros1)")
    assert found == [
        ("drugs.yaml", "drugs[0].targets[0]", "unknown gene 'alkk'; genes: alk, ros1, ntrk, ret, pdgfrb", "alk"),
        ("drugs.yaml", "drugs[0].label_min_age.alk", "'alk' is not one of the drug's targets (alkk, ros1)", None),
        ("drugs.yaml", "drugs[1].rxnorm.code", "RxNorm code 1148495 is also drug crizotinib's", None),
        ("drugs.yaml", "drugs[1].rxnorm.code", "ceritinib's RxNorm code 1148495 is not in "
         "terminology/alk-inhibitors.yaml as ceritinib: the FHIR reader and order-sign must know ALK inhibitors by "
         "the same codes", None),
        ("terminology/alk-inhibitors.yaml", "codes", "RxNorm 1148495 (crizotinib) is an ALK inhibitor here but not "
         "in drugs.yaml with that code and target alk", None),
        ("terminology/alk-inhibitors.yaml", "codes", "RxNorm 1535457 (ceritinib) is an ALK inhibitor here but not "
         "in drugs.yaml with that code and target alk", None),
    ]


def test_a_parameter_without_a_meaning_has_an_empty_one_and_keeps_its_unit(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, "parameters.yaml",
         "    meaning: Lowest age of the FDA crizotinib label for ALK-positive IMT.\n", "")
    parameter = load_rulebook(directory).parameters["crizotinib_min_age_years"]
    assert (parameter.name, parameter.value, parameter.unit, parameter.meaning) == (
        "crizotinib_min_age_years", 1.0, "years", "")


def test_a_rule_with_two_shapes_is_told_to_have_exactly_one(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, "derived/D06-alk-inhibitor-eligible.yaml", "derives: ALK_INHIBITOR_ELIGIBLE\n",
         "derives: ALK_INHIBITOR_ELIGIBLE\nsuppresses: [R32a]\n")
    [problem] = [p for p in load_problems(directory) if p.rule == "D06"]
    assert (problem.file, problem.path, problem.line) == ("derived/D06-alk-inhibitor-eligible.yaml", None, 1)
    assert problem.message == ("a rule needs exactly one of 'then' (findings), 'derives' (a derived fact) or "
                               "'suppresses' (rules whose findings it suppresses); got ['derives', 'suppresses']")


def test_a_rule_with_no_shape_is_told_it_has_none(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, "derived/D06-alk-inhibitor-eligible.yaml", "derives: ALK_INHIBITOR_ELIGIBLE\n", "")
    messages = [p.message for p in load_problems(directory) if p.rule == "D06"]
    assert ("a rule needs exactly one of 'then' (findings), 'derives' (a derived fact) or 'suppresses' (rules whose "
            "findings it suppresses); got none") in messages


def test_a_rule_keeps_its_description(rulebook):
    assert rulebook.rule("D04").description.startswith("One CONTRADICTION fact per reason that holds (C1-C4).")


@pytest.mark.parametrize(("file", "old", "new", "path", "message"), [
    ("flags/R14-age-outside-evidence.yaml", "kind: risk_flag", "kind: suppression", "kind",
     "a rule with findings ('then') cannot have kind suppression"),
    ("flags/R14-age-outside-evidence.yaml", "when: {fact: age_years, gt: {param: evidence_age_limit_years}}\n", "",
     "when", "missing condition ('when'); use 'when: always' for a rule that always applies"),
    ("flags/R14-age-outside-evidence.yaml", "when: {fact: age_years,",
     "reasons: [{id: C9, version: 1.0.0, title: t, text: t, when: always, examples: [{name: a, fires: true}]}]\n"
     "when: {fact: age_years,", "reasons", "only a rule that derives a fact can list reasons"),
    ("derived/D04-contradiction.yaml", "derives: CONTRADICTION\n", "derives: CONTRADICTION\nwhen: always\n", "when",
     "a rule with reasons has no condition of its own: it holds when a reason holds"),
    (CRIZOTINIB, "    gene: alk", "    gene: alkk", "then[0].gene", "unknown gene 'alkk'; genes: alk, ros1, ntrk, ret, "
     "pdgfrb"),
    (CRIZOTINIB, "    drugs: [crizotinib]", "    drugs: [crizotnib]", "then[0].drugs[0]",
     "unknown drug 'crizotnib': not in drugs.yaml"),
])
def test_a_rule_whose_parts_do_not_fit_together_is_told_where_and_why(tmp_path, file, old, new, path, message):
    directory = copy_rulebook(tmp_path)
    edit(directory, file, old, new)
    problem = only(load_problems(directory))
    assert (problem.file, problem.path, problem.message) == (file, path, message)
    assert problem.suggestion == {"then[0].gene": "alk", "then[0].drugs[0]": "crizotinib"}.get(path)


def test_a_brand_naming_two_drugs_and_an_unknown_age_parameter_are_placed_and_worded(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, "drugs.yaml", "    brands: [Zykadia]", "    brands: [Xalkori]")  # ceritinib given crizotinib's
    edit(directory, "drugs.yaml", "{alk: crizotinib_min_age_years}", "{alk: crizotinib_min_age}")
    assert [(p.file, p.path, p.message, p.suggestion) for p in load_problems(directory)] == [
        ("drugs.yaml", "drugs[0].label_min_age.alk", "unknown parameter 'crizotinib_min_age'",
         "crizotinib_min_age_years"),
        ("drugs.yaml", "drugs[1].name", "'Xalkori' already names drug crizotinib", None)]


_PARAMETERS = ("size_risk_threshold_cm, evidence_age_limit_years, crizotinib_min_age_years, "
               "selpercatinib_min_age_years, trk_infant_check_age_years")


def assert_one_problem(tmp_path, file, old, new, path, message, suggestion):
    """A copy of the rulebook with ``old`` replaced by ``new`` in ``file`` loads with exactly this one problem."""
    directory = copy_rulebook(tmp_path)
    edit(directory, file, old, new)
    problem = only(load_problems(directory))
    assert (problem.file, problem.path, problem.message, problem.suggestion) == (file, path, message, suggestion)


@pytest.mark.parametrize(("file", "old", "new", "path", "message", "suggestion"), [
    ("parameters.yaml", "evidence: [RICH2022:c06, RICH2022:c15]", "evidence: [RICH2022:c66, RICH2022:c15]",
     "parameters.size_risk_threshold_cm.evidence[0]", "unknown evidence id 'RICH2022:c66': not in the evidence "
     "registry", "RICH2022:c16"),
    ("flags/R14-age-outside-evidence.yaml", "strength: DESIGN\nevidence: [RICH2022:c02]", "strength: REG\nevidence: []",
     "evidence", "a rule that is not a DESIGN choice must cite at least one evidence id", None),
    ("derived/D06-alk-inhibitor-eligible.yaml", "kind: derived_fact", "kind: risk_flag", "kind",
     "a rule with 'derives' must have kind derived_fact", None),
    (CRIZOTINIB, "{crizotinib_min_age_years}", "{crizotinib_min_age}", "then[0].summary",
     f"{{crizotinib_min_age}} in the summary names no parameter; parameters: {_PARAMETERS}",
     "crizotinib_min_age_years"),
])
def test_parameters_evidence_kinds_and_texts_are_checked_word_for_word(tmp_path, file, old, new, path, message,
                                                                      suggestion):
    assert_one_problem(tmp_path, file, old, new, path, message, suggestion)


def test_a_missing_manifest_and_a_rule_file_holding_a_list_say_what_is_expected(tmp_path):
    directory = copy_rulebook(tmp_path)
    (directory / "rulebook.yaml").unlink()
    (directory / "flags" / "R99-list.yaml").write_text("- a\n- b\n")
    assert [(p.file, p.path, p.message) for p in load_problems(directory)] == [
        ("flags/R99-list.yaml", None, "a rule file holds one rule (a mapping) or a list under 'rules:'"),
        ("rulebook.yaml", None, "missing: the rulebook needs a manifest with its name and version")]


def test_a_missing_parameters_file_is_named(tmp_path):
    directory = copy_rulebook(tmp_path)
    (directory / "parameters.yaml").unlink()
    problems = [(p.file, p.path, p.message) for p in load_problems(directory)]
    assert ("parameters.yaml", None, "missing: the rulebook's parameters file") in problems


def test_each_rule_carries_the_title_its_file_gives(rulebook):
    from imt_cds.core._yaml import load_yaml

    titles = {}
    for part in ("always", "data_requests", "derived", "flags", "suppression"):
        for path in sorted((ROOT / "rules" / part).glob("*.yaml")):
            data = load_yaml(path.read_bytes())
            for rule in data["rules"] if "rules" in data else [data]:
                if "title" in rule:
                    titles[rule["id"]] = rule["title"]
    assert len(titles) > 20
    assert {r.id: r.title for r in rulebook.rules if r.id in titles} == titles


def test_a_reason_is_a_derived_fact_rule_with_its_own_description(rulebook):
    reasons = [rule for rule in rulebook.rules if rule.part_of == "D04"]
    assert reasons and all(rule.kind == "derived_fact" for rule in reasons)
    assert any(rule.description for rule in reasons)


# -- found by the whole-file run of core/rule_loader.py --

def _problems_of(directory):
    return [(p.file, p.rule, p.path, p.message, p.suggestion) for p in load_problems(directory)]


def test_the_rulebook_hash_is_the_documented_source_document_so_archived_rulebooks_keep_theirs(rulebook):
    # Audit records carry the rulebook's sha256, and replay rebuilds an archived rulebook and requires that very
    # hash: the recipe (canonical JSON of these keys) must not drift between versions of the library.
    import hashlib

    import orjson

    from imt_cds.core._yaml import load_yaml
    from imt_cds.core.rulebook import natural_key

    def read(path):
        return load_yaml(path.read_text(encoding="utf-8"))

    directory = rulebook.directory
    rule_files = [p for p in directory.rglob("*.yaml") if p.parent != directory and p.parent.name != "terminology"]
    value_sets = [read(p) for p in (directory / "terminology").glob("*.yaml")]
    source = {
        "manifest": read(directory / "rulebook.yaml"),
        "parameters": read(directory / "parameters.yaml")["parameters"],
        "rules": sorted((read(p) for p in rule_files), key=lambda d: natural_key(d["id"])),
        "evidence_sha256": rulebook.evidence.sha256,
        "terminology": {data["value_set"]: data for data in value_sets},
        "drugs": read(directory / "drugs.yaml"),
    }
    assert rulebook.sha256 == hashlib.sha256(orjson.dumps(source, option=orjson.OPT_SORT_KEYS)).hexdigest()


def test_a_copied_group_of_reasons_reports_every_id_it_repeats(tmp_path):
    directory = copy_rulebook(tmp_path)
    (directory / "derived" / "D04-copy.yaml").write_text((directory / "derived/D04-contradiction.yaml").read_text())
    problems = load_problems(directory)
    assert [(p.file, p.rule, p.message) for p in problems] == [
        ("derived/D04-copy.yaml", rule, f"duplicate rule id {rule} (also in derived/D04-contradiction.yaml)")
        for rule in ("C1", "C2", "C3", "C4", "D04")]


def test_a_value_set_that_is_there_but_wrong_is_not_also_reported_missing(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, "terminology/cancer-disease-status.yaml", "value_set:", "value_sett:")
    problems = load_problems(directory)
    assert problems and all(p.file == "terminology/cancer-disease-status.yaml" for p in problems)
    assert not any(p.message.startswith("missing: the FHIR reader needs") for p in problems)


@pytest.mark.parametrize("broken", ["value_set: [\n", "value_sett: x\n"], ids=["unreadable", "malformed"])
def test_a_broken_value_set_does_not_stop_the_others_being_checked(tmp_path, broken):
    directory = copy_rulebook(tmp_path)
    (directory / "terminology" / "aaa-first.yaml").write_text(broken)  # read before alk-inhibitors.yaml
    edit(directory, "drugs.yaml", '      code: "1535457"', '      code: "1535458"')  # ceritinib's code changed
    problems = load_problems(directory)
    assert {p.file for p in problems} == {"terminology/aaa-first.yaml", "drugs.yaml", "terminology/alk-inhibitors.yaml"}


def test_a_malformed_drug_does_not_stop_the_next_drugs_being_checked(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, "drugs.yaml", "class: ALK/ROS1 inhibitor", "class: 5")  # drugs[0]
    edit(directory, "drugs.yaml", "    targets: [alk]\n", "    targets: [alkk]\n")  # drugs[1], ceritinib
    assert [(p.file, p.path, p.suggestion) for p in load_problems(directory)] == [
        ("drugs.yaml", "drugs[0].class", None), ("drugs.yaml", "drugs[1].targets[0]", "alk"),
        ("treatment/R33-next-generation-alk-inhibitor.yaml", "then[0].drugs[0]", None)]


def test_a_drug_citing_an_unknown_evidence_id_is_reported_and_a_drug_keeps_its_evidence(tmp_path, rulebook):
    assert rulebook.drugs["crizotinib"].evidence == ("EXT-FDA-CRIZ-IMT-2022", "EXT-FDA-ROS1-NSCLC")
    directory = copy_rulebook(tmp_path)
    edit(directory, "drugs.yaml", "evidence: [PDQ-PULM-IMT:s13]", "evidence: [PDQ-PULM-IMT:s99]")
    assert _problems_of(directory) == [
        ("drugs.yaml", None, "drugs[1].evidence[0]", "unknown evidence id 'PDQ-PULM-IMT:s99': not in the evidence "
         "registry", "PDQ-PULM-IMT:s19")]


def test_a_number_equal_to_two_parameters_is_reported_once(tmp_path):
    directory = copy_rulebook(tmp_path)  # crizotinib_min_age_years and trk_infant_check_age_years are both 1
    edit(directory, CRIZOTINIB, "title: Consider crizotinib (ALK inhibitor)", "title: Consider crizotinib 1")
    assert _problems_of(directory) == [
        (CRIZOTINIB, "R32a", "then[0].title", "1 in the title equals parameter crizotinib_min_age_years: write "
         "{crizotinib_min_age_years} so the text follows the parameter when it changes", None)]


def test_a_parameter_keeps_its_meaning(rulebook):
    assert rulebook.parameters["crizotinib_min_age_years"].meaning == (
        "Lowest age of the FDA crizotinib label for ALK-positive IMT.")


def test_a_group_file_holds_several_rules_each_checked_at_its_own_line(tmp_path):
    directory = copy_rulebook(tmp_path)
    r14 = (directory / "flags/R14-age-outside-evidence.yaml").read_text()
    r32a = edit(directory, CRIZOTINIB, "derived: ALK_INHIBITOR_ELIGIBLE", "derived: ALK_INHIBITOR_ELIGBLE").read_text()
    (directory / "flags/R14-age-outside-evidence.yaml").unlink()
    (directory / CRIZOTINIB).unlink()

    def item(text):
        lines = text.splitlines()
        return "\n".join(["  - " + lines[0], *("    " + line for line in lines[1:])]) + "\n"

    group = "rules:\n" + item(r14) + item(r32a) + "  - 5\n"
    (directory / "flags/group.yaml").write_text(group)
    lines = group.splitlines()
    when_of_r32a = [n + 1 for n, line in enumerate(lines) if line == "    when:"][-1]
    problems = load_problems(directory)
    assert [(p.file, p.rule, p.path, p.line, p.message, p.suggestion) for p in problems] == [
        ("flags/group.yaml", "R32a", "when", when_of_r32a,
         "derived fact ALK_INHIBITOR_ELIGBLE is not derived by any rule", "ALK_INHIBITOR_ELIGIBLE"),
        ("flags/group.yaml", None, "rules[2]", len(lines), "each item of 'rules' must be a rule mapping", None)]


D04 = "derived/D04-contradiction.yaml"
S01 = "suppression/S01-contradiction-suppresses-treatment.yaml"
R14 = "flags/R14-age-outside-evidence.yaml"


@pytest.mark.parametrize(("file", "old", "new", "path", "message", "suggestion"), [
    (S01, "kind: suppression", "kind: recommendation", "kind", "a rule with 'suppresses' must have kind suppression",
     None),
    (R14, "kind: risk_flag", "kind: derived_fact", "kind",
     "a rule with findings ('then') cannot have kind derived_fact", None),
    (S01, "when: {derived: CONTRADICTION}", "when: {not_derived: CONTRADICTION}", "when",
     "a suppression's condition must be one derived fact ({derived: NAME})", None),
    (S01, "when: {derived: CONTRADICTION}\n", "", "when",
     "missing condition ('when'); use 'when: always' for a rule that always applies", None),
    (D04, "    evidence: []\n    title: ALK reported negative, yet an ALK fusion", "    evidence: [RICH2022:c66]\n"
     "    title: ALK reported negative, yet an ALK fusion", "reasons[0].evidence[0]",
     "unknown evidence id 'RICH2022:c66': not in the evidence registry", "RICH2022:c16"),
    (R14, "strength: DESIGN", "strength: DESING", "strength",
     "unknown strength label 'DESING'; labels: REG, SA-TRIAL, PROSP-REG, OBS-MC, OBS, SR, CASE, NARR, DESIGN, "
     "conflicting, absence of evidence", "DESIGN"),
    (R14, "evidence: [RICH2022:c02]", "evidence: [RICH2022:c02, RICH2022:c02]", "evidence",
     "cites an evidence id twice", None),
    (S01, "R38]", "R38, D06]", "suppresses", "D06 produces no findings to suppress", None),
    (S01, "R38]", "R99]", "suppresses", "suppresses unknown rule R99", "R29"),
    (CRIZOTINIB, "derived: ALK_INHIBITOR_ELIGIBLE", "derived: ALK_INHIBITOR_ELIGBLE", "when",
     "derived fact ALK_INHIBITOR_ELIGBLE is not derived by any rule", "ALK_INHIBITOR_ELIGIBLE"),
    (S01, "expect_suppressed: [REC_UPFRONT_SURGICAL_RESECTION]", "expect_suppressed: [REC_UPFRONT_SURGICAL_RESECTON]",
     "examples[0].expect_suppressed", "REC_UPFRONT_SURGICAL_RESECTON is neither a finding code nor a derived fact",
     "REC_UPFRONT_SURGICAL_RESECTION"),
    (S01, "expect_not: [REC_UPFRONT_SURGICAL_RESECTION]", "expect_not: [CONTRADICTON]",
     "examples[0].expect_not", "CONTRADICTON is neither a finding code nor a derived fact", "CONTRADICTION"),
    (CRIZOTINIB, "facts: {age_years: 8,", "facts: {age_years: 800,", "examples[0].facts.age_years",
     "example is not a valid patient: input should be less than or equal to 120; expected a finite number >= 0 "
     "and <= 120 years, or null", None),
])
def test_each_check_of_a_rules_meaning_says_where_and_what_word_for_word(tmp_path, file, old, new, path, message,
                                                                          suggestion):
    assert_one_problem(tmp_path, file, old, new, path, message, suggestion)


R20 = "flags/R20-ranbp2-alk.yaml"


@pytest.mark.parametrize(("file", "old", "new", "count", "path", "message"), [
    (R20, "fires: true", "fires: false", 1, "examples", "needs at least one example that fires (fires: true)"),
    (R20, "fires: false", "fires: true", 1, "examples", "needs at least one example that stays silent (fires: false)"),
    # a reason needs a silent example as well (only a rule that always applies need not have one)
    (D04, "        fires: false\n", "        fires: true\n", 2, "reasons[0].examples",
     "needs at least one example that stays silent (fires: false)"),
])
def test_a_rule_or_reason_needs_an_example_that_fires_and_one_that_stays_silent(tmp_path, file, old, new, count,
                                                                                 path, message):
    directory = copy_rulebook(tmp_path)
    path_of_file = directory / file
    path_of_file.write_text(path_of_file.read_text().replace(old, new, count))
    problem = only(load_problems(directory))
    assert (problem.file, problem.path, problem.message) == (file, path, message)


def test_every_invalid_example_is_reported_and_invalid_examples_are_not_counted_as_silent_or_firing(tmp_path):
    directory = copy_rulebook(tmp_path)
    path = directory / R20
    path.write_text(path.read_text().replace("facts: {molecular", "facts: {age_years: -1, molecular", 2))
    assert [(p.path, p.message.split(":")[0]) for p in load_problems(directory)] == [
        ("examples[0].facts.age_years", "example is not a valid patient"),
        ("examples[1].facts.age_years", "example is not a valid patient")]


def test_an_example_keeps_its_facts_as_a_validated_patient(rulebook):
    from imt_cds.core.validation import parse_facts

    example = rulebook.rule("R20").examples[0]
    assert example.patient == parse_facts(dict(example.facts))
    assert example.patient.molecular.alk.fusion_partner == "RANBP2"


def test_a_summary_of_exactly_140_characters_is_refused_and_139_loads(tmp_path):
    directory = copy_rulebook(tmp_path)
    summary = ("RANBP2-ALK fusion; case series report relapses on ALK inhibitors in these patients. "
               "Plan close follow-up.")
    edit(directory, R20, summary, "x" * 139)
    load_rulebook(directory)
    edit(directory, R20, "x" * 139, "x" * 140)
    problem = only(load_problems(directory))
    assert (problem.rule, problem.path, problem.message) == (
        "R20", "then[0].summary", "summary of RISK_RANBP2_ALK_TKI_RELAPSE is 140 characters once its parameters are "
        "rendered; it must be shorter than 140")


def test_an_unknown_parameter_in_a_summary_counts_as_written_towards_its_length(tmp_path):
    directory = copy_rulebook(tmp_path)
    summary = ("RANBP2-ALK fusion; case series report relapses on ALK inhibitors in these patients. "
               "Plan close follow-up.")
    edit(directory, R20, summary, "x {nope} " + "x" * 131)  # 140 characters as written
    assert [p.message.split(";")[0] for p in load_problems(directory)] == [
        "{nope} in the summary names no parameter",
        "summary of RISK_RANBP2_ALK_TKI_RELAPSE is 140 characters once its parameters are rendered"]


def test_a_condition_of_one_finding_is_kept_with_that_finding_and_checked_at_its_path(tmp_path, rulebook):
    assert [f.when is not None for f in rulebook.rule("R35").findings] == [False, True]
    directory = copy_rulebook(tmp_path)
    edit(directory, "treatment/R35-trk-inhibitor.yaml", "    when: {fact: age_years, lt:",
         "    when: {fact: age_yaers, lt:")
    problem = only(load_problems(directory))
    assert (problem.rule, problem.path, problem.suggestion) == ("R35", "then[1].when.fact", "age_years")


def test_the_reasons_of_a_grouping_rule_follow_it_in_the_catalogue(rulebook):
    ids = [rule.id for rule in rulebook.rules]
    assert ids[ids.index("D04"):ids.index("D04") + 6] == ["D04", "C1", "C2", "C3", "C4", "D05"]


def test_a_reason_keeps_its_own_strength_evidence_and_text_and_takes_the_groups_when_it_has_none(tmp_path):
    directory = copy_rulebook(tmp_path)
    path = directory / D04
    text = path.read_text().replace("    strength: DESIGN\n    evidence: []\n", "    strength: CASE\n"
                                    "    evidence: [RICH2022:c02]\n", 1)
    path.write_text(text.replace("    strength: DESIGN\n    evidence: []\n", "", 1))  # C2: none of its own
    rulebook = load_rulebook(directory)
    c1, c2 = rulebook.rule("C1"), rulebook.rule("C2")
    assert (c1.strength, c1.evidence, c1.part_of) == ("CASE", ("RICH2022:c02",), "D04")
    assert (c2.strength, c2.evidence) == ("DESIGN", ())
    assert c1.reason == "C1: ALK status negative but an ALK fusion partner is recorded"


def test_a_parameter_whose_structure_is_wrong_leaves_the_other_parameters_in_use(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, "parameters.yaml", "value: 3.9", "value: many")
    assert {p.file for p in load_problems(directory)} == {"parameters.yaml", "flags/R16-tumor-size.yaml"}


def test_a_drug_whose_structure_is_wrong_is_one_problem(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, "drugs.yaml", "    targets: [alk]\n", "")  # ceritinib, named by R33's finding
    problem = only(load_problems(directory))
    assert (problem.file, problem.path) == ("drugs.yaml", "drugs[1].targets")


def test_problems_on_one_line_are_ordered_by_path(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, CRIZOTINIB, "    gene: alk\n    drugs: [crizotinib]\n", "    gene: alkk\n    drugs: [crizotnib]\n")
    path = directory / CRIZOTINIB
    text = path.read_text()
    start = text.index("  - finding: REC_CRIZOTINIB_ALK")
    end = text.index("examples:")
    import yaml

    finding = yaml.safe_load(text[start:end])[0]
    path.write_text(text[:start] + "  - " + yaml.safe_dump(finding, default_flow_style=True, width=1000) + text[end:])
    problems = load_problems(directory)
    assert [p.path for p in problems] == ["then[0].drugs[0]", "then[0].gene"]
    assert problems[0].line == problems[1].line


def test_the_rulebook_carries_its_manifests_title_and_none_when_the_manifest_has_none(tmp_path, rulebook):
    assert rulebook.title == "Inflammatory myofibroblastic tumor (IMT) decision-support rules"
    directory = copy_rulebook(tmp_path)
    edit(directory, "rulebook.yaml", "title: Inflammatory myofibroblastic tumor (IMT) decision-support rules\n", "")
    assert load_rulebook(directory).title == ""


def test_a_rule_listing_one_finding_twice_is_told_so(tmp_path):
    directory = copy_rulebook(tmp_path)
    path = directory / CRIZOTINIB
    text = path.read_text()
    finding = text[text.index("  - finding:"):text.index("examples:")]
    path.write_text(text.replace(finding, finding * 2, 1))
    problem = only(load_problems(directory))
    assert (problem.rule, problem.path, problem.message) == ("R32a", "then", "lists a finding code twice")


def test_a_text_naming_a_parameter_of_a_rulebook_without_parameters_says_there_are_none(tmp_path):
    directory = copy_rulebook(tmp_path)
    (directory / "parameters.yaml").write_text("parameters: {}\n")
    messages = [p.message for p in load_problems(directory) if p.rule == "R14" and p.path == "then[0].summary"]
    assert "{evidence_age_limit_years} in the summary names no parameter; parameters: none" in messages


def test_a_number_written_against_a_parameter_is_still_a_number(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, R20, "title: RANBP2-ALK fusion (relapse",
         "title: RANBP2-ALK fusion 1{size_risk_threshold_cm} (relapse")
    problem = only(load_problems(directory))
    assert (problem.rule, problem.path) == ("R20", "then[0].title")
    assert problem.message.startswith("1 in the title equals parameter crizotinib_min_age_years")


def test_a_finding_naming_a_malformed_drug_still_has_its_other_drugs_checked(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, "drugs.yaml", "class: TRK inhibitor", "class: 5")  # larotrectinib, drugs[9]
    edit(directory, "treatment/R35-trk-inhibitor.yaml", "drugs: [larotrectinib, entrectinib]",
         "drugs: [larotrectinib, crizotinib]")
    assert [(p.file, p.path, p.message) for p in load_problems(directory)] == [
        ("drugs.yaml", "drugs[9].class", "class must be text such as 'ALK inhibitor'; got 5"),
        ("treatment/R35-trk-inhibitor.yaml", "then[0].drugs[1]", "crizotinib does not target ntrk (drugs.yaml lists "
         "alk, ros1)")]


def test_on_one_line_a_problem_that_names_no_rule_comes_before_those_of_a_rule(tmp_path):
    directory = copy_rulebook(tmp_path)
    import yaml

    rule = yaml.safe_load((directory / R14).read_text())
    (directory / R14).unlink()
    rule["strength"] = "DESING"
    (directory / "flags" / "group.yaml").write_text(yaml.safe_dump({"rules": [rule, 5]}, default_flow_style=True,
                                                                   width=100000))
    problems = load_problems(directory)
    assert [(p.line, p.rule, p.path) for p in problems] == [(1, None, "rules[1]"), (1, "R14", "strength")]
