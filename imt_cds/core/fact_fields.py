"""The catalogue of input fact fields, read off the Pydantic models in ``facts``.

Rules refer to input facts by dotted path (``molecular.alk.status``). The rulebook loader, the compiler and the
error messages all need to know, for each path, what kind of value it holds and which values are allowed. Rather
than keep a second list that could drift from the models, this module derives it from them once.
"""

from __future__ import annotations

import operator
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel

from .facts import GENE_SYMBOL_PATTERN, FusionResult, Molecular, PatientFacts

__all__ = ["FactField", "FieldKind", "fact_fields", "fusion_genes", "keys_at", "leaf_values", "model_at", "set_path"]

FieldKind = Literal["enum", "boolean", "tristate", "number", "set", "gene", "text"]


@dataclass(frozen=True, slots=True)
class FactField:
    """One leaf of the patient facts.

    kind: ``enum`` (one of ``values``), ``boolean`` (true/false, never null), ``tristate`` (true/false/null),
    ``number``, ``set`` (a subset of ``values``), ``gene`` (a gene symbol, compared case-insensitively),
    ``text`` (opaque, never used by rules).
    """

    path: str
    kind: FieldKind
    nullable: bool
    default: Any
    values: tuple[str, ...] = ()
    minimum: float | None = None
    minimum_exclusive: bool = False
    maximum: float | None = None
    unit: str | None = None

    @property
    def usable_by_rules(self) -> bool:
        return self.kind != "text"

    @property
    def domain(self) -> tuple[Any, ...] | None:
        """The finite set of values the field can take (null last, when nullable), or None when it is not finite
        (numbers, gene symbols, sets, text)."""
        nulls: tuple[Any, ...] = (None,) if self.nullable else ()
        if self.kind == "enum":
            return self.values + nulls
        if self.kind in ("boolean", "tristate"):
            return (True, False) + nulls
        return None

    def allowed(self) -> str:
        """What the field accepts, as a short sentence for error messages."""
        null = ", or null" if self.nullable else ""
        if self.kind == "enum":
            return "one of " + ", ".join(self.values) + null
        if self.kind == "boolean":
            return "true or false (not null: leave the key out for the default)"
        if self.kind == "tristate":
            return "true, false, or null (not recorded)"
        if self.kind == "number":
            # A field may have either bound, both or none (a caller's own field): only the bounds it has are named.
            bounds = []
            if self.minimum is not None:
                bounds.append(f"{'>' if self.minimum_exclusive else '>='} {_num(self.minimum)}")
            if self.maximum is not None:
                bounds.append(f"<= {_num(self.maximum)}")
            if bounds:
                unit = f" {self.unit}" if self.unit else ""
                return f"a finite number {' and '.join(bounds)}{unit}{null}"
            unit = f" in {self.unit}" if self.unit else ""
            return f"any finite number{unit}{null}"
        if self.kind == "set":
            return "a list of values from " + ", ".join(self.values) + " (order and repeats do not matter)"
        if self.kind == "gene":
            return f"a gene symbol (letters, digits and hyphens, no blanks, e.g. RANBP2){null}"
        return f"a non-empty string of at most 256 characters{null}"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


_UNITS = {"age_years": "years", "tumor.size_cm": "cm"}


def _describe(path: str, annotation: Any, info: Any) -> FactField:
    nullable = False
    metadata = list(getattr(info, "metadata", []))
    for _ in range(3):  # peel Annotated[...] and Optional[...] in whichever order they were written
        if typing.get_origin(annotation) is typing.Annotated:
            annotation, *extra = typing.get_args(annotation)
            metadata += extra
        elif typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in typing.get_args(
            annotation
        ):
            nullable = True
            (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    default = info.default
    if origin is Literal:
        return FactField(path, "enum", nullable, default, values=tuple(typing.get_args(annotation)))
    if origin is frozenset:
        (element,) = typing.get_args(annotation)
        return FactField(path, "set", nullable, [], values=tuple(typing.get_args(element)))
    if annotation is bool:
        return FactField(path, "tristate" if nullable else "boolean", nullable, default)
    if annotation is float:
        low: float | None = None
        high: float | None = None
        low_exclusive = False
        for m in metadata:
            if isinstance(m, annotated_types.Ge):
                low = typing.cast(float, m.ge)  # (annotated_types types a bound as a protocol; the facts' are numbers)
            elif isinstance(m, annotated_types.Gt):
                low, low_exclusive = typing.cast(float, m.gt), True
            elif isinstance(m, annotated_types.Le):
                high = typing.cast(float, m.le)
        return FactField(path, "number", nullable, default, minimum=low, minimum_exclusive=low_exclusive,
                         maximum=high, unit=_UNITS.get(path))
    if annotation is str:
        is_gene = any(getattr(m, "pattern", None) == GENE_SYMBOL_PATTERN for m in metadata)
        return FactField(path, "gene" if is_gene else "text", nullable, default)
    raise TypeError(f"fact field {path} has a type the rulebook cannot use: {annotation!r}")


def _walk(model: type[BaseModel], prefix: str) -> typing.Iterator[FactField]:
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _walk(annotation, path + ".")
        else:
            yield _describe(path, info.rebuild_annotation(), info)


@cache
def fact_fields() -> Mapping[str, FactField]:
    """Every leaf field of ``PatientFacts`` by dotted path, in model order. Read-only: every caller shares it."""
    return types.MappingProxyType({f.path: f for f in _walk(PatientFacts, "")})


@cache
def _leaf_getter() -> operator.attrgetter[Any]:
    return operator.attrgetter(*fact_fields())


def leaf_values(facts: PatientFacts) -> tuple[Any, ...]:
    """Every leaf value of ``facts``, in ``fact_fields()`` order, read in one call (the hot path of an evaluation
    reads the facts once and renders them twice: canonical JSON for the hash, and the engine's patient fact)."""
    return _leaf_getter()(facts)  # type: ignore[no-any-return]


@cache
def fusion_genes() -> tuple[str, ...]:
    """The genes with a fusion result in ``molecular`` (``alk``, ``ros1``, ...), in model order."""
    return tuple(name for name, info in Molecular.model_fields.items()
                 if isinstance(info.annotation, type) and issubclass(info.annotation, FusionResult))


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    """Set ``value`` at a dotted path (``molecular.alk.status``) in nested dicts, creating the missing levels."""
    *parents, leaf = path.split(".")
    for part in parents:
        data = data.setdefault(part, {})
    data[leaf] = value


def model_at(path: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model class found at a location inside ``PatientFacts`` (None when the location is not a model)."""
    model: type[BaseModel] = PatientFacts
    for part in path:
        info = model.model_fields.get(part) if isinstance(part, str) else None
        annotation = info.annotation if info else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def keys_at(path: tuple[str | int, ...]) -> tuple[str, ...]:
    """The keys allowed in the object found at ``path`` (empty when it is not an object)."""
    model = model_at(path)
    return tuple(model.model_fields) if model else ()
