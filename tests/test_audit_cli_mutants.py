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
from cli_support import command, refused_option

from imt_cds import Engine
from imt_cds.audit import GENESIS_HASH, open_store
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


def test_audit_without_a_subcommand_is_refused_with_the_usage(capsys):
    line = refused_option(capsys, "audit")
    assert line.startswith("imt-cds audit: error: the following arguments are required: SUBCOMMAND")


@pytest.mark.parametrize("name", ["list", "verify", "head", "show", "replay"])
def test_format_text_is_the_default_and_may_be_asked_for(capsys, db, name):
    record_ref = ["2"] if name in ("show", "replay") else []
    default = command(capsys, "audit", name, *record_ref, "--db", db)
    assert default[0] == 0 and default[1]
    assert command(capsys, "audit", name, *record_ref, "--db", db, "--format", "text") == default


def test_list_prints_one_aligned_line_per_record_and_as_json_their_summaries(capsys, db):
    with open_store(str(db)) as store:
        records = store.records()
    status, out, err = command(capsys, "audit", "list", "--db", db)
    lines = out.splitlines()
    assert (status, err, len(lines)) == (0, "", 4)
    assert re.fullmatch(r"#  recorded at \(UTC\) +id +patient +rulebook +findings", lines[0])
    for line, record in zip(lines[1:], records):
        assert line.startswith(f"{record.seq}  {record.recorded_at}  {record.id}  {record.patient_id}")
        assert re.search(r"\d+ recommendations?/requests?, \d+ flags?, \d+ withheld$", line), line
    assert len({line.index(" imt ") for line in lines[1:]}) == 1  # the rulebook column lines up
    status, out, _ = command(capsys, "audit", "list", "--db", db, "--format", "json")
    assert status == 0 and json.loads(out) == [json.loads(json.dumps(r.summary())) for r in records]
    status, out, _ = command(capsys, "audit", "list", "--db", db, "--patient", records[1].patient_id)
    assert status == 0 and len(out.splitlines()) == 2 and records[1].id in out


def test_list_of_an_empty_trail_says_so(capsys, tmp_path):
    db = tmp_path / "empty.db"
    open_store(str(db), create=True).close()
    assert command(capsys, "audit", "list", "--db", db) == (0, "(no audit records)\n", "")
    assert command(capsys, "audit", "list", "--db", db, "--format", "json") == (0, "[]\n", "")


def test_show_prints_the_note_and_says_where_the_record_sits(capsys, db):
    with open_store(str(db)) as store:
        second = store.record("2")
    status, out, err = command(capsys, "audit", "show", "2", "--db", db)
    assert status == 0 and out.startswith("IMT decision support - assessment of ")
    assert err == (f"imt-cds: audit record #2, id {second.id}, recorded {second.recorded_at}, hash {second.hash}\n")
    status, out, err = command(capsys, "audit", "show", second.id, "--db", db, "--format", "json")
    assert (status, err) == (0, "") and json.loads(out)["id"] == second.id and json.loads(out)["seq"] == 2


def test_replay_says_what_it_replayed_with_and_that_it_is_identical(capsys, db):
    with open_store(str(db)) as store:
        last = store.record("last")
    rulebook = f"{last.rulebook['name']} {last.rulebook['version']} ({last.rulebook['sha256'][:12]})"
    assert command(capsys, "audit", "replay", "last", "--db", db) == (
        0, f"record #3 (id {last.id}) replayed with its archived rulebook {rulebook}:\n"
           "  identical: the same findings, suppressions, derived facts and trace\n", "")
    status, out, _ = command(capsys, "audit", "replay", "last", "--db", db, "--format", "json")
    assert status == 0 and json.loads(out)["identical"] is True


