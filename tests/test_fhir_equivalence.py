"""A chart's reading does not depend on how its resources are written, only on what they say.

FHIR lets a chart say the same thing in several ways, and EHRs use them all. Each rewriting below keeps a chart's
meaning by FHIR's own rules, so whether it is evaluated, its facts, which resources each fact came from and what is
reported about it (each problem's severity, fact, kind and resources) must stay the same; not the words of a message,
which quote the chart's codes and displays as it writes them:

- *narrative and metadata*: a `text` narrative and `meta.lastUpdated` / `meta.versionId` on every resource;
- *extensions*: an extension of a URL nobody knows on every resource, CodeableConcept and Coding (not a
  `modifierExtension`: applications are required to check for those, FHIR R4's definition of `modifierExtension`;
  the others do not change the meaning of what carries them);
- *another coding*: a coding of a local code system added to every CodeableConcept (its codings are translations of
  one concept);
- *codings reordered*: "Ordering of codings is undefined and SHALL NOT be used to infer meaning" (FHIR R4,
  the comment of `CodeableConcept.coding`);
- *properties reordered*: the properties of every JSON object in reverse order (JSON objects are unordered);
- *decimals*: an integer `value` written as a decimal (2 as 2.0);
- *other units*: a quantity in UCUM `cm` written in `mm`, one in `mm` in `cm` (the IMT example's tumour size);
- *UTC offsets*: a time in UTC written with `+00:00` for `Z`, and with `Z` for `+00:00` (Synthea writes that);
- *absolute references*: a relative reference (`Patient/x`) written as the absolute `fullUrl` of the entry it resolves
  to (in a Bundle, FHIR R4 resolves a relative reference against the `fullUrl` of the entry that holds it).

The charts are those of test_fhir_order.py: the published charts of tests/fixtures/fhir-charts, the IMT example and
the charts whose findings disagree over time, each read as it is and with the diagnosis attested. Hypothesis picks a
chart and a set of rewritings and applies them all.

Not meaning-preserving, so not here: a display removed (the reader takes a fusion partner's symbol from its display)
and a time moved to another UTC offset (the reader reads a dateTime's own calendar day).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from test_fhir_order import AS_GIVEN, CHARTS, OVER_TIME, reading

UCUM = "http://unitsofmeasure.org"
UNKNOWN_EXTENSION = {"url": "http://hospital.example.org/fhir/StructureDefinition/note", "valueString": "seen"}
LOCAL_CODING = {"system": "http://hospital.example.org/codes", "code": "X1", "display": "local"}
Rewrite = Callable[[dict[str, Any]], dict[str, Any]]


def _is_resource(node: dict[str, Any]) -> bool:
    return isinstance(node.get("resourceType"), str)


def narrative_and_metadata(node):
    if not _is_resource(node) or node["resourceType"] == "Bundle":
        return node
    meta = node.get("meta") if isinstance(node.get("meta"), dict) else {}
    return {**node, "meta": {**meta, "lastUpdated": "2026-01-01T00:00:00Z", "versionId": "7"},
            "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">seen</div>'}}


def extensions(node):
    if not (_is_resource(node) or "coding" in node or ("system" in node and "code" in node)):
        return node
    found = node.get("extension") if isinstance(node.get("extension"), list) else []
    return {**node, "extension": [*found, UNKNOWN_EXTENSION]}


def another_coding(node):
    if not isinstance(node.get("coding"), list):
        return node
    return {**node, "coding": [*node["coding"], LOCAL_CODING]}


def codings_reordered(node):
    if not isinstance(node.get("coding"), list):
        return node
    return {**node, "coding": node["coding"][::-1]}


def properties_reordered(node):
    return dict(reversed(node.items()))


def decimals(node):
    value = node.get("value")
    return {**node, "value": float(value)} if type(value) is int else node


def other_units(node):
    if node.get("system") != UCUM or type(node.get("value")) not in (int, float):
        return node
    if node.get("code") == "cm":
        return {**node, "value": round(node["value"] * 10, 6), "code": "mm", "unit": "mm"}
    if node.get("code") == "mm":
        return {**node, "value": node["value"] / 10, "code": "cm", "unit": "cm"}
    return node


def utc_offsets(node):
    return {key: _in_the_other_utc_form(value) if isinstance(value, str) else value for key, value in node.items()}


def _in_the_other_utc_form(text):
    if len(text) > 11 and text[10] == "T":
        if text.endswith("Z"):
            return text[:-1] + "+00:00"
        if text.endswith("+00:00"):
            return text[:-6] + "Z"
    return text


SERVER = "https://ehr.example.org/fhir"
DATED = ("effectiveDateTime", "onsetDateTime", "recordedDate", "authoredOn", "performedDateTime")


def served(name):
    """A chart over time as a server may send it: each entry under its fullUrl on the server, each day a time in UTC
    (so that the absolute references and the UTC offsets below reach findings the reader orders by date)."""
    entries = []
    for entry in CHARTS[name]["entry"]:
        resource = copy.deepcopy(entry["resource"])
        for key in DATED:
            if isinstance(resource.get(key), str) and len(resource[key]) == 10:
                resource[key] += "T09:30:00Z"
        if "id" in resource:
            entries.append({"fullUrl": f"{SERVER}/{resource['resourceType']}/{resource['id']}", "resource": resource})
        else:  # (a resource the server has not stored: no fullUrl of its own)
            entries.append({"resource": resource})
    return {**CHARTS[name], "entry": entries}


SERVED = {f"{name}, served": served(name) for name in OVER_TIME}
ALL_CHARTS = {**CHARTS, **SERVED}


def meaning(read):
    """test_fhir_order.py's reading without the words of its messages."""
    if read[0] == "refused":
        return read[:2]
    *rest, problems = read
    return (*rest, [problem[:4] for problem in problems])


