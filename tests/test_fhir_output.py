"""The FHIR export of an assessment: an R4 Bundle that the ``fhir.resources`` R4B models accept, shaped as the HL7 CDS
Hooks clinical-reasoning guide asks (profiles and indicator ConceptMap copied into tests/fixtures/ from the guide),
every action pointing at the resource that carries its finding, every resource with narrative, the patient referenced
by id and identifier, every other reference resolving inside the Bundle, and a Provenance naming the rulebook and
the input. The R4 invariants themselves are evaluated in test_fhir_invariants.py."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle

from imt_cds import Engine
from imt_cds.audit import open_store
from imt_cds.render.fhir_output import (
    GUIDANCE_RESPONSE_PROFILE,
    INDICATOR_PRIORITY,
    REQUEST_GROUP_PROFILE,
    System,
    assessment_bundle,
    finding_indicator,
)

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "cds-hooks-clinical-reasoning"
EXAMPLES = sorted((ROOT / "examples").glob("*.json"))
SCRIPT = Path(sys.executable).with_name("imt-cds")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, rulebook):
    """Every example recorded in an audit store and exported through the command line."""
    db = tmp_path_factory.mktemp("fhir") / "audit.db"
    with open_store(db) as store:
        engine = Engine(rulebook, audit=store)
        for path in EXAMPLES:
            engine.evaluate(json.loads(path.read_text()))
        records = list(store.records())
    assert len(records) == len(EXAMPLES) >= 8  # one per example: the tests below loop over them
    bundles = []
    for record in records:
        result = subprocess.run([str(SCRIPT), "audit", "export", record.id, "--db", str(db), "--format", "fhir"],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        bundles.append((record, json.loads(result.stdout)))
    return bundles


def _resources(bundle, kind):
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def test_every_export_parses_as_an_r4_bundle(exported):
    for _, bundle in exported:
        parsed = Bundle.model_validate(bundle)
        assert parsed.type == "collection"
        kinds = [entry.resource.get_resource_type() for entry in parsed.entry]
        assert kinds.count("GuidanceResponse") == kinds.count("RequestGroup") == kinds.count("Provenance") == 1


def test_risk_flags_are_detected_issues_and_recommendations_are_request_group_actions(exported):
    for record, bundle in exported:
        document = record.assessment
        (group,) = _resources(bundle, "RequestGroup")
        issues = _resources(bundle, "DetectedIssue")
        assert sorted(i["code"]["coding"][0]["code"] for i in issues) == [f["code"] for f in document["risk_flags"]]
        actions = {a["id"]: a for a in group.get("action", [])}
        for finding in [*document["recommendations"], *document["risk_flags"]]:
            action = actions[finding["code"]]
            assert action["title"] == finding["summary"] and len(action["title"]) < 140  # card.summary
            assert action["priority"] == INDICATOR_PRIORITY[finding_indicator(finding)]
            quotes = [e["quote"] for e in finding["evidence"] if e["quote"]]
            assert all(any(q in d.get("citation", "") for d in action["documentation"]) for q in quotes)
            assert finding["rule"]["id"] in action["documentation"][0]["display"]
        for issue in issues:
            assert actions[issue["code"]["coding"][0]["code"]]["resource"]["reference"].endswith(issue["id"])


def test_every_action_points_at_the_resource_that_carries_its_finding(exported):
    for record, bundle in exported:
        by_url = {entry["fullUrl"]: entry["resource"] for entry in bundle["entry"]}
        (group,) = _resources(bundle, "RequestGroup")
        document = record.assessment
        actions = group.get("action", [])
        assert len(actions) == len(document["recommendations"]) + len(document["risk_flags"])
        kinds = {f["code"]: ("CommunicationRequest" if f in document["recommendations"] else "DetectedIssue")
                 for f in [*document["recommendations"], *document["risk_flags"]]}
        for action in actions:
            assert "action" not in action  # rqg-1: a resource or sub-actions, not both
            carrier = by_url[action["resource"]["reference"]]
            assert carrier["resourceType"] == kinds[action["id"]]
            coded = carrier["reasonCode"][0] if carrier["resourceType"] == "CommunicationRequest" else carrier["code"]
            assert coded["coding"][0]["code"] == action["id"]
            if carrier["resourceType"] == "CommunicationRequest":
                assert carrier["payload"][0]["contentString"].split(": ", 1)[1].startswith(action["title"])
                assert carrier["priority"] == action["priority"]


def test_every_resource_has_generated_narrative_saying_what_it_holds(exported):
    for record, bundle in exported:
        for entry in bundle["entry"]:
            resource = entry["resource"]
            text = resource["text"]
            assert text["status"] == "generated"
            div = ET.fromstring(text["div"])
            assert div.tag == "{http://www.w3.org/1999/xhtml}div"
            words = " ".join(div.itertext())
            assert words.strip()
            if resource["resourceType"] in ("CommunicationRequest", "DetectedIssue"):
                (finding,) = [f for f in [*record.assessment["recommendations"], *record.assessment["risk_flags"]]
                              if f["code"] == (resource.get("reasonCode") or [resource.get("code")])[0]
                              ["coding"][0]["code"]]
                assert finding["summary"] in words and ("consider" in words or "review" in words)
            if resource["resourceType"] == "GuidanceResponse" and record.patient_id:
                assert record.patient_id in words and "not a prescription" in words


def test_the_patient_is_referenced_by_id_and_by_identifier(engine):
    facts = json.loads(EXAMPLES[1].read_text())
    for patient_id, reference in (("P-0042", "Patient/P-0042"), ("patient/with spaces ü", None), (None, None)):
        document = engine.evaluate({**facts, "patient_id": patient_id}).to_dict()
        bundle = assessment_bundle(document, request_id="hook-1")
        subjects = [r.get("subject", r.get("patient")) for r in (e["resource"] for e in bundle["entry"])
                    if r["resourceType"] in ("GuidanceResponse", "RequestGroup", "CommunicationRequest",
                                             "DetectedIssue")]
        assert len(subjects) > 2
        for subject in subjects:
            if patient_id is None:
                assert subject is None
                continue
            assert subject["identifier"] == {"system": System.PATIENT, "value": patient_id}
            assert subject.get("reference") == reference  # a non-FHIR id (spaces) is never made into a reference
        Bundle.model_validate(bundle)


def test_the_profiles_required_elements_are_present(exported):
    required = {}
    for name, kind in (("cdshooksguidanceresponse", "GuidanceResponse"), ("cdshooksrequestgroup", "RequestGroup")):
        definition = json.loads((FIXTURES / f"StructureDefinition-{name}.json").read_text())
        required[kind] = [e["path"].split(".", 1)[1] for e in definition["differential"]["element"]
                          if e.get("min", 0) >= 1 and "." in e["path"]]
    assert "moduleUri" in required["GuidanceResponse"] and "instantiatesUri" in required["RequestGroup"]
    for _, bundle in exported:
        (guidance,) = _resources(bundle, "GuidanceResponse")
        (group,) = _resources(bundle, "RequestGroup")
        assert guidance["meta"]["profile"] == [GUIDANCE_RESPONSE_PROFILE]
        assert group["meta"]["profile"] == [REQUEST_GROUP_PROFILE]
        for element in required["GuidanceResponse"]:
            assert guidance.get(element), element
        for element in required["RequestGroup"]:
            assert group.get(element), element
        endpoint = [x for x in guidance["extension"]
                    if x["url"] == "http://hl7.org/fhir/StructureDefinition/cqf-cdsHooksEndpoint"]
        assert len(endpoint) == 1 and endpoint[0]["valueUri"]


def test_the_indicator_to_priority_mapping_is_the_guides_concept_map():
    ns = {"f": "http://hl7.org/fhir"}
    tree = ET.parse(FIXTURES / "conceptmap-cdshooks-indicator.xml")
    mapping = {element.find("f:code", ns).get("value"): element.find("f:target/f:code", ns).get("value")
               for element in tree.getroot().findall("f:group/f:element", ns)}
    assert mapping == {str(k): v for k, v in INDICATOR_PRIORITY.items()}


def test_every_reference_resolves_inside_the_bundle(exported):
    def references(node):
        if isinstance(node, dict):
            if isinstance(node.get("reference"), str):
                yield node["reference"]
            for value in node.values():
                yield from references(value)
        elif isinstance(node, list):
            for value in node:
                yield from references(value)

    for record, bundle in exported:
        urls = {entry["fullUrl"] for entry in bundle["entry"]}
        found = set(references(bundle))
        # the patient is the one reference to outside the Bundle: the EHR's Patient the facts came from
        patient = {f"Patient/{record.patient_id}"} if record.patient_id else set()
        assert found and found - patient <= urls
        assert patient <= found


def test_the_provenance_links_the_guidance_to_the_rulebook_version_and_the_input(exported):
    for record, bundle in exported:
        (provenance,) = _resources(bundle, "Provenance")
        (guidance,) = _resources(bundle, "GuidanceResponse")
        targets = {t["reference"] for t in provenance["target"]}
        generated = [e for e in bundle["entry"] if e["resource"]["resourceType"] in
                     ("GuidanceResponse", "RequestGroup", "CommunicationRequest", "DetectedIssue",
                                                          "OperationOutcome")]
        assert targets == {e["fullUrl"] for e in generated}
        identifiers = {e["what"]["identifier"]["system"]: e["what"]["identifier"]["value"]
                       for e in provenance["entity"]}
        assert identifiers[System.RULEBOOK_SHA256] == record.rulebook["sha256"]
        assert identifiers[System.INPUT_SHA256] == record.input_sha256
        assert record.rulebook["version"] in provenance["entity"][0]["what"]["display"]
        assert provenance["recorded"] == record.recorded_at == bundle["timestamp"]
        assert guidance["identifier"][0] == {"system": System.AUDIT_RECORD, "value": record.id}
        assert guidance["subject"]["identifier"]["value"] == record.patient_id
        assert guidance["subject"]["reference"] == f"Patient/{record.patient_id}"


def test_withheld_findings_are_reported_in_the_evaluation_message(exported):
    contradictory = [(r, b) for r, b in exported if r.assessment["suppressed"]]
    assert contradictory
    for record, bundle in contradictory:
        (outcome,) = _resources(bundle, "OperationOutcome")
        (guidance,) = _resources(bundle, "GuidanceResponse")
        assert guidance["evaluationMessage"][0]["reference"].endswith(outcome["id"])
        codes = [i["details"]["coding"][0]["code"] for i in outcome["issue"]]
        assert codes == record.codes("suppressed")


def test_data_requests_mark_the_guidance_response_data_requested(exported):
    for record, bundle in exported:
        (guidance,) = _resources(bundle, "GuidanceResponse")
        wants_data = any(f["kind"] == "data_request" for f in record.assessment["recommendations"])
        assert guidance["status"] == ("data-requested" if wants_data else "success")


def test_exporting_twice_gives_the_same_bundle(engine):
    document = engine.evaluate(json.loads(EXAMPLES[1].read_text())).to_dict()
    assert assessment_bundle(document, request_id="hook-1") == assessment_bundle(document, request_id="hook-1")
    assert Bundle.model_validate(assessment_bundle(document))  # a live assessment, without an audit record


def test_a_finding_recorded_before_findings_carried_their_indicator_is_still_exported():
    """Audit records made with rulebook 0.1.0 have no ``indicator`` on their findings: export falls back to the
    finding's kind (never fails on an old record)."""
    from imt_cds.render.fhir_output import finding_indicator

    assert finding_indicator({"kind": "recommendation"}) == "info"
    assert finding_indicator({"kind": "risk_flag"}) == "warning"
    assert finding_indicator({"kind": "flag", "indicator": "critical"}) == "critical"
