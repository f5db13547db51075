"""A chart's reading does not depend on the order of its resources.

A FHIR server returns a search's matches in whatever order it likes, and a CDS Hooks prefetch puts several searches
side by side, so the same chart reaches the service in any order. Whether it is evaluated, its facts, which
resources each fact came from (in the same order) and what is reported about it (each problem's severity, fact, kind,
resources and words) must be the same for every order: a message that lists several findings lists them by date, then
by what they say, then by resource. Hypothesis shuffles:

- the published charts of tests/fixtures/fhir-charts (sources in its README) and the IMT example, each read as it is
  and with the IMT diagnosis attested (so that the charts of other diseases are read through too);
- charts whose findings disagree over time or name one another (the shapes of test_fhir_safety.py): a later
  metastasis outranks an earlier M0 and the other way round, findings of the same time conflict, a secondary tumour
  and a worsening name the IMT, another primary cancer holds its unnamed findings, a medication and its progression.

The same holds when a chart's entries come split among several Bundles, as a prefetch of several searches sends
them (a reference by fullUrl then crosses Bundles).

What is not compared: the order of the problems (they are reported as resources are read), and an entry's place,
which names a resource without an id (``Bundle/x.entry[3]``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from test_fhir_safety import (
    LUNG_CANCER,
    M0,
    M1,
    ON,
    SNOMED,
    chart,
    focused,
    m_category,
    medication,
    secondary,
    worse,
)

from imt_cds import load_rulebook
from imt_cds.core.errors import InvalidInputError
from imt_cds.fhir.reader import facts_from_resources

ROOT = Path(__file__).resolve().parents[1]
TERMINOLOGY = load_rulebook().terminology
RELATED = "http://hl7.org/fhir/StructureDefinition/condition-related"


def _bundle(resources):
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}


def _without_id(resource):
    """A resource the chart names by its place (``Bundle.entry[3]``), as a server may send one it has not stored."""
    return {key: value for key, value in resource.items() if key != "id"}


def _of(primary):
    return [{"url": RELATED, "valueReference": {"reference": primary}}]


PUBLISHED = {path.name: json.loads(path.read_text())
             for path in sorted((ROOT / "tests" / "fixtures" / "fhir-charts").glob("*.json"))
             if not path.name.startswith("_")}
PUBLISHED["examples/fhir/alk-lung-distant-bundle.json"] = json.loads(
    (ROOT / "examples" / "fhir" / "alk-lung-distant-bundle.json").read_text())
OVER_TIME = {
    "a later metastasis outranks an earlier M0": chart(m_category("m0", SNOMED, M0, "2026-01-10"),
                                                       secondary("brain", "12738006", "2026-02-12")),
    "a later M0 outranks an earlier metastasis": chart(m_category("m0", SNOMED, M0, "2026-03-01"),
                                                       secondary("brain", "12738006", "2026-02-12"),
                                                       m_category("m1", SNOMED, M1, "2025-11-02")),
    "findings of the same time conflict": chart(m_category("m0", SNOMED, M0, "2026-02"),
                                                secondary("brain", "12738006", "2026-02-12")),
    "findings of the same time and kind conflict": chart(m_category("zz-m0", SNOMED, M0, "2026-02-01"),
                                                         m_category("aa-m1", SNOMED, M1, "2026-02-01"),
                                                         secondary("brain", "12738006", "2026-02-01")),
    "findings of the same time without ids conflict": chart(*(_without_id(m_category(name, SNOMED, code, "2026-02-01"))
                                                              for name, code in (("m0", M0), ("m1", M1)))),
    "a secondary tumour and its M category name the IMT beside another primary": chart(
        LUNG_CANCER, secondary("lung-met", extension=_of("Condition/imt")),
        focused(m_category("m", SNOMED, M1), "Condition/lung-met"), secondary("liver-met", "93870000", "2026-03-04",
                                                                               extension=_of("Condition/nsclc"))),
    "a progression on crizotinib, one of the IMT's and one of the other cancer's": chart(
        LUNG_CANCER, secondary("liver-met", extension=_of("Condition/imt")), medication("crizotinib"),
        worse("worse", focus="Condition/liver-met"), worse("other", "2026-02-01", focus="Condition/nsclc")),
}
CHARTS = {**PUBLISHED, **{name: _bundle(resources) for name, resources in OVER_TIME.items()}}


def _positionless(text):
    return re.sub(r"(Bundle/[^ ,;()]*\.)?entry\[\d+\]", "entry[*]", text)


def reading(bundles, attested):
    """What must not depend on the order of the chart's resources, nor on the Bundles they come in."""
    try:
        result = facts_from_resources(bundles, ON, terminology=TERMINOLOGY, diagnosis_attested=attested)
    except InvalidInputError as refusal:
        return "refused", type(refusal).__name__, _positionless(str(refusal))
    return (
        result.eligibility.eligible, result.eligibility.reason,
        result.facts.model_dump(mode="json") if result.facts is not None else None,
        {path: [_positionless(s) for s in sources] for path, sources in result.sources.items()},
        sorted((p.severity, p.path or "", p.kind, _positionless(p.where), _positionless(p.message))
               for p in result.problems),
    )


