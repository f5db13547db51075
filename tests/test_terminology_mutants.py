"""Value sets as the rest of the package reads them, pinned where mutation testing of core/terminology.py found no test
looking: the error for a value set the rulebook lacks, and a value set without a description."""

from __future__ import annotations

import pytest

from imt_cds.core.terminology import parse_value_set


def test_asking_for_a_value_set_the_rulebook_lacks_names_it_and_its_file(rulebook):
    with pytest.raises(KeyError) as raised:
        rulebook.terminology["imt-diagnoses"]
    assert raised.value.args == ("the rulebook has no value set 'imt-diagnoses' (terminology/imt-diagnoses.yaml)",)


def test_a_value_set_without_a_description_has_an_empty_one():
    document = {"value_set": "local-imt", "title": "Local IMT codes",
                "codes": [{"system": "urn:oid:1.2.3", "code": "IMT", "display": "IMT", "source": "local list"}]}
    value_set, problems = parse_value_set(document, "terminology/local-imt.yaml")
    assert problems == [] and value_set is not None
    assert (value_set.name, value_set.description, value_set.file) == ("local-imt", "", "terminology/local-imt.yaml")
    assert value_set.has("urn:oid:1.2.3", "IMT") and not value_set.has("urn:oid:1.2.3", "imt")
