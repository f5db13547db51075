"""What a rule author reads of `imt-cds rules ...` and `imt-cds explain`, line for line, run in this process.

test_authoring_tools.py runs the same commands through the installed script and checks that the words are there
(`"no problems" in stdout`); these compare whole lines and whole outputs, so that a changed phrase, a lost clause, a
column out of line or a line printed when it should not be is seen, and mutation testing's coverage can see which
test runs which line. The expected lines are built from the rulebook's objects where they hold the text (titles,
quotes, examples), so that a change of the shipped rules does not break them; the words around them are written out
here, as an author reads them."""

from __future__ import annotations

import filecmp
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import orjson
import pytest
from cli_support import command
from rulebook_copies import add_flag, copy_rulebook, edit, set_parameters

from imt_cds import Engine, load_rulebook
from imt_cds.authoring.coverage import default_vignettes, measure_coverage, vignette_patients
from imt_cds.authoring.explain import explain
from imt_cds.authoring.rule_examples import run_rule_examples
from imt_cds.authoring.rulebook_diff import diff_rulebooks
from imt_cds.authoring.verification import verify
from imt_cds.core import _resources
from imt_cds.core.conditions import describe
from imt_cds.core.validation import parse_facts_json
from imt_cds.core.wording import plural
from imt_cds.render.fhir_codesystems import code_systems

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "rules"
EXAMPLES = sorted((ROOT / "examples").glob("*.json"))
UNREACHABLE = {"all": [{"fact": "age_years", "gt": 50}, {"fact": "age_years", "lt": 10}]}


def compact(value: object) -> str:
    return orjson.dumps(value).decode()


@pytest.fixture(scope="module")
def shipped():
    return load_rulebook()


def bumped(directory: Path) -> Path:
    """The copy's rulebook version raised, as any change of a rule needs."""
    text = (directory / "rulebook.yaml").read_text()
    version = load_rulebook(directory).version
    major, minor, patch = version.split(".")
    (directory / "rulebook.yaml").write_text(text.replace(f"version: {version}", f"version: {major}.{minor}."
                                                          f"{int(patch) + 1}", 1))
    return directory


# --- list ---------------------------------------------------------------------------------------------------------


def test_list_gives_the_rulebook_then_each_rule_in_columns_with_what_it_produces(capsys, tmp_path):
    directory = copy_rulebook(tmp_path)
    add_flag(directory, "{fact: age_years, gt: 50}", [({"age_years": 60}, True), ({}, False)])
    rulebook = load_rulebook(directory)
    status, out, err = command(capsys, "rules", "list", "--rules", directory)
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == (f"rulebook {rulebook.name} {rulebook.version} ({len(rulebook.rules)} rules, sha256 "
                        f"{rulebook.sha256[:12]})")
    # the added flag, written out: id, version, kind and title in columns; what it produces under the title
    at = lines.index("R00   1.0.0   risk_flag       A flag added by the test")
    assert lines[at + 1] == " " * 29 + "-> FLAG_ADDED_BY_TEST"
    expected = []
    for rule in rulebook.rules:
        indent = "  " if rule.part_of else ""
        expected.append(f"{indent}{rule.id:<5} {rule.version:<7} {rule.kind:<15} {rule.title}")
        if rule.suppresses:
            expected.append(f"{indent}{'':<29}-> suppresses {', '.join(rule.suppresses)}")
        elif rule.codes:
            expected.append(f"{indent}{'':<29}-> {', '.join(rule.codes)}")
        elif rule.derives:
            expected.append(f"{indent}{'':<29}-> derives {rule.derives}")
    assert lines[1:] == expected


def test_list_indents_a_reason_under_its_rule_and_names_what_a_suppression_suppresses(capsys, shipped):
    lines = command(capsys, "rules", "list")[1].splitlines()
    c1 = shipped.get("C1")
    at = lines.index(f"  C1    {c1.version:<7} derived_fact    {c1.title}")
    assert lines[at + 1] == "  " + " " * 29 + "-> derives CONTRADICTION"
    s01 = shipped.get("S01")
    at = lines.index(f"S01   {s01.version:<7} suppression     {s01.title}")
    assert lines[at + 1] == " " * 29 + "-> suppresses " + ", ".join(s01.suppresses)
    assert s01.codes == () and len(s01.suppresses) > 1


# --- show ---------------------------------------------------------------------------------------------------------


def examples_lines(rule) -> list[str]:
    lines = ["  examples:"]
    for example in rule.examples:
        lines.append(f"    - {example.name}: {'fires' if example.fires else 'stays silent'}")
        lines.append(f"      facts: {compact(dict(example.facts))}")
        for key in ("expect", "expect_not", "expect_suppressed"):
            if getattr(example, key):
                lines.append(f"      {key}: {', '.join(getattr(example, key))}")
    return lines


def test_show_a_treatment_rule_with_its_drugs_quotes_and_citations(capsys, shipped):
    rule = shipped.get("R32a")
    (finding,) = rule.findings
    evidence = [shipped.evidence[e] for e in rule.evidence]
    quoted = [e for e in evidence if e.quote]
    cited = [e for e in evidence if not e.quote]
    assert quoted and cited and any(e.level for e in quoted) and any(not e.level for e in quoted)
    expected = [
        f"R32a v{rule.version}: {rule.title}",
        f"  kind: recommendation    strength: {rule.strength}    file: treatment/R32a-crizotinib-alk.yaml",
        f"  when: {describe(rule.when)}",
        "  produces REC_CRIZOTINIB_ALK [recommendation, indicator info]",
        f"    {finding.title}: {finding.summary}",
        "    about: gene ALK; crizotinib (ALK/ROS1 inhibitor; RxNorm 1148495; labelled from crizotinib_min_age_years "
        "for ALK)",
        "  evidence:",
        *[(f'    {e.id}: "{e.quote}"' + (f" [level {e.level}]" if e.level else "") + f" ({e.source})")
          if e.quote else f"    {e.id}: {e.citation}. {e.claim} ({e.verification})" for e in evidence],
        *examples_lines(rule),
    ]
    assert command(capsys, "rules", "show", "R32a") == (0, "\n".join(expected) + "\n", "")


