"""The structural problems a rule author reads, word for word, where mutation testing of core/rule_schema.py found
that the existing tests matched only a fragment of a message (so a changed or doubled message passed). Each is
checked both through ``rule_schema.problems`` (path, message, did-you-mean) and, where the place matters, through
the loader on a copy of the shipped rulebook (file, rule, line)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from rulebook_copies import CRIZOTINIB, copy_rulebook, edit, load_problems

from imt_cds.core.rule_schema import (DrugsFile, FindingDocument, Manifest, ReasonDocument, RuleDocument,
                                      ValueSetDocument, problems)

VERSION_MESSAGE = "version must be a quoted MAJOR.MINOR.PATCH string such as '1.0.0'; got "


def test_a_malformed_version_is_one_problem_in_the_validators_own_words(tmp_path):
    assert problems(Manifest, {"name": "n", "version": 1.1}) == [("version", VERSION_MESSAGE + "1.1", None)]
    assert problems(Manifest, {"name": "n", "version": "1.1"}) == [("version", VERSION_MESSAGE + "'1.1'", None)]
    directory = copy_rulebook(tmp_path)
    edit(directory, CRIZOTINIB, "version: 1.1.0", "version: 1.1")
    [problem] = load_problems(directory)
    assert (problem.file, problem.rule, problem.path, problem.line, problem.message) == (
        CRIZOTINIB, "R32a", "version", 2, VERSION_MESSAGE + "1.1")


def test_a_value_outside_a_closed_list_names_the_list_and_suggests_the_closest(tmp_path):
    finding = {"finding": "REC_X_Y", "title": "t", "summary": "s", "indicator": "warn"}
    assert problems(FindingDocument, finding) == [
        ("indicator", "indicator must be one of info, warning, critical; got 'warn'", "warning")]
    directory = copy_rulebook(tmp_path)
    edit(directory, "flags/R14-age-outside-evidence.yaml", "kind: risk_flag", "kind: risk")
    [problem] = load_problems(directory)
    assert (problem.rule, problem.path, problem.suggestion) == ("R14", "kind", "risk_flag")
    assert problem.message == ("kind must be one of derived_fact, recommendation, data_request, risk_flag, "
                               "suppression; got 'risk'")


def test_an_unquoted_numeric_code_is_refused_in_the_validators_own_words():
    document = {"value_set": "a-b", "title": "t",
                "codes": [{"system": "http://example.org", "code": 88251, "display": "d", "source": "s"}]}
    assert problems(ValueSetDocument, document) == [
        ("codes[0].code", "code must be text: write codes in quotes (YAML reads 88251 as a number)", None)]


def test_a_malformed_rule_id_and_finding_code_say_what_they_must_look_like(tmp_path):
    finding = {"finding": "X_Y", "title": "t", "summary": "s", "indicator": "info"}
    assert problems(FindingDocument, finding) == [
        ("finding", "a finding code is UPPER_SNAKE_CASE starting with REC_, REQUEST_, RISK_, FLAG_; got 'X_Y'", None)]
    directory = copy_rulebook(tmp_path)
    edit(directory, CRIZOTINIB, "id: R32a", "id: R3")
    [problem] = load_problems(directory)
    assert (problem.file, problem.path, problem.line) == (CRIZOTINIB, "id", 1)
    assert problem.message == "'id' must look like R01, R19a, D04, S01; got 'R3'"


def test_a_manifest_without_a_version_is_refused_not_loaded(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, "rulebook.yaml", "version: 0.2.7\n", "")
    [problem] = load_problems(directory)
    assert (problem.file, problem.path, problem.message) == (
        "rulebook.yaml", "version", "missing 'version': it must be a quoted MAJOR.MINOR.PATCH string such as '1.0.0'")


def test_a_wrong_type_in_the_manifest_parameters_or_drug_table_says_what_the_field_must_be(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, "rulebook.yaml", "catalogue: clinical/RULES.md, rule catalogue version 0.1", "catalogue: 5")
    edit(directory, "parameters.yaml", "meaning:", "meaning: [x]\n    unused:")
    edit(directory, "drugs.yaml", "    class: ALK/ROS1 inhibitor", "    class: 5")
    found = {(p.file, p.path): p.message for p in load_problems(directory)}
    assert found[("rulebook.yaml", "catalogue")] == "catalogue must be text naming the rule catalogue; got 5"
    [meaning] = [m for (f, p), m in found.items() if f == "parameters.yaml" and p.endswith(".meaning")]
    assert meaning == "meaning must be text saying what the parameter decides; got ['x']"
    assert found[("drugs.yaml", "drugs[0].class")] == "class must be text such as 'ALK inhibitor'; got 5"


def test_a_drug_whose_rxnorm_entry_lacks_its_code_is_refused_not_loaded(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, "drugs.yaml", '      code: "1148495"\n', "")
    [problem] = load_problems(directory)
    assert (problem.file, problem.path) == ("drugs.yaml", "drugs[0].rxnorm.code")
    assert problem.message == 'missing \'code\': it must be digits written in quotes ("1148495")'


def test_a_drug_table_without_its_drugs_list_is_refused(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, "drugs.yaml", "\ndrugs:\n", "\ndrug:\n")
    found = [(p.path, p.message, p.suggestion) for p in load_problems(directory) if p.file == "drugs.yaml"]
    assert found == [("drug", "unknown key 'drug'; allowed: drugs", "drugs"),
                     ("drugs", "missing 'drugs': it must be a list of drugs (name, brands, class, targets)", None)]


def test_a_missing_required_key_says_what_it_must_be():
    from imt_cds.core.rule_schema import ReasonDocument

    assert problems(FindingDocument, {"title": "t", "summary": "s", "indicator": "info"}) == [
        ("finding", "missing 'finding': it must be a finding code", None)]
    assert problems(FindingDocument, {"finding": "REC_A_B", "summary": "s", "indicator": "info"}) == [
        ("title", "missing 'title': it must be non-empty text", None)]
    reason = {"version": "1.0.0", "title": "t", "text": "x", "examples": [{"name": "a", "fires": True}]}
    assert problems(ReasonDocument, reason) == [("id", "missing 'id': it must be an id such as C1", None),
                                                ("when", "missing 'when': it must be a condition", None)]


def test_a_finding_without_a_title_is_refused_not_loaded(tmp_path):
    directory = copy_rulebook(tmp_path)
    text = (directory / CRIZOTINIB).read_text()
    start = text.index("  - finding:")
    title = text.index("    title:", start)
    (directory / CRIZOTINIB).write_text(text[:title] + text[text.index("\n", title) + 1:])
    [problem] = load_problems(directory)
    assert (problem.rule, problem.path, problem.message) == (
        "R32a", "then[0].title", "missing 'title': it must be non-empty text")


def test_an_empty_list_of_findings_or_reasons_is_refused_and_a_code_without_system_named():
    from imt_cds.core.rule_schema import RuleDocument, ValueSetCodeDocument

    rule = {"id": "R01", "version": "1.0.0", "title": "t", "kind": "recommendation", "strength": "DESIGN",
            "then": [], "reasons": [], "examples": [{"name": "a", "fires": True}]}
    assert problems(RuleDocument, rule) == [
        ("then", "then must be a non-empty list of findings ({finding: CODE, title: ..., summary: ...}); got an empty "
                 "list", None),
        ("reasons", "reasons must be a non-empty list of reason rules; got an empty list", None)]
    assert problems(ValueSetCodeDocument, {"code": "1", "display": "d", "source": "s"}) == [
        ("system", "missing 'system': it must be a URI (http(s):// or urn:)", None)]


def test_a_value_set_name_must_be_lower_case_with_hyphens():
    assert problems(ValueSetDocument, {"value_set": "IMT_dx", "title": "t"}) == [
        ("value_set", "value_set must be a lower-case name with hyphens (e.g. imt-diagnosis); got 'IMT_dx'", None)]


def test_a_document_that_is_not_a_mapping_and_a_value_inside_a_plain_mapping_are_named():
    from imt_cds.core.rule_schema import DrugsFile

    assert problems(Manifest, ["a"]) == [(None, "the document must be a mapping; got ['a']", None)]
    drug = {"name": "crizotinib", "class": "c", "targets": ["alk"], "label_min_age": {"alk": 5}}
    assert problems(DrugsFile, {"drugs": [drug]}) == [("drugs[0].label_min_age.alk", "alk must be text; got 5", None)]


def test_an_unknown_key_of_a_parameter_lists_the_keys_a_parameter_has():
    from imt_cds.core.rule_schema import ParametersFile

    assert problems(ParametersFile, {"parameters": {"x": {"value": 1, "units": "cm"}}}) == [
        ("parameters.x.units", "unknown key 'units'; allowed: value, unit, meaning, evidence", "unit")]


def test_a_long_value_is_shown_cut_to_sixty_characters():
    from imt_cds.core.rule_schema import DrugsFile

    drug = {"name": "crizotinib", "class": "c", "targets": "x" * 100}
    [(path, message, _)] = problems(DrugsFile, {"drugs": [drug]})
    shown = message.removeprefix("targets must be a non-empty list of genes; got ")
    assert (path, shown) == ("drugs[0].targets", "'" + "x" * 56 + "...") and len(shown) == 60


def test_a_rule_without_a_title_is_refused_not_loaded(tmp_path):
    directory = copy_rulebook(tmp_path)
    edit(directory, CRIZOTINIB, "title: Crizotinib for advanced ALK-positive IMT (age within the label)\n", "")
    [problem] = load_problems(directory)
    assert (problem.rule, problem.path, problem.message) == (
        "R32a", "title", "missing 'title': it must be non-empty text")


def test_a_drug_without_a_name_or_with_an_rxnorm_code_alone_is_told_what_to_write():
    from imt_cds.core.rule_schema import DrugsFile

    assert problems(DrugsFile, {"drugs": [{"class": "c", "targets": ["alk"], "rxnorm": "1148495"}]}) == [
        ("drugs[0].name", "missing 'name': it must be the ingredient in lower case (e.g. crizotinib)", None),
        ("drugs[0].rxnorm", 'rxnorm must be {code: "...", source: where the code was verified}; leave it out when no '
                            "code could be verified; got '1148495'", None)]


_EXAMPLE = {"name": "a", "fires": True}
_RULE = {"id": "R01", "version": "1.0.0", "title": "t", "kind": "recommendation", "strength": "DESIGN",
         "examples": [_EXAMPLE]}
_REASON = {"id": "C1", "version": "1.0.0", "title": "t", "text": "x", "when": "always", "examples": [_EXAMPLE]}
_CODE = {"system": "urn:x", "code": "1", "display": "d", "source": "s"}


def _without(mapping, key):
    return {k: v for k, v in mapping.items() if k != key}


@pytest.mark.parametrize(("model", "document", "expected"), [
    ("ExampleDocument", dict(_EXAMPLE, expect=5, expect_suppressed=5, facts=5), [
        ("facts", "facts must be a patient's facts (a mapping); got 5"),
        ("expect", "expect must be a list of finding codes or derived fact names; got 5"),
        ("expect_suppressed", "expect_suppressed must be a list of finding codes or derived fact names; got 5")]),
    ("RuleDocument", dict(_RULE, evidence=5, strength=5, suppresses=[]), [
        ("strength", "strength must be text such as 'REG + SA-TRIAL'; got 5"),
        ("evidence", "evidence must be a list of evidence ids; got 5"),
        ("suppresses", "suppresses must be a non-empty list of rule ids; got an empty list")]),
    ("RuleDocument", _without(_RULE, "id"), [("id", "missing 'id': it must be an id such as R01, R19a, D04, S01")]),
    ("ParametersFile", {"parameters": {"x": {"value": 1, "evidence": 5}}}, [
        ("parameters.x.evidence", "evidence must be a list of evidence ids; got 5")]),
    ("ReasonDocument", dict(_without(_REASON, "title"), strength=5), [
        ("title", "missing 'title': it must be non-empty text"),
        ("strength", "strength must be text such as 'REG + SA-TRIAL'; got 5")]),
    ("FindingDocument", {"finding": "REC_A_B", "title": "t", "indicator": "info", "drugs": 5}, [
        ("summary", "missing 'summary': it must be non-empty text"),
        ("drugs", "drugs must be a list of drug names of drugs.yaml; got 5")]),
    ("ValueSetDocument", {"value_set": "a-b", "codes": [_without(_CODE, "display")], "text_patterns": 5}, [
        ("title", "missing 'title': it must be non-empty text"),
        ("codes[0].display", "missing 'display': it must be non-empty text"),
        ("text_patterns", "text_patterns must be a list of regular expressions; got 5")]),
])
def test_each_field_says_what_it_must_be(model, document, expected):
    from imt_cds.core import rule_schema

    assert [(path, message) for path, message, _ in problems(getattr(rule_schema, model), document)] == expected


def test_malformed_names_and_codes_are_refused_in_the_validators_own_words():
    """The messages of the reason-id, derived-name, drug-name and RxNorm patterns (the second whole-file run of
    core/rule_schema.py found none of them read word for word)."""
    reason = {"id": "c-1", "version": "1.0.0", "title": "t", "text": "t", "when": {},
              "examples": [{"name": "n", "fires": True}]}
    assert problems(ReasonDocument, reason) == [("id", "a reason's id must look like C1; got 'c-1'", None)]
    rule = {"id": "D01", "version": "1.0.0", "kind": "derived_fact", "derives": "bad name", "title": "t", "when": {}}
    assert ("derives", "derives must be a derived fact name in UPPER_SNAKE_CASE; got 'bad name'", None) in problems(
        RuleDocument, rule)
    drugs = {"drugs": [{"name": "Crizotinib", "class": "x", "targets": ["alk"],
                        "rxnorm": {"code": "12a", "source": "s"}}]}
    assert problems(DrugsFile, drugs) == [
        ("drugs[0].name", "name must be the ingredient in lower case (e.g. crizotinib); got 'Crizotinib'", None),
        ("drugs[0].rxnorm.code", "an RxNorm code is digits written in quotes; got '12a'", None)]


def test_a_drug_class_is_written_class_never_by_its_python_name():
    drugs = {"drugs": [{"name": "crizotinib", "drug_class": "x", "targets": ["alk"]}]}
    assert problems(DrugsFile, drugs) == [
        ("drugs[0].class", "missing 'class': it must be text such as 'ALK inhibitor'", None),
        ("drugs[0].drug_class", "unknown key 'drug_class'; allowed: name, brands, class, targets, label_min_age, "
                                "evidence, rxnorm", "class")]


def test_a_manifest_needs_a_name_and_says_what_each_field_must_be():
    assert problems(Manifest, {"version": "1.0.0"}) == [("name", "missing 'name': it must be a non-empty name", None)]
    assert problems(Manifest, {"name": 5, "version": "1.0.0", "title": 5}) == [
        ("name", "name must be a non-empty name; got 5", None), ("title", "title must be text; got 5", None)]


def test_a_validated_document_cannot_be_changed():
    manifest = Manifest.model_validate({"name": "n", "version": "1.0.0"})
    with pytest.raises(ValidationError, match="frozen"):
        manifest.name = "other"


# Every field of every document, as an author meets it: left out (a required field) and given a value of the wrong
# type. Each message says what the field must be in its description's words (the module's contract), and a required
# field left out is a problem, never a default the loader would then trip over.
_ALL_FIELDS_CASES = [
    ("Manifest", {}, [
        ("name", "missing 'name': it must be a non-empty name"),
        ("version", "missing 'version': it must be a quoted MAJOR.MINOR.PATCH string such as '1.0.0'")]),
    ("Manifest", {"name": 5, "version": 5, "title": 5, "description": 5, "catalogue": 5}, [
        ("name", "name must be a non-empty name; got 5"),
        ("version", "version must be a quoted MAJOR.MINOR.PATCH string such as '1.0.0'; got 5"),
        ("title", "title must be text; got 5"),
        ("description", "description must be text; got 5"),
        ("catalogue", "catalogue must be text naming the rule catalogue; got 5")]),
    ("ParametersFile", {}, [
        ("parameters", "missing 'parameters': it must be a mapping of parameter names to {value, unit, meaning}")]),
    ("ParametersFile", {"parameters": 5}, [
        ("parameters", "parameters must be a mapping of parameter names to {value, unit, meaning}; got 5")]),
    ("ParametersFile", {"parameters": {"x": {}}}, [("parameters.x.value", "missing 'value': it must be a number")]),
    ("ParametersFile", {"parameters": {"x": {"value": "1", "unit": 5, "meaning": 5, "evidence": 5}}}, [
        ("parameters.x.value", "value must be a number; got '1'"),
        ("parameters.x.unit", "unit must be text such as years or cm; got 5"),
        ("parameters.x.meaning", "meaning must be text saying what the parameter decides; got 5"),
        ("parameters.x.evidence", "evidence must be a list of evidence ids; got 5")]),
    ("DrugsFile", {"drugs": 5}, [("drugs", "drugs must be a list of drugs (name, brands, class, targets); got 5")]),
    ("DrugsFile", {"drugs": [{}]}, [
        ("drugs[0].name", "missing 'name': it must be the ingredient in lower case (e.g. crizotinib)"),
        ("drugs[0].class", "missing 'class': it must be text such as 'ALK inhibitor'"),
        ("drugs[0].targets", "missing 'targets': it must be a non-empty list of genes")]),
    ("DrugsFile", {"drugs": [{"name": 5, "brands": 5, "class": 5, "targets": 5, "label_min_age": 5, "evidence": 5,
                              "rxnorm": 5}]}, [
        ("drugs[0].name", "name must be the ingredient in lower case (e.g. crizotinib); got 5"),
        ("drugs[0].brands", "brands must be a list of brand names; got 5"),
        ("drugs[0].class", "class must be text such as 'ALK inhibitor'; got 5"),
        ("drugs[0].targets", "targets must be a non-empty list of genes; got 5"),
        ("drugs[0].label_min_age",
         "label_min_age must be a mapping of a target to a parameter (alk: crizotinib_min_age_years); got 5"),
        ("drugs[0].evidence", "evidence must be a list of evidence ids; got 5"),
        ("drugs[0].rxnorm", 'rxnorm must be {code: "...", source: where the code was verified}; leave it out when '
                            "no code could be verified; got 5")]),
    ("DrugsFile", {"drugs": [{"name": "a", "class": "c", "targets": ["alk"], "rxnorm": {}}]}, [
        ("drugs[0].rxnorm.code", "missing 'code': it must be digits written in quotes (\"1148495\")"),
        ("drugs[0].rxnorm.source",
         "missing 'source': it must be where the RxNorm code was verified (a public source)")]),
    ("DrugsFile", {"drugs": [{"name": "a", "class": "c", "targets": ["alk"], "rxnorm": {"code": "1", "source": 5}}]}, [
        ("drugs[0].rxnorm.source", "source must be where the RxNorm code was verified (a public source); got 5")]),
    ("ExampleDocument", {}, [
        ("name", "missing 'name': it must be a name saying what the example shows"),
        ("fires", "missing 'fires': it must be true (the rule fires) or false (it stays silent)")]),
    ("ExampleDocument", {"name": 5, "facts": 5, "fires": 5, "expect": 5, "expect_not": 5, "expect_suppressed": 5}, [
        ("name", "name must be a name saying what the example shows; got 5"),
        ("facts", "facts must be a patient's facts (a mapping); got 5"),
        ("fires", "fires must be true (the rule fires) or false (it stays silent); got 5"),
        ("expect", "expect must be a list of finding codes or derived fact names; got 5"),
        ("expect_not", "expect_not must be a list of finding codes or derived fact names; got 5"),
        ("expect_suppressed", "expect_suppressed must be a list of finding codes or derived fact names; got 5")]),
    ("FindingDocument", {}, [
        ("finding", "missing 'finding': it must be a finding code"),
        ("title", "missing 'title': it must be non-empty text"),
        ("summary", "missing 'summary': it must be non-empty text"),
        ("indicator", "missing 'indicator': it must be one of info, warning, critical (the card's severity)")]),
    ("FindingDocument", {"finding": "REC_A_B", "title": 5, "summary": 5, "indicator": "info", "gene": 5, "drugs": 5}, [
        ("title", "title must be non-empty text; got 5"),
        ("summary", "summary must be non-empty text; got 5"),
        ("gene", "gene must be a gene name; got 5"),
        ("drugs", "drugs must be a list of drug names of drugs.yaml; got 5")]),
    ("ReasonDocument", {}, [
        ("id", "missing 'id': it must be an id such as C1"),
        ("version", "missing 'version': it must be a quoted MAJOR.MINOR.PATCH string such as '1.0.0'"),
        ("title", "missing 'title': it must be non-empty text"),
        ("text", "missing 'text': it must be non-empty text"),
        ("when", "missing 'when': it must be a condition"),
        ("examples", "missing 'examples': it must be a non-empty list of examples: at least one that fires and one "
                     "that stays silent")]),
    ("ReasonDocument", {"id": "C1", "version": "1.0.0", "title": 5, "text": 5, "when": {}, "examples": 5,
                        "strength": 5, "evidence": 5, "description": 5}, [
        ("title", "title must be non-empty text; got 5"),
        ("text", "text must be non-empty text; got 5"),
        ("examples", "examples must be a non-empty list of examples: at least one that fires and one that stays "
                     "silent; got 5"),
        ("strength", "strength must be text such as 'REG + SA-TRIAL'; got 5"),
        ("evidence", "evidence must be a list of evidence ids; got 5"),
        ("description", "description must be text; got 5")]),
    ("RuleDocument", {}, [
        ("id", "missing 'id': it must be an id such as R01, R19a, D04, S01"),
        ("version", "missing 'version': it must be a quoted MAJOR.MINOR.PATCH string such as '1.0.0'"),
        ("title", "missing 'title': it must be non-empty text"),
        ("kind", "missing 'kind': it must be one of derived_fact, recommendation, data_request, risk_flag, "
                 "suppression"),
        ("strength", "missing 'strength': it must be text such as 'REG + SA-TRIAL'"),
        ("examples", "missing 'examples': it must be a non-empty list of examples: at least one that fires and one "
                     "that stays silent")]),
    ("RuleDocument", dict(_RULE, title=5, strength=5, evidence=5, description=5, then=5, derives=5, reasons=5,
                          suppresses=5, examples=5), [
        ("title", "title must be non-empty text; got 5"),
        ("strength", "strength must be text such as 'REG + SA-TRIAL'; got 5"),
        ("evidence", "evidence must be a list of evidence ids; got 5"),
        ("description", "description must be text; got 5"),
        ("then", "then must be a non-empty list of findings ({finding: CODE, title: ..., summary: ...}); got 5"),
        ("derives", "derives must be a derived fact name in UPPER_SNAKE_CASE; got 5"),
        ("reasons", "reasons must be a non-empty list of reason rules; got 5"),
        ("suppresses", "suppresses must be a non-empty list of rule ids; got 5"),
        ("examples", "examples must be a non-empty list of examples: at least one that fires and one that stays "
                     "silent; got 5")]),
    ("ValueSetDocument", {}, [
        ("value_set", "missing 'value_set': it must be a lower-case name with hyphens, the file's name"),
        ("title", "missing 'title': it must be non-empty text")]),
    ("ValueSetDocument", {"value_set": 5, "title": 5, "description": 5, "codes": 5, "text_patterns": 5,
                          "text_exclusions": 5}, [
        ("value_set", "value_set must be a lower-case name with hyphens (e.g. imt-diagnosis); got 5"),
        ("title", "title must be non-empty text; got 5"),
        ("description", "description must be text; got 5"),
        ("codes", "codes must be a list of {system, code, display, source}; got 5"),
        ("text_patterns", "text_patterns must be a list of regular expressions; got 5"),
        ("text_exclusions", "text_exclusions must be a list of regular expressions; got 5")]),
    ("ValueSetDocument", {"value_set": "a-b", "title": "t", "codes": [{}]}, [
        ("codes[0].system", "missing 'system': it must be a URI (http(s):// or urn:)"),
        ("codes[0].code", "missing 'code': it must be non-empty text, in quotes"),
        ("codes[0].display", "missing 'display': it must be non-empty text"),
        ("codes[0].source", "missing 'source': it must be where this code was verified (a public source)")]),
    ("ValueSetDocument", {"value_set": "a-b", "title": "t",
                          "codes": [{"system": 5, "code": [1], "display": 5, "source": 5}]}, [
        ("codes[0].system", "system must be a URI (http(s):// or urn:); got 5"),
        ("codes[0].code", "code must be non-empty text, in quotes; got [1]"),
        ("codes[0].display", "display must be non-empty text; got 5"),
        ("codes[0].source", "source must be where this code was verified (a public source); got 5")]),
]


@pytest.mark.parametrize(("model", "document", "expected"), _ALL_FIELDS_CASES,
                         ids=[f"{model}-{i}" for i, (model, _, _) in enumerate(_ALL_FIELDS_CASES)])
def test_every_field_left_out_or_of_the_wrong_type_says_what_it_must_be(model, document, expected):
    from imt_cds.core import rule_schema

    assert [(path, message) for path, message, _ in problems(getattr(rule_schema, model), document)] == expected


def _drug(**fields):
    return {"drugs": [dict({"name": "a", "class": "c", "targets": ["alk"]}, **fields)]}


def test_an_item_of_a_list_is_named_by_its_index_and_told_what_an_item_must_be():
    """An item's message says what the item must be (text, a mapping), not what the whole list must be."""
    assert problems(DrugsFile, _drug(brands=["Xalkori", 5, " "])) == [
        ("drugs[0].brands[1]", "brands[1] must be text; got 5", None),
        ("drugs[0].brands[2]", "brands[2] must be text that is not blank; got ' '", None)]
    assert problems(DrugsFile, {"drugs": [5]}) == [("drugs[0]", "drugs[0] must be a mapping; got 5", None)]


