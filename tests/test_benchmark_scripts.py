"""The benchmark scripts still run (tests/benchmarks/): each once, with counts so small that its figures mean nothing.

They are scripts, never timed tests (README "Performance"), so nothing here reads a figure as a measurement; what is
checked is that a script runs through against the code as it is now (one of them had been left calling a function
that had moved), prints every row of its tables with a number in it, and says that the run was a smoke run.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent / "benchmarks"
NUMBER = r"[0-9][0-9,]*(?:\.[0-9]+)?"


def run_script(name: str, *arguments: str, timeout: float = 300) -> str:
    done = subprocess.run([sys.executable, str(BENCHMARKS / name), *arguments], capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{name} {' '.join(arguments)}: exit {done.returncode}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done.stdout


def table(output: str, header: str) -> list[list[str]]:
    """The rows of the Markdown table under ``header`` (the first one in the output), each as its cells."""
    lines = output.splitlines()
    start = lines.index(header) + 2  # the header, then the |---| line
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def table_rows(output: str, header: str) -> dict[str, list[str]]:
    """The table under ``header`` by its first column (each row's other cells)."""
    return {first: rest for first, *rest in table(output, header)}


def test_bench_runs_through_and_prints_every_target():
    output = run_script("bench.py", "--smoke")
    assert "disagreements: 0" in output
    rows = table_rows(output, "| measure | value | target | met |")
    assert list(rows) == [
        "evaluate() median", "evaluate() p99", "evaluate(x).to_json() median, generated patients",
        "evaluate(x).to_json() p99, generated patients", "throughput, one process",
        "RSS growth over 1,000 evaluations", "cold start (import + load + compile)",
        "batch --jobs 1 (200 patients)", "batch --jobs 2 speed-up"]
    for name, (value, _target, met) in rows.items():
        assert re.match(NUMBER, value), (name, value)
        assert met in ("yes", "NO"), (name, met)
    assert "ratio evaluate() / reference (medians): " in output
    assert output.rstrip().endswith("smoke run: the counts are too small for these figures to mean anything")


def test_profile_stages_runs_through_and_prints_every_stage():
    output = run_script("profile_stages.py", "--rounds", "1", "--calls", "20")
    rows = table_rows(output, "| stage | µs (best median) |")
    assert len(rows) == 12 and "durable-rules C calls" in rows and "evaluate() + to_json()" in rows
    for name, (value,) in rows.items():
        assert re.fullmatch(NUMBER, value), (name, value)


def test_cards_bench_runs_through_against_an_earlier_revision_too():
    # --against loads the modules of a git revision beside this tree's: HEAD is one every clone has.
    output = run_script("cards_bench.py", "--charts", "2", "--rounds", "1", "--against", "HEAD")
    rows = table_rows(output, "| stage | this tree | HEAD |")
    assert list(rows) == ["request JSON (parse + check)", "cards", "assessment_cards alone"]
    for name, cells in rows.items():
        assert len(cells) == 2 and all(re.fullmatch(NUMBER, c) for c in cells), (name, cells)


def test_service_bench_starts_the_servers_and_prints_every_target():
    output = run_script("service_bench.py", "--smoke")
    stages = table_rows(output, "| stage | median | p99 | CPU per call |")
    assert "in-process path (FHIR -> facts -> evaluate -> to_json)" in stages
    assert "worker job, whole (bytes in -> bytes out)" in stages
    phases = table(output, "| mix | clients | requests | req/s | p50 ms | p99 ms | server CPU µs/req | "
                           "workers CPU µs/req | total CPU µs/req | load generator CPU µs/req |")
    assert [row[:3] for row in phases] == [[mix, clients, requests] for mix in ("hits", "misses")
                                           for clients, requests in (("1", "8"), ("16", "32"), ("64", "64"))]
    assert all(re.fullmatch(NUMBER, cell) for row in phases for cell in row[3:]), phases
    assert re.search(r"\| hits \+ JWT \| 16 \| 32 \| " + NUMBER, output)
    assert re.search(r"\| misses \+ SQLite audit \| 16 \| 32 \| " + NUMBER, output)
    assert re.search(r"service CPU / in-process path: " + NUMBER + " / " + NUMBER + r" µs = " + NUMBER + "x", output)
    targets = table_rows(output, "| target | measured | wanted | met |")
    assert len(targets) == 6
    assert all(cells[-1] in ("yes", "NO") for cells in targets.values())
    assert output.rstrip().endswith("smoke run: the counts are too small for these figures to mean anything")


@pytest.mark.system
def test_service_bench_audit_appends_on_postgresql_keep_one_valid_chain():
    output = run_script("service_bench.py", "--smoke", "--audit-appends")
    lines = [line for line in output.splitlines() if re.match(r"\| [124] \| (1|16) \| ", line)]
    assert len(lines) == 5 and all(line.endswith("| valid |") for line in lines), lines
    assert re.search(r"16 clients, misses: " + NUMBER + r" requests/s .*; 132 records, chain valid", output)
