"""The packages' layering, read from the code itself: every import points down, none goes back.

From the bottom: ``core`` (time, clock, events, Redis, locks, retries, API/admin plumbing),
``markets`` (candles, exchange reads, the market registry and beat rows), ``notifications``
(what users hear about, recorded by every app above it), the domain apps
``strategies`` < ``subscriptions`` < ``trades`` < ``backtests`` (history replayed on the same
rules), then ``execution`` (the candle-close pipeline that drives them), ``config`` (the
composition root) and, apart, ``tooling`` (simulator, demos, benchmarks), which nothing else
imports. Imports inside functions count like any other.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = (
    "core",
    "markets",
    "notifications",
    "strategies",
    "subscriptions",
    "trades",
    "backtests",
    "execution",
    "config",
    "tooling",
)

Graph = dict[str, set[str]]


def _imported_modules(source: str) -> set[str]:
    """Absolute module names a file imports, at any depth (function-local ones too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def _packages(root: Path) -> list[str]:
    return sorted(
        p.name for p in root.iterdir() if (p / "__init__.py").exists() and p.name != "tests"
    )


def package_graph(root: Path) -> Graph:
    """Top-level package -> the other top-level packages its production code imports."""
    packages = _packages(root)
    graph: Graph = {name: set() for name in packages}
    for name in packages:
        for path in (root / name).rglob("*.py"):
            if "migrations" in path.parts:
                continue  # history: migrations name the apps they depend on
            tops = {module.split(".")[0] for module in _imported_modules(path.read_text())}
            graph[name] |= (tops & set(packages)) - {name}
    return graph


def package_cycles(graph: Graph) -> list[tuple[str, ...]]:
    """Groups of packages that reach each other (strongly connected, more than one)."""
    reach = {name: _reachable(graph, name) for name in graph}
    groups = {
        tuple(sorted(other for other in graph if name in reach[other] and other in reach[name]))
        for name in graph
    }
    return sorted(group for group in groups if len(group) > 1)


def _reachable(graph: Graph, start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph.get(todo.pop(), set()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def layer_violations(graph: Graph, layers: tuple[str, ...]) -> list[str]:
    """Imports that point up (or sideways into an unknown package) in ``layers``."""
    rank = {name: i for i, name in enumerate(layers)}
    return sorted(
        f"{name} imports {target}"
        for name, targets in graph.items()
        for target in targets
        if rank.get(target, len(layers)) >= rank.get(name, -1)
    )


def _write_package(root: Path, name: str, files: dict[str, str]) -> None:
    (root / name).mkdir()
    (root / name / "__init__.py").write_text("")
    for filename, source in files.items():
        (root / name / filename).write_text(source)


def test_no_two_top_level_packages_import_each_other():
    # given the checkout's production code
    graph = package_graph(ROOT)

    # when its package cycles are computed
    cycles = package_cycles(graph)

    # then there are none
    assert cycles == []


def test_every_top_level_package_has_its_place_in_the_layers():
    # given the checkout's packages
    # when they are listed
    # then each has a layer (a new package must say where it sits)
    assert set(_packages(ROOT)) == set(LAYERS)


def test_every_import_points_down_the_layers():
    # given the checkout's import graph
    graph = package_graph(ROOT)

    # when each import is held against the layer order
    violations = layer_violations(graph, LAYERS)

    # then none points up
    assert violations == []


def test_no_production_package_imports_the_tooling():
    # given the checkout's import graph
    graph = package_graph(ROOT)

    # when the packages that import the tooling are listed
    importers = sorted(name for name, targets in graph.items() if "tooling" in targets)

    # then there are none
    assert importers == []


def test_a_cycle_in_a_synthetic_graph_is_found():
    # given a graph where a -> b -> c -> a, and d only imports a
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}

    # when its cycles are computed
    cycles = package_cycles(graph)

    # then the three packages of the loop are reported, and d is not
    assert cycles == [("a", "b", "c")]


def test_a_function_local_import_makes_a_cycle(tmp_path):
    # given two packages where only a function-local import points back
    _write_package(tmp_path, "low", {"x.py": "def f():\n    from high.y import g\n    return g\n"})
    _write_package(tmp_path, "high", {"y.py": "from low.x import f\n\ndef g():\n    return f\n"})

    # when the graph is built from the files
    graph = package_graph(tmp_path)

    # then the cycle is found, and the upward import breaks the layers
    assert package_cycles(graph) == [("high", "low")]
    assert layer_violations(graph, ("low", "high")) == ["low imports high"]


def test_migrations_do_not_count(tmp_path):
    # given a package whose migrations name another app
    _write_package(tmp_path, "low", {})
    (tmp_path / "low" / "migrations").mkdir()
    (tmp_path / "low" / "migrations" / "0001.py").write_text("import high\n")
    _write_package(tmp_path, "high", {"y.py": "import low\n"})

    # when the graph is built
    graph = package_graph(tmp_path)

    # then only the production import is an edge
    assert graph == {"high": {"low"}, "low": set()}
