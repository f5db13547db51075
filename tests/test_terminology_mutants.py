"""Value sets as the rest of the package reads them, pinned where mutation testing of core/terminology.py found no test
looking: the error for a value set the rulebook lacks, a value set without a description, and what a rulebook copy
is told when it lacks a value set the FHIR reader needs."""

from __future__ import annotations

from dataclasses import FrozenInstanceError

import pytest

from rulebook_copies import copy_rulebook, edit, load_problems

from imt_cds.core.terminology import ValueSet, ValueSetCode, parse_value_set


def test_asking_for_a_value_set_the_rulebook_lacks_names_it_and_its_file(rulebook):
    with pytest.raises(KeyError) as raised:
        rulebook.terminology["imt-diagnoses"]
    assert raised.value.args == ("the rulebook has no value set 'imt-diagnoses' (terminology/imt-diagnoses.yaml)",)


def test_a_value_set_without_a_description_has_an_empty_one():
    document = {"value_set": "local-imt", "title": "Local IMT codes",
                "codes": [{"system": "urn:oid:1.2.3", "code": "IMT", "display": "IMT", "source": "local list"}]}
    value_set, problems = parse_value_set(document, "terminology/local-imt.yaml")
    assert problems == [] and value_set is not None
    assert (value_set.name, value_set.description, value_set.file) == ("local-imt", "", "terminology/local-imt.yaml")
    assert value_set.has("urn:oid:1.2.3", "IMT") and not value_set.has("urn:oid:1.2.3", "imt")


# What an institution's copy of the rulebook is told when it lacks a value set the FHIR reader needs: the set's name
# and what it decides, so that the author knows what reading a chart loses without it.
_WHAT_EACH_REQUIRED_VALUE_SET_DECIDES = {
    "imt-diagnosis": "Condition codes (and texts) that establish an IMT diagnosis: the eligibility gate",
    "primary-cancer-conditions": "Condition codes (and texts) of a primary cancer: one not the IMT is another cancer",
    "secondary-cancer-conditions": "Condition codes (and texts) of a secondary tumour outside the lymph nodes",
    "epithelioid-imt": "morphology codes of epithelioid inflammatory myofibroblastic sarcoma",
    "tnm-distant-metastases-observation": "Observation codes of a TNM distant-metastases (M) category",
    "distant-metastasis-absent": "M-category values that say no distant metastasis (cM0)",
    "distant-metastasis-present": "M-category values that say distant metastasis (cM1, pM1 and their subgroups)",
    "history-of-metastatic-cancer": "Observation codes of mCODE's history of metastatic cancer",
    "regional-lymph-node-sites": "body sites of a secondary tumour that may be regional, never counted as distant",
    "cancer-disease-status": "Observation codes of a cancer disease status",
    "disease-worsened": "cancer disease status values that say the disease progressed",
    "alk-inhibitors": "medication codes of ALK tyrosine kinase inhibitors",
    "tumor-resection-procedures": "procedure codes of a surgical resection of a tumour",
    "tumor-site-thoracic": "body sites (an IMT Condition's bodySite) read as tumor.site thoracic",
    "tumor-site-abdominal-pelvic": "body sites (an IMT Condition's bodySite) read as tumor.site abdominal_pelvic",
    "tumor-site-genitourinary": "body sites (an IMT Condition's bodySite) read as tumor.site genitourinary",
    "tumor-site-head-neck": "body sites (an IMT Condition's bodySite) read as tumor.site head_neck",
    "gene-alk": "HGNC gene ids (a variant's gene studied) read as molecular.alk",
    "gene-ros1": "HGNC gene ids (a variant's gene studied) read as molecular.ros1",
    "gene-ntrk": "HGNC gene ids (a variant's gene studied) read as molecular.ntrk",
    "gene-ret": "HGNC gene ids (a variant's gene studied) read as molecular.ret",
    "gene-pdgfrb": "HGNC gene ids (a variant's gene studied) read as molecular.pdgfrb",
    "variant-sequence-changes": "DNA change types and molecular consequences of a change of sequence or copy number: a "
                                "Present variant described only so is not read as the tumour's fusion",
    "variant-fusions": "DNA change types and molecular consequences (codes or words), and variant names, that say a "
                       "variant is a fusion",
    "variant-somatic-origin": "genomic source classes of a tumour's own variant: a Present variant stated of another "
                              "origin (germline) is not read as the tumour's fusion",
    "variant-pathogenic-significance": "clinical significances that keep a Present variant the tumour's fusion: one "
                                       "stated otherwise (benign, uncertain) is not read as one",
}


