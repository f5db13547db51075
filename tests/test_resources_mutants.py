"""Where the shipped rulebook and evidence are found (``_resources.py``), in each layout the package can have.

A wheel carries them inside the package (``imt_cds/_data/``), a checkout beside it; the tests in the checkout only
ever see the second. Each test here copies the package (the code under test) into a layout of its own and asks a
fresh interpreter where the directories are (tests/mutation-survivors.md, _resources.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import imt_cds

_ASK = """
import json
from imt_cds import RulebookError
from imt_cds.core._resources import rules_dir, seeds_dir
try:
    print(json.dumps({"rules": str(rules_dir()), "seeds": str(seeds_dir())}))
except RulebookError as exc:
    print(json.dumps({"code": exc.code, "problems": [p.to_dict() for p in exc.problems]}))
"""


def _layout(tmp_path: Path, *, inside: bool, beside: bool) -> Path:
    """A folder holding a copy of the package, with the data inside it, beside it, both or neither."""
    root = tmp_path / "site"
    shutil.copytree(Path(imt_cds.__file__).parent, root / "imt_cds",
                    ignore=shutil.ignore_patterns("__pycache__", "_data"))
    for where, wanted in ((root / "imt_cds" / "_data", inside), (root, beside)):
        if wanted:  # the lookup goes by each directory's marker file
            (where / "rules").mkdir(parents=True)
            (where / "rules" / "rulebook.yaml").write_text("name: test\n")
            (where / "seeds").mkdir(parents=True)
            (where / "seeds" / "evidence.yaml").write_text("sources: []\n")
    return root


def _ask(root: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-c", _ASK], cwd=root, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_an_installed_package_finds_the_copies_inside_it(tmp_path):
    root = _layout(tmp_path, inside=True, beside=False)
    assert _ask(root) == {"rules": str(root / "imt_cds" / "_data" / "rules"),
                          "seeds": str(root / "imt_cds" / "_data" / "seeds")}


def test_a_checkout_finds_the_directories_beside_the_package(tmp_path):
    root = _layout(tmp_path, inside=False, beside=True)
    assert _ask(root) == {"rules": str(root / "rules"), "seeds": str(root / "seeds")}


def test_the_copies_inside_an_installed_package_come_before_a_folder_of_the_same_name_beside_it(tmp_path):
    # Installed, the folder beside the package is site-packages: a "rules" there would belong to something else.
    root = _layout(tmp_path, inside=True, beside=True)
    assert _ask(root)["rules"] == str(root / "imt_cds" / "_data" / "rules")


def test_without_either_the_error_says_what_is_missing_and_what_to_do(tmp_path):
    root = _layout(tmp_path, inside=False, beside=False)
    assert _ask(root) == {"code": "invalid_rulebook", "problems": [{
        "file": "rules", "line": None, "rule": None, "path": None, "suggestion": None,
        "message": "the shipped rules/ directory was not found next to the package or inside it; reinstall imt-cds "
                   "or pass the directory explicitly"}]}
