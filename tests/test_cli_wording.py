"""Counts in the command line's summaries read as English: "1 flag", "2 flags", never "1 flags" or "line(s)"."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(sys.executable).with_name("imt-cds")
ONE_FLAG = '{"patient_id": "one-flag", "symptoms": {"respiratory": true}}'  # 7 recommendations/requests, 1 flag
NO_FLAG = '{"patient_id": "no-flag", "age_years": 8}'  # 7 recommendations/requests, no flag


def run(*args, stdin=None):
    result = subprocess.run([str(SCRIPT), *map(str, args)], input=stdin, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result


def test_audit_list_and_verify_count_in_singular_and_plural(tmp_path):
    db = tmp_path / "audit.sqlite"
    run("evaluate", "-", "--audit", db, stdin=ONE_FLAG)
    assert "audit trail intact: 1 record;" in run("audit", "verify", "--db", db).stdout
    run("evaluate", "-", "--audit", db, stdin=NO_FLAG)
    one, none = run("audit", "list", "--db", db).stdout.splitlines()[1:]
    assert "one-flag" in one and one.endswith("7 recommendations/requests, 1 flag, 0 withheld")
    assert "no-flag" in none and none.endswith("7 recommendations/requests, 0 flags, 0 withheld")
    assert "audit trail intact: 2 records;" in run("audit", "verify", "--db", db).stdout


def test_the_batch_summary_counts_lines_in_singular_and_plural(tmp_path):
    source = tmp_path / "in.ndjson"
    source.write_text(ONE_FLAG + "\n")
    assert "imt-cds batch: 1 line: 1 evaluated, 0 invalid" in run("batch", source, "-o", tmp_path / "o").stderr
    source.write_text(ONE_FLAG + "\n" + NO_FLAG + "\n")
    assert "imt-cds batch: 2 lines: 2 evaluated, 0 invalid" in run("batch", source, "-o", tmp_path / "o").stderr
