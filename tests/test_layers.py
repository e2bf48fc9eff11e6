"""The layers: a module imports only its own package and the layers below it, at the top of
the module or inside a function alike, and packages import each other without cycles."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src" / "quarry"

# Top to bottom; a package may import any package of a lower rank (and its own).
LAYERS: dict[str, int] = {
    # cross-cutting: the exception tree, settings, strict YAML and JSON, dates, memory habits,
    # an ASGI app on a port until a signal (both servers), names imported on first use, numba
    "quarry": 0, "exceptions": 0, "settings": 0, "_yaml": 0, "_json": 0, "_dates": 0,
    "_memory": 0, "_listen": 0, "_lazy": 0, "_jit": 0,
    # inline SVG charts and HTML tables: the dashboard's and the notebooks' rich views
    "_svg": 0, "_html": 0, "_apidocs": 0,
    # where research steps run (local, Ray tasks): used by features, models and workflows
    "executors": 0,
    # scorers of text: pure functions of a headline, used by the data layer's text fields and
    # the models' trained head
    "text": 0,
    "data": 1,
    # MLflow set-up, the registry and model logging: infrastructure every layer above uses
    "tracking": 1,
    "features": 2,
    "signals": 3,
    "portfolio": 4,
    "models": 5, "backtest": 5,
    "workflows": 6, "jobs": 6,
    "api": 7, "serve": 7,
    # backups and restores of the job database, tracking and a store: above what they copy
    "admin": 7,
    # the data service: the store over HTTP and Flight, behind the job database's tokens
    "dataservice": 7,
    # a live stream scores with the served models' catalog (alias following)
    "stream": 8,
    # the dashboard shows the jobs, the runs, the models (served ones too) and the datasets
    "ui": 8,
    # the command line starts the services (quarry serve, quarry stream): it sits above them
    "cli": 9,
}  # fmt: skip


def _package(module: str) -> str:
    """``quarry.data._store`` -> ``data``; ``quarry`` -> ``quarry``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "quarry"


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every ``quarry`` module ``path`` imports, with its line: anywhere in the file."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("quarry")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("quarry"):
            assert node.module is not None
            found.append((node.lineno, node.module))
    return found


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        name = ".".join(p for p in rel.parts if p != "__init__")
        if "migrations" not in rel.parts:
            out.append((name, path))
    return out


# The one import across layers allowed: the root package's ``quarry.connect`` (the data
# service's client, as users call it), imported on first use, never at ``import quarry``.
ROOT_EXPORTS = {("quarry", "quarry.data._remote")}


def test_every_package_has_a_layer() -> None:
    assert {_package(name) for name, _ in _modules()} <= set(LAYERS)


@pytest.mark.parametrize(("name", "path"), _modules(), ids=[n for n, _ in _modules()])
def test_a_module_imports_nothing_above_its_layer(name: str, path: Path) -> None:
    mine = _package(name)
    upward = [
        f"line {line}: {module}"
        for line, module in _imports(path)
        if _package(module) != mine
        and LAYERS[_package(module)] >= LAYERS[mine]
        and LAYERS[mine] > 0
    ] + [
        f"line {line}: {module}"
        for line, module in _imports(path)
        if LAYERS[mine] == 0
        and _package(module) != mine
        and LAYERS[_package(module)] > 0
        and (name, module) not in ROOT_EXPORTS
    ]
    assert not upward, f"{name} imports a layer at or above its own: {upward}"


def test_modules_of_a_package_import_each_other_without_cycles() -> None:
    graph = {name: {m for _, m in _imports(path)} for name, path in _modules()}
    cycles = []
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])
    # a package's __init__ importing its own modules is how packages are built, not a cycle
    real = [c for c in cycles if not _through_init(c)]
    assert not real, real


def _through_init(cycle: str) -> bool:
    """A cycle that passes through a package's ``__init__`` (``quarry.data``) into one of its
    own modules: Python resolves those by the import order inside the package."""
    names = cycle.split(" -> ")
    return any(b.startswith(a + ".") or a.startswith(b + ".") for a, b in itertools.pairwise(names))
