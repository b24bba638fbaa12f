"""A diversity study's summary.md, rendered from its tables alone (replicates, comparisons, variance
components, validation) and study.json: the answer first, one sentence per primary contrast, then
the per-arm table over meta-seeds, every comparison, the failures and the variance components.
A figure beside it draws one dot per meta-seed per arm, with each arm's 95 % CI.
"""
from __future__ import annotations

import math
from pathlib import Path

from dnn_search.results.study_calibration import summary_lines as calibration_summary
from dnn_search.results.study_record import COMPARISONS_TABLE, REPLICATES_TABLE, read_spec
from dnn_search.results.study_secondary import summary_lines as secondary_protocol_summary
from dnn_search.results.study_views import summary_lines as views_summary
from dnn_search.stats import format_number, mean_ci

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
            values = [v for v in mine[f"test_{metric}[{mode}]"] if v is not None and math.isfinite(v)]
            if not values:
                continue
            scaled = [math.log(v) for v in values] if log else [100 * v for v in values]
            ci = mean_ci(scaled)
            show = (lambda x: format_number(math.exp(x), 3)) if log else (lambda x: f"{x:.2f}")
            spread = f"×{math.exp(ci.sd):.2f}" if log else f"{ci.sd:.2f}"
            lines.append(f"| {arm.name} | {arm.n} | {len(mine)} / {failed} | {mode}{' (primary)' if mode == arm.primary else ''} | "
                         f"{show(ci.mean)} [{show(ci.lo) if math.isfinite(ci.lo) else '–'}, "
                         f"{show(ci.hi) if math.isfinite(ci.hi) else '–'}] | {spread} |")
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
        lines.append(f"| {r['contrast']} | {r['test']} (K = {int(r['n_a'])}) | {_fmt_estimate(r['estimate'], unit)} | "
                     f"{_interval(r['ci_lo'], r['ci_hi'], unit)} | {_p(r['p'])} | {_p(r.get('holm_p'))} |")
    return lines


def verdict_table(comparisons, family: str) -> list[str]:
    """A family of contrasts with their TOST intervals and verdicts (the secondary protocol's)."""
    rows = comparisons[comparisons["family"] == family]
    if rows.empty:
        return ["(none of the primary contrasts is between networks this protocol trains)"]
    lines = ["| contrast | test | estimate | 95 % CI | 90 % CI | Holm p | verdict |", "|---|---|---|---|---|---|---|"]
    for _, r in rows.iterrows():
        unit = r["unit"]
        lines.append(f"| {r['contrast']} | {r['test']} (K = {int(r['n_a'])}) | {_fmt_estimate(r['estimate'], unit)} | "
                     f"{_interval(r['ci_lo'], r['ci_hi'], unit)} | {_interval(r['ci90_lo'], r['ci90_hi'], unit)} | "
                     f"{_p(r['holm_p'])} | **{r['verdict']}** |")
    return lines


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


def render_summary(exp_dir: Path, name: str) -> str:
    import pandas as pd

    from dnn_search.results.study_analysis import study_scale
    exp_dir = Path(exp_dir)
    spec = read_spec(exp_dir)
    scale = study_scale(spec)
    replicates = pd.read_parquet(exp_dir / REPLICATES_TABLE)
    comparisons = pd.read_parquet(exp_dir / COMPARISONS_TABLE)
    variance = pd.read_parquet(exp_dir / "variance.parquet")
    dataset = spec.fixed.get("dataset", "MNIST1D")
    unit = "log ratio" if scale.log else "accuracy points"
    lines = [f"# Diversity study `{name}`", "", spec.description, "",
             "## The answer", "",
             f"Primary contrasts (the meta-seed is the unit; Holm over the family; TOST at α = {spec.alpha:g} "
             f"per side, margin {_interval(*spec.margin, 'ratio' if scale.log else 'points')} in {unit}):", "",
             *answer_lines(comparisons, dataset, spec.margin), "",
             f"![one dot per meta-seed]({FIGURE})", "",
             "## Arms over meta-seeds", "",
             f"Each replicate's value is the mean over its {spec.runs} retraining seeds"
             f"{' on the log scale (geometric mean)' if scale.log else ''}, under the primary protocol (the "
             "meta-learning inner update at the arm's own inner lr and epochs; pure and std:* at the n = 1 arm's); "
             "networks are scored on the study's selection split, which meta-learning never saw, and on test.", "",
             *arm_table(replicates, spec, scale.metric, scale.log), ""]
    lines += calibration_summary(exp_dir, spec)
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
