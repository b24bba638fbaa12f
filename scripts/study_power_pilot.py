"""The power of a diversity study planned from a finished one (the pilot): its own variance components.

    PYTHONPATH=. .venv/bin/python scripts/study_power_pilot.py results/mnist1d-diversity --runs 10 --k 12

Question, as in scripts/study_power.py: with K meta-seeds per arm and R retraining seeds per replicate,
how often does the new study call a primary contrast (diverse at n >= 2 against n = 1's single:1, Welch
on the per-replicate means) "equivalent" when the true difference is 0? That script had to bracket the
meta-seed SD from search trials; a finished study measures it. Its `variance.parquet` gives, for each
arm's primary network, sigma2_meta (between meta-seeds) and sigma2_ret (between the retraining seeds of
one replicate) on the analysis scale (accuracy points; log MSE), so a replicate's mean over R seeds has

    sigma_rep^2 = sigma2_meta + sigma2_ret / R.

A contrast's power is set by the larger sigma_rep of its two arms (`study_stats.tost_power`, Welch with
the same sigma in both, which is what the study's realised power uses too). A pilot SD from K values
has K - 1 degrees of freedom, so each is also planned at its 80 % upper confidence limit (the pilot's
sigma_rep at its own R, scaled by sqrt(df / chi2_0.2(df))). The rate of the verdict "equivalent" under
the study's own Welch, TOST, Holm and verdict is simulated at the chosen K (`study_power.simulate`).

Arms that completed fewer than 2 replicates have no variance components and are listed as such; an arm
with fewer than --min-k completed replicates is shown but not planned from (a variance from 3 values,
or from an arm most of whose runs diverged, says little about a stable arm). The plan rests on the
largest sigma_rep of the arms that remain.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd
from scipy.stats import chi2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from study_power import largest_sigma, simulate  # noqa: E402  (the first plans' power script, unchanged)

from dnn_search.results.study_analysis import study_scale  # noqa: E402
from dnn_search.results.study_record import read_spec  # noqa: E402
from dnn_search.study_stats import k_for_power, tost_power  # noqa: E402

KS = (8, 12, 16, 24)


def upper_limit(sd: float, df: int, level: float = 0.8) -> float:
    """The one-sided LEVEL upper confidence limit of an SD estimated with DF degrees of freedom."""
    return sd * math.sqrt(df / chi2.ppf(1.0 - level, df))


def pilot_rows(folder: Path, runs: int) -> list[dict]:
    """Each primary network's variance components in the pilot and its sigma_rep at RUNS seeds."""
    variance = pd.read_parquet(folder / "variance.parquet")
    rows = []
    for r in variance.itertuples():
        meta, ret = max(float(r.sigma2_meta), 0.0), float(r.sigma2_ret)
        sigma = math.sqrt(meta + ret / runs)
        # the pilot's replicate means have K - 1 df: their upper limit, carried to RUNS by the same ratio
        rows.append({"arm": r.arm, "network": r.network, "k": int(r.k), "sigma2_meta": meta, "sigma2_ret": ret,
                     "sigma_rep": sigma, "sigma_rep_upper": upper_limit(sigma, int(r.k) - 1)})
    return rows


def report(folder: Path, runs: int, k_chosen: int, contrasts: int, min_k: int = 5) -> list[str]:
    spec = read_spec(folder)
    scale = study_scale(spec)
    margin = tuple(spec.margin)  # (low, high) on the analysis scale
    unit = "log " + scale.metric if scale.log else "accuracy points"
    shown = [r for r in pilot_rows(folder, runs) if r["k"] >= 2 and math.isfinite(r["sigma_rep"])]
    rows = [r for r in shown if r["k"] >= min_k]
    missing = [a.name for a in spec.arms if a.name not in {r["arm"] for r in shown}]
    if not rows:
        raise SystemExit(f"{folder}: no arm completed {min_k} or more replicates: nothing to plan from")
    out = [f"### Pilot: {folder} (unit: {unit}; R = {runs} in the new study, {spec.runs} in the pilot)", ""]
    out += ["| arm | network | K in the pilot | sigma2_meta | sigma2_ret | sigma_rep at R | its 80 % upper limit |",
            "|---|---|---|---|---|---|---|"]
    out += [f"| {r['arm']} | {r['network']} | {r['k']} | {r['sigma2_meta']:.3f} | {r['sigma2_ret']:.3f} | "
            f"{r['sigma_rep']:.3f} | {r['sigma_rep_upper']:.3f} |" for r in shown]
    if missing:
        out += ["", f"No variance components (fewer than 2 completed replicates): {', '.join(missing)}."]
    left = [r["arm"] for r in shown if r not in rows]
    if left:
        out += ["", f"Shown, not planned from (fewer than {min_k} completed replicates): {', '.join(left)}."]
    largest = max(rows, key=lambda r: r["sigma_rep"])
    cases = [(f"largest ({largest['arm']})", largest["sigma_rep"]),
             (f"its 80 % upper limit ({largest['arm']})", largest["sigma_rep_upper"])]
    cases += [(f"{r['arm']} {r['network']}", r["sigma_rep"]) for r in rows if r is not largest]
    out += ["", 'P(TOST calls "equivalent" | true difference 0), Welch, two arms of K, alpha 0.05 per side:', ""]
    out += ["| sigma_rep | value | " + " | ".join(f"K = {k}" for k in KS) + " | K for 80 % |",
            "|" + "---|" * (3 + len(KS))]
    for label, s in cases:
        need = k_for_power(s, margin, 0.8, k_max=4096) if s > 0 else 2
        out.append(f"| {label} | {s:.3f} | " + " | ".join(f"{tost_power(s, k, margin):.2f}" for k in KS)
                   + f" | {need if need else '> 4096'} |")
    out += ["", f"At K = {k_chosen}, TOST has 80 % power while sigma_rep <= {largest_sigma(k_chosen, margin):.3f}.",
            "", f"At K = {k_chosen}, R = {runs} ({contrasts} primary contrast(s) sharing the n = 1 arm, Holm; "
            f'simulated, seed 0): rate of the verdict "equivalent" per contrast / for all', ""]
    for label, s in cases[:2]:
        each, joint = simulate(s, k_chosen, contrasts, margin, scale.direction)
        out.append(f"- sigma_rep {label}, {s:.3f}: {each:.2f} / {joint:.2f}")
    return out + [""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pilot", type=Path, help="a finished study's folder (it holds study.json and variance.parquet)")
    parser.add_argument("--runs", type=int, default=10, help="R, retraining seeds per replicate in the new study")
    parser.add_argument("--k", type=int, default=12, help="K, meta-seeds per arm, the one to simulate")
    parser.add_argument("--contrasts", type=int, default=3, help="primary contrasts (n >= 2 arms)")
    parser.add_argument("--min-k", type=int, default=5,
                        help="plan only from arms with at least this many completed replicates (default 5)")
    args = parser.parse_args(argv)
    if not (args.pilot / "variance.parquet").is_file():
        parser.error(f"{args.pilot} has no variance.parquet: give a finished study's folder")
    sys.stdout.write("\n".join(report(args.pilot, args.runs, args.k, args.contrasts, args.min_k)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
