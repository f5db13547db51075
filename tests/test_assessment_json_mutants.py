"""The assessment's JSON document where mutation testing found it unread (tests/mutation-survivors.md)."""

from __future__ import annotations

import dataclasses
import json

from imt_cds import Engine
from imt_cds.core.conditions import All, Atom


def test_a_test_whose_text_holds_a_percent_sign_is_written_as_it_reads(rulebook):
    # The document is written from %-format templates; a rule's test text is static and may hold '%' (here in a
    # rulebook built in code: a gene symbol from the loader cannot), between two of the patient's values.
    when = All((Atom("age_years", "gte", 1.0), Atom("molecular.alk.fusion_partner", "is_not", "X%sY%Z")))
    rules = tuple(dataclasses.replace(r, when=when) if r.id == "R37" else r for r in rulebook.rules)
    assessment = Engine(dataclasses.replace(rulebook, rules=rules)).evaluate({"age_years": 5})
    (flag,) = [f for f in assessment.to_dict()["risk_flags"] if f["code"] == "FLAG_NO_APPROVED_TARGETED_AGENT"]
    assert flag["because"] == [
        {"fact": "age_years", "expected": ">= 1", "actual": 5.0},
        {"fact": "molecular.alk.fusion_partner", "expected": "!= X%sY%Z (case-insensitive)", "actual": None}]
    assert flag == assessment.finding("FLAG_NO_APPROVED_TARGETED_AGENT").to_dict()


def test_the_diagnosis_given_closes_the_documents_provenance(engine):
    # The diagnosis a caller passes (the FHIR Condition evaluated) ends the provenance, after the evaluation time.
    diagnosis = {"condition": "Condition/imt-1", "code": "http://snomed.info/sct|1162836000", "recorded": "2025-11-02"}
    document = engine.evaluate({"age_years": 8}, diagnosis=diagnosis).to_json()
    assert document.endswith(',"diagnosis":{"condition":"Condition/imt-1","code":"http://snomed.info/sct|1162836000",'
                             '"recorded":"2025-11-02"}}}')
    assert json.loads(document)["provenance"]["diagnosis"] == diagnosis
