"""An assessment as FHIR R4 resources, following the HL7 CDS Hooks clinical-reasoning mapping.

"Using FHIR Clinical Reasoning with CDS Hooks" (1.0.0-draft) persists a CDS Hooks response as a
``GuidanceResponse`` (profile ``cdshooksguidanceresponse``) whose ``result`` is a ``RequestGroup`` (profile
``cdshooksrequestgroup``) with one action per card: card.summary -> action.title, card.detail ->
action.description, card.indicator -> action.priority (ConceptMap ``cdshooks-indicator``: info -> routine,
warning -> urgent, critical -> stat), card.source and links -> action.documentation, and a card's suggestions ->
the resources its action proposes. Here every finding is a card, and every action points at the one resource that
carries its suggestion (FHIR R4 invariant rqg-1: an action has a resource or sub-actions, never neither):

- recommendations and data requests (indicator ``info``) are ``CommunicationRequest`` proposals: a message to the
  treating team, to consider. Why not a ServiceRequest or a MedicationRequest: those are orders (even as proposals
  they are pre-filled orders an EHR offers to sign), and this library never orders anything; the clinical-reasoning
  guides model "tell the team X" as a communicate activity, i.e. a CommunicationRequest whose payload is the text;
- risk and safety flags (indicator ``warning``/``critical``) are ``DetectedIssue`` resources: "a potential clinical
  issue with one or more active or proposed clinical actions", which is what a flag is;
- withheld (suppressed) findings go to an ``OperationOutcome`` referenced by ``GuidanceResponse.evaluationMessage``;
- a ``Provenance`` targets all of them and names the rulebook (name, version, sha256 over rules, parameters and
  evidence) and the canonical input (its sha256) as its sources, and a ``Device`` (imt-cds, with its versions) as
  the agent.

Every resource carries generated narrative (``text``) saying what it holds, in the cautious wording of the rest of
the library. The suggestions and flags are Bundle entries (not contained resources) so the Provenance can target
them and a receiver can store them on their own.

The patient: ``subject`` is ``Patient/<patient_id>`` *and* the identifier ``urn:imt-cds:patient-id|<patient_id>``.
From FHIR input ``patient_id`` is the EHR's ``Patient.id`` (``imt_cds.fhir``), so the literal reference resolves on
the EHR's server the facts came from (never inside this Bundle, which holds no Patient); the identifier keeps the
match possible for a receiver that stores Bundles elsewhere, and is all there is when ``patient_id`` is not a valid
FHIR id (free text from JSON input). No ``patient_id``: no subject at all.

Codings use the project's own code systems (``urn:imt-cds:finding-code``, ...) by their canonical URL; the
CodeSystem resources are published once (``imt_cds.fhir_codesystems``, ``imt-cds rules codesystems``), not copied
into every Bundle, and finding codings name the rulebook version as the code system's version.

The input is the assessment *document* (README, section Output), from a live ``Assessment`` or an audit record, so
the CDS Hooks service and ``audit export`` share this module. Resource ids are derived from the request id, so exporting
the same record twice gives the same Bundle. This is a renderer: it decides nothing and reads nothing else.
"""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import Mapping, Sequence
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from ..core.wording import reason_text

__all__ = [
    "GUIDANCE_RESPONSE_PROFILE",
    "INDICATOR_PRIORITY",
    "REQUEST_GROUP_PROFILE",
    "Indicator",
    "System",
    "assessment_bundle",
    "finding_indicator",
    "narrative",
]

GUIDANCE_RESPONSE_PROFILE = (
    "http://hl7.org/fhir/uv/cds-hooks-clinical-reasoning/StructureDefinition/cdshooksguidanceresponse"
)
REQUEST_GROUP_PROFILE = "http://hl7.org/fhir/uv/cds-hooks-clinical-reasoning/StructureDefinition/cdshooksrequestgroup"
CDS_HOOKS_ENDPOINT_EXTENSION = "http://hl7.org/fhir/StructureDefinition/cqf-cdsHooksEndpoint"
DEFAULT_SERVICE_ENDPOINT = "urn:imt-cds:cds-services/imt-cds-assessment"
DISCLAIMER = ("Decision support for a multidisciplinary team, not a prescription: every suggestion must be weighed "
              "by the treating team against the full clinical picture.")
_NAMESPACE = uuid.UUID("3f6c2a8e-5b7d-4e21-9a0c-1d2e3f4a5b6c")  # for ids derived from the request id
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # FHIR R4 id datatype
XHTML = "http://www.w3.org/1999/xhtml"


