"""The package's layering holds: only the engine module imports durable-rules, and the renderers (text, FHIR,
HTML) read assessment documents without importing the engine or the audit store."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "imt_cds"


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(("." * node.level) + (node.module or ""))
    return names


def test_only_the_engine_module_imports_durable_rules():
    importers = {path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py")
                 if any(name.lstrip(".").startswith("durable") for name in _imports(path))}
    assert importers == {"engine.py"}


def test_renderers_never_import_the_engine_or_the_audit_store():
    for name in ("consult_note.py", "fhir_output.py", "report_html.py", "audit/recorded.py"):
        imported = _imports(PACKAGE / name)
        assert not any(i.endswith(("engine", "audit", "store", "sqlite", "postgres")) for i in imported), name


def test_the_audit_package_builds_an_engine_only_to_replay():
    for path in (PACKAGE / "audit").glob("*.py"):
        top = _imports(path, top_level_only=True)
        assert not any(i.endswith("engine") for i in top), path.name
