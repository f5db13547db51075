"""Batch evaluation: one patient per NDJSON line in, one assessment per line out, in input order.

A bad line never stops the run: it yields ``{"line": N, "errors": [...]}`` (invalid input) or
``{"line": N, "error": {...}}`` (the engine failed on it) in its place, so output line N always answers input line N.
With ``jobs > 1`` lines are evaluated by worker processes (the engine's C calls hold the GIL, so threads would not
help); input is read in bounded windows so memory stays flat however long the file is.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import IO

import orjson

from .errors import EngineError, InvalidInputError

__all__ = ["BatchSummary", "evaluate_line", "run_batch"]

OK, INVALID, FAILED = 0, 1, 2
_WINDOW_PER_JOB = 2000
_CHUNK = 200


@dataclass(frozen=True)
class BatchSummary:
    total: int
    evaluated: int
    invalid: int
    failed: int


@lru_cache(maxsize=4)
def _engine(rules: str | None):  # type: ignore[no-untyped-def]
    # One engine per (process, rulebook): worker processes build theirs on first use.
    from .engine import Engine, default_engine

    return default_engine() if rules is None else Engine(rules)


def evaluate_line(item: tuple[int, bytes], rules: str | None = None) -> tuple[bytes, int]:
    """Evaluate one NDJSON line; return the output line (JSON bytes, no newline) and its status."""
    from .validation import parse_facts_json

    number, text = item
    if not text.strip():
        error = {"path": "", "message": "empty line: expected a JSON object with patient facts", "value": None}
        return orjson.dumps({"line": number, "errors": [error]}), INVALID
    try:
        facts = parse_facts_json(text)
    except InvalidInputError as exc:
        return orjson.dumps({"line": number, **exc.to_dict()}), INVALID
    try:
        assessment = _engine(rules).evaluate(facts)
    except EngineError as exc:
        return orjson.dumps({"line": number, "error": {"code": exc.code, "message": str(exc)}}), FAILED
    return assessment.to_json().encode(), OK


def _evaluate_for_pool(args: tuple[tuple[int, bytes], str | None]) -> tuple[bytes, int]:
    item, rules = args
    return evaluate_line(item, rules)


def _lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    for number, line in enumerate(stream, 1):
        yield number, line.rstrip(b"\r\n")


class _Progress:
    """A one-line progress bar on standard error, redrawn at most ten times a second."""

    def __init__(self, total: int | None, enabled: bool):
        self.total, self.enabled, self.done, self.last = total, enabled, 0, 0.0
        self.start = time.monotonic()

    def advance(self, count: int = 1) -> None:
        self.done += count
        now = time.monotonic()
        if self.enabled and (now - self.last > 0.1 or self.done == self.total):
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            if self.total:
                filled = int(30 * self.done / self.total)
                bar = "#" * filled + "." * (30 - filled)
                sys.stderr.write(f"\r[{bar}] {self.done}/{self.total} lines, {rate:,.0f}/s")
            else:
                sys.stderr.write(f"\r{self.done} lines, {rate:,.0f}/s")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def run_batch(source: str, destination: str | None, jobs: int = 1, rules: Path | str | None = None,
              progress: str = "auto") -> BatchSummary:
    rules_key = str(Path(rules).resolve()) if rules is not None else None
    _engine(rules_key)  # load and check the rulebook before reading any input: a bad rulebook fails fast
    total = None
    if source != "-":
        with open(source, "rb") as counting:
            total = sum(1 for _ in counting)
    show = progress == "always" or (progress == "auto" and sys.stderr.isatty())
    bar = _Progress(total, show)
    counts = [0, 0, 0]
    input_stream = sys.stdin.buffer if source == "-" else open(source, "rb")  # noqa: SIM115 - closed below
    output_stream = sys.stdout.buffer if destination is None else open(destination, "wb")  # noqa: SIM115
    pool = None
    try:
        lines = _lines(input_stream)
        if jobs > 1:
            pool = multiprocessing.get_context().Pool(jobs)
            results = _windowed(pool, lines, rules_key, jobs)
        else:
            results = (evaluate_line(item, rules_key) for item in lines)
        for output, status in results:
            output_stream.write(output + b"\n")
            counts[status] += 1
            bar.advance()
        output_stream.flush()
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()
        if source != "-":
            input_stream.close()
        if destination is not None:
            output_stream.close()
    return BatchSummary(sum(counts), counts[OK], counts[INVALID], counts[FAILED])


def _windowed(pool, lines: Iterator[tuple[int, bytes]], rules: str | None,  # type: ignore[no-untyped-def]
              jobs: int) -> Iterator[tuple[bytes, int]]:
    """Feed the pool a bounded window of lines at a time (Pool.imap would read the whole input ahead)."""
    window = _WINDOW_PER_JOB * jobs
    while True:
        items = []
        for item in lines:
            items.append((item, rules))
            if len(items) >= window:
                break
        if not items:
            return
        yield from pool.imap(_evaluate_for_pool, items, chunksize=_CHUNK)