class Indicator(StrEnum):
    """CDS Hooks card indicator (http://cds-hooks.hl7.org/CodeSystem/indicator)."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class System(StrEnum):
    """Identifier and code systems of this library (local URNs) and the FHIR ones it uses."""

    FINDING = "urn:imt-cds:finding-code"
    PATIENT = "urn:imt-cds:patient-id"
    RULEBOOK_SHA256 = "urn:imt-cds:rulebook-sha256"
    INPUT_SHA256 = "urn:imt-cds:input-sha256"
    AUDIT_RECORD = "urn:imt-cds:audit-record"
    URI = "urn:ietf:rfc:3986"
    DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
    PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"


def finding_indicator(finding: Mapping[str, Any]) -> Indicator:
    """The CDS Hooks indicator of a finding of an assessment document: the one its rule file declares
    (``indicator:``), carried in the document, so the service's cards and ``audit export`` agree."""
    if "indicator" in finding:
        return Indicator(finding["indicator"])
    # A document recorded before findings carried their indicator (rulebook 0.1.0 audit records): the indicator the
    # cards of those days gave it, so an export of an old record says what the clinicians were shown.
    if finding.get("code") in _CRITICAL_BEFORE_0_2:
        return Indicator.CRITICAL
    return Indicator.INFO if finding.get("kind") in ("recommendation", "data_request") else Indicator.WARNING


# How imt-cds chose a card's indicator before rule files declared it (rulebook 0.1.0): by the finding's kind
# (recommendations and data requests info, flags warning), raised to critical for these four codes. Only documents
# without an "indicator" (0.1.0 audit records) are read with it; rulebook 0.2.0 declares the same four critical.
_CRITICAL_BEFORE_0_2 = frozenset({
    "FLAG_CONTRADICTORY_INPUT",
    "FLAG_MULTIPLE_KINASE_FUSIONS_VERIFY",
    "FLAG_OFF_LABEL_AGE",
    "FLAG_VERIFY_INFANT_LABELING",
})

# ConceptMap http://cds-hooks.hl7.org/ConceptMap/indicator-to-request-priority
INDICATOR_PRIORITY: Mapping[Indicator, str] = MappingProxyType({
    Indicator.INFO: "routine",
    Indicator.WARNING: "urgent",
    Indicator.CRITICAL: "stat",
})
INDICATOR_SEVERITY: Mapping[Indicator, str] = MappingProxyType({  # DetectedIssue.severity
    Indicator.INFO: "low",
    Indicator.WARNING: "moderate",
    Indicator.CRITICAL: "high",
})
_PRIORITY_ORDER = ("routine", "urgent", "asap", "stat")


