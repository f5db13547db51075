"""The rulebook archive on its own (``RulebookArchive``): what it refuses to archive or to load, and the one-line
messages that say why, exactly as an operator reads them. The stores and replays that use it are tested in
test_audit_store.py, test_audit_replay.py and test_audit_integrity.py.

Every archive here is collected from a real rulebook loaded from files, and loaded by really rebuilding it.
"""

from __future__ import annotations

import dataclasses
import errno

import pytest
from rulebook_copies import copy_rulebook, set_parameters

from imt_cds import load_rulebook
from imt_cds.audit.archive import RulebookArchive
from imt_cds.core.errors import AuditError, ReplayError


@pytest.fixture(scope="module")
def archive(rulebook):
    return RulebookArchive.collect(rulebook)


def test_an_archive_shows_its_rulebook_not_its_files_when_printed(archive, rulebook):
    # The files are the whole rulebook (and the stored digests one line per file): a log line stays short.
    stored = dataclasses.replace(archive, stored_digests=archive.file_digests())
    assert repr(stored) == (f"RulebookArchive(sha256={rulebook.sha256!r}, name={rulebook.name!r}, "
                            f"version={rulebook.version!r})")


def test_a_rulebook_not_loaded_from_files_cannot_be_archived(rulebook):
    in_memory = dataclasses.replace(rulebook, directory=None)
    with pytest.raises(AuditError) as caught:
        RulebookArchive.collect(in_memory)
    assert str(caught.value) == (f"rulebook {rulebook.name} {rulebook.version} was not loaded from files, so it "
                                 "cannot be archived; load it with load_rulebook(rules_dir, seeds_dir)")


def test_files_edited_after_loading_are_refused_naming_both_digests(tmp_path):
    directory = copy_rulebook(tmp_path)
    loaded = load_rulebook(directory)
    set_parameters(directory, {"size_risk_threshold_cm": 7.0})
    edited = load_rulebook(directory)
    with pytest.raises(AuditError) as caught:
        RulebookArchive.collect(loaded)
    assert str(caught.value) == (f"the rulebook files in {directory} changed after the rulebook was loaded (they "
                                 f"hash to {edited.sha256[:12]}, the engine's rulebook to {loaded.sha256[:12]}): "
                                 "reload the rulebook before recording")


def test_file_lists_that_differ_from_the_records_are_named_oldest_record_first(archive):
    label = f"{archive.name} {archive.version} ({archive.sha256[:12]})"
    problems = archive.problems({"f" * 64: 9, archive.files_sha256(): 1, "e" * 64: 4})
    assert problems == [f"rulebook archive: {label}: its files are not the ones record #{seq} recorded (a file was "
                        "altered, added, removed or renamed since it was archived)" for seq in (4, 9)]


def test_an_archive_listed_under_another_name_is_refused_when_loaded(archive):
    renamed = dataclasses.replace(archive, name="other-rulebook")
    with pytest.raises(ReplayError) as caught:
        renamed.load()
    assert str(caught.value) == (f"archived rulebook {archive.sha256[:12]} is listed as other-rulebook "
                                 f"{archive.version} but rebuilds as {archive.name} {archive.version}: the archive "
                                 "was altered")


def test_an_archive_listed_under_another_sha256_is_refused_when_loaded(archive):
    listed = dataclasses.replace(archive, sha256="0" * 64)
    with pytest.raises(ReplayError) as caught:
        listed.load()
    assert str(caught.value) == (f"archived rulebook {archive.name} {archive.version} rebuilds to sha256 "
                                 f"{archive.sha256}, not {'0' * 64}: the archive was altered")


def test_a_file_whose_name_is_also_a_directory_cannot_be_written_out(archive, tmp_path):
    clashing = dataclasses.replace(archive, files={("rules", "a"): b"x", ("rules", "a/b"): b"y"})
    with pytest.raises(ReplayError) as caught:
        clashing.materialize(tmp_path)
    assert str(caught.value) == (f"archived rulebook {archive.sha256[:12]} cannot be written out: rules/a/b: "
                                 f"[Errno {errno.EEXIST}] File exists: '{tmp_path / 'rules' / 'a'}'")


def test_an_archive_that_no_longer_loads_names_its_first_problem_and_how_many_more(archive):
    label = f"archived rulebook {archive.name} {archive.version} ({archive.sha256[:12]}) does not load with this " \
            "version of imt-cds"
    one = dataclasses.replace(archive, files={**archive.files, ("seeds", "evidence.yaml"): b"- x"})
    with pytest.raises(ReplayError) as caught:
        one.load()
    assert str(caught.value) == f"{label}: evidence.yaml: expected a mapping with 'sources' and 'entries'"
    several = dataclasses.replace(archive, files={**archive.files, ("rules", "parameters.yaml"): b"not: [valid"})
    with pytest.raises(ReplayError) as caught:
        several.load()
    problems = caught.value.__cause__.problems  # the rulebook error it stands for, one problem per line
    assert len(problems) > 1
    assert str(caught.value) == f"{label}: {problems[0]} (and {len(problems) - 1} more)"


@pytest.mark.parametrize("name", ["../outside.yaml", "a/../../../outside.yaml", "{tmp}/outside.yaml", ""])
def test_an_archived_file_name_that_would_leave_its_directory_is_refused_and_nothing_is_written(archive, tmp_path,
                                                                                                   name):
    name = name.format(tmp=tmp_path)  # an absolute name points into this test's directory, never elsewhere
    hostile = dataclasses.replace(archive, files={("rules", name): b"x"})
    target = tmp_path / "scratch"
    with pytest.raises(ReplayError) as caught:
        hostile.materialize(target)
    assert str(caught.value) == f"archived rulebook {archive.sha256[:12]} holds an unsafe file name rules/{name}"
    assert not list(tmp_path.rglob("outside.yaml"))


def test_a_rulebook_file_removed_after_loading_cannot_be_archived(tmp_path):
    directory = copy_rulebook(tmp_path)
    loaded = load_rulebook(directory)
    (directory / "parameters.yaml").unlink()
    with pytest.raises(AuditError) as caught:
        RulebookArchive.collect(loaded)
    assert str(caught.value) == (f"cannot read the rulebook files in {directory} to archive them: [Errno "
                                 f"{errno.ENOENT}] No such file or directory: '{directory / 'parameters.yaml'}'")
