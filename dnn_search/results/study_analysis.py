"""A diversity study's analysis, with the meta-seed as the unit (docs/design.md, "Diversity studies").

Per replicate (arm × meta-seed), each network's R retraining seeds are averaged on the analysis
scale (accuracy in points; MSE on the log scale, so that differences are log ratios): that mean is
one observation. Then:
- a contrast between two arms compares independent samples of replicates: Welch's t;
- a contrast within one arm (its primary network against pure or a std:*, diverse against its own
  best member) pairs the networks of each replicate: a one-sample t on the K differences;
- the plan's primary family is Holm-adjusted together, each contrast tested for equivalence (TOST
  at the file's margin) and called better / equivalent / worse / inconclusive; the secondary
  family is Holm-adjusted on its own;
- FAILED replicates are compared per arm (Fisher's exact test), and each primary contrast is redone
  with every failure counted at its arm's worst observed value (the sensitivity row);
- variance components (between meta-seeds, between retraining seeds) of each arm's primary network,
  with the cost-optimal R from the measured costs, and from them each primary contrast's realised
  power (`realised_power`): what the design could detect, printed beside the verdict, never changing it;
- the controls' family and the mix groups' table (`results/study_controls.py`).
Everything here reads the study's own files; `write_study_results` writes the tables and summary.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dnn_search.results.study_controls import control_comparisons, mix_group_ids, mix_rows
from dnn_search.results.study_record import (COMPARISONS_TABLE, DIVERGED_COLUMN, FORECASTS_COLUMN, MIX_TABLE,
                                             REPLICATES_TABLE, SCHEMA_VERSION, SPLIT_FILE, STUDY_VALIDATION_DIR,
                                             StudySpec, read_spec, replicate_folder, replicates_of)
from dnn_search.results.study_record import secondary_networks
from dnn_search.results.study_secondary import picked_rows
from dnn_search.results.study_views import curves, plateau_columns, write_views
from dnn_search.results.tables import write_table
from dnn_search.stats import holm, welch
from dnn_search.study_stats import (fisher_failures, one_sample, tost, tost_power, variance_components, verdict,
                                    worst_case)

VALIDATION_TABLE = "validation.parquet"


@dataclass(frozen=True)
class Scale:
    """How the study's metric is analysed: its validation column stem, direction, and whether it is
    compared on the log scale (an MSE: differences are log ratios) or in points (accuracy × 100)."""

    metric: str
    direction: str
    log: bool

    def transform(self, value: float | None) -> float:
        if value is None or not math.isfinite(float(value)):
            return math.nan
        if self.log:
            return math.log(value) if value > 0 else math.nan
        return 100.0 * float(value)

    def natural(self, value: float) -> float:
        """A mean on the analysis scale back in the metric's units (geometric mean for an MSE)."""
        return math.exp(value) if self.log else value / 100.0

    @property
    def unit(self) -> str:
        return "ratio" if self.log else "points"


def study_scale(spec: StudySpec) -> Scale:
    from dnn_search.tasks import task_for_dataset
    task = task_for_dataset(spec.dataset)
    metric = task.search_metric.removeprefix("heldout_")
    return Scale(metric, task.search_mode, log=task.search_mode == "min")


def read_validation_rows(exp_dir: Path) -> list[dict]:
    folder = Path(exp_dir) / STUDY_VALIDATION_DIR
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def _split_record(exp_dir: Path) -> dict:
    """The study's selection split as the tables record it: its seed and sizes (split.npz)."""
    path = Path(exp_dir) / SPLIT_FILE
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as split:
        return {"selection_seed": int(split["seed"]), "selection_size": int(split["selection"].size),
                "rest_size": int(split["rest"].size)}


def _indices_sizes(folder: Path) -> dict:
    """The sizes of what a replicate trained on and held out (its recorded indices.npz)."""
    from dnn_search.replicate import INDICES_FILE
    path = folder / INDICES_FILE
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as idx:
        return {"meta_train_size": int(idx["train"].size), "meta_heldout_size": int(idx["heldout"].size)}


