"""The evidence registry as a finding shows it, pinned where mutation testing of core/evidence.py found no test
looking: each entry's JSON form (what the assessment carries), the verification statement of a seed entry, the
registry being a value, and the one-line reason for each way a registry file can be wrong."""

from __future__ import annotations

import dataclasses
import shutil

import pytest

from imt_cds import EvidenceError
from imt_cds.core._resources import seeds_dir
from imt_cds.core.evidence import EvidenceEntry, EvidenceRegistry, EvidenceSource, load_evidence

RICH_CITATION = ("Rich BS, Fishbein J, Lautz T, et al. Inflammatory myofibroblastic tumor: A multi-institutional study "
                 "from the Pediatric Surgical Oncology Research Collaborative. Int J Cancer 2022;151(7):1059-1067.")


@pytest.fixture(scope="module")
def registry():
    return load_evidence(seeds_dir())


def test_a_seed_entry_as_json_quotes_its_document_and_says_how_it_was_verified(registry):
    assert registry["RICH2022:c06"].to_dict() == {
        "id": "RICH2022:c06",
        "citation": RICH_CITATION,
        "quote": "Median tumor size was 3.9 cm.",
        "claim": "Median tumor size was 3.9 cm.",
        "level": None,
        "source": "000_480b0b1c2c9dcc3a.txt",
        "verification": "verbatim: quote found in the shipped source document when the registry was loaded",
    }
    assert registry["PDQ-PULM-IMT:s10"].to_dict()["level"] == "C3"


def test_an_external_entry_as_json_has_no_quote_source_or_level(registry):
    assert registry["EXT-BUTRYNSKI2010"].to_dict() == {
        "id": "EXT-BUTRYNSKI2010",
        "citation": "Butrynski JE, et al. Crizotinib in ALK-rearranged inflammatory myofibroblastic tumor. N Engl J "
                    "Med 2010;363(18):1727-33. PMID 20979472",
        "quote": None,
        "claim": "First report of a sustained response of ALK-rearranged IMT to crizotinib.",
        "level": None,
        "source": None,
        "verification": "partial (PMID secondary)",
    }


def test_the_registry_cannot_be_changed_once_loaded(registry):
    with pytest.raises(dataclasses.FrozenInstanceError):
        registry.sha256 = "0" * 64
    with pytest.raises(TypeError):
        registry.entries["EXT-NEW"] = registry["EXT-BUTRYNSKI2010"]


def test_the_registry_keeps_its_name_and_version(registry):
    assert (registry.name, registry.version, len(registry)) == ("imt-evidence", "0.1", 56)


def _problems(tmp_path, change):
    """The problems of a copy of the shipped seeds whose registry text was changed by ``change``."""
    copy = tmp_path / "seeds"
    shutil.copytree(seeds_dir(), copy)
    path = copy / "evidence.yaml"
    path.write_text(change(path.read_text(encoding="utf-8")), encoding="utf-8")
    with pytest.raises(EvidenceError) as info:
        load_evidence(copy)
    return list(info.value.problems)


ENTRIES = "entries:\n"


