"""summary.md: how the networks retrained with the exported activations compare.

Per dataset and exported trial: pure (the base function), the best homogeneous network (the
learned activation `single:k` with the best mean) and the diverse one, side by side; then the best
diverse network against pure and against the best homogeneous one over all trials, with Welch's
t-test on the per-seed values; then every mode with its Hessian numbers. Which column is "the"
metric, which direction is better and how it is shown come from the dataset's task
(classification: test accuracy in %, higher is better; a regression task: its test MSE, lower).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dnn_search.atomic import atomic_write_text
from dnn_search.results.layout import HESSIAN_FILE, SUMMARY_FILE, TRIALS_FILE, VALIDATION_FILE
from dnn_search.stats import format_mean_std as _pm


@dataclass(frozen=True)
class MetricView:
    """How the summary shows a dataset's primary validation metric, and its other one."""

    column: str          # e.g. test_accuracy
    label: str           # e.g. "test accuracy (%)"
    direction: str       # max | min
    scale: float         # 100 for accuracies (shown in %)
    digits: int
    secondary: str | None  # e.g. test_loss, shown with 4 digits

    def best(self, keys, mean):
        pick = max if self.direction == "max" else min
        return pick(keys, key=mean) if keys else None


def metric_view(dataset: str) -> MetricView:
    """The view of DATASET's task (classification when the dataset is unknown to the registry)."""
    from dnn_search.errors import UserError
    from dnn_search.tasks import task_for_dataset
    try:
        task = task_for_dataset(dataset)
        primary, directions = task.primary_metric, task.metric_directions
    except UserError:
        primary, directions = "accuracy", {"accuracy": "max", "loss": "min"}
    others = [m for m in directions if m != primary]
    percent = primary == "accuracy"
    return MetricView(f"test_{primary}", f"test {primary} (%)" if percent else f"test {primary}",
                      directions[primary], 100.0 if percent else 1.0, 2 if percent else 4,
                      f"test_{others[0]}" if others else None)


def summary_markdown(name: str, validation, hessian, trials) -> str:
    """summary.md: pure, best homogeneous (single:k) and diverse side by side per dataset and trial,
    then every mode in detail (the task's metrics, Hessian top eigenvalue and trace)."""
    first = metric_view(str(validation["dataset"].iloc[0])) if validation is not None and len(validation) else \
        metric_view("MNIST1D")
    better = "best" if first.direction == "max" else "lowest"
    lines = [f"# Summary of `{name}`", "",
             f"{first.label[0].upper() + first.label[1:]} of ordinary networks retrained with the exported "
             "activations: mean ± std over seeds. *Best homogeneous* is the learned activation `single:k` with the "
             f"{better} mean {first.column[len('test_'):]}.", ""]
    header = ("| dataset | trial | n | pure | best homogeneous | diverse | diverse − best homogeneous |")
    lines += [header, "|---|---|---|---|---|---|---|"]
    detail = [f"| dataset | trial | mode | runs | {first.label} | "
              f"{first.secondary.replace('_', ' ') if first.secondary else '–'} | top eigenvalue | trace |",
              "|---|---|---|---|---|---|---|---|"]
    n_of = {}
    if trials is not None and "n_activations" in getattr(trials, "columns", []):
        n_of = dict(zip(trials["trial_id"].astype(str), trials["n_activations"]))
    if validation is None or len(validation) == 0:
        lines.append("| – | – | – | – | – | – | – |")
    else:
        for (dataset, trial_id), group in validation.groupby(["dataset", "trial_id"], sort=False):
            view = metric_view(str(dataset))
            by_mode = {m: g for m, g in group.groupby("mode", sort=False)}
            values = {m: g[view.column].astype(float) for m, g in by_mode.items()}
            singles = [m for m in values if m.startswith("single:")]
            best_single = view.best(singles, lambda m: values[m].mean())
            delta = (f"{(values['diverse'].mean() - values[best_single].mean()) * view.scale:+.{view.digits}f}"
                     if best_single and "diverse" in values else "–")
            show = (lambda v: _pm(v, view.scale, view.digits))
            lines.append(f"| {dataset} | {trial_id} | {n_of.get(str(trial_id), '')} | "
                         f"{show(values.get('pure', []))} | "
                         f"{(show(values[best_single]) + f' ({best_single})') if best_single else '–'} | "
                         f"{show(values.get('diverse', []))} | {delta} |")
            for mode, g in by_mode.items():
                top, trace = "–", "–"
                if hessian is not None and len(hessian):
                    h = hessian[(hessian["trial_id"] == trial_id) & (hessian["dataset"] == dataset)
                                & (hessian["mode"] == mode)]
                    if len(h):
                        top, trace = f"{float(h['top_eigenvalue'].iloc[0]):.4g}", f"{float(h['trace'].iloc[0]):.4g}"
                second = _pm(g[view.secondary], 1.0, 4) if view.secondary in g else "–"
                detail.append(f"| {dataset} | {trial_id} | {mode} | {len(g)} | {show(g[view.column])} | "
                              f"{second} | {top} | {trace} |")
    if validation is not None and len(validation):
        lines += ["", *significance(validation)]
    lines += ["", "## Every mode", "", *detail, ""]
    return "\n".join(lines)


def welch_p(a, b) -> float:
    """Two-sided p-value of Welch's t-test (unequal variances); NaN with fewer than 2 values a side."""
    from scipy.stats import ttest_ind
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    return float(ttest_ind(a, b, equal_var=False).pvalue)


def significance(validation) -> list[str]:
    """Per dataset: the best diverse network against pure and against the best homogeneous one
    (any trial's `single:k`), with Welch's t-test on the per-seed values of the task's metric."""
    first = metric_view(str(validation["dataset"].iloc[0]))
    lines = ["## Diverse against the baselines", "",
             f"Best of each kind over all exported trials (by mean {first.column.replace('_', ' ')}); "
             "p: two-sided Welch t-test over seeds.", "",
             "| dataset | diverse | pure | best homogeneous | p (diverse vs pure) | p (diverse vs best homogeneous) |",
             "|---|---|---|---|---|---|"]
    for dataset, group in validation.groupby("dataset", sort=False):
        view = metric_view(str(dataset))
        runs = {(str(t), m): g[view.column].astype(float).to_numpy()
                for (t, m), g in group.groupby(["trial_id", "mode"], sort=False)}

        def best(kind):
            keys = [k for k in runs if (k[1].startswith("single:") if kind == "single" else k[1] == kind)]
            return view.best(keys, lambda k: runs[k].mean())
        diverse, pure, single = best("diverse"), best("pure"), best("single")

        def show(key):
            return f"{_pm(runs[key], view.scale, view.digits)} ({key[0]} {key[1]})" if key else "–"
        p_pure = f"{welch_p(runs[diverse], runs[pure]):.3g}" if diverse and pure else "–"
        p_single = f"{welch_p(runs[diverse], runs[single]):.3g}" if diverse and single else "–"
        lines.append(f"| {dataset} | {show(diverse)} | {show(pure)} | {show(single)} | {p_pure} | {p_single} |")
    return lines


def write_summary(exp_dir: str | os.PathLike, name: str) -> str:
    """Write EXP_DIR/summary.md from its validation, Hessian and trial tables; return the text."""
    import pandas as pd
    exp_dir = Path(exp_dir)
    validation = pd.read_parquet(exp_dir / VALIDATION_FILE)
    hessian = pd.read_parquet(exp_dir / HESSIAN_FILE) if (exp_dir / HESSIAN_FILE).is_file() else None
    trials = pd.read_parquet(exp_dir / TRIALS_FILE) if (exp_dir / TRIALS_FILE).is_file() else None
    text = summary_markdown(name, validation, hessian, trials)
    atomic_write_text(exp_dir / SUMMARY_FILE, text)
    return text