def test_blank_text_and_a_number_that_is_not_finite_are_refused_naming_the_field():
    assert problems(FindingDocument, {"finding": "REC_A_B", "title": " ", "summary": "s", "indicator": "info"}) == [
        ("title", "title must be non-empty text; got ' '", None)]
    from imt_cds.core.rule_schema import ParametersFile

    assert problems(ParametersFile, {"parameters": {"x": {"value": float("nan")}, "y": {"value": float("-inf")}}}) == [
        ("parameters.x.value", "value must be a finite number; got nan", None),
        ("parameters.y.value", "value must be a finite number; got -inf", None)]


@pytest.mark.parametrize(("length", "shown"), [(58, "'" + "x" * 58 + "'"), (59, "'" + "x" * 56 + "...")])
def test_a_value_is_shown_whole_up_to_sixty_characters_and_cut_beyond(length, shown):
    """The repr of 58 x's is 60 characters, shown whole; of 59, 61 characters, cut to 57 and '...'."""
    [(_, message, _)] = problems(DrugsFile, _drug(targets="x" * length))
    assert message == "targets must be a non-empty list of genes; got " + shown


def test_a_key_that_is_not_text_is_one_line_in_pydantics_words_naming_the_key():
    """YAML reads an unquoted `2024:` as a number; no model describes that error, so the message is pydantic's own,
    on one line, after the mapping's label (the document's, here)."""
    assert problems(Manifest, {"name": "n", "version": "1.0.0", 2024: "x"}) == [
        ("[2024]", "the document: Keys should be strings; got 2024", None)]


