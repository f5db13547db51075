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
from pathlib import Path
from typing import Any, NoReturn, TextIO

import orjson

from .errors import ChartRefusedError, ImtCdsError, InputProblem, InvalidInputError
from .wording import plural

__all__ = ["main"]

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_INVALID_INPUT = 2
EXIT_SOME_LINES_INVALID = 3
EXIT_NOT_ELIGIBLE = 4

_EPILOG = """\
exit codes: 0 success, 1 internal error, 2 invalid input or usage (including a missing file or directory, or an
optional extra not installed), 3 batch finished with invalid lines, 4 a FHIR chart not evaluated (no IMT
diagnosis in it, or the patient is deceased).
imt-cds is decision support for a multidisciplinary team, never a prescription."""

# The optional extras of pyproject.toml, by the top-level module whose absence means the extra is not installed.
_EXTRA_OF_MODULE = {
    "z3": "authoring",
    "fhir": "fhir",
    "psycopg": "postgres",
    "fastapi": "service",
    "uvicorn": "service",
    "httpx": "service",
    "jwt": "service",
    "cryptography": "service",
}


class _Parser(argparse.ArgumentParser):
    """argparse, with a did-you-mean for mistyped commands and choices, and usage errors in one line.

    Sub-command parsers are made of the same class (argparse's default), so ``imt-cds rules lnt`` is helped too."""

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        try:
            super()._check_value(action, value)
        except argparse.ArgumentError as exc:
            close = difflib.get_close_matches(str(value), [str(c) for c in action.choices or ()], n=1, cutoff=0.6)
            if not close:
                raise
            raise argparse.ArgumentError(action, f"{exc.message}; did you mean {close[0]!r}?") from None

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_INVALID_INPUT, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="imt-cds",
        description="Clinical decision support for inflammatory myofibroblastic tumor (IMT): validated patient "
        "facts in, explained and evidence-linked recommendations and risk flags out.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"imt-cds {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    evaluate = commands.add_parser(
        "evaluate",
        help="evaluate one patient (a JSON file, or - for standard input)",
        description="Evaluate one patient given as a JSON document (the fields are listed in the README, section "
        "Input) and print the assessment: as a short consult note (default) or as the assessment's JSON document "
        "(README, section Output).",
        epilog="example: imt-cds evaluate examples/02_alk_positive_unresectable.json --format json\n" + _EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluate.add_argument("path", metavar="PATH", help="patient JSON file, or - to read standard input")
    evaluate.add_argument("--fhir", action="store_true",
                          help="PATH is a FHIR R4 chart, a Bundle (mCODE, Genomics Reporting) or one resource: read the facts from it, "
                          "print what could not be used on stderr. Evaluated only for one living patient with an "
                          "IMT diagnosis in the chart (exit 4 otherwise; exit 2 when it holds several patients or "
                          "conflicts prevent evaluation)")
    evaluate.add_argument("--attest-imt-diagnosis", action="store_true",
                          help="with --fhir: the IMT diagnosis was established outside this chart; evaluate it "
                          "even without an IMT Condition (recorded in the assessment's provenance)")
    evaluate.add_argument("--format", choices=("text", "json"), default="text",
                          help="text: a consult note (default); json: the assessment document")
    rules_option(evaluate)
    _audit_options(evaluate)
    evaluate.set_defaults(run=_run_evaluate)

    batch = commands.add_parser(
        "batch",
        help="evaluate one patient per line of an NDJSON file",
        description="Evaluate one patient per line (NDJSON) and write one JSON record per line, in input order. "
        'A line that cannot be read or evaluated yields {"line": N, "errors": [...]} in its place and the run goes '
        "on (exit 3). Blank lines are skipped. A UTF-8 byte order mark is accepted.",
        epilog="""\
what each line holds (--detail):
  full     the whole assessment document (default); about 14 KB per line: 50,000 patients give ~700 MB
  summary  {"line", "patient_id", "codes", "kinds", "rulebook", "input_sha256"}; ~0.7 KB per line
  codes    {"line", "patient_id", "codes"}; ~0.2 KB per line
  codes are in document order (recommendations, then risk flags, each sorted by code); kinds maps each code to its
  kind; rulebook is {"name", "version", "sha256"}; line is the input line number.
example: imt-cds batch patients.ndjson -o assessments.ndjson --jobs 2 --detail summary
""" + _EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    batch.add_argument("input", metavar="IN", help="NDJSON file with one patient per line, or - for standard input")
    batch.add_argument("-o", "--output", metavar="OUT",
                       help="write the records here (default: standard output); never the input file itself")
    batch.add_argument("--detail", choices=("full", "summary", "codes"), default="full",
                       help="what each output line holds: full (default; ~14 KB per line), summary (~0.7 KB) or "
                       "codes (~0.2 KB); see below")
    batch.add_argument("--jobs", type=_jobs, default=1, metavar="N",
                       help="worker processes (default 1; 0 = one per CPU core)")
    batch.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                       help="progress bar with the time left on standard error (auto: only when it is a terminal)")
    rules_option(batch)
    _audit_options(batch)
    batch.set_defaults(run=_run_batch)
    for register in _command_groups():
        register(commands)
    return parser


def _command_groups() -> list[Callable[[Any], None]]:
    """Further command groups, each in its own module with a ``register(subparsers)`` function."""
    from . import cli_audit, cli_rules, cli_serve

    return [cli_rules.register, cli_audit.register, cli_serve.register]


def _audit_options(parser: argparse.ArgumentParser) -> None:
    from .cli_audit import add_audit_options

    add_audit_options(parser)


def rules_option(parser: argparse.ArgumentParser, seeds: bool = False) -> None:
    """``--rules DIR`` (and with ``seeds``, ``--seeds DIR``): a rulebook (and evidence) instead of the shipped one."""
    parser.add_argument("--rules", metavar="DIR", type=Path,
                        help="rulebook directory to use instead of the shipped one (e.g. a working copy)")
    if seeds:
        parser.add_argument("--seeds", metavar="DIR", type=Path,
                            help="evidence directory with evidence.yaml and its documents (default: the shipped one)")


def _jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--jobs needs a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("--jobs must be 0 (all cores) or more")
    return value or (os.cpu_count() or 1)


def _version() -> str:
    from .engine import installed_version

    return installed_version("imt-cds")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    for option in ("rules", "seeds"):
        directory = getattr(args, option, None)
        if directory is not None and not directory.is_dir():
            what = "no such directory" if not directory.exists() else "not a directory"
            print(f"imt-cds: error: --{option} {directory}: {what}", file=sys.stderr)
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
        extra = _missing_extra(exc)
        if extra is not None:
            module, name = extra
            print(f"imt-cds: error: this command needs the optional package {module!r}, which is not installed: "
                  f"pip install 'imt-cds[{name}]'", file=sys.stderr)
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


def _missing_extra(exc: BaseException) -> tuple[str, str] | None:
    """(missing module, extra that installs it) when an ImportError, or one it was raised from, is a missing extra."""
    seen: BaseException | None = exc
    while seen is not None:
        name = getattr(seen, "name", None)
        if isinstance(seen, ImportError) and name:
            top = name.split(".")[0]
            if top in _EXTRA_OF_MODULE:
                return name, _EXTRA_OF_MODULE[top]
        seen = seen.__cause__ or seen.__context__
    return None


def _engine(rules: Path | None):  # type: ignore[no-untyped-def]
    from .engine import Engine, default_engine

    return default_engine() if rules is None else Engine(rules)


class UsageError(Exception):
    """The command cannot run as given (a file that cannot be read...): one line on stderr, exit 2."""


def _read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


def _run_evaluate(args: argparse.Namespace) -> int:
    from .consult_note import render_consult_note
    from .validation import parse_facts_json

    if args.attest_imt_diagnosis and not args.fhir:
        print("imt-cds: error: --attest-imt-diagnosis goes with --fhir (patient facts are IMT facts already)",
              file=sys.stderr)
        return EXIT_INVALID_INPUT
    fhir_input = None
    try:
        if args.fhir:
            fhir_input = _facts_from_fhir(args)
            if fhir_input is None:
                return EXIT_INVALID_INPUT
            if not fhir_input.eligibility.eligible:
                print(f"imt-cds: not evaluated: {fhir_input.eligibility.message}", file=sys.stderr)
                if args.format == "json":
                    sys.stdout.write(orjson.dumps({"not_evaluated": fhir_input.to_dict(facts=False)},
                                                  option=orjson.OPT_INDENT_2).decode() + "\n")
                return EXIT_NOT_ELIGIBLE
            if fhir_input.facts is None:
                print(f"imt-cds: conflicting FHIR resources in {args.path}; nothing was evaluated", file=sys.stderr)
                return EXIT_INVALID_INPUT
            facts = fhir_input.facts
        else:
            facts = parse_facts_json(_read_input(args.path))
    except InvalidInputError as exc:
        _report_invalid(exc, sys.stderr, source=args.path)
        if args.format == "json":
            sys.stdout.write(orjson.dumps(exc.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
        return EXIT_INVALID_INPUT
    diagnosis = fhir_input.eligibility.diagnosis.to_dict() if fhir_input and fhir_input.eligibility.diagnosis else None
    if args.audit:
        from .cli_audit import audited_evaluate

        assessment = audited_evaluate(args, facts, diagnosis)
    else:
        assessment = _engine(args.rules).evaluate(facts, diagnosis=diagnosis)
    sources = fhir_input.sources if fhir_input is not None else None
    if args.format == "json":
        document = assessment.to_dict()
        if fhir_input is not None:  # where each fact came from, and what could not be used (an added member)
            document["fhir_input"] = fhir_input.to_dict(facts=False)
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(render_consult_note(assessment, sources))
    return EXIT_OK


def _facts_from_fhir(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """Facts from a FHIR Bundle file (``FhirFacts``), read with the rulebook's value sets; what could not be used goes
    to stderr. ``ChartRefusedError`` (an ``InvalidInputError``) when whose data it is cannot be established."""
    from .fhir import MAX_CHART_BYTES, facts_from_bundle, facts_from_resources
    from .validation import load_json_object

    chart = load_json_object(_read_input(args.path), max_bytes=MAX_CHART_BYTES)
    options = {"terminology": _engine(args.rules).rulebook.terminology, "diagnosis_attested": args.attest_imt_diagnosis}
    if isinstance(chart, dict) and isinstance(chart.get("resourceType"), str) and chart["resourceType"] != "Bundle":
        read = facts_from_resources([chart], **options)  # one resource is a chart of one resource
    else:
        read = facts_from_bundle(chart, **options)
    for problem in read.problems:
        print(f"imt-cds: FHIR {problem.severity}: {problem}", file=sys.stderr)
    return read


def _report_invalid(exc: InvalidInputError, stream: TextIO, source: str) -> None:
    where = "standard input" if source == "-" else source
    if isinstance(exc, ChartRefusedError):
        print(f"imt-cds: FHIR chart {where} refused, nothing was evaluated: {exc.problems[0].message}", file=stream)
        return
    count = len(exc.problems)
    print(f"imt-cds: invalid patient facts in {where} ({count} problem{'s' if count != 1 else ''}); "
          "nothing was evaluated:", file=stream)
    for problem in exc.problems:
        print(f"  - {problem}", file=stream)


def _run_batch(args: argparse.Namespace) -> int:
    from .batch import BatchPathError, check_paths, run_batch
    from .cli_audit import check_audit_target

    try:
        check_audit_target(args)
        check_paths(args.input, args.output)  # before the output is created (or the input overwritten)
        summary = run_batch(
            source=args.input,
            destination=args.output,
            jobs=args.jobs,
            rules=args.rules,
            progress=args.progress,
            audit=args.audit,
            audit_input=not args.audit_no_input,
            detail=args.detail,
        )
    except BatchPathError as exc:
        print(f"imt-cds batch: error: {exc}", file=sys.stderr)
        return EXIT_INVALID_INPUT
    print(f"imt-cds batch: {plural(summary.total, 'line')}: {summary.evaluated} evaluated, {summary.invalid} invalid"
          + (f", {summary.failed} failed" if summary.failed else ""), file=sys.stderr)
    if args.detail == "full" and summary.output_bytes > _LARGE_BATCH_OUTPUT:
        print(f"imt-cds batch: note: wrote {summary.output_bytes / 2**20:,.0f} MiB of full assessments; "
              "--detail summary or --detail codes write a small fraction of that", file=sys.stderr)
    return EXIT_SOME_LINES_INVALID if summary.invalid or summary.failed else EXIT_OK


_LARGE_BATCH_OUTPUT = 100 << 20  # a full-detail run this large gets a note about the lighter outputs
