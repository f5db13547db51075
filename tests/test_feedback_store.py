"""CDS Hooks feedback kept beside the audit trail, on SQLite and on a real PostgreSQL server: what is stored, in
order, and that the table refuses UPDATE and DELETE like the audit tables do."""

from __future__ import annotations

import json

import pytest
from audit_support import raw_sql

from imt_cds.audit import open_store
from imt_cds.service.feedback import CardIndex, open_feedback_sink, stored_row


def feedback_rows() -> list[dict]:
    items = [{"card": "card-1", "outcome": "accepted", "outcomeTimestamp": "2026-01-02T03:04:05Z"},
             {"card": "card-2", "outcome": "overridden", "outcomeTimestamp": "2026-01-02T03:04:06Z",
              "overrideReason": {"reason": {"code": "not-applicable"}}}]
    issued = [("imt-patient-view", "evaluation-1", "REC_CRIZOTINIB_ALK"), None]
    return [stored_row("imt-patient-view", item, card, {"iss": "https://ehr.example", "tenant": "t"})
            for item, card in zip(items, issued, strict=True)]


def test_feedback_is_stored_in_the_audit_database_and_cannot_be_changed(target):
    open_store(target).close()  # the audit trail exists first, as when the service runs with --audit
    sink = open_feedback_sink(target, None)
    try:
        assert sink.record(feedback_rows()) == 2
    finally:
        sink.close()
    stored = raw_sql(target, "SELECT card, outcome, evaluation_id, finding_code, body FROM cds_feedback "
                             "ORDER BY seq")[0]
    assert [row[:4] for row in stored] == [("card-1", "accepted", "evaluation-1", "REC_CRIZOTINIB_ALK"),
                                           ("card-2", "overridden", None, None)]
    body = json.loads(stored[1][4])
    assert body["feedback"]["overrideReason"] == {"reason": {"code": "not-applicable"}}
    assert body["client"] == {"iss": "https://ehr.example", "tenant": "t"}
    for statement in ("DELETE FROM cds_feedback", "UPDATE cds_feedback SET outcome = 'accepted'"):
        with pytest.raises(Exception, match="append-only"):
            raw_sql(target, statement)
    assert len(raw_sql(target, "SELECT seq FROM cds_feedback")[0]) == 2


def test_the_card_index_keeps_the_newest_cards_up_to_its_bound():
    index = CardIndex(max_entries=3)
    cards = [{"uuid": f"card-{n}", "source": {"topic": {"code": f"CODE_{n}"}}} for n in range(5)]
    index.add("imt-patient-view", "evaluation-1", cards[:2])
    index.add("imt-order-sign", "check-2", cards[2:])
    assert [index.get(f"card-{n}") for n in range(5)] == [
        None, None, ("imt-order-sign", "check-2", "CODE_2"), ("imt-order-sign", "check-2", "CODE_3"),
        ("imt-order-sign", "check-2", "CODE_4")]  # the oldest two gone, the three newest kept
    assert index.get("never-issued") is None


def test_without_its_driver_feedback_in_postgresql_says_what_to_install(monkeypatch):
    import sys

    from imt_cds.service.errors import ServiceConfigError

    monkeypatch.setitem(sys.modules, "psycopg", None)  # `import psycopg` now fails as if it were not installed
    with pytest.raises(ServiceConfigError) as caught:
        open_feedback_sink("postgresql://cds@db.example.org/audit", None)
    assert str(caught.value) == "feedback in PostgreSQL needs psycopg 3: pip install 'imt-cds[postgres]'"


def test_a_write_that_waits_past_the_timeout_for_this_processs_other_writes_is_refused_and_stores_nothing(target):
    # Feedback writes of one server are made one at a time (a lock of the sink's); one that cannot have its turn
    # within the lock timeout is refused (503, try again) naming why, and stores nothing. The other write is stood
    # for by holding that lock: a real one would hold it for as long as the database makes it wait, and which of two
    # real writes ran out of time first would be a race.
    from imt_cds.service.feedback import FeedbackUnavailableError

    open_store(target).close()
    sink = open_feedback_sink(target, None, lock_timeout=0.3)
    try:
        sink._lock.acquire()
        try:
            with pytest.raises(FeedbackUnavailableError) as refused:
                sink.record(feedback_rows())
        finally:
            sink._lock.release()
        assert str(refused.value) == ("the feedback store cannot take the write now (other feedback writes held it "
                                      "for 0.3 s): nothing was stored, try again later")
        assert sink.record(feedback_rows()) == 2
    finally:
        sink.close()
    (rows,) = raw_sql(target, "SELECT card FROM cds_feedback")
    assert len(rows) == 2  # the refused write left nothing
