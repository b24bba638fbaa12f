"""A diversity study's summary.md, rendered from its tables alone (replicates, comparisons, variance
components, validation) and study.json: the answer first, one sentence per primary contrast and the
primary family's table with each contrast's realised power beside its verdict, then the per-arm table
over meta-seeds, a forecast task's forecast table, every comparison, the failures and the variance
components.
A figure beside it draws one dot per meta-seed per arm, with each arm's 95 % CI.
"""
from __future__ import annotations

import math
from pathlib import Path

from dnn_search.results.study_calibration import summary_lines as calibration_summary
from dnn_search.results.study_record import (COMPARISONS_TABLE, DIVERGED_COLUMN, FORECASTS_COLUMN, REPLICATES_TABLE,
                                             StudySpec, control_modes, networks, read_spec)
from dnn_search.results.study_secondary import summary_lines as secondary_protocol_summary
from dnn_search.results.study_views import summary_lines as views_summary
from dnn_search.stats import finite_values, format_number, format_over_replicates, mean_ci

FIGURE = "report_figures/study_arms.png"


def _fmt_estimate(value: float, unit: str) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"×{math.exp(value):.3f}" if unit == "ratio" else f"{value:+.2f}"


def _interval(lo: float, hi: float, unit: str) -> str:
    if lo is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return "[–]"
    if unit == "ratio":
        return f"[{math.exp(lo):.3f}, {math.exp(hi):.3f}]"
    return f"[{lo:+.2f}, {hi:+.2f}]"


def _count(value) -> int | None:
    return int(value) if value is not None and math.isfinite(float(value)) else None


def _k(r) -> str:
    """The replicates behind a t-test contrast: `K = 12`, or `K = 12 vs 0` for a Welch test between
    arms that completed different numbers of replicates (a one-sample test has one K: its pairs)."""
    na, nb = _count(r.get("n_a")), _count(r.get("n_b"))
    if na is None:
        return "K = –"
    return f"K = {na}" if nb is None or nb == na or r["test"] != "welch" else f"K = {na} vs {nb}"


def not_computable(r) -> str | None:
    """Why a t-test contrast has no estimate (a side with no completed replicate, or no replicate with
    both networks), or None when it has one. The tables keep NaN there; this says which arm ran out."""
    if r["estimate"] is not None and math.isfinite(float(r["estimate"])):
        return None
    na, nb = _count(r.get("n_a")), _count(r.get("n_b"))
    if r["test"] == "welch" and na is not None and nb is not None:
        empty = [side for side, n in ((r["a"], na), (r["b"], nb)) if n == 0]
        if empty:
            return f"not computable: {' and '.join(empty)} {'has' if len(empty) == 1 else 'have'} 0 completed replicates"
    if r["test"] == "one-sample" and na == 0:
        return f"not computable: no completed replicate has both {r['a']} and {r['b']}"
    return None


def _estimate_cell(r) -> str:
    return not_computable(r) or _fmt_estimate(r["estimate"], r["unit"])


def _p(value) -> str:
    return "–" if value is None or not math.isfinite(float(value)) else f"{float(value):.2g}"


def answer_lines(comparisons, dataset: str, margin: tuple[float, float]) -> list[str]:
    """One sentence per primary contrast: estimate, 95 % CI, the TOST interval and the verdict."""
    rows = comparisons[comparisons["family"] == "primary"]
    lines = []
    for _, r in rows.iterrows():
        unit = r["unit"]
        what = "ratio of geometric-mean test MSE" if unit == "ratio" else "difference in test accuracy (points)"
        window = _interval(*margin, unit)
        missing = not_computable(r)
        if missing:
            lines.append(f"- **{dataset}, {r['contrast']}**: {what} {missing}, so no test: **{r['verdict']}**.")
            continue
        lines.append(f"- **{dataset}, {r['contrast']}**: {what} {_fmt_estimate(r['estimate'], unit)}, 95 % CI "
                     f"{_interval(r['ci_lo'], r['ci_hi'], unit)} (Holm p {_p(r['holm_p'])}; 90 % CI "
                     f"{_interval(r['ci90_lo'], r['ci90_hi'], unit)} against the margin {window}): "
                     f"**{r['verdict']}**.")
    return lines