def test_replay_with_a_changed_current_rulebook_lists_the_differences(capsys, db, tmp_path):
    from rulebook_copies import copy_rulebook, set_parameters

    rules = copy_rulebook(tmp_path)
    set_parameters(rules, {"size_risk_threshold_cm": 20})
    status, out, _ = command(capsys, "audit", "replay", "2", "--db", db, "--with-current", "--rules", rules)
    lines = out.splitlines()
    assert status == 1
    assert re.fullmatch(r"record #2 \(id [0-9a-f-]+\), made with rulebook imt \S+ \([0-9a-f]{12}\), evaluated again "
                        r"with the current rulebook imt \S+ \([0-9a-f]{12}\):", lines[0])
    assert "  context: provenance.parameters.size_risk_threshold_cm: recorded 3.9; current 20.0" in lines
    count = next(n for n, line in enumerate(lines) if re.fullmatch(r"  \d+ differences?:", line))
    assert lines[count] == f"  {len(lines) - count - 1} difference{'s' if len(lines) - count - 1 != 1 else ''}:"
    assert all(line.startswith("  - ") for line in lines[count + 1:])
    assert any(line.startswith("  - risk_flags[RISK_TUMOR_SIZE_ABOVE_COHORT_MEDIAN]: only in the record: ")
               for line in lines)
    status, out, _ = command(capsys, "audit", "replay", "2", "--db", db, "--with-current", "--rules", rules,
                             "--format", "json")
    assert status == 1 and json.loads(out)["identical"] is False


def test_replay_refuses_rules_without_with_current(capsys, db, tmp_path):
    assert command(capsys, "audit", "replay", "1", "--db", db, "--rules", ROOT / "rules") == (
        2, "", "imt-cds: error: --rules needs --with-current (a replay otherwise uses the archived rulebook)\n")


def test_export_writes_the_bundle_to_stdout_or_to_a_file(capsys, db, tmp_path):
    status, out, err = command(capsys, "audit", "export", "1", "--db", db, "--format", "fhir")
    assert (status, err) == (0, "") and json.loads(out)["resourceType"] == "Bundle"
    path = tmp_path / "bundle.json"
    assert command(capsys, "audit", "export", "1", "--db", db, "--format", "fhir", "-o", path) == (0, "", "")
    assert path.read_text(encoding="utf-8") == out
    folder = tmp_path / "folder"
    folder.mkdir()
    status, out, err = command(capsys, "audit", "export", "1", "--db", db, "--format", "fhir", "-o", folder)
    assert (status, out) == (2, "") and err == f"imt-cds: error: cannot write {folder}: Is a directory\n"


def test_keygen_writes_a_private_key_only_its_owner_reads_and_says_where(capsys, tmp_path):
    from imt_cds.audit.checkpoint import public_key_id

    private, public = tmp_path / "k.pem", tmp_path / "k.pub"
    status, out, err = command(capsys, "audit", "keygen", "--private-key", private, "--public-key", public)
    assert (status, out) == (0, "")
    assert err == (f"imt-cds: wrote the private key {private} (keep it away from the audit database) and the public "
                   f"key {public} (key id {public_key_id(public.read_bytes())})\n")
    assert (private.stat().st_mode & 0o777, public.stat().st_mode & 0o777) == (0o600, 0o644)
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")


def test_keygen_never_overwrites_and_needs_two_files(capsys, tmp_path):
    private, public = tmp_path / "k.pem", tmp_path / "k.pub"
    assert command(capsys, "audit", "keygen", "--private-key", private, "--public-key", private) == (
        2, "", "imt-cds: error: --private-key and --public-key must be two different files\n")
    public.write_text("mine")
    assert command(capsys, "audit", "keygen", "--private-key", private, "--public-key", public) == (
        2, "", f"imt-cds: error: {public} already exists; keygen never overwrites a key\n")
    assert public.read_text() == "mine" and not private.exists()
    status, _, err = command(capsys, "audit", "keygen", "--private-key", tmp_path / "none" / "k.pem",
                             "--public-key", tmp_path / "k2.pub")
    assert status == 2
    assert err == f"imt-cds: error: cannot write {tmp_path / 'none' / 'k.pem'}: No such file or directory\n"


def test_report_of_a_record_and_its_refusals(capsys, db, tmp_path):
    page = tmp_path / "report.html"
    assert command(capsys, "report", "--audit-id", "2", "--db", db, "--html", page) == (
        0, "", f"imt-cds: wrote {page}\n")
    assert page.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    refusals = [
        ((), "imt-cds: error: report on what? give a patient file (or - for standard input), or --audit-id ID --db DB"),
        ((str(EXAMPLES[0]), "--audit-id", "2", "--db", str(db)),
         "imt-cds: error: give a patient file or --audit-id ID (with --db DB), not both"),
        (("--audit-id", "2"), "imt-cds: error: --audit-id needs --db DB"),
    ]
    for args, line in refusals:
        assert command(capsys, "report", *args, "--html", tmp_path / "other.html") == (2, "", line + "\n")
    assert not (tmp_path / "other.html").exists()


