"""A resource that carries a modifier element is never read as if it did not (hazard log H15).

FHIR lets a resource, and each BackboneElement in it, carry ``modifierExtension``: information "that modifies the
understanding of the element in which it is contained", usually a negation or a qualification, which "applications
processing a resource are required to check for" (R4, DomainResource and BackboneElement); ``implicitRules`` is a
modifier too. The reader understands none: the Patient that carries one refuses the chart; any other resource is not
used, and when it bears on a yes/no fact that cannot be unknown, nothing is evaluated. The small charts are those of
test_fhir_safety.py; the published charts of tests/fixtures/fhir-charts/ (unmodified on disk; one resource at a time
is given a modifier extension here) check that not using a resource is exactly reading the chart without it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from datetime import date
from pathlib import Path

import pytest

from imt_cds import evaluate, load_rulebook
from imt_cds.core.errors import ChartRefusedError
from imt_cds.fhir import reader
from imt_cds.fhir.reader import facts_from_bundle, resource_label
from test_fhir_safety import (
    ALK_GENE,
    LUNG_CANCER,
    M0,
    M1,
    ON,
    PATIENT,
    SNOMED,
    SURGERY,
    chart,
    fact,
    loinc_component,
    m_category,
    medication,
    read,
    size,
    variant,
    worse,
)

NEGATED = {"url": "https://example.org/fhir/StructureDefinition/negated", "valueBoolean": True}
WHY = "which this reader does not understand (FHIR: such an element may change what the resource means)"
CORPUS = Path(__file__).resolve().parent / "fixtures" / "fhir-charts"


def modified(resource: dict, element: str = "modifierExtension", value=None) -> dict:
    return {**copy.deepcopy(resource), element: [NEGATED] if value is None else value}


def without_modifiers(value):
    """The resource with every modifierExtension and implicitRules taken out, at any depth."""
    if isinstance(value, dict):
        return {k: without_modifiers(v) for k, v in value.items() if k not in ("modifierExtension", "implicitRules")}
    if isinstance(value, list):
        return [without_modifiers(v) for v in value]
    return value


# --- the patient --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "said"), [
    ({"modifierExtension": [NEGATED]}, f"modifierExtension {NEGATED['url']}"),
    ({"implicitRules": "https://example.org/rules"}, "implicitRules https://example.org/rules"),
    ({"modifierExtension": [{"valueBoolean": True}]}, "modifierExtension (without a url)"),
    ({"link": [{"other": {"reference": "Patient/p0"}, "type": "seealso", "modifierExtension": [NEGATED]}]},
     f"link[0].modifierExtension {NEGATED['url']}"),
])
def test_not_understood_a_patient_that_carries_a_modifier_element_refuses_the_chart(change, said):
    with pytest.raises(ChartRefusedError) as raised:
        read(chart(patient={**PATIENT, **change}))
    assert raised.value.reason == "patient_not_understood"
    assert raised.value.problems[0].message == (
        f"Patient/p1 carries {said}, which this reader does not understand: FHIR says such an element may change what "
        "the record means, so whose record it is, and whether it is in use, cannot be established; nothing is "
        "evaluated")
    # Empty, or on an element the reader does not read (Patient.contact), it changes nothing the reader uses.
    assert read(chart(patient={**PATIENT, "modifierExtension": []})).ok
    assert read(chart(patient={**PATIENT, "contact": [{"modifierExtension": [NEGATED]}]})).ok


def bundle(*resources, entry_change=None, changed=0):
    """A Bundle of the resources; ``entry_change`` is added to the entry of resource ``changed``."""
    entries = [{"fullUrl": f"urn:uuid:{i}", "resource": r} for i, r in enumerate(chart(*resources))]
    if entry_change:
        entries[changed].update(copy.deepcopy(entry_change))
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


@pytest.mark.parametrize(("entry_change", "said"), [
    ({"modifierExtension": [NEGATED]}, "Bundle entry's modifierExtension"),
    ({"request": {"method": "PUT", "url": "Patient/p1", "modifierExtension": [NEGATED]}},
     "Bundle entry's request.modifierExtension"),
])
def test_not_understood_the_bundle_entry_of_a_resource_modifies_it(entry_change, said):
    with pytest.raises(ChartRefusedError, match=f"Patient/p1 carries {said} {NEGATED['url']}, which") as raised:
        facts_from_bundle(bundle(entry_change=entry_change), ON)
    assert raised.value.reason == "patient_not_understood"
    result = facts_from_bundle(bundle(size("s", 3.5), entry_change=entry_change, changed=2), ON)
    assert result.ok and result.facts.tumor.size_cm is None
    assert [(p.where, p.message) for p in result.problems] == [
        ("Observation/s", f"Observation that carries {said} {NEGATED['url']}, {WHY}; skipped")]
    assert facts_from_bundle(bundle(size("s", 3.5)), ON).facts.tumor.size_cm == 3.5


# --- a resource about a fact that may be unknown: not used, and said -----------------------------------------------


def _size_component_modified():
    resource = size("s", 3.5)
    resource["component"][0]["modifierExtension"] = [NEGATED]
    return resource


@pytest.mark.parametrize(("resource", "said"), [
    (modified(size("s", 3.5)), f"modifierExtension {NEGATED['url']}"),  # (each of these is used when plain)
    (_size_component_modified(), f"component[0].modifierExtension {NEGATED['url']}"),
    (modified(size("s", 3.5), "implicitRules", "https://example.org/rules"), "implicitRules https://example.org/rules"),
    (modified(variant("s", ALK_GENE)), f"modifierExtension {NEGATED['url']}"),
    (modified(m_category("s", "http://snomed.info/sct", "1229903009")), f"modifierExtension {NEGATED['url']}"),
    (modified(fact("s", "tumor.resectability", valueString="unresectable")), f"modifierExtension {NEGATED['url']}"),
    (modified(medication("s")), f"modifierExtension {NEGATED['url']}"),  # an ALK inhibitor, with no progression
])
def test_not_understood_a_resource_that_carries_a_modifier_element_is_not_used_and_said(resource, said):
    result = read(chart(resource))
    without = read(chart())
    assert result.ok and result.facts == without.facts  # as if the chart did not hold it
    (problem,) = [p for p in result.problems if p.where == resource_label(resource, 2)]
    assert (problem.severity, problem.kind, problem.message) == (
        "warning", "skipped", f"{resource['resourceType']} that carries {said}, {WHY}; skipped")
    plain = without_modifiers(resource)
    assert "modifierExtension" not in json.dumps(plain) and "implicitRules" not in plain
    assert read(chart(plain)).facts != without.facts or plain["resourceType"] == "MedicationStatement"


def test_not_understood_beside_a_finding_of_the_same_time_the_fact_is_left_unknown():
    """Not used, a second tumour size may say anything: that it is not the tumour's, or that it is 5 cm. Beside it the
    first does not stand alone (two sizes read are a conflict too)."""
    result = read(chart(size("first", 3.5), modified(size("second", 5))))
    assert result.ok and result.facts.tumor.size_cm is None and "tumor.size_cm" not in result.sources
    assert [(p.where, p.kind, p.path, p.message) for p in result.problems] == [
        ("Observation/second", "skipped", None, f"Observation that carries modifierExtension {NEGATED['url']}, {WHY}; "
                                                "skipped"),
        ("Observation/second, Observation/first", "conflict", "tumor.size_cm",
         "tumor.size_cm left unknown: what Observation/second (undated) says is not read (see its own message), and "
         "it may differ from 3.5 (Observation/first (undated))")]
    assert read(chart(size("first", 3.5), size("second", 5))).facts.tumor.size_cm is None  # (read, they conflict)
    # Beside findings read that disagree among themselves, a conflict as any, which lists it.
    three = read(chart(size("first", 3.5), size("third", 4.5), modified(size("second", 5))))
    assert three.facts.tumor.size_cm is None
    assert [p.message for p in three.problems if p.kind == "conflict"] == [  # (listed by name: all are undated)
        "conflicting values for tumor.size_cm: 3.5 (Observation/first (undated)); a finding not used "
        "(Observation/second (undated)); 4.5 (Observation/third (undated)); left unknown"]
    # An M category of the same day: whether the patient has distant disease cannot be told.
    same_day = read(chart(m_category("m0", SNOMED, M0), modified(m_category("m1", SNOMED, M1))))
    assert same_day.ok and same_day.facts.tumor.distant_disease is None
    assert [p.where for p in same_day.problems if p.kind == "conflict"] == ["Observation/m1, Observation/m0"]


def test_not_understood_the_latest_finding_is_not_replaced_by_an_earlier_one():
    """Hazard H4 (wrong stage): a cM1 of this year that carries a modifier extension beside last year's cM0. Taken as
    absent, it would leave the cM0 standing and localised disease advised; not read, it leaves the stage unknown and
    staging requested (R07)."""
    m0 = m_category("m0", SNOMED, M0, when="2025-01-10")
    m1 = modified(m_category("m1", SNOMED, M1, when="2026-01-10"))
    result = read(chart(m0, m1))
    assert result.ok and result.facts.tumor.distant_disease is None
    (conflict,) = [p for p in result.problems if p.kind == "conflict"]
    assert (conflict.where, conflict.path, conflict.message) == (
        "Observation/m1, Observation/m0", "tumor.distant_disease",
        "tumor.distant_disease left unknown: what Observation/m1 on 2026-01-10 says is not read (see its own "
        f"message), and it may differ from M category {M0} (Observation/m0 on 2025-01-10); an earlier finding does "
        "not stand in place of a later one not read")
    assert "superseded" not in [p.kind for p in result.problems]
    assert "R07" in {f.rule.id for f in evaluate(result.facts).recommendations}
    assert read(chart(m0)).facts.tumor.distant_disease is False  # (alone, the cM0 is the stage)
    # Earlier than a finding that is read, one not read is outranked as any finding is, and said no more than skipped.
    later = read(chart(modified(m_category("m1", SNOMED, M1, when="2025-01-10")),
                       m_category("m0", SNOMED, M0, when="2026-01-10")))
    assert later.ok and later.facts.tumor.distant_disease is False
    assert [p.kind for p in later.problems] == ["skipped"]


def test_not_understood_and_malformed_a_resection_is_no_silent_no():
    """A resection that carries a modifier element and is malformed after it is known as one (its reasonReference)
    bears on history.surgery_done all the same: nothing is evaluated (it used to read as no surgery, unsaid)."""
    broken = {**copy.deepcopy(SURGERY), "reasonReference": {"reference": "Condition/imt"}}  # (must be a list)
    result = read(chart(modified(broken)))
    assert result.facts is None
    assert [(p.severity, p.kind, p.path) for p in result.problems] == [
        ("error", "unreadable", "history.surgery_done")]
    # Beside a resection that is read, the error alone is said (a fact that cannot be unknown is no conflict too).
    beside = read(chart({**copy.deepcopy(SURGERY), "id": "other"}, modified(broken)))
    assert [(p.where, p.severity, p.kind) for p in beside.problems] == [
        (resource_label(broken, 3), "error", "unreadable")]


def test_not_understood_and_malformed_a_staging_finding_is_not_replaced_by_an_earlier_one():
    """A cM1 of this year that carries a modifier element and is malformed after it is known as an M category (its
    value) still stands as the latest finding: the earlier cM0 does not stand in its place."""
    broken = modified({**m_category("m1", SNOMED, M1, when="2026-01-10"), "valueCodeableConcept": {"coding": M1}})
    result = read(chart(m_category("m0", SNOMED, M0, when="2025-01-10"), broken))
    assert result.ok and result.facts.tumor.distant_disease is None
    assert [(p.where, p.kind) for p in result.problems] == [
        ("Observation/m1", "skipped"), ("Observation/m1, Observation/m0", "conflict")]


def test_not_understood_another_primary_cancer_still_holds_its_findings_that_name_no_cancer():
    """Hazard H13 (wrong cancer): a lung cancer's Condition that carries a modifier element may or may not be the
    patient's; the chart may hold that cancer, so its cM1 that names no cancer is not read as the IMT's (taken as
    absent, the Condition left the cM1 to stage the IMT)."""
    result = read(chart(modified(LUNG_CANCER), m_category("m", SNOMED, M1)))
    assert result.ok and result.facts.tumor.distant_disease is None
    assert [(p.where, p.kind) for p in result.problems] == [
        ("Condition/nsclc", "skipped"), ("Observation/m", "skipped")]
    assert "another primary cancer (Condition/nsclc)" in result.problems[1].message
    assert read(chart(m_category("m", SNOMED, M1))).facts.tumor.distant_disease is True


def test_not_understood_a_condition_that_cannot_be_read_either_may_still_be_another_cancer():
    """A Condition that carries a modifier element and whose code cannot be read: what it is cannot be told, so, as a
    malformed one without the element, it may be another cancer of the chart, and a cM1 that names no cancer is not
    read as the IMT's."""
    broken = modified({**LUNG_CANCER, "code": {"coding": {"system": SNOMED, "code": "254637007"}}})
    result = read(chart(broken, m_category("m", SNOMED, M1)))
    assert result.ok and result.facts.tumor.distant_disease is None
    assert [(p.where, p.kind) for p in result.problems] == [
        ("Condition/nsclc", "skipped"), ("Observation/m", "skipped")]
    assert "a Condition that cannot be read, which may be another cancer (Condition/nsclc)" in \
        result.problems[1].message


