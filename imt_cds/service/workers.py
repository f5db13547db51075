"""Crash containment: evaluations run in a supervised pool of worker processes, never in the server process.

The rules engine is native code (durable-rules, in C); a defect there can kill the process running it. So the
server process never imports the engine: each worker process builds its own ``Engine`` (with the memo cache), reads
the FHIR resources into facts, evaluates and, with an audit store, prepares the evaluation's record, which the
server appends before it sends the answer (``recorder.py``: several records per commit). Every worker runs the
rulebook the pool archived as it started (``WorkerPool._archive_rulebook``): one that loads another is refused. The
server writes each job to a worker's pipe and a task per worker reads the answers on the event loop (the pipe is
read as an asyncio stream: no thread hop per request; the timeout is an event-loop timer).

A worker holds at most ``depth`` jobs (default 2): the one it runs and, while every worker is busy, the next, waiting
unread in its pipe; so it goes from one job to the next without waiting for the server, its caches still warm (on a
machine with two cores this alone gave about a third more requests per second). The worker reads a job only after
answering the one before, which is what keeps crash containment exact:

- a worker that dies (SIGKILL, a segfault, the OOM killer) fails the request whose job it was running only, with
  ``WorkerCrashedError`` (a 500 with a JSON body); the jobs behind it were never read and go to another worker; it
  is replaced at once, and every other request goes on;
- a job that takes longer than ``timeout`` gets its worker killed and replaced (``WorkerTimeoutError``, 503); the jobs
  behind it go to another worker;
- a job is never sent to a second worker once the first may have read it (a request that crashes workers kills one,
  not the pool); a job that could not even be handed over (a broken pipe on sending) goes to another one;
- a job whose request went away before a worker took it is dropped; one already taken runs, its answer ignored;
- a worker that dies while idle is seen at once (the end of its pipe), with a watch task as the backstop, and
  replaced before anyone sends it a job.

A patient-view call's body is handed to a worker as it came (``encode_job``: the job's JSON, a NUL byte, the
body): the worker parses and checks it (``HookRunner.answer``), so the chart is parsed once, and a hostile
body is parsed in a process whose death fails that request only, not in the server.

Workers are started by a fork server (``multiprocessing`` "forkserver", with the engine and FHIR modules preloaded),
so a replacement starts in a fraction of a second and never inherits the server's threads. Each worker names itself
``imt-cds-worker`` (Linux ``comm``, shown by ``ps``) and ignores SIGINT: the server shuts the pool down itself.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import multiprocessing
import os
import signal
import socket
import struct
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any, cast

import orjson

from ..audit.record import new_record_content
from ..core.errors import AuditError, EvidenceError, RulebookError
from ..core.rule_loader import load_rulebook
from .auth import DEFAULT_STORE_TIMEOUT_SECONDS
from .calls import check_request, find_service, patient_view_options, read_job, same_patient
from .errors import (
    BadRequestError,
    EvaluationFailedError,
    ServiceConfigError,
    ServiceUnavailableError,
    WorkerCrashedError,
    WorkerTimeoutError,
)
from .patient_view import patient_view_response
from .prefetch import prefetched
from .recorder import AuditRecorder
from .request_json import parse_request_json

if TYPE_CHECKING:
    from ..core.rulebook import Rulebook

__all__ = ["AuditUnavailableError", "WorkerPool", "WorkerSettings", "decode_answer", "decode_job", "encode_answer",
           "encode_job"]

log = logging.getLogger("imt_cds.service")

# What a client reads when its evaluation could not be recorded (fixed text; the store's error goes to the log).
AUDIT_UNAVAILABLE_MESSAGE = ("the audit trail cannot record this evaluation now: no cards are returned without a "
                             "record; try again")
START_TIMEOUT = 120.0  # seconds for a new worker to load and compile the rulebook
WORKER_NAME = b"imt-cds-worker"
# multiprocessing.Connection's framing: a signed 4-byte big-endian length, or -1 and an 8-byte one past 2 GiB.
_SIZE = struct.Struct("!i")
_LARGE_SIZE = struct.Struct("!Q")
# Imported once in the fork server, so that each new worker (at the start, and each replacement) has them already
# instead of importing them itself (~0.7 s on the development VM). The fork server skips a name it cannot import
# without a word (an "imt_cds.engine" left here by the move to core/ went unnoticed; tests/test_workers_mutants.py
# now checks each name). The FHIR reader works on the JSON itself (no FHIR model library): nothing more to preload.
_PRELOAD = ["imt_cds.service.workers", "imt_cds.core.engine", "imt_cds.fhir", "imt_cds.audit"]


@dataclass(frozen=True)
class WorkerSettings:
    """What a worker needs to build its engine (sent to each worker process; must pickle)."""

    rules: str | None = None
    cache_size: int = 4096
    audit: str | None = None
    audit_input: bool = True
    store_timeout: float = DEFAULT_STORE_TIMEOUT_SECONDS  # seconds an audit append may wait for the write lock
    public_url: str = ""  # the service's base URL, for the links of the cards a worker renders
    not_eligible_card: bool = False  # one info card for a chart not evaluated (ServiceConfig's setting)


class AuditUnavailableError(ServiceUnavailableError):
    """The audit store could not record the evaluation (its write lock held past the store timeout, or a failing
    database): the cards are withheld, since none may be shown without a record (fail closed)."""

    code = "cds_audit_unavailable"


@dataclass(eq=False)
class _Job:
    """One request's job: its bytes, the future its answer (the worker's message) is set on, and how many workers
    it has been offered to (a job is offered again only when it provably never reached the worker)."""

    payload: bytes
    future: asyncio.Future[bytes]
    offers: int = 0
    wait_timer: asyncio.TimerHandle | None = None


class _Worker:
    """The server's handle on one worker process: the jobs sent to it, in order (the first is the one it runs;
    the others wait in the pipe, unread), and the task reading its answers."""

    def __init__(self, process: Any, connection: Any):
        self.process = process
        self.connection = connection
        self.retired = False
        self.expired = False  # killed by the watchdog
        self.sent: deque[_Job] = deque()
        self.started = 0.0  # event-loop time its last job started (see WorkerPool._least_busy)
        self.watchdog: asyncio.TimerHandle | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.listener: asyncio.Task[None] | None = None
        # A multiprocessing Process may not be joined from two threads at once: with the fork server, each thread
        # that sees the process ended reads its exit code from one pipe, and the one that comes second reads the end
        # of that pipe and records 255 (observed: a worker killed by SIGKILL logged as "exit code 255"). The pool
        # asks from two threads (the replacement stopping the worker, the report of its exit code), so every join
        # goes through this lock.
        self._joining = threading.Lock()

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    def alive(self) -> bool:
        """Whether the process runs. Never blocks (the event loop asks): while another thread joins it (a retired
        worker being stopped), it counts as running until that thread has read how it ended."""
        if not self._joining.acquire(blocking=False):
            return True
        try:
            return self.process.exitcode is None
        finally:
            self._joining.release()

    def exit_code(self, wait: float = 2.0) -> int | None:
        """How the process ended (negative: the signal that killed it), once it has (None if it has not)."""
        with self._joining:
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

    def send(self, job: _Job) -> bool:
        """Write the job to the worker's pipe; False when the pipe is already broken (a dead worker: the job was not
        handed over). The write is tried at once (asyncio and uvloop transports both do), so a broken pipe shows
        here; a job the worker dies before reading shows as the worker's end, answered by ``WorkerPool._lost``."""
        assert self.writer is not None
        self.writer.write(_frame(job.payload))
        if self.writer.transport.is_closing():
            return False
        self.sent.append(job)
        return True

    async def read_answer(self) -> bytes:
        assert self.reader is not None
        (size,) = _SIZE.unpack(await self.reader.readexactly(_SIZE.size))
        if size == -1:
            (size,) = _LARGE_SIZE.unpack(await self.reader.readexactly(_LARGE_SIZE.size))
        return await self.reader.readexactly(size)

    def expire(self) -> None:
        self.expired = True
        self.kill()

    def stop(self, wait: float = 5.0) -> None:
        try:
            self.connection.close()  # the worker reads end-of-file and exits
        except OSError:
            pass
        with self._joining:
            self.process.join(wait)
            if self.process.exitcode is None:
                self.kill()
                self.process.join(wait)


