"""SQLite's exclusive write transaction, shared by the SQLite audit backend and the CDS Hooks service's feedback
table (kept in the same file as the audit trail, so both must take SQLite's write lock the same way)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["write_transaction"]


@contextmanager
def write_transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A transaction that holds SQLite's write lock from its first statement (``BEGIN IMMEDIATE``), so what it reads
    cannot change before it writes; committed on success, rolled back on any exception (which is re-raised)."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
