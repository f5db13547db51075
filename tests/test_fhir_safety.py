"""The FHIR path fails safe: right patient, right disease, right stage, alive, before any advice.

Each test here is named by a mitigation of the hazard log (docs/safety/hazard-log.md). The charts are small
hand-made ones around one question each; the published charts are tested in test_fhir_corpus.py.
"""

from __future__ import annotations

import copy
import json
import shutil
from datetime import date
from pathlib import Path

import pytest
import yaml

from imt_cds import Engine, load_rulebook
from imt_cds.core.errors import ChartRefusedError, InvalidInputError, RulebookError
from imt_cds.fhir.reader import facts_from_bundle, facts_from_resources, resource_label

ROOT = Path(__file__).resolve().parents[1]
ON = date(2026, 11, 21)
SNOMED = "http://snomed.info/sct"
AJCC = "http://cancerstaging.org"
ICDO3 = "http://terminology.hl7.org/CodeSystem/icd-o-3"
PATIENT = {"resourceType": "Patient", "id": "p1", "birthDate": "2016-02-03"}
IMT = {"resourceType": "Condition", "id": "imt", "subject": {"reference": "Patient/p1"},
       "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                      "code": "active"}]},
       "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                          "code": "confirmed"}]},
       "code": {"coding": [{"system": ICDO3, "code": "8825/1"}]}}
LUNG_CANCER = {"resourceType": "Condition", "id": "nsclc", "subject": {"reference": "Patient/p1"},
               "meta": {"profile": ["http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-primary-cancer-condition"]},
               "code": {"coding": [{"system": SNOMED, "code": "254637007",
                                    "display": "Non-small cell lung cancer (disorder)"}]},
               "bodySite": [{"coding": [{"system": SNOMED, "code": "39607008"}]}]}


def chart(*resources, patient=PATIENT, imt=IMT):
    return [copy.deepcopy(r) for r in (patient, imt, *resources) if r is not None]


def fact(resource_id, path, **value):
    return {"resourceType": "Observation", "id": resource_id, "status": "final", "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": "urn:imt-cds:fact", "code": path}]}, **value}


def m_category(resource_id, system, code, when="2026-01-10"):
    return {"resourceType": "Observation", "id": resource_id, "status": "final", "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": SNOMED, "code": "399387003"}]}, "effectiveDateTime": when,
            "valueCodeableConcept": {"coding": [{"system": system, "code": code}]}}


def secondary(resource_id, site="10200004", when="2026-01-10", **extra):
    return {"resourceType": "Condition", "id": resource_id, "subject": {"reference": "Patient/p1"},
            "meta": {"profile": ["http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-secondary-cancer-condition"]},
            "code": {"text": "metastasis"}, "bodySite": [{"coding": [{"system": SNOMED, "code": site}]}],
            "onsetDateTime": when, **extra}


def read(resources, **options):
    return facts_from_resources(resources, ON, **options)


# --- wrong patient ------------------------------------------------------------------------------------------------


def test_wrong_patient_a_chart_with_two_patients_is_refused():
    twin = {"resourceType": "Patient", "id": "p2", "birthDate": "2016-02-03"}
    with pytest.raises(ChartRefusedError, match="2 different patients") as raised:
        read(chart(twin))
    assert raised.value.reason == "several_patients"
    # The same Patient twice is one patient.
    assert read(chart(copy.deepcopy(PATIENT))).ok


@pytest.mark.parametrize("patient, reason", [(None, "no_patient"), ({"resourceType": "Patient"}, "patient_without_id")])
def test_wrong_patient_a_chart_without_an_identified_patient_is_refused(patient, reason):
    with pytest.raises(ChartRefusedError) as raised:
        read(chart(patient=patient))
    assert raised.value.reason == reason


def test_wrong_patient_the_patient_in_context_must_be_the_charts():
    assert read(chart(), patient_id="p1").ok
    with pytest.raises(ChartRefusedError, match="not the patient in context") as raised:
        read(chart(), patient_id="p9")
    assert raised.value.reason == "other_patient"


def test_wrong_patient_resources_about_anyone_else_or_no_one_are_skipped():
    other = fact("alk", "molecular.alk.status", valueString="positive")
    other["subject"]["reference"] = "Patient/someone-else"
    nobody = fact("resect", "tumor.resectability", valueString="unresectable")
    del nobody["subject"]
    result = read(chart(other, nobody))
    assert result.facts.molecular.alk.status == "unknown" and result.facts.tumor.resectability == "unknown"
    messages = {p.where: p.message for p in result.problems}
    assert "about Patient/someone-else, not Patient/p1" in messages["Observation/alk"]
    assert "subject reference" in messages["Observation/resect"]


def test_wrong_patient_an_imt_diagnosis_of_another_patient_does_not_make_a_chart_eligible():
    imt = copy.deepcopy(IMT)
    imt["subject"]["reference"] = "Patient/p2"
    result = read(chart(imt=imt))
    assert not result.eligibility.eligible and result.facts is None


def test_wrong_patient_urn_uuid_references_resolve_through_full_urls():
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:aaaa", "resource": {"resourceType": "Patient", "id": "p1"}},
        {"fullUrl": "urn:uuid:bbbb", "resource": {**copy.deepcopy(IMT), "subject": {"reference": "urn:uuid:aaaa"}}},
        {"fullUrl": "urn:uuid:cccc", "resource": {**fact("r", "tumor.resectability", valueString="unresectable"),
                                                   "subject": {"reference": "urn:uuid:aaaa"}}}]}
    result = facts_from_bundle(bundle, ON)
    assert result.ok and result.facts.tumor.resectability == "unresectable"
    assert result.eligibility.diagnosis.sources == ("Condition/imt",)


# --- wrong diagnosis ----------------------------------------------------------------------------------------------


def test_wrong_diagnosis_a_chart_without_an_imt_condition_is_not_evaluated():
    result = read(chart(LUNG_CANCER, imt=None))
    assert (result.eligibility.eligible, result.eligibility.reason, result.facts) == (False, "no_imt_diagnosis", None)
    assert "no IMT diagnosis" in result.eligibility.message


@pytest.mark.parametrize("element, code", [("verificationStatus", "refuted"),
                                           ("verificationStatus", "entered-in-error"),
                                           ("clinicalStatus", "resolved")])
def test_wrong_diagnosis_a_refuted_erroneous_or_resolved_imt_condition_does_not_count(element, code):
    imt = copy.deepcopy(IMT)
    imt[element]["coding"][0]["code"] = code
    result = read(chart(imt=imt))
    assert not result.eligibility.eligible and result.facts is None


def test_wrong_diagnosis_the_imt_code_may_come_from_the_mcode_morphology_extension():
    imt = copy.deepcopy(IMT)
    imt["code"] = {"coding": [{"system": SNOMED, "code": "363346000", "display": "Malignant neoplastic disease"}]}
    imt["extension"] = [{"url": "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-histology-morphology-behavior",
                         "valueCodeableConcept": {"coding": [{"system": ICDO3, "code": "8825/1"}]}}]
    result = read(chart(imt=imt))
    assert result.eligibility.eligible and result.eligibility.diagnosis.basis == "coded"
    assert result.eligibility.diagnosis.codes == (f"{ICDO3}|8825/1",)


def test_wrong_diagnosis_a_text_only_diagnosis_counts_but_is_flagged_and_a_negated_one_does_not():
    imt = copy.deepcopy(IMT)
    imt["code"] = {"text": "Inflammatory myofibroblastic tumour of the lung"}
    result = read(chart(imt=imt))
    assert result.eligibility.eligible and result.eligibility.diagnosis.basis == "text"
    assert any(p.kind == "weak" and "text only" in p.message for p in result.problems)
    assert "text only" in result.eligibility.message
    name = "inflammatory myofibroblastic tumor"
    for doubtful in (f"Rule out {name}", f"No evidence of {name}", f"{name} excluded", f"No {name}",
                     f"Rule-out {name}", f"{name} ruled-out", f"{name} (negative)", f"Non-{name}",
                     f"{name}-like lesion", f"Mother with {name}", f"{name} vs nodular fasciitis",
                     f"Concern for {name}", f"Query {name}", f"Presumed {name}", f"{name}, unlikely",
                     f"DDx: {name}", f"Evaluate for {name}", f"Rule\u200bout {name}", f"Ｒｕｌｅ ｏｕｔ {name}",
                     f"Suspicious for {name}", f"{name}?"):
        imt["code"] = {"text": doubtful}
        result = read(chart(imt=imt))
        assert (result.eligibility.eligible, result.eligibility.reason) == (False, "no_imt_diagnosis"), doubtful
    # Invisible characters and fullwidth letters do not hide the name either.
    for disguised in ("Inflammatory\u200b myofibroblastic tumor", "Ｉｎｆｌａｍｍａｔｏｒｙ myofibroblastic tumor"):
        imt["code"] = {"text": disguised}
        assert read(chart(imt=imt)).eligibility.diagnosis.basis == "text", disguised


def test_wrong_diagnosis_a_text_seen_before_gets_the_same_verdict_and_the_texts_remembered_are_bounded():
    # A value set remembers its verdict per text (charts repeat the same displays): a negated text that begins like
    # a plain one must not inherit its verdict, in either order, and a stream of distinct texts must not grow it.
    value_set = load_rulebook().terminology["imt-diagnosis"]
    plain, negated = "Inflammatory myofibroblastic tumor", "Inflammatory myofibroblastic tumor excluded"
    for _ in range(2):
        assert value_set.names_in_text(plain) and not value_set.names_in_text(negated)
        assert not value_set.names_in_text(negated + " ") and value_set.names_in_text(plain + " ")
    long_text = "Inflammatory myofibroblastic tumor " + "of the lung " * 60
    assert value_set.names_in_text(long_text) and not value_set.names_in_text(long_text + " ruled out")
    assert long_text not in value_set._named  # long texts are searched each time, never kept
    for number in range(3000):
        assert value_set.names_in_text(f"inflammatory myofibroblastic tumour {number}")
    assert len(value_set._named) <= 1024
    imt = copy.deepcopy(IMT)
    imt["code"] = {"text": negated}
    assert not read(chart(imt=imt)).eligibility.eligible


def test_wrong_diagnosis_the_value_set_is_the_rulebooks_and_an_institution_can_extend_it(tmp_path):
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    local = {"system": "urn:oid:2.16.840.1.113883.3.999.1", "code": "IMT-LOCAL"}
    imt = copy.deepcopy(IMT)
    imt["code"] = {"coding": [local]}
    shipped = load_rulebook()
    assert not read(chart(imt=imt), terminology=shipped.terminology).eligibility.eligible
    path = rules / "terminology" / "imt-diagnosis.yaml"
    path.write_text(path.read_text().replace("codes:\n", "codes:\n  - system: \"urn:oid:2.16.840.1.113883.3.999.1\"\n"
                                             "    code: \"IMT-LOCAL\"\n    display: \"IMT (local code)\"\n"
                                             "    source: \"the institution's terminology service\"\n", 1))
    extended = load_rulebook(rules)
    assert extended.sha256 != shipped.sha256  # the hash covers the value sets
    result = read(chart(imt=imt), terminology=extended.terminology)
    assert (result.eligibility.eligible
            and result.eligibility.diagnosis.codes == ("urn:oid:2.16.840.1.113883.3.999.1|IMT-LOCAL",))


def test_wrong_diagnosis_a_value_set_code_without_its_source_is_refused_at_load(tmp_path):
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    path = rules / "terminology" / "imt-diagnosis.yaml"
    data = yaml.safe_load(path.read_text())
    del data["codes"][0]["source"]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(RulebookError, match=r"imt-diagnosis.yaml.*codes\[0\]\.source|source must be non-empty text"):
        load_rulebook(rules)


def test_wrong_diagnosis_the_other_cancer_of_a_patient_is_not_taken_as_the_imt():
    result = read(chart(LUNG_CANCER))
    assert result.ok and result.facts.tumor.site == "unknown"  # the lung cancer's site is not the IMT's
    assert result.facts.tumor.distant_disease is None  # nor is it a metastasis
    surgery = {"resourceType": "Procedure", "id": "lobectomy", "status": "completed", "subject": {"reference":
               "Patient/p1"}, "code": {"coding": [{"system": SNOMED, "code": "359615001"}]},
               "reasonReference": [{"reference": "Condition/nsclc"}]}
    result = read(chart(LUNG_CANCER, surgery))
    assert result.facts.history.surgery_done is False  # the lung cancer's lobectomy is not IMT surgery
    assert any("not for the IMT" in p.message for p in result.problems)
    surgery["reasonReference"] = [{"reference": "Condition/imt"}]
    assert read(chart(LUNG_CANCER, surgery)).facts.history.surgery_done is True


def test_wrong_diagnosis_references_between_resources_resolve_through_full_urls_too():
    """A transaction Bundle names the IMT Condition a surgery was for by its urn:uuid fullUrl."""
    surgery = {"resourceType": "Procedure", "id": "resection", "status": "completed",
               "subject": {"reference": "urn:uuid:p"}, "code": {"coding": [{"system": SNOMED, "code": "359615001"}]},
               "reasonReference": [{"reference": "urn:uuid:c"}]}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:p", "resource": copy.deepcopy(PATIENT)},
        {"fullUrl": "urn:uuid:c", "resource": {**copy.deepcopy(IMT), "subject": {"reference": "urn:uuid:p"}}},
        {"fullUrl": "urn:uuid:s", "resource": surgery}]}
    result = facts_from_bundle(bundle, ON)
    assert result.facts.history.surgery_done is True
    assert result.sources["history.surgery_done"] == ("Procedure/resection",)


def test_wrong_diagnosis_an_attested_diagnosis_is_evaluated_and_recorded_in_the_provenance():
    result = read(chart(LUNG_CANCER, imt=None), diagnosis_attested=True)
    assert result.ok and result.eligibility.reason == "diagnosis_attested"
    document = Engine().evaluate(result.facts, diagnosis=result.eligibility.diagnosis.to_dict()).to_dict()
    assert document["provenance"]["diagnosis"] == {"basis": "attested", "sources": [], "codes": [], "attested": True}
    plain = Engine().evaluate(result.facts).to_dict()
    assert "diagnosis" not in plain["provenance"]


# --- deceased -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("death", [{"deceasedBoolean": True}, {"deceasedDateTime": "2020-05-01"}])
def test_deceased_a_deceased_patient_is_not_evaluated_even_when_attested(death):
    patient = {**PATIENT, **death}
    for attested in (False, True):
        result = read(chart(patient=patient), diagnosis_attested=attested)
        assert (result.eligibility.eligible, result.eligibility.reason, result.facts) == (False, "deceased", None)
        assert "deceased" in result.eligibility.message
    assert read(chart(patient={**PATIENT, "deceasedBoolean": False})).ok


# --- wrong or stale stage -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("system, code, distant", [
    (SNOMED, "1229901006", False), (AJCC, "cM0", False), (AJCC, "pM0", False), (SNOMED, "1229903009", True),
    (SNOMED, "1229916009", True)])
def test_stage_the_m_category_is_read_in_snomed_and_ajcc_codings(system, code, distant):
    result = read(chart(m_category("m", system, code)))
    assert result.facts.tumor.distant_disease is distant
    assert result.sources["tumor.distant_disease"] == ("Observation/m",)


