"""The audit store interface: append-only, hash-chained records plus the rulebook archive, whatever the database.

``AuditStore`` holds everything that does not depend on the database: building a record from an assessment,
archiving its rulebook on first use, resolving record ids, verifying the chain and the archive. A backend
(``SQLiteAuditStore``, ``PostgresAuditStore``) supplies a few primitives, of which one writes: ``_append_rows``,
which must read the chain's head and insert the new records *in one write transaction that excludes every other
writer* (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: a transaction-level advisory lock), so that any number of
threads and processes appending at once keep one unbroken chain. A record is acknowledged (``append`` returns its
id) only after that transaction committed durably; any failure raises, and the engine then raises too (fail
closed). There is no update and no delete, in the API or (by triggers) in the schema.

``append_contents`` appends several records prepared elsewhere (``new_record_content``) in one such transaction:
one durable commit for all of them (a group commit), which is what lets a service record evaluations faster than
the disk flushes. Their rulebook must be archived already (``archive``).

Stores are safe to share between threads (one connection per process behind a lock) and survive ``fork``: a child
process opens its own connection and never touches its parent's.
"""

from __future__ import annotations

import os
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Self

from ..core.errors import ArchiveMissingError, AuditError, RecordNotFoundError
from .archive import RulebookArchive
from .record import GENESIS_HASH, AuditRecord, ChainReport, StoredRow, new_record_content, verify_chain

if TYPE_CHECKING:
    from ..core.assessment import Assessment
    from ..core.rulebook import Rulebook
    from .checkpoint import Checkpoint

__all__ = ["MIN_ID_PREFIX", "AuditStore"]

MIN_ID_PREFIX = 8  # shortest record-id prefix accepted in place of the whole id
SCHEMA_VERSION = "1"
_FULL_HASH = re.compile(r"[0-9a-f]{64}")


