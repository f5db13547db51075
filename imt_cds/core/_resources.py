"""Where the shipped rulebook and evidence live, in a checkout and in an installed wheel.

In the repository they are the top-level ``rules/`` and ``seeds/`` directories; a wheel carries copies inside the
package (``imt_cds/_data/``), put there by the build configuration in ``pyproject.toml``.
"""

from __future__ import annotations

from pathlib import Path

from .errors import RulebookError, RulebookProblem

__all__ = ["rules_dir", "seeds_dir"]

_PACKAGE = Path(__file__).resolve().parents[1]  # imt_cds/, this file being imt_cds/core/_resources.py


def _locate(name: str, marker: str) -> Path:
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if (candidate / marker).is_file():
            return candidate
    raise RulebookError(
        [RulebookProblem(name, f"the shipped {name}/ directory was not found next to the package or inside it; "
                               "reinstall imt-cds or pass the directory explicitly")]
    )


def rules_dir() -> Path:
    return _locate("rules", "rulebook.yaml")


def seeds_dir() -> Path:
    return _locate("seeds", "evidence.yaml")
