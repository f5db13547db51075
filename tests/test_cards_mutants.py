"""render/cards.py in process: the memo of each finding's escaped text (reused only for the same text, bounded, and
never stale when a caller edits its document afterwards), and the ids of the cards that stand for a hook call.
Written for the survivors of a whole-file mutation run (tests/mutation-survivors.md); the frozen cards of
test_cards_golden.py hold the words themselves."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from imt_cds import parse_facts
from imt_cds.render import cards
from imt_cds.render.cards import assessment_cards, hook_instance_id

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "02_alk_positive_unresectable.json"


@pytest.fixture
def document(engine) -> dict:
    return engine.evaluate(parse_facts(json.loads(EXAMPLE.read_text()))).to_dict()


def card_details(document: dict) -> list[str]:
    return [card["detail"] for card in assessment_cards(document, evaluation_id="e1", sources={},
                                                        public_url="https://cds.example.org")]


def test_a_findings_text_is_made_once_and_reused_for_the_same_text(document):
    # What makes the cards of a hook call cheap: the rulebook's text of a finding, escaped, is kept (evidence with
    # null fields included) and found again for an equal finding of another document.
    for finding in [*document["recommendations"], *document["risk_flags"]]:
        first = cards._finding_text(finding)
        assert cards._finding_text(copy.deepcopy(finding)) is first, finding["code"]


def test_a_document_edited_in_place_after_its_cards_gets_cards_of_its_new_text(document):
    cards._FINDING_TEXT.clear()  # so that this document's findings are the ones kept
    before = card_details(document)
    quote = document["recommendations"][0]["evidence"][0]["quote"]
    document["recommendations"][0]["evidence"][0]["quote"] = "An edited quote."
    after = card_details(document)
    assert quote[:40] in before[0] and quote[:40] not in after[0]
    assert "An edited quote." in after[0] and "An edited quote." not in before[0]
    assert after[1:] == before[1:]


@pytest.mark.parametrize("field, first, second", [
    ("title", 1, True), ("strength", 1, True), ("title", 1.0, 1),
])
def test_values_that_are_equal_but_not_the_same_text_are_never_taken_for_each_other(document, field, first, second):
    # 1 == 1.0 == True in Python: only text is kept, so a hand-made document's odd value is written as it is.
    finding = document["recommendations"][0]
    finding[field] = first
    written_first = card_details(document)[0]
    finding[field] = second
    written_second = card_details(document)[0]
    assert f"{first}" in written_first and f"{second}" in written_second and written_first != written_second


def test_an_evidence_value_that_is_not_text_is_never_kept(document):
    entry = document["recommendations"][0]["evidence"][0]
    entry["level"] = 1
    first = cards._finding_text(document["recommendations"][0])
    entry["level"] = True
    assert cards._finding_text(document["recommendations"][0]) is not first


def test_a_finding_whose_rule_cannot_be_a_key_is_still_written(document):
    finding = document["recommendations"][0]
    finding["rule"]["version"] = ["1", "1", "0"]  # a list: not hashable (never in a document the engine wrote)
    text = cards._finding_text(finding)
    assert text.title == finding["title"] and cards._finding_text(finding) is not text


def test_the_memo_is_bounded(document):
    finding = document["recommendations"][0]
    cards._FINDING_TEXT.clear()
    for number in range(cards._FINDING_TEXT_LIMIT + 40):
        edited = {**finding, "rule": {"id": f"R{number}", "version": "1.0.0"}}
        cards._finding_text(edited)
        assert len(cards._FINDING_TEXT) <= 1024
    assert cards._FINDING_TEXT_LIMIT == 1024


def test_the_id_of_a_hook_calls_card_is_the_same_in_every_release():
    # Feedback names a card by its id, and may reach a replica of a newer release: the ids must not change.
    assert hook_instance_id("hook", "call-1") == "9f3c4b7b-7388-58e8-a5fd-1892fbe4035d"
    assert hook_instance_id("order-sign", "call-1") == "213a488b-3224-59c1-8c36-bb2b9ad0269a"


def test_a_derived_fact_the_document_does_not_list_is_said_to_hold_without_a_rule(document):
    # A hand-made or damaged document: the finding says ADVANCED_DISEASE holds, the document derives nothing.
    document["derived_facts"] = []
    detail = card_details(document)[0]
    assert "\n- ADVANCED_DISEASE holds\n" in detail and "(rule D02)" not in detail


@pytest.mark.parametrize("reason", [
    {"fact": "tumor.size_cm", "expected": "> 3.9", "actual": 6, "parameter": "size_risk_threshold_cm"},
    {"fact": "tumor.size_cm", "expected": "> 3.9", "actual": 6, "parameter": None},
    {"fact": "tumor.size_cm", "expected": "> 3.9", "actual": None},
    {"fact": "tumor.size_cm", "expected": "> 3.9", "actual": 6, "parameter": 7},
    {"fact": "tumor.size_cm", "expected": 3.9, "actual": 6},
    {"fact": 5, "expected": "> 3.9", "actual": 6},
    {"fact": "tumor.size_cm", "expected": "> 3.9", "actual": "6 <b>", "other": 1},
])
def test_a_facts_sentence_is_the_same_words_as_every_renderers(reason):
    # The words around the value are made once per rule test (a speed path); whatever the reason holds, the
    # sentence is reason_text's, the words every renderer uses.
    from imt_cds.core.wording import reason_text

    def outcome(write):
        try:
            return write(reason)
        except Exception as exc:  # (a value of the wrong type is an error on both paths)
            return type(exc)

    slow = outcome(lambda r: reason_text(r, fact=cards._code, value=cards._bold_value, text=cards._rule_md))
    assert outcome(cards._fact_sentence) == slow


CONTRADICTORY = EXAMPLE.parent / "05_contradictory_record.json"


def test_findings_withheld_are_listed_under_a_finding_that_needs_the_contradiction_not_under_one_that_excludes_it(
        engine):
    document = engine.evaluate(parse_facts(json.loads(CONTRADICTORY.read_text()))).to_dict()
    withheld = "**Withheld until the record is reconciled:**\n- REC_UPFRONT_SURGICAL_RESECTION: "
    details = dict(zip([f["code"] for f in document["recommendations"] + document["risk_flags"]],
                       card_details(document), strict=True))
    assert withheld in details["FLAG_CONTRADICTORY_INPUT"] and withheld not in details["REC_MULTIDISCIPLINARY_REVIEW"]
    # A finding that holds only where there is no contradiction is not where the withheld findings are said.
    document["recommendations"][0]["because"] = [{"derived": "CONTRADICTION", "holds": False}]
    assert document["recommendations"][0]["code"] == "REC_MULTIDISCIPLINARY_REVIEW"
    assert withheld not in card_details(document)[0]


def test_a_fact_several_unusable_resources_were_about_names_each():
    from imt_cds.render.cards import fact_line, fact_origins

    problems = [{"where": "Observation/a", "path": "tumor.size_cm", "kind": "malformed"},
                {"where": "Observation/b", "path": "tumor.size_cm", "kind": "unreadable"},
                {"where": "Observation/c", "path": "tumor.size_cm", "kind": "superseded"}]
    assert fact_line("tumor.size_cm", None, fact_origins({}, problems)) == (
        "- `tumor.size_cm` is **null \\(not recorded\\)** — left unknown: FHIR resources about it could not be used "
        "(Observation/a, Observation/b; see the card on what could not be used)")


@pytest.mark.parametrize("citation, links", [
    ("Rich BS, et al. IMT in children. Int J Cancer 2022. PMID 35567764. doi: 10.1002/ijc.34117.",
     [("PubMed 35567764: Rich BS, et al", "https://pubmed.ncbi.nlm.nih.gov/35567764/"),
      ("DOI 10.1002/ijc.34117: Rich BS, et al", "https://doi.org/10.1002/ijc.34117")]),
    ("A short one (doi: 10.1234/x.y);", [("DOI 10.1234/x.y: A short one (doi: 10.1234/x.y);",
                                          "https://doi.org/10.1234/x.y")]),
    ("Check digit last. doi: 10.1234/5678X.", [("DOI 10.1234/5678X: Check digit last. doi: 10.1234/5678X.",
                                                "https://doi.org/10.1234/5678X")]),
    ("A. " + "b" * 66 + " PMC1234567", [("PMC1234567: A. " + "b" * 66 + " PMC1234567",  # 80 characters: whole
                                         "https://pmc.ncbi.nlm.nih.gov/articles/PMC1234567/")]),
    ("A. " + "b" * 67 + " PMC1234567", [("PMC1234567: A", "https://pmc.ncbi.nlm.nih.gov/articles/PMC1234567/")]),
    ("b" * 80 + " PMC1234567", [("PMC1234567: " + "b" * 79 + "…", "https://pmc.ncbi.nlm.nih.gov/articles/PMC1234567/")]),
    ("One. Two. " + "c" * 80 + " PMID 12345", [("PubMed 12345: One", "https://pubmed.ncbi.nlm.nih.gov/12345/")]),
    (None, []),
])
def test_citation_links_are_labelled_with_the_citation_shortened_to_80_characters(citation, links):
    from imt_cds.render.cards import citation_links

    found = citation_links([{"citation": citation}])
    assert [(link["label"], link["url"]) for link in found] == links
    assert all(link["type"] == "absolute" and len(link["label"].split(": ", 1)[1]) <= 80 for link in found)


def test_the_card_for_a_resource_not_tied_to_the_imt_says_so_among_the_reasons():
    from imt_cds.render.cards import conflict_card

    problems = [{"where": "Procedure/p1", "message": "surgery that names no reason (reasonReference), in a chart that "
                 "holds another primary cancer (Condition/c): whether the IMT was operated on cannot be established, "
                 "so nothing is evaluated: name its reason", "severity": "error", "path": "history.surgery_done",
                 "kind": "unattributed"},
                {"where": "Observation/o1, Observation/o2", "message": "conflicting values for tumor.size_cm",
                 "severity": "error", "path": "tumor.size_cm", "kind": "conflict"}]
    card = conflict_card(problems, evaluation_id="e1")
    assert card["summary"] == ("Records not tied to the IMT, unreadable or conflicting: no IMT decision support until "
                               "they are corrected.")
    assert card["detail"].split("\n")[0] == (
        "**Nothing was evaluated.** The FHIR record holds resources that disagree, cannot be read or are not tied to "
        "the IMT, about facts that cannot be left unknown, and imt-cds never evaluates a guess:")
    assert "- Procedure/p1: surgery that names no reason" in card["detail"]


def test_the_card_for_a_record_that_cannot_be_read_says_so_in_its_own_words():
    from imt_cds.render.cards import conflict_card

    problems = [{"where": "Procedure/p1", "message": "malformed Procedure (status must be text); history.surgery_done "
                 "cannot be left unknown", "severity": "error", "path": "history.surgery_done", "kind": "unreadable"},
                {"where": "Observation/o1, Observation/o2", "message": "conflicting values for tumor.size_cm",
                 "severity": "error", "path": "tumor.size_cm", "kind": "conflict"},
                {"where": "Observation/o3", "message": "status 'preliminary'; not used", "severity": "warning"}]
    card = conflict_card(problems, evaluation_id="e1")
    assert card["summary"] == "Unreadable or conflicting records: no IMT decision support until they are corrected."
    assert card["indicator"] == "critical"
    assert card["detail"].split("\n") == [
        "**Nothing was evaluated.** The FHIR record holds resources that disagree or cannot be read, about facts that "
        "cannot be left unknown, and imt-cds never evaluates a guess:",
        "",
        "- Procedure/p1: malformed Procedure \\(status must be text\\); history.surgery\\_done cannot be left unknown",
        "- Observation/o1, Observation/o2: conflicting values for tumor.size\\_cm",
        "",
        "Also not used:",
        "- Observation/o3: status 'preliminary'; not used",
        "",
        "Correct or retire the listed resources, then open the chart again.",
    ]
