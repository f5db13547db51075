"""Batch evaluation: one patient per NDJSON line in, one record per line out, in input order.

**A line never stops the run.** A line that cannot be read, parsed, validated or evaluated (whatever the reason,
including an unexpected error or the death of the worker process evaluating it) yields
``{"line": N, "errors": [{"path", "message", "value"}, ...]}`` in its place; the run goes on and the summary counts
it. Blank lines (only whitespace, e.g. the newline at the end of a file) are skipped: no output, not counted. So
output record k answers the k-th non-blank input line; every record but a ``full`` document also names its line.

**What is written per line** (``detail``): ``full``, the whole assessment document (README, Output; about 14 kB);
``summary``, ``{"line", "patient_id", "codes", "kinds", "rulebook", "input_sha256"}`` (codes in document order:
recommendations then risk flags, each sorted by code; kinds maps each code to its kind; rulebook is
``{"name", "version", "sha256"}``); ``codes``, ``{"line", "patient_id", "codes"}``.

**Work units.** The input is cut into byte ranges at line boundaries; each unit is evaluated into its own part file,
and the parent appends the parts to the output in input order. With ``jobs > 1`` the units run in worker processes
(the parent only splits, concatenates and records: on a 2-core machine a busy parent would share two cores three
ways); with ``jobs == 1`` in this process. Standard input (or any input that is not a regular file) is first spooled
to a temporary file. Each process evaluates with its own engine and memo cache; memory stays flat.

**A worker process that dies** (killed, out of memory, a crash in native code) breaks its pool. The parent then
starts a fresh pool for the units not yet done; the units that were being evaluated when it broke are re-run one
line at a time in a process of their own, so that only a line whose evaluation kills its process is lost (reported
as a line error). Every break takes at least one unit out of the shared pool, so the run always ends.

**Audit: write, then record.** With an audit store, workers evaluate without recording; the parent appends a unit's
part to the output, flushes it (and syncs a regular file), and only then records the unit's assessments, in input
order, ``RECORDS_PER_TRANSACTION`` per transaction (``AuditStore.append_contents``: one durable commit for the group,
all or none). So a record exists only for an assessment that was written. If recording fails, the run stops (fail
closed: ``AuditError``), and a regular output file is cut back to just before the first unrecorded line (the first of
the group that failed), so no unrecorded assessment remains in it either (an output stream such as a pipe cannot be
cut back: it may end with up to one unit's unrecorded lines, and the error says from which line).
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import orjson

from ..audit.record import new_record_content
from ..core.errors import AuditError, EngineError, ImtCdsError, InvalidInputError
from ..core.wording import plural
from .audit import add_audit_options, check_audit_target
from .common import EPILOG, EXIT_INVALID_INPUT, EXIT_OK, EXIT_SOME_LINES_INVALID, jobs, rules_option

if TYPE_CHECKING:  # (imported by _engine when a run needs one)
    from ..core.engine import Engine

__all__ = ["DETAILS", "BatchPathError", "BatchSummary", "check_paths", "evaluate_line", "run_batch"]

Detail = Literal["full", "summary", "codes"]
DETAILS: tuple[Detail, ...] = ("full", "summary", "codes")
OK, INVALID, FAILED, BLANK = 0, 1, 2, 3
CACHE_SIZE = 4096  # assessments memoized per process (a few kB each: input and firings, nothing materialized)
_WRITE_BUFFER = 1 << 20  # full assessments are ~14 kB each: write in large blocks
_CHUNK_BYTES = 1 << 18  # ~250 patients per work unit: workers finish within a fraction of a second of each other
# Audit records appended per transaction: one durable commit (a disk flush) for each group instead of each record;
# a failed group leaves all its lines unrecorded, so the output is cut back to its first line.
RECORDS_PER_TRANSACTION = 64


class BatchPathError(ImtCdsError):
    """The input cannot be read or the output cannot be written (missing file or folder, output = input): nothing
    was evaluated and nothing was written. The message is one line naming the path."""

    code = "batch_path"


@dataclass(frozen=True)
class BatchSummary:
    total: int  # non-blank lines
    evaluated: int
    invalid: int  # lines that could not be read or validated
    failed: int  # valid lines whose evaluation failed (engine error, internal error, dead worker process)
    output_bytes: int = 0


@dataclass(frozen=True)
class _Unit:
    """Lines in bytes [start, end) of the input, the first one numbered first_line, evaluated into part."""

    start: int
    end: int
    first_line: int
    part: str


@dataclass(frozen=True)
class _Pending:
    """What the parent needs to record one assessment after writing it: what ``new_record_content`` reads of an
    ``Assessment`` (``audit.record.Recordable``), kept as its texts."""

    line: int
    offset: int  # where the line starts in its unit's part file
    patient_id: str | None
    provenance: Any  # assessment.Provenance
    input_json: bytes
    document: str

    def canonical_input_json(self) -> bytes:
        return self.input_json

    def to_json(self) -> str:
        return self.document


@dataclass(frozen=True)
class _Task:
    """Everything a worker needs for one unit (picklable)."""

    source: str
    unit: _Unit
    rules: str | None
    detail: Detail
    record: bool  # keep what the parent needs to record each assessment
    before_line: Callable[[int, bytes], None] | None = None  # tests only: runs before each line, in the worker


@dataclass
class _UnitResult:
    counts: list[int]
    pending: list[_Pending]


@lru_cache(maxsize=4)
def _engine(rules: str | None) -> Engine:
    # One engine per (process, rulebook). Worker processes forked after the parent built it inherit it.
    from ..core.engine import Engine

    engine = Engine(rules, cache_size=CACHE_SIZE)
    # What exists now (modules, the rulebook, the compiled program) lives as long as the process: out of the cyclic
    # collector's sight, its full passes walk only what the run itself allocates.
    gc.freeze()
    return engine


def _error_record(number: int, errors: list[dict[str, Any]]) -> bytes:
    try:
        return orjson.dumps({"line": number, "errors": errors})
    except (TypeError, ValueError):  # a value JSON cannot hold: still say what was wrong, without the value
        return orjson.dumps({"line": number, "errors": [{"path": _text(e.get("path")), "message":
                                                           _text(e.get("message")), "value": None} for e in errors]})


def _text(value: Any) -> str:
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


def _failure(number: int, message: str) -> bytes:
    return _error_record(number, [{"path": "", "message": message, "value": None}])


def evaluate_line(number: int, text: bytes, rules: str | None = None,
                  detail: Detail = "full") -> tuple[bytes, int, Any]:
    """Evaluate one non-blank NDJSON line; return the output record (JSON bytes, no newline), its status and the
    assessment (None unless evaluated). Never raises for anything the line contains."""
    from ..core.validation import parse_facts_json

    try:
        facts = parse_facts_json(text)
    except InvalidInputError as exc:
        return _error_record(number, exc.to_dict()["errors"]), INVALID, None
    except Exception as exc:  # noqa: BLE001 - a line must never stop the run; reported on that line
        return _failure(number, f"could not read this line: {type(exc).__name__}: {_text(exc)}"), INVALID, None
    try:
        assessment = _engine(rules).evaluate(facts)
        return _render(number, assessment, detail), OK, assessment
    except EngineError as exc:
        return _failure(number, f"the rules engine failed on this line ({exc.code}): {_text(exc)}"), FAILED, None
    except Exception as exc:  # noqa: BLE001 - as above: one line's failure is that line's record
        return _failure(number, f"internal error on this line: {type(exc).__name__}: {_text(exc)}"), FAILED, None


def _render(number: int, assessment: Any, detail: Detail) -> bytes:
    if detail == "full":
        return assessment.to_json().encode()  # type: ignore[no-any-return]
    findings = assessment.findings
    record: dict[str, Any] = {"line": number, "patient_id": assessment.patient_id,
                              "codes": [f.code for f in findings]}
    if detail == "summary":
        p = assessment.provenance
        record["kinds"] = {f.code: f.kind for f in findings}
        record["rulebook"] = {"name": p.rulebook_name, "version": p.rulebook_version, "sha256": p.rulebook_sha256}
        record["input_sha256"] = p.input_sha256
    return orjson.dumps(record)


def _work_unit(task: _Task) -> _UnitResult:
    """Evaluate one unit's lines into its part file (in a worker process, or in this one)."""
    counts = [0, 0, 0, 0]
    pending: list[_Pending] = []
    with open(task.source, "rb") as stream, open(task.unit.part, "wb", buffering=_WRITE_BUFFER) as output:
        stream.seek(task.unit.start)
        for number, text in _numbered_lines(stream, task.unit.first_line, task.unit.end - task.unit.start):
            if not text.strip():
                counts[BLANK] += 1
                continue
            if task.before_line is not None:
                task.before_line(number, text)
            offset = output.tell()
            result, status, assessment = evaluate_line(number, text, task.rules, task.detail)
            output.write(result + b"\n")
            counts[status] += 1
            if task.record and assessment is not None:
                pending.append(_Pending(number, offset, assessment.patient_id, assessment.provenance,
                                        assessment.canonical_input_json(), assessment.to_json()))
    return _UnitResult(counts, pending)


