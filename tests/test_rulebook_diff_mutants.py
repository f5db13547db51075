"""``rules diff``'s account of what changed between two rulebooks (authoring/rulebook_diff.py), in process: each
kind of change (a rule added, removed, changed with or without its version bumped, documented; parameters, evidence,
finding metadata, drugs and value sets) reported exactly, since a change the diff leaves out is a clinical change
nobody reviews. Written for the mutants of that module that survived the command-line tests of
test_authoring_tools.py (tests/mutation-survivors.md)."""

from __future__ import annotations

import shutil

import pytest
import yaml
from rulebook_copies import add_flag, copy_rulebook, edit

from imt_cds import load_rulebook
from imt_cds.authoring.rulebook_diff import RuleChange, diff_rulebooks
from imt_cds.core._resources import seeds_dir

NEW_FLAG = ("{fact: symptoms.respiratory, is: true}", [("{symptoms: {respiratory: true}}", True), ({}, False)])
NOT_BUMPED = "the rulebook changed but its version in rulebook.yaml was not bumped (still 0.2.7)"


@pytest.fixture(scope="module")
def shipped():
    return load_rulebook()


def diff(shipped, directory):
    return diff_rulebooks(shipped, load_rulebook(directory), examples=0)


def bump_rulebook(directory, version="0.2.8"):
    edit(directory, "rulebook.yaml", "version: 0.2.7", f"version: {version}")


def test_every_kind_of_rule_change_is_listed_in_id_order_with_its_versions(tmp_path, shipped):
    directory = copy_rulebook(tmp_path)
    add_flag(directory, *NEW_FLAG)  # R00: sorts before every shipped R rule
    (directory / "flags" / "R15-respiratory-symptoms.yaml").unlink()  # sorts before the changes below
    # R16: a description changed (documentation); R17: a key added that the shipped rule lacks (a description) and two
    # behavioural changes without a bump; R18: changed and bumped.
    edit(directory, "flags/R16-tumor-size.yaml", "description: The threshold", "description: Here the threshold")
    edit(directory, "flags/R17-distant-disease.yaml", "title: Distant disease\n",
         "title: Distant disease at diagnosis\ndescription: Added.\n")
    edit(directory, "flags/R17-distant-disease.yaml", "strength: OBS-MC + SR", "strength: OBS-MC")
    edit(directory, "flags/R18-recurrent-disease.yaml", "version: 1.1.0", "version: 1.2.0")
    edit(directory, "flags/R18-recurrent-disease.yaml", "title: ", "title: Changed, ")
    result = diff(shipped, directory)
    assert result.rules == [
        RuleChange("R00", "added", None, "1.0.0"),
        RuleChange("R15", "removed", "1.1.0", None),
        RuleChange("R16", "documentation", "1.1.0", "1.1.0", ("description",)),
        RuleChange("R17", "changed", "1.1.0", "1.1.0", ("description", "strength", "title"),
                   "R17 changed (strength, title) but its version was not bumped (still 1.1.0)"),
        RuleChange("R18", "changed", "1.1.0", "1.2.0", ("title",)),
    ]
    assert result.errors == [NOT_BUMPED] and not result.ok
    bump_rulebook(directory)
    result = diff(shipped, directory)
    assert (result.old, result.new) == ("imt 0.2.7", "imt 0.2.8")
    assert result.errors == [] and not result.ok  # R17's own error stays
    assert result.to_dict()["rules"][3] == {
        "rule": "R17", "change": "changed", "old_version": "1.1.0", "new_version": "1.1.0",
        "fields": ["description", "strength", "title"],
        "error": "R17 changed (strength, title) but its version was not bumped (still 1.1.0)"}


