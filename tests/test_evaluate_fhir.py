"""``imt-cds evaluate --fhir BUNDLE``: the same assessment as the facts read from the Bundle, through the console
script; what could not be used is printed on stderr, and a conflict that prevents evaluation exits 2."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

from helpers import named_crizotinib_then_worse

from imt_cds.fhir.reader import facts_from_bundle

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "examples" / "fhir" / "alk-lung-distant-bundle.json"
SCRIPT = Path(sys.executable).with_name("imt-cds")


def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), "evaluate", *args], capture_output=True, text=True, timeout=120,
                          input=input)


def without_time(document: dict) -> dict:
    document["provenance"].pop("evaluated_at")
    return document


def test_a_bundle_gives_the_assessment_of_the_facts_read_from_it(tmp_path):
    facts = facts_from_bundle(json.loads(BUNDLE.read_text())).facts
    (tmp_path / "facts.json").write_text(facts.model_dump_json())
    from_bundle = run("--fhir", str(BUNDLE), "--format", "json")
    from_facts = run(str(tmp_path / "facts.json"), "--format", "json")
    assert from_bundle.returncode == 0 and from_bundle.stderr == ""
    document = json.loads(from_bundle.stdout)
    fhir_input = document.pop("fhir_input")  # the one added member: where each fact came from
    # ... and the provenance says what established the diagnosis (patient facts given directly are IMT facts)
    assert document["provenance"].pop("diagnosis") == {"basis": "coded", "sources": ["Condition/imt-primary"],
                                                       "codes": ["http://terminology.hl7.org/CodeSystem/icd-o-3|8825/1"],
                                                       "attested": False}
    assert without_time(document) == without_time(json.loads(from_facts.stdout))
    assert fhir_input["eligibility"]["eligible"] is True and "facts" not in fhir_input  # (the document has them)
    assert fhir_input["problems"] == []
    assert "Observation/imt-size" in fhir_input["sources"]["tumor.size_cm"]
    note = run("--fhir", str(BUNDLE))
    assert note.returncode == 0 and "IMT decision support - assessment of imt-example-1" in note.stdout
    assert "[from Condition/imt-distant]" in note.stdout  # the rationale names the resource a fact was read from


def test_what_could_not_be_used_is_printed_on_stderr(tmp_path):
    bundle = json.loads(BUNDLE.read_text())
    broken = {"resource": {"resourceType": "Observation", "id": "broken", "status": "final",
                           "code": {"coding": [{"system": "http://loinc.org", "code": "21889-1"}]},
                           "subject": {"reference": "Patient/imt-example-1"}, "component": "not a list"}}
    bundle["entry"].append(broken)
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle))
    result = run("--fhir", str(path))
    assert result.returncode == 0
    assert any(line.startswith("imt-cds: FHIR warning: Observation/broken: malformed Observation")
               for line in result.stderr.splitlines()), result.stderr


def chart_with_facts(tmp_path: Path, name: str, *facts: tuple[str, str, str, object]) -> tuple[Path, dict]:
    """The example Bundle with one ``urn:imt-cds:fact`` Observation per (id, fact path, value[x] key, value) added,
    written to a file: the file and the Bundle."""
    bundle = json.loads(BUNDLE.read_text())
    patient = bundle["entry"][0]["resource"]["id"]
    for resource_id, fact, key, value in facts:
        bundle["entry"].append({"resource": {
            "resourceType": "Observation", "id": resource_id, "status": "final", key: value,
            "code": {"coding": [{"system": "urn:imt-cds:fact", "code": fact}]},
            "subject": {"reference": f"Patient/{patient}"}}})
    path = tmp_path / name
    path.write_text(json.dumps(bundle))
    return path, bundle


def test_a_conflict_that_prevents_evaluation_exits_2_with_the_reason(tmp_path):
    path, _ = chart_with_facts(tmp_path, "conflict.json", ("recurred", "history.recurrence", "valueBoolean", True),
                               ("not-recurred", "history.recurrence", "valueBoolean", False))
    result = run("--fhir", str(path), "--format", "json")
    assert result.returncode == 2 and result.stdout == ""
    assert "FHIR error" in result.stderr and "history.recurrence" in result.stderr
    assert f"imt-cds: conflicting FHIR resources in {path}; nothing was evaluated" in result.stderr.splitlines()


def test_a_yes_no_fact_that_cannot_be_read_prevents_evaluation_and_says_so(tmp_path):
    """Left out, it would read "no": the CLI, like the service's card, says the resources cannot be read."""
    from imt_cds.render.cards import conflict_card

    path, bundle = chart_with_facts(tmp_path, "unreadable.json",
                                    ("recurred", "history.recurrence", "valueString", "yes"))
    result = run("--fhir", str(path))
    assert result.returncode == 2 and result.stdout == ""
    assert "Observation/recurred" in result.stderr and "cannot be left unknown" in result.stderr
    assert "FHIR resources that disagree or cannot be read in" in result.stderr
    problems = [p.to_dict() for p in facts_from_bundle(bundle).problems]
    card = conflict_card(problems, evaluation_id="e1")
    assert card["summary"].startswith("Unreadable or conflicting records") and card["indicator"] == "critical"
    assert "disagree or cannot be read" in card["detail"] and "Observation/recurred" in card["detail"]


