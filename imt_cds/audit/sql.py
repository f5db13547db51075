"""What the two SQL backends share: every statement that appends a record, archives a rulebook or reads them back,
written once so that SQLite and PostgreSQL cannot drift apart.

So is the code around them: opening the one connection per process, running a read, appending inside the
exclusive write transaction, turning a driver error into an ``AuditStoreError``, checking the schema version.
A backend (``SQLiteAuditStore``, ``PostgresAuditStore``) keeps what really differs: connecting and creating the
schema (``_connect``), the exclusive write transaction (``_write_transaction``: ``BEGIN IMMEDIATE`` / an advisory
lock), its driver's error type (``_driver_error``) and how its messages read (``_error_text``), the condition that
finds ids by prefix and streaming every row. Statements are written with ``?`` placeholders; ``_sql`` turns them
into the driver's (none of them contains a literal ``?``).
"""

from __future__ import annotations

from abc import abstractmethod
from contextlib import AbstractContextManager, closing
from datetime import datetime, timezone
from typing import Any, ClassVar

from ..core.assessment import rfc3339
from ..core.errors import AuditStoreError, NotAnAuditStoreError
from .archive import RulebookArchive, listing_sha256
from .record import GENESIS_HASH, StoredRow, seal
from .store import SCHEMA_VERSION, AuditStore, ForkSafeConnection

__all__ = ["COLUMNS", "SQLAuditStore", "stored_row"]

COLUMNS = "seq, id, recorded_at, patient_id, rulebook_sha256, prev_hash, hash, body"
_INSERT_RECORD = f"INSERT INTO audit_records ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"


