"""What the mutation run of imt_cds/core/validation.py found unread: the strict JSON reader's answers where its fast
path (orjson) must hand over to the stdlib parser (an integer past 64 bits, a repeated key that the colon count or an
escaped colon could hide, a type json.loads refuses), which key a repeat names, and a document nested past the
interpreter's stack, each read whole: path, message and value. Also a nested mapping that is not a dict, read as one
as the top level is."""

from __future__ import annotations

import datetime
from collections import UserDict
from types import MappingProxyType

import pytest
from helpers import ended_within

from imt_cds import InvalidInputError
from imt_cds.core.validation import (
    DuplicateKeyError,
    canonical_json,
    load_json_object,
    loads_strict,
    parse_facts,
    walk_json,
)


def _both(text: str) -> tuple[str, bytes]:
    return text, text.encode()


@pytest.mark.parametrize(("text", "number"), [
    ('{"a": 99999999999999999999}', 99999999999999999999),  # 20 digits, past 2**64
    ('{"a": -9223372036854775809}', -9223372036854775809),  # 19 digits, one below -2**63
    ('{"a": 18446744073709551616, "b": 1e+16}', 18446744073709551616),  # 2**64, beside a float written "1e+16"
])
def test_an_integer_past_64_bits_is_read_as_that_integer_not_as_a_float(text, number):
    # orjson reads such an integer as the nearest float: a patient's number would silently change.
    for document in _both(text):
        value = loads_strict(document)["a"]
        assert (type(value), value) == (int, number)


def test_a_large_float_is_read_as_the_same_float():
    for document in _both('{"a": 1e16, "b": [1.5e300, -2.5e+17]}'):
        assert loads_strict(document) == {"a": 1e16, "b": [1.5e300, -2.5e17]}


@pytest.mark.parametrize("text", [
    '{"k": 1, "k": "\\u003a"}',  # the escaped colon stands in for the dropped pair's colon in the counts
    '{"k": 1, "k": "\\u003A"}',
    '{"k": "XX:XX", "k": "XX:XX"}',  # colons inside the values, in any pattern
    '{"k": "a:b", "k": "a:b"}',
    '{"k": {"a": 1}, "k": "\\u003a"}',
])
def test_a_repeated_key_is_refused_whatever_its_values_hold(text):
    for document in _both(text):
        with pytest.raises(DuplicateKeyError) as caught:
            loads_strict(document)
        assert caught.value.key == "k"


def test_a_repeated_key_is_named_even_when_it_is_not_the_first_key_of_its_object():
    with pytest.raises(DuplicateKeyError) as caught:
        loads_strict('{"a": 1, "b": 1, "b": 2}')
    assert caught.value.key == "b"
    with pytest.raises(InvalidInputError) as caught:
        load_json_object(b'{"age_years": 5, "tumor": {}, "tumor": {"site": "thoracic"}}')
    assert [(p.path, p.message, p.value) for p in caught.value.problems] == [
        ("", "duplicate key 'tumor' in a JSON object", "tumor")]


def test_a_value_json_loads_refuses_for_its_type_is_refused_the_same_way():
    # orjson would read a memoryview; the answer must stay the stdlib's.
    for value in (memoryview(b'{"a": 1}'), 5, None):
        with pytest.raises(TypeError, match=r"^the JSON object must be str, bytes or bytearray, not "):
            loads_strict(value)


@pytest.mark.parametrize("document", [b"[" * 100_000 + b"]" * 100_000, '{"a": ' * 100_000 + "1" + "}" * 100_000])
def test_json_nested_past_the_interpreters_stack_is_one_problem_about_the_whole_document(document):
    with pytest.raises(InvalidInputError) as caught:
        load_json_object(document)
    assert [(p.path, p.message, p.value) for p in caught.value.problems] == [("", "JSON is nested too deeply", None)]


def test_the_canonical_writer_refuses_a_boolean_put_into_an_enum_field_after_validation():
    # model_copy does not validate: facts changed after validation must not be hashed as if they were valid.
    facts = parse_facts({})
    changed = facts.model_copy(update={"tumor": facts.tumor.model_copy(update={"site": True})})
    with pytest.raises(KeyError):
        canonical_json(changed)


def test_a_mapping_of_any_type_is_read_as_an_object_at_any_depth_not_only_at_the_top():
    # The top level may be any mapping; before, a nested one was refused as "expected an object, got an object".
    facts = parse_facts(MappingProxyType({
        "tumor": MappingProxyType({"site": "thoracic", "size_cm": 5}),
        "molecular": UserDict({"alk": MappingProxyType({"status": "positive", "methods": ["IHC"]})}),
    }))
    assert (facts.tumor.site, facts.tumor.size_cm, facts.molecular.alk.status, facts.molecular.alk.methods) == (
        "thoracic", 5, "positive", frozenset({"IHC"}))


def test_the_problems_inside_nested_mappings_are_those_of_the_same_input_in_dicts():
    def problems(data):
        with pytest.raises(InvalidInputError) as caught:
            parse_facts(data)
        return [(p.path, p.message, p.value) for p in caught.value.problems]

    as_dicts = {"age_years": -1, "tumor": {"site": "moon"}, "molecular": {"alk": {"methods": ["IHC", "PCR"]}}}
    as_mappings = {"age_years": -1, "tumor": MappingProxyType({"site": "moon"}),
                   "molecular": UserDict({"alk": MappingProxyType({"methods": ["IHC", "PCR"]})})}
    expected = problems(as_dicts)
    assert [path for path, _, _ in expected] == ["age_years", "tumor.site", "molecular.alk.methods[1]"]
    assert problems(as_mappings) == expected


@pytest.mark.parametrize(("value", "shown"), [
    (list(range(10)), list(range(10))),  # up to ten items are echoed whole (eleven are summarised: test_facts.py)
    (b"8", "<bytes>"), ({8}, "<set>"), (datetime.date(2020, 1, 1), "<date>"),  # not JSON: named by their type
])
def test_the_value_a_problem_shows_is_the_value_when_small_or_its_type_when_json_has_none(value, shown):
    with pytest.raises(InvalidInputError) as caught:
        parse_facts({"age_years": value})
    assert [(p.path, p.value) for p in caught.value.problems] == [("age_years", shown)]


def test_the_json_walk_gives_every_end_in_document_order_and_a_picked_key_at_its_object():
    data = {"a": [1, {"b": None, 2: {"never": "looked into"}}], "c": "text", "d": {}, "e": []}
    walked = list(walk_json(data, lambda key: not isinstance(key, str), prefix=("top",)))
    # (an object's picked keys come before what its other keys hold)
    assert walked == [(("top", "a", 0), 1, False), (("top", "a", 1), 2, True), (("top", "a", 1, "b"), None, False),
                      (("top", "c"), "text", False)]


def test_the_json_walk_looks_into_data_that_holds_itself_once():
    data: dict = {"x": "end"}
    data["self"] = data
    items: list = [data, data]
    assert ended_within(20, _walked, items) == [((0, "x"), "end", False)]


def _walked(data):
    return list(walk_json(data, lambda key: False))
