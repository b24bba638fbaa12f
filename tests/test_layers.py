"""The package's layers, read from the import statements (static, no import is executed).

    science  (activations, metalearn, fused, models, data, validation, hessian, actfile, jobs, ...)
    results  (dnn_search.results: the on-disk contract, export, summary, report, dashboard)
    search   (dnn_search.search: the only code that imports Ray)
    cli      (dnn_search.cli: parses and dispatches, a module per group of commands)

Imports point down only: science imports neither Ray, nor Optuna, nor the layers above it; results
never imports Ray or the search layer; no module holds mutable state at module level (a
`global` statement or a module-level dict/list that functions write into)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dnn_search"


def _layer(path: Path, package: Path = PACKAGE) -> str:
    rel = path.relative_to(package)
    if rel.parts[0] in ("search", "results", "cli"):
        return rel.parts[0]
    return "cli" if rel.name == "__main__.py" else "science"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


FORBIDDEN = {
    "science": ("ray", "optuna", "optuna_dashboard", "dnn_search.search", "dnn_search.results", "dnn_search.cli"),
    "results": ("ray", "dnn_search.search", "dnn_search.cli"),
    "search": ("dnn_search.cli",),
    "cli": (),
}
MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES])
def test_imports_point_down(path):
    layer = _layer(path)
    bad = sorted(name for name in _imports(path)
                 if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[layer]))
    assert not bad, f"{path.relative_to(PACKAGE)} ({layer} layer) imports {bad}"


# Process-wide caches of compiled code (what functools.cache would hold): a kernel compiled once per
# process, not state that a run's behaviour depends on.
COMPILED_CODE_CACHES = {("fused.py", "_compiled"), ("native.py", "_state")}


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES])
def test_no_module_level_mutable_state(path):
    tree = ast.parse(path.read_text(), str(path))
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Global)], "a `global` statement"
    for node in tree.body:  # module-level assignments of empty mutable containers, filled at run time
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, (ast.Dict, ast.List, ast.Set)):
            value = node.value
            empty = not (value.keys if isinstance(value, ast.Dict) else value.elts)
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            if isinstance(target, ast.Name) and (path.name, target.id) in COMPILED_CODE_CACHES:
                continue
            assert not empty, f"line {node.lineno}: an empty module-level container (mutable state)"


def test_only_the_search_layer_imports_ray():
    users = sorted(str(p.relative_to(PACKAGE)) for p in MODULES
                   if any(n == "ray" or n.startswith("ray.") for n in _imports(p)))
    assert users and all(u.startswith("search/") for u in users), users


def test_the_check_can_fail(tmp_path):
    """The scan sees an upward import (a science module importing Ray), so the tests above have teeth."""
    bad = tmp_path / "mod.py"
    bad.write_text("def f():\n    from ray import tune\n    import optuna as o\n")
    assert {"ray", "ray.tune", "optuna"} <= _imports(bad)


def _module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_imports(path: Path, known: set[str], package: Path = PACKAGE) -> set[str]:
    """The package's own modules that PATH imports, at any depth (function-local imports included)."""
    return {n for n in _imports(path) if n in known} - {_module_name(path, package)}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of GRAPH: its strongly connected components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _science_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    science = {_module_name(p, package): p for p in sorted(package.rglob("*.py")) if _layer(p, package) == "science"}
    return {m: _package_imports(p, set(science), package) for m, p in science.items()}


def test_data_and_dynamics_do_not_import_each_other():
    """Issue 18: the loaders (data) and the physics trajectories (dynamics) each build their Dataset
    from dnn_search.dataset and cache through dnn_search.cache; neither imports the other, not even
    inside a function."""
    known = {_module_name(p) for p in MODULES}
    assert "dnn_search.dynamics" not in _package_imports(PACKAGE / "data.py", known)
    assert "dnn_search.data" not in _package_imports(PACKAGE / "dynamics.py", known)


def test_science_layer_has_no_import_cycles():
    """Imports inside the science layer point one way (function-local imports count): a cycle is how
    two concepts end up importing each other lazily to dodge an ImportError."""
    assert _cycles(_science_graph()) == []


def test_the_cycle_check_can_fail(tmp_path):
    """The scan sees a cycle made of function-local imports, so the test above has teeth."""
    package = tmp_path / "dnn_search"
    package.mkdir()
    (package / "a.py").write_text("def f():\n    from dnn_search.b import g\n")
    (package / "b.py").write_text("from dnn_search import c\n")
    (package / "c.py").write_text("def h():\n    import dnn_search.a\n")
    assert _cycles(_science_graph(package)) == [["dnn_search.a", "dnn_search.b", "dnn_search.c"]]
