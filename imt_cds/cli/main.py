"""The ``imt-cds`` command line (also ``python -m imt_cds``).

Exit codes: 0 success; 1 internal error (reported in one line, never a bare traceback; set IMT_CDS_DEBUG=1 to see
it); 2 invalid input (every problem on stderr) or invalid usage (an unknown command or option, a file or directory
that does not exist, an optional extra that the command needs and is not installed), or a FHIR chart refused
because whose data it is cannot be established; 3 ``batch`` finished but some lines were invalid; 4 ``evaluate
--fhir``: the chart was read but is not evaluated (no IMT diagnosis, or the patient is deceased). Every error is one
line on stderr (invalid input: a heading, then one line per problem).
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from ..core.errors import ImtCdsError
from .common import EPILOG, EXIT_INTERNAL, EXIT_INVALID_INPUT, EXIT_OK, UsageError, missing_extra, missing_extra_message

__all__ = ["main"]

class _Parser(argparse.ArgumentParser):
    """argparse, with a did-you-mean for mistyped commands, choices and options, and usage errors in one line.

    Sub-command parsers are made of the same class (argparse's default), so ``imt-cds rules lnt`` is helped too.
    Abbreviated options are refused: argparse would take ``rules lint --rule x`` for ``--rules x`` without a word,
    and an abbreviation that works today breaks silently when an option sharing its prefix is added."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    # (argparse's stubs overload this on the namespace's type; one signature serves every call here)
    def parse_known_args(  # type: ignore[override]
            self, args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        # A sub-command's parser sees its arguments first: it refuses what it does not know itself, so the error
        # names its own options and its own --help (argparse would leave them to the top-level parser).
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(self._unknown(extras))
        return parsed, extras

    def _unknown(self, extras: list[str]) -> str:
        option = next((word for word in extras if word.startswith("-") and word != "-"), None)
        if option is None:
            return f"unrecognized arguments: {' '.join(extras)}"
        name = option.split("=", 1)[0]
        known = [string for action in self._actions for string in action.option_strings if string.startswith("--")]
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        return f"unknown option {name}" + (f" (did you mean {close[0]}?)" if close else "")

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        try:
            super()._check_value(action, value)
        except argparse.ArgumentError as exc:
            close = difflib.get_close_matches(str(value), [str(c) for c in action.choices or ()], n=1, cutoff=0.6)
            if not close:
                raise
            raise argparse.ArgumentError(action, f"{exc.message}; did you mean {close[0]!r}?") from None

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_INVALID_INPUT, f"{self.prog}: error: {message}; see: {self.prog} --help\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="imt-cds",
        description="Clinical decision support for inflammatory myofibroblastic tumor (IMT): validated patient "
        "facts in, explained and evidence-linked recommendations and risk flags out.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"imt-cds {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    for register in _command_groups():
        register(commands)
    return parser


def _command_groups() -> list[Callable[[Any], None]]:
    """The command groups, each in its own module with a ``register(subparsers)`` function, in ``--help`` order."""
    from . import audit, batch, evaluate, rules, serve

    return [evaluate.register, batch.register, rules.register, audit.register, serve.register]


def _version() -> str:
    from ..core.engine import installed_version

    return installed_version("imt-cds")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    for option in ("rules", "seeds", "old_seeds", "new_seeds"):
        directory = getattr(args, option, None)
        if directory is not None and not directory.is_dir():
            what = "no such directory" if not directory.exists() else "not a directory"
            print(f"imt-cds: error: --{option.replace('_', '-')} {directory}: {what}", file=sys.stderr)
            return EXIT_INVALID_INPUT
    try:
        return run(args)
    except UsageError as exc:
        print(f"imt-cds: error: {exc}", file=sys.stderr)
        return EXIT_INVALID_INPUT
    except KeyboardInterrupt:
        print("imt-cds: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): not an error of ours, and nothing more can be written.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except (ImtCdsError, ImportError) as exc:
        extra = missing_extra(exc)
        if extra is not None:
            print(missing_extra_message(*extra), file=sys.stderr)
            return EXIT_INVALID_INPUT
        if isinstance(exc, ImportError):
            return _internal_error(exc)
        print(f"imt-cds: error [{exc.code}]: {exc}", file=sys.stderr)
        return EXIT_INTERNAL
    except OSError as exc:
        if exc.filename is None:
            return _internal_error(exc)
        # A path the user gave that cannot be read or written (a missing folder for an output file...): usage.
        print(f"imt-cds: error: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_INVALID_INPUT
    except Exception as exc:  # noqa: BLE001 - the one place that turns an unexpected failure into exit code 1
        return _internal_error(exc)


def _internal_error(exc: BaseException) -> int:
    if os.environ.get("IMT_CDS_DEBUG"):
        traceback.print_exception(exc)
    print(f"imt-cds: internal error: {type(exc).__name__}: {exc} (set IMT_CDS_DEBUG=1 for details)", file=sys.stderr)
    return EXIT_INTERNAL

