"""Working copies of the shipped rulebook for tests that change or break it deliberately."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from imt_cds.core._resources import rules_dir


def copy_rulebook(tmp_path: Path) -> Path:
    target = tmp_path / "rules"
    shutil.copytree(rules_dir(), target)
    return target


def set_parameters(directory: Path, changes: dict[str, Any]) -> None:
    path = directory / "parameters.yaml"
    data = yaml.safe_load(path.read_text())
    for name, value in changes.items():
        data["parameters"][name]["value"] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def edit(directory: Path, relative: str, old: str, new: str) -> Path:
    path = directory / relative
    text = path.read_text()
    assert old in text, f"{old!r} not in {relative}"
    path.write_text(text.replace(old, new, 1))
    return path


CRIZOTINIB = "treatment/R32a-crizotinib-alk.yaml"  # a rule file the loading tests edit


def load_problems(directory: Path) -> Any:
    """The problems a rulebook directory is refused with (the test fails if it loads)."""
    import pytest

    from imt_cds import RulebookError, load_rulebook

    with pytest.raises(RulebookError) as info:
        load_rulebook(directory)
    return info.value.problems


def only(problems: Any) -> Any:
    assert len(problems) == 1, problems
    return problems[0]
