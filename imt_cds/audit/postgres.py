"""The PostgreSQL audit store: the same interface as the SQLite one, for several service instances sharing one trail.

- **Appends are serialized by a transaction-level advisory lock** (``pg_advisory_xact_lock``) taken before the head
  is read: any number of connections, on any number of hosts, append one after another and the chain stays one
  line. The lock is released by the commit (or the rollback), so a client that dies mid-append holds nothing.
- **Durable acknowledgement**: ``append`` returns after ``COMMIT`` returned, i.e. after the server flushed the
  transaction (with the server's default ``synchronous_commit = on``).
- **Append-only**: no update or delete in the API, and triggers refuse UPDATE, DELETE and TRUNCATE in SQL as well.

Needs psycopg 3 (``pip install 'imt-cds[postgres]'``); it is imported only when a PostgreSQL store is opened.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from ..assessment import rfc3339
from ..errors import AuditStoreError, NotAnAuditStoreError
from .archive import RulebookArchive
from .record import GENESIS_HASH, StoredRow, seal
from .store import SCHEMA_VERSION, AuditStore, ForkSafeConnection

__all__ = ["PostgresAuditStore"]

_LOCK_KEY = 0x696D742D636473  # "imt-cds": the advisory lock every writer of the trail takes
_COLUMNS = "seq, id, recorded_at, patient_id, rulebook_sha256, prev_hash, hash, body"
_TABLES = ("audit_records", "audit_blobs", "audit_rulebooks", "audit_rulebook_files")
_SCHEMA = (
    "CREATE TABLE audit_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE audit_records (
        seq BIGINT PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        recorded_at TEXT NOT NULL,
        patient_id TEXT,
        rulebook_sha256 TEXT NOT NULL,
        prev_hash TEXT NOT NULL UNIQUE,
        hash TEXT NOT NULL UNIQUE,
        body TEXT NOT NULL)""",
    "CREATE INDEX audit_records_patient ON audit_records (patient_id)",
    "CREATE INDEX audit_records_id_prefix ON audit_records (id text_pattern_ops)",
    "CREATE TABLE audit_blobs (sha256 TEXT PRIMARY KEY, content BYTEA NOT NULL)",
    """CREATE TABLE audit_rulebooks (
        sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, version TEXT NOT NULL, archived_at TEXT NOT NULL)""",
    """CREATE TABLE audit_rulebook_files (
        rulebook_sha256 TEXT NOT NULL REFERENCES audit_rulebooks (sha256),
        part TEXT NOT NULL,
        path TEXT NOT NULL,
        blob_sha256 TEXT NOT NULL REFERENCES audit_blobs (sha256),
        PRIMARY KEY (rulebook_sha256, part, path))""",
    """CREATE FUNCTION imt_cds_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'imt-cds audit tables are append-only'; END $$""",
    *(f"""CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
          FOR EACH ROW EXECUTE FUNCTION imt_cds_audit_append_only()""" for table in _TABLES),
    *(f"""CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
          FOR EACH STATEMENT EXECUTE FUNCTION imt_cds_audit_append_only()""" for table in _TABLES),
)


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise AuditStoreError("the PostgreSQL audit store needs psycopg 3: pip install 'imt-cds[postgres]'") from exc
    return psycopg


