"""Card feedback (``POST /cds-services/{id}/feedback``): checked, then kept where the deployment keeps records.

Where feedback goes:
- with an audit store (``--audit DB``), into a table of its own, ``cds_feedback``, in the same database (SQLite
  file or PostgreSQL), append-only like the audit tables (triggers refuse UPDATE and DELETE). It is *beside* the
  hash-chained audit records, not in the chain: the chain holds evaluations, and the audit package is untouched;
- otherwise, with ``--feedback-log FILE``, one JSON line per feedback item appended to that file;
- otherwise, one JSON line per item on the server's log (logger ``imt_cds.service.feedback``, standard error).

Each stored item is the client's feedback object as sent, with the service id, the time it was received, the JWT
issuer and tenant when authenticated, and, when the card was issued by this server process recently, the evaluation
id and finding code the card's uuid stands for (the uuid is a uuid5 of those, so they can also be found later by
recomputing it from the audit records).

Writing never runs on the event loop: ``FeedbackWriter`` hands each write to a thread of its own and waits at most
the configured store timeout; a store whose write lock another process holds (an audit writer, a backup) gets a
503 ``cds_feedback_unavailable`` then, instead of freezing every other request for the lock's duration.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from ..audit.backends import is_postgres_target
from ..audit.locking import write_transaction
from ..audit.postgres import session_lost
from ..audit.store import SESSION_IDLE_CHECK_SECONDS, ForkSafeConnection
from ..core.assessment import rfc3339
from .errors import ServiceConfigError, ServiceError
from .models import feedback_problems, refuse

__all__ = ["CardIndex", "FeedbackSink", "FeedbackUnavailableError", "FeedbackWriter", "open_feedback_sink",
           "parse_feedback"]

log = logging.getLogger("imt_cds.service.feedback")

_NOT_STORED = "the feedback store is busy: nothing was stored, try again later"
_MAY_COMPLETE = "the feedback store did not answer in time; the write may still complete: check before sending it again"
_REPORT_GRACE_SECONDS = 2.0
_SQLITE_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS cds_feedback (
        seq INTEGER PRIMARY KEY,
        received_at TEXT NOT NULL,
        service TEXT NOT NULL,
        card TEXT NOT NULL,
        outcome TEXT NOT NULL,
        evaluation_id TEXT,
        finding_code TEXT,
        body TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS cds_feedback_card ON cds_feedback (card)",
    *(f"""CREATE TRIGGER IF NOT EXISTS cds_feedback_no_{verb} BEFORE {verb.upper()} ON cds_feedback
          BEGIN SELECT RAISE(ABORT, 'imt-cds feedback is append-only'); END""" for verb in ("update", "delete")),
)
_POSTGRES_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS cds_feedback (
        seq BIGSERIAL PRIMARY KEY,
        received_at TEXT NOT NULL,
        service TEXT NOT NULL,
        card TEXT NOT NULL,
        outcome TEXT NOT NULL,
        evaluation_id TEXT,
        finding_code TEXT,
        body TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS cds_feedback_card ON cds_feedback (card)",
    """CREATE OR REPLACE FUNCTION imt_cds_feedback_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'imt-cds feedback is append-only'; END $$""",
    "DROP TRIGGER IF EXISTS cds_feedback_append_only ON cds_feedback",
    """CREATE TRIGGER cds_feedback_append_only BEFORE UPDATE OR DELETE ON cds_feedback
        FOR EACH ROW EXECUTE FUNCTION imt_cds_feedback_append_only()""",
)


def parse_feedback(body: Any) -> list[dict[str, Any]]:
    """The feedback items of a request body, as sent, or ``BadRequestError`` naming every field path that is wrong
    (CDS Hooks 2.0.1; the models are in ``models.py``)."""
    problems = feedback_problems(body)
    if problems:
        raise refuse(problems)
    return [dict(item) for item in body["feedback"]]


class CardIndex:
    """The cards this process issued recently: card uuid -> (service, evaluation id, code). Bounded, oldest out."""

    def __init__(self, max_entries: int = 50_000):
        self.max_entries = max_entries
        self._cards: OrderedDict[str, tuple[str, str, str]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, service: str, evaluation_id: str, cards: Sequence[Mapping[str, Any]]) -> None:
        with self._lock:
            for card in cards:
                self._cards[card["uuid"]] = (service, evaluation_id, card["source"]["topic"]["code"])
            while len(self._cards) > self.max_entries:
                self._cards.popitem(last=False)

    def get(self, card: str) -> tuple[str, str, str] | None:
        with self._lock:
            return self._cards.get(card)


class FeedbackUnavailableError(ServiceError):
    """The feedback store did not take the write in time (its write lock is held elsewhere) or failed: nothing was
    stored, and the client may send the feedback again."""

    code = "cds_feedback_unavailable"
    status = 503


class FeedbackWriter:
    """Runs ``sink.record`` in threads of its own, never on the event loop, waiting at most ``timeout`` seconds.

    At most ``max_waiting`` writes are queued or running at once; past that a write is refused at once (503), so a
    stuck store cannot pile up threads or requests. A write the caller stopped waiting for still finishes (or fails)
    in its thread, bounded by the sink's own lock timeout, which the sinks set to the same ``timeout``.
    """

    def __init__(self, sink: FeedbackSink, timeout: float, max_waiting: int = 16):
        self.sink = sink
        self.timeout = timeout
        self.max_waiting = max_waiting
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="imt-cds-feedback")
        self._waiting = 0
        self._lock = threading.Lock()  # _waiting is decremented in the executor's threads

    async def record(self, rows: Sequence[Mapping[str, Any]]) -> int:
        with self._lock:
            if self._waiting >= self.max_waiting:
                raise FeedbackUnavailableError(f"{self._waiting} feedback writes are already waiting for the store: "
                                               "nothing was stored, try again later",
                                               public_message=_NOT_STORED)
            self._waiting += 1
        try:
            future = self._executor.submit(self.sink.record, rows)
        except BaseException:
            self._done(None)
            raise
        future.add_done_callback(self._done)
        try:
            # The sink gives up by itself after ``timeout`` (and says nothing was stored); the grace lets it say so.
            return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout + _REPORT_GRACE_SECONDS)
        except TimeoutError:
            raise FeedbackUnavailableError(f"the feedback store did not answer within {self.timeout:g} s; the write "
                                           "may still complete: check before sending it again",
                                           public_message=_MAY_COMPLETE) from None

    def _done(self, future: object) -> None:
        with self._lock:
            self._waiting -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.sink.close()


class FeedbackSink(Protocol):
    def record(self, rows: Sequence[Mapping[str, Any]]) -> int: ...

    def close(self) -> None: ...


def open_feedback_sink(audit: str | None, feedback_log: Path | None, lock_timeout: float = 5.0) -> FeedbackSink:
    """Where feedback goes (see the module docstring); a write waits at most ``lock_timeout`` seconds for the
    database's write lock, then raises ``FeedbackUnavailableError``."""
    if audit is not None:
        if is_postgres_target(audit):
            return _PostgresFeedback(audit, lock_timeout)
        return _SQLiteFeedback(Path(audit), lock_timeout)
    if feedback_log is not None:
        return _NdjsonFeedback(feedback_log)
    return _LogFeedback()


