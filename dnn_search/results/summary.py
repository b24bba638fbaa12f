"""summary.md: how the networks retrained with the exported activations compare.

Per dataset and exported trial: pure (the base function), the best homogeneous network (the
learned activation `single:k` with the best mean) and the diverse one, side by side; then the best
diverse network against pure and against the best homogeneous one over all trials, with Welch's
t-test on the per-seed values; then every mode with its Hessian numbers.
"""
from __future__ import annotations

import os
from pathlib import Path

from dnn_search.atomic import atomic_write_text
from dnn_search.results.layout import HESSIAN_FILE, SUMMARY_FILE, TRIALS_FILE, VALIDATION_FILE
from dnn_search.stats import format_mean_std as _pm


def summary_markdown(name: str, validation, hessian, trials) -> str:
    """summary.md: pure, best homogeneous (single:k) and diverse side by side per dataset and trial,
    then every mode in detail (test accuracy %, test loss, Hessian top eigenvalue and trace)."""
    lines = [f"# Summary of `{name}`", "",
             "Test accuracy (%) of ordinary networks retrained with the exported activations: mean ± std over "
             "seeds. *Best homogeneous* is the learned activation `single:k` with the best mean accuracy.", ""]
    header = ("| dataset | trial | n | pure | best homogeneous | diverse | diverse − best homogeneous |")
    lines += [header, "|---|---|---|---|---|---|---|"]
    detail = ["| dataset | trial | mode | runs | test accuracy (%) | test loss | top eigenvalue | trace |",
              "|---|---|---|---|---|---|---|---|"]
    n_of = {}
    if trials is not None and "n_activations" in getattr(trials, "columns", []):
        n_of = dict(zip(trials["trial_id"].astype(str), trials["n_activations"]))
    if validation is None or len(validation) == 0:
        lines.append("| – | – | – | – | – | – | – |")
    else:
        for (dataset, trial_id), group in validation.groupby(["dataset", "trial_id"], sort=False):
            by_mode = {m: g for m, g in group.groupby("mode", sort=False)}
            acc = {m: g["test_accuracy"].astype(float) for m, g in by_mode.items()}
            singles = [m for m in acc if m.startswith("single:")]
            best_single = max(singles, key=lambda m: acc[m].mean()) if singles else None
            delta = (f"{(acc['diverse'].mean() - acc[best_single].mean()) * 100:+.2f}"
                     if best_single and "diverse" in acc else "–")
            lines.append(f"| {dataset} | {trial_id} | {n_of.get(str(trial_id), '')} | "
                         f"{_pm(acc.get('pure', []), 100)} | "
                         f"{(_pm(acc[best_single], 100) + f' ({best_single})') if best_single else '–'} | "
                         f"{_pm(acc.get('diverse', []), 100)} | {delta} |")
            for mode, g in by_mode.items():
                top, trace = "–", "–"
                if hessian is not None and len(hessian):
                    h = hessian[(hessian["trial_id"] == trial_id) & (hessian["dataset"] == dataset)
                                & (hessian["mode"] == mode)]
                    if len(h):
                        top, trace = f"{float(h['top_eigenvalue'].iloc[0]):.4g}", f"{float(h['trace'].iloc[0]):.4g}"
                detail.append(f"| {dataset} | {trial_id} | {mode} | {len(g)} | {_pm(g['test_accuracy'], 100)} | "
                              f"{_pm(g['test_loss'], 1.0, 4)} | {top} | {trace} |")
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
    (any trial's `single:k`), with Welch's t-test on the per-seed test accuracies."""
    lines = ["## Diverse against the baselines", "",
             "Best of each kind over all exported trials (by mean test accuracy); p: two-sided Welch t-test "
             "over seeds.", "",
             "| dataset | diverse | pure | best homogeneous | p (diverse vs pure) | p (diverse vs best homogeneous) |",
             "|---|---|---|---|---|---|"]
    for dataset, group in validation.groupby("dataset", sort=False):
        runs = {(str(t), m): g["test_accuracy"].astype(float).to_numpy()
                for (t, m), g in group.groupby(["trial_id", "mode"], sort=False)}

        def best(kind):
            keys = [k for k in runs if (k[1].startswith("single:") if kind == "single" else k[1] == kind)]
            return max(keys, key=lambda k: runs[k].mean()) if keys else None
        diverse, pure, single = best("diverse"), best("pure"), best("single")

        def show(key):
            return f"{_pm(runs[key], 100)} ({key[0]} {key[1]})" if key else "–"
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
