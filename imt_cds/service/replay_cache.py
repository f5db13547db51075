"""The JWT ``jti`` replay cache: each token id is accepted once while the token is valid.

A cache in one process's memory forgets everything on a restart and is not seen by a second replica, so a token
captured once could be replayed against the restarted or the other server. With an audit store configured
(``--audit``: a SQLite file or a PostgreSQL database) the cache lives in that database, in a table of its own,
``cds_jti`` (``iss``, ``jti``, ``expires_at``), shared by every process and replica that uses the store and kept
across restarts. Recording a token id is one atomic ``INSERT ... ON CONFLICT DO UPDATE ... WHERE expired``: of two
servers racing with the same token exactly one wins. Expired rows are purged as tokens come in. Without a store the
cache is in memory (bounded; when full, the entries closest to expiry are dropped first).

This module never touches the audit tables and never stores a token, only its issuer and id.
"""

from __future__ import annotations

import heapq
import sqlite3
import threading
from typing import Any, Protocol

from ..audit.backends import is_postgres_target
from ..audit.postgres import session_lost
from ..audit.store import SESSION_IDLE_CHECK_SECONDS, ForkSafeConnection
from .errors import ServiceUnavailableError

__all__ = ["MemoryReplayCache", "ReplayCache", "SqlReplayCache", "open_replay_cache"]

PURGE_EVERY_SECONDS = 60.0
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS cds_jti (
        iss TEXT NOT NULL,
        jti TEXT NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (iss, jti))""",
    "CREATE INDEX IF NOT EXISTS cds_jti_expiry ON cds_jti (expires_at)",
)
# Recorded when new, or when the same id was recorded before but has expired; otherwise nothing changes (a replay).
_RECORD = ("INSERT INTO cds_jti (iss, jti, expires_at) VALUES ({p}, {p}, {p}) ON CONFLICT (iss, jti) DO UPDATE SET "
           "expires_at = excluded.expires_at WHERE cds_jti.expires_at < {p}")
_PURGE = "DELETE FROM cds_jti WHERE expires_at < {p}"


class ReplayCache(Protocol):
    def add(self, key: tuple[str, str], expires_at: float, now: float) -> bool:
        """Record a token id; False when it was already recorded and has not expired (a replay)."""

    def close(self) -> None: ...


def open_replay_cache(store: str | None, max_entries: int, lock_timeout: float) -> ReplayCache:
    """The replay cache of a service: in the audit store's database when there is one, else in memory.
    ``lock_timeout``: seconds a check may wait for the database's write lock before the call is refused (503)."""
    if store is None:
        return MemoryReplayCache(max_entries)
    return SqlReplayCache(store, lock_timeout)


class MemoryReplayCache:
    """Seen ``(iss, jti)`` pairs until their token expires; bounded, dropping the soonest-expiring when full."""

    def __init__(self, max_entries: int):
        self.max_entries = max_entries
        self._expiry: dict[tuple[str, str], float] = {}
        self._heap: list[tuple[float, tuple[str, str]]] = []
        self._lock = threading.Lock()

    def add(self, key: tuple[str, str], expires_at: float, now: float) -> bool:
        with self._lock:
            while self._heap and self._heap[0][0] < now:
                expiry, old = heapq.heappop(self._heap)
                if self._expiry.get(old) == expiry:
                    del self._expiry[old]
            if key in self._expiry:
                return False
            while len(self._expiry) >= self.max_entries and self._heap:
                expiry, old = heapq.heappop(self._heap)
                if self._expiry.get(old) == expiry:
                    del self._expiry[old]
            self._expiry[key] = expires_at
            heapq.heappush(self._heap, (expires_at, key))
            return True

    def close(self) -> None:
        pass

    def __len__(self) -> int:
        return len(self._expiry)


class SqlReplayCache:
    """The cache in the ``cds_jti`` table of the audit store's database (SQLite file or PostgreSQL). The connection
    is opened on first use (the audit store creates its file and tables at start-up) and re-opened after an error.
    A database that cannot be reached refuses the call (503): a token is never accepted unchecked."""

    def __init__(self, target: str, lock_timeout: float):
        self.target = target
        self.lock_timeout = lock_timeout
        self._postgres = is_postgres_target(target)
        self._placeholder = "%s" if self._postgres else "?"
        # A PostgreSQL session the server ended while idle (a restart, a failover) is found and replaced before use;
        # one that ends in use fails its call (an error drops it below) and the next call opens a new one.
        self._db = (ForkSafeConnection(self._open, lost=session_lost, idle_check_seconds=SESSION_IDLE_CHECK_SECONDS)
                    if self._postgres else ForkSafeConnection(self._open))
        self._lock = threading.Lock()
        self._purged_at = 0.0

    def add(self, key: tuple[str, str], expires_at: float, now: float) -> bool:
        p = self._placeholder
        with self._lock:
            try:
                connection = self._db.get()
                if now - self._purged_at > PURGE_EVERY_SECONDS:
                    connection.execute(_PURGE.format(p=p), (now,))
                    self._purged_at = now
                cursor = connection.execute(_RECORD.format(p=p), (key[0], key[1], expires_at, now))
                return bool(cursor.rowcount == 1)
            except Exception as exc:  # noqa: BLE001 - any driver error: drop the connection, refuse the call
                self._drop()
                raise ServiceUnavailableError("the token replay check is unavailable; try again") from exc

    def _open(self) -> Any:
        connection: Any  # (a psycopg or a sqlite3 connection: the same calls serve both)
        if self._postgres:
            import psycopg

            connection = psycopg.connect(self.target, autocommit=True, connect_timeout=10)
            connection.execute(f"SET lock_timeout = {max(1, int(self.lock_timeout * 1000))}")
            with connection.transaction():
                connection.execute("SELECT pg_advisory_xact_lock(7308604897068083555)")  # one creator at a time
                for statement in _SCHEMA:
                    connection.execute(statement)
        else:
            connection = sqlite3.connect(self.target, timeout=self.lock_timeout, isolation_level=None,
                                         check_same_thread=False)
            connection.execute(f"PRAGMA busy_timeout = {max(1, int(self.lock_timeout * 1000))}")
            connection.execute("PRAGMA journal_mode = WAL")
            # As the audit store: a token id is on disk before its call is answered. With WAL's default (NORMAL) a
            # power loss could drop the last ids recorded, and a token captured just before could be replayed.
            connection.execute("PRAGMA synchronous = FULL")
            for statement in _SCHEMA:
                connection.execute(statement.replace("DOUBLE PRECISION", "REAL"))
        return connection

    def _drop(self) -> None:
        try:
            self._db.close()
        except Exception:  # noqa: BLE001, S110 - closing a broken connection may fail too; it is gone either way
            pass

    def close(self) -> None:
        with self._lock:
            self._drop()