def assessment_bundle(document: Mapping[str, Any], *, request_id: str | None = None,
                      audit_record: Mapping[str, Any] | None = None,
                      service_endpoint: str = DEFAULT_SERVICE_ENDPOINT) -> dict[str, Any]:
    """A FHIR R4 ``collection`` Bundle for one assessment document.

    ``request_id``: the CDS Hooks ``hookInstance`` (or any id of the request); default the audit record's id, else
    one derived from the input's sha256 and the evaluation time. ``audit_record``: ``{"id", "seq", "hash",
    "recorded_at"}`` of the audit record the document comes from (identifies the Bundle and the GuidanceResponse).
    """
    provenance = document["provenance"]
    rulebook = provenance["rulebook"]
    if request_id is None:
        request_id = str(audit_record["id"]) if audit_record else str(
            uuid.uuid5(_NAMESPACE, f"{provenance['input_sha256']}|{provenance['evaluated_at']}"))
    ids = _Ids(request_id)
    when = provenance["evaluated_at"]
    module = f"urn:imt-cds:rulebook:{rulebook['name']}:{rulebook['version']}"
    patient_id = document.get("patient_id")
    subject = _subject(patient_id)
    device = ids.ref("device")
    made = _Made(ids, subject, when, device, rulebook["version"])

    # One resource per finding, in document order: the resource its action points at.
    carried = [(f"suggestion/{f['code']}", f, _communication_request(made, f)) for f in document["recommendations"]]
    carried += [(f"issue/{f['code']}", f, _detected_issue(made, f)) for f in document["risk_flags"]]
    actions = [_action(finding, rulebook, ids.ref(role), made.version) for role, finding, _ in carried]
    outcome = _outcome(ids, document["suppressed"], made.version) if document["suppressed"] else None
    priority = max((a["priority"] for a in actions), key=_PRIORITY_ORDER.index, default="routine")
    suggestions = sum(1 for f in document["recommendations"] if f["kind"] == "recommendation")
    data_requests = len(document["recommendations"]) - suggestions
    counts = (f"{suggestions} suggestion{'s' if suggestions != 1 else ''} for the team to consider, "
              f"{data_requests} request{'s' if data_requests != 1 else ''} for missing data, "
              f"{len(document['risk_flags'])} risk flag{'s' if len(document['risk_flags']) != 1 else ''}"
              + (f", {len(document['suppressed'])} withheld" if document["suppressed"] else ""))
    about = f"patient {patient_id}" if patient_id else "a patient not identified in the input"
    source = f"rulebook {rulebook['name']} {rulebook['version']}"

    request_group: dict[str, Any] = {
        "resourceType": "RequestGroup",
        "id": ids.id("request-group"),
        "meta": {"profile": [REQUEST_GROUP_PROFILE]},
        "text": narrative(
            f"Proposed for the multidisciplinary team, about {about} ({source}): {counts}.",
            [f"[{a['priority']}] {a['title']}" for a in actions] or ["Nothing to propose."],
            DISCLAIMER),
        "identifier": [{"system": System.URI, "value": ids.urn("request-group")}],
        "instantiatesUri": [module],
        "status": "active",
        "intent": "proposal",
        "priority": priority,
        **({"subject": subject} if subject else {}),
        "authoredOn": when,
        "author": device,
        "note": [{"text": DISCLAIMER}],
        **({"action": actions} if actions else {}),
    }
    has_data_requests = data_requests > 0
    guidance: dict[str, Any] = {
        "resourceType": "GuidanceResponse",
        "id": ids.id("guidance-response"),
        "meta": {"profile": [GUIDANCE_RESPONSE_PROFILE]},
        "text": narrative(
            f"imt-cds decision support about {about}, evaluated on {when} with {source}: {counts}.",
            ["The proposals and flags are listed in the RequestGroup this response points at."]
            + (["More data could make the evaluation more complete: see the requests for missing data."]
               if has_data_requests else [])
            + (["Withheld findings are listed in the evaluation message."] if outcome else []),
            DISCLAIMER),
        "extension": [{"url": CDS_HOOKS_ENDPOINT_EXTENSION, "valueUri": service_endpoint}],
        "requestIdentifier": {"system": System.URI, "value": f"urn:uuid:{request_id}"}
        if _is_uuid(request_id) else {"value": request_id},
        "identifier": [{"system": System.AUDIT_RECORD, "value": str(audit_record["id"])} if audit_record
                       else {"system": System.URI, "value": ids.urn("guidance-response")}],
        "moduleUri": module,
        # data-requested: "processed successfully, but more data may result in a more complete evaluation"
        "status": "data-requested" if has_data_requests else "success",
        **({"subject": subject} if subject else {}),
        "occurrenceDateTime": when,
        "performer": device,
        **({"evaluationMessage": [ids.ref("outcome")]} if outcome else {}),
        "note": [{"text": DISCLAIMER}],
        "result": ids.ref("request-group"),
    }
    targets = [ids.ref("guidance-response"), ids.ref("request-group"), *(ids.ref(role) for role, _, _ in carried)]
    if outcome:
        targets.append(ids.ref("outcome"))
    resources: list[tuple[str, dict[str, Any]]] = [
        ("guidance-response", guidance),
        ("request-group", request_group),
        *((role, resource) for role, _, resource in carried),
        *((("outcome", outcome),) if outcome else ()),
        ("provenance", _provenance(ids, targets, provenance, audit_record, device)),
        ("device", _device(ids, provenance)),
    ]
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": ids.id("bundle"),
        "type": "collection",
        "timestamp": audit_record["recorded_at"] if audit_record else when,
        "entry": [{"fullUrl": ids.urn(role), "resource": resource} for role, resource in resources],
    }
    if audit_record:
        bundle["identifier"] = {"system": System.AUDIT_RECORD, "value": str(audit_record["id"])}
    return bundle


def narrative(summary: str, items: Sequence[str] = (), note: str | None = None) -> dict[str, str]:
    """A resource's ``text``: generated XHTML (a paragraph, a list, a closing note), every piece of text escaped.

    Only ``div``, ``p`` and ``ul``/``li`` are used: well inside what FHIR's narrative rules (txt-1) allow."""
    parts = [f"<p>{html.escape(summary, quote=False)}</p>"]
    if items:
        parts.append("<ul>" + "".join(f"<li>{html.escape(item, quote=False)}</li>" for item in items) + "</ul>")
    if note:
        parts.append(f"<p>{html.escape(note, quote=False)}</p>")
    return {"status": "generated", "div": f'<div xmlns="{XHTML}">{"".join(parts)}</div>'}


