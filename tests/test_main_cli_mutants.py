"""The command line's frame (cli/main.py), each answer compared whole: the parser's refusals and did-you-means, the
directory options checked before a command runs, and how each kind of failure ends (its exit status and its one line
on standard error). Through ``main()`` in this process; an interrupt and a reader that goes away through the
installed script, which gets them for real (a signal, a closed pipe)."""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest
from cli_support import command
from rulebook_copies import copy_rulebook, edit

from imt_cds.cli import evaluate as evaluate_command

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "02_alk_positive_unresectable.json"
SCRIPT = Path(sys.executable).with_name("imt-cds")
READ_SYSCALL = {"x86_64": 0, "aarch64": 63}  # the number of read(2) in /proc/PID/syscall, by machine


def see(prog: str) -> str:
    return f"; see: {prog} --help\n"


@pytest.mark.parametrize(("args", "error"), [
    (["evaluate", EXAMPLE, "extra1", "extra2"],
     "imt-cds evaluate: error: unrecognized arguments: extra1 extra2" + see("imt-cds evaluate")),
    # the first word that is an option is the one named, never a lone "-" (standard input) before it
    (["evaluate", EXAMPLE, "-", "--formt", "json"],
     "imt-cds evaluate: error: unknown option --formt (did you mean --format?)" + see("imt-cds evaluate")),
    (["evaluate", EXAMPLE, "--formt=json"],
     "imt-cds evaluate: error: unknown option --formt (did you mean --format?)" + see("imt-cds evaluate")),
    (["evaluate", EXAMPLE, "--zzzzzz"], "imt-cds evaluate: error: unknown option --zzzzzz" + see("imt-cds evaluate")),
    # an abbreviation is refused, never taken for the option it begins
    (["rules", "lint", "--rule", "x"],
     "imt-cds rules lint: error: unknown option --rule (did you mean --rules?)" + see("imt-cds rules lint")),
    (["evaluate", EXAMPLE, "--format", "jsn"],
     "imt-cds evaluate: error: argument --format: invalid choice: 'jsn' (choose from 'text', 'json'); "
     "did you mean 'json'?" + see("imt-cds evaluate")),
    (["evaluate", EXAMPLE, "--format", "zzzz"],
     "imt-cds evaluate: error: argument --format: invalid choice: 'zzzz' (choose from 'text', 'json')"
     + see("imt-cds evaluate")),
    (["evalute"], "imt-cds: error: argument COMMAND: invalid choice: 'evalute' (choose from 'evaluate', 'batch', "
     "'rules', 'explain', 'audit', 'report', 'serve'); did you mean 'evaluate'?" + see("imt-cds")),
    ([], "imt-cds: error: the following arguments are required: COMMAND" + see("imt-cds")),
])
def test_a_usage_mistake_is_one_line_naming_the_help_of_its_command(capsys, args, error):
    assert command(capsys, *args) == (2, "", error)


def test_version_is_the_installed_distributions(capsys):
    assert command(capsys, "--version") == (0, f"imt-cds {metadata.version('imt-cds')}\n", "")


def test_the_top_level_help_begins_with_the_usage_and_what_the_tool_does(capsys):
    status, out, err = command(capsys, "--help")
    assert (status, err) == (0, "")
    assert out.splitlines()[:6] == [
        "usage: imt-cds [-h] [--version] COMMAND ...",
        "",
        "Clinical decision support for inflammatory myofibroblastic tumor (IMT): validated patient facts in, "
        "explained and evidence-linked recommendations and risk flags out.",
        "",
        "positional arguments:",
        "  COMMAND"]


@pytest.mark.parametrize(("option", "args"), [
    ("--rules", ["evaluate", EXAMPLE]),
    ("--seeds", ["rules", "lint"]),
    ("--old-seeds", ["rules", "diff", ROOT / "rules", ROOT / "rules"]),
    ("--new-seeds", ["rules", "diff", ROOT / "rules", ROOT / "rules"]),
])
def test_a_directory_option_is_checked_before_the_command_runs(capsys, tmp_path, option, args):
    missing, a_file = tmp_path / "none", tmp_path / "a-file"
    a_file.write_text("")
    assert command(capsys, *args, option, missing) == (
        2, "", f"imt-cds: error: {option} {missing}: no such directory\n")
    assert command(capsys, *args, option, a_file) == (2, "", f"imt-cds: error: {option} {a_file}: not a directory\n")


