"""The rule authoring toolkit (imt-cds rules ..., imt-cds explain) on the shipped rulebook and on deliberately broken
copies: each must fail with a message an author can act on."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import z3
from rulebook_copies import add_flag, copy_rulebook, edit, set_parameters
from strategies import random_patient

from imt_cds import Engine, load_rulebook, parse_facts
from imt_cds.authoring.explain import explain
from imt_cds.authoring.symbolic import Encoding, gene_symbols
from imt_cds.authoring.verification import verify

SCRIPT = Path(sys.executable).with_name("imt-cds")
ROOT = Path(__file__).resolve().parents[1]
# A flag whose condition contradicts itself, with an example that says it fires
UNREACHABLE = {"all": [{"fact": "age_years", "gt": 50}, {"fact": "age_years", "lt": 10}]}
UNREACHABLE_EXAMPLES = [({"age_years": 60}, True), ({}, False)]


def run(*args, cwd=ROOT):
    return subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600)


def by_name(checks):
    return {c.name: c for c in checks}


# --- list, show, lint, test ---------------------------------------------------------------------------------------


def test_list_and_show_describe_the_rules():
    listing = run("rules", "list")
    assert listing.returncode == 0 and "R32a" in listing.stdout and "REC_CRIZOTINIB_ALK" in listing.stdout
    shown = run("rules", "show", "R32a")
    assert shown.returncode == 0
    assert "when: ALK_INHIBITOR_ELIGIBLE and AGE_KNOWN and not DATA_BLOCK and age_years >= " in shown.stdout
    assert '"The U.S. Food and Drug Administration (FDA) approved crizotinib' in shown.stdout
    assert "unresectable ALK-positive tumor in an 8-year-old: fires" in shown.stdout
    missing = run("rules", "show", "R32")
    assert missing.returncode == 2 and "did you mean" in missing.stderr


def test_lint_is_clean_on_the_shipped_rulebook():
    result = run("rules", "lint")
    assert result.returncode == 0 and "no problems" in result.stdout


def test_lint_reports_every_problem_with_file_line_rule_and_suggestion(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, "data_requests/R03-request-alk-testing.yaml", "molecular.alk.status", "molecular.alk.statsu")
    edit(directory, "treatment/R32a-crizotinib-alk.yaml", "EXT-BUTRYNSKI2010", "EXT-BUTRYNSKY2010")
    result = run("rules", "lint", "--rules", directory)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert any(line.startswith("data_requests/R03-request-alk-testing.yaml:7, rule R03, when.fact:")
               and "did you mean 'molecular.alk.status'" in line for line in lines)
    assert any("rule R32a" in line and "did you mean 'EXT-BUTRYNSKI2010'" in line for line in lines)
    assert "2 problems found" in result.stderr


def test_rules_test_passes_on_the_shipped_rulebook_and_writes_junit(tmp_path):
    report = tmp_path / "junit.xml"
    result = run("rules", "test", "--junit", report)
    assert result.returncode == 0 and "153 of 153 examples pass" in result.stdout
    suite = ET.parse(report).getroot().find("testsuite")
    assert suite.get("tests") == "153" and suite.get("failures") == "0"


def test_rules_test_shows_expected_versus_actual_for_a_failure(tmp_path):
    directory = copy_rulebook(tmp_path)
    set_parameters(directory, {"crizotinib_min_age_years": 2})
    report = tmp_path / "junit.xml"
    result = run("rules", "test", "--rules", directory, "--junit", report)
    assert result.returncode == 1
    assert "FAIL R32a (treatment/R32a-crizotinib-alk.yaml) example 'exactly one year old'" in result.stdout
    assert "`age_years` is `1`; needs >= 2" in result.stdout
    failures = [case for case in ET.parse(report).getroot().iter("testcase") if case.find("failure") is not None]
    assert [(c.get("classname"), c.get("name")) for c in failures] == [("rules.R32a", "exactly one year old")]


def test_rules_test_explains_a_rule_that_fired_when_it_should_not(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, "flags/R16-tumor-size.yaml", "  - name: exactly at the median\n    facts: {tumor: {size_cm: 3.9}}",
         "  - name: exactly at the median\n    facts: {tumor: {size_cm: 3.95}}")
    result = run("rules", "test", "--rules", directory)
    assert result.returncode == 1
    assert "R16 should stay silent but fired" in result.stdout
    assert 'it fired on branch R16.0, matching {"facts":{"tumor.size_cm":3.95}' in result.stdout


# --- coverage -----------------------------------------------------------------------------------------------------


def test_coverage_of_the_shipped_rulebook_reaches_every_rule():
    result = run("rules", "coverage", "--format", "json")
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert report["never_fired"] == []
    assert report["patients"] >= 153 + 35 and any("vignettes" in s for s in report["sources"])
    d02 = next(r for r in report["rules"] if r["rule"] == "D02")
    assert len(d02["branches"]) == 5 and set(d02["exercised"]) == set(d02["branches"])


def test_coverage_fails_on_a_rule_nothing_reaches(tmp_path):
    directory = copy_rulebook(tmp_path)
    add_flag(directory, UNREACHABLE, UNREACHABLE_EXAMPLES, rule_id="R40", finding="FLAG_NEVER")
    result = run("rules", "coverage", "--rules", directory, "--no-vignettes")
    assert result.returncode == 1 and "rules never fired: R40" in result.stdout


# --- verify -------------------------------------------------------------------------------------------------------


def test_verify_holds_for_the_shipped_rulebook(rulebook):
    checks = verify(rulebook)
    statuses = {c.name: c.status for c in checks}
    assert all(status in ("holds", "not_checked") for status in statuses.values()), statuses
    assert [c.name for c in checks if c.status == "not_checked"] == ["safety property 14"]
    assert all(statuses[f"safety property {n}"] == "holds" for n in range(1, 16) if n != 14)
    result = run("rules", "verify")
    assert result.returncode == 0 and "75 of 75 checkable checks hold; 1 not checkable here" in result.stdout


def test_verify_fails_property_6_when_crizotinib_is_allowed_below_one_year(tmp_path):
    directory = copy_rulebook(tmp_path)
    set_parameters(directory, {"crizotinib_min_age_years": 0})
    checks = by_name(verify(load_rulebook(directory)))
    property_6 = checks["safety property 6"]
    assert property_6.status == "violated" and property_6.confirmed_by_engine
    patient = property_6.counterexample
    assert patient["age_years"] < 1
    assert "REC_CRIZOTINIB_ALK" in Engine(directory).evaluate(patient).codes
    assert checks["rule R32b can fire"].status == "violated"  # below age 0 nothing is possible
    result = run("rules", "verify", "--rules", directory)
    assert result.returncode == 1
    assert "VIOLATED: safety property 6" in result.stdout and "confirmed on the engine" in result.stdout


def test_verify_reports_an_unreachable_rule(tmp_path):
    directory = copy_rulebook(tmp_path)
    add_flag(directory, UNREACHABLE, UNREACHABLE_EXAMPLES, rule_id="R40", finding="FLAG_NEVER")
    check = by_name(verify(load_rulebook(directory)))["rule R40 can fire"]
    assert check.status == "violated" and "can never fire" in check.detail


def test_verify_finds_a_two_patient_counterexample_to_monotonicity(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, "flags/R16-tumor-size.yaml", "gt: {param: size_risk_threshold_cm}",
         "lt: {param: size_risk_threshold_cm}")
    check = by_name(verify(load_rulebook(directory)))["safety property 8"]
    assert check.status == "violated" and check.confirmed_by_engine
    before, after = check.counterexample["tumor"]["size_cm"], check.counterexample_after["tumor"]["size_cm"]
    assert before < after


def test_verify_reports_a_redundant_rule(tmp_path):
    directory = copy_rulebook(tmp_path)
    add_flag(directory, "all: [{fact: tumor.distant_disease, is: true}, {fact: age_years, gt: 10}]",
             [("{age_years: 60, tumor: {distant_disease: true}}", True), ({}, False)],
             rule_id="R40", finding="RISK_DISTANT_DISEASE")
    checks = by_name(verify(load_rulebook(directory)))
    assert checks["rule R40 is not redundant"].status == "violated"
    assert "whenever R40 produces RISK_DISTANT_DISEASE, R17 does too" in checks["rule R40 is not redundant"].detail


def test_the_checker_agrees_with_the_engine_on_concrete_patients(engine, rulebook):
    encoding = Encoding(rulebook, gene_symbols([rulebook]))
    p = encoding.patient()
    emitted = {c: encoding.emitted(p, c) for c in rulebook.finding_codes}
    withheld = {c: encoding.withheld(p, c) for c in rulebook.finding_codes}
    derived = {d: encoding.derived(p, d) for d in rulebook.derived_names}
    rng = random.Random(77)
    for _ in range(600):
        facts = parse_facts(random_patient(rng))
        solver = z3.Solver()
        solver.add(p.domain_constraints + p.fix(facts))
        assert solver.check() == z3.sat
        model = solver.model()

        def holding(formulas, model=model):
            return {name for name, f in formulas.items() if z3.is_true(model.eval(f, model_completion=True))}

        assessment = engine.evaluate(facts)
        assert holding(emitted) == set(assessment.codes)
        assert holding(withheld) == set(assessment.suppressed_codes)
        assert holding(derived) == set(assessment.derived_names)


# --- diff ---------------------------------------------------------------------------------------------------------


def test_diff_of_identical_rulebooks_finds_nothing(tmp_path):
    directory = copy_rulebook(tmp_path)
    result = run("rules", "diff", ROOT / "rules", directory)
    assert result.returncode == 0
    assert "no rule, parameter, evidence, drug or value set changes" in result.stdout
    assert "no patient's assessment changes" in result.stdout


def test_diff_shows_a_value_set_change_and_asks_for_a_rulebook_version_bump(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, "terminology/imt-diagnosis.yaml", "codes:\n", "codes:\n  - system: \"urn:oid:1.2.3\"\n"
         "    code: \"IMT-LOCAL\"\n    display: \"IMT (local code)\"\n    source: \"the institution\"\n")
    result = run("rules", "diff", ROOT / "rules", directory)
    assert "value set     imt-diagnosis: changed +urn:oid:1.2.3|IMT-LOCAL" in result.stdout
    assert (result.returncode == 1
            and "the rulebook changed but its version in rulebook.yaml was not bumped" in result.stdout)
    edit(directory, "rulebook.yaml", "version: 0.2.7", "version: 0.2.8")
    assert run("rules", "diff", ROOT / "rules", directory).returncode == 0


def test_diff_refuses_a_changed_rule_without_a_version_bump(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, "derived/D02-advanced-disease.yaml",
         "    - {fact: history.progressed_on_prior_systemic, is: true}\n", "")
    result = run("rules", "diff", ROOT / "rules", directory)
    assert result.returncode == 1
    assert "ERROR: D02 changed (when) but its version was not bumped (still 1.0.0)" in result.stdout
    assert "4 of 96 classes over the fields tumor.resectability, tumor.distant_disease, history.recurrence, " \
           "history.progressed_on_alk_inhibitor, history.progressed_on_prior_systemic" in result.stdout


def test_diff_counts_the_patient_classes_a_threshold_change_affects(tmp_path):
    directory = copy_rulebook(tmp_path)
    set_parameters(directory, {"size_risk_threshold_cm": 4.5})
    edit(directory, "rulebook.yaml", "version: 0.2.7", "version: 0.2.8")
    result = run("rules", "diff", ROOT / "rules", directory, "--format", "json")
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert report["parameters"] == [{"name": "size_risk_threshold_cm", "old": 3.9, "new": 4.5}]
    outcome = report["outcome"]
    assert (outcome["changed_classes"], outcome["exact"], outcome["over_fields"]) == (2, True, ["tumor.size_cm"])
    for example in outcome["examples"]:
        assert 3.9 < example["patient"]["tumor"]["size_cm"] <= 4.5
        assert set(example["old"]) - set(example["new"]) == {"RISK_TUMOR_SIZE_ABOVE_COHORT_MEDIAN"}


def test_a_documentation_change_needs_no_version_bump(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, "flags/R15-respiratory-symptoms.yaml", "name: cough and dyspnoea at presentation",
         "name: cough and shortness of breath at presentation")
    result = run("rules", "diff", ROOT / "rules", directory)
    assert result.returncode == 0 and "documentation R15" in result.stdout


# --- explain ------------------------------------------------------------------------------------------------------


def test_explain_why_goes_down_to_input_facts(engine):
    result = explain(engine, json.loads((ROOT / "examples/02_alk_positive_unresectable.json").read_text()),
                     "REC_CRIZOTINIB_ALK").to_dict()
    (tree,) = result["why"]
    assert tree["rule"] == {"id": "R32a", "version": "1.1.0"}
    eligible = next(node for node in tree["because"] if node.get("derived") == "ALK_INHIBITOR_ELIGIBLE")
    (d06,) = eligible["derived_by"]
    assert d06["rule"]["id"] == "D06"
    advanced = next(node for node in d06["because"] if node.get("derived") == "ADVANCED_DISEASE")
    assert advanced["derived_by"][0]["because"] == [{"fact": "tumor.resectability", "holds": True,
                                                     "expected": "in {unresectable, resectable_only_with_mutilation}",
                                                     "actual": "unresectable"}]


def test_explain_why_not_names_the_first_failed_condition_with_the_actual_value(engine):
    patient = {"age_years": 8, "tumor": {"resectability": "unresectable"}}
    (entry,) = explain(engine, patient, "REC_CRIZOTINIB_ALK").to_dict()["why_not"]
    assert entry["rule"]["id"] == "R32a" and entry["outcome"] == "did not apply"
    (branch,) = entry["branches"]
    assert branch["derived"] == "ALK_INHIBITOR_ELIGIBLE" and branch["required"] and not branch["holds"]
    (d06,) = branch["why_not"]
    assert d06["branches"] == [{"fact": "molecular.alk.status", "actual": "unknown", "expected": "= positive",
                                "holds": False}]


def test_explain_why_not_names_the_suppression(engine):
    patient = {"tumor": {"resectability": "resectable", "distant_disease": False}, "history": {"margin_status": "R0"}}
    (entry,) = explain(engine, patient, "REC_UPFRONT_SURGICAL_RESECTION").to_dict()["why_not"]
    assert entry["outcome"] == "suppressed"
    assert entry["suppressed_by"]["rule"]["id"] == "S01"
    assert entry["suppressed_by"]["reasons"] == ["C3: resection margin status recorded but no surgery recorded"]


def test_explain_from_the_command_line(tmp_path):
    patient = tmp_path / "p.json"
    patient.write_text('{"age_years": 8, "tumor": {"resectability": "unresectable"}}')
    result = run("explain", patient, "--code", "REC_CRIZOTINIB_ALK")
    assert result.returncode == 0
    assert "Why not REC_CRIZOTINIB_ALK" in result.stdout
    assert "`molecular.alk.status` is `unknown`; needs = positive" in result.stdout
    example = ROOT / "examples/02_alk_positive_unresectable.json"
    everything = run("explain", example)
    findings = Engine().evaluate(json.loads(example.read_text())).findings
    assert everything.returncode == 0
    assert [line.split(" ")[1] for line in everything.stdout.splitlines() if line.startswith("Why ")] == [
        f.code for f in findings]
    bad = run("explain", patient, "--code", "REC_CRIZOTINB_ALK")
    assert bad.returncode == 2 and "did you mean REC_CRIZOTINIB_ALK" in bad.stderr


@pytest.mark.parametrize("command, says", [
    (("rules", "list"), "Respiratory symptoms when first seen"),
    (("rules", "lint"), "rulebook imt 0.2.8: 55 rules, no problems"),
    (("rules", "test"), "154 of 154 examples pass"),
    (("rules", "verify"), "verifying rulebook imt 0.2.8"),
])
def test_every_rules_command_accepts_a_working_copy(tmp_path, command, says):
    # The copy differs from the shipped rulebook in what each command shows (version, a title, one more example),
    # so the output proves the command read the copy, not the shipped rules.
    directory = copy_rulebook(tmp_path)
    edit(directory, "rulebook.yaml", "version: 0.2.7", "version: 0.2.8")
    edit(directory, "flags/R15-respiratory-symptoms.yaml", "title: Respiratory symptoms at presentation",
         "title: Respiratory symptoms when first seen")
    edit(directory, "flags/R15-respiratory-symptoms.yaml", "  - name: not recorded\n",
         "  - name: dyspnoea only\n    facts: {symptoms: {respiratory: true}, age_years: 9}\n    fires: true\n"
         "  - name: not recorded\n")
    result = run(*command, "--rules", directory)
    assert result.returncode == 0, result.stdout + result.stderr
    assert says in result.stdout