def test_rule_versions_compare_as_numbers_not_as_text(tmp_path):
    # 1.1.10 comes after 1.1.9 (as text it would sort before it): a bump, for the rule and for the rulebook.
    old = copy_rulebook(tmp_path / "old")
    edit(old, "flags/R18-recurrent-disease.yaml", "version: 1.1.0", "version: 1.1.9")
    bump_rulebook(old, "0.2.9")
    new = copy_rulebook(tmp_path / "new")
    edit(new, "flags/R18-recurrent-disease.yaml", "version: 1.1.0", "version: 1.1.10")
    edit(new, "flags/R18-recurrent-disease.yaml", "title: ", "title: Changed, ")
    bump_rulebook(new, "0.2.10")
    result = diff_rulebooks(load_rulebook(old), load_rulebook(new), examples=0)
    assert result.rules == [RuleChange("R18", "changed", "1.1.9", "1.1.10", ("title",))]
    assert result.ok and result.errors == []


@pytest.mark.parametrize(("change", "ok_without_bump"), [
    ("added", False), ("removed", False), ("documentation only", True)])
def test_the_rulebook_version_must_be_bumped_for_any_rule_added_or_removed(tmp_path, shipped, change,
                                                                           ok_without_bump):
    directory = copy_rulebook(tmp_path)
    if change == "added":
        add_flag(directory, *NEW_FLAG)
    elif change == "removed":
        (directory / "flags" / "R15-respiratory-symptoms.yaml").unlink()
    else:
        edit(directory, "flags/R16-tumor-size.yaml", "description: The threshold", "description: Here the threshold")
    result = diff(shipped, directory)
    assert result.errors == ([] if ok_without_bump else [NOT_BUMPED])
    if ok_without_bump:  # nothing any patient gets changes: no class, no example (an empty list in the JSON)
        assert result.to_dict()["outcome"] == {"changed_classes": 0, "exact": True, "over_fields": [],
                                               "classes_of_these_fields": 1, "examples": []}


def test_parameters_added_removed_and_changed_are_listed_with_both_values(tmp_path, shipped):
    directory = copy_rulebook(tmp_path)
    path = directory / "parameters.yaml"
    data = yaml.safe_load(path.read_text())
    parameters = data["parameters"]
    parameters["aaa_added_by_test"] = {**parameters["size_risk_threshold_cm"], "value": 1.5}
    parameters["size_risk_threshold_cm"]["value"] = 4.5
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    result = diff(shipped, directory)
    assert result.parameters == [("aaa_added_by_test", None, 1.5), ("size_risk_threshold_cm", 3.9, 4.5)]
    assert result.errors == [NOT_BUMPED]
    # and the other way round: the shipped parameter seen as removed from the copy
    reverse = diff_rulebooks(load_rulebook(directory), shipped, examples=0)
    assert reverse.parameters == [("aaa_added_by_test", 1.5, None), ("size_risk_threshold_cm", 4.5, 3.9)]


def test_evidence_entries_added_removed_and_changed_are_named(tmp_path, shipped):
    seeds = tmp_path / "seeds"
    shutil.copytree(seeds_dir(), seeds)
    registry = seeds / "evidence.yaml"
    data = yaml.safe_load(registry.read_text())
    entries = {entry["id"]: entry for entry in data["entries"]}
    entries["EXT-RAITIO2024"]["claim"] += " (changed by the test)"
    data["entries"].append({**entries["EXT-RAITIO2024"], "id": "EXT-ZZ-ADDED"})
    registry.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    changed = load_rulebook(None, seeds)
    result = diff_rulebooks(shipped, changed, examples=0)
    assert result.evidence == [("EXT-RAITIO2024", "changed"), ("EXT-ZZ-ADDED", "added")]
    assert result.errors == [NOT_BUMPED]
    assert diff_rulebooks(changed, shipped, examples=0).evidence == [("EXT-RAITIO2024", "changed"),
                                                                      ("EXT-ZZ-ADDED", "removed")]