@pytest.mark.parametrize(("change", "expected"), [
    (lambda t: t[: t.index(ENTRIES)] + "entries: {}\n", ["evidence.yaml: 'entries' must be a list"]),
    (lambda t: t.replace("- id: EXT-BUTRYNSKI2010\n", "- id: EXT-FDA-CRIZ-IMT-2022\n"),
     ["evidence.yaml: duplicate evidence id EXT-FDA-CRIZ-IMT-2022"]),
    (lambda t: t.replace("file: 000_480b0b1c2c9dcc3a.txt", "file: ../seeds/000_480b0b1c2c9dcc3a.txt"),
     "evidence.yaml: source RICH2022: file must be a plain file name in seeds/"),
    (lambda t: t.replace("- id: EXT-BUTRYNSKI2010\n", "- id: ext butrynski\n"),
     ["evidence.yaml: ext butrynski: malformed id (expected e.g. RICH2022:c06 or EXT-LOVLY2014)"]),
    (lambda t: t.replace("- id: RICH2022:c06\n", "- id: PDQ-PULM-IMT:c06\n"),
     ["evidence.yaml: PDQ-PULM-IMT:c06: a seed entry's id must start with its source key RICH2022:"]),
    (lambda t: t.replace("quote: Median tumor size was 3.9 cm.", "quote: ' '"),
     ["evidence.yaml: RICH2022:c06: 'quote' must be non-empty text"]),
    (lambda t: t.replace("  verification: partial (PMID secondary)\n", "", 1),
     ["evidence.yaml: EXT-BUTRYNSKI2010: an external entry needs verification"]),
    (lambda t: t.replace("- id: EXT-BUTRYNSKI2010\n", "- name: EXT-BUTRYNSKI2010\n"),
     ["evidence.yaml: entry #39: needs an 'id' string"]),
])
def test_each_way_an_entry_can_be_wrong_is_one_line_naming_it(tmp_path, change, expected):
    found = _problems(tmp_path, change)
    if isinstance(expected, str):  # the source is refused, so its entries are reported as citing an unknown source
        assert found[0] == expected
        assert all(p.startswith("evidence.yaml: RICH2022:") and "unknown source 'RICH2022'" in p for p in found[1:])
    else:
        assert found == expected


def test_a_source_without_a_citation_does_not_stop_the_other_sources_from_loading(tmp_path):
    found = _problems(tmp_path, lambda t: t.replace("    citation: 'Rich BS", "    title: 'Rich BS", 1))
    assert found[0] == "evidence.yaml: source RICH2022 needs 'file' and 'citation' strings"
    assert found[1:] and all(p.startswith("evidence.yaml: RICH2022:") for p in found[1:])  # none of PDQ-PULM-IMT
    assert found[1] == "evidence.yaml: RICH2022:c01: unknown source 'RICH2022'; known: PDQ-PULM-IMT"


def test_a_seed_entry_whose_source_is_not_text_is_reported_like_an_unknown_one(tmp_path):
    # (a list is not a key of the sources: looking it up used to raise TypeError, a traceback for a registry typo)
    found = _problems(tmp_path, lambda t: t.replace("- id: RICH2022:c06\n  source: RICH2022\n",
                                                    "- id: RICH2022:c06\n  source: [RICH2022]\n"))
    assert found == ["evidence.yaml: RICH2022:c06: unknown source ['RICH2022']; known: PDQ-PULM-IMT, RICH2022"]


def test_a_seed_entry_naming_an_unknown_source_lists_every_known_one(tmp_path):
    found = _problems(tmp_path, lambda t: t.replace("- id: RICH2022:c06\n  source: RICH2022\n",
                                                    "- id: RICH2022:c06\n  source: RICH\n"))
    assert found == ["evidence.yaml: RICH2022:c06: unknown source 'RICH'; known: PDQ-PULM-IMT, RICH2022"]


def test_a_quote_that_is_not_text_is_refused_in_words(tmp_path):
    found = _problems(tmp_path, lambda t: t.replace("quote: Median tumor size was 3.9 cm.", "quote: 3.9"))
    assert found == ["evidence.yaml: RICH2022:c06: 'quote' must be non-empty text"]


def test_a_quote_not_in_its_document_is_named_with_the_document_and_the_quote(tmp_path):
    found = _problems(tmp_path, lambda t: t.replace("Median tumor size was 3.9 cm.", "Median tumor size was 4.9 cm."))
    assert found == ["evidence.yaml: RICH2022:c06: quote not found in 000_480b0b1c2c9dcc3a.txt (compared with "
                     "whitespace removed): 'Median tumor size was 4.9 cm.'"]


