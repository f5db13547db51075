"""``imt-cds evaluate``: one patient, from patient-facts JSON or from a FHIR R4 chart (``--fhir``)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

import orjson

from ..core.errors import InputProblem, InvalidInputError
from .audit import add_audit_options, audited_evaluate
from .common import (
    EPILOG,
    EXIT_INVALID_INPUT,
    EXIT_NOT_ELIGIBLE,
    EXIT_OK,
    engine_for,
    read_input,
    report_invalid,
    rules_option,
)

if TYPE_CHECKING:  # (the FHIR reader is imported when a chart is read)
    from ..fhir.reader import FhirFacts

__all__ = ["register"]


def register(commands: Any) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="evaluate one patient (a JSON file, or - for standard input)",
        description="Evaluate one patient given as a JSON document (the fields are listed in the README, section "
        "Input) and print the assessment: as a short consult note (default) or as the assessment's JSON document "
        "(README, section Output).",
        epilog="example: imt-cds evaluate examples/02_alk_positive_unresectable.json --format json\n" + EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluate.add_argument("path", metavar="PATH", help="patient JSON file, or - to read standard input")
    evaluate.add_argument("--fhir", action="store_true",
                          help="PATH is a FHIR R4 chart, a Bundle (mCODE, Genomics Reporting) or one resource: "
                          "read the facts from it, print what could not be used on stderr. Evaluated only for one "
                          "living patient with an IMT diagnosis in the chart (exit 4 otherwise; exit 2 when it holds "
                          "several patients or conflicts prevent evaluation)")
    evaluate.add_argument("--attest-imt-diagnosis", action="store_true",
                          help="with --fhir: the IMT diagnosis was established outside this chart; evaluate it "
                          "even without an IMT Condition (recorded in the assessment's provenance)")
    evaluate.add_argument("--format", choices=("text", "json"), default="text",
                          help="text: a consult note (default); json: the assessment document")
    rules_option(evaluate)
    add_audit_options(evaluate)
    evaluate.set_defaults(run=_run_evaluate)



def _run_evaluate(args: argparse.Namespace) -> int:
    from ..core.validation import parse_facts_json
    from ..render.consult_note import render_consult_note

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
                kinds = {p.kind for p in fhir_input.problems if p.severity == "error"}
                said = ("conflicting FHIR resources" if kinds == {"conflict"} else
                        "FHIR resources that disagree, cannot be read or are not tied to the IMT"
                        if "unattributed" in kinds else "FHIR resources that disagree or cannot be read")
                print(f"imt-cds: {said} in {args.path}; nothing was evaluated", file=sys.stderr)
                return EXIT_INVALID_INPUT
            facts = fhir_input.facts
        else:
            facts = parse_facts_json(read_input(args.path))
    except InvalidInputError as exc:
        report_invalid(exc, sys.stderr, source=args.path, what="FHIR chart" if args.fhir else "patient facts")
        if args.format == "json":
            sys.stdout.write(orjson.dumps(exc.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
        return EXIT_INVALID_INPUT
    diagnosis = fhir_input.eligibility.diagnosis.to_dict() if fhir_input and fhir_input.eligibility.diagnosis else None
    if args.audit:
        assessment = audited_evaluate(args, facts, diagnosis)
    else:
        assessment = engine_for(args.rules).evaluate(facts, diagnosis=diagnosis)
    sources = fhir_input.sources if fhir_input is not None else None
    if args.format == "json":
        document = assessment.to_dict()
        if fhir_input is not None:  # where each fact came from, and what could not be used (an added member)
            document["fhir_input"] = fhir_input.to_dict(facts=False)
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(render_consult_note(assessment, sources))
    return EXIT_OK


def _facts_from_fhir(args: argparse.Namespace) -> FhirFacts:
    """Facts from a FHIR Bundle file (``FhirFacts``), read with the rulebook's value sets; what could not be used goes
    to stderr. ``ChartRefusedError`` (an ``InvalidInputError``) when whose data it is cannot be established."""
    from ..core.validation import load_json_object
    from ..fhir.reader import MAX_CHART_BYTES, facts_from_bundle, facts_from_resources

    chart = load_json_object(read_input(args.path), max_bytes=MAX_CHART_BYTES)
    if isinstance(chart, dict) and "resourceType" not in chart:
        raise InvalidInputError([InputProblem("", _no_resource_type(chart), None)])
    rulebook = engine_for(args.rules).rulebook
    options = {"terminology": rulebook.terminology, "drugs": rulebook.drugs,
               "diagnosis_attested": args.attest_imt_diagnosis}
    if isinstance(chart, dict) and isinstance(chart.get("resourceType"), str) and chart["resourceType"] != "Bundle":
        read = facts_from_resources([chart], **options)  # one resource is a chart of one resource
    else:
        read = facts_from_bundle(chart, **options)
    for problem in read.problems:
        print(f"imt-cds: FHIR {problem.severity}: {problem}", file=sys.stderr)
    return read


def _no_resource_type(chart: dict[str, Any]) -> str:
    """What to say of a JSON object given to --fhir without a resourceType (the reader would say "got None")."""
    from ..core.fact_fields import keys_at

    if chart.keys() & set(keys_at(())):
        return "no resourceType: this looks like patient facts, not a FHIR chart; drop --fhir"
    return "no resourceType: expected a FHIR Bundle (or one FHIR resource)"
