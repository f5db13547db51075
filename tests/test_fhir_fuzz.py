"""The FHIR reader never fails on a chart in any way but a refusal: Hypothesis mutates real charts (the IMT example
and published ones) element by element into any JSON value, and throws arbitrary JSON at it, and the reader must
either read (reporting what it skipped) or refuse with ``ChartRefusedError`` / ``InvalidInputError``. Anything
else (a ``TypeError``, ``KeyError``, ``RecursionError``...) would be an HTTP 500 in the service."""

from __future__ import annotations

import copy
import json
from datetime import date
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from imt_cds import load_rulebook
from imt_cds.core.errors import InvalidInputError
from imt_cds.fhir.reader import facts_from_bundle, facts_from_resources

ROOT = Path(__file__).resolve().parents[1]
CHARTS = [json.loads((ROOT / "examples" / "fhir" / "alk-lung-distant-bundle.json").read_text())] + [
    json.loads((ROOT / "tests" / "fixtures" / "fhir-charts" / name).read_text()) for name in (
        "mcode-4.0.0__Bundle-mcode-patient-bundle-jenny-m.json",
        "genomics-reporting-3.0.0__Bundle-bundle-oncologyexamples-r4.json")]
TERMINOLOGY = load_rulebook().terminology
ON = date(2026, 11, 21)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False)
    | st.text(max_size=12) | st.sampled_from(["Patient/imt-example-1", "urn:uuid:x", "final", "LA9633-4",
                                               "http://loinc.org", "HGNC:427", "8825/1", "refuted", "2026-01-01"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(
        ["resourceType", "id", "subject", "reference", "code", "coding", "system", "valueCodeableConcept",
         "component", "status", "entry", "resource", "fullUrl", "birthDate", "deceasedBoolean", "extension", "url",
         "clinicalStatus", "verificationStatus", "bodySite", "effectiveDateTime", "valueQuantity", "value"]),
        inner, max_size=5),
    max_leaves=20)


def paths(value, prefix=()):
    """Every (path) to an element of a JSON value, the value itself included."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths(item, (*prefix, index))


def replaced(value, path, new):
    if not path:
        return new
    copied = copy.copy(value)
    copied[path[0]] = replaced(value[path[0]], path[1:], new)
    return copied


def read(chart):
    try:
        result = facts_from_bundle(chart, ON, terminology=TERMINOLOGY)
    except InvalidInputError:  # a refused chart (ChartRefusedError is one) or not a Bundle
        return None
    # What it says about itself must be consistent: no facts unless eligible, and every problem readable.
    assert result.facts is None or result.eligibility.eligible
    json.dumps(result.to_dict())
    return result


# The elements the reader uses: most draws replace one of these (any element at all otherwise).
USED = {"resourceType", "id", "subject", "patient", "reference", "code", "coding", "system", "text", "display",
        "valueCodeableConcept", "valueBoolean", "valueString", "valueQuantity", "value", "unit", "component",
        "status", "entry", "resource", "fullUrl", "search", "mode", "request", "birthDate", "deceasedBoolean",
        "deceasedDateTime", "extension", "url", "valueReference", "clinicalStatus", "verificationStatus", "bodySite",
        "meta", "profile", "method", "focus", "reasonReference", "medicationCodeableConcept", "medicationReference",
        "contained", "effectiveDateTime", "effectivePeriod", "onsetDateTime", "recordedDate", "issued", "authoredOn"}
ALL_PATHS = [list(paths(chart)) for chart in CHARTS]
USED_PATHS = [[p for p in found if p and p[-1] in USED] for found in ALL_PATHS]


@given(st.sampled_from(range(len(CHARTS))), st.booleans(), st.data(), json_values)
def test_any_element_of_a_real_chart_replaced_by_any_json_value_is_read_or_refused(which, anywhere, data, value):
    path = data.draw(st.sampled_from(ALL_PATHS[which] if anywhere else USED_PATHS[which]))
    read(replaced(CHARTS[which], path, value))


@given(st.lists(json_values, max_size=6))
def test_arbitrary_resources_are_read_or_refused(values):
    try:
        result = facts_from_resources(values, ON, terminology=TERMINOLOGY)
    except InvalidInputError:
        return
    assert result.facts is None or result.eligibility.eligible


def test_the_unchanged_charts_are_read():
    """(The fuzzing above starts from charts that read: the IMT example is eligible, the others are not IMT.)"""
    results = [read(chart) for chart in CHARTS]
    assert results[0].ok and all(r is not None and not r.ok for r in results[1:])
