"""Every command and code block shown in the README runs as shown."""

from __future__ import annotations

import json
import os
import re
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


def test_the_readme_says_how_to_reach_the_venv_before_its_first_imt_cds_command():
    first_command = README.index("$ imt-cds ")
    for words in ("source .venv/bin/activate", ".venv/bin/imt-cds"):
        assert -1 < README.find(words) < first_command, words


def _venv_shell_env() -> dict[str, str]:
    """The environment of a shell after ``source .venv/bin/activate``: the venv's bin first on PATH."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "VIRTUAL_ENV": sys.prefix}


def _ignored_by_git(relative: str) -> bool:
    result = subprocess.run(["git", "check-ignore", "--no-index", "-q", relative], cwd=ROOT, capture_output=True,
                            timeout=60)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode == 0


@pytest.mark.parametrize("commands", CLI_BLOCKS, ids=[block[0] for block in CLI_BLOCKS])
def test_readme_cli_commands_run(commands, tmp_path):
    """Each block, line by line in one shell directory laid out as the checkout, exactly as written: every command
    succeeds, and every file it writes has a name git ignores (nothing a reader runs dirties the checkout)."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    before = {p for p in tmp_path.rglob("*")}
    for command in commands:
        result = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=_venv_shell_env(), capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, f"{command}: {result.stderr}"
    written = sorted(str(p.relative_to(tmp_path)) for p in set(tmp_path.rglob("*")) - before if p.is_file())
    assert [name for name in written if not _ignored_by_git(name)] == []


def test_the_ignore_check_sees_a_name_git_does_not_ignore():
    assert not _ignored_by_git("examples/new-patient.json") and _ignored_by_git("audit.db")


def test_readme_python_examples_run(capsys, tmp_path, monkeypatch):
    first, *others = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    monkeypatch.chdir(tmp_path)  # (the audit example writes audit.db in the current directory)
    for code in (first, *others):
        exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - the README's own examples
    output = capsys.readouterr().out
    assert "REC_CRIZOTINIB_ALK" in output and "molecular.alk.staus" in output


def test_make_demo_evaluates_every_example():
    venv = Path(sys.prefix)
    if not (venv / ".interpreter").exists():
        pytest.skip("make demo needs the Makefile's virtual environment (run the suite with `make test`)")
    # PYTHON is this venv's interpreter, which the Makefile resolves to the one that built the venv: make must not
    # rebuild the environment this test runs in.
    result = subprocess.run(["make", "--no-print-directory", "demo", f"VENV={venv}", f"PYTHON={sys.executable}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "MAKEFLAGS": ""})
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("IMT decision support - assessment of") == len(list((ROOT / "examples").glob("*.json")))


# The README's example hook call ("Connecting an EHR", Try a call): its sh block starts the service and posts the
# example request file with curl.
HOOK_BLOCK = next(block for block in re.findall(r"```sh\n(.*?)```", README, flags=re.S) if "curl" in block)
HOOK_CARDS = ["RISK_DISTANT_DISEASE", "RISK_RESPIRATORY_SYMPTOMS", "RISK_TUMOR_SIZE_ABOVE_COHORT_MEDIAN",
              "REC_CLINICAL_TRIAL_CONSIDER", "REC_CRIZOTINIB_ALK", "REC_MULTIDISCIPLINARY_REVIEW"]


def _card_codes(answer: dict) -> list[str]:
    return [card["source"]["topic"]["code"] for card in answer["cards"]]


def test_the_readme_hook_call_posts_the_example_request_and_gets_its_cards():
    import httpx
    from service_support import running_service

    # one command per line once continuation lines are joined, each without its comment
    serve, curl = (line.split("  #")[0].strip() for line in re.sub(r"\\\n\s*", "", HOOK_BLOCK).strip().splitlines())
    assert serve == "imt-cds serve --allow-unauthenticated &"  # what running_service starts, on a free port
    path = re.search(r"http://127\.0\.0\.1:8080(/cds-services/[\w-]+) ", curl).group(1)
    request = ROOT / re.search(r"--data @(\S+)", curl).group(1)
    with running_service("--allow-unauthenticated") as service:
        answer = httpx.post(service.url + path, content=request.read_bytes(),
                            headers={"Content-Type": "application/json"}, timeout=60)
        assert answer.status_code == 200, answer.text
        assert _card_codes(answer.json()) == HOOK_CARDS
        # on loopback the default base URL is right: no warning about --public-url
        assert "without --public-url" not in service.log_text()
        # the command itself, as a reader types it (from the checkout); without curl a skip says so (strict mode,
        # as in CI, fails on it)
        if shutil.which("curl") is None:
            pytest.skip("curl is not installed: the README's curl command was not run (the same call was, by httpx)")
        done = subprocess.run(["bash", "-c", curl.replace("http://127.0.0.1:8080", service.url)], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert _card_codes(json.loads(done.stdout)) == HOOK_CARDS


def test_the_readme_card_example_says_what_the_card_says():
    from imt_cds import evaluate

    (shown,) = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", README, flags=re.S)
                if '"uuid"' in block]
    code = shown["source"]["topic"]["code"]
    (finding,) = [f for f in evaluate({"tumor": {"size_cm": 6}}).risk_flags if f.code == code]
    assert shown["summary"] == finding.summary and shown["source"]["topic"]["display"] == finding.title
    assert shown["detail"].startswith(f"**{finding.title}**")
