"""`dnn-search study`: a diversity study from its file to its answer, on one Ray session.

Stages, each resumable at its own granularity (`--resume` skips whatever left its file behind):
0. **calibration** (when the file has a `calibration` section): a short search inside each arm
   (`study_calibrate.py`); every later stage runs each arm at its pick;
1. **meta-learning**: per arm, one Tune experiment (`ray/study_<arm>`) of its K replicates, every one
   to the same number of outer steps (no scheduler stops any); a replicate folder's `result.json`
   marks it finished (COMPLETED or FAILED), its `state.pt` lets an interrupted one continue. Each
   finished replicate is recorded in the Optuna study (arm and meta-seed as parameters, the held-out
   metric per step as intermediate values) so optuna-dashboard shows it;
2. **validation**: first the controls' activation files, the copies check and the mix groups
   (`study_controls.prepare_controls`); then one Tune experiment, a trial per replicate (and per mix
   group) that trains its networks × retraining seeds not yet done one after the other (and the
   secondary protocol's networks); each finished training leaves `study_validation/<key>.json` at
   once, so a restart never trains a finished network again;
3. **analysis**: `replicates.parquet`, `comparisons.parquet`, `validation.parquet`, `summary.md`.
"""
from __future__ import annotations

import json
import logging
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
from dnn_search.search.study_calibrate import calibrate
from dnn_search.search.study_controls import control_training, mix_batches, mix_jobs, prepare_controls
from dnn_search.search.study_controls import plan_lines as control_plan_lines
from dnn_search.search.study_spec import load_study

log = logging.getLogger(__name__)


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
    from dnn_search.splits import selection_split
    data = load_dataset(spec.dataset, spec.data_path)
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
            "grad_norm_limit": spec.grad_norm_limit, "checkpoint_every": spec.checkpoint_every,
            "forecast_trajectories": spec.forecast_trajectories}


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
    from dnn_search.search.grid import GridResources, run_grid
    run_grid(exp_dir, name, trainable, jobs, settings,
             GridResources(spec.cpus_per_trial, spec.gpus_per_trial, spec.memory_per_trial, spec.max_concurrent,
                           spec.max_failures), callbacks=(_stage_callback(stage),))


def _metalearning(exp_dir: Path, spec: StudySpec, settings: dict, name: str, quiet: bool) -> None:
    from dnn_search.replicate import read_result
    from dnn_search.search.study_optuna import record_replicates
    from dnn_search.search.study_trainables import replicate_trial
    for arm in spec.arms:
        reps = [r for r in replicates_of(spec) if r.arm == arm.name]
        todo = [r for r in reps if read_result(replicate_folder(exp_dir, r.key)) is None]
        if todo:
            if not quiet:
                log.info("meta-learning %s: %d of %d replicates to run, %d outer steps each", arm.name, len(todo),
                         len(reps), spec.steps)
            started = time.time()
            jobs = [{"key": r.key, "arm": r.arm, "folder": str(replicate_folder(exp_dir, r.key)),
                     "meta": {**spec.arm_config(arm), "seed": r.meta_seed}} for r in todo]
            _grid(f"study_{arm.name}", replicate_trial, jobs, exp_dir, spec, settings, "metalearning")
            missing = [r.key for r in todo if read_result(replicate_folder(exp_dir, r.key)) is None]
            if missing:
                raise UserError(f"meta-learning of {', '.join(missing)} did not finish (see {exp_dir / RAY_DIR}); "
                                "`--resume` continues it from its last state")
            if not quiet:
                log.info("meta-learning %s: done in %.0f s", arm.name, time.time() - started)
        record_replicates(exp_dir, name, spec, reps)


