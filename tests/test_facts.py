"""Input validation (SPEC §2): bad input is rejected with every problem named; valid input is canonical."""

from __future__ import annotations

import hashlib
import json
import math

import orjson
import pytest

from imt_cds import InvalidInputError, PatientFacts, parse_facts, parse_facts_json
from imt_cds.core.validation import canonical_json, input_sha256


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


def test_facts_are_frozen_at_every_level():
    # Every model of the facts (the patient, its tumour, its molecular results, each gene's): none can be changed
    # after validation, so nothing that holds a PatientFacts (a cache key, an audit record) sees it change.
    from pydantic import BaseModel, ValidationError

    facts = parse_facts({"age_years": 3})
    models, todo = [], [facts]
    while todo:
        model = todo.pop()
        models.append(model)
        todo += [value for value in (getattr(model, name) for name in type(model).model_fields)
                 if isinstance(value, BaseModel)]
    assert len(models) >= 8  # the patient, tumor, molecular, five genes, history, ...
    for model in models:
        name = next(iter(type(model).model_fields))
        with pytest.raises(ValidationError) as refused:
            setattr(model, name, getattr(model, name))
        assert refused.value.errors()[0]["type"] == "frozen_instance", type(model).__name__


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


# --- the canonical form (what provenance and the audit trail hash) -------------------------------------------------

# Written out by hand from SPEC §2: every default filled in, keys sorted at every level, methods sorted and without
# repeats, numbers as JSON floats (8 -> 8.0, 1e-07 -> 1e-7), text as raw UTF-8, no spaces.
CANONICAL_EMPTY_FUSION = '{"fusion_partner":null,"methods":[],"status":"unknown"}'
CANONICAL_PATIENT = (
    '{"age_years":8.0,'
    '"history":{"margin_status":"R1","progressed_on_alk_inhibitor":false,"progressed_on_prior_systemic":false,'
    '"recurrence":false,"surgery_done":true},'
    '"molecular":{"alk":{"fusion_partner":"EML4","ihc_pattern":null,"methods":["FISH","IHC","NGS_RNA"],'
    '"status":"positive"},'
    f'"ntrk":{CANONICAL_EMPTY_FUSION},"pdgfrb":{CANONICAL_EMPTY_FUSION},"ret":{CANONICAL_EMPTY_FUSION},'
    f'"rna_fusion_panel_done":false,"ros1":{CANONICAL_EMPTY_FUSION}}},'
    '"patient_id":"patient ü","symptoms":{"respiratory":null},'
    '"tumor":{"distant_disease":false,"epithelioid_morphology":false,"resectability":"resectable",'
    '"site":"unknown","size_cm":1e-7}}'
).encode()


def test_the_canonical_form_is_written_exactly_as_specified():
    facts = parse_facts_json(
        '{"tumor": {"size_cm": 1e-7, "distant_disease": false, "resectability": "resectable"},'
        ' "patient_id": "patient \\u00fc", "age_years": 8,'
        ' "molecular": {"alk": {"methods": ["NGS_RNA", "IHC", "FISH", "IHC"], "status": "positive",'
        ' "fusion_partner": "EML4"}}, "history": {"surgery_done": true, "margin_status": "R1"}}'
    )
    assert canonical_json(facts) == CANONICAL_PATIENT
    assert input_sha256(facts) == hashlib.sha256(CANONICAL_PATIENT).hexdigest()


