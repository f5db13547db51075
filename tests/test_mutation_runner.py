"""`make mutation`'s runner (tests/mutation_runner.sh): mutmut 2.5.1 counts only exit status 1 as a kill, so the
runner turns pytest's collection error (2: the mutant broke the import), a conftest that cannot be loaded (4: the
mutant broke the package's import) and a crash (killed by a signal) into 1, and leaves every other status as it is
(5, no tests collected, and 4 for a wrong path must never look like a kill)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

RUNNER = Path(__file__).with_name("mutation_runner.sh")


def _status(tmp_path: Path, source: str, conftest: str | None = None, options: tuple[str, ...] = ()) -> int:
    (tmp_path / "test_probe.py").write_text(source)
    if conftest is not None:
        (tmp_path / "conftest.py").write_text(conftest)
    command = ["sh", str(RUNNER), sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *options,
               str(tmp_path)]
    return subprocess.run(command, capture_output=True, timeout=120, check=False).returncode


@pytest.mark.parametrize(("source", "expected"), [
    ("def test_passes():\n    pass\n", 0),                                      # the mutant survived
    ("def test_fails():\n    assert False\n", 1),                              # killed by an assertion
    ("import no_such_module_of_imt_cds\n\ndef test_x():\n    pass\n", 1),      # killed: it cannot be imported
    ("def helper():\n    pass\n", 5),                                          # a wrong selection: not a kill
])
def test_the_runner_counts_an_import_failure_as_a_kill_and_nothing_else_new(tmp_path, source, expected):
    assert _status(tmp_path, source) == expected


def test_a_conftest_that_cannot_be_loaded_is_a_kill_and_a_wrong_path_is_not(tmp_path):
    # tests/conftest.py imports the package: a mutant that breaks its import (a syntax error, a class that cannot
    # be created) makes pytest exit 4, as a wrong path on the command line does.
    (tmp_path / "conftest.py").write_text("import broken_module_of_the_probe\n")
    (tmp_path / "broken_module_of_the_probe.py").write_text("class A:\n    __slots__ = None\n")
    assert _status(tmp_path, "def test_x():\n    pass\n") == 1
    command = ["sh", str(RUNNER), sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               str(tmp_path / "no_such_test_file.py")]
    (tmp_path / "conftest.py").write_text("")
    assert subprocess.run(command, capture_output=True, timeout=120, check=False).returncode == 4


def test_a_test_process_killed_by_a_signal_is_a_kill(tmp_path):
    # A mutant of the engine can make durable-rules crash the process (a segmentation fault): the tests saw it.
    source = "import os, signal\n\ndef test_crash():\n    os.kill(os.getpid(), signal.SIGSEGV)\n"
    assert _status(tmp_path, source) == 1


def test_a_conftest_that_cannot_import_the_mutated_module_is_a_kill(tmp_path):
    # tests/conftest.py imports imt_cds: a mutant that breaks the import of a core module fails there, status 4
    assert _status(tmp_path, "def test_x():\n    pass\n", conftest="import no_such_module_of_imt_cds\n") == 1


def test_a_wrong_option_is_not_a_kill(tmp_path):
    assert _status(tmp_path, "def test_x():\n    pass\n", options=("--no-such-option-of-pytest",)) == 4