def test_stage_a_later_metastasis_outranks_an_earlier_m0_and_the_message_says_what_was_found():
    result = read(chart(m_category("m0", SNOMED, "1229901006", "2026-01-10"), secondary("brain", "12738006",
                                                                                      "2026-02-12")))
    assert result.facts.tumor.distant_disease is True
    assert result.sources["tumor.distant_disease"] == ("Condition/brain",)
    (superseded,) = [p for p in result.problems if p.kind == "superseded"]
    assert superseded.where == "Observation/m0" and "2026-01-10" in superseded.message
    assert "2026-02-12" in superseded.message
    # And the other way round: a later M0 outranks an earlier finding.
    result = read(chart(m_category("m0", SNOMED, "1229901006", "2026-03-01"), secondary("brain", "12738006",
                                                                                      "2026-02-12")))
    assert result.facts.tumor.distant_disease is False


def test_stage_findings_of_the_same_time_that_disagree_are_a_conflict_that_names_them():
    result = read(chart(m_category("m0", SNOMED, "1229901006", "2026-02"), secondary("brain", "12738006",
                                                                                   "2026-02-12")))
    assert result.facts.tumor.distant_disease is None
    (conflict,) = [p for p in result.problems if p.kind == "conflict"]
    assert "M category 1229901006" in conflict.message and "a secondary (metastatic) tumour" in conflict.message
    assert "Observation/m0" in conflict.message and "Condition/brain" in conflict.message


def test_stage_a_regional_lymph_node_secondary_is_not_distant_disease():
    result = read(chart(secondary("node", "59441001")))
    assert result.facts.tumor.distant_disease is None
    assert any("lymph node" in p.message for p in result.problems)


@pytest.mark.parametrize("status", [
    {"verificationStatus": {"coding": [{"code": "refuted"}]}},
    {"verificationStatus": {"coding": [{"code": "provisional"}]}},
    {"clinicalStatus": {"coding": [{"code": "resolved"}]}}])
def test_stage_a_refuted_provisional_or_resolved_metastasis_does_not_set_distant_disease(status):
    result = read(chart(secondary("brain", "12738006", **status)))
    assert result.facts.tumor.distant_disease is None


def test_stage_a_metastasis_of_another_cancer_is_not_the_imts():
    brain = secondary("brain", "12738006", extension=[{
        "url": "http://hl7.org/fhir/StructureDefinition/condition-related",
        "valueReference": {"reference": "Condition/nsclc"}}])
    result = read(chart(brain, LUNG_CANCER))
    assert result.facts.tumor.distant_disease is None
    brain["extension"][0]["valueReference"]["reference"] = "Condition/imt"
    assert read(chart(brain, LUNG_CANCER)).facts.tumor.distant_disease is True


def unprofiled(resource_id, code=None, text=None, when="2026-02-12", **extra):
    """A secondary tumour as an EHR records one: coded (or worded) as such, without mCODE's profile, no body site,
    naming no primary."""
    concept = {"text": text} if code is None else {"coding": [{"system": code[0], "code": code[1]}]}
    return {"resourceType": "Condition", "id": resource_id, "subject": {"reference": "Patient/p1"}, "code": concept,
            "onsetDateTime": when, **extra}


ICD10CM_CODE = "http://hl7.org/fhir/sid/icd-10-cm"
WHO_ICD10 = "http://hl7.org/fhir/sid/icd-10"


@pytest.mark.parametrize("code, text", [
    ((ICD10CM_CODE, "C78.01"), None), ((ICD10CM_CODE, "C79.51"), None), ((ICD10CM_CODE, "C79"), None),
    ((ICD10CM_CODE, "C79.63"), None),  # ICD-10-CM: lung, bone, a header, a code added since mCODE's list
    ((WHO_ICD10, "C78.0"), None), ((WHO_ICD10, "C79.3"), None),  # WHO ICD-10: lung, brain
    ((SNOMED, "94225005"), None), ((SNOMED, "128462008"), None),  # SNOMED CT: brain (mCODE's example), the root
    (None, "Lung metastases"), (None, "Metastatic disease to the liver"),
    (None, "Secondary malignant neoplasm of liver"), (None, "Liver secondaries"),
    (None, "Lymphangitic metastases of the lung"),  # (spread through the lung's lymphatics: not a lymph node)
])
def test_stage_a_metastasis_without_the_profile_is_known_by_its_code_or_words(code, text):
    """An EHR seldom profiles a metastasis: coded or named as one, a later one outranks an earlier M0 as a profiled
    one does, and a weak warning says what it was read from."""
    result = read(chart(m_category("m0", SNOMED, "1229901006", "2026-01-10"), unprofiled("met", code, text)))
    assert result.facts.tumor.distant_disease is True
    assert result.sources["tumor.distant_disease"] == ("Condition/met",)
    assert [(p.where, p.kind, p.path) for p in result.problems] == [
        ("Condition/met", "weak", "tumor.distant_disease"), ("Observation/m0", "superseded", "tumor.distant_disease")]
    assert result.problems[0].message == (
        "secondary tumour known by its code or words (not mCODE's SecondaryCancerCondition profile) and naming no "
        "primary: read as the IMT's distant disease; confirm it")


@pytest.mark.parametrize("code, text", [
    ((ICD10CM_CODE, "C77.3"), None),  # a lymph node (axilla), which may be regional
    ((ICD10CM_CODE, "C7B.02"), None),  # a secondary carcinoid tumour of liver: its primary is named, not an IMT
    (None, "No distant metastases"), (None, "Metastasis ruled out"), (None, "Non-metastatic"),
    (None, "Suspected lung metastasis"), (None, "Possible liver metastases"), (None, "Lung metastasis?"),
    (None, "Metastasis in a lymph gland"), (None, "Metastatic nodal disease"),
    (None, "Family history of metastatic disease"), (None, "Metastatic work-up"),
    (None, "Evaluation for metastases"), (None, "Liver lesion: abscess vs metastasis"),
    (None, "Metastatic lung cancer"),  # another primary cancer, which is not the IMT's metastasis
    (None, "Rare distant metastases"), (None, "Tumour with metastatic potential"),
])
def test_stage_words_or_codes_that_place_no_metastasis_outside_the_lymph_nodes_make_no_secondary(code, text):
    result = read(chart(m_category("m0", SNOMED, "1229901006", "2026-01-10"), unprofiled("met", code, text)))
    assert "Condition/met" not in result.sources.get("tumor.distant_disease", ())
    assert not [p for p in result.problems if p.where == "Condition/met"]


def test_stage_a_metastasis_without_the_profile_that_names_the_imt_as_its_primary_needs_no_warning():
    named = unprofiled("met", (ICD10CM_CODE, "C78.01"), extension=[{
        "url": "http://hl7.org/fhir/StructureDefinition/condition-related",
        "valueReference": {"reference": "Condition/imt"}}])
    result = read(chart(named, LUNG_CANCER))  # (its primary named: another cancer in the chart does not matter)
    assert result.facts.tumor.distant_disease is True
    assert result.sources["tumor.distant_disease"] == ("Condition/met",)
    assert [p for p in result.problems if p.where == "Condition/met"] == []


def test_stage_a_metastasis_without_the_profile_beside_another_primary_is_not_the_imts_wherever_it_is_listed():
    # (listed before the other cancer: secondary tumours are read once every primary is known)
    for resources in ((unprofiled("met", (ICD10CM_CODE, "C78.01")), LUNG_CANCER),
                      (LUNG_CANCER, unprofiled("met", (ICD10CM_CODE, "C78.01")))):
        result = read(chart(*resources))
        assert result.facts.tumor.distant_disease is None
        assert [(p.where, p.message) for p in result.problems] == [(
            "Condition/met", "secondary tumour that names no primary (extension condition-related), in a chart that "
            "holds another primary cancer (Condition/nsclc); not used for staging: name its primary")]


@pytest.mark.parametrize("status, said", [
    ({"verificationStatus": {"coding": [{"code": "refuted"}]}}, "verification status refuted; not used"),
    ({"verificationStatus": {"coding": [{"code": "provisional"}]}},
     "secondary tumour not confirmed (verification status provisional); not used for staging"),
    ({"clinicalStatus": {"coding": [{"code": "resolved"}]}}, "clinical status resolved; not used"),
])
def test_stage_a_metastasis_without_the_profile_refuted_provisional_or_resolved_is_not_used(status, said):
    result = read(chart(m_category("m0", SNOMED, "1229901006", "2026-01-10"),
                        unprofiled("met", (ICD10CM_CODE, "C78.01"), **status)))
    assert result.facts.tumor.distant_disease is False
    assert [(p.where, p.message) for p in result.problems] == [("Condition/met", said)]


def metastatic_imt(text=None, coding=None, morphology_text=None, **extra):
    """The IMT's own Condition (coded 8825/1) whose code carries words or a second coding, or whose mCODE morphology
    carries words."""
    imt = copy.deepcopy(IMT)
    if text is not None:
        imt["code"]["text"] = text
    if coding is not None:
        imt["code"]["coding"].append({"system": coding[0], "code": coding[1]})
    if morphology_text is not None:
        imt["extension"] = [{"url": "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-histology-morphology-behavior",
                             "valueCodeableConcept": {"text": morphology_text}}]
    return {**imt, **extra}


METASTATIC_IMT_WARNING = ("the IMT's Condition names a metastasis in its code or words: read as distant disease; "
                          "confirm it (an M category says it best)")


@pytest.mark.parametrize("said", [
    {"text": "Metastatic inflammatory myofibroblastic tumour"},
    {"text": "Inflammatory myofibroblastic tumor of lung with liver metastases"},
    {"text": "Distant metastasis of inflammatory myofibroblastic tumor"},  # (the words of a metastasis, unprofiled)
    {"coding": (ICD10CM_CODE, "C78.7")},  # a liver metastasis, coded beside the IMT's own code
    {"morphology_text": "Inflammatory myofibroblastic tumour, metastatic"},
])
def test_stage_the_imts_own_condition_naming_a_metastasis_is_distant_disease(said):
    """A problem list says "metastatic IMT" more often than it records an M category: the chart's own word is read,
    weakly, and never left for an M0 to contradict in silence."""
    result = read(chart(imt=metastatic_imt(**said)))
    assert result.facts.tumor.distant_disease is True
    assert result.sources["tumor.distant_disease"] == ("Condition/imt",)
    assert [(p.where, p.kind, p.message) for p in result.problems] == [
        ("Condition/imt", "weak", METASTATIC_IMT_WARNING)]


@pytest.mark.parametrize("when", ["2025-06-01", "2026-11-01"])
def test_stage_an_m0_of_any_date_beside_the_imts_own_word_metastatic_is_a_conflict(when):
    """The Condition's dates are the tumour's, not those of its spread: the word stands beside an M category of any
    date, so an M0 leaves distant disease unknown (and staging requested); an M1 agrees."""
    imt = metastatic_imt("Metastatic inflammatory myofibroblastic tumour", onsetDateTime="2025-01-01",
                         recordedDate="2025-01-02")
    result = read(chart(m_category("m0", SNOMED, "1229901006", when), imt=imt))
    assert result.facts.tumor.distant_disease is None
    conflicts = [p for p in result.problems if p.kind == "conflict"]
    # (the findings listed by date, the undated last)
    assert [(p.where, p.path) for p in conflicts] == [("Observation/m0, Condition/imt", "tumor.distant_disease")]
    assert "the IMT's Condition names a metastasis (Condition/imt (undated))" in conflicts[0].message
    assert not [p for p in result.problems if p.kind == "superseded"]
    assessment = Engine().evaluate(result.facts)
    assert "R07" in {finding.rule.id for finding in assessment.recommendations}
    agreeing = read(chart(m_category("m1", SNOMED, "1229903009", when), imt=imt))
    assert agreeing.facts.tumor.distant_disease is True
    assert agreeing.sources["tumor.distant_disease"] == ("Observation/m1", "Condition/imt")


@pytest.mark.parametrize("text", [
    "Inflammatory myofibroblastic tumour, no metastases", "Inflammatory myofibroblastic tumour, non-metastatic",
    "Inflammatory myofibroblastic tumour with nodal metastases", "Inflammatory myofibroblastic tumour with lymph node "
    "metastasis", "Inflammatory myofibroblastic tumour; possible lung metastases", "IMT: metastatic work-up",
    # what the tumour may do, not what it did (WHO's category of IMT; a review's words)
    "Inflammatory myofibroblastic tumour, intermediate (rarely metastasizing)",
    "Inflammatory myofibroblastic tumour with metastatic potential",
    "Inflammatory myofibroblastic tumour (low metastatic rate)",
])
def test_stage_the_imts_own_words_that_place_no_metastasis_outside_the_lymph_nodes_leave_the_stage_alone(text):
    result = read(chart(m_category("m0", SNOMED, "1229901006"), imt=metastatic_imt(text)))
    assert result.facts.tumor.distant_disease is False
    assert result.sources["tumor.distant_disease"] == ("Observation/m0",)
    assert not result.problems


def test_stage_the_imts_own_word_metastatic_in_remission_is_not_used_for_staging():
    remission = metastatic_imt("Metastatic inflammatory myofibroblastic tumour", clinicalStatus={"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "remission"}]})
    result = read(chart(m_category("m0", SNOMED, "1229901006"), imt=remission))
    assert result.facts.tumor.distant_disease is False
    assert [(p.where, p.message) for p in result.problems] == [(
        "Condition/imt", "the IMT's Condition names a metastasis, with clinical status remission; not used for "
        "staging")]


def test_stage_mcodes_history_of_metastatic_cancer_is_read():
    mcode = ROOT / "tests" / "fixtures" / "mcode-4.0.0"
    history = json.loads((mcode / "Observation-history-of-cancer-metastatic-to-liver.json")
                         .read_text())
    history["subject"]["reference"] = "Patient/p1"
    assert read(chart(history)).facts.tumor.distant_disease is True
    none = {**history, "id": "none", "valueBoolean": False}
    assert read(chart(none)).facts.tumor.distant_disease is False


# --- facts from standard codes ------------------------------------------------------------------------------------


def test_recurrence_comes_from_the_imt_conditions_clinical_status():
    imt = copy.deepcopy(IMT)
    imt["clinicalStatus"]["coding"][0]["code"] = "recurrence"
    assert read(chart(imt=imt)).facts.history.recurrence is True
    assert read(chart()).facts.history.recurrence is False


def variant(resource_id, gene_coding, present=True):
    return {"resourceType": "Observation", "id": resource_id, "status": "final", "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": "http://loinc.org", "code": "69548-6"}]},
            "valueCodeableConcept": {"coding": [{"system": "http://loinc.org",
                                                 "code": "LA9633-4" if present else "LA9634-2"}]},
            "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "48018-6"}]},
                           "valueCodeableConcept": gene_coding}]}


def test_fusion_genes_by_hgnc_code_with_or_without_prefix_and_by_symbol_text_as_weaker():
    prefixed = variant("a", {"coding": [{"system": "http://www.genenames.org", "code": "HGNC:427"}]})
    bare = variant("b", {"coding": [{"system": "http://www.genenames.org", "code": "427"}]})
    for resource in (prefixed, bare):
        result = read(chart(resource))
        assert result.facts.molecular.alk.status == "positive" and not any(p.kind == "weak" for p in result.problems)
    symbol = variant("c", {"text": "ALK"})
    result = read(chart(symbol))
    assert result.facts.molecular.alk.status == "positive"
    assert any(p.kind == "weak" and "symbol text only" in p.message for p in result.problems)
    unknown = variant("d", {"text": "ALKX"})
    assert read(chart(unknown)).facts.molecular.alk.status == "unknown"


