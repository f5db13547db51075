"""The service's audit recorder: the workers' records appended by one thread of the server, several per commit.

With an audit store, every evaluation is one record, and a record is acknowledged only once its transaction has
committed durably (a disk flush). Appended by each worker, one per transaction, that flush came once per request:
about 0.4 ms of CPU and more of waiting per evaluation on the development machine, during which the worker could
not start its next job. So a worker prepares the record (``new_record_content``: the input, the assessment, the
rulebook, a new record id, which its cards already quote) and sends it with its answer; the server hands it to this
recorder and holds the answer back until the record is committed. The recorder's thread appends whatever records
have arrived meanwhile in one transaction (``AuditStore.append_contents``): under load, one flush for several
records (a group commit), and the workers go on with the next job at once.

What does not change: an answer whose record is not committed is never sent (its request gets the 503 of
``AuditUnavailableError``, with every other record of the same transaction: all or none, or when the commit has not
come within the pool's timeout, as a worker's job would be cut off then); records keep the order in
which they arrived; a worker that dies before answering leaves no record (it sent none), and the server process
dying loses only answers not yet sent, whose records may or may not have been committed (as before, when a worker
died between its commit and its answer).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Mapping
from typing import Any

from ..core.errors import AuditError

__all__ = ["AuditRecorder"]

log = logging.getLogger("imt_cds.service")

MAX_BATCH = 64  # records in one transaction at most (a bound on one commit's size and on what one failure fails)
# A store that answered a check this recently is not read again: /readyz needs no token, and a flood of it must not
# become a flood of reads on the database or delay the appends that share the recorder's thread.
CHECK_REUSE_SECONDS = 1.0

# A record and the future its request waits on; or, with None for the record, a readiness check (``check``).
_Pending = tuple[Mapping[str, Any] | None, "asyncio.Future[str]"]


class AuditRecorder:
    """Appends records from the event loop's requests in a thread of its own, all that are waiting in one
    transaction. ``start()`` (opens the store: a store that cannot be used fails here), ``await record(content)``
    from any request, ``close()``."""

    def __init__(self, open_store: Callable[[], Any], *, max_batch: int = MAX_BATCH,
                 check_reuse_seconds: float = CHECK_REUSE_SECONDS):
        self._open_store = open_store
        self._max_batch = max_batch
        self._check_reuse_seconds = check_reuse_seconds
        self._checked: tuple[float, str] | None = None  # (event-loop time, head) of the last check that succeeded
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._store: Any = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.transactions = 0  # committed (a test and the log can tell how many records each carried)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._store = self._open_store()
        self._thread = threading.Thread(target=self._append_forever, name="imt-cds-audit-recorder", daemon=True)
        self._thread.start()

    async def record(self, content: Mapping[str, Any], timeout: float | None = None) -> str:
        """Append the record; its id once committed. Raises ``AuditError`` when the store did not take it, or did
        not say so within ``timeout`` seconds (a hung disk or database: the record may still be committed later,
        but no answer waits for it)."""
        if self._thread is None or not self._thread.is_alive():
            raise AuditError("the audit recorder is not running")
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._queue.put((content, future))
        try:
            return await asyncio.wait_for(future, timeout)  # (a future: no task is made for it)
        except TimeoutError:
            raise AuditError(f"the audit store did not commit the record within {timeout:.0f} s") from None

    async def check(self, timeout: float) -> str:
        """Whether the store answers (for ``/readyz``): its chain's head hash, read by the recorder's thread between
        two transactions (so it also opens the connection again when the server had closed it). Raises
        ``AuditError`` when the read fails or has not come within ``timeout`` seconds. A success less than
        ``check_reuse_seconds`` old is answered again without a read."""
        if self._thread is None or not self._thread.is_alive():
            raise AuditError("the audit recorder is not running")
        loop = asyncio.get_running_loop()
        if self._checked is not None and loop.time() - self._checked[0] < self._check_reuse_seconds:
            return self._checked[1]
        future: asyncio.Future[str] = loop.create_future()
        self._queue.put((None, future))
        try:
            head = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise AuditError(f"the audit store did not answer within {timeout:g} s") from None
        self._checked = (loop.time(), head)
        return head

    def close(self) -> None:
        """Append what is waiting, then stop the thread and close the store."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self._store is not None:
            self._store.close()
            self._store = None

    def _append_forever(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            batch: list[_Pending] = []
            checks: list[asyncio.Future[str]] = []
            pending: _Pending | None = first
            # Whatever arrived while the last transaction committed goes into this one.
            while pending is not None:
                content, future = pending
                if content is None:
                    checks.append(future)
                else:
                    batch.append(pending)
                if len(batch) >= self._max_batch:
                    break
                try:
                    pending = self._queue.get_nowait()
                except queue.Empty:
                    break
                if pending is None:
                    stopping = True
            if batch:
                self._append(batch)
            if checks:
                self._check(checks)

    def _check(self, futures: list[asyncio.Future[str]]) -> None:
        try:
            head: str | None = self._store.head_hash()
            error: BaseException | None = None
        except Exception as exc:  # noqa: BLE001 - any failure means the store cannot be used now
            head, error = None, exc if isinstance(exc, AuditError) else AuditError(f"{type(exc).__name__}: {exc}")
            log.error("imt-cds: the audit store does not answer: %s", error)
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(_settle, futures, None if head is None else [head] * len(futures), error)
        except RuntimeError:  # the event loop has closed (shutdown)
            pass

    def _append(self, batch: list[_Pending]) -> None:
        try:
            ids: list[str] | None = self._store.append_contents([content for content, _ in batch])
            error: BaseException | None = None
            self.transactions += 1
        except AuditError as exc:
            ids, error = None, exc
            log.error("imt-cds: the audit store did not take %d record(s): %s", len(batch), exc)
        except Exception as exc:  # noqa: BLE001 - any other failure is as much a record not taken (fail closed)
            ids, error = None, AuditError(f"{type(exc).__name__}: {exc}")
            log.exception("imt-cds: recording %d audit record(s) failed", len(batch))
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(_settle, [future for _, future in batch], ids, error)
        except RuntimeError:  # the event loop has closed (shutdown): nobody waits for these answers any more
            pass


def _settle(futures: list[asyncio.Future[str]], ids: list[str] | None, error: BaseException | None) -> None:
    for index, future in enumerate(futures):
        if future.done():  # the request went away meanwhile
            continue
        if ids is not None:
            future.set_result(ids[index])
        else:
            assert error is not None
            future.set_exception(error)
