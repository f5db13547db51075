"""Tampered data never crashes ``verify`` or ``replay`` (they name the bad record or the altered archive instead), the
archive keeps exactly the files a rulebook was built from, and ``evaluate --audit`` still fails closed. On SQLite and
on a real PostgreSQL server (the ``target`` fixture)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import orjson
import pytest
from audit_support import disable_append_only, raw_sql, recorded_trail, verify_store
from rulebook_copies import copy_rulebook

from imt_cds import Engine, load_rulebook
from imt_cds.core._resources import seeds_dir
from imt_cds.audit import AuditStoreError, RecordNotFoundError, ReplayError, open_store, replay
from imt_cds.audit.record import canonical_bytes
from imt_cds.audit.replay import compare_documents

ROOT = Path(__file__).resolve().parents[1]
PATIENTS = [json.loads(p.read_text()) for p in sorted((ROOT / "examples").glob("*.json"))]


@pytest.fixture
def trail(target, rulebook):
    """Three recorded evaluations, the append-only triggers gone; returns (target, records as recorded)."""
    return target, recorded_trail(target, rulebook, PATIENTS[:3])


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _forge(target: str, seq: int, content: object) -> None:
    """Replace a record's body with ``content`` and recompute its hash, as a careful forger would."""
    body = canonical_bytes(content)  # type: ignore[arg-type]
    raw_sql(target, f"UPDATE audit_records SET body = {_quoted(body.decode())}, "
                    f"hash = '{hashlib.sha256(body).hexdigest()}' WHERE seq = {seq}")


def _content(target: str, seq: int) -> dict:
    return orjson.loads(raw_sql(target, f"SELECT body FROM audit_records WHERE seq = {seq}")[0][0][0])


# --- B1: verify names the record, whatever shape a forger gave its content -----------------------------------------


@pytest.mark.parametrize("change, reason", [
    (lambda c: c.update(rulebook=None), "rulebook_sha256 column differs from its content (modified)"),
    (lambda c: c.update(rulebook=["sha256"]), "rulebook_sha256 column differs from its content (modified)"),
    (lambda c: c.update(rulebook="a rulebook"), "rulebook_sha256 column differs from its content (modified)"),
    (lambda c: c.update(rulebook={"sha256": 5}), "rulebook_sha256 column differs from its content (modified)"),
    (lambda c: c.update(input_json={"age_years": 8}), "stored input does not match its input_sha256"),
    (lambda c: c.update(input_sha256=None), "stored input does not match its input_sha256"),
], ids=["rulebook-null", "rulebook-list", "rulebook-string", "rulebook-sha256-number", "input-not-text",
        "input-sha256-null"])
def test_a_forged_record_of_any_shape_is_named_not_crashed_on(trail, change, reason):
    target, records = trail
    content = _content(target, 2)
    change(content)
    _forge(target, 2, content)
    report = verify_store(target)
    assert not report.ok
    assert (report.first_break.seq, report.first_break.id) == (2, records[1].id)
    assert reason in report.first_break.reason
    assert report.records == 1 and report.head == records[0].hash


def test_a_record_whose_content_is_not_an_object_is_named(trail):
    target, records = trail
    _forge(target, 2, [_content(target, 2)])
    report = verify_store(target)
    assert (report.first_break.seq, report.first_break.id) == (2, records[1].id)
    assert "not an imt-cds audit record" in report.first_break.reason


def test_a_record_without_its_input_field_is_not_a_crash(trail):
    target, records = trail
    content = _content(target, 2)
    del content["input_json"]
    _forge(target, 2, content)
    report = verify_store(target)  # record 2 is consistent in itself; the link of record 3 is what breaks
    assert (report.first_break.seq, report.first_break.id) == (3, records[2].id)