def read_replicates(exp_dir: Path, spec: StudySpec) -> list[dict]:
    """Every replicate of the plan with its outcome (status RUNNING/PENDING while it has none), the
    selection split's seed and sizes, and the sizes of the indices the replicate recorded."""
    from dnn_search.replicate import read_result
    split = _split_record(exp_dir)
    rows = []
    for plan in replicates_of(spec):
        rep = {"arm": plan.arm, "replicate": plan.key, "meta_seed": plan.meta_seed}
        folder = replicate_folder(exp_dir, plan.key)
        result = read_result(folder)
        rows.append({**rep, "n": spec.arm(plan.arm).n,
                     "status": result["status"] if result else ("RUNNING" if folder.exists() else "PENDING"),
                     "steps": int(result["steps"]) if result else 0, "reason": (result or {}).get("reason", ""),
                     **split, **_indices_sizes(folder)})
    return rows


def observations(rows: list[dict], scale: Scale, split: str = "test") -> dict[tuple[str, str], float]:
    """(replicate, mode) -> the mean over its retraining seeds on the analysis scale."""
    column = f"{split}_{scale.metric}"
    groups: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        groups.setdefault((r["replicate"], r["mode"]), []).append(scale.transform(r.get(column)))
    return {k: float(np.nanmean(v)) if np.isfinite(v).any() else math.nan for k, v in groups.items()}


def _comparison(family: str, label: str, diff, scale: Scale, kind: str, a: str, b: str) -> dict:
    return {"schema_version": SCHEMA_VERSION, "family": family, "contrast": label, "a": a, "b": b, "test": kind,
            "estimate": diff.estimate, "ci_lo": diff.lo, "ci_hi": diff.hi, "p": diff.p, "n_a": diff.n_a,
            "n_b": diff.n_b, "unit": scale.unit}


def _per_arm(obs: dict, reps_by_arm: dict[str, list[str]], arm: str, mode: str) -> dict[str, float]:
    return {rep: obs.get((rep, mode), math.nan) for rep in reps_by_arm.get(arm, [])}


def compare(spec: StudySpec, replicates: list[dict], rows: list[dict], scale: Scale) -> list[dict]:
    """The comparisons table: primary family (with TOST, verdicts, sensitivity), secondary family,
    failures."""
    obs, val = observations(rows, scale, "test"), observations(rows, scale, "val")
    done = completed_by_arm(spec, replicates)
    out = primary_family(spec, spec.contrasts, obs, done, scale, "primary")
    out += _sensitivity(spec, replicates, obs, done, scale)
    out += _secondary(spec, obs, val, done, scale)
    out += _failures(spec, replicates, scale)
    return out


def completed_by_arm(spec: StudySpec, replicates: list[dict]) -> dict[str, list[str]]:
    return {a.name: [r["replicate"] for r in replicates if r["arm"] == a.name and r["status"] == "COMPLETED"]
            for a in spec.arms}


def primary_family(spec: StudySpec, contrasts, obs: dict, done: dict, scale: Scale, family: str) -> list[dict]:
    """CONTRASTS as one family: Welch or one-sample t, TOST at the margin, Holm within the family and
    a verdict each (the primary protocol's primary contrasts, or the secondary protocol's)."""
    rows = []
    for c in contrasts:
        a = _per_arm(obs, done, c.a_arm, c.a_mode)
        b = _per_arm(obs, done, c.b_arm, c.b_mode)
        if c.independent:
            diff, kind = welch(list(a.values()), list(b.values())), "welch"
        else:
            diff, kind = one_sample([a[k] - b[k] for k in a]), "one-sample"
        row = _comparison(family, c.label, diff, scale, kind, f"{c.a_arm}/{c.a_mode}", f"{c.b_arm}/{c.b_mode}")
        eq = tost(diff, *spec.margin, alpha=spec.alpha)
        row.update(ci90_lo=eq.lo, ci90_hi=eq.hi, tost_p=eq.p, margin_lo=spec.margin[0], margin_hi=spec.margin[1])
        rows.append((row, diff, eq))
    out = []
    for (row, diff, eq), p_adj in zip(rows, holm([row["p"] for row, _, _ in rows])):
        row["holm_p"] = p_adj
        row["verdict"] = verdict(diff, eq, scale.direction, spec.alpha, p_adj)
        out.append(row)
    return out


