"""Which audit backend a target names, and opening it: a SQLite file path, or a PostgreSQL connection string.

Apart from ``store.py`` (the interface both backends implement), so that the interface never imports its own
implementations (PostgreSQL's driver is loaded only for a ``postgresql://`` target).
"""

from __future__ import annotations

from pathlib import Path

from .store import AuditStore

__all__ = ["is_postgres_target", "open_store"]


def is_postgres_target(target: str | Path) -> bool:
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def open_store(target: str | Path, *, store_input: bool = True, create: bool = True) -> AuditStore:
    """Open an audit store: a SQLite file path (created on first use when ``create``), or a PostgreSQL connection
    string ``postgresql://user@host:port/dbname``. ``create=False`` refuses to create anything (for readers)."""
    if is_postgres_target(target):
        from .postgres import PostgresAuditStore

        return PostgresAuditStore(str(target), store_input=store_input, create=create)
    from .sqlite import SQLiteAuditStore

    return SQLiteAuditStore(target, store_input=store_input, create=create)
