"""`dnn-search pipeline`: the search, then validation trials and Hessian trials on the same Ray session,
then summary.md.

The best trials' activations (exported by the search) are retrained in ordinary networks: every
exported trial x dataset x optimiser x mode (`pure`, the standard `std:*`, each `single:k`, and
`diverse` for trials with n >= 2) x seed, each a Tune trial, every one holding out the same seeded
validation split on which the summary picks; the first seed's models then get Hessian trials. A
network that two results share (the `pure` and `std:*` networks of trials with equal validation
settings) is trained once.
"""
from __future__ import annotations

import logging
import time
from dataclasses import astuple
from pathlib import Path

from dnn_search.errors import UserError
from dnn_search.results.layout import HESSIAN_FILE, STAGES_FILE, VALIDATION_FILE
from dnn_search.results.summary import write_summary
from dnn_search.results.tables import write_table
from dnn_search.search.driver import run_search, trial_settings
from dnn_search.search.options import Options
from dnn_search.search.pipeline_spec import PipelineSpec
from dnn_search.search.space import SearchSpace

log = logging.getLogger(__name__)


def _grid_run(name: str, trainable, jobs: list[dict], exp_dir: Path, space: SearchSpace, settings: dict,
              quiet: bool, label: str):
    from dnn_search.search.grid import GridResources, run_grid
    resources = GridResources(space.cpus_per_trial, space.gpus_per_trial, space.memory_per_trial, space.max_concurrent,
                              space.max_failures)
    started = time.time()
    if not quiet:
        log.info("%s: %d trials", label, len(jobs))
    grid = run_grid(exp_dir, name, trainable, jobs, settings, resources)
    rows, failed = [], []
    for res in grid:
        if res.error is not None or not res.metrics:
            failed.append(f"{(res.config or {}).get('job', {})}: {' '.join(str(res.error).split())[:200]}")
            continue
        rows.append(res.metrics)
    if not quiet:
        log.info("%s: %d done, %d failed in %.0f s", label, len(rows), len(failed), time.time() - started)
    for line in failed[:5]:
        log.warning("failed: %s", line)
    return rows, time.time() - started


def _job_key(trial_id, dataset, optimizer, mode, run) -> tuple:
    return (str(trial_id), str(dataset), str(optimizer), str(mode), int(run))


def _validation_plan(exported: list[dict], p: PipelineSpec, exp_dir: Path) -> tuple[list[dict], list[tuple]]:
    """Every (trial, dataset, optimizer, mode, run) the pipeline reports, and for each the key of the
    training that produces it. Equal keys train the same network, so it is trained once: `pure` and
    `std:*` depend only on the base function and the validation settings, not on the learned
    activations. An n=1 trial has no `diverse` network (it would be single:1, a homogeneous one)."""
    from dataclasses import asdict

    from dnn_search.actfile import read_activation_file
    from dnn_search.tasks import task_for_dataset
    from dnn_search.modes import Mode, learned_modes
    from dnn_search.validation import config_for, standard_modes

    wanted, keys = [], []
    for e in exported:
        acts = read_activation_file(e["npz"])
        learned = [str(m) for m in learned_modes(e["n"])]
        for optimizer in p.optimizers:
            cfg = config_for(acts.metadata, **p.settings(optimizer))
            for dataset in p.datasets:
                task = task_for_dataset(dataset)
                task.check_base(acts.base)  # e.g. elu activations cannot train a Hamiltonian network
                standard = standard_modes(task) if p.standard else ()
                for mode in ["pure", *standard, *learned]:
                    for run in range(p.runs):
                        seed = p.seed + run
                        model_dir = (str(exp_dir / "validation" / e["trial_id"] / cfg.optimizer)
                                     if p.hessian and run == 0 else "")
                        wanted.append({"trial_id": e["trial_id"], "act_path": str(e["npz"]), "dataset": dataset,
                                       "optimizer": cfg.optimizer, "mode": mode, "run": run, "seed": seed,
                                       "model_dir": model_dir, "validation": asdict(cfg)})
                        if Mode.parse(mode).shared:
                            keys.append((mode, acts.base, dataset, seed, run, astuple(cfg)))
                        else:
                            keys.append((e["trial_id"], mode, dataset, seed, run, astuple(cfg)))
    return wanted, keys


