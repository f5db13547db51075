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
    """``imt-cds ARGS`` in this process: its exit status, standard output and standard error (a command may end by
    ``SystemExit``, as the console script does)."""
    capsys.readouterr()
    try:
        status = main([str(a) for a in args])
    except SystemExit as exit_:
        status = exit_.code
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


def keys(capsys, folder: Path, name: str = "key") -> tuple[Path, Path]:
    private, public = folder / f"{name}.pem", folder / f"{name}.pub"
    assert command(capsys, "audit", "keygen", "--private-key", private, "--public-key", public)[0] == 0
    return private, public


def checkpoint_of(capsys, db: Path, private: Path, path: Path) -> Path:
    assert command(capsys, "audit", "head", "--db", db, "--sign", private, "-o", path)[0] == 0
    return path


def test_a_checkpoint_written_to_a_file_is_named_on_stderr_and_to_stdout_alone_otherwise(capsys, db, tmp_path):
    from imt_cds.audit.checkpoint import read_checkpoint

    private, public = keys(capsys, tmp_path)
    path = tmp_path / "checkpoint.json"
    status, out, err = command(capsys, "audit", "head", "--db", db, "--sign", private, "-o", path)
    checkpoint = read_checkpoint(path.read_bytes(), public.read_bytes())
    assert (status, out) == (0, "")
    assert err == f"imt-cds: wrote a {checkpoint.describe()} (head {head_of(capsys, db)}) to {path}\n"
    assert checkpoint.describe().startswith("checkpoint of 3 record(s) signed at ")
    status, out, err = command(capsys, "audit", "head", "--db", db, "--sign", private)
    assert (status, err) == (0, "")
    assert read_checkpoint(out.encode(), public.read_bytes()).head == checkpoint.head


def test_head_as_json_is_the_last_record(capsys, db):
    with open_store(str(db)) as store:
        last = store.records()[-1]
    status, out, err = command(capsys, "audit", "head", "--db", db, "--format", "json")
    assert (status, err) == (0, "")
    assert json.loads(out) == {"seq": 3, "id": last.id, "recorded_at": last.recorded_at, "hash": last.hash}


def test_a_checkpoint_signed_with_another_key_is_a_problem_of_the_trail(capsys, db, tmp_path):
    private, _ = keys(capsys, tmp_path, "ours")
    _, other_public = keys(capsys, tmp_path, "other")
    checkpoint = checkpoint_of(capsys, db, private, tmp_path / "checkpoint.json")
    status, out, err = command(capsys, "audit", "verify", "--db", db, "--checkpoint", checkpoint,
                               "--public-key", other_public)
    assert (status, err) == (1, "")
    (line,) = out.splitlines()
    assert line.startswith(f"audit trail problem: checkpoint: {checkpoint} was signed by ")
    assert line.endswith(f", not by {other_public} ({line.rsplit('(', 1)[1]}")


def test_verify_and_sign_check_the_rulebook_archive_unless_told_not_to(capsys, db, tmp_path):
    private, _ = keys(capsys, tmp_path)
    disable_append_only(db)
    raw_sql(db, "DELETE FROM audit_rulebook_files", "DELETE FROM audit_rulebooks")
    status, out, _ = command(capsys, "audit", "verify", "--db", db)
    assert status == 1 and out.startswith("audit trail problem: ") and "not in the archive" in out
    assert command(capsys, "audit", "verify", "--db", db, "--skip-archive")[0] == 0
    # A checkpoint certifies the trail: a trail whose archive fails is not signed (the problem named, not a break).
    status, out, err = command(capsys, "audit", "head", "--db", db, "--sign", private)
    assert (status, out) == (1, "")
    assert err.startswith("imt-cds: error: not signing: the audit trail does not verify (")
    assert "not in the archive" in err
    assert err.endswith("); run `imt-cds audit verify`\n")


