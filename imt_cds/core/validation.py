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
import re
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from typing import Any

import orjson
from pydantic import ValidationError

from .errors import InputProblem, InvalidInputError
from .fact_fields import fact_fields, keys_at, leaf_values, set_path
from .facts import PatientFacts

__all__ = ["DuplicateKeyError", "NonFiniteNumberError", "LONE_SURROGATE", "canonical_json", "input_sha256",
           "lone_surrogates", "loads_strict", "may_hold_lone_surrogates", "parse_facts", "parse_facts_json",
           "render_leaves", "walk_json"]

_MAX_INPUT_BYTES = 1_000_000  # a patient is ~1 kB; refuse anything absurd before parsing it
_BOM = "\ufeff"  # a UTF-8 byte order mark, as some editors and exports write at the start of a file
# What a YAML document (rather than JSON) typically starts with: a "---" marker, a directive, or "key: value".
_LOOKS_LIKE_YAML = re.compile(r"\A\s*(?:---|%YAML|[A-Za-z_][\w.-]*\s*:(?:\s|\Z))")
_MAX_DEPTH = 32  # levels of objects and arrays; a patient document has 4
_INT64 = range(-(2**63), 2**64)  # the integers a JSON error report (written with orjson) can hold
LONE_SURROGATE = "not valid Unicode text: it holds a lone surrogate (\\ud800-\\udfff)"
# JSON text can give text holding a lone surrogate only through an escape of one (\ud800-\udfff): the raw bytes of one
# are not UTF-8. Most documents have none (a pair, for an emoji, is two, and is then looked into for nothing).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_BYTES = re.compile(_SURROGATE_ESCAPE.pattern.encode())


def parse_facts(data: PatientFacts | Mapping[str, Any]) -> PatientFacts:
    """Validate a mapping (e.g. parsed JSON) into ``PatientFacts``; a ``PatientFacts`` is returned as is."""
    if isinstance(data, PatientFacts):
        return data
    if not isinstance(data, Mapping):
        raise InvalidInputError(
            [InputProblem("", f"expected an object with patient facts, got {_json_type(data)}", _preview(data))]
        )
    try:
        return _validate(data)
    except RecursionError:
        raise InvalidInputError([InputProblem("", "input is nested too deeply", None)]) from None


def _validate(data: Mapping[str, Any]) -> PatientFacts:
    if not isinstance(data, dict):
        data = dict(data)
    try:
        return PatientFacts.model_validate(data)
    except ValidationError as exc:
        # Checked only once validation has failed, so valid patients pay nothing: pydantic's error report recurses
        # through the offending value (and prints, rather than raises, what fails on a deep one).
        deep = _too_deep(data)
        if deep is not None:
            raise InvalidInputError([InputProblem(
                deep, f"input is nested too deeply: more than {_MAX_DEPTH} levels (a patient has at most 4)", None,
            )]) from None
        if "resourceType" in data:
            # A FHIR chart given as patient facts: one line saying so beats a list of every key it has (as for YAML).
            kind = data["resourceType"]
            raise InvalidInputError([InputProblem(
                "resourceType", f"this looks like FHIR (resourceType {_shown(kind)}), not patient facts: read a FHIR "
                "chart with `imt-cds evaluate --fhir` (from Python: imt_cds.fhir.facts_from_bundle)", _preview(kind),
            )]) from None
        return _validate_as_dicts(data, exc)


