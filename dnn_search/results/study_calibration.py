"""Calibration inside each arm of a diversity study: reading its trials back, scoring them, and the
pick (docs/design.md, "Diversity studies").

A study that compares arms at one fixed setting can be unfair to the arm that setting does not
suit, so each arm may first run a short search of its own. Everything here works on what the
trials left in their folders (`calibration/<arm>-c<i>/`: `params.json` written when the trial was
asked, then a replicate's `steps.json` and `result.json`), so the pick is the same whether it is
made by the driver before the replicates or rebuilt later from the files:
- a trial's **score** is the mean held-out metric over its last `last` outer steps (all of them
  when it ran fewer);
- a trial is **dropped** when it FAILED (its meta-gradient norm exceeded the calibration's
  threshold, or its values stopped being finite): an unstable setting is never picked, however
  good its last steps looked;
- the **pick** of an arm is its best kept trial (ties: the lowest index); trials are only ever
  ranked against trials of the same arm.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from dnn_search.atomic import atomic_write_text
from dnn_search.results.study_record import (CALIBRATION_TABLE, SCHEMA_VERSION, Arm, StudySpec,
                                             calibration_folder, calibration_trials)

PARAMS_FILE = "params.json"


class CalibrationFailed(Exception):
    """An arm whose calibration trials were all dropped: there is no setting to run it at."""


def write_trial_params(folder: Path, params: dict, number: int) -> None:
    """Record a calibration trial's sampled settings (and its Optuna trial number) in its folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / PARAMS_FILE, json.dumps({"params": params, "number": number}) + "\n")


def read_trial_params(folder: Path) -> dict | None:
    path = Path(folder) / PARAMS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def trial_score(steps: list[dict], metric: str, last: int) -> float:
    """The mean of METRIC over the last LAST rows of STEPS (nan when none is finite)."""
    values = [float(r[metric]) for r in steps[-last:] if r.get(metric) is not None]
    values = [v for v in values if math.isfinite(v)]
    return sum(values) / len(values) if values else math.nan


def calibration_rows(exp_dir: Path, spec: StudySpec, metric: str, direction: str) -> list[dict]:
    """One row per calibration trial that has been asked (its params recorded): arm, trial, meta-seed,
    `param_<name>` per calibrated setting, status, score, dropped, reason, picked."""
    from dnn_search.replicate import STEPS_FILE, read_result
    rows = []
    for arm in spec.arms:
        mine = []
        for trial in calibration_trials(spec, arm):
            folder = calibration_folder(exp_dir, trial.key)
            asked = read_trial_params(folder)
            if asked is None:
                continue
            result = read_result(folder)
            steps = json.loads((folder / STEPS_FILE).read_text()) if result is not None else []
            status = result["status"] if result else "RUNNING"
            score = trial_score(steps, metric, spec.calibration_spec().last) if result else math.nan
            dropped = status == "FAILED" or (result is not None and not math.isfinite(score))
            reason = (result or {}).get("reason", "") or ("no finite held-out metric" if dropped else "")
            grad = max((float(r.get("grad_norm", math.nan)) for r in steps), default=math.nan)
            mine.append({"schema_version": SCHEMA_VERSION, "arm": arm.name, "trial": trial.key,
                         "index": trial.index, "meta_seed": trial.meta_seed,
                         **{f"param_{k}": v for k, v in asked["params"].items()}, "status": status,
                         "steps": len(steps), "score": score, "max_grad_norm": grad, "dropped": dropped,
                         "reason": reason, "picked": False})
        kept = [r for r in mine if r["status"] == "COMPLETED" and not r["dropped"]]
        if kept:
            sign = 1.0 if direction == "max" else -1.0
            best = max(kept, key=lambda r: (sign * r["score"], -r["index"]))  # ties: the lowest index
            best["picked"] = True
        rows += mine
    return rows


def picks(spec: StudySpec, rows: list[dict]) -> dict[str, dict]:
    """Arm name -> its picked settings. Raises CalibrationFailed naming an arm whose trials all
    finished and were all dropped."""
    out = {}
    for arm in spec.arms:
        mine = [r for r in rows if r["arm"] == arm.name]
        chosen = [r for r in mine if r["picked"]]
        if chosen:
            out[arm.name] = _params(chosen[0], arm, spec)
        elif mine and all(r["dropped"] for r in mine):
            reasons = "; ".join(f"{r['trial']}: {r['reason']}" for r in mine)
            raise CalibrationFailed(f"calibration of arm {arm.name}: every one of its {len(mine)} trials was "
                                    f"dropped ({reasons}); narrow the ranges or raise calibration.grad_norm")
    return out


def _params(row: dict, arm: Arm, spec: StudySpec) -> dict:
    return {k: row[f"param_{k}"] for k in spec.calibration_spec().params_for(arm)}


def write_calibration_table(exp_dir: Path, spec: StudySpec, metric: str, direction: str) -> list[dict]:
    """calibration.parquet from the trial folders; returns its rows."""
    from dnn_search.results.tables import write_table
    rows = calibration_rows(exp_dir, spec, metric, direction)
    write_table(Path(exp_dir) / CALIBRATION_TABLE, rows, ("schema_version", "arm", "trial", "index", "meta_seed"))
    return rows


def summary_lines(exp_dir: Path, spec: StudySpec) -> list[str]:
    """summary.md's calibration section, from calibration.parquet alone (empty without one)."""
    import pandas as pd

    from dnn_search.stats import format_number
    path = Path(exp_dir) / CALIBRATION_TABLE
    if spec.calibration is None or not path.is_file():
        return []
    table = pd.read_parquet(path)
    cal = spec.calibration
    lines = ["## Calibration inside each arm", "",
             f"Each arm ran {cal.trials} trials of {cal.steps} outer steps ({cal.sampler['type']} sampler of its "
             f"own, {cal.scheduler} scheduler) on meta-seeds no replicate uses; score: the mean held-out metric of "
             f"the last {min(cal.last, cal.steps)} steps; trials above a meta-gradient norm of {cal.grad_norm:g} "
             "dropped. Trials are ranked only within their arm; each arm's replicates and its primary validation "
             "ran at its pick.", "",
             "| arm | trials (kept / dropped) | pick | its score | why a trial was dropped |", "|---|---|---|---|---|"]
    for arm in spec.arms:
        mine = table[table["arm"] == arm.name]
        picked = mine[mine["picked"]]
        dropped = mine[mine["dropped"]]
        names = list(cal.params_for(arm))
        pick = ", ".join(f"{k} = {format_number(picked.iloc[0][f'param_{k}'], 3)}" for k in names) if len(
            picked) else "none"
        score = format_number(picked.iloc[0]["score"], 4) if len(picked) else "–"
        reason = dropped.iloc[0]["reason"] if len(dropped) else "–"
        lines.append(f"| {arm.name} | {len(mine) - len(dropped)} / {len(dropped)} | {pick} | {score} | {reason} |")
    return lines + [""]
