"""The structure of a rulebook's YAML documents, as pydantic models: which keys each mapping may hold, which are
required, and the type of each value. ``rule_loader`` validates every document against these before it checks the
meaning (conditions, references, parameters in texts), and turns each validation error into a one-line problem.

- ``Manifest`` (``rulebook.yaml``), ``ParametersFile`` (``parameters.yaml``) and ``DrugsFile`` (``drugs.yaml``);
- ``RuleDocument``: one rule, with its findings (``FindingDocument``), reasons (``ReasonDocument``) and examples
  (``ExampleDocument``);
- ``ValueSetDocument``: a value set of ``terminology/``, with its codes (``ValueSetCodeDocument``).

Validation is strict: nothing is converted (a quoted number stays text, ``1.0`` is not a version, a boolean is not a
number), an unknown key is an error, and each field's ``description`` says what it must be, which is what an error
message says is allowed. ``problems(model, data)`` gives every structural problem of a document as
``(path, message, suggestion)``, the path written as the loader writes paths (``then[0].indicator``), so that the
loader can find its line in the YAML text.
"""

from __future__ import annotations

import difflib
import math
import re
import types
import typing
from collections.abc import Sequence
from typing import Annotated, Any, Union  # Union: only to unwrap Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.functional_validators import AfterValidator, BeforeValidator
from pydantic_core import PydanticCustomError

from .rulebook import FINDING_PREFIXES, INDICATORS, RULE_KINDS

__all__ = [
    "DrugsFile",
    "ExampleDocument",
    "FindingDocument",
    "Manifest",
    "ParametersFile",
    "ReasonDocument",
    "RecordedFindingDocument",
    "RecordedRuleDocument",
    "RuleDocument",
    "ValueSetCodeDocument",
    "ValueSetDocument",
    "problems",
]

RULE_ID = re.compile(r"^[A-Z][0-9]{2}[a-z]?$")
REASON_ID = re.compile(r"^[A-Z][0-9]+$")
VERSION = re.compile(r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$")
FINDING_CODE = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)+$")
DERIVED_NAME = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$")
DRUG_NAME = re.compile(r"^[a-z][a-z0-9-]*$")
VALUE_SET_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


def _text_matching(pattern: re.Pattern[str], message: str) -> Any:
    """A string that matches ``pattern``; any other value (another type included) fails with ``message``, which may
    name the value as ``{value}``."""

    def check(value: Any) -> str:
        if not isinstance(value, str) or not pattern.match(value):
            raise PydanticCustomError("format", message, {"value": repr(value)})
        return value

    return BeforeValidator(check)


def _one_of(allowed: Sequence[str], what: str) -> Any:
    """One of a closed list of names; the error names them all and suggests the closest."""

    def check(value: Any) -> str:
        if not isinstance(value, str) or value not in allowed:
            close = difflib.get_close_matches(str(value), allowed, n=1)
            raise PydanticCustomError("one_of", f"{what} must be one of {{allowed}}; got {{value}}",
                                      {"value": repr(value), "allowed": ", ".join(allowed),
                                       "suggestion": close[0] if close else None})
        return value

    return BeforeValidator(check)


