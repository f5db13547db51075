"""Arbitrary JSON thrown at evaluate only ever yields an assessment or the input-error type."""

from __future__ import annotations

import copy
import json
import sys

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import patients

from imt_cds import Assessment, InvalidInputError, parse_facts_json
from imt_cds.core.validation import parse_facts

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=20), children, max_size=5),
    max_leaves=30,
)
field_values = st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.floats() | st.text(max_size=12) | \
    st.sampled_from(["positive", "negative", "unknown", "R0", "IHC", "resectable", "RANBP2", "", " ", "NaN"]) | \
    st.lists(st.sampled_from(["IHC", "FISH", "PCR", 1, None]), max_size=4) | st.dictionaries(st.text(max_size=5),
                                                                                          st.none(), max_size=2)


def _evaluate_or_reject(engine, value):
    try:
        result = engine.evaluate(value)
    except InvalidInputError as exc:
        assert exc.problems and all(p.message for p in exc.problems)
        return None
    assert isinstance(result, Assessment)
    assert "REC_MULTIDISCIPLINARY_REVIEW" in result.codes
    return result


@given(json_values)
def test_any_json_value_gives_an_assessment_or_an_input_error(engine, value):
    _evaluate_or_reject(engine, value)


@given(patients(), st.data())
def test_a_valid_patient_with_one_field_corrupted_is_evaluated_or_rejected(engine, patient, data):
    corrupted = copy.deepcopy(patient)
    node = corrupted
    while True:
        key = data.draw(st.sampled_from(sorted(node)))
        if isinstance(node[key], dict) and data.draw(st.booleans()):
            node = node[key]
            continue
        if data.draw(st.booleans()):
            node[key] = data.draw(field_values)
        else:
            node[data.draw(st.text(min_size=1, max_size=10))] = data.draw(field_values)
        break
    _evaluate_or_reject(engine, corrupted)


@given(st.text(max_size=200) | st.binary(max_size=200))
def test_any_text_gives_facts_or_an_input_error(text):
    try:
        parse_facts_json(text)
    except InvalidInputError as exc:
        assert exc.problems


# --- hostile values: huge numbers, lone surrogates, deep nesting, bytes that are not UTF-8 -------------------------


def _nested(value, depth, as_object):
    for _ in range(depth):
        value = {"x": value} if as_object else [value]
    return value


huge_integers = st.builds(lambda digits, sign: sign * (10**digits + 7), st.integers(18, 6000), st.sampled_from([1, -1]))
hostile_text = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF) | st.characters(), max_size=12)
hostile_leaves = (st.none() | st.booleans() | st.integers() | huge_integers | st.floats() | hostile_text
                  | st.sampled_from(["positive", "thoracic", "R0", "IHC", "ALK"]))
hostile_keys = hostile_text | st.sampled_from(["age_years", "tumor", "site", "molecular", "alk", "status", "patient_id",
                                              "history", "methods"])


def _hostile_values(deep):
    def extend(children):
        containers = st.lists(children, max_size=4) | st.dictionaries(hostile_keys, children, max_size=4)
        return containers | st.builds(_nested, children, st.integers(100, 3000), st.booleans()) if deep else containers

    return st.recursive(hostile_leaves, extend, max_leaves=12)


def _hostile_documents(deep):
    values = _hostile_values(deep)
    return st.fixed_dictionaries({}, optional={
        "patient_id": values, "age_years": values,
        "tumor": st.fixed_dictionaries({}, optional={"site": values, "size_cm": values}) | values,
        "molecular": st.fixed_dictionaries({}, optional={"alk": st.fixed_dictionaries(
            {}, optional={"status": values, "methods": values, "fusion_partner": values})}),
    }) | st.dictionaries(hostile_text, values, max_size=3) | values


hostile_documents = _hostile_documents(deep=True)
shallow_documents = _hostile_documents(deep=False)  # what json.dumps can write (deep text is made directly below)


def _only_an_assessment_or_a_writable_input_error(call):
    """The library's whole promise for bad input: ``InvalidInputError`` and nothing else, with a report that every
    caller can print and write as JSON (the CLI, batch, the service)."""
    try:
        result = call()
    except InvalidInputError as exc:
        assert exc.problems and all(p.message for p in exc.problems)
        orjson.dumps(exc.to_dict())
        str(exc).encode("utf-8")
        return None
    if isinstance(result, Assessment):
        orjson.loads(result.to_json())
    return result


@given(hostile_documents)
def test_hostile_values_give_an_assessment_or_an_input_error_and_nothing_else(engine, value):
    """Arbitrary JSON-like values (integers of up to 6,000 digits, NaN and infinities, lone surrogates in keys and
    strings, nesting up to 3,000 levels) through ``parse_facts`` and ``evaluate``. Any exception other than
    ``InvalidInputError``, an error report that cannot be written as JSON, or an exception printed rather than
    raised (pytest fails a test on "unraisable" exceptions, which is how deep nesting was caught here), fails it. In CI
    (``HYPOTHESIS_PROFILE=ci``, what ``make test`` runs) this tries 500 values; 60 in the default ``dev`` profile."""
    _only_an_assessment_or_a_writable_input_error(lambda: parse_facts(value))
    _only_an_assessment_or_a_writable_input_error(lambda: engine.evaluate(value))


