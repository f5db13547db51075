"""A recorded assessment read back as objects (``imt_cds.audit.recorded``) is the live assessment: every finding,
reason, evidence entry, derived fact, suppression and the provenance, equal field for field, on the examples and on
generated patients, and through a real audit store (what ``imt-cds audit show`` reads)."""

from __future__ import annotations

import json
import random
from datetime import date
from pathlib import Path

import pytest
from strategies import random_patient

from imt_cds import Engine
from imt_cds.audit import open_store
from imt_cds.audit.recorded import recorded_assessment
from imt_cds.fhir.reader import facts_from_resources

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = [json.loads(p.read_text()) for p in sorted((ROOT / "examples").glob("*.json"))]


@pytest.fixture(scope="module")
def engine():
    return Engine()


def as_documented(finding):
    """The finding with each evidence entry as the document keeps it (``to_dict``: an entry's editorial ``note``,
    which no renderer shows, is not part of the assessment document, so a record cannot hold it)."""
    return finding._replace(evidence=tuple(entry.to_dict() for entry in finding.evidence))


def assert_same(view, live):
    assert view.patient_id == live.patient_id
    for part in ("recommendations", "risk_flags", "findings"):
        assert [as_documented(f) for f in getattr(view, part)] == [as_documented(f) for f in getattr(live, part)]
    assert view.derived_facts == live.derived_facts
    assert [s._replace(finding=as_documented(s.finding)) for s in view.suppressed] == [
        s._replace(finding=as_documented(s.finding)) for s in live.suppressed]
    assert view.provenance == live.provenance


def test_a_recorded_assessment_reads_back_as_the_live_one(engine):
    rng = random.Random(20261203)
    patients = EXAMPLES + [random_patient(rng) for _ in range(400)]
    seen = {"suppressed": 0, "reasons": 0, "parameter": 0, "reason_text": 0}
    for patient in patients:
        live = engine.evaluate(patient)
        view = recorded_assessment(live.to_dict(), live.canonical_input_json())
        assert_same(view, live)
        assert view.facts == live.facts
        assert recorded_assessment(live.to_dict()).facts is None  # only the input's sha256 was kept
        seen["suppressed"] += bool(live.suppressed)
        reasons = [r for f in live.findings for r in f.because] + [r for d in live.derived_facts for r in d.because]
        seen["reasons"] += any(r.reasons for r in reasons)
        seen["parameter"] += any(r.parameter for r in reasons)
        seen["reason_text"] += any(d.reason_text for d in live.derived_facts)
    assert all(seen.values()), seen  # every optional part was read back at least once


def test_a_record_in_the_store_reads_back_as_the_assessment_that_was_recorded(tmp_path, engine):
    bundle = json.loads((ROOT / "examples" / "fhir" / "alk-lung-distant-bundle.json").read_text())
    read = facts_from_resources([e["resource"] for e in bundle["entry"]], date(2026, 11, 21))
    diagnosis = read.eligibility.diagnosis.to_dict()
    with open_store(str(tmp_path / "audit.db")) as store:
        live = engine.evaluate(read.facts, diagnosis=diagnosis)
        store.append(live)
        record = store.record("last")
        view = recorded_assessment(record.assessment, record.canonical_input_json())
    assert live.provenance.diagnosis == diagnosis
    assert_same(view, live)
    assert view.facts == live.facts


def test_a_finding_from_two_rules_reads_back_with_its_second_rule(tmp_path):
    # The shipped catalogue never has two rules with one code fire together (tests/test_assessment.py makes a
    # working copy where they do, the same way).
    from rulebook_copies import copy_rulebook, edit

    directory = copy_rulebook(tmp_path)
    edit(directory, "derived/D05-data-block.yaml", "    - {derived: MULTIPLE_KINASE_FUSIONS}\n", "")
    edit(directory, "derived/D05-data-block.yaml", "  any:\n    - {derived: CONTRADICTION}", "  any:\n"
         "    - {derived: CONTRADICTION}\n    - {fact: molecular.alk.fusion_partner, is: NEVERSEEN}")
    live = Engine(directory).evaluate({"age_years": 10, "history": {"progressed_on_alk_inhibitor": True},
                                       "molecular": {"alk": {"status": "positive"}, "ros1": {"status": "positive"}}})
    view = recorded_assessment(live.to_dict(), live.canonical_input_json())
    assert any(f.also_from for f in live.findings)
    assert_same(view, live)


def test_a_recorded_assessment_cannot_be_changed(engine):
    import dataclasses

    live = engine.evaluate(EXAMPLES[0])
    view = recorded_assessment(live.to_dict(), live.canonical_input_json())
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.patient_id = "someone else"  # type: ignore[misc]
