"""The service's renderers and data, without a server: indicator mapping, card texts and links, the drug table, and
modules that can be imported without side effects."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from imt_cds import evaluate
from imt_cds.render.cards import (
    assessment_cards,
    card_uuid,
    citation_links,
    problems_card,
)
from imt_cds.core.drugs import find_drug
from imt_cds.service.order_sign import TargetedOrder, check_orders, targeted_orders

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.json"))


def all_codes(rulebook):
    return {f.code for rule in rulebook for f in rule.findings}


def test_the_shipped_rule_files_keep_the_documented_indicators(rulebook):
    critical = {"FLAG_CONTRADICTORY_INPUT", "FLAG_MULTIPLE_KINASE_FUSIONS_VERIFY", "FLAG_OFF_LABEL_AGE",
                "FLAG_VERIFY_INFANT_LABELING"}
    for rule in rulebook:
        for spec in rule.findings:
            expected = ("critical" if spec.code in critical else
                        "info" if spec.code.startswith(("REC_", "REQUEST_")) else "warning")
            assert spec.indicator == expected, (rule.id, spec.code)


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
    assert "\\[x\\]\\(https\\[:\\]//evil.example\\)" in card["detail"]
    assert "\\*\\*bold\\*\\* \\`code\\`" in card["detail"]


def test_the_drug_table_cites_real_evidence_and_parameters(rulebook):
    names = [name.lower() for drug in rulebook.drugs.values() for name in drug.names]
    assert len(names) == len(set(names))
    for drug in rulebook.drugs.values():
        assert set(drug.targets) <= {"alk", "ros1", "ntrk", "ret"} and drug.targets
        for evidence in drug.evidence:
            assert evidence in rulebook.evidence, (drug.name, evidence)
        for target, parameter in drug.label_min_age.items():
            assert target in drug.targets and parameter in rulebook.parameters
    covered = {target for drug in rulebook.drugs.values() for target in drug.targets}
    assert covered == {"alk", "ros1", "ntrk", "ret"}


def test_only_verified_rxnorm_codes_are_in_the_drug_table(rulebook):
    # The codes verified in public sources (each drug's rxnorm.source says where); every other drug has none.
    verified = {"crizotinib": "1148495", "alectinib": "1727455", "ceritinib": "1535457", "brigatinib": "1921217",
                "lorlatinib": "2103164"}
    assert {d.name: d.rxnorm for d in rulebook.drugs.values() if d.rxnorm} == verified
    assert all(d.rxnorm_source for d in rulebook.drugs.values() if d.rxnorm)


@pytest.mark.parametrize(("text", "ingredient"), [
    ("crizotinib 250 MG Oral Capsule", "crizotinib"),
    ("XALKORI 200 mg", "crizotinib"),
    ("Repotrectinib 40 MG", "repotrectinib"),
    ("entrectinib pellets", "entrectinib"),
    ("LORVIQUA", "lorlatinib"),
    ("amoxicillin", None),
    ("crizotinibum-like compound", None),  # whole words only
    ("nonalectinib analogue", None),
    ("Capsule, oral: Crizotinib 250 mg", "crizotinib"),  # anywhere in the text
])
def test_targeted_drugs_are_recognised_by_name_case_insensitively(rulebook, text, ingredient):
    drug = find_drug(rulebook.drugs, [text])
    assert (drug.name if drug else None) == ingredient


def test_an_order_coded_only_with_a_drugs_rxnorm_ingredient_code_is_recognised(rulebook):
    rxnorm = "http://www.nlm.nih.gov/research/umls/rxnorm"  # as the drug table's docstring names the system
    crizotinib = rulebook.drugs["crizotinib"].rxnorm
    assert crizotinib is not None
    order = {"resourceType": "MedicationRequest", "id": "coded",
             "medicationCodeableConcept": {"coding": [{"system": rxnorm, "code": crizotinib}]}}
    (found,) = targeted_orders({"resourceType": "Bundle", "entry": [{"resource": order}]}, rulebook.drugs)
    assert (found.where, found.drug.name, found.text) == ("MedicationRequest/coded", "crizotinib", "crizotinib")
    # the same digits in another code system, and an RxNorm code not in the table, name no drug of it
    assert find_drug(rulebook.drugs, [], [("http://example.org/formulary", crizotinib)]) is None
    assert find_drug(rulebook.drugs, [], [(rxnorm, "1")]) is None
    assert find_drug(rulebook.drugs, ["amoxicillin"], [(rxnorm, crizotinib)]).name == "crizotinib"


def test_orders_are_read_from_text_displays_and_contained_medications(rulebook):
    bundle = {"resourceType": "Bundle", "entry": [
        {"resource": {"resourceType": "MedicationRequest", "id": "a", "medicationCodeableConcept": {
            "coding": [{"system": "http://example.org/formulary", "code": "0", "display": "Alecensa"}]}}},
        {"resource": {"resourceType": "MedicationRequest", "id": "b", "medicationReference": {"reference": "#m"},
                      "contained": [{"resourceType": "Medication", "id": "m", "code": {"text": "selpercatinib"}}]}},
        {"resource": {"resourceType": "MedicationOrder", "id": "c", "medicationCodeableConcept": {
            "text": "Larotrectinib"}}},
        {"resource": {"resourceType": "NutritionOrder", "id": "d"}},
    ]}
    found = {(o.where, o.drug.name) for o in targeted_orders(bundle, rulebook.drugs)}
    assert found == {("MedicationRequest/a", "alectinib"), ("MedicationRequest/b", "selpercatinib"),
                     ("MedicationOrder/c", "larotrectinib")}


def order_for(rulebook, name: str, **changes) -> TargetedOrder:
    drug = rulebook.drugs[name]
    return TargetedOrder(f"MedicationRequest/{name}", name, dataclasses.replace(drug, **changes) if changes else drug)


def facts_with(age, **statuses) -> dict:
    genes = ("alk", "ros1", "ntrk", "ret", "pdgfrb")
    return {"age_years": age, "molecular": {gene: {"status": statuses.get(gene, "unknown")} for gene in genes}}


def order_cards(rulebook, order, facts) -> list[tuple[str, str]]:
    return [(c["source"]["topic"]["code"], c["indicator"]) for c in check_orders([order], facts, {}, rulebook,
                                                                                  check_id="check")]


def test_an_order_at_its_labelled_age_fits_and_below_it_is_critical(rulebook):
    assert rulebook.parameters["crizotinib_min_age_years"].value == 1  # "labelled from age 1": 1 is in the label
    crizotinib = order_for(rulebook, "crizotinib")
    assert order_cards(rulebook, crizotinib, facts_with(1, alk="positive")) == []
    assert order_cards(rulebook, crizotinib, facts_with(0.99, alk="positive")) == [
        ("ORDER_BELOW_LABELLED_AGE", "critical")]
    assert order_cards(rulebook, crizotinib, facts_with(None, alk="positive")) == [("ORDER_AGE_UNKNOWN", "warning")]
    assert order_cards(rulebook, crizotinib, facts_with(0.5, ros1="positive")) == []  # no labelled age for ROS1 here


def test_a_target_tested_negative_is_critical_only_when_every_target_is(rulebook):
    crizotinib = order_for(rulebook, "crizotinib")  # ALK or ROS1
    assert order_cards(rulebook, crizotinib, facts_with(30, alk="negative", ros1="negative")) == [
        ("ORDER_TARGET_NOT_POSITIVE", "critical")]
    # one negative, the other never tested: not documented positive, but not shown absent either
    assert order_cards(rulebook, crizotinib, facts_with(30, alk="negative")) == [
        ("ORDER_TARGET_NOT_POSITIVE", "warning")]
    assert order_cards(rulebook, crizotinib, facts_with(30)) == [("ORDER_TARGET_NOT_POSITIVE", "warning")]
    assert order_cards(rulebook, crizotinib, facts_with(30, alk="negative", ros1="positive")) == []


def test_a_positive_target_without_a_labelled_age_does_not_end_the_age_check(rulebook):
    # An institution's drug table may list a target without a labelled age before one with it: the age is still
    # checked against the one that has it.
    drug = order_for(rulebook, "crizotinib", targets=("ros1", "alk"))
    assert order_cards(rulebook, drug, facts_with(0.5, alk="positive", ros1="positive")) == [
        ("ORDER_BELOW_LABELLED_AGE", "critical")]


@pytest.mark.parametrize("targets", [("alk", "ros1"), ("ros1", "alk")])
def test_one_labelled_use_that_fits_is_enough_whatever_the_order_of_the_targets(rulebook, targets):
    # Two positive targets, each with its own labelled age (ALK from 1, ROS1 from 2 here): at 1.5 the ALK use is
    # within its label, so no card, in either order of the table; below both, one card, about the youngest use.
    ages = {"alk": "crizotinib_min_age_years", "ros1": "selpercatinib_min_age_years"}
    assert (rulebook.parameters[ages["alk"]].value, rulebook.parameters[ages["ros1"]].value) == (1, 2)
    drug = order_for(rulebook, "crizotinib", targets=targets, label_min_age={t: ages[t] for t in targets})
    assert order_cards(rulebook, drug, facts_with(1.5, alk="positive", ros1="positive")) == []
    (card,) = check_orders([drug], facts_with(0.5, alk="positive", ros1="positive"), {}, rulebook, check_id="c")
    assert (card["source"]["topic"]["code"], card["indicator"]) == ("ORDER_BELOW_LABELLED_AGE", "critical")
    assert "labelled from age 1 for ALK-positive disease" in card["summary"] + card["detail"]
    (card,) = check_orders([drug], facts_with(None, alk="positive", ros1="positive"), {}, rulebook, check_id="c")
    assert (card["source"]["topic"]["code"], card["indicator"]) == ("ORDER_AGE_UNKNOWN", "warning")
    assert "labelled from age 1 for ALK-positive disease" in card["summary"]
    # only the ROS1 use positive: its own labelled age applies
    assert order_cards(rulebook, drug, facts_with(1.5, alk="negative", ros1="positive")) == [
        ("ORDER_BELOW_LABELLED_AGE", "critical")]


def test_a_fact_left_unknown_says_why_the_resources_about_it_could_not_be_used():
    from imt_cds.render.cards import fact_line, fact_origins

    conflict = {"where": "Observation/a", "path": "tumor.size_cm", "kind": "conflict", "message": "disagree"}
    malformed = {"where": "Observation/b", "path": "tumor.size_cm", "kind": "skipped", "message": "malformed"}
    superseded = {"where": "Observation/c", "path": "tumor.size_cm", "kind": "superseded", "message": "older"}

    def line(*problems):
        return fact_line("tumor.size_cm", None, fact_origins({}, problems))

    # one conflict among the resources is enough to say they disagree (a reconciliation, not a fix of one resource)
    assert line(malformed, conflict).endswith(" — left unknown: the FHIR resources disagree (Observation/b, "
                                              "Observation/a; see the card on what could not be used)")
    assert line(malformed).endswith(" — left unknown: FHIR resources about it could not be used (Observation/b; "
                                    "see the card on what could not be used)")
    # a superseded resource is not why a fact is unknown
    assert line(superseded).endswith(" — no FHIR resource recorded it")
    assert fact_line("tumor.size_cm", 4.2, fact_origins({"tumor.size_cm": ["Observation/d"]}, [conflict])).endswith(
        " — from Observation/d")


def test_importing_the_service_has_no_side_effects():
    code = """