def _sensitivity(spec, replicates, obs, done, scale) -> list[dict]:
    rows: list[dict] = []
    failed = {a.name: sum(r["arm"] == a.name and r["status"] == "FAILED" for r in replicates) for a in spec.arms}
    if not any(failed.values()):
        return rows
    for c in spec.contrasts:
        if not c.independent:
            continue
        # the transform is increasing, so the metric's direction holds on the analysis scale
        a = worst_case(list(_per_arm(obs, done, c.a_arm, c.a_mode).values()), failed[c.a_arm], scale.direction)
        b = worst_case(list(_per_arm(obs, done, c.b_arm, c.b_mode).values()), failed[c.b_arm], scale.direction)
        diff = welch(a, b)
        rows.append({**_comparison("sensitivity", c.label + " (each FAILED replicate at its arm's worst value)",
                                   diff, scale, "welch", f"{c.a_arm}/{c.a_mode}", f"{c.b_arm}/{c.b_mode}")})
    return rows


def _secondary(spec, obs, val, done, scale) -> list[dict]:
    rows = []
    for arm in spec.arms:
        if arm.control:  # the matched arm validates its primary network only (results/study_controls.py)
            continue
        reps = done[arm.name]
        for base in ["pure", *spec.standard]:
            d = [obs.get((r, arm.primary), math.nan) - obs.get((r, base), math.nan) for r in reps]
            rows.append(_comparison("secondary", f"{arm.name}/{arm.primary} vs {arm.name}/{base}", one_sample(d),
                                    scale, "one-sample", f"{arm.name}/{arm.primary}", f"{arm.name}/{base}"))
        if arm.n > 1:
            # each replicate's best member, picked on the selection split (never on test)
            d = []
            for r in reps:
                members = [(val.get((r, f"single:{k}"), math.nan), f"single:{k}") for k in range(1, arm.n + 1)]
                members = [m for m in members if math.isfinite(m[0])]
                if not members:
                    continue
                best = (max if scale.direction == "max" else min)(members)[1]
                d.append(obs.get((r, "diverse"), math.nan) - obs.get((r, best), math.nan))
            rows.append(_comparison("secondary", f"{arm.name}/diverse vs its best member (picked on the selection "
                                    "split; conditional on one activation set)", one_sample(d), scale,
                                    "one-sample", f"{arm.name}/diverse", f"{arm.name}/best member"))
    for row, p in zip(rows, holm([r["p"] for r in rows])):
        row["holm_p"] = p
    return rows


def _failures(spec, replicates, scale) -> list[dict]:
    ref = spec.reference_arm or spec.arms[0]
    count = {a.name: (sum(r["arm"] == a.name and r["status"] == "FAILED" for r in replicates),
                      sum(r["arm"] == a.name and r["status"] in ("FAILED", "COMPLETED") for r in replicates))
             for a in spec.arms}
    rows = []
    for arm in spec.arms:
        if arm.name == ref.name:
            continue
        test = fisher_failures(*count[arm.name], *count[ref.name])
        rows.append({"schema_version": SCHEMA_VERSION, "family": "failures", "contrast":
                     f"FAILED {arm.name} ({count[arm.name][0]}/{count[arm.name][1]}) vs {ref.name} "
                     f"({count[ref.name][0]}/{count[ref.name][1]})", "a": arm.name, "b": ref.name,
                     "test": "fisher", "estimate": test.odds_ratio, "p": test.p, "unit": "odds ratio"})
    return rows


def components(spec: StudySpec, replicates: list[dict], rows: list[dict], scale: Scale) -> list[dict]:
    """Variance components of each arm's primary network, with the cost-optimal R from the study's
    own timings (one meta-learning run; one retraining seed = every network of a replicate at it)."""
    out = []
    for arm in spec.arms:
        reps = [r["replicate"] for r in replicates if r["arm"] == arm.name and r["status"] == "COMPLETED"]
        groups = [[scale.transform(v[f"test_{scale.metric}"]) for v in rows
                   if v["replicate"] == rep and v["mode"] == arm.primary] for rep in reps]
        vc = variance_components(groups)
        meta_s = [r.get("meta_seconds", math.nan) for r in replicates if r["replicate"] in reps]
        ret_s = [v["seconds"] for v in rows if v["replicate"] in reps]
        cost_meta = float(np.nanmean(meta_s)) if meta_s else math.nan
        per_seed = float(np.sum(ret_s)) / max(1, len(reps) * spec.runs) if ret_s else math.nan
        best_r = vc.optimal_r(cost_meta, per_seed) if cost_meta > 0 and per_seed > 0 else None
        out.append({"arm": arm.name, "network": arm.primary, "k": vc.k, "sigma2_meta": vc.sigma2_meta,
                    "sigma2_ret": vc.sigma2_ret, "icc": vc.icc, "p": vc.p, "cost_meta_s": cost_meta,
                    "cost_ret_s": per_seed, "optimal_r": best_r})
    return out


