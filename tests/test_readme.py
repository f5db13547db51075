"""Every command and code block shown in the README runs as shown."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
COMMANDS = [
    line[2:].split("  #")[0].strip()
    for block in re.findall(r"```console\n(.*?)```", README, flags=re.S)
    for line in block.splitlines()
    if line.startswith("$ ")
]
# The imt-cds commands of each console block, in order: a block runs in one directory, so a later command may use
# what an earlier one wrote (the audit trail's block records evaluations, then lists, verifies and replays them).
CLI_BLOCKS = [
    commands
    for block in re.findall(r"```console\n(.*?)```", README, flags=re.S)
    if (commands := [line[2:].split("  #")[0].strip() for line in block.splitlines()
                     if line.startswith("$ imt-cds")])
]


def test_the_readme_shows_the_two_set_up_commands_and_ci_runs_the_test_one():
    assert "make demo" in COMMANDS and "make test" in COMMANDS
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, flags=re.M)


@pytest.mark.parametrize("commands", CLI_BLOCKS, ids=[block[0] for block in CLI_BLOCKS])
def test_readme_cli_commands_run(commands, tmp_path):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    script = Path(sys.executable).with_name("imt-cds")
    for command in commands:
        args = shlex.split(command)
        result = subprocess.run([str(script), *args[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{command}: {result.stderr}"


def test_readme_python_examples_run(capsys, tmp_path, monkeypatch):
    first, *others = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    monkeypatch.chdir(tmp_path)  # (the audit example writes audit.db in the current directory)
    for code in (first, *others):
        exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - the README's own examples
    output = capsys.readouterr().out
    assert "REC_CRIZOTINIB_ALK" in output and "molecular.alk.staus" in output


def test_make_demo_evaluates_every_example():
    venv = Path(sys.prefix)
    if not (venv / ".installed").exists():
        pytest.skip("make demo needs the Makefile's virtual environment (run the suite with `make test`)")
    result = subprocess.run(["make", "--no-print-directory", "demo", f"VENV={venv}"], cwd=ROOT, capture_output=True,
                            text=True, timeout=600, env={**os.environ, "MAKEFLAGS": ""})
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("IMT decision support - assessment of") == len(list((ROOT / "examples").glob("*.json")))
