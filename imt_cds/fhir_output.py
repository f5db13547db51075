"""An assessment as FHIR R4 resources, following the HL7 CDS Hooks clinical-reasoning mapping.

"Using FHIR Clinical Reasoning with CDS Hooks" (1.0.0-draft) persists a CDS Hooks response as a
``GuidanceResponse`` (profile ``cdshooksguidanceresponse``) whose ``result`` is a ``RequestGroup`` (profile
``cdshooksrequestgroup``) with one action per card: card.summary -> action.title, card.detail ->
action.description, card.indicator -> action.priority (ConceptMap ``cdshooks-indicator``: info -> routine,
warning -> urgent, critical -> stat), card.source and links -> action.documentation. Here every finding is a card:

- recommendations and data requests (indicator ``info``) become actions of the RequestGroup;
- risk and safety flags (indicator ``warning``) become ``DetectedIssue`` resources, each also an action whose
  ``resource`` points at it, so the RequestGroup still holds the whole response;
- withheld (suppressed) findings go to an ``OperationOutcome`` referenced by ``GuidanceResponse.evaluationMessage``;
- a ``Provenance`` targets all of them and names the rulebook (name, version, sha256 over rules, parameters and
  evidence) and the canonical input (its sha256) as its sources, and a ``Device`` (imt-cds, with its versions) as
  the agent.

The input is the assessment *document* (SPEC §3), from a live ``Assessment`` or an audit record, so a later CDS
Hooks service and ``audit export`` share this module. Resource ids are derived from the request id, so exporting
the same record twice gives the same Bundle. This is a renderer: it decides nothing and reads nothing else.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

from .wording import reason_text

__all__ = [
    "CRITICAL_FINDINGS",
    "GUIDANCE_RESPONSE_PROFILE",
    "INDICATOR_PRIORITY",
    "KIND_INDICATOR",
    "REQUEST_GROUP_PROFILE",
    "Indicator",
    "System",
    "assessment_bundle",
    "finding_indicator",
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


KIND_INDICATOR: Mapping[str, Indicator] = {
    "recommendation": Indicator.INFO,
    "data_request": Indicator.INFO,
    "risk_flag": Indicator.WARNING,
    "flag": Indicator.WARNING,
}
# Findings that say acting on a suggestion as it stands could harm: raised above their kind's indicator, the same
# way on CDS Hooks cards and in this export (one mapping, so the service and ``audit export`` agree).
CRITICAL_FINDINGS = frozenset({
    "FLAG_CONTRADICTORY_INPUT",  # the record contradicts itself; treatment suggestions are withheld
    "FLAG_MULTIPLE_KINASE_FUSIONS_VERIFY",  # more than one fusion reported: which target is real is unknown
    "FLAG_OFF_LABEL_AGE",  # a targeted drug is suggested below its labelled age
    "FLAG_VERIFY_INFANT_LABELING",  # a TRK inhibitor is suggested for an infant: check the labelled age
})


def finding_indicator(code: str, kind: str) -> Indicator:
    """The CDS Hooks indicator of a finding: by its kind, raised to critical for ``CRITICAL_FINDINGS``."""
    return Indicator.CRITICAL if code in CRITICAL_FINDINGS else KIND_INDICATOR[kind]

# ConceptMap http://cds-hooks.hl7.org/ConceptMap/indicator-to-request-priority
INDICATOR_PRIORITY: Mapping[Indicator, str] = {
    Indicator.INFO: "routine",
    Indicator.WARNING: "urgent",
    Indicator.CRITICAL: "stat",
}
INDICATOR_SEVERITY: Mapping[Indicator, str] = {  # DetectedIssue.severity
    Indicator.INFO: "low",
    Indicator.WARNING: "moderate",
    Indicator.CRITICAL: "high",
}
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
    subject = _subject(document.get("patient_id"))
    device = ids.ref("device")

    findings = [*document["recommendations"], *document["risk_flags"]]
    issues = [(finding, _detected_issue(ids, finding, subject, when, device))
              for finding in document["risk_flags"]]
    issue_refs = {finding["code"]: ids.ref(f"issue/{finding['code']}") for finding, _ in issues}
    actions = [_action(finding, rulebook, issue_refs.get(finding["code"])) for finding in findings]
    outcome = _outcome(ids, document["suppressed"]) if document["suppressed"] else None

    request_group: dict[str, Any] = {
        "resourceType": "RequestGroup",
        "id": ids.id("request-group"),
        "meta": {"profile": [REQUEST_GROUP_PROFILE]},
        "identifier": [{"system": System.URI, "value": ids.urn("request-group")}],
        "instantiatesUri": [module],
        "status": "active",
        "intent": "proposal",
        "priority": max((a["priority"] for a in actions), key=_PRIORITY_ORDER.index, default="routine"),
        **({"subject": subject} if subject else {}),
        "authoredOn": when,
        "author": device,
        "note": [{"text": DISCLAIMER}],
        **({"action": actions} if actions else {}),
    }
    has_data_requests = any(f["kind"] == "data_request" for f in document["recommendations"])
    guidance: dict[str, Any] = {
        "resourceType": "GuidanceResponse",
        "id": ids.id("guidance-response"),
        "meta": {"profile": [GUIDANCE_RESPONSE_PROFILE]},
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
    targets = [ids.ref("guidance-response"), ids.ref("request-group"), *issue_refs.values()]
    if outcome:
        targets.append(ids.ref("outcome"))
    resources: list[tuple[str, dict[str, Any]]] = [
        ("guidance-response", guidance),
        ("request-group", request_group),
        *((f"issue/{finding['code']}", issue) for finding, issue in issues),
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


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _subject(patient_id: str | None) -> dict[str, Any] | None:
    if not patient_id:
        return None
    return {"identifier": {"system": System.PATIENT, "value": patient_id}, "display": patient_id}


def _coding(finding: Mapping[str, Any]) -> dict[str, Any]:
    return {"coding": [{"system": System.FINDING, "code": finding["code"], "display": finding["title"]}],
            "text": finding["title"]}


def _action(finding: Mapping[str, Any], rulebook: Mapping[str, str], issue: dict[str, str] | None) -> dict[str, Any]:
    indicator = finding_indicator(finding["code"], finding["kind"])
    rule = finding["rule"]
    source = {
        "type": "documentation",
        "label": f"{rule['id']} v{rule['version']}",
        "display": f"imt-cds rulebook {rulebook['name']} {rulebook['version']}, rule {rule['id']} "
                   f"v{rule['version']}; strength of evidence: {finding['strength']}",
    }
    action: dict[str, Any] = {
        "id": finding["code"],
        "title": finding["summary"],  # card.summary
        "description": rationale_text(finding),  # card.detail
        "code": [_coding(finding)],
        "priority": INDICATOR_PRIORITY[indicator],
        "documentation": [source, *(_citation(e) for e in finding["evidence"])],
    }
    if issue is not None:
        action["resource"] = issue
    return action


def _citation(entry: Mapping[str, Any]) -> dict[str, Any]:
    text = entry["citation"]
    if entry.get("quote"):
        text += f'\n\n> "{entry["quote"]}"'
    if entry.get("level"):
        text += f"\n\nLevel of evidence: {entry['level']}"
    return {"type": "citation", "label": entry["id"], "display": entry["claim"], "citation": text}


def _detected_issue(ids: _Ids, finding: Mapping[str, Any], subject: dict[str, Any] | None, when: str,
                    device: dict[str, str]) -> dict[str, Any]:
    evidence = "; ".join(f"[{e['id']}] {e['citation']}" for e in finding["evidence"])
    return {
        "resourceType": "DetectedIssue",
        "id": ids.id(f"issue/{finding['code']}"),
        "status": "final",
        "code": _coding(finding),
        "severity": INDICATOR_SEVERITY[finding_indicator(finding["code"], finding["kind"])],
        **({"patient": subject} if subject else {}),
        "identifiedDateTime": when,
        "author": device,
        "detail": f"{finding['summary']}\n\n{rationale_text(finding)}" + (f"\n\nEvidence: {evidence}" if evidence
                                                                          else ""),
    }


def _outcome(ids: _Ids, suppressed: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "id": ids.id("outcome"),
        "issue": [{
            "severity": "information",
            "code": "informational",
            "details": _coding(item["finding"]),
            "diagnostics": f"{item['finding']['code']} (rule {item['finding']['rule']['id']}) withheld because "
                           f"{item['by']['fact']} holds (rule {item['by']['id']}): {item['reason']}",
        } for item in suppressed],
    }


def _provenance(ids: _Ids, targets: list[dict[str, str]], provenance: Mapping[str, Any],
                audit_record: Mapping[str, Any] | None, device: dict[str, str]) -> dict[str, Any]:
    rulebook = provenance["rulebook"]
    parameters = ", ".join(f"{k}={v}" for k, v in provenance["parameters"].items())
    return {
        "resourceType": "Provenance",
        "id": ids.id("provenance"),
        "target": targets,
        "occurredDateTime": provenance["evaluated_at"],
        "recorded": audit_record["recorded_at"] if audit_record else provenance["evaluated_at"],
        "activity": {"coding": [{"system": System.DATA_OPERATION, "code": "CREATE", "display": "create"}]},
        "agent": [{
            "type": {"coding": [{"system": System.PARTICIPANT_TYPE, "code": "assembler", "display": "Assembler"}]},
            "who": device,
        }],
        "entity": [
            {"role": "source", "what": {
                "identifier": {"system": System.RULEBOOK_SHA256, "value": rulebook["sha256"]},
                "display": f"rulebook {rulebook['name']} {rulebook['version']} (rules, parameters and evidence; "
                           f"parameters {parameters})"}},
            {"role": "source", "what": {
                "identifier": {"system": System.INPUT_SHA256, "value": provenance["input_sha256"]},
                "display": "the patient's facts as validated (canonical input)"}},
        ],
    }


def _device(ids: _Ids, provenance: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Device",
        "id": ids.id("device"),
        "deviceName": [{"name": "imt-cds", "type": "model-name"}],
        "version": [{"type": {"text": name}, "value": str(version)} for name, version in provenance["engine"].items()],
    }


def rationale_text(finding: Mapping[str, Any]) -> str:
    """A finding's reasons as one paragraph of text."""
    reasons = [reason_text(r) for r in finding["because"]]
    why = "; ".join(reasons) if reasons else "applies to every patient"
    return f"{finding['title']}. Why: {why}. Rule {finding['rule']['id']} v{finding['rule']['version']}."