def test_equal_inputs_give_the_same_canonical_bytes_and_different_ones_do_not():
    import random

    from strategies import random_patient

    rng = random.Random(21)
    seen: dict[bytes, PatientFacts] = {}
    for _ in range(1_000):
        patient = random_patient(rng)
        facts = parse_facts(patient)
        shuffled = json.loads(json.dumps(patient, sort_keys=True))  # another key order; ints stay ints
        for fusion in shuffled["molecular"].values():
            if isinstance(fusion, dict):
                fusion["methods"] = fusion["methods"][::-1] * 2  # another order, with repeats
        assert canonical_json(parse_facts(shuffled)) == canonical_json(facts)
        # The template writer is the same document as the plain sorted-keys dump (what validation's docstring says).
        assert canonical_json(facts) == orjson.dumps(facts.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
        assert seen.setdefault(canonical_json(facts), facts) == facts  # one canonical form per distinct input


# --- the input size limit ------------------------------------------------------------------------------------------

LIMIT = 1_000_000
SMALL = '{"age_years": 5}'


def _padded(length: int) -> str:
    return SMALL + " " * (length - len(SMALL))  # trailing whitespace is valid JSON


@pytest.mark.parametrize("as_bytes", [False, True], ids=["text", "bytes"])
def test_an_input_just_under_the_size_limit_is_parsed_and_one_just_over_is_refused(as_bytes):
    def convert(text):
        return text.encode() if as_bytes else text

    assert parse_facts_json(convert(_padded(LIMIT))).age_years == 5
    assert parse_facts_json(convert(_padded(LIMIT - 1))).age_years == 5
    with pytest.raises(InvalidInputError) as info:
        parse_facts_json(convert(_padded(LIMIT + 1)))
    (problem,) = info.value.problems
    unit = "bytes" if as_bytes else "characters"
    assert problem.message == f"input is larger than {LIMIT} {unit}"


def test_the_size_limit_counts_bytes_of_bytes_input_not_characters():
    text = SMALL[:-1] + ', "patient_id": "' + "ü" * 10 + '"}'
    padding = LIMIT - len(text.encode())
    assert parse_facts_json((text + " " * padding).encode()).patient_id == "ü" * 10
    with pytest.raises(InvalidInputError, match="larger than 1000000 bytes"):
        parse_facts_json((text + " " * (padding + 1)).encode())


def test_the_command_line_applies_the_size_limit_at_the_boundary(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).with_name("imt-cds")
    at_limit, over_limit = tmp_path / "at.json", tmp_path / "over.json"
    at_limit.write_text(_padded(LIMIT))
    over_limit.write_text(_padded(LIMIT + 1))
    accepted = subprocess.run([str(script), "evaluate", str(at_limit), "--format", "json"], capture_output=True,
                              text=True, timeout=300)
    assert accepted.returncode == 0, accepted.stderr
    assert json.loads(accepted.stdout)["schema"] == "imt-cds/assessment/1"
    refused = subprocess.run([str(script), "evaluate", str(over_limit)], capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and refused.stdout == ""
    assert f"input is larger than {LIMIT} bytes" in refused.stderr and "Traceback" not in refused.stderr
    piped = subprocess.run([str(script), "evaluate", "-"], input=_padded(LIMIT + 1), capture_output=True,
                           text=True, timeout=300)
    assert piped.returncode == 2 and f"input is larger than {LIMIT} bytes" in piped.stderr


def test_leaf_texts_are_one_per_field_and_a_short_or_long_tuple_is_refused():
    from imt_cds.core.fact_fields import leaf_values
    from imt_cds.core.validation import render_leaves

    facts = parse_facts({"age_years": 4.5, "molecular": {"alk": {"methods": ["NGS_RNA", "IHC"]}}})
    values = leaf_values(facts)
    texts = render_leaves(values)
    assert len(texts) == len(values) and [orjson.loads(t) for t in texts][:2] == [None, 4.5]
    assert '["IHC","NGS_RNA"]' in texts
    assert canonical_json(facts, texts) == canonical_json(facts)
    for wrong in (values[:-1], (*values, None)):
        with pytest.raises(ValueError):
            render_leaves(wrong)


SITES = "one of thoracic, abdominal_pelvic, head_neck, genitourinary, other, unknown"
AGE = "a finite number >= 0 and <= 120 years, or null"
TUMOR_KEYS = "site, size_cm, resectability, distant_disease, epithelioid_morphology"


@pytest.mark.parametrize(("data", "path", "message", "value"), [
    ({"tumr": {}}, "tumr", "unknown key 'tumr'; did you mean 'tumor'? Allowed keys here: patient_id, age_years, tumor, "
                           "symptoms, molecular, history", "<object with 0 key(s)>"),
    ({"tumor": {"sise_cm": 3}}, "tumor.sise_cm",
     f"unknown key 'sise_cm'; did you mean 'size_cm'? Allowed keys here: {TUMOR_KEYS}", 3),
    ({"tumor": {"xyz": 1}}, "tumor.xyz", f"unknown key 'xyz'. Allowed keys here: {TUMOR_KEYS}", 1),
    ({"tumor": "big"}, "tumor", "expected an object, got a string", "big"),
    ({"molecular": {"alk": {"methods": ["IHC", "FIHS"]}}}, "molecular.alk.methods[1]",
     "'FIHS' is not a test method; did you mean 'FISH'? Allowed: a list of values from IHC, FISH, NGS_RNA, NGS_DNA "
     "(order and repeats do not matter)", "FIHS"),
    ({"molecular": {"alk": {"methods": ["Q" * 201]}}}, "molecular.alk.methods[0]",  # shown cut after 200 characters
     f"'{'Q' * 200}…' is not a test method. Allowed: a list of values from IHC, FISH, NGS_RNA, NGS_DNA (order and "
     "repeats do not matter)", "Q" * 200 + "…"),
    ({"molecular": {"alk": {"methods": ["Q" * 200]}}}, "molecular.alk.methods[0]",
     f"'{'Q' * 200}' is not a test method. Allowed: a list of values from IHC, FISH, NGS_RNA, NGS_DNA (order and "
     "repeats do not matter)", "Q" * 200),
    ({"molecular": {"alk": {"methods": ["IHC", 3]}}}, "molecular.alk.methods[1]",
     "3 is not a test method. Allowed: a list of values from IHC, FISH, NGS_RNA, NGS_DNA (order and repeats do not "
     "matter)", 3),
    ({"tumor": {"site": None}}, "tumor.site", f"null is not allowed here; expected {SITES}", None),
    ({"tumor": {"site": "thorasic"}}, "tumor.site",
     f"'thorasic' is not allowed; did you mean 'thoracic'? Expected {SITES}", "thorasic"),
    ({"tumor": {"site": "zzz"}}, "tumor.site", f"'zzz' is not allowed. Expected {SITES}", "zzz"),
    ({"molecular": {"alk": {"fusion_partner": "ranbp2!"}}}, "molecular.alk.fusion_partner",
     "'ranbp2!' is not a gene symbol; expected a gene symbol (letters, digits and hyphens, no blanks, e.g. RANBP2), "
     "or null", "ranbp2!"),
    ({"age_years": math.inf}, "age_years", f"must be a finite number; expected {AGE}", math.inf),
    ({"age_years": "old"}, "age_years", f"input should be a valid number; expected {AGE}", "old"),
    ({"age_years": None, "tumor": {"size_cm": [1, [2]]}}, "tumor.size_cm",
     "input should be a valid number; expected a finite number > 0 and <= 100 cm, or null", "<array of 2 items>"),
    ({"age_years": list(range(11))}, "age_years", f"input should be a valid number; expected {AGE}",
     "<array of 11 items>"),
    ({"age_years": [1, 2]}, "age_years", f"input should be a valid number; expected {AGE}", [1, 2]),
    ({"tumor": {"site": "a\ud800"}}, "tumor.site",
     "'a\\ud800' is not valid Unicode text: it holds a lone surrogate (\\ud800-\\udfff)", "a\\ud800"),
    ({"patient_id": "x" * 300}, "patient_id", "string should have at most 256 characters; expected a non-empty string "
                                              "of at most 256 characters, or null", "x" * 200 + "…"),
    ({"history": {1: 2}}, "history", "object keys must be strings, got 1", 1),
    ({"molecular": {"alk": {7: 2}}}, "molecular.alk", "object keys must be strings, got 7", 7),
])
def test_each_problem_names_the_field_what_was_given_and_what_is_allowed(data, path, message, value):
    assert [(p.path, p.message, p.value) for p in problems(data).values()] == [(path, message, value)]


def test_the_canonical_writer_refuses_a_value_outside_its_fields_domain():
    # Facts changed after validation (model_copy does not validate) must not be hashed as if they were valid.
    facts = parse_facts({})
    for section, field, value in (("tumor", "site", "moon"), ("history", "recurrence", "yes"),
                                  ("tumor", "distant_disease", "maybe")):
        changed = facts.model_copy(update={section: getattr(facts, section).model_copy(update={field: value})})
        with pytest.raises(KeyError):
            canonical_json(changed)
