"""Load a rulebook directory and check it completely before anything uses it.

A rulebook directory holds ``rulebook.yaml`` (name, version), ``parameters.yaml`` and any number of rule files
(``**/*.yaml``; one rule per file, or a small group under ``rules:``). See ``rules/README.md`` for the format.

Loading reports *every* problem at once, each naming the file, line, rule and path, with a did-you-mean where one
helps: unknown keys, unknown fact paths, values outside a field's enum, unknown parameters, evidence ids not in the
registry, duplicate rule ids, malformed versions, finding codes with the wrong prefix, summaries of 140 characters
or more, derived facts nobody derives, examples that are not valid patients, rules without a firing and a silent
example. A rulebook that loads is safe to compile; one that does not never reaches the engine.

The structure of each document (which keys, which types, what is required) is the pydantic models of
``rule_schema``; each validation error becomes a problem at the YAML line of its path. What is checked here is the
meaning: conditions, references between rules, parameters, evidence and drugs. A rule or drug whose structure is
wrong is left out of those checks, and so are the references to it (they would only repeat the one real problem).

Titles and summaries may name parameters (``{crizotinib_min_age_years}``): they are rendered here with the
rulebook's values and units ("1 year"), so a text can never disagree with the parameter a condition uses, and the
length check applies to the rendered text. A number in a title or summary that equals a parameter's value but is
not written as that parameter is an error: it would go stale when an institution changes the parameter.

Rule metadata is checked too: each finding's card indicator, the gene it is about and the drugs it names (which
must be in ``drugs.yaml``, the rulebook's table of targeted drugs, itself checked against the parameters, the
evidence registry and the ``alk-inhibitors`` value set).

``load_rulebook(..., archived=True)`` rebuilds a rulebook from an audit archive, to replay the records made with
it: a rulebook that ran once must load again as it ran, so the two requirements added for rule authors after the
first rulebook (0.1.0) was recorded are not applied there: findings may lack their card indicator (they get none,
and their documents carry none, as then), and a number in a text may equal a parameter; nor is it asked for the
value sets the FHIR reader needs (0.2.2 made the tumour sites' ones required, 0.2.3 the primary cancers', 0.2.4
the secondary tumours': a replay reads no FHIR). None of these changes what a rule decides; every other check
applies, and the archive must still rebuild to the sha256 its records name. ``rules diff`` reads its OLD rulebook
the same way.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson

from . import _resources, rule_schema
from ._yaml import YAMLError, line_of, load_yaml
from .conditions import ConditionContext, DerivedTest, parse_condition
from .errors import InvalidInputError, RulebookError, RulebookProblem
from .evidence import EvidenceRegistry, load_evidence
from .fact_fields import fact_fields, fusion_genes
from .rulebook import (
    RXNORM_SYSTEM,
    STRENGTH_LABELS,
    SUMMARY_LIMIT,
    Drug,
    Example,
    FindingSpec,
    Parameter,
    Rule,
    Rulebook,
    natural_key,
    strength_labels,
)
from .terminology import (
    GENE_VALUE_SETS,
    HGNC_GENE_ID,
    REQUIRED_VALUE_SETS,
    TERMINOLOGY_DIR,
    TUMOR_SITE_VALUE_SETS,
    Terminology,
    ValueSet,
    parse_value_set,
)
from .validation import parse_facts
from .wording import display_value

__all__ = ["load_rulebook"]

MANIFEST_FILE = "rulebook.yaml"
PARAMETERS_FILE = "parameters.yaml"
DRUGS_FILE = "drugs.yaml"
_UNREADABLE = object()  # what _Loader.read returns for a file it could not read or parse (already reported)
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_HGNC_ID = re.compile(r"HGNC:[1-9][0-9]*")
_GENE_SYMBOL = re.compile(r"[A-Za-z0-9][A-Za-z0-9@._-]*")  # (HGNC symbols: letters, digits, "-", "@", "."; no space)
# A number standing on its own ("under 2 years", "3.9 cm"), not part of a name such as R1, ROS1 or RANBP2-ALK.
_NUMBER = re.compile(r"(?<![\w.])[0-9]+(?:\.[0-9]+)?(?![\w])")


def load_rulebook(rules_dir: Path | str | None = None, seeds_dir: Path | str | None = None, *,
                  archived: bool = False) -> Rulebook:
    """Load and check a rulebook directory (default: the shipped one) with its evidence registry (default: the
    shipped ``seeds/``). Raises ``RulebookError`` listing every problem, or ``EvidenceError``.

    ``archived``: the directory holds a rulebook rebuilt from an audit archive (``audit.archive``), which may
    predate the authoring requirements listed in this module's docstring."""
    rules_path = Path(rules_dir) if rules_dir is not None else _resources.rules_dir()
    seeds_path = Path(seeds_dir) if seeds_dir is not None else _resources.seeds_dir()
    if not rules_path.is_dir():
        raise RulebookError([RulebookProblem(str(rules_path), "rulebook directory not found")])
    evidence = load_evidence(seeds_path)
    loader = _Loader(rules_path, evidence, archived=archived)
    return loader.load()


