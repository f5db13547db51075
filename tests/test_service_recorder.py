"""The service's audit recorder (``imt_cds/service/recorder.py``): records from many requests appended by one thread,
all that wait in one transaction; all or none; in the order they came. A real SQLite store, its write lock held by
another process (as a backup or a second writer would) to make records wait."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from audit_support import disable_append_only, hold_sqlite_write_lock, raw_sql

from imt_cds import Engine
from imt_cds.audit import open_store
from imt_cds.audit.record import new_record_content
from imt_cds.audit.sqlite import SQLiteAuditStore
from imt_cds.core.errors import AuditError
from imt_cds.service.recorder import AuditRecorder

ROOT = Path(__file__).resolve().parents[1]
PATIENTS = [json.loads(p.read_text()) for p in sorted((ROOT / "examples").glob("*.json"))]


def prepared(path: Path, count: int) -> list[dict]:
    """``count`` records as a worker prepares them, their rulebook archived in the store at ``path``."""
    engine = Engine()
    with open_store(path) as store:
        store.archive(engine.rulebook)
    return [new_record_content(engine.evaluate(PATIENTS[i % len(PATIENTS)])) for i in range(count)]


@contextmanager
def recording(path: Path, *, timeout: float = 20.0, max_batch: int = 64,
              check_reuse_seconds: float = 0.0) -> Iterator[AuditRecorder]:
    """A started recorder on the SQLite store at ``path`` (inside the event loop), closed at the end. Each check
    reads the store unless ``check_reuse_seconds`` says otherwise."""
    recorder = AuditRecorder(lambda: SQLiteAuditStore(path, timeout=timeout), max_batch=max_batch,
                             check_reuse_seconds=check_reuse_seconds)
    recorder.start()
    try:
        yield recorder
    finally:
        recorder.close()


@contextmanager
def write_lock_held(path: Path) -> Iterator[None]:
    """Another process holds the store's write lock until the block ends."""
    holder = hold_sqlite_write_lock(path)
    try:
        yield
    finally:
        holder.stdin.close()  # type: ignore[union-attr]
        holder.wait()


async def first_waiting_then(recorder: AuditRecorder, contents: list[dict]) -> list[asyncio.Future[str]]:
    """Hand the recorder the first record, which its thread takes and waits with for the lock, then the others,
    which wait in its queue meanwhile."""
    first = asyncio.ensure_future(recorder.record(contents[0]))
    deadline = time.monotonic() + 10
    await asyncio.sleep(0.05)
    while not recorder._queue.empty() and time.monotonic() < deadline:  # (private: when its thread took the first)
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # and is inside its transaction, waiting for the lock
    rest = [asyncio.ensure_future(recorder.record(c)) for c in contents[1:]]
    await asyncio.sleep(0.1)
    return [first, *rest]


@pytest.mark.parametrize("max_batch, transactions", [(64, 2), (2, 4)])
def test_records_that_wait_meanwhile_are_appended_together_in_the_order_they_came(tmp_path, max_batch, transactions):
    path = tmp_path / "audit.db"
    contents = prepared(path, 6)

    async def scenario() -> tuple[list[str], int]:
        with recording(path, max_batch=max_batch) as recorder:
            with write_lock_held(path):
                pending = await first_waiting_then(recorder, contents)
                await asyncio.sleep(0.2)
                assert not any(p.done() for p in pending)  # nothing acknowledged while the lock is held
            ids = await asyncio.wait_for(asyncio.gather(*pending), 30)
            return ids, recorder.transactions

    ids, committed = asyncio.run(scenario())
    assert ids == [c["id"] for c in contents]
    # the first alone, then the five that came while it waited: together, or at most max_batch at a time
    assert committed == transactions
    with open_store(path) as store:
        assert [r.id for r in store.records()] == ids
        assert store.verify().ok


