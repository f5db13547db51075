"""The set-up never silently does nothing: the system packages' script survives every install failure and says what
will be skipped; in strict mode (CI) a skipped test fails; a bare run ends with the skips in plain sight; the
Makefile installs what each command needs and rebuilds .venv for another interpreter; tiers select what they say."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SETUP = ROOT / "tests" / "system_setup.sh"


# --- tests/system_setup.sh ------------------------------------------------------------------------------------------


def _machine_without_packages(tmp_path: Path, apt_get_exit: int) -> tuple[dict[str, str], Path]:
    """A PATH with neither PostgreSQL nor Chromium, whose apt-get fails as one without reachable mirrors does (it
    logs each call), and a root with no package lists."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "apt-get.log"
    apt_get = bin_dir / "apt-get"
    apt_get.write_text(f'#!/bin/bash\necho "$*" >> {log}\necho "E: Failed to fetch (mirror unreachable)" >&2\n'
                       f"exit {apt_get_exit}\n")
    apt_get.chmod(apt_get.stat().st_mode | stat.S_IEXEC)
    for tool in ("id", "cat"):  # what the script runs besides bash's own builtins
        (bin_dir / tool).symlink_to(shutil.which(tool))
    env = {"PATH": str(bin_dir), "SYSTEM_SETUP_ROOT": str(tmp_path / "root"), "HOME": str(tmp_path)}
    return env, log