import logging, sys, threading, multiprocessing
before = list(logging.getLogger().handlers)
import imt_cds.cli.serve
import imt_cds.service, imt_cds.service.app, imt_cds.service.auth, imt_cds.render.cards
import imt_cds.service.config, imt_cds.core.drugs, imt_cds.service.errors, imt_cds.service.feedback
import imt_cds.service.hooks, imt_cds.service.order_sign, imt_cds.service.prefetch, imt_cds.service.workers
assert threading.active_count() == 1, threading.enumerate()
assert multiprocessing.active_children() == []
assert logging.getLogger().handlers == before
assert "uvicorn" not in sys.modules and "fastapi" not in sys.modules
print("clean")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "clean", result.stderr



def test_a_card_words_each_reason_as_every_other_renderer_does():
    from imt_cds.render.cards import escape_markdown
    from imt_cds.core.wording import reason_text

    document = evaluate(json.loads((ROOT / "examples" / "05_contradictory_record.json").read_text())).to_dict()
    cards = assessment_cards(document, evaluation_id="e", sources={}, public_url="https://cds.example.org")
    detail = "\n".join(card["detail"] for card in cards)
    several = [r for f in document["recommendations"] + document["risk_flags"] for r in f["because"]
               if r.get("derived") and len(r.get("reasons") or []) > 1]
    assert several, "the contradictory example should have a derived fact with several reasons"
    for reason in several:
        sentence = reason_text(reason, text=escape_markdown)  # the note's sentence (its data escaped)
        assert f"- {sentence} (rule " in detail  # and then the rule and its own reasons
    assert "CONTRADICTION holds: C1, C3 (rule D04), because:" in detail