def test_show_a_rule_with_a_conditional_finding_and_drugs_without_a_verified_code(capsys, shipped):
    rule = shipped.get("R35")
    out = command(capsys, "rules", "show", "R35")[1].splitlines()
    about = ("    about: gene NTRK; larotrectinib (TRK inhibitor; no verified RxNorm code: matched by name); "
             "entrectinib (TRK/ROS1 inhibitor; no verified RxNorm code: matched by name)")
    first, second = rule.findings
    assert out[3:9] == [
        f"  produces {first.code} [recommendation, indicator {first.indicator}]",
        f"    {first.title}: {first.summary}", about,
        f"  produces FLAG_VERIFY_INFANT_LABELING [flag, indicator critical]  (only when {describe(second.when)})",
        f"    {second.title}: {second.summary}", about]


def test_show_names_a_gene_without_drugs_and_each_labelled_age_of_a_drug(capsys, tmp_path):
    directory = copy_rulebook(tmp_path)
    flag = add_flag(directory, "{fact: age_years, gt: 50}", [({"age_years": 60}, True), ({}, False)])
    flag.write_text(flag.read_text().replace("  indicator: warning\n", "  indicator: warning\n  gene: ros1\n", 1))
    edit(directory, "drugs.yaml", "label_min_age: {alk: crizotinib_min_age_years}",
         "label_min_age: {alk: crizotinib_min_age_years, ros1: crizotinib_min_age_years}")
    assert "    about: gene ROS1" in command(capsys, "rules", "show", "R00", "--rules", directory)[1].splitlines()
    assert ("    about: gene ALK; crizotinib (ALK/ROS1 inhibitor; RxNorm 1148495; labelled from "
            "crizotinib_min_age_years for ALK, labelled from crizotinib_min_age_years for ROS1)") in command(
        capsys, "rules", "show", "R32a", "--rules", directory)[1].splitlines()


def test_show_a_reason_of_a_derived_fact(capsys, shipped):
    rule = shipped.get("C1")
    assert command(capsys, "rules", "show", "C1") == (0, "\n".join([
        f"C1 v{rule.version}: {rule.title}",
        "  kind: derived_fact    strength: DESIGN    file: derived/D04-contradiction.yaml",
        f"  reason of D04: {rule.reason}",
        f"  when: {describe(rule.when)}",
        "  derives: CONTRADICTION",
        "  evidence: none (a DESIGN choice of this library)",
        *examples_lines(rule)]) + "\n", "")


def test_show_a_derived_fact_made_of_reasons(capsys, shipped):
    rule = shipped.get("D04")
    assert command(capsys, "rules", "show", "D04") == (0, "\n".join([
        f"D04 v{rule.version}: {rule.title}",
        "  kind: derived_fact    strength: DESIGN    file: derived/D04-contradiction.yaml",
        f"  note: {rule.description}",
        "  holds when any of its reasons holds: C1, C2, C3, C4",
        "  evidence: none (a DESIGN choice of this library)",
        *examples_lines(rule)]) + "\n", "")


def test_show_a_suppression_and_every_kind_of_expectation_of_its_examples(capsys, shipped):
    rule = shipped.get("S01")
    lines = examples_lines(rule)
    assert any("expect_not: " in line for line in lines) and any("expect_suppressed: " in line for line in lines)
    assert command(capsys, "rules", "show", "S01") == (0, "\n".join([
        f"S01 v{rule.version}: {rule.title}",
        f"  kind: suppression    strength: DESIGN    file: {rule.file}",
        f"  note: {rule.description}",
        "  when: CONTRADICTION",
        f"  suppresses the findings of: {', '.join(rule.suppresses)}",
        "  evidence: none (a DESIGN choice of this library)",
        *lines]) + "\n", "")


def test_show_an_unknown_rule_suggests_the_closest_ids(capsys):
    assert command(capsys, "rules", "show", "S1") == (2, "", "imt-cds: no rule 'S1' in rulebook imt; did you mean "
                                                             "S01?\n")
    assert command(capsys, "rules", "show", "R32") == (
        2, "", "imt-cds: no rule 'R32' in rulebook imt; did you mean R32b, R32a, R38?\n")
    assert command(capsys, "rules", "show", "QQQQ") == (2, "", "imt-cds: no rule 'QQQQ' in rulebook imt\n")


# --- copy ---------------------------------------------------------------------------------------------------------


def same_tree(a: Path, b: Path) -> bool:
    comparison = filecmp.dircmp(a, b)
    if comparison.left_only or comparison.right_only or comparison.diff_files or comparison.funny_files:
        return False
    return all(same_tree(a / name, b / name) for name in comparison.common_dirs)


def test_copy_copies_the_shipped_rulebook_and_on_request_its_evidence(capsys, tmp_path):
    rules, seeds = _resources.rules_dir(), _resources.seeds_dir()
    target = tmp_path / "mine"
    assert command(capsys, "rules", "copy", target) == (0, f"copied rulebook {rules} -> {target}\n", "")
    assert same_tree(rules, target)
    assert not (tmp_path / "evidence").exists()
    again, evidence = tmp_path / "again", tmp_path / "evidence"
    assert command(capsys, "rules", "copy", again, "--seeds-to", evidence) == (
        0, f"copied rulebook {rules} -> {again}\ncopied evidence {seeds} -> {evidence}\n", "")
    assert same_tree(seeds, evidence) and same_tree(rules, again)


def test_copy_copies_the_rulebook_given_with_rules(capsys, tmp_path):
    source = copy_rulebook(tmp_path)
    add_flag(source, "{fact: age_years, gt: 50}", [({"age_years": 60}, True), ({}, False)])
    target = tmp_path / "mine"
    assert command(capsys, "rules", "copy", target, "--rules", source) == (
        0, f"copied rulebook {source} -> {target}\n", "")
    assert same_tree(source, target) and (target / "flags" / "R00-added.yaml").is_file()