def test_a_file_that_cannot_be_read_is_a_usage_error(capsys, tmp_path):
    missing = tmp_path / "none.json"
    assert command(capsys, "evaluate", missing) == (
        2, "", f"imt-cds: error: cannot read {missing}: No such file or directory\n")


def test_a_path_that_cannot_be_written_is_a_usage_error_naming_it(capsys, tmp_path):
    report = tmp_path / "none" / "junit.xml"
    status, _, err = command(capsys, "rules", "test", "--junit", report)
    assert (status, err) == (2, f"imt-cds: error: {report}: No such file or directory\n")


def test_a_refused_rulebook_is_the_librarys_error_with_its_code(capsys, tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, "flags/R16-tumor-size.yaml", "evidence: [RICH2022:c06, RICH2022:c15]",
         "evidence: [RICH2022:c06, RICH2022:c15, RICH2022:c99]")
    assert command(capsys, "evaluate", EXAMPLE, "--rules", directory) == (1, "", (
        "imt-cds: error [invalid_rulebook]: invalid rulebook (1 problem):\n"
        "  - flags/R16-tumor-size.yaml:6, rule R16, evidence[2]: unknown evidence id 'RICH2022:c99': not in the "
        "evidence registry (did you mean 'RICH2022:c09'?)\n"))


def test_a_missing_optional_package_is_named_with_the_extra_that_installs_it(capsys, monkeypatch):
    # As on an installation without the authoring extra: z3 cannot be imported, nor what imports it.
    monkeypatch.setitem(sys.modules, "z3", None)
    for module in ("imt_cds.authoring.verification", "imt_cds.authoring.symbolic"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    assert command(capsys, "rules", "verify") == (2, "", (
        "imt-cds: error: this command needs the optional package 'z3', which is not installed: "
        "pip install 'imt-cds[authoring]'\n"))


def failing_with(error: BaseException):
    def run(args: object) -> int:
        raise error
    return run


@pytest.mark.parametrize("error", [RuntimeError("boom"), OSError("no file named"),
                                   ImportError("cannot import name 'x' from 'y'", name="y")],
                         ids=["an exception", "an OSError naming no file", "an ImportError of no extra"])
def test_an_unexpected_failure_is_one_line_and_its_traceback_only_when_asked(capsys, monkeypatch, error):
    # (a stand-in for the evaluate command: what is tested is how main() ends any command that fails unexpectedly)
    monkeypatch.setattr(evaluate_command, "_run_evaluate", failing_with(error))
    monkeypatch.delenv("IMT_CDS_DEBUG", raising=False)
    line = f"imt-cds: internal error: {type(error).__name__}: {error} (set IMT_CDS_DEBUG=1 for details)\n"
    assert command(capsys, "evaluate", EXAMPLE) == (1, "", line)
    monkeypatch.setenv("IMT_CDS_DEBUG", "1")
    status, out, err = command(capsys, "evaluate", EXAMPLE)
    assert (status, out) == (1, "")
    assert err.startswith("Traceback (most recent call last):\n") and err.endswith(
        f"{type(error).__name__}: {error}\n" + line)


def test_an_interrupt_ends_the_command_with_one_line_and_status_130():
    process = subprocess.Popen([str(SCRIPT), "evaluate", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        # Wait until the command is reading its standard input (read(2) on descriptor 0), inside main(): an
        # interrupt during start-up would be Python's, not the command's.
        reading = f"{READ_SYSCALL[platform.machine()]} 0x0 "
        deadline = time.monotonic() + 60
        while not Path(f"/proc/{process.pid}/syscall").read_text().startswith(reading):
            assert time.monotonic() < deadline, "the command never read its standard input"
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert (process.returncode, out, err) == (130, "", "imt-cds: interrupted\n")


def test_a_reader_that_went_away_ends_the_command_quietly():
    """`imt-cds evaluate ... | head -1`: the reader closes the pipe; the command stops without a word, status 0."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        result = subprocess.run([str(SCRIPT), "evaluate", str(EXAMPLE), "--format", "json"], stdout=writer,
                                stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(writer)
    assert (result.returncode, result.stderr) == (0, "")
