"""The JWT ``jti`` replay cache (service/replay_cache.py) held to one contract in each of its three homes: process
memory, the SQLite audit file and a real PostgreSQL database. A token id is accepted once while its token is valid
(at its expiry instant it is still a replay), per issuer; once expired it may be recorded again; expired ids are purged
from the database; a database that fails refuses the check (503) and the next check opens a new connection. Written
for the planted mistakes of that module that the server-based tests did not see (tests/mutation-survivors.md)."""

from __future__ import annotations

import sqlite3

import pytest
from audit_support import raw_sql

from imt_cds.service.errors import ServiceUnavailableError
from imt_cds.service.replay_cache import (
    PURGE_EVERY_SECONDS,
    MemoryReplayCache,
    SqlReplayCache,
    open_replay_cache,
)

ISSUER = "https://ehr.example.org/"


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def cache(request, tmp_path):
    if request.param == "memory":
        opened = open_replay_cache(None, max_entries=100, lock_timeout=5.0)
        assert isinstance(opened, MemoryReplayCache)
    else:
        if request.param == "sqlite":
            target = str(tmp_path / "audit.db")
        else:
            from audit_support import new_database

            target = new_database(request.getfixturevalue("postgres_server"))
        opened = open_replay_cache(target, max_entries=100, lock_timeout=5.0)
        assert isinstance(opened, SqlReplayCache) and opened.target == target
    yield opened
    opened.close()


def test_a_token_id_is_accepted_once_while_valid_and_again_once_expired(cache):
    assert cache.add((ISSUER, "a"), expires_at=1100.0, now=1000.0)
    assert not cache.add((ISSUER, "a"), expires_at=1100.0, now=1050.0)  # a replay
    assert not cache.add((ISSUER, "a"), expires_at=1100.0, now=1100.0)  # at its expiry instant: still one
    assert cache.add(("https://other.example.org/", "a"), expires_at=1100.0, now=1050.0)  # the same id, another issuer
    assert cache.add((ISSUER, "a"), expires_at=1300.0, now=1100.5)  # expired: recorded anew, until the new expiry
    assert not cache.add((ISSUER, "a"), expires_at=1300.0, now=1200.0)


def jti_rows(cache: SqlReplayCache) -> list[tuple]:
    (rows,) = raw_sql(cache.target, "SELECT jti, expires_at FROM cds_jti ORDER BY jti")
    return [(jti, float(expires_at)) for jti, expires_at in rows]


@pytest.mark.parametrize("home", ["sqlite", "postgres"])
def test_expired_token_ids_are_purged_from_the_database_at_most_once_a_minute(home, tmp_path, request):
    if home == "sqlite":
        target = str(tmp_path / "audit.db")
    else:
        from audit_support import new_database

        target = new_database(request.getfixturevalue("postgres_server"))
    cache = SqlReplayCache(target, lock_timeout=5.0)
    try:
        start = 10_000.0
        assert cache.add((ISSUER, "a"), expires_at=start + 10, now=start)  # the first check purges (nothing yet)
        assert cache.add((ISSUER, "b"), expires_at=start + 500, now=start + 1)
        # "a" has expired, but the last purge was less than a minute ago: it stays
        assert cache.add((ISSUER, "c"), expires_at=start + 500, now=start + PURGE_EVERY_SECONDS)
        assert [jti for jti, _ in jti_rows(cache)] == ["a", "b", "c"]
        # more than a minute after the last purge: the expired row goes, the valid ones stay
        assert cache.add((ISSUER, "d"), expires_at=start + 500, now=start + PURGE_EVERY_SECONDS + 1)
        assert jti_rows(cache) == [("b", start + 500), ("c", start + 500), ("d", start + 500)]
    finally:
        cache.close()


def test_a_database_that_fails_refuses_the_check_and_the_next_check_opens_a_new_connection(tmp_path):
    target = tmp_path / "audit.db"
    cache = SqlReplayCache(str(target), lock_timeout=1.0)
    try:
        assert cache.add((ISSUER, "a"), expires_at=2000.0, now=1000.0)
        first = cache._db.get()
        raw_sql(target, "DROP TABLE cds_jti")  # what the open connection relies on is gone
        with pytest.raises(ServiceUnavailableError) as refused:
            cache.add((ISSUER, "b"), expires_at=2000.0, now=1000.0)
        assert (refused.value.status, refused.value.message) == (503, "the token replay check is unavailable; "
                                                                       "try again")
        assert isinstance(refused.value.__cause__, sqlite3.OperationalError)  # the driver's error, for the log
        # the failed connection was dropped: the next check opens another, which creates the table again
        assert cache.add((ISSUER, "b"), expires_at=2000.0, now=1000.0)
        assert cache._db.get() is not first
        assert not cache.add((ISSUER, "b"), expires_at=2000.0, now=1001.0)
    finally:
        cache.close()


def test_the_sqlite_cache_waits_for_the_write_lock_as_long_as_it_is_told(tmp_path):
    target = str(tmp_path / "audit.db")
    cache = SqlReplayCache(target, lock_timeout=2.5)
    try:
        assert cache.add((ISSUER, "a"), expires_at=2000.0, now=1000.0)
        connection = cache._db.get()
        assert connection.execute("PRAGMA busy_timeout").fetchone() == (2500,)
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert isinstance(connection, sqlite3.Connection) and connection.isolation_level is None
    finally:
        cache.close()


def test_the_postgresql_cache_waits_for_locks_as_long_as_it_is_told(postgres_server):
    from audit_support import new_database

    cache = SqlReplayCache(new_database(postgres_server), lock_timeout=2.5)
    try:
        assert cache.add((ISSUER, "a"), expires_at=2000.0, now=1000.0)
        assert cache._db.get().execute("SHOW lock_timeout").fetchone() == ("2500ms",)
    finally:
        cache.close()