def test_the_cli_names_the_forged_record_instead_of_an_internal_error(trail, capsys):
    from imt_cds.cli.main import main

    target, records = trail
    content = _content(target, 2)
    content["rulebook"] = None
    _forge(target, 2, content)
    assert main(["audit", "verify", "--db", target]) == 1
    out, err = capsys.readouterr()
    assert f"audit trail BROKEN at record #2 (id {records[1].id})" in out
    assert "internal error" not in err


def test_replaying_a_forged_record_is_a_replay_error(trail):
    target, _ = trail
    content = _content(target, 2)
    content["rulebook"] = None
    _forge(target, 2, content)
    with open_store(target, create=False) as store, pytest.raises(ReplayError, match="not a well-formed"):
        replay(store, "2")


def test_comparing_malformed_documents_reports_differences_instead_of_crashing(engine):
    document = engine.evaluate(PATIENTS[4]).to_dict()
    malformed = {**document, "provenance": None, "suppressed": [{"finding": None}, {"finding": {"rule": 7}}, 3]}
    differences, context = compare_documents(malformed, document, with_current=True)
    assert differences and {d.path.split("[")[0].split(".")[0] for d in differences} >= {"provenance", "suppressed"}
    assert [c.path for c in context] == ["provenance.rulebook", "provenance.parameters"]


# --- the archive: tampered names and contents are reported, never raised -------------------------------------------


def test_archived_file_names_that_cannot_be_written_out_are_reported(trail):
    target, _ = trail
    raw_sql(target, "UPDATE audit_rulebook_files SET path = 'rulebook.yaml/parameters.yaml' "
                    "WHERE part = 'rules' AND path = 'parameters.yaml'")
    report = verify_store(target)
    assert report.first_break is None and not report.ok
    assert report.problems[0].startswith("rulebook archive: ")


def test_sqlite_values_of_the_wrong_type_in_the_archive_are_reported(tmp_path, rulebook):
    path = tmp_path / "audit.db"
    with open_store(path) as store:
        Engine(rulebook, audit=store).evaluate(PATIENTS[0])
    disable_append_only(path)
    # SQLite keeps any type in a BLOB column, and a blob in a TEXT column.
    raw_sql(path, "UPDATE audit_blobs SET content = 1.5 WHERE sha256 IN (SELECT blob_sha256 FROM "
                  "audit_rulebook_files WHERE path = 'parameters.yaml')",
            "UPDATE audit_rulebook_files SET part = CAST('rules' AS BLOB) WHERE path = 'rulebook.yaml'")
    report = verify_store(path)
    assert report.first_break is None and not report.ok
    assert report.problems[0].startswith("rulebook archive: ")


def test_a_seed_document_altered_into_invalid_utf8_is_reported_as_an_altered_archive(trail):
    # Passes once evidence.py reports a source document that is not UTF-8 as an EvidenceError.
    target, _ = trail
    seed_blobs = ("SELECT blob_sha256 FROM audit_rulebook_files WHERE part = 'seeds' AND path <> 'evidence.yaml'")
    if str(target).startswith("postgresql://"):
        raw_sql(target, f"UPDATE audit_blobs SET content = '\\xff'::bytea || content WHERE sha256 IN ({seed_blobs})")
    else:
        raw_sql(target, f"UPDATE audit_blobs SET content = CAST(x'ff' || content AS BLOB) "
                        f"WHERE sha256 IN ({seed_blobs})")
    report = verify_store(target)
    assert report.first_break is None and not report.ok
    assert report.problems[0].startswith("rulebook archive: ")


# --- the archive holds exactly the files the rulebook was built from ------------------------------------------------