def stored_row(service: str, item: Mapping[str, Any], issued: tuple[str, str, str] | None,
               client: Mapping[str, Any]) -> dict[str, Any]:
    """What is kept of one feedback item."""
    return {
        "received_at": rfc3339(datetime.now(timezone.utc)),
        "service": service,
        "card": item["card"],
        "outcome": item["outcome"],
        "evaluation_id": issued[1] if issued else None,
        "finding_code": issued[2] if issued else None,
        "client": dict(client),
        "feedback": dict(item),
    }


class _SQLiteFeedback:
    def __init__(self, path: Path, lock_timeout: float):
        self._lock = threading.Lock()
        try:
            self._lock_timeout = lock_timeout
            self._db = sqlite3.connect(path, timeout=lock_timeout, isolation_level=None, check_same_thread=False)
            self._db.execute(f"PRAGMA busy_timeout = {int(lock_timeout * 1000)}")
            self._db.execute("PRAGMA synchronous = FULL")
            with write_transaction(self._db):
                for statement in _SQLITE_SCHEMA:
                    self._db.execute(statement)
        except sqlite3.Error as exc:
            raise ServiceConfigError(f"cannot keep feedback in {path}: {exc}") from exc

    def record(self, rows: Sequence[Mapping[str, Any]]) -> int:
        deadline = time.monotonic() + self._lock_timeout  # one bound for both waits: this process's and SQLite's
        if not self._lock.acquire(timeout=self._lock_timeout):
            raise _busy(f"other feedback writes held it for {self._lock_timeout:g} s")
        try:
            self._db.execute(f"PRAGMA busy_timeout = {max(1, int((deadline - time.monotonic()) * 1000))}")
            with write_transaction(self._db):
                self._db.executemany(
                    "INSERT INTO cds_feedback (received_at, service, card, outcome, evaluation_id, finding_code, "
                    "body) VALUES (?, ?, ?, ?, ?, ?, ?)", [_values(row) for row in rows])
        except sqlite3.Error as exc:  # locked, full, damaged: the transaction was rolled back either way
            raise _busy(str(exc)) from exc
        finally:
            self._lock.release()
        return len(rows)

    def close(self) -> None:
        self._db.close()


