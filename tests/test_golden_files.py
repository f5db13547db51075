"""The golden files' writer: what it writes reads back as it was, and rewriting a shipped file changes no byte (so a
regenerated file differs only where an output changed)."""

from __future__ import annotations

from pathlib import Path

import cards_golden
import consult_note_golden
import explain_golden
import golden_files
import pytest
import report_html_golden


def test_cases_read_back_as_written(tmp_path: Path) -> None:
    cases = {"z": ["lone surrogate \ud800 kept", "émigré ≥ 5 µg"], "a": {"order": "kept", "n": 1.5}}
    path = tmp_path / "deep" / "golden.json.gz"
    golden_files.write(path, cases, indent=1)
    back = golden_files.load(path)
    assert back == cases
    assert list(back) == ["z", "a"]
    first = path.read_bytes()
    golden_files.write(path, cases, indent=1)
    assert path.read_bytes() == first


@pytest.mark.parametrize("script", [cards_golden, consult_note_golden, explain_golden, report_html_golden],
                         ids=["cards", "consult-notes", "explain", "report-html"])
def test_rewriting_a_shipped_file_changes_no_byte(script, tmp_path: Path) -> None:
    copy = tmp_path / "golden.json.gz"
    golden_files.write(copy, golden_files.load(script.GOLDEN), indent=script.JSON_INDENT)
    assert copy.read_bytes() == script.GOLDEN.read_bytes()


def test_without_write_it_prints_the_usage_and_writes_nothing(tmp_path: Path, capsys) -> None:
    path = tmp_path / "golden.json.gz"
    status = golden_files.write_command([], usage="python x.py --write", path=path, build=lambda: [1],
                                        indent=1, describe=str)
    assert status == 2
    assert capsys.readouterr().err == "usage: python x.py --write\n"
    assert not path.exists()