def _validation(exp_dir: Path, spec: StudySpec, settings: dict, quiet: bool) -> None:
    from dnn_search.replicate import read_result
    from dnn_search.results.study_analysis import study_scale
    from dnn_search.results.study_record import secondary_networks
    from dnn_search.results.study_secondary import secondary_done
    from dnn_search.search.study_trainables import study_validation_trial
    completed = [r for r in replicates_of(spec) if (read_result(replicate_folder(exp_dir, r.key)) or {}).get(
        "status") == "COMPLETED"]
    out_dir = exp_dir / STUDY_VALIDATION_DIR
    out_dir.mkdir(exist_ok=True)
    prepare_controls(exp_dir, spec)  # the controls' files, the copies check, the mix groups
    jobs = [j for j in validation_jobs(spec, completed) if not (out_dir / f"{j.key}.json").exists()]
    total = len(validation_jobs(spec, completed)) + len(mix_jobs(exp_dir, spec))
    mixes = [j for j in mix_jobs(exp_dir, spec) if not (out_dir / f"{j.key}.json").exists()]
    scale = study_scale(spec)
    pick = (scale.metric, scale.direction, scale.log)

    def secondary_left() -> dict[str, list[str]]:
        return {rep.key: left for rep in completed
                if (left := [m for m in secondary_networks(spec, spec.arm(rep.arm))
                             if not secondary_done(out_dir, spec, rep, m, *pick)])}
    secondary = secondary_left()
    if not quiet:
        log.info("validation: %d of %d trainings to run%s", len(jobs) + len(mixes), total,
                 f"; the secondary protocol for {sum(map(len, secondary.values()))} network(s)" if secondary else "")
    if not jobs and not mixes and not secondary:
        return
    started = time.time()
    by_replicate: dict[str, list[ValidationJob]] = {r.key: [] for r in completed}
    for j in jobs:
        by_replicate[j.replicate.key].append(j)
    reps = {r.key: r for r in completed}
    _grid("study_validation", study_validation_trial,
          [_batch(exp_dir, spec, reps[key], group, out_dir, secondary.get(key, []), pick)
           for key, group in by_replicate.items() if group or key in secondary]
          + mix_batches(exp_dir, spec, mixes, out_dir), exp_dir, spec, settings, "validation")
    left = [j.key for j in [*jobs, *mixes] if not (out_dir / f"{j.key}.json").exists()]
    left += [f"{key} ({', '.join(modes)}, secondary protocol)" for key, modes in secondary_left().items()]
    if left:
        raise UserError(f"{len(left)} validation training(s) did not finish (e.g. {left[0]}); `--resume` runs them")
    if not quiet:
        log.info("validation: done in %.0f s", time.time() - started)


def _batch(exp_dir: Path, spec: StudySpec, rep: Replicate, jobs: list[ValidationJob], out_dir: Path,
           secondary: list[str] = (), pick: tuple = ()) -> dict:
    """One Tune trial's work: the trainings of one replicate that are not done yet, and the networks
    whose secondary protocol is not (their grid, pick and runs: `study_trainables._secondary`)."""
    from dnn_search.replicate import ACTIVATIONS_STEM
    from dnn_search.results.study_record import retraining_seed
    from dnn_search.results.study_secondary import grid_trainings
    from dnn_search.search.study_plan import secondary_settings
    arm = spec.arm(rep.arm)
    metric, direction, log = pick or (None, None, None)
    return {"arm": rep.arm, "replicate": rep.key, "meta_seed": rep.meta_seed,
            "dataset": spec.dataset,
            "act_path": str(replicate_folder(exp_dir, rep.key) / f"{ACTIVATIONS_STEM}.npz"),
            "trainings": [{"key": j.key, "mode": j.mode, "run": j.run, "seed": j.seed,
                           "validation": validation_settings(spec, arm, j.mode), "out": str(out_dir / f"{j.key}.json"),
                           **control_training(exp_dir, rep.key, j.mode)}
                          for j in jobs],
            "secondary": [{"mode": mode, "replicate": rep.key, "out_dir": str(out_dir),
                           "validation": secondary_settings(spec, arm, mode), "grid": grid_trainings(spec, rep, mode),
                           "runs": [(r, retraining_seed(spec, rep, r)) for r in range(spec.runs)],
                           "metric": metric, "direction": direction, "log": log} for mode in secondary]}


def run_study(opts: StudyOptions) -> dict:
    """`dnn-search study`: run (or resume) the study, or with --dry-run print its plan and cost."""
    spec, exp_dir = resolve_study(opts)
    if opts.dry_run:
        if not opts.quiet:
            log.info("measuring unit costs (one outer step, and one validation training at 1 and at 2 epochs, "
                     "per arm; 1 thread) ...")
        for line in plan_lines(spec, measure_costs(spec, opts.data_path)) + control_plan_lines(spec):
            log.info(line)
        log.info("dry run: nothing started")
        return {"spec": spec, "exp_dir": exp_dir}
    from dnn_search.search.ray_session import check_resources, clean_stale_session, ray_session
    from dnn_search.results.study_analysis import write_study_results
    from dnn_search.search.study_spec import study_data
    study_data(spec)  # a forecast count beyond the data's fails here, before anything is written
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
    with ray_session(address, opts.quiet, exp_dir, spec.max_concurrent, spec.cpus_per_trial) as ray:
        check_resources(ray, spec)  # a trial no node can hold (CPUs, GPUs, memory) fails here, not pending forever
        settings = _settings(spec)
        started = time.time()
        spec = calibrate(exp_dir, spec, settings, opts.name, opts.quiet)  # each arm at its pick from here on
        stages["calibration_seconds"] = time.time() - started
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
        log.info("\n%s", summary)
        log.info("results in %s (summary.md, replicates.parquet, comparisons.parquet); dashboard: dnn-search "
                 "dashboard %s; journal %s", exp_dir, opts.name, exp_dir / JOURNAL_FILE)
    return {"spec": spec, "exp_dir": exp_dir, **stages}