class _PostgresFeedback:
    def __init__(self, conninfo: str, lock_timeout: float):
        try:
            import psycopg
        except ImportError as exc:
            raise ServiceConfigError("feedback in PostgreSQL needs psycopg 3: pip install 'imt-cds[postgres]'") from exc
        self._lock = threading.Lock()
        self._lock_timeout = lock_timeout
        self._error = psycopg.Error
        self._psycopg = psycopg
        self._conninfo = conninfo
        # A session the server ended (a restart, a failover) is replaced on next use, as the audit store's is.
        self._db = ForkSafeConnection(self._connect, lost=session_lost, idle_check_seconds=SESSION_IDLE_CHECK_SECONDS)
        try:
            self._db.get()
        except psycopg.Error as exc:
            raise ServiceConfigError(f"cannot keep feedback in the PostgreSQL audit database: {exc}") from exc

    def _connect(self) -> Any:
        db = self._psycopg.connect(self._conninfo, autocommit=True, connect_timeout=10)
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(7308604897068083554)")  # one creator at a time
            for statement in _POSTGRES_SCHEMA:
                db.execute(statement)
        return db

    def record(self, rows: Sequence[Mapping[str, Any]]) -> int:
        deadline = time.monotonic() + self._lock_timeout
        if not self._lock.acquire(timeout=self._lock_timeout):
            raise _busy(f"other feedback writes held it for {self._lock_timeout:g} s")
        try:
            db = self._db.get()
            remaining = max(1, int((deadline - time.monotonic()) * 1000))
            db.execute(f"SET lock_timeout = {remaining}")
            db.execute(f"SET statement_timeout = {remaining}")
            with db.transaction(), db.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO cds_feedback (received_at, service, card, outcome, evaluation_id, finding_code, "
                    "body) VALUES (%s, %s, %s, %s, %s, %s, %s)", [_values(row) for row in rows])
        except self._error as exc:
            raise _busy(str(exc).strip()) from exc
        finally:
            self._lock.release()
        return len(rows)

    def close(self) -> None:
        self._db.close()


class _NdjsonFeedback:
    def __init__(self, path: Path):
        self._lock = threading.Lock()
        try:
            self._file = path.open("a", encoding="utf-8")
        except OSError as exc:
            raise ServiceConfigError(f"cannot append feedback to {path}: {exc.strerror}") from exc

    def record(self, rows: Sequence[Mapping[str, Any]]) -> int:
        lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        with self._lock:
            try:
                self._file.write(lines)
                self._file.flush()
            except OSError as exc:  # a full disk, a lost mount: a 503 that says so, not an internal error
                raise FeedbackUnavailableError(
                    f"the feedback log cannot be written ({exc.strerror or exc}); part of this call's feedback may "
                    "have been written: check the log before sending it again", public_message=_MAY_COMPLETE) from exc
        return len(rows)

    def close(self) -> None:
        try:
            self._file.close()  # flushes what a failed write left in the buffer, which may fail again
        except OSError as exc:
            log.error("imt-cds: the feedback log could not be closed cleanly (%s); its last lines may be missing",
                      exc.strerror or exc)


class _LogFeedback:
    def record(self, rows: Sequence[Mapping[str, Any]]) -> int:
        for row in rows:
            log.warning("cds-feedback %s", json.dumps(row, ensure_ascii=False))
        return len(rows)

    def close(self) -> None:
        pass


def _busy(reason: str) -> FeedbackUnavailableError:
    return FeedbackUnavailableError(f"the feedback store cannot take the write now ({reason}): nothing was stored, "
                                    "try again later", public_message=_NOT_STORED)


def _values(row: Mapping[str, Any]) -> tuple[Any, ...]:
    return (row["received_at"], row["service"], row["card"], row["outcome"], row["evaluation_id"],
            row["finding_code"], json.dumps(row, ensure_ascii=False, sort_keys=True))
