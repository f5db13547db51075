"""Signed checkpoints: what the hash chain alone cannot show (a trail truncated, or rewritten from some record on with
every hash recomputed, or cut and extended with forged records) fails ``verify`` against a checkpoint signed before;
a checkpoint altered or signed with another key is refused. On SQLite and on a real PostgreSQL server, through the
library and the installed console script. Also: ``--anchor`` takes only a whole hash."""

from __future__ import annotations

import hashlib
import json
import stat
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from audit_support import disable_append_only, raw_sql

from imt_cds import Engine
from imt_cds.audit import (
    CheckpointError,
    CheckpointSignatureError,
    generate_key_pair,
    open_store,
    read_checkpoint,
    sign_checkpoint,
)
from imt_cds.audit.record import canonical_bytes

ROOT = Path(__file__).resolve().parents[1]
PATIENTS = [json.loads(p.read_text()) for p in sorted((ROOT / "examples").glob("*.json"))]
SCRIPT = Path(sys.executable).with_name("imt-cds")
KEYS = generate_key_pair()
OTHER_KEYS = generate_key_pair()


def run(*args, cwd=None):
    return subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.fixture
def trail(target, rulebook):
    """Four recorded evaluations and a checkpoint signed after the third; returns (target, records, checkpoint)."""
    with open_store(target) as store:
        engine = Engine(rulebook, audit=store)
        for patient in PATIENTS[:3]:
            engine.evaluate(patient)
        report = store.verify()
        checkpoint = sign_checkpoint(report.records, report.head, KEYS[0])
        engine.evaluate(PATIENTS[3])  # after the checkpoint
        records = store.records()
    disable_append_only(target)
    return target, records, checkpoint


def _verify(target, checkpoint, **options):
    verified = read_checkpoint(checkpoint.to_json().encode(), KEYS[1])
    with open_store(target, create=False) as store:
        return store.verify(checkpoints=[verified], **options)


def _rechain(target, first_seq: int, change) -> None:
    """Rewrite record ``first_seq`` with ``change`` and re-link every record after it, recomputing every hash: the
    chain is consistent again, as a forger with the database (and this library's source) can make it."""
    rows = raw_sql(target, f"SELECT seq, body FROM audit_records WHERE seq >= {first_seq - 1} ORDER BY seq")[0]
    previous_hash = None
    for seq, body in rows:
        content = orjson.loads(body)
        if seq == first_seq - 1:
            previous_hash = hashlib.sha256(canonical_bytes(content)).hexdigest()
            continue
        if seq == first_seq:
            change(content)
        content["prev_hash"] = previous_hash
        new_body = canonical_bytes(content)
        previous_hash = hashlib.sha256(new_body).hexdigest()
        escaped = new_body.decode().replace("'", "''")
        patient = "NULL" if content["patient_id"] is None else "'" + content["patient_id"].replace("'", "''") + "'"
        raw_sql(target, f"UPDATE audit_records SET body = '{escaped}', hash = '{previous_hash}', prev_hash = "
                        f"'{content['prev_hash']}', patient_id = {patient} WHERE seq = {seq}")


def test_an_intact_trail_verifies_against_its_checkpoint_and_later_records_are_not_covered(trail):
    target, records, checkpoint = trail
    assert checkpoint.records == 3 and checkpoint.head == records[2].hash
    report = _verify(target, checkpoint)
    assert report.ok and report.records == 4  # record #4 came after the checkpoint: checked by the chain only


def test_a_truncated_trail_fails_against_the_checkpoint(trail):
    target, _, checkpoint = trail
    raw_sql(target, "DELETE FROM audit_records WHERE seq >= 3")
    report = _verify(target, checkpoint)
    assert report.first_break is None and not report.ok  # the shorter chain is consistent in itself
    assert "checkpoint of 3 record(s)" in report.problems[0] and "holds only 2 records" in report.problems[0]


def test_a_chain_rewritten_with_every_hash_recomputed_fails_against_the_checkpoint(trail):
    target, records, checkpoint = trail
    _rechain(target, 2, lambda content: content.update(patient_id="SOMEONE-ELSE"))
    with open_store(target, create=False) as store:
        assert store.verify().ok  # the hash chain alone cannot tell
    report = _verify(target, checkpoint)
    assert not report.ok and "record #3 has hash" in report.problems[0]
    assert f"not the signed {records[2].hash}" in report.problems[0]


def test_forged_records_appended_after_a_truncation_fail_against_the_checkpoint(trail, rulebook):
    target, _, checkpoint = trail
    raw_sql(target, "DELETE FROM audit_records WHERE seq >= 2")
    with open_store(target) as store:  # the forger appends through the library: a perfectly formed chain
        engine = Engine(rulebook, audit=store)
        for patient in PATIENTS[4:7]:
            engine.evaluate(patient)
        assert store.verify().ok and len(store.records()) == 4
    report = _verify(target, checkpoint)
    assert not report.ok and "record #3 has hash" in report.problems[0]