def test_the_fhir_record_card_counts_conflicts_by_kind_not_by_the_words_of_a_message():
    quoted = {"where": "Observation/x", "message": "valueString 'conflicting' is not allowed", "severity": "warning",
              "path": "tumor.resectability", "kind": "not_allowed"}
    card = problems_card([quoted], evaluation_id="e")
    assert "conflict" not in card["summary"]
    conflict = {**quoted, "message": "conflicting values for tumor.size_cm", "kind": "conflict"}
    card = problems_card([quoted, conflict], evaluation_id="e")
    assert card["summary"].startswith("FHIR record: 1 conflict(s) left facts unknown; 2 issue(s)")


def test_every_card_has_one_shape_and_summaries_are_cut_the_same_way():
    from imt_cds.render.fhir_output import Indicator
    from imt_cds.render.cards import ServiceCard, card_summary, make_card, service_source

    assert card_summary("x" * 139) == "x" * 139
    assert card_summary("x" * 300) == "x" * 138 + "…" and len(card_summary("x" * 140)) == 139
    card = make_card(card_id="u", summary="s" * 200, indicator=Indicator.WARNING, detail=["a", "b"],
                     source=service_source(ServiceCard.ORDER_AGE_UNKNOWN, "Age unknown"), links=[])
    assert list(card) == ["uuid", "summary", "indicator", "detail", "source", "links", "overrideReasons"]
    assert len(card["summary"]) < 140 and card["detail"] == "a\nb" and card["indicator"] == "warning"
    assert card["source"]["topic"] == {"system": "urn:imt-cds:service-card", "code": "ORDER_AGE_UNKNOWN",
                                       "display": "Age unknown"}
    assert "links" not in make_card(card_id="u", summary="s", indicator=Indicator.INFO, detail=[],
                                    source=card["source"])


