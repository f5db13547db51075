"""The embedded audit store: one SQLite file, no set-up, safe for many threads and processes at once.

- **WAL mode with a busy timeout**: readers never block the writer; writers wait their turn (up to ``timeout``).
- **Appends are serialized by ``BEGIN IMMEDIATE``**: the write lock is taken *before* the head is read, so two
  processes can never both append after the same head; the chain stays one line.
- **``synchronous=FULL``**: a commit is on disk before ``append`` returns, so an acknowledged record survives a
  crash of the process (and of the machine).
- **Append-only**: no update or delete in the API, and triggers refuse them in SQL as well (a tamperer with the
  file can drop them, which is what the hash chain is for).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from ..core.errors import AuditStoreError, NotAnAuditStoreError
from .locking import write_transaction
from .record import StoredRow
from .sql import COLUMNS, SQLAuditStore, stored_row
from .store import SCHEMA_VERSION

__all__ = ["SQLiteAuditStore"]

_SCHEMA = (
    """CREATE TABLE audit_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    """CREATE TABLE audit_records (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        recorded_at TEXT NOT NULL,
        patient_id TEXT,
        rulebook_sha256 TEXT NOT NULL,
        prev_hash TEXT NOT NULL UNIQUE,
        hash TEXT NOT NULL UNIQUE,
        body TEXT NOT NULL)""",
    """CREATE INDEX audit_records_patient ON audit_records (patient_id)""",
    """CREATE TABLE audit_blobs (sha256 TEXT PRIMARY KEY, content BLOB NOT NULL)""",
    """CREATE TABLE audit_rulebooks (
        sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, version TEXT NOT NULL, archived_at TEXT NOT NULL)""",
    """CREATE TABLE audit_rulebook_files (
        rulebook_sha256 TEXT NOT NULL REFERENCES audit_rulebooks (sha256),
        part TEXT NOT NULL,
        path TEXT NOT NULL,
        blob_sha256 TEXT NOT NULL REFERENCES audit_blobs (sha256),
        PRIMARY KEY (rulebook_sha256, part, path))""",
    *(
        f"""CREATE TRIGGER {table}_no_{verb} BEFORE {verb.upper()} ON {table}
            BEGIN SELECT RAISE(ABORT, 'imt-cds audit tables are append-only'); END"""
        for table in ("audit_records", "audit_blobs", "audit_rulebooks", "audit_rulebook_files")
        for verb in ("update", "delete")
    ),
)


class SQLiteAuditStore(SQLAuditStore):
    """An audit store in one SQLite file (created with its tables on first use unless ``create=False``)."""

    _driver_error = sqlite3.Error

    def __init__(self, path: str | Path, *, store_input: bool = True, create: bool = True, timeout: float = 60.0):
        super().__init__(store_input=store_input)
        self.path = Path(path)
        self.location = str(self.path)
        self._timeout = timeout
        self._create = create
        if not create and not self.path.is_file():
            raise NotAnAuditStoreError(f"no audit database at {self.path}")
        self._open()  # a bad path or a file that is not an audit database fails here, at once

    # -- connection and schema --

    def _connect(self) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None,
                                         check_same_thread=False)
        except sqlite3.Error as exc:
            raise NotAnAuditStoreError(f"cannot open the audit database {self.path}: {exc}") from exc
        try:
            connection.execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")
            tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "audit_records" not in tables:
                if not self._create:
                    raise NotAnAuditStoreError(f"{self.path} is an SQLite database without imt-cds audit tables")
                if tables:
                    raise NotAnAuditStoreError(f"{self.path} is an SQLite database of something else (tables "
                                               f"{', '.join(sorted(tables))}); refusing to add audit tables to it")
            if self._create:
                # WAL: readers do not block the writer. The setting is persistent, so readers need not set it.
                self._use_wal(connection)
            connection.execute("PRAGMA synchronous = FULL")
            connection.execute("PRAGMA foreign_keys = ON")
            if "audit_records" not in tables:
                self._create_schema(connection)
            self._check_schema(connection)
        except sqlite3.OperationalError as exc:  # locked for longer than the timeout, disk I/O, read-only file...
            connection.close()
            raise AuditStoreError(f"cannot open the audit database {self.path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:  # "file is not a database", "database disk image is malformed"
            connection.close()
            raise NotAnAuditStoreError(f"{self.path} is not a usable audit database: {exc}") from exc
        except BaseException:
            connection.close()
            raise
        return connection

    def _use_wal(self, connection: sqlite3.Connection) -> None:
        # Switching a new file to WAL needs its exclusive lock, and SQLite does not wait for that lock (the busy
        # handler is not called for a journal-mode change): while another process creates or writes the same new
        # file, the switch fails at once with "database is locked". So it is retried until the store's timeout.
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                connection.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)

    def _create_schema(self, connection: sqlite3.Connection) -> None:
        with write_transaction(connection):  # several processes may open a new file at once: one creates
            exists = connection.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_records'").fetchone()
            if not exists:
                for statement in _SCHEMA:
                    connection.execute(statement)
                connection.execute("INSERT INTO audit_meta VALUES ('schema', ?)", (SCHEMA_VERSION,))

    # -- the shared store's hooks --

    def _write_transaction(self, connection: sqlite3.Connection) -> AbstractContextManager[sqlite3.Connection]:
        return write_transaction(connection)  # the write lock, before reading the head

    def _id_prefix_condition(self, prefix: str) -> tuple[str, tuple[Any, ...]]:
        # Range instead of LIKE: ids are lowercase hex and hyphens, and the range uses the unique index on id.
        return "id >= ? AND id < ?", (prefix, prefix + "\U0010ffff")

    def _iter_all_rows(self) -> Iterator[StoredRow]:
        try:
            cursor = self._db.get().execute(f"SELECT {COLUMNS} FROM audit_records ORDER BY seq")
            while True:
                batch = cursor.fetchmany(500)
                if not batch:
                    return
                for row in batch:
                    yield stored_row(row)
        except sqlite3.Error as exc:
            raise self._read_error(exc) from exc
