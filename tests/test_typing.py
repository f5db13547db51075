"""The package's annotations hold: mypy, pinned in the test extra, checks ``imt_cds`` as ``[tool.mypy]`` of
pyproject.toml asks (strict: every function annotated, no ``Any`` returned where a type is declared, no
``type: ignore`` left without a use). The wheel ships ``imt_cds/py.typed`` (PEP 561), so an embedding application's
type checker reads these annotations (tests/test_packaging.py checks the wheel holds it): a wrong one would
mislead it.

The package's dependencies (pydantic, FastAPI, uvicorn, psycopg...) carry their own annotations, which mypy reads as
installed (at the versions of .ci/constraints.txt in CI): after `make constraints` upgrades one, a failure here may
be its typing, not this package's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_finds_nothing_in_the_package(tmp_path):
    # (a cache of its own: nothing of an earlier run is trusted, and nothing is written into the checkout)
    result = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout
