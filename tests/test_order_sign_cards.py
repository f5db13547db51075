"""``imt-order-sign`` (service/order_sign.py) in process: which draft orders are read, every order of a request
checked, and the exact words of each kind of card (summary, indicator, topic and the detail above the drug's
evidence). Written for the planted mistakes of that module that the service tests did not see
(tests/mutation-survivors.md)."""

from __future__ import annotations

import uuid

import pytest

from imt_cds.render.cards import CARD_NAMESPACE, evidence_lines
from imt_cds.service.order_sign import check_orders, targeted_orders

GENES = ("alk", "ros1", "ntrk", "ret", "pdgfrb")
SOURCES = {"age_years": ["Patient/p1"], "molecular.alk.status": ["Observation/alk-1"]}


def facts(age, **statuses) -> dict:
    return {"age_years": age, "molecular": {gene: {"status": statuses.get(gene, "unknown")} for gene in GENES}}


def request(*resources) -> dict:
    return {"resourceType": "Bundle", "entry": [{"resource": resource} for resource in resources]}


def order(order_id: str, text: str, resource_type: str = "MedicationRequest") -> dict:
    return {"resourceType": resource_type, "id": order_id, "medicationCodeableConcept": {"text": text}}


def read(rulebook, *resources) -> list[tuple[str, str, str]]:
    return [(o.where, o.text, o.drug.name) for o in targeted_orders(request(*resources), rulebook.drugs)]


# --- which orders are read ------------------------------------------------------------------------------------------


def test_only_medication_orders_are_read_and_every_one_after_another_resource(rulebook):
    # A MedicationStatement names a drug the same way, but it is not an order; what follows it is still read.
    statement = order("s1", "Crizotinib 250 MG", "MedicationStatement")
    assert read(rulebook, statement, "not a resource", order("d1", "Alectinib 150 mg")) == [
        ("MedicationRequest/d1", "Alectinib 150 mg", "alectinib")]


def test_an_order_not_to_give_the_drug_is_no_order_of_it(rulebook):
    # MedicationRequest.doNotPerform true negates the request ("do not give crizotinib"): a card about crizotinib
    # being ordered would be wrong. Only a true boolean negates: anything else is read as the order it looks like.
    prohibition = {**order("d1", "Crizotinib 250 MG"), "doNotPerform": True}
    assert read(rulebook, prohibition, order("d2", "Alectinib 150 mg")) == [
        ("MedicationRequest/d2", "Alectinib 150 mg", "alectinib")]
    for value in (False, "true", None):
        assert read(rulebook, {**order("d1", "Crizotinib 250 MG"), "doNotPerform": value}) == [
            ("MedicationRequest/d1", "Crizotinib 250 MG", "crizotinib")], value


def test_a_medication_reference_is_read_by_its_display_and_only_its_own_contained_medication(rulebook):
    by_display = {"resourceType": "MedicationRequest", "id": "d2",
                  "medicationReference": {"reference": "Medication/m9", "display": "Lorlatinib 25 MG"}}
    assert read(rulebook, by_display) == [("MedicationRequest/d2", "Lorlatinib 25 MG", "lorlatinib")]
    # the reference points at the paracetamol: the crizotinib contained beside it is not this order's medication
    other = {"resourceType": "MedicationRequest", "id": "d3", "medicationReference": {"reference": "#pain"},
             "contained": [{"resourceType": "Medication", "id": "criz", "code": {"text": "crizotinib"}},
                           {"resourceType": "Medication", "id": "pain", "code": {"text": "paracetamol"}}]}
    assert read(rulebook, other) == []


@pytest.mark.parametrize("written", [
    "\uff4c\uff41\uff52\uff4f\uff54\uff52\uff45\uff43\uff54\uff49\uff4e\uff49\uff42",  # fullwidth letters
    "laro\u00adtrectinib 100 mg",  # a soft hyphen, as a word processor leaves it
    "laro\u200btrectinib",  # a zero-width space
    "LAROTRECTINIB\u2060",  # a word joiner after it
])
def test_a_drug_name_is_read_through_forms_and_characters_that_do_not_show(rulebook, written):
    # Each looks like "larotrectinib" on screen; none may slip a targeted drug past the check.
    assert read(rulebook, order("d1", written)) == [("MedicationRequest/d1", written, "larotrectinib")]


