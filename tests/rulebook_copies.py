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


def add_flag(directory: Path, when: Any, examples: list[tuple[Any, bool]], *, rule_id: str = "R00",
             finding: str = "FLAG_ADDED_BY_TEST", title: str = "A flag added by the test") -> Path:
    """Write a risk-flag rule into ``directory``'s flags/ as an author adds one (no evidence: strength DESIGN) and
    give its path. ``when``: its condition; ``examples``: its (facts, fires) examples, named by their order. A
    condition or facts may be given as the rule files' YAML text ("{fact: age_years, gt: 50}") or as data."""
    def data(value: Any) -> Any:
        return yaml.safe_load(value) if isinstance(value, str) else value

    rule = {
        "id": rule_id, "version": "1.0.0", "title": title, "kind": "risk_flag", "strength": "DESIGN", "evidence": [],
        "when": data(when),
        "then": [{"finding": finding, "title": title, "summary": f"{title}.", "indicator": "warning"}],
        "examples": [{"name": f"example {number}", "facts": data(facts), "fires": fires}
                     for number, (facts, fires) in enumerate(examples, 1)],
    }
    path = directory / "flags" / f"{rule_id}-added.yaml"
    path.write_text(yaml.safe_dump(rule, sort_keys=False))
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
