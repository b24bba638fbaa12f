"""`dnn-search study`: a diversity study from its file to its answer, on one Ray session.

Stages, each resumable at its own granularity (`--resume` skips whatever left its file behind):
1. **meta-learning**: per arm, one Tune experiment (`ray/study_<arm>`) of its K replicates, every one
   to the same number of outer steps (no scheduler stops any); a replicate folder's `result.json`
   marks it finished (COMPLETED or FAILED), its `state.pt` lets an interrupted one continue. Each
   finished replicate is recorded in the Optuna study (arm and meta-seed as parameters, the held-out
   metric per step as intermediate values) so optuna-dashboard shows it;
2. **validation**: first the controls' activation files, the copies check and the mix groups
   (`study_controls.prepare_controls`); then one Tune experiment, a trial per replicate (and per mix
   group) that trains its networks × retraining seeds not yet done one after the other; each finished training leaves `study_validation/<key>.json`
   at once, so a restart never trains a finished network again;
3. **analysis**: `replicates.parquet`, `comparisons.parquet`, `validation.parquet`, `summary.md`.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from dnn_search.atomic import atomic_write_text, ensure_writable_folder
from dnn_search.errors import UserError
from dnn_search.results.layout import JOURNAL_FILE, RAY_DIR, experiment_dir
from dnn_search.results.study_record import (REPLICATES_DIR, SPLIT_FILE, STUDY_FILE, STUDY_VALIDATION_DIR,
                                             StudySpec, read_spec, read_study_record, replicate_folder,
                                             write_study_record)
from dnn_search.results.study_record import Replicate, replicates_of, selection_seed
from dnn_search.search.study_plan import (ValidationJob, measure_costs, plan_lines, validation_jobs,
                                          validation_settings)
from dnn_search.search.study_controls import control_training, mix_batches, mix_jobs, prepare_controls
from dnn_search.search.study_controls import plan_lines as control_plan_lines
from dnn_search.search.study_spec import load_study


@dataclass
class StudyOptions:
    name: str
    space_path: str | None = None
    storage: str = "results"
    address: str | None = None
    resume: bool = False
    dry_run: bool = False
    quiet: bool = False
    max_concurrent: int | None = None
    data_path: str | None = None


def resolve_study(opts: StudyOptions) -> tuple[StudySpec, Path]:
    """The spec (from the file, or the recorded one with --resume) and the study's folder."""
    exp_dir = experiment_dir(opts.storage, opts.name)
    if opts.resume:
        if not (exp_dir / STUDY_FILE).is_file():
            raise UserError(f"--resume: no study named {opts.name!r} in {exp_dir.parent} ({STUDY_FILE} is missing)")
        return read_spec(exp_dir), exp_dir
    if not opts.space_path:
        raise UserError("--space FILE.yaml is required (or --resume to continue a recorded study)")
    spec = load_study(opts.space_path)
    if opts.max_concurrent is not None:
        from dataclasses import replace
        spec = replace(spec, max_concurrent=opts.max_concurrent)
    if opts.data_path is not None:
        from dataclasses import replace
        spec = replace(spec, data_path=opts.data_path)
    if (exp_dir / STUDY_FILE).exists() and not opts.dry_run:
        raise UserError(f"a study named {opts.name!r} already exists in {exp_dir}: pass --resume to continue "
                        "it, or choose another --name")
    return spec, exp_dir


def _write_split(exp_dir: Path, spec: StudySpec) -> None:
    import numpy as np

    from dnn_search.atomic import atomic_path
    from dnn_search.data import load_dataset
    from dnn_search.metalearn import MetaConfig
    from dnn_search.splits import selection_split
    data = load_dataset(MetaConfig.from_dict(spec.fixed).dataset, spec.data_path)
    rest, selection = selection_split(data, spec.selection_fraction, selection_seed(spec))
    with atomic_path(exp_dir / SPLIT_FILE) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, rest=rest, selection=selection, seed=selection_seed(spec), fraction=spec.selection_fraction)