@pytest.mark.parametrize("medication", [
    {"medicationCodeableConcept": {"coding": 5, "text": "crizotinib"}},
    {"medicationCodeableConcept": {"coding": True}},
    {"medicationCodeableConcept": {"coding": {"system": "x", "code": "y"}}},
    {"medicationReference": {"reference": "#m"}, "contained": 5},
    {"medicationReference": {"reference": "#m"}, "contained": {"resourceType": "Medication", "id": "m"}},
    {"medicationReference": {"reference": "#m"}, "contained": [{"resourceType": "Medication", "id": "m",
                                                                 "code": {"coding": 7}}]},
])
def test_a_malformed_order_is_read_for_what_it_holds_never_an_error(rulebook, medication):
    # Orders are read leniently (they are not validated): an array given as another JSON type holds nothing.
    found = read(rulebook, {"resourceType": "MedicationRequest", "id": "d1", **medication})
    expected = [("MedicationRequest/d1", "crizotinib", "crizotinib")] if "text" in str(medication) else []
    assert found == expected


# --- every order of a request is checked ----------------------------------------------------------------------------


def test_each_order_is_checked_whatever_the_outcome_of_the_one_before(rulebook):
    orders = targeted_orders(request(order("a", "Larotrectinib"), order("b", "Crizotinib"),
                                     order("c", "Crizotinib")), rulebook.drugs)
    # larotrectinib: NTRK unknown (a card); then a crizotinib order whose ROS1 use has no labelled age (no card); then
    # the same for a patient below the ALK label: one card per order that does not fit, none skipped
    cards = check_orders(orders, facts(0.5, ros1="positive"), {}, rulebook, check_id="c")
    assert [c["source"]["topic"]["code"] for c in cards] == ["ORDER_TARGET_NOT_POSITIVE"]
    below = check_orders([orders[1], orders[0], orders[2]], facts(0.5, alk="positive"), {}, rulebook, check_id="c")
    assert [c["source"]["topic"]["code"] for c in below] == [
        "ORDER_BELOW_LABELLED_AGE", "ORDER_TARGET_NOT_POSITIVE", "ORDER_BELOW_LABELLED_AGE"]
    no_label = check_orders([orders[1], orders[0]], facts(0.5, ros1="positive"), {}, rulebook, check_id="c")
    assert [c["source"]["topic"]["code"] for c in no_label] == ["ORDER_TARGET_NOT_POSITIVE"]


# --- the words of each card -----------------------------------------------------------------------------------------

CRIZOTINIB = "**Crizotinib 250 MG Oral Capsule** (MedicationRequest/d1)"
ON_RECORD_ALK = "- `molecular.alk.status` is **{}** — from Observation/alk-1"
ROS1_UNKNOWN = "- `molecular.ros1.status` is **unknown** — no FHIR resource recorded it"