def test_a_source_document_changed_alone_is_reported_as_such(tmp_path, shipped):
    # Every quote still found in it (a line appended), so no entry changes, yet the registry's sha256 does.
    seeds = tmp_path / "seeds"
    shutil.copytree(seeds_dir(), seeds)
    document = next(seeds.glob("000_*.txt"))
    document.write_bytes(document.read_bytes() + b"\nA line appended by the test.\n")
    result = diff_rulebooks(shipped, load_rulebook(None, seeds), examples=0)
    assert result.evidence == [("(source documents)", "changed")]
    assert result.errors == [NOT_BUMPED]


def test_finding_metadata_changes_are_listed_per_finding_and_new_findings_are_not(tmp_path, shipped):
    directory = copy_rulebook(tmp_path)
    add_flag(directory, *NEW_FLAG)  # a rule of the new rulebook only: no metadata
    edit(directory, "treatment/R32a-crizotinib-alk.yaml", "    gene: alk\n    drugs: [crizotinib]\n", "")
    edit(directory, "treatment/R33-next-generation-alk-inhibitor.yaml", "drugs: [ceritinib, entrectinib, alectinib]",
         "drugs: [ceritinib, alectinib]")
    edit(directory, "treatment/R32b-alk-inhibitor-off-label-age.yaml", "indicator: critical", "indicator: warning")
    # a finding new in a rule of both: nothing to compare it with
    edit(directory, "flags/R15-respiratory-symptoms.yaml", "    indicator: warning\n",
         "    indicator: warning\n  - {finding: RISK_NEW_BY_TEST, title: New, summary: New., indicator: info}\n")
    result = diff(shipped, directory)
    assert sorted(result.metadata) == [
        "R32a REC_CRIZOTINIB_ALK drugs: crizotinib -> none",
        "R32a REC_CRIZOTINIB_ALK gene: alk -> none",
        "R32b FLAG_OFF_LABEL_AGE indicator: critical -> warning",
        "R33 REC_NEXT_GEN_ALK_INHIBITOR_CONSIDER drugs: ceritinib, entrectinib, alectinib -> ceritinib, alectinib",
    ]
    reverse = diff_rulebooks(load_rulebook(directory), shipped, examples=0)
    assert "R32a REC_CRIZOTINIB_ALK gene: none -> alk" in reverse.metadata


def test_drugs_added_removed_and_changed_are_listed_with_what_changed(tmp_path, shipped):
    directory = copy_rulebook(tmp_path)
    edit(directory, "drugs.yaml", "  - name: pralsetinib\n    brands: [Gavreto]\n    class: RET inhibitor\n"
         "    targets: [ret]\n", "")  # named by no finding
    edit(directory, "drugs.yaml", "  - name: taletrectinib\n    brands: [Ibtrozi]\n    class: ROS1 inhibitor\n"
         "    targets: [ros1]\n", "  - name: taletrectinib\n    brands: [Ibtrozi, Other]\n    class: ROS1 inhibitor\n"
         "    targets: [ros1, ntrk]\n")
    edit(directory, "drugs.yaml", "  - name: larotrectinib\n",
         "  - name: aaatinib\n    brands: []\n    class: TRK inhibitor\n    targets: [ntrk]\n"
         "  - name: larotrectinib\n")
    result = diff(shipped, directory)
    assert result.drugs == [("aaatinib", "added"), ("pralsetinib", "removed"),
                            ("taletrectinib", "changed brands, targets")]
    assert result.errors == [NOT_BUMPED]


