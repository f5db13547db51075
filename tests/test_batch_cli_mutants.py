"""What an integration engineer reads of `imt-cds batch`, line for line, run in this process, and the records it
writes for each kind of line.

test_cli.py and test_cli_wording.py run the command through the installed script and look for fragments of its
summary (`"2 lines: 2 evaluated" in stderr`); test_batch.py drives ``run_batch`` (the pool, dying workers, the audit
trail). These compare the command's whole standard error and the records it writes, so that a changed phrase, a lost
count or a record with a field too many or too few is seen; in process, mutation testing's coverage sees which test
runs which line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import orjson
import pytest
from cli_support import command

from imt_cds import Engine
from imt_cds.cli import batch
from imt_cds.cli.batch import BatchPathError, check_paths, evaluate_line, run_batch

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.json"))


def ndjson(tmp_path: Path, lines: list[str], name: str = "in.ndjson") -> Path:
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines))
    return path


def example_lines(count: int) -> list[str]:
    return [json.dumps(json.loads(path.read_text())) for path in EXAMPLES[:count]]


# --- the command's summary and exit status --------------------------------------------------------------------------


def test_a_run_of_valid_lines_says_how_many_and_exits_0(capsys, tmp_path):
    source, out = ndjson(tmp_path, example_lines(2)), tmp_path / "out.ndjson"
    assert command(capsys, "batch", source, "-o", out) == (0, "", "imt-cds batch: 2 lines: 2 evaluated, 0 invalid\n")
    assert len(out.read_text().splitlines()) == 2
    one = ndjson(tmp_path, example_lines(1), "one.ndjson")
    assert command(capsys, "batch", one, "-o", out) == (0, "", "imt-cds batch: 1 line: 1 evaluated, 0 invalid\n")


def test_batch_defaults_to_one_job_and_takes_each_progress_setting(capsys, tmp_path):
    from imt_cds.cli.main import _parser

    assert _parser().parse_args(["batch", "in.ndjson"]).jobs == 1
    source, out = ndjson(tmp_path, example_lines(1)), tmp_path / "out.ndjson"
    for setting in ("auto", "never"):  # (standard error is not a terminal here: auto draws nothing)
        assert command(capsys, "batch", source, "-o", out, "--progress", setting) == (
            0, "", "imt-cds batch: 1 line: 1 evaluated, 0 invalid\n")


def test_the_audit_store_is_checked_first_and_keeps_inputs_unless_told_not_to(capsys, tmp_path):
    from imt_cds.audit import open_store

    source, out = ndjson(tmp_path, example_lines(2)), tmp_path / "out.ndjson"
    missing = tmp_path / "no" / "audit.db"
    status, _, err = command(capsys, "batch", source, "-o", out, "--audit", missing)
    assert status == 2 and str(missing) in err and not out.exists()
    for name, option, kept in (("kept", (), True), ("hashed", ("--audit-no-input",), False)):
        db = tmp_path / f"{name}.db"
        assert command(capsys, "batch", source, "-o", out, "--audit", db, *option)[0] == 0
        with open_store(str(db)) as store:
            assert [record.input is not None for record in store.records()] == [kept, kept]


def test_a_run_with_invalid_lines_counts_them_and_exits_3(capsys, tmp_path):
    source = ndjson(tmp_path, [*example_lines(2), '{"age_years": -4}', "", "not json"])
    out = tmp_path / "out.ndjson"
    assert command(capsys, "batch", source, "-o", out) == (3, "", "imt-cds batch: 4 lines: 2 evaluated, 2 invalid\n")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r.get("line") for r in records] == [None, None, 3, 5]  # a full document names no line; blank skipped
    assert records[2]["errors"][0]["path"] == "age_years"


def test_standard_output_gets_the_records_when_no_output_is_given(capsys, tmp_path):
    source = ndjson(tmp_path, example_lines(2))
    status, out, err = command(capsys, "batch", source, "--detail", "codes")
    assert (status, err) == (0, "imt-cds batch: 2 lines: 2 evaluated, 0 invalid\n")
    engine = Engine()
    assert [json.loads(line) for line in out.splitlines()] == [
        {"line": n, "patient_id": a.patient_id, "codes": [f.code for f in a.findings]}
        for n, a in enumerate((engine.evaluate(json.loads(line)) for line in example_lines(2)), 1)]


def test_a_large_run_of_full_documents_suggests_the_lighter_details(capsys, tmp_path, monkeypatch):
    lines = example_lines(len(EXAMPLES)) * 6  # between a half and one MiB of documents: the note says 1 MiB
    source, out = ndjson(tmp_path, lines), tmp_path / "out.ndjson"
    monkeypatch.setattr(batch, "_LARGE_BATCH_OUTPUT", 100_000)  # (100 MiB in use: too large for a test)
    status, _, err = command(capsys, "batch", source, "-o", out)
    written = out.stat().st_size
    assert status == 0 and 2**19 < written < 2**20
    assert err.splitlines() == [
        f"imt-cds batch: {len(lines)} lines: {len(lines)} evaluated, 0 invalid",
        "imt-cds batch: note: wrote 1 MiB of full assessments; --detail summary or --detail codes write a small "
        "fraction of that"]
    monkeypatch.setattr(batch, "_LARGE_BATCH_OUTPUT", written)  # only past the limit
    assert command(capsys, "batch", source, "-o", out)[2].count("\n") == 1
    monkeypatch.setattr(batch, "_LARGE_BATCH_OUTPUT", 0)
    assert command(capsys, "batch", source, "-o", out, "--detail", "summary")[2].count("\n") == 1


# --- paths refused before anything is done ----------------------------------------------------------------------------


def test_paths_that_cannot_be_used_are_refused_in_one_line_with_exit_2(capsys, tmp_path):
    source = ndjson(tmp_path, example_lines(1))
    missing = tmp_path / "missing.ndjson"
    assert command(capsys, "batch", missing) == (
        2, "", f"imt-cds batch: error: cannot read the input {missing}: No such file or directory\n")
    assert command(capsys, "batch", tmp_path) == (
        2, "", f"imt-cds batch: error: cannot read the input {tmp_path}: it is a directory\n")
    nowhere = tmp_path / "no" / "out.ndjson"
    assert command(capsys, "batch", source, "-o", nowhere) == (
        2, "", f"imt-cds batch: error: cannot write the output {nowhere}: folder {nowhere.parent} does not exist\n")
    assert command(capsys, "batch", source, "-o", tmp_path) == (
        2, "", f"imt-cds batch: error: cannot write the output {tmp_path}: it is a directory\n")
    assert command(capsys, "batch", source, "-o", source) == (
        2, "", f"imt-cds batch: error: the output {source} is the input {source}: writing it would destroy the "
               "input; choose another output file\n")
    assert source.read_text() == example_lines(1)[0] + "\n"


def test_the_path_error_has_its_code_for_callers():
    assert BatchPathError.code == "batch_path"
    with pytest.raises(BatchPathError) as caught:
        check_paths("/nonexistent/in.ndjson", None)
    assert caught.value.code == "batch_path"


def test_an_unknown_detail_is_refused_by_the_library(tmp_path):
    source = ndjson(tmp_path, example_lines(1))
    with pytest.raises(ValueError) as caught:
        run_batch(str(source), str(tmp_path / "out"), detail="all")  # type: ignore[arg-type]
    assert str(caught.value) == "detail must be one of full, summary, codes, got 'all'"
    assert not (tmp_path / "out").exists()


# --- one line's record ------------------------------------------------------------------------------------------------


def test_each_detail_writes_exactly_its_fields():
    line = example_lines(1)[0].encode()
    assessment = Engine().evaluate(json.loads(line))
    codes = [f.code for f in assessment.findings]
    full, status, evaluated = evaluate_line(7, line)
    assert status == batch.OK and evaluated is not None
    document = orjson.loads(full)
    del document["provenance"]["evaluated_at"]
    expected = assessment.to_dict()
    del expected["provenance"]["evaluated_at"]
    assert document == expected
    assert orjson.loads(evaluate_line(7, line, detail="codes")[0]) == {
        "line": 7, "patient_id": assessment.patient_id, "codes": codes}
    p = assessment.provenance
    assert orjson.loads(evaluate_line(7, line, detail="summary")[0]) == {
        "line": 7, "patient_id": assessment.patient_id, "codes": codes,
        "kinds": {f.code: f.kind for f in assessment.findings},
        "rulebook": {"name": p.rulebook_name, "version": p.rulebook_version, "sha256": p.rulebook_sha256},
        "input_sha256": p.input_sha256}


def test_a_line_that_is_not_valid_gets_its_errors_and_no_assessment():
    record, status, assessment = evaluate_line(4, b'{"age_years": -4}')
    assert (status, assessment) == (batch.INVALID, None)
    (error,) = orjson.loads(record)["errors"]
    assert orjson.loads(record)["line"] == 4 and error["path"] == "age_years" and error["value"] == -4
    record, status, _ = evaluate_line(9, b"\xff not text")
    assert status == batch.INVALID and orjson.loads(record)["line"] == 9


# --- a line whose evaluation fails: its record says why, and the run goes on ----------------------------------------


class _EngineFailingOn:
    """Stands in for the engine batch evaluates with: raises ``error`` for the patient aged ``age``, evaluates every
    other one with the real engine (the batch's handling of a failure is what is tested, not the engine)."""

    def __init__(self, age: float, error: Exception):
        self.age, self.error, self.engine = age, error, Engine()
        self.rulebook = self.engine.rulebook

    def evaluate(self, facts):  # type: ignore[no-untyped-def]
        if facts.age_years == self.age:
            raise self.error
        return self.engine.evaluate(facts)


@pytest.mark.parametrize(("error", "message"), [
    (batch.EngineError("the session was lost"), "the rules engine failed on this line (engine_failure): the session "
                                                "was lost"),
    (KeyError("molecular"), "internal error on this line: KeyError: 'molecular'"),
])
def test_a_line_whose_evaluation_fails_gets_a_failure_record_and_is_counted(capsys, tmp_path, monkeypatch, error,
                                                                          message):
    monkeypatch.setattr(batch, "_engine", lambda rules: _EngineFailingOn(7, error))
    record, status, assessment = evaluate_line(2, b'{"age_years": 7}')
    assert (orjson.loads(record), status, assessment) == (
        {"line": 2, "errors": [{"path": "", "message": message, "value": None}]}, batch.FAILED, None)
    source, out = ndjson(tmp_path, ['{"age_years": 6}', '{"age_years": 7}', "{"]), tmp_path / "out.ndjson"
    assert command(capsys, "batch", source, "-o", out, "--detail", "codes") == (
        3, "", "imt-cds batch: 3 lines: 1 evaluated, 1 invalid, 1 failed\n")
    assert [json.loads(line).get("errors", [{}])[0].get("message") for line in out.read_text().splitlines()][1] == \
        message


def test_a_line_that_cannot_even_be_read_says_so(monkeypatch):
    from imt_cds.core import validation

    def unreadable(text):  # type: ignore[no-untyped-def]
        raise MemoryError("no room for this line")

    monkeypatch.setattr(validation, "parse_facts_json", unreadable)
    record, status, _ = evaluate_line(5, b'{"age_years": 7}')
    assert status == batch.INVALID
    assert orjson.loads(record) == {"line": 5, "errors": [
        {"path": "", "message": "could not read this line: MemoryError: no room for this line", "value": None}]}


def test_line_ends_are_cut_exactly_and_a_last_line_without_a_newline_is_read(capsys, tmp_path):
    # A Windows line end is a line end; anything else after the JSON is part of the line (and makes it invalid);
    # a last line of one character without a newline is still a line.
    source = tmp_path / "in.ndjson"
    source.write_bytes(b'{"age_years": 5}\r\n{"age_years": 5}X\n1')
    out = tmp_path / "out.ndjson"
    assert command(capsys, "batch", source, "-o", out, "--detail", "codes") == (
        3, "", "imt-cds batch: 3 lines: 1 evaluated, 2 invalid\n")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["line"] for r in records] == [1, 2, 3] and "codes" in records[0]
    assert records[1]["errors"][0]["message"].startswith("malformed JSON")
    assert records[2]["errors"] == [{"path": "", "message": "expected an object with patient facts, got a number",
                                     "value": 1}]


# --- the progress bar ---------------------------------------------------------------------------------------------


def test_the_clock_of_the_progress_bar_past_an_hour():
    bar = batch._Progress(total=10, enabled=False)
    bar.done = 10
    assert bar.line(4200.4).endswith("done in 1:10:00")
    assert bar.line(7199.6).endswith("done in 2:00:00")
    bar.done = 5
    assert bar.line(3725.0).endswith("ETA 1:02:05")


def test_the_bar_counts_every_unit_and_every_line_of_the_file(capsys, tmp_path):
    # several work units (a small chunk), and a last line without a newline: the bar ends at the file's line count
    lines = [f'{{"age_years": {age}}}' for age in range(3, 9)]
    source = tmp_path / "in.ndjson"
    source.write_text("\n".join(lines))
    capsys.readouterr()
    summary = run_batch(str(source), str(tmp_path / "out.ndjson"), progress="always", chunk_bytes=40,
                        detail="codes")
    assert summary.total == summary.evaluated == 6
    drawn = capsys.readouterr().err
    assert drawn.endswith("\n") and drawn.count("\n") == 1
    last = drawn.rstrip("\n").split("\r")[-1]
    assert last.startswith("[" + "#" * 30 + "] 6/6 lines, ") and last.endswith(", done in 0:00")


