"""The PostgreSQL audit store built by hand and its contract with other writers, on a real server (as every
PostgreSQL test of the suite; in CI a server that cannot start fails the run): its defaults, the advisory lock all
writers of a trail share, and what it says when its driver is missing."""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import psycopg
import pytest
from audit_support import new_database

from imt_cds import Engine
from imt_cds.audit import AuditStoreError, NotAnAuditStoreError, RecordNotFoundError
from imt_cds.audit.postgres import PostgresAuditStore

ALK = json.loads((Path(__file__).resolve().parents[1] / "examples" / "02_alk_positive_unresectable.json").read_text())
# The key of the advisory lock that serializes appends: the bytes of "imt-cds" read as one big-endian integer. Every
# release must take this very key, or two replicas of different releases (a rolling upgrade) would append at once.
CHAIN_LOCK = int.from_bytes(b"imt-cds", "big")


def test_a_postgres_store_built_by_hand_keeps_the_input(postgres_server):
    with PostgresAuditStore(new_database(postgres_server)) as store:  # the same default as open_store's
        Engine(audit=store).evaluate(ALK)
        assert store.record("last").input is not None


def test_postgres_appends_wait_for_the_advisory_lock_named_imt_cds(postgres_server):
    target = new_database(postgres_server)
    with PostgresAuditStore(target, lock_timeout=0.5) as store:
        engine = Engine(audit=store)
        engine.evaluate(ALK)  # the tables and the archive exist: the next append only needs the lock
        with psycopg.connect(target, autocommit=True) as other:
            other.execute("SELECT pg_advisory_lock(%s)", (CHAIN_LOCK,))  # another writer, mid-append
            with pytest.raises(AuditStoreError, match="lock timeout"):
                engine.evaluate(ALK)
            other.execute("SELECT pg_advisory_unlock(%s)", (CHAIN_LOCK,))
        engine.evaluate(ALK)
        assert len(store.records()) == 2


def end_other_sessions(target: str) -> None:
    """What a restart or failover of the database server does to a long-lived store's (the service's) session."""
    with psycopg.connect(target, autocommit=True) as admin:
        ended = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
                              "current_database() AND pid <> pg_backend_pid()").fetchall()
    assert ended == [(True,)]


def test_a_postgres_store_whose_session_the_server_ended_fails_that_append_and_opens_a_new_session(postgres_server):
    # Used a moment ago, so not checked before use (as a session that ends while in use is not): the one call that
    # meets the loss fails (its commit cannot be known), the next ones work, and the chain stays whole.
    target = new_database(postgres_server)
    with PostgresAuditStore(target, lock_timeout=5, idle_check_seconds=60) as store:
        engine = Engine(audit=store)
        engine.evaluate(ALK)
        end_other_sessions(target)
        with pytest.raises(AuditStoreError, match="terminating connection"):
            engine.evaluate(ALK)
        engine.evaluate(ALK)
        engine.evaluate(ALK)
        assert [r.seq for r in store.records()] == [1, 2, 3]
        assert store.verify().ok


def test_a_postgres_session_the_server_ended_while_idle_is_found_before_use_and_no_call_fails(postgres_server):
    target = new_database(postgres_server)
    with PostgresAuditStore(target, lock_timeout=5, idle_check_seconds=0) as store:  # (checked at every use)
        engine = Engine(audit=store)
        engine.evaluate(ALK)
        end_other_sessions(target)
        engine.evaluate(ALK)
        assert store.head().seq == 2
        end_other_sessions(target)
        assert [r.seq for r in store.records()] == [1, 2]  # reads too
        assert store.verify().ok


def test_a_postgres_store_checks_an_idle_session_after_a_second_by_default(postgres_server):
    target = new_database(postgres_server)
    with PostgresAuditStore(target) as store:
        engine = Engine(audit=store)
        engine.evaluate(ALK)
        end_other_sessions(target)
        time.sleep(1.2)
        engine.evaluate(ALK)  # a quiet spell, then a restart: the next call is not the one that fails
        assert store.head().seq == 2


def test_without_its_driver_a_postgres_store_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # `import psycopg` now fails as if it were not installed
    with pytest.raises(AuditStoreError) as caught:
        PostgresAuditStore("postgresql://cds@db.example.org/audit")
    assert str(caught.value) == "the PostgreSQL audit store needs psycopg 3: pip install 'imt-cds[postgres]'"