def medication(resource_id, kind="MedicationStatement", code="1148495", status=None, when="2025-03-01"):
    status = status or ("completed" if kind == "MedicationAdministration" else "active")
    return {"resourceType": kind, "id": resource_id, "status": status, "subject": {"reference": "Patient/p1"},
            "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                      "code": code}]},
            "effectiveDateTime" if kind != "MedicationRequest" else "authoredOn": when}


def worse(resource_id, when="2026-01-05", focus="Condition/imt"):
    return {"resourceType": "Observation", "id": resource_id, "status": "final", "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": "http://loinc.org", "code": "97509-4"}]}, "effectiveDateTime": when,
            "focus": [{"reference": focus}],
            "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "271299001"}]}}


@pytest.mark.parametrize("kind", ["MedicationStatement", "MedicationRequest", "MedicationAdministration"])
def test_progression_on_an_alk_inhibitor_comes_from_disease_status_and_rxnorm_coded_medication(kind):
    history = read(chart(medication("crizotinib", kind), worse("worse"))).facts.history
    assert history.progressed_on_alk_inhibitor is True and history.progressed_on_prior_systemic is True
    # Progression before the drug was started, a drug not given, another drug, another tumour: not progression on it.
    for resources in ([medication("crizotinib", kind, when="2026-06-01"), worse("worse")],
                      [medication("crizotinib", kind, status="entered-in-error"), worse("worse")],
                      [medication("imatinib", kind, code="282388"), worse("worse")],
                      [medication("crizotinib", kind), worse("worse", focus="Condition/nsclc"), LUNG_CANCER]):
        assert read(chart(*resources)).facts.history.progressed_on_alk_inhibitor is False


def test_epithelioid_morphology_from_the_conditions_text_is_used_and_flagged():
    imt = copy.deepcopy(IMT)
    imt["code"] = {"text": "Epithelioid inflammatory myofibroblastic sarcoma"}
    result = read(chart(imt=imt))
    assert result.eligibility.eligible and result.facts.tumor.epithelioid_morphology is True
    assert any(p.path == "tumor.epithelioid_morphology" and p.kind == "weak" for p in result.problems)
    assert read(chart()).facts.tumor.epithelioid_morphology is False
    coded = copy.deepcopy(IMT)
    for negated in ("IMT, not epithelioid inflammatory myofibroblastic sarcoma",
                    "Rule-out epithelioid inflammatory myofibroblastic sarcoma"):
        coded["code"]["text"] = negated
        assert read(chart(imt=coded)).facts.tumor.epithelioid_morphology is False, negated


# --- never a 500 --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("break_it", [
    lambda r: r.update(code=None), lambda r: r.update(code=5), lambda r: r.update(code={"coding": "ALK"}),
    lambda r: r.update(component=[{"code": {"coding": [{"system": "http://loinc.org", "code": "48018-6"}]},
                                   "valueCodeableConcept": {"coding": [{"system": 7, "code": ["x"]}]}}]),
    lambda r: r.update(valueCodeableConcept=[]), lambda r: r.update(status={"deep": [[[[[]]]]]})])
def test_never_500_a_malformed_observation_is_reported_and_skipped(break_it):
    variant = {"resourceType": "Observation", "id": "v", "status": "final", "subject": {"reference": "Patient/p1"},
               "code": {"coding": [{"system": "http://loinc.org", "code": "69548-6"}]},
               "valueCodeableConcept": {"coding": [{"system": "http://loinc.org", "code": "LA9633-4"}]}}
    break_it(variant)
    result = read(chart(variant))
    assert result.ok
    assert result.facts.molecular.alk.status == "unknown"


def test_never_500_a_condition_with_codings_of_the_wrong_types_is_skipped_and_the_rest_read():
    odd = {**copy.deepcopy(IMT), "id": "odd", "code": {"coding": [{"system": 7, "code": ["8825/1"]}]}}
    result = read(chart(odd))
    assert result.ok and result.eligibility.diagnosis.sources == ("Condition/imt",)
    assert any(p.where == "Condition/odd" and "malformed Condition" in p.message for p in result.problems)


