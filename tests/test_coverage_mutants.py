"""``rules coverage`` (authoring/coverage.py) in process: how many patients fired each rule, which branches of its
condition they exercised and which none did, and the JSON report of it. Written for the planted mistakes of that
module that the command-line tests of test_authoring_tools.py did not see (tests/mutation-survivors.md)."""

from __future__ import annotations

from rulebook_copies import add_flag, copy_rulebook

from imt_cds import Engine, load_rulebook
from imt_cds.authoring.coverage import measure_coverage

# A flag with two branches (ages no other example has), its examples reaching one
FIRST_BRANCH = "all: [{fact: age_years, gte: 37.71}, {fact: age_years, lte: 37.79}]"
SECOND_BRANCH = "all: [{fact: age_years, gte: 0.011}, {fact: age_years, lte: 0.012}]"
EXAMPLES = [("{age_years: 37.75}", True), ("{age_years: 37.75, tumor: {site: thoracic}}", True), ({}, False)]


def add_two_branches(directory, first_branch=FIRST_BRANCH):
    add_flag(directory, f"any: [{first_branch}, {SECOND_BRANCH}]", EXAMPLES, rule_id="R40", finding="FLAG_TWO_BRANCHES")

def test_patients_per_rule_and_the_branches_no_patient_exercised(tmp_path):
    directory = copy_rulebook(tmp_path)
    add_two_branches(directory)
    engine = Engine(load_rulebook(directory))
    coverage = measure_coverage(engine)
    (r40,) = [r for r in coverage.rules if r.rule == "R40"]
    first, second = r40.branches
    assert (r40.fired, r40.patients, r40.exercised) == (True, 2, (first,))
    assert ("R40", second) in coverage.unexercised_branches and ("R40", first) not in coverage.unexercised_branches
    assert coverage.sources == ("rule examples",)
    report = coverage.to_dict()
    assert {"rule": "R40", "fired": True, "patients": 2, "branches": [first, second],
            "exercised": [first]} in report["rules"]
    assert ["R40", second] in report["unexercised_branches"] and report["never_fired"] == []
    assert report["patients"] == coverage.patients == sum(len(rule.examples) for rule in engine.rulebook.rules)
    # one more patient, from another source, reaching the other branch
    more = measure_coverage(engine, [("vignette x", {"age_years": 0.0115})], ("vignettes",))
    (r40,) = [r for r in more.rules if r.rule == "R40"]
    assert (r40.patients, set(r40.exercised)) == (3, {first, second})
    assert ("R40", second) not in more.unexercised_branches
    assert more.sources == ("rule examples", "vignettes") and more.patients == coverage.patients + 1


def test_a_rule_no_patient_fires_is_counted_with_none_and_listed(tmp_path):
    directory = copy_rulebook(tmp_path)
    add_two_branches(directory, FIRST_BRANCH.replace("gte: 37.71}", "gte: 37.71}, {fact: age_years, gt: 200}"))
    # (now nobody reaches it)
    coverage = measure_coverage(Engine(load_rulebook(directory)))
    (r40,) = [r for r in coverage.rules if r.rule == "R40"]
    assert (r40.fired, r40.patients, r40.exercised) == (False, 0, ())
    assert coverage.never_fired == ("R40",)
    assert [pair for pair in coverage.unexercised_branches if pair[0] == "R40"] == [("R40", b) for b in r40.branches]
