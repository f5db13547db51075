"""The rulebook archive's details that mutation testing of audit/archive.py found no test reading: that an archive
cannot be changed once made, the exact words of its refusals and of a tampered file, and writing it out into a folder
that already holds it or into nested folders."""

from __future__ import annotations

import dataclasses
import re

import pytest
from rulebook_copies import CRIZOTINIB, copy_rulebook, edit

from imt_cds import load_rulebook
from imt_cds.audit.archive import RulebookArchive, _first_line
from imt_cds.core.errors import AuditError, RulebookError, RulebookProblem


@pytest.fixture(scope="module")
def archive(rulebook):
    return RulebookArchive.collect(rulebook)


def test_an_archive_cannot_be_changed_once_made(archive):
    with pytest.raises(dataclasses.FrozenInstanceError):
        archive.version = "9.9.9"  # type: ignore[misc]


def test_files_that_no_longer_load_are_refused_naming_the_folder_and_the_rulebook(tmp_path):
    directory = copy_rulebook(tmp_path)
    rulebook = load_rulebook(directory)
    edit(directory, CRIZOTINIB, "when:", "whenn:")
    with pytest.raises(AuditError) as caught:
        RulebookArchive.collect(rulebook)
    assert re.fullmatch(rf"the rulebook files in {re.escape(str(directory))} no longer load \(.+\); "
                        rf"cannot archive rulebook {re.escape(rulebook.name)} {re.escape(rulebook.version)}",
                        str(caught.value)), str(caught.value)


@pytest.mark.parametrize(("count", "expected"), [(1, "a.yaml: first"), (2, "a.yaml: first (and 1 more)"),
                                                 (3, "a.yaml: first (and 2 more)")])
def test_a_refusal_names_the_first_problem_and_counts_the_others(count, expected):
    problems = [RulebookProblem("a.yaml", "first")] + [RulebookProblem("b.yaml", f"other {n}") for n in range(1, count)]
    assert _first_line(RulebookError(problems)) == expected


def test_a_file_altered_in_the_store_is_named_with_what_is_wrong_with_it(archive):
    (part, path), digest = sorted(archive.file_digests().items())[0]
    stored = dataclasses.replace(archive, stored_digests={**archive.file_digests(), (part, path): "0" * 64})
    assert stored.problems({}) == [
        f"rulebook archive: {archive.name} {archive.version} ({archive.sha256[:12]}): file {part}/{path} was altered "
        "(its bytes no longer hash to the sha256 it was archived under)"]


def test_an_archive_is_written_out_again_into_the_folder_that_holds_it(archive, tmp_path):
    first = archive.materialize(tmp_path)
    assert archive.materialize(tmp_path) == first == (tmp_path / "rules", tmp_path / "seeds")


def test_files_in_nested_folders_are_written_out_with_their_folders(tmp_path):
    nested = RulebookArchive("0" * 64, "r", "1", {("rules", "a/b/c.yaml"): b"x: 1\n", ("seeds", "d/e.txt"): b"e"})
    rules, seeds = nested.materialize(tmp_path)
    assert (rules / "a" / "b" / "c.yaml").read_bytes() == b"x: 1\n"
    assert (seeds / "d" / "e.txt").read_bytes() == b"e"
