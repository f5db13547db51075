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
import copy
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


def _fresh_rendering(case_input: dict[str, Any]) -> str:
    """The case rendered by a process that has rendered nothing before (in a child process)."""
    import subprocess

    program = ("import json, sys; sys.path.insert(0, 'tests'); import cards_golden; "
               "print(json.dumps(cards_golden.render_cards(json.load(sys.stdin)), ensure_ascii=False))")
    done = subprocess.run([sys.executable, "-c", program], input=json.dumps(case_input), capture_output=True,
                          text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    return done.stdout.strip()


@pytest.mark.parametrize("change", ["quote", "citation", "claim", "level", "level True after 1", "strength", "title",
                                    "one entry fewer"])
def test_a_finding_whose_text_changed_is_not_rendered_from_the_first(change):
    """What was prepared for a finding is not reused for the same rule and code with other text."""
    first = next(c["input"] for c in GOLDEN["card_cases"] if c["input"]["name"] == "bench chart 0")
    changed = json.loads(json.dumps(first))
    finding = next(f for f in changed["document"]["recommendations"] if len(f["evidence"]) > 1)
    entry = finding["evidence"][0]
    if change == "strength" or change == "title":
        finding[change] += "!"
    elif change == "level True after 1":  # equal (==) values that read differently
        entry["level"], first_level = True, 1
        first = json.loads(json.dumps(first))
        next(f for f in first["document"]["recommendations"] if f["code"] == finding["code"])["evidence"][0][
            "level"] = first_level
    elif change == "one entry fewer":
        finding["evidence"].pop()
    elif change == "claim":  # shown for an entry without a quote
        first = json.loads(json.dumps(first))
        next(f for f in first["document"]["recommendations"] if f["code"] == finding["code"])["evidence"][0][
            "quote"] = None
        entry["quote"], entry["claim"] = None, "another claim"
    else:
        entry[change] = f"another {change} (PMID 12345678)"
    before = text(cards_golden.render_cards(first))
    after = text(cards_golden.render_cards(changed))
    assert after != before
    assert after == _fresh_rendering(changed)


def test_a_fact_derived_twice_unfolds_at_each_depth():
    """One derived fact reached at two depths under the same parent (one derivation with a reason, one without)."""
    from imt_cds.render.cards import assessment_cards

    document = {
        "provenance": {"rulebook": {"name": "rb", "version": "1", "sha256": "0" * 64}}, "suppressed": [],
        "derived_facts": [
            {"name": "A", "rule": {"id": "D1", "version": "1"}, "because": [{"fact": "x", "expected": "= 1",
                                                                              "actual": 1}]},
            {"name": "B", "rule": {"id": "D2", "version": "1"}, "reason": {"id": "r1", "text": "first"},
             "because": [{"derived": "A", "holds": True}]},
            {"name": "B", "rule": {"id": "D3", "version": "1"}, "because": [{"derived": "A", "holds": True}]}],
        "recommendations": [{"code": "F", "title": "T", "summary": "S", "indicator": "info", "strength": "NARR",
                             "rule": {"id": "R1", "version": "1"}, "evidence": [],
                             "because": [{"derived": "B", "holds": True}]}],
        "risk_flags": []}
    detail = assessment_cards(document, evaluation_id="e", sources={}, public_url="u")[0]["detail"]
    assert detail.split("\n")[2:9] == [
        "**Why:**",
        "- B holds (rule D2), because:",
        "  - first:",
        "    - A holds (rule D1), because:",
        "      - `x` is **1** (rule needs = 1) — no FHIR resource recorded it",
        "  - A holds (rule D1), because:",
        "    - `x` is **1** (rule needs = 1) — no FHIR resource recorded it",
    ]


def test_cards_of_an_unknown_indicator_are_refused_as_before():
    from imt_cds.render.cards import sort_cards

    with pytest.raises(ValueError, match="'urgent' is not a valid Indicator"):
        sort_cards([{"indicator": "info"}, {"indicator": "urgent"}])


def reference_escape(value: Any) -> str:
    """escape_markdown as it was: three regular expressions."""
    import re

    flat = re.sub(r"[\x00-\x1f\x7f\u2028\u2029]+", " ", str(value))
    defanged = re.sub(r"(?i)(://|\bwww\.)", lambda m: "[:]//" if m.group(1) == "://" else m.group(1)[:-1] + "[.]",
                      flat)
    return re.sub(r"([\\`*_{}\[\]()<>#+!|~&])", r"\\\1", defanged)


@settings(max_examples=1500, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("wW.:/ aé\\`*_{}[]()<>#+!|~&\n\r\t\x00\x7f\u2028\u2029\u00a0hxtp")),
               max_size=24))
