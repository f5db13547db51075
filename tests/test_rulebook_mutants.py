"""The rulebook as a value (``rulebook.py``): catalogue order, finding kinds, the summary limit, immutability.

Written for the mutants of rulebook.py that the other loading tests let through (tests/mutation-survivors.md).
"""

from __future__ import annotations

import dataclasses

import pytest
from rulebook_copies import copy_rulebook, edit, load_problems, only

from imt_cds import evaluate, load_rulebook
from imt_cds.core.rulebook import finding_kind, natural_key

R32B = "treatment/R32b-alk-inhibitor-off-label-age.yaml"


def test_catalogue_order_is_by_letter_then_number_then_variant_not_by_text():
    ids = ["R10", "R9", "S01", "R19b", "C10", "R19a", "C2", "D04", "R02"]
    assert sorted(ids, key=natural_key) == ["C2", "C10", "D04", "R02", "R9", "R10", "R19a", "R19b", "S01"]


def test_an_id_without_a_number_sorts_before_the_numbered_ids_of_its_letters():
    assert sorted(["R1", "R2", "R"], key=natural_key) == ["R", "R1", "R2"]


@pytest.mark.parametrize(("ids", "order"), [
    (["R1", "R01"], ["R01", "R1"]),
    (["R01", "R1"], ["R01", "R1"]),
    (["R0", "R"], ["R", "R0"]),
    (["R", "R0"], ["R", "R0"]),
    (["R19b", "R19a", "R019a"], ["R019a", "R19a", "R19b"]),
], ids=["R1 then R01", "R01 then R1", "R0 then R", "R then R0", "a variant with a leading zero"])
def test_ids_of_the_same_letters_number_and_variant_are_ordered_by_their_text_whatever_order_they_came_in(
        ids, order):
    # Catalogue order must be total: a sort that kept input order for ties would make the order (and the hash
    # taken over the sorted rules) depend on the order the files were read.
    assert sorted(ids, key=natural_key) == order


def test_distinct_ids_never_have_the_same_catalogue_key():
    ids = ["R", "R0", "R00", "R1", "R01", "R001", "R1a", "R01a", "r1", "1R", "", "R-1"]
    assert len({natural_key(rule_id) for rule_id in ids}) == len(ids)


def test_the_shipped_catalogue_is_in_letter_number_variant_order_with_no_tie_left_to_the_text():
    # The tie-breaker never decides between two shipped ids, so the shipped order (and the rulebook's hash) is the
    # one it was before ties were broken.
    top = [rule.id for rule in load_rulebook().rules if rule.part_of is None]
    assert top == sorted(top, key=lambda rule_id: natural_key(rule_id)[:3])
    assert len({natural_key(rule_id)[:3] for rule_id in top}) == len(top)
    assert top[:4] == ["D01", "D02", "D03", "D04"] and top[-1] == "S01"


def test_each_finding_code_prefix_gives_its_kind():
    assert [finding_kind(code) for code in ("REC_X", "REQUEST_X", "RISK_X", "FLAG_X")] == [
        "recommendation", "data_request", "risk_flag", "flag"]
    with pytest.raises(ValueError, match="^not a finding code: ALERT_X$"):
        finding_kind("ALERT_X")


def test_an_assessment_names_each_findings_kind():
    kinds = {f.code: f.kind for f in evaluate({"tumor": {"distant_disease": True}}).findings}
    assert kinds["REQUEST_ALK_TESTING"] == "data_request"
    assert kinds["RISK_DISTANT_DISEASE"] == "risk_flag"
    assert kinds["REC_MULTIDISCIPLINARY_REVIEW"] == "recommendation"


def test_a_summary_of_exactly_140_characters_is_refused(tmp_path, rulebook):
    # CDS Hooks card summaries must be shorter than 140 characters; 139 loads (test_rule_metadata.py).
    directory = copy_rulebook(tmp_path)
    summary = rulebook.rule("R32b").findings[0].summary
    edit(directory, R32B, "needs specialist review.", "needs specialist review." + "x" * (140 - len(summary)))
    problem = only(load_problems(directory))
    code = rulebook.rule("R32b").findings[0].code
    assert (problem.path, problem.message) == (
        "then[0].summary", f"summary of {code} is 140 characters once its parameters are rendered; it must be "
                           "shorter than 140")