def test_never_500_valid_fhir_with_primitive_extensions_is_read():
    """``_birthDate`` and a ``_valueString`` inside an extension are valid FHIR that a model library may reject."""
    patient = {**PATIENT, "_birthDate": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/"
                                                        "patient-birthTime", "valueDateTime": "2016-02-03T10:00:00Z"}]},
               "extension": [{"url": "urn:x", "_valueString": {"extension": [{
                   "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "masked"}]}}]}
    result = read(chart(patient=patient))
    assert result.ok and result.facts.age_years == pytest.approx(10.8, abs=0.01)


@pytest.mark.parametrize("bundle", [{"resourceType": "Bundle", "entry": 5}, {"resourceType": "Bundle", "entry": "x"},
                                    {"resourceType": "Bundle", "entry": {"resource": {}}}])
def test_never_500_a_malformed_bundle_is_refused_with_the_reason(bundle):
    with pytest.raises(InvalidInputError, match="Bundle.entry must be a list"):
        facts_from_bundle(bundle, ON)


def test_never_500_odd_entries_are_reported_and_the_rest_read():
    result = facts_from_resources([{"resourceType": "Bundle", "entry": [
        5, {"fullUrl": "x"}, {"resource": "text"}, {"resource": {"resourceType": "Bundle"}},
        {"resource": copy.deepcopy(PATIENT)}, {"resource": copy.deepcopy(IMT)}]}], ON)
    assert result.ok
    assert len([p for p in result.problems if p.kind == "skipped"]) == 4


def test_never_500_a_malformed_imt_condition_is_skipped_whole_never_half_read():
    """A Condition whose bodySite is malformed is reported and skipped: it does not count as the diagnosis either."""
    imt = {**copy.deepcopy(IMT), "bodySite": "lung"}
    result = read(chart(imt=imt))
    assert not result.eligibility.eligible and result.eligibility.reason == "no_imt_diagnosis"
    assert any(p.where == "Condition/imt" and "malformed Condition" in p.message for p in result.problems)


# --- charts as EHRs really send them: versions, servers, bounds, dates, unreadable yes/no facts -------------------


@pytest.mark.parametrize("verification", [
    {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": code}]}
    for code in ("provisional", "differential", "unconfirmed", "Refuted")] + [{"text": "confirmed"}])
def test_wrong_diagnosis_an_imt_condition_that_is_not_confirmed_does_not_count(verification):
    imt = {**copy.deepcopy(IMT), "verificationStatus": verification}
    result = read(chart(imt=imt))
    assert (result.eligibility.eligible, result.eligibility.reason, result.facts) == (False, "no_imt_diagnosis", None)
    codes = [c["code"] for c in verification.get("coding", [])]
    said = codes[0] if codes else "'confirmed' (text, no code)"
    assert any(p.where == "Condition/imt" and p.message == f"verification status {said}, not confirmed; not used as "
               "the IMT diagnosis" for p in result.problems)
    # No verification status at all is FHIR's usual "confirmed"; the same unconfirmed one as a metastasis is not staged.
    assert read(chart(imt={k: v for k, v in IMT.items() if k != "verificationStatus"})).ok
    empty = read(chart(imt={**copy.deepcopy(IMT), "verificationStatus": {}}))  # given, and says nothing
    assert any(p.message == "verification status without a code, not confirmed; not used as the IMT diagnosis"
               for p in empty.problems)
    unconfirmed = read(chart(secondary("met", verificationStatus=verification)))
    assert unconfirmed.facts.tumor.distant_disease is None


@pytest.mark.parametrize("changed", [{"deceasedBoolean": True}, {"birthDate": "2025-06-01"}])
def test_wrong_patient_two_different_versions_of_one_resource_refuse_the_chart(changed):
    with pytest.raises(ChartRefusedError, match="two different resources named Patient/p1") as raised:
        read(chart({**PATIENT, **changed}))
    assert raised.value.reason == "conflicting_copies"
    assert raised.value.problems[0].message.endswith("so nothing is evaluated (send one version of each resource)")
    refuted = {**copy.deepcopy(IMT), "verificationStatus": {"coding": [{"code": "refuted"}]}}
    with pytest.raises(ChartRefusedError, match="Condition/imt"):
        read(chart(refuted))
    # One resource sent twice the same (in two prefetch searches) is one resource.
    assert read(chart(copy.deepcopy(IMT), copy.deepcopy(PATIENT))).ok
    # ... also with something unreadable before them: it is reported, and everything after it is still read.
    twice = read([{"no": "resourceType"}, *chart(copy.deepcopy(IMT), fact("surgery", "history.surgery_done",
                                                                          valueBoolean=True))])
    assert twice.ok and twice.facts.history.surgery_done is True
    assert any(p.where == "entry[0]" and "not a FHIR resource" in p.message for p in twice.problems)


def test_wrong_cancer_two_different_resources_under_one_full_url_refuse_the_chart():
    """A reference to a fullUrl that two different resources bear (FHIR bdl-7 says a Bundle's fullUrls are unique)
    would resolve to whichever was sent first: here the metastasis would be the IMT's (distant disease) or the lung
    cancer's, by the order of the entries. Refused in either order, naming both."""
    met = secondary("met", extension=[{"url": "http://hl7.org/fhir/StructureDefinition/condition-related",
                                       "valueReference": {"reference": "urn:uuid:0f1e"}}])
    entries = [{"resource": r, **({"fullUrl": "urn:uuid:0f1e"} if r["id"] in ("imt", "nsclc") else {})}
               for r in chart(LUNG_CANCER, met)]
    for order in (entries, [entries[0], entries[2], entries[1], entries[3]]):
        with pytest.raises(ChartRefusedError) as raised:
            facts_from_bundle({"resourceType": "Bundle", "type": "collection", "entry": order}, ON)
        assert raised.value.reason == "conflicting_copies"
        assert [p.message for p in raised.value.problems] == [
            "the chart holds two different resources (Condition/imt, Condition/nsclc) under one fullUrl, "
            "urn:uuid:0f1e; which one a reference to it means cannot be established, so nothing is evaluated (a "
            "Bundle's fullUrls must be unique)"]
    # One resource under its fullUrl in two searches (two Bundles of a prefetch) is one resource, also without an id
    # (its two entries then bear two names, entry[i], and one content).
    anonymous = {key: value for key, value in met.items() if key != "id"}
    searches = [{"resourceType": "Bundle", "type": "searchset", "entry": [
        {"fullUrl": "urn:uuid:0f1e", "resource": copy.deepcopy(IMT)},
        {"fullUrl": "urn:uuid:9a9a", "resource": copy.deepcopy(anonymous)}]} for _ in range(2)]
    result = facts_from_resources([copy.deepcopy(PATIENT), *searches], ON)
    assert result.ok and result.facts.tumor.distant_disease is True


@pytest.mark.parametrize("base", ["https://ehr.example/fhir", "http://ehr.example/fhir", "https://ehr.example"])
def test_wrong_patient_a_reference_to_another_server_or_of_another_shape_is_not_the_patient(base):
    surgery = {"resourceType": "Procedure", "id": "s", "status": "completed",
               "code": {"coding": [{"system": SNOMED, "code": "359615001"}]}}

    def with_subject(reference, patient_url=f"{base}/Patient/p1"):
        return facts_from_bundle({"resourceType": "Bundle", "entry": [
            {"fullUrl": patient_url, "resource": copy.deepcopy(PATIENT)},
            {"fullUrl": f"{base}/Condition/imt", "resource": copy.deepcopy(IMT)},
            {"fullUrl": f"{base}/Procedure/s", "resource": {**surgery, "subject": {"reference": reference}}}]}, ON)

    for same in (f"{base}/Patient/p1", "Patient/p1", f"{base}/Patient/p1/_history/3"):
        assert with_subject(same).facts.history.surgery_done is True, same
    # The Patient's own entry named otherwise (a urn:uuid): an absolute reference on the server the other entries
    # come from is still the patient, and one on another server still is not.
    renamed = "urn:uuid:6f0c1e6a-3b7e-4c55-9d8a-2f1f2c6f9b10"
    for same in (f"{base}/Patient/p1", f"{base}/Patient/p1/", f"{base}/Patient/p1/_history/3"):
        assert with_subject(same, renamed).facts.history.surgery_done is True, same
    other_server = base.replace("ehr.example", "other-ehr.example")
    assert with_subject(f"{other_server}/Patient/p1", renamed).facts.history.surgery_done is False
    for other in (f"{other_server}/Patient/p1", "Device/x/Patient/p1", "a/Device/x/Patient/p1", "/Patient/p1"):
        result = with_subject(other)
        assert result.facts.history.surgery_done is False, other
        assert any(p.where == "Procedure/s" and "not Patient/p1" in p.message for p in result.problems), other


@pytest.mark.parametrize("death", [{"deceasedBoolean": "true"}, {"deceasedBoolean": 1}, {"deceasedBoolean": [True]},
                                   {"deceasedDateTime": {"value": "2020"}}])
def test_deceased_a_death_record_that_cannot_be_read_refuses_the_chart(death):
    with pytest.raises(ChartRefusedError, match="whether the patient is alive cannot be established") as raised:
        read(chart(patient={**PATIENT, **death}), diagnosis_attested=True)
    assert raised.value.reason == "deceased_unreadable"
    (element,) = death
    wanted = "true or false" if element == "deceasedBoolean" else "a dateTime"
    assert raised.value.problems[0].message.startswith(f"Patient/p1: {element} must be {wanted}, found ")
    assert raised.value.problems[0].message.endswith("; whether the patient is alive cannot be established, so nothing "
                                                     "is evaluated")


@pytest.mark.parametrize("patient_id", ["p 1", "p" * 65, "p1/x"])
def test_wrong_patient_a_patient_id_that_is_no_fhir_id_refuses_the_chart(patient_id):
    with pytest.raises(ChartRefusedError, match="must be a FHIR id") as raised:
        read(chart(patient={**PATIENT, "id": patient_id}))
    assert raised.value.reason == "patient_without_id" and len(str(raised.value)) < 400
    assert raised.value.problems[0].message.endswith("; the chart's patient cannot be established")


def test_wrong_patient_a_record_another_replaces_is_refused_and_one_that_refers_to_another_is_incomplete():
    """A merged duplicate (FHIR R4 link-type replaced-by: "must no longer be used"; what was charted since is on the
    other record) is refused; a record that refers to another for more of the patient's information is read, and
    said to be incomplete; a see-also link (another record of the same patient, as the FHIR core examples pat1 and
    pat2 link each other) or one that replaces another changes nothing."""
    merged = {**PATIENT, "active": False, "link": [{"other": {"reference": "Patient/p9"}, "type": "replaced-by"}]}
    with pytest.raises(ChartRefusedError) as raised:
        read(chart(patient=merged))
    assert raised.value.reason == "patient_replaced"
    assert raised.value.problems[0].message == (
        "Patient/p1 is replaced by Patient/p9 (Patient.link replaced-by: this record must no longer be used); nothing "
        "is evaluated: evaluate the record that replaces it")
    # Among other links too, and whatever names the other record.
    also = {**PATIENT, "link": [{"other": {"reference": "Patient/p2"}, "type": "seealso"},
                                {"other": {"identifier": {"value": "MRN-9"}}, "type": "replaced-by"}]}
    with pytest.raises(ChartRefusedError) as raised:
        read(chart(patient=also))
    assert raised.value.problems[0].message.startswith("Patient/p1 is replaced by another Patient record (Patient.")
    refers = read(chart(patient={**PATIENT, "link": [{"other": {"reference": "Patient/p3"}, "type": "refer"}]}))
    assert refers.ok
    assert [(p.where, p.severity, p.kind, p.message) for p in refers.problems] == [
        ("Patient/p1", "warning", "incomplete", "Patient/p1 refers to Patient/p3 for more of this patient's "
         "information (Patient.link refer); the chart may be incomplete (what that record holds is not evaluated)")]
    for kind in ("seealso", "replaces"):
        plain = read(chart(patient={**PATIENT, "link": [{"other": {"reference": "Patient/p4"}, "type": kind}]}))
        assert plain.ok and plain.problems == (), kind


@pytest.mark.parametrize(("active", "said"), [(False, "marked inactive (active false)"),
                                             ("false", "marked with an active flag that is not true or false (text)")])
def test_wrong_patient_a_record_marked_inactive_is_read_and_said(active, said):
    """Patient.active false may mean a retired record or only a patient not seen for a while: read, with a warning."""
    result = read(chart(patient={**PATIENT, "active": active}))
    assert result.ok and result.facts == read(chart()).facts
    assert [(p.where, p.severity, p.kind, p.message) for p in result.problems] == [
        ("Patient/p1", "warning", "incomplete", f"Patient/p1 is {said}: the record may not be the one in use (a merged "
         "or retired record), or only not seen for a while; check that this is the record in use")]
    assert read(chart(patient={**PATIENT, "active": True})).problems == ()


def test_wrong_patient_a_link_whose_type_is_withheld_is_read_and_said():
    """The mCODE Extraction Framework's published masked bundle withholds its Patient's link (data-absent-reason
    "masked", as de-identified extracts do): a deliberate blank, not a malformed link, so the chart is read, with a
    warning that whether another record replaces this one cannot be told. (Its Patient as published, with an IMT
    diagnosis added.)"""
    bundle = json.loads((ROOT / "tests" / "fixtures" / "fhir-charts" /
                         "mcode-extraction-framework__masked-patient-bundle.json").read_text())
    patient = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    assert patient["link"] == [{"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                                               "valueCode": "masked"}]}]
    imt = {**IMT, "subject": {"reference": f"Patient/{patient['id']}"}}
    result = read(chart(patient=patient, imt=imt))
    assert result.ok
    label = f"Patient/{patient['id']}"
    assert [(p.where, p.severity, p.kind, p.message) for p in result.problems if p.where == label] == [
        (label, "warning", "incomplete", f"{label} links to another record by a link whose type is withheld "
         "(data-absent-reason 'masked'); whether another record replaces this one cannot be told: check that this is "
         "the record in use")]
    # The links after it are read all the same; another extension in place of the type is no reason it is absent.
    masked, replaced = patient["link"][0], {"other": {"reference": "Patient/p9"}, "type": "replaced-by"}
    with pytest.raises(ChartRefusedError) as raised:
        read(chart(patient={**patient, "link": [masked, replaced]}, imt=imt))
    assert raised.value.reason == "patient_replaced"
    other_extension = {"extension": [{"url": "http://example.org/note", "valueString": "merged?"}]}
    with pytest.raises(ChartRefusedError) as raised:
        read(chart(patient={**patient, "link": [other_extension]}, imt=imt))
    assert raised.value.reason == "patient_link_unreadable"
    no_code = {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason"}]}
    result = read(chart(patient={**patient, "link": [no_code]}, imt=imt))
    assert "(data-absent-reason '(no code)')" in next(p.message for p in result.problems if p.where == label)


@pytest.mark.parametrize(("link", "said"), [
    ({"type": "replaced-by"}, "Patient.link must be a list of objects, found an object"),
    (["replaced-by"], "Patient.link must be a list of objects, found a list"),
    ([{"other": {"reference": "Patient/p9"}}], "Patient.link.type must be a code, found none"),
    ([{"type": ["replaced-by"]}], "Patient.link.type must be a code, found a list"),
])
def test_wrong_patient_links_that_cannot_be_read_refuse_the_chart(link, said):
    with pytest.raises(ChartRefusedError) as raised:
        read(chart(patient={**PATIENT, "link": link}))
    assert raised.value.reason == "patient_link_unreadable"
    assert raised.value.problems[0].message == (f"Patient/p1: {said}; whether this record is still in use cannot be "
                                                "established, so nothing is evaluated")


SURGERY = {"resourceType": "Procedure", "id": "surgery", "status": "completed", "subject": {"reference": "Patient/p1"},
           "code": {"coding": [{"system": SNOMED, "code": "359615001"}]}}


@pytest.mark.parametrize(("unreadable", "kind", "said"), [
    (fact("prog", "history.progressed_on_alk_inhibitor", valueString="true"), "not_allowed",
     "value not allowed for history.progressed_on_alk_inhibitor: input should be a valid boolean"),
    (fact("prog", "history.progressed_on_alk_inhibitor", valueBoolean="true"), "unreadable",
     "no usable value for history.progressed_on_alk_inhibitor, which"),
    (fact("prog", "history.recurrence", valueCodeableConcept=5), "unreadable",
     "malformed Observation (valueCodeableConcept must be a CodeableConcept (an object), found a number) about "
     "history.recurrence, which"),
    ({**SURGERY, "reasonReference": {"reference": "Condition/imt"}}, "unreadable",
     "malformed Procedure (reasonReference must be a list of objects, found an object) about history.surgery_done, "
     "which"),
])
def test_never_a_silent_no_a_yes_no_fact_that_cannot_be_read_stops_the_evaluation(unreadable, kind, said):
    """Left out, an unreadable yes/no fact would read "no" (the contract has no unknown for it): another advice."""
    result = read(chart(unreadable))
    assert result.facts is None and result.eligibility.eligible
    errors = [p for p in result.problems if p.severity == "error"]
    assert errors and errors[0].where == resource_label(unreadable, 2)
    assert (errors[0].kind, errors[0].message[:len(said)]) == (kind, said)
    assert errors[0].message.endswith(" cannot be left unknown, so nothing is evaluated")
    assert errors[0].path == ("history.surgery_done" if unreadable["resourceType"] == "Procedure"
                              else unreadable["code"]["coding"][0]["code"])
    # Read well, the same facts are evaluated; an unreadable fact that may be unknown is skipped, as before.
    assert read(chart(fact("prog", "history.progressed_on_alk_inhibitor", valueBoolean=True), SURGERY)).ok
    assert read(chart(fact("resect", "tumor.resectability", valueBoolean="x"))).ok


def test_never_a_silent_no_a_procedure_for_the_imt_not_known_as_a_resection_is_no_surgery_and_says_so():
    """A biopsy of the IMT, or its resection coded otherwise than the value set, is not counted as surgery (surgery
    cannot be unknown, and a biopsy is none), but not in silence: the team sees that surgery "no" stood beside it."""
    local = {"coding": [{"system": "http://example.org/procedures", "code": "EXC-77",
                         "display": "Excision of mesenteric mass"}]}
    excision = {**SURGERY, "id": "exc", "code": local, "reasonReference": [{"reference": "Condition/imt"}]}
    result = read(chart(excision))
    assert result.facts.history.surgery_done is False
    assert [(p.where, p.severity, p.path, p.kind, p.message) for p in result.problems] == [
        ("Procedure/exc", "warning", "history.surgery_done", "skipped",
         "procedure for the IMT (EXC-77 (Excision of mesenteric mass)) not known as a resection (value set "
         "tumor-resection-procedures, or mCODE's cancer-related surgical procedure profile): not counted as surgery; "
         "if it was one, code or profile it so")]
    # Not done, or for another condition, or naming no reason (the chart's every other procedure): nothing to say;
    # an element of it that cannot be read does not matter here either.
    for other in ({**excision, "status": "in-progress"},
                  {**excision, "reasonReference": [{"reference": "Condition/x"}]},
                  {key: value for key, value in excision.items() if key != "reasonReference"},
                  {**excision, "reasonReference": 5}):
        result = read(chart(other))
        assert result.ok and result.problems == (), other
    # Known as a resection, it is surgery.
    assert read(chart({**excision, "code": SURGERY["code"]})).facts.history.surgery_done is True


def test_never_a_silent_no_an_unreadable_medication_beside_a_progression_stops_the_evaluation():
    broken = medication("crizotinib")
    broken["medicationCodeableConcept"]["coding"].append({"system": 5})  # which drug it is cannot be read
    result = read(chart(broken, worse("worse")))
    assert result.facts is None
    assert [p.path for p in result.problems if p.severity == "error"] == ["history.progressed_on_alk_inhibitor"]
    (error,) = [p for p in result.problems if p.severity == "error"]
    assert (error.where, error.kind, error.message) == (
        "MedicationStatement/crizotinib", "unreadable", "malformed medication record beside a progression: "
        "progression on an ALK inhibitor cannot be established, so nothing is evaluated")
    # Without a progression it changes nothing: reported and skipped.
    assert read(chart(broken)).ok
    unreadable_status = {**worse("worse"), "valueCodeableConcept": {"coding": "worse"}}
    blocked = read(chart(medication("crizotinib"), unreadable_status))
    assert blocked.facts is None
    (error,) = [p for p in blocked.problems if p.severity == "error"]
    assert (error.where, error.kind, error.message) == (
        "Observation/worse", "unreadable", "malformed disease status beside an ALK inhibitor: "
        "progression on an ALK inhibitor cannot be established, so nothing is evaluated")
    assert read(chart(unreadable_status)).ok


def test_progression_an_alk_inhibitor_only_proposed_or_planned_was_not_given():
    for intent in ("proposal", "plan", "option"):
        request = {**medication("crizotinib", "MedicationRequest"), "intent": intent}
        result = read(chart(request, worse("worse")))
        assert result.facts.history.progressed_on_alk_inhibitor is False, intent
        assert any("not an order" in p.message for p in result.problems)
    ordered = {**medication("crizotinib", "MedicationRequest"), "intent": "order"}
    assert read(chart(ordered, worse("worse"))).facts.history.progressed_on_alk_inhibitor is True
    assert read(chart({**ordered, "doNotPerform": False}, worse("worse"))).facts.history.progressed_on_alk_inhibitor


def test_progression_an_alk_inhibitor_ordered_not_to_be_given_was_not_given():
    """MedicationRequest.doNotPerform true forbids the drug (a modifier element of FHIR R4): a worsening after it is
    no progression on it, and a value that is not true or false cannot be read (beside a progression: an error)."""
    forbidden = {**medication("crizotinib", "MedicationRequest"), "intent": "order", "doNotPerform": True}
    result = read(chart(forbidden, worse("worse")))
    assert result.facts.history.progressed_on_alk_inhibitor is False
    assert [(p.where, p.message) for p in result.problems if p.where == "MedicationRequest/crizotinib"] == [
        ("MedicationRequest/crizotinib", "ALK inhibitor ordered not to be given (doNotPerform true); not counted as "
         "given")]
    unreadable = read(chart({**forbidden, "doNotPerform": "true"}, worse("worse")))
    assert unreadable.facts is None
    assert [p.message for p in unreadable.problems if p.severity == "error"] == [
        "malformed medication record beside a progression: progression on an ALK inhibitor cannot be established, so "
        "nothing is evaluated"]
    assert any(p.message == "malformed MedicationRequest (doNotPerform must be true or false, found text); skipped"
               for p in unreadable.problems)


def named(resource_id, concept, kind="MedicationStatement", **extra):
    """A medication record that names its drug without an RxNorm ingredient code (``concept``: its
    medicationCodeableConcept, or None for none)."""
    record = {**medication(resource_id, kind), **extra}
    if concept is None:
        del record["medicationCodeableConcept"]
    else:
        record["medicationCodeableConcept"] = concept
    return record


_PROGRESSION = "history.progressed_on_alk_inhibitor"
FORMULARY_CRIZOTINIB = {"coding": [{"system": "http://example.org/formulary", "code": "4471",
                                    "display": "crizotinib 250 MG Oral Capsule"}]}


@pytest.mark.parametrize("kind", ["MedicationStatement", "MedicationRequest", "MedicationAdministration"])
def test_progression_an_alk_inhibitor_named_but_not_coded_as_an_ingredient_counts_and_is_flagged(kind):
    """Charts code medications as products (a formulary's codes, RxNorm clinical drugs) or name them in text only: an
    ALK inhibitor of the drug table named so is one (left out, progression on it would read "no" and crizotinib be
    suggested again), and the reader says it was known by its name."""
    contained = {"medicationReference": {"reference": "#m"},
                 "contained": [{"resourceType": "Medication", "id": "m", "code": {"text": "Lorbrena 100 mg"}}]}
    for record in (named("m1", {"text": "Xalkori 250 mg capsule"}, kind),
                   named("m1", FORMULARY_CRIZOTINIB, kind),
                   named("m1", {"text": "ENSARTINIB"}, kind),  # (no verified RxNorm code: named only, any case)
                   named("m1", None, kind, **contained),
                   named("m1", None, kind, medicationReference={"reference": "Medication/elsewhere",
                                                                 "display": "Alecensa"})):
        result = read(chart(record, worse("worse")))
        assert result.facts.history.progressed_on_alk_inhibitor is True, record
        assert result.sources["history.progressed_on_alk_inhibitor"] == ("Observation/worse",)
        (weak,) = [p for p in result.problems if p.kind == "weak"]
        assert (weak.where, weak.severity, weak.path) == (f"{kind}/m1", "warning", _PROGRESSION)
    said = {problem.message for problem in read(chart(named("m1", FORMULARY_CRIZOTINIB, kind))).problems}
    assert said == {"medication 'crizotinib 250 MG Oral Capsule' read as the ALK inhibitor crizotinib by its name, not "
                    "by a code of value set alk-inhibitors; its codes: http://example.org/formulary|4471: check it"}
    two = {"coding": [*FORMULARY_CRIZOTINIB["coding"], {"system": "http://example.org/stock", "code": "77"}]}
    said = {problem.message for problem in read(chart(named("m1", two, kind))).problems}
    assert said == {"medication 'crizotinib 250 MG Oral Capsule' read as the ALK inhibitor crizotinib by its name, not "
                    "by a code of value set alk-inhibitors; its codes: http://example.org/formulary|4471, "
                    "http://example.org/stock|77: check it"}
    said = {problem.message for problem in read(chart(named("m1", {"text": "Xalkori 250 mg capsule"}, kind))).problems}
    assert said == {"medication 'Xalkori 250 mg capsule' read as the ALK inhibitor crizotinib by its name, not by a "
                    "code of value set alk-inhibitors: check it"}
    # The words quoted are those that name it.
    capsule = {"text": "oral capsule, 250 mg", "coding": [{"system": "http://example.org/formulary", "code": "4471",
                                                          "display": "Xalkori"}]}
    said = {problem.message for problem in read(chart(named("m1", capsule, kind))).problems}
    assert said == {"medication 'Xalkori' read as the ALK inhibitor crizotinib by its name, not by a code of value "
                    "set alk-inhibitors; its codes: http://example.org/formulary|4471: check it"}
    # Coded by its ingredient, nothing to say; another drug (of the table or not), or a name inside another word, is
    # no ALK inhibitor; one named but not given is not counted.
    assert [p for p in read(chart(medication("m1", kind), worse("worse"))).problems] == []
    for record in (named("m1", {"text": "larotrectinib"}, kind), named("m1", {"text": "imatinib 400 mg"}, kind),
                   named("m1", {"text": "precrizotinib"}, kind),
                   named("m1", {"text": "Xalkori"}, kind, status="entered-in-error")):
        result = read(chart(record, worse("worse")))
        assert result.facts.history.progressed_on_alk_inhibitor is False, record
        assert [p for p in result.problems if p.kind == "weak"] == [], record


def test_progression_the_names_are_those_of_the_drug_table_given():
    text_only = named("m1", {"text": "Xalkori 250 mg capsule"})
    assert read(chart(text_only, worse("worse")), drugs={}).facts.history.progressed_on_alk_inhibitor is False
    shipped = load_rulebook()
    # With a terminology and no drug table, the shipped rulebook's table.
    with_terminology = read(chart(text_only, worse("worse")), terminology=shipped.terminology)
    assert with_terminology.facts.history.progressed_on_alk_inhibitor
    without_entrectinib = {name: drug for name, drug in shipped.drugs.items() if name != "entrectinib"}
    entrectinib = named("m1", {"text": "Rozlytrek"})
    assert read(chart(entrectinib, worse("worse")), drugs=shipped.drugs).facts.history.progressed_on_alk_inhibitor
    assert not read(chart(entrectinib, worse("worse")),
                    drugs=without_entrectinib).facts.history.progressed_on_alk_inhibitor


def test_never_500_a_contained_element_of_the_wrong_shape_is_reported_and_skipped():
    statement = {**medication("crizotinib"), "contained": 5, "medicationReference": {"reference": "#m"}}
    del statement["medicationCodeableConcept"]
    result = read(chart(statement))
    assert result.ok
    assert any(p.where == "MedicationStatement/crizotinib" and "contained" in p.message for p in result.problems)


def size(resource_id, value, **quantity):
    return {"resourceType": "Observation", "id": resource_id, "status": "final", "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": "http://loinc.org", "code": "21889-1"}]},
            "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "33728-7"}]},
                           "valueQuantity": {"value": value, "unit": "cm", "code": "cm", **quantity}}]}


@pytest.mark.parametrize("comparator", ["<", ">", ">=", "<="])
def test_stage_a_tumour_size_given_as_a_bound_is_no_measurement(comparator):
    result = read(chart(size("s", 6, comparator=comparator)))
    assert result.facts.tumor.size_cm is None
    assert [(p.message, p.path) for p in result.problems if p.where == "Observation/s"] == [
        (f"tumor size given as a bound ({comparator} 6), not a measurement; not used", "tumor.size_cm")]
    assert read(chart(size("s", 6))).facts.tumor.size_cm == 6.0


def test_stage_a_finding_dated_after_the_evaluation_date_is_not_used():
    """A wrong date would make a finding the latest, and the latest outranks the rest (an M0 "of 2205")."""
    result = read(chart(m_category("m1", SNOMED, "1229916009", when="2025-01-01"),
                        m_category("m0", SNOMED, "1229901006", when="2205-01-01")))
    assert result.facts.tumor.distant_disease is True
    assert any(p.where == "Observation/m0" and p.message.startswith("dated 2205-01-01, after the evaluation date")
               for p in result.problems)
    # The day after the evaluation date still counts (a chart written in a time zone ahead of UTC).
    tomorrow = read(chart(m_category("m1", SNOMED, "1229916009", when="2025-01-01"),
                          m_category("m0", SNOMED, "1229901006", when="2026-11-22")))
    assert tomorrow.facts.tumor.distant_disease is False
    # The slack is that one day: two days after is a wrong date again.
    two_days = read(chart(m_category("m1", SNOMED, "1229916009", when="2025-01-01"),
                          m_category("m0", SNOMED, "1229901006", when="2026-11-23")))
    assert two_days.facts.tumor.distant_disease is True
    assert any(p.where == "Observation/m0" and "after the evaluation date" in p.message for p in two_days.problems)
    later = read(chart(medication("crizotinib", when="2027-01-01"), worse("worse", when="2027-02-01")))
    assert later.facts.history.progressed_on_alk_inhibitor is False
    # An undated progression counts after any inhibitor given; one "given" in 2027 was not.
    undated = read(chart(medication("crizotinib", when="2027-01-01"), worse("worse", when=None)))
    assert undated.facts.history.progressed_on_alk_inhibitor is False
    assert read(chart(medication("crizotinib"), worse("worse", when=None))).facts.history.progressed_on_alk_inhibitor


INCOMPLETE = "; the chart may be incomplete (what it lacks is not evaluated)"  # how a server's error is said


def test_incomplete_an_error_the_server_reported_in_the_chart_is_said():
    outcome = {"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "too-costly", "diagnostics": "search cut short"}]}
    searchset = {"resourceType": "Bundle", "type": "searchset", "id": "s1", "entry": [
        {"resource": copy.deepcopy(IMT), "search": {"mode": "match"}},
        {"resource": outcome, "search": {"mode": "outcome"}}]}
    for resources, where in (([copy.deepcopy(PATIENT), searchset], "Bundle/s1.entry[1]"),
                             (chart(copy.deepcopy(outcome)), "OperationOutcome/entry[2]")):
        result = facts_from_resources(resources, ON)
        assert result.ok
        said = [p for p in result.problems if p.kind == "incomplete"]
        assert len(said) == 1 and said[0].severity == "warning"  # said, and the chart read as it is
        assert said[0].message == f"the FHIR server reported an error: 'search cut short'{INCOMPLETE}"
        assert said[0].where == where  # (the search's outcome, where its Bundle holds it; a resource, by its name)
    # What the server said is taken from diagnostics, else from details.text; without either, the error is still said.
    def said_of(issue):
        error = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "exception", **issue}]}
        return [p.message for p in read(chart(error)).problems if p.kind == "incomplete"]

    assert said_of({"details": {"text": "timeout"}}) == [f"the FHIR server reported an error: 'timeout'{INCOMPLETE}"]
    for nothing in ({}, {"diagnostics": ""}, {"diagnostics": 5}, {"details": "timeout"}):
        assert said_of(nothing) == [f"the FHIR server reported an error{INCOMPLETE}"], nothing
    fatal = {"resourceType": "OperationOutcome", "issue": [{"severity": "fatal", "code": "exception"}]}
    assert [p.kind for p in read(chart(fatal)).problems if p.kind == "incomplete"] == ["incomplete"]
    note = {"resourceType": "OperationOutcome", "issue": [{"severity": "information", "code": "informational"}]}
    assert not [p for p in read(chart(note)).problems if p.kind == "incomplete"]


def loinc_component(code, answer, display=None):
    value = {"coding": [{"system": "http://loinc.org", "code": answer, **({"display": display} if display else {})}]}
    return {"code": {"coding": [{"system": "http://loinc.org", "code": code}]}, "valueCodeableConcept": value}


ALK_GENE = {"coding": [{"system": "http://www.genenames.org", "code": "HGNC:427"}]}


@pytest.mark.parametrize("component, said", [
    (loinc_component("48002-0", "LA6683-2", "Germline"), "genomic source LA6683-2 (Germline), not somatic"),
    (loinc_component("53037-8", "LA26333-7", "Uncertain significance"), "clinical significance LA26333-7 (Uncertain "
     "significance), not pathogenic or likely pathogenic"),
    (loinc_component("53037-8", "LA6675-8"), "clinical significance LA6675-8, not pathogenic or likely pathogenic"),
])
def test_fusion_a_present_variant_that_is_germline_or_not_pathogenic_is_not_the_tumours_fusion(component, said):
    stated = variant("v", ALK_GENE)
    stated["component"].append(component)
    result = read(chart(stated))
    assert result.facts.molecular.alk.status == "unknown"
    assert [p.message for p in result.problems if p.where == "Observation/v" and p.path == "molecular.alk.status"] == [
        f"ALK variant present with {said}: not read as the tumour's fusion (status left unknown)"]
    # Said in words only, or not at all: what the message shows of the value.
    for value, shown in (({"text": "VUS"}, "'VUS'"), ({}, "'(no value)'"),
                         ({"coding": [{"code": "LA26333-7"}, {"code": "x", "display": "y"}, {"system": "s"}]},
                          "LA26333-7, x (y)")):
        vague = variant("v", ALK_GENE)
        vague["component"].append({"code": {"coding": [{"system": "http://loinc.org", "code": "53037-8"}]},
                                   "valueCodeableConcept": value})
        assert [p.message for p in read(chart(vague)).problems if p.path == "molecular.alk.status"] == [
            f"ALK variant present with clinical significance {shown}, not pathogenic or likely pathogenic: not read as "
            "the tumour's fusion (status left unknown)"], value
    # Somatic and (likely) pathogenic, as Genomics Reporting writes a tumour's fusion, is read as before.
    for fine in (loinc_component("48002-0", "LA6684-0"), loinc_component("53037-8", "LA6668-3"),
                 loinc_component("53037-8", "LA26332-9")):
        confirmed = variant("v", ALK_GENE)
        confirmed["component"].append(fine)
        assert read(chart(confirmed)).facts.molecular.alk.status == "positive"


def component(code, value=None, system="http://loinc.org", **written):
    """A variant's component: ``value`` its valueCodeableConcept, ``written`` e.g. valueString="c.3522C>A"."""
    return {"code": {"coding": [{"system": system, "code": code}]},
            **({"valueCodeableConcept": value} if value is not None else {}), **written}


def so(code, display):
    return {"coding": [{"system": "http://www.sequenceontology.org/", "code": code, "display": display}]}


GENOMICS_TBD = "http://hl7.org/fhir/uv/genomics-reporting/CodeSystem/tbd-codes-cs"
SEQUENCE_CHANGES = [  # (the components, as Genomics Reporting writes them; how the message says them)
    ([component("48005-3", {"coding": [{"system": "http://varnomen.hgvs.org", "code": "p.Phe1174Leu"}]})],
     "a sequence change (p.HGVS p.Phe1174Leu)"),
    ([component("48004-6", valueString="NM_004304.5:c.3522C>A")], "a sequence change (c.HGVS 'NM_004304.5:c.3522C>A')"),
    ([component("48019-4", so("SO:1000002", "substitution"))], "DNA change type SO:1000002 (substitution)"),
    ([component("molecular-consequence", so("SO:0001742", "copy_number_gain"), system=GENOMICS_TBD)],
     "molecular consequence SO:0001742 (copy_number_gain)"),
    # the first description found, in component order
    ([component("48019-4", so("SO:0000159", "deletion")), component("48004-6", {"text": "c.3522del"})],
     "DNA change type SO:0000159 (deletion)"),
]


@pytest.mark.parametrize("components, said", SEQUENCE_CHANGES)
def test_fusion_a_present_variant_described_as_a_point_mutation_or_copy_change_only_is_not_the_tumours_fusion(
        components, said):
    # A DNA panel's ALK F1174L (or an amplification) is not the rearrangement the rules mean by ALK positive: the
    # status is left unknown (the team is asked for the fusion status) and the chart says why.
    described = variant("v", ALK_GENE)
    described["component"] += components
    result = read(chart(described))
    assert result.ok and result.facts.molecular.alk.status == "unknown"
    assert [p.message for p in result.problems if p.path == "molecular.alk.status"] == [
        f"ALK variant present with {said} and nothing saying it is a fusion (no partner gene, fusion transcript or "
        "fusion type): not read as the tumour's fusion (status left unknown)"]


@pytest.mark.parametrize("fusion", [
    component("48018-6", {"coding": [{"system": "http://www.genenames.org", "code": "HGNC:7029"}]}),  # a partner: MET
    component("48019-4", so("SO:0001565", "gene_fusion")),
    component("48019-4", so("SO:0002062", "complex chromosomal rearrangement")),
    # mCODE's published BCR-ABL1 example writes gene_fusion's code with a digit missing: the words say it
    component("molecular-consequence", so("SO:001565", "gene_fusion"), system="http://loinc.org-requested-cs"),
    component("95123-6", {"coding": [{"system": "http://www.genenames.org/geneId", "code": "HGNC:7029::HGNC:427"}]}),
    component("81252-9", {"text": "ALK Fusion"}),
    component("81252-9", valueString="EML4::ALK"),
    component("81252-9", {"coding": [{"system": "http://varnomen.hgvs.org", "code": "EML4::ALK"}]}),  # by its code
    component("48019-4", {"text": "t(2;5) translocation"}),
    component("48019-4", {"text": "ALK rearrangement"}),
])
def test_fusion_a_sequence_change_beside_anything_saying_fusion_is_read_as_the_fusion(fusion):
    # A fusion's report may also give an HGVS (mCODE's BCR-ABL1 example: the two genes, gene_fusion and an ABL1
    # c.HGVS): what says fusion wins, as it did before sequence changes were looked at.
    for components, _ in SEQUENCE_CHANGES:
        described = variant("v", ALK_GENE)
        described["component"] += [*components, fusion]
        result = read(chart(described))
        assert result.facts.molecular.alk.status == "positive", (components, fusion)
        assert not [p for p in result.problems if p.path == "molecular.alk.status"]


LOCAL = "http://hospital.example.org/codes"  # a laboratory's own code system, whose codes may look like LOINC's


def recoded(resource, old, new_system):
    """``resource`` with every coding of code ``old`` moved to ``new_system`` (the same code, another code system)."""
    text = json.dumps(resource).replace(f'{{"system": "http://loinc.org", "code": "{old}"}}',
                                        f'{{"system": "{new_system}", "code": "{old}"}}')
    assert text != json.dumps(resource)
    return json.loads(text)


@pytest.mark.parametrize("code, present", [("48018-6", True), ("48018-6", False), ("LA9633-4", True),
                                           ("LA9634-2", False)])
def test_codes_a_variant_coded_from_another_code_system_makes_no_finding(code, present):
    # A code means nothing without its system: a gene studied, Present or Absent of a laboratory's own code system
    # is not LOINC's, so the result says nothing of ALK (not positive, not negative: unknown, and asked for).
    result = read(chart(recoded(variant("v", ALK_GENE, present=present), code, LOCAL)))
    assert result.ok and result.facts.molecular.alk.status == "unknown"
    assert read(chart(variant("v", ALK_GENE, present=present))).facts.molecular.alk.status == (
        "positive" if present else "negative")


def test_codes_the_other_answer_of_any_code_system_is_still_a_doubt():
    # Present from LOINC beside the code of Absent from another system (or the other way round) is no clear answer.
    for present, other in ((True, "LA9634-2"), (False, "LA9633-4")):
        doubted = variant("v", ALK_GENE, present=present)
        doubted["valueCodeableConcept"]["coding"].append({"system": LOCAL, "code": other})
        result = read(chart(doubted))
        assert result.facts.molecular.alk.status == "unknown"
        assert "variant Observation is neither clearly Present nor Absent; not used" in [
            p.message for p in result.problems if p.where == "Observation/v"]


def test_codes_a_tumour_size_whose_unit_code_is_of_another_code_system_is_not_read():
    # A Quantity's code is UCUM's cm or mm only when its system is UCUM's (or, leniently, when it names none).
    result = read(chart(size("s", 3, system="http://hospital.example.org/units")))
    assert result.facts.tumor.size_cm is None
    assert [(p.message, p.path) for p in result.problems if p.where == "Observation/s"] == [
        ("tumor size whose unit code 'cm' is of the code system 'http://hospital.example.org/units'; only UCUM's cm "
         "and mm are understood", "tumor.size_cm")]
    malformed = read(chart(size("s", 3, system=7)))
    assert malformed.facts.tumor.size_cm is None
    assert any(p.where == "Observation/s" and "valueQuantity.system must be text, found a number" in p.message
               for p in malformed.problems)
    for understood in ({"system": "http://unitsofmeasure.org"}, {}):
        assert read(chart(size("s", 3, **understood))).facts.tumor.size_cm == 3.0


def test_codes_a_tumour_size_whose_longest_dimension_is_of_another_code_system_is_not_read():
    result = read(chart(recoded(size("s", 3), "33728-7", LOCAL)))
    assert result.facts.tumor.size_cm is None
    assert [(p.message, p.path) for p in result.problems if p.where == "Observation/s"] == [
        ("tumor size without a longest-dimension component (LOINC 33728-7); not used", "tumor.size_cm")]
    assert read(chart(size("s", 3))).facts.tumor.size_cm == 3.0


@pytest.mark.parametrize("fusion", [
    component("48018-6", {"coding": [{"system": "http://www.genenames.org", "code": "HGNC:7029"}]}, system=LOCAL),
    component("48019-4", so("SO:0001565", "gene_fusion"), system=LOCAL),
    component("95123-6", {"coding": [{"system": "http://www.genenames.org/geneId", "code": "HGNC:7029::HGNC:427"}]},
              system=LOCAL),
    component("81252-9", valueString="EML4::ALK", system=LOCAL),
])
def test_codes_what_says_fusion_from_another_code_system_does_not_outweigh_a_sequence_change(fusion):
    # Only LOINC's codes say fusion: the same codes of another system leave the point mutation what it is.
    described = variant("v", ALK_GENE)
    described["component"] += [component("48004-6", valueString="NM_004304.5:c.3522C>A"), fusion]
    assert read(chart(described)).facts.molecular.alk.status == "unknown"
    loinc = json.loads(json.dumps(fusion).replace(LOCAL, "http://loinc.org"))
    described["component"][-1] = loinc
    assert read(chart(described)).facts.molecular.alk.status == "positive"


@pytest.mark.parametrize("doubt", [
    loinc_component("48002-0", "LA6683-2", "Germline"),
    loinc_component("53037-8", "LA26333-7", "Uncertain significance"),
    component("48004-6", valueString="NM_004304.5:c.3522C>A"),
    component("48019-4", so("SO:1000002", "substitution")),
])
def test_codes_a_doubt_from_another_code_system_is_still_a_doubt(doubt):
    # What only doubts a finding is read by its code whatever its system: another system's code never hides it.
    doubted = variant("v", ALK_GENE)
    doubted["component"].append(json.loads(json.dumps(doubt).replace("http://loinc.org", LOCAL, 1)))
    assert doubted["component"][-1]["code"]["coding"][0]["system"] == LOCAL
    assert read(chart(doubted)).facts.molecular.alk.status == "unknown"
@pytest.mark.parametrize("code", ["SO:1000002", "SO:0000159", "SO:0000667", "SO:1000032", "SO:1000035", "SO:0001483",
                                  "SO:0002007", "SO:0001583", "SO:0001587", "SO:0001742", "SO:0001743", "SO:0001019"])
def test_fusion_each_sequence_ontology_change_of_sequence_or_copy_number_is_read_by_its_code_alone(code):
    # substitution, deletion, insertion, delins, duplication, SNV, MNV, missense_variant, stop_gained,
    # copy_number_gain, copy_number_loss, copy_number_variation: by the code, with no display to go by
    for kind, said in (("48019-4", "DNA change type"), ("molecular-consequence", "molecular consequence")):
        described = variant("v", ALK_GENE)
        described["component"].append(component(kind, {"coding": [{"system": "http://sequenceontology.org",
                                                                     "code": code}]}))
        result = read(chart(described))
        assert result.facts.molecular.alk.status == "unknown", (kind, code)
        assert [p.message for p in result.problems if p.path == "molecular.alk.status"] == [
            f"ALK variant present with {said} {code} and nothing saying it is a fusion (no partner gene, fusion "
            "transcript or fusion type): not read as the tumour's fusion (status left unknown)"]


@pytest.mark.parametrize("code", ["SO:0001565", "SO:0002062"])  # gene_fusion, complex chromosomal rearrangement
def test_fusion_each_sequence_ontology_fusion_type_is_read_by_its_code_alone(code):
    for kind in ("48019-4", "molecular-consequence"):
        described = variant("v", ALK_GENE)
        described["component"] += [component("48005-3", {"text": "p.Phe1174Leu"}),
                                   component(kind, {"coding": [{"system": "http://sequenceontology.org",
                                                                "code": code}]})]
        assert read(chart(described)).facts.molecular.alk.status == "positive", (kind, code)


def test_fusion_what_describes_neither_a_sequence_change_nor_a_fusion_leaves_the_variant_read_as_before():
    for neither in ([component("48019-4", so("SO:1000036", "inversion"))],  # (a single base, or EML4-ALK's inv(2))
                    [component("48005-3")], [component("48004-6", valueString="")],  # an HGVS without a value
                    [component("48019-4", {"text": "complex"})], [component("81252-9", {"text": "ALK variant"})],
                    [component("69547-8", valueString="C")]):  # (a reference allele says nothing of the kind)
        described = variant("v", ALK_GENE)
        described["component"] += neither
        assert read(chart(described)).facts.molecular.alk.status == "positive", neither
    # An absent variant is read as negative whatever it is described as (as before).
    absent = variant("v", ALK_GENE, present=False)
    absent["component"] += SEQUENCE_CHANGES[0][0]
    assert read(chart(absent)).facts.molecular.alk.status == "negative"
    # Each gene of the rules alike: a RET point mutation (MEN2's M918T) is not a RET fusion.
    ret = variant("r", {"coding": [{"system": "http://www.genenames.org", "code": "HGNC:9967"}]})
    ret["component"].append(component("48005-3", {"text": "p.Met918Thr"}))
    result = read(chart(ret))
    assert result.facts.molecular.ret.status == "unknown"
    assert any(p.path == "molecular.ret.status" and p.message.startswith("RET variant present with a sequence change "
                                                                          "(p.HGVS 'p.Met918Thr')")
               for p in result.problems)


def test_fusion_an_implication_derived_from_the_variant_that_is_not_pathogenic_vetoes_it():
    """Genomics Reporting puts the clinical significance on an implication Observation that names the variant."""
    implication = {"resourceType": "Observation", "id": "imp", "status": "final",
                   "subject": {"reference": "Patient/p1"}, "code": {"text": "Diagnostic Implication"},
                   "derivedFrom": [{"reference": "Observation/v"}],
                   "component": [loinc_component("53037-8", "LA26333-7")]}
    result = read(chart(implication, variant("v", ALK_GENE)))  # (the implication first: order does not matter)
    assert result.facts.molecular.alk.status == "unknown"
    implication["component"] = [loinc_component("53037-8", "LA6668-3")]
    assert read(chart(variant("v", ALK_GENE), implication)).facts.molecular.alk.status == "positive"
    elsewhere = {**implication, "derivedFrom": [{"reference": "Observation/other"}],
                 "component": [loinc_component("53037-8", "LA26333-7")]}
    assert read(chart(variant("v", ALK_GENE), elsewhere)).facts.molecular.alk.status == "positive"
    # A Bundle names the variant by its fullUrl.
    by_url = {**implication, "derivedFrom": [{"reference": "urn:uuid:1f0c"}],
              "component": [loinc_component("53037-8", "LA26333-7")]}
    bundle = {"resourceType": "Bundle", "entry": [{"resource": r} for r in chart(by_url)] + [
        {"fullUrl": "urn:uuid:1f0c", "resource": variant("v", ALK_GENE)}]}
    assert facts_from_bundle(bundle, ON).facts.molecular.alk.status == "unknown"
    # An Observation that is itself the statement (coded 53037-8, its value the significance) vetoes it the same way;
    # another Observation derived from the variant, whatever its value, says nothing of its significance.
    statement = {"resourceType": "Observation", "id": "sig", "status": "final", "subject": {"reference": "Patient/p1"},
                 "code": {"coding": [{"system": "http://loinc.org", "code": "53037-8"}]},
                 "derivedFrom": [{"reference": "Observation/v"}],
                 "valueCodeableConcept": {"coding": [{"system": "http://loinc.org", "code": "LA26333-7"}]}}
    vetoed = read(chart(statement, variant("v", ALK_GENE)))
    assert vetoed.facts.molecular.alk.status == "unknown"
    assert any(p.where == "Observation/v" and "clinical significance LA26333-7" in p.message for p in vetoed.problems)
    other = {**statement, "code": {"coding": [{"system": "http://loinc.org", "code": "51969-4"}]}}
    assert read(chart(other, variant("v", ALK_GENE))).facts.molecular.alk.status == "positive"


@pytest.mark.parametrize("value, said", [({"no": "type"}, "this object has no resourceType"),
                                         ([], "got a list, not a JSON object"), ({"resourceType": "Patient"},
                                                                                 "got 'Patient'")])
def test_never_500_what_is_not_a_bundle_is_named_in_words_not_in_python(value, said):
    with pytest.raises(InvalidInputError) as raised:
        facts_from_bundle(value, ON)
    assert raised.value.problems[0].message == f"expected a FHIR Bundle, {said}"


def test_stage_a_metastasis_naming_no_primary_beside_another_primary_cancer_is_not_the_imts():
    result = read(chart(LUNG_CANCER, secondary("met")))
    assert result.facts.tumor.distant_disease is None
    assert [p.message for p in result.problems if p.where == "Condition/met"] == [
        "secondary tumour that names no primary (extension condition-related), in a chart that holds another primary "
        "cancer (Condition/nsclc); not used for staging: name its primary"]
    second = {**copy.deepcopy(LUNG_CANCER), "id": "crc"}  # two other primaries: both named, in order
    assert any(p.where == "Condition/met" and "(Condition/crc, Condition/nsclc);" in p.message
               for p in read(chart(LUNG_CANCER, second, secondary("met"))).problems)
    assert read(chart(secondary("met"))).facts.tumor.distant_disease is True  # the IMT is the only primary
    named = secondary("met", extension=[{"url": "http://hl7.org/fhir/StructureDefinition/condition-related",
                                         "valueReference": {"reference": "Condition/imt"}}])
    assert read(chart(LUNG_CANCER, named)).facts.tumor.distant_disease is True


# --- wrong cancer: findings of another primary cancer in the same chart -------------------------------------------
# mCODE's staging Observations name their cancer in ``focus`` (CancerStageCommonRules: focus only
# Reference(PrimaryCancerCondition), must support); its published breast cancer bundle (test_fhir_input.py) holds an
# M category and a tumour size that name none. A finding of another cancer must not stage, size or genotype the IMT.

M1, M0 = "1229903009", "1229901006"  # SNOMED: AJCC cM1, cM0


def focused(resource, *references):
    return {**resource, "focus": [{"reference": r} for r in references]}


@pytest.mark.parametrize("code", [M1, M0])
def test_wrong_cancer_an_m_category_whose_focus_is_another_cancer_is_not_the_imts(code):
    result = read(chart(LUNG_CANCER, focused(m_category("m", SNOMED, code), "Condition/nsclc")))
    assert result.facts.tumor.distant_disease is None
    assert [(p.where, p.message, p.path) for p in result.problems] == [
        ("Observation/m", "M category of Condition/nsclc, not of the IMT; not used", "tumor.distant_disease")]
    # Naming the IMT, beside the other cancer: the IMT's. (A focus that names both is the IMT's too.)
    for references in (["Condition/imt"], ["Condition/nsclc", "Condition/imt"]):
        named = read(chart(LUNG_CANCER, focused(m_category("m", SNOMED, code), *references)))
        assert named.facts.tumor.distant_disease is (code == M1), references
        assert named.problems == ()


def test_wrong_cancer_an_m_category_that_names_no_cancer_beside_another_primary_is_not_used():
    result = read(chart(LUNG_CANCER, m_category("m", SNOMED, M1)))
    assert result.facts.tumor.distant_disease is None
    assert [(p.where, p.message, p.path) for p in result.problems] == [
        ("Observation/m", "M category that names no cancer (focus), in a chart that holds another primary cancer "
         "(Condition/nsclc); not used: name its cancer", "tumor.distant_disease")]
    # The IMT the only cancer (another disease is no cancer): no focus is needed; nor when it names a secondary
    # tumour of the IMT.
    assert read(chart(m_category("m", SNOMED, M1))).facts.tumor.distant_disease is True
    asthma = {"resourceType": "Condition", "id": "asthma", "subject": {"reference": "Patient/p1"},
              "code": {"coding": [{"system": SNOMED, "code": "195967001"}]}}
    assert read(chart(asthma, m_category("m", SNOMED, M1))).facts.tumor.distant_disease is True
    of_the_imt = secondary("lung-met", extension=[{"url": "http://hl7.org/fhir/StructureDefinition/condition-related",
                                                   "valueReference": {"reference": "Condition/imt"}}])
    result = read(chart(LUNG_CANCER, of_the_imt, focused(m_category("m", SNOMED, M1), "Condition/lung-met")))
    assert result.facts.tumor.distant_disease is True and result.problems == ()


@pytest.mark.parametrize("break_it", [
    lambda r: r.update(bodySite={"text": "lung"}),  # (bodySite must be a list)
    lambda r: r.update(clinicalStatus={"coding": "active"}),
    lambda r: r.update(verificationStatus={"coding": [{"system": 5, "code": "confirmed"}]}),
])
def test_wrong_cancer_a_malformed_primary_cancer_still_holds_its_findings_that_name_no_cancer(break_it):
    """Another primary cancer whose code or profile is read but whose site or statuses are not: skipped as malformed
    (it used to be forgotten, and its cM1 that names no cancer read as the IMT's distant disease), it is still
    another primary cancer of the chart. Refuted, it is none."""
    broken = copy.deepcopy(LUNG_CANCER)
    break_it(broken)
    result = read(chart(broken, m_category("m", SNOMED, M1)))
    assert result.ok and result.facts.tumor.distant_disease is None
    assert [(p.where, p.kind) for p in result.problems] == [
        ("Condition/nsclc", "skipped"), ("Observation/m", "skipped")]
    assert result.problems[0].message.startswith("malformed Condition (")
    assert "another primary cancer (Condition/nsclc)" in result.problems[1].message
    refuted = {**broken, "verificationStatus": {"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "refuted"}]}}
    assert read(chart(refuted, m_category("m", SNOMED, M1))).facts.tumor.distant_disease is True


@pytest.mark.parametrize("break_it", [
    lambda r: r.update(code={"coding": {"system": SNOMED, "code": "254637007"}}),  # (coding must be a list)
    lambda r: r.update(code={"coding": [{"system": SNOMED, "code": 254637007}]}),  # (a code is a string)
    lambda r: r.update(code="254637007"),
    lambda r: r.update(extension={"url": "x"}),  # (mCODE's morphology is an extension: must be a list)
])
def test_wrong_cancer_a_condition_whose_code_cannot_be_read_may_be_another_cancer(break_it):
    """A Condition whose code (or extensions) cannot be read cannot be told from another primary cancer:
    skipped as malformed, it used to be forgotten, and a lung cancer's cM1 that names no cancer, its tumour size, its
    surgery were read as the IMT's. Now findings that name no cancer are not used beside it, as beside another
    primary cancer, and a surgery that names no reason stops the evaluation. Refuted, it is none."""
    broken = copy.deepcopy(LUNG_CANCER)
    break_it(broken)
    result = read(chart(broken, m_category("m", SNOMED, M1), size("s", 6)))
    assert result.ok and result.facts.tumor.distant_disease is None and result.facts.tumor.size_cm is None
    assert [(p.where, p.kind) for p in result.problems] == [
        ("Condition/nsclc", "skipped"), ("Observation/m", "skipped"), ("Observation/s", "skipped")]
    assert result.problems[0].message.startswith("malformed Condition (")
    assert result.problems[1].message == (
        "M category that names no cancer (focus), in a chart that holds a Condition that cannot be read, which may be "
        "another cancer (Condition/nsclc); not used: name its cancer")
    # A secondary tumour that names no primary may be that cancer's, as beside another primary cancer.
    result = read(chart(broken, secondary("met")))
    assert result.facts.tumor.distant_disease is None
    assert "holds a Condition that cannot be read, which may be another cancer (Condition/nsclc)" in \
        result.problems[-1].message
    unnamed_progression = {key: value for key, value in worse("worse").items() if key != "focus"}
    for finding in (SURGERY, unnamed_progression):  # (yes/no facts: left out or taken, either could be wrong)
        result = read(chart(broken, medication("crizotinib"), finding))
        assert not result.ok
        assert [(p.where, p.severity, p.kind) for p in result.problems][-1] == (
            f"{finding['resourceType']}/{finding['id']}", "error", "unattributed")
    refuted = {**broken, "verificationStatus": {"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "refuted"}]}}
    assert read(chart(refuted, m_category("m", SNOMED, M1))).facts.tumor.distant_disease is True
    # Beside another primary cancer that is read, a message names both.
    other = {**LUNG_CANCER, "id": "crc"}
    result = read(chart(broken, other, m_category("m", SNOMED, M1)))
    assert result.problems[-1].message == (
        "M category that names no cancer (focus), in a chart that holds another primary cancer (Condition/crc) and a "
        "Condition that cannot be read, which may be another cancer (Condition/nsclc); not used: name its cancer")


def test_wrong_cancer_a_history_of_metastatic_cancer_beside_another_primary_is_not_the_imts_but_none_is():
    mcode = ROOT / "tests" / "fixtures" / "mcode-4.0.0"
    history = json.loads((mcode / "Observation-history-of-cancer-metastatic-to-liver.json").read_text())
    history["subject"]["reference"] = "Patient/p1"
    result = read(chart(LUNG_CANCER, history))
    assert result.facts.tumor.distant_disease is None
    assert [(p.message, p.path) for p in result.problems] == [
        ("history of metastatic cancer that names no cancer (focus), in a chart that holds another primary cancer "
         "(Condition/nsclc); not used: name its cancer", "tumor.distant_disease")]
    assert read(chart(LUNG_CANCER, focused(history, "Condition/imt"))).facts.tumor.distant_disease is True
    # "No history of metastatic cancer" is said of the patient: of the IMT too; unless it names the other cancer.
    none = {**history, "valueBoolean": False}
    assert read(chart(LUNG_CANCER, none)).facts.tumor.distant_disease is False
    result = read(chart(LUNG_CANCER, focused(none, "Condition/nsclc")))
    assert result.facts.tumor.distant_disease is None
    assert [p.message for p in result.problems] == [
        "history of metastatic cancer of Condition/nsclc, not of the IMT; not used"]


def test_wrong_cancer_a_tumour_size_of_another_cancer_or_naming_none_beside_one_is_not_the_imts():
    result = read(chart(LUNG_CANCER, size("s", 6)))
    assert result.facts.tumor.size_cm is None
    assert [(p.message, p.path) for p in result.problems] == [
        ("tumor size that names no cancer (focus), in a chart that holds another primary cancer (Condition/nsclc); "
         "not used: name its cancer", "tumor.size_cm")]
    result = read(chart(focused(size("s", 6), "Condition/other", "Condition/another")))
    assert result.facts.tumor.size_cm is None
    assert [p.message for p in result.problems] == [
        "tumor size of Condition/other, Condition/another, not of the IMT; not used"]
    assert read(chart(LUNG_CANCER, focused(size("s", 6), "Condition/imt"))).facts.tumor.size_cm == 6
    # mCODE's own focus, a Tumor BodyStructure, names no Condition: the IMT's when it is the only cancer.
    assert read(chart(focused(size("s", 6), "BodyStructure/tumour"))).facts.tumor.size_cm == 6
    assert read(chart(LUNG_CANCER, focused(size("s", 6), "BodyStructure/tumour"))).facts.tumor.size_cm is None
    # A Condition on another server than the chart's is another record's, not the IMT.
    base, other = "https://ehr.example/fhir", "https://other-ehr.example/fhir/Condition/imt"
    result = facts_from_bundle({"resourceType": "Bundle", "entry": [
        {"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r}
        for r in chart(focused(size("s", 6), other))]}, ON)
    assert result.facts.tumor.size_cm is None
    assert [p.message for p in result.problems] == [f"tumor size of {other}, not of the IMT; not used"]


def test_wrong_cancer_an_alk_fusion_beside_another_primary_cancer_is_not_the_imts():
    """ALK fusions drive a share of lung adenocarcinomas: in a chart that also holds one, an ALK fusion that names no
    cancer may be the lung cancer's, and an ALK inhibitor suggested for the IMT on it would rest on nothing."""
    result = read(chart(LUNG_CANCER, variant("v", ALK_GENE)))
    assert result.facts.molecular.alk.status == "unknown"
    assert [(p.where, p.message, p.path) for p in result.problems] == [
        ("Observation/v", "ALK variant that names no cancer (focus), in a chart that holds another primary cancer "
         "(Condition/nsclc); not used: name its cancer", "molecular.alk.status")]
    assert read(chart(LUNG_CANCER, focused(variant("v", ALK_GENE), "Condition/imt"))).facts.molecular.alk.status == (
        "positive")
    negative = read(chart(LUNG_CANCER, focused(variant("v", ALK_GENE, present=False), "Condition/nsclc")))
    assert negative.facts.molecular.alk.status == "unknown"
    assert [p.message for p in negative.problems] == ["ALK variant of Condition/nsclc, not of the IMT; not used"]
    assert read(chart(variant("v", ALK_GENE))).facts.molecular.alk.status == "positive"  # the only cancer


def test_wrong_cancer_a_worsening_that_names_no_cancer_beside_another_primary_and_an_alk_inhibitor_stops():
    """Progression on an ALK inhibitor is a yes/no fact: left out it reads "no", taken it may be the other cancer's
    (an ALK-positive lung cancer is treated with the same drugs); either could change the advice."""
    unnamed = {k: v for k, v in worse("worse").items() if k != "focus"}
    result = read(chart(LUNG_CANCER, medication("crizotinib"), unnamed))
    assert result.facts is None and not result.ok
    assert [(p.where, p.message, p.severity, p.path, p.kind) for p in result.problems] == [
        ("Observation/worse", "disease progression that names no cancer (focus), in a chart that holds another primary "
         "cancer (Condition/nsclc), after MedicationStatement/crizotinib: progression on an ALK inhibitor cannot be "
         "established, so nothing is evaluated: name its cancer", "error", "history.progressed_on_alk_inhibitor",
         "unattributed")]
    twice = read(chart(LUNG_CANCER, medication("crizotinib"), medication("alectinib", code="1727455"), unnamed))
    assert ", after MedicationStatement/crizotinib, MedicationStatement/alectinib: progression" in (
        twice.problems[0].message)
    # No ALK inhibitor before it, or progression established by a worsening that names the IMT: only reported.
    for resources in ([medication("crizotinib", when="2026-06-01"), unnamed],
                      [medication("crizotinib"), unnamed, worse("imt-worse")]):
        result = read(chart(LUNG_CANCER, *resources))
        assert result.ok, resources
        assert [(p.where, p.message) for p in result.problems if p.where == "Observation/worse"] == [
            ("Observation/worse", "disease progression that names no cancer (focus), in a chart that holds another "
             "primary cancer (Condition/nsclc); not used")]
    assert read(chart(LUNG_CANCER, medication("crizotinib"), unnamed, worse("imt-worse"))).facts.history \
        .progressed_on_alk_inhibitor is True
    # The IMT the only cancer: a worsening that names none, or names a Tumor BodyStructure, is the IMT's.
    for resource in (unnamed, worse("worse", focus="BodyStructure/tumour")):
        assert read(chart(medication("crizotinib"), resource)).facts.history.progressed_on_alk_inhibitor is True


def test_wrong_cancer_a_worsening_of_a_secondary_tumour_of_the_imt_is_the_imts_progression():
    of_the_imt = secondary("liver-met", extension=[{"url": "http://hl7.org/fhir/StructureDefinition/condition-related",
                                                    "valueReference": {"reference": "Condition/imt"}}])
    result = read(chart(LUNG_CANCER, of_the_imt, medication("crizotinib"), worse("worse", focus="Condition/liver-met")))
    assert result.facts.history.progressed_on_alk_inhibitor is True
    # A secondary tumour of the other cancer is the other cancer's.
    of_the_lung = secondary("liver-met", extension=[{"url": "http://hl7.org/fhir/StructureDefinition/condition-related",
                                                     "valueReference": {"reference": "Condition/nsclc"}}])
    progression = worse("worse", focus="Condition/liver-met")
    result = read(chart(LUNG_CANCER, of_the_lung, medication("crizotinib"), progression))
    assert result.facts.history.progressed_on_alk_inhibitor is False
    assert ("Observation/worse", "disease status of Condition/liver-met, not of the IMT; not used") in [
        (p.where, p.message) for p in result.problems]


def test_wrong_cancer_a_resection_that_names_no_reason_beside_another_primary_stops_unless_surgery_is_known():
    """Surgery done is a yes/no fact: a lobectomy that names no reason, in a chart that also holds a lung cancer, may
    be the lung cancer's; left out, surgery would read "no"."""
    resection = {"resourceType": "Procedure", "id": "resection", "status": "completed",
                 "subject": {"reference": "Patient/p1"}, "code": {"coding": [{"system": SNOMED, "code": "359615001"}]}}
    result = read(chart(LUNG_CANCER, resection))
    assert result.facts is None and not result.ok
    assert [(p.where, p.message, p.severity, p.path, p.kind) for p in result.problems] == [
        ("Procedure/resection", "surgery that names no reason (reasonReference), in a chart that holds another primary "
         "cancer (Condition/nsclc): whether the IMT was operated on cannot be established, so nothing is evaluated: "
         "name its reason", "error", "history.surgery_done", "unattributed")]
    # Another resource that says whether the IMT was operated on settles it; the resection is then only reported.
    of_the_imt = {**resection, "id": "imt-resection", "reasonReference": [{"reference": "Condition/imt"}]}
    for said, surgery in ((of_the_imt, True), (fact("f", "history.surgery_done", valueBoolean=False), False)):
        result = read(chart(LUNG_CANCER, resection, said))
        assert result.ok and result.facts.history.surgery_done is surgery
        assert [(p.where, p.message) for p in result.problems] == [
            ("Procedure/resection", "surgery that names no reason (reasonReference), in a chart that holds another "
             "primary cancer (Condition/nsclc); not used")]
    assert read(chart(resection)).facts.history.surgery_done is True  # the IMT the only cancer


def test_wrong_cancer_a_primary_cancer_the_patient_does_not_have_is_no_other_cancer():
    for status in ("refuted", "entered-in-error"):
        refuted = {**copy.deepcopy(LUNG_CANCER), "verificationStatus": {"coding": [{"code": status}]}}
        result = read(chart(refuted, size("s", 6), m_category("m", SNOMED, M1)))
        assert (result.facts.tumor.size_cm, result.facts.tumor.distant_disease) == (6, True), status
        assert result.problems == (), status
    for status in ("provisional", "resolved"):  # a cancer suspected, or one in the past, may have left findings
        other = {**copy.deepcopy(LUNG_CANCER), "verificationStatus": {"coding": [{"code": status}]}}
        if status == "resolved":
            other = {**copy.deepcopy(LUNG_CANCER), "clinicalStatus": {"coding": [{"code": status}]}}
        assert read(chart(other, size("s", 6))).facts.tumor.size_cm is None, status


ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"


def coded_cancer(resource_id, code, **elements):
    """A Condition as most EHRs send one: coded in ICD-10-CM, no mCODE profile."""
    return {"resourceType": "Condition", "id": resource_id, "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": ICD10CM, "code": code}]}, **elements}


@pytest.mark.parametrize("code", [
    "C84.60", "C34.90", "C50.811",  # ALK+ ALCL, lung, breast (mCODE's list)
    "C84.6A", "C88.41",  # ALK+ ALCL in remission, MALT lymphoma (added by ICD-10-CM since mCODE's list)
    "C34.9", "C84", "C84.6",  # header codes (not billable), every code under them listed
])
def test_wrong_cancer_another_primary_is_known_by_its_icd_10_cm_code_without_a_profile(code):
    """An ALK-positive anaplastic large cell lymphoma or an ALK-positive lung cancer, coded but not profiled: an ALK
    fusion that names no cancer may be theirs, and is not read as the IMT's."""
    result = read(chart(coded_cancer("other", code), variant("v", ALK_GENE), size("s", 6)))
    assert result.facts.molecular.alk.status == "unknown"
    assert result.facts.tumor.size_cm is None
    assert [(p.where, p.message, p.path) for p in result.problems] == [
        ("Observation/v", "ALK variant that names no cancer (focus), in a chart that holds another primary cancer "
         "(Condition/other); not used: name its cancer", "molecular.alk.status"),
        ("Observation/s", "tumor size that names no cancer (focus), in a chart that holds another primary cancer "
         "(Condition/other); not used: name its cancer", "tumor.size_cm")]
    named = read(chart(coded_cancer("other", code), focused(variant("v", ALK_GENE), "Condition/imt")))
    assert (named.facts.molecular.alk.status, named.problems) == ("positive", ())


def who_coded_cancer(code):
    """A Condition coded in WHO ICD-10 (the international edition), no mCODE profile."""
    return {**coded_cancer("other", code), "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10",
                                                                "code": code}]}}


@pytest.mark.parametrize("code", ["C84.6", "C34.9", "C49.2", "C91.0", "C80.9", "C97"])
def test_wrong_cancer_another_primary_is_known_by_its_who_icd_10_code_without_a_profile(code):
    """Charts from outside the US code in WHO ICD-10: an ALK-positive anaplastic large cell lymphoma (C84.6), a lung
    cancer, a sarcoma, a leukaemia, an unknown primary or multiple primaries are other cancers there too."""
    result = read(chart(who_coded_cancer(code), variant("v", ALK_GENE)))
    assert result.facts.molecular.alk.status == "unknown"
    assert [(p.where, p.path) for p in result.problems] == [("Observation/v", "molecular.alk.status")]


@pytest.mark.parametrize("condition", [
    coded_cancer("other", "C84.60", verificationStatus={"coding": [{"code": "refuted"}]}),
    coded_cancer("other", "C84.60", verificationStatus={"coding": [{"code": "entered-in-error"}]}),
    coded_cancer("other", "D00.00"),  # a carcinoma in situ (mCODE's CarcinomaInSituDisorderVS, not a malignant one)
    coded_cancer("other", "C44"),  # a header over the skin's codes, most of which mCODE leaves out
    who_coded_cancer("C84.60"),  # an ICD-10-CM code under WHO ICD-10's system, where it does not exist
    who_coded_cancer("C44.9"),  # WHO ICD-10's malignant neoplasm of skin, unspecified (the skin, as in ICD-10-CM)
    {**coded_cancer("other", "C84.60"), "code": {"text": "C84.60"}},
])
def test_wrong_cancer_a_condition_not_coded_as_a_primary_cancer_the_patient_has_is_none(condition):
    result = read(chart(condition, variant("v", ALK_GENE)))
    assert (result.facts.molecular.alk.status, result.problems) == ("positive", ())


@pytest.mark.parametrize("condition", [
    coded_cancer("other", "C78.01"),  # ICD-10-CM: secondary malignant neoplasm of right lung
    coded_cancer("other", "C78"),  # its header
    who_coded_cancer("C78.0"),  # WHO ICD-10: secondary malignant neoplasm of lung
])
def test_wrong_cancer_a_secondary_tumour_is_no_other_primary_cancer(condition):
    """A metastasis coded without a profile is the IMT's when it names no primary (the stage tests below): it makes no
    other primary cancer, so the fusion that names no cancer is still the IMT's."""
    result = read(chart(condition, variant("v", ALK_GENE)))
    assert result.facts.molecular.alk.status == "positive"
    assert result.facts.tumor.distant_disease is True
    assert [p.kind for p in result.problems] == ["weak"]


def named_condition(text=None, display=None):
    """A Condition known only by its words: a text, or a display on a code of a local system."""
    code = {"text": text} if text is not None else {"coding": [{"system": "urn:oid:1.2.3.4", "code": "X1",
                                                                "display": display}]}
    return {"resourceType": "Condition", "id": "other", "subject": {"reference": "Patient/p1"}, "code": code}


@pytest.mark.parametrize("condition", [
    named_condition("Anaplastic large cell lymphoma, ALK positive"),
    named_condition("ALK-negative anaplastic large cell lymphoma"),  # ("negative" alone vetoes nothing)
    named_condition("Non-Hodgkin lymphoma"),
    named_condition("NSCLC - non-small cell lung cancer"),
    named_condition("Neuroblastoma, high-risk"),
    named_condition("Rhabdomyosarcoma of the bladder"),
    named_condition("Acute lymphoblastic leukaemia in remission"),
    named_condition("Adenocarcinoma of lung"),
    named_condition("Ｌｙｍｐｈｏｍａ"),  # (fullwidth letters, read as a clinician sees them)
    named_condition(display="Anaplastic large cell lymphoma (disorder)"),  # a code not listed, its display
    named_condition(display="Malignant neoplasm of breast (disorder)"),  # SNOMED CT's way of naming most cancers
    named_condition("Malignant tumor of colon"),
    named_condition("Secondary acute myeloid leukaemia"),  # (therapy-related: a primary of its own)
])
def test_wrong_cancer_another_primary_is_known_by_the_words_that_name_it(condition):
    result = read(chart(condition, variant("v", ALK_GENE)))
    assert result.facts.molecular.alk.status == "unknown"
    assert [(p.where, p.message) for p in result.problems] == [
        ("Observation/v", "ALK variant that names no cancer (focus), in a chart that holds another primary cancer "
         "(Condition/other); not used: name its cancer")]


@pytest.mark.parametrize("condition", [
    named_condition("Family history of breast cancer"),
    named_condition("Mother with leukemia"),
    named_condition("Breast cancer screening"),
    named_condition("No evidence of lymphoma"),
    named_condition("Lymphoma ruled out"),
    named_condition("At risk of cancer"),
    named_condition("Ductal carcinoma in situ"),
    named_condition("Myofibroblastoma of the breast"),  # benign
    named_condition("Malignant hypertension"),
    named_condition("Inflammatory myofibroblastic sarcoma"),  # the IMT itself, by another of its names
    named_condition(display="Osteoblastoma (disorder)"),  # benign
    named_condition(display="Secondary malignant neoplasm of brain (disorder)"),  # a metastasis, maybe the IMT's
])
def test_wrong_cancer_words_that_name_no_cancer_of_the_patient_make_no_other_cancer(condition):
    result = read(chart(condition, variant("v", ALK_GENE)))
    assert (result.facts.molecular.alk.status, [p for p in result.problems if p.where == "Observation/v"]) == (
        "positive", [])


def test_stage_a_tumour_size_without_its_dimension_or_with_units_that_disagree_is_not_used():
    flat = size("s", 6)
    flat["valueQuantity"] = flat.pop("component")[0]["valueQuantity"]
    result = read(chart(flat))
    assert result.facts.tumor.size_cm is None
    assert any(p.where == "Observation/s" and "longest-dimension" in p.message for p in result.problems)
    both = size("s", 6)
    both["component"][0]["valueQuantity"].update(unit="cm", code="mm")
    result = read(chart(both))
    assert result.facts.tumor.size_cm is None
    assert [(p.message, p.path) for p in result.problems if p.where == "Observation/s"] == [
        ("tumor size whose unit 'cm' and code 'mm' disagree; not used", "tumor.size_cm")]


def _history_of_metastases(resource_id, value, when):
    return {"resourceType": "Observation", "id": resource_id, "status": "final", "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": SNOMED, "code": "1287652008"}]}, "effectiveDateTime": when,
            "valueBoolean": value}