def test_escape_markdown_is_the_regular_expressions_it_replaced(value):
    from imt_cds.render.cards import escape_markdown

    assert escape_markdown(value) == reference_escape(value)


@pytest.mark.parametrize("value", ["WWW.EXAMPLE.COM", "W.", "HTTPS://X", "a\u2028b", "x\x7f", 12, None, 1.5, ["W."]])
def test_escape_markdown_on_values_that_need_one_step_only(value):
    from imt_cds.render.cards import escape_markdown

    assert escape_markdown(value) == reference_escape(value)


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


TRICKY = [
    '{"k": 1, "k": "\\u003a"}', '{"k": 1, "k": "\\u003A"}', '{"k": {"a": 1}, "k": "\\u003a"}',
    '{"k": 1, "k": "\\\\u003a"}', '{"a": [{"b": 1, "b": "\\u003a"}]}', '{"k": 1, "\\u006b": "x"}',
    '{"k": "a:b", "k": "a\\u003ab"}', '{"a": 99999999999999999999}', '{"a": -9223372036854775809}',
    '{"a": 18446744073709551615, "b": "e+"}', '{"a": 18446744073709551616, "b": 1e+16}', '{"a": 1e16}',
    '{"a": "99999999999999999999"}', '[18446744073709551616]', '{"a": 1.0e+400}', '{"a":' * 255 + "1" + "}" * 255,
]


def test_loads_strict_refuses_what_the_stdlib_cannot_read_as_before():
    for data in (memoryview(b'{"a": 1}'), 5, None):
        assert outcome_of(loads_strict, data) == outcome_of(reference_loads, data)


@pytest.mark.parametrize("data", TRICKY)
def test_loads_strict_on_texts_made_to_fool_the_counts(data):
    compact = data.replace(", ", ",").replace('": ', '":')  # as orjson writes (no string here holds either)
    for each in (data, compact):
        assert outcome_of(loads_strict, each) == outcome_of(reference_loads, each)
        assert outcome_of(loads_strict, each.encode()) == outcome_of(reference_loads, each.encode())


_keys = st.sampled_from(["a", "b", "a:b", "k", "\\u006b", "a\\u003ab", "a\\u003Ab", "\\\"", "\\\\", ":", "", "é",
                         "\\ud83d\\ude00", "x\\\\\\\":"])
_strings = st.sampled_from(['"x"', '":"', '"a:\\":"', '"\\\\"', '"\\u003a"', '"\\\\u003a"', '"\\ud800"', '"é:"',
                            '"\\/"', '""'])
_scalars = st.one_of(_strings, st.sampled_from(["1", "-0", "1.5e3", "1e400", "0.1", "true", "false", "null",
                                                "NaN", "-Infinity", "123456789012345678901234567890"]))


