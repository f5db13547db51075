"""Batch evaluation: one patient per NDJSON line in, one assessment per line out, in input order.

A bad line never stops the run: it yields ``{"line": N, "errors": [...]}`` (invalid input) or
``{"line": N, "error": {...}}`` (the engine failed on it) in its place, so output line N always answers input line N.

With ``jobs > 1`` the work is split by *byte ranges* of the input file: each worker process reads its own range
(cut at line boundaries), evaluates it and writes its own part file; the parent only splits the file, counts lines
and concatenates the parts in order. The parent doing almost nothing matters: on a 2-core machine two workers and a
busy parent (pickling every line and every assessment through pipes) would share two cores three ways. Standard
input is first spooled to a temporary file. Each process evaluates with its own engine and memo cache (an EHR export
often repeats charts), and memory stays flat however long the input is.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

import orjson

from .errors import EngineError, InputProblem, InvalidInputError

__all__ = ["BatchSummary", "evaluate_line", "run_batch"]

OK, INVALID, FAILED = 0, 1, 2
CACHE_SIZE = 4096  # assessments memoized per process (a few kB each: input and firings, nothing materialized)
_WRITE_BUFFER = 1 << 20  # assessments are ~20 kB each: write in large blocks
_CHUNK_BYTES = 1 << 18  # ~250 patients per work unit: workers finish within a fraction of a second of each other


@dataclass(frozen=True)
class BatchSummary:
    total: int
    evaluated: int
    invalid: int
    failed: int


@lru_cache(maxsize=4)
def _engine(rules: str | None, audit: tuple[str, bool] | None = None):  # type: ignore[no-untyped-def]
    # One engine per (process, rulebook, audit store). Worker processes forked after the parent built it inherit it
    # (an inherited audit store opens its own connection in the child). An audit failure is not a bad line: it
    # propagates and stops the run, since no assessment may be output unrecorded.
    from .engine import Engine

    if audit is None:
        return Engine(rules, cache_size=CACHE_SIZE)
    from .audit import open_store

    return Engine(rules, cache_size=CACHE_SIZE, audit=open_store(audit[0], store_input=audit[1]))


def evaluate_line(number: int, text: bytes, rules: str | None = None,
                  audit: tuple[str, bool] | None = None) -> tuple[bytes, int]:
    """Evaluate one NDJSON line; return the output line (JSON bytes, no newline) and its status."""
    from .validation import parse_facts_json

    if not text.strip():
        empty = InvalidInputError([InputProblem("", "empty line: expected a JSON object with patient facts")])
        return orjson.dumps({"line": number, **empty.to_dict()}), INVALID
    try:
        facts = parse_facts_json(text)
    except InvalidInputError as exc:
        return orjson.dumps({"line": number, **exc.to_dict()}), INVALID
    try:
        assessment = _engine(rules, audit).evaluate(facts)
    except EngineError as exc:
        return orjson.dumps({"line": number, "error": {"code": exc.code, "message": str(exc)}}), FAILED
    return assessment.to_json().encode(), OK


def _evaluate_lines(lines: Iterable[tuple[int, bytes]], output: IO[bytes], rules: str | None,
                    audit: tuple[str, bool] | None = None) -> list[int]:
    counts = [0, 0, 0]
    for number, text in lines:
        result, status = evaluate_line(number, text, rules, audit)
        output.write(result + b"\n")
        counts[status] += 1
    return counts


def _numbered_lines(stream: IO[bytes], first_number: int, limit: int | None = None) -> Iterator[tuple[int, bytes]]:
    number = first_number
    remaining = limit
    while remaining is None or remaining > 0:
        line = stream.readline(remaining if remaining is not None else -1)
        if not line:
            return
        if remaining is not None:
            remaining -= len(line)
        yield number, line.rstrip(b"\r\n")
        number += 1


def _work_unit(args: tuple[str, int, int, int, str, str | None, tuple[str, bool] | None]) -> list[int]:
    """Worker: evaluate the lines in bytes [start, end) of the input, numbered from first_line, into part_path."""
    source, start, end, first_line, part_path, rules, audit = args
    with open(source, "rb") as stream, open(part_path, "wb", buffering=_WRITE_BUFFER) as output:
        stream.seek(start)
        return _evaluate_lines(_numbered_lines(stream, first_line, end - start), output, rules, audit)


def _split(path: str, chunk_bytes: int) -> tuple[list[tuple[int, int, int]], int]:
    """Cut a file into (start, end, first line number) ranges that end at line boundaries; also count its lines."""
    size = os.path.getsize(path)
    ranges = []
    with open(path, "rb") as stream:
        start, line = 0, 1
        last = b""
        while start < size:
            stream.seek(min(start + chunk_bytes, size))
            stream.readline()  # move to the end of the line the cut falls in
            end = min(stream.tell(), size) if start + chunk_bytes < size else size
            stream.seek(start)
            ranges.append((start, end, line))
            chunk = stream.read(end - start)
            start, line, last = end, line + chunk.count(b"\n"), chunk[-1:]
    # a last line without a newline is still a line
    return ranges, line - 1 + (1 if last not in (b"", b"\n") else 0)


def _count_lines(path: str) -> int:
    with open(path, "rb") as stream:
        return sum(1 for _ in stream)


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
              progress: str = "auto", chunk_bytes: int = _CHUNK_BYTES, audit: str | Path | None = None,
              audit_input: bool = True) -> BatchSummary:
    """``audit``: record every assessment in this audit store (see ``imt_cds.audit.open_store``); ``audit_input``
    False keeps only each input's sha256 there."""
    rules_key = str(Path(rules).resolve()) if rules is not None else None
    audit_key = (str(audit), audit_input) if audit is not None else None
    _engine(rules_key, audit_key)  # load and check the rulebook (and open the store) before reading any input
    show = progress == "always" or (progress == "auto" and sys.stderr.isatty())
    with tempfile.TemporaryDirectory(prefix="imt-cds-batch-") as scratch:
        if source == "-":
            spooled = os.path.join(scratch, "stdin.ndjson")
            with open(spooled, "wb") as spool:
                shutil.copyfileobj(sys.stdin.buffer, spool)
            source = spooled
        ranges, total = _split(source, chunk_bytes) if jobs > 1 else ([], None)
        if show and total is None:
            total = _count_lines(source)  # only the progress bar needs the count up front
        bar = _Progress(total, show)
        output = sys.stdout.buffer if destination is None else open(destination, "wb", buffering=_WRITE_BUFFER)  # noqa: SIM115
        try:
            if jobs > 1:
                counts = _run_parallel(source, ranges, output, jobs, rules_key, scratch, bar, audit_key)
            else:
                counts = _run_serial(source, output, rules_key, bar, audit_key)
            output.flush()
        finally:
            bar.close()
            if destination is not None:
                output.close()
    return BatchSummary(sum(counts), counts[OK], counts[INVALID], counts[FAILED])


