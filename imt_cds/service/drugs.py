"""The targeted drugs that ``imt-order-sign`` checks: ALK, ROS1, TRK and RET inhibitors, as documented data.

Each entry names the ingredient (and brand names) an order is recognised by, the alterations its use rests on,
the rulebook parameter holding its labelled minimum age where the rulebook has one, and the evidence entries of the
registry that concern it. An order is recognised by a case-insensitive whole-word match of these names in the
order's medication text and coding displays; codes are not used.

Why no RxNorm codes: a code in this table would be trusted blindly by the matcher, and none of the RxNorm codes of
these ingredients could be verified against an authoritative public source while writing it (the sources found
disagreed). Names are unambiguous for these drugs; an institution that codes its orders can add its RxNorm codes
here after checking them against RxNav.

``targets`` are the alterations of the drug's labelled indications (US FDA), plus, for entrectinib, ALK, on which
the PDQ summary reports responses in IMT (PDQ-PULM-IMT:s14). An order is consistent with the record when at least
one target is documented positive. ``label_age`` maps a target to the rulebook parameter with the drug's lowest
labelled age for that use (crizotinib for ALK-positive IMT, selpercatinib for RET-fusion solid tumors); the other
drugs have no labelled age in the rulebook, so their age is not checked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["TARGETED_DRUGS", "TargetedDrug", "find_drug"]


@dataclass(frozen=True)
class TargetedDrug:
    ingredient: str
    brands: tuple[str, ...]
    targets: tuple[str, ...]  # molecular.<gene> of the facts: alk, ros1, ntrk, ret (shown upper-cased)
    inhibitor_class: str
    label_age: Mapping[str, str] = field(default_factory=dict)  # target -> rulebook parameter (minimum age, years)
    evidence: tuple[str, ...] = ()  # ids in the rulebook's evidence registry

    @property
    def names(self) -> tuple[str, ...]:
        return (self.ingredient, *self.brands)


TARGETED_DRUGS: tuple[TargetedDrug, ...] = (
    TargetedDrug("crizotinib", ("Xalkori",), ("alk", "ros1"), "ALK/ROS1 inhibitor",
                 {"alk": "crizotinib_min_age_years"}, ("EXT-FDA-CRIZ-IMT-2022", "EXT-FDA-ROS1-NSCLC")),
    TargetedDrug("ceritinib", ("Zykadia",), ("alk",), "ALK inhibitor", evidence=("PDQ-PULM-IMT:s13",)),
    TargetedDrug("alectinib", ("Alecensa",), ("alk",), "ALK inhibitor", evidence=("PDQ-PULM-IMT:s15",)),
    TargetedDrug("brigatinib", ("Alunbrig",), ("alk",), "ALK inhibitor"),
    TargetedDrug("lorlatinib", ("Lorbrena", "Lorviqua"), ("alk",), "ALK inhibitor"),
    TargetedDrug("ensartinib", ("Ensacove",), ("alk",), "ALK inhibitor"),
    TargetedDrug("entrectinib", ("Rozlytrek",), ("ntrk", "ros1", "alk"), "TRK/ROS1 inhibitor",
                 evidence=("EXT-FDA-ENTR-PED-2023", "PDQ-PULM-IMT:s14", "EXT-FDA-ROS1-NSCLC")),
    TargetedDrug("repotrectinib", ("Augtyro",), ("ros1", "ntrk"), "ROS1/TRK inhibitor",
                 evidence=("EXT-FDA-ROS1-NSCLC",)),
    TargetedDrug("taletrectinib", ("Ibtrozi",), ("ros1",), "ROS1 inhibitor"),
    TargetedDrug("larotrectinib", ("Vitrakvi",), ("ntrk",), "TRK inhibitor", evidence=("EXT-FDA-LARO-2018",)),
    TargetedDrug("selpercatinib", ("Retevmo", "Retsevmo"), ("ret",), "RET inhibitor",
                 {"ret": "selpercatinib_min_age_years"}, ("EXT-FDA-SELP-2022", "EXT-FDA-SELP-PED-2024")),
    TargetedDrug("pralsetinib", ("Gavreto",), ("ret",), "RET inhibitor"),
)

_PATTERNS = tuple((drug, re.compile(r"\b(?:" + "|".join(map(re.escape, drug.names)) + r")\b", re.IGNORECASE))
                  for drug in TARGETED_DRUGS)


def find_drug(texts: list[str]) -> TargetedDrug | None:
    """The targeted drug named in any of these texts (medication text, coding displays), if any."""
    for drug, pattern in _PATTERNS:
        if any(pattern.search(text) for text in texts):
            return drug
    return None
