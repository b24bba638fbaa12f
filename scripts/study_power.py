"""The power statement of the diversity studies' plans (results/plans/*-diversity.md), from committed data.

    PYTHONPATH=. .venv/bin/python scripts/study_power.py > power.md

Question: with K meta-seeds per arm and R retraining seeds per replicate, how often does the study call
a primary contrast (diverse at n >= 2 against n = 1's single:1: two independent arms, Welch's t on the
per-replicate means) "equivalent" when the true difference is 0? `study_stats.tost_power` answers it
exactly for normal per-replicate values with SD sigma_rep, where

    sigma_rep^2 = sigma_meta^2 + sigma_seed^2 / R

(the per-replicate mean over R retraining seeds: between-meta-seed variance plus the retraining
noise averaged over R seeds). Both components come from the committed results of the earlier runs:

- sigma_seed, the retraining-seed SD, is measured directly: validation.parquet holds 10 seeds per
  network; pooled over the learned networks (single:k, diverse) under the primary protocol (rmsprop:
  the meta-learning inner update), on the analysis scale (accuracy points; log MSE).
- sigma_meta, the meta-seed SD, has no direct measurement yet (one meta-learning run per setting so
  far). trials.parquet gives the held-out metric of search trials that differ in n, in their learning
  rates and in their seeds: their spread over-estimates sigma_meta (conservative), and it also holds
  the single-evaluation noise of that metric (one inner training scored on a held-out split). Three
  estimates bracket it: (a) that spread; (b) that spread minus the single-evaluation variance,
  estimated by the retraining-seed variance of val_* (one training scored on a 10 % split, as a trial's
  held-out metric); (c) the spread over the earlier run's exported trials (those that ran the
  replicates' steps) of one network's seed mean (single:1, diverse), minus sigma_seed^2/10: direct,
  but from 2-3 values. (a+) is the 80 % upper confidence limit of (a), the usual way to plan from a
  pilot SD of few degrees of freedom.

A TOST call of "equivalent" also needs the two-sided test not to be significant after Holm; at a
true difference of 0 the two rarely disagree, and a seeded simulation with the study's own functions
(`stats.welch`, `study_stats.tost`, `stats.holm`, `study_stats.verdict`) gives the per-contrast and
the joint ("every primary contrast equivalent") rates at the chosen K. The study recomputes its
realised power from its own variance components (`variance.parquet`) and reports it beside the verdict.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import chi2

from dnn_search.stats import holm, welch
from dnn_search.study_stats import k_for_power, tost, tost_power, verdict

ROOT = Path(__file__).resolve().parent.parent
KS = (8, 12, 16, 24)
SIMULATIONS = 4000

# task -> (folder, metric, scale, margin on the analysis scale, direction, R of the plan, other R,
#          K chosen, the arms n >= 2 (one primary contrast each), steps a trial needs to count)
TASKS = {
    "MNIST-1D": {"folder": "mnist1d-sin", "metric": "accuracy", "log": False, "margin": 1.0, "direction": "max",
                 "runs": 10, "other_runs": 5, "k": 12, "contrasts": 3, "min_steps": 225,
                 "margin_words": "±1 accuracy point"},
    "Hénon–Heiles": {"folder": "henonheiles-sin", "metric": "mse", "log": True,
                     "margin": (math.log(0.8), math.log(1.25)), "direction": "min",
                     "runs": 5, "other_runs": 10, "k": 32, "contrasts": 1, "min_steps": 80,
                     "margin_words": "MSE ratio in [0.8, 1.25], i.e. log ratio in [-0.223, +0.223]"},
}


def _scale(values: pd.Series, log: bool) -> pd.Series:
    return np.log(values) if log else values * 100.0


def _pooled_sd(frame: pd.DataFrame, column: str, log: bool) -> tuple[float, int]:
    """Pooled within-network SD over retraining seeds (and its degrees of freedom)."""
    v = frame.assign(v=_scale(frame[column], log)).groupby(["trial_id", "mode"]).v
    var, n = v.var(ddof=1), v.count()
    df = int((n - 1).sum())
    return float(math.sqrt(((n - 1) * var).sum() / df)), df


def estimates(task: dict) -> dict:
    """The variance estimates of one task from its committed folder (see the module doc)."""
    folder = ROOT / "results" / task["folder"]
    trials = pd.read_parquet(folder / "trials.parquet")
    val = pd.read_parquet(folder / "validation.parquet")
    metric, log = task["metric"], task["log"]
    learned = val[(val.optimizer == "rmsprop") & (val["mode"].str.startswith("single:") | (val["mode"] == "diverse"))]
    seed_sd, seed_df = _pooled_sd(learned, f"test_{metric}", log)
    eval_sd, _ = _pooled_sd(learned, f"val_{metric}", log)
    final = f"final_heldout_{metric}"
    best = f"best_heldout_{metric}"
    used = trials[(trials.status != "FAILED") & (trials.steps_done >= task["min_steps"])]
    if not log:  # a trial that collapsed late (final more than 20 points below its own best) is an outlier
        collapsed = used[(used[best] - used[final]) * 100 > 20]
        used = used.drop(collapsed.index)
    else:
        collapsed = used.iloc[:0]
    trial_values = _scale(used[final], log)
    trial_sd = float(trial_values.std(ddof=1))
    corrected = math.sqrt(max(trial_sd ** 2 - eval_sd ** 2, 0.0))
    # the 80 % upper confidence limit of (a): a pilot SD from few values is planned at its upper limit
    df = len(trial_values) - 1
    upper = trial_sd * math.sqrt(df / chi2.ppf(0.2, df))
    # (c) only from exported trials that ran the steps a replicate runs (the Hénon–Heiles n = 2 trial ran 20)
    long_enough = set(trials[trials.steps_done >= task["min_steps"]].trial_id)
    rms = val[(val.optimizer == "rmsprop") & val.trial_id.isin(long_enough)]
    per_network = rms.assign(v=_scale(rms[f"test_{metric}"], log)).groupby(["mode", "trial_id"]).v.mean()
    direct = {}
    for mode in ("single:1", "diverse"):
        if mode in per_network.index.get_level_values(0):
            means = per_network.loc[mode]
            if len(means) >= 2:
                spread = float(means.std(ddof=1))
                direct[mode] = (math.sqrt(max(spread ** 2 - seed_sd ** 2 / 10, 0.0)), len(means), spread)
    return {"seed_sd": seed_sd, "seed_df": seed_df, "eval_sd": eval_sd, "trial_sd": trial_sd,
            "trial_n": len(trial_values), "upper": upper, "collapsed": list(collapsed.optuna_number), "corrected": corrected,
            "direct": direct}


def sigma_rep(sigma_meta: float, seed_sd: float, runs: int) -> float:
    return math.sqrt(sigma_meta ** 2 + seed_sd ** 2 / runs)


def largest_sigma(k: int, margin, power: float = 0.8) -> float:
    """The largest sigma_rep at which TOST (Welch, K per arm) still has POWER at a true difference 0."""
    lo, hi = 1e-4, 10.0
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if tost_power(mid, k, margin) >= power else (lo, mid)
    return lo


def simulate(sigma: float, k: int, contrasts: int, margin, direction: str, seed: int = 0) -> tuple[float, float]:
    """Per-contrast and joint rates of the verdict "equivalent" at a true difference of 0, with every
    n >= 2 arm compared to the one n = 1 arm (so the contrasts share it), Holm over the family."""
    low, high = (-margin, margin) if isinstance(margin, float) else margin
    rng = np.random.default_rng(seed)
    each = joint = 0
    for _ in range(SIMULATIONS):
        reference = rng.normal(0.0, sigma, k)
        diffs = [welch(rng.normal(0.0, sigma, k), reference) for _ in range(contrasts)]
        adjusted = holm([d.p for d in diffs])
        calls = [verdict(d, tost(d, low, high), direction, 0.05, p) for d, p in zip(diffs, adjusted)]
        each += sum(c == "equivalent" for c in calls)
        joint += all(c == "equivalent" for c in calls)
    return each / (SIMULATIONS * contrasts), joint / SIMULATIONS


def report(name: str, task: dict) -> list[str]:
    e = estimates(task)
    unit = "log MSE" if task["log"] else "accuracy points"
    lines = [f"### {name} ({task['margin_words']}; unit: {unit})", ""]
    lines.append(f"- sigma_seed (retraining seeds, rmsprop, learned networks of results/{task['folder']}, "
                 f"pooled, {e['seed_df']} df): **{e['seed_sd']:.3f}**")
    note = (f"; left out as collapsed late (final > 20 points below its best): trial(s) {e['collapsed']}"
            if e["collapsed"] else "")
    lines.append(f"- sigma_meta (a), spread of the final held-out metric over {e['trial_n']} search trials with "
                 f">= {task['min_steps']} steps (different n, learning rates and seeds){note}: **{e['trial_sd']:.3f}**")
    lines.append(f"- sigma_meta (a+), the 80 % upper confidence limit of (a) ({e['trial_n'] - 1} df): "
                 f"**{e['upper']:.3f}**")
    lines.append(f"- sigma_meta (b), (a) minus the single-evaluation variance (retraining-seed SD of val_*: "
                 f"{e['eval_sd']:.3f}): **{e['corrected']:.3f}**")
    for mode, (value, n, spread) in e["direct"].items():
        lines.append(f"- sigma_meta (c, {mode}), spread of its seed mean over {n} exported trials ({spread:.3f}) "
                     f"minus sigma_seed²/10: **{value:.3f}**")
    cases = [("(a) trials' spread", e["trial_sd"]), ("(a+) its 80 % upper limit", e["upper"]),
             ("(b) noise-corrected", e["corrected"])]
    cases += [(f"(c) {mode}", v[0]) for mode, v in e["direct"].items()]
    lines += ["", "P(TOST calls \"equivalent\" | true difference 0), Welch, two arms of K, alpha 0.05 per side:", ""]
    header = "| sigma_meta estimate | R | sigma_rep | " + " | ".join(f"K = {k}" for k in KS) + " | K for 80 % |"
    lines += [header, "|" + "---|" * (4 + len(KS))]
    for label, sm in cases:
        for runs in (task["runs"], task["other_runs"]):
            s = sigma_rep(sm, e["seed_sd"], runs)
            powers = " | ".join(f"{tost_power(s, k, task['margin']):.2f}" for k in KS)
            need = k_for_power(s, task["margin"], 0.8, k_max=4096)
            lines.append(f"| {label}: {sm:.3f} | {runs} | {s:.3f} | {powers} | {need if need else '> 4096'} |")
    lines += ["", "The largest sigma_rep (and, at the plan's R, sigma_meta) at which TOST has 80 % power:", ""]
    lines += ["| K | sigma_rep | sigma_meta at R = " + str(task["runs"]) + " |", "|---|---|---|"]
    for k in sorted({*KS, task["k"]}):
        s = largest_sigma(k, task["margin"])
        sm2 = s ** 2 - e["seed_sd"] ** 2 / task["runs"]
        lines.append(f"| {k} | {s:.3f} | {math.sqrt(sm2) if sm2 > 0 else float('nan'):.3f} |")
    k = task["k"]
    lines += ["", (f"At the chosen K = {k}, R = {task['runs']} ({task['contrasts']} primary contrast(s), Holm; "
                   f"simulated, {SIMULATIONS} draws, seed 0): rate of the verdict \"equivalent\""), ""]
    lines += ["| sigma_meta estimate | sigma_rep | exact TOST power | simulated, per contrast | simulated, all |",
              "|---|---|---|---|---|"]
    for label, sm in cases:
        s = sigma_rep(sm, e["seed_sd"], task["runs"])
        each, joint = simulate(s, k, task["contrasts"], task["margin"], task["direction"])
        lines.append(f"| {label}: {sm:.3f} | {s:.3f} | {tost_power(s, k, task['margin']):.3f} | {each:.3f} | "
                     f"{joint:.3f} |")
    return lines + [""]


def main() -> int:
    out = ["# Power of the diversity studies' primary contrasts (scripts/study_power.py)", ""]
    for name, task in TASKS.items():
        out += report(name, task)
    sys.stdout.write("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
