"""What is particular to the audit records of the first releases (rulebook 0.1.0); that they verify and replay, as
every release's store does, is ``test_audit_release_stores.py``.

The store (``fixtures/audit-0.1.0``, see its README) was written by the project's own code at three commits of
rulebook 0.1.0. The first rulebooks predate two requirements made of rule authors since (a card indicator declared
per finding; numbers in texts written as parameters), so today's loader refused their archives: ``audit verify``
failed on an intact chain, no record could be replayed and ``audit show`` raised. An archive is now rebuilt as it
ran (``load_rulebook(..., archived=True)``), while a working copy still has to meet every requirement."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from audit_support import unpack_release_store
from rulebook_copies import copy_rulebook, edit

from imt_cds import Engine, RulebookError, load_rulebook
from imt_cds.audit import open_store, replay
from imt_cds.render.fhir_output import finding_indicator

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "audit-0.1.0" / "store.sqlite.gz"
SCRIPT = Path(sys.executable).with_name("imt-cds")
# The rulebooks of the three runs (fixture README), and the four findings whose cards were critical then.
FIRST, VALUE_SETS, METADATA = (
    "c757245198d9d5eff381185eecaf73fda9fb0f797fc2b8495333956aa0aa9d69",
    "d1e4f52a441b6f8ea6bbd292a17ea2e11d80e366270da3a0572aa8af7d357d14",
    "1e99c540bf5843af193a934111bf41642263fbd3dc0ab8826ba241e14a8eea28",
)
CRITICAL_THEN = {"FLAG_CONTRADICTORY_INPUT", "FLAG_MULTIPLE_KINASE_FUSIONS_VERIFY", "FLAG_OFF_LABEL_AGE",
                 "FLAG_VERIFY_INFANT_LABELING"}


@pytest.fixture
def store_path(tmp_path):
    return unpack_release_store(FIXTURE, tmp_path)


@pytest.fixture
def store(store_path):
    with open_store(store_path) as opened:
        yield opened


def run(*args):
    return subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=300)


def test_the_fixture_holds_records_of_the_three_first_rulebooks(store):
    records = store.records()
    assert [r.seq for r in records] == list(range(1, 25))
    assert [r.rulebook["sha256"] for r in records] == [FIRST] * 8 + [VALUE_SETS] * 8 + [METADATA] * 8
    assert {r.rulebook["version"] for r in records} == {"0.1.0"}
    findings = [f for r in records[:16] for f in r.assessment["recommendations"] + r.assessment["risk_flags"]]
    assert findings and not any("indicator" in f for f in findings)  # what the first two rulebooks wrote


def test_the_command_line_replays_and_shows_a_record_of_the_first_rulebook(store_path):
    replayed = run("audit", "replay", "4", "--db", store_path)
    assert replayed.returncode == 0, replayed.stderr
    assert "identical" in replayed.stdout
    for seq in (4, 5, 20):
        shown = run("audit", "show", seq, "--db", store_path)
        assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr
        assert "IMT decision support - assessment of EX-0" in shown.stdout


def test_with_the_current_rulebook_a_first_release_record_shows_what_changed_since(store):
    result = replay(store, "4", with_current=True)
    assert not result.identical
    # The indicators are new in the document; the findings made for the patient are the same ones.
    assert any(d.path.endswith(".indicator") for d in result.differences)
    codes = {f["code"] for f in result.document["recommendations"] + result.document["risk_flags"]}
    record = store.record("4").assessment
    assert codes == {f["code"] for f in record["recommendations"] + record["risk_flags"]}


def test_an_export_of_a_first_release_record_keeps_the_indicators_its_cards_had(store_path):
    for seq in (4, 5, 12, 13):  # the NTRK infant and the contradictory record, under each of the first rulebooks
        exported = run("audit", "export", seq, "--db", store_path, "--format", "fhir")
        assert exported.returncode == 0, exported.stderr
        bundle = json.loads(exported.stdout)
        resources = [entry["resource"] for entry in bundle["entry"]]
        actions = next(r for r in resources if r["resourceType"] == "RequestGroup")["action"]
        priorities = {action["code"][0]["coding"][0]["code"]: action["priority"] for action in actions}
        critical = CRITICAL_THEN & set(priorities)
        assert critical, priorities  # each of these records has a finding that was critical
        for code, priority in priorities.items():
            kind_priority = "routine" if code.startswith(("REC_", "REQUEST_")) else "urgent"
            assert priority == ("stat" if code in critical else kind_priority), (seq, code, priority)


def test_an_archived_rulebook_loads_as_it_ran_but_a_working_copy_must_meet_every_requirement(store, tmp_path):
    archive = store.rulebook_archive(FIRST)
    rules, seeds = archive.materialize(tmp_path / "first")
    rebuilt = load_rulebook(rules, seeds, archived=True)
    assert rebuilt.sha256 == FIRST
    assert {spec.indicator for rule in rebuilt.rules for spec in rule.findings} == {None}
    with pytest.raises(RulebookError) as refused:
        load_rulebook(rules, seeds)
    assert any("then[0].indicator: missing 'indicator'" in str(p) for p in refused.value.problems)
    # The documents an engine on it writes: the objects and the JSON agree, and neither has an indicator.
    assessment = Engine(rebuilt).evaluate(json.loads(store.record("4").canonical_input_json()))
    document = json.loads(assessment.to_json())
    assert document == assessment.to_dict()
    assert [f.to_dict() for f in assessment.findings] == document["recommendations"] + document["risk_flags"]
    assert not any("indicator" in f for f in document["recommendations"] + document["risk_flags"])


def test_a_number_written_in_a_text_is_refused_in_a_working_copy_and_accepted_from_an_archive(tmp_path):
    # The first rulebook wrote "from 1 year of age" where rulebook 0.2.0 writes {crizotinib_min_age_years}.
    directory = copy_rulebook(tmp_path / "copy")
    edit(directory, "treatment/R32a-crizotinib-alk.yaml", "{crizotinib_min_age_years}", "1 year")
    with pytest.raises(RulebookError) as refused:
        load_rulebook(directory)
    assert [p.message for p in refused.value.problems] == [
        "1 in the summary equals parameter crizotinib_min_age_years: write {crizotinib_min_age_years} so the text "
        "follows the parameter when it changes"]
    rebuilt = load_rulebook(directory, archived=True)
    assert "from 1 year of age" in rebuilt.rule("R32a").findings[0].summary


def test_the_indicators_of_old_documents_are_those_the_first_rule_files_declared(store, tmp_path):
    # The commit that moved the indicators into the rule files (the third rulebook) wrote down the mapping the cards
    # had used until then; a document without indicators is read with that mapping, finding by finding.
    rules, seeds = store.rulebook_archive(METADATA).materialize(tmp_path / "metadata")
    declared = {(spec.code, spec.kind): spec.indicator
                for rule in load_rulebook(rules, seeds, archived=True).rules for spec in rule.findings}
    assert len(declared) > 40 and {"critical", "warning", "info"} == set(declared.values())
    read = {key: finding_indicator({"code": key[0], "kind": key[1]}).value for key in declared}
    assert read == declared
