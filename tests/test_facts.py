"""Input validation (SPEC §2): bad input is rejected with every problem named; valid input is canonical."""

from __future__ import annotations

import math

import pytest

from imt_cds import InvalidInputError, PatientFacts, parse_facts, parse_facts_json
from imt_cds.validation import canonical_json, input_sha256


def problems(data):
    with pytest.raises(InvalidInputError) as info:
        parse_facts(data) if not isinstance(data, (str, bytes)) else parse_facts_json(data)
    return {p.path: p for p in info.value.problems}


def test_empty_input_gets_every_default():
    facts = parse_facts({})
    assert facts.age_years is None
    assert facts.tumor.site == "unknown" and facts.tumor.resectability == "unknown"
    assert facts.tumor.distant_disease is None and facts.tumor.epithelioid_morphology is False
    assert facts.molecular.alk.status == "unknown" and facts.molecular.alk.methods == frozenset()
    assert facts.history.margin_status is None and facts.history.surgery_done is False


def test_a_misspelt_key_is_an_error_with_a_did_you_mean():
    found = problems({"molecular": {"alk": {"staus": "positive"}}})
    problem = found["molecular.alk.staus"]
    assert "did you mean 'status'" in problem.message
    assert problem.value == "positive"


def test_a_misspelt_top_level_key_is_an_error():
    assert "did you mean 'age_years'" in problems({"age_yeras": 5})["age_yeras"].message


def test_every_problem_is_reported_at_once():
    found = problems({"age_years": -1, "tumor": {"size_cm": 0, "resectability": "maybe"}, "extra": 1})
    assert set(found) == {"age_years", "tumor.size_cm", "tumor.resectability", "extra"}


def test_enum_errors_name_the_allowed_values_and_suggest_one():
    problem = problems({"molecular": {"ros1": {"status": "postive"}}})["molecular.ros1.status"]
    assert "positive, negative, unknown" in problem.message
    assert "did you mean 'positive'" in problem.message
    assert problem.value == "postive"


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"age_years": 121}, "age_years"),
        ({"age_years": -0.1}, "age_years"),
        ({"tumor": {"size_cm": 0}}, "tumor.size_cm"),
        ({"tumor": {"size_cm": 100.5}}, "tumor.size_cm"),
        ({"age_years": math.nan}, "age_years"),
        ({"tumor": {"size_cm": math.inf}}, "tumor.size_cm"),
        ({"age_years": "5"}, "age_years"),
        ({"age_years": True}, "age_years"),
        ({"history": {"surgery_done": 1}}, "history.surgery_done"),
        ({"history": {"surgery_done": "true"}}, "history.surgery_done"),
        ({"symptoms": {"respiratory": "yes"}}, "symptoms.respiratory"),
        ({"molecular": {"alk": {"methods": "IHC"}}}, "molecular.alk.methods"),
        ({"molecular": {"alk": {"methods": ["IHC", "PCR"]}}}, "molecular.alk.methods[1]"),
        ({"molecular": {"alk": {"fusion_partner": ""}}}, "molecular.alk.fusion_partner"),
        ({"molecular": {"alk": {"fusion_partner": " RANBP2"}}}, "molecular.alk.fusion_partner"),
        ({"molecular": {"ros1": {"ihc_pattern": "cytoplasmic"}}}, "molecular.ros1.ihc_pattern"),
        ({"history": {"margin_status": "R3"}}, "history.margin_status"),
        ({"tumor": None}, "tumor"),
        ({"tumor": []}, "tumor"),
    ],
)
def test_invalid_values_are_rejected_with_their_path(data, path):
    found = problems(data)
    assert path in found, found
    assert found[path].message


@pytest.mark.parametrize(
    "path",
    ["tumor.site", "tumor.resectability", "tumor.epithelioid_morphology", "molecular.alk.status",
     "molecular.alk.methods", "molecular.rna_fusion_panel_done", "history.recurrence"],
)
def test_explicit_null_is_rejected_where_the_contract_does_not_show_it(path):
    *parents, leaf = path.split(".")
    data: dict = {}
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = None
    problem = problems(data)[path]
    assert "null is not allowed" in problem.message


def test_null_is_accepted_where_the_contract_shows_it():
    facts = parse_facts({
        "patient_id": None, "age_years": None, "tumor": {"size_cm": None, "distant_disease": None},
        "symptoms": {"respiratory": None}, "history": {"margin_status": None},
        "molecular": {"alk": {"ihc_pattern": None, "fusion_partner": None}},
    })
    assert facts == parse_facts({})


def test_methods_are_a_set_order_and_repeats_do_not_matter():
    a = parse_facts({"molecular": {"alk": {"methods": ["FISH", "IHC", "IHC"]}}})
    b = parse_facts({"molecular": {"alk": {"methods": ["IHC", "FISH"]}}})
    assert a == b
    assert canonical_json(a) == canonical_json(b)
    assert a.model_dump(mode="json")["molecular"]["alk"]["methods"] == ["FISH", "IHC"]


def test_the_canonical_form_does_not_depend_on_key_order():
    a = parse_facts_json('{"age_years": 5, "tumor": {"size_cm": 2, "site": "thoracic"}}')
    b = parse_facts_json('{"tumor": {"site": "thoracic", "size_cm": 2.0}, "age_years": 5.0}')
    assert input_sha256(a) == input_sha256(b)


def test_facts_are_frozen():
    facts = parse_facts({"age_years": 3})
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises its ValidationError for frozen instances
        facts.age_years = 4  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('{"age_years": NaN}', "NaN is not allowed"),
        ('{"age_years": Infinity}', "Infinity is not allowed"),
        ('{"age_years": 5, "age_years": 50}', "duplicate key 'age_years'"),
        ('{"age_years": 5', "malformed JSON"),
        ("[1, 2]", "expected an object"),
        ('"patient"', "expected an object"),
        ("null", "expected an object"),
        (b"\xff\xfe", "not UTF-8"),
        ("", "malformed JSON"),
    ],
)
def test_malformed_or_non_object_json_is_rejected_clearly(text, fragment):
    with pytest.raises(InvalidInputError) as info:
        parse_facts_json(text)
    assert fragment in str(info.value)


def test_an_invalid_input_error_carries_the_same_problems_as_a_dict():
    with pytest.raises(InvalidInputError) as info:
        parse_facts({"age_years": 500, "bogus": 1})
    data = info.value.to_dict()
    assert [e["path"] for e in data["errors"]] == [p.path for p in info.value.problems]
    assert all(set(e) == {"path", "message", "value"} for e in data["errors"])


def test_a_model_instance_is_accepted_as_is():
    facts = PatientFacts(age_years=4)
    assert parse_facts(facts) is facts


def test_clinically_inconsistent_but_well_typed_data_is_valid():
    facts = parse_facts({"history": {"surgery_done": False, "margin_status": "R0"},
                         "molecular": {"alk": {"status": "negative", "fusion_partner": "EML4"}}})
    assert facts.history.margin_status == "R0"