def test_when_the_store_does_not_take_a_group_every_record_of_it_fails_and_none_is_kept(tmp_path, caplog):
    path = tmp_path / "audit.db"
    contents = prepared(path, 3)

    async def scenario() -> list[object]:
        with recording(path, timeout=0.5) as recorder:
            with write_lock_held(path):
                started = time.monotonic()
                outcomes = await asyncio.wait_for(
                    asyncio.gather(*(recorder.record(c) for c in contents), return_exceptions=True), 30)
                assert time.monotonic() - started < 10
            # the lock released: the recorder goes on
            outcomes.append(await asyncio.wait_for(recorder.record(contents[0]), 30))
            return outcomes

    *failed, recorded = asyncio.run(scenario())
    assert all(isinstance(f, AuditError) and "cannot append" in str(f) for f in failed), failed
    # the operator's log says what was lost and why
    assert any(r.name == "imt_cds.service" and r.getMessage().startswith("imt-cds: the audit store did not take ")
               and "database is locked" in r.getMessage() for r in caplog.records), caplog.records
    assert recorded == contents[0]["id"]
    with open_store(path) as store:
        assert [r.id for r in store.records()] == [contents[0]["id"]]


def test_a_recorder_that_is_not_running_takes_nothing(tmp_path):
    path = tmp_path / "audit.db"
    (content,) = prepared(path, 1)
    recorder = AuditRecorder(lambda: SQLiteAuditStore(path))

    async def record() -> str:
        return await recorder.record(content)

    with pytest.raises(AuditError, match="^the audit recorder is not running$"):
        asyncio.run(record())
    with pytest.raises(AuditError, match="^the audit recorder is not running$"):
        asyncio.run(recorder.check(5))  # (/readyz: not ready)
    recorder.close()  # never started: nothing to close

    async def started_then_closed() -> str:
        recorder.start()
        recorder.close()
        recorder.close()  # closing twice is closing once
        return await recorder.record(content)

    with pytest.raises(AuditError, match="^the audit recorder is not running$"):
        asyncio.run(started_then_closed())
    with open_store(path) as store:
        assert store.records() == []


def test_closing_appends_what_is_waiting(tmp_path):
    path = tmp_path / "audit.db"
    contents = prepared(path, 4)

    async def scenario() -> list[str]:
        recorder = AuditRecorder(lambda: SQLiteAuditStore(path, timeout=20))
        recorder.start()
        with write_lock_held(path):
            pending = await first_waiting_then(recorder, contents)
            closing = asyncio.ensure_future(asyncio.to_thread(recorder.close))
            await asyncio.sleep(0.3)
            assert not closing.done()
        await asyncio.wait_for(closing, 30)  # returns once everything queued before it has been appended
        return await asyncio.wait_for(asyncio.gather(*pending), 5)

    assert asyncio.run(scenario()) == [c["id"] for c in contents]
    # The recorder's connection is closed: the last connection to a WAL database removes its log on closing.
    assert not path.with_name(path.name + "-wal").exists()
    with open_store(path) as store:
        assert len(store.records()) == 4


def test_a_record_the_store_cannot_even_read_fails_alone_and_the_recorder_goes_on(tmp_path, caplog):
    path = tmp_path / "audit.db"
    (content,) = prepared(path, 1)
    broken = {key: value for key, value in content.items() if key != "rulebook"}  # not a record a worker makes

    async def scenario() -> tuple[BaseException, str]:
        with recording(path) as recorder:
            with pytest.raises(AuditError) as refused:
                await asyncio.wait_for(recorder.record(broken), 30)
            return refused.value, await asyncio.wait_for(recorder.record(content), 30)

    refused, recorded = asyncio.run(scenario())
    assert str(refused) == "KeyError: 'rulebook'"
    assert "imt-cds: recording 1 audit record(s) failed" in [r.getMessage() for r in caplog.records]
    assert recorded == content["id"]
    with open_store(path) as store:
        assert [r.id for r in store.records()] == [content["id"]]


def test_a_request_that_went_away_leaves_the_others_of_its_group_answered(tmp_path):
    path = tmp_path / "audit.db"
    contents = prepared(path, 4)

    async def scenario() -> list[object]:
        with recording(path) as recorder:
            with write_lock_held(path):
                pending = await first_waiting_then(recorder, contents)
                pending[1].cancel()  # its client went away
            return await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), 30)

    first, gone, *others = asyncio.run(scenario())
    assert isinstance(gone, asyncio.CancelledError)
    assert [first, *others] == [contents[0]["id"], contents[2]["id"], contents[3]["id"]]