def test_order_cards_show_the_drugs_evidence_as_finding_cards_do(rulebook):
    from datetime import date

    from imt_cds.fhir.reader import facts_from_resources
    from imt_cds.render.cards import evidence_lines
    from imt_cds.service.order_sign import check_orders

    bundle = json.loads((ROOT / "examples" / "fhir" / "alk-lung-distant-bundle.json").read_text())
    resources = [entry["resource"] for entry in bundle["entry"]]
    read = facts_from_resources(resources, date(2026, 11, 21)).to_dict()
    orders = targeted_orders({"resourceType": "Bundle", "entry": [{"resource": {
        "resourceType": "MedicationRequest", "id": "d1", "medicationCodeableConcept": {"text": "Larotrectinib"}}}]},
        rulebook.drugs)
    (card,) = check_orders(orders, read["facts"], read["sources"], rulebook, check_id="c")
    evidence = [rulebook.evidence["EXT-FDA-LARO-2018"].to_dict()]
    assert "\n".join(["**Evidence about the drug:**", *evidence_lines(evidence)]) in card["detail"]
    assert "[EXT-FDA-LARO-2018; citation verified" in card["detail"]
    assert "`molecular.ntrk.status` is **unknown** — no FHIR resource recorded it" in card["detail"]
    assert "no NTRK alteration is documented positive" in card["summary"]


