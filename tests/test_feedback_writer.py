"""The feedback writer (service/feedback.py ``FeedbackWriter``): writes run off the event loop, at most
``max_waiting`` of them wait for the store at once (the next is refused at once), and a write the store holds past
the writer's timeout is answered "may still complete", which it then does.

In process, with a real SQLite store whose write lock another connection holds (as a backup or another writer
would), and the stores themselves on SQLite and on a real PostgreSQL server; no CDS service.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from audit_support import raw_sql

from imt_cds.service.errors import ServiceConfigError
from imt_cds.service.feedback import FeedbackUnavailableError, FeedbackWriter, open_feedback_sink, stored_row

ITEM = {"card": "card-1", "outcome": "accepted", "outcomeTimestamp": "2026-01-02T03:04:05Z"}


@contextmanager
def write_lock_held(database: Path) -> Iterator[None]:
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def stored(database: Path) -> int:
    with sqlite3.connect(database) as db:
        return db.execute("SELECT count(*) FROM cds_feedback").fetchone()[0]


def rows() -> list[dict]:
    return [stored_row("imt-patient-view", ITEM, None, {})]


def test_at_most_max_waiting_writes_wait_for_the_store_and_the_next_is_refused_at_once(tmp_path):
    database = tmp_path / "audit.db"
    writer = FeedbackWriter(open_feedback_sink(str(database), None, lock_timeout=10), timeout=10, max_waiting=2)

    async def scenario() -> None:
        for _ in range(2):  # twice: the count goes back down as writes finish
            with write_lock_held(database):
                waiting = [asyncio.create_task(writer.record(rows())) for _ in range(2)]
                await asyncio.sleep(0.3)
                assert not any(task.done() for task in waiting)  # both accepted, waiting for the lock
                started = time.monotonic()
                with pytest.raises(FeedbackUnavailableError) as refused:
                    await writer.record(rows())
                assert time.monotonic() - started < 1  # at once, not after the store's timeout
                assert refused.value.message == ("2 feedback writes are already waiting for the store: nothing was "
                                                 "stored, try again later")
                assert refused.value.public_message == "the feedback store is busy: nothing was stored, try again later"
                assert refused.value.status == 503 and refused.value.code == "cds_feedback_unavailable"
            assert await asyncio.gather(*waiting) == [1, 1]

    try:
        asyncio.run(scenario())
    finally:
        writer.close()
    assert stored(database) == 4


def test_a_write_held_past_the_writers_timeout_is_answered_may_still_complete_and_then_completes(tmp_path):
    database = tmp_path / "audit.db"
    # The store itself would wait 8 s for its lock; the writer waits 0.3 s (and 2 s of grace for the store's answer).
    writer = FeedbackWriter(open_feedback_sink(str(database), None, lock_timeout=8), timeout=0.3)
    try:
        with write_lock_held(database):
            started = time.monotonic()
            with pytest.raises(FeedbackUnavailableError) as late:
                asyncio.run(writer.record(rows()))
            waited = time.monotonic() - started
        assert 2.2 < waited < 3.2  # the timeout and the 2 s of grace, no more
        assert late.value.message == ("the feedback store did not answer within 0.3 s; the write may still complete: "
                                      "check before sending it again")
        assert late.value.public_message == ("the feedback store did not answer in time; the write may still "
                                             "complete: check before sending it again")
        deadline = time.monotonic() + 5
        while stored(database) == 0 and time.monotonic() < deadline:  # the write goes on in its thread
            time.sleep(0.05)
        assert stored(database) == 1
    finally:
        writer.close()


def test_the_default_bound_is_16_writes():
    writer = FeedbackWriter(open_feedback_sink(None, None), timeout=1)
    try:
        assert writer.max_waiting == 16
    finally:
        writer.close()


def test_closing_the_writer_lets_a_write_in_progress_finish_before_the_store_is_closed(tmp_path):
    database = tmp_path / "audit.db"
    writer = FeedbackWriter(open_feedback_sink(str(database), None, lock_timeout=10), timeout=10)

    async def close_while_writing() -> None:
        with write_lock_held(database):
            write = asyncio.create_task(writer.record(rows()))
            await asyncio.sleep(0.2)  # the write waits for the lock in its thread
            closing = asyncio.get_running_loop().run_in_executor(None, writer.close)
            await asyncio.sleep(0.3)
            assert not closing.done()  # close waits for the write...
        await closing  # ...which, the lock released, completes
        assert await write == 1

    asyncio.run(close_while_writing())
    assert stored(database) == 1


def test_a_store_locked_at_start_is_waited_for_and_one_that_cannot_be_opened_is_said(tmp_path):
    database = tmp_path / "audit.db"
    open_feedback_sink(str(database), None).close()  # the tables exist; creating them again needs the lock

    async def open_while_locked() -> None:
        with write_lock_held(database):
            opening = asyncio.get_running_loop().run_in_executor(None, open_feedback_sink, str(database), None, 5.0)
            await asyncio.sleep(0.5)
        (await opening).close()  # waited for the lock, then opened

    asyncio.run(open_while_locked())
    missing = tmp_path / "missing" / "audit.db"
    with pytest.raises(ServiceConfigError) as caught:
        open_feedback_sink(str(missing), None)
    assert str(caught.value) == f"cannot keep feedback in {missing}: unable to open database file"


# --- the stores themselves, on SQLite and on a real PostgreSQL server ----------------------------------------------


@contextmanager
def feedback_table_locked(target: str) -> Iterator[None]:
    """The feedback table's writes held by another session, as a backup or another writer would hold them."""
    if not target.startswith("postgresql://"):
        with write_lock_held(Path(target)):
            yield
        return
    import psycopg

    with psycopg.connect(target) as holder:  # a transaction, rolled back on leaving
        holder.execute("LOCK TABLE cds_feedback IN EXCLUSIVE MODE")
        yield
        holder.rollback()