@pytest.mark.parametrize(("latest", "path"), [
    ({**m_category("m1", SNOMED, M1, when="2026-01-10"), "valueCodeableConcept": {"coding": M1}},
     "tumor.distant_disease"),
    (_history_of_metastases("m1", "yes", "2026-01-10"), "tumor.distant_disease"),
    (size("s2", "5"), "tumor.size_cm"),
])
def test_stage_a_malformed_finding_is_not_replaced_by_an_earlier_one(latest, path):
    """Hazard H4 (wrong stage): a malformed staging finding of this year beside last year's cM0 (or a malformed size
    beside another, undated as sizes are) leaves the fact unknown: what it says cannot be read, and the earlier one
    does not stand in its place. Staging is then requested."""
    earlier = {"tumor.distant_disease": m_category("m0", SNOMED, M0, when="2025-01-10"),
               "tumor.size_cm": size("s1", 3.5)}[path]
    result = read(chart(earlier, latest))
    assert result.ok
    tumor = result.facts.tumor
    assert (tumor.distant_disease if path == "tumor.distant_disease" else tumor.size_cm) is None
    assert [(p.where.split(", "), p.kind) for p in result.problems] == [
        ([resource_label(latest, 3)], "skipped"), ([resource_label(latest, 3), resource_label(earlier, 2)], "conflict")]
    assert result.problems[0].message.startswith("malformed Observation (")
    assert result.problems[1].message.startswith(f"{path} left unknown: what {resource_label(latest, 3)}")
    if path == "tumor.distant_disease":
        assert "R07" in {f.rule.id for f in Engine().evaluate(result.facts).recommendations}
        # Earlier than one that is read, a malformed finding is outranked as any finding is.
        older = {**latest, "id": "old", "effectiveDateTime": "2024-01-10"}
        assert read(chart(older, earlier)).facts.tumor.distant_disease is False
    assert read(chart(earlier)).ok  # (alone, the earlier finding is read)


