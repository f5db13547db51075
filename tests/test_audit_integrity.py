"""Whatever a tamperer with the database in hand changes, ``verify`` says where: every column of every record, and
every byte of the archived rulebook files (a comment too, which the rulebook sha256 does not cover). On SQLite and on
a real PostgreSQL server (the ``target`` fixture)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from audit_support import raw_sql, recorded_trail, verify_store
from rulebook_copies import copy_rulebook

from imt_cds import Engine, load_rulebook
from imt_cds.core._resources import seeds_dir
from imt_cds.audit import open_store
from imt_cds.audit.sql import COLUMNS

ROOT = Path(__file__).resolve().parents[1]
PATIENTS = [json.loads(p.read_text()) for p in sorted((ROOT / "examples").glob("*.json"))]
SCRIPT = Path(sys.executable).with_name("imt-cds")
RULE_FILE = "treatment/R23-upfront-surgical-resection.yaml"


@pytest.fixture
def trail(target, rulebook):
    """Three recorded evaluations, the append-only triggers gone; returns (target, records as recorded)."""
    return target, recorded_trail(target, rulebook, PATIENTS[:3])


def _is_postgres(target: str) -> bool:
    return str(target).startswith("postgresql://")


def _bytes_literal(target: str, data: bytes) -> str:
    return f"decode('{data.hex()}', 'hex')" if _is_postgres(target) else f"X'{data.hex()}'"


def _table_columns(target: str, table: str) -> list[str]:
    if _is_postgres(target):
        rows = raw_sql(target, "SELECT column_name FROM information_schema.columns WHERE table_name = "
                               f"'{table}' ORDER BY ordinal_position")[0]
        return [name for (name,) in rows]
    return [row[1] for row in raw_sql(target, f"PRAGMA table_info({table})")[0]]


# --- every column of the records table ----------------------------------------------------------------------------

# column -> (the new value, as SQL; the seq the break is reported at when record `victim` is edited)
EDITS = {
    "seq": ("0", lambda victim: 0),  # moves the record to the front: named there, by its content's id
    "id": ("'00000000-0000-4000-8000-000000000000'", lambda victim: victim),
    "recorded_at": ("'2020-01-01T00:00:00.000000Z'", lambda victim: victim),
    "patient_id": ("'SOMEONE-ELSE'", lambda victim: victim),
    "rulebook_sha256": (f"'{'a' * 64}'", lambda victim: victim),
    "prev_hash": (f"'{'b' * 64}'", lambda victim: victim),
    "hash": (f"'{'c' * 64}'", lambda victim: victim),
    "body": ("replace(body, '\"seq\":{victim}', '\"seq\":{victim} ')", lambda victim: victim),
}


def test_every_column_of_the_records_table_has_a_tampering_test(target):
    with open_store(target):
        pass
    assert _table_columns(target, "audit_records") == COLUMNS.split(", ") == list(EDITS)


@pytest.mark.parametrize("victim", [2, 3], ids=["middle-record", "newest-record"])
@pytest.mark.parametrize("column", list(EDITS))
def test_editing_any_column_of_a_record_fails_verify_naming_that_record(trail, column, victim):
    target, records = trail
    value, reported_seq = EDITS[column]
    raw_sql(target, f"UPDATE audit_records SET {column} = {value.format(victim=victim)} WHERE seq = {victim}")
    report = verify_store(target)
    assert not report.ok and report.first_break is not None
    bad = report.first_break
    assert bad.seq == reported_seq(victim), bad
    if column == "id":  # the id column is what was changed: the break quotes the stored row as it is now
        assert bad.id == "00000000-0000-4000-8000-000000000000" and "id column" in bad.reason
    else:
        assert bad.id == records[victim - 1].id, bad
    if column not in ("seq", "body"):
        assert column in bad.reason or "hash" in bad.reason, bad


# --- the archive, byte for byte -----------------------------------------------------------------------------------


def _blob_of(target: str, part: str, path: str) -> tuple[str, bytes]:
    ((digest, content),) = raw_sql(
        target, "SELECT b.sha256, b.content FROM audit_rulebook_files f JOIN audit_blobs b ON b.sha256 = "
                f"f.blob_sha256 WHERE f.part = '{part}' AND f.path = '{path}'")[0]
    return digest, bytes(content)


def test_a_comment_edited_in_an_archived_rule_file_fails_verify_naming_the_file(trail, rulebook):
    target, _ = trail
    digest, content = _blob_of(target, "rules", RULE_FILE)
    edited = content + b"# reviewed and approved by nobody in particular\n"
    raw_sql(target, f"UPDATE audit_blobs SET content = {_bytes_literal(target, edited)} WHERE sha256 = '{digest}'")
    report = verify_store(target)
    assert report.first_break is None and not report.ok
    assert any(f"file rules/{RULE_FILE} was altered" in problem for problem in report.problems), report.problems
    assert all(problem.startswith("rulebook archive: ") for problem in report.problems)
    assert rulebook.sha256[:12] in report.problems[0]


def test_a_comment_edited_in_the_archived_manifest_failsverify_store(trail):
    target, _ = trail
    digest, content = _blob_of(target, "rules", "rulebook.yaml")
    assert content.startswith(b"# The IMT rulebook")
    edited = content.replace(b"# The IMT rulebook", b"# An IMT rulebook", 1)
    raw_sql(target, f"UPDATE audit_blobs SET content = {_bytes_literal(target, edited)} WHERE sha256 = '{digest}'")
    report = verify_store(target)
    assert any("file rules/rulebook.yaml was altered" in problem for problem in report.problems), report.problems


def test_an_edited_file_stored_under_its_new_digest_fails_against_the_records(trail):
    # The careful forger: the edited bytes go in as a new blob under their own sha256, and the file points to it,
    # so every stored file hashes to the digest it is listed under. The records still carry the old file list.
    target, _ = trail
    _, content = _blob_of(target, "rules", RULE_FILE)
    edited = content + b"# quietly changed\n"
    new_digest = hashlib.sha256(edited).hexdigest()
    raw_sql(target, f"INSERT INTO audit_blobs (sha256, content) VALUES ('{new_digest}', "
                    f"{_bytes_literal(target, edited)})",
            f"UPDATE audit_rulebook_files SET blob_sha256 = '{new_digest}' WHERE part = 'rules' "
            f"AND path = '{RULE_FILE}'")
    report = verify_store(target)
    assert report.first_break is None and not report.ok
    assert any("its files are not the ones record #1 recorded" in p for p in report.problems), report.problems
    assert not any("was altered (its bytes" in p for p in report.problems)  # each file matches its listed digest


def test_a_renamed_archived_file_failsverify_store(trail):
    target, _ = trail
    renamed = RULE_FILE.replace("R23-", "R23-renamed-")
    raw_sql(target, f"UPDATE audit_rulebook_files SET path = '{renamed}' WHERE path = '{RULE_FILE}'")
    report = verify_store(target)
    assert any("its files are not the ones record #1 recorded" in p for p in report.problems), report.problems


@pytest.mark.parametrize("column", ["name", "version"])
def test_an_archive_listed_under_another_name_or_version_failsverify_store(trail, column):
    target, _ = trail
    raw_sql(target, f"UPDATE audit_rulebooks SET {column} = 'other'")
    report = verify_store(target)
    assert report.first_break is None and not report.ok
    assert any("is listed as" in p and "the archive was altered" in p for p in report.problems), report.problems


def test_working_copies_that_differ_only_in_comments_share_one_archive_andverify_store(target, tmp_path):
    # Two processes load "the same" rulebook (same sha256) from copies whose comments differ: the first archives
    # its bytes, and the second's records commit to those archived bytes, not to its own copy.
    first, second = copy_rulebook(tmp_path / "a"), copy_rulebook(tmp_path / "b")
    (second / RULE_FILE).write_bytes((second / RULE_FILE).read_bytes() + b"# a local note\n")
    one, other = load_rulebook(first, seeds_dir()), load_rulebook(second, seeds_dir())
    assert one.sha256 == other.sha256
    with open_store(target) as store_a, open_store(target) as store_b:
        Engine(one, audit=store_a).evaluate(PATIENTS[0])
        Engine(other, audit=store_b).evaluate(PATIENTS[1])
        records = store_a.records()
        assert store_a.verify().ok
        archive = store_a.rulebook_archive(one.sha256)
    assert {r.rulebook["files_sha256"] for r in records} == {archive.files_sha256()}
    assert archive.files[("rules", RULE_FILE)] == (first / RULE_FILE).read_bytes()


def test_the_cli_names_the_altered_file_and_exits_1(trail):
    target, _ = trail
    digest, content = _blob_of(target, "rules", RULE_FILE)
    edited = _bytes_literal(target, content + b"# x\n")
    raw_sql(target, f"UPDATE audit_blobs SET content = {edited} WHERE sha256 = '{digest}'")
    result = subprocess.run([str(SCRIPT), "audit", "verify", "--db", target], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 1, result.stderr
    assert "audit trail problem: rulebook archive: " in result.stdout
    assert f"file rules/{RULE_FILE} was altered" in result.stdout



def test_a_break_names_what_is_wrong_with_the_record(trail):
    import orjson

    from imt_cds.audit.record import canonical_bytes

    target, records = trail
    raw_sql(target, f"UPDATE audit_records SET body = {_bytes_literal(target, b'{')} WHERE seq = 2")
    bad = verify_store(target).first_break
    assert (bad.seq, bad.reason) == (2, "its body is not valid JSON (modified)")
    # The first record rewritten consistently (body, hash and columns agree) but chained to something else.
    content = orjson.loads(canonical_bytes(records[0].content))
    content["prev_hash"] = "1" * 64
    body = canonical_bytes(content)
    text = body.decode().replace("'", "''")  # stored as text (the bytes that were hashed)
    raw_sql(target, f"UPDATE audit_records SET body = '{text}', "
                    f"hash = '{hashlib.sha256(body).hexdigest()}', prev_hash = '{'1' * 64}' WHERE seq = 1")
    bad = verify_store(target).first_break
    assert (bad.seq, bad.reason) == (1, "it is the first record but does not start the chain")
