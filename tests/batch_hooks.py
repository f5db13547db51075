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
