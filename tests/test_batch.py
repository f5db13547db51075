"""Batch evaluation in one and in several processes: same lines, same order, same line numbers."""

from __future__ import annotations

import json
import random

from strategies import random_patient

from imt_cds.batch import run_batch


def _input(path, count=120):
    rng = random.Random(31)
    lines = [json.dumps(random_patient(rng)) for _ in range(count)]
    lines[7] = '{"age_years": "seven"}'
    lines[40] = ""
    lines[41] = json.dumps(json.loads(lines[0]))  # a repeat: served from the memo cache
    lines[99] = "{broken"
    path.write_text("\n".join(lines))  # no newline after the last line: it is still a line
    return len(lines)


def _records(path):
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for record in records:
        record.get("provenance", {}).pop("evaluated_at", None)
    return records


def test_several_processes_over_many_chunks_give_the_serial_output(tmp_path):
    source = tmp_path / "in.ndjson"
    count = _input(source)
    serial, parallel = tmp_path / "serial.ndjson", tmp_path / "parallel.ndjson"
    one = run_batch(str(source), str(serial), jobs=1, progress="never")
    two = run_batch(str(source), str(parallel), jobs=2, progress="never", chunk_bytes=1500)
    assert one == two
    assert (one.total, one.invalid, one.failed) == (count, 3, 0)
    records = _records(parallel)
    assert records == _records(serial)
    assert [r["line"] for r in records if "line" in r] == [8, 41, 100]
    assert records[41] == records[0]


def test_an_empty_input_gives_an_empty_output(tmp_path):
    source = tmp_path / "empty.ndjson"
    source.write_text("")
    out = tmp_path / "out.ndjson"
    summary = run_batch(str(source), str(out), jobs=2, progress="never")
    assert summary.total == 0 and out.read_text() == ""
