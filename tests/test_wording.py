"""One wording for values and reasons: the consult note, the HTML report and the FHIR narrative say the same
sentence for the same reason, so a rationale read in the EHR can be found again in the audit report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imt_cds.render.consult_note import render_consult_note
from imt_cds.render.fhir_output import rationale_text
from imt_cds.render.report_html import render_report_html
from imt_cds.core.validation import parse_facts_json
from imt_cds.core.wording import display_value, reason_text

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("value", "text"), [
    (None, "null (not recorded)"),
    (True, "true"),
    (False, "false"),
    (3.0, "3"),
    (2.5, "2.5"),
    ("unresectable", "unresectable"),
    (["FISH", "IHC"], "{FISH, IHC}"),
    ([], "{} (none recorded)"),
])
def test_values_read_as_a_clinician_expects(value, text):
    assert display_value(value) == text


def test_each_kind_of_reason_reads_as_one_sentence():
    assert reason_text({"fact": "tumor.size_cm", "expected": ">= 5", "actual": 7.0,
                        "parameter": "large_tumor_cm"}) == \
        "tumor.size_cm is 7 (rule needs >= 5, parameter large_tumor_cm)"
    assert reason_text({"derived": "CONTRADICTION", "holds": True, "reasons": ["a", "b"]}) == \
        "CONTRADICTION holds: a, b"
    assert reason_text({"derived": "DATA_BLOCK", "holds": False}) == \
        "DATA_BLOCK does not hold (required to be absent)"


def test_the_note_the_report_and_the_fhir_narrative_share_every_reason(engine):
    facts = parse_facts_json((ROOT / "examples" / "02_alk_positive_unresectable.json").read_text())
    assessment = engine.evaluate(facts)
    document = json.loads(assessment.to_json())
    note = render_consult_note(assessment)
    report = render_report_html(document)
    findings = document["recommendations"] + document["risk_flags"]
    sentences = {reason_text(r) for f in findings for r in f["because"]}
    assert sentences, "the example should have findings with reasons"
    for sentence in sentences:
        assert sentence in note
        assert sentence.replace(">", "&gt;").replace("<", "&lt;") in report
    for finding in findings:
        narrative = rationale_text(finding)
        assert all(reason_text(r) in narrative for r in finding["because"])