def _missing_value_set_messages(directory) -> list[tuple[str, str]]:
    return [(p.file, p.message) for p in load_problems(directory) if p.message.startswith("missing: the FHIR reader")]


def _expected(names) -> list[tuple[str, str]]:
    return [(f"terminology/{name}.yaml",
             f"missing: the FHIR reader needs value set {name!r} ({_WHAT_EACH_REQUIRED_VALUE_SET_DECIDES[name]})")
            for name in names]


def test_each_value_set_the_fhir_reader_needs_is_reported_missing_with_what_it_decides(tmp_path):
    # All but one removed (with none at all the copy is a rules-only rulebook, which is allowed), then that one alone.
    kept = "alk-inhibitors"
    removed = [name for name in _WHAT_EACH_REQUIRED_VALUE_SET_DECIDES if name != kept]
    all_but_one = copy_rulebook(tmp_path / "all-but-one")
    for name in removed:
        (all_but_one / "terminology" / f"{name}.yaml").unlink()
    assert sorted(_missing_value_set_messages(all_but_one)) == sorted(_expected(removed))
    only_that_one = copy_rulebook(tmp_path / "only-that-one")
    (only_that_one / "terminology" / f"{kept}.yaml").unlink()
    assert _missing_value_set_messages(only_that_one) == _expected([kept])


def test_a_value_set_made_in_code_with_codes_only_matches_its_codes_and_no_text():
    # ValueSet is public: a value set built without patterns or exclusions must work, not fail on the missing ones.
    code = ValueSetCode("urn:oid:1.2.3", "IMT", "IMT", "local list")
    value_set = ValueSet("local-imt", "Local IMT codes", "", (code,))
    assert value_set.has("urn:oid:1.2.3", "IMT")
    assert not value_set.names_in_text("inflammatory myofibroblastic tumour")
    assert (value_set.text_patterns, value_set.text_exclusions, value_set.file) == ((), (), "")  # loaded from no file


def test_the_rulebooks_value_sets_and_their_codes_cannot_be_changed(rulebook):
    # The rulebook's sha256 covers the value sets: a value set or a code changed after loading would decide facts
    # that the assessment's rulebook hash does not describe.
    value_set = rulebook.terminology["imt-diagnosis"]
    with pytest.raises(FrozenInstanceError):
        value_set.codes = ()
    with pytest.raises(FrozenInstanceError):
        value_set.codes[0].code = "8825/3"
    with pytest.raises(FrozenInstanceError):
        rulebook.terminology.value_sets = {}
    assert value_set.has(value_set.codes[0].system, value_set.codes[0].code)
    assert rulebook.terminology["imt-diagnosis"] is value_set


def test_the_terminology_says_which_value_sets_it_has(rulebook):
    assert "imt-diagnosis" in rulebook.terminology
    assert "imt-diagnoses" not in rulebook.terminology


def test_a_value_set_that_has_read_texts_still_equals_and_hashes_as_one_that_has_not():
    # What a value set remembers of texts it has read is a cache, not part of the value set: two loads of the same
    # file are equal, whichever has been asked what, and a value set can be a key (of a set or dict).
    document = {"value_set": "local-imt", "title": "Local IMT codes",
                "codes": [{"system": "urn:oid:1.2.3", "code": "IMT", "display": "IMT", "source": "local list"}],
                "text_patterns": ["inflammatory myofibroblastic tumou?r"]}
    asked, _ = parse_value_set(document, "terminology/local-imt.yaml")
    fresh, _ = parse_value_set(document, "terminology/local-imt.yaml")
    assert asked.names_in_text("Inflammatory myofibroblastic tumour of the lung")
    assert asked == fresh and hash(asked) == hash(fresh) and len({asked, fresh}) == 1