def arm_table(replicates, spec, metric: str, log: bool) -> list[str]:
    """Per arm and network: the mean over meta-seeds of the per-replicate means, with its 95 % CI."""
    done = replicates[replicates["status"] == "COMPLETED"]
    lines = [f"| arm | n | replicates (completed / FAILED) | network | test {metric}: mean over meta-seeds "
             "[95 % CI] | sd over meta-seeds |", "|---|---|---|---|---|---|"]
    for arm in spec.arms:
        mine = done[done["arm"] == arm.name]
        failed = int(((replicates["arm"] == arm.name) & (replicates["status"] == "FAILED")).sum())
        modes = [c[len(f"test_{metric}["):-1] for c in replicates.columns if c.startswith(f"test_{metric}[")]
        for mode in modes:
            values = mine[f"test_{metric}[{mode}]"]
            if not finite_values(values).size:
                continue
            mean, bounds, spread = format_over_replicates(values, log)
            lines.append(f"| {arm.name} | {arm.n} | {len(mine)} / {failed} | {mode}{' (primary)' if mode == arm.primary else ''} | "
                         f"{mean} {bounds} | {spread} |")
    return lines


def comparison_table(comparisons, family: str) -> list[str]:
    rows = comparisons[comparisons["family"] == family]
    if rows.empty:
        return []
    lines = ["| contrast | test | estimate | 95 % CI | p | Holm p |", "|---|---|---|---|---|---|"]
    for _, r in rows.iterrows():
        unit = r["unit"]
        if unit == "odds ratio":
            lines.append(f"| {r['contrast']} | {r['test']} | {format_number(r['estimate'], 3)} | – | {_p(r['p'])} | – |")
            continue
        lines.append(f"| {r['contrast']} | {r['test']} ({_k(r)}) | {_estimate_cell(r)} | "
                     f"{_interval(r['ci_lo'], r['ci_hi'], unit)} | {_p(r['p'])} | {_p(r.get('holm_p'))} |")
    return lines


def verdict_table(comparisons, family: str, power: bool = False) -> list[str]:
    """A family of contrasts with their TOST intervals and verdicts (the primary family's, with the
    realised power beside each verdict when POWER; the secondary protocol's)."""
    rows = comparisons[comparisons["family"] == family]
    if rows.empty:
        return ["(none of the primary contrasts is between networks this protocol trains)"]
    extra = " σ_rep | K | realised power |" if power else ""
    lines = ["| contrast | test | estimate | 95 % CI | 90 % CI | Holm p | TOST p | verdict |" + extra,
             "|---|---|---|---|---|---|---|---|" + "---|" * (3 if power else 0)]
    for _, r in rows.iterrows():
        unit = r["unit"]
        cells = ""
        if power:
            k_cell = _count(r.get("power_k"))
            cells = (f" {format_number(r.get('sigma_rep'), 3)} | {'–' if k_cell is None else k_cell} | "
                     f"{format_number(r.get('realised_power'), 2)} |")
        lines.append(f"| {r['contrast']} | {r['test']} ({_k(r)}) | {_estimate_cell(r)} | "
                     f"{_interval(r['ci_lo'], r['ci_hi'], unit)} | {_interval(r['ci90_lo'], r['ci90_hi'], unit)} | "
                     f"{_p(r['holm_p'])} | {_p(r.get('tost_p'))} | **{r['verdict']}** |" + cells)
    return lines


def power_lines(comparisons, runs: int, log: bool) -> list[str]:
    """The primary family's table with the realised power beside each verdict, and what that power is."""
    if comparisons[comparisons["family"] == "primary"].empty:
        return []
    scale = "log-MSE" if log else "accuracy-point"
    return [*verdict_table(comparisons, "primary", power=True), "",
            f"Realised power: the chance that TOST at this margin calls \"equivalent\" when the two arms do not "
            f"differ, for Welch on K replicates per arm whose observations have the {scale} SD σ_rep, "
            f"σ²_rep = σ²_meta + σ²_ret/{runs} from the variance components below (the larger of the two arms'); "
            "it describes what the design could detect and never changes a verdict.", ""]


