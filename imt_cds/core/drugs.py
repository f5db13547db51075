"""Recognising a targeted drug in a medication (a draft order, a chart's medication record), with the rulebook's drug
table (``drugs.yaml``).

The table itself is clinical knowledge and lives in the rulebook (each drug's names, brands, targets, labelled
minimum age parameter, evidence and, where verified, its RxNorm ingredient code): a rule author reads and changes
it there, ``rules diff`` shows its changes and the rulebook's sha256 covers it. This module only matches.

A medication is recognised first by an RxNorm coding (system ``http://www.nlm.nih.gov/research/umls/rxnorm``) whose code
is a drug's verified ingredient code, then by a case-insensitive whole-word match of a drug's name or brand in the
medication's text and coding displays, read as the diagnosis texts are (``terminology.as_read``): fullwidth
letters folded, invisible characters (a soft hyphen, a zero-width space) removed, so that they cannot hide a targeted
drug from the check. A drug whose RxNorm code could not be verified has none in the table
and is matched by name only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from ..core.rulebook import RXNORM_SYSTEM, Drug
from ..core.terminology import as_read

__all__ = ["find_drug"]


def find_drug(drugs: Mapping[str, Drug], texts: Sequence[str],
              codings: Iterable[tuple[str, str]] = ()) -> Drug | None:
    """The drug of the table that these codings (system, code) or texts (medication text, coding displays) name."""
    by_code = {drug.rxnorm: drug for drug in drugs.values() if drug.rxnorm is not None}
    for system, code in codings:
        if system == RXNORM_SYSTEM and code in by_code:
            return by_code[code]
    read = [as_read(text) for text in texts]
    for drug in drugs.values():
        pattern = re.compile(r"\b(?:" + "|".join(map(re.escape, drug.names)) + r")\b", re.IGNORECASE)
        if any(pattern.search(text) for text in read):
            return drug
    return None
