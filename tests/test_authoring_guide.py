"""The worked example of rules/README.md runs as written: every file it shows is written, every command it shows
is run in order in a scratch directory with the exit status the guide says (`# exit N`, default 0), and every
output it shows (a ```text block after a command) is what the command prints."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUIDE = (ROOT / "rules" / "README.md").read_text(encoding="utf-8")
WORKED = GUIDE[GUIDE.index("## Worked example"):]
BLOCK = re.compile(r"```(\w+)(?: file=(\S+))?\n(.*?)```", re.S)


def steps():
    """("file", path, content) | ("run", command, expected exit) | ("shows", text the previous command prints)."""
    for language, file_name, body in BLOCK.findall(WORKED):
        if file_name:
            yield ("file", file_name, body)
        elif language == "console":
            for line in body.splitlines():
                if line.startswith("$ "):
                    command, _, comment = line[2:].partition("#")
                    expected = int(re.search(r"exit (\d+)", comment).group(1)) if "exit" in comment else 0
                    yield ("run", command.strip(), expected)
        elif language == "text":
            yield ("shows", body, None)


def test_the_guide_has_a_complete_worked_example():
    all_steps = list(steps())
    commands = " ".join(step[1] for step in all_steps if step[0] == "run")
    for tool in ("rules copy", "rules lint", "rules test", "rules verify", "rules coverage", "rules diff", "explain"):
        assert tool in commands
    assert sum(1 for step in all_steps if step[0] == "file") >= 3
    assert sum(1 for step in all_steps if step[0] == "shows") >= 2


def test_the_worked_example_runs_as_written(tmp_path):
    script = Path(sys.executable).with_name("imt-cds")
    last_output = None
    checked_outputs = 0
    for kind, what, detail in steps():
        if kind == "file":
            target = tmp_path / what
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(detail)
        elif kind == "run":
            args = shlex.split(what)
            assert args[0] == "imt-cds"
            result = subprocess.run([str(script), *args[1:]], cwd=tmp_path, capture_output=True, text=True,
                                    timeout=600)
            assert result.returncode == detail, f"{what}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
            last_output = result.stdout + result.stderr
        else:
            assert last_output is not None, "the guide shows output before any command"
            for line in what.strip().splitlines():
                assert line.strip() in last_output, f"the guide shows {line!r}; the command printed:\n{last_output}"
            checked_outputs += 1
    assert checked_outputs >= 2
