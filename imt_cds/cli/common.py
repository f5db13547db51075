"""What the command groups of ``imt-cds`` share: exit codes, the epilog, reading an input file, reporting invalid
input, the ``--rules`` option and the engine it names. Each command module imports this one and nothing of another
command module's privates, so the groups stay independent of each other and of ``main``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, TextIO

from ..core.errors import ChartRefusedError, InvalidInputError

if TYPE_CHECKING:  # (engine_for imports it when called, not this module when imported)
    from ..core.engine import Engine

__all__ = [
    "EPILOG",
    "EXIT_INTERNAL",
    "EXIT_INVALID_INPUT",
    "EXIT_NOT_ELIGIBLE",
    "EXIT_OK",
    "EXIT_SOME_LINES_INVALID",
    "EXTRA_OF_MODULE",
    "UsageError",
    "engine_for",
    "jobs",
    "missing_extra",
    "missing_extra_message",
    "read_input",
    "report_invalid",
    "rules_option",
]

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_INVALID_INPUT = 2
EXIT_SOME_LINES_INVALID = 3
EXIT_NOT_ELIGIBLE = 4

# The optional extras of pyproject.toml, by the top-level module whose absence means the extra is not installed.
# cryptography comes with the service extra (PyJWT[crypto]) and with the signing extra: the service's commands name
# the first; the audit commands, which need it only to sign and check checkpoints, name the second.
EXTRA_OF_MODULE: Mapping[str, str] = MappingProxyType({
    "z3": "authoring",
    "psycopg": "postgres",
    "fastapi": "service",
    "uvicorn": "service",
    "httpx": "service",
    "jwt": "service",
    "cryptography": "service",
})


EPILOG = """\
exit codes: 0 success, 1 internal error, 2 invalid input or usage (including a missing file or directory, or an
optional extra not installed), 3 batch finished with invalid lines, 4 a FHIR chart not evaluated (no IMT
diagnosis in it, or the patient is deceased).
imt-cds is decision support for a multidisciplinary team, never a prescription."""


def rules_option(parser: argparse.ArgumentParser, seeds: bool = False) -> None:
    """``--rules DIR`` (and with ``seeds``, ``--seeds DIR``): a rulebook (and evidence) instead of the shipped one."""
    parser.add_argument("--rules", metavar="DIR", type=Path,
                        help="rulebook directory to use instead of the shipped one (e.g. a working copy)")
    if seeds:
        parser.add_argument("--seeds", metavar="DIR", type=Path,
                            help="evidence directory with evidence.yaml and its documents (default: the shipped one)")


def jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--jobs needs a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("--jobs must be 0 (all cores) or more")
    return value or (os.cpu_count() or 1)


def engine_for(rules: Path | None) -> Engine:
    from ..core.engine import Engine, default_engine

    return default_engine() if rules is None else Engine(rules)


def missing_extra(exc: BaseException, extras: Mapping[str, str] = EXTRA_OF_MODULE) -> tuple[str, str] | None:
    """(missing module, extra that installs it) when an ImportError, or one it was raised from, is a missing extra.

    The library reports a missing driver in its own words (an ``AuditStoreError`` raised from the ImportError...);
    following the causes lets every command turn any of them into the same usage error."""
    seen: BaseException | None = exc
    while seen is not None:
        name = getattr(seen, "name", None)
        if isinstance(seen, ImportError) and name:
            top = name.split(".")[0]
            if top in extras:
                return name, extras[top]
        seen = seen.__cause__ or seen.__context__
    return None


def missing_extra_message(module: str, extra: str) -> str:
    return (f"imt-cds: error: this command needs the optional package {module!r}, which is not installed: "
            f"pip install 'imt-cds[{extra}]'")


class UsageError(Exception):
    """The command cannot run as given (a file that cannot be read...): one line on stderr, exit 2."""


def read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


def report_invalid(exc: InvalidInputError, stream: TextIO, source: str, what: str = "patient facts") -> None:
    """Every problem of ``exc``, under a heading naming ``what`` was invalid (patient facts, or a FHIR chart)."""
    where = "standard input" if source == "-" else source
    if isinstance(exc, ChartRefusedError):
        print(f"imt-cds: FHIR chart {where} refused, nothing was evaluated: {exc.problems[0].message}", file=stream)
        return
    count = len(exc.problems)
    print(f"imt-cds: invalid {what} in {where} ({count} problem{'s' if count != 1 else ''}); "
          "nothing was evaluated:", file=stream)
    for problem in exc.problems:
        print(f"  - {problem}", file=stream)