def _controls_section(exp_dir: Path, spec, comparisons, scale) -> list[str]:
    """The controls (results/study_controls.py): the mix groups beside the arms, one row per control
    contrast, and one line each on the mix groups, the copies check and the matched arm."""
    import pandas as pd

    from dnn_search.results.study_controls import mix_lines, mix_summary
    from dnn_search.results.study_record import MIX_TABLE
    if not spec.controls:
        return []
    mix = pd.read_parquet(exp_dir / MIX_TABLE) if (exp_dir / MIX_TABLE).is_file() else None
    rows = mix_summary(mix, scale.metric, scale.log)
    lines = ["## Controls", "", ("Each control isolates one rival explanation of a diversity effect (one-sample t "
                                 "within replicates, Welch between independent samples; Holm over this family)."), ""]
    if rows:
        lines += [f"| arm | n | groups | network | test {scale.metric}: mean over groups [95 % CI] | sd over groups |",
                  "|---|---|---|---|---|---|", *rows, ""]
    lines += [*comparison_table(comparisons, "controls"), "", *mix_lines(exp_dir, spec), ""]
    return lines


# ------------------------------------------------------------------------------ forecasts
# The forecast table (forecast tasks only; descriptive, no tests), per the plans: per arm (control arms
# aside), for its primary network, each single:k, pure and std:*, under the primary protocol, over every
# (replicate, retraining seed) row of validation.parquet: the median of each forecast metric the task
# declares (each row's value is already a median over its forecasts that did not diverge; a row whose
# forecasts all diverged has none and is left out of the median, its forecasts being in the count), and
# the diverged forecasts out of all made (sums of `rollout_diverged` and `forecasts`).


def forecast_metrics(task) -> tuple[str, ...]:
    """The forecast metrics shown as medians: every extra metric TASK declares but the diverged count;
    () for a task that makes no forecasts (then there is no table)."""
    names = tuple(m.name for m in task.extra_metrics)
    return tuple(n for n in names if n != DIVERGED_COLUMN) if DIVERGED_COLUMN in names else ()


def forecast_networks(spec: StudySpec) -> list[tuple[str, str]]:
    """(arm, mode) rows of the table: each non-control arm's primary network, single:k, pure and std:*
    (its validated networks without the controls), in the study's order."""
    return [(arm.name, mode) for arm in spec.arms if not arm.control
            for mode in networks(spec, arm) if mode not in control_modes(spec, arm)]


def forecast_rows(validation, spec: StudySpec, task) -> list[dict]:
    """The table's rows from VALIDATION (validation.parquet as a DataFrame): per (arm, mode) of
    `forecast_networks` with primary-protocol rows, the rows counted, the median of each forecast
    metric, the diverged forecasts and the forecasts made."""
    import numpy as np
    metrics = forecast_metrics(task)
    if not metrics or validation.empty or DIVERGED_COLUMN not in validation.columns:
        return []
    rows = validation[validation["protocol"] == "primary"] if "protocol" in validation.columns else validation
    out = []
    for arm, mode in forecast_networks(spec):
        mine = rows[(rows["arm"] == arm) & (rows["mode"] == mode)]
        if mine.empty:
            continue
        # `forecasts` is missing only from a table written before the analysis recorded it
        made = int(mine[FORECASTS_COLUMN].sum()) if FORECASTS_COLUMN in mine.columns else None
        row = {"arm": arm, "mode": mode, "trainings": len(mine), "diverged": int(mine[DIVERGED_COLUMN].sum()),
               "forecasts": made}
        for name in metrics:
            values = mine[name].to_numpy(dtype=float)
            values = values[np.isfinite(values)]
            row[name] = float(np.median(values)) if values.size else math.nan
        out.append(row)
    return out


def _number(value: float) -> str:
    """Three significant digits (forecast errors span decades between networks); '–' when missing."""
    return f"{value:.3g}" if math.isfinite(value) else "–"


