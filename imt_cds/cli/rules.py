"""``imt-cds rules ...`` and ``imt-cds explain``: the rule authoring toolkit on the command line.

Every command takes ``--rules DIR`` (default: the shipped rulebook) so that an author can work on a copy.
Exit codes: 0 clean, 1 problems found (lint errors, failing examples, unfired rules, violated properties, a changed
rule without a version bump), 2 invalid usage or input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import EvidenceError, RulebookError
from .common import EXIT_INVALID_INPUT, read_input, report_invalid, rules_option

if TYPE_CHECKING:  # (each command imports what it uses when it runs)
    from ..authoring.rule_examples import ExampleOutcome
    from ..authoring.verification import Check
    from ..core.assessment import Assessment
    from ..core.engine import Engine
    from ..core.rulebook import Rulebook

__all__ = ["register"]


def register(commands: Any) -> None:
    rules = commands.add_parser(
        "rules",
        help="rule authoring: list, show, copy, lint, test, coverage, verify, diff, codesystems",
        description="Tools for clinical rule authors. Each takes --rules DIR to work on a copy of the rulebook.",
    )
    sub = rules.add_subparsers(dest="rules_command", metavar="SUBCOMMAND")
    sub.required = True

    listing = sub.add_parser("list", help="one line per rule: id, version, kind, what it produces, title")
    _rules_option(listing)
    listing.set_defaults(run=_run_list)

    show = sub.add_parser("show", help="one rule in full: metadata, evidence with quotes, condition, examples")
    show.add_argument("rule_id", metavar="ID", help="rule id, e.g. R32a or C3")
    _rules_option(show)
    show.set_defaults(run=_run_show)

    copy = sub.add_parser("copy", help="copy the rulebook (default: the shipped one) to a new working directory",
                          description="Copy a rulebook directory to DEST, to change it safely; with --seeds-to, also "
                          "copy the evidence registry and its documents (to add or correct evidence).")
    copy.add_argument("destination", metavar="DEST", type=Path, help="new directory (must not exist)")
    copy.add_argument("--seeds-to", metavar="DIR", type=Path, help="also copy the evidence directory here")
    _rules_option(copy)
    copy.set_defaults(run=_run_copy)

    lint = sub.add_parser("lint", help="check the rulebook; report every problem with file, line, rule and path",
                          description="Load and compile the rulebook and report every problem the loader and the "
                          "compiler know, all at once. Exit 0 when clean, 1 when there are problems.")
    _rules_option(lint)
    lint.set_defaults(run=_run_lint)

    test = sub.add_parser("test", help="run every rule's examples; show expected versus actual for each failure",
                          description="Run the examples written in every rule file against the rulebook. A failure "
                          "shows what fired that should not have (and why), what did not fire and why not. Exit 0 "
                          "when all pass, 1 otherwise.")
    test.add_argument("--junit", metavar="FILE", type=Path, help="also write a JUnit XML report (for CI)")
    _rules_option(test)
    test.set_defaults(run=_run_test)

    coverage = sub.add_parser("coverage", help="which rules and condition branches the examples and vignettes reach",
                              description="Evaluate every rule example and the project's clinical vignettes, and "
                              "report which rules and which branches of their conditions fired. Exit 1 if some rule "
                              "never fired.")
    coverage.add_argument("--vignettes", metavar="DIR", type=Path,
                          help="directory of vignette JSON files (default: the project's tests/vignettes if present)")
    coverage.add_argument("--no-vignettes", action="store_true", help="use the rule examples only")
    coverage.add_argument("--format", choices=("text", "json"), default="text")
    _rules_option(coverage)
    coverage.set_defaults(run=_run_coverage)

    verify = sub.add_parser("verify", help="prove the safety properties over the whole input space (not sampling)",
                            description="Check, over every possible patient: rules that can never fire, redundant "
                            "rules, findings that must never co-occur, and every safety property of the catalogue. "
                            "A violation prints a minimal counterexample patient, re-checked on the real engine. "
                            "Exit 0 when everything holds, 1 otherwise. Needs z3 (pip install 'imt-cds[authoring]').")
    verify.add_argument("--format", choices=("text", "json"), default="text")
    _rules_option(verify)
    verify.set_defaults(run=_run_verify)

    diff = sub.add_parser("diff", help="compare two rulebooks: changed rules, version bumps, patients affected",
                          description="List rules added, removed and changed (a changed rule without a version "
                          "bump is an error), changed parameters and evidence, and count the patient classes whose "
                          "outcome changes, with examples. Exit 0 when consistent, 1 on a missing version bump.")
    diff.add_argument("old", metavar="OLD_DIR", type=Path)
    diff.add_argument("new", metavar="NEW_DIR", type=Path)
    diff.add_argument("--seeds", metavar="DIR", type=Path, help="evidence directory for both (default: shipped)")
    # A copy made with `rules copy --seeds-to` has its own evidence: its rules may cite entries the other lacks, and
    # a corrected quote is a change to report, so each side can be read with its own evidence directory.
    diff.add_argument("--old-seeds", metavar="DIR", type=Path,
                      help="evidence directory for OLD_DIR (default: --seeds)")
    diff.add_argument("--new-seeds", metavar="DIR", type=Path,
                      help="evidence directory for NEW_DIR (default: --seeds)")
    diff.add_argument("--examples", type=int, default=3, metavar="N", help="example patients to show (default 3)")
    diff.add_argument("--format", choices=("text", "json"), default="text")
    diff.set_defaults(run=_run_diff)

    codesystems = sub.add_parser(
        "codesystems", help="write the project's code systems (urn:imt-cds:*) as FHIR CodeSystem JSON files",
        description="Write one FHIR R4 CodeSystem per code system of the project (finding codes from the rulebook, "
        "fact paths, test methods, service card topics, override reasons) as DIR/CodeSystem-<id>.json, for a "
        "terminology server to load. Existing files of the same name are replaced.")
    codesystems.add_argument("-o", "--output", metavar="DIR", type=Path, required=True,
                             help="directory to write to (created if missing)")
    _rules_option(codesystems)
    codesystems.set_defaults(run=_run_codesystems)

    explain = commands.add_parser(
        "explain",
        help="why a patient gets each finding, or why not a given code",
        description="Explain an assessment: for each finding (or the one given with --code) the derivation from the "
        "rule down to input facts; for a --code that is absent, every rule that could produce it and the first "
        "condition that failed, with the patient's actual value, or the rule that suppressed it.",
    )
    explain.add_argument("path", metavar="PATIENT", help="patient JSON file, or - for standard input")
    explain.add_argument("--code", metavar="CODE", help="explain this finding code (why, or why not)")
    explain.add_argument("--format", choices=("text", "json"), default="text")
    _rules_option(explain)
    explain.set_defaults(run=_run_explain)


def _rules_option(parser: argparse.ArgumentParser) -> None:
    rules_option(parser, seeds=True)


def _load(args: argparse.Namespace) -> Rulebook:
    from ..core.rule_loader import load_rulebook

    return load_rulebook(args.rules, args.seeds)


# --- list / show --------------------------------------------------------------------------------------------------


def _run_list(args: argparse.Namespace) -> int:
    rulebook = _load(args)
    print(f"rulebook {rulebook.name} {rulebook.version} ({len(rulebook.rules)} rules, sha256 "
          f"{rulebook.sha256[:12]})")
    for rule in rulebook.rules:
        produces = ", ".join(rule.codes) or (f"derives {rule.derives}" if rule.derives else "")
        if rule.suppresses:
            produces = f"suppresses {', '.join(rule.suppresses)}"
        indent = "  " if rule.part_of else ""
        print(f"{indent}{rule.id:<5} {rule.version:<7} {rule.kind:<15} {rule.title}")
        if produces:
            print(f"{indent}{'':<29}-> {produces}")
    return 0


def _run_show(args: argparse.Namespace) -> int:
    from ..core.conditions import describe

    rulebook = _load(args)
    rule = rulebook.get(args.rule_id)
    if rule is None:
        import difflib

        close = difflib.get_close_matches(args.rule_id, [r.id for r in rulebook.rules], n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        print(f"imt-cds: no rule {args.rule_id!r} in rulebook {rulebook.name}{hint}", file=sys.stderr)
        return 2
    lines = [f"{rule.id} v{rule.version}: {rule.title}",
             f"  kind: {rule.kind}    strength: {rule.strength}    file: {rule.file}"]
    if rule.part_of:
        lines.append(f"  reason of {rule.part_of}: {rule.reason}")
    if rule.description:
        lines.append(f"  note: {rule.description}")
    if rule.reasons:
        lines.append(f"  holds when any of its reasons holds: {', '.join(rule.reasons)}")
    if rule.when is not None:
        lines.append(f"  when: {describe(rule.when)}")
    if rule.derives and not rule.reasons:
        lines.append(f"  derives: {rule.derives}")
    for finding in rule.findings:
        extra = f"  (only when {describe(finding.when)})" if finding.when is not None else ""
        lines.append(f"  produces {finding.code} [{finding.kind}, indicator {finding.indicator}]{extra}")
        lines.append(f"    {finding.title}: {finding.summary}")
        if finding.gene or finding.drugs:
            about = [f"gene {finding.gene.upper()}"] if finding.gene else []
            for name in finding.drugs:
                drug = rulebook.drugs[name]
                code = f"RxNorm {drug.rxnorm}" if drug.rxnorm else "no verified RxNorm code: matched by name"
                ages = ", ".join(f"labelled from {p} for {t.upper()}" for t, p in drug.label_min_age.items())
                about.append(f"{name} ({drug.inhibitor_class}; {code}" + (f"; {ages}" if ages else "") + ")")
            lines.append(f"    about: {'; '.join(about)}")
    if rule.suppresses:
        lines.append(f"  suppresses the findings of: {', '.join(rule.suppresses)}")
    lines.append("  evidence:" if rule.evidence else "  evidence: none (a DESIGN choice of this library)")
    for evidence_id in rule.evidence:
        entry = rulebook.evidence[evidence_id]
        if entry.quote:
            level = f" [level {entry.level}]" if entry.level else ""
            lines.append(f'    {entry.id}: "{entry.quote}"{level} ({entry.source})')
        else:
            lines.append(f"    {entry.id}: {entry.citation}. {entry.claim} ({entry.verification})")
    lines.append("  examples:")
    for example in rule.examples:
        verdict = "fires" if example.fires else "stays silent"
        lines.append(f"    - {example.name}: {verdict}")
        lines.append(f"      facts: {_compact(dict(example.facts))}")
        for key in ("expect", "expect_not", "expect_suppressed"):
            if getattr(example, key):
                lines.append(f"      {key}: {', '.join(getattr(example, key))}")
    print("\n".join(lines))
    return 0


def _compact(value: Any) -> str:
    import orjson

    return orjson.dumps(value).decode()


def _run_copy(args: argparse.Namespace) -> int:
    import shutil

    from ..core import _resources

    source = args.rules or _resources.rules_dir()
    seeds = args.seeds or _resources.seeds_dir()
    for target in (args.destination, args.seeds_to):
        if target is not None and target.exists():
            print(f"imt-cds: {target} already exists; choose a new directory", file=sys.stderr)
            return 2
    _load(args)  # only a rulebook that loads is worth copying
    shutil.copytree(source, args.destination)
    print(f"copied rulebook {source} -> {args.destination}")
    if args.seeds_to is not None:
        shutil.copytree(seeds, args.seeds_to)
        print(f"copied evidence {seeds} -> {args.seeds_to}")
    return 0


def _run_codesystems(args: argparse.Namespace) -> int:
    import json

    from ..render.fhir_codesystems import code_systems

    systems = code_systems(_load(args))
    try:
        args.output.mkdir(parents=True, exist_ok=True)
        for system in systems:
            target = args.output / f"CodeSystem-{system['id']}.json"
            target.write_text(json.dumps(system, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            print(f"{target}  {system['url']} {system['version']} ({system['count']} codes)")
    except OSError as exc:
        print(f"imt-cds: cannot write code systems to --output {args.output}: {exc.strerror or exc}",
              file=sys.stderr)
        return 2
    return 0


# --- lint ---------------------------------------------------------------------------------------------------------


def _run_lint(args: argparse.Namespace) -> int:
    from ..core.compiler import compile_rulebook

    try:
        rulebook = _load(args)
        compile_rulebook(rulebook)
    except RulebookError as exc:
        for problem in exc.problems:
            print(str(problem))
        count = len(exc.problems)
        print(f"{count} problem{'s' if count != 1 else ''} found", file=sys.stderr)
        return 1
    except EvidenceError as exc:
        for evidence_problem in exc.problems:
            print(evidence_problem)
        print(f"{len(exc.problems)} evidence problem{'s' if len(exc.problems) != 1 else ''} found", file=sys.stderr)
        return 1
    print(f"rulebook {rulebook.name} {rulebook.version}: {len(rulebook.rules)} rules, no problems")
    return 0


# --- test ---------------------------------------------------------------------------------------------------------


def _engine_for(args: argparse.Namespace) -> Engine:
    from ..core.engine import Engine

    return Engine(_load(args))


def _run_test(args: argparse.Namespace) -> int:
    from ..authoring.rule_examples import run_rule_examples

    engine = _engine_for(args)
    outcomes = run_rule_examples(engine)
    failed = [o for o in outcomes if not o.passed]
    for outcome in failed:
        rule, example, assessment = outcome.rule, outcome.example, outcome.assessment
        print(f"FAIL {rule.id} ({rule.file}) example {example.name!r}")
        for failure in outcome.failures:
            print(f"  - {failure}")
        explained: set[str] = set()
        if example.fires and not outcome.fired:
            if rule.codes:
                print("    why not:")
                print(_why_not(engine, assessment, rule.codes[0]))
                explained.add(rule.codes[0])
            else:
                print(f"    {rule.id} derives {rule.derives}; see `imt-cds explain` on this patient")
        if not example.fires and outcome.fired:
            for entry in assessment.trace:
                if entry.rule.id == rule.id or entry.part_of == rule.id:
                    matched = _compact(entry.to_dict()["matched"])
                    print(f"    it fired on branch {entry.engine_rule}, matching {matched}")
        for code in example.expect:
            if (code not in assessment.codes | assessment.derived_names and code not in explained
                    and code in assessment.rulebook.finding_codes):
                print(f"    why not {code}:")
                print(_why_not(engine, assessment, code))
    if args.junit is not None:
        _write_junit(args.junit, outcomes)
    print(f"{len(outcomes) - len(failed)} of {len(outcomes)} examples pass"
          + (f"; {len(failed)} fail" if failed else ""))
    return 1 if failed else 0


def _why_not(engine: Engine, assessment: Assessment, code: str) -> str:
    """Why an assessment lacks a finding code, indented under a failing example."""
    from ..authoring.explain import explain

    text = explain(engine, assessment.facts, code, assessment=assessment).to_text()
    return "\n".join("      " + line for line in text.splitlines()[1:])


def _write_junit(path: Path, outcomes: list[ExampleOutcome]) -> None:
    import xml.etree.ElementTree as ET

    failures = sum(1 for o in outcomes if not o.passed)
    root = ET.Element("testsuites", name="imt-cds", tests=str(len(outcomes)), failures=str(failures))
    suite = ET.SubElement(root, "testsuite", name="imt-cds rule examples", tests=str(len(outcomes)),
                          failures=str(failures), errors="0", skipped="0")
    for outcome in outcomes:
        case = ET.SubElement(suite, "testcase", classname=f"rules.{outcome.rule.id}", name=outcome.example.name,
                             file=outcome.rule.file)
        if not outcome.passed:
            failure = ET.SubElement(case, "failure", message="; ".join(outcome.failures))
            failure.text = "\n".join(outcome.failures)
    tree = ET.ElementTree(root)
    ET.indent(tree)
    tree.write(path, encoding="utf-8", xml_declaration=True)


# --- coverage -----------------------------------------------------------------------------------------------------


def _run_coverage(args: argparse.Namespace) -> int:
    from ..authoring.coverage import default_vignettes, measure_coverage, vignette_patients

    engine = _engine_for(args)
    extra: list[Any] = []
    sources: tuple[str, ...] = ()
    if not args.no_vignettes:
        directory = args.vignettes or default_vignettes()
        if directory is not None:
            if not directory.is_dir():
                print(f"imt-cds: error: --vignettes {directory}: no such directory", file=sys.stderr)
                return 2
            extra = vignette_patients(directory)
            sources = (f"{len(extra)} vignettes in {directory}",)
    report = measure_coverage(engine, extra, sources)
    from ..core.wording import plural
    if args.format == "json":
        print(_compact(report.to_dict()))
    else:
        print(f"coverage of rulebook {engine.rulebook.name} {engine.rulebook.version} by {report.patients} patients "
              f"({'; '.join(report.sources)})")
        for rule in report.rules:
            mark = "ok " if rule.fired else "-- "
            branches = f"{len(rule.exercised)}/{len(rule.branches)} branches"
            print(f"  {mark}{rule.rule:<5} {branches:<14} fired for {plural(rule.patients, 'patient')}")
        if report.unexercised_branches:
            print("branches never exercised:")
            for rule_id, branch in report.unexercised_branches:
                print(f"  {rule_id}: {branch}")
        if report.never_fired:
            print(f"rules never fired: {', '.join(report.never_fired)}")
        else:
            print("every rule fired at least once")
    return 1 if report.never_fired else 0


# --- verify -------------------------------------------------------------------------------------------------------


def _run_verify(args: argparse.Namespace) -> int:
    from ..authoring.verification import verify  # without z3: an ImportError that cli.main names the extra for (exit 2)

    rulebook = _load(args)
    checks = verify(rulebook)
    failed = [c for c in checks if c.status == "violated"]
    if args.format == "json":
        print(_compact({"rulebook": {"name": rulebook.name, "version": rulebook.version, "sha256": rulebook.sha256},
                        "ok": not failed, "checks": [c.to_dict() for c in checks]}))
        return 1 if failed else 0
    print(f"verifying rulebook {rulebook.name} {rulebook.version} over the whole input space")
    for check in checks:
        if check.status == "holds":
            continue
        label = {"violated": "VIOLATED", "warning": "warning", "not_checked": "not checked"}[check.status]
        print(f"{label}: {check.name}: {check.description}")
        if check.detail:
            print(f"  {check.detail}")
        if check.counterexample is not None:
            if check.counterexample_after is not None:
                print(f"  counterexample, before: {_compact(check.counterexample)}")
                print(f"  counterexample, after:  {_compact(check.counterexample_after)}")
            else:
                print(f"  counterexample: {_compact(check.counterexample)}")
            confirmation = ("confirmed on the engine" if check.confirmed_by_engine
                            else "NOT confirmed on the engine: the checker and the engine disagree (internal error)")
            print(f"  ({confirmation})")
    print(_verify_summary(checks))
    return 1 if failed else 0


def _verify_summary(checks: list[Check]) -> str:
    """"N of M checks hold", counting only the checks that could be decided here, and saying how many could not."""
    from ..core.wording import plural

    checkable = [c for c in checks if c.status != "not_checked"]
    held = sum(1 for c in checkable if c.status == "holds")
    parts = [f"{held} of {plural(len(checkable), 'checkable check')} hold"]
    violated = sum(1 for c in checkable if c.status == "violated")
    if violated:
        parts.append(f"{violated} violated")
    warnings = sum(1 for c in checkable if c.status == "warning")
    if warnings:
        parts.append(plural(warnings, "warning"))
    unchecked = len(checks) - len(checkable)
    if unchecked:
        parts.append(f"{unchecked} not checkable here (listed above)")
    return "; ".join(parts)


# --- diff ---------------------------------------------------------------------------------------------------------


def _run_diff(args: argparse.Namespace) -> int:
    from ..authoring.rulebook_diff import MAX_CODES_LISTED, diff_rulebooks
    from ..core.rule_loader import load_rulebook

    for name, directory in (("OLD_DIR", args.old), ("NEW_DIR", args.new)):
        if not directory.is_dir():
            print(f"imt-cds: error: {name} {directory}: no such directory", file=sys.stderr)
            return 2
    old_seeds = args.old_seeds if args.old_seeds is not None else args.seeds
    new_seeds = args.new_seeds if args.new_seeds is not None else args.seeds
    # The old side is read as it was, as an archived rulebook is: it may predate a requirement made since (the
    # tumor-site value sets of 0.2.2; a declared card indicator), and comparing it is how an author learns of it.
    old = load_rulebook(args.old, old_seeds, archived=True)
    result = diff_rulebooks(old, load_rulebook(args.new, new_seeds), args.examples)
    if args.format == "json":
        print(_compact(result.to_dict()))
        return 0 if result.ok else 1
    print(f"rulebook {result.old} -> {result.new}")
    if not (result.rules or result.parameters or result.evidence or result.drugs or result.value_sets):
        print("  no rule, parameter, evidence, drug or value set changes")
    for change in result.rules:
        versions = {"added": f"new, v{change.new_version}", "removed": f"was v{change.old_version}"}.get(
            change.change, f"v{change.old_version} -> v{change.new_version}")
        fields = f" ({', '.join(change.fields)})" if change.fields else ""
        print(f"  {change.change:<13} {change.rule:<5} {versions}{fields}")
        if change.error:
            print(f"    ERROR: {change.error}")
    for name, old, new in result.parameters:
        print(f"  parameter     {name}: {old} -> {new}")
    for evidence_id, what in result.evidence:
        print(f"  evidence      {evidence_id}: {what}")
    for line in result.metadata:
        print(f"  metadata      {line}")
    for name, what in result.drugs:
        print(f"  drug          {name}: {what}")
    for name, what in result.value_sets:
        print(f"  value set     {name}: {what}")
        added, removed = result.value_set_codes.get(name, ((), ()))
        if len(added) + len(removed) > MAX_CODES_LISTED:
            print("                (counted, not listed: --format json lists every code added and removed)")
    for error in result.errors:
        print(f"  ERROR: {error}")
    if result.changed_classes == 0:
        print("no patient's assessment changes")
    else:
        bound = "" if result.count_is_exact else "at least "
        print(f"patients whose assessment changes: {bound}{result.changed_classes} of {result.total_classes} classes "
              f"over the fields {', '.join(result.class_fields)}")
        for example in result.examples:
            gained = sorted(set(example["new"]) - set(example["old"]))
            lost = sorted(set(example["old"]) - set(example["new"]))
            print(f"  e.g. {_compact(example['patient'])}: gains {gained or 'nothing'}, loses {lost or 'nothing'}")
    return 0 if result.ok else 1


# --- explain ------------------------------------------------------------------------------------------------------


def _run_explain(args: argparse.Namespace) -> int:
    from ..authoring.explain import explain
    from ..core.errors import InvalidInputError
    from ..core.validation import parse_facts_json

    try:
        facts = parse_facts_json(read_input(args.path))
    except InvalidInputError as exc:
        report_invalid(exc, sys.stderr, source=args.path)
        return EXIT_INVALID_INPUT
    engine = _engine_for(args)
    try:
        result = explain(engine, facts, args.code)
    except InvalidInputError as exc:  # an unknown finding code
        print("imt-cds: invalid input; nothing was explained:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    print(_compact(result.to_dict()) if args.format == "json" else result.to_text(), end="" if args.format == "text"
          else "\n")
    return 0