def _settings(spec: StudySpec) -> dict:
    from dnn_search.cache import current_environment
    env = {"DNN_SEARCH_COMPILE": "1" if spec.compile else "0", **current_environment()}
    import os

    from dnn_search.search import faults
    for name in (faults.TRACE_VARIABLE, "DNN_SEARCH_NATIVE"):  # workers of a cluster do not inherit them
        if os.environ.get(name):
            env[name] = os.environ[name]
    return {"env": env, "cpus_per_trial": spec.cpus_per_trial, "data_path": spec.data_path,
            "selection_fraction": spec.selection_fraction, "selection_seed": selection_seed(spec),
            "grad_norm_limit": spec.grad_norm_limit, "checkpoint_every": spec.checkpoint_every}


def _stage_callback(stage: str):
    """A Tune callback that counts the stage's results on the driver (for the test-only fault point
    `faults.stall_at`, which lets a test kill the driver in the middle of a stage)."""
    from ray.tune import Callback

    from dnn_search.search import faults

    class StageResults(Callback):
        def __init__(self):
            self.count = 0

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.count += 1
            faults.stall_at(stage, self.count)
    return StageResults()


def _grid(name: str, trainable, jobs: list[dict], exp_dir: Path, spec: StudySpec, settings: dict,
          stage: str) -> None:
    import shutil

    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    from dnn_search.search.space import tune_resources
    path = exp_dir / RAY_DIR / name
    if path.exists():
        shutil.rmtree(path)  # what finished is in the study's own files; Tune starts the rest afresh
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(trainable, settings=settings),
                            tune_resources(spec.cpus_per_trial, spec.gpus_per_trial, spec.memory_per_trial)),
        param_space={"job": tune.grid_search(jobs)},
        tune_config=tune.TuneConfig(max_concurrent_trials=spec.max_concurrent, reuse_actors=True),
        run_config=tune.RunConfig(name=name, storage_path=str(exp_dir / RAY_DIR), verbose=0,
                                  callbacks=[JsonLoggerCallback(), _stage_callback(stage)],
                                  failure_config=tune.FailureConfig(max_failures=spec.max_failures)))
    tuner.fit()


def _metalearning(exp_dir: Path, spec: StudySpec, settings: dict, name: str, quiet: bool) -> None:
    from dnn_search.replicate import read_result
    from dnn_search.search.study_optuna import record_replicates
    from dnn_search.search.study_trainables import replicate_trial
    for arm in spec.arms:
        reps = [r for r in replicates_of(spec) if r.arm == arm.name]
        todo = [r for r in reps if read_result(replicate_folder(exp_dir, r.key)) is None]
        if todo:
            if not quiet:
                print(f"meta-learning {arm.name}: {len(todo)} of {len(reps)} replicates to run, "
                      f"{spec.steps} outer steps each", flush=True)
            started = time.time()
            jobs = [{"key": r.key, "arm": r.arm, "folder": str(replicate_folder(exp_dir, r.key)),
                     "meta": {**spec.arm_config(arm), "seed": r.meta_seed}} for r in todo]
            _grid(f"study_{arm.name}", replicate_trial, jobs, exp_dir, spec, settings, "metalearning")
            missing = [r.key for r in todo if read_result(replicate_folder(exp_dir, r.key)) is None]
            if missing:
                raise UserError(f"meta-learning of {', '.join(missing)} did not finish (see {exp_dir / RAY_DIR}); "
                                "`--resume` continues it from its last state")
            if not quiet:
                print(f"meta-learning {arm.name}: done in {time.time() - started:.0f} s", flush=True)
        record_replicates(exp_dir, name, spec, reps)


def _validation(exp_dir: Path, spec: StudySpec, settings: dict, quiet: bool) -> None:
    from dnn_search.replicate import read_result
    from dnn_search.search.study_trainables import study_validation_trial
    completed = [r for r in replicates_of(spec) if (read_result(replicate_folder(exp_dir, r.key)) or {}).get(
        "status") == "COMPLETED"]
    out_dir = exp_dir / STUDY_VALIDATION_DIR
    out_dir.mkdir(exist_ok=True)
    prepare_controls(exp_dir, spec)  # the controls' files, the copies check, the mix groups
    jobs = [j for j in validation_jobs(spec, completed) if not (out_dir / f"{j.key}.json").exists()]
    mixes = [j for j in mix_jobs(exp_dir, spec) if not (out_dir / f"{j.key}.json").exists()]
    total = len(validation_jobs(spec, completed)) + len(mix_jobs(exp_dir, spec))
    if not quiet:
        print(f"validation: {len(jobs) + len(mixes)} of {total} trainings to run", flush=True)
    if not jobs and not mixes:
        return
    started = time.time()
    by_replicate: dict[str, list[ValidationJob]] = {}
    for j in jobs:
        by_replicate.setdefault(j.replicate.key, []).append(j)
    _grid("study_validation", study_validation_trial,
          [_batch(exp_dir, spec, group, out_dir) for group in by_replicate.values()]
          + mix_batches(exp_dir, spec, mixes, out_dir), exp_dir, spec, settings, "validation")
    left = [j.key for j in [*jobs, *mixes] if not (out_dir / f"{j.key}.json").exists()]
    if left:
        raise UserError(f"{len(left)} validation training(s) did not finish (e.g. {left[0]}); `--resume` runs them")
    if not quiet:
        print(f"validation: done in {time.time() - started:.0f} s", flush=True)


