"""Crash containment: evaluations run in a supervised pool of worker processes, never in the server process.

The rules engine is native code (durable-rules, in C); a defect there can kill the process running it. So the
server process never imports the engine: each worker process builds its own ``Engine`` (with the memo cache) and
opens the audit store when one is configured, reads the FHIR resources into facts, evaluates and records. The
server sends one job at a time to an idle worker over a pipe and waits for the answer on its event loop (the pipe
is read as an asyncio stream: no thread hop per request; the timeout is an event-loop timer).

Supervision:
- a worker that dies while serving a job (SIGKILL, a segfault, the OOM killer) fails *that* request only, with
  ``WorkerCrashedError`` (a 500 with a JSON body); it is replaced at once, and every other request goes on;
- a job that takes longer than ``timeout`` gets its worker killed and replaced (``WorkerTimeoutError``, 503);
- a job is never sent to a second worker once the first received it (a request that crashes workers kills one,
  not the pool); a job that could not even be handed over (a worker found dead on sending) goes to another one;
- a worker that dies while idle is noticed by a watch task and replaced before anyone sends it a job.

Workers are started by a fork server (``multiprocessing`` "forkserver", with the engine and FHIR modules preloaded),
so a replacement starts in a fraction of a second and never inherits the server's threads. Each worker names itself
``imt-cds-worker`` (Linux ``comm``, shown by ``ps``) and ignores SIGINT: the server shuts the pool down itself.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
import signal
import socket
import struct
import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson

from .errors import (
    EvaluationFailedError,
    ServiceConfigError,
    ServiceUnavailableError,
    WorkerCrashedError,
    WorkerTimeoutError,
)
from .patient_view import patient_view_response

__all__ = ["AuditUnavailableError", "WorkerPool", "WorkerSettings", "decode_answer", "encode_answer"]

log = logging.getLogger("imt_cds.service")

# What a client reads when its evaluation could not be recorded (fixed text; the store's error goes to the log).
AUDIT_UNAVAILABLE_MESSAGE = ("the audit trail cannot record this evaluation now: no cards are returned without a "
                             "record; try again")
START_TIMEOUT = 120.0  # seconds for a new worker to load and compile the rulebook
WORKER_NAME = b"imt-cds-worker"
# multiprocessing.Connection's framing: a signed 4-byte big-endian length, or -1 and an 8-byte one past 2 GiB.
_SIZE = struct.Struct("!i")
_LARGE_SIZE = struct.Struct("!Q")
# The FHIR reader works on the JSON itself (no FHIR model library): nothing more to preload.
_PRELOAD = ["imt_cds.service.workers", "imt_cds.engine", "imt_cds.fhir", "imt_cds.audit"]


@dataclass(frozen=True)
class WorkerSettings:
    """What a worker needs to build its engine (sent to each worker process; must pickle)."""

    rules: str | None = None
    cache_size: int = 4096
    audit: str | None = None
    audit_input: bool = True
    store_timeout: float = 5.0  # seconds an audit append may wait for the store's write lock
    public_url: str = ""  # the service's base URL, for the links of the cards a worker renders
    not_eligible_card: bool = False  # one info card for a chart not evaluated (ServiceConfig's setting)


class AuditUnavailableError(ServiceUnavailableError):
    """The audit store could not record the evaluation (its write lock held past the store timeout, or a failing
    database): the cards are withheld, since none may be shown without a record (fail closed)."""

    code = "cds_audit_unavailable"


class _SendFailed(Exception):
    """The job never reached the worker."""


class _Died(Exception):
    """The worker died after receiving the job."""


class _TimedOut(Exception):
    """The worker was killed for taking too long."""


class _Worker:
    """The server's handle on one worker process."""

    def __init__(self, process: Any, connection: Any):
        self.process = process
        self.connection = connection
        self.retired = False
        self.busy = False
        self.expired = False  # killed by the watchdog
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    def alive(self) -> bool:
        return bool(self.process.is_alive())

    def exit_code(self, wait: float = 2.0) -> int | None:
        """How the process ended (negative: the signal that killed it), once it has (None if it has not)."""
        self.process.join(wait)
        return self.process.exitcode  # type: ignore[no-any-return]

    def kill(self) -> None:
        try:
            self.process.kill()
        except (OSError, ValueError):
            pass

    async def open_stream(self) -> None:
        """Talk to the worker through the event loop (no thread per job): a stream on a duplicate of the pipe's
        socket, framed as ``multiprocessing.Connection`` frames its messages (the worker uses a Connection)."""
        sock = socket.socket(fileno=os.dup(self.connection.fileno()))
        self.reader, self.writer = await asyncio.open_unix_connection(sock=sock)

    def close_stream(self) -> None:
        """Close the stream (in the event loop, before ``stop``: the worker sees end-of-file once both are shut)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    async def call(self, payload: bytes) -> bytes:
        """Send one job and wait for its answer. The pool's watchdog (``expire``, an event-loop timer) kills the
        worker after the timeout, which also ends a send blocked on a frozen worker."""
        assert self.reader is not None and self.writer is not None
        try:
            self.writer.write(_frame(payload))
            await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            raise (_TimedOut if self.expired else _SendFailed) from exc
        try:
            (size,) = _SIZE.unpack(await self.reader.readexactly(_SIZE.size))
            if size == -1:
                (size,) = _LARGE_SIZE.unpack(await self.reader.readexactly(_LARGE_SIZE.size))
            answer = await self.reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            raise (_TimedOut if self.expired else _Died) from exc
        if self.expired:
            raise _TimedOut
        return answer

    def expire(self) -> None:
        self.expired = True
        self.kill()

    def stop(self, wait: float = 5.0) -> None:
        try:
            self.connection.close()  # the worker reads end-of-file and exits
        except OSError:
            pass
        self.process.join(wait)
        if self.process.is_alive():
            self.kill()
            self.process.join(wait)


class WorkerPool:
    """``size`` supervised worker processes. ``await start()``, then ``await run(job)`` from any request."""

    def __init__(self, settings: WorkerSettings, size: int, *, timeout: float = 30.0):
        self.settings = settings
        self.size = size
        self.timeout = timeout
        self._context = multiprocessing.get_context("forkserver")
        self._workers: set[_Worker] = set()
        self._idle: asyncio.Queue[_Worker] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self.crashes = 0  # workers lost while serving a job (reported by /healthz)

    # -- life cycle -------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every worker and wait until each has built its engine (a broken rulebook fails here, at once)."""
        self._context.set_forkserver_preload(_PRELOAD)
        self._idle = asyncio.Queue()
        started = await asyncio.gather(*(asyncio.to_thread(self._spawn) for _ in range(self.size)),
                                       return_exceptions=True)
        failures = [s for s in started if isinstance(s, BaseException)]
        for worker in started:
            if isinstance(worker, _Worker):
                self._workers.add(worker)
                self._idle.put_nowait(worker)
        if failures:
            await self.close()
            raise failures[0]
        self._spawn_task(self._watch())

    async def close(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        workers, self._workers = list(self._workers), set()
        for worker in workers:
            worker.close_stream()
        await asyncio.gather(*(asyncio.to_thread(w.stop) for w in workers))

    @property
    def live_workers(self) -> int:
        return sum(1 for w in self._workers if not w.retired and w.alive())

    def _spawn(self) -> _Worker:
        parent, child = self._context.Pipe(duplex=True)
        process = self._context.Process(target=_worker_main, args=(child, self.settings), name="imt-cds-worker",
                                        daemon=True)
        process.start()
        child.close()
        worker = _Worker(process, parent)
        if not parent.poll(START_TIMEOUT):
            worker.kill()
            raise ServiceConfigError(f"an evaluation worker did not start within {START_TIMEOUT:.0f} s")
        try:
            message = orjson.loads(parent.recv_bytes())
        except (EOFError, OSError):
            worker.stop(1.0)
            raise ServiceConfigError(f"an evaluation worker died while starting (exit code "
                                     f"{process.exitcode})") from None
        if "error" in message:
            worker.stop(1.0)
            raise ServiceConfigError(f"an evaluation worker could not start: {message['error']}")
        return worker

    def _spawn_task(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _retire(self, worker: _Worker) -> None:
        """Take a worker out of service (killing it if need be) and start its replacement."""
        if worker.retired:
            return
        worker.retired = True
        self._workers.discard(worker)
        self._spawn_task(self._replace(worker))

    async def _replace(self, worker: _Worker) -> None:
        worker.close_stream()
        await asyncio.to_thread(worker.stop, 1.0)
        delay = 0.5
        while not self._closed:
            try:
                new = await asyncio.to_thread(self._spawn)
            except ServiceConfigError as exc:
                log.error("imt-cds: cannot replace an evaluation worker (retrying in %.0f s): %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            if self._closed:
                await asyncio.to_thread(new.stop, 1.0)
                return
            self._workers.add(new)
            if self._idle is not None:
                self._idle.put_nowait(new)
            log.warning("imt-cds: evaluation worker %d replaced by %d", worker.pid, new.pid)
            return

    async def _watch(self) -> None:
        """Replace workers that died while idle, so that no request is ever sent to a dead one."""
        while not self._closed:
            await asyncio.sleep(0.5)
            for worker in list(self._workers):
                if not worker.busy and not worker.alive():
                    log.warning("imt-cds: evaluation worker %d died while idle (exit code %s)", worker.pid,
                                worker.process.exitcode)
                    self._retire(worker)

    # -- running a job ----------------------------------------------------------------------------------------------

    async def run(self, job: dict[str, Any]) -> dict[str, Any]:
        """Run one job in a worker; the worker's answer, or a ``ServiceError`` (crash, timeout, failure)."""
        if self._idle is None or self._closed:
            raise WorkerTimeoutError("the evaluation workers are not running")
        payload = orjson.dumps(job)
        for _attempt in range(self.size + 2):
            try:
                worker = await asyncio.wait_for(self._idle.get(), self.timeout)
            except TimeoutError:
                raise WorkerTimeoutError(f"no evaluation worker became free within {self.timeout:.0f} s") from None
            if worker.retired or not worker.alive():
                self._retire(worker)
                continue
            worker.busy = True
            if worker.writer is None:
                await worker.open_stream()
            watchdog = asyncio.get_running_loop().call_later(self.timeout, worker.expire)
            call = asyncio.ensure_future(worker.call(payload))
            call.add_done_callback(lambda _done, timer=watchdog: timer.cancel())
            try:
                answer = await asyncio.shield(call)
            except asyncio.CancelledError:
                # The request went away; the worker finishes the job, then goes back to the pool (or is replaced).
                call.add_done_callback(lambda done, w=worker: self._after(w, done))
                raise
            except _SendFailed:
                worker.busy = False
                self._retire(worker)
                continue
            except _Died:
                self.crashes += 1
                code = await asyncio.to_thread(worker.exit_code)
                self._retire(worker)
                log.error("imt-cds: evaluation worker %d died serving a request (exit code %s); replacing it",
                          worker.pid, code)
                raise WorkerCrashedError(
                    "the evaluation process died while serving this request; it has been replaced and the "
                    "service goes on: retry the request", {"exit_code": code}) from None
            except _TimedOut:
                self._retire(worker)
                raise WorkerTimeoutError(f"the evaluation took longer than {self.timeout:.0f} s; its process was "
                                         "replaced") from None
            worker.busy = False
            self._idle.put_nowait(worker)
            result = decode_answer(answer)
            if not result.get("ok"):
                error = result.get("error") or {}
                if error.get("code") == AuditUnavailableError.code:
                    raise AuditUnavailableError(f"the evaluation was not recorded: {error.get('message')}",
                                                public_message=AUDIT_UNAVAILABLE_MESSAGE)
                raise EvaluationFailedError(f"the evaluation failed: {error.get('message', 'unknown error')}",
                                            {"code": error.get("code")})
            return result
        raise WorkerTimeoutError("no live evaluation worker could take the request")

    def _after(self, worker: _Worker, done: asyncio.Future[Any]) -> None:
        worker.busy = False
        if done.cancelled() or done.exception() is not None:
            self._retire(worker)
        elif self._idle is not None and not self._closed:
            self._idle.put_nowait(worker)


def encode_answer(answer: dict[str, Any]) -> bytes:
    """A worker's answer as one message: its JSON, then, when it carries ``raw`` bytes (a response already
    serialised in the worker), a NUL byte and those bytes as they are, so the server neither parses nor re-serialises
    them. JSON text never holds a NUL byte (orjson writes control characters escaped), so the first one separates."""
    raw = answer.pop("raw", None)
    encoded = orjson.dumps(answer)
    return encoded if raw is None else encoded + b"\0" + raw


def decode_answer(message: bytes) -> dict[str, Any]:
    """The answer ``encode_answer`` made (``raw`` back as bytes when there were some)."""
    encoded, separator, raw = message.partition(b"\0")
    answer: dict[str, Any] = orjson.loads(encoded)
    if separator:
        answer["raw"] = raw
    return answer


def _frame(payload: bytes) -> bytes:
    if len(payload) > 0x7FFFFFFF:
        return _SIZE.pack(-1) + _LARGE_SIZE.pack(len(payload)) + payload
    return _SIZE.pack(len(payload)) + payload


# --- the worker process -------------------------------------------------------------------------------------------


def _worker_main(connection: Any, settings: WorkerSettings) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the server stops us
    _name_process()
    try:
        handler = _Handler(settings)
    except BaseException as exc:  # noqa: BLE001 - report why the worker cannot start, then exit
        connection.send_bytes(orjson.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return
    # What exists now (modules, the rulebook, the compiled program, the card texts) lives as long as the worker: out
    # of the cyclic collector's sight, its full passes walk only what each job allocates.
    gc.freeze()
    connection.send_bytes(orjson.dumps({"ready": os.getpid()}))
    while True:
        try:
            job = connection.recv_bytes()
        except (EOFError, OSError):
            handler.close()  # the server closed the pipe (or went away): nothing more to do
            return
        try:
            answer = handler.handle(orjson.loads(job))
        except Exception as exc:  # noqa: BLE001 - any failure of one job is that job's answer, never the worker's end
            code = getattr(exc, "code", type(exc).__name__)
            answer = {"ok": False, "error": {"code": code, "message": f"{type(exc).__name__}: {exc}"}}
        connection.send_bytes(encode_answer(answer))


def _name_process() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, WORKER_NAME, 0, 0, 0)  # PR_SET_NAME: "imt-cds-worker" in ps and /proc/PID/comm
    except (OSError, AttributeError):
        pass


class _Handler:
    """What a worker does: FHIR resources -> facts (with sources and problems) -> assessment.

    Jobs: ``{"op": "assess" | "facts" | "cards", "resources": [...], "on": "YYYY-MM-DD", "patient_id": "...",
    "attested": false}``. The answer's ``fhir`` holds the sources, problems and eligibility of the reading, and, for
    "facts", the facts themselves (None when the chart may not be evaluated or a conflict prevented them); "assess"
    adds the assessment document and its evaluation id (the audit record id when audited). "cards" (with
    ``hook_instance`` and ``fhir_guidance_endpoint``) answers the patient-view response itself, cards rendered
    (``patient_view.py``), as ``{"evaluation_id", "index": [[card uuid, finding code]...], "raw": response bytes}``
    (``encode_answer``): the server's one process indexes the cards and sends the bytes on, nothing parsed. A chart
    whose patient cannot be established is answered ``{"refused": {"reason", "message"}}``: nothing is read from
    it."""

    def __init__(self, settings: WorkerSettings):
        from ..core.engine import Engine
        from ..fhir.reader import facts_from_resources

        self._facts_from_resources = facts_from_resources
        self._store: Any = None
        if settings.audit:
            self._store = _open_audit_store(settings)
        # The store is not the engine's audit sink: the worker appends each assessment itself, to keep its record id.
        self.engine = Engine(settings.rules, cache_size=settings.cache_size)
        self.settings = settings

    def handle(self, job: dict[str, Any]) -> dict[str, Any]:
        from ..core.errors import ChartRefusedError

        try:
            read = self._facts_from_resources(job["resources"], date.fromisoformat(job["on"]),
                                              terminology=self.engine.rulebook.terminology,
                                              patient_id=job.get("patient_id"),
                                              diagnosis_attested=bool(job.get("attested")))
        except ChartRefusedError as exc:
            return {"ok": True, "refused": {"reason": exc.reason, "message": exc.problems[0].message}}
        op = job.get("op")
        answer: dict[str, Any] = {"ok": True, "fhir": read.to_dict(facts=op == "facts"),
                                  "assessment": None, "evaluation_id": None}
        assessment = None
        if op in ("assess", "cards") and read.facts is not None:
            diagnosis = read.eligibility.diagnosis
            assessment = self.engine.evaluate(read.facts, diagnosis=diagnosis.to_dict() if diagnosis else None)
            # Fail closed: an assessment that could not be recorded is not returned (append raises; the job fails).
            evaluation_id = self._record(assessment) if self._store is not None else uuid.uuid4()
            answer["assessment"] = orjson.Fragment(assessment.to_json())
            answer["evaluation_id"] = str(evaluation_id)
        if op != "cards":
            return answer
        response, evaluation_id = patient_view_response(
            answer["fhir"], assessment.to_dict() if assessment is not None else None, answer["evaluation_id"],
            hook_instance=job["hook_instance"], public_url=self.settings.public_url,
            not_eligible=self.settings.not_eligible_card, fhir_guidance_endpoint=job.get("fhir_guidance_endpoint"))
        # What the server's card index keeps of each card (for feedback), and the response ready to send.
        index = [[card["uuid"], card["source"]["topic"]["code"]] for card in response["cards"]] if evaluation_id else []
        return {"ok": True, "evaluation_id": evaluation_id, "index": index, "raw": orjson.dumps(response)}

    def _record(self, assessment: Any) -> Any:
        from ..core.errors import AuditError

        try:
            return self._store.append(assessment)
        except AuditError as exc:  # busy past the store timeout, or failing: the server answers 503, no cards
            raise _NotRecorded(str(exc)) from exc

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


class _NotRecorded(Exception):
    """The audit store did not take the record; the job's answer carries ``AuditUnavailableError``'s code."""

    code = AuditUnavailableError.code


def _open_audit_store(settings: WorkerSettings) -> Any:
    """The worker's audit store, whose appends wait at most ``store_timeout`` for the write lock (the audit
    store's own default, 60 s, is for batch runs; a hook call must answer sooner than ``--request-timeout``)."""
    from ..audit.backends import is_postgres_target

    if is_postgres_target(settings.audit):
        from ..audit.postgres import PostgresAuditStore

        return PostgresAuditStore(settings.audit, store_input=settings.audit_input,
                                  lock_timeout=settings.store_timeout)
    from ..audit.sqlite import SQLiteAuditStore

    return SQLiteAuditStore(settings.audit, store_input=settings.audit_input, timeout=settings.store_timeout)