def test_copy_never_overwrites_and_never_copies_a_broken_rulebook(capsys, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    assert command(capsys, "rules", "copy", taken) == (
        2, "", f"imt-cds: {taken} already exists; choose a new directory\n")
    assert list(taken.iterdir()) == []
    new = tmp_path / "new"
    assert command(capsys, "rules", "copy", new, "--seeds-to", taken) == (
        2, "", f"imt-cds: {taken} already exists; choose a new directory\n")
    assert not new.exists()
    broken = copy_rulebook(tmp_path)
    edit(broken, "data_requests/R03-request-alk-testing.yaml", "molecular.alk.status", "molecular.alk.statsu")
    status, out, err = command(capsys, "rules", "copy", new, "--rules", broken)
    assert status != 0 and out == "" and "molecular.alk.statsu" in err
    assert not new.exists()


# --- codesystems --------------------------------------------------------------------------------------------------


def test_codesystems_writes_one_file_per_system_and_a_line_for_each(capsys, tmp_path, shipped):
    output = tmp_path / "made" / "here"
    systems = code_systems(shipped)
    status, out, err = command(capsys, "rules", "codesystems", "-o", output)
    assert (status, err) == (0, "")
    assert out.splitlines() == [
        f"{output / ('CodeSystem-' + s['id'] + '.json')}  {s['url']} {s['version']} ({s['count']} codes)"
        for s in systems]
    assert sorted(p.name for p in output.iterdir()) == sorted(f"CodeSystem-{s['id']}.json" for s in systems)
    for system in systems:
        text = (output / f"CodeSystem-{system['id']}.json").read_text(encoding="utf-8")
        assert text == json.dumps(system, indent=2, ensure_ascii=False) + "\n"


def test_codesystems_replaces_the_files_of_a_folder_and_keeps_text_as_it_is(capsys, tmp_path):
    directory = copy_rulebook(tmp_path)
    add_flag(directory, "{fact: age_years, gt: 50}", [({"age_years": 60}, True), ({}, False)],
             title="Âge ≥ 50 ans")
    output = tmp_path / "out"
    output.mkdir()
    (output / "CodeSystem-imt-cds-finding-code.json").write_text("old")
    status, out, err = command(capsys, "rules", "codesystems", "-o", output, "--rules", directory)
    assert (status, err) == (0, "")
    files = sorted(output.glob("CodeSystem-*.json"))
    assert len(out.splitlines()) == len(files) == 5
    findings = (output / "CodeSystem-imt-cds-finding-code.json").read_text(encoding="utf-8")
    assert "Âge ≥ 50 ans" in findings and "\\u" not in findings and json.loads(findings)["id"] == "imt-cds-finding-code"


def test_codesystems_says_when_it_cannot_write(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    status, out, err = command(capsys, "rules", "codesystems", "-o", blocker)
    assert (status, out) == (2, "")
    assert err == f"imt-cds: cannot write code systems to --output {blocker}: File exists\n"


# --- lint ---------------------------------------------------------------------------------------------------------


def test_lint_of_a_clean_rulebook_is_one_line(capsys, shipped):
    assert command(capsys, "rules", "lint") == (
        0, f"rulebook {shipped.name} {shipped.version}: {len(shipped.rules)} rules, no problems\n", "")


def test_lint_prints_each_problem_and_counts_them(capsys, tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, "data_requests/R03-request-alk-testing.yaml", "molecular.alk.status", "molecular.alk.statsu")
    status, out, err = command(capsys, "rules", "lint", "--rules", directory)
    assert (status, err) == (1, "1 problem found\n")
    assert len(out.splitlines()) == 1
    assert out.startswith("data_requests/R03-request-alk-testing.yaml:7, rule R03, when.fact: ")
    edit(directory, "treatment/R32a-crizotinib-alk.yaml", "EXT-BUTRYNSKI2010", "EXT-BUTRYNSKY2010")
    status, out, err = command(capsys, "rules", "lint", "--rules", directory)
    assert (status, err, len(out.splitlines())) == (1, "2 problems found\n", 2)


def test_lint_prints_each_evidence_problem_and_counts_them(capsys, tmp_path):
    seeds = tmp_path / "seeds"
    assert command(capsys, "rules", "copy", tmp_path / "rules", "--seeds-to", seeds)[0] == 0
    registry = (seeds / "evidence.yaml").read_text()
    quote = "Five patients had complete responses"
    assert registry.count(quote) == 1
    (seeds / "evidence.yaml").write_text(registry.replace(quote, "Six patients had complete responses"))
    status, out, err = command(capsys, "rules", "lint", "--seeds", seeds)
    assert (status, err) == (1, "1 evidence problem found\n")
    assert len(out.splitlines()) == 1 and "Six patients had complete responses" in out
    registry = (seeds / "evidence.yaml").read_text()
    quote = "The U.S. Food and Drug Administration (FDA) approved crizotinib"
    (seeds / "evidence.yaml").write_text(registry.replace(quote, "The FDA approved crizotinib", 1))
    status, out, err = command(capsys, "rules", "lint", "--seeds", seeds)
    assert (status, err, len(out.splitlines())) == (1, "2 evidence problems found\n", 2)


# --- test ---------------------------------------------------------------------------------------------------------


def example_count(directory: Path | None = None) -> int:
    return sum(len(rule.examples) for rule in load_rulebook(directory).rules)


def test_test_of_passing_examples_is_one_line_and_a_junit_report(capsys, tmp_path):
    count = example_count()
    report = tmp_path / "junit.xml"
    assert command(capsys, "rules", "test", "--junit", report) == (0, f"{count} of {count} examples pass\n", "")
    root = ET.parse(report).getroot()
    assert (root.tag, root.attrib) == ("testsuites", {"name": "imt-cds", "tests": str(count), "failures": "0"})
    (suite,) = root
    assert (suite.tag, suite.attrib) == ("testsuite", {"name": "imt-cds rule examples", "tests": str(count),
                                                       "failures": "0", "errors": "0", "skipped": "0"})
    cases = list(suite)
    assert len(cases) == count and all(len(case) == 0 for case in cases)
    first = load_rulebook().rules[0]
    assert cases[0].attrib == {"classname": f"rules.{first.id}", "name": first.examples[0].name, "file": first.file}


def indented_why_not(directory: Path, facts: dict, code: str) -> list[str]:
    engine = Engine(directory)
    text = explain(engine, parse_facts_json(json.dumps(facts)), code).to_text()
    return ["      " + line for line in text.splitlines()[1:]]


def test_test_of_an_example_that_should_fire_and_does_not_shows_why_not(capsys, tmp_path):
    directory = copy_rulebook(tmp_path)
    add_flag(directory, "{fact: age_years, gt: 50}", [({"age_years": 40}, True), ({}, False)])
    count = example_count(directory)
    report = tmp_path / "junit.xml"
    (outcome,) = [o for o in run_rule_examples(Engine(directory)) if not o.passed]
    status, out, err = command(capsys, "rules", "test", "--rules", directory, "--junit", report)
    assert (status, err) == (1, "")
    assert out.splitlines() == [
        "FAIL R00 (flags/R00-added.yaml) example 'example 1'",
        *[f"  - {failure}" for failure in outcome.failures],
        "    why not:",
        *indented_why_not(directory, {"age_years": 40}, "FLAG_ADDED_BY_TEST"),
        f"{count - 1} of {count} examples pass; 1 fail"]
    assert "    - `age_years` is `40`; needs > 50" in out  # what the author needs, in the why-not
    root = ET.parse(report).getroot()
    assert root.attrib["failures"] == "1" and root[0].attrib["failures"] == "1"
    (failed,) = [case for case in root.iter("testcase") if len(case)]
    assert failed.attrib == {"classname": "rules.R00", "name": "example 1", "file": "flags/R00-added.yaml"}
    assert failed[0].tag == "failure"
    assert failed[0].attrib == {"message": "; ".join(outcome.failures)} and failed[0].text == "\n".join(
        outcome.failures)


def test_test_of_an_example_that_should_stay_silent_and_fires_shows_the_match(capsys, tmp_path):
    directory = copy_rulebook(tmp_path)
    add_flag(directory, "{fact: age_years, gt: 50}", [({"age_years": 60}, True), ({"age_years": 70}, False)])
    count = example_count(directory)
    (outcome,) = [o for o in run_rule_examples(Engine(directory)) if not o.passed]
    (entry,) = [e for e in outcome.assessment.trace if e.rule.id == "R00"]
    status, out, _ = command(capsys, "rules", "test", "--rules", directory)
    assert status == 1
    assert out.splitlines() == [
        "FAIL R00 (flags/R00-added.yaml) example 'example 2'",
        *[f"  - {failure}" for failure in outcome.failures],
        f"    it fired on branch {entry.engine_rule}, matching {compact(entry.to_dict()['matched'])}",
        f"{count - 1} of {count} examples pass; 1 fail"]


def test_test_of_a_derived_fact_that_does_not_hold_points_to_explain(capsys, tmp_path):
    directory = copy_rulebook(tmp_path)
    rule = load_rulebook(directory).get("D01")
    edit(directory, rule.file, "    facts: {age_years: 8}\n    fires: true\n", "    facts: {}\n    fires: true\n")
    count = example_count(directory)
    (outcome,) = [o for o in run_rule_examples(Engine(directory)) if not o.passed]
    assert outcome.rule.id == "D01" and outcome.example.fires and not outcome.fired
    status, out, _ = command(capsys, "rules", "test", "--rules", directory)
    assert status == 1
    assert out.splitlines() == [
        f"FAIL D01 ({rule.file}) example {outcome.example.name!r}",
        *[f"  - {failure}" for failure in outcome.failures],
        "    D01 derives AGE_KNOWN; see `imt-cds explain` on this patient",
        f"{count - 1} of {count} examples pass; 1 fail"]


def test_test_explains_each_expected_code_that_is_missing(capsys, tmp_path):
    directory = copy_rulebook(tmp_path)
    add_flag(directory, "{fact: age_years, gt: 50}", [({"age_years": 60}, True), ({}, False)])
    flag = directory / "flags" / "R00-added.yaml"
    # (the review is in every assessment: an expected code that is there is not explained)
    flag.write_text(flag.read_text().replace(
        "  fires: true\n", "  fires: true\n  expect: [REC_MULTIDISCIPLINARY_REVIEW, REC_CRIZOTINIB_ALK, "
        "REC_TRK_INHIBITOR]\n", 1))
    count = example_count(directory)
    (outcome,) = [o for o in run_rule_examples(Engine(directory)) if not o.passed]
    assert len(outcome.failures) == 2
    report = tmp_path / "junit.xml"
    status, out, _ = command(capsys, "rules", "test", "--rules", directory, "--junit", report)
    assert status == 1
    assert out.splitlines() == [
        "FAIL R00 (flags/R00-added.yaml) example 'example 1'",
        *[f"  - {failure}" for failure in outcome.failures],
        "    why not REC_CRIZOTINIB_ALK:",
        *indented_why_not(directory, {"age_years": 60}, "REC_CRIZOTINIB_ALK"),
        "    why not REC_TRK_INHIBITOR:",
        *indented_why_not(directory, {"age_years": 60}, "REC_TRK_INHIBITOR"),
        f"{count - 1} of {count} examples pass; 1 fail"]
    # the JUnit report: an XML declaration, then each failure of the example in its message and its text
    assert report.read_text(encoding="utf-8").startswith("<?xml version='1.0' encoding='utf-8'?>\n<testsuites ")
    (failure,) = [case[0] for case in ET.parse(report).getroot().iter("testcase") if len(case)]
    assert failure.get("message") == f"{outcome.failures[0]}; {outcome.failures[1]}"
    assert failure.text == f"{outcome.failures[0]}\n{outcome.failures[1]}"


# --- coverage -----------------------------------------------------------------------------------------------------


def coverage_lines(report) -> list[str]:
    lines = []
    for rule in report.rules:
        branches = f"{len(rule.exercised)}/{len(rule.branches)} branches"
        lines.append(f"  {'ok ' if rule.fired else '-- '}{rule.rule:<5} {branches:<14} fired for "
                     f"{plural(rule.patients, 'patient')}")
    if report.unexercised_branches:
        lines.append("branches never exercised:")
        lines += [f"  {rule_id}: {branch}" for rule_id, branch in report.unexercised_branches]
    return lines


def test_coverage_by_the_examples_alone(capsys, shipped):
    report = measure_coverage(Engine(shipped), [], ())
    assert report.unexercised_branches and not report.never_fired
    assert command(capsys, "rules", "coverage", "--no-vignettes") == (0, "\n".join([
        f"coverage of rulebook {shipped.name} {shipped.version} by {report.patients} patients (rule examples)",
        *coverage_lines(report),
        "every rule fired at least once"]) + "\n", "")
    status, out, err = command(capsys, "rules", "coverage", "--no-vignettes", "--format", "json")
    assert (status, err) == (0, "") and json.loads(out) == report.to_dict()


def test_coverage_with_the_vignettes_by_default_or_from_a_folder(capsys, shipped, tmp_path):
    directory = default_vignettes()
    assert directory is not None
    extra = vignette_patients(directory)
    report = measure_coverage(Engine(shipped), extra, (f"{len(extra)} vignettes in {directory}",))
    heading = (f"coverage of rulebook {shipped.name} {shipped.version} by {report.patients} patients (rule examples; "
               f"{len(extra)} vignettes in {directory})")
    assert report.patients == sum(len(r.examples) for r in shipped.rules) + len(extra)
    assert command(capsys, "rules", "coverage") == (0, "\n".join([
        heading, *coverage_lines(report), "every rule fired at least once"]) + "\n", "")
    two = tmp_path / "two"
    two.mkdir()
    for path in sorted(directory.glob("*.json"))[:2]:
        (two / path.name).write_bytes(path.read_bytes())
    status, out, _ = command(capsys, "rules", "coverage", "--vignettes", two)
    assert status == 0 and out.splitlines()[0].endswith(f"patients (rule examples; 2 vignettes in {two})")
    missing = tmp_path / "none"
    assert command(capsys, "rules", "coverage", "--vignettes", missing) == (
        2, "", f"imt-cds: error: --vignettes {missing}: no such directory\n")


def test_coverage_names_the_rules_that_never_fired(capsys, tmp_path):
    directory = copy_rulebook(tmp_path)
    for rule_id in ("R40", "R41"):
        add_flag(directory, UNREACHABLE, [({"age_years": 60}, True), ({}, False)], rule_id=rule_id,
                 finding=f"FLAG_NEVER_{rule_id}")
    rulebook = load_rulebook(directory)
    report = measure_coverage(Engine(rulebook), [], ())
    status, out, _ = command(capsys, "rules", "coverage", "--no-vignettes", "--rules", directory)
    assert status == 1
    lines = out.splitlines()
    assert "  -- R40   0/1 branches   fired for 0 patients" in lines
    assert lines[-1] == "rules never fired: R40, R41" and "every rule fired at least once" not in out
    assert lines[1:-1] == coverage_lines(report)


# --- verify -------------------------------------------------------------------------------------------------------


def test_verify_of_the_shipped_rulebook_lists_only_what_does_not_hold(capsys, shipped):
    checks = verify(shipped)
    (unchecked,) = [c for c in checks if c.status != "holds"]
    assert command(capsys, "rules", "verify") == (0, "\n".join([
        f"verifying rulebook {shipped.name} {shipped.version} over the whole input space",
        f"not checked: {unchecked.name}: {unchecked.description}",
        f"  {unchecked.detail}",
        f"{len(checks) - 1} of {len(checks) - 1} checkable checks hold; 1 not checkable here (listed above)"]) + "\n",
        "")
    status, out, _ = command(capsys, "rules", "verify", "--format", "json")
    assert status == 0 and json.loads(out) == {
        "rulebook": {"name": shipped.name, "version": shipped.version, "sha256": shipped.sha256}, "ok": True,
        "checks": [c.to_dict() for c in checks]}


def test_verify_prints_a_violation_with_its_counterexample_confirmed_on_the_engine(capsys, tmp_path):
    directory = copy_rulebook(tmp_path)
    set_parameters(directory, {"crizotinib_min_age_years": 0})
    checks = verify(load_rulebook(directory))
    violated = [c for c in checks if c.status == "violated"]
    unchecked = [c for c in checks if c.status == "not_checked"]
    assert len(violated) == 2 and any(c.counterexample is not None for c in violated)
    status, out, err = command(capsys, "rules", "verify", "--rules", directory)
    assert (status, err) == (1, "")
    # verify() prints canonical counterexamples: the command names the same ones as the call above, whatever this
    # process asked z3 before
    expected = [f"verifying rulebook imt {load_rulebook(directory).version} over the whole input space"]
    for check in checks:
        if check.status == "holds":
            continue
        expected.append(f"{ {'violated': 'VIOLATED', 'not_checked': 'not checked'}[check.status]}: {check.name}: "
                        f"{check.description}")
        if check.detail:
            expected.append(f"  {check.detail}")
        if check.counterexample is not None:
            expected += [f"  counterexample: {compact(check.counterexample)}", "  (confirmed on the engine)"]
    checkable = len(checks) - len(unchecked)
    expected.append(f"{checkable - 2} of {checkable} checkable checks hold; 2 violated; 1 not checkable here (listed "
                    "above)")
    assert out.splitlines() == expected
    counterexamples = [c.counterexample for c in violated if c.counterexample is not None]
    assert "VIOLATED: safety property 6: " in out
    engine = Engine(directory)
    assert counterexamples and all(patient["age_years"] < 1 and "REC_CRIZOTINIB_ALK" in engine.evaluate(patient).codes
                                   for patient in counterexamples)
    status, out, _ = command(capsys, "rules", "verify", "--rules", directory, "--format", "json")
    assert status == 1 and json.loads(out)["ok"] is False


def test_verify_prints_a_two_patient_counterexample_as_before_and_after(capsys, tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, "flags/R16-tumor-size.yaml", "gt: {param: size_risk_threshold_cm}",
         "lt: {param: size_risk_threshold_cm}")
    check = next(c for c in verify(load_rulebook(directory)) if c.name == "safety property 8")
    assert check.counterexample_after is not None
    status, out, _ = command(capsys, "rules", "verify", "--rules", directory)
    lines = out.splitlines()
    at = lines.index(f"VIOLATED: safety property 8: {check.description}") + (2 if check.detail else 1)
    assert lines[at:at + 2] == [f"  counterexample, before: {compact(check.counterexample)}",
                                f"  counterexample, after:  {compact(check.counterexample_after)}"]
    assert lines[at + 2] == "  (confirmed on the engine)"
    before = json.loads(lines[at].removeprefix("  counterexample, before: "))
    after = json.loads(lines[at + 1].removeprefix("  counterexample, after:  "))
    engine = Engine(directory)  # a larger tumour loses the size flag: what property 8 forbids
    assert before["tumor"]["size_cm"] < after["tumor"]["size_cm"]
    assert "RISK_TUMOR_SIZE_ABOVE_COHORT_MEDIAN" in engine.evaluate(before).codes - engine.evaluate(after).codes
    assert status == 1


def test_verify_prints_a_warning_and_counts_it(capsys, tmp_path):
    directory = copy_rulebook(tmp_path)
    add_flag(directory, {"any": [UNREACHABLE, {"fact": "age_years", "gt": 50}]},
             [({"age_years": 60}, True), ({}, False)], rule_id="R40", finding="FLAG_SOMETIMES")
    checks = verify(load_rulebook(directory))
    (warning,) = [c for c in checks if c.status == "warning"]
    assert not [c for c in checks if c.status == "violated"]
    status, out, _ = command(capsys, "rules", "verify", "--rules", directory)
    lines = out.splitlines()
    assert status == 0
    assert lines[1:3] == [f"warning: {warning.name}: {warning.description}", f"  {warning.detail}"]
    checkable = len(checks) - 1
    assert lines[-1] == (f"{checkable - 1} of {checkable} checkable checks hold; 1 warning; 1 not checkable here "
                         "(listed above)")


# --- diff ---------------------------------------------------------------------------------------------------------


def test_diff_of_identical_rulebooks_is_three_lines(capsys, tmp_path, shipped):
    directory = copy_rulebook(tmp_path)
    name = f"{shipped.name} {shipped.version}"
    assert command(capsys, "rules", "diff", SHIPPED, directory) == (0, "\n".join([
        f"rulebook {name} -> {name}",
        "  no rule, parameter, evidence, drug or value set changes",
        "no patient's assessment changes"]) + "\n", "")


def test_diff_lists_each_kind_of_change_and_the_patients_it_affects(capsys, tmp_path, shipped):
    directory = copy_rulebook(tmp_path)
    set_parameters(directory, {"size_risk_threshold_cm": 4.5})
    edit(directory, "derived/D02-advanced-disease.yaml",
         "    - {fact: history.progressed_on_prior_systemic, is: true}\n", "")
    add_flag(directory, "{fact: age_years, gt: 50}", [({"age_years": 60}, True), ({}, False)])
    edit(directory, "drugs.yaml", "brands: [Xalkori]", "brands: [Xalkori, Crizo]")
    new = load_rulebook(directory)
    result = diff_rulebooks(shipped, new, 3)
    assert result.count_is_exact and len(result.examples) == 3
    name = f"{shipped.name} {shipped.version}"
    expected = [
        f"rulebook {name} -> {name}",
        "  changed       D02   v1.0.0 -> v1.0.0 (when)",
        "    ERROR: D02 changed (when) but its version was not bumped (still 1.0.0)",
        "  added         R00   new, v1.0.0",
        "  parameter     size_risk_threshold_cm: 3.9 -> 4.5",
        "  drug          crizotinib: changed brands",
        f"  ERROR: the rulebook changed but its version in rulebook.yaml was not bumped (still {shipped.version})",
        f"patients whose assessment changes: {result.changed_classes} of {result.total_classes} classes over the "
        f"fields {', '.join(result.class_fields)}"]
    status, out, err = command(capsys, "rules", "diff", SHIPPED, directory)
    assert (status, err) == (1, "")
    lines = out.splitlines()
    assert lines[:len(expected)] == expected and len(lines) == len(expected) + 3
    # The example patients are canonical (the same in every call): the library's, each checked on the two engines.
    assert lines[len(expected):] == [
        f"  e.g. {compact(e['patient'])}: gains {sorted(set(e['new']) - set(e['old'])) or 'nothing'}, "
        f"loses {sorted(set(e['old']) - set(e['new'])) or 'nothing'}" for e in result.examples]
    old_engine, new_engine = Engine(shipped), Engine(new)
    for line in lines[len(expected):]:
        patient, gains, loses = re.fullmatch(r"  e\.g\. (\{.*\}): gains (.*), loses (.*)", line).groups()
        old, now = old_engine.evaluate(json.loads(patient)).codes, new_engine.evaluate(json.loads(patient)).codes
        assert gains == str(sorted(now - old) or "nothing") and loses == str(sorted(old - now) or "nothing")
    assert any(line.endswith("gains ['FLAG_ADDED_BY_TEST'], loses nothing") for line in lines)
    assert any(line.endswith("gains nothing, loses ['RISK_TUMOR_SIZE_ABOVE_COHORT_MEDIAN']") for line in lines)
    status, out, _ = command(capsys, "rules", "diff", SHIPPED, directory, "--examples", 1)
    assert status == 1 and sum(line.startswith("  e.g. ") for line in out.splitlines()) == 1
    status, out, err = command(capsys, "rules", "diff", SHIPPED, directory, "--format", "json")
    assert (status, err, out.endswith("}\n"), "\n" in out[:-1]) == (1, "", True, False)
    assert json.loads(out) == result.to_dict()


def test_diff_of_a_removed_rule_and_changed_metadata_with_versions_bumped(capsys, tmp_path, shipped):
    directory = bumped(copy_rulebook(tmp_path))
    (directory / "flags" / "R15-respiratory-symptoms.yaml").unlink()
    edit(directory, "flags/R16-tumor-size.yaml", "indicator: warning", "indicator: info")
    edit(directory, "flags/R16-tumor-size.yaml", "evidence: [RICH2022:c06, RICH2022:c15]", "evidence: [RICH2022:c06]")
    edit(directory, "flags/R16-tumor-size.yaml", f"version: {shipped.get('R16').version}", "version: 9.0.0")
    new = load_rulebook(directory)
    result = diff_rulebooks(shipped, new, 3)
    assert result.ok and result.changed_classes > 0
    status, out, _ = command(capsys, "rules", "diff", SHIPPED, directory)
    lines = out.splitlines()
    assert status == 0
    assert lines[:4] == [
        f"rulebook {shipped.name} {shipped.version} -> {new.name} {new.version}",
        f"  removed       R15   was v{shipped.get('R15').version}",
        f"  changed       R16   v{shipped.get('R16').version} -> v9.0.0 (evidence, then)",
        "  metadata      R16 RISK_TUMOR_SIZE_ABOVE_COHORT_MEDIAN indicator: warning -> info"]
    bound = "" if result.count_is_exact else "at least "
    assert lines[4] == (f"patients whose assessment changes: {bound}{result.changed_classes} of "
                        f"{result.total_classes} classes over the fields {', '.join(result.class_fields)}")
    status, out, _ = command(capsys, "rules", "diff", SHIPPED, directory, "--format", "json")
    assert status == 0 and json.loads(out)["ok"] is True


def test_diff_of_a_value_set_change(capsys, tmp_path):
    directory = bumped(copy_rulebook(tmp_path))
    edit(directory, "terminology/imt-diagnosis.yaml", "codes:\n", "codes:\n  - system: \"urn:oid:1.2.3\"\n"
         "    code: \"IMT-LOCAL\"\n    display: \"IMT (local code)\"\n    source: \"the institution\"\n")
    status, out, _ = command(capsys, "rules", "diff", SHIPPED, directory)
    assert status == 0
    assert out.splitlines()[1:] == ["  value set     imt-diagnosis: changed +urn:oid:1.2.3|IMT-LOCAL",
                                    "no patient's assessment changes"]


@pytest.mark.parametrize("count", [10, 11])
def test_diff_of_a_value_set_change_too_long_to_list_says_where_every_code_is(capsys, tmp_path, count):
    directory = bumped(copy_rulebook(tmp_path))
    codes = "".join(f'  - system: "urn:oid:1.2.3"\n    code: "L{i:02}"\n    display: "L{i}"\n    source: "the site"\n'
                    for i in range(count))
    edit(directory, "terminology/imt-diagnosis.yaml", "codes:\n", "codes:\n" + codes)
    status, out, _ = command(capsys, "rules", "diff", SHIPPED, directory)
    assert status == 0
    every = [f"urn:oid:1.2.3|L{i:02}" for i in range(count)]
    if count == 10:
        expected = ["  value set     imt-diagnosis: changed " + ", ".join("+" + code for code in every)]
    else:
        expected = ["  value set     imt-diagnosis: changed +11 codes (urn:oid:1.2.3 11)",
                    "                (counted, not listed: --format json lists every code added and removed)"]
    assert out.splitlines()[1:] == expected + ["no patient's assessment changes"]
    status, out, _ = command(capsys, "rules", "diff", SHIPPED, directory, "--format", "json")
    assert json.loads(out)["value_sets"][0]["added_codes"] == every


def test_diff_from_a_rulebook_older_than_a_requirement_made_since(capsys, tmp_path, shipped):
    """The old side is read as it was (as an archived rulebook is): a copy of 0.2.1, before the tumor-site value
    sets were required, compares with the shipped rulebook, which has them added. The new side meets every
    requirement."""
    from imt_cds.core.terminology import TUMOR_SITE_VALUE_SETS

    old = copy_rulebook(tmp_path / "old")
    for name in TUMOR_SITE_VALUE_SETS.values():
        (old / "terminology" / f"{name}.yaml").unlink()
    edit(old, "rulebook.yaml", f"version: {shipped.version}\n", "version: 0.2.1\n")
    status, out, err = command(capsys, "rules", "diff", old, SHIPPED)
    assert (status, err) == (0, "")
    assert out.splitlines() == [f"rulebook imt 0.2.1 -> imt {shipped.version}",
                                *(f"  value set     {name}: added" for name in sorted(TUMOR_SITE_VALUE_SETS.values())),
                                "no patient's assessment changes"]
    status, out, err = command(capsys, "rules", "diff", SHIPPED, old)
    assert (status, out) == (1, "")
    assert ("terminology/tumor-site-thoracic.yaml: missing: the FHIR reader needs value set 'tumor-site-thoracic'"
            in err)


def test_diff_refuses_a_folder_that_is_not_there(capsys, tmp_path):
    missing = tmp_path / "none"
    assert command(capsys, "rules", "diff", missing, SHIPPED) == (
        2, "", f"imt-cds: error: OLD_DIR {missing}: no such directory\n")
    assert command(capsys, "rules", "diff", SHIPPED, missing) == (
        2, "", f"imt-cds: error: NEW_DIR {missing}: no such directory\n")


def test_diff_reads_each_side_with_its_own_evidence_when_asked(capsys, tmp_path, shipped):
    """A working copy made with `rules copy --seeds-to` has evidence of its own: a rule of it may cite an entry
    added there (the copy cannot load with the shipped evidence), and a corrected quote is a change to report."""
    status, _, _ = command(capsys, "rules", "copy", tmp_path / "new", "--seeds-to", tmp_path / "evidence")
    directory, evidence = bumped(tmp_path / "new"), tmp_path / "evidence"
    registry = (evidence / "evidence.yaml").read_text()
    quote = "  quote: Median tumor size was 3.9 cm.\n"
    corrected = ("  quote: Median tumor size was 3.9 cm. Anaplastic lymphoma kinase (ALK) overexpression was "
                 "identified in 53% of patients.\n")
    added = ("- id: RICH2022:c99\n  source: RICH2022\n"
             "  quote: Seven percent of patients had distant disease at diagnosis.\n")
    assert status == 0 and registry.count(quote) == 1
    (evidence / "evidence.yaml").write_text(registry.replace(quote, corrected + added))
    edit(directory, "flags/R16-tumor-size.yaml", "evidence: [RICH2022:c06, RICH2022:c15]",
         "evidence: [RICH2022:c06, RICH2022:c15, RICH2022:c99]")
    edit(directory, "flags/R16-tumor-size.yaml", f"version: {shipped.get('R16').version}", "version: 9.0.0")
    new = load_rulebook(directory, evidence)
    head = f"rulebook {shipped.name} {shipped.version} -> {new.name} {new.version}"
    r16 = f"  changed       R16   v{shipped.get('R16').version} -> v9.0.0 (evidence)"
    status, out, err = command(capsys, "rules", "diff", SHIPPED, directory, "--new-seeds", evidence)
    assert (status, err) == (0, "")
    assert out.splitlines() == [head, r16, "  evidence      RICH2022:c06: changed",
                                "  evidence      RICH2022:c99: added", "no patient's assessment changes"]
    status, out, _ = command(capsys, "rules", "diff", directory, SHIPPED, "--old-seeds", evidence)
    assert status == 1 and out.splitlines()[3:5] == ["  evidence      RICH2022:c06: changed",
                                                     "  evidence      RICH2022:c99: removed"]
    # --seeds is both sides' unless a side has its own; one evidence for both has no evidence change to show
    status, out, _ = command(capsys, "rules", "diff", SHIPPED, directory, "--seeds", evidence,
                             "--old-seeds", _resources.seeds_dir())
    assert status == 0 and out.splitlines()[2:4] == ["  evidence      RICH2022:c06: changed",
                                                     "  evidence      RICH2022:c99: added"]
    status, out, _ = command(capsys, "rules", "diff", SHIPPED, directory, "--seeds", evidence)
    assert (status, out.splitlines()[:3]) == (0, [head, r16, "no patient's assessment changes"])
    # without it, the copy's rule cites an entry the shipped evidence does not have
    status, out, err = command(capsys, "rules", "diff", SHIPPED, directory)
    assert (status, out) == (1, "") and "unknown evidence id 'RICH2022:c99'" in err
    for option in ("--old-seeds", "--new-seeds"):
        assert command(capsys, "rules", "diff", SHIPPED, directory, option, tmp_path / "none") == (
            2, "", f"imt-cds: error: {option} {tmp_path / 'none'}: no such directory\n")


# --- explain ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [None, "REC_CRIZOTINIB_ALK"])
def test_explain_prints_the_explanation_as_text_or_json(capsys, code):
    path = EXAMPLES[0]
    result = explain(Engine(), parse_facts_json(path.read_bytes()), code)
    option = ("--code", code) if code else ()
    assert command(capsys, "explain", path, *option) == (0, result.to_text(), "")
    assert command(capsys, "explain", path, *option, "--format", "json") == (0, compact(result.to_dict()) + "\n", "")


def test_explain_refuses_an_unknown_code_and_invalid_facts(capsys, tmp_path, shipped):
    assert command(capsys, "explain", EXAMPLES[0], "--code", "REC_CRIZOTINB_ALK") == (2, "", "\n".join([
        "imt-cds: invalid input; nothing was explained:",
        f"  - code: 'REC_CRIZOTINB_ALK' is not a finding code of rulebook {shipped.name} {shipped.version}; did you "
        "mean REC_CRIZOTINIB_ALK?"]) + "\n")
    patient = tmp_path / "patient.json"
    patient.write_text('{"age_years": "x"}')
    status, out, err = command(capsys, "explain", patient)
    assert (status, out) == (2, "")
    assert err.splitlines()[0] == f"imt-cds: invalid patient facts in {patient} (1 problem); nothing was evaluated:"


# --- the options ----------------------------------------------------------------------------------------------------


def test_rules_needs_a_subcommand_and_codesystems_its_output_folder(capsys):
    status, out, err = command(capsys, "rules")
    assert (status, out) == (2, "")
    assert err.splitlines()[-1] == ("imt-cds rules: error: the following arguments are required: SUBCOMMAND; see: "
                                    "imt-cds rules --help")
    status, out, err = command(capsys, "rules", "codesystems")
    assert (status, out) == (2, "")
    assert err.splitlines()[-1] == ("imt-cds rules codesystems: error: the following arguments are required: "
                                    "-o/--output; see: imt-cds rules codesystems --help")


@pytest.mark.parametrize("args", [("rules", "coverage", "--no-vignettes"), ("rules", "verify"),
                                  ("rules", "diff", SHIPPED, SHIPPED), ("explain", EXAMPLES[0])])
def test_format_text_may_be_asked_for_and_is_the_default(capsys, args):
    default = command(capsys, *args)
    assert default[0] == 0 and default[1]
    assert command(capsys, *args, "--format", "text") == default