class AuditStore(ABC):
    """An append-only, hash-chained audit trail. Use as ``Engine(audit=store)`` or call ``append`` directly.

    ``store_input=False`` keeps only the sha256 of each patient's canonical input, not the input itself (such a
    record cannot be replayed). Close the store (or use it as a context manager) when done.
    """

    #: where the store lives, for messages (a path, or a connection string without its password)
    location: str

    def __init__(self, *, store_input: bool = True):
        self.store_input = store_input
        self._lock = threading.RLock()
        self._archived: set[str] = set()  # rulebook sha256s known to be in the archive
        self._files_sha256: dict[str, str] = {}  # rulebook sha256 -> the digest of its archived files

    # -- writing ------------------------------------------------------------------------------------------------

    def append(self, assessment: Assessment) -> str:
        """Record one assessment at the end of the chain (archiving its rulebook on first use); return the record
        id once it is durably stored. Raises an ``AuditError`` when it cannot record."""
        content = new_record_content(assessment, store_input=self.store_input)
        archive = self._archive_to_add(assessment.rulebook)
        with self._lock:
            (record_id,) = self._append_rows([content], archive)
        self._archived.add(assessment.rulebook.sha256)
        return record_id

    def append_contents(self, contents: Sequence[Mapping[str, Any]]) -> list[str]:
        """Record several prepared records (``new_record_content``), in this order, at the end of the chain, in
        one write transaction with one durable commit; return their ids once committed. All or none: any failure
        (among them a record whose rulebook is not archived, see ``archive``) raises ``AuditError`` and records
        nothing."""
        if not contents:
            return []
        with self._lock:
            return self._append_rows([dict(c) for c in contents], None)

    def archive(self, rulebook: Rulebook) -> None:
        """Make sure the rulebook's files are in the archive (added, in a write transaction of their own, unless
        they are there already): what ``append_contents`` needs before it records assessments made with it."""
        archive = self._archive_to_add(rulebook)
        if archive is not None:
            with self._lock:
                self._append_rows([], archive)
        self._archived.add(rulebook.sha256)

    def _archive_to_add(self, rulebook: Rulebook) -> RulebookArchive | None:
        if rulebook.sha256 in self._archived:
            return None
        with self._lock:
            known = self._has_archive(rulebook.sha256)
        if known:
            self._archived.add(rulebook.sha256)
            return None
        # Read and check the files outside the lock: it loads the rulebook once more (a fraction of a second).
        return RulebookArchive.collect(rulebook)

    # -- reading ------------------------------------------------------------------------------------------------

    def record(self, ref: str) -> AuditRecord:
        """A record by its id, a unique prefix of it (at least 8 characters), its number in the chain, or
        ``last``. Raises ``RecordNotFoundError``."""
        ref = ref.strip()
        with self._lock:
            if ref == "last":
                row = self._last_row()
                if row is None:
                    raise RecordNotFoundError(f"the audit trail in {self.location} is empty")
                return AuditRecord.from_row(row)
            if ref.isdigit() and len(ref) < MIN_ID_PREFIX:
                row = self._row_at(int(ref))
                if row is None:
                    raise RecordNotFoundError(f"no audit record #{ref} in {self.location}")
                return AuditRecord.from_row(row)
            if len(ref) < MIN_ID_PREFIX:
                raise RecordNotFoundError(f"record id {ref!r} is too short: give the whole id, at least "
                                          f"{MIN_ID_PREFIX} of its first characters, a record number or 'last'")
            rows = self._rows_with_id_prefix(ref.lower())
        if not rows:
            raise RecordNotFoundError(f"no audit record with id {ref} in {self.location}")
        if len(rows) > 1 and not any(r.id == ref.lower() for r in rows):
            raise RecordNotFoundError(f"record id prefix {ref} is ambiguous in {self.location}: give more of it")
        exact = [r for r in rows if r.id == ref.lower()]
        return AuditRecord.from_row((exact or rows)[0])

    def records(self, *, patient_id: str | None = None, last: int | None = None) -> list[AuditRecord]:
        """Records in chain order (``last``: only the newest N; ``patient_id``: only that patient's)."""
        with self._lock:
            rows = self._select_rows(patient_id=patient_id, last=last)
        return [AuditRecord.from_row(row) for row in rows]

    def head(self) -> AuditRecord | None:
        """The newest record (None for an empty trail)."""
        with self._lock:
            row = self._last_row()
        return None if row is None else AuditRecord.from_row(row)

    def head_hash(self) -> str:
        """The latest chain hash: anchor it elsewhere, and ``verify(anchor=...)`` later proves nothing before it
        was rewritten. An empty trail's head is the genesis hash (64 zeros)."""
        head = self.head()
        return GENESIS_HASH if head is None else head.hash

    def rulebook_archive(self, sha256: str) -> RulebookArchive:
        """The archived files of a rulebook; raises ``ArchiveMissingError``."""
        with self._lock:
            archive = self._load_archive(sha256)
        if archive is None:
            raise ArchiveMissingError(f"rulebook {sha256} is not in the archive of {self.location}")
        return archive

    # -- verifying ----------------------------------------------------------------------------------------------

    def verify(self, *, anchor: str | None = None, check_archive: bool = True,
               checkpoints: Iterable[Checkpoint] = ()) -> ChainReport:
        """Recompute every record's hash and link, in chain order, naming the first bad record; then check that
        every rulebook the records name is archived with the very bytes the records committed to and rebuilds to
        its sha256; (``anchor``, the full 64-hex hash) that a hash anchored earlier is still in the chain; and
        (``checkpoints``, read with ``read_checkpoint``, which checks their signatures) that the record at each
        checkpoint's length is still there with the hash that was signed."""
        if anchor is not None and not _FULL_HASH.fullmatch(anchor.strip().lower()):
            raise ValueError(f"anchor must be the full 64-hex-digit hash printed by `audit head`, got {anchor!r}")
        checkpoints = tuple(checkpoints)
        seen: set[str] = {GENESIS_HASH}
        at_length: dict[int, str] = {0: GENESIS_HASH}  # seq -> hash, for the records the checkpoints name
        wanted = {c.records for c in checkpoints}

        def watched(rows: Iterable[StoredRow]) -> Iterator[StoredRow]:
            for row in rows:
                seen.add(row.hash)
                if row.seq in wanted:
                    at_length.setdefault(row.seq, row.hash)
                yield row

        with self._lock:
            rows = self._iter_all_rows()
            try:
                report, rulebooks = verify_chain(watched(rows))
            finally:
                rows.close()  # type: ignore[attr-defined]  # ends the read transaction when verification stops early
        problems: list[str] = []
        if check_archive:
            for sha256, recorded in sorted(rulebooks.items()):
                try:
                    archive = self.rulebook_archive(sha256)
                    problems.extend(archive.problems(recorded))  # byte for byte (the rebuild cannot see comments)
                    archive.load()
                except AuditError as exc:
                    problems.append(f"rulebook archive: {exc}")
        if anchor is not None and anchor.strip().lower() not in seen:
            problems.append(f"anchored hash {anchor.strip()} is not in the chain: records were removed or the "
                            "chain was rewritten since it was anchored")
        for checkpoint in checkpoints:
            # Only the intact records count: past the first break, a hash proves nothing.
            if checkpoint.records > report.records:
                intact = "intact records before its first break" if report.first_break else "records"
                problems.append(f"{checkpoint.describe()}: the trail holds only {report.records} {intact} (records "
                                "were removed, or the chain broken, since it was signed)")
            elif at_length.get(checkpoint.records) != checkpoint.head:
                problems.append(f"{checkpoint.describe()}: record #{checkpoint.records} has hash "
                                f"{at_length.get(checkpoint.records)}, not the signed {checkpoint.head} (records "
                                "up to it were changed, removed, inserted or forged since it was signed)")
        return ChainReport(report.records, report.head, report.first_break, tuple(problems))

    # -- life cycle ---------------------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.location}>"

    @abstractmethod
    def close(self) -> None: ...

    # -- backend primitives (called with self._lock held) ----------------------------------------------------------

    @abstractmethod
    def _append_rows(self, contents: list[dict[str, Any]], archive: RulebookArchive | None) -> list[str]:
        """In one write transaction that excludes all other writers: add ``archive`` if given (unless present);
        then for each content in turn read the head, ``seal`` the content after it and insert it (refusing one
        whose rulebook is not archived); commit durably; return the record ids."""

    @abstractmethod
    def _has_archive(self, sha256: str) -> bool: ...

    @abstractmethod
    def _load_archive(self, sha256: str) -> RulebookArchive | None: ...

    @abstractmethod
    def _last_row(self) -> StoredRow | None: ...

    @abstractmethod
    def _row_at(self, seq: int) -> StoredRow | None: ...

    @abstractmethod
    def _rows_with_id_prefix(self, prefix: str) -> list[StoredRow]:
        """At most two rows whose id starts with ``prefix`` (exact match first)."""

    @abstractmethod
    def _select_rows(self, *, patient_id: str | None, last: int | None) -> list[StoredRow]: ...

    @abstractmethod
    def _iter_all_rows(self) -> Iterator[StoredRow]:
        """Every row in seq order, streamed."""