def test_value_sets_added_removed_and_changed_are_listed_code_by_code(tmp_path, shipped):
    directory = copy_rulebook(tmp_path)
    terminology = directory / "terminology"
    worsened = yaml.safe_load((terminology / "disease-worsened.yaml").read_text())
    (terminology / "aaa-added.yaml").write_text(yaml.safe_dump({**worsened, "value_set": "aaa-added"},
                                                               sort_keys=False))
    edit(directory, "terminology/epithelioid-imt.yaml", 'codes: []', 'codes:\n  - system: "urn:test"\n'
         '    code: "EIMS"\n    display: "EIMS"\n    source: "the test"')
    edit(directory, "terminology/epithelioid-imt.yaml", '  - "\\\\bno\\\\b"\n', "")
    result = diff(shipped, directory)
    assert result.value_sets == [("aaa-added", "added"),
                                 ("epithelioid-imt", "changed +urn:test|EIMS, text patterns changed")]
    assert result.errors == [NOT_BUMPED]
    # the other way round (every value set the FHIR reader needs must be there, so only an extra one can go)
    assert diff_rulebooks(load_rulebook(directory), shipped, examples=0).value_sets == [
        ("aaa-added", "removed"), ("epithelioid-imt", "changed -urn:test|EIMS, text patterns changed")]


def _add_codes(directory, codes):
    lines = "".join(f'  - system: "{system}"\n    code: "{code}"\n    display: "{code}"\n    source: "the test"\n'
                    for system, code in codes)
    edit(directory, "terminology/epithelioid-imt.yaml", "codes: []", "codes:\n" + lines.rstrip("\n"))


def test_a_value_set_change_lists_up_to_ten_codes_and_counts_more_by_code_system(tmp_path, shipped):
    ten = [("urn:test", f"X{i:03}") for i in range(10)]
    directory = copy_rulebook(tmp_path / "ten")
    _add_codes(directory, ten)
    listed = diff(shipped, directory)
    assert listed.value_sets == [("epithelioid-imt", "changed " + ", ".join(f"+urn:test|X{i:03}" for i in range(10)))]
    assert listed.value_set_codes == {"epithelioid-imt": ([f"urn:test|X{i:03}" for i in range(10)], [])}
    directory = copy_rulebook(tmp_path / "eleven")
    _add_codes(directory, ten + [("urn:other", "Y")])
    counted = diff(shipped, directory)
    assert counted.value_sets == [("epithelioid-imt", "changed +11 codes (urn:other 1, urn:test 10)")]
    every = ["urn:other|Y"] + [f"urn:test|X{i:03}" for i in range(10)]
    assert counted.value_set_codes == {"epithelioid-imt": (every, [])}
    # the other way round: removed, counted; the JSON report lists every code
    back = diff_rulebooks(load_rulebook(directory), shipped, examples=0)
    assert back.value_sets == [("epithelioid-imt", "changed -11 codes (urn:other 1, urn:test 10)")]
    assert back.to_dict()["value_sets"] == [{"name": "epithelioid-imt", "change": back.value_sets[0][1],
                                             "added_codes": [], "removed_codes": every}]


def test_the_json_report_says_everything_the_diff_found():
    from imt_cds.authoring.rulebook_diff import RulebookDiff

    result = RulebookDiff("imt 0.2.1", "imt 0.2.2", rules=[RuleChange("R00", "added", None, "1.0.0")],
                          parameters=[("size_risk_threshold_cm", 3.9, 4.5)], evidence=[("EXT-X", "changed")],
                          metadata=["R32b FLAG_OFF_LABEL_AGE indicator: critical -> warning"],
                          drugs=[("pralsetinib", "removed")], value_sets=[("aaa-added", "added")],
                          errors=["an error"], changed_classes=2, count_is_exact=False,
                          class_fields=("tumor.size_cm",), total_classes=7,
                          examples=[{"patient": {}, "old": [], "new": ["X"]}])
    assert result.to_dict() == {
        "old": "imt 0.2.1", "new": "imt 0.2.2", "ok": False, "errors": ["an error"],
        "rules": [{"rule": "R00", "change": "added", "old_version": None, "new_version": "1.0.0", "fields": [],
                   "error": None}],
        "parameters": [{"name": "size_risk_threshold_cm", "old": 3.9, "new": 4.5}],
        "evidence": [{"id": "EXT-X", "change": "changed"}],
        "metadata": ["R32b FLAG_OFF_LABEL_AGE indicator: critical -> warning"],
        "drugs": [{"name": "pralsetinib", "change": "removed"}],
        "value_sets": [{"name": "aaa-added", "change": "added"}],
        "outcome": {"changed_classes": 2, "exact": False, "over_fields": ["tumor.size_cm"],
                    "classes_of_these_fields": 7, "examples": [{"patient": {}, "old": [], "new": ["X"]}]},
    }
    # ok: no error of the rulebook and none of a rule
    assert RulebookDiff("a", "b").ok
    assert not RulebookDiff("a", "b", rules=[RuleChange("R01", "changed", "1.0.0", "1.0.0", ("when",), "e")]).ok