def _json_text(value):
    # json.dumps writes lone surrogates as \ud800 escapes (as JSON allows) and NaN as NaN; the digit limit is lifted
    # only while this test writes its input, so that integers of 6,000 digits reach the parser under test.
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        return json.dumps(value, allow_nan=True)
    finally:
        sys.set_int_max_str_digits(limit)


hostile_bytes = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda v: _json_text(v).encode(), shallow_documents),
    st.builds(lambda v: b"\xef\xbb\xbf" + _json_text(v).encode(), shallow_documents),
    st.builds(lambda v, cut, junk: _json_text(v).encode()[:cut] + junk + _json_text(v).encode()[cut:],
              shallow_documents, st.integers(0, 40), st.binary(min_size=1, max_size=4)),
    st.builds(lambda depth, leaf: b'{"tumor": ' + b"[" * depth + leaf + b"]" * depth + b"}", st.integers(500, 5000),
              st.sampled_from([b"", b"1", b'"\\ud800"', b"1" * 5000])),
    st.builds(lambda depth, opener: opener * depth, st.integers(500, 20_000), st.sampled_from([b"[", b'{"a":'])),
    st.builds(lambda digits: b'{"age_years": ' + b"1" * digits + b"}", st.integers(4000, 20_000)),
    st.builds(lambda t: t.encode("utf-8", "surrogatepass"), hostile_text),
    st.sampled_from([b"age_years: 8\n", b"---\ntumor: {site: thoracic}\n", b"\xef\xbb\xbf", b"", b"\xef\xbb\xbf{}"]),
)


@given(hostile_bytes)
def test_hostile_bytes_give_facts_or_an_input_error_and_nothing_else(data):
    """Byte fuzzing of ``parse_facts_json`` (the entry point for files, NDJSON lines and request bodies): random
    bytes, JSON of hostile values with and without a byte order mark, JSON with bytes spliced in, deep nesting,
    integers of 4,000 to 20,000 digits, lone surrogates encoded as raw bytes, YAML. In CI (``HYPOTHESIS_PROFILE=ci``)
    this tries 500 inputs; 0 exceptions other than ``InvalidInputError`` are allowed, and every report must be
    writable as JSON."""
    _only_an_assessment_or_a_writable_input_error(lambda: parse_facts_json(data))


def test_a_byte_order_mark_is_accepted_and_yaml_is_named():
    assert parse_facts_json(b'\xef\xbb\xbf{"age_years": 3}').age_years == 3
    assert parse_facts_json('\ufeff{"age_years": 3}').age_years == 3
    for yaml in (b"age_years: 8\ntumor:\n  site: thoracic\n", b"---\nage_years: 8\n"):
        with pytest.raises(InvalidInputError, match="looks like YAML, not JSON"):
            parse_facts_json(yaml)
    with pytest.raises(InvalidInputError, match="malformed JSON"):
        parse_facts_json(b"{age_years: 8}")


@pytest.mark.parametrize(("value", "path", "shown"), [
    ({"patient_id": 2**64 + 1}, "patient_id", "<an integer of 65 bits>"),
    # orjson writes integers from -2**63 to 2**64 - 1: those are echoed as given, one beyond either end is not
    ({"patient_id": -(2**63)}, "patient_id", -(2**63)),
    ({"patient_id": -(2**63) - 1}, "patient_id", "<an integer of 64 bits>"),
    ({"patient_id": 2**64 - 1}, "patient_id", 2**64 - 1),
    ({"patient_id": 2**64}, "patient_id", "<an integer of 65 bits>"),
    ({"patient_id": -1}, "patient_id", -1),
    ({"tumor": {"size_cm": 10**5000}}, "tumor.size_cm", "<an integer of 16610 bits>"),
    ({"patient_id": "a\ud800"}, "patient_id", "a\\ud800"),
    ({"tumor": {"x\udc00": 1}}, "tumor", "x\\udc00"),
    ({"tumor": [[[1]]]}, "tumor", "<array of 1 items>"),
    ({"history": {"x": {"x": 1}}}, "history.x", "<object with 1 key(s)>"),
])
def test_an_input_error_shows_an_unwritable_value_in_a_form_json_can_hold(value, path, shown):
    with pytest.raises(InvalidInputError) as caught:
        parse_facts(value)
    problem = caught.value.problems[0]
    assert (problem.path, problem.value) == (path, shown)
    if "udc00" in str(shown):
        assert problem.message.startswith("a key ('x\\udc00') is not valid Unicode text")
    orjson.dumps(caught.value.to_dict())


