"""What the two SQL backends share: every statement that appends a record, archives a rulebook or reads them back,
written once so that SQLite and PostgreSQL cannot drift apart.

A backend (``SQLiteAuditStore``, ``PostgresAuditStore``) keeps what really differs: connecting, creating the schema,
the exclusive write transaction (``BEGIN IMMEDIATE`` / an advisory lock) and the error type of its driver, and it
runs the statements below inside that transaction. Statements are written with ``?`` placeholders; ``_sql`` turns
them into the driver's (none of them contains a literal ``?``).
"""

from __future__ import annotations

from abc import abstractmethod
from contextlib import closing
from datetime import datetime, timezone
from typing import Any, ClassVar

from ..assessment import rfc3339
from .archive import RulebookArchive
from .record import GENESIS_HASH, StoredRow, seal
from .store import AuditStore

__all__ = ["COLUMNS", "SQLAuditStore", "stored_row"]

COLUMNS = "seq, id, recorded_at, patient_id, rulebook_sha256, prev_hash, hash, body"


class SQLAuditStore(AuditStore):
    """An ``AuditStore`` on a DB-API database whose connection has ``execute`` (SQLite, psycopg 3)."""

    #: the driver's parameter placeholder
    placeholder: ClassVar[str] = "?"

    def _sql(self, statement: str) -> str:
        return statement if self.placeholder == "?" else statement.replace("?", self.placeholder)

    @abstractmethod
    def _query(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Every row of a read statement (already in the driver's placeholders); raises ``AuditStoreError``."""

    # -- writing, inside the backend's exclusive write transaction --

    def _write_record(self, connection: Any, content: dict[str, Any], archive: RulebookArchive | None) -> str:
        """Archive the rulebook if it is new, read the head and append the record after it; the record's id."""
        if archive is not None:
            self._insert_archive(connection, archive)
        head = connection.execute("SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev_hash = (int(head[0]) + 1, head[1]) if head else (1, GENESIS_HASH)
        sealed, body, digest = seal(content, seq=seq, prev_hash=prev_hash)
        connection.execute(
            self._sql(f"INSERT INTO audit_records ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
            (seq, sealed["id"], sealed["recorded_at"], sealed["patient_id"], sealed["rulebook"]["sha256"],
             prev_hash, digest, body.decode()),
        )
        return str(sealed["id"])

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
            "SELECT f.part, f.path, b.content FROM audit_rulebook_files f "
            "LEFT JOIN audit_blobs b ON b.sha256 = f.blob_sha256 WHERE f.rulebook_sha256 = ?"), (sha256,))
        # (str only if someone stored text in the table: read it as bytes, and let the rebuild judge the archive)
        return RulebookArchive(sha256, head[0][0], head[0][1], {
            (p, path): c.encode() if isinstance(c, str) else bytes(c or b"") for p, path, c in files})

    def _last_row(self) -> StoredRow | None:
        rows = self._query(f"SELECT {COLUMNS} FROM audit_records ORDER BY seq DESC LIMIT 1")
        return stored_row(rows[0]) if rows else None

    def _row_at(self, seq: int) -> StoredRow | None:
        rows = self._query(self._sql(f"SELECT {COLUMNS} FROM audit_records WHERE seq = ?"), (seq,))
        return stored_row(rows[0]) if rows else None

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
                     body.encode() if isinstance(body, str) else bytes(body))