class _Ids:
    """Stable resource ids for one request: the same request id always gives the same Bundle."""

    def __init__(self, request_id: str):
        self.request_id = request_id

    def id(self, role: str) -> str:
        return str(uuid.uuid5(_NAMESPACE, f"{self.request_id}|{role}"))

    def urn(self, role: str) -> str:
        return f"urn:uuid:{self.id(role)}"

    def ref(self, role: str) -> dict[str, str]:
        return {"reference": self.urn(role)}


class _Made:
    """What every generated resource of one Bundle shares: ids, subject, time, author, rulebook version."""

    def __init__(self, ids: _Ids, subject: dict[str, Any] | None, when: str, device: dict[str, str], version: str):
        self.ids, self.subject, self.when, self.device, self.version = ids, subject, when, device, version


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _subject(patient_id: str | None) -> dict[str, Any] | None:
    """``Patient/<id>`` plus the identifier (see the module docstring); the identifier alone for a non-FHIR id."""
    if not patient_id:
        return None
    subject: dict[str, Any] = {"identifier": {"system": System.PATIENT, "value": patient_id}, "display": patient_id}
    if _FHIR_ID.fullmatch(patient_id):
        subject = {"reference": f"Patient/{patient_id}", "type": "Patient", **subject}
    return subject


def _coding(finding: Mapping[str, Any], version: str) -> dict[str, Any]:
    return {"coding": [{"system": System.FINDING, "version": version, "code": finding["code"],
                        "display": finding["title"]}],
            "text": finding["title"]}


def _action(finding: Mapping[str, Any], rulebook: Mapping[str, str], resource: dict[str, str],
            version: str) -> dict[str, Any]:
    indicator = finding_indicator(finding)
    rule = finding["rule"]
    source = {
        "type": "documentation",
        "label": f"{rule['id']} v{rule['version']}",
        "display": f"imt-cds rulebook {rulebook['name']} {rulebook['version']}, rule {rule['id']} "
                   f"v{rule['version']}; strength of evidence: {finding['strength']}",
    }
    return {
        "id": finding["code"],
        "title": finding["summary"],  # card.summary
        "description": rationale_text(finding),  # card.detail
        "code": [_coding(finding, version)],
        "priority": INDICATOR_PRIORITY[indicator],
        "documentation": [source, *(_citation(e) for e in finding["evidence"])],
        "resource": resource,  # the CommunicationRequest or DetectedIssue that carries the suggestion (rqg-1)
    }


def _citation(entry: Mapping[str, Any]) -> dict[str, Any]:
    text = entry["citation"]
    if entry.get("quote"):
        text += f'\n\n> "{entry["quote"]}"'
    if entry.get("level"):
        text += f"\n\nLevel of evidence: {entry['level']}"
    return {"type": "citation", "label": entry["id"], "display": entry["claim"], "citation": text}


def _evidence_line(finding: Mapping[str, Any]) -> str:
    return "; ".join(f"[{e['id']}] {e['citation']}" for e in finding["evidence"])


def _finding_narrative(heading: str, finding: Mapping[str, Any]) -> dict[str, str]:
    evidence = _evidence_line(finding)
    items = [rationale_text(finding), f"Strength of evidence: {finding['strength']}"]
    if evidence:
        items.append(f"Evidence: {evidence}")
    return narrative(f"{heading}: {finding['summary']}", items, DISCLAIMER)


def _communication_request(made: _Made, finding: Mapping[str, Any]) -> dict[str, Any]:
    """A recommendation or data request: a proposal to tell the treating team, never an order."""
    heading = ("Request for missing data, for the team to consider" if finding["kind"] == "data_request"
               else "Suggestion for the multidisciplinary team to consider")
    evidence = _evidence_line(finding)
    return {
        "resourceType": "CommunicationRequest",
        "id": made.ids.id(f"suggestion/{finding['code']}"),
        "text": _finding_narrative(heading, finding),
        # R4's CommunicationRequest has no ``intent`` (R5 adds it): that it is a proposal is said by the
        # RequestGroup (intent "proposal") that points at it, and by its narrative.
        "status": "active",
        "priority": INDICATOR_PRIORITY[finding_indicator(finding)],
        **({"subject": made.subject} if made.subject else {}),
        "payload": [{"contentString": f"{heading}: {finding['summary']}\n\n{rationale_text(finding)}"
                                      + (f"\n\nEvidence: {evidence}" if evidence else "")}],
        "authoredOn": made.when,
        "requester": made.device,
        "reasonCode": [_coding(finding, made.version)],
        "note": [{"text": DISCLAIMER}],
    }