def _numbered_lines(stream: IO[bytes], first_number: int, limit: int) -> Iterator[tuple[int, bytes]]:
    number, remaining = first_number, limit
    while remaining > 0:
        line = stream.readline(remaining)
        if not line:
            return
        remaining -= len(line)
        yield number, line.rstrip(b"\r\n")
        number += 1


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


def _line_ranges(path: str, unit: _Unit) -> list[tuple[int, int, int]]:
    """The (start, end, number) of every line of a unit."""
    ranges = []
    with open(path, "rb") as stream:
        stream.seek(unit.start)
        position, number = unit.start, unit.first_line
        while position < unit.end:
            line = stream.readline(unit.end - position)
            if not line:
                break
            ranges.append((position, position + len(line), number))
            position += len(line)
            number += 1
    return ranges


def _clock(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class _Progress:
    """A one-line progress bar with the rate and the time left, on standard error, redrawn at most ten times a
    second."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.done, self.last = total, enabled, 0, 0.0
        self.start = time.monotonic()

    def advance(self, count: int = 1) -> None:
        self.done += count
        now = time.monotonic()
        if self.enabled and (now - self.last > 0.1 or self.done >= self.total):
            self.last = now
            sys.stderr.write("\r" + self.line(now - self.start))
            sys.stderr.flush()

    def line(self, elapsed: float) -> str:
        rate = self.done / max(elapsed, 1e-9)
        filled = int(30 * self.done / self.total) if self.total else 30
        bar = "#" * filled + "." * (30 - filled)
        if self.done >= self.total:
            timing = f"done in {_clock(elapsed)}"
        elif self.done:
            timing = f"ETA {_clock((self.total - self.done) / rate)}"
        else:
            timing = "ETA --:--"
        return f"[{bar}] {self.done}/{self.total} lines, {rate:,.0f}/s, {timing}"

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def check_paths(source: str, destination: str | None) -> None:
    """Refuse, before anything is evaluated or written, an input that cannot be read, an output that cannot be
    written, and an output that is the input (same file, also through a symbolic or hard link: opening it for
    writing would truncate the input before a line was read)."""
    source_stat = None
    if source != "-":
        try:
            source_stat = os.stat(source)
        except OSError as exc:
            raise BatchPathError(f"cannot read the input {source}: {exc.strerror}") from None
        if stat.S_ISDIR(source_stat.st_mode):
            raise BatchPathError(f"cannot read the input {source}: it is a directory")
        if not os.access(source, os.R_OK):
            raise BatchPathError(f"cannot read the input {source}: permission denied")
    if destination is None:
        return
    try:
        destination_stat = os.stat(destination)
    except FileNotFoundError:
        folder = os.path.dirname(os.path.abspath(destination))
        if not os.path.isdir(folder):
            raise BatchPathError(f"cannot write the output {destination}: folder {folder} does not exist") from None
        return
    except OSError as exc:
        raise BatchPathError(f"cannot write the output {destination}: {exc.strerror}") from None
    if stat.S_ISDIR(destination_stat.st_mode):
        raise BatchPathError(f"cannot write the output {destination}: it is a directory")
    if source_stat is not None and _same_file(source_stat, destination_stat):
        raise BatchPathError(f"the output {destination} is the input {source}: writing it would destroy the input; "
                             "choose another output file")


def run_batch(source: str, destination: str | None, jobs: int = 1, rules: Path | str | None = None,
              progress: str = "auto", chunk_bytes: int = _CHUNK_BYTES, audit: str | Path | None = None,
              audit_input: bool = True, detail: Detail = "full",
              _before_line: Callable[[int, bytes], None] | None = None) -> BatchSummary:
    """Evaluate ``source`` (a path, or ``-`` for standard input) into ``destination`` (a path, or None for standard
    output). ``audit``: record every written assessment in this audit store (see ``imt_cds.audit.open_store``);
    ``audit_input`` False keeps only each input's sha256 there. Raises ``BatchPathError`` (nothing done) for an
    unusable input or output, ``AuditError`` when an assessment cannot be recorded (the run stops)."""
    if detail not in DETAILS:
        raise ValueError(f"detail must be one of {', '.join(DETAILS)}, got {detail!r}")
    check_paths(source, destination)
    rules_key = str(Path(rules).resolve()) if rules is not None else None
    rulebook = _engine(rules_key).rulebook  # load and check the rulebook before reading any input
    store = None
    if audit is not None:
        from ..audit import open_store

        store = open_store(audit, store_input=audit_input)
    show = progress == "always" or (progress == "auto" and sys.stderr.isatty())
    try:
        with tempfile.TemporaryDirectory(prefix="imt-cds-batch-") as scratch:
            if source == "-" or not stat.S_ISREG(os.stat(source).st_mode):
                spooled = os.path.join(scratch, "input.ndjson")
                with open(spooled, "wb") as spool:
                    if source == "-":
                        shutil.copyfileobj(sys.stdin.buffer, spool)
                    else:
                        with open(source, "rb") as stream:
                            shutil.copyfileobj(stream, spool)
                source = spooled
            ranges, total = _split(source, chunk_bytes)
            units = [_Unit(start, end, line, os.path.join(scratch, f"part-{i:06d}"))
                     for i, (start, end, line) in enumerate(ranges)]
            tasks = [_Task(source, unit, rules_key, detail, store is not None, _before_line) for unit in units]
            bar = _Progress(total, show)
            writer = _Writer(destination, store, rulebook)
            results: Generator[_UnitResult, None, None] = (
                _run_parallel(tasks, jobs) if jobs > 1 else (_work_unit(task) for task in tasks))
            counts = [0, 0, 0, 0]
            try:
                for task, result in zip(tasks, results, strict=True):
                    writer.append(task.unit, result)
                    counts = [a + b for a, b in zip(counts, result.counts, strict=True)]
                    bar.advance(sum(result.counts))
            finally:
                results.close()  # stops the worker processes at once if the run stopped early
                bar.close()
                writer.close()
    finally:
        if store is not None:
            store.close()
    return BatchSummary(counts[OK] + counts[INVALID] + counts[FAILED], counts[OK], counts[INVALID], counts[FAILED],
                        writer.written)


class _Writer:
    """Appends unit parts to the output in order, then records their assessments (write, then record)."""

    def __init__(self, destination: str | None, store: Any, rulebook: Any):
        self.store, self.rulebook, self.written = store, rulebook, 0
        self.archived = False  # the rulebook's files put in the store's archive (before the first record)
        self.output: IO[bytes] = sys.stdout.buffer
        if destination is not None:
            self.output = open(destination, "wb", buffering=_WRITE_BUFFER)  # noqa: SIM115 - closed in close()
        # Only a regular file can be flushed to a disk (fsync of /dev/null, a pipe or a terminal fails: EINVAL).
        self.to_file = destination is not None and stat.S_ISREG(os.fstat(self.output.fileno()).st_mode)

    def append(self, unit: _Unit, result: _UnitResult) -> None:
        base = self.written
        self.written += _append(unit.part, self.output)
        os.unlink(unit.part)
        if self.store is None or not result.pending:
            return
        self.output.flush()
        if self.to_file:
            os.fsync(self.output.fileno())  # written means on disk before the record says so
        if not self.archived:
            self.store.archive(self.rulebook)  # what the records below commit to
            self.archived = True
        # Up to RECORDS_PER_TRANSACTION records in one transaction, one durable commit: all or none of them.
        for start in range(0, len(result.pending), RECORDS_PER_TRANSACTION):
            group = result.pending[start:start + RECORDS_PER_TRANSACTION]
            try:
                self.store.append_contents([new_record_content(pending, store_input=self.store.store_input)
                                            for pending in group])
            except AuditError as exc:
                first = group[0]
                self._cut_back(base + first.offset)
                cut = "the output ends before it" if self.to_file else "the output may hold lines from it on"
                raise type(exc)(f"line {first.line} could not be recorded in the audit trail ({exc}); the run "
                                f"stopped and {cut}") from exc

    def _cut_back(self, size: int) -> None:
        if not self.to_file:
            return
        self.output.flush()
        self.output.truncate(size)
        self.written = size

    def close(self) -> None:
        self.output.flush()
        if self.to_file:
            self.output.close()


def _append(path: str, output: IO[bytes]) -> int:
    """Append a part file to the output with a kernel copy where possible; return its size."""
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
    return size


# --- worker processes, and what happens when one dies ---------------------------------------------------------------


def _new_pool(jobs: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context())


def _run_parallel(tasks: list[_Task], jobs: int) -> Generator[_UnitResult, None, None]:
    """Yield each task's result in input order, running them in a pool of ``jobs`` processes.

    When the pool breaks (a worker died), every task already done keeps its result; the tasks that were running
    (their part file exists) are suspects and are re-run alone, line by line (``_run_alone``); the others go to a
    fresh pool. Each break makes at least one task a suspect, and a suspect never returns to a shared pool, so
    there are at most as many breaks as tasks."""
    suspects: set[int] = set()
    pool = _new_pool(jobs)
    futures: dict[int, Future[_UnitResult]] = {i: _submit(pool, task) for i, task in enumerate(tasks)}
    try:
        for i, task in enumerate(tasks):
            while True:
                if i in suspects:
                    yield _run_alone(task)
                    break
                try:
                    result = futures[i].result()
                except BrokenProcessPool:
                    pool.shutdown(wait=True, cancel_futures=True)
                    running = _running_when_broken(tasks, futures, i)
                    suspects.update(running or {i})
                    pool = _new_pool(jobs)
                    for j in range(i, len(tasks)):
                        if j not in suspects and not _succeeded(futures[j]):
                            futures[j] = _submit(pool, tasks[j])
                    continue
                yield result
                break
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _submit(pool: ProcessPoolExecutor, task: _Task) -> Future[_UnitResult]:
    """The task's future in the pool; when the pool broke while tasks were still being handed to it (a worker died
    early), a future that holds that BrokenProcessPool, so the task is handled as one the break interrupted (given to
    the next pool) instead of the error escaping the run."""
    try:
        return pool.submit(_work_unit, task)
    except BrokenProcessPool as exc:
        broken: Future[_UnitResult] = Future()
        broken.set_exception(exc)
        return broken


def _succeeded(future: Future[_UnitResult]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


def _running_when_broken(tasks: list[_Task], futures: dict[int, Future[_UnitResult]], first: int) -> set[int]:
    """Tasks that had started (the worker creates the part file first thing) but not finished when the pool broke;
    their part files are removed, to be written again."""
    running = set()
    for j in range(first, len(tasks)):
        if not _succeeded(futures[j]) and os.path.exists(tasks[j].unit.part):
            running.add(j)
            os.unlink(tasks[j].unit.part)
    return running


def _run_alone(task: _Task) -> _UnitResult:
    """Run a suspect task one line at a time in a process of its own: a line that kills the process is reported as
    that line's error, every other line is evaluated as usual."""
    counts = [0, 0, 0, 0]
    pending: list[_Pending] = []
    pool = _new_pool(1)
    try:
        with open(task.unit.part, "wb") as output:
            for start, end, number in _line_ranges(task.source, task.unit):
                line_task = replace(task, unit=_Unit(start, end, number, f"{task.unit.part}-{number}"))
                try:
                    result = pool.submit(_work_unit, line_task).result()
                except BrokenProcessPool:
                    pool.shutdown(wait=True, cancel_futures=True)
                    pool = _new_pool(1)
                    output.write(_failure(number, "the worker process evaluating this line died (killed, out of "
                                                  "memory or crashed); the line was not evaluated") + b"\n")
                    counts[FAILED] += 1
                    _remove(line_task.unit.part)
                    continue
                offset = output.tell()
                with open(line_task.unit.part, "rb") as part:
                    shutil.copyfileobj(part, output)
                _remove(line_task.unit.part)
                counts = [a + b for a, b in zip(counts, result.counts, strict=True)]
                pending.extend(replace(p, offset=p.offset + offset) for p in result.pending)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return _UnitResult(counts, pending)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# -- the command ------------------------------------------------------------------------------------------------------


