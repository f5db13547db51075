"""The service when its PostgreSQL database goes away and comes back (a restart, a failover, an administrator ending
sessions), and its readiness check (``/readyz``) for the proxy in front of replicas (README "Replicas").

A real ``imt-cds serve`` with JWT authentication on and a real PostgreSQL server holding its audit trail, its ``jti``
replay cache and its feedback. The server ends the service's sessions (``pg_terminate_backend``, what a restart does
to them), or refuses connections to the database altogether (``ALLOW_CONNECTIONS false``) and then takes them again.
Throughout, no call is answered with cards that have no record (fail closed); once the database is back, the
service answers again without a restart, and the chain stays one valid chain holding exactly the answered calls. A
session that ended while idle is found before use (the replay cache's and the feedback store's here; the audit
store's in test_audit_postgres_store.py).
"""

from __future__ import annotations

import os
import signal
import time
import uuid

import httpx
import pytest
from audit_support import new_database, raw_sql, running_postgres, verify_store
from service_support import (
    Signer,
    bearer,
    example_resources,
    hook_request,
    prefetch_for,
    running_service,
    worker_pids,
)

from imt_cds.audit import open_store
from imt_cds.service.feedback import open_feedback_sink, stored_row
from imt_cds.service.replay_cache import SqlReplayCache

PUBLIC = "https://cds.example.org"
HOOK = PUBLIC + "/cds-services/imt-patient-view"


@pytest.fixture
def signer():
    return Signer("https://ehr.outage.test")


@pytest.fixture
def served(signer, tmp_path):
    jwks = signer.write_jwks(tmp_path)
    with running_postgres() as server:
        database = new_database(server)
        with running_service("--trust", signer.iss, str(jwks), "--audit", database, "--workers", "2",
                             public_url=PUBLIC) as service:
            yield service, server, database


def call(service, signer) -> httpx.Response:
    body = hook_request("patient-view", prefetch=prefetch_for(example_resources()))
    return httpx.post(service.url + "/cds-services/imt-patient-view", json=body, headers=bearer(signer.token(HOOK)),
                      timeout=60)


def ready(service) -> tuple[int, dict]:
    answer = httpx.get(service.url + "/readyz", timeout=30)
    return answer.status_code, answer.json()


def records(database: str) -> int:
    return int(raw_sql(database, "SELECT count(*) FROM audit_records")[0][0][0])


def end_sessions(server: str, database: str) -> None:
    """What a restart of the database server does to the service's connections: each one is ended."""
    name = database.rsplit("/", 1)[1]
    raw_sql(f"{server}/postgres", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  f"WHERE datname = '{name}' AND pid <> pg_backend_pid()")


def allow_connections(server: str, database: str, allowed: bool) -> None:
    name = database.rsplit("/", 1)[1]
    raw_sql(f"{server}/postgres", f"ALTER DATABASE {name} ALLOW_CONNECTIONS {'true' if allowed else 'false'}")


def wait_until(check, timeout: float, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def test_the_service_answers_again_once_postgresql_has_ended_its_sessions(served, signer):
    service, server, database = served
    assert ready(service) == (200, {"ready": True, "not_ready": []})
    assert call(service, signer).status_code == 200
    end_sessions(server, database)
    statuses = [call(service, signer).status_code for _ in range(5)]
    # Each lost connection fails the one call that meets the loss (503: the replay check, then the record), never
    # more, and never with cards: the next calls open new ones.
    assert statuses.count(503) <= 2 and statuses[-3:] == [200, 200, 200], statuses
    assert set(statuses) <= {200, 503}, statuses
    assert records(database) == 1 + statuses.count(200)  # exactly the answered calls
    report = verify_store(database)
    assert report.ok, report.to_dict()
    feedback = {"feedback": [{"card": str(uuid.uuid4()), "outcome": "accepted",
                              "outcomeTimestamp": "2026-01-01T00:00:00Z"}]}

    def send_feedback() -> int:
        return httpx.post(service.url + "/cds-services/imt-patient-view/feedback", json=feedback,
                          headers=bearer(signer.token(HOOK + "/feedback")), timeout=60).status_code

    end_sessions(server, database)
    sent = [send_feedback() for _ in range(3)]
    assert sent.count(503) <= 2 and sent[-1] == 200, sent  # the replay check's session, then the feedback store's
    # The readiness check reads the store through the recorder's session (ended too): not ready once, then ready.
    assert wait_until(lambda: ready(service) == (200, {"ready": True, "not_ready": []}), 10), ready(service)


def test_readyz_says_not_ready_while_the_database_refuses_connections_and_ready_once_it_takes_them(served, signer):
    service, server, database = served
    assert call(service, signer).status_code == 200
    before = records(database)
    allow_connections(server, database, False)
    try:
        end_sessions(server, database)
        assert wait_until(lambda: ready(service) == (503, {"ready": False, "not_ready": ["audit_store"]}), 30), \
            ready(service)
        assert call(service, signer).status_code == 503  # no cards without their record, no token unchecked
        # Workers that die now are replaced at once: a worker needs no database to start (the server archived the
        # rulebook as it started), so the replica is ready the moment the database is back.
        killed = worker_pids(service)
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: len(set(worker_pids(service)) - set(killed)) == 2, 60), worker_pids(service)
        assert wait_until(lambda: httpx.get(service.url + "/healthz", timeout=30).json()["status"] == "ok", 30)
        assert ready(service) == (503, {"ready": False, "not_ready": ["audit_store"]})
    finally:
        allow_connections(server, database, True)
    # The store's connection is opened again.
    assert wait_until(lambda: ready(service) == (200, {"ready": True, "not_ready": []}), 90), ready(service)
    assert call(service, signer).status_code == 200
    assert records(database) == before + 1
    report = verify_store(database)
    assert report.ok, report.to_dict()


def test_the_replay_cache_and_the_feedback_store_find_a_session_ended_while_idle_before_they_use_it(postgres_server):
    # After a quiet second a session is checked before use: a restart of the database server during a quiet spell
    # (a night's maintenance) fails no call, not even the first (unlike one that ends in use, above).
    database = new_database(postgres_server)
    open_store(database).close()
    cache = SqlReplayCache(database, lock_timeout=5)
    sink = open_feedback_sink(database, None)
    row = stored_row("imt-patient-view", {"card": "card-1", "outcome": "accepted",
                                          "outcomeTimestamp": "2026-01-02T03:04:05Z"}, None, {"iss": "https://ehr"})
    try:
        now = time.time()
        assert cache.add(("https://ehr", "jti-1"), now + 60, now) and sink.record([row]) == 1
        end_sessions(postgres_server, database)
        time.sleep(1.2)
        now = time.time()
        assert cache.add(("https://ehr", "jti-2"), now + 60, now)
        assert not cache.add(("https://ehr", "jti-1"), now + 60, now)  # still a replay: the table was kept
        assert sink.record([row]) == 1
    finally:
        cache.close()
        sink.close()
    assert raw_sql(database, "SELECT count(*) FROM cds_feedback")[0][0][0] == 2