class _CountingWriter:
    """Passes writes through and advances the progress bar once per line."""

    def __init__(self, output: IO[bytes], bar: _Progress):
        self.output, self.bar = output, bar

    def write(self, data: bytes) -> Any:
        self.bar.advance()
        return self.output.write(data)


def _run_serial(source: str, output: IO[bytes], rules: str | None, bar: _Progress,
                audit: tuple[str, bool] | None = None) -> list[int]:
    with open(source, "rb") as stream:
        lines = _numbered_lines(stream, 1)
        return _evaluate_lines(lines, _CountingWriter(output, bar), rules, audit)  # type: ignore[arg-type]


def _run_parallel(source: str, ranges: list[tuple[int, int, int]], output: IO[bytes], jobs: int, rules: str | None,
                  scratch: str, bar: _Progress, audit: tuple[str, bool] | None = None) -> list[int]:
    units = [(source, start, end, line, os.path.join(scratch, f"part-{i:06d}"), rules, audit)
             for i, (start, end, line) in enumerate(ranges)]
    counts = [0, 0, 0]
    with multiprocessing.get_context().Pool(jobs) as pool:
        # imap yields in submission order, so parts are appended in input order as soon as each is done.
        for unit, unit_counts in zip(units, pool.imap(_work_unit, units), strict=True):
            _append(unit[4], output)
            os.unlink(unit[4])
            counts = [a + b for a, b in zip(counts, unit_counts, strict=True)]
            bar.advance(sum(unit_counts))
    return counts


def _append(path: str, output: IO[bytes]) -> None:
    """Append a part file to the output with a kernel copy where possible (the parts are hundreds of MB in all)."""
    output.flush()  # sendfile writes at the descriptor's position: nothing may wait in Python's buffer
    with open(path, "rb") as part:
        size = os.fstat(part.fileno()).st_size
        offset = 0
        try:
            target = output.fileno()
            while offset < size:
                sent = os.sendfile(target, part.fileno(), offset, size - offset)
                if sent == 0:
                    break
                offset += sent
        except (OSError, AttributeError, ValueError):  # an output without a descriptor or without sendfile
            pass
        if offset < size:
            part.seek(offset)
            shutil.copyfileobj(part, output)