def test_a_conflict_beside_an_unreadable_fact_is_reported_with_it_and_not_called_a_conflict_alone(tmp_path):
    # Both are reported at once (the values are checked even when a conflict already prevents evaluation), and the
    # last line does not call the chart merely conflicting.
    path, _ = chart_with_facts(tmp_path, "both.json", ("unreadable", "history.recurrence", "valueString", "yes"),
                               ("surgery", "history.surgery_done", "valueBoolean", True),
                               ("no-surgery", "history.surgery_done", "valueBoolean", False))
    result = run("--fhir", str(path))
    assert result.returncode == 2 and result.stdout == ""
    assert "Observation/unreadable" in result.stderr and "history.surgery_done" in result.stderr
    assert f"imt-cds: FHIR resources that disagree or cannot be read in {path}; nothing was evaluated" in result.stderr


def test_a_single_resource_is_a_chart_and_anything_else_is_invalid_input(tmp_path):
    patient = copy.deepcopy(json.loads(BUNDLE.read_text())["entry"][0]["resource"])
    path = tmp_path / "patient.json"
    path.write_text(json.dumps(patient))
    result = run("--fhir", str(path))  # a Patient alone: no IMT diagnosis in it, so not evaluated
    assert result.returncode == 4 and result.stdout == ""
    (said,) = [line for line in result.stderr.splitlines() if "not evaluated" in line]
    assert said.startswith("imt-cds: not evaluated: ") and "no IMT diagnosis" in said
    path.write_text(json.dumps({"no": "resourceType"}))
    result = run("--fhir", str(path))
    assert result.returncode == 2 and "expected a FHIR Bundle" in result.stderr
    malformed = run("--fhir", "-", input="{not json")
    assert malformed.returncode == 2 and "malformed JSON" in malformed.stderr


def test_a_chart_of_two_patients_is_refused_in_one_line(tmp_path):
    bundle = json.loads(BUNDLE.read_text())
    someone_else = {**bundle["entry"][0]["resource"], "id": "someone-else"}
    bundle["entry"].append({"resource": someone_else})
    path = tmp_path / "two.json"
    path.write_text(json.dumps(bundle))
    result = run("--fhir", str(path))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (f"imt-cds: FHIR chart {path} refused, nothing was evaluated: the chart holds 2 different "
                             "patients (Patient/imt-example-1, Patient/someone-else); a chart is evaluated only for "
                             "one patient\n")


def test_not_evaluated_charts_say_why_in_json_too(tmp_path):
    bundle = json.loads(BUNDLE.read_text())
    bundle["entry"][0]["resource"]["deceasedDateTime"] = "2025-06-01"
    path = tmp_path / "deceased.json"
    path.write_text(json.dumps(bundle))
    result = run("--fhir", str(path), "--format", "json")
    assert result.returncode == 4
    data = json.loads(result.stdout)
    assert set(data) == {"not_evaluated"} and "facts" not in data["not_evaluated"]
    assert data["not_evaluated"]["eligibility"]["reason"] == "deceased"
    assert "recommendations" not in result.stdout


def test_an_attested_diagnosis_is_evaluated_and_recorded(tmp_path):
    bundle = json.loads(BUNDLE.read_text())
    bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["resourceType"] != "Condition"]
    path = tmp_path / "no-condition.json"
    path.write_text(json.dumps(bundle))
    assert run("--fhir", str(path)).returncode == 4
    result = run("--fhir", str(path), "--attest-imt-diagnosis", "--format", "json")
    assert result.returncode == 0
    assert json.loads(result.stdout)["provenance"]["diagnosis"]["basis"] == "attested"
    alone = run(str(path), "--attest-imt-diagnosis")
    assert (alone.returncode, alone.stdout) == (2, "")
    assert alone.stderr == ("imt-cds: error: --attest-imt-diagnosis goes with --fhir (patient facts are IMT facts "
                            "already)\n")


