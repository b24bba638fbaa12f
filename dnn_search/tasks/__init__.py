"""Tasks: the learning problems that meta-learning, validation and Hessian trials serve.

See `dnn_search.tasks.base.Task` for the interface and docs/design.md for the science. A new task is
one new module in this package that subclasses Task and calls `register_task` and `register_dataset`.
"""
from dnn_search.tasks.base import Task
from dnn_search.tasks.registry import (DatasetEntry, canonical_dataset, dataset_entry, dataset_names,
                                       get_task, register_dataset, register_task, task_for_dataset,
                                       task_names)

__all__ = ["Task", "DatasetEntry", "canonical_dataset", "dataset_entry", "dataset_names", "get_task",
           "register_dataset", "register_task", "task_for_dataset", "task_names"]