def _code_text(value: Any) -> Any:
    """A code is text even when it looks like a number: YAML reads an unquoted 1229901006 as one."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise PydanticCustomError("format", "code must be text: write codes in quotes (YAML reads {value} as a "
                                            "number)", {"value": repr(value)})
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("blank", "must not be blank")
    return value


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise PydanticCustomError("finite", "must be a finite number; got {value}", {"value": repr(value)})
    return value


Text = Annotated[str, AfterValidator(_not_blank)]
# A float field in strict mode takes an int as well (and refuses a bool or a string): no Union, whose branches
# pydantic would name in an error's location, which is the YAML path only while every union is an Optional.
Number = Annotated[float, AfterValidator(_finite)]
Version = Annotated[str, _text_matching(VERSION, "version must be a quoted MAJOR.MINOR.PATCH string such as "
                                                 "'1.0.0'; got {value}")]
RuleId = Annotated[str, _text_matching(RULE_ID, "'id' must look like R01, R19a, D04, S01; got {value}")]
ReasonId = Annotated[str, _text_matching(re.compile(f"{RULE_ID.pattern}|{REASON_ID.pattern}"),
                                         "a reason's id must look like C1; got {value}")]
FindingCode = Annotated[str, _text_matching(
    re.compile(rf"^(?=({'|'.join(map(re.escape, FINDING_PREFIXES))}))[A-Z][A-Z0-9]*(_[A-Z0-9]+)+$"),
    f"a finding code is UPPER_SNAKE_CASE starting with {', '.join(FINDING_PREFIXES)}; got {{value}}")]
DerivedName = Annotated[str, _text_matching(DERIVED_NAME, "derives must be a derived fact name in UPPER_SNAKE_CASE; "
                                                          "got {value}")]
Kind = Annotated[str, _one_of(RULE_KINDS, "kind")]
Indicator = Annotated[str, _one_of(INDICATORS, "indicator")]
DrugName = Annotated[str, _text_matching(DRUG_NAME, "name must be the ingredient in lower case (e.g. crizotinib); "
                                                    "got {value}")]
RxNormCode = Annotated[str, _text_matching(re.compile(r"^[0-9]+$"), "an RxNorm code is digits written in quotes; "
                                                                    "got {value}")]


class _Document(BaseModel):
    # strict: YAML already gives typed values, so a string where a number belongs is a mistake to report, not to
    # convert; frozen: a validated document is a value.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=False)


# -- the manifest, parameters and drugs ----------------------------------------------------------------------------


class Manifest(_Document):
    name: Text = Field(description="a non-empty name")
    version: Version = Field(description="a quoted MAJOR.MINOR.PATCH string such as '1.0.0'")
    title: str | None = Field(None, description="text")
    description: str | None = Field(None, description="text")
    catalogue: str | None = Field(None, description="text naming the rule catalogue")


class Parameter(_Document):
    value: Number = Field(description="a number")
    unit: str | None = Field(None, description="text such as years or cm")
    meaning: str | None = Field(None, description="text saying what the parameter decides")
    evidence: list[str] | None = Field(None, description="a list of evidence ids")


class ParametersFile(_Document):
    parameters: dict[str, Parameter] = Field(description="a mapping of parameter names to {value, unit, meaning}")


class RxNorm(_Document):
    code: RxNormCode = Field(description='digits written in quotes ("1148495")')
    source: Text = Field(description="where the RxNorm code was verified (a public source)")


class Drug(_Document):
    name: DrugName = Field(description="the ingredient in lower case (e.g. crizotinib)")
    brands: list[Text] = Field([], description="a list of brand names")
    drug_class: Text = Field(alias="class", description="text such as 'ALK inhibitor'")
    targets: list[str] = Field(min_length=1, description="a non-empty list of genes")
    label_min_age: dict[str, str] = Field({}, description="a mapping of a target to a parameter "
                                                          "(alk: crizotinib_min_age_years)")
    evidence: list[str] | None = Field(None, description="a list of evidence ids")
    rxnorm: RxNorm | None = Field(None, description='{code: "...", source: where the code was verified}; leave it '
                                                    "out when no code could be verified")


class DrugsFile(_Document):
    drugs: list[Drug] = Field(description="a list of drugs (name, brands, class, targets)")


# -- rules ---------------------------------------------------------------------------------------------------------


class ExampleDocument(_Document):
    name: Text = Field(description="a name saying what the example shows")
    facts: dict[str, Any] = Field({}, description="a patient's facts (a mapping)")
    fires: bool = Field(description="true (the rule fires) or false (it stays silent)")
    expect: list[str] = Field([], description="a list of finding codes or derived fact names")
    expect_not: list[str] = Field([], description="a list of finding codes or derived fact names")
    expect_suppressed: list[str] = Field([], description="a list of finding codes or derived fact names")


Examples = Annotated[list[ExampleDocument], Field(
    min_length=1, description="a non-empty list of examples: at least one that fires and one that stays silent")]


class FindingDocument(_Document):
    finding: FindingCode = Field(description="a finding code")
    title: Text = Field(description="non-empty text")
    summary: Text = Field(description="non-empty text")
    indicator: Indicator = Field(description=f"one of {', '.join(INDICATORS)} (the card's severity)")
    gene: str | None = Field(None, description="a gene name")
    drugs: list[str] = Field([], description="a list of drug names of drugs.yaml")
    when: Any = Field(None, description="a condition")


class ReasonDocument(_Document):
    id: ReasonId = Field(description="an id such as C1")
    version: Version = Field(description="a quoted MAJOR.MINOR.PATCH string such as '1.0.0'")
    title: Text = Field(description="non-empty text")
    text: Text = Field(description="non-empty text")
    when: Any = Field(description="a condition")
    examples: Examples
    strength: Text | None = Field(None, description="text such as 'REG + SA-TRIAL'")
    evidence: list[str] | None = Field(None, description="a list of evidence ids")
    description: str | None = Field(None, description="text")


class RuleDocument(_Document):
    id: RuleId = Field(description="an id such as R01, R19a, D04, S01")
    version: Version = Field(description="a quoted MAJOR.MINOR.PATCH string such as '1.0.0'")
    title: Text = Field(description="non-empty text")
    kind: Kind = Field(description=f"one of {', '.join(RULE_KINDS)}")
    strength: Text = Field(description="text such as 'REG + SA-TRIAL'")
    evidence: list[str] | None = Field(None, description="a list of evidence ids")
    description: str | None = Field(None, description="text")
    # 'when' is checked by the condition language; which of 'then', 'derives' and 'suppresses' a rule has, and
    # whether it needs 'when', depends on the others (rule_loader checks that).
    when: Any = Field(None, description="a condition")
    then: list[FindingDocument] | None = Field(
        None, min_length=1, description="a non-empty list of findings ({finding: CODE, title: ..., summary: ...})")
    derives: DerivedName | None = Field(None, description="a derived fact name in UPPER_SNAKE_CASE")
    reasons: list[ReasonDocument] | None = Field(None, min_length=1, description="a non-empty list of reason rules")
    suppresses: list[str] | None = Field(None, min_length=1, description="a non-empty list of rule ids")
    examples: Examples


# -- rulebooks as an audit archive recorded them -------------------------------------------------------------------


class RecordedFindingDocument(FindingDocument):
    """A finding as the first rulebooks wrote it (0.1.0, before findings declared their card indicator): read
    only when a rulebook is rebuilt from an audit archive to replay the records made with it."""

    # (optional here, unlike in FindingDocument: the narrowing a type checker expects is the other way round)
    indicator: Indicator | None = Field(  # type: ignore[assignment]
        None, description=f"one of {', '.join(INDICATORS)} (the card's severity)")


class RecordedRuleDocument(RuleDocument):
    """``RuleDocument`` whose findings may be ``RecordedFindingDocument``s (rebuilding an archived rulebook)."""

    then: list[RecordedFindingDocument] | None = Field(  # type: ignore[assignment]
        None, min_length=1, description="a non-empty list of findings ({finding: CODE, title: ..., summary: ...})")


# -- value sets ----------------------------------------------------------------------------------------------------


class ValueSetCodeDocument(_Document):
    system: Annotated[str, _text_matching(re.compile(r"^(https?://|urn:)\S"), "system must be a URI (http(s):// or "
                                                                             "urn:); got {value}")] = Field(
        description="a URI (http(s):// or urn:)")
    code: Annotated[Text, BeforeValidator(_code_text)] = Field(description="non-empty text, in quotes")
    display: Text = Field(description="non-empty text")
    source: Text = Field(description="where this code was verified (a public source)")


class ValueSetDocument(_Document):
    value_set: Annotated[str, _text_matching(VALUE_SET_NAME, "value_set must be a lower-case name with hyphens "
                                                             "(e.g. imt-diagnosis); got {value}")] = Field(
        description="a lower-case name with hyphens, the file's name")
    title: Text = Field(description="non-empty text")
    description: str | None = Field(None, description="text")
    codes: list[ValueSetCodeDocument] = Field([], description="a list of {system, code, display, source}")
    text_patterns: list[Text] = Field([], description="a list of regular expressions")
    text_exclusions: list[Text] = Field([], description="a list of regular expressions")


# -- validation errors as the loader's problems --------------------------------------------------------------------

_EXPECTED = {  # what a value of the wrong type should have been, by pydantic error type
    "string_type": "text",
    "bool_type": "true or false",
    "int_type": "a number",
    "float_type": "a number",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def problems(model: type[BaseModel], data: Any, where: str = "") -> list[tuple[str | None, str, str | None]]:
    """Every structural problem of ``data`` as a ``model``: (path, one-line message, did-you-mean or None), the path
    prefixed with ``where``. Empty when ``data`` fits."""
    try:
        model.model_validate(data)
    except ValidationError as exc:
        found: dict[tuple[str | None, str], str | None] = {}
        for error in exc.errors(include_url=False):
            path, message, suggestion = _problem(model, error)
            if where:
                path = f"{where}.{path}" if path else where
            found.setdefault((path, message), suggestion)  # a union reports a value twice; say it once
        return [(path, message, suggestion) for (path, message), suggestion in found.items()]
    return []


def _problem(model: type[BaseModel], error: Any) -> tuple[str | None, str, str | None]:
    loc = tuple(error["loc"])
    path = _path(loc)
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    if kind == "extra_forbidden":
        allowed = _keys(_model_at(model, loc[:-1]))
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        return path, f"unknown key {loc[-1]!r}; allowed: {', '.join(allowed)}", close[0] if close else None
    if kind in ("format", "one_of"):  # our own messages: they name the field, the value and what is allowed
        return path, error["msg"], ctx.get("suggestion")
    label, described = _field(model, loc)
    if kind == "missing":
        return path, f"missing '{label}': it must be {described}", None
    if kind == "too_short":
        return path, f"{label} must be {described}; got an empty {'list' if isinstance(value, list) else 'value'}", None
    if kind == "blank":
        if label.endswith("]"):  # an item of a list of texts
            return path, f"{label} must be text that is not blank; got {value!r}", None
        return path, f"{label} must be {described}; got {value!r}", None
    if kind == "finite":
        return path, f"{label} {error['msg']}", None
    expected = _EXPECTED.get(kind)
    if expected is None:  # a check this module does not describe: pydantic's own words, on one line
        return path, f"{label}: {' '.join(str(error['msg']).split())}; got {value!r}", None
    if described and loc and isinstance(loc[-1], str):
        expected = described
    return path, f"{label} must be {expected}; got {_short(value)}", None


def _path(loc: tuple[str | int, ...]) -> str | None:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or None


def _field(model: type[BaseModel], loc: tuple[str | int, ...]) -> tuple[str, str]:
    """How a message names the value at ``loc`` (``brands`` or ``brands[1]``) and what its field must be."""
    names = [i for i, part in enumerate(loc) if isinstance(part, str)]
    if not names:
        return "the document", "a mapping"
    last = names[-1]
    parent = _model_at(model, loc[:last])
    name = str(loc[last])
    label = name + "".join(f"[{p}]" for p in loc[last + 1:])
    field = _field_info(parent, name)
    described = field.description if field is not None and field.description else ""
    return label, described


def _field_info(model: type[BaseModel] | None, name: str) -> Any:
    if model is None:
        return None
    for field_name, field in model.model_fields.items():
        if (field.alias or field_name) == name:
            return field
    return None


def _keys(model: type[BaseModel] | None) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()] if model is not None else []


def _model_at(model: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model class of the mapping at ``loc`` inside a ``model`` document (None when it is no model)."""
    current: Any = model
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = _field_info(current, str(part))
            if field is None:
                return None
            current = _unwrap(field.annotation)
        else:
            current = _item_type(current)
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """The type inside ``Optional[...]`` and ``Annotated[...]``."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _item_type(annotation: Any) -> Any:
    annotation = _unwrap(annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is list and args:
        return _unwrap(args[0])
    if origin is dict and len(args) == 2:
        return _unwrap(args[1])
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."

