"""dnn_search: distributed search for meta-learned diverse activation functions.

The Python API, importable from here (loaded on first use, so `import dnn_search` stays cheap and
never imports torch, Ray or Optuna):

- `MetaConfig`, `MetaLearner`: one meta-learning run (`MetaLearner.from_dataset(cfg, data)`);
- `load_dataset(name, data_path=None)`: a registered dataset (x_train, y_train, x_test, y_test);
- `load_activations(path)`: learned activations from an .npz (exact) or an original .txt file;
- `open_search(name_or_dir, storage="results")`: a finished (or running) search's tables: `.trials`,
  `.steps`, `.validation`, `.hessian` (pandas), `.record` (search.json), `.study` (Optuna);
- `Task`, `register_task`, `register_dataset`, `register_base`: the extension points.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "MetaConfig": ("dnn_search.metalearn", "MetaConfig"),
    "MetaLearner": ("dnn_search.metalearn", "MetaLearner"),
    "load_dataset": ("dnn_search.data", "load_dataset"),
    "load_activations": ("dnn_search.actfile", "read_activation_file"),
    "open_search": ("dnn_search.results.report_data", "open_search"),
    "Task": ("dnn_search.tasks.base", "Task"),
    "register_task": ("dnn_search.tasks.registry", "register_task"),
    "register_dataset": ("dnn_search.tasks.registry", "register_dataset"),
    "register_base": ("dnn_search.activations", "register_base"),
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'dnn_search' has no attribute {name!r}")
    module, attribute = _API[name]
    return getattr(importlib.import_module(module), attribute)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
