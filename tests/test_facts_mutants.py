"""The input contract's limits, pinned where mutation testing of core/facts.py found no test at the edge: a gene symbol
is at most 40 characters (a fusion partner of 40 is taken, 41 is refused with the limit and what is allowed)."""

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
