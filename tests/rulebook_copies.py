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