def register(commands: Any) -> None:
    batch = commands.add_parser(
        "batch",
        help="evaluate one patient per line of an NDJSON file",
        description="Evaluate one patient per line (NDJSON) and write one JSON record per line, in input order. "
        'A line that cannot be read or evaluated yields {"line": N, "errors": [...]} in its place and the run goes '
        "on (exit 3). Blank lines are skipped. A UTF-8 byte order mark is accepted.",
        epilog="""\
what each line holds (--detail):
  full     the whole assessment document (default); about 14 KB per line: 50,000 patients give ~700 MB
  summary  {"line", "patient_id", "codes", "kinds", "rulebook", "input_sha256"}; ~0.7 KB per line
  codes    {"line", "patient_id", "codes"}; ~0.2 KB per line
  codes are in document order (recommendations, then risk flags, each sorted by code); kinds maps each code to its
  kind; rulebook is {"name", "version", "sha256"}; line is the input line number.
example: imt-cds batch examples/patients.ndjson -o assessments.ndjson --jobs 2 --detail summary
""" + EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    batch.add_argument("input", metavar="IN", help="NDJSON file with one patient per line, or - for standard input")
    batch.add_argument("-o", "--output", metavar="OUT",
                       help="write the records here (default: standard output); never the input file itself")
    batch.add_argument("--detail", choices=("full", "summary", "codes"), default="full",
                       help="what each output line holds: full (default; ~14 KB per line), summary (~0.7 KB) or "
                       "codes (~0.2 KB); see below")
    batch.add_argument("--jobs", type=jobs, default=1, metavar="N",
                       help="worker processes (default 1; 0 = one per CPU core)")
    batch.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                       help="progress bar with the time left on standard error (auto: only when it is a terminal)")
    rules_option(batch)
    add_audit_options(batch)
    batch.set_defaults(run=_run_batch)