def test_without_progress_nothing_is_drawn(capsys, tmp_path):
    source = ndjson(tmp_path, example_lines(3))
    capsys.readouterr()
    run_batch(str(source), str(tmp_path / "out.ndjson"), progress="never", chunk_bytes=40, detail="codes")
    assert capsys.readouterr().err == ""


def test_standard_input_may_be_written_over_an_existing_output(capsys, tmp_path, monkeypatch):
    import io

    out = tmp_path / "out.ndjson"
    out.write_text("yesterday's run\n")
    check_paths("-", str(out))  # standard input is never the output file
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO("\n".join(example_lines(2)).encode())))
    assert command(capsys, "batch", "-", "-o", out, "--detail", "codes") == (
        0, "", "imt-cds batch: 2 lines: 2 evaluated, 0 invalid\n")
    assert [json.loads(line)["line"] for line in out.read_text().splitlines()] == [1, 2]


def test_an_output_under_a_file_is_refused_with_the_system_s_words(capsys, tmp_path):
    source = ndjson(tmp_path, example_lines(1))
    under_a_file = source / "out.ndjson"
    assert command(capsys, "batch", source, "-o", under_a_file) == (
        2, "", f"imt-cds batch: error: cannot write the output {under_a_file}: Not a directory\n")


def test_the_audit_trail_keeps_each_input_unless_told_not_to(tmp_path):
    from imt_cds.audit import open_store

    source = ndjson(tmp_path, example_lines(2))
    for name, options, kept in (("kept", {}, True), ("hashed", {"audit_input": False}, False)):
        db = tmp_path / f"{name}.db"
        run_batch(str(source), str(tmp_path / f"{name}.ndjson"), audit=str(db), detail="codes", **options)
        with open_store(str(db)) as store:
            records = store.records()
        assert len(records) == 2
        assert [record.input is not None for record in records] == [kept, kept]