class SQLAuditStore(AuditStore):
    """An ``AuditStore`` on a DB-API database whose connection has ``execute`` (SQLite, psycopg 3)."""

    #: the driver's parameter placeholder
    placeholder: ClassVar[str] = "?"
    #: the base class of the driver's errors (what ``_append_rows`` and the reads turn into ``AuditStoreError``)
    _driver_error: type[Exception]
    _db: ForkSafeConnection
    #: seconds a connection may sit idle before it is checked before use (a database server's); None: never
    _idle_check_seconds: float | None = None

    def _sql(self, statement: str) -> str:
        return statement if self.placeholder == "?" else statement.replace("?", self.placeholder)

    # -- the backend's hooks --

    @abstractmethod
    def _connect(self) -> Any:
        """A new connection, the schema created (when allowed) and checked (``_check_schema``)."""

    @abstractmethod
    def _write_transaction(self, connection: Any) -> AbstractContextManager[Any]:
        """A transaction that excludes every other writer of the trail from its first statement; committed on
        success, rolled back on any exception (which is re-raised)."""

    @abstractmethod
    def _id_prefix_condition(self, prefix: str) -> tuple[str, tuple[Any, ...]]:
        """The WHERE condition (``?`` placeholders) and parameters that select the ids starting with ``prefix``."""

    def _error_text(self, exc: Exception) -> str:
        """A driver error, as the one line a message quotes."""
        return str(exc)

    def _connection_lost(self, connection: Any) -> bool:
        """Whether the database server has closed this connection (it is then opened again on next use)."""
        return False

    # -- connection life cycle --

    def _open(self) -> None:
        """Open the connection now (the end of a backend's ``__init__``): a bad target fails here, at once."""
        self._db = ForkSafeConnection(self._connect, lost=self._connection_lost,
                                      idle_check_seconds=self._idle_check_seconds)
        with self._lock:
            self._db.get()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _check_schema(self, connection: Any) -> None:
        row = connection.execute("SELECT value FROM audit_meta WHERE key = 'schema'").fetchone()
        if row is None or row[0] != SCHEMA_VERSION:
            raise NotAnAuditStoreError(f"{self.location} has audit schema {row[0] if row else 'unknown'}; this "
                                       f"version of imt-cds reads schema {SCHEMA_VERSION}")

    def _read_error(self, exc: Exception) -> AuditStoreError:
        return AuditStoreError(f"cannot read the audit database {self.location}: {self._error_text(exc)}")

    def _query(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Every row of a read statement (already in the driver's placeholders); raises ``AuditStoreError``."""
        try:
            return self._db.get().execute(sql, parameters).fetchall()  # type: ignore[no-any-return]
        except self._driver_error as exc:
            raise self._read_error(exc) from exc

    # -- writing --

    def _append_rows(self, contents: list[dict[str, Any]], archive: RulebookArchive | None) -> list[str]:
        connection = self._db.get()
        files: dict[str, str] = {}  # rulebook sha256 -> its archived files' digest, as read in this transaction
        try:
            with self._write_transaction(connection):  # excludes the other writers before the head is read
                if archive is not None:
                    self._insert_archive(connection, archive)
                if not contents:
                    return []
                # The head is read once: no other writer can append before this transaction ends, so each record
                # of the group follows the one sealed just before it. The rows then go in one executemany (one
                # pipelined round trip to PostgreSQL, where a statement per record cost two).
                head = connection.execute("SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1").fetchone()
                seq, prev_hash = (int(head[0]), str(head[1])) if head else (0, GENESIS_HASH)
                rows = []
                for content in contents:
                    seq += 1
                    row = self._sealed_row(connection, content, seq, prev_hash, files)
                    rows.append(row)
                    prev_hash = row[6]
                with closing(connection.cursor()) as cursor:
                    cursor.executemany(self._sql(_INSERT_RECORD), rows)
        except self._driver_error as exc:
            raise AuditStoreError(f"cannot append to the audit database {self.location}: "
                                  f"{self._error_text(exc)}") from exc
        # Remembered once committed (archives are append-only): a digest read in a transaction that rolled back
        # may name files archived in that same transaction, which are gone.
        self._files_sha256.update(files)
        return [row[1] for row in rows]

    # (inside the backend's exclusive write transaction)

    def _sealed_row(self, connection: Any, content: dict[str, Any], seq: int, prev_hash: str,
                    files: dict[str, str]) -> tuple[Any, ...]:
        """The row (``COLUMNS``) of a record placed at ``seq`` after the record whose hash is ``prev_hash``."""
        rulebook = content["rulebook"]
        # The digest of the files archived under this rulebook sha256 (perhaps by another process, from a working
        # copy that differs only in comments): the record commits the chain to those very bytes.
        files_sha256 = self._files_sha256.get(rulebook["sha256"]) or files.get(rulebook["sha256"])
        if files_sha256 is None:
            listing = connection.execute(self._sql(
                "SELECT part, path, blob_sha256 FROM audit_rulebook_files WHERE rulebook_sha256 = ?"),
                (rulebook["sha256"],)).fetchall()
            if not listing:  # a record must commit to archived files: without them it could never be replayed
                raise AuditStoreError(f"cannot append to the audit database {self.location}: rulebook "
                                      f"{rulebook['sha256']} is not in its archive (archive the rulebook first)")
            files_sha256 = files[rulebook["sha256"]] = listing_sha256(
                (str(part), str(path), str(blob)) for part, path, blob in listing)
        sealed, body, digest = seal({**content, "rulebook": {**rulebook, "files_sha256": files_sha256}}, seq=seq,
                                    prev_hash=prev_hash)
        return (seq, str(sealed["id"]), sealed["recorded_at"], sealed["patient_id"], sealed["rulebook"]["sha256"],
                prev_hash, digest, body.decode())

    def _insert_archive(self, connection: Any, archive: RulebookArchive) -> None:
        """Store a rulebook's files (content-addressed, shared between rulebooks) unless it is already there."""
        sql = self._sql
        if connection.execute(sql("SELECT 1 FROM audit_rulebooks WHERE sha256 = ?"), (archive.sha256,)).fetchone():
            return
        digests = archive.file_digests()
        with closing(connection.cursor()) as cursor:
            cursor.executemany(sql("INSERT INTO audit_blobs (sha256, content) VALUES (?, ?) ON CONFLICT DO NOTHING"),
                               [(digests[key], content) for key, content in archive.files.items()])
            cursor.execute(sql("INSERT INTO audit_rulebooks (sha256, name, version, archived_at) VALUES (?, ?, ?, ?)"),
                           (archive.sha256, archive.name, archive.version, rfc3339(datetime.now(timezone.utc))))
            cursor.executemany(
                sql("INSERT INTO audit_rulebook_files (rulebook_sha256, part, path, blob_sha256) VALUES (?, ?, ?, ?)"),
                [(archive.sha256, part, path, digests[(part, path)]) for part, path in archive.files])

    # -- reading --

    def _has_archive(self, sha256: str) -> bool:
        return bool(self._query(self._sql("SELECT 1 FROM audit_rulebooks WHERE sha256 = ?"), (sha256,)))

    def _load_archive(self, sha256: str) -> RulebookArchive | None:
        head = self._query(self._sql("SELECT name, version FROM audit_rulebooks WHERE sha256 = ?"), (sha256,))
        if not head:
            return None
        files = self._query(self._sql(
            "SELECT f.part, f.path, b.content, f.blob_sha256 FROM audit_rulebook_files f "
            "LEFT JOIN audit_blobs b ON b.sha256 = f.blob_sha256 WHERE f.rulebook_sha256 = ?"), (sha256,))
        # (whatever a tamperer stored in these columns is read as names and bytes: the digests and the rebuild judge
        # the archive)
        return RulebookArchive(sha256, str(head[0][0]), str(head[0][1]),
                               {(str(p), str(path)): _as_bytes(c) for p, path, c, _ in files},
                               stored_digests={(str(p), str(path)): str(d) for p, path, _, d in files})

    def _last_row(self) -> StoredRow | None:
        rows = self._query(f"SELECT {COLUMNS} FROM audit_records ORDER BY seq DESC LIMIT 1")
        return stored_row(rows[0]) if rows else None

    def _row_at(self, seq: int) -> StoredRow | None:
        rows = self._query(self._sql(f"SELECT {COLUMNS} FROM audit_records WHERE seq = ?"), (seq,))
        return stored_row(rows[0]) if rows else None

    def _rows_with_id_prefix(self, prefix: str) -> list[StoredRow]:
        # In id order, an id that is the whole prefix comes before every longer id that starts with it.
        condition, parameters = self._id_prefix_condition(prefix)
        rows = self._query(self._sql(f"SELECT {COLUMNS} FROM audit_records WHERE {condition} ORDER BY id LIMIT 2"),
                           parameters)
        return [stored_row(r) for r in rows]

    def _select_rows(self, *, patient_id: str | None, last: int | None) -> list[StoredRow]:
        where, parameters = ("WHERE patient_id = ?", (patient_id,)) if patient_id is not None else ("", ())
        if last is not None:
            rows = self._query(self._sql(f"SELECT {COLUMNS} FROM audit_records {where} ORDER BY seq DESC LIMIT ?"),
                               (*parameters, last))
            rows.reverse()
        else:
            rows = self._query(self._sql(f"SELECT {COLUMNS} FROM audit_records {where} ORDER BY seq"), parameters)
        return [stored_row(r) for r in rows]


def stored_row(row: tuple[Any, ...]) -> StoredRow:
    """A row of ``COLUMNS`` as a ``StoredRow`` (the body as the exact bytes that were hashed)."""
    seq, record_id, recorded_at, patient_id, rulebook_sha256, prev_hash, digest, body = row
    return StoredRow(int(seq), record_id, recorded_at, patient_id, rulebook_sha256, prev_hash, digest,
                     _as_bytes(body))


def _as_bytes(value: Any) -> bytes:
    """A text or binary column as bytes. SQLite keeps any type in any column: a number a tamperer stored there is
    read as its text (and then fails the hash or the rebuild), never as an error of this library."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return b"" if value is None else str(value).encode()