def test_ids_made_from_a_hook_instance_are_unchanged():
    import uuid

    from imt_cds.render.cards import hook_instance_id

    # Cards issued before this helper existed must still be traceable: the ids are the same uuid5 as before.
    assert hook_instance_id("hook", "abc") == str(uuid.uuid5(uuid.NAMESPACE_URL, "urn:imt-cds:hook:abc"))
    assert hook_instance_id("order-sign", "abc") == str(uuid.uuid5(uuid.NAMESPACE_URL,
                                                                   "urn:imt-cds:order-sign:abc"))


OBSERVATION_QUERY = ("Observation?patient={{context.patientId}}&code=http://loinc.org|21889-1,http://loinc.org|69548-6,"
                     "http://snomed.info/sct|399387003,http://snomed.info/sct|371497001,"
                     "http://snomed.info/sct|277208005,http://loinc.org|21907-1,http://loinc.org|21901-4,"
                     "http://loinc.org|21913-9,http://snomed.info/sct|1287652008,"
                     "http://snomed.info/sct|1098951000119108,http://loinc.org|97509-4,urn:imt-cds:fact|")
DISCOVERY_BEFORE_REVIEW = [  # captured from the service before its Observation query was built from imt_cds.fhir.reader
    {
        "description": "Explained, evidence-linked recommendations, data requests and risk flags for a patient with "
                       "an inflammatory myofibroblastic tumor, from the mCODE / Genomics Reporting record. Decision "
                       "support for a multidisciplinary team, never a prescription.",
        "hook": "patient-view",
        "id": "imt-patient-view",
        "prefetch": {
            "patient": "Patient/{{context.patientId}}",
            "conditions": "Condition?patient={{context.patientId}}",
            "observations": OBSERVATION_QUERY,
            "procedures": "Procedure?patient={{context.patientId}}",
        },
        "title": "IMT decision support (inflammatory myofibroblastic tumor)",
        "usageRequirements": "Reads FHIR R4 mCODE and Genomics Reporting resources; facts without a standard element "
                             "come from Observations coded urn:imt-cds:fact. Prefetch, or a fhirServer with a token, "
                             "is required.",
    },
    {
        "description": "Checks draft orders of ALK, ROS1, TRK and RET inhibitors against the patient's documented "
                       "alterations and the drugs' labelled ages, and warns with the reason when they do not fit.",
        "hook": "order-sign",
        "id": "imt-order-sign",
        "prefetch": {"patient": "Patient/{{context.patientId}}",
                     "conditions": "Condition?patient={{context.patientId}}",
                     "observations": OBSERVATION_QUERY},
        "title": "IMT targeted-drug order check",
        "usageRequirements": "Reads context.draftOrders (MedicationRequest) and the patient's age and genomic "
                             "results; prefetch, or a fhirServer with a token, is needed only when a targeted drug "
                             "is ordered.",
    },
]


def test_the_discovery_document_is_the_one_served_before_the_query_was_built_from_the_fhir_codes():
    from imt_cds.service.calls import SERVICES

    assert [service.discovery() for service in SERVICES] == DISCOVERY_BEFORE_REVIEW


def test_the_observation_query_asks_for_every_observation_code_the_value_sets_recognise():
    from imt_cds import load_rulebook
    from imt_cds.fhir.reader import OBSERVATION_CODES

    terminology = load_rulebook().terminology
    wanted = {(c.system, c.code) for name in ("tnm-distant-metastases-observation", "history-of-metastatic-cancer",
                                              "cancer-disease-status") for c in terminology[name].codes}
    assert wanted <= set(OBSERVATION_CODES)