AS_READ = {key: meaning(read) for key, read in AS_GIVEN.items()}
AS_READ.update({(name, attested): meaning(reading([chart], attested))
                for name, chart in SERVED.items() for attested in (False, True)})


REWRITES: dict[str, Rewrite] = {rewrite.__name__: rewrite for rewrite in (
    narrative_and_metadata, extensions, another_coding, codings_reordered, properties_reordered, decimals, other_units,
    utc_offsets)}


def rewritten(node: Any, rewrite: Rewrite) -> Any:
    if isinstance(node, dict):
        return {key: rewritten(value, rewrite) for key, value in rewrite(node).items()}
    if isinstance(node, list):
        return [rewritten(item, rewrite) for item in node]
    return node


def absolute_references(bundle: dict[str, Any]) -> dict[str, Any]:
    """Every relative reference to an entry of the Bundle written as that entry's absolute fullUrl."""
    urls = {}
    for entry in bundle.get("entry") or ():
        resource, full_url = entry.get("resource") or {}, entry.get("fullUrl") or ""
        name = f"{resource.get('resourceType')}/{resource.get('id')}"
        if full_url.startswith(("http://", "https://")) and full_url.endswith("/" + name):
            urls[name] = full_url

    def absolute(node):
        reference = node.get("reference")
        return {**node, "reference": urls[reference]} if reference in urls else node

    return rewritten(bundle, absolute) if urls else bundle


def test_a_chart_over_time_served_reads_as_written_by_hand():
    # The served charts say what the charts they come from say (their sources are the same resources).
    for name in OVER_TIME:
        as_served, as_written = AS_READ[(f"{name}, served", False)], AS_READ[(name, False)]
        assert as_served[:4] == as_written[:4]  # evaluated, the facts and their sources
        assert [problem[:3] for problem in as_served[4]] == [problem[:3] for problem in as_written[4]]


def test_each_rewriting_changes_some_chart():
    # Every rewriting does something to the charts (else its property would hold of nothing), and the absolute
    # references reach several charts.
    # (compared as JSON text: dicts compare equal whatever the order of their keys)
    for name, rewrite in REWRITES.items():
        assert any(json.dumps(rewritten(chart, rewrite)) != json.dumps(chart) for chart in ALL_CHARTS.values()), name
    assert sum(absolute_references(chart) != chart for chart in ALL_CHARTS.values()) >= 3 + len(SERVED)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(ALL_CHARTS)), st.booleans(), st.sets(st.sampled_from(sorted(REWRITES)), min_size=1),
       st.booleans())
def test_a_charts_reading_does_not_depend_on_how_it_is_written(name, attested, rewrites, absolute):
    chart = copy.deepcopy(ALL_CHARTS[name])
    for rewrite in sorted(rewrites):
        chart = rewritten(chart, REWRITES[rewrite])
    if absolute:
        chart = absolute_references(chart)
    assert meaning(reading([chart], attested)) == AS_READ[(name, attested)]
