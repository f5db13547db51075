"""Every audit store a release of imt-cds wrote stays verifiable, replayable and readable by today's code.

``fixtures/audit-<rulebook version>/store.sqlite.gz``: stores written by the project's own code at a commit of that
rulebook (each folder's README says how). An auditor must be able to verify and replay a record years later, with the
library of that day: a change to the rule format, the loader, the record or the document that would lock an old
store out fails here. ``test_audit_first_release.py`` has what is particular to the 0.1.0 stores."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from audit_support import unpack_release_store

from imt_cds.audit import open_store, replay

FIXTURES = Path(__file__).resolve().parent / "fixtures"
STORES = sorted(FIXTURES.glob("audit-*/store.sqlite.gz"))
SCRIPT = Path(sys.executable).with_name("imt-cds")


@pytest.fixture(params=STORES, ids=[path.parent.name for path in STORES])
def store_path(request, tmp_path):
    return unpack_release_store(request.param, tmp_path)


def test_there_is_a_store_of_the_first_rulebook_and_of_the_current_one():
    # A new rulebook version is a release step: record the examples with it into a new store, as the README of
    # fixtures/audit-0.2.0 says, so that its records stay guarded too.
    from imt_cds import load_rulebook

    version = load_rulebook().version
    assert {path.parent.name for path in STORES} >= {"audit-0.1.0", f"audit-{version}"}, (
        f"no store written with rulebook {version}: add tests/fixtures/audit-{version}/store.sqlite.gz "
        "(see tests/fixtures/audit-0.2.0/README.md)")


def test_the_chain_and_every_archive_verify(store_path):
    with open_store(store_path) as store:
        report = store.verify()
        assert report.ok, report
        count = len(store.records())
    result = subprocess.run([str(SCRIPT), "audit", "verify", "--db", str(store_path)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"audit trail intact: {count} records" in result.stdout


def test_every_record_replays_identically_with_its_archived_rulebook(store_path):
    with open_store(store_path) as store:
        for record in store.records():
            result = replay(store, str(record.seq))
            assert result.identical, (record.seq, [d.describe() for d in result.differences])
            assert result.rulebook["sha256"] == record.rulebook["sha256"]
            # Byte for byte but for the evaluation time and the versions (nothing added that the record lacks).
            assert {k: v for k, v in result.document.items() if k != "provenance"} == \
                {k: v for k, v in record.assessment.items() if k != "provenance"}
            assert result.document["provenance"].get("diagnosis") == \
                record.assessment["provenance"].get("diagnosis")


def test_the_last_record_of_each_store_shows_and_exports(store_path):
    for command in (["audit", "show", "last"], ["audit", "export", "last", "--format", "fhir"]):
        result = subprocess.run([str(SCRIPT), *command, "--db", str(store_path)], capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
        assert result.stdout.strip()


def test_todays_code_appends_to_every_release_store_and_the_chain_stays_one(store_path):
    # A site upgrading in place keeps its store: today's records follow the old ones in the same chain.
    import json

    from imt_cds import Engine

    patient = json.loads((FIXTURES.parent.parent / "examples" / "02_alk_positive_unresectable.json").read_text())
    with open_store(store_path) as store:
        before = store.records()
        assessment = Engine(audit=store).evaluate(patient)
        after = store.records()
        assert [r.id for r in after[:-1]] == [r.id for r in before]
        assert after[-1].prev_hash == before[-1].hash and after[-1].assessment == assessment.to_dict()
        assert store.verify().ok
        assert replay(store, "last").identical and replay(store, "1").identical