def test_a_break_before_the_checkpoint_is_named_and_the_checkpoint_not_vouched_for(trail):
    target, records, checkpoint = trail
    raw_sql(target, "UPDATE audit_records SET patient_id = 'X' WHERE seq = 2")
    report = _verify(target, checkpoint)
    assert report.first_break.seq == 2
    assert "holds only 1 intact records before its first break" in report.problems[0]


def test_an_altered_checkpoint_is_refused(trail):
    target, records, checkpoint = trail
    data = json.loads(checkpoint.to_json())
    data.update(records=2, head=records[1].hash)  # a true statement about the trail, but not the one signed
    with pytest.raises(CheckpointSignatureError, match="does not verify"):
        read_checkpoint(json.dumps(data).encode(), KEYS[1])


def test_a_checkpoint_signed_with_another_key_is_refused(trail):
    _, records, _ = trail
    forged = sign_checkpoint(2, records[1].hash, OTHER_KEYS[0])
    with pytest.raises(CheckpointSignatureError, match="signed by key"):
        read_checkpoint(forged.to_json().encode(), KEYS[1])
    # ...and naming the right key does not help: the signature is checked with it
    data = json.loads(forged.to_json())
    data["key_id"] = json.loads(sign_checkpoint(0, "0" * 64, KEYS[0]).to_json())["key_id"]
    with pytest.raises(CheckpointSignatureError, match="does not verify"):
        read_checkpoint(json.dumps(data).encode(), KEYS[1])


@pytest.mark.parametrize("data, message", [
    (b"not json", "is not JSON"),
    (b'{"schema": "something else"}', "not an imt-cds audit checkpoint"),
    (b'{"schema": "imt-cds/audit-checkpoint/1", "records": -1}', "records must be a whole number"),
    (b'{"schema": "imt-cds/audit-checkpoint/1", "records": 1, "head": "abc"}', "head must be 64"),
    (b'{"schema": "imt-cds/audit-checkpoint/1", "extra": 1}', "fields a checkpoint does not have: extra"),
])
def test_a_file_that_is_not_a_checkpoint_is_a_clear_error(data, message):
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(data, KEYS[1])


def test_keys_must_be_ed25519_pem():
    with pytest.raises(CheckpointError, match="not a PEM public key"):
        read_checkpoint(b"{}", b"-----BEGIN NOTHING-----")
    with pytest.raises(CheckpointError, match="not an unencrypted PEM private key"):
        sign_checkpoint(0, "0" * 64, KEYS[1])  # the public key where the private key belongs
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with pytest.raises(CheckpointError, match="not an Ed25519 private key"):
        sign_checkpoint(0, "0" * 64, other)


def test_an_anchor_must_be_a_whole_hash(trail):
    target, records, _ = trail
    with open_store(target, create=False) as store, pytest.raises(ValueError, match="full 64-hex-digit hash"):
        store.verify(anchor=records[-1].hash[:12])


# --- on the command line ------------------------------------------------------------------------------------------


def test_keygen_sign_and_verify_on_the_command_line(target, tmp_path):
    for patient in ("01_surgery_first_lung.json", "02_alk_positive_unresectable.json"):
        assert run("evaluate", ROOT / "examples" / patient, "--audit", target).returncode == 0
    private, public, checkpoint = tmp_path / "key.pem", tmp_path / "key.pub", tmp_path / "checkpoint.json"
    made = run("audit", "keygen", "--private-key", private, "--public-key", public)
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and b"PRIVATE KEY" in private.read_bytes()
    assert b"BEGIN PUBLIC KEY" in public.read_bytes()
    signed = run("audit", "head", "--db", target, "--sign", private, "-o", checkpoint)
    assert signed.returncode == 0, signed.stderr
    data = json.loads(checkpoint.read_text())
    assert data["records"] == 2 and set(data) == {"schema", "records", "head", "signed_at", "key_id", "signature"}
    assert data["head"] == run("audit", "head", "--db", target).stdout.strip()
    verified = run("audit", "verify", "--db", target, "--checkpoint", checkpoint, "--public-key", public)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "matching 1 signed checkpoint (0 records after the last checkpoint" in verified.stdout

    disable_append_only(target)
    raw_sql(target, "DELETE FROM audit_records WHERE seq = 2")
    truncated = run("audit", "verify", "--db", target, "--checkpoint", checkpoint, "--public-key", public)
    assert truncated.returncode == 1 and "audit trail problem: checkpoint of 2 record(s)" in truncated.stdout

    data["records"] = 1
    checkpoint.write_text(json.dumps(data))
    forged = run("audit", "verify", "--db", target, "--checkpoint", checkpoint, "--public-key", public,
                 "--format", "json")
    assert forged.returncode == 1
    assert any("its signature does not verify" in p for p in json.loads(forged.stdout)["problems"])