@pytest.mark.parametrize(("value", "path"), [
    ({"tumor": _nested(1, 900, False)}, "tumor" + "[0]" * 31 + " …"),
    ({"history": _nested(1, 900, True)}, "history" + ".x" * 31 + " …"),
])
def test_nesting_deeper_than_any_patient_is_named_with_where_it_starts(value, path):
    with pytest.raises(InvalidInputError, match="nested too deeply: more than 32 levels") as caught:
        parse_facts(value)
    assert [p.path for p in caught.value.problems] == [path]


def test_a_valid_patient_is_never_refused_for_its_depth():
    facts = parse_facts({"molecular": {"alk": {"status": "positive", "methods": ["IHC", "FISH"]}}})
    assert facts.molecular.alk.methods == frozenset({"IHC", "FISH"})


def test_deep_nesting_beyond_the_interpreter_stack_is_an_input_error():
    with pytest.raises(InvalidInputError, match="nested too deeply"):
        parse_facts_json(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(InvalidInputError):
        parse_facts(_nested(1, 100_000, True))


@pytest.mark.parametrize(("value", "kind"), [
    ([1, 2], "an array"), ("x", "a string"), (None, "null"), (3, "a number"), (True, "a boolean"),
])
def test_a_document_that_is_not_an_object_is_one_problem_naming_what_it_is(value, kind):
    with pytest.raises(InvalidInputError) as caught:
        parse_facts(value)
    (problem,) = caught.value.problems
    assert (problem.path, problem.message, problem.value) == (
        "", f"expected an object with patient facts, got {kind}", value)


def test_any_mapping_is_read_as_patient_facts_not_only_a_dict():
    from types import MappingProxyType

    facts = parse_facts(MappingProxyType({"age_years": 8, "tumor": {"site": "thoracic"}}))
    assert (facts.age_years, facts.tumor.site) == (8, "thoracic")
    with pytest.raises(InvalidInputError) as caught:
        parse_facts(MappingProxyType({"age_years": -1}))
    assert [p.path for p in caught.value.problems] == ["age_years"]


@pytest.mark.parametrize(("document", "message", "value"), [
    (b"x" * 1_000_001, "input is larger than 1000000 bytes", None),
    ("x" * 1_000_001, "input is larger than 1000000 characters", None),
    (b"\xff{}", "input is not UTF-8 text (invalid start byte)", None),
    (b'{"age_years": 3, "age_years": 4}', "duplicate key 'age_years' in a JSON object", "age_years"),
    (b'{"age_years": NaN}', "NaN is not allowed: numbers must be finite JSON numbers", "NaN"),
    (b'{"age_years": -Infinity}', "-Infinity is not allowed: numbers must be finite JSON numbers", "-Infinity"),
    (b"age_years: 8",
     'this looks like YAML, not JSON: give the patient facts as one JSON object, e.g. {"age_years": 8}', None),
    (b'{"age_years": }', "malformed JSON: Expecting value at line 1 column 15", None),
    (b'{"age_years": 1' + b"0" * 5000 + b"}",
     "a number in the input has too many digits (Exceeds the limit (4300 digits) for integer string conversion: "
     "value has 5001 digits)", None),
])
def test_a_document_that_cannot_be_read_is_one_problem_about_the_whole_document(document, message, value):
    with pytest.raises(InvalidInputError) as caught:
        parse_facts_json(document)
    assert [(p.path, p.message, p.value) for p in caught.value.problems] == [("", message, value)]


def test_nesting_is_refused_from_the_33rd_level_and_not_before():
    def nested(depth):  # "history" is level 1; depth more levels of {"x": ...} below it
        return {"history": _nested(1, depth, True)}

    with pytest.raises(InvalidInputError) as caught:
        parse_facts(nested(31))  # 32 levels: the actual problem is reported
    assert [(p.path, p.message.split(" Allowed")[0]) for p in caught.value.problems] == [
        ("history.x", "unknown key 'x'.")]
    with pytest.raises(InvalidInputError) as caught:
        parse_facts(nested(32))
    assert [(p.path, p.message) for p in caught.value.problems] == [
        ("history" + ".x" * 31 + " …", "input is nested too deeply: more than 32 levels (a patient has at most 4)")]


def test_the_strict_json_reader_refuses_repeated_keys_at_any_depth_and_non_finite_numbers():
    from imt_cds.core.validation import DuplicateKeyError, NonFiniteNumberError, loads_strict

    assert loads_strict('{"a": {"b": 1, "c": [1, {"b": 2}]}, "b": 3}') == {"a": {"b": 1, "c": [1, {"b": 2}]}, "b": 3}
    for text, key in (('{"a": 1, "b": 2, "a": 1}', "a"), ('{"x": [{"k": 1, "k": 1}]}', "k")):
        with pytest.raises(DuplicateKeyError) as caught:
            loads_strict(text)
        assert (caught.value.key, str(caught.value)) == (key, f"duplicate key {key!r}")
    for name in ("NaN", "Infinity", "-Infinity"):
        with pytest.raises(NonFiniteNumberError) as caught:
            loads_strict(f'{{"age_years": {name}}}')
        assert (caught.value.name, str(caught.value)) == (name, f"{name} is not a JSON number")
    with pytest.raises(json.JSONDecodeError):
        loads_strict('{"a": }')