def test_not_understood_a_resource_the_reader_would_not_use_is_left_unsaid():
    """A lipaemic CA-125 (a modifier extension of the kind a laboratory module defines) is nothing to the reader."""
    ca125 = modified({"resourceType": "Observation", "id": "ca125", "status": "final",
                      "subject": {"reference": "Patient/p1"},
                      "code": {"coding": [{"system": "http://loinc.org", "code": "10334-1"}]},
                      "valueQuantity": {"value": 356, "unit": "U/mL"}})
    result = read(chart(ca125))
    assert result.ok and result.problems == () and result.facts == read(chart()).facts


def test_not_understood_an_imt_condition_that_carries_one_is_no_diagnosis():
    result = read(chart(imt=modified(chart()[1])))
    assert (result.eligibility.eligible, result.eligibility.reason) == (False, "no_imt_diagnosis")
    assert [(p.where, p.message) for p in result.problems] == [
        ("Condition/imt", f"Condition that carries modifierExtension {NEGATED['url']}, {WHY}; skipped")]


# --- a resource about a yes/no fact: nothing is evaluated ----------------------------------------------------------


@pytest.mark.parametrize(("resource", "path"), [
    (modified(SURGERY), "history.surgery_done"),
    (modified(fact("s", "history.recurrence", valueBoolean=True)), "history.recurrence"),
    (modified(fact("s", "history.recurrence", valueBoolean=False)), "history.recurrence"),
])
def test_not_understood_one_about_a_yes_no_fact_stops_the_evaluation(resource, path):
    """Left out, the fact would read "no" (the contract has no unknown for it), whatever the modifier meant."""
    result = read(chart(resource))
    assert result.facts is None and result.eligibility.eligible
    assert [(p.where, p.severity, p.kind, p.path, p.message) for p in result.problems] == [
        (resource_label(resource, 2), "error", "unreadable", path,
         f"{resource['resourceType']} that carries modifierExtension {NEGATED['url']}, {WHY} about {path}, which "
         "cannot be left unknown, so nothing is evaluated")]