def test_a_codes_display_is_found_by_its_system_and_code_together():
    # The same code text can mean different things in two systems, and a system has many codes: both must match.
    codes = (ValueSetCode("urn:oid:1", "A", "A of system 1", "list 1"),
             ValueSetCode("urn:oid:1", "B", "B of system 1", "list 1"),
             ValueSetCode("urn:oid:2", "A", "A of system 2", "list 2"))
    value_set = ValueSet("local", "Local codes", "", codes)
    assert value_set.display("urn:oid:1", "B") == "B of system 1"
    assert value_set.display("urn:oid:2", "A") == "A of system 2"
    assert value_set.display("urn:oid:2", "B") is None


def test_a_value_set_must_be_in_the_file_named_after_it_wherever_that_file_is():
    document = {"value_set": "local-imt", "title": "Local IMT codes",
                "codes": [{"system": "urn:oid:1.2.3", "code": "IMT", "display": "IMT", "source": "local list"}]}
    for right in ("local-imt.yaml", "terminology/local-imt.yaml", "site/terminology/local-imt.yaml"):
        value_set, problems = parse_value_set(document, right)
        assert problems == [] and value_set is not None and value_set.file == right
    for wrong in ("imt.yaml", "terminology/imt.yaml", "local-imt/terminology.yaml"):
        assert parse_value_set(document, wrong) == (
            None, [("value set 'local-imt' must be in a file named local-imt.yaml", "value_set")])


def test_a_code_listed_twice_is_named_with_its_system_and_the_place_of_the_repeat():
    code = {"system": "urn:oid:1.2.3", "code": "IMT", "display": "IMT", "source": "local list"}
    other = {"system": "urn:oid:1.2.3", "code": "EIMS", "display": "EIMS", "source": "local list"}
    document = {"value_set": "local-imt", "title": "Local IMT codes", "codes": [code, other, dict(code)]}
    assert parse_value_set(document, "terminology/local-imt.yaml") == (
        None, [("code urn:oid:1.2.3|IMT is listed twice", "codes[2].code")])


def test_a_value_sets_text_exclusions_are_read_from_its_file():
    document = {"value_set": "local-imt", "title": "Local IMT texts",
                "text_patterns": ["inflammatory myofibroblastic tumou?r"], "text_exclusions": ["rule out"]}
    value_set, problems = parse_value_set(document, "terminology/local-imt.yaml")
    assert problems == [] and value_set.text_exclusions == ("rule out",)
    assert value_set.names_in_text("Inflammatory myofibroblastic tumour, left lung")
    assert not value_set.names_in_text("Rule out inflammatory myofibroblastic tumour")


def test_a_value_set_with_neither_codes_nor_text_patterns_is_refused_at_its_codes():
    document = {"value_set": "local-imt", "title": "Local IMT codes", "codes": [], "text_exclusions": ["rule out"]}
    assert parse_value_set(document, "terminology/local-imt.yaml") == (
        None, [("a value set needs at least one code or text pattern", "codes")])


def test_a_value_sets_description_is_read_from_its_file():
    document = {"value_set": "local-imt", "title": "Local IMT codes", "description": "IMT codes of our pathology lab",
                "codes": [{"system": "urn:oid:1.2.3", "code": "IMT", "display": "IMT", "source": "local list"}]}
    value_set, _ = parse_value_set(document, "terminology/local-imt.yaml")
    assert value_set.description == "IMT codes of our pathology lab"


def test_a_text_pattern_that_is_not_a_regular_expression_is_named_by_its_place():
    document = {"value_set": "local-imt", "title": "Local IMT texts",
                "text_patterns": ["myofibroblastic", "inflammatory (myofibroblastic"]}
    value_set, [(message, where)] = parse_value_set(document, "terminology/local-imt.yaml")
    assert value_set is None and where == "text_patterns[1]"
    assert message.startswith("not a regular expression: "), message


# The body sites of each tumor.site are value sets (tumor-site-*.yaml): a site's list is the rulebook's, not code.