class PostgresAuditStore(AuditStore):
    """An audit store in a PostgreSQL database (``postgresql://user@host:port/dbname``); creates its tables on
    first use unless ``create=False``. The database itself must exist."""

    def __init__(self, conninfo: str, *, store_input: bool = True, create: bool = True, connect_timeout: int = 10):
        super().__init__(store_input=store_input)
        self._psycopg = _psycopg()
        self._conninfo = conninfo
        self._connect_timeout = connect_timeout
        self._create = create
        self.location = _describe(self._psycopg, conninfo)
        self._db = ForkSafeConnection(self._connect)
        with self._lock:
            self._db.get()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- connection and schema --

    def _connect(self) -> Any:
        psycopg = self._psycopg
        try:
            connection = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=self._connect_timeout)
        except psycopg.Error as exc:
            raise AuditStoreError(f"cannot connect to the audit database {self.location}: {_one_line(exc)}") from exc
        try:
            with connection.transaction():
                exists = connection.execute("SELECT to_regclass('audit_records') IS NOT NULL").fetchone()[0]
                if not exists:
                    if not self._create:
                        raise NotAnAuditStoreError(f"{self.location} has no imt-cds audit tables")
                    # Several instances may start at once on a new database: one creates, the others wait.
                    connection.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                    if not connection.execute("SELECT to_regclass('audit_records') IS NOT NULL").fetchone()[0]:
                        for statement in _SCHEMA:
                            connection.execute(statement)
                        connection.execute("INSERT INTO audit_meta VALUES ('schema', %s)", (SCHEMA_VERSION,))
                row = connection.execute("SELECT value FROM audit_meta WHERE key = 'schema'").fetchone()
            if row is None or row[0] != SCHEMA_VERSION:
                raise NotAnAuditStoreError(f"{self.location} has audit schema {row[0] if row else 'unknown'}; this "
                                           f"version of imt-cds reads schema {SCHEMA_VERSION}")
        except psycopg.Error as exc:
            connection.close()
            raise AuditStoreError(f"cannot open the audit database {self.location}: {_one_line(exc)}") from exc
        except BaseException:
            connection.close()
            raise
        return connection

    def _query(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._db.get().execute(sql, parameters).fetchall()  # type: ignore[no-any-return]
        except self._psycopg.Error as exc:
            raise AuditStoreError(f"cannot read the audit database {self.location}: {_one_line(exc)}") from exc

    # -- writing --

    def _append_row(self, content: dict[str, Any], archive: RulebookArchive | None) -> str:
        connection = self._db.get()
        try:
            with connection.transaction():
                connection.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))  # before reading the head
                if archive is not None:
                    self._insert_archive(connection, archive)
                head = connection.execute("SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1").fetchone()
                seq, prev_hash = (head[0] + 1, head[1]) if head else (1, GENESIS_HASH)
                sealed, body, digest = seal(content, seq=seq, prev_hash=prev_hash)
                connection.execute(
                    f"INSERT INTO audit_records ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    (seq, sealed["id"], sealed["recorded_at"], sealed["patient_id"], sealed["rulebook"]["sha256"],
                     prev_hash, digest, body.decode()),
                )
        except self._psycopg.Error as exc:
            raise AuditStoreError(f"cannot append to the audit database {self.location}: {_one_line(exc)}") from exc
        return str(sealed["id"])

    def _add_archive(self, archive: RulebookArchive) -> None:
        connection = self._db.get()
        try:
            with connection.transaction():
                connection.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                self._insert_archive(connection, archive)
        except self._psycopg.Error as exc:
            raise AuditStoreError(f"cannot archive the rulebook in {self.location}: {_one_line(exc)}") from exc

    @staticmethod
    def _insert_archive(connection: Any, archive: RulebookArchive) -> None:
        if connection.execute("SELECT 1 FROM audit_rulebooks WHERE sha256 = %s", (archive.sha256,)).fetchone():
            return
        digests = archive.file_digests()
        with connection.cursor() as cursor:
            cursor.executemany("INSERT INTO audit_blobs (sha256, content) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                               [(digests[key], content) for key, content in archive.files.items()])
            cursor.execute("INSERT INTO audit_rulebooks (sha256, name, version, archived_at) VALUES (%s, %s, %s, %s)",
                           (archive.sha256, archive.name, archive.version, rfc3339(datetime.now(timezone.utc))))
            cursor.executemany(
                "INSERT INTO audit_rulebook_files (rulebook_sha256, part, path, blob_sha256) VALUES (%s, %s, %s, %s)",
                [(archive.sha256, part, path, digests[(part, path)]) for part, path in archive.files])

    # -- reading --

    def _has_archive(self, sha256: str) -> bool:
        return bool(self._query("SELECT 1 FROM audit_rulebooks WHERE sha256 = %s", (sha256,)))

    def _load_archive(self, sha256: str) -> RulebookArchive | None:
        head = self._query("SELECT name, version FROM audit_rulebooks WHERE sha256 = %s", (sha256,))
        if not head:
            return None
        files = self._query(
            "SELECT f.part, f.path, b.content FROM audit_rulebook_files f "
            "LEFT JOIN audit_blobs b ON b.sha256 = f.blob_sha256 WHERE f.rulebook_sha256 = %s", (sha256,))
        return RulebookArchive(sha256, head[0][0], head[0][1],
                               {(p, path): bytes(c or b"") for p, path, c in files})

    def _last_row(self) -> StoredRow | None:
        rows = self._query(f"SELECT {_COLUMNS} FROM audit_records ORDER BY seq DESC LIMIT 1")
        return _row(rows[0]) if rows else None

    def _row_at(self, seq: int) -> StoredRow | None:
        rows = self._query(f"SELECT {_COLUMNS} FROM audit_records WHERE seq = %s", (seq,))
        return _row(rows[0]) if rows else None

    def _rows_with_id_prefix(self, prefix: str) -> list[StoredRow]:
        exact = self._query(f"SELECT {_COLUMNS} FROM audit_records WHERE id = %s", (prefix,))
        if exact:
            return [_row(exact[0])]
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self._query(f"SELECT {_COLUMNS} FROM audit_records WHERE id LIKE %s ORDER BY id LIMIT 2",
                           (escaped + "%",))
        return [_row(r) for r in rows]

    def _select_rows(self, *, patient_id: str | None, last: int | None) -> list[StoredRow]:
        where, parameters = ("WHERE patient_id = %s", (patient_id,)) if patient_id is not None else ("", ())
        if last is not None:
            rows = self._query(f"SELECT {_COLUMNS} FROM audit_records {where} ORDER BY seq DESC LIMIT %s",
                               (*parameters, last))
            rows.reverse()
        else:
            rows = self._query(f"SELECT {_COLUMNS} FROM audit_records {where} ORDER BY seq", parameters)
        return [_row(r) for r in rows]

    def _iter_all_rows(self) -> Iterator[StoredRow]:
        connection = self._db.get()
        try:
            # A named (server-side) cursor streams the rows in one snapshot, however long the trail is.
            with connection.transaction(), connection.cursor(name="imt_cds_audit_rows") as cursor:
                cursor.itersize = 500
                cursor.execute(f"SELECT {_COLUMNS} FROM audit_records ORDER BY seq")
                for row in cursor:
                    yield _row(row)
        except self._psycopg.Error as exc:
            raise AuditStoreError(f"cannot read the audit database {self.location}: {_one_line(exc)}") from exc


def _row(row: tuple[Any, ...]) -> StoredRow:
    seq, record_id, recorded_at, patient_id, rulebook_sha256, prev_hash, digest, body = row
    return StoredRow(int(seq), record_id, recorded_at, patient_id, rulebook_sha256, prev_hash, digest, body.encode())


def _describe(psycopg: Any, conninfo: str) -> str:
    """The connection string without its password, for messages."""
    try:
        parts = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.Error:
        return "postgresql://(unparsable connection string)"
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{parts.get('host', '')}{port}/{parts.get('dbname', '')}"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