def test_a_chart_with_another_primary_cancer_uses_only_what_names_the_imt_and_stops_on_a_progression(tmp_path):
    """The example chart with a lung cancer beside the IMT: its ALK fusion and tumour size name no cancer, so they
    may be the lung cancer's and are not used; a worsening that names no cancer, after an ALK inhibitor, stops the
    evaluation (progression cannot be left unknown)."""
    bundle = json.loads(BUNDLE.read_text())
    patient = {"reference": f"Patient/{bundle['entry'][0]['resource']['id']}"}
    lung = {"resourceType": "Condition", "id": "nsclc", "subject": patient,
            "meta": {"profile": ["http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-primary-cancer-condition"]},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "254637007"}]}}
    bundle["entry"].append({"resource": lung})
    path = tmp_path / "two-cancers.json"
    path.write_text(json.dumps(bundle))
    result = run("--fhir", str(path), "--format", "json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert {"molecular.alk.status", "tumor.size_cm"}.isdisjoint(document["fhir_input"]["sources"])
    assert "molecular.alk.status" in json.loads(run("--fhir", str(BUNDLE), "--format", "json").stdout)["fhir_input"][
        "sources"]
    # No ALK inhibitor is suggested on what may be the lung cancer's fusion: ALK testing and a size are asked for.
    codes = [finding["code"] for finding in document["recommendations"]]
    assert "REC_CRIZOTINIB_ALK" not in codes and {"REQUEST_ALK_TESTING", "REQUEST_TUMOR_SIZE"} <= set(codes), codes
    for resource in ("Observation/imt-alk-fusion", "Observation/imt-size"):
        assert (f"imt-cds: FHIR warning: {resource}: " in result.stderr
                and "in a chart that holds another primary cancer (Condition/nsclc); not used" in result.stderr)
    crizotinib = {"resourceType": "MedicationStatement", "id": "crizotinib", "status": "active", "subject": patient,
                  "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                            "code": "1148495"}]}, "effectiveDateTime": "2025-03-01"}
    worse = {"resourceType": "Observation", "id": "worse", "status": "final", "subject": patient,
             "code": {"coding": [{"system": "http://loinc.org", "code": "97509-4"}]},
             "effectiveDateTime": "2026-01-05",
             "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "271299001"}]}}
    bundle["entry"] += [{"resource": crizotinib}, {"resource": worse}]
    path.write_text(json.dumps(bundle))
    result = run("--fhir", str(path))
    assert result.returncode == 2 and result.stdout == ""
    assert ("imt-cds: FHIR error: Observation/worse: disease progression that names no cancer (focus)"
            in result.stderr)
    assert (f"imt-cds: FHIR resources that disagree, cannot be read or are not tied to the IMT in {path}; nothing "
            "was evaluated") in result.stderr


def test_an_alk_inhibitor_named_only_in_text_is_progression_on_it_by_the_rulebooks_drug_table(tmp_path):
    """A patient on Xalkori (named, not coded by its RxNorm ingredient) whose IMT worsened: progression on an ALK
    inhibitor, so a next-generation ALK inhibitor is considered and crizotinib is not suggested again. The names are
    those of the rulebook evaluated with (``--rules``)."""
    bundle = json.loads(BUNDLE.read_text())
    patient = f"Patient/{bundle['entry'][0]['resource']['id']}"
    bundle["entry"] += [{"resource": r} for r in named_crizotinib_then_worse(patient, "Xalkori 250 mg capsule")]
    path = tmp_path / "on-xalkori.json"
    path.write_text(json.dumps(bundle))
    result = run("--fhir", str(path), "--format", "json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["fhir_input"]["sources"]["history.progressed_on_alk_inhibitor"] == ["Observation/worse"]
    codes = [finding["code"] for finding in document["recommendations"]]
    assert "REC_CRIZOTINIB_ALK" not in codes and "REC_NEXT_GEN_ALK_INHIBITOR_CONSIDER" in codes, codes
    assert ("imt-cds: FHIR warning: MedicationStatement/xalkori: medication 'Xalkori 250 mg capsule' read as the ALK "
            "inhibitor crizotinib by its name, not by a code of value set alk-inhibitors: check it") in result.stderr
    # A rulebook whose drug table does not know the brand does not read it: the names are the rulebook's.
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    table = rules / "drugs.yaml"
    table.write_text(table.read_text().replace("brands: [Xalkori]", "brands: []"))
    other = run("--fhir", str(path), "--format", "json", "--rules", str(rules))
    assert other.returncode == 0, other.stderr
    document = json.loads(other.stdout)
    assert "history.progressed_on_alk_inhibitor" not in document["fhir_input"]["sources"]
    assert "REC_CRIZOTINIB_ALK" in [finding["code"] for finding in document["recommendations"]]
