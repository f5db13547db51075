"""`make mutation`'s driver (tests/mutate.py): what it counts as a kill, which tests it picks for a mutant, and one
real run on a module of the package (a mutant the tests catch and an equivalent one, both known from
tests/mutation-survivors.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import mutate  # noqa: E402 - the driver is a script beside the tests, not a package module

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("status", "output", "verdict"), [
    (0, "", "survived"),
    (1, "1 failed", "killed"),
    (2, "ERROR collecting tests/test_x.py", "killed"),           # the mutant broke a test module's import
    (4, "ImportError while loading conftest '/x/conftest.py'", "killed"),  # ... or the package's
    (4, "ERROR tests/test_x.py\nERROR: found no collectors for /x/tests/test_x.py::test_a", "killed"),  # by node id
    (4, "ERROR: file or directory not found: tests/nope.py", "error"),      # a wrong path is never a kill
    (4, "ERROR: not found: /x/tests/test_y.py::test_nope", "error"),        # nor a test that is not there
    (5, "no tests ran", "error"),                                 # nor a selection that selects nothing
    (3, "INTERNALERROR", "error"),
    ("signal 11", "", "killed"),                                  # durable-rules crashed under the mutant
    ("timeout", "", "timeout"),
])
def test_what_counts_as_seeing_the_mutant(status, output, verdict):
    assert mutate.verdict_of(status, output)[0] == verdict


SOURCE = '''\
import os

LIMIT = 3


@decorated(
    option=1,
)
def outer(value, default=LIMIT):
    if value > 1 and (
            value < 9):
        return value
    def inner():
        return 2
    return inner


class Thing:
    size = 4

    def method(self):
        return self.size
'''


def test_each_line_belongs_to_its_statement_and_knows_whether_it_runs_at_import():
    spans = mutate.statement_lines(SOURCE)
    assert spans[3] == (range(3, 4), True)                  # module level
    assert spans[6] == spans[9] == (range(6, 10), True)     # decorators and the def line (defaults) run at import
    assert spans[10] == spans[11] == (range(10, 12), False)  # an if's header, both of its lines, not its body
    assert spans[12] == (range(12, 13), False)
    assert spans[13] == (range(13, 14), False)              # a def inside a function runs when the function does
    assert spans[14] == (range(14, 15), False)
    assert spans[19] == (range(19, 20), True)               # a class body runs at import
    assert spans[21] == (range(21, 22), True)
    assert spans[22] == (range(22, 23), False)
    assert 5 not in spans and 2 not in spans                # blank lines belong to nothing


def test_a_mutant_runs_only_the_tests_that_execute_its_statement_unless_it_also_runs_at_import():
    spans = mutate.statement_lines(SOURCE)
    covering = {10: ["t::b", "t::a"], 11: ["t::c"], 12: ["t::a"], 3: [""], 14: ["", "t::a"]}
    assert mutate.tests_for(11, spans, covering) == ["t::a", "t::b", "t::c"]  # both lines of the if's header
    assert mutate.tests_for(12, spans, covering) == ["t::a"]
    assert mutate.tests_for(3, spans, covering) == []       # module level: the whole selection
    assert mutate.tests_for(14, spans, covering) == []      # also run while importing: the whole selection
    assert mutate.tests_for(13, spans, covering) == []      # executed by no test: the whole selection decides
    assert mutate.tests_for(99, spans, covering) == []      # a line outside any statement: the same


def test_tests_are_run_in_the_order_of_the_selection_files():
    chosen = ["tests/test_b.py::x", "tests/test_a.py::z", "tests/test_c.py::y", "tests/test_a.py::a"]
    # The selection names test_b.py first (the file written for the module), then test_a.py; test_c.py is not in it.
    assert mutate.ordered(chosen, ["tests/test_b.py", "tests/test_a.py", "-k", "x"]) == [
        "tests/test_b.py::x", "tests/test_a.py::a", "tests/test_a.py::z", "tests/test_c.py::y"]


@pytest.mark.parametrize(("text", "ids"), [("3", {3}), ("1,4-6", {1, 4, 5, 6}), ("7-7", {7})])
def test_ids_and_ranges(text, ids):
    assert mutate.parse_ids(text, 10) == ids


@pytest.mark.parametrize(("text", "message"), [("0", "outside 1-10"), ("9-11", "outside 1-10"), ("5-3", "outside"),
                                               ("x", "not an id")])
def test_ids_outside_the_module_are_refused(text, message):
    with pytest.raises(SystemExit, match=message):
        mutate.parse_ids(text, 10)


def test_the_ids_are_mutmuts_own():
    """The ids in tests/mutation-survivors.md were given by mutmut 2.5.1; the driver must number the same way."""
    mutants = {number: (line, mutated)
               for number, line, _, mutated in mutate.mutants_of(ROOT / "imt_cds/core/engine.py")}
    assert "DEFAULT_MAX_FIRINGS = 10001" in mutants[1][1]
    assert "message.index('\"', 3)" in mutants[74][1]
    assert "@lru_cache(maxsize=2)" in mutants[131][1]


@pytest.mark.slow
def test_a_real_run_kills_a_caught_mutant_and_keeps_an_equivalent_one(tmp_path):
    """engine.py's mutant 2 (`DEFAULT_MAX_FIRINGS = None`) is caught; 1 (`= 10001`) is equivalent (see
    tests/mutation-survivors.md). The checkout is left as it was."""
    before = (ROOT / "imt_cds/core/engine.py").read_bytes()
    out = tmp_path / "results.jsonl"
    run = subprocess.run([sys.executable, str(ROOT / "tests/mutate.py"), "imt_cds/core/engine.py", "--ids", "1-2",
                          "--work", str(tmp_path / "work"), "--out", str(out), "--", "tests/test_engine_mutants.py"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    verdicts = {item["id"]: item for item in map(json.loads, out.read_text().splitlines())}
    assert verdicts[1]["status"] == "survived" and verdicts[1]["how"] == "selection"
    assert verdicts[2]["status"] == "killed"
    assert "imt_cds/core/engine.py: 1 of 2 detected (1 killed, 1 survived)" in run.stdout
    assert (ROOT / "imt_cds/core/engine.py").read_bytes() == before
    # The copy holds the original again, and no byte-code of the mutated module was left to shadow it.
    copy = tmp_path / "work" / "engine.py" / "imt_cds" / "core"
    assert (copy / "engine.py").read_bytes() == before
    assert not list(copy.glob("__pycache__/engine.*.pyc"))


@pytest.mark.slow
def test_a_mutant_that_stops_a_test_module_importing_is_a_kill(tmp_path):
    """record.py's mutant `{**content, ...}` -> `{*content, ...}` is a syntax error in a module the conftest does
    not import. Given the covering tests' node ids, pytest answers "found no collectors" (status 4): the collection
    error it is, a kill at once, without the whole selection. (Its id is looked up: an edit of record.py above it
    shifts the numbering.)"""
    listing = subprocess.run([sys.executable, str(ROOT / "tests/mutate.py"), "imt_cds/audit/record.py", "--list"],
                             capture_output=True, text=True, timeout=120, cwd=ROOT, check=True).stdout
    (mutant_id,) = [line.split()[0] for line in listing.splitlines()
                    if "sealed = {**content," in line and "->  sealed = {*content," in line]
    out = tmp_path / "results.jsonl"
    run = subprocess.run([sys.executable, str(ROOT / "tests/mutate.py"), "imt_cds/audit/record.py", "--ids", mutant_id,
                          "--work", str(tmp_path / "work"), "--out", str(out), "--",
                          "tests/test_audit_store.py", "-k", "not postgres"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    (verdict,) = map(json.loads, out.read_text().splitlines())
    assert (verdict["status"], verdict["detail"]) == ("killed", "a test module could not be collected")
    assert verdict["how"].startswith("covering "), verdict


def test_the_mutants_are_made_of_the_text_given_not_of_the_file_as_it_is_now(tmp_path):
    """A run mutates the committed copy; the checkout may be edited meanwhile (a commit during a run once shifted
    every later id of a module), so the mutants come from the text the run started with."""
    module = tmp_path / "m.py"
    module.write_text("A = 1\n")
    assert [mutated for _, _, _, mutated in mutate.mutants_of(module, "B = 2\n")] == ["B = 3", "B = None"]
    assert mutate.mutated_source_of(module, "B = 2\n", 1) == "B = 3\n"
