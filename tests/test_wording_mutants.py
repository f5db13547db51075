"""A reason's sentence, pinned where mutation testing of core/wording.py found no test looking: a reason without a
parameter, and a derived fact that holds without reasons, end where their sentence ends (nothing appended)."""

from __future__ import annotations

from imt_cds.core.wording import reason_text


def test_a_fact_reason_without_a_parameter_ends_with_what_the_rule_needs():
    reason = {"fact": "molecular.alk.status", "expected": "is positive", "actual": "negative", "parameter": None}
    assert reason_text(reason) == "molecular.alk.status is negative (rule needs is positive)"


def test_a_derived_fact_that_holds_without_reasons_is_just_named():
    assert reason_text({"derived": "alk_positive", "holds": True, "reasons": []}) == "alk_positive holds"
