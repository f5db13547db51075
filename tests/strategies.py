"""Generators of valid patients for property, differential and stateful tests.

Values are drawn from pools that include every threshold the catalogue uses (ages 1, 2, 39; size 3.9) and the
values just around them, so that generated patients exercise both sides of every rule. Fusion statuses are drawn
either independently or with a single "driver" fusion, because independent draws make two positive fusions (and so
a DATA_BLOCK) so common that targeted recommendations would rarely be exercised.

``patients()`` is a Hypothesis strategy; ``random_patient(rng)`` draws the same distribution from a seeded
``random.Random`` for sweeps of thousands of patients that should be identical on every run.
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import strategies as st

STATUSES = ("positive", "negative", "unknown")
METHOD_SETS = ([], ["IHC"], ["FISH"], ["IHC", "FISH"], ["NGS_RNA"], ["IHC", "NGS_DNA"], ["IHC", "IHC"],
               ["FISH", "IHC", "NGS_RNA", "NGS_DNA"])
PARTNERS = (None, None, "RANBP2", "ranbp2", "RanBP2", "RANBP2-ALK", "EML4", "TPM3", "ETV6", "FN1", "X-1")
IHC_PATTERNS = (None, "cytoplasmic", "nuclear_membrane_or_perinuclear", "unknown")
SITES = ("thoracic", "abdominal_pelvic", "head_neck", "genitourinary", "other", "unknown")
RESECTABILITY = ("resectable", "resectable_only_with_mutilation", "unresectable", "unknown")
MARGINS = (None, "R0", "R1", "R2", "unknown")
TRISTATE = (None, True, False)
AGES = (None, 0.0, 0.25, 0.5, 0.99, 1.0, 1.01, 1.5, 1.99, 2.0, 2.01, 5.0, 8.0, 12.5, 17.0, 38.9, 39.0, 39.01, 45.0,
        120.0)
SIZES = (None, 0.1, 1.0, 3.0, 3.89, 3.9, 3.91, 4.0, 6.2, 15.0, 100.0)
GENES = ("alk", "ros1", "ntrk", "ret", "pdgfrb")


def _fusion(draw_status: Any, draw_one: Any, gene: str, status: str) -> dict[str, Any]:
    result: dict[str, Any] = {"status": status, "methods": draw_one(METHOD_SETS), "fusion_partner": draw_one(PARTNERS)}
    if gene == "alk":
        result["ihc_pattern"] = draw_one(IHC_PATTERNS)
    return result


def build_patient(choose: Any, number: Any, flag: Any) -> dict[str, Any]:
    """A complete patient from three primitive choosers (pool choice, number in a range, boolean)."""
    mode = choose(("independent", "driver", "driver"))
    if mode == "driver":
        driver = choose(GENES + (None,))
        statuses = {g: ("positive" if g == driver else choose(("negative", "unknown"))) for g in GENES}
    else:
        statuses = {g: choose(STATUSES) for g in GENES}
    age = choose(AGES) if flag() else number(0.0, 120.0)
    size = choose(SIZES) if flag() else number(0.01, 100.0)
    patient = {
        "patient_id": choose((None, "P-1", "patient/with spaces ü")),
        "age_years": age,
        "tumor": {
            "site": choose(SITES),
            "size_cm": size,
            "resectability": choose(RESECTABILITY),
            "distant_disease": choose(TRISTATE),
            "epithelioid_morphology": flag(),
        },
        "symptoms": {"respiratory": choose(TRISTATE)},
        "molecular": {g: _fusion(choose, choose, g, statuses[g]) for g in GENES},
        "history": {
            "surgery_done": flag(),
            "margin_status": choose(MARGINS),
            "recurrence": flag(),
            "progressed_on_alk_inhibitor": flag() and flag(),
            "progressed_on_prior_systemic": flag() and flag(),
        },
    }
    patient["molecular"]["rna_fusion_panel_done"] = flag()
    return patient


@st.composite
def patients(draw: st.DrawFn) -> dict[str, Any]:
    """Hypothesis strategy: complete, valid patients (every key present)."""
    return build_patient(
        lambda pool: draw(st.sampled_from(pool)),
        lambda low, high: draw(st.floats(min_value=low, max_value=high, allow_nan=False, allow_infinity=False)),
        lambda: draw(st.booleans()),
    )


def random_patient(rng: random.Random) -> dict[str, Any]:
    """The same distribution as ``patients()``, from a seeded random generator."""
    return build_patient(rng.choice, rng.uniform, lambda: rng.random() < 0.5)


def without_defaults(patient: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """Drop some keys, now and then a whole object (the model fills defaults); an input of partial form must mean
    the same as the full one."""
    result: dict[str, Any] = {}
    for key, value in patient.items():
        if isinstance(value, dict):
            if rng.random() < 0.9:
                result[key] = without_defaults(value, rng)
        elif rng.random() < 0.7:
            result[key] = value
    return result


# --- strategies built around one property's premise -----------------------------------------------------------------
# The general strategy above rarely produces some premises (an upfront resection needs four facts to line up and no
# contradiction, which independent draws give about once in a hundred patients). Each strategy below starts from a
# general patient and pushes groups of facts towards a premise, each group with probability 9/10, so most examples
# meet the premise and the rest miss it by one group: the near misses are where a rule firing too often shows.

_LEAN = st.integers(0, 9).map(lambda n: n > 0)  # True 9 times in 10


def _put(patient: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = patient
    for part in parents:
        node = node[part]
    node[leaf] = value


def _without_contradiction(draw: st.DrawFn, patient: dict[str, Any]) -> None:
    """Clear the causes of a CONTRADICTION (C1-C4), so that group-T findings are not suppressed."""
    alk = patient["molecular"]["alk"]
    if alk["status"] == "negative":
        alk["fusion_partner"] = None
        alk["ihc_pattern"] = draw(st.sampled_from((None, "unknown")))
    if not patient["history"]["surgery_done"]:
        patient["history"]["margin_status"] = draw(st.sampled_from((None, "unknown")))
    patient["history"]["progressed_on_alk_inhibitor"] = False


@st.composite
def targeted_candidates(draw: st.DrawFn, genes: tuple[str, ...] = GENES) -> dict[str, Any]:
    """Patients for whom a targeted recommendation is possible: one driver fusion, advanced disease, a known age
    (drawn from the thresholds and around them), no contradiction."""
    patient = draw(patients())
    if draw(_LEAN):
        driver = draw(st.sampled_from(genes))
        for gene in GENES:
            patient["molecular"][gene]["status"] = "positive" if gene == driver else draw(
                st.sampled_from(("negative", "unknown")))
    if draw(_LEAN):
        if draw(st.booleans()):
            patient["tumor"]["resectability"] = draw(st.sampled_from(("unresectable",
                                                                      "resectable_only_with_mutilation")))
        else:
            _put(patient, draw(st.sampled_from(("tumor.distant_disease", "history.recurrence",
                                                "history.progressed_on_prior_systemic"))), True)
    if draw(_LEAN):
        patient["age_years"] = draw(st.sampled_from(AGES[1:]))
    if draw(_LEAN):
        _without_contradiction(draw, patient)
    return patient


@st.composite
def contradictory_patients(draw: st.DrawFn) -> dict[str, Any]:
    """Patients with one or more of the contradictions C1-C4 (RULES.md D04)."""
    patient = draw(patients())
    alk, history = patient["molecular"]["alk"], patient["history"]
    for reason in draw(st.lists(st.sampled_from(("C1", "C2", "C3", "C4")), min_size=1, max_size=2, unique=True)):
        if not draw(_LEAN):
            continue
        if reason in ("C1", "C2"):
            alk["status"] = "negative"
            if reason == "C1":
                alk["fusion_partner"] = draw(st.sampled_from(PARTNERS[2:]))
            else:
                alk["ihc_pattern"] = draw(st.sampled_from(IHC_PATTERNS[1:3]))
        elif reason == "C3":
            history["surgery_done"] = False
            history["margin_status"] = draw(st.sampled_from(("R0", "R1", "R2")))
        else:
            history["progressed_on_alk_inhibitor"] = True
            if alk["status"] == "positive":
                alk["status"] = draw(st.sampled_from(("negative", "unknown")))
    return patient


@st.composite
def upfront_resection_candidates(draw: st.DrawFn) -> dict[str, Any]:
    """Patients near the premise of an upfront resection: untreated, no recurrence, resectable, no distant disease."""
    patient = draw(patients())
    for path, value in (("history.surgery_done", False), ("history.recurrence", False),
                        ("tumor.resectability", "resectable"), ("tumor.distant_disease", False)):
        if draw(_LEAN):
            _put(patient, path, value)
    if draw(_LEAN):
        _without_contradiction(draw, patient)
    return patient


@st.composite
def progressed_on_alk_inhibitor(draw: st.DrawFn) -> dict[str, Any]:
    """ALK-positive patients (else crizotinib is out anyway) who progressed on an ALK inhibitor."""
    patient = draw(targeted_candidates(genes=("alk",)))
    if draw(_LEAN):
        patient["history"]["progressed_on_alk_inhibitor"] = True
    return patient


@st.composite
def missing_data_patients(draw: st.DrawFn) -> dict[str, Any]:
    """Patients with the age, the tumor size or both missing (never neither: two independent coin flips left a
    quarter of these patients complete, and property 13's premise share hovered near its floor of a fifth)."""
    patient = draw(patients())
    missing = draw(st.sampled_from(("age", "size", "both")))
    if missing in ("age", "both"):
        patient["age_years"] = None
    if missing in ("size", "both"):
        patient["tumor"]["size_cm"] = None
    return patient


# Tumor sizes: the thresholds and the values around them as often as uniform draws.
tumor_sizes = st.one_of(st.sampled_from(SIZES[1:]), st.floats(min_value=0.01, max_value=100))