CASES = {
    "both targets negative": (facts(30, alk="negative", ros1="negative"), (
        "Crizotinib ordered, but ALK and ROS1 were tested negative: its targets are absent.", "critical",
        "ORDER_TARGET_NOT_POSITIVE", "Target alteration not documented positive", [
            f"{CRIZOTINIB} is an ALK/ROS1 inhibitor: its use rests on ALK or ROS1 being positive.", "",
            "**On record:**", ON_RECORD_ALK.format("negative"),
            "- `molecular.ros1.status` is **negative** — no FHIR resource recorded it", "",
            "Confirm the molecular result (a fusion panel, FISH) before signing, or record why the drug is ordered "
            "without it."])),
    "one target negative, one unknown": (facts(30, alk="negative"), (
        "Crizotinib ordered, but no ALK or ROS1 alteration is documented positive (ALK negative, ROS1 unknown).",
        "warning", "ORDER_TARGET_NOT_POSITIVE", "Target alteration not documented positive", [
            f"{CRIZOTINIB} is an ALK/ROS1 inhibitor: its use rests on ALK or ROS1 being positive.", "",
            "**On record:**", ON_RECORD_ALK.format("negative"), ROS1_UNKNOWN, "",
            "Confirm the molecular result (a fusion panel, FISH) before signing, or record why the drug is ordered "
            "without it."])),
    "below the labelled age": (facts(0.456, alk="positive"), (
        "Crizotinib ordered below its labelled age: labelled from age 1; the patient is 0.46 years old.", "critical",
        "ORDER_BELOW_LABELLED_AGE", "Ordered below the labelled age", [
            f"{CRIZOTINIB}: Crizotinib is labelled from age 1 for ALK-positive disease (rulebook parameter "
            "`crizotinib_min_age_years` = 1).", "",
            "**On record:**", "- `age_years` is **0.456** — from Patient/p1", ON_RECORD_ALK.format("positive"), "",
            "Use below the labelled age is off-label: review dosing and the evidence with the team."])),
    "age not recorded": (facts(None, alk="positive"), (
        "Crizotinib is labelled from age 1 for ALK-positive disease; the patient's age is not recorded.", "warning",
        "ORDER_AGE_UNKNOWN", "Age not recorded for an age-labelled drug", [
            f"{CRIZOTINIB}: Crizotinib is labelled from age 1 for ALK-positive disease (rulebook parameter "
            "`crizotinib_min_age_years` = 1).", "",
            "**On record:**", "- `age_years` is **null \\(not recorded\\)** — from Patient/p1",
            ON_RECORD_ALK.format("positive"), "",
            "Record the patient's age before signing. Use below the labelled age is off-label: review dosing and the "
            "evidence with the team."])),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_kind_of_card_says_exactly_this(rulebook, case):
    patient, (summary, indicator, code, display, why) = CASES[case]
    orders = targeted_orders(request(order("d1", "Crizotinib 250 MG Oral Capsule")), rulebook.drugs)
    (card,) = check_orders(orders, patient, SOURCES, rulebook, check_id="check-1")
    assert (card["summary"], card["indicator"]) == (summary, indicator)
    assert (card["source"]["topic"]["code"], card["source"]["topic"]["display"]) == (code, display)
    evidence = [rulebook.evidence[e].to_dict() for e in rulebook.drugs["crizotinib"].evidence]
    assert card["detail"] == "\n".join([*why, "", "**Evidence about the drug:**", *evidence_lines(evidence), "",
                                        "*Decision support, not a prescription.* Order check check-1."])


def test_a_drug_of_one_target_tested_negative_says_its_target_is_absent(rulebook):
    orders = targeted_orders(request(order("d1", "Alectinib 150 mg")), rulebook.drugs)
    (card,) = check_orders(orders, facts(30, alk="negative"), {}, rulebook, check_id="c")
    assert card["summary"] == "Alectinib ordered, but ALK was tested negative: its target is absent."
    assert card["detail"].startswith("**Alectinib 150 mg** (MedicationRequest/d1) is an ALK inhibitor: its use rests "
                                     "on ALK being positive.\n")


def test_a_drug_class_beginning_with_a_consonant_takes_a(rulebook):
    orders = targeted_orders(request(order("d1", "Larotrectinib")), rulebook.drugs)
    (card,) = check_orders(orders, facts(30, ntrk="negative"), {}, rulebook, check_id="c")
    assert card["detail"].startswith("**Larotrectinib** (MedicationRequest/d1) is a TRK inhibitor: ")


def test_an_order_cards_id_is_stable_and_names_the_order(rulebook):
    # uuid5 of "check id|ORDER:<order>|<card code>" (as a finding card's is of "evaluation|rule|code"): feedback on a
    # card refers to this id, so it must stay what earlier versions made, and differ between two orders.
    orders = targeted_orders(request(order("d1", "Crizotinib"), order("d2", "Crizotinib")), rulebook.drugs)
    cards = check_orders(orders, facts(30, alk="negative", ros1="negative"), {}, rulebook, check_id="check-1")
    assert [card["uuid"] for card in cards] == [
        str(uuid.uuid5(CARD_NAMESPACE, f"check-1|ORDER:MedicationRequest/{d}|ORDER_TARGET_NOT_POSITIVE"))
        for d in ("d1", "d2")]