def test_a_body_site_listed_for_two_tumour_sites_is_refused_where_it_is_listed_again(tmp_path):
    directory = copy_rulebook(tmp_path / "copy")
    edit(directory, "terminology/tumor-site-abdominal-pelvic.yaml", "codes:\n",
         'codes:\n  - {system: "http://snomed.info/sct", code: "39607008", display: "Lung structure", '
         'source: "a local list"}\n')
    problems = [p for p in load_problems(directory) if "tumor.site" in p.message]
    assert [(p.file, p.path, p.line, p.message) for p in problems] == [
        ("terminology/tumor-site-abdominal-pelvic.yaml", "codes[0].code", 11,
         "code http://snomed.info/sct|39607008 is in value set 'tumor-site-thoracic' too: a body site must be one "
         "tumor.site")]


def test_a_body_site_listed_twice_is_refused_even_when_another_site_value_set_is_missing(tmp_path):
    directory = copy_rulebook(tmp_path / "copy")
    (directory / "terminology" / "tumor-site-thoracic.yaml").unlink()  # the first: the others are still checked
    edit(directory, "terminology/tumor-site-abdominal-pelvic.yaml", "codes:\n",
         'codes:\n  - {system: "http://snomed.info/sct", code: "89837001", display: "Urinary bladder structure", '
         'source: "a local list"}\n')
    assert sorted((p.file, p.path, p.message) for p in load_problems(directory)) == [
        ("terminology/tumor-site-genitourinary.yaml", "codes[0].code",
         "code http://snomed.info/sct|89837001 is in value set 'tumor-site-abdominal-pelvic' too: a body site must be "
         "one tumor.site"),
        ("terminology/tumor-site-thoracic.yaml", None,
         "missing: the FHIR reader needs value set 'tumor-site-thoracic' (body sites (an IMT Condition's bodySite) "
         "read as tumor.site thoracic)")]


def site_read(terminology, *codings):
    """The tumor.site read from a chart whose IMT Condition's body site has these (system, code) codings."""
    from datetime import date

    from imt_cds.fhir import facts_from_resources

    chart = [{"resourceType": "Patient", "id": "p1", "birthDate": "2015-01-01"},
             {"resourceType": "Condition", "id": "imt", "subject": {"reference": "Patient/p1"},
              "code": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/icd-o-3", "code": "8825/1"}]},
              "bodySite": [{"coding": [{"system": system, "code": code} for system, code in codings]}]}]
    return facts_from_resources(chart, date(2026, 1, 1), terminology=terminology).facts.tumor.site


def test_a_rulebook_copy_decides_the_site_of_a_body_site_it_adds(tmp_path, rulebook):
    """An institution adds a body structure (here SNOMED CT 62683002, mediastinal lymph node, as verified for
    regional-lymph-node-sites.yaml) to a site: the reader takes the copy's table; the shipped one reads "other"."""
    from imt_cds import load_rulebook

    directory = copy_rulebook(tmp_path / "copy")
    edit(directory, "terminology/tumor-site-thoracic.yaml", "codes:\n",
         'codes:\n  - {system: "http://snomed.info/sct", code: "62683002", display: "Mediastinal lymph node", '
         'source: "a local list"}\n')
    node = ("http://snomed.info/sct", "62683002")
    assert site_read(load_rulebook(directory).terminology, node) == "thoracic"
    assert site_read(rulebook.terminology, node) == "other"


def test_a_rulebook_copy_may_place_body_sites_of_another_code_system(tmp_path):
    """A site's value set may list codes of any system (an institution's own body-site codes): such a code is read
    as its site; one of that system that no value set lists leaves the site unknown (only a SNOMED CT body structure
    that none places is "other")."""
    from imt_cds import load_rulebook

    directory = copy_rulebook(tmp_path / "copy")
    edit(directory, "terminology/tumor-site-head-neck.yaml", "codes:\n",
         'codes:\n  - {system: "http://example.org/body-sites", code: "NECK-2", display: "Neck, level II", '
         'source: "the institution list"}\n')
    terminology = load_rulebook(directory).terminology
    local = "http://example.org/body-sites"
    assert site_read(terminology, (local, "NECK-2")) == "head_neck"
    assert site_read(terminology, (local, "NECK-3")) == "unknown"
    # the first coding a value set places decides, whichever its system
    assert site_read(terminology, (local, "NECK-2"), ("http://snomed.info/sct", "39607008")) == "head_neck"
    assert site_read(terminology, (local, "NECK-3"), ("http://snomed.info/sct", "39607008")) == "thoracic"
    assert site_read(terminology, (local, "NECK-3"), ("http://snomed.info/sct", "12345")) == "other"


