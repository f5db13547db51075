"""The audit trail on the command line, through the installed console script: ``--audit DB`` on evaluate and batch,
``audit list/show/verify/head/replay/export``, ``report``; clear one-line errors with the documented exit codes."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from audit_support import disable_append_only, new_database, raw_sql, running_postgres
from rulebook_copies import copy_rulebook, set_parameters

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.json"))
SCRIPT = Path(sys.executable).with_name("imt-cds")
ALK = ROOT / "examples" / "02_alk_positive_unresectable.json"


def run(*args, stdin=None, cwd=ROOT):
    return subprocess.run([str(SCRIPT), *map(str, args)], input=stdin, capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def ok(*args, **kwargs):
    result = run(*args, **kwargs)
    assert result.returncode == 0, result.stderr
    return result


def assert_one_line_error(result, code, *words):
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    for word in words:
        assert word in result.stderr


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """The examples recorded in order (by one batch run); for tests that only read."""
    directory = tmp_path_factory.mktemp("audit")
    source = directory / "examples.ndjson"
    source.write_text("".join(json.dumps(json.loads(p.read_text())) + "\n" for p in EXAMPLES))
    ok("batch", source, "-o", directory / "out.ndjson", "--audit", directory / "audit.db")
    return directory / "audit.db"


@pytest.fixture
def own_db(db, tmp_path):
    """A private copy of the shared trail, for tests that tamper with it."""
    path = tmp_path / "audit.db"
    source, target = sqlite3.connect(db), sqlite3.connect(path)
    source.backup(target)
    source.close()
    target.close()
    return path


def test_help_lists_the_audit_and_report_commands():
    text = ok("--help").stdout
    assert "audit" in text and "report" in text
    assert "--audit DB" in ok("evaluate", "--help").stdout and "--audit DB" in ok("batch", "--help").stdout
    for command in ("list", "show", "verify", "head", "replay", "export"):
        assert ok("audit", command, "--help").stdout.startswith("usage:")


def test_evaluate_with_audit_prints_the_same_and_names_the_record(tmp_path):
    path = tmp_path / "audit.db"
    plain = ok("evaluate", ALK, "--format", "json").stdout
    audited = ok("evaluate", ALK, "--format", "json", "--audit", path)
    def strip(text):
        return re.sub(r'"evaluated_at": "[^"]+"', "", text)

    assert strip(audited.stdout) == strip(plain)
    (record_id,) = re.findall(r"recorded as audit record ([0-9a-f-]{36}) in ", audited.stderr)
    listed = json.loads(ok("audit", "list", "--db", path, "--format", "json").stdout)
    assert [r["id"] for r in listed] == [record_id]


def test_audit_show_prints_the_consult_note_that_evaluate_printed(tmp_path):
    path = tmp_path / "audit.db"
    for example in (EXAMPLES[1], EXAMPLES[4], EXAMPLES[5]):  # with a withheld finding, with many data requests
        note = ok("evaluate", example, "--audit", path).stdout
        shown = ok("audit", "show", "last", "--db", path)
        assert shown.stdout == note, example.name  # exactly, as the README promises: nothing added
        (record_id,) = re.findall(r"audit record #\d+, id ([0-9a-f-]{36}), recorded .*, hash [0-9a-f]{64}$",
                                  shown.stderr.strip())
        assert record_id == json.loads(ok("audit", "list", "--db", path, "--format", "json", "--last", "1")
                                       .stdout)[0]["id"]
    record = json.loads(ok("audit", "show", "1", "--db", path, "--format", "json").stdout)
    assert record["seq"] == 1 and record["input"]["patient_id"] == record["patient_id"]
    assert record["assessment"]["schema"] == "imt-cds/assessment/1"


def test_audit_list_columns_line_up_whatever_the_cells_hold(tmp_path):
    path = tmp_path / "audit.db"
    long_id = json.loads(ALK.read_text()) | {"patient_id": "P-" + "9" * 40}
    for source in (EXAMPLES[0], ALK, json.dumps(long_id), json.dumps({"age_years": 8})):
        if isinstance(source, Path):
            ok("evaluate", source, "--audit", path, "--audit-no-input")
        else:
            ok("evaluate", "-", "--audit", path, stdin=source)
    header, *rows = ok("audit", "list", "--db", path).stdout.splitlines()
    assert len(rows) == 4
    starts = [header.index(title) for title in ("recorded at", " id ", "patient", "rulebook", "findings")]
    starts[1] += 1
    for row in rows:
        for start in starts:  # every cell starts where its title does, after the two spaces between columns
            assert row[start - 2:start] == "  " and row[start] != " ", (start, row)
    assert "P-" + "9" * 40 in rows[2] and rows[3].split()[3] == "-"  # a record without a patient id


def test_audit_list_shows_one_line_per_record_and_filters(db):
    lines = ok("audit", "list", "--db", db).stdout.splitlines()
    assert len(lines) == 1 + len(EXAMPLES)
    assert "EX-05-contradictory" in lines[5] and "1 withheld" in lines[5]
    data = json.loads(ok("audit", "list", "--db", db, "--format", "json", "--last", "2").stdout)
    assert [r["seq"] for r in data] == [len(EXAMPLES) - 1, len(EXAMPLES)]
    only = json.loads(ok("audit", "list", "--db", db, "--format", "json", "--patient", "EX-02-alk-unresectable").stdout)
    assert [r["seq"] for r in only] == [2] and "REC_CRIZOTINIB_ALK" in only[0]["recommendations"]


def test_verify_and_head_agree_and_an_anchor_is_checked(db):
    head = ok("audit", "head", "--db", db).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", head)
    verified = ok("audit", "verify", "--db", db, "--anchor", head).stdout
    assert f"intact: {len(EXAMPLES)} records" in verified and head in verified
    report = json.loads(ok("audit", "verify", "--db", db, "--format", "json").stdout)
    assert report["ok"] and report["head"] == head and report["first_bad_record"] is None
    assert json.loads(ok("audit", "head", "--db", db, "--format", "json").stdout)["seq"] == len(EXAMPLES)


def test_verify_exits_1_and_names_the_first_bad_record(own_db):
    disable_append_only(own_db)
    (record_id,) = raw_sql(own_db, "SELECT id FROM audit_records WHERE seq = 3")[0][0]
    raw_sql(own_db, "UPDATE audit_records SET body = replace(body, 'ROS1', 'ALK') WHERE seq = 3")
    result = run("audit", "verify", "--db", own_db)
    assert result.returncode == 1
    assert f"BROKEN at record #3 (id {record_id})" in result.stdout and "modified" in result.stdout
    raw_sql(own_db, "DELETE FROM audit_records WHERE seq = 3")
    result = run("audit", "verify", "--db", own_db, "--format", "json")
    assert result.returncode == 1
    assert json.loads(result.stdout)["first_bad_record"]["seq"] == 4


def test_a_truncated_trail_fails_verification_against_its_anchor(own_db):
    head = ok("audit", "head", "--db", own_db).stdout.strip()
    disable_append_only(own_db)
    raw_sql(own_db, f"DELETE FROM audit_records WHERE seq = {len(EXAMPLES)}")
    result = run("audit", "verify", "--db", own_db, "--anchor", head)
    assert result.returncode == 1 and "anchored hash" in result.stdout


def test_replay_is_identical_with_the_archived_rulebook(db):
    for ref in ("1", "5", "last"):
        result = ok("audit", "replay", ref, "--db", db)
        assert "replayed with its archived rulebook imt" in result.stdout and "identical" in result.stdout


def test_replay_with_the_current_rulebook_shows_what_would_differ(db, tmp_path):
    current = copy_rulebook(tmp_path)
    set_parameters(current, {"size_risk_threshold_cm": 20})
    result = run("audit", "replay", "2", "--db", db, "--with-current", "--rules", current)
    assert result.returncode == 1, result.stderr
    assert "context: provenance.parameters.size_risk_threshold_cm: recorded 3.9; current 20" in result.stdout
    assert "risk_flags[RISK_TUMOR_SIZE_ABOVE_COHORT_MEDIAN]: only in the record" in result.stdout
    data = json.loads(run("audit", "replay", "2", "--db", db, "--with-current", "--rules", current,
                          "--format", "json").stdout)
    assert not data["identical"] and data["with_current"]
    assert ok("audit", "replay", "1", "--db", db, "--with-current").stdout.count("identical") == 1


def test_batch_with_audit_records_every_valid_line_from_every_worker(tmp_path):
    lines = [json.dumps(json.loads(p.read_text())) for p in EXAMPLES] * 3
    lines.insert(4, '{"age_years": -1}')
    source = tmp_path / "in.ndjson"
    source.write_text("\n".join(lines) + "\n")
    path = tmp_path / "audit.db"
    result = run("batch", source, "-o", tmp_path / "out.ndjson", "--jobs", "2", "--audit", path)
    assert result.returncode == 3, result.stderr  # one invalid line: not recorded
    records = json.loads(ok("audit", "list", "--db", path, "--format", "json").stdout)
    assert len(records) == 3 * len(EXAMPLES)
    assert sorted(r["patient_id"] for r in records) == sorted(json.loads(p.read_text())["patient_id"]
                                                              for p in EXAMPLES * 3)
    ok("audit", "verify", "--db", path)


def test_records_without_their_input_list_and_show_but_do_not_replay(tmp_path):
    path = tmp_path / "audit.db"
    ok("evaluate", ALK, "--audit", path, "--audit-no-input")
    assert "[input: sha256 only]" in ok("audit", "list", "--db", path).stdout
    assert "Facts: not stored" in ok("audit", "show", "1", "--db", path).stdout
    assert_one_line_error(run("audit", "replay", "1", "--db", path), 1, "audit_replay_impossible", "store_input")


def test_export_writes_a_fhir_bundle(db, tmp_path):
    out = tmp_path / "bundle.json"
    ok("audit", "export", "last", "--db", db, "--format", "fhir", "-o", out)
    bundle = json.loads(out.read_text())
    assert bundle["resourceType"] == "Bundle" and bundle["entry"][0]["resource"]["resourceType"] == "GuidanceResponse"
    assert run("audit", "export", "last", "--db", db).returncode == 2  # --format is required


def test_report_for_a_patient_and_for_a_record(db, tmp_path):
    ok("report", ALK, "--html", tmp_path / "patient.html")
    ok("report", "--audit-id", "2", "--db", db, "--html", tmp_path / "record.html")
    for name in ("patient.html", "record.html"):
        page = (tmp_path / name).read_text()
        assert "REC_CRIZOTINIB_ALK" in page and "<svg" in page
    assert "audit record #2" in (tmp_path / "record.html").read_text()


@pytest.mark.parametrize(("args", "words"), [
    (("report", "--html", "x.html"), "report on what? give a patient file (or - for standard input), or --audit-id"),
    (("report", str(ALK), "--audit-id", "1", "--db", "audit.db", "--html", "x.html"), "not both"),
    (("report", "--audit-id", "1", "--html", "x.html"), "--audit-id needs --db DB"),
])
def test_report_needs_exactly_one_source(args, words, tmp_path):
    result = run(*args, cwd=tmp_path)
    assert_one_line_error(result, 2, words)
    if "not both" not in words:  # the complaint is what is missing, never that two were given
        assert "not both" not in result.stderr


def test_report_on_an_invalid_patient_exits_2_with_every_problem(tmp_path):
    result = run("report", "-", "--html", tmp_path / "x.html", stdin='{"age_years": 200, "tumour": {}}')
    assert result.returncode == 2 and "age_years" in result.stderr and "tumour" in result.stderr
    assert not (tmp_path / "x.html").exists()


# --- errors -------------------------------------------------------------------------------------------------------


def test_a_missing_database_is_invalid_usage_and_is_not_created(tmp_path):
    missing = tmp_path / "nothing.db"
    for command in (("list",), ("verify",), ("head",), ("show", "1"), ("replay", "1"), ("export", "1", "--format",
                                                                                           "fhir")):
        assert_one_line_error(run("audit", *command, "--db", missing), 2, "audit_store_invalid", str(missing))
    assert not missing.exists()


def test_a_file_that_is_not_a_database_is_invalid_usage(tmp_path):
    junk = tmp_path / "notes.db"
    junk.write_text("these are not the records you are looking for\n" * 50)
    assert_one_line_error(run("audit", "list", "--db", junk), 2, "not a usable audit database")
    result = run("evaluate", ALK, "--audit", junk)
    assert_one_line_error(result, 2, "not a usable audit database")
    assert result.stdout == ""  # nothing is output that was not recorded
    assert_one_line_error(run("batch", tmp_path / "whatever.ndjson", "--audit", junk), 2, "audit_store_invalid")


def test_an_unknown_record_is_invalid_usage(db):
    assert_one_line_error(run("audit", "show", "99", "--db", db), 2, "no audit record #99")
    assert_one_line_error(run("audit", "replay", "0123456789abcdef", "--db", db), 2, "no audit record with id")
    assert_one_line_error(run("report", "--audit-id", "77", "--db", db, "--html", db.with_suffix(".html")), 2)


def test_a_missing_archive_fails_replay_and_verify(own_db):
    disable_append_only(own_db)
    raw_sql(own_db, "DELETE FROM audit_rulebook_files", "DELETE FROM audit_rulebooks")
    assert_one_line_error(run("audit", "replay", "1", "--db", own_db), 1, "audit_archive_missing")
    result = run("audit", "verify", "--db", own_db)
    assert result.returncode == 1 and "not in the archive" in result.stdout


def test_replay_rules_without_with_current_is_invalid_usage(db):
    assert_one_line_error(run("audit", "replay", "1", "--db", db, "--rules", ROOT / "rules"), 2, "--with-current")


def test_the_same_commands_work_on_a_postgresql_store():
    with running_postgres() as server:
        target = new_database(server)
        for example in EXAMPLES[:3]:
            ok("evaluate", example, "--audit", target)
        assert "intact: 3 records" in ok("audit", "verify", "--db", target).stdout
        assert "identical" in ok("audit", "replay", "2", "--db", target).stdout
        shown = ok("audit", "show", "last", "--db", target).stdout
        assert shown.startswith("IMT decision support - assessment of EX-03")
        listed = ok("audit", "list", "--db", target).stdout
        assert listed.count("imt 0.2.7") == 3
        disable_append_only(target)
        raw_sql(target, "DELETE FROM audit_records WHERE seq = 2")
        result = run("audit", "verify", "--db", target)
        assert result.returncode == 1 and "BROKEN at record #3" in result.stdout and "#2 is missing" in result.stdout
