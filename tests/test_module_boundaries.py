"""The package's layering holds (README, "How it works"): one subpackage per layer, imports only downwards, no import
cycle between modules, only the engine module imports durable-rules, and the renderers and the audit package never
load the engine except to replay.

Imports are read from the source (every ``import`` statement, also those inside functions and under
``TYPE_CHECKING``), so a lazy import is held to the same layering as a top-level one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "imt_cds"

# layer -> the layers it may import (besides itself). The order of the README's picture, from the bottom up.
ALLOWED = {
    "core": set(),
    "fhir": {"core"},
    "render": {"core"},
    "authoring": {"core"},
    "audit": {"core"},
    "service": {"core", "fhir", "render", "audit"},
    "cli": {"core", "fhir", "render", "authoring", "audit", "service"},
}
# The package's two files outside the layers: its face (the public API, from the core) and ``python -m imt_cds``.
TOP_LEVEL = {"imt_cds": {"core"}, "imt_cds.__main__": {"cli"}}


def _module_name(path: Path) -> str:
    parts = ("imt_cds",) + path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    """Every module name an import statement of the file names, relative ones resolved (``from . import x`` gives
    ``package.x`` when ``x`` is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    own = _module_name(path).split(".")
    package = own if path.name == "__init__.py" else own[:-1]
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)  # kept below only when it is a module
    return names


def _internal_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {i for i in _imports(path) if i in modules and i != name} for name, path in modules.items()}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in ALLOWED) else module


def test_every_module_is_in_a_layer():
    strays = [name for name in _modules() if _layer(name) not in ALLOWED and name not in TOP_LEVEL]
    assert strays == [], f"modules outside the layer subpackages: {strays}"


def test_no_import_runs_from_a_lower_layer_to_a_higher_one_or_sideways():
    wrong = []
    for module, imported in _internal_graph().items():
        here = _layer(module)
        allowed = TOP_LEVEL[module] if module in TOP_LEVEL else ALLOWED[here] | {here}
        for target in sorted(imported):
            there = _layer(target)
            if there != "imt_cds" and there not in allowed:  # ``imt_cds`` itself: the package a submodule lives in
                wrong.append(f"{module} ({here}) imports {target} ({there})")
    assert wrong == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph.get(node, ()):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_two_modules_import_each_other_even_through_others():
    graph = _internal_graph()
    packages = {name for name, path in _modules().items() if path.name == "__init__.py"}
    for module, imported in graph.items():
        # A package's face hands its members' names on ("imt_cds.audit -> imt_cds.audit.store"); a member importing
        # a sibling through the face ("from ..audit import open_store") is no dependency of the face on the member.
        imported -= {package for package in packages if module.startswith(package + ".")}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle_through_three_modules():
    # The check above is only as good as this finder: a ring of three must come back as one component.
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_command_groups_share_helpers_only_through_the_public_common_module():
    for path in (PACKAGE / "cli").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                private = [alias.name for alias in node.names if alias.name.startswith("_")]
                assert not private, f"cli/{path.name} imports {private} from .{node.module}"


def test_only_the_engine_module_imports_durable_rules():
    importers = {path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py")
                 if any(name.lstrip(".").startswith("durable") for name in _imports(path))}
    assert importers == {"core/engine.py"}


@pytest.mark.parametrize("name", ["render/consult_note.py", "render/fhir_output.py", "render/report_html.py",
                                  "render/cards.py", "audit/recorded.py"])
def test_renderers_never_import_the_engine_or_the_audit_store(name):
    imported = _imports(PACKAGE / name)
    assert not any(i.endswith(("engine", "audit", "store", "sqlite", "postgres")) for i in imported), name


def _engine_imports(path: Path, top_level_only: bool = False) -> set[str]:
    """The imports of the file that reach the engine: its module (or a name of it), or the package's re-exports."""
    return {name for name in _imports(path, top_level_only)
            if name == "imt_cds.core.engine" or name.startswith("imt_cds.core.engine.")
            or name in ("imt_cds.Engine", "imt_cds.evaluate", "imt_cds.default_engine")}


def test_the_audit_package_builds_an_engine_only_to_replay():
    # Anywhere in a file (a function's own import too): only replay.py, and never when the package is imported.
    users = {path.name for path in (PACKAGE / "audit").glob("*.py") if _engine_imports(path)}
    assert users == {"replay.py"}
    assert _engine_imports(PACKAGE / "audit" / "replay.py", top_level_only=True) == set()


def test_only_the_worker_process_code_of_the_service_touches_the_engine():
    # The server process never evaluates (a crash in the engine must take down a worker, never the server): only
    # workers.py builds an Engine, in the worker process, so not when the module is imported.
    users = {path.name for path in (PACKAGE / "service").glob("*.py") if _engine_imports(path)}
    assert users == {"workers.py"}
    assert _engine_imports(PACKAGE / "service" / "workers.py", top_level_only=True) == set()