def test_a_postgres_store_gives_the_server_its_timeouts_in_milliseconds(postgres_server):
    target = new_database(postgres_server)
    with PostgresAuditStore(target) as store:  # no lock timeout: an append waits as long as the others take
        connection = store._db.get()
        assert connection.execute("SHOW lock_timeout").fetchone() == ("0",)
        assert connection.info.get_parameters()["connect_timeout"] == "10"  # seconds to reach the server
    with PostgresAuditStore(target, lock_timeout=2.5) as store:
        assert store._db.get().execute("SHOW lock_timeout").fetchone() == ("2500ms",)
    with PostgresAuditStore(target, lock_timeout=0.0001) as store:  # under a millisecond: 1 ms, since 0 is "never"
        assert store._db.get().execute("SHOW lock_timeout").fetchone() == ("1ms",)


def test_a_postgres_store_that_cannot_be_reached_is_named_without_its_password():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(AuditStoreError) as caught:
        PostgresAuditStore(f"postgresql://cds:secret@127.0.0.1:{port}/audit", connect_timeout=2)
    message = str(caught.value)
    assert message.startswith(f"cannot connect to the audit database postgresql://cds@127.0.0.1:{port}/audit: ")
    assert "secret" not in message


def test_a_postgres_read_the_database_refuses_names_the_store_and_the_reason(postgres_server):
    target = new_database(postgres_server)
    with PostgresAuditStore(target) as store:
        Engine(audit=store).evaluate(ALK)
        with psycopg.connect(target, autocommit=True) as other:
            other.execute("ALTER TABLE audit_records RENAME TO audit_records_elsewhere")
        with pytest.raises(AuditStoreError) as caught:
            store.records()
    assert str(caught.value) == (f"cannot read the audit database {store.location}: relation \"audit_records\" does "
                                 "not exist")
    assert store.location.startswith("postgresql://") and store.location.endswith(target.rsplit("/", 1)[1])


def test_a_postgres_database_without_audit_tables_is_named_and_left_empty_when_reading_only(postgres_server):
    target = new_database(postgres_server)
    with pytest.raises(NotAnAuditStoreError) as caught:
        PostgresAuditStore(target, create=False)
    assert str(caught.value).endswith(" has no imt-cds audit tables")
    assert str(caught.value).startswith("postgresql://") and target.rsplit("/", 1)[1] in str(caught.value)
    with psycopg.connect(target) as other:
        assert other.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)


def test_a_postgres_store_that_cannot_create_its_tables_in_time_says_so(postgres_server):
    target = new_database(postgres_server)
    with psycopg.connect(target) as other:  # another instance creating the tables: it holds the chain's lock
        other.execute("SELECT pg_advisory_xact_lock(%s)", (CHAIN_LOCK,))
        with pytest.raises(AuditStoreError) as caught:
            PostgresAuditStore(target, lock_timeout=0.3)
    location = f"postgresql://{target.split('://', 1)[1]}"
    assert str(caught.value) == f"cannot open the audit database {location}: canceling statement due to lock timeout"


def test_a_postgres_record_id_prefix_is_matched_as_text_never_as_a_pattern(postgres_server):
    with PostgresAuditStore(new_database(postgres_server)) as store:
        Engine(audit=store).evaluate(ALK)
        record_id = store.record("last").id
        assert store.record(record_id[:8]).id == record_id
        # LIKE's wildcards and escape character, in a prefix, are only characters: no record id holds them.
        for prefix in (record_id[:7] + "_", record_id[:8] + "%", record_id[:7] + "\\" + record_id[7]):
            with pytest.raises(RecordNotFoundError, match="no audit record with id"):
                store.record(prefix)


@pytest.mark.parametrize(("conninfo", "shown"), [
    ("postgresql://127.0.0.1:{port}/audit", "postgresql://127.0.0.1:{port}/audit"),  # no user: none shown
    ("host=127.0.0.1 port={port} dbname=audit user=cds password=secret", "postgresql://cds@127.0.0.1:{port}/audit"),
    ("postgresql://[not a host", "postgresql://(unparsable connection string)"),
    # A part the string leaves out (libpq takes it from PGHOST, PGPORT or PGDATABASE) is shown as nothing.
    ("postgresql://127.0.0.1/audit", "postgresql://127.0.0.1/audit"),
    ("postgresql://:{port}/audit", "postgresql://:{port}/audit"),
    ("postgresql://127.0.0.1:{port}", "postgresql://127.0.0.1:{port}/"),
    ("postgresql://", "postgresql:///"),
])
def test_a_postgres_store_names_its_server_in_one_form_whatever_the_connection_string(conninfo, shown, monkeypatch):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for name, value in (("PGHOST", "127.0.0.1"), ("PGPORT", str(port)), ("PGDATABASE", "audit")):
        monkeypatch.setenv(name, value)
    with pytest.raises(AuditStoreError) as caught:
        PostgresAuditStore(conninfo.format(port=port), connect_timeout=2)
    assert str(caught.value).startswith(f"cannot connect to the audit database {shown.format(port=port)}: ")
    assert "secret" not in str(caught.value)