def test_the_archive_keeps_the_files_the_rulebook_was_built_from_and_nothing_else(target, tmp_path):
    rules = copy_rulebook(tmp_path)
    seeds = tmp_path / "seeds"
    shutil.copytree(seeds_dir(), seeds)
    # What a working copy collects besides the rulebook: none of it is part of the rulebook's sha256.
    (rules / "notes").mkdir()
    (rules / "notes" / "empty-group.yaml").write_text("rules: []\n")
    (rules / "rulebook.yaml~").write_text("editor backup\n")
    (seeds / ".git").mkdir()
    (seeds / ".git" / "config").write_text("[core]\n")
    (seeds / "evidence.yaml.orig").write_text("an old registry\n")
    rulebook = load_rulebook(rules, seeds)
    with open_store(target) as store:
        Engine(rulebook, audit=store).evaluate(PATIENTS[1])
        archive = store.rulebook_archive(rulebook.sha256)
        expected = ({("rules", "rulebook.yaml"), ("rules", "parameters.yaml")}
                    | {("rules", rule.file) for rule in rulebook.rules}
                    | {("rules", value_set.file) for value_set in rulebook.terminology.value_sets.values()}
                    | {("rules", "drugs.yaml")}
                    | {("seeds", "evidence.yaml")}
                    | {("seeds", source.file) for source in rulebook.evidence.sources.values()})
        assert set(archive.files) == expected
        assert all(archive.files[(part, name)] == ((rules if part == "rules" else seeds) / name).read_bytes()
                   for part, name in archive.files)
        assert archive.load().sha256 == rulebook.sha256
        shutil.rmtree(rules)
        shutil.rmtree(seeds)
        assert replay(store, "last").identical
        assert store.verify().ok


# --- record lookup: one query for the exact id and for a prefix ----------------------------------------------------


def test_an_id_that_is_a_prefix_of_another_id_is_still_found_exactly(target, rulebook):
    with open_store(target) as store:
        Engine(rulebook, audit=store).evaluate(PATIENTS[0])
        (record,) = store.records()
        longer = record.id + "-0"
        raw_sql(target, "INSERT INTO audit_records (seq, id, recorded_at, patient_id, rulebook_sha256, prev_hash, "
                        f"hash, body) VALUES (2, '{longer}', 'x', NULL, 'x', '{'1' * 64}', '{'2' * 64}', '{{}}')")
        assert store.record(record.id).hash == record.hash
        assert store.record(record.id.upper()).hash == record.hash
        with pytest.raises(RecordNotFoundError, match="ambiguous"):
            store.record(record.id[:8])


def test_a_record_refers_to_its_place_in_the_chain(tmp_path, rulebook):
    with open_store(tmp_path / "audit.db") as store:
        Engine(rulebook, audit=store).evaluate(PATIENTS[0])
        Engine(rulebook, audit=store).evaluate(PATIENTS[1])
        first, second = store.records()
    assert second.chain_ref() == {"id": second.id, "seq": 2, "hash": second.hash, "prev_hash": first.hash,
                                  "recorded_at": second.recorded_at}
    data = second.to_dict()
    assert data["input"] == second.input and data["assessment"] == second.assessment and data["hash"] == second.hash
    assert "input_json" not in data and "assessment_json" not in data


# --- evaluate --audit: recorded before it is output, nothing output when it cannot be recorded ---------------------


def test_evaluate_audit_outputs_nothing_when_the_record_cannot_be_written(tmp_path, monkeypatch, capsys):
    from imt_cds.audit.store import AuditStore
    from imt_cds.cli.main import main

    def refuse(self, assessment):
        raise AuditStoreError("cannot append to the audit database: disk full")

    path = tmp_path / "audit.db"
    patient = ROOT / "examples" / "02_alk_positive_unresectable.json"
    monkeypatch.setattr(AuditStore, "append", refuse)
    assert main(["evaluate", str(patient), "--audit", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "disk full" in err and "recorded as" not in err
    monkeypatch.undo()
    assert main(["evaluate", str(patient), "--audit", str(path), "--format", "json"]) == 0
    out, err = capsys.readouterr()
    with open_store(path, create=False) as store:
        (record,) = store.records()
    assert f"recorded as audit record {record.id} in {path}" in err
    assert json.loads(out)["provenance"]["input_sha256"] == record.input_sha256