@pytest.mark.parametrize("break_it", [
    lambda r: r.update(valueCodeableConcept={"coding": "LA9633-4"}),  # (coding must be a list)
    lambda r: r.update(method={"coding": {"system": "urn:imt-cds:method", "code": "FISH"}}),
    lambda r: r.update(focus={"reference": "Condition/imt"}),  # (focus must be a list)
])
def test_genotype_a_malformed_variant_of_a_known_gene_leaves_its_status_unknown_beside_another(break_it):
    """A variant whose gene is read but not the rest (its value, method or focus) says something of that gene that
    cannot be told: beside an ALK-negative result the status is unknown (it read negative), and a gene it does not
    name is untouched."""
    broken = variant("broken", ALK_GENE)
    break_it(broken)
    negative = variant("negative", ALK_GENE, present=False)
    result = read(chart(negative, broken))
    assert result.ok and result.facts.molecular.alk.status == "unknown"
    assert [(p.where, p.kind, p.path) for p in result.problems] == [
        ("Observation/broken", "skipped", None),
        ("Observation/broken, Observation/negative", "conflict", "molecular.alk.status")]
    assert read(chart(negative)).facts.molecular.alk.status == "negative"
    ros1 = variant("ros1", {"coding": [{"system": "http://www.genenames.org", "code": "HGNC:10261"}]}, present=False)
    assert read(chart(ros1, broken)).facts.molecular.ros1.status == "negative"