class _Loader:
    def __init__(self, directory: Path, evidence: EvidenceRegistry, *, archived: bool):
        self.directory = directory
        self.evidence = evidence
        self.archived = archived
        self.rule_document = rule_schema.RecordedRuleDocument if archived else rule_schema.RuleDocument
        self.problems: list[RulebookProblem] = []
        self.texts: dict[str, str] = {}
        self.fields = fact_fields()
        self.unparsed_files = False  # when a file cannot be read, references to its rules are not reported
        self.incomplete = False  # likewise when a rule's structure is wrong
        self.drugs_incomplete = False  # when a drug's entry is malformed, findings may name it: not reported
        self.parameters: Mapping[str, Parameter] = {}
        self.drugs: Mapping[str, Drug] = {}

    # problems carry the line of the offending node, found lazily from the file's text
    def report(self, file: str, message: str, rule: str | None = None, path: str | None = None,
               suggestion: str | None = None, rule_index: int | None = None) -> None:
        text = self.texts.get(file)
        node_path = path
        if rule_index is not None:
            node_path = f"rules[{rule_index}]" + (f".{path}" if path else "")
        line = line_of(text, node_path) if text is not None else None
        self.problems.append(RulebookProblem(file, message, rule, path, line, suggestion))

    def read(self, path: Path) -> Any:
        name = path.relative_to(self.directory).as_posix()
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self.unparsed_files = True
            self.report(name, f"cannot read: {exc}")
            return _UNREADABLE
        self.texts[name] = text
        try:
            return load_yaml(text)
        except YAMLError as exc:
            self.unparsed_files = True
            mark = getattr(exc, "problem_mark", None)
            self.problems.append(
                RulebookProblem(name, f"not valid YAML: {getattr(exc, 'problem', exc)}", line=mark.line + 1
                                if mark else None)
            )
            return _UNREADABLE

    def load(self) -> Rulebook:
        manifest = self._manifest()
        parameters, raw_parameters = self._parameters()
        self.parameters = parameters
        raw_rules: list[tuple[str, int | None, dict[str, Any]]] = []
        terminology, raw_value_sets = self._terminology()
        drugs, raw_drugs = self._drugs(parameters, terminology)
        self.drugs = drugs
        files = sorted(p for p in self.directory.rglob("*.yaml")
                       if p.relative_to(self.directory).as_posix() not in (MANIFEST_FILE, PARAMETERS_FILE, DRUGS_FILE)
                       and p.relative_to(self.directory).parts[0] != TERMINOLOGY_DIR)
        if not files:
            self.report(".", "no rule files (*.yaml) found")
        for path in files:
            raw_rules.extend(self._rule_documents(path))

        rules: list[Rule] = []
        seen: dict[str, str] = {}
        positions: dict[str, int | None] = {}  # rule id -> index inside a multi-rule file, for line numbers
        for file, index, data in raw_rules:
            for rule in self._rule(file, index, data, parameters):
                if rule.id in seen:
                    self.report(file, f"duplicate rule id {rule.id} (also in {seen[rule.id]})", rule.id, "id",
                                rule_index=index)
                    continue
                seen[rule.id] = file
                positions[rule.id] = index
                rules.append(rule)
        rules = self._catalogue_order(rules)
        self._cross_checks(rules, positions)
        if self.problems:
            raise RulebookError(_sorted_problems(self.problems))

        source = {
            "manifest": manifest,
            "parameters": raw_parameters,
            "rules": sorted((data for _, _, data in raw_rules), key=lambda d: natural_key(str(d.get("id")))),
            "evidence_sha256": self.evidence.sha256,
        }
        if raw_value_sets:  # (a rulebook without value sets keeps the hash it always had)
            source["terminology"] = raw_value_sets
        if raw_drugs is not None:  # (likewise a rulebook without a drug table)
            source["drugs"] = raw_drugs
        digest = hashlib.sha256(orjson.dumps(source, option=orjson.OPT_SORT_KEYS)).hexdigest()
        return Rulebook(
            name=str(manifest["name"]),
            version=str(manifest["version"]),
            title=str(manifest.get("title", "")),
            parameters=MappingProxyType(parameters),
            rules=tuple(rules),
            evidence=self.evidence,
            sha256=digest,
            source=MappingProxyType(source),
            directory=self.directory,
            terminology=terminology,
            drugs=MappingProxyType(dict(drugs)),
        )

    # -- value sets --

    def _terminology(self) -> tuple[Terminology, dict[str, Any]]:
        """The value sets of ``terminology/*.yaml`` (and their raw data, which the hash covers)."""
        found: dict[str, ValueSet] = {}
        raw: dict[str, Any] = {}
        folder = self.directory / TERMINOLOGY_DIR
        for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
            name = path.relative_to(self.directory).as_posix()
            data = self.read(path)
            if data is _UNREADABLE:
                continue
            if self.structure(name, rule_schema.ValueSetDocument, data):
                continue
            value_set, problems = parse_value_set(data, name)
            for message, where in problems:
                self.report(name, message, path=where)
            if value_set is not None:
                found[value_set.name] = value_set
                raw[value_set.name] = data
        # A rulebook that reads FHIR needs them all; one without any value set is a rules-only copy, and one rebuilt
        # from an audit archive is only replayed (facts, no FHIR): a rulebook archived before a value set was
        # required must still load. (A file that is there but wrong has had its problems reported: not missing too.)
        if found and not self.archived:
            for missing in (n for n in REQUIRED_VALUE_SETS if n not in found and not (folder / f"{n}.yaml").is_file()):
                self.report(f"{TERMINOLOGY_DIR}/{missing}.yaml",
                            f"missing: the FHIR reader needs value set {missing!r} ({REQUIRED_VALUE_SETS[missing]})")
        self._one_set_each(found, TUMOR_SITE_VALUE_SETS.values(), "a body site must be one tumor.site")
        self._one_set_each(found, GENE_VALUE_SETS.values(), "a gene must be one gene of the facts")
        self._genes_by_hgnc_id(found)
        return Terminology(MappingProxyType(found)), raw

    def _one_set_each(self, found: Mapping[str, ValueSet], names: Iterable[str], why: str) -> None:
        """A body site must be one tumor.site, a gene one gene of the facts: a code listed in two value sets of the
        group is refused (which one the reader took would depend on the order of a table in its code)."""
        set_of: dict[tuple[str, str], str] = {}
        for name in names:
            value_set = found.get(name)
            if value_set is None:
                continue  # (reported as missing, or a rules-only copy)
            for index, code in enumerate(value_set.codes):
                other = set_of.setdefault((code.system, code.code), name)
                if other != name:
                    self.report(value_set.file, f"code {code.system}|{code.code} is in value set {other!r} too: {why}",
                                path=f"codes[{index}].code")

    def _genes_by_hgnc_id(self, found: Mapping[str, ValueSet]) -> None:
        """A gene value set lists HGNC gene ids, each with its HGNC symbol as display: the FHIR reader reads a gene
        by its id in any of the systems charts write it in, and by its symbol when a chart has text only."""
        for name in GENE_VALUE_SETS.values():
            value_set = found.get(name)
            if value_set is None:
                continue  # (reported as missing, or a rules-only copy)
            for index, code in enumerate(value_set.codes):
                if code.system != HGNC_GENE_ID or not _HGNC_ID.fullmatch(code.code):
                    self.report(value_set.file, f"code {code.system}|{code.code} is no HGNC gene id: a gene value "
                                                f"set lists codes of {HGNC_GENE_ID} such as HGNC:427",
                                path=f"codes[{index}].code")
                if not _GENE_SYMBOL.fullmatch(code.display):
                    self.report(value_set.file, f"display {code.display!r} is no gene symbol: a gene value set's "
                                                "display is the gene's HGNC symbol, such as ALK",
                                path=f"codes[{index}].display")

    # -- the drug table --

    def _drugs(self, parameters: Mapping[str, Parameter], terminology: Terminology
               ) -> tuple[dict[str, Drug], Any]:
        """The targeted drugs of ``drugs.yaml`` (and its raw data, which the hash covers); none without the file."""
        path = self.directory / DRUGS_FILE
        if not path.is_file():
            return {}, None
        data = self.read(path)
        if data is _UNREADABLE:
            self.drugs_incomplete = True  # (reported once: findings naming its drugs are not reported again)
            return {}, None
        broken = self.structure(DRUGS_FILE, rule_schema.DrugsFile, data)
        self.drugs_incomplete = bool(broken)
        raw = data.get("drugs") if isinstance(data, dict) else None
        if not isinstance(raw, list):
            return {}, data
        genes = fusion_genes()
        drugs: dict[str, Drug] = {}
        names_seen: dict[str, str] = {}
        codes_seen: dict[str, str] = {}
        for index, spec in enumerate(raw):
            where = f"drugs[{index}]"
            if _within(broken, where):
                continue  # its structure is wrong (reported): its meaning cannot be checked

            def report(p: str | None, message: str, suggestion: str | None = None, _where: str = where) -> None:
                self.report(DRUGS_FILE, message, None, f"{_where}.{p}" if p else _where, suggestion)

            name, brands, targets = spec["name"], spec.get("brands", []), spec["targets"]
            for label in (name, *brands):
                if label.lower() in names_seen:
                    report("name", f"{label!r} already names drug {names_seen[label.lower()]}")
                names_seen[label.lower()] = name
            for i, target in enumerate(targets):
                if target not in genes:
                    close = difflib.get_close_matches(target, genes, n=1)
                    report(f"targets[{i}]", f"unknown gene {target!r}; genes: {', '.join(genes)}",
                           close[0] if close else None)
            ages = spec.get("label_min_age", {})
            for target, parameter in ages.items():
                if target not in targets:
                    report(f"label_min_age.{target}",
                           f"{target!r} is not one of the drug's targets ({', '.join(targets)})")
                if parameter not in parameters:
                    close = difflib.get_close_matches(str(parameter), list(parameters), n=1)
                    report(f"label_min_age.{target}", f"unknown parameter {parameter!r}", close[0] if close else None)
            evidence = self._evidence_list(spec.get("evidence"), report)
            rxnorm, rxnorm_source = None, None
            if "rxnorm" in spec:
                rxnorm, rxnorm_source = spec["rxnorm"]["code"], spec["rxnorm"]["source"].strip()
                if rxnorm in codes_seen:
                    report("rxnorm.code", f"RxNorm code {rxnorm} is also drug {codes_seen[rxnorm]}'s")
                codes_seen[rxnorm] = name
            drugs[name] = Drug(name, tuple(brands), tuple(targets), spec["class"], MappingProxyType(dict(ages)),
                               evidence, rxnorm, rxnorm_source)
        self._drugs_match_value_set(drugs, terminology, raw)
        return drugs, data

    def _drugs_match_value_set(self, drugs: Mapping[str, Drug], terminology: Terminology, raw: list[Any]) -> None:
        """The FHIR reader knows ALK inhibitors by the ``alk-inhibitors`` value set, order-sign by this table: both
        must name the same drugs with the same codes, or the two would disagree about one medication."""
        if "alk-inhibitors" not in terminology:
            return
        value_set = terminology["alk-inhibitors"]
        listed = {c.code: c.display for c in value_set.codes if c.system == RXNORM_SYSTEM}
        position = {d.get("name"): i for i, d in enumerate(raw) if isinstance(d, dict)}
        for drug in drugs.values():
            where = f"drugs[{position.get(drug.name)}]"
            if drug.rxnorm is not None and "alk" in drug.targets and listed.get(drug.rxnorm) != drug.name:
                self.report(DRUGS_FILE, f"{drug.name}'s RxNorm code {drug.rxnorm} is not in {value_set.file} as "
                                        f"{drug.name}: the FHIR reader and order-sign must know ALK inhibitors by the "
                                        "same codes", path=f"{where}.rxnorm.code")
        if self.drugs_incomplete:
            return  # a value-set code whose drug entry is malformed (reported) would be reported again here
        by_code = {d.rxnorm: d for d in drugs.values() if d.rxnorm is not None}
        for code, display in listed.items():
            coded = by_code.get(code)
            if coded is None or coded.name != display or "alk" not in coded.targets:
                self.report(value_set.file, f"RxNorm {code} ({display}) is an ALK inhibitor here but not in "
                                            f"{DRUGS_FILE} with that code and target alk", path="codes")

    # -- texts that name parameters --

    def _template(self, data: dict[str, Any], key: str, report: Any) -> str:
        """A title or summary with its parameters rendered (``{name}`` -> "1 year"); reports unknown parameters
        and numbers that equal a parameter's value without naming it."""
        text = data[key].strip()  # non-blank text: rule_schema checked it
        for number in _NUMBER.findall(_PLACEHOLDER.sub(" ", text)) if not self.archived else ():
            for parameter in self.parameters.values():
                if float(number) == parameter.value:
                    report(key, f"{number} in the {key} equals parameter {parameter.name}: write "
                                f"{{{parameter.name}}} so the text follows the parameter when it changes")
                    break

        def render(match: re.Match[str]) -> str:
            name = match.group(1)
            parameter = self.parameters.get(name)
            if parameter is None:
                close = difflib.get_close_matches(name, list(self.parameters), n=1)
                report(key, f"{{{name}}} in the {key} names no parameter; parameters: "
                            f"{', '.join(self.parameters) or 'none'}", close[0] if close else None)
                return match.group(0)
            return parameter_text(parameter)

        return _PLACEHOLDER.sub(render, text)

    # -- manifest and parameters --

    def _manifest(self) -> dict[str, Any]:
        path = self.directory / MANIFEST_FILE
        if not path.is_file():
            self.report(MANIFEST_FILE, "missing: the rulebook needs a manifest with its name and version")
            return {"name": "?", "version": "0.0.0"}
        data = self.read(path)
        if data is _UNREADABLE:
            return {"name": "?", "version": "0.0.0"}
        if self.structure(MANIFEST_FILE, rule_schema.Manifest, data):
            return {"name": "?", "version": "0.0.0"}
        return data  # type: ignore[no-any-return]

    def _parameters(self) -> tuple[dict[str, Parameter], dict[str, Any]]:
        path = self.directory / PARAMETERS_FILE
        if not path.is_file():
            self.report(PARAMETERS_FILE, "missing: the rulebook's parameters file")
            return {}, {}
        data = self.read(path)
        if data is _UNREADABLE:
            return {}, {}
        broken = self.structure(PARAMETERS_FILE, rule_schema.ParametersFile, data)
        raw = data.get("parameters") if isinstance(data, dict) else None
        if not isinstance(raw, dict):
            return {}, {}
        result: dict[str, Parameter] = {}
        for name, spec in raw.items():
            where = f"parameters.{name}"
            if _within(broken, where):
                continue  # its structure is wrong (reported)

            def report(path: str | None, message: str, suggestion: str | None = None, _where: str = where) -> None:
                self.report(PARAMETERS_FILE, message, None, f"{_where}.{path}" if path else _where, suggestion)

            evidence = self._evidence_list(spec.get("evidence"), report)
            result[name] = Parameter(name, float(spec["value"]), spec.get("unit"), str(spec.get("meaning") or ""),
                                     evidence)
        return result, raw

    # -- rules --

    def _rule_documents(self, path: Path) -> Iterator[tuple[str, int | None, dict[str, Any]]]:
        name = path.relative_to(self.directory).as_posix()
        data = self.read(path)
        if data is _UNREADABLE:
            return
        if data is None:
            self.report(name, "empty rule file")
            return
        if isinstance(data, dict) and set(data) == {"rules"} and isinstance(data["rules"], list):
            for index, item in enumerate(data["rules"]):
                if isinstance(item, dict):
                    yield name, index, item
                else:
                    self.report(name, "each item of 'rules' must be a rule mapping", path=f"rules[{index}]")
        elif isinstance(data, dict):
            yield name, None, data
        else:
            self.report(name, "a rule file holds one rule (a mapping) or a list under 'rules:'")

    def _rule(self, file: str, index: int | None, data: dict[str, Any],
              parameters: Mapping[str, Parameter]) -> list[Rule]:
        rule_id = data.get("id") if isinstance(data.get("id"), str) else None
        if self.structure(file, self.rule_document, data, rule=rule_id, index=index):
            # Its structure is wrong (reported); references to it would only repeat that, so they are not checked.
            self.incomplete = True
            return []
        rule_id = data["id"]

        def report(path: str | None, message: str, suggestion: str | None = None) -> None:
            self.report(file, message, rule_id, path, suggestion, rule_index=index)

        title = self._template(data, "title", report)
        kind = data["kind"]
        strength = self._strength(data["strength"], report)
        evidence = self._evidence_list(data.get("evidence"), report)
        if "DESIGN" not in strength_labels(strength) and not evidence:
            report("evidence", "a rule that is not a DESIGN choice must cite at least one evidence id")
        ctx = ConditionContext(self.fields, parameters, report)
        # A rule that always applies cannot have a silent example; every other rule needs one.
        examples = self._examples(data["examples"], report, needs_silent=data.get("when") != "always")

        shapes = [k for k in ("then", "derives", "suppresses") if k in data]
        if len(shapes) != 1:
            report(None, "a rule needs exactly one of 'then' (findings), 'derives' (a derived fact) or "
                         f"'suppresses' (rules whose findings it suppresses); got {shapes or 'none'}")
            return []
        shape = shapes[0]
        expected_kind = {"derives": "derived_fact", "suppresses": "suppression"}
        if shape in expected_kind and kind != expected_kind[shape]:
            report("kind", f"a rule with '{shape}' must have kind {expected_kind[shape]}")
        if shape == "then" and kind in ("derived_fact", "suppression"):
            report("kind", f"a rule with findings ('then') cannot have kind {kind}")
        if "reasons" in data and shape != "derives":
            report("reasons", "only a rule that derives a fact can list reasons")

        common = dict(id=rule_id, version=data["version"], title=title, kind=kind, strength=strength,
                      evidence=evidence, file=file, examples=examples, description=data.get("description"))
        if shape == "derives" and "reasons" in data:
            if "when" in data:
                report("when", "a rule with reasons has no condition of its own: it holds when a reason holds")
            return self._reason_rules(file, index, data["reasons"], data["derives"], common, parameters)
        when = parse_condition(data.get("when"), ctx) if "when" in data else None
        if "when" not in data:
            report("when", "missing condition ('when'); use 'when: always' for a rule that always applies")
        if shape == "then":
            findings = self._findings(data["then"], ctx, report)
            return [Rule(**common, when=when, findings=findings)]
        if shape == "derives":
            return [Rule(**common, when=when, derives=data["derives"])]
        if when is not None and not (isinstance(when, DerivedTest) and when.present):
            report("when", "a suppression's condition must be one derived fact ({derived: NAME})")
        return [Rule(**common, when=when, suppresses=tuple(data["suppresses"]))]

    def _reason_rules(self, file: str, index: int | None, raw_reasons: list[dict[str, Any]], fact: str,
                      common: dict[str, Any], parameters: Mapping[str, Parameter]) -> list[Rule]:
        """A derived fact with several independent reasons (D04: C1-C4): one reason rule each, each asserting
        its own instance of the fact, so that the trace and every suppression can name the reasons that held."""
        rules: list[Rule] = []
        for i, raw in enumerate(raw_reasons):
            where = f"reasons[{i}]"
            reason_id = raw["id"]

            def reason_report(path: str | None, message: str, suggestion: str | None = None,
                              _where: str = where, _rid: str = reason_id) -> None:
                self.report(file, message, _rid, f"{_where}.{path}" if path else _where, suggestion,
                            rule_index=index)

            reason_ctx = ConditionContext(self.fields, parameters, reason_report)
            rules.append(
                Rule(
                    id=reason_id,
                    version=raw["version"],
                    title=self._template(raw, "title", reason_report),
                    kind="derived_fact",
                    strength=self._strength(raw.get("strength", common["strength"]), reason_report),
                    evidence=self._evidence_list(raw.get("evidence", list(common["evidence"])), reason_report),
                    file=file,
                    when=parse_condition(raw["when"], reason_ctx),
                    derives=fact,
                    reason=f"{reason_id}: {raw['text'].strip()}",
                    part_of=common["id"],
                    examples=self._examples(raw["examples"], reason_report),
                    description=raw.get("description"),
                )
            )
        parent = Rule(**common, when=None, derives=fact, reasons=tuple(r.id for r in rules))
        return [parent, *rules]

    def _findings(self, raw: list[dict[str, Any]], ctx: ConditionContext, report: Any) -> tuple[FindingSpec, ...]:
        findings: list[FindingSpec] = []
        for i, item in enumerate(raw):
            where = f"then[{i}]"
            code = item["finding"]

            def item_report(p: str | None, m: str, s: str | None = None, _where: str = where) -> None:
                report(f"{_where}.{p}", m, s)

            title = self._template(item, "title", item_report)
            summary = self._template(item, "summary", item_report)
            if len(summary) >= SUMMARY_LIMIT:
                report(f"{where}.summary", f"summary of {code} is {len(summary)} characters once its parameters are "
                                           f"rendered; it must be shorter than {SUMMARY_LIMIT}")
            when = parse_condition(item["when"], ctx, f"{where}.when") if "when" in item else None
            gene, drugs = self._finding_metadata(item, item_report)
            findings.append(FindingSpec(code, title, summary, when, item.get("indicator"), gene, drugs))
        codes = [f.code for f in findings]
        if len(set(codes)) != len(codes):
            report("then", "lists a finding code twice")
        return tuple(findings)

    def _finding_metadata(self, item: dict[str, Any], report: Any) -> tuple[str | None, tuple[str, ...]]:
        """The gene a finding is about and the drugs it names: both must be known, and each drug must target it."""
        gene = item.get("gene")
        genes = fusion_genes()
        if gene is not None and gene not in genes:
            close = difflib.get_close_matches(gene, genes, n=1)
            report("gene", f"unknown gene {gene!r}; genes: {', '.join(genes)}", close[0] if close else None)
        drugs = item.get("drugs", [])
        for i, name in enumerate(drugs):
            if name not in self.drugs:
                if self.drugs_incomplete:
                    continue  # it may be one of the drugs whose entry is malformed (reported)
                close = difflib.get_close_matches(name, list(self.drugs), n=1)
                report(f"drugs[{i}]", f"unknown drug {name!r}: not in {DRUGS_FILE}", close[0] if close else None)
            elif gene in genes and gene not in self.drugs[name].targets:
                report(f"drugs[{i}]", f"{name} does not target {gene} ({DRUGS_FILE} lists "
                                      f"{', '.join(self.drugs[name].targets)})")
        return gene, tuple(drugs)

    def _examples(self, raw: list[dict[str, Any]], report: Any, needs_silent: bool = True) -> tuple[Example, ...]:
        examples: list[Example] = []
        for i, item in enumerate(raw):
            where = f"examples[{i}]"
            facts = item.get("facts", {})
            try:
                patient = parse_facts(facts)
            except InvalidInputError as exc:
                for problem in exc.problems:
                    report(f"{where}.facts" + (f".{problem.path}" if problem.path else ""),
                           f"example is not a valid patient: {problem.message}")
                continue
            lists = {key: tuple(item.get(key, [])) for key in ("expect", "expect_not", "expect_suppressed")}
            examples.append(Example(item["name"], MappingProxyType(dict(facts)), patient, item["fires"], **lists))
        if examples and not any(e.fires for e in examples):
            report("examples", "needs at least one example that fires (fires: true)")
        if examples and needs_silent and all(e.fires for e in examples):
            report("examples", "needs at least one example that stays silent (fires: false)")
        return tuple(examples)

    # -- small checks --

    def structure(self, file: str, model: type[Any], data: Any, where: str = "", rule: str | None = None,
                  index: int | None = None) -> list[str | None]:
        """Report every structural problem of a document (``rule_schema``); the paths of those found."""
        found = rule_schema.problems(model, data, where)
        for path, message, suggestion in found:
            self.report(file, message, rule, path, suggestion, rule_index=index)
        return [path for path, _, _ in found]

    @staticmethod
    def _strength(value: str, report: Any) -> str:
        for label in strength_labels(value):
            if label not in STRENGTH_LABELS:
                close = difflib.get_close_matches(label, STRENGTH_LABELS, n=1)
                report("strength", f"unknown strength label {label!r}; labels: {', '.join(STRENGTH_LABELS)}",
                       close[0] if close else None)
        return value.strip()

    def _evidence_list(self, value: list[str] | None, report: Any) -> tuple[str, ...]:
        value = value or []
        for i, evidence_id in enumerate(value):
            if evidence_id not in self.evidence:
                close = difflib.get_close_matches(evidence_id, list(self.evidence.entries), n=1, cutoff=0.6)
                report(f"evidence[{i}]", f"unknown evidence id {evidence_id!r}: not in the evidence registry",
                       close[0] if close else None)
        if len(set(value)) != len(value):
            report("evidence", "cites an evidence id twice")
        return tuple(value)

    @staticmethod
    def _catalogue_order(rules: list[Rule]) -> list[Rule]:
        top = sorted((r for r in rules if r.part_of is None), key=lambda r: natural_key(r.id))
        children = {r.id: r for r in rules if r.part_of is not None}
        ordered: list[Rule] = []
        for rule in top:
            ordered.append(rule)
            ordered.extend(children.pop(c) for c in rule.reasons if c in children)
        ordered.extend(children.values())
        return ordered

    def _cross_checks(self, rules: list[Rule], positions: Mapping[str, int | None]) -> None:
        """Checks that need the whole rulebook: references between rules, and examples' expectations.

        Skipped when a rule file could not be parsed: every reference to its rules would be reported too, burying
        the one real problem under consequences of it."""
        if self.unparsed_files or self.incomplete:
            return
        derived = {r.derives for r in rules if r.derives}
        codes = {c for r in rules for c in r.codes}
        by_id = {r.id: r for r in rules}
        for rule in rules:
            index = positions.get(rule.id)

            def report(path: str | None, message: str, suggestion: str | None = None, _rule: Rule = rule,
                       _index: int | None = index) -> None:
                self.report(_rule.file, message, _rule.id, path, suggestion, rule_index=_index)

            for literal in rule.literals:
                if isinstance(literal, DerivedTest) and literal.name not in derived:
                    close = difflib.get_close_matches(literal.name, sorted(derived), n=1)
                    report("when", f"derived fact {literal.name} is not derived by any rule",
                           close[0] if close else None)
            for target in rule.suppresses:
                if target not in by_id:
                    close = difflib.get_close_matches(target, sorted(by_id), n=1)
                    report("suppresses", f"suppresses unknown rule {target}", close[0] if close else None)
                elif not by_id[target].findings:
                    report("suppresses", f"{target} produces no findings to suppress")
            for i, example in enumerate(rule.examples):
                for key in ("expect", "expect_not", "expect_suppressed"):
                    for name in getattr(example, key):
                        if name not in codes and name not in derived:
                            close = difflib.get_close_matches(name, sorted(codes | derived), n=1)
                            report(f"examples[{i}].{key}", f"{name} is neither a finding code nor a derived fact",
                                   close[0] if close else None)


def parameter_text(parameter: Parameter) -> str:
    """A parameter as a title or summary shows it: its value with its unit ("1 year", "2 years", "3.9 cm")."""
    value = display_value(parameter.value)
    if not parameter.unit:
        return value
    unit = parameter.unit[:-1] if parameter.value == 1 and parameter.unit.endswith("s") else parameter.unit
    return f"{value} {unit}"


def _within(paths: list[str | None], where: str) -> bool:
    """Whether one of the problem ``paths`` is at ``where`` or inside it."""
    return any(p is not None and (p == where or p.startswith((f"{where}.", f"{where}["))) for p in paths)


def _sorted_problems(problems: list[RulebookProblem]) -> list[RulebookProblem]:
    return sorted(problems, key=lambda p: (p.file, p.line or 0, p.rule or "", p.path or ""))