def test_the_rulebook_given_is_the_one_evaluated_with(capsys, tmp_path):
    from rulebook_copies import add_flag, copy_rulebook

    directory = copy_rulebook(tmp_path)
    add_flag(directory, "{fact: age_years, gt: 50}", [({"age_years": 60}, True), ({}, False)])
    source = ndjson(tmp_path, ['{"age_years": 60}'])
    out = tmp_path / "out.ndjson"
    assert command(capsys, "batch", source, "-o", out, "--detail", "codes", "--rules", directory)[0] == 0
    assert "FLAG_ADDED_BY_TEST" in json.loads(out.read_text())["codes"]
    summary = run_batch(str(source), str(out), rules=directory, detail="summary")
    record = json.loads(out.read_text())
    assert summary.evaluated == 1 and "FLAG_ADDED_BY_TEST" in record["codes"]
    assert record["rulebook"]["sha256"] != Engine().rulebook.sha256


def test_an_input_that_is_not_a_regular_file_is_read_once(capsys, tmp_path):
    # A named pipe (as `<(zcat patients.ndjson.gz)` gives) can be read once and has no size: it is spooled first.
    import threading

    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    text = "".join(line + "\n" for line in example_lines(3)).encode()
    writer = threading.Thread(target=lambda: fifo.write_bytes(text), daemon=True)
    writer.start()
    out = tmp_path / "out.ndjson"
    try:
        result = command(capsys, "batch", fifo, "-o", out, "--detail", "codes")
    finally:
        if writer.is_alive():  # the pipe was never read: read it here, so that the writer ends
            fifo.read_bytes()
        writer.join(timeout=30)
    assert result == (0, "", "imt-cds batch: 3 lines: 3 evaluated, 0 invalid\n")
    assert [json.loads(line)["line"] for line in out.read_text().splitlines()] == [1, 2, 3]


