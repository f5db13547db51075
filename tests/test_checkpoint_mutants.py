"""Signed checkpoints, pinned where mutation testing of audit/checkpoint.py found no test: the documented format that
an auditor checks with any Ed25519 implementation, a checkpoint of an empty trail, that a checkpoint read cannot be
changed, and the exact one-line refusal for each way a checkpoint or a key file can be wrong."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from imt_cds.audit import CheckpointError, CheckpointSignatureError, generate_key_pair, read_checkpoint, sign_checkpoint
from imt_cds.audit.checkpoint import public_key_id

KEYS = generate_key_pair()
HEAD = "ab" * 32
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def _message(call) -> str:
    with pytest.raises((CheckpointError, CheckpointSignatureError)) as caught:
        call()
    return str(caught.value)


def _checkpoint(**changes) -> bytes:
    data = json.loads(sign_checkpoint(3, HEAD, KEYS[0]).to_json())
    data.update(changes)
    return json.dumps(data).encode()


def test_a_checkpoint_is_in_the_documented_format_and_verifies_with_any_ed25519_implementation():
    text = sign_checkpoint(3, HEAD, KEYS[0]).to_json()
    data = json.loads(text)
    assert data["schema"] == "imt-cds/audit-checkpoint/1"
    assert set(data) == {"schema", "records", "head", "signed_at", "key_id", "signature"}
    # The signature is over the canonical JSON (keys sorted, no whitespace) of every other field.
    signed = json.dumps({k: v for k, v in data.items() if k != "signature"}, sort_keys=True,
                        separators=(",", ":")).encode()
    public = serialization.load_pem_public_key(KEYS[1])
    public.verify(base64.b64decode(data["signature"]), signed)  # raises if it does not verify
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert data["key_id"] == hashlib.sha256(raw).hexdigest() == public_key_id(KEYS[1])


def test_a_checkpoint_of_an_empty_trail_is_read_back():
    checkpoint = read_checkpoint(sign_checkpoint(0, "0" * 64, KEYS[0]).to_json().encode(), KEYS[1])
    assert (checkpoint.records, checkpoint.head) == (0, "0" * 64)


def test_a_checkpoint_read_cannot_be_changed():
    checkpoint = read_checkpoint(_checkpoint(), KEYS[1])
    with pytest.raises(dataclasses.FrozenInstanceError):
        checkpoint.records = 2  # type: ignore[misc]


def test_a_checkpoint_describes_itself_by_its_length_and_time():
    checkpoint = read_checkpoint(_checkpoint(), KEYS[1])
    assert checkpoint.describe() == f"checkpoint of 3 record(s) signed at {checkpoint.signed_at}"


def test_each_malformed_checkpoint_is_refused_in_exactly_one_line():
    assert re.fullmatch(r"the checkpoint is not JSON \(.+\)", _message(lambda: read_checkpoint(b"{", KEYS[1])))
    assert _message(lambda: read_checkpoint(b'{"schema": "x"}', KEYS[1])) == (
        "the checkpoint is not an imt-cds audit checkpoint (schema imt-cds/audit-checkpoint/1)")
    assert _message(lambda: read_checkpoint(_checkpoint(head="abc"), KEYS[1])) == (
        "the checkpoint: head must be 64 lowercase hex digits, got 'abc'")
    assert _message(lambda: read_checkpoint(_checkpoint(key_id="AB" * 32), KEYS[1])) == (
        f"the checkpoint: key_id must be 64 lowercase hex digits, got '{'AB' * 32}'")
    for field in ("signed_at", "signature"):
        assert _message(lambda: read_checkpoint(_checkpoint(**{field: 5}), KEYS[1])) == (
            "the checkpoint: signed_at and signature must be text"), field
    assert _message(lambda: read_checkpoint(_checkpoint(records=2), KEYS[1])) == (
        "the checkpoint: its signature does not verify with the public key (the checkpoint was altered or forged)")


def test_each_unusable_key_file_is_refused_in_exactly_one_line():
    assert re.fullmatch(r"the public key is not a PEM public key \(.+\)",
                        _message(lambda: read_checkpoint(_checkpoint(), b"-----BEGIN NOTHING-----")))
    assert re.fullmatch(r"the public key is not a PEM public key \(.+\)",
                        _message(lambda: public_key_id(b"not a key")))
    ec_public = EC_KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
    assert re.fullmatch(r"the public key is a \w*PublicKey, not an Ed25519 public key",
                        _message(lambda: read_checkpoint(_checkpoint(), ec_public)))
    assert "\n" not in _message(lambda: read_checkpoint(b"{", b"-----BEGIN NOTHING-----"))