def test_list_marks_a_record_kept_without_its_input_and_a_patient_without_an_id(capsys, tmp_path):
    facts = json.loads(EXAMPLES[0].read_text())
    del facts["patient_id"]
    patient, db = tmp_path / "anonymous.json", tmp_path / "audit.db"
    patient.write_text(json.dumps(facts))
    assert command(capsys, "evaluate", patient, "--audit", db, "--audit-no-input")[0] == 0
    status, out, _ = command(capsys, "audit", "list", "--db", db)
    assert status == 0
    assert re.search(r"  -  +imt \S+  \d+ recommendations?/requests?, \d+ flags?, \d+ withheld"
                     r"  \[input: sha256 only\]$", out.splitlines()[1]), out


@pytest.mark.parametrize("name", ["show", "replay", "export", "report"])
def test_an_unknown_record_is_one_line_of_usage_error_on_every_command(capsys, db, name, tmp_path):
    args = {"show": ("audit", "show", "99", "--db", db), "replay": ("audit", "replay", "99", "--db", db),
            "export": ("audit", "export", "99", "--db", db, "--format", "fhir"),
            "report": ("report", "--audit-id", "99", "--db", db, "--html", tmp_path / "r.html")}[name]
    status, out, err = command(capsys, *args)
    assert (status, out) == (2, "")
    assert re.fullmatch(r"imt-cds: error \[[a-z_]+\]: .*99.*\n", err), err


def test_replay_with_the_current_rulebook_names_what_only_it_gives(capsys, tmp_path):
    from rulebook_copies import copy_rulebook, set_parameters

    db = tmp_path / "audit.db"
    record(db, 1)  # a tumour of 3.2 cm: under the shipped threshold (3.9 cm), over 0.5
    rules = copy_rulebook(tmp_path)
    set_parameters(rules, {"size_risk_threshold_cm": 0.5})
    status, out, _ = command(capsys, "audit", "replay", "1", "--db", db, "--with-current", "--rules", rules)
    assert status == 1
    assert "  1 difference:" not in out and "  2 differences:" in out.splitlines()
    assert any(line.startswith("  - risk_flags[RISK_TUMOR_SIZE_ABOVE_COHORT_MEDIAN]: only current: ")
               for line in out.splitlines()), out


def test_report_of_a_patient_file_evaluates_it(capsys, tmp_path):
    page = tmp_path / "report.html"
    assert command(capsys, "report", EXAMPLES[1], "--html", page) == (0, "", f"imt-cds: wrote {page}\n")
    text = page.read_text(encoding="utf-8")
    assert json.loads(EXAMPLES[1].read_text())["patient_id"] in text and "REC_" in text


@pytest.mark.parametrize(("args", "missing"), [
    (("audit", "keygen", "--private-key", "k.pem"), "--public-key"),
    (("audit", "keygen", "--public-key", "k.pub"), "--private-key"),
    (("audit", "list"), "--db"),
    (("audit", "export", "1", "--db", "audit.db"), "--format"),
    (("report", "--audit-id", "1", "--db", "audit.db"), "--html"),
])
def test_a_required_option_left_out_is_named(capsys, tmp_path, monkeypatch, args, missing):
    monkeypatch.chdir(tmp_path)
    line = refused_option(capsys, *args)
    assert line.startswith(f"imt-cds {' '.join(args[:2]) if args[0] == 'audit' else 'report'}: error: the following "
                           f"arguments are required: {missing}")
    assert list(tmp_path.iterdir()) == []


def test_evaluate_with_audit_records_the_input_and_says_where(capsys, tmp_path):
    db = tmp_path / "audit.db"
    status, out, err = command(capsys, "evaluate", EXAMPLES[1], "--audit", db)
    with open_store(str(db)) as store:
        (recorded,) = store.records()
        location = store.location
    assert status == 0 and out.startswith("IMT decision support - assessment of ")
    assert err == f"imt-cds: recorded as audit record {recorded.id} in {location}\n"
    patient_id = json.loads(EXAMPLES[1].read_text())["patient_id"]
    assert json.loads(recorded.canonical_input_json())["patient_id"] == patient_id