# How long a database server's session may sit unused before it is checked with a round trip before use: under load
# (calls milliseconds apart) never; after a quiet spell, when a restart of the server goes unnoticed, one SELECT 1.
SESSION_IDLE_CHECK_SECONDS = 1.0


class ForkSafeConnection:
    """One database connection per process: a forked child opens its own and leaves the parent's alone (closing
    it from the child would tear down the parent's session: PostgreSQL's socket is shared, SQLite's locks are
    per process).

    For a database server, whose sessions end without the client knowing (a restart, a failover, an administrator or
    an idle timeout): ``lost(connection)`` says whether the driver already knows its session is gone, and a
    connection idle for more than ``idle_check_seconds`` is checked with a round trip (``SELECT 1``) before it is
    handed out (a session that ended while nobody used it is found there, not by the next write); either way a new
    connection is opened. Without this, one ended session failed every later write until the process restarted. A
    session that ends while in use still fails that one call: whether its commit reached the server is unknown, so it
    is not retried."""

    def __init__(self, connect: Any, lost: Any = None, idle_check_seconds: float | None = None):
        self._connect = connect
        self._lost = lost
        self._idle_check_seconds = idle_check_seconds
        self._connection: Any = None
        self._pid = 0
        self._used_at = 0.0
        self._inherited: list[Any] = []  # kept referenced so that they are never closed (or finalized) here

    def get(self) -> Any:
        if self._connection is not None and self._pid == os.getpid() and not self._still_usable(self._connection):
            self.close()  # (closing an ended session only releases it)
        if self._connection is None or self._pid != os.getpid():
            if self._connection is not None:
                self._inherited.append(self._connection)
            self._connection = self._connect()
            self._pid = os.getpid()
        self._used_at = time.monotonic()
        return self._connection

    def _still_usable(self, connection: Any) -> bool:
        if self._lost is not None and self._lost(connection):
            return False
        if self._idle_check_seconds is not None and time.monotonic() - self._used_at > self._idle_check_seconds:
            try:
                connection.execute("SELECT 1")
            except Exception:  # noqa: BLE001 - any driver error: the session is not usable, a new one is opened
                return False
        return True

    def close(self) -> None:
        connection, self._connection = self._connection, None  # forgotten even when closing it fails
        if connection is not None and self._pid == os.getpid():
            connection.close()
