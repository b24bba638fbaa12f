"""One Tune experiment over a fixed list of jobs: the pipeline's validation and Hessian stages and a
study's meta-learning, calibration and validation stages all run their trials this way.

Each job is one trial (`param_space={"job": grid_search(jobs)}`), asking for the given resources; an
experiment folder left by an earlier run is removed first, because what finished lives in the caller's
own files (tables, per-job results) and Tune starts the rest afresh.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from dnn_search.results.layout import RAY_DIR
from dnn_search.search.space import tune_resources


@dataclass(frozen=True)
class GridResources:
    """What every trial of the grid asks for, and how the experiment runs them."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory: int = 0
    max_concurrent: int | None = None
    max_failures: int = 2


def run_grid(exp_dir: Path, name: str, trainable, jobs: list[dict], settings: dict, resources: GridResources,
             callbacks: tuple = ()):
    """Run TRAINABLE once per job of JOBS (with SETTINGS) as the Tune experiment ray/NAME; returns
    Tune's ResultGrid."""
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback
    path = Path(exp_dir) / RAY_DIR / name
    if path.exists():
        shutil.rmtree(path)
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(trainable, settings=settings),
                            tune_resources(resources.cpus, resources.gpus, resources.memory)),
        param_space={"job": tune.grid_search(jobs)},
        tune_config=tune.TuneConfig(max_concurrent_trials=resources.max_concurrent, reuse_actors=True),
        run_config=tune.RunConfig(name=name, storage_path=str(Path(exp_dir) / RAY_DIR), verbose=0,
                                  callbacks=[JsonLoggerCallback(), *callbacks],
                                  failure_config=tune.FailureConfig(max_failures=resources.max_failures)))
    return tuner.fit()
