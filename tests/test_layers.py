"""The package's layers, read from the import statements (static, no import is executed).

    science  (activations, metalearn, fused, models, data, validation, hessian, actfile, jobs, ...)
    results  (dnn_search.results: the on-disk contract, export, summary, report, dashboard)
    search   (dnn_search.search: the only code that imports Ray)
    cli      (dnn_search.cli: parses and dispatches)

Imports point down only: science imports neither Ray, nor Optuna, nor the layers above it; results
never imports Ray or the search layer; no module holds mutable state at module level (a
`global` statement or a module-level dict/list that functions write into)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dnn_search"


def _layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    if rel.parts[0] in ("search", "results"):
        return rel.parts[0]
    return "cli" if rel.name in ("cli.py", "__main__.py") else "science"


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
