"""Print, per safety property, the share of generated examples that meet its premise.

    .venv/bin/python tests/premise_share.py [EXAMPLES]     (default 200 examples per property)

The examples are drawn exactly as the property tests draw them (test_safety_properties.PREMISES). A property whose
premise is rarely met is mostly tested on patients where it holds vacuously.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_safety_properties import PREMISES, premise_shares  # noqa: E402

from imt_cds import Engine  # noqa: E402


def main() -> None:
    examples = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    shares = premise_shares(Engine(), examples)
    print(f"{'property':>8}  {'premise met':>11}  premise")
    for number, (met, drawn) in shares.items():
        print(f"{number:>8}  {met:>4}/{drawn:<4} {met / drawn:>4.0%}  {PREMISES[number].text}")


if __name__ == "__main__":
    main()