def test_a_reason_of_a_derived_fact_is_compared_as_a_rule_of_its_own(tmp_path, shipped):
    # D04's reasons (C1-C4) carry their own versions: a change in C1 is C1's, not a change of D04's other fields.
    directory = copy_rulebook(tmp_path)
    edit(directory, "derived/D04-contradiction.yaml",
         "    text: ALK status negative but an ALK fusion partner is recorded\n",
         "    text: ALK status negative, yet an ALK fusion partner is recorded\n")
    result = diff(shipped, directory)
    assert result.rules == [RuleChange("C1", "changed", "1.0.0", "1.0.0", ("text",),
                                       "C1 changed (text) but its version was not bumped (still 1.0.0)")]


# --- the outcome over the input space: patient classes ----------------------------------------------------------------

def with_added_flag(tmp_path, when: str, fires: str):
    directory = copy_rulebook(tmp_path)
    add_flag(directory, when, [(fires, True), ({}, False)])
    return load_rulebook(directory)


def outcome(result):
    return result.class_fields, result.total_classes, result.changed_classes, result.count_is_exact


def test_a_number_is_split_at_every_threshold_of_its_field_and_a_bound_belongs_to_its_own_class(tmp_path, shipped):
    # age_years is compared with 1 (crizotinib, the TRK infant check), 2 (selpercatinib), 39 (the evidence's age
    # range) and now 5: unknown, < 1, = 1, 1-2, = 2, 2-5, = 5, 5-39, = 39, > 39. The flag fires from 5 on ("gte"):
    # = 5, 5-39, = 39, > 39, one example from each.
    result = diff_rulebooks(shipped, with_added_flag(tmp_path, "{fact: age_years, gte: 5}", "{age_years: 6}"),
                            examples=5)
    assert outcome(result) == (("age_years",), 10, 4, True)
    ages = sorted(example["patient"]["age_years"] for example in result.examples)
    assert len(ages) == 4 and ages[0] == 5 and 5 < ages[1] < 39 and ages[2] == 39 and ages[3] > 39
    for example in result.examples:
        assert set(example["new"]) - set(example["old"]) == {"FLAG_ADDED_BY_TEST"}
        assert example["old_suppressed"] == example["new_suppressed"] == []


@pytest.mark.parametrize("operator, changed", [("lt", 1), ("lte", 2)])
def test_upper_bounds_split_a_number_too(tmp_path, shipped, operator, changed):
    # tumor.size_cm: 3.9 (R16) and now 2: unknown, < 2, = 2, 2-3.9, = 3.9, > 3.9; "lt" fires below 2, "lte" at 2 too.
    rulebook = with_added_flag(tmp_path, f"{{fact: tumor.size_cm, {operator}: 2}}", "{tumor: {size_cm: 1}}")
    result = diff_rulebooks(shipped, rulebook, examples=1)  # (as many examples as asked, when there are more)
    assert outcome(result) == (("tumor.size_cm",), 6, changed, True)
    (example,) = result.examples
    assert example["patient"]["tumor"]["size_cm"] <= 2 and "FLAG_ADDED_BY_TEST" in example["new"]


