"""The evidence registry: every seed quote is in its document (whitespace removed both sides); tampering refuses."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pytest

from imt_cds import EvidenceError
from imt_cds.core._resources import seeds_dir
from imt_cds.core.evidence import load_evidence, squash

SHARED = Path(__file__).resolve().parents[2] / "shared"
EVIDENCE_MD = SHARED / "clinical" / "EVIDENCE.md"
SEED_SHA256 = {
    "000_480b0b1c2c9dcc3a.txt": "the shipped Rich 2022 abstract",
    "002_f2ee5d647c6cfe07.txt": "the shipped PDQ summary",
}


def test_every_seed_quote_is_found_verbatim_in_its_document(rulebook):
    registry = rulebook.evidence
    seeds = [e for e in registry if e.is_seed]
    assert len(seeds) == 37
    for entry in seeds:
        document = (seeds_dir() / entry.source).read_text(encoding="utf-8")
        assert squash(entry.quote) in squash(document), entry.id


def test_the_source_documents_ship_under_their_own_names():
    for name in SEED_SHA256:
        assert (seeds_dir() / name).is_file()


@pytest.mark.skipif(not SHARED.is_dir(), reason="the shared project folder is not beside this checkout")
def test_the_source_documents_are_unchanged_copies_of_the_shared_seeds():
    for name in SEED_SHA256:
        shipped = hashlib.sha256((seeds_dir() / name).read_bytes()).hexdigest()
        original = hashlib.sha256((SHARED / "seeds" / name).read_bytes()).hexdigest()
        assert shipped == original, name


@pytest.mark.skipif(not EVIDENCE_MD.is_file(), reason="clinical/EVIDENCE.md is not beside this checkout")
def test_the_registry_has_every_entry_of_evidence_md(rulebook):
    ids = set(re.findall(r"^\| ((?:RICH2022|PDQ-PULM-IMT):[a-z]\d\d|EXT-[A-Z0-9-]+) \|", EVIDENCE_MD.read_text(),
                         flags=re.M))
    assert ids == set(rulebook.evidence.entries)


def test_a_quote_not_in_its_document_refuses_the_registry(tmp_path):
    copy = tmp_path / "seeds"
    shutil.copytree(seeds_dir(), copy)
    registry = copy / "evidence.yaml"
    registry.write_text(registry.read_text().replace("Median tumor size was 3.9 cm.", "Median tumor size was 4.9 cm."))
    with pytest.raises(EvidenceError) as info:
        load_evidence(copy)
    assert "RICH2022:c06" in str(info.value) and "quote not found" in str(info.value)


def test_an_edited_source_document_refuses_the_registry(tmp_path):
    copy = tmp_path / "seeds"
    shutil.copytree(seeds_dir(), copy)
    document = copy / "000_480b0b1c2c9dcc3a.txt"
    document.write_text(document.read_text().replace("Median tumor size was", "Mean tumor size was"))
    with pytest.raises(EvidenceError, match="RICH2022:c06"):
        load_evidence(copy)


def test_whitespace_differences_do_not_matter(tmp_path):
    copy = tmp_path / "seeds"
    shutil.copytree(seeds_dir(), copy)
    registry = copy / "evidence.yaml"
    original = registry.read_text()
    text = original.replace("quote: Median tumor size was 3.9 cm.", 'quote: "Median  tumor\\n size was 3.9 cm."')
    assert text != original
    registry.write_text(text)
    # loaded (the quote is still found in its document) and kept as the registry writes it
    assert load_evidence(copy)["RICH2022:c06"].quote == "Median  tumor\n size was 3.9 cm."


def test_external_entries_carry_citation_claim_and_verification(rulebook):
    external = [e for e in rulebook.evidence if not e.is_seed]
    assert len(external) == 19
    for entry in external:
        assert entry.citation and entry.claim and entry.verification and entry.quote is None


def test_the_evidence_hash_covers_the_documents(tmp_path, rulebook):
    copy = tmp_path / "seeds"
    shutil.copytree(seeds_dir(), copy)
    (copy / "002_f2ee5d647c6cfe07.txt").write_text((copy / "002_f2ee5d647c6cfe07.txt").read_text() + "\n")
    assert load_evidence(copy).sha256 != rulebook.evidence.sha256
