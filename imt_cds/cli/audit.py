"""``imt-cds audit ...`` and ``imt-cds report``: the audit trail and the rationale report on the command line.

``--audit DB`` on ``evaluate`` and ``batch`` (added here, wired in ``cli.py``) records every assessment; ``audit``
lists, shows, verifies, replays and exports records, and prints or signs the chain's head (each takes ``--db DB``: a
SQLite file, or a PostgreSQL connection string ``postgresql://user@host/db``), and makes signing keys (``keygen``);
``report`` writes the self-contained HTML rationale report for a patient file or a record.

Exit codes: 0 success (chain intact, replay identical); 1 the chain is broken, a replay differs, a checkpoint's
signature does not verify, or an internal error (a store that cannot be read or written, a missing archive); 2
invalid usage or input (no audit database at that path, an unknown record id, an invalid patient file, an anchor that
is not a whole hash, a file that is not a checkpoint or an Ed25519 key, an optional extra not installed: psycopg for
PostgreSQL, cryptography for keys and checkpoints). Errors are one line, never a traceback.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import orjson

from ..core.errors import AuditError, CheckpointError, InvalidInputError, NotAnAuditStoreError, RecordNotFoundError
from ..core.wording import plural
from .common import EXTRA_OF_MODULE, engine_for, missing_extra, missing_extra_message, read_input, report_invalid

if TYPE_CHECKING:
    from ..audit import AuditStore
    from ..core.assessment import Assessment
    from ..core.facts import PatientFacts

__all__ = ["add_audit_options", "audited_evaluate", "check_audit_target", "register"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_DB_HELP = "the audit store: a SQLite file, or a PostgreSQL connection string postgresql://user@host:port/dbname"
# Here cryptography signs and checks checkpoints: the extra that installs it for that is "signing".
_AUDIT_EXTRAS = MappingProxyType({**EXTRA_OF_MODULE, "cryptography": "signing"})
_ID_HELP = "record id (or a unique prefix of 8+ characters), its number in the chain, or 'last'"


def register(commands: Any) -> None:
    audit = commands.add_parser(
        "audit",
        help="the audit trail of recorded evaluations: list, show, verify, head, keygen, replay, export",
        description="The audit trail written by `evaluate --audit DB` and `batch --audit DB`: every evaluation, "
        "hash-chained, with the rulebook that made it archived. Each command but keygen takes --db DB.",
        epilog="exit codes: 0 success (intact, identical), 1 broken chain, replay difference or internal error, "
        "2 invalid usage (no audit database there, unknown record id, an optional extra not installed).",
    )
    sub = audit.add_subparsers(dest="audit_command", metavar="SUBCOMMAND")
    sub.required = True

    listing = sub.add_parser("list", help="one line per record: number, time, id, patient, rulebook, findings")
    _db_option(listing)
    listing.add_argument("--patient", metavar="ID", help="only this patient's records")
    listing.add_argument("--last", metavar="N", type=_positive, help="only the newest N records")
    listing.add_argument("--format", choices=("text", "json"), default="text")
    listing.set_defaults(run=_run_list)

    show = sub.add_parser("show", help="one record's rationale, as `evaluate` printed it (or the record as JSON)")
    show.add_argument("record", metavar="ID", help=_ID_HELP)
    _db_option(show)
    show.add_argument("--format", choices=("text", "json"), default="text",
                      help="text: the consult note exactly as evaluate printed it (the record's place in the chain "
                      "goes to standard error); json: the whole record")
    show.set_defaults(run=_run_show)

    verify = sub.add_parser(
        "verify", help="recompute every hash and link; name the first bad record (exit 1)",
        description="Recompute every record's hash and its link to the record before it, in chain order, and "
        "check that every rulebook the records name is archived, byte for byte, and rebuilds to its sha256. Exit 0 "
        "when intact; 1 when any record was modified, deleted, reordered or inserted (the first bad one is named), "
        "an archived file was altered (named), or a checkpoint does not hold.")
    _db_option(verify)
    verify.add_argument("--anchor", metavar="HASH", type=_full_hash,
                        help="a head hash printed earlier by `audit head` (all 64 hex digits): it must still be in "
                        "the chain")
    verify.add_argument("--checkpoint", metavar="FILE", type=Path, action="append", default=[],
                        help="a checkpoint signed by `audit head --sign` (repeatable): its signature must verify "
                        "with --public-key, and the record it ends at must still have the signed hash")
    verify.add_argument("--public-key", metavar="PEM", type=Path,
                        help="the Ed25519 public key (PEM) that the checkpoints were signed with")
    verify.add_argument("--skip-archive", action="store_true", help="do not rebuild the archived rulebooks")
    verify.add_argument("--format", choices=("text", "json"), default="text")
    verify.set_defaults(run=_run_verify)

    head = sub.add_parser(
        "head", help="print the latest chain hash (to anchor it elsewhere), or write a signed checkpoint",
        description="Print the latest chain hash. With --sign KEY, verify the whole trail first, then write a "
        "checkpoint (records, head hash, time, key id) signed with the Ed25519 private key; keep the public key "
        "and the checkpoint away from the database, and check them with `audit verify --checkpoint FILE "
        "--public-key PEM`.")
    _db_option(head)
    head.add_argument("--format", choices=("text", "json"), default="text")
    head.add_argument("--sign", metavar="KEY", type=Path,
                      help="write a checkpoint signed with this Ed25519 private key (PEM; see `audit keygen`)")
    head.add_argument("-o", "--output", metavar="FILE", type=Path,
                      help="with --sign: write the checkpoint here (default: standard output)")
    head.set_defaults(run=_run_head)

    keygen = sub.add_parser("keygen", help="create an Ed25519 key pair (PEM) to sign checkpoints with",
                            description="Write a new Ed25519 private key (PKCS#8 PEM, unencrypted, readable by its "
                            "owner only) and its public key (PEM). Existing files are never overwritten.")
    keygen.add_argument("--private-key", metavar="FILE", type=Path, required=True,
                        help="where to write the private key")
    keygen.add_argument("--public-key", metavar="FILE", type=Path, required=True,
                        help="where to write the public key")
    keygen.set_defaults(run=_run_keygen)

    replay = sub.add_parser(
        "replay", help="re-evaluate a record with its archived rulebook; exit 1 and show what differs",
        description="Re-evaluate the recorded input with the archived rulebook the record names and compare "
        "findings, suppressions, derived facts and trace. With --with-current, use the current rulebook (the "
        "shipped one, or --rules DIR) to see what it would say differently.")
    replay.add_argument("record", metavar="ID", help=_ID_HELP)
    _db_option(replay)
    replay.add_argument("--with-current", action="store_true", help="compare with the current rulebook instead")
    replay.add_argument("--rules", metavar="DIR", type=Path, help="with --with-current: this rulebook directory")
    replay.add_argument("--format", choices=("text", "json"), default="text")
    replay.set_defaults(run=_run_replay)

    export = sub.add_parser("export", help="export a record as a FHIR R4 Bundle (GuidanceResponse, RequestGroup, a "
                            "CommunicationRequest or DetectedIssue per finding, OperationOutcome, Provenance, Device)")
    export.add_argument("record", metavar="ID", help=_ID_HELP)
    _db_option(export)
    export.add_argument("--format", choices=("fhir",), required=True, help="fhir: a FHIR R4 Bundle (JSON)")
    export.add_argument("-o", "--output", metavar="FILE", type=Path, help="write here (default: standard output)")
    export.set_defaults(run=_run_export)

    report = commands.add_parser(
        "report", help="write the self-contained HTML rationale report for a patient or an audit record",
        description="Write one self-contained HTML page (opens offline): the patient's facts, each finding with "
        "its reasons and quoted evidence, what was withheld, the provenance and a picture of the derivation graph "
        "(input facts -> derived facts -> findings). Give a patient file, or --audit-id ID --db DB.",
        epilog="examples: imt-cds report examples/02_alk_positive_unresectable.json --html report.html\n"
        "          imt-cds report --audit-id last --db audit.db --html report.html",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("patient", metavar="PATIENT", nargs="?", help="patient JSON file (or - for standard input)")
    report.add_argument("--audit-id", metavar="ID", help="report on this audit record instead (" + _ID_HELP + ")")
    report.add_argument("--db", metavar="DB", help=_DB_HELP + " (with --audit-id)")
    report.add_argument("--html", metavar="OUT", type=Path, required=True, help="the HTML file to write")
    report.add_argument("--rules", metavar="DIR", type=Path, help="rulebook directory to evaluate PATIENT with")
    report.set_defaults(run=_run_report)


def add_audit_options(parser: argparse.ArgumentParser) -> None:
    """``--audit DB`` and ``--audit-no-input``, for the commands that evaluate (``evaluate``, ``batch``)."""
    parser.add_argument("--audit", metavar="DB",
                        help="record every assessment in this audit store (a SQLite file, created on first use, or "
                        "postgresql://...); an assessment that cannot be recorded is not output")
    parser.add_argument("--audit-no-input", action="store_true",
                        help="keep only the sha256 of each input in the audit records (such records cannot be "
                        "replayed)")


def _db_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", metavar="DB", required=True, help=_DB_HELP)


def _full_hash(text: str) -> str:
    value = text.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise argparse.ArgumentTypeError(f"must be the full 64-hex-digit hash printed by `audit head`, got {text!r} "
                                         f"({len(value)} characters)")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


# --- errors -------------------------------------------------------------------------------------------------------


def _fail(exc: AuditError) -> int:
    # A driver or signing package that is not installed is no fault of the store or of a key file: it is the same
    # usage error (exit 2, naming the pip install) as any command's missing extra.
    extra = missing_extra(exc, _AUDIT_EXTRAS)
    if extra is not None:
        print(missing_extra_message(*extra), file=sys.stderr)
        return EXIT_USAGE
    print(f"imt-cds: error [{exc.code}]: {exc}", file=sys.stderr)
    return EXIT_USAGE if isinstance(exc, (NotAnAuditStoreError, RecordNotFoundError, CheckpointError)) else EXIT_FAILED


def _guarded(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    @functools.wraps(run)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except AuditError as exc:
            return _fail(exc)

    return wrapper


def _open(target: str, *, create: bool = False) -> AuditStore:
    from ..audit import open_store

    return open_store(target, create=create)


# --- evaluate --audit / batch --audit -----------------------------------------------------------------------------


def check_audit_target(args: argparse.Namespace) -> None:
    """Open (and create if need be) the ``--audit`` store once, before any work: a bad target is invalid usage."""
    if not getattr(args, "audit", None):
        return
    try:
        _open(args.audit, create=True).close()
    except AuditError as exc:
        raise SystemExit(_fail(exc)) from None


def audited_evaluate(args: argparse.Namespace, facts: PatientFacts,
                     diagnosis: Mapping[str, Any] | None = None) -> Assessment:
    """Evaluate ``facts`` with ``args.rules`` and record the assessment in ``args.audit`` before returning it (as
    ``Engine(audit=store)`` does: one that cannot be recorded raises, and is never output); tell the user the
    record id on standard error."""
    from ..audit import open_store
    from ..core.engine import Engine

    try:
        store = open_store(args.audit, store_input=not args.audit_no_input)
    except AuditError as exc:
        raise SystemExit(_fail(exc)) from None
    with store:
        assessment = Engine(args.rules).evaluate(facts, diagnosis=diagnosis)
        record_id = store.append(assessment)
        print(f"imt-cds: recorded as audit record {record_id} in {store.location}", file=sys.stderr)
    return assessment


# --- audit commands -----------------------------------------------------------------------------------------------


@_guarded
def _run_list(args: argparse.Namespace) -> int:
    with _open(args.db) as store:
        records = store.records(patient_id=args.patient, last=args.last)
    if args.format == "json":
        sys.stdout.write(orjson.dumps([r.summary() for r in records], option=orjson.OPT_INDENT_2).decode() + "\n")
        return EXIT_OK
    if not records:
        print("(no audit records)")
        return EXIT_OK
    header = ("#", "recorded at (UTC)", "id", "patient", "rulebook", "findings")
    rows = []
    for record in records:
        rec, flags, withheld = (len(record.codes(p)) for p in ("recommendations", "risk_flags", "suppressed"))
        note = "" if record.canonical_input_json() is not None else "  [input: sha256 only]"
        rows.append((str(record.seq), record.recorded_at, record.id, str(record.patient_id or "-"),
                     f"{record.rulebook['name']} {record.rulebook['version']}",
                     f"{plural(rec, 'recommendation/request', 'recommendations/requests')}, "
                     f"{plural(flags, 'flag')}, {withheld} withheld{note}"))
    # Each column as wide as its widest cell, so that columns line up whatever the ids and versions are.
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header) - 1)]
    for row in (header, *rows):
        cells = [row[0].rjust(widths[0]), *(cell.ljust(width) for cell, width in zip(row[1:-1], widths[1:]))]
        print("  ".join((*cells, row[-1])))
    return EXIT_OK


@_guarded
def _run_show(args: argparse.Namespace) -> int:
    from ..audit.recorded import recorded_assessment
    from ..render.consult_note import render_consult_note

    with _open(args.db) as store:
        record = store.record(args.record)
    if args.format == "json":
        sys.stdout.write(orjson.dumps(record.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
        return EXIT_OK
    view = recorded_assessment(record.assessment, record.canonical_input_json())
    sys.stdout.write(render_consult_note(view))  # type: ignore[arg-type]
    # (standard output is the note exactly as evaluate printed it; where the record sits goes beside it, as
    # evaluate --audit says where it recorded)
    print(f"imt-cds: audit record #{record.seq}, id {record.id}, recorded {record.recorded_at}, hash {record.hash}",
          file=sys.stderr)
    return EXIT_OK


@_guarded
def _run_verify(args: argparse.Namespace) -> int:
    from ..audit.checkpoint import read_checkpoint
    from ..core.errors import CheckpointSignatureError

    if args.checkpoint and args.public_key is None:
        print("imt-cds: error: --checkpoint needs --public-key PEM (the key it was signed with)", file=sys.stderr)
        return EXIT_USAGE
    if args.public_key is not None and not args.checkpoint:
        print("imt-cds: error: --public-key is used only with --checkpoint FILE", file=sys.stderr)
        return EXIT_USAGE
    checkpoints, forged = [], []
    if args.checkpoint:
        public_key = _read_file(args.public_key, "public key")
        for path in args.checkpoint:
            try:
                checkpoints.append(read_checkpoint(_read_file(path, "checkpoint"), public_key, source=str(path),
                                                   key_source=str(args.public_key)))
            except CheckpointSignatureError as exc:
                forged.append(f"checkpoint: {exc}")
    with _open(args.db) as store:
        report = store.verify(anchor=args.anchor, check_archive=not args.skip_archive, checkpoints=checkpoints)
    if forged:
        from dataclasses import replace

        report = replace(report, problems=(*forged, *report.problems))
    if args.format == "json":
        sys.stdout.write(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
        return EXIT_OK if report.ok else EXIT_FAILED
    if report.first_break is not None:
        print(f"audit trail BROKEN at {report.first_break}")
        print(f"  the {plural(report.records, 'record')} before it verify; the last intact hash is {report.head}")
    for problem in report.problems:
        print(f"audit trail problem: {problem}")
    if report.ok:
        archive = "" if args.skip_archive else "; every archived rulebook rebuilds to its sha256"
        anchored = ", including the anchored hash" if args.anchor else ""
        uncovered = report.records - max((c.records for c in checkpoints), default=report.records)
        signed = (f", matching {plural(len(checkpoints), 'signed checkpoint')} ({plural(uncovered, 'record')} after "
                  "the last checkpoint, covered by no signature)" if checkpoints else "")
        print(f"audit trail intact: {plural(report.records, 'record')}{anchored}{signed}{archive}")
        print(f"head {report.head}")
        return EXIT_OK
    return EXIT_FAILED


@_guarded
def _run_head(args: argparse.Namespace) -> int:
    if args.sign is not None:
        return _sign_head(args)
    if args.output is not None:
        print("imt-cds: error: -o/--output is used only with --sign KEY", file=sys.stderr)
        return EXIT_USAGE
    with _open(args.db) as store:
        head = store.head()
    from ..audit import GENESIS_HASH

    if args.format == "json":
        data = ({"seq": 0, "id": None, "recorded_at": None, "hash": GENESIS_HASH} if head is None
                else {"seq": head.seq, "id": head.id, "recorded_at": head.recorded_at, "hash": head.hash})
        sys.stdout.write(orjson.dumps(data).decode() + "\n")
    else:
        if head is None:
            print("imt-cds: the audit trail is empty; its head is the genesis hash", file=sys.stderr)
        print(GENESIS_HASH if head is None else head.hash)
    return EXIT_OK


def _sign_head(args: argparse.Namespace) -> int:
    from ..audit.checkpoint import sign_checkpoint

    private_key = _read_file(args.sign, "private key")
    with _open(args.db) as store:
        report = store.verify()  # a checkpoint certifies the trail: never sign one that does not verify
    if not report.ok:
        problem = report.first_break or report.problems[0]
        print(f"imt-cds: error: not signing: the audit trail does not verify ({problem}); run `imt-cds audit verify`",
              file=sys.stderr)
        return EXIT_FAILED
    checkpoint = sign_checkpoint(report.records, report.head, private_key, source=str(args.sign))
    status = _write(args.output, checkpoint.to_json())
    if status == EXIT_OK and args.output is not None:
        print(f"imt-cds: wrote a {checkpoint.describe()} (head {checkpoint.head}) to {args.output}", file=sys.stderr)
    return status


@_guarded
def _run_keygen(args: argparse.Namespace) -> int:
    from ..audit.checkpoint import generate_key_pair, public_key_id

    private_pem, public_pem = generate_key_pair()
    if args.private_key.resolve() == args.public_key.resolve():
        print("imt-cds: error: --private-key and --public-key must be two different files", file=sys.stderr)
        return EXIT_USAGE
    for path in (args.private_key, args.public_key):
        if path.exists():
            print(f"imt-cds: error: {path} already exists; keygen never overwrites a key", file=sys.stderr)
            return EXIT_USAGE
    for path, pem, mode in ((args.private_key, private_pem, 0o600), (args.public_key, public_pem, 0o644)):
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(descriptor, "wb") as file:
                file.write(pem)
        except OSError as exc:
            print(f"imt-cds: error: cannot write {path}: {exc.strerror}", file=sys.stderr)
            return EXIT_USAGE
    print(f"imt-cds: wrote the private key {args.private_key} (keep it away from the audit database) and the public "
          f"key {args.public_key} (key id {public_key_id(public_pem)})", file=sys.stderr)
    return EXIT_OK


def _read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read the {what} {path}: {exc.strerror}") from exc


@_guarded
def _run_replay(args: argparse.Namespace) -> int:
    from ..audit import replay

    if args.rules is not None and not args.with_current:
        print("imt-cds: error: --rules needs --with-current (a replay otherwise uses the archived rulebook)",
              file=sys.stderr)
        return EXIT_USAGE
    with _open(args.db) as store:
        result = replay(store, args.record, with_current=args.with_current, rulebook=args.rules)
    if args.format == "json":
        sys.stdout.write(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
        return EXIT_OK if result.identical else EXIT_FAILED
    record, used = result.record, result.rulebook
    recorded = f"{record.rulebook['name']} {record.rulebook['version']} ({record.rulebook['sha256'][:12]})"
    current = f"{used['name']} {used['version']} ({used['sha256'][:12]})"
    if args.with_current:
        print(f"record #{record.seq} (id {record.id}), made with rulebook {recorded}, evaluated again with the "
              f"current rulebook {current}:")
        for item in result.context:
            print(f"  context: {item.describe('current')}")
        now = "current"
    else:
        print(f"record #{record.seq} (id {record.id}) replayed with its archived rulebook {recorded}:")
        now = "replayed"
    if result.identical:
        print("  identical: the same findings, suppressions, derived facts and trace")
        return EXIT_OK
    print(f"  {plural(len(result.differences), 'difference')}:")
    for difference in result.differences:
        print(f"  - {difference.describe(now)}")
    return EXIT_FAILED


@_guarded
def _run_export(args: argparse.Namespace) -> int:
    from ..render.fhir_output import assessment_bundle

    with _open(args.db) as store:
        record = store.record(args.record)
    bundle = assessment_bundle(record.assessment, audit_record=record.chain_ref())
    text = orjson.dumps(bundle, option=orjson.OPT_INDENT_2).decode() + "\n"
    return _write(args.output, text)


@_guarded
def _run_report(args: argparse.Namespace) -> int:
    from ..render.report_html import render_report_html

    if args.patient is None and args.audit_id is None:
        print("imt-cds: error: report on what? give a patient file (or - for standard input), or --audit-id ID "
              "--db DB", file=sys.stderr)
        return EXIT_USAGE
    if args.patient is not None and args.audit_id is not None:
        print("imt-cds: error: give a patient file or --audit-id ID (with --db DB), not both", file=sys.stderr)
        return EXIT_USAGE
    if args.audit_id is not None:
        if not args.db:
            print("imt-cds: error: --audit-id needs --db DB", file=sys.stderr)
            return EXIT_USAGE
        with _open(args.db) as store:
            record = store.record(args.audit_id)
        page = render_report_html(record.assessment, input_facts=record.input, audit_record=record.chain_ref())
    else:
        from ..core.validation import parse_facts_json

        try:
            facts = parse_facts_json(read_input(args.patient))
        except InvalidInputError as exc:
            report_invalid(exc, sys.stderr, source=args.patient)
            return EXIT_USAGE
        assessment = engine_for(args.rules).evaluate(facts)
        page = render_report_html(assessment.to_dict(), input_facts=orjson.loads(assessment.canonical_input_json()))
    status = _write(args.html, page)
    if status == EXIT_OK:
        print(f"imt-cds: wrote {args.html}", file=sys.stderr)
    return status


def _write(path: Path | None, text: str) -> int:
    if path is None:
        sys.stdout.write(text)
        return EXIT_OK
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"imt-cds: error: cannot write {path}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK
