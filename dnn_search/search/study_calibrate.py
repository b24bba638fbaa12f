"""Stage 0 of a diversity study: calibration inside each arm (`study.calibration` in its file).

Per arm, its own Optuna study (`<name>:calibration:<arm>` in the study's journal, so the dashboard
shows it) with its own sampler, seeded from the file's sampler seed and the arm's position, asks
for settings; each batch of asked trials (up to `max_concurrent` at once) runs as one Tune
experiment of that arm only (`ray/calibration_<arm>`), every trial a replicate run
(`replicate.run_replicate`) on a calibration meta-seed, to the calibration's steps; then each is told
its score (or FAIL when dropped) and the sampler asks again. Nothing ranks one arm's trials against
another's: the arms' searches share no sampler, no scheduler and no experiment.

Resume: a trial's `params.json` is written when it is asked, and its `result.json` when it ends, so a
restarted driver tells the finished-but-untold trials, reruns the asked-but-unfinished ones at their
recorded settings (continuing from their state), and never reruns a finished one.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path

from dnn_search.errors import UserError
from dnn_search.results.study_calibration import (CalibrationFailed, picks, read_trial_params,
                                                  write_calibration_table, write_trial_params)
from dnn_search.results.study_record import Arm, StudySpec, calibration_folder, calibration_trials
from dnn_search.splits import derive_seed

log = logging.getLogger(__name__)


def _task(spec: StudySpec):
    from dnn_search.tasks import task_for_dataset
    return task_for_dataset(spec.dataset)


def _optuna_study(exp_dir: Path, name: str, spec: StudySpec, arm: Arm):
    import optuna

    from dnn_search.results.storage import open_storage, storage_spec
    from dnn_search.search.samplers import SamplerSpec, make_sampler
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    a = [x.name for x in spec.arms].index(arm.name)
    sampler = SamplerSpec(**{**spec.calibration.sampler, "seed": derive_seed(spec.calibration.sampler["seed"], a)})
    return optuna.create_study(study_name=f"{name}:calibration:{arm.name}",
                               storage=open_storage(storage_spec(exp_dir, None)), load_if_exists=True,
                               sampler=make_sampler(sampler),
                               direction="maximize" if _task(spec).search_mode == "max" else "minimize")


def _tell_finished(study, exp_dir: Path, spec: StudySpec, arm: Arm) -> None:
    """Tell Optuna every trial of ARM whose run has ended but which it still holds as RUNNING."""
    from optuna.trial import TrialState

    from dnn_search.replicate import read_result
    from dnn_search.results.study_calibration import calibration_rows
    task = _task(spec)
    rows = {r["index"]: r for r in calibration_rows(exp_dir, spec, task.search_metric, task.search_mode)
            if r["arm"] == arm.name}
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        row = rows.get(t.number)
        if row is None or read_result(calibration_folder(exp_dir, row["trial"])) is None:
            continue
        if row["dropped"]:
            study.tell(t.number, state=TrialState.FAIL)
        else:
            study.tell(t.number, float(row["score"]))


def _jobs(exp_dir: Path, spec: StudySpec, arm: Arm, study, budget: int) -> list[dict]:
    """The trials to run next: those asked before (a killed driver) and not finished, then new asks up
    to BUDGET trials in all."""
    from types import SimpleNamespace

    from optuna.trial import TrialState

    from dnn_search.replicate import read_result
    from dnn_search.search.space import Param
    from dnn_search.search.study import distributions
    plan = calibration_trials(spec, arm)
    cal = spec.calibration
    pending = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        folder = calibration_folder(exp_dir, plan[t.number].key)
        if read_trial_params(folder) is None:  # killed between the ask and its record
            write_trial_params(folder, t.params, t.number)
        pending.append(t.number)
    space = SimpleNamespace(params={k: Param(k, **{"log": False, **v}) for k, v in cal.params_for(arm).items()})
    dists = distributions(space)  # the arm's ranges as Optuna distributions, as a search's
    asked = len(study.get_trials(deepcopy=False))
    while len(pending) < budget and asked < cal.trials:
        trial = study.ask(dists)
        write_trial_params(calibration_folder(exp_dir, plan[trial.number].key), trial.params, trial.number)
        pending.append(trial.number)
        asked += 1
    jobs = []
    for number in pending:
        trial = plan[number]
        folder = calibration_folder(exp_dir, trial.key)
        if read_result(folder) is not None:
            continue
        params = read_trial_params(folder)["params"]
        jobs.append({"key": trial.key, "arm": arm.name, "folder": str(folder), "grad_norm_limit": cal.grad_norm,
                     "meta": {**spec.arm_config(arm), **params, "steps": cal.steps, "seed": trial.meta_seed}})
    return jobs


def calibrate(exp_dir: Path, spec: StudySpec, settings: dict, name: str, quiet: bool) -> StudySpec:
    """Run (or finish) every arm's calibration; returns SPEC with each arm's pick in its settings.
    Writes calibration.parquet. A spec without a calibration section is returned unchanged."""
    from dnn_search.search.study_run import _grid
    from dnn_search.search.study_trainables import replicate_trial
    if spec.calibration is None:
        return spec
    cal = spec.calibration
    task = _task(spec)
    for arm in spec.arms:
        study = _optuna_study(exp_dir, name, spec, arm)
        started, batch = time.time(), spec.max_concurrent or cal.trials
        while True:
            _tell_finished(study, exp_dir, spec, arm)
            jobs = _jobs(exp_dir, spec, arm, study, batch)
            if not jobs:
                break
            if not quiet:
                log.info("calibration %s: %d trial(s) of %d steps (%d of %d asked)", arm.name, len(jobs), cal.steps,
                         len(study.get_trials(deepcopy=False)), cal.trials)
            _grid(f"calibration_{arm.name}", replicate_trial, jobs, exp_dir, spec, settings, "calibration")
            from dnn_search.replicate import read_result
            missing = [j["key"] for j in jobs if read_result(Path(j["folder"])) is None]
            if missing:
                raise UserError(f"calibration trial(s) {', '.join(missing)} did not finish (see {exp_dir}/ray); "
                                "`--resume` continues them")
        if not quiet:
            log.info("calibration %s: done in %.0f s", arm.name, time.time() - started)
    rows = write_calibration_table(exp_dir, spec, task.search_metric, task.search_mode)
    try:
        chosen = picks(spec, rows)
    except CalibrationFailed as exc:
        raise UserError(str(exc)) from None
    for arm in spec.arms:
        score = next((r["score"] for r in rows if r["arm"] == arm.name and r["picked"]), math.nan)
        log.info("calibration %s: picked %s (score %.4g)", arm.name, chosen.get(arm.name), score)
    return spec.calibrated(chosen)