# -- the readiness check (/readyz): a read of the store by the recorder's own thread --


def test_a_check_reads_the_chain_head_after_the_records_that_came_with_it_without_splitting_their_group(tmp_path):
    path = tmp_path / "audit.db"
    contents = prepared(path, 3)

    async def scenario() -> tuple[str, list[str], int]:
        with recording(path) as recorder:
            with write_lock_held(path):
                first = await first_waiting_then(recorder, contents[:1])
                second = asyncio.ensure_future(recorder.record(contents[1]))
                check = asyncio.ensure_future(recorder.check(30))
                third = asyncio.ensure_future(recorder.record(contents[2]))
                await asyncio.sleep(0.1)
            ids = await asyncio.wait_for(asyncio.gather(*first, second, third), 30)
            return await check, ids, recorder.transactions

    head, ids, transactions = asyncio.run(scenario())
    assert ids == [c["id"] for c in contents]
    assert transactions == 2  # the first record alone, then the two that waited (the check between them is no record)
    with open_store(path) as store:
        assert head == store.head_hash() and len(store.records()) == 3  # read once all three were in


def test_a_check_the_store_does_not_answer_in_time_fails(tmp_path):
    path = tmp_path / "audit.db"
    contents = prepared(path, 1)

    async def scenario() -> tuple[str, str]:
        with recording(path) as recorder:
            with write_lock_held(path):
                await first_waiting_then(recorder, contents)  # the thread waits for the lock with this record
                with pytest.raises(AuditError) as late:
                    await recorder.check(0.3)
            return str(late.value), await recorder.check(30)

    late, head = asyncio.run(scenario())
    assert late == "the audit store did not answer within 0.3 s"
    with open_store(path) as store:
        assert head == store.head_hash() != "0" * 64


def test_a_check_of_a_store_that_cannot_be_read_fails_and_says_so_in_the_log(tmp_path, caplog):
    path = tmp_path / "audit.db"
    prepared(path, 0)

    async def scenario() -> tuple[str, str]:
        with recording(path) as recorder:
            healthy = await recorder.check(30)
            raw_sql(path, "ALTER TABLE audit_records RENAME TO audit_records_gone")
            with pytest.raises(AuditError) as failed:
                await recorder.check(30)
            return healthy, str(failed.value)

    healthy, failed = asyncio.run(scenario())
    assert healthy == "0" * 64  # an empty trail's head: the genesis hash
    assert "no such table: audit_records" in failed
    assert any(r.getMessage().startswith("imt-cds: the audit store does not answer: ") for r in caplog.records)


def test_a_check_that_meets_a_record_it_cannot_read_fails_with_the_reason(tmp_path):
    path = tmp_path / "audit.db"
    (content,) = prepared(path, 1)

    async def scenario() -> str:
        with recording(path) as recorder:
            await recorder.record(content)
            disable_append_only(path)
            raw_sql(path, "UPDATE audit_records SET body = 'not JSON'")  # the chain's head, as a tamperer left it
            with pytest.raises(AuditError) as failed:
                await recorder.check(30)
            return str(failed.value)

    assert asyncio.run(scenario()).startswith("JSONDecodeError: ")  # not the store's own error: named as it came


def test_a_check_that_succeeded_a_moment_ago_is_answered_again_without_reading_the_store(tmp_path):
    # (/readyz needs no token: a flood of it must not become a flood of reads)
    path = tmp_path / "audit.db"
    prepared(path, 0)

    async def scenario() -> tuple[str, str]:
        with recording(path, check_reuse_seconds=60) as recorder:
            first = await recorder.check(30)
            raw_sql(path, "ALTER TABLE audit_records RENAME TO audit_records_gone")  # a read would fail now
            return first, await recorder.check(30)

    first, again = asyncio.run(scenario())
    assert first == again == "0" * 64