def test_a_broken_trail_is_not_signed_and_the_break_is_named(capsys, db, tmp_path):
    private, _ = keys(capsys, tmp_path)
    disable_append_only(db)
    raw_sql(db, "UPDATE audit_records SET body = replace(body, 'resect', 'RESECT') WHERE seq = 2")
    status, out, err = command(capsys, "audit", "head", "--db", db, "--sign", private)
    assert (status, out) == (1, "")
    assert re.fullmatch(r"imt-cds: error: not signing: the audit trail does not verify \(record #2 \(id [0-9a-f-]+\)"
                        r".*modified.*\); run `imt-cds audit verify`\n", err), err


@pytest.mark.parametrize(("args", "line"), [
    (("verify", "--checkpoint", "c.json"), "imt-cds: error: --checkpoint needs --public-key PEM (the key it was signed "
                                           "with)"),
    (("verify", "--public-key", "k.pub"), "imt-cds: error: --public-key is used only with --checkpoint FILE"),
    (("head", "-o", "c.json"), "imt-cds: error: -o/--output is used only with --sign KEY"),
])
def test_options_that_go_together_are_refused_apart(capsys, db, args, line):
    command_name, *rest = args
    assert command(capsys, "audit", command_name, "--db", db, *rest) == (2, "", line + "\n")


def test_a_key_or_checkpoint_file_that_cannot_be_read_is_named(capsys, db, tmp_path):
    private, public = keys(capsys, tmp_path)
    checkpoint = checkpoint_of(capsys, db, private, tmp_path / "checkpoint.json")
    missing = tmp_path / "missing"
    cases = [
        (("verify", "--checkpoint", checkpoint, "--public-key", missing), f"the public key {missing}"),
        (("verify", "--checkpoint", missing, "--public-key", public), f"the checkpoint {missing}"),
        (("head", "--sign", missing), f"the private key {missing}"),
    ]
    for (name, *rest), what in cases:
        status, out, err = command(capsys, "audit", name, "--db", db, *rest)
        assert (status, out) == (2, "")
        assert re.fullmatch(rf"imt-cds: error \[[a-z_]+\]: cannot read {re.escape(what)}: No such file or directory\n",
                            err), err


@pytest.mark.parametrize("name", ["verify", "head", "list"])
def test_a_store_that_does_not_exist_is_named_and_not_created(capsys, tmp_path, name):
    missing = tmp_path / "nowhere.db"
    status, out, err = command(capsys, "audit", name, "--db", missing)
    assert (status, out) == (2, "")
    assert re.fullmatch(r"imt-cds: error \[[a-z_]+\]: .*\n", err) and str(missing) in err, err
    assert not missing.exists()


def test_batch_checks_its_audit_store_before_reading_anything_and_creates_a_new_one(capsys, tmp_path):
    junk = tmp_path / "notes.db"
    junk.write_text("these are not the records you are looking for\n" * 50)
    status, out, err = command(capsys, "batch", tmp_path / "no-such-input.ndjson", "--audit", junk)
    assert (status, out) == (2, "")
    assert re.fullmatch(r"imt-cds: error \[audit_store_invalid\]: .*not a usable audit database.*\n", err), err
    source, new = tmp_path / "in.ndjson", tmp_path / "new.db"
    source.write_text(json.dumps(json.loads(EXAMPLES[0].read_text())) + "\n")
    assert command(capsys, "batch", source, "-o", tmp_path / "out.ndjson", "--audit", new)[0] == 0
    with open_store(str(new)) as store:
        assert len(store.records()) == 1


def test_a_missing_signing_package_is_named_with_the_extra_that_installs_it(capsys, tmp_path, monkeypatch):
    import sys

    for name in [n for n in sys.modules if n == "cryptography" or n.startswith("cryptography.")] + ["cryptography"]:
        monkeypatch.setitem(sys.modules, name, None)  # an import of it now fails as a missing package does
    assert command(capsys, "audit", "keygen", "--private-key", tmp_path / "k.pem", "--public-key",
                   tmp_path / "k.pub") == (
        2, "", "imt-cds: error: this command needs the optional package 'cryptography.exceptions', which is not "
               "installed: "
               "pip install 'imt-cds[signing]'\n")