def test_not_understood_what_it_would_have_said_counts_not_only_what_its_reader_announced():
    """A second IMT Condition whose clinical status says recurrence bears on history.recurrence by what it would have
    offered (the Condition reader announces no fact beforehand, as the fact Observations and resections do): left
    out, recurrence would read "no"."""
    recurred = copy.deepcopy(chart()[1])
    recurred["id"] = "imt-2"
    recurred["clinicalStatus"]["coding"][0]["code"] = "recurrence"
    assert read(chart(recurred)).facts.history.recurrence is True
    result = read(chart(modified(recurred)))
    assert result.facts is None
    assert [(p.where, p.severity, p.path) for p in result.problems] == [
        ("Condition/imt-2", "error", "history.recurrence")]


def test_not_understood_a_medication_or_disease_status_beside_the_other_stops_the_evaluation():
    blocked = read(chart(modified(medication("crizotinib")), worse("worse")))
    assert blocked.facts is None
    assert [(p.where, p.severity, p.path, p.message) for p in blocked.problems if p.severity == "error"] == [
        ("MedicationStatement/crizotinib", "error", "history.progressed_on_alk_inhibitor",
         f"medication record that carries modifierExtension {NEGATED['url']}, {WHY} beside a progression: progression "
         "on an ALK inhibitor cannot be established, so nothing is evaluated")]
    blocked = read(chart(medication("crizotinib"), modified(worse("worse"))))
    assert blocked.facts is None
    assert [(p.where, p.severity, p.message) for p in blocked.problems if p.severity == "error"] == [
        ("Observation/worse", "error", f"disease status that carries modifierExtension {NEGATED['url']}, {WHY} beside "
         "an ALK inhibitor: progression on an ALK inhibitor cannot be established, so nothing is evaluated")]
    # Each alone changes nothing that cannot be unknown; a medication that is no ALK inhibitor, nothing at all.
    assert read(chart(modified(worse("worse")))).ok
    other_drug = read(chart(modified(medication("imatinib", code="282388")), worse("worse")))
    assert other_drug.ok and not any(p.where == "MedicationStatement/imatinib" for p in other_drug.problems)


