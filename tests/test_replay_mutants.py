"""A replay's details that mutation testing of audit/replay.py found no test reading: that a difference and a replay
result cannot be changed once made, a result made without context, the recorded evaluation time kept by the replayed
document, the exact words of a record that is not well-formed or whose input was altered, and how documents of
different shapes compare (a key only one side has, a list against a value that is not one, firings that are not
objects)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import datetime
from pathlib import Path

import orjson
import pytest
from audit_support import disable_append_only, raw_sql

from imt_cds import Engine
from imt_cds.audit import ReplayError, open_store, replay
from imt_cds.audit.record import canonical_bytes
from imt_cds.audit.replay import MISSING, Difference, ReplayResult, compare_documents

ROOT = Path(__file__).resolve().parents[1]
ALK = json.loads((ROOT / "examples" / "02_alk_positive_unresectable.json").read_text())


@pytest.fixture
def store(tmp_path, rulebook):
    """A SQLite store holding one recorded evaluation."""
    with open_store(tmp_path / "audit.db") as opened:
        Engine(rulebook, audit=opened).evaluate(ALK)
        yield opened


def _rewrite(store, change) -> str:  # type: ignore[no-untyped-def]
    """Rewrite the last record's content with ``change`` and its hash with it, as a careful forger would; return the
    record's id."""
    record = store.record("last")
    content = json.loads(json.dumps(record.content))
    change(content)
    body = canonical_bytes(content).decode()
    disable_append_only(store.location)
    raw_sql(store.location, "UPDATE audit_records SET body = '" + body.replace("'", "''") + "', "
                            f"hash = '{hashlib.sha256(body.encode()).hexdigest()}' WHERE seq = {record.seq}")
    return record.id


def _paths(differences) -> list[tuple[str, object, object]]:  # type: ignore[no-untyped-def]
    return [(d.path, d.recorded, d.replayed) for d in differences]


def test_a_difference_and_a_replay_result_cannot_be_changed_once_made(store):
    result = replay(store, "last")
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.with_current = True  # type: ignore[misc]
    difference = Difference("risk_flags[RISK_A]", MISSING, {"code": "RISK_A"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        difference.path = "elsewhere"  # type: ignore[misc]


def test_a_replay_result_made_without_context_has_none_and_serialises_an_empty_list(store):
    record = store.record("last")
    result = ReplayResult(record, False, dict(record.rulebook), dict(record.assessment), ())
    assert result.context == ()
    assert result.to_dict()["context"] == [] and result.identical


def test_the_replayed_document_keeps_the_time_the_record_was_evaluated(store):
    # The replay states the recorded evaluation again, as of when it was made: not as of the replay.
    record = store.record("last")
    assert replay(store, "last").document["provenance"]["evaluated_at"] == record.evaluated_at


def test_a_record_that_is_not_well_formed_is_named_with_what_is_wrong_and_what_to_run(store):
    def unreadable_time(content: dict) -> None:
        assessment = orjson.loads(content["assessment_json"])
        assessment["provenance"]["evaluated_at"] = "the day before"
        content["assessment_json"] = orjson.dumps(assessment).decode()

    _rewrite(store, unreadable_time)
    with pytest.raises(ValueError) as reason:
        datetime.fromisoformat("the day before")
    with pytest.raises(ReplayError) as caught:
        replay(store, "last")
    assert str(caught.value) == ("audit record last is not a well-formed imt-cds audit record "
                                 f"(ValueError: {reason.value}); run `imt-cds audit verify`")


def test_a_record_whose_stored_input_was_altered_is_refused_with_the_reason(store):
    record_id = _rewrite(store, lambda content: content.update(input_json='{"age_years":9}'))
    with pytest.raises(ReplayError) as caught:
        replay(store, "last")
    assert str(caught.value) == f"record {record_id}: its stored input does not match its input_sha256 (altered)"


def test_a_field_only_one_side_has_is_a_difference_at_any_depth():
    recorded = {"schema": "s", "recommendations": [{"code": "REC_A", "title": "A"}], "notes": {"kept": 1}}
    replayed = {"schema": "s", "recommendations": [{"code": "REC_A", "title": "A", "also_from": ["R02"]}],
                "notes": {}, "added": True}
    differences, _ = compare_documents(recorded, replayed)
    assert _paths(differences) == [("added", MISSING, True), ("notes.kept", 1, MISSING),
                                   ("recommendations[REC_A].also_from", MISSING, ["R02"])]


def test_a_list_against_a_value_that_is_not_a_list_is_one_difference():
    differences, _ = compare_documents({"notes": ["a"]}, {"notes": "a"})
    assert _paths(differences) == [("notes", ["a"], "a")]
    differences, _ = compare_documents({"recommendations": [{"code": "REC_A"}]}, {"recommendations": None})
    assert _paths(differences) == [("recommendations", [{"code": "REC_A"}], None)]


def test_firings_that_are_not_objects_are_compared_as_they_are():
    differences, _ = compare_documents({"trace": [1, {"seq": 2, "engine_rule": "R02.0"}]},
                                       {"trace": [2, {"seq": 1, "engine_rule": "R02.0"}]})
    assert _paths(differences) == [("trace[1]", 1, MISSING), ("trace[2]", MISSING, 2)]
