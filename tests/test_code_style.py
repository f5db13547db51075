"""The code keeps the style pyproject.toml declares (``[tool.ruff]``: lines of at most 120 characters, and ruff's
default checks: unused imports and variables, undefined names, syntax). Checked on the package, the tests and the
benchmarks, with the ruff version the test extra pins."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing_in_the_package_and_the_tests():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise",
                             "imt_cds", "tests"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
