"""The installed package: its public surface, and a wheel that works outside the checkout."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import imt_cds

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = {
    "Assessment", "DerivedFact", "Engine", "EngineError", "EvidenceError", "Finding", "ImtCdsError", "InputProblem",
    "InvalidInputError", "InvalidSettingError", "NaiveDateTimeError", "PatientFacts", "Reason", "Rulebook",
    "RulebookError", "Suppression", "TraceEntry", "UnknownRuleError", "evaluate", "load_rulebook", "parse_facts",
    "parse_facts_json",
}


def written_docstring(obj: object) -> str:
    """``obj``'s docstring as its author wrote it: empty when there is none, or when Python made it up.

    ``NamedTuple`` and ``@dataclass`` give a class without a docstring its signature as one (``Finding(code, kind,
    ...)``); that documents nothing, so it does not count."""
    doc = (obj.__doc__ or "").strip()
    name = getattr(obj, "__name__", "")
    return "" if re.fullmatch(rf"{re.escape(name)}\(.*\)", doc, re.DOTALL) else doc


def test_generated_docstrings_do_not_count_as_written_ones():
    from typing import NamedTuple
    from dataclasses import dataclass

    class Bare(NamedTuple):
        code: str

    @dataclass
    class Plain:
        code: str

    class Told(NamedTuple):
        """One code, told."""

        code: str

    assert Bare.__doc__ and Plain.__doc__  # Python does make one up ...
    assert written_docstring(Bare) == written_docstring(Plain) == ""  # ... and it is not taken for a written one
    assert written_docstring(Told) == "One code, told."


def test_the_public_names_are_exactly_the_documented_ones():
    assert set(imt_cds.__all__) == PUBLIC
    undocumented = sorted(name for name in PUBLIC if not written_docstring(getattr(imt_cds, name)))
    assert undocumented == []
    leaked = {n for n in vars(imt_cds) if not n.startswith("_") and n not in PUBLIC}
    modules = {n for n in leaked if type(getattr(imt_cds, n)).__name__ == "module"}
    assert leaked == modules  # only submodules, which Python attaches on import


def test_every_error_is_an_imt_cds_error_with_a_code():
    for name in ("EngineError", "EvidenceError", "InvalidInputError", "RulebookError"):
        error = getattr(imt_cds, name)
        assert issubclass(error, imt_cds.ImtCdsError) and error.code != imt_cds.ImtCdsError.code


@pytest.mark.slow
def test_a_wheel_installed_outside_the_checkout_evaluates_a_patient(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist), str(ROOT)],
                   check=True, timeout=600)
    (wheel,) = dist.glob("imt_cds-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "imt_cds/_data/rules/rulebook.yaml" in names
    assert "imt_cds/_data/seeds/002_f2ee5d647c6cfe07.txt" in names
    assert "imt_cds/py.typed" in names  # (PEP 561: an application's type checker reads the package's annotations)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    # The dependencies at the versions the suite is run with (.ci/constraints.txt), as pip resolves them for a wheel.
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-c", str(ROOT / ".ci" / "constraints.txt"),
                    str(wheel)], check=True, timeout=900)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    code = (
        "import imt_cds, pathlib; assert 'site-packages' in imt_cds.__file__, imt_cds.__file__; "
        "a = imt_cds.evaluate({'age_years': 8, 'tumor': {'resectability': 'unresectable'}, "
        "'molecular': {'alk': {'status': 'positive'}}}); print(' '.join(sorted(a.codes)))"
    )
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                            check=True)
    assert "REC_CRIZOTINIB_ALK" in result.stdout.split()
    script = subprocess.run([str(venv / "bin" / "imt-cds"), "evaluate", "-"], input='{"age_years": 2}',
                            capture_output=True, text=True, cwd=tmp_path, env=env)
    assert script.returncode == 0 and "Multidisciplinary team review" in script.stdout