# The genes of the facts (gene-*.yaml) and what says a variant is a fusion or a sequence change (variant-*.yaml) are
# value sets too: the reader holds no gene table and no list of DNA change types of its own.


def test_the_gene_value_sets_are_one_for_each_gene_of_the_facts(rulebook):
    from imt_cds.core.fact_fields import fusion_genes
    from imt_cds.core.terminology import GENE_VALUE_SETS

    assert tuple(GENE_VALUE_SETS) == fusion_genes()
    assert dict(rulebook.terminology.genes) == {
        "HGNC:427": ("alk", "ALK"), "HGNC:10261": ("ros1", "ROS1"), "HGNC:8031": ("ntrk", "NTRK1"),
        "HGNC:8032": ("ntrk", "NTRK2"), "HGNC:8033": ("ntrk", "NTRK3"), "HGNC:9967": ("ret", "RET"),
        "HGNC:8804": ("pdgfrb", "PDGFRB")}
    assert rulebook.terminology.gene_by_symbol["NTRK2"] == "HGNC:8032"


def test_a_gene_listed_for_two_genes_of_the_facts_is_refused(tmp_path):
    directory = copy_rulebook(tmp_path / "copy")
    edit(directory, "terminology/gene-ros1.yaml", "codes:\n",
         'codes:\n  - {system: "http://www.genenames.org/geneId", code: "HGNC:427", display: "ALK", '
         'source: "a local list"}\n')
    assert [(p.file, p.path, p.message) for p in load_problems(directory)] == [
        ("terminology/gene-ros1.yaml", "codes[0].code",
         "code http://www.genenames.org/geneId|HGNC:427 is in value set 'gene-alk' too: a gene must be one gene of "
         "the facts")]


@pytest.mark.parametrize("system, code", [("http://www.genenames.org", "HGNC:427"),
                                          ("http://www.genenames.org/geneId", "427"),
                                          ("http://www.genenames.org/geneId", "HGNC:0427"),
                                          ("http://example.org/genes", "ALK-LOCAL")])
def test_a_gene_value_set_lists_hgnc_ids_only(tmp_path, system, code):
    directory = copy_rulebook(tmp_path / "copy")
    edit(directory, "terminology/gene-alk.yaml", '    code: "HGNC:427"\n', f'    code: "{code}"\n')
    edit(directory, "terminology/gene-alk.yaml", '  - system: "http://www.genenames.org/geneId"\n',
         f'  - system: "{system}"\n')
    assert [(p.file, p.path, p.message) for p in load_problems(directory)] == [
        ("terminology/gene-alk.yaml", "codes[0].code",
         f"code {system}|{code} is no HGNC gene id: a gene value set lists codes of http://www.genenames.org/geneId "
         "such as HGNC:427")]


@pytest.mark.parametrize("display", ["ALK receptor tyrosine kinase", " ALK", "ALK\\n", "-ALK"])
def test_a_gene_value_sets_display_is_the_genes_symbol(tmp_path, display):
    directory = copy_rulebook(tmp_path / "copy")
    edit(directory, "terminology/gene-alk.yaml", '    display: "ALK"\n', f'    display: "{display}"\n')
    shown = display.replace("\\n", "\n")
    assert [(p.file, p.path, p.message) for p in load_problems(directory)] == [
        ("terminology/gene-alk.yaml", "codes[0].display",
         f"display {shown!r} is no gene symbol: a gene value set's display is the gene's HGNC symbol, such as ALK")]