def _pipeline_stages(ray, space: SearchSpace, exp_dir: Path, exported: list[dict], opts: Options) -> dict:
    from dnn_search.search.trainables import hessian_trial, validation_trial
    from dnn_search.tasks import dataset_entry, task_for_dataset
    if not exported:
        raise UserError("the search produced no finished trial to validate")
    p = space.pipeline
    settings = {"env": trial_settings(space)["env"], "cpus_per_trial": space.cpus_per_trial,
                "data_path": space.data_path, "seed": p.seed,
                "hessian_samples": p.hessian_samples, "hessian_iters": p.hessian_iters,
                "hessian_top_k": p.hessian_top_k}
    if any(dataset_entry(d).needs_data_path for d in p.datasets) and not space.data_path:
        raise UserError(f"datasets {', '.join(p.datasets)}: MNIST and CIFAR are read from local files; "
                        "set data_path in the space file or pass --data-path")
    wanted, key_of = _validation_plan(exported, p, exp_dir)
    trained_by: dict[tuple, dict] = {}  # training key -> the job that trains it
    for job, key in zip(wanted, key_of):
        trained_by.setdefault(key, job)
    jobs = list(trained_by.values())
    if not opts.quiet and len(jobs) < len(wanted):
        log.info("validation: %d (trial, dataset, optimizer, mode, run) results from %d trainings (trials with "
                 "equal settings share their pure and std:* networks)", len(wanted), len(jobs))
    rows, v_seconds = _grid_run("validation", validation_trial, jobs, exp_dir, space, settings, opts.quiet,
                                "validation")
    results = {_job_key(r["trial_id_meta"], r["dataset"], r["optimizer"], r["mode"], r["run"]): r for r in rows}
    v_rows = []
    for job, key in zip(wanted, key_of):
        src = trained_by[key]
        r = results.get(_job_key(src["trial_id"], src["dataset"], src["optimizer"], src["mode"], src["run"]))
        if r is None:  # that training failed
            continue
        # the task's metric columns (test_*, val_*, its extra metrics) and curves (curve_*) as the trial reported them
        declared = set(task_for_dataset(job["dataset"]).validation_columns())
        v_rows.append({"trial_id": job["trial_id"], "dataset": job["dataset"], "optimizer": job["optimizer"],
                       "mode": job["mode"], "run": job["run"], "seed": job["seed"],
                       **{k: v for k, v in r.items() if k in declared or k.startswith("curve_")},
                       **{k: r[k] for k in ("epochs", "seconds", "node_id", "model_path")}})
    write_table(exp_dir / VALIDATION_FILE, v_rows, ("trial_id", "dataset", "optimizer", "mode", "run", "seed"))
    h_rows, h_seconds = [], 0.0
    if p.hessian:
        with_model = [r for r in v_rows if r["model_path"]]
        h_jobs_by_model: dict[str, dict] = {}  # a shared model gets one Hessian
        for r in with_model:
            h_jobs_by_model.setdefault(r["model_path"], {
                "trial_id": r["trial_id"], "dataset": r["dataset"], "optimizer": r["optimizer"], "mode": r["mode"],
                "model_path": r["model_path"],
                "output_folder": str(exp_dir / "hessian" / r["trial_id"])})
        h_jobs = list(h_jobs_by_model.values())
        rows, h_seconds = _grid_run("hessian", hessian_trial, h_jobs, exp_dir, space, settings, opts.quiet,
                                    "hessian")
        by_model = {r["model_path"]: r for r in rows}
        h_rows = [{"trial_id": v["trial_id"], "dataset": v["dataset"], "optimizer": v["optimizer"], "mode": v["mode"],
                   **{k: by_model[v["model_path"]][k] for k in ("top_eigenvalue", "trace", "top_eigenvalues",
                                                                "density_eigen", "density_weight", "num_params",
                                                                "model_path", "node_id")}}
                  for v in with_model if v["model_path"] in by_model]
    write_table(exp_dir / HESSIAN_FILE, h_rows,
                      ("trial_id", "dataset", "optimizer", "mode", "top_eigenvalue", "trace", "top_eigenvalues",
                       "density_eigen", "density_weight"))
    started = time.time()
    summary = write_summary(exp_dir, opts.name)
    if not opts.quiet:
        log.info("\n%s", summary)
    return {"validation_seconds": v_seconds, "hessian_seconds": h_seconds, "summary_seconds": time.time() - started}


def run_pipeline(opts: Options) -> dict:
    """`dnn-search pipeline`: search -> export -> validation trials -> Hessian trials -> summary.
    Each stage's wall time goes to STAGES_FILE in the results folder."""
    import json

    from dnn_search.atomic import atomic_write_text
    result = run_search(opts, then=_pipeline_stages)
    stages = {"search_seconds": result["seconds"],
              **{k: result[k] for k in ("validation_seconds", "hessian_seconds", "summary_seconds") if k in result}}
    atomic_write_text(Path(result["exp_dir"]) / STAGES_FILE, json.dumps(stages, indent=2) + "\n")
    return result
