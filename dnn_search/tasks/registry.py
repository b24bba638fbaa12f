"""Name -> factory tables for tasks and datasets.

Each module in `dnn_search.tasks` (other than this one and `base`) defines one task and registers
it together with its datasets; the modules are imported on the first lookup, so adding a task means
adding one module. A dataset entry maps a dataset name to its loader and to the task that it serves.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from functools import cache
from typing import Callable

from dnn_search.registry import Registry

_INFRASTRUCTURE = {"base", "registry"}


@cache
def _import_task_modules() -> None:
    """Import every task module once, so that their register_* calls have run before a lookup."""
    package = importlib.import_module("dnn_search.tasks")
    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in _INFRASTRUCTURE:
            importlib.import_module(f"dnn_search.tasks.{info.name}")


@dataclass(frozen=True)
class DatasetEntry:
    """How to load a dataset (`loader(data_path)` -> Dataset) and which task it serves.
    `needs_data_path`: the loader reads local files from --data_path (MNIST, CIFAR-10) rather than
    generating its data (MNIST-1D, the physics systems), so a pipeline must be given one."""

    name: str
    loader: Callable
    task: str
    description: str = ""
    needs_data_path: bool = False


TASKS: Registry[Callable] = Registry("task", _import_task_modules)
DATASETS: Registry[DatasetEntry] = Registry("dataset", _import_task_modules)


def register_task(name: str, factory: Callable) -> Callable:
    """Make a task available by name (datasets name the task they serve).

    Args:
        name: the task's name, e.g. "classification" or "hnn".
        factory: a callable returning a `Task` (usually the Task subclass itself).

    Returns:
        `factory`, unchanged, so that this works as a class decorator.

    Raises:
        ValueError: when `name` is already registered.
    """
    return TASKS.register(name, factory)


def get_task(name: str):
    return TASKS.get(name)()


def task_names() -> list[str]:
    return TASKS.names()


def register_dataset(name: str, loader: Callable, task: str, aliases: tuple[str, ...] = (),
                     description: str = "", needs_data_path: bool = False) -> DatasetEntry:
    """Make a dataset available by name in every command (`--dataset NAME`) and in `load_dataset`.

    Args:
        name: the dataset's name, e.g. "MNIST1D".
        loader: `loader(data_path)` returns a `data.Dataset` (data_path: a folder or None).
        task: the name of the registered task the data serves.
        aliases: other names accepted for it (case-insensitive, as the name).
        description: one line for `--help` and error messages.
        needs_data_path: whether the loader reads local files (a clear error when no path is given).

    Returns:
        The registered `DatasetEntry`.

    Raises:
        ValueError: when the name or an alias is already registered.
    """
    return DATASETS.register(name, DatasetEntry(name, loader, task, description, needs_data_path), aliases)


def dataset_entry(name: str) -> DatasetEntry:
    return DATASETS.get(name)


def dataset_names() -> list[str]:
    return DATASETS.names()


def canonical_dataset(name: str) -> str:
    """'mnist1d', 'MNIST-1D' -> 'MNIST1D'; 'cifar10' -> 'CIFAR'; a UserError listing the choices otherwise."""
    return DATASETS.canonical(name)


def task_for_dataset(name: str):
    return get_task(dataset_entry(name).task)
