"""Every test the documents name exists where they say it is: the hazard log's evidence column and SECURITY.md tell a
reader (an auditor, a reviewer) which test proves a mitigation, and give a command to run it, so a name that moved
or was renamed would leave a mitigation with no proof anyone can find.

A reference is `tests-file.py::test_name` (or `tests/tests-file.py::test_name`), or `::test_name` or `test_name` for
another test of the file named last on the same line (a table row or a line of text); `tests-file.py` alone names a
file. A name ending in "..." is a shortened name.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ("docs/safety/hazard-log.md", "SECURITY.md", "README.md", "rules/README.md", "docs/performance.md")
TOKEN = re.compile(r"`([^`\s]+)`")
FILE = re.compile(r"(?:tests/)?(test_\w+\.py)(?:::(\w+(?:\.\.\.)?))?")
NAME = re.compile(r"(::)?(test_\w+(?:\.\.\.)?)")


def references(text: str) -> list[tuple[int, str, str | None]]:
    """(line number, file, test name or None) of every reference in ``text``."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        current = None
        for token in TOKEN.findall(line):
            if (file := FILE.fullmatch(token)) is not None:
                current = file[1]
                found.append((number, current, file[2]))
            elif (name := NAME.fullmatch(token)) is not None:
                if name[1]:
                    assert current is not None, f"line {number}: `{token}` follows no file on its line"
                if current is not None:
                    found.append((number, current, name[2]))
    return found


def defined_tests(file: str) -> set[str]:
    return set(re.findall(r"^(?:async )?def (test_[A-Za-z0-9_]+)\(", (ROOT / "tests" / file).read_text(), re.M))


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_test_a_document_names_exists_in_the_file_it_names(document):
    missing = []
    for number, file, name in references((ROOT / document).read_text()):
        if not (ROOT / "tests" / file).is_file():
            missing.append(f"{document}:{number}: no tests/{file}")
        elif name is not None:
            names = defined_tests(file)
            if name.endswith("...") and not any(n.startswith(name[:-3]) for n in names) or (
                    not name.endswith("...") and name not in names):
                missing.append(f"{document}:{number}: no {name} in tests/{file}")
    assert missing == []


@pytest.mark.parametrize("document, at_least", [("docs/safety/hazard-log.md", 60), ("SECURITY.md", 10)])
def test_the_documents_name_tests(document, at_least):
    # (the check above must have something to check: the log's evidence column is made of these references)
    named = [r for r in references((ROOT / document).read_text()) if r[2] is not None]
    assert len(named) >= at_least
