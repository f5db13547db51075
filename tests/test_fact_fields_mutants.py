"""The fact catalogue (``fact_fields``): what it says about each field must be what the facts model does.

The rulebook loader, the compiler, the error messages and the authoring tools all read the catalogue instead of the
model, so a field described wrongly here misleads each of them (tests/mutation-survivors.md, fact_fields.py).
"""

from __future__ import annotations

import dataclasses

import pytest
from rulebook_copies import CRIZOTINIB, copy_rulebook, edit, load_problems, only

from imt_cds import InvalidInputError, PatientFacts, parse_facts
from imt_cds.core.fact_fields import FactField, fact_fields, keys_at, leaf_values, set_path

BOOLEAN = "true or false (not null: leave the key out for the default)"


def test_a_field_of_the_catalogue_cannot_be_changed_by_a_caller():
    # Every caller shares the one catalogue: a changed bound would change validation for everyone after.
    field = fact_fields()["age_years"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        field.maximum = 200  # type: ignore[misc]
    assert fact_fields()["age_years"].maximum == 120
    assert {field: "usable"}[fact_fields()["age_years"]] == "usable"  # frozen, so hashable


def test_a_caller_cannot_add_remove_or_replace_a_field_of_the_shared_catalogue():
    catalogue = fact_fields()
    with pytest.raises(TypeError):
        catalogue["age_years"] = catalogue["tumor.size_cm"]  # type: ignore[index]
    with pytest.raises((TypeError, AttributeError)):
        catalogue.pop("age_years")  # type: ignore[attr-defined]
    assert fact_fields()["age_years"].unit == "years" and "age_years" in fact_fields()


def test_only_number_fields_have_bounds_and_a_unit():
    numbers = {path: (f.minimum, f.minimum_exclusive, f.maximum, f.unit)
               for path, f in fact_fields().items() if f.kind == "number"}
    assert numbers == {"age_years": (0, False, 120, "years"), "tumor.size_cm": (0, True, 100, "cm")}
    for field in fact_fields().values():
        if field.kind != "number":
            assert (field.minimum, field.maximum, field.unit) == (None, None, None), field.path
            assert field.minimum_exclusive is False, field.path


def test_a_number_field_without_a_unit_names_none():
    field = FactField("dose", "number", False, None, minimum=0, maximum=10)
    assert field.allowed() == "a finite number >= 0 and <= 10"


@pytest.mark.parametrize(("bounds", "sentence"), [
    ({"minimum": 0}, "a finite number >= 0"),
    ({"minimum": 0.5, "minimum_exclusive": True}, "a finite number > 0.5"),
    ({"maximum": 10}, "a finite number <= 10"),
    ({"minimum": 0, "unit": "mg"}, "a finite number >= 0 mg"),
    ({"maximum": 2.5, "unit": "mg"}, "a finite number <= 2.5 mg"),
    ({}, "any finite number"),
    ({"unit": "mg"}, "any finite number in mg"),
], ids=["minimum only", "exclusive minimum only", "maximum only", "minimum and a unit", "maximum and a unit",
        "no bound", "no bound but a unit"])
def test_a_number_field_with_one_bound_or_none_names_only_the_bounds_it_has(bounds, sentence):
    # A caller's own number field need not have both bounds; its sentence must still read (once it was
    # "a finite number >= 0 and <= ", naming a bound that does not exist).
    assert FactField("dose", "number", False, None, **bounds).allowed() == sentence
    assert FactField("dose", "number", True, None, **bounds).allowed() == sentence + ", or null"


def test_the_domain_of_an_enum_or_a_boolean_is_every_value_it_can_take_null_last():
    fields = fact_fields()
    assert fields["tumor.site"].domain == (
        "thoracic", "abdominal_pelvic", "head_neck", "genitourinary", "other", "unknown")
    assert fields["history.margin_status"].domain == ("R0", "R1", "R2", "unknown", None)
    assert fields["tumor.epithelioid_morphology"].domain == (True, False)
    assert fields["tumor.distant_disease"].domain == (True, False, None)
    for path in ("age_years", "molecular.alk.methods", "molecular.alk.fusion_partner", "patient_id"):
        assert fields[path].domain is None, path


@pytest.mark.parametrize(("value", "message"), [
    ("yes", f"input should be a valid boolean; expected {BOOLEAN}"),
    (None, f"null is not allowed here; expected {BOOLEAN}"),
])
def test_a_bad_boolean_is_refused_saying_what_a_boolean_field_accepts(value, message):
    with pytest.raises(InvalidInputError) as info:
        parse_facts({"tumor": {"epithelioid_morphology": value}})
    assert [(p.path, p.message) for p in info.value.problems] == [("tumor.epithelioid_morphology", message)]


def test_each_fields_default_is_the_value_the_facts_take_when_its_key_is_left_out():
    # The authoring tools write a counterexample patient without the keys that keep their default.
    for field, value in zip(fact_fields().values(), leaf_values(PatientFacts()), strict=True):
        assert (sorted(value) if field.kind == "set" else value) == field.default, field.path
        assert type(value) is type(field.default) or field.kind == "set", field.path


def test_a_field_is_nullable_exactly_when_the_facts_accept_null_for_it():
    for path, field in fact_fields().items():
        data: dict = {}
        set_path(data, path, None)
        try:
            parse_facts(data)
            accepted = True
        except InvalidInputError:
            accepted = False
        assert field.nullable is accepted, path


def test_a_finding_can_be_about_a_fusion_gene_only_not_another_field_of_molecular(tmp_path):
    rules = copy_rulebook(tmp_path)
    edit(rules, CRIZOTINIB, "    gene: alk", "    gene: rna_fusion_panel_done")
    problem = only(load_problems(rules))
    assert (problem.path, problem.message) == (
        "then[0].gene", "unknown gene 'rna_fusion_panel_done'; genes: alk, ros1, ntrk, ret, pdgfrb")


@pytest.mark.parametrize("path", [("age_years",), ("tumor", "site"), ("tumor", "epithelioid_morphology"),
                                  ("no_such_key",), ("molecular", "alk", "methods")])
def test_a_location_that_is_not_an_object_allows_no_keys(path):
    assert keys_at(path) == ()


def test_the_keys_allowed_in_an_object_are_its_fields():
    assert keys_at(("molecular", "alk")) == ("status", "methods", "fusion_partner", "ihc_pattern")
    assert keys_at(()) == ("patient_id", "age_years", "tumor", "symptoms", "molecular", "history")