def test_system_setup_survives_apt_get_failing_and_says_what_will_be_skipped(tmp_path):
    env, log = _machine_without_packages(tmp_path, apt_get_exit=100)
    result = subprocess.run(["/bin/bash", str(SETUP)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "could not install postgresql chromium" in result.stderr
    assert "PostgreSQL audit-store tests (marker 'system') will be skipped" in result.stderr
    assert "headless-Chromium report test (marker 'system') will be skipped" in result.stderr
    assert "IMT_CDS_STRICT=1" in result.stderr
    if os.geteuid() == 0:  # as root it really tried: update, install, update again, install again
        calls = log.read_text().splitlines()
        assert sum(call.startswith("install") for call in calls) == 2 and len(calls) == 4, calls


def test_system_setup_without_apt_get_says_so_and_goes_on(tmp_path):
    env, log = _machine_without_packages(tmp_path, apt_get_exit=100)
    (Path(env["PATH"]) / "apt-get").unlink()
    result = subprocess.run(["/bin/bash", str(SETUP)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "no apt-get here" in result.stderr and "will be skipped" in result.stderr


# --- strict mode and the skip summary -----------------------------------------------------------------------------

SKIPPING_TESTS = '''
import pytest

def test_runs():
    pass

def test_needs_postgres():
    pytest.skip("PostgreSQL server not installed")

@pytest.mark.skipif(True, reason="the shared project folder is not beside this checkout")
def test_needs_shared():
    pass
'''


def test_in_strict_mode_every_skip_is_a_failure(pytester, monkeypatch):
    pytester.makepyfile(test_skips=SKIPPING_TESTS)
    monkeypatch.setenv("IMT_CDS_STRICT", "1")
    result = pytester.runpytest("-p", "strict_skips")
    result.assert_outcomes(passed=1, failed=1, errors=1)  # a skip in setup (skipif) fails as an error
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*IMT_CDS_STRICT=1: this test was skipped*PostgreSQL server not installed*"])


def test_without_strict_mode_the_skips_end_the_run_in_a_banner(pytester, monkeypatch):
    pytester.makepyfile(test_skips=SKIPPING_TESTS)
    monkeypatch.delenv("IMT_CDS_STRICT", raising=False)
    result = pytester.runpytest("-p", "strict_skips")
    result.assert_outcomes(passed=1, skipped=2)
    text = result.stdout.str()
    banner = text.index("2 tests SKIPPED: this run did not test everything")
    assert "1 x PostgreSQL server not installed" in text[banner:]
    assert "1 x the shared project folder is not beside this checkout" in text[banner:]
    assert "IMT_CDS_STRICT=1" in text[banner:]


def test_ci_runs_make_test_in_strict_mode():
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^export IMT_CDS_STRICT=1$", ci, flags=re.M)
    assert ci.index("IMT_CDS_STRICT=1") < ci.index("\nmake test")


# --- the Makefile ---------------------------------------------------------------------------------------------------


def make_dry_run(target: str, venv: Path) -> str:
    result = subprocess.run(["make", "-n", "--no-print-directory", target, f"VENV={venv}", f"PYTHON={sys.executable}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, "MAKEFLAGS": ""})
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_demo_installs_the_runtime_only_and_make_test_adds_the_test_extra(tmp_path):
    demo = make_dry_run("demo", tmp_path / "venv")
    test = make_dry_run("test", tmp_path / "venv")
    assert "pip install --quiet -c .ci/constraints.txt -e .\n" in demo and "[test]" not in demo
    assert "pip install --quiet -c .ci/constraints.txt -e '.[test]'" in test and "bash tests/system_setup.sh" in test


def _pins() -> dict[str, str]:
    """.ci/constraints.txt as {normalised distribution name: version}."""
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (ROOT / ".ci" / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not pinned with ==: {line!r}"
            pins[canonicalize_name(name)] = version
    return pins


def test_the_constraints_pin_every_dependency_within_the_range_pyproject_allows():
    """CI installs .ci/constraints.txt's versions: a dependency added to pyproject.toml without a pin would be
    installed at whatever version was newest that day, and a pin outside its range would make pip refuse."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    pins = _pins()
    for text in declared:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not pinned in .ci/constraints.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (text, pins[name])


@pytest.mark.slow
def test_another_interpreter_rebuilds_the_venv_and_the_same_one_keeps_it(tmp_path):
    venv = tmp_path / "venv"
    stamp = venv / ".interpreter"

    def make_interpreter_stamp() -> None:
        result = subprocess.run(["make", "--no-print-directory", str(stamp), f"VENV={venv}",
                                 f"PYTHON={sys.executable}"],
                                cwd=ROOT, capture_output=True, text=True, timeout=600,
                                env={**os.environ, "MAKEFLAGS": ""})
        assert result.returncode == 0, result.stderr

    make_interpreter_stamp()
    recorded = stamp.read_text().split()
    assert recorded[0] == os.path.realpath(sys.executable) and recorded[1:] == list(map(str, sys.version_info[:3]))
    (venv / "kept").write_text("")
    make_interpreter_stamp()
    assert (venv / "kept").exists()  # the same interpreter: nothing rebuilt
    stamp.write_text("/usr/bin/python3.99 3 99 0\n")  # as if another PYTHON had built it
    make_interpreter_stamp()
    assert not (venv / "kept").exists() and stamp.read_text().split() == recorded


# --- tiers ----------------------------------------------------------------------------------------------------------


def collected(*args: str) -> list[str]:
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q", *args],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:]
    return [line for line in result.stdout.splitlines() if "::" in line]


def test_every_test_has_exactly_one_tier_and_the_system_tier_holds_postgresql_and_chromium():
    every = collected()
    tiers = {tier: collected("-m", tier) for tier in ("fast", "slow", "system")}
    assert sorted(tiers["fast"] + tiers["slow"] + tiers["system"]) == sorted(every)
    system = tiers["system"]
    assert "tests/test_report_html.py::test_chromium_renders_the_report_with_its_derivation_graph" in system
    assert "tests/test_audit_store.py::test_postgres_readers_do_not_create_tables" in system
    assert any(name.endswith("[postgres]") for name in system) and not any(name.endswith("[sqlite]") for name in system)
    assert len(system) >= 31 and len(tiers["fast"]) > 300


def test_the_readme_tier_commands_select_tests():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r"^\$ \.venv/bin/python -m pytest (-m [^#\n]+?)\s*(?:#.*)?$", readme, flags=re.M)
    assert {"-m fast", "-m system"} <= {c.strip() for c in commands}, commands
    for command in commands:
        expression = command.strip().removeprefix("-m ").strip("'\"")
        assert collected("-m", expression), command
