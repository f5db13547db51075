"""Feedback the store cannot write is refused or answered 503, never a 500.

A feedback item is stored as the client sent it, its own fields included; JSON's ``\\ud800`` escapes give text with a
lone surrogate, which no store can write as UTF-8. Such text is refused (400) by its path, wherever it is, before
anything is stored. A store that fails on a write (a full disk under the feedback log, a damaged SQLite file) answers
503 with what happened in the server's log, and the service keeps answering.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import httpx
import pytest
from service_support import running_service

from imt_cds.service.feedback import FeedbackUnavailableError, open_feedback_sink, stored_row
from imt_cds.service.models import feedback_problems, request_problems

FEEDBACK = "/cds-services/imt-patient-view/feedback"
SURROGATE = "not valid Unicode text: it holds a lone surrogate (\\ud800-\\udfff)"


def item(card: str = "card-1", **more) -> dict:
    return {"card": card, "outcome": "accepted", "outcomeTimestamp": "2026-01-02T03:04:05Z", **more}


def post(service, body: dict) -> httpx.Response:
    # json.dumps writes a lone surrogate as its \ud800 escape, as a client's JSON library does
    return httpx.post(service.url + FEEDBACK, content=json.dumps(body).encode(),
                      headers={"content-type": "application/json"}, timeout=30)


# --- the check: every lone surrogate by its path ----------------------------------------------------------------------


def test_every_lone_surrogate_of_the_items_is_named_by_its_path_keys_of_an_object_first():
    body = {"feedback": [
        item(overrideReason={"userComment": "ok \ud800", "\udc01": 1}),
        item("c\udfff", note={"\ud800": {"deeper": "\ud800 not looked into"}}, more=[1, {"x": "a\udc00"}, "fine"]),
        item("card-3", comment="émigré ≥ 5 µg 😀"),  # other text, however far from ASCII, is kept
    ]}
    assert feedback_problems(body) == [
        {"path": "feedback[0].overrideReason",
         "message": f"feedback[0].overrideReason has a key '\\udc01' that is {SURROGATE}"},
        {"path": "feedback[0].overrideReason.userComment",
         "message": f"feedback[0].overrideReason.userComment 'ok \\ud800' is {SURROGATE}"},
        {"path": "feedback[1].card", "message": f"feedback[1].card 'c\\udfff' is {SURROGATE}"},
        {"path": "feedback[1].note", "message": f"feedback[1].note has a key '\\ud800' that is {SURROGATE}"},
        {"path": "feedback[1].more[1].x", "message": f"feedback[1].more[1].x 'a\\udc00' is {SURROGATE}"},
    ]


def test_a_lone_surrogate_is_said_once_and_the_other_problems_of_the_items_still_are():
    body = {"feedback": [item("\ud800", outcome="maybe"), {"outcome": "accepted", "outcomeTimestamp": "x"}]}
    assert feedback_problems(body) == [
        {"path": "feedback[0].card", "message": f"feedback[0].card '\\ud800' is {SURROGATE}"},
        {"path": "feedback[0].outcome", "message": "feedback[0].outcome must be \"accepted\" or \"overridden\", not "
                                                   "'maybe'"},
        {"path": "feedback[1].card", "message": "feedback[1].card is required: the card's uuid, non-empty text"},
        {"path": "feedback[1].outcomeTimestamp", "message": "feedback[1].outcomeTimestamp 'x' is not an RFC 3339 "
                                                            "date-time with its offset, e.g. 2026-01-02T03:04:05Z"},
    ]


def test_a_key_with_a_lone_surrogate_in_a_hook_request_is_named_at_its_object():
    context = {"patientId": "p", "\ud800": 1}
    body = {"hook": "patient-view", "hookInstance": "h", "context": context}
    assert request_problems(body, "patient-view", "imt-patient-view") == [
        {"path": "context", "message": f"context has a key '\\ud800' that is {SURROGATE}"}]
    body = {"hook": "patient-view", "hookInstance": "h", "context": {"patientId": "p"}, "\udc00x": 1}
    assert request_problems(body, "patient-view", "imt-patient-view") == [
        {"path": "", "message": f"the request body has a key '\\udc00x' that is {SURROGATE}"}]
    body = {"hook": "patient-view", "hookInstance": "h", "context": {"patientId": "p"},
            "fhirAuthorization": {"access_token": "t", "\udc00": 1}}  # an object inside the request
    assert request_problems(body, "patient-view", "imt-patient-view") == [
        {"path": "fhirAuthorization", "message": f"fhirAuthorization has a key '\\udc00' that is {SURROGATE}"}]
    # a value is the models' own refusal, with what is allowed (unchanged)
    body = {"hook": "patient-view", "hookInstance": "h", "context": {"patientId": "\ud800"}}
    assert request_problems(body, "patient-view", "imt-patient-view") == [
        {"path": "context.patientId", "message": "context.patientId must be non-empty text (the FHIR id of the "
                                                 "patient whose chart is open), not '\\ud800'"}]


# --- through the service: refused before anything is stored, whatever the store ---------------------------------------


def stored_lines(kind: str, place) -> list[str]:
    if kind == "audit":
        with sqlite3.connect(place) as db:
            return [row[0] for row in db.execute("SELECT card FROM cds_feedback ORDER BY seq")]
    if kind == "feedback-log":
        return [json.loads(line)["card"] for line in place.read_text().splitlines()]
    return []


@pytest.mark.parametrize("kind", ["audit", "feedback-log", "server log"])
def test_feedback_holding_a_lone_surrogate_is_a_400_naming_it_and_nothing_of_the_call_is_stored(kind, tmp_path):
    place = tmp_path / ("audit.db" if kind == "audit" else "feedback.ndjson")
    where = [f"--{kind}", str(place)] if kind != "server log" else []
    with running_service("--allow-unauthenticated", "--workers", "1", *where) as service:
        response = post(service, {"feedback": [item("card-1"), item("card-2", note={"text": "\ud800"})]})
        assert response.status_code == 400
        assert response.json()["error"] == {
            "code": "cds_bad_request", "status": 400, "message": f"feedback[1].note.text '\\ud800' is {SURROGATE}",
            "details": {"problems": [{"path": "feedback[1].note.text",
                                      "message": f"feedback[1].note.text '\\ud800' is {SURROGATE}"}]}}
        kept = {"text": "\\ud800 as text, émigré"}  # the escape's letters, and non-ASCII text, are stored as sent
        assert post(service, {"feedback": [item("card-3", note=kept)]}).json() == {"stored": 1}
        assert stored_lines(kind, place) == (["card-3"] if kind != "server log" else [])
        if kind == "feedback-log":
            assert '"note": {"text": "\\\\ud800 as text, émigré"}' in place.read_text(encoding="utf-8")
        log = service.log_text()
    assert "Traceback" not in log and "internal error" not in log
    assert ("card-1" in log) is False  # the refused call left nothing, not even on the server log
    if kind == "server log":  # one line on the feedback logger, the row as JSON
        lines = [line for line in log.splitlines() if "cds-feedback" in line]
        assert len(lines) == 1 and lines[0].startswith("WARNING:     imt_cds.service.feedback: cds-feedback {")
        row = json.loads(lines[0].split("cds-feedback ", 1)[1])
        assert (row["service"], row["card"], row["feedback"]["note"]) == ("imt-patient-view", "card-3", kept)
        assert "émigré" in lines[0]  # written as UTF-8, not escaped


def test_a_feedback_log_on_a_full_disk_answers_503_and_the_service_keeps_answering():
    with running_service("--allow-unauthenticated", "--workers", "1", "--feedback-log", "/dev/full") as service:
        for _ in range(2):  # the second write meets what the first left in the buffer: the same answer
            response = post(service, {"feedback": [item()]})
            assert response.status_code == 503
            assert response.json()["error"] == {
                "code": "cds_feedback_unavailable", "status": 503,
                "message": "the feedback store did not answer in time; the write may still complete: check before "
                           "sending it again"}
        assert httpx.get(service.url + "/healthz", timeout=10).status_code == 200
        log = service.log_text()
    line = ("ERROR:     imt_cds.service: imt-cds: POST /cds-services/imt-patient-view/feedback: "
            "[cds_feedback_unavailable] the feedback log cannot be written (No space left on device); part of this "
            "call's feedback may have been written: check the log before sending it again")
    assert log.splitlines().count(line) == 2
    assert "Traceback" not in log


def test_a_damaged_sqlite_store_answers_503_nothing_stored_and_says_why_in_the_log(tmp_path):
    database = tmp_path / "audit.db"
    with running_service("--allow-unauthenticated", "--workers", "1", "--audit", str(database)) as service:
        assert post(service, {"feedback": [item("card-1")]}).json() == {"stored": 1}
        # Damage it as a disk fault might: the card index now points at the schema's page (SQLITE_CORRUPT on insert).
        with sqlite3.connect(database, isolation_level=None) as db:
            version = db.execute("PRAGMA schema_version").fetchone()[0]
            db.execute("PRAGMA writable_schema = ON")
            db.execute("UPDATE sqlite_master SET rootpage = 1 WHERE name = 'cds_feedback_card'")
            db.execute(f"PRAGMA schema_version = {version + 1}")
        response = post(service, {"feedback": [item("card-2")]})
        assert response.status_code == 503
        assert response.json()["error"]["message"] == ("the feedback store is busy: nothing was stored, try again "
                                                       "later")
        log = service.log_text()
    assert ("ERROR:     imt_cds.service: imt-cds: POST /cds-services/imt-patient-view/feedback: "
            "[cds_feedback_unavailable] the feedback store cannot take the write now (database disk image is "
            "malformed): nothing was stored, try again later") in log.splitlines()
    assert "Traceback" not in log


def test_closing_a_feedback_log_whose_last_write_failed_logs_it_and_does_not_raise(caplog):
    sink = open_feedback_sink(None, Path("/dev/full"))
    row = stored_row("imt-patient-view", item(), None, {})
    with pytest.raises(FeedbackUnavailableError, match=r"^the feedback log cannot be written \(No space left on "):
        sink.record([row])
    with caplog.at_level(logging.ERROR, logger="imt_cds.service.feedback"):
        sink.close()  # flushes the failed write's buffer again, which fails again
    assert caplog.messages == ["imt-cds: the feedback log could not be closed cleanly (No space left on device); "
                               "its last lines may be missing"]