def _json_text(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    # Compact objects too: a text orjson writes back byte for byte is read without the counts.
    objects = st.tuples(st.lists(st.tuples(_keys, children), max_size=5), st.sampled_from([", ", ","])).map(
        lambda drawn: "{" + drawn[1].join(f'"{k}":{v}' for k, v in drawn[0]) + "}")
    arrays = st.lists(children, max_size=4).map(lambda items: "[" + ",".join(items) + "]")
    return st.one_of(objects, arrays)


@settings(max_examples=400, deadline=None)
@given(st.recursive(_scalars, _json_text, max_leaves=25), st.sampled_from(["", " ", "\n", "\ufeff"]))
def test_loads_strict_agrees_with_the_stdlib_on_generated_json(document, padding):
    data = padding + document
    assert outcome_of(loads_strict, data) == outcome_of(reference_loads, data)
    encoded = data.encode("utf-8")
    assert outcome_of(loads_strict, encoded) == outcome_of(reference_loads, encoded)


_numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: f"{f:.25e}"),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6).map(lambda f: f"{f:.30f}"),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from([str(2**63 - 1), str(2**63), str(-(2**63)), str(-(2**63) - 1), str(2**64 - 1), str(2**64),
                     "1" * 18, "1" * 19, "1" * 20, "0.1", "5e-324", "2.4703282292062328e-324", "1.7976931348623157e308",
                     "1.7976931348623159e308", "9007199254740993", "9007199254740993.0", "0.30000000000000004",
                     "1e22", "1e23", "-0", "-0.0", "0E0", "1E-0", "123456789012345678.5"]),
)


@settings(max_examples=600, deadline=None)
@given(st.lists(_numbers, min_size=1, max_size=6))
def test_loads_strict_reads_numbers_as_the_stdlib_does(numbers):
    """Same type and value for every number (orjson reads integers past 64 bits as floats: those go to the stdlib)."""
    for data in ('{"n": [' + ", ".join(numbers) + "]}", '{"n":[' + ",".join(numbers) + "]}"):
        assert outcome_of(loads_strict, data) == outcome_of(reference_loads, data)


# --- the shape check of a request against the models it stands in for ---------------------------------------------

_values = st.sampled_from([None, "", "a", "patient-view", "é", "\ud800", "x\x00", 0, 1, True, 1.5, 10**30, [], ["a"],
                           {}, {"k": 1}, {"é": 1}, {1: "a"}])
_good = {"hook": "patient-view", "hookInstance": "h1", "context": {"patientId": "p", "userId": "u", "encounterId": "e"},
         "fhirServer": "https://f.test", "fhirAuthorization": {"access_token": "t", "token_type": "Bearer",
                                                               "expires_in": 5, "scope": "s", "subject": "c",
                                                               "patient": "p"},
         "prefetch": {"patient": {}}, "extension": {"urn:x": True}}


_FIELDS = {"request": list(_good), "context": list(_good["context"]),
           "fhirAuthorization": list(_good["fhirAuthorization"])}


@st.composite
def _request(draw: st.DrawFn) -> dict[str, Any]:
    """A valid request with a few of its fields (or its context's, or its authorization's) changed or dropped."""
    body = json.loads(json.dumps(_good))
    for _ in range(draw(st.integers(0, 3))):
        which = draw(st.sampled_from(["request", "request", "context", "fhirAuthorization"]))
        key = draw(st.sampled_from([*_FIELDS[which], "other", "é", "draftOrders"]))
        target = body if which == "request" else body.get(which)
        if not isinstance(target, dict):
            continue
        if draw(st.booleans()):
            target.pop(key, None)
        else:
            target[key] = copy.deepcopy(draw(_values))  # (the samples are shared: never edit one)
    return body


@settings(max_examples=1500, deadline=None)
@given(_request())
def test_the_request_check_is_the_models_verdict(body):
    """``request_problems`` says what the pydantic models alone say (its quick acceptance never accepts more)."""
    from imt_cds.service import models

    expected: list[dict[str, str]]
    hook = body.get("hook")
    if isinstance(hook, str) and hook and hook != "patient-view":
        message = f"service imt-patient-view answers the patient-view hook, not {hook!r}"
        expected = [{"path": "hook", "message": message}]
    else:
        expected = models._problems(models.HookRequest, body)
        if isinstance(body.get("context"), dict):
            expected += models._problems(models.PatientViewContext, body["context"], prefix=("context",),
                                         required_by="patient-view")
        if expected:  # a key that is not text (a Python caller's dict) is said alone, in words of its own
            expected = models._keys_not_text(body) or expected
    assert models.request_problems(body, "patient-view", "imt-patient-view") == expected
