"""`make mutation`'s runner (tests/mutation_runner.sh): mutmut 2.5.1 counts only exit status 1 as a kill, so the
runner turns a broken import (pytest's collection error, 2, or its conftest import error, 4) into 1, and leaves every
other status as it is (5, no tests collected, or 4 for a wrong option, must never look like a kill)."""

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


def test_a_conftest_that_cannot_import_the_mutated_module_is_a_kill(tmp_path):
    # tests/conftest.py imports imt_cds: a mutant that breaks the import of a core module fails there, status 4
    assert _status(tmp_path, "def test_x():\n    pass\n", conftest="import no_such_module_of_imt_cds\n") == 1


def test_a_wrong_option_is_not_a_kill(tmp_path):
    assert _status(tmp_path, "def test_x():\n    pass\n", options=("--no-such-option-of-pytest",)) == 4
