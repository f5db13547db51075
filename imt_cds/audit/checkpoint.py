"""Signed checkpoints: an Ed25519 signature over the chain's length and head hash, so that a trail can be checked
later against something a tamperer with the database cannot forge.

The hash chain alone has no key: whoever can write the database can rewrite every record after the one they change
and recompute every hash, or drop the newest records, and the chain is consistent again. A checkpoint, signed with
a private key kept away from the database, fixes the chain as it was when it was signed: ``verify`` with the
checkpoint and the public key fails if the record at the checkpoint's length is gone (truncated) or has another
hash (any record up to it was changed, removed, inserted or replaced by forgeries). It says nothing about records
appended after it: those are only as trustworthy as the store's access control, until the next checkpoint.

A checkpoint is a JSON object::

    {"schema": "imt-cds/audit-checkpoint/1", "records": 42, "head": "<the hash of record #42>",
     "signed_at": "RFC 3339 UTC", "key_id": "<sha256 of the raw 32-byte public key>",
     "signature": "<base64 Ed25519 signature>"}

The signature is over the canonical JSON (keys sorted, no whitespace) of the object without ``signature``, so an
auditor can check one with any Ed25519 implementation. Keys are PEM files: PKCS#8 (private, unencrypted: protect
the file) and SubjectPublicKeyInfo (public). Needs the ``cryptography`` package (``pip install
'imt-cds[signing]'``), imported only here. This module never touches a database.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, cast

import orjson

from ..core.assessment import rfc3339
from ..core.errors import CheckpointError, CheckpointSignatureError

__all__ = ["CHECKPOINT_SCHEMA", "Checkpoint", "generate_key_pair", "public_key_id", "read_checkpoint",
           "sign_checkpoint"]

CHECKPOINT_SCHEMA = "imt-cds/audit-checkpoint/1"
_HASH = re.compile(r"[0-9a-f]{64}")
_FIELDS = ("schema", "records", "head", "signed_at", "key_id")


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement "the trail had ``records`` records and the last one's hash was ``head``"."""

    records: int
    head: str
    signed_at: str
    key_id: str
    signature: str  # base64

    def signed_bytes(self) -> bytes:
        """What the signature is over: the canonical JSON of every field but the signature."""
        return orjson.dumps({"schema": CHECKPOINT_SCHEMA, "records": self.records, "head": self.head,
                             "signed_at": self.signed_at, "key_id": self.key_id}, option=orjson.OPT_SORT_KEYS)

    def to_json(self) -> str:
        data = {**orjson.loads(self.signed_bytes()), "signature": self.signature}
        return orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n"

    def describe(self) -> str:
        return f"checkpoint of {self.records} record(s) signed at {self.signed_at}"


def _crypto() -> Any:
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise CheckpointError("signed checkpoints need the cryptography package: pip install 'imt-cds[signing]'"
                              ) from exc
    return serialization, ed25519, InvalidSignature


def generate_key_pair() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair as PEM: (private key, PKCS#8 unencrypted; public key, SubjectPublicKeyInfo)."""
    serialization, ed25519, _ = _crypto()
    private = ed25519.Ed25519PrivateKey.generate()
    return (private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()),
            private.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo))


def _public_key(pem: bytes, source: str) -> Any:
    serialization, ed25519, _ = _crypto()
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{source} is not a PEM public key ({exc})") from exc
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise CheckpointError(f"{source} is a {type(key).__name__}, not an Ed25519 public key")
    return key


def _private_key(pem: bytes, source: str) -> Any:
    serialization, ed25519, _ = _crypto()
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:  # also: an encrypted key (a password would be needed)
        raise CheckpointError(f"{source} is not an unencrypted PEM private key ({_first_line(exc)})") from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise CheckpointError(f"{source} is a {type(key).__name__}, not an Ed25519 private key")
    return key


def _key_id(public_key: Any) -> str:
    serialization, _, _ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def public_key_id(public_pem: bytes, source: str = "the public key") -> str:
    """The id a checkpoint names its key by: the sha256 of the raw 32-byte Ed25519 public key."""
    return _key_id(_public_key(public_pem, source))


def sign_checkpoint(records: int, head: str, private_pem: bytes, source: str = "the private key") -> Checkpoint:
    """Sign "the trail has ``records`` records and ends with ``head``" (verify the trail first: a checkpoint
    certifies whatever it is given)."""
    key = _private_key(private_pem, source)
    unsigned = Checkpoint(records, head, rfc3339(datetime.now(timezone.utc)), _key_id(key.public_key()), "")
    signature = base64.b64encode(key.sign(unsigned.signed_bytes())).decode()
    return Checkpoint(records, head, unsigned.signed_at, unsigned.key_id, signature)


def read_checkpoint(data: bytes, public_pem: bytes, source: str = "the checkpoint",
                    key_source: str = "the public key") -> Checkpoint:
    """Parse a checkpoint and check its signature with the public key. Raises ``CheckpointError`` when the file is
    not a checkpoint or the key not an Ed25519 public key, ``CheckpointSignatureError`` when the signature does not
    verify (the checkpoint was altered, forged, or signed with another key)."""
    public_key = _public_key(public_pem, key_source)
    try:
        fields = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise CheckpointError(f"{source} is not JSON ({exc})") from exc
    if not isinstance(fields, dict) or fields.get("schema") != CHECKPOINT_SCHEMA:
        raise CheckpointError(f"{source} is not an imt-cds audit checkpoint (schema {CHECKPOINT_SCHEMA})")
    unknown = sorted(set(fields) - {*_FIELDS, "signature"})
    if unknown:
        raise CheckpointError(f"{source} has fields a checkpoint does not have: {', '.join(unknown)}")
    records, head, signed_at, key_id, signature = (fields.get(k) for k in (*_FIELDS[1:], "signature"))
    if isinstance(records, bool) or not isinstance(records, int) or records < 0:
        raise CheckpointError(f"{source}: records must be a whole number of 0 or more, got {records!r}")
    for name, value in (("head", head), ("key_id", key_id)):
        if not isinstance(value, str) or not _HASH.fullmatch(value):
            raise CheckpointError(f"{source}: {name} must be 64 lowercase hex digits, got {value!r}")
    if not isinstance(signed_at, str) or not isinstance(signature, str):
        raise CheckpointError(f"{source}: signed_at and signature must be text")
    head, key_id = cast(str, head), cast(str, key_id)  # (both checked to be text above)
    checkpoint = Checkpoint(records, head, signed_at, key_id, signature)
    if key_id != _key_id(public_key):
        raise CheckpointSignatureError(f"{source} was signed by key {key_id[:16]}, not by {key_source} "
                                       f"({_key_id(public_key)[:16]})")
    invalid_signature = _crypto()[2]
    try:
        public_key.verify(base64.b64decode(signature, validate=True), checkpoint.signed_bytes())
    except (binascii.Error, ValueError) as exc:
        raise CheckpointSignatureError(f"{source}: its signature is not base64 ({exc})") from exc
    except invalid_signature as exc:
        raise CheckpointSignatureError(f"{source}: its signature does not verify with {key_source} (the "
                                       "checkpoint was altered or forged)") from exc
    return checkpoint


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
