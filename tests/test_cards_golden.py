"""The cards and the request checks give, byte for byte, what they gave before they were made fast.

The golden file (tests/fixtures/cards-golden/golden.json.gz, made by ``python tests/cards_golden.py --write`` from
the code before the fast paths) holds each input with its output: patient-view cards for ~90 varied charts and
documents, the helpers order-sign shares, and the parsed value or exact refusal of ~140 request bodies. Here every
output is made again by the code of today and compared as JSON text (so key order counts too). ``loads_strict`` is
also compared with the stdlib parser it replaced (``json.loads`` with a hook per object), on the same bodies and on
generated JSON with duplicate keys, escapes and colons in strings.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cards_golden  # noqa: E402

from imt_cds.core.validation import DuplicateKeyError, NonFiniteNumberError, loads_strict  # noqa: E402

GOLDEN = cards_golden.load()


def text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


@pytest.mark.parametrize("case", GOLDEN["card_cases"], ids=lambda case: case["input"]["name"])
def test_cards_are_the_frozen_ones(case):
    rendered = cards_golden.render_cards(case["input"])
    for key, expected in case["output"].items():
        assert text(rendered[key]) == text(expected), key


def test_cards_for_the_same_document_twice_are_the_same():
    """A second rendering (whatever was prepared by the first) is the first one, also after another document."""
    first, second = GOLDEN["card_cases"][0], GOLDEN["card_cases"][-3]
    for case in (first, second, first, second):
        assert text(cards_golden.render_cards(case["input"])) == text(case["output"])


def test_the_shared_helpers_are_the_frozen_ones():
    rendered = cards_golden.render_helpers()
    for key, expected in GOLDEN["helpers"].items():
        assert text(rendered[key]) == text(expected), key


@pytest.mark.parametrize("request_case", GOLDEN["requests"], ids=lambda case: case["name"])
def test_request_parse_and_check_are_the_frozen_ones(request_case):
    body = base64.b64decode(request_case["body"])
    outcome = cards_golden.request_outcome(request_case["service"], body)
    assert text(outcome) == text(request_case["outcome"])


# --- loads_strict against the parser it replaced -------------------------------------------------------------------


def reference_loads(data: str | bytes) -> Any:
    """The strict parser as it was: the stdlib's, a hook per object for duplicate keys, one for NaN/Infinity."""

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result = dict(pairs)
        if len(result) != len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    raise DuplicateKeyError(key)
                seen.add(key)
        return result

    def constant(name: str) -> Any:
        raise NonFiniteNumberError(name)

    return json.loads(data, object_pairs_hook=pairs_hook, parse_constant=constant)


def outcome_of(function: Any, data: str | bytes) -> str:
    try:
        return "value " + text(cards_golden.typed(function(data)))
    except (DuplicateKeyError, NonFiniteNumberError) as exc:
        return f"{type(exc).__name__} {exc}"
    except json.JSONDecodeError as exc:
        return f"JSONDecodeError {exc.msg} {exc.lineno} {exc.colno} {exc.pos}"
    except (ValueError, RecursionError, TypeError) as exc:
        return f"{type(exc).__name__} {exc}"


@pytest.mark.parametrize("request_case", GOLDEN["requests"], ids=lambda case: case["name"])
def test_loads_strict_is_the_stdlib_strict_parser(request_case):
    body = base64.b64decode(request_case["body"])
    assert outcome_of(loads_strict, body) == outcome_of(reference_loads, body)
    try:
        as_text = body.decode("utf-8")
    except UnicodeDecodeError:
        return
    assert outcome_of(loads_strict, as_text) == outcome_of(reference_loads, as_text)


_keys = st.sampled_from(["a", "b", "a:b", "k", "\\u006b", "a\\u003ab", "a\\u003Ab", "\\\"", "\\\\", ":", "", "é",
                         "\\ud83d\\ude00", "x\\\\\\\":"])
_strings = st.sampled_from(['"x"', '":"', '"a:\\":"', '"\\\\"', '"\\u003a"', '"\\\\u003a"', '"\\ud800"', '"é:"',
                            '"\\/"', '""'])
_scalars = st.one_of(_strings, st.sampled_from(["1", "-0", "1.5e3", "1e400", "0.1", "true", "false", "null",
                                                "NaN", "-Infinity", "123456789012345678901234567890"]))


def _json_text(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    objects = st.lists(st.tuples(_keys, children), max_size=5).map(
        lambda pairs: "{" + ", ".join(f'"{k}":{v}' for k, v in pairs) + "}")
    arrays = st.lists(children, max_size=4).map(lambda items: "[" + ",".join(items) + "]")
    return st.one_of(objects, arrays)


@settings(max_examples=400, deadline=None)
@given(st.recursive(_scalars, _json_text, max_leaves=25), st.sampled_from(["", " ", "\n", "\ufeff"]))
def test_loads_strict_agrees_with_the_stdlib_on_generated_json(document, padding):
    data = padding + document
    assert outcome_of(loads_strict, data) == outcome_of(reference_loads, data)
    encoded = data.encode("utf-8")
    assert outcome_of(loads_strict, encoded) == outcome_of(reference_loads, encoded)