# the realised power's columns in comparisons.parquet (NaN on every row that is not a primary contrast)
POWER_COLUMNS = ("sigma_rep", "power_k", "realised_power")


def realised_power(spec: StudySpec, row: dict, variance: list[dict]) -> dict:
    """The realised power of one primary contrast (results/plans/*-diversity.md, "Secondary analyses"):
    `tost_power(σ_rep, K, margin)`, the chance that TOST at the file's margin and alpha calls
    "equivalent" when the two arms do not differ, for Welch on K replicates per arm, where
    σ²_rep = σ²_meta + σ²_ret/R is the variance of one replicate's observation (the mean of R seeds)
    from the study's own variance components of each side's network, the larger of the two arms',
    and K the smaller of their completed replicates (`k` of the variance table; equal when none
    failed). On the analysis scale: points for accuracy, log for MSE (the margin is (log 0.8,
    log 1.25) there). It describes the design; the verdict never reads it. NaN where it is not
    defined: a within-arm (one-sample) contrast, a network without variance components (only each
    arm's primary network has them), or fewer than 2 replicates or no spread."""
    nan = dict.fromkeys(POWER_COLUMNS, math.nan)
    if row.get("test") != "welch":
        return nan
    by_network = {(v["arm"], v["network"]): v for v in variance}
    sides = []
    for side in ("a", "b"):
        arm, _, network = str(row[side]).partition("/")
        if (arm, network) not in by_network:
            return nan
        sides.append(by_network[(arm, network)])
    sigma2 = max(v["sigma2_meta"] + v["sigma2_ret"] / spec.runs for v in sides)
    k = min(int(v["k"]) for v in sides)
    if not (math.isfinite(sigma2) and sigma2 > 0 and k >= 2):
        return nan
    sigma = math.sqrt(sigma2)
    return {"sigma_rep": sigma, "power_k": k,
            "realised_power": tost_power(sigma, k, spec.margin, alpha=spec.alpha, design="welch")}


def secondary_protocol_family(spec: StudySpec, replicates: list[dict], rows: list[dict], scale: Scale) -> list[dict]:
    """The secondary protocol's own family: the plan's primary contrasts whose two networks it trains
    (each arm's primary network, pure), on its observations (the R runs at each network's picked lr),
    Holm within it."""
    if spec.secondary is None:
        return []
    obs = observations(picked_rows(rows, spec, scale.metric, scale.direction, scale.log), scale, "test")
    covered = [c for c in spec.contrasts if c.a_mode in secondary_networks(spec, spec.arm(c.a_arm))
               and c.b_mode in secondary_networks(spec, spec.arm(c.b_arm))]
    out = primary_family(spec, covered, obs, completed_by_arm(spec, replicates), scale, "secondary protocol")
    return [{**r, "protocol": "secondary"} for r in out]


def study_comparisons(exp_dir: Path, spec: StudySpec, replicates: list[dict], every_row: list[dict],
                      scale: Scale) -> list[dict]:
    """Every family of comparisons.parquet but the realised-power columns: the primary protocol's
    (primary, sensitivity, secondary, failures, controls) from its rows of EVERY_ROW (each validation
    training, either protocol), then the secondary protocol's family. What the study writes, and what
    a committed result's tables are checked against."""
    rows = [r for r in every_row if r.get("protocol", "primary") == "primary"]
    out = compare(spec, replicates, rows, scale)
    out += control_comparisons(spec, completed_by_arm(spec, replicates), observations(rows, scale, "test"), scale,
                               mix_group_ids(exp_dir))
    out += secondary_protocol_family(spec, replicates, every_row, scale)
    return [{"protocol": "primary", **r} for r in out]


