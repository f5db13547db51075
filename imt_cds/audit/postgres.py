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
from contextlib import contextmanager
from typing import Any

from ..core.errors import AuditStoreError, NotAnAuditStoreError
from .record import StoredRow
from .sql import COLUMNS, SQLAuditStore, stored_row
from .store import SCHEMA_VERSION, SESSION_IDLE_CHECK_SECONDS

__all__ = ["PostgresAuditStore", "session_lost"]

_LOCK_KEY = 0x696D742D636473  # "imt-cds": the advisory lock every writer of the trail takes
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


class PostgresAuditStore(SQLAuditStore):
    """An audit store in a PostgreSQL database (``postgresql://user@host:port/dbname``); creates its tables on
    first use unless ``create=False``. The database itself must exist."""

    placeholder = "%s"

    def __init__(self, conninfo: str, *, store_input: bool = True, create: bool = True, connect_timeout: int = 10,
                 lock_timeout: float | None = None,
                 idle_check_seconds: float | None = SESSION_IDLE_CHECK_SECONDS):
        """``lock_timeout``: seconds a write may wait for the other writers (the chain's lock), then it fails
        (``AuditStoreError``); None waits as long as it takes. ``idle_check_seconds``: a session unused for longer is
        checked (``SELECT 1``) before use and opened again if the server has ended it (None: never checked; a session
        the server ended then fails one call, and the next opens a new one)."""
        super().__init__(store_input=store_input)
        self._idle_check_seconds = idle_check_seconds
        self._lock_timeout_ms = None if lock_timeout is None else max(1, int(lock_timeout * 1000))
        self._psycopg = _psycopg()
        self._driver_error = self._psycopg.Error
        self._conninfo = conninfo
        self._connect_timeout = connect_timeout
        self._create = create
        self.location = _describe(self._psycopg, conninfo)
        self._open()

    # -- connection and schema --

    def _connect(self) -> Any:
        psycopg = self._psycopg
        try:
            connection = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=self._connect_timeout)
        except psycopg.Error as exc:
            raise AuditStoreError(f"cannot connect to the audit database {self.location}: {_one_line(exc)}") from exc
        try:
            if self._lock_timeout_ms is not None:  # bounds the wait for the advisory lock that serializes appends
                connection.execute(f"SET lock_timeout = {self._lock_timeout_ms}")
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
            self._check_schema(connection)
        except psycopg.Error as exc:
            connection.close()
            raise AuditStoreError(f"cannot open the audit database {self.location}: {_one_line(exc)}") from exc
        except BaseException:
            connection.close()
            raise
        return connection

    # -- the shared store's hooks --

    @contextmanager
    def _write_transaction(self, connection: Any) -> Iterator[Any]:
        with connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))  # before reading the head
            yield connection

    def _error_text(self, exc: Exception) -> str:
        return _one_line(exc)

    def _connection_lost(self, connection: Any) -> bool:
        return session_lost(connection)

    def _id_prefix_condition(self, prefix: str) -> tuple[str, tuple[Any, ...]]:
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return "id LIKE ?", (escaped + "%",)

    def _iter_all_rows(self) -> Iterator[StoredRow]:
        connection = self._db.get()
        try:
            # A named (server-side) cursor streams the rows in one snapshot, however long the trail is.
            with connection.transaction(), connection.cursor(name="imt_cds_audit_rows") as cursor:
                cursor.itersize = 500
                cursor.execute(f"SELECT {COLUMNS} FROM audit_records ORDER BY seq")
                for row in cursor:
                    yield stored_row(row)
        except self._psycopg.Error as exc:
            raise self._read_error(exc) from exc


def session_lost(connection: Any) -> bool:
    """Whether psycopg knows the server has ended this connection's session (it is closed, or broken)."""
    return bool(connection.closed)


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