def test_no_part_of_a_loaded_rulebook_can_be_changed(rulebook):
    # The rulebook is shared by every engine and evaluation made with it, and its sha256 vouches for its content.
    rule = rulebook.rule("R32a")
    drug = next(iter(rulebook.drugs.values()))
    parameter = next(iter(rulebook.parameters.values()))
    parts = [(rulebook, "title"), (rule, "title"), (rule.findings[0], "summary"), (rule.examples[0], "fires"),
             (drug, "rxnorm"), (parameter, "value")]
    for part, name in parts:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(part, name, getattr(part, name))


def test_each_rule_has_exactly_one_shape_and_leaves_the_others_unset(rulebook):
    # Rule's contract: findings, or derives (one reason of a fact: reason and part_of too), or reasons, or suppresses.
    shapes = {}
    for rule in rulebook:
        if rule.findings:
            shape = "findings"
        elif rule.reasons:
            shape = "reasons"
        elif rule.suppresses:
            shape = "suppresses"
        else:
            shape = "reason" if rule.part_of is not None else "derives"
        shapes[rule.id] = shape
        assert (rule.derives is None) == (shape in ("findings", "suppresses")), rule.id
        assert (rule.reason is None) == (rule.part_of is None) == (shape != "reason"), rule.id
        assert isinstance(rule.findings, tuple) and isinstance(rule.reasons, tuple), rule.id
        assert isinstance(rule.suppresses, tuple) and isinstance(rule.examples, tuple), rule.id
    assert (shapes["R32a"], shapes["D01"], shapes["D04"], shapes["C1"], shapes["S01"]) == (
        "findings", "derives", "reasons", "reason", "suppresses")
    assert rulebook.rule("C3").part_of == "D04" and rulebook.rule("C3").reason.startswith("C3: ")


def test_the_rules_deriving_a_fact_and_suppressing_a_rule_are_found_by_name(rulebook):
    def ids(rules):
        return [r.id for r in rules]

    assert ids(rulebook.deriving("CONTRADICTION")) == ["C1", "C2", "C3", "C4"]  # the reasons, not D04
    assert ids(rulebook.deriving("AGE_KNOWN")) == ["D01"]
    assert rulebook.deriving("NO_SUCH_FACT") == ()
    assert ids(rulebook.suppressors("R23")) == ["S01"]
    assert rulebook.suppressors("R01") == ()
    assert rulebook.derived_names == tuple(sorted({r.derives for r in rulebook if r.derives}))
    assert "CONTRADICTION" in rulebook.derived_names


def test_a_finding_code_is_found_with_the_rules_producing_it(rulebook):
    assert [r.id for r in rulebook.producers("REC_MULTIDISCIPLINARY_REVIEW")] == ["R01"]
    assert rulebook.producers("REC_NO_SUCH_FINDING") == ()
    spec = rulebook.finding("RISK_DISTANT_DISEASE")
    assert spec.code == "RISK_DISTANT_DISEASE" and spec.kind == "risk_flag"
    with pytest.raises(KeyError) as raised:
        rulebook.finding("REC_NO_SUCH_FINDING")
    assert raised.value.args == (f"rulebook {rulebook.name} has no finding REC_NO_SUCH_FINDING",)
    assert rulebook.finding_codes == tuple(sorted({c for r in rulebook for c in r.codes}))
    assert "RISK_DISTANT_DISEASE" in rulebook.finding_codes


def test_a_rules_strength_labels_leave_out_the_note_and_a_design_choice_is_told_apart():
    from imt_cds.core.rulebook import strength_labels

    assert strength_labels("REG + SA-TRIAL (PDQ level C3 (2024))") == ("REG", "SA-TRIAL")
    assert strength_labels("DESIGN") == ("DESIGN",)


def test_a_rule_is_referred_to_by_id_and_version_and_lists_its_conditions(rulebook):
    r01, d01, r35 = rulebook.rule("R01"), rulebook.rule("D01"), rulebook.rule("R35")
    assert r01.ref == {"id": "R01", "version": r01.version}
    assert (d01.is_design, r01.is_design) == (True, False)
    assert r35.conditions == (r35.when, r35.findings[1].when)  # the rule's own, then its infant flag's
    assert rulebook.rule("D04").conditions == ()  # a grouping rule has no condition of its own
    assert rulebook.parameter_values["crizotinib_min_age_years"] == rulebook.parameters[
        "crizotinib_min_age_years"].value


def test_a_rulebooks_repr_leaves_out_the_canonical_source(rulebook):
    # The source is the whole rulebook again, as data (for archiving): it would bury everything else.
    assert "evidence_sha256" in rulebook.source and "evidence_sha256" not in repr(rulebook)