def _batch(exp_dir: Path, spec: StudySpec, jobs: list[ValidationJob], out_dir: Path) -> dict:
    """One Tune trial's work: the trainings of one replicate that are not done yet."""
    from dnn_search.replicate import ACTIVATIONS_STEM
    rep: Replicate = jobs[0].replicate
    arm = spec.arm(rep.arm)
    return {"arm": rep.arm, "replicate": rep.key, "meta_seed": rep.meta_seed,
            "dataset": spec.fixed.get("dataset", "MNIST1D"),
            "act_path": str(replicate_folder(exp_dir, rep.key) / f"{ACTIVATIONS_STEM}.npz"),
            "trainings": [{"key": j.key, "mode": j.mode, "run": j.run, "seed": j.seed,
                           "validation": validation_settings(spec, arm, j.mode), "out": str(out_dir / f"{j.key}.json"),
                           **control_training(exp_dir, rep.key, j.mode)}
                          for j in jobs]}


def run_study(opts: StudyOptions) -> dict:
    """`dnn-search study`: run (or resume) the study, or with --dry-run print its plan and cost."""
    spec, exp_dir = resolve_study(opts)
    if opts.dry_run:
        if not opts.quiet:
            print("measuring unit costs (one outer step and one validation epoch per arm, 1 thread) ...", flush=True)
        for line in plan_lines(spec, measure_costs(spec, opts.data_path)) + control_plan_lines(spec):
            print(line)
        print("dry run: nothing started")
        return {"spec": spec, "exp_dir": exp_dir}
    from dnn_search.search.ray_session import check_resources, clean_stale_session, ray_session
    from dnn_search.results.study_analysis import write_study_results
    ensure_writable_folder(exp_dir, "storage")
    (exp_dir / REPLICATES_DIR).mkdir(exist_ok=True)
    if opts.resume:
        clean_stale_session(exp_dir, opts.quiet)
        record = read_study_record(exp_dir)
        record.setdefault("resumes", []).append(time.strftime("%Y-%m-%dT%H:%M:%S"))
    else:
        record = {"name": opts.name, "spec": spec.to_dict(), "space_file": str(Path(opts.space_path).resolve()),
                  "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "resumes": []}
    write_study_record(exp_dir, record)
    if not (exp_dir / SPLIT_FILE).exists():
        _write_split(exp_dir, spec)
    stages: dict[str, float] = {}
    address = opts.address
    with ray_session(address, opts.quiet, exp_dir) as ray:
        check_resources(ray, spec)  # a trial no node can hold (CPUs, GPUs, memory) fails here, not pending forever
        settings = _settings(spec)
        started = time.time()
        _metalearning(exp_dir, spec, settings, opts.name, opts.quiet)
        stages["metalearning_seconds"] = time.time() - started
        started = time.time()
        _validation(exp_dir, spec, settings, opts.quiet)
        stages["validation_seconds"] = time.time() - started
    started = time.time()
    summary = write_study_results(exp_dir, spec, opts.name)
    stages["analysis_seconds"] = time.time() - started
    atomic_write_text(exp_dir / "stages.json", json.dumps(stages, indent=2) + "\n")
    if not opts.quiet:
        print("\n" + summary)
        print(f"\nresults in {exp_dir} (summary.md, replicates.parquet, comparisons.parquet); "
              f"dashboard: dnn-search dashboard {opts.name}; journal {exp_dir / JOURNAL_FILE}")
    return {"spec": spec, "exp_dir": exp_dir, **stages}
