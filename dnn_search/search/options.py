"""What `dnn-search search` and `pipeline` are asked to do: their options, checked, and resolved with
the space file (or, with --resume, the recorded search) into the space, the folder and the record."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from dnn_search.errors import UserError
from dnn_search.results.layout import RAY_DIR, SEARCH_EXPERIMENT, experiment_dir
from dnn_search.results.record import SearchRecord, has_record, normalise_storage_url, read_record
from dnn_search.search.space import SearchSpace, from_dict, load_space


@dataclass
class Options:
    """Command-line options of search/pipeline (None: take the space file's value)."""

    name: str
    space_path: str | None = None
    storage: str = "results"
    num_samples: int | None = None
    max_concurrent: int | None = None
    cpus_per_trial: float | None = None
    gpus_per_trial: float | None = None
    address: str | None = None
    resume: bool = False
    top: int | None = None
    max_failures: int | None = None
    optuna_storage: str | None = None
    data_path: str | None = None
    quiet: bool = False
    dashboard: bool = False
    dashboard_port: int = 8080
    # pipeline
    runs: int | None = None
    datasets: list | None = None
    hessian: bool | None = None
    optimizers: list | None = None  # validation optimiser names (their settings from the space file)


def resolve(opts: Options) -> tuple[SearchSpace, Path, SearchRecord]:
    """The space (file + flags, or the recorded one with --resume), the folder and the search record."""
    exp_dir = experiment_dir(opts.storage, opts.name)
    if opts.top is not None and opts.top < 1:
        raise UserError(f"--top must be a positive integer, got {opts.top}")
    for flag, value in (("--num-samples", opts.num_samples), ("--max-concurrent", opts.max_concurrent),
                        ("--runs", opts.runs)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be a positive integer, got {value}")
    if opts.max_failures is not None and opts.max_failures < 0:
        raise UserError(f"--max-failures must be zero or a positive integer, got {opts.max_failures}")
    if opts.cpus_per_trial is not None and not opts.cpus_per_trial > 0:
        raise UserError(f"--cpus-per-trial must be positive, got {opts.cpus_per_trial}")
    if opts.gpus_per_trial is not None and not opts.gpus_per_trial >= 0:
        raise UserError(f"--gpus-per-trial must be zero or positive, got {opts.gpus_per_trial}")
    if opts.resume:
        if not has_record(exp_dir):
            raise UserError(f"--resume: no search named {opts.name!r} in {exp_dir.parent} "
                            "(search.json is missing)")
        recorded = read_record(exp_dir)
        space = from_dict(recorded.space, source=str(exp_dir / "search.json"))
        space = space.with_overrides(top=opts.top, runs=opts.runs, datasets=opts.datasets, hessian=opts.hessian,
                                     optimizers=opts.optimizers, max_failures=opts.max_failures)
        address = opts.address if opts.address is not None else recorded.address
        return space, exp_dir, recorded.replace(space=space.to_dict(), address=address)
    if not opts.space_path:
        raise UserError("--space FILE.yaml is required (or --resume to continue a recorded search)")
    space = load_space(opts.space_path)
    datasets = opts.datasets
    space = space.with_overrides(num_samples=opts.num_samples, max_concurrent=opts.max_concurrent,
                                 cpus_per_trial=opts.cpus_per_trial, gpus_per_trial=opts.gpus_per_trial,
                                 top=opts.top, data_path=opts.data_path, runs=opts.runs, datasets=datasets,
                                 hessian=opts.hessian, optimizers=opts.optimizers, max_failures=opts.max_failures)
    if (exp_dir / RAY_DIR / SEARCH_EXPERIMENT).exists():
        raise UserError(f"a search named {opts.name!r} already exists in {exp_dir}: "
                        "pass --resume to continue it, or choose another --name")
    record = SearchRecord(name=opts.name, space=space.to_dict(), space_file=str(Path(opts.space_path).resolve()),
                          address=opts.address, optuna_storage=normalise_storage_url(opts.optuna_storage),
                          storage=str(exp_dir.parent), created=time.strftime("%Y-%m-%dT%H:%M:%S"))
    return space, exp_dir, record
