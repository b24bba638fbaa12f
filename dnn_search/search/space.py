"""Declarative search spaces (`search_spaces/*.yaml`): loading, validation, resolution.

A space file says what to optimise (metric, mode), how to sample (Optuna sampler), how to stop
poor trials early (Ray Tune scheduler), how many trials to run, which meta-learning settings are
fixed and which are sampled. Everything is checked before anything starts: every problem is one
`UserError` naming the key path (`params.outer_lr.low: ...`), so the CLI exits with status 2.

This module imports neither Ray nor Optuna; `dnn_search.search` turns a `SearchSpace` into them.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from dnn_search.errors import UserError
from dnn_search.metalearn import MetaConfig
from dnn_search.results.rungs import horizon
from dnn_search.search.checker import Checker, read_yaml_file
from dnn_search.search.pipeline_spec import PipelineSpec, parse_pipeline
from dnn_search.search.samplers import SamplerSpec, parse_sampler
from dnn_search.search.schedulers import SchedulerSpec, check_scheduler, parse_scheduler

# Metrics every meta-learning trial reports after each outer step, with their natural direction.
PARAM_TYPES = ("loguniform", "uniform", "int", "categorical")

_META_FIELDS = {f.name: f for f in dataclasses.fields(MetaConfig)}
_META_DEFAULTS = MetaConfig().to_dict()
# The Python type each MetaConfig field takes (from its default value).
FIELD_TYPES = {name: type(value) for name, value in _META_DEFAULTS.items()}

TOP_KEYS = ("description", "metric", "mode", "num_samples", "max_concurrent", "sampler", "scheduler",
            "resources", "checkpoint_every", "max_failures", "compile", "data_path", "fixed", "params",
            "pipeline", "top", "top_per")
RESOURCE_KEYS = ("cpus_per_trial", "gpus_per_trial", "memory")
# `resources.memory`: bytes, or a number with one of these units ("4.4GB", "512MiB")
MEMORY_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
                "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_memory(c: Checker, path: str, raw) -> int:
    """Ray's per-trial `memory` resource in bytes, from an integer of bytes or a string such as
    "4.4GB" (decimal units) or "4GiB" (binary). Ray packs trials onto a node by the memory they
    declare, so a trial that needs gigabytes (the reference path on Hénon–Heiles) must say so."""
    import math
    import re
    if isinstance(raw, bool):
        c.fail(path, f"expected bytes or a size such as 4.4GB, got {raw!r}")
    if isinstance(raw, (int, float)):
        value = c.number(path, raw, 0)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z]*)\s*", str(raw))
        unit = match.group(2).lower() if match else None
        if match is None or (unit and unit not in MEMORY_UNITS):
            c.fail(path, f"{raw!r}: write bytes or a size such as 4.4GB or 512MiB "
                         f"(units: {', '.join(u.upper().replace('I', 'i') for u in MEMORY_UNITS)})")
        value = float(match.group(1)) * MEMORY_UNITS[unit or "b"]
        if not math.isfinite(value):
            c.fail(path, f"{raw!r}: not a finite size")
    return round(value)


def tune_resources(cpus: float, gpus: float, memory: int = 0) -> dict:
    """The resources one trial asks Ray Tune for (`tune.with_resources`): CPUs, GPUs (fractional GPUs
    share a card) and memory in bytes (0: none declared, Ray's default)."""
    return {"cpu": cpus, "gpu": gpus, "memory": int(memory)}
PARAM_KEYS = {"loguniform": ("type", "low", "high"), "uniform": ("type", "low", "high"),
              "int": ("type", "low", "high", "log"), "categorical": ("type", "choices")}


@dataclass
class Param:
    """One sampled hyperparameter: `loguniform`/`uniform` (floats), `int` (inclusive), `categorical`."""

    name: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    choices: list | None = None

    def corners(self) -> list:
        """The extreme values (or every choice): enough to check the space with MetaConfig."""
        return list(self.choices) if self.type == "categorical" else [self.low, self.high]

    def describe(self) -> str:
        if self.type == "categorical":
            return f"{self.name} ∈ {{{', '.join(map(str, self.choices))}}}"
        scale = " log" if self.type == "int" and self.log else ""
        return f"{self.name} ∈ [{self.low:g}, {self.high:g}] {self.type}{scale}"

    def to_dict(self) -> dict:
        if self.type == "categorical":
            return {"type": self.type, "choices": list(self.choices)}
        out = {"type": self.type, "low": self.low, "high": self.high}
        if self.type == "int" and self.log:
            out["log"] = True
        return out


@dataclass
class SearchSpace:
    metric: str = "heldout_accuracy"
    mode: str = "max"
    num_samples: int = 8
    max_concurrent: int | None = None
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    memory_per_trial: int = 0  # bytes of Ray's `memory` resource per trial (0: none declared)
    checkpoint_every: int = 5
    max_failures: int = 2
    compile: bool = True
    data_path: str | None = None
    fixed: dict = field(default_factory=dict)
    params: dict[str, Param] = field(default_factory=dict)
    pipeline: PipelineSpec = field(default_factory=PipelineSpec)
    top: int = 3
    top_per: str | None = None  # export the best `top` trials for each value of this parameter
    description: str = ""
    source: str = ""

    # ---------------------------------------------------------------------------- derived values

    def max_steps(self) -> int:
        """The most outer steps any trial can run (the scheduler's max_t)."""
        return horizon(self.to_dict()) or int(_META_DEFAULTS["steps"])

    def task(self):
        """The task (classification, ...) of this space's dataset: it names the trials' metrics."""
        from dnn_search.tasks import task_for_dataset
        if "dataset" in self.params:
            return task_for_dataset(self.params["dataset"].choices[0])
        return task_for_dataset(self.fixed.get("dataset", _META_DEFAULTS["dataset"]))

    def milestones(self) -> list[int]:
        """Steps at which the scheduler may stop a trial (trials checkpoint there too)."""
        return self.scheduler.rungs(self.max_steps())

    def to_dict(self) -> dict:
        """Plain data (YAML/JSON-ready) that `from_dict` reads back into an equal space."""
        return {
            "description": self.description, "metric": self.metric, "mode": self.mode,
            "num_samples": self.num_samples, "max_concurrent": self.max_concurrent,
            "sampler": self.sampler.to_dict(), "scheduler": self.scheduler.to_dict(),
            "resources": {"cpus_per_trial": self.cpus_per_trial, "gpus_per_trial": self.gpus_per_trial,
                          "memory": self.memory_per_trial},
            "checkpoint_every": self.checkpoint_every, "max_failures": self.max_failures,
            "compile": self.compile, "data_path": self.data_path, "fixed": dict(self.fixed),
            "params": {name: p.to_dict() for name, p in self.params.items()},
            "pipeline": self.pipeline.to_dict(), "top": self.top, "top_per": self.top_per,
        }

    def with_overrides(self, **overrides) -> "SearchSpace":
        """Command-line flags win over the file. None means "not given"; the result is re-checked."""
        data = self.to_dict()
        for key, value in overrides.items():
            if value is None:
                continue
            if key in ("cpus_per_trial", "gpus_per_trial"):
                data["resources"][key] = value
            elif key == "optimizers":  # names; an optimiser the file configures keeps its settings
                configured = {o["name"]: o for o in data["pipeline"]["optimizers"]}
                data["pipeline"][key] = [configured.get(name, name) for name in value]
            elif key in ("runs", "datasets", "hessian"):
                data["pipeline"][key] = value
            else:
                data[key] = value
        return from_dict(data, source=self.source)


# --------------------------------------------------------------------------------- validation

def _field_value(c: Checker, path: str, name: str, value):
    """A value for MetaConfig field `name`, of the field's type."""
    kind = FIELD_TYPES[name]
    if kind is int:
        return c.integer(path, value)
    if kind is float:
        return c.number(path, value)
    if not isinstance(value, str):
        c.fail(path, f"expected a string, got {value!r}")
    return value


def _check_param(c: Checker, name: str, spec) -> Param:
    path = f"params.{name}"
    if name not in _META_FIELDS:
        c.fail(path, f"unknown parameter; sampleable: {', '.join(_META_FIELDS)}")
    if not isinstance(spec, dict):
        c.fail(path, "expected a mapping with a type and its bounds or choices, "
                     "e.g. {type: loguniform, low: 0.01, high: 1.0}")
    if "type" not in spec:
        c.fail(f"{path}.type", f"missing; one of {', '.join(PARAM_TYPES)}")
    kind = c.choice(f"{path}.type", spec["type"], PARAM_TYPES)
    c.mapping(path, spec, PARAM_KEYS[kind])
    field_type = FIELD_TYPES[name]
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            c.fail(f"{path}.choices", f"expected a non-empty list, got {choices!r}")
        values = [_field_value(c, f"{path}.choices[{i}]", name, v) for i, v in enumerate(choices)]
        if len(set(map(repr, values))) != len(values):
            c.fail(f"{path}.choices", "contains duplicates")
        return Param(name, kind, choices=values)
    for key in ("low", "high"):
        if key not in spec:
            c.fail(f"{path}.{key}", "missing")
    if kind == "int":
        if field_type is not int:
            c.fail(f"{path}.type", f"{name} is a {field_type.__name__}, not an integer: "
                                   f"use {'loguniform/uniform' if field_type is float else 'categorical'}")
        low, high = c.integer(f"{path}.low", spec["low"]), c.integer(f"{path}.high", spec["high"])
        log = c.boolean(f"{path}.log", spec.get("log", False))
    else:
        if field_type is not float:
            c.fail(f"{path}.type", f"{name} is {'an integer: use int' if field_type is int else 'a string: use categorical'}")
        low, high = c.number(f"{path}.low", spec["low"]), c.number(f"{path}.high", spec["high"])
        log = kind == "loguniform"
    if low >= high:
        c.fail(path, f"low must be below high, got low={low} >= high={high}")
    if log and low <= 0:
        c.fail(f"{path}.low", f"must be positive on a log scale, got {low}")
    return Param(name, kind, low=low, high=high, log=log)


def from_dict(data, source: str = "") -> SearchSpace:
    """Validate plain data (a parsed YAML file) into a SearchSpace; raises UserError on any problem."""
    c = Checker(source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        c.fail("(top level)", f"expected a mapping of keys, got {type(data).__name__}")
    c.mapping("", data, TOP_KEYS)
    space = SearchSpace(source=source)
    if "description" in data and data["description"] is not None:
        if not isinstance(data["description"], str):
            c.fail("description", "expected a string")
        space.description = data["description"]

    if data.get("num_samples") is not None:
        space.num_samples = c.integer("num_samples", data["num_samples"], 1)
    if data.get("max_concurrent") is not None:
        space.max_concurrent = c.integer("max_concurrent", data["max_concurrent"], 1)
    if data.get("checkpoint_every") is not None:
        space.checkpoint_every = c.integer("checkpoint_every", data["checkpoint_every"], 1)
    if data.get("max_failures") is not None:
        space.max_failures = c.integer("max_failures", data["max_failures"], 0)
    if data.get("top") is not None:
        space.top = c.integer("top", data["top"], 1)
    if data.get("top_per") is not None:
        if not isinstance(data["top_per"], str) or data["top_per"] not in _META_FIELDS:
            c.fail("top_per", f"unknown parameter {data['top_per']!r}: expected a metalearn setting "
                              f"such as n_activations")
        space.top_per = data["top_per"]
    if data.get("compile") is not None:
        space.compile = c.boolean("compile", data["compile"])
    if data.get("data_path") is not None:
        if not isinstance(data["data_path"], str):
            c.fail("data_path", f"expected a path string, got {data['data_path']!r}")
        space.data_path = data["data_path"]

    space.sampler = parse_sampler(c, data.get("sampler"))
    space.scheduler = parse_scheduler(c, data.get("scheduler"))

    # resources
    resources = c.mapping("resources", data.get("resources"), RESOURCE_KEYS)
    if resources.get("cpus_per_trial") is not None:
        space.cpus_per_trial = c.number("resources.cpus_per_trial", resources["cpus_per_trial"], 0, strictly=True)
    if resources.get("gpus_per_trial") is not None:
        space.gpus_per_trial = c.number("resources.gpus_per_trial", resources["gpus_per_trial"], 0)
    if resources.get("memory") is not None:
        space.memory_per_trial = parse_memory(c, "resources.memory", resources["memory"])

    # fixed settings and sampled parameters
    fixed = c.mapping("fixed", data.get("fixed"), tuple(_META_FIELDS))
    space.fixed = {name: _field_value(c, f"fixed.{name}", name, value) for name, value in fixed.items()}
    params = data.get("params")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        c.fail("params", f"expected a mapping of parameter names, got {type(params).__name__}")
    space.params = {}
    for name, spec in params.items():
        if not isinstance(name, str):
            c.fail("params", f"parameter names must be strings, got {name!r}")
        space.params[name] = _check_param(c, name, spec)
        if name in space.fixed:
            c.fail(f"params.{name}", "is also under fixed: a setting is either fixed or sampled")
    _check_meta_corners(c, space)

    # the metric: one the trials of this space's task report (default: the task's search metric)
    task = _space_task(c, space)
    metrics = search_metrics(task)
    metric = data.get("metric", task.search_metric)
    if not isinstance(metric, str) or metric not in metrics:
        c.fail("metric", f"expected one of {', '.join(metrics)} (the {task.name} task's), got {metric!r}")
    space.metric = metric
    space.mode = c.choice("mode", data["mode"], ("min", "max")) if data.get("mode") is not None else metrics[metric]

    space.pipeline = parse_pipeline(c, data.get("pipeline"))

    check_scheduler(c, space.scheduler, space.max_steps())
    if space.scheduler.max_steps and "steps" not in space.params:
        steps = int(space.fixed.get("steps", _META_DEFAULTS["steps"]))
        if space.scheduler.max_steps > steps:
            c.fail("scheduler.max_steps", f"{space.scheduler.max_steps} is beyond fixed.steps ({steps})")
    return space


def search_metrics(task) -> dict[str, str]:
    """Metric -> direction of everything a meta-learning trial of TASK reports after each outer step."""
    return {**task.columns("heldout"), "meta_loss": "min", "final_train_loss": "min"}


def _space_task(c: Checker, space: SearchSpace):
    """The task of the space's dataset(s); a space whose datasets belong to different tasks is refused
    (their trials would report different metrics)."""
    from dnn_search.tasks import task_for_dataset
    datasets = (space.params["dataset"].choices if "dataset" in space.params
                else [space.fixed.get("dataset", _META_DEFAULTS["dataset"])])
    try:
        tasks = {task_for_dataset(d).name: task_for_dataset(d) for d in datasets}
    except UserError as exc:
        c.fail("fixed.dataset" if "dataset" in space.fixed else "params.dataset", str(exc))
    if len(tasks) > 1:
        c.fail("params.dataset", f"datasets of different tasks ({', '.join(sorted(tasks))}) in one search: "
                                 "their trials report different metrics")
    return next(iter(tasks.values()))


def _check_meta_corners(c: Checker, space: SearchSpace) -> None:
    """Every fixed value and every extreme of each sampled one must make a valid MetaConfig."""
    base = {**_META_DEFAULTS, **space.fixed}
    low_corner = {name: p.corners()[0] for name, p in space.params.items()}
    try:
        MetaConfig.from_dict({**base, **low_corner}).validate()
    except UserError as exc:
        c.fail("fixed", str(exc))
    for name, p in space.params.items():
        for value in p.corners():
            try:
                MetaConfig.from_dict({**base, **low_corner, name: value}).validate()
            except UserError as exc:
                c.fail(f"params.{name}", f"value {value!r} is invalid: {exc}")
    if "n_activations" in space.params or "inner_hidden_size" in space.params:
        n_max = max(space.params["n_activations"].corners()) if "n_activations" in space.params \
            else base["n_activations"]
        h_min = min(space.params["inner_hidden_size"].corners()) if "inner_hidden_size" in space.params \
            else base["inner_hidden_size"]
        if n_max > h_min:
            c.fail("params", f"n_activations can reach {n_max} but inner_hidden_size can be {h_min}: "
                             "every activation needs at least one neuron")


def load_space(path: str | os.PathLike) -> SearchSpace:
    """Read and validate a YAML search space file."""
    data = read_yaml_file(path, "search space")
    return from_dict(data, source=str(path))
