"""The command line, run through the installed console script (and python -m imt_cds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.json"))
SCRIPT = Path(sys.executable).with_name("imt-cds")


def run(*args, stdin=None, cwd=ROOT):
    return subprocess.run([str(SCRIPT), *map(str, args)], input=stdin, capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_help_lists_the_commands_and_exit_codes():
    result = run("--help")
    assert result.returncode == 0
    assert "evaluate" in result.stdout and "batch" in result.stdout and "exit codes" in result.stdout
    evaluate = run("evaluate", "--help")
    assert evaluate.returncode == 0 and evaluate.stdout.startswith("usage: imt-cds evaluate ")
    assert all(option in evaluate.stdout for option in ("--fhir", "--format {text,json}", "--rules DIR", "--audit DB"))


def test_python_dash_m_is_the_same_command_line():
    result = subprocess.run([sys.executable, "-m", "imt_cds", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("imt-cds ")


def test_there_are_at_least_six_realistic_example_patients():
    assert len(EXAMPLES) >= 6


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_evaluates_to_a_consult_note(path):
    result = run("evaluate", path)
    assert result.returncode == 0, result.stderr
    note = result.stdout
    assert note.startswith("IMT decision support - assessment of EX-")
    assert "not a prescription" in note and "Multidisciplinary team review" in note
    assert "Why:" in note and "Evidence:" in note and "PROVENANCE" in note


def test_the_consult_note_follows_a_finding_back_to_facts_and_quotes():
    note = run("evaluate", ROOT / "examples/02_alk_positive_unresectable.json").stdout
    crizotinib = note[note.index("Consider crizotinib"):note.index("DATA REQUESTS")]
    assert "ALK_INHIBITOR_ELIGIBLE holds [derived by rule D06], because:" in crizotinib
    assert "tumor.resectability is unresectable" in crizotinib
    assert '"The U.S. Food and Drug Administration (FDA) approved crizotinib' in crizotinib


def test_json_output_is_the_assessment_document():
    result = run("evaluate", ROOT / "examples/05_contradictory_record.json", "--format", "json")
    assert result.returncode == 0
    data = json.loads(result.stdout)
    assert data["schema"] == "imt-cds/assessment/1"
    assert [s["finding"]["code"] for s in data["suppressed"]] == ["REC_UPFRONT_SURGICAL_RESECTION"]


def test_standard_input_is_read_with_a_dash():
    result = run("evaluate", "-", "--format", "json", stdin='{"age_years": 4}')
    assert result.returncode == 0 and json.loads(result.stdout)["patient_id"] is None


def test_invalid_input_exits_2_with_every_problem_on_stderr():
    bad = '{"age_years": 200, "molecular": {"alk": {"staus": "positive"}}}'
    result = run("evaluate", "-", stdin=bad)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "age_years" in result.stderr and "molecular.alk.staus" in result.stderr
    assert "did you mean 'status'" in result.stderr and "Traceback" not in result.stderr


def test_invalid_input_in_json_mode_also_prints_the_errors_document():
    result = run("evaluate", "-", "--format", "json", stdin='{"tumor": {"site": "lung"}}')
    assert result.returncode == 2
    (error,) = json.loads(result.stdout)["errors"]
    assert error["path"] == "tumor.site" and error["value"] == "lung" and "thoracic" in error["message"]


def test_a_fhir_chart_given_as_patient_facts_is_named_as_fhir_with_the_option_to_read_it():
    result = run("evaluate", ROOT / "examples/fhir/alk-lung-distant-bundle.json")
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == (f"imt-cds: invalid patient facts in {ROOT / 'examples/fhir/alk-lung-distant-bundle.json'} "
                        "(1 problem); nothing was evaluated:"), result.stderr  # not one line per Bundle key
    assert lines[1] == ("  - resourceType: this looks like FHIR (resourceType 'Bundle'), not patient facts: read a "
                        "FHIR chart with `imt-cds evaluate --fhir` (from Python: imt_cds.fhir.facts_from_bundle)")


@pytest.mark.parametrize(("chart", "line"), [
    ((ROOT / "examples/02_alk_positive_unresectable.json").read_text(),
     "  - (document): no resourceType: this looks like patient facts, not a FHIR chart; drop --fhir"),
    ('{"no": "resourceType"}', "  - (document): no resourceType: expected a FHIR Bundle (or one FHIR resource)"),
])
def test_patient_facts_given_to_fhir_are_named_as_such_without_a_python_none(chart, line):
    result = run("evaluate", "--fhir", "-", stdin=chart)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "imt-cds: invalid FHIR chart in standard input (1 problem); nothing was evaluated:", line]


@pytest.mark.parametrize("args", [("evaluate", "no-such-file.json"), ("evaluate", "-")])
def test_unreadable_or_malformed_input_exits_2(args):
    result = run(*args, stdin="{not json")
    assert result.returncode == 2 and ("cannot read" in result.stderr or "malformed JSON" in result.stderr)


def test_a_file_that_cannot_be_read_is_named_with_the_reason(tmp_path):
    result = run("evaluate", tmp_path / "absent.json")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"imt-cds: error: cannot read {tmp_path / 'absent.json'}: No such file or directory\n"


def test_a_missing_extra_is_found_however_deep_it_was_raised():
    from imt_cds.cli.common import missing_extra, missing_extra_message

    assert missing_extra(ModuleNotFoundError("no", name="psycopg.pq")) == ("psycopg.pq", "postgres")
    try:
        try:
            raise ModuleNotFoundError("no", name="z3")
        except ImportError:
            raise RuntimeError("the store could not open") from None  # no cause: found through the context
    except RuntimeError as exc:
        implicit = exc
    implicit.__suppress_context__ = False
    assert missing_extra(implicit) == ("z3", "authoring")
    assert missing_extra(AttributeError("no", name="z3")) is None  # a name, but no missing module
    assert missing_extra(ModuleNotFoundError("no", name="numpy")) is None  # no extra of ours installs it
    assert missing_extra(ImportError("no name")) is None
    assert missing_extra_message("z3", "authoring") == ("imt-cds: error: this command needs the optional package "
                                                        "'z3', which is not installed: pip install "
                                                        "'imt-cds[authoring]'")


def test_each_module_of_the_extras_map_is_installed_by_the_extra_it_names():
    # The map turns a missing module into "pip install 'imt-cds[<extra>]'": the extra must exist in pyproject.toml and
    # install the module, itself or through an extra of one of its requirements (PyJWT[crypto] brings cryptography).
    import importlib.metadata
    import re
    import tomllib

    from imt_cds.cli.common import EXTRA_OF_MODULE

    def name(requirement):
        return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", requirement).group()).lower()

    def installed_by(requirements):
        names = set()
        for requirement in requirements:
            names.add(name(requirement))
            for extra in re.findall(r"\[([^\]]+)\]", requirement.split(";")[0])[:1]:
                for wanted in extra.split(","):
                    names |= {name(r) for r in importlib.metadata.requires(name(requirement)) or []
                              if re.search(rf"extra == .{wanted.strip()}.", r)}
        return names

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    distributions = importlib.metadata.packages_distributions()
    for module, extra in EXTRA_OF_MODULE.items():
        assert extra in extras, (module, extra)
        assert {name(d) for d in distributions[module]} & installed_by(extras[extra]), (module, extra)


def test_a_broken_rulebook_is_an_internal_error_without_a_traceback(tmp_path):
    (tmp_path / "rulebook.yaml").write_text("name: x\n")
    result = run("evaluate", ROOT / "examples/01_surgery_first_lung.json", "--rules", tmp_path)
    assert result.returncode == 1
    assert "invalid_rulebook" in result.stderr and "Traceback" not in result.stderr


def test_a_working_copy_of_the_rulebook_can_be_used(tmp_path):
    from rulebook_copies import copy_rulebook, set_parameters

    directory = copy_rulebook(tmp_path)
    set_parameters(directory, {"size_risk_threshold_cm": 20})
    example = ROOT / "examples/02_alk_positive_unresectable.json"
    shipped = json.loads(run("evaluate", example, "--format", "json").stdout)
    local = json.loads(run("evaluate", example, "--format", "json", "--rules", directory).stdout)
    assert any(f["code"] == "RISK_TUMOR_SIZE_ABOVE_COHORT_MEDIAN" for f in shipped["risk_flags"])
    assert not any(f["code"] == "RISK_TUMOR_SIZE_ABOVE_COHORT_MEDIAN" for f in local["risk_flags"])


def _batch_input(tmp_path):
    lines = [json.dumps(json.loads(p.read_text())) for p in EXAMPLES]
    lines[2:2] = ['{"age_years": -4}', "", "not json"]
    path = tmp_path / "in.ndjson"
    path.write_text("\n".join(lines) + "\n")
    return path, len(lines)


def test_batch_keeps_order_reports_invalid_lines_by_number_and_exits_3(tmp_path):
    source, count = _batch_input(tmp_path)
    out = tmp_path / "out.ndjson"
    result = run("batch", source, "-o", out)
    assert result.returncode == 3, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == count - 1  # the blank line is skipped
    assert [r["line"] for r in records if "errors" in r] == [3, 5]
    assert records[2]["errors"][0]["path"] == "age_years"
    ids = [r.get("patient_id") for r in records if "schema" in r]
    assert ids == [json.loads(p.read_text())["patient_id"] for p in EXAMPLES]
    assert f"{count - 1} lines: {len(EXAMPLES)} evaluated, 2 invalid" in result.stderr


def test_batch_with_two_processes_gives_the_same_output(tmp_path):
    source, count = _batch_input(tmp_path)
    one = run("batch", source)
    two = run("batch", source, "--jobs", "2")
    assert one.returncode == two.returncode == 3

    def strip(text):
        records = [json.loads(line) for line in text.splitlines()]
        for record in records:
            record.get("provenance", {}).pop("evaluated_at", None)
        return records

    assert len(strip(one.stdout)) == count - 1  # every line but the blank one: equal, and not equally empty
    assert strip(one.stdout) == strip(two.stdout)


def test_batch_of_valid_lines_exits_0_and_can_show_progress(tmp_path):
    source = tmp_path / "ok.ndjson"
    source.write_text('{"age_years": 3}\n{"age_years": 4}\n')
    result = run("batch", source, "--progress", "always")
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 2
    assert "2/2 lines" in result.stderr


def test_bad_usage_is_explained():
    result = run("batch")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "required: IN" in result.stderr and "see: imt-cds batch --help" in result.stderr
    negative = run("batch", "x", "--jobs", "-1")
    assert negative.returncode == 2 and negative.stdout == ""
    assert "argument --jobs: --jobs must be 0 (all cores) or more" in negative.stderr
    word = run("batch", "x", "--jobs", "two")
    assert word.returncode == 2 and "argument --jobs: --jobs needs a whole number, got 'two'" in word.stderr


def test_jobs_zero_means_every_core():
    from imt_cds.cli.common import jobs

    assert (jobs("0"), jobs("1"), jobs("3")) == (os.cpu_count() or 1, 1, 3)


def test_batch_with_several_processes_writes_to_standard_output_in_order(tmp_path):
    import random

    from strategies import random_patient

    rng = random.Random(5)
    patients = [random_patient(rng) for _ in range(700)]  # > 256 kB of input: several work units
    source = tmp_path / "many.ndjson"
    source.write_text("".join(json.dumps(p) + "\n" for p in patients))
    two = run("batch", source, "--jobs", "2", "--progress", "never")
    one = run("batch", source, "--progress", "never")
    assert two.returncode == one.returncode == 0, two.stderr

    def documents(text):
        records = [json.loads(line) for line in text.splitlines()]
        for record in records:
            del record["provenance"]["evaluated_at"]
        return records

    assert len(documents(two.stdout)) == 700
    assert documents(two.stdout) == documents(one.stdout)