def variant_read(terminology, gene: dict, *components):
    """The molecular facts read from a chart with one Present variant of ``gene`` and these components."""
    from datetime import date

    from imt_cds.fhir import facts_from_resources

    chart = [{"resourceType": "Patient", "id": "p1", "birthDate": "2015-01-01"},
             {"resourceType": "Condition", "id": "imt", "subject": {"reference": "Patient/p1"},
              "code": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/icd-o-3", "code": "8825/1"}]}},
             {"resourceType": "Observation", "id": "v", "status": "final", "subject": {"reference": "Patient/p1"},
              "code": {"coding": [{"system": "http://loinc.org", "code": "69548-6"}]},
              "valueCodeableConcept": {"coding": [{"system": "http://loinc.org", "code": "LA9633-4"}]},
              "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "48018-6"}]},
                             "valueCodeableConcept": gene}, *components]}]
    return facts_from_resources(chart, date(2026, 1, 1), terminology=terminology).facts.molecular


def change_type(system: str, code: str, text: str | None = None) -> dict:
    value: dict = {"coding": [{"system": system, "code": code}]}
    if text is not None:
        value["text"] = text
    return {"code": {"coding": [{"system": "http://loinc.org", "code": "48019-4"}]}, "valueCodeableConcept": value}


SO_SYSTEM = "http://www.sequenceontology.org"
NTRK2 = {"coding": [{"system": "http://www.genenames.org", "code": "HGNC:8032"}]}


def test_a_rulebook_copy_decides_which_genes_are_read_as_a_gene_of_the_facts(tmp_path, rulebook):
    """A copy without NTRK2 in gene-ntrk does not read an NTRK2 fusion as an NTRK one, by code or by symbol; the
    shipped rulebook does, by the id in any system charts write and by the symbol its display gives."""
    from imt_cds import load_rulebook

    directory = copy_rulebook(tmp_path / "copy")
    text = (directory / "terminology" / "gene-ntrk.yaml").read_text()
    start = text.index('  - system: "http://www.genenames.org/geneId"\n    code: "HGNC:8032"')
    end = text.index("  - system:", start + 1)
    (directory / "terminology" / "gene-ntrk.yaml").write_text(text[:start] + text[end:])
    copy = load_rulebook(directory).terminology
    by_symbol = {"text": "ntrk2"}
    assert variant_read(rulebook.terminology, NTRK2).ntrk.status == "positive"
    assert variant_read(rulebook.terminology, by_symbol).ntrk.status == "positive"
    assert variant_read(copy, NTRK2).ntrk.status == "unknown"
    assert variant_read(copy, by_symbol).ntrk.status == "unknown"
    assert variant_read(copy, {"coding": [{"system": "https://www.genenames.org", "code": "8031"}]}).ntrk.status \
        == "positive"


def test_a_rulebook_copy_decides_which_dna_change_types_are_a_sequence_change_and_which_say_fusion(tmp_path, rulebook):
    """A laboratory's own change-type code added to variant-sequence-changes makes a Present ALK variant described
    only by it no fusion; a word added to variant-fusions makes one that says it a fusion again."""
    from imt_cds import load_rulebook

    directory = copy_rulebook(tmp_path / "copy")
    edit(directory, "terminology/variant-sequence-changes.yaml", "codes:\n",
         'codes:\n  - {system: "http://example.org/lab-change-types", code: "PM", display: "point mutation", '
         'source: "the laboratory list"}\n')
    edit(directory, "terminology/variant-fusions.yaml", "text_patterns:\n", 'text_patterns:\n  - "chim(a|ä)r"\n')
    copy = load_rulebook(directory).terminology
    alk = {"coding": [{"system": "http://www.genenames.org", "code": "HGNC:427"}]}
    local = change_type("http://example.org/lab-change-types", "PM")
    assert variant_read(rulebook.terminology, alk, local).alk.status == "positive"
    assert variant_read(copy, alk, local).alk.status == "unknown"
    # A Sequence Ontology id is read by its code, whatever the system's spelling; another system's code by both.
    for system in ("http://sequenceontology.org", "http://www.sequenceontology.org/"):
        assert variant_read(copy, alk, change_type(system, "SO:1000002")).alk.status == "unknown"
    assert variant_read(copy, alk, change_type("http://example.org/other", "PM")).alk.status == "positive"
    worded = {"code": {"coding": [{"system": "http://loinc.org", "code": "81252-9"}]},
              "valueCodeableConcept": {"text": "EML4-ALK, chimäres Transkript"}}
    assert variant_read(copy, alk, local, worded).alk.status == "positive"
    assert variant_read(rulebook.terminology, alk, change_type(SO_SYSTEM, "SO:1000002"), worded).alk.status \
        == "unknown"
    worded["valueCodeableConcept"]["text"] = "EML4-ALK, Transkript"
    assert variant_read(copy, alk, local, worded).alk.status == "unknown"


