"""A hook call while the audit store's write lock is held elsewhere (a backup, a long audit job): the evaluation's
record waits at most ``--store-timeout``, then the call gets a 503 ``cds_audit_unavailable`` with a fixed message
and no cards (none are shown without a record), while other requests go on. Once the lock is released the same
call is answered and recorded. The token replay cache in the same database waits no longer, and its connection is
closed with the server; its table is written with ``synchronous=FULL`` like the audit records.

Every server is real (``imt-cds serve`` through its console script); the lock is held by another process with
``BEGIN IMMEDIATE``, as a second writer would.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest
from audit_support import hold_sqlite_write_lock
from service_support import (
    EXAMPLE_PATIENT,
    Signer,
    bearer,
    example_resources,
    hook_request,
    prefetch_for,
    running_service,
)

from imt_cds.service import AuthSettings, ServiceConfig, TrustedIssuer, create_app
from imt_cds.service.replay_cache import SqlReplayCache

PUBLIC = "https://cds.example.org"
PATIENT_VIEW = "/cds-services/imt-patient-view"
STORE_TIMEOUT = 2
# The client waits less than --request-timeout: an audit append that waited on the audit store's own 60 s busy
# timeout would be cut off by the request timeout (a 503 cds_worker_timeout) only after the client gave up.
REQUEST_TIMEOUT = 25
CLIENT_TIMEOUT = STORE_TIMEOUT + 10


def patient_view(headers=None):
    return hook_request("patient-view", prefetch=prefetch_for(example_resources())), (headers or {})


def records(audit: Path) -> int:
    db = sqlite3.connect(audit)
    try:
        return int(db.execute("SELECT count(*) FROM audit_records").fetchone()[0])
    finally:
        db.close()


class LockHolder:
    """Another process holding the SQLite write lock of ``path`` until the block ends."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> LockHolder:
        self.process = hold_sqlite_write_lock(self.path)
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.stdin.close()
        self.process.wait(10)


def call_while_others_ask(service, body, headers):
    """Send ``body`` in a thread; while it waits, ask /healthz. The answer, /healthz's status, and whether the call
    was still waiting when /healthz answered."""
    answered: dict = {}
    pending = threading.Thread(target=lambda: answered.update(response=httpx.post(
        service.url + PATIENT_VIEW, json=body, headers=headers, timeout=CLIENT_TIMEOUT)))
    pending.start()
    threading.Event().wait(0.5)  # let the call reach the store and wait for its lock
    health = httpx.get(service.url + "/healthz", timeout=1.0).status_code
    still_waiting = pending.is_alive()
    pending.join()
    return answered["response"], health, still_waiting


def test_a_hook_call_gets_a_503_within_the_store_timeout_while_the_audit_store_is_locked(tmp_path):
    audit = tmp_path / "audit.db"
    with running_service("--allow-unauthenticated", "--workers", "1", "--audit", str(audit), "--store-timeout",
                         str(STORE_TIMEOUT), "--request-timeout", str(REQUEST_TIMEOUT)) as service:
        body, headers = patient_view()
        assert httpx.post(service.url + PATIENT_VIEW, json=body, timeout=60).status_code == 200  # warm
        before = records(audit)
        with LockHolder(audit):
            busy, health, still_waiting = call_while_others_ask(service, body, headers)
        assert health == 200
        assert still_waiting, "the call was over before /healthz was asked: nothing was shown"
        assert busy.status_code == 503, busy.text
        assert busy.json() == {"error": {"code": "cds_audit_unavailable", "status": 503, "message": (
            "the audit trail cannot record this evaluation now: no cards are returned without a record; try again")}}
        assert "cards" not in busy.json() and str(tmp_path) not in busy.text
        assert "cds_audit_unavailable" in service.log_text() and "database is locked" in service.log_text()
        assert records(audit) == before  # nothing half-recorded
        # The lock released, the same call is answered, and recorded.
        after = httpx.post(service.url + PATIENT_VIEW, json=body, timeout=60)
        assert after.status_code == 200 and after.json()["cards"], after.text
        assert records(audit) == before + 1