class WorkerPool:
    """``size`` supervised worker processes. ``await start()``, then ``await run(job)`` from any request.

    A job goes to the worker with the fewest jobs in hand; a worker may hold ``depth`` jobs at once: the one it runs
    and, while every worker is busy, the next ones, waiting unread in its pipe, so that it goes from one job to the
    next without waiting for the server (and with its caches still warm). A worker reads a job only after it has
    answered the one before, so when it dies only the job it was running is lost; the ones behind it are offered
    to another worker. Past ``depth`` jobs everywhere, a job waits in the server (at most ``timeout``)."""

    def __init__(self, settings: WorkerSettings, size: int, *, timeout: float = 30.0, depth: int = 2,
                 rulebook: Rulebook | None = None):
        if depth < 1:
            raise ServiceConfigError(f"a worker's job depth must be at least 1, not {depth}")
        self.settings = settings
        # The rulebook the service runs (default: loaded from ``settings.rules`` at start), and its sha256 once
        # started: every worker must have built its engine from that very rulebook (``_spawn``).
        self._rulebook = rulebook
        self._rulebook_sha256: str | None = None
        self.size = size
        self.timeout = timeout
        self.depth = depth
        self._context = multiprocessing.get_context("forkserver")
        self._workers: list[_Worker] = []
        self._waiting: deque[_Job] = deque()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = False
        self._closed = False
        self.crashes = 0  # workers lost while serving a job (reported by /healthz)
        # With an audit store, the workers prepare each evaluation's record and this process appends them, several
        # per transaction (recorder.py).
        self._recorder = (AuditRecorder(lambda: _open_audit_store(settings)) if settings.audit else None)

    # -- life cycle -------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Archive the service's rulebook (with an audit store), start every worker and wait until each has built
        its engine from that rulebook (a broken rulebook or store fails here, at once)."""
        self._rulebook_sha256 = await asyncio.to_thread(self._archive_rulebook)
        if self._recorder is not None:
            self._recorder.start()
        self._context.set_forkserver_preload(_PRELOAD)
        started = await asyncio.gather(*(asyncio.to_thread(self._spawn) for _ in range(self.size)),
                                       return_exceptions=True)
        failures = [s for s in started if isinstance(s, BaseException)]
        for worker in started:
            if isinstance(worker, _Worker):
                await self._enlist(worker)
        self._started = True
        if failures:
            await self.close()
            raise failures[0]
        self._spawn_task(self._watch())

    async def close(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        workers, self._workers = list(self._workers), []
        stopped = WorkerTimeoutError("the evaluation workers have stopped")
        for worker in workers:
            if worker.listener is not None:
                worker.listener.cancel()
            worker.close_stream()
            for job in worker.sent:
                _fail(job, stopped)
            worker.sent.clear()
        while self._waiting:
            _fail(self._waiting.popleft(), stopped)
        await asyncio.gather(*(asyncio.to_thread(w.stop) for w in workers))
        if self._recorder is not None:
            await asyncio.to_thread(self._recorder.close)

    @property
    def live_workers(self) -> int:
        return sum(1 for w in self._workers if not w.retired and w.alive())

    async def not_ready(self, timeout: float) -> list[str]:
        """Why this server cannot answer hook calls now, for ``/readyz`` (empty when it can): "no_workers" (none
        alive: all died and their replacements cannot start yet), "audit_store" (with an audit store, it did not
        answer a read within ``timeout`` seconds; no hook call is answered without its record)."""
        reasons = [] if self.live_workers else ["no_workers"]
        if self._recorder is not None:
            try:
                await self._recorder.check(timeout)
            except AuditError:
                reasons.append("audit_store")
        return reasons

    def load(self) -> dict[str, Any]:
        """The jobs the pool holds now (for /healthz and monitors): ``in_workers``, per worker, those it has been
        given and not answered (the one it runs and those queued in its pipe, at most ``depth``); ``waiting``, those
        held in the server because every worker already has ``depth`` (more and more of them: add workers or
        replicas); ``pids``, the workers' process ids, in the same order."""
        return {"in_workers": [len(w.sent) for w in self._workers], "waiting": len(self._waiting),
                "pids": [w.pid for w in self._workers]}

    def _archive_rulebook(self) -> str:
        """The sha256 every worker's rulebook must have: the service's rulebook, archived first in the audit store
        when there is one (a record may only name an archived rulebook). Done once, here, so a worker needs no
        database to start: workers lost while the database is away are replaced at once, and one service never
        answers from two rulebooks (a worker that loads rulebook files changed since is refused)."""
        try:
            rulebook = self._rulebook if self._rulebook is not None else load_rulebook(self.settings.rules)
        except (RulebookError, EvidenceError) as exc:
            raise ServiceConfigError(f"the rulebook does not load: {exc}") from exc
        if self.settings.audit:
            try:
                store = _open_audit_store(self.settings)
                try:
                    store.archive(rulebook)
                finally:
                    store.close()
            except AuditError as exc:
                raise ServiceConfigError(f"cannot archive the rulebook in the audit store: {exc}") from exc
        return rulebook.sha256

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
        if message.get("rulebook") != self._rulebook_sha256:
            worker.stop(1.0)
            raise ServiceConfigError(
                f"an evaluation worker loaded rulebook {str(message.get('rulebook'))[:12]}, not the service's "
                f"{str(self._rulebook_sha256)[:12]}: the rulebook files changed since the service started; "
                "restore them, or restart the service to use the changed rulebook")
        return worker

    async def _enlist(self, worker: _Worker) -> None:
        """Put a started worker in service: its stream, the task reading its answers, then the jobs waiting."""
        await worker.open_stream()
        self._workers.append(worker)
        worker.listener = asyncio.get_running_loop().create_task(self._listen(worker))
        self._dispatch_waiting()

    def _spawn_task(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _retire(self, worker: _Worker) -> None:
        """Take a worker out of service (killing it if need be) and start its replacement."""
        if worker.retired:
            return
        worker.retired = True
        if worker in self._workers:
            self._workers.remove(worker)
        self._spawn_task(self._replace(worker))

    async def _replace(self, worker: _Worker) -> None:
        worker.close_stream()
        await asyncio.to_thread(worker.stop, 1.0)
        delay = 0.5
        while not self._closed:
            try:
                new = await asyncio.to_thread(self._spawn)
            except ServiceConfigError as exc:
                log.error("imt-cds: cannot replace an evaluation worker (retrying in %g s): %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            if self._closed:
                await asyncio.to_thread(new.stop, 1.0)
                return
            await self._enlist(new)
            log.warning("imt-cds: evaluation worker %d replaced by %d", worker.pid, new.pid)
            return

    async def _watch(self) -> None:
        """Replace workers found dead while idle (their end of file normally tells at once; this is the backstop),
        so that no request is ever sent to a dead one."""
        while not self._closed:
            await asyncio.sleep(0.5)
            for worker in list(self._workers):
                if not worker.sent and not worker.alive():
                    self._retire(worker)
                    log.warning("imt-cds: evaluation worker %d died while idle (exit code %s)", worker.pid,
                                await asyncio.to_thread(worker.exit_code))

    # -- running a job ----------------------------------------------------------------------------------------------

    async def run(self, job: dict[str, Any], body: bytes | None = None) -> dict[str, Any]:
        """Run one job in a worker (``body``: bytes it carries as they are, see ``encode_job``); the worker's answer,
        or a ``ServiceError`` (crash, timeout, failure). A request that goes away cancels its job: dropped if no
        worker has it yet, its answer ignored otherwise."""
        if not self._started or self._closed:
            raise WorkerTimeoutError("the evaluation workers are not running")
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._offer(_Job(encode_job(job, body), future))
        result = decode_answer(await future)
        if not result.get("ok"):
            error = result.get("error") or {}
            raise EvaluationFailedError(f"the evaluation failed: {error.get('message', 'unknown error')}",
                                        {"code": error.get("code")})
        record = result.pop("record", None)
        if record is not None:
            await self._commit(record)
        return result

    async def _commit(self, record: dict[str, Any]) -> None:
        """Append the record the worker prepared; only then may its answer (which quotes the record id) be sent."""
        if self._recorder is None:
            raise EvaluationFailedError("a worker sent an audit record, but this service has no audit store")
        try:
            await self._recorder.record(record, timeout=self.timeout)  # bounded as a worker's job is
        except AuditError as exc:  # busy past the store timeout, or failing: no cards without their record
            raise AuditUnavailableError(f"the evaluation was not recorded: {exc}",
                                        public_message=AUDIT_UNAVAILABLE_MESSAGE) from exc

    def _offer(self, job: _Job) -> None:
        """Hand the job to the least busy worker with room, or keep it waiting (at most ``timeout``)."""
        while not job.future.done():
            if job.offers > self.size + 2:
                _fail(job, WorkerTimeoutError("no live evaluation worker could take the request"))
                return
            worker = self._least_busy()
            if worker is None:
                self._waiting.append(job)
                if job.wait_timer is None:
                    job.wait_timer = asyncio.get_running_loop().call_later(self.timeout, self._give_up, job)
                return
            job.offers += 1
            if worker.send(job):
                if job.wait_timer is not None:  # it waited: it may wait again (its worker lost), with a new timer
                    job.wait_timer.cancel()
                    job.wait_timer = None
                if len(worker.sent) == 1:
                    self._arm(worker)
                return
            self._retire(worker)  # its pipe is broken: the job never reached it; offer it to another

    def _least_busy(self) -> _Worker | None:
        """The worker with the fewest jobs, if one has room; of those, the one whose last job started last. Of idle
        ones, that is the one used last: its caches are still warm (with workers taking turns, a lone client's every
        job ran on cold caches, at about 1.4 times the CPU). Of busy ones, a worker stuck on a job, hung or slow, is
        not given more to hold behind it while another is busy with a fresh one."""
        best: _Worker | None = None
        best_key = (0, 0.0)
        for worker in self._workers:
            load = len(worker.sent)
            if load >= self.depth or worker.retired:
                continue
            key = (load, -worker.started)
            if best is None or key < best_key:
                best, best_key = worker, key
        return best

    def _dispatch_waiting(self) -> None:
        while self._waiting and self._least_busy() is not None:
            self._offer(self._waiting.popleft())

    def _give_up(self, job: _Job) -> None:
        try:
            self._waiting.remove(job)
        except ValueError:
            return
        _fail(job, WorkerTimeoutError(f"no evaluation worker became free within {self.timeout:.0f} s"))

    def _arm(self, worker: _Worker) -> None:
        """The watchdog of the job the worker runs now (an event-loop timer): past ``timeout`` the worker is killed,
        which its listener sees as the end of its pipe."""
        loop = asyncio.get_running_loop()
        worker.started = loop.time()
        worker.watchdog = loop.call_later(self.timeout, worker.expire)

    def _disarm(self, worker: _Worker) -> None:
        if worker.watchdog is not None:
            worker.watchdog.cancel()
            worker.watchdog = None

    async def _listen(self, worker: _Worker) -> None:
        """Read the worker's answers, in the order of its jobs, until its pipe ends (the worker died or was killed:
        ``_lost``)."""
        try:
            while True:
                answer = await worker.read_answer()
                self._disarm(worker)
                job = worker.sent.popleft()
                if worker.sent:
                    self._arm(worker)  # the next job starts now
                if not job.future.done():
                    job.future.set_result(answer)
                self._dispatch_waiting()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except Exception:  # noqa: BLE001 - an answer to no job, a broken frame: the worker cannot be trusted on
            log.exception("imt-cds: evaluation worker %d sent what is not an answer; replacing it", worker.pid)
            worker.kill()
        await self._lost(worker)

    async def _lost(self, worker: _Worker) -> None:
        """The worker's pipe ended: the job it ran fails (a crash, or the watchdog's timeout); the jobs behind it
        never reached it and go to another worker."""
        self._disarm(worker)
        jobs = list(worker.sent)
        worker.sent.clear()
        was_retired = worker.retired
        self._retire(worker)
        if self._closed:
            return
        for job in jobs[1:]:
            self._offer(job)
        if not jobs:
            if not was_retired:
                log.warning("imt-cds: evaluation worker %d died while idle (exit code %s)", worker.pid,
                            await asyncio.to_thread(worker.exit_code))
            return
        running = jobs[0]
        if worker.expired:
            _fail(running, WorkerTimeoutError(f"the evaluation took longer than {self.timeout:.0f} s; its process "
                                              "was replaced"))
            return
        self.crashes += 1
        code = await asyncio.to_thread(worker.exit_code)
        log.error("imt-cds: evaluation worker %d died serving a request (exit code %s); replacing it", worker.pid,
                  code)
        _fail(running, WorkerCrashedError(
            "the evaluation process died while serving this request; it has been replaced and the service goes "
            "on: retry the request", {"exit_code": code}))


def _fail(job: _Job, error: BaseException) -> None:
    if job.wait_timer is not None:
        job.wait_timer.cancel()
    if not job.future.done():
        job.future.set_exception(error)


def _message(data: dict[str, Any], raw: bytes | None) -> bytes:
    """``data`` as JSON, then, with ``raw``, a NUL byte and those bytes as they are. JSON text never holds a NUL byte
    (orjson and the stdlib write control characters escaped), so the first one separates, whatever ``raw`` holds."""
    try:
        encoded = orjson.dumps(data)
    except orjson.JSONEncodeError as exc:
        # orjson writes no integer past 64 bits, and a chart may hold one (a FHIR decimal is any number; the server
        # read it with the stdlib): the stdlib writes it, marked so that it is read back as the same int (orjson
        # would read a float). What neither can write as UTF-8 (text with a lone surrogate) fails as it did.
        try:
            text = json.dumps(data, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
            encoded = _STDLIB_JSON + text.encode("utf-8")
        except ValueError:  # (UnicodeEncodeError is one)
            raise exc from None
    return encoded if raw is None else encoded + b"\0" + raw


_STDLIB_JSON = b"\x01"  # leads a message written by the stdlib (no JSON text begins with it)


def _parts(message: bytes) -> tuple[dict[str, Any], bytes | None]:
    encoded, separator, raw = message.partition(b"\0")
    data = json.loads(encoded[1:]) if encoded[:1] == _STDLIB_JSON else orjson.loads(encoded)
    return data, (raw if separator else None)


def encode_job(job: dict[str, Any], body: bytes | None = None) -> bytes:
    """A job as one message; ``body``, a request body, goes as it came (the worker parses it)."""
    return _message(job, body)


def decode_job(message: bytes) -> tuple[dict[str, Any], bytes | None]:
    """The job and body ``encode_job`` made."""
    return _parts(message)


def encode_answer(answer: dict[str, Any]) -> bytes:
    """A worker's answer as one message; ``raw`` (a response already serialised in the worker) goes as bytes, so the
    server neither parses nor re-serialises it."""
    return _message(answer, answer.pop("raw", None))


def decode_answer(message: bytes) -> dict[str, Any]:
    """The answer ``encode_answer`` made (``raw`` back as bytes when there were some)."""
    answer, raw = _parts(message)
    if raw is not None:
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
    connection.send_bytes(orjson.dumps({"ready": os.getpid(), "rulebook": handler.engine.rulebook.sha256}))
    while True:
        try:
            job = connection.recv_bytes()
        except (EOFError, OSError):
            return  # the server closed the pipe (or went away): nothing more to do
        try:
            message = encode_answer(handler.handle(*decode_job(job)))
        except Exception as exc:  # noqa: BLE001 - any failure of one job is that job's answer, never the worker's end
            # (writing the answer included: text a JSON writer refuses must not end the worker either)
            code = getattr(exc, "code", type(exc).__name__)
            text = f"{type(exc).__name__}: {exc}".encode("utf-8", "backslashreplace").decode("utf-8")
            message = encode_answer({"ok": False, "error": {"code": str(code), "message": text}})
        connection.send_bytes(message)


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
        self.engine = Engine(settings.rules, cache_size=settings.cache_size)
        self.settings = settings
        # With an audit store, the worker prepares each evaluation's record and the server appends it (recorder.py;
        # the store is not the engine's audit sink). The records name this rulebook, which the server archived as it
        # started and checks is this worker's (``WorkerPool._archive_rulebook``): no database is needed here.
        self._audited = bool(settings.audit)

    def handle(self, job: dict[str, Any], body: bytes | None = None) -> dict[str, Any]:
        from ..core.errors import ChartRefusedError

        if job.get("op") == "hook":
            return self._hook_call(job, body)
        # The patient in context is required (None only where there is none to check against): a job that forgot
        # it must fail, not skip the check that the chart is that patient's.
        patient_id = job["patient_id"]
        try:
            read = self._facts_from_resources(job["resources"], date.fromisoformat(job["on"]),
                                              terminology=self.engine.rulebook.terminology,
                                              drugs=self.engine.rulebook.drugs, patient_id=patient_id,
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
            if self._audited:  # the server appends it before it sends anything of this answer (fail closed)
                answer["record"] = new_record_content(assessment, store_input=self.settings.audit_input)
                answer["evaluation_id"] = answer["record"]["id"]
            else:
                answer["evaluation_id"] = str(uuid.uuid4())
            if op != "cards":  # (a "cards" answer is the response alone: the document is not sent)
                answer["assessment"] = orjson.Fragment(assessment.to_json())
        if op != "cards":
            return answer
        response, evaluation_id = patient_view_response(
            answer["fhir"], assessment, answer["evaluation_id"],
            hook_instance=job["hook_instance"], public_url=self.settings.public_url,
            not_eligible=self.settings.not_eligible_card, fhir_guidance_endpoint=job.get("fhir_guidance_endpoint"))
        # What the server's card index keeps of each card (for feedback), and the response ready to send.
        index = [[card["uuid"], card["source"]["topic"]["code"]] for card in response["cards"]] if evaluation_id else []
        cards = {"ok": True, "evaluation_id": evaluation_id, "index": index, "raw": orjson.dumps(response)}
        if "record" in answer:
            cards["record"] = answer["record"]
        return cards

    def _hook_call(self, job: dict[str, Any], body: bytes | None) -> dict[str, Any]:
        """A patient-view call given as its request body (``HookRunner.answer``): parsed and checked here with
        the server's own functions, so the refusals are its; its answer when the prefetch holds every key, else
        ``fetch`` (the server reads the call itself and fetches what is missing from fhirServer)."""
        try:
            service = find_service(job["service"])
            request = check_request(parse_request_json(body or b""), service)
            resources, missing = prefetched(service.prefetch, request)
            if missing:
                return {"ok": True, "fetch": True}
            same_patient(resources, request["context"]["patientId"])
        except BadRequestError as exc:
            return {"ok": True, "rejected": {"message": exc.message, "details": exc.details}}
        options = patient_view_options(request, job["guidance_endpoint"])
        return self.handle(read_job(request, resources, "cards", job["on"], options))

def _open_audit_store(settings: WorkerSettings) -> Any:
    """The audit store of ``settings``, opened in the server's process (the recorder's appends, and the rulebook's
    archive at the start; the workers only prepare records), whose appends wait at most ``store_timeout`` for the
    write lock (the audit store's own default, 60 s, is for batch runs; a hook call must answer sooner than
    ``--request-timeout``)."""
    from ..audit.backends import is_postgres_target

    target = cast(str, settings.audit)  # (only called when the service has an audit store)
    if is_postgres_target(target):
        from ..audit.postgres import PostgresAuditStore

        return PostgresAuditStore(target, store_input=settings.audit_input,
                                  lock_timeout=settings.store_timeout)
    from ..audit.sqlite import SQLiteAuditStore

    return SQLiteAuditStore(target, store_input=settings.audit_input, timeout=settings.store_timeout)