def test_a_partner_gene_coded_without_a_display_is_named_by_its_gene_value_sets_symbol(rulebook):
    alk = {"coding": [{"system": "http://www.genenames.org", "code": "HGNC:427"}]}
    ntrk3 = loinc_component("48018-6", "http://www.genenames.org", "HGNC:8033")  # the second gene studied
    molecular = variant_read(rulebook.terminology, alk, ntrk3)
    assert (molecular.alk.fusion_partner, molecular.ntrk.fusion_partner) == ("NTRK3", "ALK")


def loinc_component(code: str, value_system: str, value_code: str) -> dict:
    return {"code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "valueCodeableConcept": {"coding": [{"system": value_system, "code": value_code}]}}


def test_a_rulebook_copy_decides_which_origins_and_significances_keep_a_variant_the_tumours_fusion(tmp_path, rulebook):
    """A laboratory's own code for a somatic origin, or for a significance its team counts as pathogenic, added to
    variant-somatic-origin or variant-pathogenic-significance: the copy reads a Present ALK variant stating it as the
    tumour's fusion; the shipped rulebook does not (its status unknown). The shipped codes are matched by system and
    code: LOINC's Somatic under another system is no somatic origin."""
    from imt_cds import load_rulebook

    directory = copy_rulebook(tmp_path / "copy")
    local = "http://example.org/lab-answers"
    for name, code in (("variant-somatic-origin", "SOM"), ("variant-pathogenic-significance", "P5")):
        edit(directory, f"terminology/{name}.yaml", "codes:\n",
             f'codes:\n  - {{system: "{local}", code: "{code}", display: "{code}", source: "the laboratory list"}}\n')
    copy = load_rulebook(directory).terminology
    alk = {"coding": [{"system": "http://www.genenames.org", "code": "HGNC:427"}]}
    for stated in (loinc_component("48002-0", local, "SOM"), loinc_component("53037-8", local, "P5")):
        assert variant_read(copy, alk, stated).alk.status == "positive", stated
        assert variant_read(rulebook.terminology, alk, stated).alk.status == "unknown", stated
    for shipped in (loinc_component("48002-0", "http://loinc.org", "LA6684-0"),
                    loinc_component("53037-8", "http://loinc.org", "LA6668-3"),
                    loinc_component("53037-8", "http://loinc.org", "LA26332-9")):
        assert variant_read(rulebook.terminology, alk, shipped).alk.status == "positive", shipped
    elsewhere = loinc_component("48002-0", "http://example.org/other", "LA6684-0")
    assert variant_read(rulebook.terminology, alk, elsewhere).alk.status == "unknown"


def test_a_gene_is_read_by_its_symbol_whatever_the_case_of_the_value_sets_display(tmp_path):
    """HGNC symbols mix cases ("C1orf112"), and a chart's text is read case-blind: a copy whose display is written
    "Alk" still reads a gene named "ALK" in text only."""
    from imt_cds import load_rulebook

    directory = copy_rulebook(tmp_path / "copy")
    edit(directory, "terminology/gene-alk.yaml", '    display: "ALK"\n', '    display: "Alk"\n')
    terminology = load_rulebook(directory).terminology
    assert variant_read(terminology, {"text": "ALK"}).alk.status == "positive"
    assert variant_read(terminology, {"text": "alk"}).alk.status == "positive"
