"""``imt-order-sign``: targeted-drug orders checked against the patient's alterations and the labelled ages.

For each draft MedicationRequest (or DSTU2 MedicationOrder) in ``context.draftOrders``, not one with
``doNotPerform: true`` (an order *not* to give the drug), that names a drug of the
rulebook's drug table (``drugs.yaml``: by RxNorm code first, then by name; see ``drugs``), the check reads the patient's
facts (from the same FHIR record as ``imt-patient-view``) and warns, with the reason, when:

- none of the drug's target alterations is documented positive: ``critical`` when every target was tested
  *negative* (the drug's target is documented absent), ``warning`` when some are *unknown* (no result on record);
- the patient is below the drug's labelled minimum age for every positive target whose labelled use has one (one
  labelled use that fits is enough: ``critical``, as the engine's FLAG_OFF_LABEL_AGE), or the age is not recorded
  while such a use has a minimum age (``warning``).

An order consistent with the record gets no card (a silent check is the right answer to a sound order). Orders
that name no targeted drug are ignored. Nothing here evaluates the rulebook: the alterations and age are facts, and
the labelled ages are the rulebook's own parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..core.drugs import find_drug
from ..core.rulebook import Drug, Rulebook
from ..core.wording import display_value as _value
from ..fhir.reader import bundle_resources, resource_label
from ..render.cards import (
    ServiceCard,
    card_uuid,
    citation_links,
    evidence_lines,
    fact_line,
    make_card,
    service_source,
)
from ..render.cards import escape_markdown as _md
from ..render.fhir_output import Indicator

__all__ = ["TargetedOrder", "check_orders", "targeted_orders"]

_MEDICATION_ORDERS = ("MedicationRequest", "MedicationOrder")  # MedicationOrder: DSTU2's name for it


@dataclass(frozen=True)
class TargetedOrder:
    where: str  # "MedicationRequest/draft-1"
    text: str  # how the order names the medication
    drug: Drug


def targeted_orders(draft_orders: Any, drugs: Mapping[str, Drug]) -> list[TargetedOrder]:
    """The draft orders that name a drug of ``drugs`` (the rulebook's drug table), read leniently from JSON:
    orders are not validated."""
    found = []
    for index, resource in enumerate(bundle_resources(draft_orders)):
        if not isinstance(resource, Mapping) or resource.get("resourceType") not in _MEDICATION_ORDERS:
            continue
        if resource.get("doNotPerform") is True:
            # "Do not give crizotinib" (a modifier of R4's MedicationRequest: true negates the order): no drug is
            # being ordered, and a card saying it was would be wrong. Any other value is checked as an order.
            continue
        texts, codings = _medication_texts(resource)
        drug = find_drug(drugs, texts, codings)
        if drug is not None:
            found.append(TargetedOrder(resource_label(resource, index), texts[0] if texts else drug.name, drug))
    return found


def _medication_texts(order: Mapping[str, Any]) -> tuple[list[str], list[tuple[str, str]]]:
    """The order's medication texts (text, coding displays) and codings (system, code), in the order found."""
    texts: list[str] = []
    codings: list[tuple[str, str]] = []

    def concept(value: Any) -> None:
        if isinstance(value, Mapping):
            if isinstance(value.get("text"), str):
                texts.append(value["text"])
            for coding in _list(value.get("coding")):
                if isinstance(coding, Mapping) and isinstance(coding.get("display"), str):
                    texts.append(coding["display"])
                if isinstance(coding, Mapping) and isinstance(coding.get("system"), str) \
                        and isinstance(coding.get("code"), str):
                    codings.append((coding["system"], coding["code"]))

    concept(order.get("medicationCodeableConcept"))
    reference = order.get("medicationReference")
    if isinstance(reference, Mapping):
        if isinstance(reference.get("display"), str):
            texts.append(reference["display"])
        ref = reference.get("reference")
        for contained in _list(order.get("contained")):
            if isinstance(contained, Mapping) and isinstance(ref, str) and ref == f"#{contained.get('id')}":
                concept(contained.get("code"))
    return texts, codings


def _list(value: Any) -> list[Any]:
    """A FHIR array as read leniently: anything but a list (absent, a number, an object) holds nothing."""
    return value if isinstance(value, list) else []


def check_orders(orders: Sequence[TargetedOrder], facts: Mapping[str, Any], sources: Mapping[str, Sequence[str]],
                 rulebook: Rulebook, *, check_id: str) -> list[dict[str, Any]]:
    """Cards for the targeted orders that the patient's facts do not support (none when every order fits)."""
    cards = []
    for order in orders:
        drug = order.drug
        statuses = {gene: facts["molecular"][gene]["status"] for gene in drug.targets}
        positive = [gene for gene, status in statuses.items() if status == "positive"]
        if not positive:
            cards.append(_not_positive(order, statuses, sources, rulebook, check_id))
            continue
        # The positive targets' labelled uses that have a minimum age. The order is within the label when any of
        # them fits, so it is checked against the youngest (on a tie, the first of the drug's targets): which
        # target the table lists first never changes the answer.
        labelled = [(rulebook.parameters[drug.label_min_age[gene]].value, index, gene)
                    for index, gene in enumerate(positive) if gene in drug.label_min_age]
        if not labelled:
            continue
        minimum, _, gene = min(labelled)
        age = facts.get("age_years")
        if age is None or age < minimum:
            cards.append(_age_card(order, gene, age, drug.label_min_age[gene], minimum, sources, rulebook, check_id))
    return cards


def _not_positive(order: TargetedOrder, statuses: Mapping[str, str], sources: Mapping[str, Sequence[str]],
                  rulebook: Rulebook, check_id: str) -> dict[str, Any]:
    drug = order.drug
    all_negative = all(status == "negative" for status in statuses.values())
    genes = " or ".join(g.upper() for g in drug.targets)
    found = ", ".join(f"{g.upper()} {s}" for g, s in statuses.items())
    name = drug.name.capitalize()
    if all_negative:  # every target: "ALK was", "ALK and ROS1 were" (not "ALK or ROS1 was": both were tested)
        tested = " and ".join(g.upper() for g in drug.targets)
        were, targets = ("were", "its targets are") if len(drug.targets) > 1 else ("was", "its target is")
        summary = f"{name} ordered, but {tested} {were} tested negative: {targets} absent."
    else:
        summary = f"{name} ordered, but no {genes} alteration is documented positive ({found})."
    why = [f"**{_md(order.text)}** ({_md(order.where)}) is {_article(drug.inhibitor_class)} {drug.inhibitor_class}: "
           f"its use rests on {genes} being positive.", "", "**On record:**"]
    for gene, status in statuses.items():
        why.append(fact_line(f"molecular.{gene}.status", status, sources))
    why += ["", "Confirm the molecular result (a fusion panel, FISH) before signing, or record why the drug is "
            "ordered without it."]
    return _card(order, ServiceCard.ORDER_TARGET_NOT_POSITIVE, "Target alteration not documented positive", summary,
                 Indicator.CRITICAL if all_negative else Indicator.WARNING, why, rulebook, check_id)


def _age_card(order: TargetedOrder, gene: str, age: float | None, parameter: str, minimum: float,
              sources: Mapping[str, Sequence[str]], rulebook: Rulebook, check_id: str) -> dict[str, Any]:
    name = order.drug.name.capitalize()
    label = f"labelled from age {_value(minimum)}"
    advice = "Use below the labelled age is off-label: review dosing and the evidence with the team."
    if age is None:
        code, indicator = ServiceCard.ORDER_AGE_UNKNOWN, Indicator.WARNING
        summary = f"{name} is {label} for {gene.upper()}-positive disease; the patient's age is not recorded."
        display = "Age not recorded for an age-labelled drug"
        advice = "Record the patient's age before signing. " + advice
    else:
        code, indicator = ServiceCard.ORDER_BELOW_LABELLED_AGE, Indicator.CRITICAL
        summary = f"{name} ordered below its labelled age: {label}; the patient is {_value(round(age, 2))} years old."
        display = "Ordered below the labelled age"
    why = [f"**{_md(order.text)}** ({_md(order.where)}): {name} is {label} for {gene.upper()}-positive disease "
           f"(rulebook parameter `{parameter}` = {_value(minimum)}).", "", "**On record:**",
           fact_line("age_years", age, sources), fact_line(f"molecular.{gene}.status", "positive", sources), "",
           advice]
    return _card(order, code, display, summary, indicator, why, rulebook, check_id)


def _card(order: TargetedOrder, code: ServiceCard, display: str, summary: str, indicator: Indicator,
          why: list[str], rulebook: Rulebook, check_id: str) -> dict[str, Any]:
    evidence = [rulebook.evidence[e].to_dict() for e in order.drug.evidence if e in rulebook.evidence]
    detail = list(why)
    if evidence:
        detail += ["", "**Evidence about the drug:**", *evidence_lines(evidence)]
    detail += ["", f"*Decision support, not a prescription.* Order check {check_id}."]
    return make_card(card_id=card_uuid(check_id, f"ORDER:{order.where}", code.value), summary=summary,
                     indicator=indicator, detail=detail, source=service_source(code, display),
                     links=citation_links(evidence))


def _article(word: str) -> str:
    return "an" if word[:1].upper() in "AEIOU" else "a"
