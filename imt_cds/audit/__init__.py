"""The audit trail: a tamper-evident record of every evaluation, replayable with the exact rulebook that made it.

Typical use::

    from imt_cds import Engine
    from imt_cds.audit import open_store, replay

    with open_store("audit.db") as store:                # SQLite file, created on first use
        engine = Engine(audit=store)                     # every evaluate() is recorded before it returns
        assessment = engine.evaluate({"age_years": 8})
        report = store.verify()                          # recompute every hash and link
        assert report.ok, report.first_break
        result = replay(store, "last")                   # re-evaluate with the archived rulebook
        assert result.identical

``open_store("postgresql://user@host/db")`` gives the same interface on PostgreSQL (several service instances on
one trail). ``record.py`` says what a record holds and how the chain is hashed; ``archive.py`` how rulebooks are
kept; ``store.py`` is the interface, ``backends.py`` opens one and ``sql.py`` is what both databases share;
``replay.py`` how a record is re-evaluated; ``checkpoint.py`` how a head is signed (Ed25519) and checked. This package
never imports the rules engine's internals: it records ``Assessment`` objects and, to replay, builds an ``Engine`` like
any caller.
"""

from ..core.errors import (
    ArchiveMissingError,
    AuditError,
    AuditStoreError,
    CheckpointError,
    CheckpointSignatureError,
    NotAnAuditStoreError,
    RecordNotFoundError,
    ReplayError,
)
from .archive import RulebookArchive
from .backends import open_store
from .checkpoint import Checkpoint, generate_key_pair, read_checkpoint, sign_checkpoint
from .record import GENESIS_HASH, AuditRecord, ChainBreak, ChainReport
from .replay import Difference, ReplayResult, replay
from .store import AuditStore

__all__ = [
    "GENESIS_HASH",
    "ArchiveMissingError",
    "AuditError",
    "AuditRecord",
    "AuditStore",
    "AuditStoreError",
    "ChainBreak",
    "ChainReport",
    "Checkpoint",
    "CheckpointError",
    "CheckpointSignatureError",
    "Difference",
    "NotAnAuditStoreError",
    "RecordNotFoundError",
    "ReplayError",
    "ReplayResult",
    "RulebookArchive",
    "generate_key_pair",
    "open_store",
    "read_checkpoint",
    "replay",
    "sign_checkpoint",
]
