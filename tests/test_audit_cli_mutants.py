"""What an auditor reads of `imt-cds audit verify` and `audit head`, word for word, run in this process (main() with
the output captured): the lines a person checks a trail by, and the refusals of an option's value.

test_audit_cli.py and test_audit_checkpoints.py run the same commands through the installed script; they check that
the words are there (`"intact: 3 records" in stdout`). These check the whole line, so that a changed phrase, a missing
clause (the anchor, the checkpoints, the archive) or a clause shown when it does not hold is seen; and, in process,
mutation testing's coverage can see which test runs which line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from audit_support import disable_append_only, raw_sql

from imt_cds import Engine
from imt_cds.audit import GENESIS_HASH, open_store
from imt_cds.cli.main import main
from imt_cds.core.facts import PatientFacts

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.json"))
ARCHIVE_CLAUSE = "; every archived rulebook rebuilds to its sha256"


def record(db: Path, count: int) -> None:
    """``count`` more evaluations of the examples recorded in the SQLite store at ``db`` (created if need be)."""
    with open_store(str(db), create=True) as store:
        engine = Engine(audit=store)
        for path in EXAMPLES[:count]:
            engine.evaluate(PatientFacts.model_validate_json(path.read_bytes()))


def command(capsys, *args: object) -> tuple[int, str, str]:
    """``imt-cds ARGS`` in this process: its exit status, standard output and standard error."""
    capsys.readouterr()
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def refused_option(capsys, *args: object) -> str:
    """The one line of standard error with which argparse refuses an option's value (exit 2)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as caught:
        main([str(a) for a in args])
    assert caught.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "audit.db"
    record(path, 3)
    return path


def head_of(capsys, db: Path) -> str:
    status, out, err = command(capsys, "audit", "head", "--db", db)
    assert status == 0 and err == ""
    return out.strip()


def test_verify_of_an_intact_trail_says_so_in_two_lines(capsys, db):
    head = head_of(capsys, db)
    assert command(capsys, "audit", "verify", "--db", db) == (
        0, f"audit trail intact: 3 records{ARCHIVE_CLAUSE}\nhead {head}\n", "")


def test_verify_names_only_the_checks_it_made(capsys, db):
    head = head_of(capsys, db)
    assert command(capsys, "audit", "verify", "--db", db, "--skip-archive") == (
        0, f"audit trail intact: 3 records\nhead {head}\n", "")
    assert command(capsys, "audit", "verify", "--db", db, "--anchor", head.upper()) == (
        0, f"audit trail intact: 3 records, including the anchored hash{ARCHIVE_CLAUSE}\nhead {head}\n", "")


def test_verify_of_one_record_says_record(capsys, tmp_path):
    db = tmp_path / "one.db"
    record(db, 1)
    status, out, _ = command(capsys, "audit", "verify", "--db", db, "--skip-archive")
    assert status == 0 and out.splitlines()[0] == "audit trail intact: 1 record"


def test_verify_with_a_checkpoint_says_how_many_records_no_signature_covers(capsys, db, tmp_path):
    private, public, checkpoint = tmp_path / "key.pem", tmp_path / "key.pub", tmp_path / "checkpoint.json"
    assert command(capsys, "audit", "keygen", "--private-key", private, "--public-key", public)[0] == 0
    status, out, err = command(capsys, "audit", "head", "--db", db, "--sign", private, "-o", checkpoint)
    assert status == 0 and out == "" and f"to {checkpoint}" in err
    record(db, 2)
    head = head_of(capsys, db)
    assert command(capsys, "audit", "verify", "--db", db, "--checkpoint", checkpoint, "--public-key", public) == (
        0, "audit trail intact: 5 records, matching 1 signed checkpoint (2 records after the last checkpoint, covered "
           f"by no signature){ARCHIVE_CLAUSE}\nhead {head}\n", "")


def test_a_broken_trail_is_named_and_not_called_intact(capsys, db):
    head = head_of(capsys, db)
    disable_append_only(db)
    raw_sql(db, "UPDATE audit_records SET body = replace(body, 'resect', 'RESECT') WHERE seq = 2")
    status, out, _ = command(capsys, "audit", "verify", "--db", db, "--skip-archive")
    lines = out.splitlines()
    assert status == 1 and len(lines) == 2 and "audit trail intact" not in out
    assert re.fullmatch(r"audit trail BROKEN at record #2 \(id [0-9a-f-]+\).*modified.*", lines[0])
    assert lines[1] == f"  the 1 record before it verify; the last intact hash is {lines[1].split()[-1]}"
    assert lines[1].split()[-1] != head
    report = json.loads(command(capsys, "audit", "verify", "--db", db, "--format", "json", "--skip-archive")[1])
    assert report["ok"] is False and report["first_bad_record"]["seq"] == 2


def test_head_of_an_empty_trail_is_the_genesis_hash_and_says_why(capsys, tmp_path):
    db = tmp_path / "empty.db"
    open_store(str(db), create=True).close()
    assert command(capsys, "audit", "head", "--db", db) == (
        0, GENESIS_HASH + "\n", "imt-cds: the audit trail is empty; its head is the genesis hash\n")
    status, out, err = command(capsys, "audit", "head", "--db", db, "--format", "json")
    assert (status, err) == (0, "")
    assert json.loads(out) == {"seq": 0, "id": None, "recorded_at": None, "hash": GENESIS_HASH}


def test_an_anchor_that_is_not_a_full_hash_is_refused_with_its_length(capsys, db):
    assert refused_option(capsys, "audit", "verify", "--db", db, "--anchor", " 12ab ") == (
        "imt-cds audit verify: error: argument --anchor: must be the full 64-hex-digit hash printed by `audit head`, "
        "got ' 12ab ' (4 characters); see: imt-cds audit verify --help")


@pytest.mark.parametrize(("value", "words"), [
    ("0", "argument --last: must be 1 or more"),
    ("-3", "argument --last: must be 1 or more"),
    ("two", "argument --last: expected a whole number, got 'two'"),
])
def test_list_last_must_be_a_whole_number_of_1_or_more(capsys, db, value, words):
    assert refused_option(capsys, "audit", "list", "--db", db, "--last", value) == (
        f"imt-cds audit list: error: {words}; see: imt-cds audit list --help")


def test_list_last_1_is_the_newest_record(capsys, db):
    status, out, _ = command(capsys, "audit", "list", "--db", db, "--last", "1", "--format", "json")
    assert status == 0 and [r["seq"] for r in json.loads(out)] == [3]
