"""The input contract's limits, pinned where mutation testing of core/facts.py found no test at the edge: a gene symbol
is at most 40 characters (a fusion partner of 40 is taken, 41 is refused with the limit and what is allowed); test
methods that are not a list are refused with a message that says a list is expected; a patient id is any non-empty
text, so one character is enough; a test method is text, never an object that merely compares equal to one."""

from __future__ import annotations

import pytest

from imt_cds import InvalidInputError
from imt_cds.core.validation import parse_facts


def _alk_partner(symbol: str) -> dict:
    return {"molecular": {"alk": {"status": "positive", "fusion_partner": symbol}}}


def test_a_gene_symbol_of_forty_characters_is_taken_and_one_of_forty_one_is_refused():
    assert parse_facts(_alk_partner("A" * 40)).molecular.alk.fusion_partner == "A" * 40
    with pytest.raises(InvalidInputError) as raised:
        parse_facts(_alk_partner("A" * 41))
    [problem] = raised.value.problems
    assert (problem.path, problem.message) == (
        "molecular.alk.fusion_partner", "string should have at most 40 characters; expected a gene symbol (letters, "
                                        "digits and hyphens, no blanks, e.g. RANBP2), or null")


def test_test_methods_given_as_one_text_instead_of_a_list_are_refused_with_a_message_asking_for_a_list():
    # A single method written without brackets ("IHC") is a common slip: the message must say a list is wanted.
    with pytest.raises(InvalidInputError) as raised:
        parse_facts({"molecular": {"ros1": {"status": "negative", "methods": "IHC"}}})
    [problem] = raised.value.problems
    assert problem.path == "molecular.ros1.methods"
    assert problem.message.startswith("must be a list of test methods; expected "), problem.message


def test_a_patient_id_of_one_character_is_taken_and_an_empty_one_is_refused():
    # The contract (and the message for a bad id) is "a non-empty string": short ward or trial numbers such as "7"
    # are real ids.
    assert parse_facts({"patient_id": "7"}).patient_id == "7"
    with pytest.raises(InvalidInputError) as raised:
        parse_facts({"patient_id": ""})
    [problem] = raised.value.problems
    assert (problem.path, problem.message) == (
        "patient_id", "string should have at least 1 character; expected a non-empty string of at most 256 characters, "
                      "or null")


class _LooksLikeIhc:
    """Not text, but equal to "IHC" and hashed like it: what a caller's own enum or wrapper type can be."""

    def __eq__(self, other: object) -> bool:
        return other == "IHC"

    def __hash__(self) -> int:
        return hash("IHC")


def test_a_test_method_that_is_not_text_is_refused_even_when_it_compares_equal_to_a_method_name():
    # Strict types: a method is the text "IHC", not whatever claims to equal it (the set check alone let it through).
    with pytest.raises(InvalidInputError) as raised:
        parse_facts({"molecular": {"ros1": {"status": "negative", "methods": ["FISH", _LooksLikeIhc()]}}})
    [problem] = raised.value.problems
    assert problem.path == "molecular.ros1.methods[1]"
    assert "is not a test method" in problem.message, problem.message
    assert parse_facts({"molecular": {"ros1": {"methods": ["FISH", "IHC"]}}}).molecular.ros1.methods == {"FISH", "IHC"}