AS_GIVEN = {(name, attested): reading([bundle], attested)
            for name, bundle in CHARTS.items() for attested in (False, True)}
SHUFFLABLE = sorted(name for name, bundle in CHARTS.items()
                    if bundle.get("resourceType") == "Bundle" and len(bundle.get("entry") or ()) > 1)


def test_the_charts_are_read_and_the_ones_over_time_say_what_they_are_about():
    # The shuffles below start from readings that mean something: most published charts are read through with the
    # diagnosis attested (the others are refused, which must not depend on the order either: several patients, or
    # none; or not evaluated: a deceased patient), the IMT example and the charts over time are evaluated, and
    # those show what they test.
    published = [name for name in SHUFFLABLE if name in PUBLISHED]
    assert len(published) >= 24
    assert len([name for name in published if AS_GIVEN[(name, True)][0] is True]) >= 13
    assert {AS_GIVEN[(name, True)][0] for name in published} == {True, False, "refused"}
    assert AS_GIVEN[("examples/fhir/alk-lung-distant-bundle.json", False)][0] is True
    assert all(AS_GIVEN[(name, False)][0] is True for name in OVER_TIME)

    def facts(name):
        return AS_GIVEN[(name, False)][2]

    def kinds(name):
        return {(kind, path) for _, path, kind, *_ in AS_GIVEN[(name, False)][4]}

    assert facts("a later metastasis outranks an earlier M0")["tumor"]["distant_disease"] is True
    assert facts("a later M0 outranks an earlier metastasis")["tumor"]["distant_disease"] is False
    assert {("superseded", "tumor.distant_disease")} <= kinds("a later M0 outranks an earlier metastasis")
    assert facts("findings of the same time conflict")["tumor"]["distant_disease"] is None
    assert ("conflict", "tumor.distant_disease") in kinds("findings of the same time conflict")
    assert facts("findings of the same time and kind conflict")["tumor"]["distant_disease"] is None
    assert ("conflict", "tumor.distant_disease") in kinds("findings of the same time and kind conflict")
    assert ("conflict", "tumor.distant_disease") in kinds("findings of the same time without ids conflict")
    assert facts("a secondary tumour and its M category name the IMT beside another primary")["tumor"][
        "distant_disease"] is True
    assert facts("a progression on crizotinib, one of the IMT's and one of the other cancer's")["history"][
        "progressed_on_alk_inhibitor"] is True


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SHUFFLABLE), st.booleans(), st.randoms(use_true_random=False))
def test_a_charts_reading_does_not_depend_on_the_order_of_its_resources(name, attested, random):
    bundle = CHARTS[name]
    entries = list(bundle["entry"])
    random.shuffle(entries)
    assert reading([{**bundle, "entry": entries}], attested) == AS_GIVEN[(name, attested)]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(SHUFFLABLE), st.booleans(), st.randoms(use_true_random=False), st.integers(2, 4))
def test_a_charts_reading_is_the_same_with_its_entries_split_among_several_bundles(name, attested, random, parts):
    bundle = CHARTS[name]
    split: list[list] = [[] for _ in range(parts)]
    for entry in bundle["entry"]:
        split[random.randrange(parts)].append(entry)
    searches = [{**bundle, "id": f"search-{n}", "entry": entries} for n, entries in enumerate(split)]
    assert reading(searches, attested) == AS_GIVEN[(name, attested)]
