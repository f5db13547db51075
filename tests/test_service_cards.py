"""The service's renderers and data, without a server: indicator mapping, card texts and links, the drug table, and
modules that can be imported without side effects."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from imt_cds import evaluate
from imt_cds.rulebook import finding_kind
from imt_cds.service.cards import (
    CRITICAL_FINDINGS,
    assessment_cards,
    card_uuid,
    citation_links,
    finding_indicator,
    problems_card,
)
from imt_cds.service.drugs import TARGETED_DRUGS, find_drug
from imt_cds.service.order_sign import targeted_orders

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.json"))


def all_codes(rulebook):
    return {f.code for rule in rulebook for f in rule.findings}


def test_every_finding_of_the_rulebook_has_an_indicator_and_the_critical_ones_exist(rulebook):
    codes = all_codes(rulebook)
    assert CRITICAL_FINDINGS <= codes
    for code in codes:
        assert finding_indicator(code, finding_kind(code)).value in ("info", "warning", "critical")
    assert finding_indicator("REC_CRIZOTINIB_ALK", "recommendation").value == "info"
    assert finding_indicator("REQUEST_AGE", "data_request").value == "info"
    assert finding_indicator("RISK_DISTANT_DISEASE", "risk_flag").value == "warning"
    assert finding_indicator("FLAG_OFF_LABEL_INDICATION", "flag").value == "warning"
    assert finding_indicator("FLAG_CONTRADICTORY_INPUT", "flag").value == "critical"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_cards_of_every_example_patient_are_short_unique_and_stable(path):
    document = evaluate(json.loads(path.read_text())).to_dict()
    cards = assessment_cards(document, evaluation_id="e-1", sources={}, public_url="https://cds.example.org")
    assert len(cards) == len(document["recommendations"]) + len(document["risk_flags"])
    assert len({c["uuid"] for c in cards}) == len(cards)
    for card in cards:
        assert 0 < len(card["summary"]) < 140
        assert card["detail"].count("**Why:**") == 1
    again = assessment_cards(document, evaluation_id="e-1", sources={}, public_url="https://cds.example.org")
    assert [c["uuid"] for c in again] == [c["uuid"] for c in cards]


def test_card_uuids_differ_by_evaluation_rule_and_code():
    ids = {card_uuid(e, r, c) for e in ("e1", "e2") for r in ("R12", "R13") for c in ("A", "B")}
    assert len(ids) == 8


def test_citation_links_are_made_from_pmids_pmc_ids_and_dois_only():
    links = citation_links([
        {"citation": "Lovly CM, et al. Cancer Discov 2014;4(8):889-95. PMID 24875859"},
        {"citation": "Five cases of EIMS, PMID 27460384 (PMC4962498)"},
        {"citation": "Chavez C. Oncol Lett 2013;5(5):1672-6. doi:10.3892/ol.2013.1260."},
        {"citation": "A cohort (PMID not verified)"},
        {"citation": "Again Lovly. PMID 24875859"},
    ])
    assert [link["url"] for link in links] == [
        "https://pubmed.ncbi.nlm.nih.gov/24875859/",
        "https://pubmed.ncbi.nlm.nih.gov/27460384/",
        "https://pmc.ncbi.nlm.nih.gov/articles/PMC4962498/",
        "https://doi.org/10.3892/ol.2013.1260",
    ]
    assert all(link["type"] == "absolute" and link["label"] for link in links)


def test_text_from_the_record_cannot_inject_markdown_into_a_card():
    card = problems_card([{"where": "Observation/[x](https://evil.example)", "message": "**bold** `code`",
                           "severity": "warning", "path": None}], evaluation_id="e")
    assert "\\[x\\](https://evil.example)" in card["detail"] and "\\*\\*bold\\*\\* \\`code\\`" in card["detail"]


def test_the_drug_table_cites_real_evidence_and_parameters(rulebook):
    names = [name.lower() for drug in TARGETED_DRUGS for name in drug.names]
    assert len(names) == len(set(names))
    for drug in TARGETED_DRUGS:
        assert set(drug.targets) <= {"alk", "ros1", "ntrk", "ret"} and drug.targets
        for evidence in drug.evidence:
            assert evidence in rulebook.evidence, (drug.ingredient, evidence)
        for target, parameter in drug.label_age.items():
            assert target in drug.targets and parameter in rulebook.parameters
    covered = {target for drug in TARGETED_DRUGS for target in drug.targets}
    assert covered == {"alk", "ros1", "ntrk", "ret"}


@pytest.mark.parametrize(("text", "ingredient"), [
    ("crizotinib 250 MG Oral Capsule", "crizotinib"),
    ("XALKORI 200 mg", "crizotinib"),
    ("Repotrectinib 40 MG", "repotrectinib"),
    ("entrectinib pellets", "entrectinib"),
    ("LORVIQUA", "lorlatinib"),
    ("amoxicillin", None),
    ("crizotinibum-like compound", None),  # whole words only
])
def test_targeted_drugs_are_recognised_by_name_case_insensitively(text, ingredient):
    drug = find_drug([text])
    assert (drug.ingredient if drug else None) == ingredient


def test_orders_are_read_from_text_displays_and_contained_medications():
    bundle = {"resourceType": "Bundle", "entry": [
        {"resource": {"resourceType": "MedicationRequest", "id": "a", "medicationCodeableConcept": {
            "coding": [{"system": "http://example.org/formulary", "code": "0", "display": "Alecensa"}]}}},
        {"resource": {"resourceType": "MedicationRequest", "id": "b", "medicationReference": {"reference": "#m"},
                      "contained": [{"resourceType": "Medication", "id": "m", "code": {"text": "selpercatinib"}}]}},
        {"resource": {"resourceType": "MedicationOrder", "id": "c", "medicationCodeableConcept": {
            "text": "Larotrectinib"}}},
        {"resource": {"resourceType": "NutritionOrder", "id": "d"}},
    ]}
    found = {(o.where, o.drug.ingredient) for o in targeted_orders(bundle)}
    assert found == {("MedicationRequest/a", "alectinib"), ("MedicationRequest/b", "selpercatinib"),
                     ("MedicationOrder/c", "larotrectinib")}


def test_importing_the_service_has_no_side_effects():
    code = """
import logging, sys, threading, multiprocessing
before = list(logging.getLogger().handlers)
import imt_cds.cli_serve
import imt_cds.service, imt_cds.service.app, imt_cds.service.auth, imt_cds.service.cards
import imt_cds.service.config, imt_cds.service.drugs, imt_cds.service.errors, imt_cds.service.feedback
import imt_cds.service.hooks, imt_cds.service.order_sign, imt_cds.service.prefetch, imt_cds.service.workers
assert threading.active_count() == 1, threading.enumerate()
assert multiprocessing.active_children() == []
assert logging.getLogger().handlers == before
assert "uvicorn" not in sys.modules and "fastapi" not in sys.modules
print("clean")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "clean", result.stderr


def test_only_the_worker_process_code_touches_the_engine():
    import ast

    package = ROOT / "imt_cds" / "service"
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = {node.module or "" for node in tree.body if isinstance(node, ast.ImportFrom)}
        assert not any(name.endswith("engine") for name in top), path.name  # never at import time
        everywhere = {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        if path.name != "workers.py":  # the worker process builds its Engine; nothing else may
            assert not any(name.endswith("engine") for name in everywhere), path.name