def forecast_lines(exp_dir: Path, spec: StudySpec, task) -> list[str]:
    """summary.md's forecast section (none for a task without forecasts): a forecast task's validation
    networks also integrate their learned fields, and a small one-step error says little about how a
    field behaves when its own errors feed back, so the plans show these numbers per arm and network
    (results/plans/henonheiles-diversity.md, "The forecast table"). Descriptive: they never enter a
    contrast."""
    import pandas as pd
    path = Path(exp_dir) / "validation.parquet"
    rows = forecast_rows(pd.read_parquet(path), spec, task) if path.is_file() and forecast_metrics(task) else []
    if not rows:
        return []
    metrics = forecast_metrics(task)
    per = spec.forecast_trajectories
    source = f"the first {per} test trajector{'y' if per == 1 else 'ies'}" if per else "every test trajectory"
    lines = ["## Forecasts (descriptive)", "",
             f"Every validation network integrated its learned field with RK4 from the first state of {source}"
             " over its whole length, under the primary protocol. Per arm and network, over every (replicate, "
             "retraining seed): the median of each row's forecast metrics (a row's value is the median over its "
             "forecasts that did not diverge; a row whose forecasts all diverged has none) and the diverged "
             "forecasts out of all made. No test: these numbers never enter a contrast.", "",
             "| arm | network | trainings | " + " | ".join(f"median {m}" for m in metrics)
             + " | diverged / forecasts |", "|---|---|---|" + "---|" * len(metrics) + "---|"]
    for r in rows:
        primary = spec.arm(r["arm"]).primary == r["mode"]
        lines.append(f"| {r['arm']} | {r['mode']}{' (primary)' if primary else ''} | {r['trainings']} | "
                     + " | ".join(_number(r[m]) for m in metrics)
                     + f" | {r['diverged']} / {'–' if r['forecasts'] is None else r['forecasts']} |")
    return lines + [""]


def render_summary(exp_dir: Path, name: str) -> str:
    import pandas as pd

    from dnn_search.results.study_analysis import study_scale
    from dnn_search.tasks import task_for_dataset
    exp_dir = Path(exp_dir)
    spec = read_spec(exp_dir)
    scale = study_scale(spec)
    replicates = pd.read_parquet(exp_dir / REPLICATES_TABLE)
    comparisons = pd.read_parquet(exp_dir / COMPARISONS_TABLE)
    variance = pd.read_parquet(exp_dir / "variance.parquet")
    dataset = spec.dataset
    task = task_for_dataset(spec.dataset)
    unit = "log ratio" if scale.log else "accuracy points"
    lines = [f"# Diversity study `{name}`", "", spec.description, "",
             "## The answer", "",
             f"Primary contrasts (the meta-seed is the unit; Holm over the family; TOST at α = {spec.alpha:g} "
             f"per side, margin {_interval(*spec.margin, 'ratio' if scale.log else 'points')} in {unit}):", "",
             *answer_lines(comparisons, dataset, spec.margin), "",
             *power_lines(comparisons, spec.runs, scale.log),
             f"![one dot per meta-seed]({FIGURE})", "",
             "## Arms over meta-seeds", "",
             f"Each replicate's value is the mean over its {spec.runs} retraining seeds"
             f"{' on the log scale (geometric mean)' if scale.log else ''}, under the primary protocol (the "
             "meta-learning inner update at the arm's own inner lr and epochs; pure and std:* at the n = 1 arm's); "
             "networks are scored on the study's selection split, which meta-learning never saw, and on test.", "",
             *arm_table(replicates, spec, scale.metric, scale.log), ""]
    lines += calibration_summary(exp_dir, spec)
    lines += forecast_lines(exp_dir, spec, task)
    lines += _controls_section(exp_dir, spec, comparisons, scale)
    failed = replicates[replicates["status"] == "FAILED"]
    lines += ["## FAILED replicates", ""]
    if failed.empty:
        lines += ["None: every replicate reached its steps.", ""]
    else:
        lines += [f"- {r['replicate']} (arm {r['arm']}, meta-seed {r['meta_seed']}): step {r['steps']}: {r['reason']}"
                  for _, r in failed.iterrows()] + [""]
    lines += secondary_protocol_summary(exp_dir, spec, comparisons, verdict_table)
    lines += ["## Secondary contrasts (within replicates, one-sample t on the per-replicate differences)", "",
              *comparison_table(comparisons, "secondary"), ""]
    for family, title in (("sensitivity", "Sensitivity: failures at their arm's worst value"),
                          ("failures", "Failures per arm (Fisher's exact test)")):
        table = comparison_table(comparisons, family)
        if table:
            lines += [f"## {title}", "", *table, ""]
    lines += ["## Variance components (primary networks)", "",
              "| arm | network | K | σ² between meta-seeds | σ² between retraining seeds | ICC | cost-optimal R |",
              "|---|---|---|---|---|---|---|"]
    for _, v in variance.iterrows():
        best = "–" if v["optimal_r"] is None or not math.isfinite(float(v["optimal_r"] or math.nan)) else int(v["optimal_r"])
        lines.append(f"| {v['arm']} | {v['network']} | {int(v['k'])} | {format_number(v['sigma2_meta'], 3)} | "
                     f"{format_number(v['sigma2_ret'], 3)} | {format_number(v['icc'], 2)} | {best} |")
    lines.append("")
    lines += views_summary(replicates, spec)
    _figure(exp_dir / FIGURE, replicates, spec, scale)
    return "\n".join(lines)