def _run_batch(args: argparse.Namespace) -> int:
    try:
        check_audit_target(args)
        check_paths(args.input, args.output)  # before the output is created (or the input overwritten)
        summary = run_batch(
            source=args.input,
            destination=args.output,
            jobs=args.jobs,
            rules=args.rules,
            progress=args.progress,
            audit=args.audit,
            audit_input=not args.audit_no_input,
            detail=args.detail,
        )
    except BatchPathError as exc:
        print(f"imt-cds batch: error: {exc}", file=sys.stderr)
        return EXIT_INVALID_INPUT
    print(f"imt-cds batch: {plural(summary.total, 'line')}: {summary.evaluated} evaluated, {summary.invalid} invalid"
          + (f", {summary.failed} failed" if summary.failed else ""), file=sys.stderr)
    if args.detail == "full" and summary.output_bytes > _LARGE_BATCH_OUTPUT:
        print(f"imt-cds batch: note: wrote {summary.output_bytes / 2**20:,.0f} MiB of full assessments; "
              "--detail summary or --detail codes write a small fraction of that", file=sys.stderr)
    return EXIT_SOME_LINES_INVALID if summary.invalid or summary.failed else EXIT_OK


_LARGE_BATCH_OUTPUT = 100 << 20  # a full-detail run this large gets a note about the lighter outputs