def test_checkpoint_usage_errors_exit_2(tmp_path):
    db = tmp_path / "audit.db"
    assert run("evaluate", ROOT / "examples" / "01_surgery_first_lung.json", "--audit", db).returncode == 0
    private, public = tmp_path / "key.pem", tmp_path / "key.pub"
    assert run("audit", "keygen", "--private-key", private, "--public-key", public).returncode == 0
    again = run("audit", "keygen", "--private-key", private, "--public-key", tmp_path / "other.pub")
    assert again.returncode == 2 and "already exists" in again.stderr and not (tmp_path / "other.pub").exists()
    checkpoint = tmp_path / "checkpoint.json"
    assert run("audit", "head", "--db", db, "--sign", private, "-o", checkpoint).returncode == 0
    cases = [
        (("audit", "verify", "--db", db, "--checkpoint", checkpoint), "needs --public-key"),
        (("audit", "verify", "--db", db, "--checkpoint", checkpoint, "--public-key", private), "not a PEM public key"),
        (("audit", "verify", "--db", db, "--checkpoint", public, "--public-key", public), "is not JSON"),
        (("audit", "verify", "--db", db, "--checkpoint", tmp_path / "none.json", "--public-key", public),
         "cannot read the checkpoint"),
        (("audit", "head", "--db", db, "--sign", public), "not an unencrypted PEM private key"),
        (("audit", "head", "--db", db, "-o", checkpoint), "only with --sign"),
    ]
    for args, message in cases:
        result = run(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)


def test_a_trail_that_does_not_verify_is_never_signed(tmp_path):
    db = tmp_path / "audit.db"
    assert run("evaluate", ROOT / "examples" / "01_surgery_first_lung.json", "--audit", db).returncode == 0
    private, public = tmp_path / "key.pem", tmp_path / "key.pub"
    assert run("audit", "keygen", "--private-key", private, "--public-key", public).returncode == 0
    disable_append_only(db)
    raw_sql(db, "UPDATE audit_records SET patient_id = 'X'")
    result = run("audit", "head", "--db", db, "--sign", private, "-o", tmp_path / "checkpoint.json")
    assert result.returncode == 1 and "not signing" in result.stderr
    assert not (tmp_path / "checkpoint.json").exists()


@pytest.mark.parametrize("anchor", ["abc123", "0" * 63, "g" * 64, "0" * 65])
def test_a_short_or_malformed_anchor_is_a_usage_error(anchor, tmp_path):
    db = tmp_path / "audit.db"
    assert run("evaluate", ROOT / "examples" / "01_surgery_first_lung.json", "--audit", db).returncode == 0
    result = run("audit", "verify", "--db", db, "--anchor", anchor)
    assert result.returncode == 2 and "must be the full 64-hex-digit hash" in result.stderr
    assert "chain" not in result.stdout


def test_a_checkpoint_error_says_exactly_what_is_wrong():
    import re

    from imt_cds.audit.checkpoint import public_key_id

    def message(call):
        with pytest.raises((CheckpointError, CheckpointSignatureError)) as caught:
            call()
        return str(caught.value)

    header = b'{"schema": "imt-cds/audit-checkpoint/1", '
    assert message(lambda: read_checkpoint(header + b'"extra": 1, "b": 2}', KEYS[1])) == (
        "the checkpoint has fields a checkpoint does not have: b, extra")
    for records in (b'"1"', b"true", b"1.5", b"-1"):
        assert message(lambda: read_checkpoint(header + b'"records": ' + records + b"}", KEYS[1])) == (
            f"the checkpoint: records must be a whole number of 0 or more, got {json.loads(records)!r}")
    signed_by_other = sign_checkpoint(3, "0" * 64, OTHER_KEYS[0]).to_json().encode()
    assert message(lambda: read_checkpoint(signed_by_other, KEYS[1])) == (
        f"the checkpoint was signed by key {public_key_id(OTHER_KEYS[1])[:16]}, not by the public key "
        f"({public_key_id(KEYS[1])[:16]})")
    # the key loader's own reason, on one line (not just the name of its exception type)
    assert re.fullmatch(r"the private key is not an unencrypted PEM private key \([^\n]*private key[^\n]*\)",
                        message(lambda: sign_checkpoint(0, "0" * 64, KEYS[1])))
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    assert re.fullmatch(r"the private key is a \w*PrivateKey, not an Ed25519 private key",
                        message(lambda: sign_checkpoint(0, "0" * 64, other)))


def test_a_signature_with_characters_outside_base64_is_refused_even_if_the_rest_verifies():
    data = json.loads(sign_checkpoint(2, "0" * 64, KEYS[0]).to_json())
    data["signature"] = data["signature"][:8] + "!" + data["signature"][8:]
    with pytest.raises(CheckpointSignatureError, match="^the checkpoint: its signature is not base64 "):
        read_checkpoint(json.dumps(data).encode(), KEYS[1])


def test_without_the_cryptography_package_signing_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "cryptography.exceptions", None)  # an import of it now fails, as if absent
    with pytest.raises(CheckpointError) as caught:
        generate_key_pair()
    assert str(caught.value) == "signed checkpoints need the cryptography package: pip install 'imt-cds[signing]'"
