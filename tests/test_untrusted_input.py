"""Arbitrary JSON thrown at evaluate only ever yields an assessment or the input-error type."""

from __future__ import annotations

import copy

from hypothesis import given
from hypothesis import strategies as st
from strategies import patients

from imt_cds import Assessment, InvalidInputError, parse_facts_json

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