def test_one_job_evaluates_in_this_process(tmp_path):
    # (no worker process to start or to lose: what --jobs 1, the default, promises)
    source = ndjson(tmp_path, example_lines(3))
    seen: list[tuple[int, int]] = []
    run_batch(str(source), str(tmp_path / "out.ndjson"), jobs=1, detail="codes",
              _before_line=lambda number, text: seen.append((number, os.getpid())))
    assert seen == [(1, os.getpid()), (2, os.getpid()), (3, os.getpid())]


def test_the_bytes_written_are_counted_over_every_unit(tmp_path):
    source, out = ndjson(tmp_path, example_lines(4)), tmp_path / "out.ndjson"
    summary = run_batch(str(source), str(out), chunk_bytes=40)  # a unit a line
    assert summary.output_bytes == out.stat().st_size > 0


@pytest.mark.parametrize("to_file", [True, False])
def test_when_recording_fails_the_error_says_where_the_output_stops(capsys, tmp_path, to_file):
    import sqlite3

    from imt_cds.audit import open_store
    from imt_cds.core.errors import AuditError

    db = tmp_path / "audit.db"
    open_store(str(db)).close()
    with sqlite3.connect(db) as connection:  # every record refused, as a full disk would
        connection.execute("CREATE TRIGGER refuse BEFORE INSERT ON audit_records BEGIN SELECT RAISE(ABORT, 'disk "
                           "full'); END")
    connection.close()
    source = ndjson(tmp_path, ['{"age_years": -3}', *example_lines(2)])
    out = tmp_path / "out.ndjson"
    with pytest.raises(AuditError) as caught:
        run_batch(str(source), str(out) if to_file else None, audit=str(db), detail="codes")
    message = str(caught.value)
    assert message.startswith("line 2 could not be recorded in the audit trail (") and "disk full" in message
    if to_file:  # cut back to the line before: only the invalid line 1, which has nothing to record
        assert message.endswith("); the run stopped and the output ends before it")
        assert [json.loads(line)["line"] for line in out.read_text().splitlines()] == [1]
    else:  # standard output cannot be cut back
        assert message.endswith("); the run stopped and the output may hold lines from it on")
        assert [json.loads(line)["line"] for line in capsys.readouterr().out.splitlines()] == [1, 2, 3]
