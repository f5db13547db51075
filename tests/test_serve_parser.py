"""``imt-cds serve``'s options, read in process: what each gives the command, and that its --help and the README's
option table say the defaults it uses (the command's body, which starts servers, is tested in test_serve_options.py
and test_service_limits.py)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from imt_cds.cli.main import _parser
from imt_cds.service.auth import DEFAULT_STORE_TIMEOUT_SECONDS, AuthSettings, TrustedIssuer
from imt_cds.service.config import DEFAULT_MAX_BODY_BYTES
from imt_cds.service.connections import DEFAULT_MAX_CONNECTIONS
from imt_cds.service.prefetch import DEFAULT_FETCH_DEADLINE

ROOT = Path(__file__).resolve().parents[1]

DEFAULTS = {
    "host": "127.0.0.1", "port": 8080, "public_url": None, "trust": [], "jwt_leeway": 60, "jwt_max_lifetime": None,
    "jwt_max_bytes": None, "allow_unauthenticated": False, "audit": None, "audit_no_input": False,
    "feedback_log": None, "rules": None, "workers": 2, "worker_depth": 2, "cache_size": 4096,
    "request_timeout": 30.0, "max_body": None, "cors_origin": [], "fhir_server": [], "fhir_deadline": None,
    "fhir_private_network": [], "not_eligible_card": False, "max_connections": None, "header_timeout": 10.0,
    "body_timeout": 30.0, "keep_alive_timeout": 5.0, "store_timeout": None, "http_parser": "auto",
    "log_level": "info",
}


def serve_parser() -> argparse.ArgumentParser:
    commands = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices["serve"]  # type: ignore[no-any-return]


def parse(*words: str) -> dict:
    given = vars(_parser().parse_args(["serve", *words]))
    assert given.pop("command") == "serve" and given.pop("run").__name__ == "_run_serve"
    return given


def refusal(capsys, *words: str) -> str:
    with pytest.raises(SystemExit) as stopped:
        _parser().parse_args(["serve", *words])
    assert stopped.value.code == 2
    return capsys.readouterr().err


def test_without_options_the_command_gets_the_defaults():
    assert parse() == DEFAULTS


def test_every_option_given_reaches_the_command():
    given = parse(
        "--host", "0.0.0.0", "--port", "9000", "--public-url", "https://cds.example.org", "--trust", "iss-a", "a.json",
        "--trust", "iss-b", "https://b.example.org/jwks", "--jwt-leeway", "5", "--jwt-max-lifetime", "600",
        "--jwt-max-bytes", "2048", "--allow-unauthenticated", "--audit", "audit.db", "--audit-no-input",
        "--feedback-log", "feedback.ndjson", "--rules", "copy", "--workers", "3", "--worker-depth", "1",
        "--cache-size", "0", "--request-timeout", "12.5", "--max-body", "1000000", "--cors-origin", "https://a.org",
        "--cors-origin", "https://b.org", "--fhir-server", "https://fhir.example.org/r4", "--fhir-deadline", "7.5",
        "--fhir-private-network", "10.20.0.0/16", "--not-eligible-card", "--max-connections", "50",
        "--header-timeout", "2.5", "--body-timeout", "4", "--keep-alive-timeout", "1.5", "--store-timeout", "3",
        "--http-parser", "h11", "--log-level", "debug")
    assert given == {
        "host": "0.0.0.0", "port": 9000, "public_url": "https://cds.example.org",
        "trust": [["iss-a", "a.json"], ["iss-b", "https://b.example.org/jwks"]], "jwt_leeway": 5,
        "jwt_max_lifetime": 600, "jwt_max_bytes": 2048, "allow_unauthenticated": True, "audit": "audit.db",
        "audit_no_input": True, "feedback_log": Path("feedback.ndjson"), "rules": Path("copy"), "workers": 3,
        "worker_depth": 1, "cache_size": 0, "request_timeout": 12.5, "max_body": 1000000,
        "cors_origin": ["https://a.org", "https://b.org"], "fhir_server": ["https://fhir.example.org/r4"],
        "fhir_deadline": 7.5, "fhir_private_network": ["10.20.0.0/16"], "not_eligible_card": True,
        "max_connections": 50, "header_timeout": 2.5, "body_timeout": 4.0, "keep_alive_timeout": 1.5,
        "store_timeout": 3.0, "http_parser": "h11", "log_level": "debug"}


def test_trust_takes_an_issuer_and_its_key_set(capsys):
    assert refusal(capsys, "--trust", "iss-only") == (
        "imt-cds serve: error: argument --trust: expected 2 arguments; see: imt-cds serve --help\n")


@pytest.mark.parametrize("option, choices", [
    ("--http-parser", ("auto", "httptools", "h11")),
    ("--log-level", ("critical", "error", "warning", "info", "debug")),
])
def test_choices(capsys, option, choices):
    dest = option[2:].replace("-", "_")
    for choice in choices:
        assert parse(option, choice)[dest] == choice
    listed = ", ".join(repr(c) for c in choices)
    assert refusal(capsys, option, "fast") == (
        f"imt-cds serve: error: argument {option}: invalid choice: 'fast' (choose from {listed}); see: imt-cds "
        "serve --help\n")


# What the service uses when an option is not given and the parser's default is None ("the service's own").
SERVICE_DEFAULTS = {
    "--jwt-max-lifetime": AuthSettings((TrustedIssuer("iss", "k.json"),)).max_lifetime_seconds,
    "--jwt-max-bytes": AuthSettings((TrustedIssuer("iss", "k.json"),)).max_token_bytes,
    "--max-body": DEFAULT_MAX_BODY_BYTES,
    "--fhir-deadline": DEFAULT_FETCH_DEADLINE,
    "--max-connections": DEFAULT_MAX_CONNECTIONS,
    "--store-timeout": DEFAULT_STORE_TIMEOUT_SECONDS,
}
_UNITS = {"": 1, "MiB": 2**20}


def stated_defaults(text: str) -> list[str]:
    return re.findall(r"(?:\(|; )default:? ([^;)]+)", text)


def test_each_default_the_help_states_is_the_one_used():
    checked = set()
    for action in serve_parser()._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        option = action.option_strings[0]
        stated = stated_defaults(" ".join(action.help.split()))
        used = action.default if action.default is not None else SERVICE_DEFAULTS.get(option)
        if not stated:  # only an option whose absence means "none" or "off" may leave its default unsaid
            assert used in (None, False, []), f"{option}'s help states no default"
            continue
        words = stated[0].split(",")[0].split()
        if used is None or used is False or used == []:
            assert words[0] in ("none", "no", "the", "http://HOST:PORT"), (option, stated)  # nothing, or the shipped
        elif isinstance(used, str):
            assert words == [used], (option, stated, used)
        else:
            number = float(words[0]) * _UNITS[words[1] if len(words) > 1 else ""]
            assert number == used, (option, stated, used)
        checked.add(option)
    assert checked == {
        "--host", "--port", "--public-url", "--jwt-leeway", "--jwt-max-lifetime", "--jwt-max-bytes", "--feedback-log",
        "--rules", "--workers", "--worker-depth", "--cache-size", "--request-timeout", "--max-body", "--cors-origin",
        "--fhir-server", "--fhir-deadline", "--fhir-private-network", "--not-eligible-card", "--http-parser",
        "--log-level", "--max-connections", "--header-timeout", "--body-timeout", "--keep-alive-timeout",
        "--store-timeout"}


def readme_serve_options() -> set[str]:
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| option | what it does |", text.index("**Run the service**")):]
    rows = table[: table.index("\n\n")].splitlines()[2:]
    return {option for row in rows for option in re.findall(r"`(--[a-z-]+)", row.split(" | ")[0])}


def test_the_readme_option_table_has_every_option_and_no_other():
    options = {a.option_strings[0] for a in serve_parser()._actions if a.option_strings[0] != "-h"}
    assert readme_serve_options() == options


def test_the_readme_states_the_defaults_the_parser_uses():
    text = " ".join((ROOT / "README.md").read_text().split())
    d = {k: f"{v:g}" if isinstance(v, float) else v for k, v in DEFAULTS.items()}
    for said in (
        f"the interface and port to listen on (default `{d['host']}`, `{d['port']}`)",
        f"evaluation processes (default {d['workers']}), memo cache entries per process (default {d['cache_size']}: ",
        f"seconds before a stuck evaluation's process is replaced (default {d['request_timeout']})",
        f"those queued behind it (default {d['worker_depth']}; 1 to 8)",
        f"headers within S seconds of opening (default {d['header_timeout']}), the body within S after its headers "
        f"(default {d['body_timeout']}); an idle kept-alive connection is closed after S (default "
        f"{d['keep_alive_timeout']})",
        f"clock skew allowed on `exp`/`iat` (default {d['jwt_leeway']} s)",
        f"`{d['log_level']}` (default)",
        f"`{d['http_parser']}` (default: httptools when installed, else h11)",
    ):
        assert said in text, said