def test_a_source_document_that_is_missing_or_not_utf8_is_named(tmp_path):
    copy = tmp_path / "seeds"
    shutil.copytree(seeds_dir(), copy)
    (copy / "000_480b0b1c2c9dcc3a.txt").write_bytes(b"abc\xffdef")
    (copy / "002_f2ee5d647c6cfe07.txt").unlink()
    with pytest.raises(EvidenceError) as info:
        load_evidence(copy)
    assert info.value.problems[:2] == (
        "evidence.yaml: source RICH2022: document 000_480b0b1c2c9dcc3a.txt is not UTF-8 text (invalid start byte at "
        "byte 3)",
        "evidence.yaml: source PDQ-PULM-IMT: document 002_f2ee5d647c6cfe07.txt not found in seeds/")


def test_a_source_keeps_its_study_type(registry):
    assert {key: source.study_type for key, source in registry.sources.items()} == {
        "RICH2022": "OBS-MC", "PDQ-PULM-IMT": "NARR"}


def test_an_external_entry_keeps_the_level_it_is_given(tmp_path):
    copy = tmp_path / "seeds"
    shutil.copytree(seeds_dir(), copy)
    path = copy / "evidence.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace(
        "  verification: partial (PMID secondary)\n", "  verification: partial (PMID secondary)\n  level: 2A\n", 1),
        encoding="utf-8")
    assert load_evidence(copy)["EXT-BUTRYNSKI2010"].to_dict()["level"] == "2A"


def test_an_entry_and_a_source_cannot_be_changed_once_loaded(registry):
    # What a finding cites must stay what the registry's sha256 describes.
    with pytest.raises(dataclasses.FrozenInstanceError):
        registry["RICH2022:c06"].claim = "Median tumor size was 9 cm."
    with pytest.raises(dataclasses.FrozenInstanceError):
        registry.sources["RICH2022"].file = "other.txt"


def test_what_an_entry_source_or_registry_made_in_code_is_not_given_is_none():
    # None is "not given" (an audit record's entry carries no note; a registry made in code was loaded from no
    # directory); "" would be a value that was given.
    entry = EvidenceEntry(id="EXT-LOCAL1", citation="Local guideline 2024.", claim="A claim.", verification="read")
    assert (entry.quote, entry.level, entry.source, entry.note, entry.is_seed) == (None, None, None, None, False)
    source = EvidenceSource(key="LOCAL", file="local.txt", citation="Local guideline 2024.", study_type="NARR",
                            sha256="0" * 64)
    assert source.note is None
    assert EvidenceRegistry(name="local", version="1", sources={}, entries={}, sha256="0" * 64).directory is None


def test_a_registry_that_cannot_be_read_or_is_not_yaml_says_so(tmp_path):
    with pytest.raises(EvidenceError) as info:
        load_evidence(tmp_path / "nowhere")
    assert info.value.problems == ("evidence.yaml: cannot read the evidence registry: No such file or directory",)
    copy = tmp_path / "seeds"
    copy.mkdir()
    (copy / "evidence.yaml").write_text("sources: [unclosed\n")
    with pytest.raises(EvidenceError) as info:
        load_evidence(copy)
    [problem] = info.value.problems
    assert problem.startswith("evidence.yaml: not valid YAML: while parsing a flow sequence"), problem


@pytest.mark.parametrize(("text", "expected"), [
    ("- just a list\n", ["evidence.yaml: expected a mapping with 'sources' and 'entries'"]),
    ("sources: [RICH2022]\nentries: []\n", ["evidence.yaml: 'sources' must be a mapping of source key to document"]),
])
def test_a_registry_of_the_wrong_shape_is_named_in_one_line(tmp_path, text, expected):
    copy = tmp_path / "seeds"
    copy.mkdir()
    (copy / "evidence.yaml").write_text(text)
    with pytest.raises(EvidenceError) as info:
        load_evidence(copy)
    assert list(info.value.problems) == expected