@pytest.mark.parametrize("where", ["contained", "chart"])
def test_not_understood_a_referenced_medication_that_carries_one_makes_its_record_unusable(where):
    drug = {"resourceType": "Medication", "id": "m", "modifierExtension": [NEGATED],
            "code": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1148495"}]}}
    record = medication("crizotinib")
    del record["medicationCodeableConcept"]
    if where == "contained":
        record.update(contained=[drug], medicationReference={"reference": "#m"})
        said = f"MedicationStatement that carries contained[0].modifierExtension {NEGATED['url']}, {WHY}"
        resources = [record]
    else:
        record.update(medicationReference={"reference": "Medication/m"})
        said = (f"MedicationStatement whose medication Medication/m carries modifierExtension {NEGATED['url']}, "
                f"{WHY}")
        resources = [record, drug]
    result = read(chart(*resources, worse("worse")))
    assert result.facts is None
    assert [p.message for p in result.problems if p.severity == "error"] == [
        f"medication record{said.removeprefix('MedicationStatement')} beside a progression: progression on an ALK "
        "inhibitor cannot be established, so nothing is evaluated"]
    (warning,) = [p for p in read(chart(*resources)).problems]
    assert warning.message == f"{said}; skipped"
    # Without the modifier, the same records are an ALK inhibitor given, then progression on it.
    del drug["modifierExtension"]
    assert read(chart(*resources, worse("worse"))).facts.history.progressed_on_alk_inhibitor is True


def test_not_understood_a_significance_statement_that_carries_one_leaves_the_fusion_unknown():
    """Genomics Reporting states a variant's clinical significance in an implication Observation derivedFrom it:
    left out, a "benign" would be lost and the variant read as the tumour's fusion."""
    benign = {"resourceType": "Observation", "id": "implication", "status": "final",
              "subject": {"reference": "Patient/p1"}, "derivedFrom": [{"reference": "Observation/v"}],
              "code": {"coding": [{"system": "http://loinc.org", "code": "81252-9"}]},
              "component": [loinc_component("53037-8", "LA6675-8", "Benign")]}
    assert read(chart(variant("v", ALK_GENE), benign)).facts.molecular.alk.status == "unknown"
    result = read(chart(variant("v", ALK_GENE), modified(benign)))
    assert result.ok and result.facts.molecular.alk.status == "unknown"
    assert [p.message for p in result.problems if p.where == "Observation/v"] == [
        f"ALK variant present with a statement about it (Observation/implication) that carries modifierExtension "
        f"{NEGATED['url']}, which this reader does not understand: not read as the tumour's fusion (status left "
        "unknown)"]
    pathogenic = copy.deepcopy(benign)
    pathogenic["component"] = [loinc_component("53037-8", "LA6668-3", "Pathogenic")]
    assert read(chart(variant("v", ALK_GENE), pathogenic)).facts.molecular.alk.status == "positive"
    assert read(chart(variant("v", ALK_GENE), modified(pathogenic))).facts.molecular.alk.status == "unknown"


# --- published charts: not used is exactly not there ---------------------------------------------------------------


SHIPPED = load_rulebook()


def _read(bundle_json):
    return facts_from_bundle(bundle_json, date(2026, 12, 1), terminology=SHIPPED.terminology, drugs=SHIPPED.drugs,
                             diagnosis_attested=True)


def _published_charts() -> list[tuple[str, dict]]:
    """The corpus's Bundles that are read (not refused as published: several patients, or none)."""
    charts = []
    for entry in json.loads((CORPUS / "_index.json").read_text()):
        data = json.loads((CORPUS / entry["file"]).read_text())
        if data.get("resourceType") == "Bundle":
            try:
                _read(data)
            except ChartRefusedError:
                continue
            charts.append((entry["file"], data))
    return charts


PUBLISHED = _published_charts()


def _unknown_at(facts, paths):
    """The facts as data, with the values at ``paths`` taken out (to compare all the rest); None for no facts."""
    if facts is None:
        return None
    data = facts.model_dump(mode="json")
    for path in paths:
        *parents, leaf = path.split(".")
        node = data
        for part in parents:
            node = node[part]
        del node[leaf]
    return data


def _value_at(facts, path):
    value = facts.model_dump(mode="json")
    for part in path.split("."):
        value = value[part]
    return value


def test_not_understood_in_published_charts_a_resource_not_used_is_one_not_there():
    """Resources the reader reads in published charts (read as if their IMT diagnosis were attested, so that the facts
    are read), given a modifier extension one at a time: the chart reads as it does without that resource, or nothing
    is evaluated and every error that reading without it does not have is about that resource; but for the facts it
    leaves unknown. Those are of two kinds, each said in a message that names it: a finding not read that stands
    beside one that is read (a conflict), and, when it is another primary cancer, the findings that name no cancer
    (the chart may hold that cancer: not read as the IMT's). Each outcome but the conflict must occur, so that a
    corpus that no longer exercised one would fail here; no published chart holds two findings of one fact that both
    stand, and the small charts above test that one."""
    outcomes = {"not used": 0, "unsaid": 0, "stops the evaluation": 0, "left unknown": 0, "another cancer kept": 0}

    def about_it(problem, label):
        conflict = problem.kind == "conflict" and label in problem.where.split(", ")
        return (conflict and f"what {label} " in problem.message
                or "another primary cancer (" in problem.message and label in problem.message)

    for name, published in PUBLISHED:
        entries = published.get("entry") or []
        read_here = [i for i, e in enumerate(entries) if isinstance(e, dict) and isinstance(e.get("resource"), dict)
                     and e["resource"].get("resourceType") in reader._READ_TYPES]
        for position in read_here:
            label = resource_label(entries[position]["resource"], position)
            same = [i for i in read_here if resource_label(entries[i]["resource"], i) == label]  # (copies: all)
            without = {**published, "entry": [e for i, e in enumerate(entries) if i not in same]}
            for i in same:  # (in place and then put back: a Synthea chart is too large to copy for each)
                entries[i]["resource"]["modifierExtension"] = [NEGATED]
            try:
                got = _read(published)
            finally:
                for i in same:
                    del entries[i]["resource"]["modifierExtension"]
            expected = _read(without)
            said = [p for p in got.problems if p.where == label and NEGATED["url"] in p.message]
            if got.facts is None and expected.facts is not None:
                new_errors = [p for p in got.problems if p.severity == "error" and p not in expected.problems]
                assert new_errors and all(p.where == label or about_it(p, label) for p in new_errors), (
                    name, position, new_errors)
                outcomes["stops the evaluation"] += 1
                continue
            left = ({p.path for p in got.problems if about_it(p, label) and p.path is not None}
                    - {p.path for p in expected.problems if p.kind == "conflict" or "another primary" in p.message})
            assert got.eligibility == expected.eligibility, (name, position)
            assert _unknown_at(got.facts, left) == _unknown_at(expected.facts, left), (name, position)
            for path in left:
                assert _value_at(got.facts, path) in (None, "unknown"), (name, position, path)
            kept = any("another primary cancer (" in p.message for p in got.problems if p.path in left)
            outcomes["another cancer kept" if kept else "left unknown" if left else "not used" if said else
                     "unsaid"] += 1
    assert outcomes["not used"] >= 20 and outcomes["unsaid"] >= 20 and outcomes["stops the evaluation"] >= 1, outcomes
    assert outcomes["another cancer kept"] >= 1, outcomes


# --- the reader's state: what one resource may change is all put back ---------------------------------------------


def test_not_understood_every_field_of_the_reader_is_reading_state_or_not():
    """A field added to the reader must be put back around a resource not used (_READING_STATE) or be one that
    reading a resource does not change: a field in neither list fails here, so it cannot be forgotten."""
    not_state = {"on", "terminology", "chart", "drugs", "patient_label", "patient_keys", "resolved", "bearing",
                 "not_understood"}
    fields = {f.name for f in dataclasses.fields(reader._Reader)}
    assert fields == set(reader._READING_STATE) | not_state
    assert not set(reader._READING_STATE) & not_state
