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
