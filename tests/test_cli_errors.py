"""Every command-line error is one line on stderr, with the exit code the README documents, and no traceback.

The table crosses the commands with what goes wrong most often: a file or folder that does not exist, a ``--rules``
folder that does not exist, and an optional extra that is not installed. A missing extra is played honestly: the
command runs in a fresh interpreter whose import system refuses the extra's module (a blocker on ``sys.meta_path``),
exactly as if it had never been installed.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("imt-cds")
EXAMPLE = str(ROOT / "examples" / "02_alk_positive_unresectable.json")
BUNDLE = str(ROOT / "examples" / "fhir" / "alk-lung-distant-bundle.json")
RULES = str(ROOT / "rules")
PATIENTS = str(ROOT / "examples" / "patients.ndjson")
PG = "postgresql://imt@127.0.0.1:9/none"  # never reached: the driver is missing before any connection

EXIT_USAGE = 2


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, cwd=cwd, timeout=300)


# (command, what goes wrong, arguments, words the one line must hold). Run in an empty directory: "missing" exists
# nowhere.
MISSING = [
    ("evaluate", "file", ["evaluate", "missing.json"], "cannot read missing.json"),
    ("evaluate --fhir", "file", ["evaluate", "--fhir", "missing.json"], "cannot read missing.json"),
    ("evaluate", "--rules folder", ["evaluate", EXAMPLE, "--rules", "missing"], "--rules missing: no such directory"),
    ("evaluate", "--audit folder", ["evaluate", EXAMPLE, "--audit", "missing/audit.db"], "missing/audit.db"),
    ("batch", "file", ["batch", "missing.ndjson"], "missing.ndjson"),
    ("batch", "--rules folder", ["batch", "missing.ndjson", "--rules", "missing"], "--rules missing: no such"),
    ("explain", "file", ["explain", "missing.json"], "cannot read missing.json"),
    ("explain", "--rules folder", ["explain", EXAMPLE, "--rules", "missing"], "--rules missing: no such directory"),
    ("rules list", "--rules folder", ["rules", "list", "--rules", "missing"], "--rules missing: no such directory"),
    ("rules show", "--rules folder", ["rules", "show", "R1", "--rules", "missing"], "--rules missing: no such"),
    ("rules lint", "--rules folder", ["rules", "lint", "--rules", "missing"], "--rules missing: no such directory"),
    ("rules lint", "--seeds folder", ["rules", "lint", "--seeds", "missing"], "--seeds missing: no such directory"),
    ("rules test", "--rules folder", ["rules", "test", "--rules", "missing"], "--rules missing: no such directory"),
    ("rules test", "--junit folder", ["rules", "test", "--junit", "missing/junit.xml"], "missing/junit.xml"),
    ("rules coverage", "--rules folder", ["rules", "coverage", "--rules", "missing"], "--rules missing: no such"),
    ("rules coverage", "--vignettes folder", ["rules", "coverage", "--vignettes", "missing"], "--vignettes missing"),
    ("rules verify", "--rules folder", ["rules", "verify", "--rules", "missing"], "--rules missing: no such"),
    ("rules copy", "--rules folder", ["rules", "copy", "new", "--rules", "missing"], "--rules missing: no such"),
    ("rules diff", "OLD_DIR folder", ["rules", "diff", "missing", RULES], "OLD_DIR missing: no such directory"),
    ("rules diff", "NEW_DIR folder", ["rules", "diff", RULES, "missing"], "NEW_DIR missing: no such directory"),
    ("rules codesystems", "--rules folder", ["rules", "codesystems", "-o", "out", "--rules", "missing"],
     "--rules missing: no such directory"),
    ("audit list", "database", ["audit", "list", "--db", "missing.db"], "missing.db"),
    ("audit replay", "--rules folder", ["audit", "replay", "last", "--db", "missing.db", "--with-current", "--rules",
                                        "missing"], "--rules missing: no such directory"),
    ("report", "file", ["report", "missing.json", "--html", "out.html"], "cannot read missing.json"),
    ("report", "output folder", ["report", EXAMPLE, "--html", "missing/out.html"], "missing/out.html"),
    ("serve", "--rules folder", ["serve", "--allow-unauthenticated", "--rules", "missing"], "--rules missing: no such"),
]


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, words: str) -> None:
    lines = result.stderr.splitlines()
    assert result.returncode == code, (result.returncode, result.stderr)
    assert len(lines) == 1, result.stderr
    assert words in lines[0] and lines[0].startswith("imt-cds"), lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.parametrize(("command", "missing", "args", "words"), MISSING,
                         ids=[f"{command} / missing {missing}" for command, missing, _, _ in MISSING])
def test_a_missing_file_or_folder_is_a_one_line_usage_error(command, missing, args, words, tmp_path):
    assert_one_line_error(run(*args, cwd=tmp_path), EXIT_USAGE, words)


def test_the_table_covers_every_command():
    from imt_cds.cli.main import _parser

    def choices(parser):  # type: ignore[no-untyped-def]
        return parser._subparsers._group_actions[0].choices

    top = choices(_parser())
    names = ({name for name in top if name not in ("rules", "audit")}
             | {f"rules {name}" for name in choices(top["rules"])})
    covered = {command.removesuffix(" --fhir") for command, *_ in MISSING}
    assert names <= covered, names - covered


# --- an optional extra that is not installed ----------------------------------------------------------------------

BLOCKER = """
import importlib.abc, sys
BLOCKED = sys.argv[1].split(",")
class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == blocked or name.startswith(blocked + ".") for blocked in BLOCKED):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, NotInstalled())
from imt_cds.cli.main import main
sys.exit(main(sys.argv[2:]))
"""

EXTRAS = [
    ("rules verify", "z3", ["rules", "verify"], "authoring", EXIT_USAGE),
    ("rules diff", "z3", ["rules", "diff", RULES, RULES], "authoring", EXIT_USAGE),
    ("serve", "fastapi,uvicorn", ["serve", "--allow-unauthenticated", "--port", "1"], "service", EXIT_USAGE),
    # each module of the service extra alone, though some are first used by a request (a fetch, a bearer token)
    *[(f"serve without {module}", module, ["serve", "--allow-unauthenticated", "--port", "1"], "service", EXIT_USAGE)
      for module in ("fastapi", "uvicorn", "httpx", "jwt", "cryptography")],
    # A missing driver is a missing extra like any other (exit 2), not a store that cannot be read (1) or a server
    # that cannot start where told (3).
    ("audit list on PostgreSQL", "psycopg", ["audit", "list", "--db", PG], "postgres", EXIT_USAGE),
    ("audit verify on PostgreSQL", "psycopg", ["audit", "verify", "--db", PG], "postgres", EXIT_USAGE),
    ("evaluate --audit PostgreSQL", "psycopg", ["evaluate", EXAMPLE, "--audit", PG], "postgres", EXIT_USAGE),
    ("batch --audit PostgreSQL", "psycopg", ["batch", PATIENTS, "-o", "out.ndjson", "--audit", PG], "postgres",
     EXIT_USAGE),
    ("serve --audit PostgreSQL", "psycopg", ["serve", "--allow-unauthenticated", "--port", "1", "--audit", PG],
     "postgres", EXIT_USAGE),
    # Signing is the signing extra's job (the service extra brings cryptography too, but that is not what to install).
    ("audit keygen", "cryptography", ["audit", "keygen", "--private-key", "k.pem", "--public-key", "k.pub"],
     "signing", EXIT_USAGE),
]


def test_reading_a_fhir_chart_needs_no_fhir_model_library(tmp_path):
    """The chart reader works on the JSON itself: without the fhir.resources models, evaluate --fhir still works."""
    result = run_without("fhir.resources", "evaluate", "--fhir", BUNDLE, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "IMT decision support - assessment of imt-example-1" in result.stdout


def run_without(modules: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCKER, modules, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


@pytest.mark.parametrize(("command", "modules", "args", "extra", "code"), EXTRAS, ids=[e[0] for e in EXTRAS])
def test_a_missing_extra_is_named_with_the_command_that_installs_it(command, modules, args, extra, code, tmp_path):
    result = run_without(modules, *args, cwd=tmp_path)
    assert_one_line_error(result, code, f"pip install 'imt-cds[{extra}]'")
    # No error code of a store or a key file: nothing was invalid, a package is missing; and it is named.
    assert "error [" not in result.stderr, result.stderr
    named = re.search(r"the optional package '([^']+)', which is not installed", result.stderr)
    assert named and named.group(1).split(".")[0] in modules.split(","), result.stderr


def test_signing_or_checking_a_checkpoint_without_cryptography_names_the_signing_extra(tmp_path):
    assert run("audit", "keygen", "--private-key", "k.pem", "--public-key", "k.pub", cwd=tmp_path).returncode == 0
    assert run("evaluate", EXAMPLE, "--audit", "audit.db", cwd=tmp_path).returncode == 0
    assert run("audit", "head", "--db", "audit.db", "--sign", "k.pem", "-o", "c.json", cwd=tmp_path).returncode == 0
    for args in (["audit", "head", "--db", "audit.db", "--sign", "k.pem"],
                 ["audit", "verify", "--db", "audit.db", "--checkpoint", "c.json", "--public-key", "k.pub"]):
        result = run_without("cryptography", *args, cwd=tmp_path)
        assert_one_line_error(result, EXIT_USAGE, "pip install 'imt-cds[signing]'")
        assert "error [" not in result.stderr, result.stderr


def test_the_blocker_really_hides_the_module(tmp_path):
    # The same blocker, running "import z3" instead of the command line: it must fail as a missing package does.
    only_import = BLOCKER.replace("from imt_cds.cli.main import main\nsys.exit(main(sys.argv[2:]))", "import z3")
    result = subprocess.run([sys.executable, "-c", only_import, "z3"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "ModuleNotFoundError: No module named 'z3'" in result.stderr


# --- mistyped words -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "suggestion"), [
    (["evalute", EXAMPLE], "did you mean 'evaluate'?"),
    (["rules", "lnt"], "did you mean 'lint'?"),
    (["audit", "verfy"], "did you mean 'verify'?"),
    (["evaluate", EXAMPLE, "--format", "jsn"], "did you mean 'json'?"),
])
def test_a_mistyped_command_or_choice_gets_a_did_you_mean(args, suggestion, tmp_path):
    result = run(*args, cwd=tmp_path)
    assert_one_line_error(result, EXIT_USAGE, suggestion)


@pytest.mark.parametrize(("args", "line"), [
    (["evaluate", EXAMPLE, "--formt", "json"], "imt-cds evaluate: error: unknown option --formt (did you mean "
     "--format?); see: imt-cds evaluate --help"),
    (["evaluate", EXAMPLE, "--formt=json"], "imt-cds evaluate: error: unknown option --formt (did you mean "
     "--format?); see: imt-cds evaluate --help"),
    (["batch", PATIENTS, "--jbos", "2"], "imt-cds batch: error: unknown option --jbos (did you mean --jobs?); "
     "see: imt-cds batch --help"),
    (["serve", "--prot", "1"], "imt-cds serve: error: unknown option --prot (did you mean --port?); see: "
     "imt-cds serve --help"),
    (["rules", "lint", "--seds", "x"], "imt-cds rules lint: error: unknown option --seds (did you mean --seeds?); "
     "see: imt-cds rules lint --help"),
    (["audit", "list", "--db", "a.db", "--patien", "P1"], "imt-cds audit list: error: unknown option --patien "
     "(did you mean --patient?); see: imt-cds audit list --help"),
    (["audit", "verify", "--db", "a.db", "--xyzzy"], "imt-cds audit verify: error: unknown option --xyzzy; see: "
     "imt-cds audit verify --help"),
])
def test_a_mistyped_option_gets_a_did_you_mean_and_the_help_of_its_own_command(args, line, tmp_path):
    result = run(*args, cwd=tmp_path)
    assert_one_line_error(result, EXIT_USAGE, line)


@pytest.mark.parametrize(("args", "line"), [
    # argparse would take --rule for --rules and lint the folder x without a word about it
    (["rules", "lint", "--rule", "x"], "unknown option --rule (did you mean --rules?)"),
    (["evaluate", EXAMPLE, "--form", "json"], "unknown option --form (did you mean --format?)"),
    (["audit", "show", "last", "--db", "a.db", "--form", "json"], "unknown option --form (did you mean --format?)"),
])
def test_an_abbreviated_option_is_refused_never_taken_for_the_option_it_begins(args, line, tmp_path):
    result = run(*args, cwd=tmp_path)
    assert_one_line_error(result, EXIT_USAGE, line)


def test_no_parser_takes_abbreviated_options():
    from imt_cds.cli.main import _parser

    def walk(parser):  # type: ignore[no-untyped-def]
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from walk(sub)

    parsers = list(walk(_parser()))
    assert len(parsers) > 15 and not [p.prog for p in parsers if p.allow_abbrev]


def test_a_word_like_no_command_gets_no_guess(tmp_path):
    result = run("xyzzy", cwd=tmp_path)
    assert_one_line_error(result, EXIT_USAGE, "invalid choice: 'xyzzy'")
    assert "did you mean" not in result.stderr


# --- help texts -----------------------------------------------------------------------------------------------------


def _every_help_text() -> dict[str, str]:
    from imt_cds.cli.main import _parser

    texts: dict[str, str] = {}

    def walk(parser, name: str) -> None:  # type: ignore[no-untyped-def]
        texts[name] = parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    walk(sub, f"{name} {sub_name}")

    walk(_parser(), "imt-cds")
    return texts


def test_the_top_level_help_names_every_subcommand_of_each_command_group():
    from imt_cds.cli.main import _parser

    top = _parser()
    groups = top._subparsers._group_actions[0]
    help_of = {action.dest: action.help for action in groups._choices_actions}
    for name, parser in groups.choices.items():
        if parser._subparsers is None:
            continue
        subcommands = parser._subparsers._group_actions[0].choices
        missing = [sub for sub in subcommands if not re.search(rf"\b{sub}\b", help_of[name])]
        assert not missing, (name, help_of[name], missing)


def test_the_examples_in_help_texts_name_input_files_that_exist_from_the_checkout():
    inputs = []
    for name, text in _every_help_text().items():
        for path in re.findall(r"imt-cds (?:evaluate|batch|report|explain) ([\w./-]+\.\w+)", text):
            inputs.append(path)
            assert (ROOT / path).is_file(), (name, path)
    assert len(inputs) >= 3, inputs


def test_help_texts_point_only_at_documents_in_the_repository():
    texts = _every_help_text()
    assert len(texts) > 15  # every command and sub-command
    for name, text in texts.items():
        flat = " ".join(text.split())
        assert not re.search(r"SPEC|§|clinical/", flat), (name, flat)
        for path in re.findall(r"\b[\w./-]+\.(?:md|py|yaml)\b", flat):
            if not path.startswith(("patients.", "examples/")):
                assert any((ROOT / folder / path).exists()
                           for folder in ("", "imt_cds", "rules", "seeds")), (name, path)


def test_the_rule_authoring_guide_points_only_at_documents_in_the_repository():
    guide = (ROOT / "rules" / "README.md").read_text(encoding="utf-8")
    assert not re.search(r"clinical/|RULES\.md|SPEC", guide)
