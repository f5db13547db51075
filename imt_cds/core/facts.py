"""Patient facts: the validated, immutable input of an evaluation (README, section Input).

The models here *are* the input contract. Everything else that needs to know which facts exist (the rulebook loader
checking fact paths, the compiler encoding facts for the engine, the error messages) reads it from these models
through ``fact_fields`` rather than keeping its own list, so the contract lives in one place.

Design choices, each from the contract:
- every model is frozen and forbids unknown keys (a typo such as ``alk_staus`` must be an error, not ignored);
- strict types: ``"5"`` is not an age, ``1`` is not ``true``; NaN and infinities are rejected;
- ``null`` is accepted only where the contract shows it; elsewhere leave the key out to get the default;
- ``methods`` is a set: order and repeats in the input do not matter, and it is dumped sorted so that the canonical
  form (and its hash) does not depend on them either.

This module validates shape and type only. Clinically inconsistent data is *valid* here: the rules flag it.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, field_serializer
from pydantic_core import PydanticCustomError

__all__ = [
    "AlkResult",
    "FusionResult",
    "History",
    "Molecular",
    "PatientFacts",
    "Symptoms",
    "Tumor",
]

FusionStatus = Literal["positive", "negative", "unknown"]
TestMethod = Literal["IHC", "FISH", "NGS_RNA", "NGS_DNA"]
AlkIhcPattern = Literal["cytoplasmic", "nuclear_membrane_or_perinuclear", "unknown"]
TumorSite = Literal["thoracic", "abdominal_pelvic", "head_neck", "genitourinary", "other", "unknown"]
Resectability = Literal["resectable", "resectable_only_with_mutilation", "unresectable", "unknown"]
MarginStatus = Literal["R0", "R1", "R2", "unknown"]

GENE_SYMBOL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9-]*$"


_METHODS = frozenset(typing.get_args(TestMethod))


def _method_set(value: Any) -> Any:
    # Strict mode would only accept a frozenset, which JSON cannot express: accept a list (or any collection) and
    # check each item here, so that an error names the item's position in the input, not in an unordered set.
    if not isinstance(value, (list, tuple, set, frozenset)):
        raise PydanticCustomError("method_set", "must be a list of test methods")
    try:
        methods = frozenset(value)
    except TypeError:  # an unhashable item (a list, an object): found and named below
        methods = None
    # The set's own check compares by equality, which an object that is not text can pass ("strict types": only
    # text names a method), so the fast path also checks the type, as the item by item check below does.
    if methods is not None and methods <= _METHODS and all(isinstance(method, str) for method in methods):
        return methods
    for index, item in enumerate(value):
        if not isinstance(item, str) or item not in _METHODS:
            raise PydanticCustomError("method_item", "item {index} is not a test method", {"index": index,
                                                                                        "item": item})
    return frozenset(value)


MethodSet = Annotated[frozenset[TestMethod], BeforeValidator(_method_set)]
GeneSymbol = Annotated[str, StringConstraints(pattern=GENE_SYMBOL_PATTERN, max_length=40)]


class _Facts(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


class FusionResult(_Facts):
    """Result of testing one kinase gene for a fusion (ROS1, NTRK1/2/3, RET, PDGFRB)."""

    status: FusionStatus = "unknown"
    methods: MethodSet = frozenset()
    fusion_partner: GeneSymbol | None = None

    @field_serializer("methods")
    def _sorted_methods(self, methods: frozenset[str]) -> list[str]:
        return sorted(methods)


class AlkResult(FusionResult):
    """ALK result; the only gene whose immunohistochemistry staining pattern is recorded."""

    ihc_pattern: AlkIhcPattern | None = None


class Molecular(_Facts):
    alk: AlkResult = AlkResult()
    ros1: FusionResult = FusionResult()
    ntrk: FusionResult = FusionResult()
    ret: FusionResult = FusionResult()
    pdgfrb: FusionResult = FusionResult()
    rna_fusion_panel_done: bool = False


class Tumor(_Facts):
    site: TumorSite = "unknown"
    size_cm: float | None = Field(default=None, gt=0, le=100, description="largest dimension in cm")
    resectability: Resectability = "unknown"
    distant_disease: bool | None = None
    epithelioid_morphology: bool = False


class Symptoms(_Facts):
    respiratory: bool | None = None


class History(_Facts):
    surgery_done: bool = False
    margin_status: MarginStatus | None = None
    recurrence: bool = False
    progressed_on_alk_inhibitor: bool = False
    progressed_on_prior_systemic: bool = False


class PatientFacts(_Facts):
    """Everything imt-cds knows about one patient. Every key is optional; the defaults are the fields' own."""

    patient_id: str | None = Field(default=None, min_length=1, max_length=256)
    age_years: float | None = Field(default=None, ge=0, le=120, description="age in years; 0.5 = six months")
    tumor: Tumor = Tumor()
    symptoms: Symptoms = Symptoms()
    molecular: Molecular = Molecular()
    history: History = History()