def _detected_issue(made: _Made, finding: Mapping[str, Any]) -> dict[str, Any]:
    evidence = _evidence_line(finding)
    return {
        "resourceType": "DetectedIssue",
        "id": made.ids.id(f"issue/{finding['code']}"),
        "text": _finding_narrative("Risk flag for the team to review", finding),
        "status": "final",
        "code": _coding(finding, made.version),
        "severity": INDICATOR_SEVERITY[finding_indicator(finding)],
        **({"patient": made.subject} if made.subject else {}),
        "identifiedDateTime": made.when,
        "author": made.device,
        "detail": f"{finding['summary']}\n\n{rationale_text(finding)}" + (f"\n\nEvidence: {evidence}" if evidence
                                                                          else ""),
    }


def _outcome(ids: _Ids, suppressed: Sequence[Mapping[str, Any]], version: str) -> dict[str, Any]:
    lines = [f"{item['finding']['code']} (rule {item['finding']['rule']['id']}) withheld because "
             f"{item['by']['fact']} holds (rule {item['by']['id']}): {item['reason']}" for item in suppressed]
    return {
        "resourceType": "OperationOutcome",
        "id": ids.id("outcome"),
        "text": narrative("Findings withheld by the rules (not shown as suggestions), and why:", lines,
                          "Withheld findings are listed so the team can see what the rules held back."),
        "issue": [{
            "severity": "information",
            "code": "informational",
            "details": _coding(item["finding"], version),
            "diagnostics": line,
        } for item, line in zip(suppressed, lines, strict=True)],
    }


def _provenance(ids: _Ids, targets: list[dict[str, str]], provenance: Mapping[str, Any],
                audit_record: Mapping[str, Any] | None, device: dict[str, str]) -> dict[str, Any]:
    rulebook = provenance["rulebook"]
    parameters = ", ".join(f"{k}={v}" for k, v in provenance["parameters"].items())
    rulebook_display = (f"rulebook {rulebook['name']} {rulebook['version']} (rules, parameters and evidence; "
                        f"parameters {parameters})")
    recorded = audit_record["recorded_at"] if audit_record else provenance["evaluated_at"]
    return {
        "resourceType": "Provenance",
        "id": ids.id("provenance"),
        "text": narrative(
            f"Made by imt-cds on {provenance['evaluated_at']} (recorded {recorded}) from:",
            [f"{rulebook_display}, sha256 {rulebook['sha256']}",
             f"the patient's facts as validated (canonical input), sha256 {provenance['input_sha256']}"],
            f"It covers the {len(targets)} resources of this decision-support response."),
        "target": targets,
        "occurredDateTime": provenance["evaluated_at"],
        "recorded": recorded,
        "activity": {"coding": [{"system": System.DATA_OPERATION, "code": "CREATE", "display": "create"}]},
        "agent": [{
            "type": {"coding": [{"system": System.PARTICIPANT_TYPE, "code": "assembler", "display": "Assembler"}]},
            "who": device,
        }],
        "entity": [
            {"role": "source", "what": {
                "identifier": {"system": System.RULEBOOK_SHA256, "value": rulebook["sha256"]},
                "display": rulebook_display}},
            {"role": "source", "what": {
                "identifier": {"system": System.INPUT_SHA256, "value": provenance["input_sha256"]},
                "display": "the patient's facts as validated (canonical input)"}},
        ],
    }


def _device(ids: _Ids, provenance: Mapping[str, Any]) -> dict[str, Any]:
    versions = [f"{name} {version}" for name, version in provenance["engine"].items()]
    return {
        "resourceType": "Device",
        "id": ids.id("device"),
        "text": narrative("imt-cds, decision-support software for inflammatory myofibroblastic tumor; versions:",
                          versions, DISCLAIMER),
        "deviceName": [{"name": "imt-cds", "type": "model-name"}],
        "version": [{"type": {"text": name}, "value": str(version)} for name, version in provenance["engine"].items()],
    }


def rationale_text(finding: Mapping[str, Any]) -> str:
    """A finding's reasons as one paragraph of text."""
    reasons = [reason_text(r) for r in finding["because"]]
    why = "; ".join(reasons) if reasons else "applies to every patient"
    return f"{finding['title']}. Why: {why}. Rule {finding['rule']['id']} v{finding['rule']['version']}."
