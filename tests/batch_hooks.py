"""Hooks that batch tests run in a worker process before each line (``run_batch(..., _before_line=...)``): they
make the worker die for real on a marked line, as a process killed by the kernel or crashing in native code does."""

from __future__ import annotations

import os
import signal

KILL_MARKER = b"KILL-THIS-WORKER"
EXIT_MARKER = b"EXIT-THIS-WORKER"


def die_on_marked_lines(number: int, text: bytes) -> None:
    if KILL_MARKER in text:
        os.kill(os.getpid(), signal.SIGKILL)
    if EXIT_MARKER in text:
        os._exit(70)


def first_pools_broken(new_pool, count: int):  # type: ignore[no-untyped-def]
    """A stand-in for ``batch._new_pool`` whose first ``count`` pools are broken before they are returned (one of
    their processes has died, as one killed while the run hands out its work does): every ``submit`` to them raises
    BrokenProcessPool."""
    from concurrent.futures.process import BrokenProcessPool

    made = []

    def make(jobs: int):  # type: ignore[no-untyped-def]
        pool = new_pool(jobs)
        if len(made) < count:
            try:
                pool.submit(os._exit, 70).result()
            except BrokenProcessPool:
                pass
        made.append(pool)
        return pool

    return make
