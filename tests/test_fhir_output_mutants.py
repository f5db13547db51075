"""The FHIR export, value by value: tests written against the mutants of ``imt_cds/render/fhir_output.py`` that
survived test_fhir_output.py, which compares the export with the module's own constants and checks shapes. Here
each identifier, profile and text an integrator reads is pinned to what it must be: the guide's profile URLs as its
published StructureDefinitions give them, the code systems' canonical URLs, the project's documented URNs, and the
narrative's counts in English for 0, 1 and 2 of each kind of finding. Documents are real assessments, cut down to
the findings a test needs (``assessment_bundle`` takes any assessment document)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from imt_cds.render.fhir_output import assessment_bundle

ROOT = Path(__file__).resolve().parents[1]
GUIDE = Path(__file__).resolve().parent / "fixtures" / "cds-hooks-clinical-reasoning"
DISCLAIMER = ("Decision support for a multidisciplinary team, not a prescription: every suggestion must be weighed by "
              "the treating team against the full clinical picture.")


@pytest.fixture(scope="module")
def documents(engine):
    return {path.stem: engine.evaluate(json.loads(path.read_text())).to_dict()
            for path in sorted((ROOT / "examples").glob("*.json"))}


def _only(bundle, kind):
    (resource,) = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]
    return resource


def _all(bundle, kind):
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def _cut(document, suggestions, data_requests, flags, withheld=None, requests_from=None):
    """The document with that many findings of each kind (taken from its own, the data requests from
    ``requests_from`` when given), and its withheld ones or none."""
    cut = copy.deepcopy(document)
    recommendations = [f for f in cut["recommendations"] if f["kind"] == "recommendation"][:suggestions]
    requests = [f for f in copy.deepcopy(requests_from or cut)["recommendations"]
                if f["kind"] == "data_request"][:data_requests]
    assert (len(recommendations), len(requests)) == (suggestions, data_requests)
    cut["recommendations"] = recommendations + requests
    cut["risk_flags"] = cut["risk_flags"][:flags]
    assert len(cut["risk_flags"]) == flags
    if withheld is not None:
        cut["suppressed"] = cut["suppressed"][:withheld]
    return cut


def test_the_profiles_are_the_guides_own_urls(documents):
    bundle = assessment_bundle(documents["02_alk_positive_unresectable"], request_id="r")
    for name, kind in (("cdshooksguidanceresponse", "GuidanceResponse"), ("cdshooksrequestgroup", "RequestGroup")):
        definition = json.loads((GUIDE / f"StructureDefinition-{name}.json").read_text())
        assert definition["type"] == kind
        assert _only(bundle, kind)["meta"]["profile"] == [definition["url"]]


def test_the_identifiers_and_codes_name_their_systems_by_these_urls(documents):
    document = documents["02_alk_positive_unresectable"]
    record = {"id": "0b7c4e1e-0000-4000-8000-000000000001", "seq": 1, "hash": "h",
              "recorded_at": "2026-12-01T00:00:00Z"}
    bundle = assessment_bundle(document, audit_record=record)
    guidance, group = _only(bundle, "GuidanceResponse"), _only(bundle, "RequestGroup")
    provenance = _only(bundle, "Provenance")
    rulebook = document["provenance"]["rulebook"]
    # the project's own URNs (README "Exports"), and the HL7 code systems' canonical URLs
    assert guidance["identifier"] == [{"system": "urn:imt-cds:audit-record", "value": record["id"]}]
    assert bundle["identifier"] == {"system": "urn:imt-cds:audit-record", "value": record["id"]}
    assert guidance["subject"]["identifier"] == {"system": "urn:imt-cds:patient-id", "value": document["patient_id"]}
    assert group["identifier"][0]["system"] == "urn:ietf:rfc:3986"
    assert guidance["requestIdentifier"] == {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{record['id']}"}
    assert {c["system"] for a in group["action"] for concept in a["code"] for c in concept["coding"]} == {
        "urn:imt-cds:finding-code"}
    assert [e["what"]["identifier"]["system"] for e in provenance["entity"]] == [
        "urn:imt-cds:rulebook-sha256", "urn:imt-cds:input-sha256"]
    assert provenance["activity"]["coding"] == [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "CREATE", "display": "create"}]
    assert provenance["agent"][0]["type"]["coding"] == [{
        "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "assembler",
        "display": "Assembler"}]
    module = f"urn:imt-cds:rulebook:{rulebook['name']}:{rulebook['version']}"
    assert guidance["moduleUri"] == module and group["instantiatesUri"] == [module]
    assert guidance["extension"] == [{"url": "http://hl7.org/fhir/StructureDefinition/cqf-cdsHooksEndpoint",
                                      "valueUri": "urn:imt-cds:cds-services/imt-cds-assessment"}]


def test_every_generated_resource_says_it_is_support_for_the_team_not_a_prescription(documents):
    bundle = assessment_bundle(documents["05_contradictory_record"], request_id="r")
    noted = [r for r in (e["resource"] for e in bundle["entry"]) if "note" in r]
    assert {r["resourceType"] for r in noted} == {"GuidanceResponse", "RequestGroup", "CommunicationRequest"}
    assert all(r["note"] == [{"text": DISCLAIMER}] for r in noted)
    assert all(r["text"]["div"].endswith(f"<p>{DISCLAIMER}</p></div>") for r in _all(bundle, "DetectedIssue"))


def test_the_time_of_the_evaluation_and_the_software_are_on_every_resource_that_has_them(documents):
    document = documents["05_contradictory_record"]
    bundle = assessment_bundle(document, request_id="r")
    when = document["provenance"]["evaluated_at"]
    device = {"reference": next(e["fullUrl"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Device")}
    group, guidance = _only(bundle, "RequestGroup"), _only(bundle, "GuidanceResponse")
    assert (group["authoredOn"], group["author"]) == (when, device)
    assert (guidance["occurrenceDateTime"], guidance["performer"]) == (when, device)
    assert bundle["timestamp"] == when  # no audit record: the evaluation's time
    for request in _all(bundle, "CommunicationRequest"):
        assert (request["authoredOn"], request["requester"]) == (when, device)
    for issue in _all(bundle, "DetectedIssue"):
        assert (issue["identifiedDateTime"], issue["author"]) == (when, device)
    assert _only(bundle, "Provenance")["agent"][0]["who"] == device


@pytest.mark.parametrize("counts, said", [
    ((0, 0, 0), "0 suggestions for the team to consider, 0 requests for missing data, 0 risk flags"),
    ((1, 1, 1), "1 suggestion for the team to consider, 1 request for missing data, 1 risk flag"),
    ((2, 2, 2), "2 suggestions for the team to consider, 2 requests for missing data, 2 risk flags"),
])
def test_the_request_group_and_the_response_count_the_findings_in_words(documents, counts, said):
    document = _cut(documents["03_ros1_positive_mutilating"], *counts, withheld=0,
                    requests_from=documents["06_mostly_missing"])
    bundle = assessment_bundle(document, request_id="r")
    group, guidance = _only(bundle, "RequestGroup"), _only(bundle, "GuidanceResponse")
    patient = document["patient_id"]
    rulebook = document["provenance"]["rulebook"]
    source = f"rulebook {rulebook['name']} {rulebook['version']}"
    assert group["text"]["div"].startswith(
        f'<div xmlns="http://www.w3.org/1999/xhtml"><p>Proposed for the multidisciplinary team, about patient '
        f"{patient} ({source}): {said}.</p>")
    assert guidance["text"]["div"].startswith(
        f'<div xmlns="http://www.w3.org/1999/xhtml"><p>imt-cds decision support about patient {patient}, evaluated '
        f'on {document["provenance"]["evaluated_at"]} with {source}: {said}.</p>')


def test_withheld_findings_are_counted_and_a_response_with_nothing_to_propose_says_so(documents):
    full = documents["05_contradictory_record"]
    assert len(full["suppressed"]) == 1
    empty = _cut(full, 0, 0, 0)
    bundle = assessment_bundle(empty, request_id="r")
    group = _only(bundle, "RequestGroup")
    assert ": 0 suggestions for the team to consider, 0 requests for missing data, 0 risk flags, 1 withheld.</p>" in \
        group["text"]["div"]
    assert "<ul><li>Nothing to propose.</li></ul>" in group["text"]["div"]
    assert group["priority"] == "routine" and "action" not in group  # nothing proposed: no action, routine


@pytest.mark.parametrize("indicator, severity, priority", [
    ("info", "low", "routine"), ("warning", "moderate", "urgent"), ("critical", "high", "stat")])
def test_a_risk_flags_severity_and_priority_follow_its_indicator(documents, indicator, severity, priority):
    document = _cut(documents["05_contradictory_record"], 0, 0, 1, withheld=0)
    document["risk_flags"][0]["indicator"] = indicator
    bundle = assessment_bundle(document, request_id="r")
    assert _only(bundle, "DetectedIssue")["severity"] == severity
    group = _only(bundle, "RequestGroup")
    assert group["priority"] == priority and [a["priority"] for a in group["action"]] == [priority]


# --- one hand-made document, every text the export writes from it ---------------------------------------------------

X = '<div xmlns="http://www.w3.org/1999/xhtml">'
EVIDENCE = {"id": "E1", "citation": "Author A. A study. 2020", "quote": "Resection is the treatment of choice.",
            "claim": "resection first", "level": "2b"}


def _finding(code, kind, indicator="info", evidence=(EVIDENCE,)):
    return {"code": code, "kind": kind, "title": f"Title {code}", "summary": f"Summary {code}", "indicator": indicator,
            "strength": "OBS", "rule": {"id": "R1", "version": "1.2.0"}, "evidence": list(evidence), "because": []}


HAND_MADE = {
    "patient_id": "p-1",
    "recommendations": [_finding("REC_A", "recommendation"), _finding("DATA_B", "data_request", evidence=())],
    "risk_flags": [_finding("FLAG_C", "flag", "critical")],
    "suppressed": [{"finding": _finding("REC_D", "recommendation"), "by": {"id": "S1", "fact": "contradictory_input"},
                    "reason": "the record contradicts itself"}],
    "provenance": {"rulebook": {"name": "rules", "version": "9.9.9", "sha256": "ab" * 32},
                   "parameters": {"size_cm": 3.9, "age": 1}, "engine": {"imt_cds": "1.0", "python": "3.11"},
                   "input_sha256": "cd" * 32, "evaluated_at": "2026-12-01T10:00:00.000000Z"},
}
WHY = "Title REC_A. Why: applies to every patient. Rule R1 v1.2.0."


def test_a_findings_action_carries_its_rule_and_its_evidence_with_quote_and_level():
    group = _only(assessment_bundle(HAND_MADE, request_id="r"), "RequestGroup")
    action = group["action"][0]
    assert {k: action[k] for k in ("id", "title", "description", "code", "priority", "documentation")} == {
        "id": "REC_A", "title": "Summary REC_A", "description": WHY,
        "code": [{"coding": [{"system": "urn:imt-cds:finding-code", "version": "9.9.9", "code": "REC_A",
                              "display": "Title REC_A"}], "text": "Title REC_A"}],
        "priority": "routine",
        "documentation": [
            {"type": "documentation", "label": "R1 v1.2.0",
             "display": "imt-cds rulebook rules 9.9.9, rule R1 v1.2.0; strength of evidence: OBS"},
            {"type": "citation", "label": "E1", "display": "resection first",
             "citation": 'Author A. A study. 2020\n\n> "Resection is the treatment of choice."\n\n'
                         'Level of evidence: 2b'},
        ]}
    assert [a["id"] for a in group["action"]] == ["REC_A", "DATA_B", "FLAG_C"]
    assert group["priority"] == "stat"  # the highest of its actions


def test_suggestions_and_data_requests_are_proposals_in_words_for_the_team():
    bundle = assessment_bundle(HAND_MADE, request_id="r")
    suggestion, request = _all(bundle, "CommunicationRequest")
    assert suggestion["payload"] == [{"contentString": f"Suggestion for the multidisciplinary team to consider: "
                                                       f"Summary REC_A\n\n{WHY}\n\nEvidence: "
                                                       "[E1] Author A. A study. 2020"}]
    assert suggestion["text"]["div"] == (
        f"{X}<p>Suggestion for the multidisciplinary team to consider: Summary REC_A</p><ul><li>{WHY}</li>"
        "<li>Strength of evidence: OBS</li><li>Evidence: [E1] Author A. A study. 2020</li></ul>"
        f"<p>{DISCLAIMER}</p></div>")
    assert request["payload"] == [{"contentString": "Request for missing data, for the team to consider: Summary "
                                                    "DATA_B\n\nTitle DATA_B. Why: applies to every patient. Rule R1 "
                                                    "v1.2.0."}]  # no evidence: no evidence line
    assert "<li>Evidence:" not in request["text"]["div"]
    assert (suggestion["status"], suggestion["priority"]) == ("active", "routine")
    assert suggestion["subject"] == {"reference": "Patient/p-1", "type": "Patient",
                                     "identifier": {"system": "urn:imt-cds:patient-id", "value": "p-1"},
                                     "display": "p-1"}
    assert suggestion["reasonCode"][0]["coding"][0]["code"] == "REC_A"


def test_a_risk_flag_is_a_final_detected_issue_in_words():
    issue = _only(assessment_bundle(HAND_MADE, request_id="r"), "DetectedIssue")
    assert (issue["status"], issue["severity"], issue["code"]["coding"][0]["code"]) == ("final", "high", "FLAG_C")
    assert issue["detail"] == ("Summary FLAG_C\n\nTitle FLAG_C. Why: applies to every patient. Rule R1 v1.2.0.\n\n"
                               "Evidence: [E1] Author A. A study. 2020")
    assert issue["text"]["div"].startswith(f"{X}<p>Risk flag for the team to review: Summary FLAG_C</p>")
    assert issue["patient"]["reference"] == "Patient/p-1"


def test_withheld_findings_are_informational_issues_saying_what_held_them_back():
    bundle = assessment_bundle(HAND_MADE, request_id="r")
    outcome = _only(bundle, "OperationOutcome")
    line = "REC_D (rule R1) withheld because contradictory_input holds (rule S1): the record contradicts itself"
    assert outcome["issue"] == [{"severity": "information", "code": "informational",
                                 "details": {"coding": [{"system": "urn:imt-cds:finding-code", "version": "9.9.9",
                                                         "code": "REC_D", "display": "Title REC_D"}],
                                             "text": "Title REC_D"},
                                 "diagnostics": line}]
    assert outcome["text"]["div"] == (
        f"{X}<p>Findings withheld by the rules (not shown as suggestions), and why:</p><ul><li>{line}</li></ul>"
        "<p>Withheld findings are listed so the team can see what the rules held back.</p></div>")
    guidance = _only(bundle, "GuidanceResponse")
    assert guidance["status"] == "data-requested"
    assert guidance["text"]["div"] == (
        f"{X}<p>imt-cds decision support about patient p-1, evaluated on 2026-12-01T10:00:00.000000Z with rulebook "
        "rules 9.9.9: 1 suggestion for the team to consider, 1 request for missing data, 1 risk flag, 1 withheld."
        "</p><ul><li>The proposals and flags are listed in the RequestGroup this response points at.</li>"
        "<li>More data could make the evaluation more complete: see the requests for missing data.</li>"
        f"<li>Withheld findings are listed in the evaluation message.</li></ul><p>{DISCLAIMER}</p></div>")


def test_the_provenance_and_the_device_say_what_made_the_response_from_what():
    bundle = assessment_bundle(HAND_MADE, request_id="r")
    provenance, device = _only(bundle, "Provenance"), _only(bundle, "Device")
    rulebook = ("rulebook rules 9.9.9 (rules, parameters and evidence; parameters size_cm=3.9, age=1)")
    assert provenance["text"]["div"] == (
        f"{X}<p>Made by imt-cds on 2026-12-01T10:00:00.000000Z (recorded 2026-12-01T10:00:00.000000Z) from:</p>"
        f"<ul><li>{rulebook}, sha256 {'ab' * 32}</li><li>the patient's facts as validated (canonical input), sha256 "
        f"{'cd' * 32}</li></ul><p>It covers the 6 resources of this decision-support response.</p></div>")
    assert len(provenance["target"]) == 6 and provenance["occurredDateTime"] == "2026-12-01T10:00:00.000000Z"
    assert [e["what"]["display"] for e in provenance["entity"]] == [
        rulebook, "the patient's facts as validated (canonical input)"]
    assert [e["role"] for e in provenance["entity"]] == ["source", "source"]
    assert device["deviceName"] == [{"name": "imt-cds", "type": "model-name"}]
    assert device["version"] == [{"type": {"text": "imt_cds"}, "value": "1.0"},
                                 {"type": {"text": "python"}, "value": "3.11"}]
    assert device["text"]["div"] == (
        f"{X}<p>imt-cds, decision-support software for inflammatory myofibroblastic tumor; versions:</p>"
        f"<ul><li>imt_cds 1.0</li><li>python 3.11</li></ul><p>{DISCLAIMER}</p></div>")


def test_a_patient_without_a_fhir_id_is_named_by_identifier_and_no_patient_is_said_as_such():
    odd = dict(HAND_MADE, patient_id="MRN 12/34")  # a space and a slash: no FHIR id
    issue = _only(assessment_bundle(odd, request_id="r"), "DetectedIssue")
    assert issue["patient"] == {"identifier": {"system": "urn:imt-cds:patient-id", "value": "MRN 12/34"},
                                "display": "MRN 12/34"}
    nobody = assessment_bundle(dict(HAND_MADE, patient_id=None), request_id="r")
    group = _only(nobody, "RequestGroup")
    assert "subject" not in group and "patient" not in _only(nobody, "DetectedIssue")
    assert group["text"]["div"].startswith(f"{X}<p>Proposed for the multidisciplinary team, about a patient not "
                                           "identified in the input (rulebook rules 9.9.9): ")


def test_a_finding_recorded_without_its_indicator_reads_as_its_kind_at_least():
    from imt_cds.render.fhir_output import finding_indicator

    assert [finding_indicator({"kind": kind}) for kind in ("recommendation", "data_request", "flag", "risk_flag")] \
        == ["info", "info", "warning", "warning"]


def test_the_request_is_identified_as_given_and_the_bundle_lists_each_resource_by_its_id():
    hook = assessment_bundle(HAND_MADE, request_id="hook-1")
    assert _only(hook, "GuidanceResponse")["requestIdentifier"] == {"value": "hook-1"}  # not a UUID: no system
    uuid_id = "0b7c4e1e-0000-4000-8000-000000000001"
    assert _only(assessment_bundle(HAND_MADE, request_id=uuid_id), "GuidanceResponse")["requestIdentifier"] == {
        "system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid_id}"}
    assert hook["type"] == "collection" and "identifier" not in hook
    assert all(e["fullUrl"] == f"urn:uuid:{e['resource']['id']}" for e in hook["entry"])
    assert [e["resource"]["resourceType"] for e in hook["entry"]] == [
        "GuidanceResponse", "RequestGroup", "CommunicationRequest", "CommunicationRequest", "DetectedIssue",
        "OperationOutcome", "Provenance", "Device"]
    guidance = _only(hook, "GuidanceResponse")
    assert guidance["identifier"] == [{"system": "urn:ietf:rfc:3986",
                                       "value": f"urn:uuid:{guidance['id']}"}]  # no audit record: its own URN
    assert guidance["result"] == {"reference": f"urn:uuid:{_only(hook, 'RequestGroup')['id']}"}


def test_without_a_request_id_the_ids_follow_from_the_input_and_the_time():
    again = copy.deepcopy(HAND_MADE)
    assert assessment_bundle(HAND_MADE)["id"] == assessment_bundle(again)["id"]
    later = copy.deepcopy(HAND_MADE)
    later["provenance"]["evaluated_at"] = "2026-12-01T10:00:01.000000Z"
    other_input = copy.deepcopy(HAND_MADE)
    other_input["provenance"]["input_sha256"] = "ef" * 32
    assert len({assessment_bundle(d)["id"] for d in (HAND_MADE, later, other_input)}) == 3
    ids = [{e["resource"]["id"] for e in assessment_bundle(HAND_MADE, request_id=r)["entry"]} for r in ("a", "b")]
    assert len(ids[0]) == 8 and not ids[0] & ids[1]  # another request, other ids


def test_text_is_escaped_in_the_narrative_and_quotes_are_left_as_they_are():
    from imt_cds.render.fhir_output import narrative

    assert narrative('a <b> & "c"', ['<i> "d"', "e"], "n's") == {
        "status": "generated",
        "div": f'{X}<p>a &lt;b&gt; &amp; "c"</p><ul><li>&lt;i&gt; "d"</li><li>e</li></ul><p>n\'s</p></div>'}
    assert narrative("only") == {"status": "generated", "div": f"{X}<p>only</p></div>"}


@pytest.mark.parametrize("patient_id, referenced", [("a" * 64, True), ("a" * 65, False), ("A-1.b", True),
                                                    ("a_1", False)])
def test_a_patient_id_is_referenced_only_when_it_is_a_fhir_id(patient_id, referenced):
    issue = _only(assessment_bundle(dict(HAND_MADE, patient_id=patient_id), request_id="r"), "DetectedIssue")
    assert ("reference" in issue["patient"]) is referenced
    assert issue["patient"]["identifier"] == {"system": "urn:imt-cds:patient-id", "value": patient_id}


def test_the_request_group_is_an_active_proposal_listing_each_action_by_priority_and_title():
    group = _only(assessment_bundle(HAND_MADE, request_id="r"), "RequestGroup")
    assert (group["status"], group["intent"]) == ("active", "proposal")
    assert group["identifier"] == [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{group['id']}"}]
    assert group["text"]["div"] == (
        f"{X}<p>Proposed for the multidisciplinary team, about patient p-1 (rulebook rules 9.9.9): 1 suggestion for "
        "the team to consider, 1 request for missing data, 1 risk flag, 1 withheld.</p><ul><li>[routine] Summary "
        f"REC_A</li><li>[routine] Summary DATA_B</li><li>[stat] Summary FLAG_C</li></ul><p>{DISCLAIMER}</p></div>")


def test_a_findings_rationale_says_each_reason_in_words_then_its_rule():
    from imt_cds.render.fhir_output import rationale_text

    finding = _finding("REC_A", "recommendation") | {"because": [
        {"fact": "tumor.resectability", "expected": "= resectable", "actual": "resectable"},
        {"derived": "localised_disease", "holds": True, "reasons": []}]}
    assert rationale_text(finding) == ("Title REC_A. Why: tumor.resectability is resectable (rule needs = resectable); "
                                       "localised_disease holds. Rule R1 v1.2.0.")


def test_the_ids_of_a_request_stay_the_same_from_one_version_to_the_next():
    # Exporting the same audit record again, with this version or a later one, must give the same ids, so that a FHIR
    # server that stored the first export updates its resources instead of keeping two copies. Pinned values.
    given = assessment_bundle(HAND_MADE, request_id="r")
    assert given["id"] == "018ce747-9e72-59a2-aa5a-fa31638cd479"
    assert [e["resource"]["id"] for e in given["entry"][:2]] == [
        "82067208-3965-5ed4-9f95-afff3991b6bf", "064790d8-ce0e-548b-8a87-2b472f680211"]
    derived = assessment_bundle(HAND_MADE)  # no request id, no audit record: from the input's sha256 and the time
    assert (derived["id"], derived["entry"][0]["resource"]["id"]) == (
        "3125a326-d65d-532f-9c39-1318a6b27fcd", "14dd8f31-f232-58bf-904e-66a8e3f6f803")


def test_a_findings_evidence_is_listed_entry_by_entry_and_none_is_no_line():
    second = {"id": "E2", "citation": "Author B. Another. 2021", "quote": None, "claim": "c", "level": None}
    document = copy.deepcopy(HAND_MADE)
    document["risk_flags"] = [_finding("FLAG_C", "flag", evidence=(EVIDENCE, second)),
                              _finding("FLAG_E", "flag", evidence=())]
    cited, bare = _all(assessment_bundle(document, request_id="r"), "DetectedIssue")
    assert cited["detail"].endswith("\n\nEvidence: [E1] Author A. A study. 2020; [E2] Author B. Another. 2021")
    assert bare["detail"] == "Summary FLAG_E\n\nTitle FLAG_E. Why: applies to every patient. Rule R1 v1.2.0."
    group = _only(assessment_bundle(document, request_id="r"), "RequestGroup")
    assert group["action"][2]["documentation"][2] == {"type": "citation", "label": "E2", "display": "c",
                                                      "citation": "Author B. Another. 2021"}  # no quote, no level