def test_every_wrong_entry_is_reported_not_only_the_first(tmp_path):
    found = _problems(tmp_path, lambda t: t.replace("- id: EXT-BUTRYNSKI2010\n", "- name: EXT-BUTRYNSKI2010\n")
                      .replace("quote: Median tumor size was 3.9 cm.", "quote: ' '"))
    assert found == ["evidence.yaml: RICH2022:c06: 'quote' must be non-empty text",
                     "evidence.yaml: entry #39: needs an 'id' string"]


def test_a_missing_source_document_does_not_stop_the_next_sources_from_loading(tmp_path):
    copy = tmp_path / "seeds"
    shutil.copytree(seeds_dir(), copy)
    (copy / "000_480b0b1c2c9dcc3a.txt").unlink()  # RICH2022's, the first source
    with pytest.raises(EvidenceError) as info:
        load_evidence(copy)
    first, *rest = info.value.problems
    assert first == "evidence.yaml: source RICH2022: document 000_480b0b1c2c9dcc3a.txt not found in seeds/"
    assert rest and all(p.startswith("evidence.yaml: RICH2022:") and p.endswith("; known: PDQ-PULM-IMT")
                        for p in rest), rest


def test_a_registry_without_a_name_or_version_is_called_evidence_with_no_version(tmp_path):
    copy = tmp_path / "seeds"
    shutil.copytree(seeds_dir(), copy)
    path = copy / "evidence.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("registry: imt-evidence\nversion: '0.1'\n", ""),
                    encoding="utf-8")
    registry = load_evidence(copy)
    assert (registry.name, registry.version) == ("evidence", "")


def test_a_source_keeps_its_note_and_one_without_a_study_type_has_an_empty_one(tmp_path):
    copy = tmp_path / "seeds"
    shutil.copytree(seeds_dir(), copy)
    path = copy / "evidence.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("    study_type: NARR\n", ""), encoding="utf-8")
    sources = load_evidence(copy).sources
    assert sources["PDQ-PULM-IMT"].study_type == ""
    assert sources["PDQ-PULM-IMT"].note == ("Narrative expert summary; it does not provide formal guidelines "
                                            "(PDQ-PULM-IMT:s24).")


def test_a_seed_entry_keeps_its_note(registry):
    assert registry["PDQ-PULM-IMT:s10"].note == ("14 patients treated with crizotinib; Mossé et al., J Clin Oncol "
                                                 "2017, a Children's Oncology Group study")


def test_an_external_entry_missing_several_fields_names_each_of_them(tmp_path):
    found = _problems(tmp_path, lambda t: t.replace("  verification: partial (PMID secondary)\n", "", 1)
                      .replace("  claim: First report of a sustained response of ALK-rearranged IMT to crizotinib.\n",
                               "  claim: ''\n", 1))
    assert found == ["evidence.yaml: EXT-BUTRYNSKI2010: an external entry needs claim, verification"]


def test_a_long_quote_not_in_its_document_is_shown_by_its_first_eighty_characters(tmp_path):
    # The message stays one readable line however long the quote: its first 80 characters name it.
    old = "Median tumor size was 3.9 cm."
    new = "Median tumor size was 4.9 cm in the cohort of one hundred and eighty-two patients reviewed here."
    found = _problems(tmp_path, lambda t: t.replace(old, new))
    assert found == ["evidence.yaml: RICH2022:c06: quote not found in 000_480b0b1c2c9dcc3a.txt (compared with "
                     f"whitespace removed): {new[:80]!r}"]


def test_an_external_entry_keeps_its_note(tmp_path):
    copy = tmp_path / "seeds"
    shutil.copytree(seeds_dir(), copy)
    path = copy / "evidence.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace(
        "  verification: partial (PMID secondary)\n",
        "  verification: partial (PMID secondary)\n  note: One patient.\n", 1), encoding="utf-8")
    assert load_evidence(copy)["EXT-BUTRYNSKI2010"].note == "One patient."