# The controls drawn beside the arms in the comparison figure, by mode prefix: `reference` draws the
# n = 1 arm's replicates only (pure and std:* are one network for every arm); `each` draws every arm
# that validated the mode (mix, copies, random: per arm). A new control is one line here.
FIGURE_CONTROLS = (("pure", "reference"), ("std:", "reference"), ("mix", "each"), ("copies", "each"),
                   ("random", "each"))


def figure_networks(spec, replicates, metric: str) -> list[tuple[str, str]]:
    """(arm, mode) of each column of the comparison figure: each arm's primary network, then the
    controls of FIGURE_CONTROLS that the replicates table holds values for."""
    prefix = f"test_{metric}["
    modes = [c[len(prefix):-1] for c in replicates.columns if c.startswith(prefix)]
    ref = spec.reference_arm or spec.arms[0]
    out = [(arm.name, arm.primary) for arm in spec.arms]
    for start, where in FIGURE_CONTROLS:
        for mode in (m for m in modes if m.startswith(start)):
            for arm in ([ref] if where == "reference" else spec.arms):
                values = replicates[replicates["arm"] == arm.name][f"{prefix}{mode}]"]
                if values.notna().any() and (arm.name, mode) not in out:
                    out.append((arm.name, mode))
    return out


def _figure(path: Path, replicates, spec, scale) -> None:
    """One dot per meta-seed for each network of `figure_networks` (the arms' primary networks, then
    the controls), its mean and 95 % CI beside."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dnn_search.atomic import atomic_path
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = figure_networks(spec, replicates, scale.metric)
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(columns), 3.6))
    done = replicates[replicates["status"] == "COMPLETED"]
    for i, (arm_name, mode) in enumerate(columns):
        column = f"test_{scale.metric}[{mode}]"
        if column not in done.columns:
            continue
        values = [v for v in done[done["arm"] == arm_name][column] if v is not None and math.isfinite(v)]
        shown = values if scale.log else [100 * v for v in values]
        ax.scatter([i] * len(shown), shown, s=18, alpha=0.7, label=None)
        ci = mean_ci([math.log(v) for v in values] if scale.log else shown)
        if math.isfinite(ci.lo):
            lo, mid, hi = ((math.exp(ci.lo), math.exp(ci.mean), math.exp(ci.hi)) if scale.log
                           else (ci.lo, ci.mean, ci.hi))
            ax.errorbar([i + 0.2], [mid], yerr=[[mid - lo], [hi - mid]], fmt="s", color="black", capsize=4)
    arms = len(spec.arms)
    if len(columns) > arms:
        ax.axvline(arms - 0.5, color="grey", lw=0.8, ls=":")  # the arms on the left, controls on the right
    ax.set_xticks(range(len(columns)), [f"{a}\n{m}" for a, m in columns], fontsize=8)
    if scale.log:
        ax.set_yscale("log")
    ax.set_ylabel(f"test {scale.metric}" + ("" if scale.log else " (%)"))
    ax.set_title("one dot per meta-seed; mean and 95 % CI (squares); controls right of the dotted line", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
