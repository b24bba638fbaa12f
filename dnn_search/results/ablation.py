"""Search-level ablations from a search's own tables: how the search metric depends on the number of
outer steps (at the scheduler's rungs) and on the number of learned activations n.

They use only `trials.parquet` and `steps.parquet`, i.e. the meta-learning split of the training
data (the search metric), never a test split; they describe the search, not the retrained networks.
"""
from __future__ import annotations

import math

import numpy as np

from dnn_search.results.rungs import SchedulerSpec, horizon


def _fmt(value: float, scale: float, digits: int) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value * scale:.{digits}f}"


def steps_ablation(steps, metric: str, rungs: list[int], scale: float = 1.0, digits: int = 2,
                   direction: str = "max") -> list[str]:
    """Markdown: the mean, median and best (DIRECTION) of METRIC over the trials that reached each rung, and, for
    the trials that reached the last rung, the same at every rung (a fixed set of trials, so that the
    columns differ only by the number of outer steps)."""
    if steps is None or metric not in getattr(steps, "columns", []) or not rungs:
        return []
    values = steps[["trial_id", "step", metric]].dropna()
    at = {r: values[values["step"] == r].set_index("trial_id")[metric].astype(float) for r in rungs}
    finishers = set(at[rungs[-1]].index)
    lines = [f"| outer steps | trials there | mean {metric} | median | best | mean over the {len(finishers)} "
             f"trial(s) that reached {rungs[-1]} |", "|---|---|---|---|---|---|"]
    for r in rungs:
        v = at[r]
        fixed = v[v.index.isin(finishers)]
        lines.append(f"| {r} | {len(v)} | {_fmt(v.mean() if len(v) else math.nan, scale, digits)} | "
                     f"{_fmt(v.median() if len(v) else math.nan, scale, digits)} | "
                     f"{_fmt((v.max() if direction == 'max' else v.min()) if len(v) else math.nan, scale, digits)} | "
                     f"{_fmt(fixed.mean() if len(fixed) else math.nan, scale, digits)} |")
    return lines


def n_ablation(trials, score: str = "score", direction: str = "max", scale: float = 1.0,
               digits: int = 2) -> list[str]:
    """Markdown: per number of learned activations n, how many trials ran to a value (completed or
    stopped early), how many ASHA kept to the end, the best and median final search metric (each
    trial's last reported value), and how many FAILED (diverged or errored: no value, but a count a
    reader needs, or an n whose trials all fail looks merely untried)."""
    if trials is None or "n_activations" not in getattr(trials, "columns", []) or score not in trials.columns:
        return []
    ended = trials[trials["status"].isin(["COMPLETED", "PRUNED", "FAILED"])]
    pick = np.nanmax if direction == "max" else np.nanmin
    lines = ["| n | trials | completed (not stopped early) | best final value | median final value | failed |",
             "|---|---|---|---|---|---|"]
    for n, group in ended.groupby("n_activations", sort=True):
        done = group[group["status"].isin(["COMPLETED", "PRUNED"])]
        values = done[score].astype(float).to_numpy()
        finite = values[np.isfinite(values)]
        lines.append(f"| {int(n)} | {len(done)} | {int((done['status'] == 'COMPLETED').sum())} | "
                     f"{_fmt(float(pick(finite)) if finite.size else math.nan, scale, digits)} | "
                     f"{_fmt(float(np.median(finite)) if finite.size else math.nan, scale, digits)} | "
                     f"{int((group['status'] == 'FAILED').sum())} |")
    return lines


def rungs_of(space: dict) -> list[int]:
    """The outer steps at which the recorded space's scheduler compares trials (`SchedulerSpec.rungs`,
    the formula the search checkpointed at), and the trials' maximum; just the maximum without rungs."""
    top = horizon(space)
    if top is None:  # the space left the step count to the meta-learning default
        from dnn_search.metalearn import MetaConfig
        top = MetaConfig().steps
    return [*SchedulerSpec.from_recorded(space.get("scheduler")).rungs(top), top]


def ablation_markdown(trials, steps, space: dict, metric: str, direction: str, scale: float,
                      digits: int) -> list[str]:
    """The two search ablations as a summary section ([] when the tables are missing)."""
    by_steps = steps_ablation(steps, metric, rungs_of(space), scale, digits, direction)
    by_n = n_ablation(trials, "score", direction, scale, digits)
    if not by_steps and not by_n:
        return []
    shown = f"{metric} ×{scale:g}" if scale != 1 else metric
    lines = ["## Search ablations (meta-learning split, not test)", "",
             f"The search metric `{shown}` of the meta-learning trials: by outer steps (the scheduler's rungs) "
             "and by the number of learned activations n. It describes the search, not the retrained networks.", ""]
    if by_steps:
        lines += ["### Outer steps", "", *by_steps, ""]
    if by_n:
        lines += ["### Number of activations n", "", *by_n, ""]
    return lines