@pytest.mark.parametrize("break_it", [
    lambda r: r["component"][0].update(valueCodeableConcept={"coding": {"code": "HGNC:427"}}),  # (must be a list)
    lambda r: r["component"][0].update(code="48018-6"),
    lambda r: r.update(component={"code": {"text": "gene studied"}}),
    lambda r: r["component"].insert(0, {"code": {"coding": [{"system": "http://loinc.org", "code": 48018}]}}),
])
def test_genotype_a_variant_whose_genes_cannot_be_read_leaves_each_gene_read_beside_it_unknown(break_it):
    """A variant Observation whose genes cannot be read may be a result about any gene of the facts: beside an
    ALK-negative result (and a ROS1-negative one) it leaves each unknown (they read negative), with a conflict that
    names it; alone, it changes nothing (every gene unknown, as before). (Results of a gene are not ranked by date:
    two that disagree are a conflict.)"""
    broken = variant("broken", ALK_GENE)
    break_it(broken)
    negative = variant("negative", ALK_GENE, present=False)
    ros1 = variant("ros1", {"coding": [{"system": "http://www.genenames.org", "code": "HGNC:10261"}]}, present=False)
    result = read(chart(negative, ros1, broken))
    assert result.ok
    assert (result.facts.molecular.alk.status, result.facts.molecular.ros1.status) == ("unknown", "unknown")
    assert [(p.where, p.kind, p.path) for p in result.problems] == [
        ("Observation/broken", "skipped", None),
        ("Observation/broken, Observation/negative", "conflict", "molecular.alk.status"),
        ("Observation/broken, Observation/ros1", "conflict", "molecular.ros1.status")]
    assert read(chart(negative, ros1)).facts.molecular.alk.status == "negative"
    assert read(chart(broken)).facts == read(chart()).facts


