"""Reading and writing the frozen-output files of the golden tests (tests/fixtures/*/golden.json.gz).

Each golden script (cards_golden.py, consult_note_golden.py, explain_golden.py) builds its cases and hands them to
``write_command``; its test reads them back with ``load``. The files are gzipped JSON written with ``mtime=0``, so
writing the same cases twice gives the same bytes (a regenerated file differs only where an output changed).
"""

from __future__ import annotations

import gzip
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def load(path: Path) -> Any:
    return json.loads(gzip.decompress(path.read_bytes()))


def write(path: Path, cases: Any, *, indent: int) -> int:
    """Write ``cases`` to ``path``; returns the size of the JSON text. Key order is kept (renderers follow it);
    'surrogatepass' keeps the lone surrogates of the hostile text cases, which ``load`` reads back as they were."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(cases, ensure_ascii=False, indent=indent).encode("utf-8", "surrogatepass")
    path.write_bytes(gzip.compress(text, compresslevel=9, mtime=0))
    return len(text)


def write_command(argv: Sequence[str], *, usage: str, path: Path, build: Callable[[], Any], indent: int,
                  describe: Callable[[Any], str]) -> int:
    """The command line of a golden script: ``--write`` (a deliberate act) builds the cases and overwrites the file;
    anything else prints the usage and exits 2."""
    if list(argv) != ["--write"]:
        print(f"usage: {usage}", file=sys.stderr)
        return 2
    cases = build()
    size = write(path, cases, indent=indent)
    print(f"wrote {describe(cases)} to {path.relative_to(ROOT)} ({size:,} bytes of JSON, "
          f"{path.stat().st_size:,} gzipped)")
    return 0