def _too_deep(data: Any) -> str | None:
    """The path of the first object or array deeper than ``_MAX_DEPTH`` levels, or None (walked without recursion:
    the value may be nested deeper than Python's stack)."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(data, ())]
    while stack:
        value, loc = stack.pop()
        if len(loc) > _MAX_DEPTH:
            return _printable(_path(loc[:_MAX_DEPTH])) + " …"
        if isinstance(value, Mapping):
            stack.extend((item, (*loc, key if isinstance(key, str) else _shown(key))) for key, item in value.items())
        elif isinstance(value, (list, tuple)):
            stack.extend((item, (*loc, index)) for index, item in enumerate(value))
    return None


def may_hold_lone_surrogates(text: str | bytes) -> bool:
    """Whether the parsed value of JSON ``text`` may hold text with a lone surrogate (False: it certainly does not).

    Parsing makes one only from an escape (``\\ud800``); the escape's backslash is looked for first, alone: one
    character is found with ``memchr``, ~20x faster on a 10 KB body than the two of ``\\u``, and most bodies have no
    backslash at all."""
    if isinstance(text, str):
        return "\\" in text and "\\u" in text and _SURROGATE_ESCAPE.search(text) is not None
    return b"\\" in text and b"\\u" in text and _SURROGATE_ESCAPE_BYTES.search(text) is not None


Loc = tuple[str | int, ...]  # a place in JSON-shaped data: the keys and indices leading to it


def walk_json(value: Any, stops_at_key: Callable[[Any], bool], prefix: Loc = ()) -> Iterator[tuple[Loc, Any, bool]]:
    """Everything at the ends of JSON-shaped ``value`` (dicts, lists and what they hold), in document order (an
    object's keys first): ``(loc, key, True)`` for each key ``stops_at_key`` picks, given at its object (such a key is
    no part of a path a message could print) and its value not looked into; ``(loc, item, False)`` for every other
    item that is neither a dict nor a list. Walked with a stack, not recursion (any depth), each dict and list looked
    into once: a Python caller's data may hold itself (JSON's never does)."""
    pending: list[tuple[Loc, Any]] = [(prefix, value)]
    seen: set[int] = set()
    while pending:
        loc, item = pending.pop()
        if isinstance(item, (Mapping, list)):
            if id(item) in seen:
                continue
            seen.add(id(item))
        if isinstance(item, Mapping):
            children = []
            for key, child in item.items():
                if stops_at_key(key):
                    yield loc, key, True
                else:
                    children.append(((*loc, key), child))
            pending.extend(reversed(children))
        elif isinstance(item, list):
            pending.extend(reversed([((*loc, index), child) for index, child in enumerate(item)]))
        else:
            yield loc, item, False


def lone_surrogates(value: Any, prefix: Loc = ()) -> list[tuple[Loc, str, bool]]:
    """Every text in ``value`` holding a lone surrogate (which no UTF-8 writer can write): ``(loc, text, is_key)``,
    in document order (an object's keys first). A key that holds one is given at its object, and what it holds is not
    looked into (it has no path a message could print)."""
    return [(loc, text, is_key) for loc, text, is_key in walk_json(value, _is_lone_surrogate_key, prefix)
            if is_key or (isinstance(text, str) and not _is_unicode(text))]


def _is_lone_surrogate_key(key: Any) -> bool:
    return isinstance(key, str) and not _is_unicode(key)


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_facts_json(text: str | bytes) -> PatientFacts:
    """Parse one JSON document and validate it. Malformed JSON, duplicate keys, NaN and Infinity are rejected."""
    return parse_facts(load_json_object(text))


def load_json_object(text: str | bytes, *, max_bytes: int | None = None) -> Any:
    """Strict JSON parsing for patient documents (the value is not yet validated). A leading UTF-8 byte order mark
    is skipped. ``max_bytes``: the size limit (default 1 MB, a patient's facts; a FHIR chart may be larger)."""
    limit = max_bytes or _MAX_INPUT_BYTES
    if isinstance(text, (bytes, bytearray, memoryview)):
        if len(text) > limit:
            raise InvalidInputError([InputProblem("", f"input is larger than {limit} bytes", None)])
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInputError([InputProblem("", f"input is not UTF-8 text ({exc.reason})", None)]) from None
    if len(text) > limit:
        raise InvalidInputError([InputProblem("", f"input is larger than {limit} characters", None)])
    if text.startswith(_BOM):
        text = text[1:]
    try:
        # Duplicate keys ({"age_years": 5, "age_years": 50} must not silently keep one) and the non-JSON constants
        # NaN/Infinity are refused, with the stdlib parser's answer and words (see loads_strict).
        value = loads_strict(text)
    except DuplicateKeyError as exc:
        raise InvalidInputError(
            [InputProblem("", f"duplicate key {exc.key!r} in a JSON object", _preview(exc.key))]
        ) from None
    except NonFiniteNumberError as exc:
        raise InvalidInputError(
            [InputProblem("", f"{exc.name} is not allowed: numbers must be finite JSON numbers", exc.name)]
        ) from None
    except json.JSONDecodeError as exc:
        if _LOOKS_LIKE_YAML.match(text):
            raise InvalidInputError([InputProblem("", "this looks like YAML, not JSON: give the patient facts as "
                                                      "one JSON object, e.g. {\"age_years\": 8}", None)]) from None
        raise InvalidInputError(
            [InputProblem("", f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", None)]
        ) from None
    except ValueError as exc:  # Python refuses to convert integers of more than 4300 digits (a denial-of-service guard)
        reason = str(exc).split(";")[0]
        message = (f"a number in the input has too many digits ({reason})" if "integer string conversion" in reason
                   else f"malformed JSON: {reason}")
        raise InvalidInputError([InputProblem("", message, None)]) from None
    except RecursionError:
        raise InvalidInputError([InputProblem("", "JSON is nested too deeply", None)]) from None
    # Text that is not Unicode, refused wherever it is: a FHIR chart's resource ids and texts go into the output
    # (patient facts' own fields would be refused by their validation too, in the same words).
    if may_hold_lone_surrogates(text):
        found = lone_surrogates(value)
        if found:
            raise InvalidInputError([
                _reportable(InputProblem(_path(loc), f"a key ({_shown(bad)}) is {LONE_SURROGATE}" if is_key
                                         else f"{_shown(bad)} is {LONE_SURROGATE}", bad))
                for loc, bad, is_key in found])
    return value


class DuplicateKeyError(ValueError):
    """A JSON object has the same key twice (``key``): parsers disagree on which value wins, so none is taken."""

    def __init__(self, key: str):
        super().__init__(f"duplicate key {key!r}")
        self.key = key


class NonFiniteNumberError(ValueError):
    """NaN or Infinity (``name``), which are not JSON numbers."""

    def __init__(self, name: str):
        super().__init__(f"{name} is not a JSON number")
        self.name = name


def loads_strict(text: str | bytes) -> Any:
    """``json.loads`` refusing duplicate keys (``DuplicateKeyError``) and NaN/Infinity (``NonFiniteNumberError``);
    malformed JSON raises ``json.JSONDecodeError`` as usual. Shared by patient facts, FHIR charts and service
    requests, which must all mean one thing to every reader.

    The answer is always the stdlib parser's (with a hook per object for the duplicates): orjson, ~4x faster, is
    used only where it is known to give that same answer (``_fast_loads``); any other document (a duplicate key,
    NaN, an error of any kind, UTF-16, a lone surrogate, an integer past 64 bits...) goes to the stdlib parser."""
    if type(text) in (str, bytes, bytearray):
        value = _fast_loads(text)
        if value is not _NOT_FAST:
            return value
    return json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constants)


_NOT_FAST = object()
_DIGITS_AS_ZEROS = bytes.maketrans(b"123456789", b"000000000")
_LONG_INTEGER = b"0" * 19  # 19 digits in a row: where an integer past 64 bits could be (orjson reads it as a float)


def _fast_loads(text: str | bytes | bytearray) -> Any:
    """orjson's value of ``text`` when it is the stdlib parser's, ``_NOT_FAST`` when it may not be.

    It may not be when the text has 19 digits in a row (orjson reads an integer past 64 bits as a float, the stdlib
    as an int) or a duplicate key (orjson keeps the last value). The duplicates are found by counting: outside
    strings a colon only ever separates a key from its value, so the colons of the text are its key-value pairs plus
    the colons inside its strings; those of ``orjson.dumps(value)`` are the pairs of the value plus the colons of the
    same strings (less those of the pairs and values a duplicate dropped). The counts are equal exactly when no pair
    was dropped, provided no colon was written as an escape (\\u003a), which the text's count would miss: such a
    text goes to the stdlib. So does any text orjson refuses (NaN, bad JSON, encodings other than UTF-8, a byte order
    mark, surrogates, nesting past orjson's limits), to be refused or read with the stdlib's own words. A text that
    ``orjson.dumps`` writes back byte for byte (compact UTF-8 JSON, as ``JSON.stringify`` and most clients write it)
    needs none of these checks: a dropped pair would have shortened it, an integer read as a float would have come
    back with a point or an exponent, and orjson never writes \\u003a."""
    if isinstance(text, str):
        try:
            data: bytes | bytearray = text.encode()
        except UnicodeEncodeError:  # a lone surrogate
            return _NOT_FAST
    else:
        data = text
    try:
        value = orjson.loads(data)
        again = orjson.dumps(value)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return _NOT_FAST
    if again == data:
        return value
    # An integer orjson read as a float is past 2**63, and orjson writes every float from 1e16 up as "...e+NN": only
    # then can there be one (the numbers test of tests/test_cards_golden.py holds orjson to this).
    if b"e+" in again and _LONG_INTEGER in data.translate(_DIGITS_AS_ZEROS):
        return _NOT_FAST
    if data.count(b":") != again.count(b":"):
        return _NOT_FAST
    if b"\\" in data and (b"\\u003a" in data or b"\\u003A" in data):  # (most texts have no escape at all)
        return _NOT_FAST
    return value


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKeyError(key)
            seen.add(key)
    return result


def _no_constants(name: str) -> Any:
    raise NonFiniteNumberError(name)


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
        problem = _reportable(_problem(error, loc, data))
        key = (problem.path, problem.message)
        if key not in seen:  # a union type can report one bad value twice
            seen.add(key)
            problems.append(problem)
    return problems


def _problem(error: Mapping[str, Any], loc: tuple[Any, ...], data: Any) -> InputProblem:
    kind = error["type"]
    value = error.get("input")
    if kind == "extra_forbidden":
        parent, key = loc[:-1], loc[-1]
        allowed = keys_at(parent)
        message = f"unknown key {key!r}"
        close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
        # Either way a sentence ends before the list (as for values below): "...?" or "...".
        message += f"; did you mean {close[0]!r}?" if close else "."
        message += " Allowed keys here: " + ", ".join(allowed)
        return InputProblem(_path(loc), message, value)
    if kind == "string_unicode":  # a lone surrogate (\\ud800-\\udfff): JSON allows the escape, Unicode text does not
        # At a leaf field it is the value; anywhere else (an object) pydantic is reporting one of its keys.
        is_key = ".".join(p for p in loc if isinstance(p, str)) not in fact_fields()
        what = f"a key ({_shown(value)}) is" if is_key else f"{_shown(value)} is"
        return InputProblem(_path(loc), f"{what} {LONE_SURROGATE}", value)
    if kind == "invalid_key":
        return InputProblem(_path(loc[:-1]), f"object keys must be strings, got {_shown(loc[-1])}", loc[-1])
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
        return InputProblem(_path(loc), f"{_shown(value)} is not a test method{hint} Allowed: {field.allowed()}",
                            value)
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


def _reportable(problem: InputProblem) -> InputProblem:
    """The problem with a path, message and value that any JSON writer can write: no lone surrogates, no integer
    beyond 64 bits, no deep nesting (a report of bad input must never fail on the bad input)."""
    return InputProblem(_printable(problem.path), _printable(problem.message), _preview(problem.value))


def _printable(text: str) -> str:
    """Text with any lone surrogate (not valid Unicode, so not writable as UTF-8) shown as its escape, e.g. \\ud800."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _shown(value: Any) -> str:
    """A value as Python shows it, for messages, made safe like ``_preview`` (repr already escapes lone
    surrogates)."""
    if isinstance(value, str):
        return repr(value[:200] + "…" if len(value) > 200 else value)
    return repr(_preview(value))


def _path(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + (part if isinstance(part, str) else _shown(part))
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
    """Echo small offending values in full; summarise big or unwritable ones so an error report stays readable and
    can always be written as JSON."""
    if value is None or isinstance(value, (bool, float)):
        return value
    if isinstance(value, int):
        # Beyond 64 bits orjson cannot write it, and beyond 4300 digits Python refuses to convert it to text.
        return value if value in _INT64 else f"<an integer of {value.bit_length()} bits>"
    if isinstance(value, str):
        return _printable(value[:200] + "…" if len(value) > 200 else value)
    if isinstance(value, Mapping):
        return f"<object with {len(value)} key(s)>"
    if isinstance(value, (list, tuple)):
        if len(value) > 10 or any(isinstance(item, (list, tuple, Mapping)) for item in value):
            return f"<array of {len(value)} items>"
        return [_preview(item) for item in value]
    return f"<{type(value).__name__}>"


# --- mappings other than dict -------------------------------------------------------------------------------------


def _validate_as_dicts(data: dict[str, Any], exc: ValidationError) -> PatientFacts:
    """Strict validation takes only a dict for an object: a nested mapping of another type (as the top level may be)
    is read as one, not refused as "expected an object". Tried only once validation has failed, so that valid dicts
    pay nothing; ``exc`` is that failure, reported when there is nothing to convert."""
    plain = _as_dicts(data)
    if plain is data:
        raise InvalidInputError(_problems(exc, data)) from None
    return _validate(plain)


def _as_dicts(value: Any) -> Any:
    """``value`` with every mapping that is not a dict copied into one, or ``value`` itself when it holds none.
    Only called on input at most ``_MAX_DEPTH`` deep."""
    if isinstance(value, Mapping):
        items = {key: _as_dicts(item) for key, item in value.items()}
        unchanged = isinstance(value, dict) and all(items[key] is item for key, item in value.items())
        return value if unchanged else items
    if isinstance(value, list):
        elements = [_as_dicts(item) for item in value]
        return value if all(new is old for new, old in zip(elements, value)) else elements
    return value