def count_stored(target: str) -> int:
    return raw_sql(target, "SELECT count(*) FROM cds_feedback")[0][0][0]


def test_a_store_waits_for_a_lock_released_in_time_then_writes(target):
    sink = open_feedback_sink(target, None, lock_timeout=10)
    try:
        with ThreadPoolExecutor(1) as thread, feedback_table_locked(target):
            write = thread.submit(sink.record, rows())
            time.sleep(0.5)
            assert not write.done()  # waiting for the lock, not refused
        assert write.result(10) == 1
    finally:
        sink.close()
    assert count_stored(target) == 1


def test_a_store_locked_past_its_timeout_refuses_the_write_and_stores_nothing(target):
    sink = open_feedback_sink(target, None, lock_timeout=0.5)
    try:
        with feedback_table_locked(target):
            started = time.monotonic()
            with pytest.raises(FeedbackUnavailableError) as busy:
                sink.record(rows())
            assert time.monotonic() - started < 3
        # (PostgreSQL's lock and statement timeouts are set alike: either may be the one that ends the wait)
        reasons = (["canceling statement due to lock timeout", "canceling statement due to statement timeout"]
                   if target.startswith("postgresql") else ["database is locked"])
        assert busy.value.message in [f"the feedback store cannot take the write now ({reason}): nothing was stored, "
                                      "try again later" for reason in reasons]
        assert busy.value.public_message == "the feedback store is busy: nothing was stored, try again later"
        assert sink.record(rows()) == 1  # the lock gone, the store takes writes again
    finally:
        sink.close()
    assert count_stored(target) == 1


def test_the_feedback_log_holds_one_json_line_per_item_and_one_it_cannot_open_is_said(tmp_path):
    path = tmp_path / "feedback.ndjson"
    sink = open_feedback_sink(None, path)
    try:
        two = [stored_row("imt-patient-view", dict(ITEM, card=f"card-{n}", note="émigré"), None, {}) for n in (1, 2)]
        assert sink.record(two) == 2
        assert sink.record(rows()) == 1
    finally:
        sink.close()
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") and "émigré" in text  # UTF-8 as written, not escaped
    assert [json.loads(line)["card"] for line in text.splitlines()] == ["card-1", "card-2", "card-1"]
    missing = tmp_path / "missing" / "feedback.ndjson"
    with pytest.raises(ServiceConfigError) as caught:
        open_feedback_sink(None, missing)
    assert str(caught.value) == f"cannot append feedback to {missing}: No such file or directory"


def test_a_postgresql_feedback_store_that_cannot_be_reached_is_said_at_start():
    import socket

    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(ServiceConfigError) as caught:
        open_feedback_sink(f"postgresql://imt@127.0.0.1:{port}/audit", None)
    assert str(caught.value).startswith("cannot keep feedback in the PostgreSQL audit database: connection failed")
