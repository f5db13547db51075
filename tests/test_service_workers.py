"""Crash containment: a worker process killed while it serves a request fails that request only, and the service
goes on. The workers are found from outside, as an operator would (the server's descendants in /proc named
imt-cds-worker), and stopped and killed with signals: the service has no endpoint for any of this.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson
import pytest
from helpers import named_crizotinib_then_worse
from rulebook_copies import copy_rulebook, edit, set_parameters
from service_support import (
    EXAMPLE_PATIENT,
    example_resources,
    hook_request,
    prefetch_for,
    process_alive,
    running_service,
    worker_pids,
    worker_pids_below,
)

VIEW = "/cds-services/imt-patient-view"


@pytest.fixture(scope="module")
def service():
    # Depth 1 (no job queued behind a running one): the frozen worker of these tests then holds exactly one request.
    # The default depth (2) is tested below, over HTTP with one worker and on the pool itself.
    with running_service("--allow-unauthenticated", "--workers", "2", "--request-timeout", "8",
                         "--worker-depth", "1") as running:
        yield running


def call(service):
    request = hook_request("patient-view", prefetch=prefetch_for(example_resources()))
    return httpx.post(service.url + VIEW, json=request, timeout=60)


def wait_for_workers(service, count: int, timeout: float = 30.0, gone: int | None = None) -> list[int]:
    """The worker pids once there are ``count`` of them, each one in service (a replacement shows in /proc before it
    has built its engine; the server's /healthz counts only those that have), and ``gone``, a killed worker, no
    longer among them (a process killed a moment ago may not have ended yet)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = worker_pids(service)
        if (len(pids) == count and gone not in pids
                and httpx.get(service.url + "/healthz", timeout=10).json()["workers"] == count):
            return pids
        if time.monotonic() > deadline:
            return pids
        time.sleep(0.1)


def one_request_held_by(frozen: int, other: int, service, pool: ThreadPoolExecutor) -> list:
    """Two requests (futures), one of them held by the ``frozen`` worker (stopped by the caller). Of idle workers the
    pool gives a job to the one used last, so with ``frozen`` stopped alone, ``other`` could serve request after
    request and ``frozen`` never get one; so ``other`` is stopped too while the two arrive, each is handed one (at
    depth 1 neither holds more), and then ``other`` goes on."""
    os.kill(other, signal.SIGSTOP)
    try:
        futures = [pool.submit(call, service) for _ in range(2)]
        time.sleep(2.0)  # both handed over: the server takes about a millisecond for each
    finally:
        os.kill(other, signal.SIGCONT)
    return futures


def test_each_worker_is_a_separate_named_process_of_the_server(service):
    pids = wait_for_workers(service, 2)
    assert len(pids) == 2 and service.process.pid not in pids
    assert call(service).status_code == 200


def test_a_worker_killed_while_serving_fails_only_its_request_and_is_replaced(service):
    crashes = httpx.get(service.url + "/healthz").json()["worker_crashes"]
    first, second = wait_for_workers(service, 2)
    os.kill(first, signal.SIGSTOP)  # freeze one worker: the request it is given waits there
    try:
        with ThreadPoolExecutor(4) as pool:
            futures = one_request_held_by(first, second, service, pool) + [pool.submit(call, service)
                                                                            for _ in range(2)]
            deadline = time.monotonic() + 20
            while sum(f.done() for f in futures) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            served = [f.result() for f in futures if f.done()]
            assert len(served) == 3 and all(r.status_code == 200 for r in served)  # the other worker served them
            (stuck,) = [f for f in futures if not f.done()]  # the one given to the frozen worker
            os.kill(first, signal.SIGKILL)  # a native crash of the worker serving it
            failed = stuck.result(timeout=20)
    finally:
        try:
            os.kill(first, signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert failed.status_code == 500
    error = failed.json()["error"]
    assert error["code"] == "cds_worker_crashed" and "has been replaced" in error["message"]
    assert "details" not in error  # a 5xx body says a code and a fixed message; the exit code is in the log
    assert f"exit code {-signal.SIGKILL}" in service.log_text()
    replaced = wait_for_workers(service, 2, gone=first)
    assert len(replaced) == 2 and first not in replaced and second in replaced
    for _ in range(4):  # and the service goes on
        assert call(service).status_code == 200
    health = httpx.get(service.url + "/healthz").json()
    assert health == {**health, "status": "ok", "workers": 2}
    assert health["worker_crashes"] == crashes + 1  # the one lost serving a request (not the ones replaced idle)


def test_a_worker_that_dies_while_idle_is_replaced_before_it_is_given_work(service):
    victim = wait_for_workers(service, 2)[0]
    os.kill(victim, signal.SIGKILL)
    results = [call(service) for _ in range(4)]
    assert all(r.status_code == 200 for r in results)
    pids = wait_for_workers(service, 2, gone=victim)
    assert victim not in pids and len(pids) == 2
    said = f"evaluation worker {victim} died while idle (exit code {-signal.SIGKILL})"
    assert service.log_text().count(said) == 1  # said once, whichever of its pipe's end and the backstop saw it


def test_an_evaluation_that_takes_too_long_is_stopped_and_its_worker_replaced(service):
    frozen, other = wait_for_workers(service, 2)
    os.kill(frozen, signal.SIGSTOP)  # a worker that never answers (the timeout is 8 s here)
    try:
        with ThreadPoolExecutor(2) as pool:
            results = [future.result() for future in one_request_held_by(frozen, other, service, pool)]
    finally:
        try:
            os.kill(frozen, signal.SIGCONT)
        except ProcessLookupError:
            pass
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200, 503], [r.text for r in results]
    timed_out = next(r for r in results if r.status_code == 503)
    assert timed_out.json()["error"]["code"] == "cds_worker_timeout"
    pids = wait_for_workers(service, 2, gone=frozen)
    assert frozen not in pids and len(pids) == 2
    assert call(service).status_code == 200


def test_at_the_default_depth_a_request_queued_behind_a_killed_worker_is_served_by_its_replacement():
    with running_service("--allow-unauthenticated", "--workers", "1") as service:
        (victim,) = wait_for_workers(service, 1)
        os.kill(victim, signal.SIGSTOP)
        try:
            with ThreadPoolExecutor(2) as pool:
                running = pool.submit(call, service)  # sent to the worker: the request it runs
                time.sleep(0.5)
                queued = pool.submit(call, service)  # queued behind it, unread in its pipe
                time.sleep(0.5)
                assert not running.done() and not queued.done()
                os.kill(victim, signal.SIGKILL)
                failed, served = running.result(timeout=30), queued.result(timeout=30)
        finally:
            try:
                os.kill(victim, signal.SIGCONT)
            except ProcessLookupError:
                pass
        assert failed.status_code == 500 and failed.json()["error"]["code"] == "cds_worker_crashed"
        assert served.status_code == 200 and served.json()["cards"]
        assert httpx.get(service.url + "/healthz").json()["worker_crashes"] == 1
        assert victim not in wait_for_workers(service, 1, gone=victim)


# --- what a worker does with one job (in this process, without a server) ------------------------------------------


def test_a_worker_prepares_every_evaluations_record_and_answers_with_its_id(tmp_path):
    # The worker sends each evaluation's record with its answer (the server, which archived the rulebook as it
    # started, appends it: recorder.py); a memo-cache hit is an evaluation like any other: a record of its own. The
    # worker itself never opens the store, so it starts while the database is away.
    from datetime import date

    from imt_cds.audit import open_store
    from imt_cds.audit.record import RECORD_SCHEMA
    from imt_cds.service.workers import WorkerSettings, _Handler

    audit = str(tmp_path / "audit.db")
    handler = _Handler(WorkerSettings(cache_size=16, audit=audit, audit_input=False))
    assert not Path(audit).exists()
    job = {"op": "assess", "resources": example_resources(), "on": date(2026, 11, 21).isoformat(),
           "patient_id": EXAMPLE_PATIENT}
    first, again = handler.handle(job), handler.handle(job)
    assert handler.engine.cache_stats().hits == 1
    for answer in (first, again):
        assert answer["record"]["id"] == answer["evaluation_id"]
        assert answer["record"]["schema"] == RECORD_SCHEMA
        assert answer["record"]["input_json"] is None  # as configured: only the input's sha256
        assert orjson.loads(answer["record"]["assessment_json"]) == orjson.loads(orjson.dumps(answer["assessment"]))
    assert first["evaluation_id"] != again["evaluation_id"]
    assert not Path(audit).exists()  # nothing appended (nor archived) by the worker itself
    with open_store(audit) as store:
        store.archive(handler.engine.rulebook)
        assert store.append_contents([first["record"], again["record"]]) == [first["evaluation_id"],
                                                                            again["evaluation_id"]]
        assert store.verify().ok
    assert set(first["fhir"]) == {"sources", "problems", "eligibility", "patient"}  # no facts for an assessment
    facts = handler.handle({**job, "op": "facts"})
    assert facts["fhir"]["facts"]["patient_id"] == "imt-example-1" and facts["assessment"] is None
    assert "record" not in facts  # nothing evaluated, nothing to record
    cards = handler.handle({**job, "op": "cards", "hook_instance": "h-1"})
    assert cards["record"]["id"] == cards["evaluation_id"]
    assert cards["evaluation_id"].encode() in cards["raw"]  # the cards quote the record id
    unaudited = _Handler(WorkerSettings(cache_size=0)).handle(job)
    assert "record" not in unaudited
    assert str(uuid.UUID(unaudited["evaluation_id"])) == unaudited["evaluation_id"]


def test_a_worker_knows_medications_by_the_names_of_its_own_rulebooks_drug_table(tmp_path):
    # A chart's medication named only in text (Xalkori, crizotinib's brand) is an ALK inhibitor by the drug table of
    # the rulebook the worker evaluates with, not the shipped one's.
    from imt_cds.service.workers import WorkerSettings, _Handler

    job = {"op": "facts", "resources": [*example_resources(), *named_crizotinib_then_worse(f"Patient/{EXAMPLE_PATIENT}",
                                                                                          "Xalkori")],
           "on": "2026-11-21", "patient_id": EXAMPLE_PATIENT}
    rules = copy_rulebook(tmp_path)
    edit(rules, "drugs.yaml", "brands: [Xalkori]", "brands: []")
    for settings, progressed in ((WorkerSettings(cache_size=0), True),
                                 (WorkerSettings(cache_size=0, rules=str(rules)), False)):
        answer = _Handler(settings).handle(job)
        assert answer["fhir"]["facts"]["history"]["progressed_on_alk_inhibitor"] is progressed


# --- the pool itself: jobs queued behind a running one (in this process; the worker processes are real) ----------

FACTS_JOB = {"op": "facts", "resources": example_resources(), "on": "2026-11-21", "patient_id": "imt-example-1"}


def in_pool(scenario, *, depth: int, timeout: float = 30.0, size: int = 1):
    """Run ``scenario(pool)`` on a started pool of ``size`` real worker processes, closing the pool after."""
    from imt_cds.service.workers import WorkerPool, WorkerSettings

    async def run():
        pool = WorkerPool(WorkerSettings(cache_size=0), size, timeout=timeout, depth=depth)
        await pool.start()
        try:
            return await asyncio.wait_for(scenario(pool), 60)  # a job never answered fails the test, never hangs it
        finally:
            await pool.close()

    return asyncio.run(run())


def test_with_an_audit_store_an_answer_comes_back_only_once_its_record_is_committed(tmp_path):
    # Real workers and a real SQLite store whose write lock another process holds: the worker has answered, but the
    # pool gives nothing back until the record is committed, and gives up (503, no cards) after its timeout even
    # though the store would wait longer for its lock.
    from audit_support import hold_sqlite_write_lock

    from imt_cds.audit import open_store
    from imt_cds.service.workers import AuditUnavailableError, WorkerPool, WorkerSettings

    path = tmp_path / "audit.db"
    job = {"op": "assess", "resources": example_resources(), "on": "2026-11-21", "patient_id": EXAMPLE_PATIENT}

    async def run():
        pool = WorkerPool(WorkerSettings(cache_size=0, audit=str(path), store_timeout=20.0), 1, timeout=2.0)
        await pool.start()
        try:
            holder = hold_sqlite_write_lock(path)
            try:
                started = time.monotonic()
                with pytest.raises(AuditUnavailableError) as refused:
                    await asyncio.wait_for(pool.run(job), 30)
                waited = time.monotonic() - started
            finally:
                holder.stdin.close()
                holder.wait()
            answer = await asyncio.wait_for(pool.run(job), 30)
            with open_store(path) as store:  # read at once: committed before the answer came back
                ids = [r.id for r in store.records()]
            return refused.value, waited, answer, ids
        finally:
            await pool.close()

    refused, waited, answer, ids = asyncio.run(run())
    assert refused.message == ("the evaluation was not recorded: the audit store did not commit the record within "
                               "2 s") and 1.5 < waited < 10
    assert "record" not in answer  # the record is the server's business: it does not go back to the caller
    # The first record may have been committed once the lock was released (the store still had it); the answer's
    # record is there in any case, and last.
    assert ids[-1] == answer["evaluation_id"] and len(ids) in (1, 2)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_a_worker_holds_depth_jobs_and_when_it_dies_only_the_one_it_ran_fails(depth):
    from imt_cds.service.errors import WorkerCrashedError

    async def scenario(pool):
        (pid,) = pool.load()["pids"]
        os.kill(pid, signal.SIGSTOP)  # it reads nothing now: every job sent stays in its pipe
        runs = [asyncio.create_task(pool.run(FACTS_JOB)) for _ in range(4)]
        await asyncio.sleep(0.5)
        load = pool.load()
        (held,), waiting = load["in_workers"], load["waiting"]
        os.kill(pid, signal.SIGKILL)
        results = await asyncio.gather(*runs, return_exceptions=True)
        return pid, held, waiting, results, pool.crashes, pool.load()["pids"]

    victim, held, waiting, results, crashes, now = in_pool(scenario, depth=depth)
    assert (held, waiting) == (depth, 4 - depth)  # its pipe holds depth jobs; the others wait in the server
    assert isinstance(results[0], WorkerCrashedError)  # the job it was given first: the one it ran
    for answer in results[1:]:  # never read by the dead worker: served by its replacement
        assert not isinstance(answer, BaseException), answer
        assert answer["fhir"]["facts"]["patient_id"] == "imt-example-1"
    assert crashes == 1 and len(now) == 1 and victim not in now


def test_a_job_queued_behind_one_that_times_out_is_served_by_the_replacement():
    from imt_cds.service.errors import WorkerTimeoutError

    async def scenario(pool):
        (pid,) = pool.load()["pids"]
        os.kill(pid, signal.SIGSTOP)  # never answers: the watchdog kills it after the timeout
        runs = [asyncio.create_task(pool.run(FACTS_JOB)) for _ in range(2)]
        return await asyncio.gather(*runs, return_exceptions=True), pool.crashes

    (first, second), crashes = in_pool(scenario, depth=2, timeout=2.0)
    assert isinstance(first, WorkerTimeoutError)
    assert first.message == "the evaluation took longer than 2 s; its process was replaced"
    assert not isinstance(second, BaseException) and second["fhir"]["facts"]["patient_id"] == "imt-example-1"
    assert crashes == 0  # a timeout is not a crash


def test_the_job_behind_an_answered_one_is_watched_from_when_it_starts():
    # A worker holds two jobs; it answers the first, then hangs on the second (stopped while reading a chart that
    # takes it about half a second): the watchdog, armed again for that job when the first was answered, stops the
    # worker after the timeout instead of leaving the request waiting forever.
    from imt_cds.service.errors import WorkerTimeoutError

    size = next(r for r in example_resources() if r["id"] == "imt-size")
    slow_job = {**FACTS_JOB, "resources": [*FACTS_JOB["resources"],
                                           *({**size, "id": f"size-{n}"} for n in range(20_000))]}

    async def scenario(pool):
        (pid,) = pool.load()["pids"]
        first = asyncio.create_task(pool.run(FACTS_JOB))
        await asyncio.sleep(0)  # handed over first
        second = asyncio.create_task(pool.run(slow_job))
        answer = await first
        os.kill(pid, signal.SIGSTOP)  # busy with the second job: it will never answer it
        started = time.monotonic()
        (failed,) = await asyncio.gather(second, return_exceptions=True)
        return answer, failed, time.monotonic() - started

    answer, failed, waited = in_pool(scenario, depth=2, timeout=2.0)
    assert answer["fhir"]["facts"]["patient_id"] == "imt-example-1"
    assert isinstance(failed, WorkerTimeoutError) and "longer than 2 s" in str(failed), failed
    assert waited < 10


def test_a_job_that_raises_in_the_worker_fails_alone_naming_what_raised_and_the_worker_goes_on():
    from imt_cds.service.errors import EvaluationFailedError

    async def scenario(pool):
        (pid,) = pool.load()["pids"]
        failed = await asyncio.gather(pool.run({**FACTS_JOB, "on": "21/11/2026"}), return_exceptions=True)
        return pid, failed[0], await pool.run(FACTS_JOB), pool.crashes, pool.load()["pids"]

    pid, failed, answer, crashes, now = in_pool(scenario, depth=1)
    assert isinstance(failed, EvaluationFailedError)
    assert failed.message == "the evaluation failed: ValueError: Invalid isoformat string: '21/11/2026'"
    assert failed.details == {"code": "ValueError"}
    assert answer["fhir"]["facts"]["patient_id"] == "imt-example-1"
    assert (crashes, now) == (0, [pid])  # the same worker: one job's failure is that job's answer


def test_a_pool_not_started_or_closed_runs_nothing_and_says_so():
    from imt_cds.service.errors import WorkerTimeoutError
    from imt_cds.service.workers import WorkerPool, WorkerSettings

    async def refused(pool):
        with pytest.raises(WorkerTimeoutError) as info:
            await asyncio.wait_for(pool.run(FACTS_JOB), 10)
        return info.value.message

    async def scenario():
        pool = WorkerPool(WorkerSettings(cache_size=0), 1, timeout=30.0)
        before = await refused(pool)
        await pool.start()
        await pool.close()
        return before, await refused(pool)

    assert asyncio.run(scenario()) == ("the evaluation workers are not running",) * 2


def test_a_job_no_worker_becomes_free_for_fails_after_the_timeout(tmp_path, caplog):
    # One worker, stopped while it holds a job: the watchdog kills it after the timeout, and its replacement is
    # refused (the rulebook files changed meanwhile), so the job waiting behind it never gets a worker. It fails
    # after the timeout too, instead of waiting for as long as the pool lives.
    from imt_cds.service.errors import WorkerTimeoutError
    from imt_cds.service.workers import WorkerPool, WorkerSettings

    directory = copy_rulebook(tmp_path)
    said = "cannot replace an evaluation worker (retrying in 0.5 s): an evaluation worker loaded rulebook"

    async def scenario():
        pool = WorkerPool(WorkerSettings(rules=str(directory), cache_size=0), 1, timeout=2.0, depth=1)
        await pool.start()
        try:
            (pid,) = pool.load()["pids"]
            os.kill(pid, signal.SIGSTOP)
            running = asyncio.create_task(pool.run(FACTS_JOB))
            await asyncio.sleep(0.2)
            set_parameters(directory, {"size_risk_threshold_cm": 20})
            waiting = asyncio.create_task(pool.run(FACTS_JOB))
            failed = await asyncio.wait_for(asyncio.gather(running, waiting, return_exceptions=True), 60)
            failed_after = time.monotonic() - started
            # The replacement is refused once the new worker has loaded the changed rulebook, which on a loaded
            # machine can be after both jobs failed: wait for it to be said (the pool retries every 0.5 s).
            deadline = time.monotonic() + 30
            while said not in caplog.text and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            return (*failed, failed_after)
        finally:
            await pool.close()

    started = time.monotonic()
    running, waiting, failed_after = asyncio.run(scenario())
    assert isinstance(running, WorkerTimeoutError) and "longer than 2 s" in running.message
    assert isinstance(waiting, WorkerTimeoutError)
    assert waiting.message == "no evaluation worker became free within 2 s"
    assert failed_after < 30
    assert said in caplog.text


def test_an_answered_job_leaves_no_watchdog_behind_and_each_crash_is_counted_and_said():
    # A worker that answered in time is never killed by its jobs' watchdogs, however long it then stays idle; each
    # worker lost serving a job fails that job with the exit code, and is counted.
    from imt_cds.service.errors import WorkerCrashedError

    async def scenario(pool):
        (pid,) = pool.load()["pids"]
        for _ in range(2):
            await pool.run(FACTS_JOB)
        await asyncio.sleep(2.5)  # past the 1 s timeout of both jobs
        idle = pool.load()["pids"]
        crashed = []
        for _ in range(2):
            (victim,) = pool.load()["pids"]
            os.kill(victim, signal.SIGSTOP)
            run = asyncio.create_task(pool.run(FACTS_JOB))
            await asyncio.sleep(0.2)
            os.kill(victim, signal.SIGKILL)
            crashed.append((await asyncio.gather(run, return_exceptions=True))[0])
            while len(pool.load()["pids"]) < 1 or pool.load()["pids"] == [victim]:
                await asyncio.sleep(0.05)
        return pid, idle, crashed, pool.crashes

    pid, idle, crashed, crashes = in_pool(scenario, depth=1, timeout=1.0)
    assert idle == [pid]
    for error in crashed:
        assert isinstance(error, WorkerCrashedError)
        assert error.message == ("the evaluation process died while serving this request; it has been replaced and "
                                 "the service goes on: retry the request")
        assert error.details == {"exit_code": -signal.SIGKILL}
    assert crashes == 2


def test_a_job_whose_request_went_away_before_a_worker_took_it_is_never_sent():
    async def scenario(pool):
        (pid,) = pool.load()["pids"]
        os.kill(pid, signal.SIGSTOP)
        first = asyncio.create_task(pool.run(FACTS_JOB))
        gone = asyncio.create_task(pool.run(FACTS_JOB))
        await asyncio.sleep(0.2)
        gone.cancel()  # the client disconnected while its job waited in the server
        os.kill(pid, signal.SIGCONT)
        answer = await first  # the worker answered: had the gone job been kept, it would be in its pipe now
        load = pool.load()
        return answer, load["in_workers"][0], load["waiting"], gone.cancelled()

    answer, in_pipe, waiting, cancelled = in_pool(scenario, depth=1)
    assert answer["fhir"]["facts"]["patient_id"] == "imt-example-1"
    assert (in_pipe, waiting, cancelled) == (0, 0, True)


def test_while_every_worker_is_busy_the_next_job_queues_behind_the_freshest_job_not_a_stuck_one():
    async def scenario(pool):
        stuck, _ = pool.load()["pids"]
        os.kill(stuck, signal.SIGSTOP)  # both are idle and new: the first job goes to the first worker
        try:
            runs = [asyncio.create_task(pool.run(FACTS_JOB)) for _ in range(3)]
            await asyncio.sleep(0)  # each task hands its job over before any answer can be read
            loads = pool.load()["in_workers"]
        finally:
            os.kill(stuck, signal.SIGCONT)
        answers = await asyncio.gather(*runs)
        return loads, answers

    loads, answers = in_pool(scenario, depth=2, size=2)
    assert loads == [1, 2]  # the third job waits behind the second (started last), not behind the stuck first
    assert all(a["fhir"]["facts"]["patient_id"] == "imt-example-1" for a in answers)


def test_a_killed_worker_reports_its_signal_however_many_threads_ask_at_once():
    # The pool asks a dead worker's exit code from two threads (the report of the crash, and the replacement that
    # stops it). Unguarded, multiprocessing's fork-server Popen lets the second reader find the status pipe at its
    # end and record 255 (it did, one run in three): the log then blamed the wrong cause.
    import multiprocessing

    from imt_cds.service.workers import _Worker

    context = multiprocessing.get_context("forkserver")
    for _ in range(20):
        ours, theirs = context.Pipe()
        process = context.Process(target=time.sleep, args=(60,), daemon=True)
        process.start()
        worker = _Worker(process, ours)
        assert worker.alive()
        with ThreadPoolExecutor(3) as threads:
            codes = [threads.submit(worker.exit_code) for _ in range(2)]
            stopped = threads.submit(worker.stop, 1.0)
            time.sleep(0.05)  # all three are waiting on the process when it dies
            os.kill(process.pid, signal.SIGKILL)
            assert [code.result() for code in codes] == [-signal.SIGKILL] * 2
            stopped.result()
        assert process.exitcode == -signal.SIGKILL and not worker.alive()
        theirs.close()


def test_a_lone_client_is_served_by_the_worker_used_last_whose_caches_are_warm():
    async def scenario(pool):
        used = []
        for _ in range(4):  # one job at a time, as from one client: both workers idle each time
            before = [worker.started for worker in pool._workers]
            answer = await pool.run(FACTS_JOB)
            assert answer["fhir"]["facts"]["patient_id"] == "imt-example-1"
            used.append([i for i, worker in enumerate(pool._workers) if worker.started != before[i]])
        return used

    assert in_pool(scenario, depth=2, size=2) == [[0]] * 4  # taking turns would give [[0], [1], [0], [1]]


# --- a patient-view call handed to a worker as its body (HookRunner.answer) ---------------------------------------


def test_a_job_carries_a_request_body_as_it_is_whatever_bytes_it_holds():
    from imt_cds.service.workers import decode_job, encode_job

    job = {"op": "hook", "service": "imt-patient-view", "on": "2026-11-21"}
    for body in (b'{"hook": "patient-view"}', b"", b"\0\0{not json\0", "é".encode("utf-16")):
        assert decode_job(encode_job(job, body)) == (job, body)
    assert decode_job(encode_job(job)) == (job, None)


def test_a_worker_answers_a_call_given_as_its_body_as_the_server_would_with_its_resources():
    from imt_cds.service.calls import find_service, patient_view_options, read_job
    from imt_cds.service.workers import WorkerSettings, _Handler

    handler = _Handler(WorkerSettings(cache_size=0, public_url="http://127.0.0.1"))
    service = find_service("imt-patient-view")
    request = hook_request("patient-view", prefetch=prefetch_for(example_resources()))
    job = {"op": "hook", "service": service.id, "on": "2026-11-21", "guidance_endpoint": "http://127.0.0.1/x"}
    given_body = handler.handle(job, orjson.dumps(request))
    # What the server sends when it has read the call itself (a key fetched from fhirServer): the resources.
    resources = [resource for key in ("patient", "conditions", "observations", "procedures")
                 for resource in [request["prefetch"][key]]]
    given_resources = handler.handle(read_job(request, resources, "cards", "2026-11-21",
                                              patient_view_options(request, "http://127.0.0.1/x")))
    same_uuids = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
    assert set(given_body) == {"ok", "evaluation_id", "index", "raw"}
    assert same_uuids.sub(b"U", given_body["raw"]) == same_uuids.sub(b"U", given_resources["raw"])
    assert [code for _, code in given_body["index"]] == [code for _, code in given_resources["index"]]
    assert orjson.loads(given_body["raw"])["cards"]  # the example chart has findings

    del request["prefetch"]["procedures"]  # a key to fetch: handed back to the server, nothing evaluated
    assert handler.handle(job, orjson.dumps(request)) == {"ok": True, "fetch": True}
    request["prefetch"]["procedures"] = {"resourceType": "Patient", "id": "someone-else"}
    assert handler.handle(job, orjson.dumps(request)) == {"ok": True, "rejected": {
        "message": "the prefetched Patient/someone-else is not the patient in context (imt-example-1): nothing is "
                   "evaluated on another patient's record", "details": None}}
    refused = handler.handle(job, b'{"hook": "patient-view", "hook": "order-sign"}')["rejected"]
    assert refused["message"] == "the request body has the key 'hook' twice in one JSON object"


def test_health_shows_the_jobs_in_the_workers_hands_and_those_waiting_for_one(service):
    """What a monitor or a proxy can read to see a replica saturated: with both workers stopped (depth 1), of four
    calls two are in the workers' hands and two wait in the server; once the workers go on, all four are answered
    and nothing is held any more."""
    def jobs() -> dict:
        return httpx.get(service.url + "/healthz", timeout=10).json()["jobs"]

    pids = wait_for_workers(service, 2)
    assert jobs() == {"in_workers": 0, "waiting": 0}
    seen = None
    with ThreadPoolExecutor(4) as pool:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            futures = [pool.submit(call, service) for _ in range(4)]
            deadline = time.monotonic() + 5  # (the calls time out after 8 s: the workers are let go well before)
            while time.monotonic() < deadline and seen != {"in_workers": 2, "waiting": 2}:
                seen = jobs()
                time.sleep(0.05)
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        statuses = [future.result().status_code for future in futures]
    assert seen == {"in_workers": 2, "waiting": 2}
    assert statuses == [200] * 4
    assert jobs() == {"in_workers": 0, "waiting": 0}


def test_a_worker_that_would_load_rulebook_files_changed_since_the_start_is_refused(tmp_path):
    # One service never answers from two rulebooks. The server archives the rulebook it starts with; a worker
    # started later (a replacement) whose files were edited meanwhile is refused and retried, while the others keep
    # answering from the rulebook every record names; once the files are restored, a replacement starts.
    from imt_cds import load_rulebook
    from imt_cds.audit import open_store

    directory = copy_rulebook(tmp_path / "rules")
    started_with = load_rulebook(directory).sha256
    audit = tmp_path / "audit.db"
    parameters = directory / "parameters.yaml"
    body = hook_request("patient-view", prefetch=prefetch_for(example_resources()))
    with running_service("--allow-unauthenticated", "--rules", str(directory), "--workers", "2",
                         "--audit", str(audit)) as service:
        assert httpx.post(service.url + "/cds-services/imt-patient-view", json=body, timeout=60).status_code == 200
        original = parameters.read_bytes()
        set_parameters(directory, {"size_risk_threshold_cm": 20})
        changed = load_rulebook(directory).sha256
        survivor, victim = worker_pids(service)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while "the rulebook files changed since the service started" not in service.log_text():
            assert time.monotonic() < deadline, service.log_text()
            time.sleep(0.2)
        assert (f"imt-cds: cannot replace an evaluation worker (retrying in 0.5 s): an evaluation worker loaded "
                f"rulebook {changed[:12]}, not the service's {started_with[:12]}: the rulebook files changed since "
                "the service started; restore them, or restart the service to use the changed rulebook\n"
                in service.log_text()), service.log_text()
        assert httpx.get(service.url + "/healthz", timeout=10).json()["workers"] == 1  # the survivor alone
        for _ in range(3):
            assert httpx.post(service.url + "/cds-services/imt-patient-view", json=body,
                              timeout=60).status_code == 200
        while "(retrying in 1 s)" not in service.log_text():  # the pause doubles: 0.5 s, then 1 s, ... (30 s at most)
            assert time.monotonic() < deadline, service.log_text()
            time.sleep(0.2)
        parameters.write_bytes(original)
        pids = wait_for_workers(service, 2, timeout=60, gone=victim)
        assert len(pids) == 2 and survivor in pids, service.log_text()
        assert httpx.post(service.url + "/cds-services/imt-patient-view", json=body, timeout=60).status_code == 200
    with open_store(audit) as store:
        records = store.records()
        assert len(records) == 5 and {r.rulebook["sha256"] for r in records} == {started_with}
        assert store.verify().ok


def test_a_pool_whose_rulebook_does_not_load_says_so_and_starts_no_worker(tmp_path):
    from imt_cds.service.errors import ServiceConfigError
    from imt_cds.service.workers import WorkerPool, WorkerSettings

    directory = copy_rulebook(tmp_path / "rules")
    (directory / "rulebook.yaml").unlink()
    pool = WorkerPool(WorkerSettings(rules=str(directory), cache_size=0), 2)
    with pytest.raises(ServiceConfigError) as refused:
        asyncio.run(pool.start())
    assert str(refused.value) == ("the rulebook does not load: invalid rulebook (1 problem):\n  - rulebook.yaml: "
                                  "missing: the rulebook needs a manifest with its name and version")
    assert pool.live_workers == 0 and pool.load()["pids"] == []


def test_a_worker_that_does_not_start_in_time_is_killed_and_the_start_refused(tmp_path, monkeypatch):
    # A worker's start is bounded (a rulebook on a stalled network mount must not hang the service's start, or a
    # replacement, for ever). Here the worker blocks for real: one of its rule files is a FIFO nobody writes to,
    # which the service's process never reads (it is given the rulebook loaded before the FIFO was made).
    from imt_cds import load_rulebook
    from imt_cds.service import workers
    from imt_cds.service.errors import ServiceConfigError

    assert 0 < workers.START_TIMEOUT < float("inf")  # (time for a slow machine to compile the rulebook)
    directory = copy_rulebook(tmp_path / "rules")
    rulebook = load_rulebook(directory)
    os.mkfifo(directory / "zz-never-written.yaml")
    monkeypatch.setattr(workers, "START_TIMEOUT", 2.0)
    before = set(worker_pids_below(os.getpid()))
    pool = workers.WorkerPool(workers.WorkerSettings(rules=str(directory), cache_size=0), 1, rulebook=rulebook)
    started = time.monotonic()
    with pytest.raises(ServiceConfigError) as refused:
        asyncio.run(pool.start())
    assert str(refused.value) == "an evaluation worker did not start within 2 s"
    assert time.monotonic() - started < 30
    assert pool.live_workers == 0
    deadline = time.monotonic() + 10  # the killed worker ends (the fork server reaps it)
    while set(worker_pids_below(os.getpid())) - before:
        assert time.monotonic() < deadline, "the worker that did not start was left running"
        time.sleep(0.1)


@pytest.mark.parametrize("size", [1, 2])
def test_a_job_no_worker_can_be_handed_fails_after_size_plus_three_tries(monkeypatch, caplog, size):
    # Fault injection: every worker's pipe is broken when a job is handed to it (what a worker that died a moment
    # before looks like: the write fails). Each try retires that worker and starts a real replacement, which is tried
    # in its turn; after size + 3 tries the job fails (503) instead of going round the replacements for as long as
    # its timeout, and no worker ever got it.
    from imt_cds.service.errors import WorkerTimeoutError
    from imt_cds.service.workers import _Worker

    tried: list[int] = []

    def broken_pipe(worker, job):
        tried.append(worker.pid)
        return False

    async def scenario(pool):
        monkeypatch.setattr(_Worker, "send", broken_pipe)
        started = time.monotonic()
        with pytest.raises(WorkerTimeoutError) as refused:
            await pool.run(FACTS_JOB)
        return refused.value, time.monotonic() - started

    with caplog.at_level(logging.WARNING, logger="imt_cds.service"):
        refused, took = in_pool(scenario, depth=1, size=size, timeout=45.0)
    assert refused.message == "no live evaluation worker could take the request"
    # Each was retired before the pool stopped it: the end of its pipe that follows is no death to report.
    assert not [r.getMessage() for r in caplog.records if "died" in r.getMessage()]
    assert len(tried) == size + 3 and len(set(tried)) == size + 3  # each try a different worker: a replacement
    assert took < 40  # the bound, not the 45 s timeout, ended it


def test_a_worker_dead_while_idle_whose_pipe_end_goes_unseen_is_replaced_by_the_backstop(caplog):
    # Fault injection: the task reading the worker's pipe is stopped, so the end of the pipe, which normally tells
    # the pool at once, is never seen. The pool's watch (every 0.5 s) still finds the worker dead while idle,
    # replaces it and says so; the next job is served by the replacement.
    async def scenario(pool):
        (victim,) = pool.load()["pids"]
        (worker,) = pool._workers
        worker.listener.cancel()
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while pool.load()["pids"] in ([victim], []) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return victim, pool.load()["pids"], await pool.run(FACTS_JOB)

    with caplog.at_level(logging.WARNING, logger="imt_cds.service"):
        victim, now, answer = in_pool(scenario, depth=1)
    assert len(now) == 1 and victim not in now
    assert answer["fhir"]["facts"]["patient_id"] == "imt-example-1"
    said = [r.getMessage() for r in caplog.records if "died while idle" in r.getMessage()]
    assert said == [f"imt-cds: evaluation worker {victim} died while idle (exit code {-signal.SIGKILL})"]


def test_a_worker_killed_while_idle_is_seen_by_its_pipes_end_replaced_and_said_once(caplog):
    # The usual way the pool learns of an idle worker's death: the end of its pipe, at once (the watch above is the
    # backstop). Said once, whichever of the two saw it first.
    async def scenario(pool):
        (victim,) = pool.load()["pids"]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while pool.load()["pids"] in ([victim], []) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # a second report (the watch's, after the pipe's) would come within its 0.5 s
        return victim, pool.load()["pids"], pool.crashes

    with caplog.at_level(logging.WARNING, logger="imt_cds.service"):
        victim, now, crashes = in_pool(scenario, depth=1)
    assert len(now) == 1 and victim not in now and crashes == 0  # no request was being served: not a crash
    said = [r.getMessage() for r in caplog.records if "died" in r.getMessage()]
    assert said == [f"imt-cds: evaluation worker {victim} died while idle (exit code {-signal.SIGKILL})"]


def test_a_job_handed_to_a_worker_dead_a_moment_before_goes_to_its_replacement():
    # The worker is killed and the event loop held (a blocking wait) until the process is gone, so the pool has not
    # yet read the end of its pipe when the job comes: writing the job fails (a broken pipe), which proves it never
    # reached the worker, so it is handed to the replacement instead of failing (no request is lost to a worker that
    # was already dead).
    async def scenario(pool):
        (victim,) = pool.load()["pids"]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while process_alive(victim) and time.monotonic() < deadline:
            time.sleep(0.01)  # (blocking on purpose: the loop must not see the pipe's end first)
        answer = await pool.run(FACTS_JOB)
        return victim, answer, pool.crashes, pool.load()["pids"]

    victim, answer, crashes, now = in_pool(scenario, depth=1)
    assert answer["fhir"]["facts"]["patient_id"] == "imt-example-1"
    assert crashes == 0 and len(now) == 1 and victim not in now


def test_a_worker_dead_but_not_yet_replaced_is_not_counted_live():
    # /healthz and /readyz count live workers: one that died a moment ago, before the pool has seen it (the event
    # loop held until the process is gone), is not among them.
    async def scenario(pool):
        (victim,) = pool.load()["pids"]
        before = pool.live_workers
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while process_alive(victim) and time.monotonic() < deadline:
            time.sleep(0.01)  # (blocking on purpose: neither the pipe's end nor the watch is seen meanwhile)
        return before, pool.live_workers

    assert in_pool(scenario, depth=1) == (1, 0)


def test_a_worker_that_dies_while_starting_refuses_the_start_with_its_exit_code(tmp_path):
    # The worker blocks at its start on a FIFO rule file (as above) and is killed there: the start is refused at
    # once, naming how the worker ended, instead of waiting out the start timeout.
    from imt_cds import load_rulebook
    from imt_cds.service import workers
    from imt_cds.service.errors import ServiceConfigError

    directory = copy_rulebook(tmp_path / "rules")
    rulebook = load_rulebook(directory)
    os.mkfifo(directory / "zz-never-written.yaml")
    before = set(worker_pids_below(os.getpid()))
    pool = workers.WorkerPool(workers.WorkerSettings(rules=str(directory), cache_size=0), 1, rulebook=rulebook)

    async def scenario():
        starting = asyncio.create_task(pool.start())
        deadline = time.monotonic() + 30
        while not (new := set(worker_pids_below(os.getpid())) - before):
            assert time.monotonic() < deadline, "no worker process started"
            await asyncio.sleep(0.05)
        (victim,) = new
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        with pytest.raises(ServiceConfigError) as refused:
            await starting
        return refused.value, time.monotonic() - killed

    refused, after = asyncio.run(scenario())
    assert str(refused) == f"an evaluation worker died while starting (exit code {-signal.SIGKILL})"
    assert after < 20  # not the start timeout (120 s)
    assert pool.live_workers == 0
