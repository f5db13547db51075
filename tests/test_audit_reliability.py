"""Reliability of the audit trail, on SQLite and on a real PostgreSQL server: a writer killed with SIGKILL loses no
record it acknowledged; several processes writing at once keep one unbroken chain; tampering with the database
(an edit, a deletion, a reordering, an insertion, a truncation) is found by ``verify``, which names the first bad
record."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from audit_support import TESTS, raw_sql, recorded_trail, verify_store

from imt_cds import Engine
from imt_cds.audit import open_store
from imt_cds.audit.record import seal

ROOT = Path(__file__).resolve().parents[1]
PATIENTS = [json.loads(p.read_text()) for p in sorted((ROOT / "examples").glob("*.json"))]
WRITER = TESTS / "audit_writer.py"


def _writer(target: str, count: int, seed: int, wait: bool = False) -> subprocess.Popen:
    args = [sys.executable, str(WRITER), target, str(count), str(seed)] + (["--wait"] if wait else [])
    return subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=TESTS)


def _acknowledged(process: subprocess.Popen) -> list[str]:
    return [line.strip() for line in process.stdout if line.strip() and line.strip() != "ready"]


# --- SIGKILL ------------------------------------------------------------------------------------------------------


def test_a_writer_killed_mid_stream_loses_no_acknowledged_record_and_the_chain_verifies(target):
    rng = random.Random(11)
    acknowledged: list[str] = []
    for round_number in range(3):
        writer = _writer(target, 100_000, seed=round_number)
        # Let it acknowledge a few records, then kill it at a random moment inside the stream of appends.
        seen = []
        while len(seen) < 5 + round_number * 7:
            line = writer.stdout.readline()
            assert line, f"writer ended early: {writer.stderr.read()}"
            seen.append(line.strip())
        time.sleep(rng.uniform(0.0, 0.15))
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=60)
        assert writer.returncode == -signal.SIGKILL
        seen.extend(_acknowledged(writer))  # printed (so acknowledged) before the kill, not yet read
        acknowledged.extend(seen)
        writer.stdout.close()
        writer.stderr.close()
        writer.stdin.close()

    with open_store(target, create=False) as store:
        report = store.verify()
        assert report.ok, report.first_break
        stored = {record.id for record in store.records()}
    assert set(acknowledged) <= stored
    assert report.records >= len(acknowledged)  # at most the one in flight was written but not acknowledged
    assert report.records <= len(acknowledged) + 3
    # The trail is still good for writing after the crashes.
    with open_store(target) as store:
        Engine(audit=store).evaluate(PATIENTS[0])
        assert store.verify().ok


# --- several writers at once --------------------------------------------------------------------------------------


def test_several_processes_writing_at_once_keep_one_unbroken_chain(target):
    with open_store(target):
        pass  # create the tables first, as a deployment would
    # Four writers released together, 40 records each; the chain is checked after every round. The writers must
    # really have run at once in some round (one after the other, the writer changes exactly three times): SQLite's
    # busy handler sleeps between its tries, so a writer that holds the lock can, now and then, finish before the
    # others wake. A round where that happened still proves its chain whole; another round is run then (at most 3).
    interleaved, expected = False, 0
    for round_number in range(3):
        writers = [_writer(target, 40, seed=100 + 10 * round_number + n, wait=True) for n in range(4)]
        for writer in writers:
            assert writer.stdout.readline().strip() == "ready", writer.stderr.read()
        for writer in writers:  # release them together
            writer.stdin.write("go\n")
            writer.stdin.flush()
        acknowledged = []
        for writer in writers:
            acknowledged.append(_acknowledged(writer))
            assert writer.wait(timeout=120) == 0, writer.stderr.read()
            for stream in (writer.stdin, writer.stdout, writer.stderr):
                stream.close()
        expected += 160
        with open_store(target, create=False) as store:
            report = store.verify()
            records = store.records()
        assert report.ok, report.first_break
        assert report.records == expected == len({r.id for r in records})
        assert [r.seq for r in records] == list(range(1, expected + 1))
        this_round = records[expected - 160:]
        assert {r.id for r in this_round} == {record_id for ids in acknowledged for record_id in ids}
        writer_of = {record_id: n for n, ids in enumerate(acknowledged) for record_id in ids}
        order = [writer_of[r.id] for r in this_round]
        if sum(1 for a, b in zip(order, order[1:], strict=False) if a != b) > 3:
            interleaved = True
            break
    assert interleaved, "in three rounds the four writers never ran at once"


# --- tampering ----------------------------------------------------------------------------------------------------


@pytest.fixture
def trail(target, rulebook):
    """Eight recorded evaluations, the append-only triggers gone; returns (target, records as recorded)."""
    return target, recorded_trail(target, rulebook, PATIENTS)


def test_a_finding_edited_in_place_is_found_at_that_record(trail):
    target, records = trail
    victim = records[4]  # record #5: the contradictory record, which withholds upfront surgery
    assert "REC_MULTIDISCIPLINARY_REVIEW" in victim.codes("recommendations")
    raw_sql(target, "UPDATE audit_records SET body = replace(body, 'Multidisciplinary team review', "
                    "'No review needed') WHERE seq = 5")
    report = verify_store(target)
    assert not report.ok
    assert (report.first_break.seq, report.first_break.id) == (5, victim.id)
    assert "modified" in report.first_break.reason
    assert report.records == 4 and report.head == records[3].hash


def test_an_edit_with_its_hash_recomputed_is_found_by_the_next_records_link(trail):
    target, records = trail
    with open_store(target, create=False) as store:
        content = dict(store.record("3").content)
    content["patient_id"] = "SOMEONE-ELSE"
    forged, body, digest = seal({k: v for k, v in content.items() if k not in ("seq", "prev_hash", "recorded_at")},
                                seq=3, prev_hash=records[1].hash)
    escaped = body.decode().replace("'", "''")
    raw_sql(target, f"UPDATE audit_records SET body = '{escaped}', hash = '{digest}', "
                    f"patient_id = 'SOMEONE-ELSE', recorded_at = '{forged['recorded_at']}' WHERE seq = 3")
    report = verify_store(target)
    assert (report.first_break.seq, report.first_break.id) == (4, records[3].id)
    assert "previous-record hash" in report.first_break.reason


def test_a_deleted_record_is_found(trail):
    target, records = trail
    raw_sql(target, "DELETE FROM audit_records WHERE seq = 4")
    report = verify_store(target)
    assert (report.first_break.seq, report.first_break.id) == (5, records[4].id)
    assert "record #4 is missing (deleted)" in report.first_break.reason


def test_reordered_records_are_found(trail):
    target, records = trail
    raw_sql(target, "UPDATE audit_records SET seq = 100 WHERE seq = 2",
            "UPDATE audit_records SET seq = 2 WHERE seq = 3",
            "UPDATE audit_records SET seq = 3 WHERE seq = 100")
    report = verify_store(target)
    assert report.first_break.seq == 2 and report.first_break.id == records[2].id
    assert "reordered" in report.first_break.reason


def test_an_inserted_record_is_found_even_when_forged_with_care(trail, rulebook):
    target, records = trail
    # The forger renumbers the records after #3 and inserts a well-formed record, linked to #3, in the gap.
    for seq in range(8, 3, -1):
        raw_sql(target, f"UPDATE audit_records SET seq = {seq + 1} WHERE seq = {seq}")
    assessment = Engine(rulebook).evaluate(PATIENTS[0])
    from imt_cds.audit.record import new_record_content

    sealed, body, digest = seal(new_record_content(assessment), seq=4, prev_hash=records[2].hash)
    escaped = body.decode().replace("'", "''")
    # (the old #4, now at #5, gives up its place as the successor of #3: prev_hash is unique)
    raw_sql(target, f"UPDATE audit_records SET prev_hash = '{digest}' WHERE seq = 5")
    raw_sql(target, "INSERT INTO audit_records (seq, id, recorded_at, patient_id, rulebook_sha256, prev_hash, hash, "
                    f"body) VALUES (4, '{sealed['id']}', '{sealed['recorded_at']}', '{sealed['patient_id']}', "
                    f"'{rulebook.sha256}', '{records[2].hash}', '{digest}', '{escaped}')")
    report = verify_store(target)
    assert report.first_break.seq == 5 and report.first_break.id == records[3].id
    assert report.records == 4  # the forged record itself is well-formed: the break is right after it


def test_removing_the_newest_records_is_found_with_an_anchored_head(trail):
    target, records = trail
    anchor = records[-1].hash  # printed by `audit head` and kept elsewhere
    assert verify_store(target, anchor=anchor).ok
    raw_sql(target, "DELETE FROM audit_records WHERE seq >= 7")
    assert verify_store(target).ok  # the remaining chain is consistent in itself...
    report = verify_store(target, anchor=anchor)
    assert not report.ok and "anchored hash" in report.problems[0]  # ...but the anchor is gone


def test_a_tampered_rulebook_archive_is_found(trail, rulebook):
    target, _ = trail
    raw_sql(target, "UPDATE audit_blobs SET content = content || '\n# tampered' "
            if not str(target).startswith("postgresql://") else
            "UPDATE audit_blobs SET content = content || convert_to(E'\\n# tampered', 'UTF8')")
    report = verify_store(target)
    assert report.first_break is None and not report.ok
    assert "rulebook archive" in report.problems[0]


def test_a_missing_rulebook_archive_is_found(trail, rulebook):
    target, _ = trail
    raw_sql(target, "DELETE FROM audit_rulebook_files", "DELETE FROM audit_rulebooks")
    report = verify_store(target)
    assert not report.ok and "not in the archive" in report.problems[0]