def test_with_authentication_the_token_check_waits_no_longer_than_the_store_timeout(tmp_path):
    signer = Signer("https://ehr.example.org/")
    jwks = signer.write_jwks(tmp_path)
    audit = tmp_path / "audit.db"
    with running_service("--trust", signer.iss, str(jwks), "--workers", "1", "--audit", str(audit),
                         "--store-timeout", str(STORE_TIMEOUT), "--request-timeout", str(REQUEST_TIMEOUT),
                         public_url=PUBLIC) as service:
        def token():
            return bearer(signer.token(PUBLIC + PATIENT_VIEW))

        body, _ = patient_view()
        assert httpx.post(service.url + PATIENT_VIEW, json=body, headers=token(), timeout=60).status_code == 200
        with LockHolder(audit):
            busy, health, still_waiting = call_while_others_ask(service, body, token())
        assert health == 200 and still_waiting
        assert busy.status_code == 503, busy.text
        assert busy.json()["error"]["code"] in ("cds_unavailable", "cds_audit_unavailable")
        assert httpx.post(service.url + PATIENT_VIEW, json=body, headers=token(), timeout=60).status_code == 200


def _open_files(path: Path) -> list[str]:
    """This process's file descriptors open on ``path`` (or its WAL and shared-memory files)."""
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(str(path)):
            found.append(target)
    return found


def test_the_replay_cache_connection_is_closed_when_the_server_stops(tmp_path):
    # The application itself, in this process (its worker processes are real), so that what its shutdown leaves
    # open can be seen: uvicorn's process would exit right after, hiding a connection never closed.
    signer = Signer("https://ehr.example.org/")
    audit = tmp_path / "audit.db"
    config = ServiceConfig(public_url=PUBLIC, audit=str(audit), workers=1,
                           auth=AuthSettings((TrustedIssuer(signer.iss, str(signer.write_jwks(tmp_path))),)))
    app = create_app(config)

    async def serve_one_call() -> tuple[int, list[str]]:
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=PUBLIC) as client:
                answer = await client.get("/cds-services", headers=bearer(signer.token(PUBLIC + "/cds-services")))
            during = _open_files(audit)
        return answer.status_code, during

    status, during = asyncio.run(serve_one_call())
    assert status == 200
    assert during, "the token id was not written to the audit database: nothing was shown"
    assert _open_files(audit) == []
    db = sqlite3.connect(audit)
    try:
        assert db.execute("SELECT count(*) FROM cds_jti").fetchone() == (1,)
    finally:
        db.close()


def test_token_ids_are_written_with_full_durability(tmp_path):
    cache = SqlReplayCache(str(tmp_path / "audit.db"), lock_timeout=5.0)
    try:
        assert cache.add(("https://ehr.example.org/", "id-1"), time.time() + 300, time.time())
        # 2 = FULL: the commit is synced before the token is accepted (WAL's default, NORMAL, is 1).
        assert cache._db.get().execute("PRAGMA synchronous").fetchone() == (2,)
    finally:
        cache.close()


def test_on_postgresql_the_recorder_waits_at_most_the_store_timeout_for_the_chain_lock():
    # The server's recorder, in this process, with a record a real worker handler prepared: another session holds
    # the advisory lock every appender takes.
    import psycopg
    from audit_support import new_database, running_postgres

    from imt_cds.audit.postgres import _LOCK_KEY
    from imt_cds.core.errors import AuditError
    from imt_cds.service.recorder import AuditRecorder
    from imt_cds.service.workers import WorkerSettings, _Handler, _open_audit_store

    with running_postgres() as server:
        database = new_database(server)
        settings = WorkerSettings(cache_size=0, audit=database, store_timeout=1.0)
        handler = _Handler(settings)
        with _open_audit_store(settings) as store:  # as the server does when it starts
            store.archive(handler.engine.rulebook)
        job = {"op": "assess", "resources": example_resources(), "on": "2026-11-21", "patient_id": EXAMPLE_PATIENT}

        async def scenario() -> None:
            recorder = AuditRecorder(lambda: _open_audit_store(settings))
            recorder.start()
            try:
                with psycopg.connect(database) as holder:  # a transaction until the block ends
                    holder.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                    started = time.monotonic()
                    # bounded: without the lock timeout the append would wait for as long as the lock is held
                    with pytest.raises(AuditError, match="lock timeout"):
                        await asyncio.wait_for(recorder.record(handler.handle(job)["record"]), 30)
                    assert time.monotonic() - started < 10
                answer = handler.handle(job)  # the lock released: recorded
                assert await recorder.record(answer["record"]) == answer["evaluation_id"]
            finally:
                recorder.close()

        asyncio.run(scenario())