def test_a_gene_field_has_a_class_per_symbol_the_rules_name_and_two_more(tmp_path, shipped):
    # The shipped rules name RANBP2; with TPM3: no partner, RANBP2, TPM3, any other; the flag fires on TPM3 only.
    rulebook = with_added_flag(tmp_path, "{fact: molecular.alk.fusion_partner, is: TPM3}",
                               "{molecular: {alk: {fusion_partner: TPM3}}}")
    result = diff_rulebooks(shipped, rulebook, examples=3)
    assert outcome(result) == (("molecular.alk.fusion_partner",), 4, 1, True)
    assert [example["patient"] for example in result.examples] == [{"molecular": {"alk": {"fusion_partner": "TPM3"}}}]


def test_a_set_field_has_a_class_per_set_the_rules_name_and_one_for_every_other(tmp_path, shipped):
    # R10 names [IHC]; with [IHC, FISH]: exactly {IHC}, exactly {IHC, FISH}, anything else.
    rulebook = with_added_flag(tmp_path, "{fact: molecular.alk.methods, is: [IHC, FISH]}",
                               "{molecular: {alk: {methods: [IHC, FISH]}}}")
    result = diff_rulebooks(shipped, rulebook, examples=3)
    assert outcome(result) == (("molecular.alk.methods",), 3, 1, True)
    assert [example["patient"] for example in result.examples] == [{"molecular": {"alk": {"methods": ["FISH",
                                                                                                        "IHC"]}}}]


@pytest.mark.parametrize("budget, changed, exact", [(21, 4, True), (20, 3, False), (4, 0, False)])
def test_past_its_budget_of_solver_calls_the_count_says_it_is_a_lower_bound(tmp_path, shipped, monkeypatch, budget,
                                                                            changed, exact):
    # The age test above takes 11 counting steps of 2 solver calls (the whole space, then each of its 10 classes):
    # 21 calls are enough, with 20 the last class (> 39, a changed one) is never looked at.
    from imt_cds.authoring import rulebook_diff

    monkeypatch.setattr(rulebook_diff, "_COUNT_BUDGET", budget)
    result = diff_rulebooks(shipped, with_added_flag(tmp_path, "{fact: age_years, gte: 5}", "{age_years: 6}"),
                            examples=0)
    assert outcome(result) == (("age_years",), 10, changed, exact)


def test_a_change_for_every_patient_is_one_class_with_one_example(tmp_path, shipped):
    # No field decides it: the whole input space is one class, and one example stands for it (not three copies).
    result = diff_rulebooks(shipped, with_added_flag(tmp_path, "always", "{}"), examples=3)
    assert outcome(result) == ((), 1, 1, True)
    (example,) = result.examples
    assert example["patient"] == {} and set(example["new"]) - set(example["old"]) == {"FLAG_ADDED_BY_TEST"}


def test_the_examples_show_each_change_before_showing_one_again_and_each_is_canonical(tmp_path, shipped):
    """Two flags added (one for older patients, one for tumours under 1 or over 50 cm), each a finding the old
    rulebook never had: the examples show each gained once before either again, and are the same on every call."""
    directory = copy_rulebook(tmp_path)
    add_flag(directory, "{fact: age_years, gt: 50}", [({"age_years": 60}, True), ({}, False)], rule_id="R00",
             finding="FLAG_OLDER")
    add_flag(directory, "{any: [{fact: tumor.size_cm, gt: 50}, {fact: tumor.size_cm, lt: 1}]}",
             [({"tumor": {"size_cm": 60}}, True), ({"tumor": {"size_cm": 0.5}}, True), ({}, False)],
             rule_id="R90", finding="FLAG_SIZE")
    new = load_rulebook(directory)
    result = diff_rulebooks(shipped, new, examples=3)
    gains = [sorted(set(e["new"]) - set(e["old"])) for e in result.examples]
    # (the flag of sizes takes two classes, under 1 cm and over 50: the second example is the other flag)
    assert len(gains) == 3 and sorted(map(tuple, gains[:2])) == [("FLAG_OLDER",), ("FLAG_SIZE",)]
    assert diff_rulebooks(shipped, new, examples=3).examples == result.examples
