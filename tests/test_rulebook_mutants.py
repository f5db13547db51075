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
