"""From untrusted input (JSON text, a mapping, a model) to validated ``PatientFacts``, or an ``InvalidInputError``.

Every problem is reported at once, each naming the field path, the bad value and what is allowed, with a
did-you-mean for misspelt keys and enum values. Nothing here ever substitutes a default for a bad value: a value
that fails validation stops the evaluation, because a silently "fixed" fact could change a recommendation.

Also here: the canonical form of validated facts (the bytes that are hashed for provenance and audit).
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Mapping
from functools import cache
from typing import Any

import orjson
from pydantic import ValidationError

from .errors import InputProblem, InvalidInputError
from .fact_fields import fact_fields, keys_at, leaf_values, set_path
from .facts import PatientFacts

__all__ = ["canonical_json", "input_sha256", "parse_facts", "parse_facts_json", "render_leaves"]

_MAX_INPUT_BYTES = 1_000_000  # a patient is ~1 kB; refuse anything absurd before parsing it


def parse_facts(data: PatientFacts | Mapping[str, Any]) -> PatientFacts:
    """Validate a mapping (e.g. parsed JSON) into ``PatientFacts``; a ``PatientFacts`` is returned as is."""
    if isinstance(data, PatientFacts):
        return data
    if not isinstance(data, Mapping):
        raise InvalidInputError(
            [InputProblem("", f"expected an object with patient facts, got {_json_type(data)}", _preview(data))]
        )
    if not isinstance(data, dict):
        data = dict(data)
    try:
        return PatientFacts.model_validate(data)
    except ValidationError as exc:
        raise InvalidInputError(_problems(exc, data)) from None
    except RecursionError:
        raise InvalidInputError([InputProblem("", "input is nested too deeply", None)]) from None


def parse_facts_json(text: str | bytes) -> PatientFacts:
    """Parse one JSON document and validate it. Malformed JSON, duplicate keys, NaN and Infinity are rejected."""
    return parse_facts(load_json_object(text))


def load_json_object(text: str | bytes, *, max_bytes: int | None = None) -> Any:
    """Strict JSON parsing for patient documents (the value is not yet validated). ``max_bytes``: the size limit
    (default 1 MB, a patient's facts; a FHIR chart may be larger)."""
    limit = max_bytes or _MAX_INPUT_BYTES
    if isinstance(text, (bytes, bytearray)):
        if len(text) > limit:
            raise InvalidInputError([InputProblem("", f"input is larger than {limit} bytes", None)])
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInputError([InputProblem("", f"input is not UTF-8 text ({exc.reason})", None)]) from None
    if len(text) > limit:
        raise InvalidInputError([InputProblem("", f"input is larger than {limit} characters", None)])
    try:
        # The stdlib parser, not a faster one, because only it lets us refuse duplicate keys ({"age_years": 5,
        # "age_years": 50} must not silently keep one) and the non-JSON constants NaN/Infinity.
        return json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constants)
    except _DuplicateKey as exc:
        raise InvalidInputError([InputProblem("", f"duplicate key {exc.key!r} in a JSON object", exc.key)]) from None
    except _ForbiddenConstant as exc:
        raise InvalidInputError(
            [InputProblem("", f"{exc.name} is not allowed: numbers must be finite JSON numbers", exc.name)]
        ) from None
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            [InputProblem("", f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", None)]
        ) from None
    except RecursionError:
        raise InvalidInputError([InputProblem("", "JSON is nested too deeply", None)]) from None


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        self.key = key


class _ForbiddenConstant(ValueError):
    def __init__(self, name: str):
        self.name = name


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return result


def _no_constants(name: str) -> Any:
    raise _ForbiddenConstant(name)


def render_leaves(values: tuple[Any, ...]) -> list[str]:
    """Each leaf value (``leaf_values(facts)``) as its canonical JSON text, in ``fact_fields()`` order."""
    _, _, writers = _canonical_template()
    return [write(value) for write, value in zip(writers, values, strict=True)]


def canonical_json(facts: PatientFacts, leaves: list[str] | None = None) -> bytes:
    """The canonical bytes of validated facts: every default filled in, keys sorted at every level, methods sorted,
    compact UTF-8 JSON (numbers as orjson writes them). ``leaves`` may pass ``render_leaves(...)`` if already done.

    It is the same document as ``orjson.dumps(facts.model_dump(mode="json"), option=OPT_SORT_KEYS)`` (a test holds
    them equal), written from a template because this runs on every evaluation.
    """
    template, order, _ = _canonical_template()
    if leaves is None:
        leaves = render_leaves(leaf_values(facts))
    return (template % tuple([leaves[i] for i in order])).encode()


def input_sha256(facts: PatientFacts, leaves: list[str] | None = None) -> str:
    return hashlib.sha256(canonical_json(facts, leaves)).hexdigest()


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


@cache
def _canonical_template() -> tuple[str, tuple[int, ...], tuple[Any, ...]]:
    """A %-template of the canonical document, the leaf index for each slot (sorted-key order), and per leaf a
    function writing its value as JSON text."""
    fields = list(fact_fields().values())
    tree: dict[str, Any] = {}
    for index, field in enumerate(fields):
        set_path(tree, field.path, index)
    order: list[int] = []

    def render(node: dict[str, Any]) -> str:
        parts = []
        for key in sorted(node):
            value = node[key]
            if isinstance(value, dict):
                parts.append(f"{_json_text(key)}:{render(value)}")
            else:
                order.append(value)
                parts.append(f"{_json_text(key)}:%s")
        return "{" + ",".join(parts) + "}"

    template = render(tree)
    writers: list[Any] = []
    for field in fields:
        if field.kind in ("enum", "boolean", "tristate"):
            domain = list(field.values) + ([True, False] if field.kind != "enum" else []) + [None]
            writers.append({value: _json_text(value) for value in domain}.__getitem__)
        elif field.kind == "set":
            writers.append(lambda value: _json_text(sorted(value)))
        else:
            writers.append(_json_text)
    return template, tuple(order), tuple(writers)


# --- error translation -------------------------------------------------------------------------------------------


def _problems(exc: ValidationError, data: Any) -> list[InputProblem]:
    problems: list[InputProblem] = []
    seen: set[tuple[str, str]] = set()
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        problem = _problem(error, loc, data)
        key = (problem.path, problem.message)
        if key not in seen:  # a union type can report one bad value twice
            seen.add(key)
            problems.append(problem)
    return problems


def _problem(error: dict[str, Any], loc: tuple[Any, ...], data: Any) -> InputProblem:
    kind = error["type"]
    value = error.get("input")
    if kind == "extra_forbidden":
        parent, key = loc[:-1], loc[-1]
        allowed = keys_at(parent)
        message = f"unknown key {key!r}"
        close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
        if close:
            message += f"; did you mean {close[0]!r}?"
        message += " Allowed keys here: " + ", ".join(allowed)
        return InputProblem(_path(loc), message, value)
    if kind == "invalid_key":
        return InputProblem(_path(loc[:-1]), f"object keys must be strings, got {loc[-1]!r}", loc[-1])
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return InputProblem(_path(loc), f"expected an object, got {_json_type(value)}", _preview(value))
    if kind == "method_item":
        index, value = error["ctx"]["index"], error["ctx"]["item"]
        loc = (*loc, index)
    # A leaf (or an element of the methods list): name what is allowed for that field.
    field_loc = tuple(p for p in loc if isinstance(p, str))
    field = fact_fields().get(".".join(field_loc))
    if field is None:
        return InputProblem(_path(loc), error["msg"], _preview(value))
    if len(loc) > len(field_loc):  # an element of a list, e.g. methods[1]
        close = difflib.get_close_matches(str(value), field.values, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close and isinstance(value, str) else "."
        return InputProblem(_path(loc), f"{value!r} is not a test method{hint} Allowed: {field.allowed()}", value)
    if value is None and not field.nullable:
        return InputProblem(_path(loc), f"null is not allowed here; expected {field.allowed()}", None)
    if kind == "literal_error" and isinstance(value, str):
        close = difflib.get_close_matches(value, field.values, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else "."
        return InputProblem(_path(loc), f"{value!r} is not allowed{hint} Expected {field.allowed()}", value)
    if kind == "string_pattern_mismatch":
        return InputProblem(_path(loc), f"{value!r} is not a gene symbol; expected {field.allowed()}", value)
    if kind == "finite_number":
        return InputProblem(_path(loc), f"must be a finite number; expected {field.allowed()}", value)
    detail = error["msg"][0].lower() + error["msg"][1:]
    return InputProblem(_path(loc), f"{detail}; expected {field.allowed()}", _preview(value))


def _path(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _preview(value: Any) -> Any:
    """Echo small offending values in full; summarise big ones so an error report stays readable."""
    if isinstance(value, Mapping):
        return f"<object with {len(value)} key(s)>"
    if isinstance(value, (list, tuple)) and len(value) > 10:
        return f"<array of {len(value)} items>"
    if isinstance(value, str) and len(value) > 200:
        return value[:200] + "…"
    return value