@pytest.mark.parametrize("break_it", [
    lambda r: r.update(clinicalStatus={"coding": "active"}),  # (coding must be a list)
    lambda r: r.update(bodySite={"text": "liver"}),  # (bodySite must be a list)
    lambda r: r.update(verificationStatus={"coding": [{"system": 5, "code": "confirmed"}]}),
])
@pytest.mark.parametrize("profiled", [True, False])
def test_stage_a_malformed_secondary_tumour_is_not_replaced_by_an_earlier_m0(break_it, profiled):
    """A metastasis recorded this year (mCODE's profile, or known by its words) whose status or site cannot be read:
    last year's cM0 does not stand in its place (it read M0); one recorded before the cM0 is outranked by it. (One
    whose extensions cannot be read is not known as a metastasis: mCODE's morphology, which may name the IMT, is an
    extension.)"""
    broken = secondary("liver-met", when="2026-01-10")
    if not profiled:
        del broken["meta"]
        broken["code"] = {"text": "Liver metastases"}
    break_it(broken)
    m0 = m_category("m0", SNOMED, M0, when="2025-01-10")
    result = read(chart(m0, broken))
    assert result.ok and result.facts.tumor.distant_disease is None
    assert [(p.where, p.kind) for p in result.problems] == [
        ("Condition/liver-met", "skipped"), ("Condition/liver-met, Observation/m0", "conflict")]
    assert result.problems[0].message.startswith("malformed Condition (")
    older = read(chart(m0, {**broken, "onsetDateTime": "2024-01-10"}))
    assert older.ok and older.facts.tumor.distant_disease is False
    # Another disease's malformed Condition bears on no stage.
    other = {**broken, "meta": {}, "code": {"text": "Asthma"}}
    assert read(chart(m0, other)).facts.tumor.distant_disease is False


def test_stage_a_malformed_finding_dated_after_the_evaluation_date_is_not_one():
    """Read, it would not be used (a wrong date, H4): not read, it leaves the earlier cM0 standing too."""
    future = {**m_category("m1", SNOMED, M1, when="2027-03-01"), "valueCodeableConcept": {"coding": M1}}
    result = read(chart(m_category("m0", SNOMED, M0, when="2025-01-10"), future))
    assert result.ok and result.facts.tumor.distant_disease is False
    assert [p.kind for p in result.problems] == ["skipped"]


def test_wrong_diagnosis_an_abated_imt_condition_without_a_clinical_status_does_not_count():
    """FHIR's con-4: an abated Condition is inactive, in remission or resolved; a resolved one is not used."""
    abated = {k: v for k, v in IMT.items() if k != "clinicalStatus"}
    abated["abatementDateTime"] = "2025-01-10"
    result = read(chart(imt=abated))
    assert (result.eligibility.eligible, result.eligibility.reason) == (False, "no_imt_diagnosis")
    assert any(p.where == "Condition/imt" and p.message == "abated (abatement given) without a clinical status: "
               "resolved or in remission cannot be told; not used" for p in result.problems)
    remission = {**copy.deepcopy(abated), "clinicalStatus": {"coding": [{"code": "remission"}]}}
    assert read(chart(imt=remission)).ok  # (said: in remission, still the patient's IMT)
    assert read(chart(imt={k: v for k, v in IMT.items() if k != "clinicalStatus"})).ok  # no abatement: as before


def test_never_a_silent_no_a_fact_given_two_values_is_malformed():
    """FHIR's value[x] is one choice: valueBoolean true beside valueString "false" says nothing usable."""
    both = fact("prog", "history.progressed_on_alk_inhibitor", valueBoolean=True, valueString="false")
    result = read(chart(both))
    assert result.facts is None
    assert [p.message for p in result.problems if p.severity == "error"] == [
        "malformed Observation (value[x] given more than once (valueBoolean, valueString)) about "
        "history.progressed_on_alk_inhibitor, which cannot be left unknown, so nothing is evaluated"]
    many = fact("prog", "history.progressed_on_alk_inhibitor", valueBoolean=True, valueString="false",
                valueInteger=1, valueCodeableConcept={"text": "yes"}, valueQuantity={"value": 1})
    (said,) = [p.message for p in read(chart(many)).problems if p.severity == "error"]
    assert "(value[x] given more than once (valueBoolean, valueString, valueInteger, valueCodeableConcept))" in said
    resect = fact("resect", "tumor.resectability", valueString="unresectable", valueCodeableConcept={"text": "x"})
    result = read(chart(resect))  # a fact that may be unknown: reported and skipped
    assert result.facts.tumor.resectability == "unknown"
    assert any(p.where == "Observation/resect" and "more than once" in p.message for p in result.problems)