def write_study_results(exp_dir: Path, spec: StudySpec | None = None, name: str = "") -> str:
    """Tables (replicates, validation, comparisons) and summary.md from the study's files; returns
    the summary's text. The summary is rebuilt from the tables alone (`study_summary.render`)."""
    from dnn_search.atomic import atomic_write_text
    from dnn_search.results.study_summary import render_summary
    exp_dir = Path(exp_dir)
    spec = spec or read_spec(exp_dir)
    scale = study_scale(spec)
    reps = read_replicates(exp_dir, spec)
    every_row = read_validation_rows(exp_dir)
    rows = [r for r in every_row if r.get("protocol", "primary") == "primary"]
    curve_of = {key: values for arm_curves in curves(exp_dir, spec, "heldout_" + scale.metric).values()
                for key, _, values in arm_curves}
    for r in reps:
        r["meta_seconds"] = _meta_seconds(exp_dir, r["replicate"])
        r.update(plateau_columns(curve_of.get(r["replicate"], [])))
    obs = observations(rows, scale, "test")
    val = observations(rows, scale, "val")
    for r in reps:
        r["schema_version"] = SCHEMA_VERSION
        for (rep, mode), value in obs.items():
            if rep == r["replicate"]:
                r[f"test_{scale.metric}[{mode}]"] = scale.natural(value)
                r[f"val_{scale.metric}[{mode}]"] = scale.natural(val.get((rep, mode), math.nan))
    write_table(exp_dir / REPLICATES_TABLE, reps, ("schema_version", "arm", "n", "replicate", "meta_seed",
                                                   "status", "steps", "reason"))
    comparisons = study_comparisons(exp_dir, spec, reps, every_row, scale)
    variance = components(spec, reps, rows, scale)
    for r in comparisons:
        primary = r["family"] == "primary" and r["protocol"] == "primary"
        r.update(realised_power(spec, r, variance) if primary else dict.fromkeys(POWER_COLUMNS, math.nan))
    made = _forecasts_column(spec, every_row)
    picked = {r["key"]: r["picked_lr"] for r in picked_rows(every_row, spec, scale.metric, scale.direction, scale.log)}
    forecasts = {FORECASTS_COLUMN: made}
    write_table(exp_dir / VALIDATION_TABLE, [{**r, "picked_lr": picked.get(r["key"]),
                                             **(forecasts if DIVERGED_COLUMN in r else {})} for r in every_row],
                ("arm", "replicate", "meta_seed", "mode", "protocol", "run", "seed", "lr", "picked_lr"))
    if spec.controls.get("mix"):
        write_table(exp_dir / MIX_TABLE, mix_rows(exp_dir, obs, val, scale), ("schema_version", "arm", "n", "group",
                                                                             "replicate", "members"))
    write_table(exp_dir / COMPARISONS_TABLE, comparisons, ("schema_version", "family", "contrast", "a", "b", "test",
                                                          "estimate", "ci_lo", "ci_hi", "p", "holm_p", "verdict",
                                                          *POWER_COLUMNS))
    write_table(exp_dir / "variance.parquet", variance, ("arm", "network"))
    write_views(exp_dir, spec, "heldout_" + scale.metric, variance)
    text = render_summary(exp_dir, name or exp_dir.name)
    atomic_write_text(exp_dir / "summary.md", text)
    return text


def _forecasts_column(spec: StudySpec, rows: list[dict]) -> int | None:
    """The forecasts each of ROWS made, for validation.parquet's `forecasts` column (None when no row
    forecast): the forecast table counts the diverged forecasts out of those made, and a row says only
    how many diverged. Each validation training forecast from the test trajectories of the data its
    validation loaded (`data.validation_data`: the study's `study.forecast.trajectories`, or all)."""
    if not any(DIVERGED_COLUMN in r for r in rows):
        return None
    if spec.forecast_trajectories is not None:
        return int(spec.forecast_trajectories)
    from dnn_search.data import validation_data
    trajectories = validation_data(spec.dataset, spec.data_path).trajectories_test
    return None if trajectories is None else int(trajectories.shape[0])


def _meta_seconds(exp_dir: Path, key: str) -> float:
    from dnn_search.replicate import STEPS_FILE
    path = replicate_folder(exp_dir, key) / STEPS_FILE
    if not path.exists():
        return math.nan
    return float(sum(r.get("seconds", 0.0) for r in json.loads(path.read_text())))