def test_a_list_of_one_is_enough_wherever_a_non_empty_list_is_asked_for():
    """`then`, `reasons`, `suppresses`, `examples` and a drug's `targets` must be non-empty: one item is enough."""
    finding = {"finding": "REC_A_B", "title": "t", "summary": "s", "indicator": "info"}
    assert problems(RuleDocument, dict(_RULE, then=[finding], reasons=[_REASON], suppresses=["R02"])) == []
    assert problems(DrugsFile, _drug(targets=["alk"])) == []


def test_where_prefixes_every_path_and_stands_for_the_document_itself():
    """`problems(..., where=...)` reports a document found inside another at its place in the outer one."""
    finding = {"finding": "REC_A_B", "title": "t", "summary": "s", "indicator": "info", "gene": 5}
    assert problems(FindingDocument, finding, where="then[2]") == [
        ("then[2].gene", "gene must be a gene name; got 5", None)]
    assert problems(FindingDocument, 5, where="then[2]") == [("then[2]", "the document must be a mapping; got 5", None)]


def test_a_key_that_is_not_text_inside_a_drugs_mapping_is_a_problem_not_a_crash():
    """`label_min_age: {1: ...}` (a key YAML read as a number) is reported at the key, in the words for a text."""
    assert problems(DrugsFile, _drug(label_min_age={1: "crizotinib_min_age_years"})) == [
        ("drugs[0].label_min_age[1].[key]", "[key] must be text; got 1", None)]
