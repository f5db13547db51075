"""What a reader sees: a fact the record did not give never reads as a clinical negative; enum values read as words;
counts have the right plural; "N of M checks hold" counts only what could be checked."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from imt_cds.cli.rules import _verify_summary
from imt_cds.render.consult_note import render_consult_note
from imt_cds.core.wording import enum_words, plural


def facts_line(engine, patient) -> str:  # type: ignore[no-untyped-def]
    note = render_consult_note(engine.evaluate(patient))
    return " ".join(note[note.index("Facts: "):note.index("\n\n", note.index("Facts: "))].split())


def test_a_record_that_gives_nothing_reads_as_not_recorded_never_as_no(engine):
    line = facts_line(engine, {})
    assert "no surgery" not in line and "surgery not recorded as done" in line
    assert "no RNA fusion panel" not in line and "RNA fusion panel not recorded as done" in line
    assert "resectability unknown" in line and "tumor site unknown" in line
    assert "ALK status unknown" in line and "age not recorded" in line and "distant disease not staged" in line
    assert not re.search(r", unknown\b", line), line  # a bare "unknown" says nothing of what is unknown


def test_recorded_facts_read_as_recorded(engine):
    line = facts_line(engine, {"tumor": {"site": "abdominal_pelvic", "resectability": "resectable_only_with_mutilation",
                                         "distant_disease": False},
                               "history": {"surgery_done": True, "margin_status": "R1"},
                               "molecular": {"alk": {"status": "negative"}, "rna_fusion_panel_done": True}})
    assert "abdominal/pelvic tumor" in line and "resectable only with mutilation" in line
    assert "no distant disease" in line and "surgery done (margin R1)" in line
    assert "ALK negative" in line and "RNA fusion panel done" in line
    assert "_" not in line.split("Facts: ")[1], line  # no enum value left in its code form


def test_a_margin_without_surgery_is_shown_as_recorded(engine):
    line = facts_line(engine, {"history": {"margin_status": "R2"}})
    assert "surgery not recorded as done (margin R2 recorded)" in line


@pytest.mark.parametrize(("value", "words"), [("abdominal_pelvic", "abdominal/pelvic"), ("head_neck", "head and neck"),
                                              ("nuclear_membrane_or_perinuclear", "nuclear membrane or perinuclear"),
                                              ("thoracic", "thoracic")])
def test_enum_values_read_as_words(value, words):
    assert enum_words(value) == words


def test_plurals():
    assert [plural(n, "flag") for n in (0, 1, 2)] == ["0 flags", "1 flag", "2 flags"]
    assert plural(1, "analysis", "analyses") == "1 analysis" and plural(3, "analysis", "analyses") == "3 analyses"


def checks(*statuses: str) -> list[SimpleNamespace]:
    return [SimpleNamespace(status=status) for status in statuses]


def test_checks_hold_counts_only_checkable_ones_and_says_how_many_were_not():
    assert _verify_summary(checks(*["holds"] * 75, "not_checked")) == \
        "75 of 75 checkable checks hold; 1 not checkable here (listed above)"
    assert _verify_summary(checks("holds", "violated", "warning")) == \
        "1 of 3 checkable checks hold; 1 violated; 1 warning"
    assert _verify_summary(checks("holds")) == "1 of 1 checkable check hold"
