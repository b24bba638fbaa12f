"""Matplotlib figures shared by the dashboard artifacts and the report (Agg backend, atomic PNGs)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dnn_search.activations import ActivationSet, base_value, standard_grid
from dnn_search.atomic import atomic_path
from dnn_search.cache import steer_matplotlib


def pyplot():
    steer_matplotlib()  # its font cache goes to our cache folder, never to $HOME
    import matplotlib
    if "matplotlib.pyplot" not in __import__("sys").modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    pyplot().close(fig)
    return path


def smoothed_density(eigen_runs, weight_runs, grid: np.ndarray, sd: float) -> np.ndarray:
    """Stochastic-Lanczos spectral density on `grid`: every Gauss node becomes a normal density of
    standard deviation `sd` scaled by its weight, and the runs are averaged. The one smoother of
    Hessian spectra (the per-model figure and the report's comparison both use it)."""
    density = np.zeros_like(grid, dtype=np.float64)
    runs = 0
    for nodes, weights in zip(eigen_runs, weight_runs):
        n = np.asarray(nodes, dtype=np.float64)[:, None]
        w = np.asarray(weights, dtype=np.float64)[:, None]
        density += (w * np.exp(-0.5 * ((grid[None, :] - n) / sd) ** 2)).sum(0)
        runs += 1
    return density / (max(1, runs) * sd * np.sqrt(2 * np.pi))


def plot_activations(acts: ActivationSet, path, title: str = "Learned activations") -> Path:
    """Each learned f_i on [-5, 5] next to its base function (dashed)."""
    import torch
    plt = pyplot()
    x = standard_grid()
    y = acts.evaluate(x)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x, base_value(acts.base, torch.as_tensor(x)).numpy(), "k--", lw=1.5, label=f"base: {acts.base}")
    colors = plt.cm.viridis(np.linspace(0, 0.9, acts.n))
    for i in range(acts.n):
        ax.plot(x, y[i], color=colors[i], lw=1.5, label=f"f{i + 1}" if acts.n <= 10 else None)
    ax.set_xlabel("input x (pre-activation)")
    ax.set_ylabel("activation f(x)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return save_figure(fig, path)


# ------------------------------------------------------------------------------------- report figures
# Each function draws one figure from plain tables (pandas DataFrames) and writes it as a PNG.

STATUS_STYLE = {
    "COMPLETED": {"color": None, "ls": "-", "alpha": 0.9},
    "PRUNED": {"color": "0.55", "ls": "--", "alpha": 0.8},
    "FAILED": {"color": "tab:red", "ls": ":", "alpha": 0.8},
    "RUNNING": {"color": "tab:orange", "ls": "-.", "alpha": 0.8},
}
_UNITS = {"meta_loss": "meta-loss J (mean inner cross-entropy, nats)",
          "heldout_accuracy": "held-out accuracy (fraction correct)",
          "heldout_loss": "held-out loss (cross-entropy, nats)",
          "final_train_loss": "final training loss (cross-entropy, nats)",
          "grad_norm": "meta-gradient norm"}


def metric_label(name: str) -> str:
    """An axis label with units: 'final_heldout_accuracy' -> 'final held-out accuracy (fraction correct)'."""
    for prefix in ("final_", "best_"):
        if name.startswith(prefix) and name[len(prefix):] in _UNITS:
            return f"{prefix[:-1]} {_UNITS[name[len(prefix):]]}"
    return _UNITS.get(name, name.replace("_", " "))


def _draw_activations(ax, x, y, base: str, title: str) -> None:
    import torch
    plt = pyplot()
    ax.plot(x, base_value(base, torch.as_tensor(x)).numpy(), "k--", lw=1.5, label=f"base: {base}")
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(y)))
    for i, row in enumerate(y):
        ax.plot(x, row, color=colors[i], lw=1.5, label=f"f{i + 1}" if len(y) <= 8 else None)
    ax.set_xlabel("input x (pre-activation)")
    ax.set_ylabel("activation f(x)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def plot_top_activations(entries, path, title: str = "Learned activations of the top trials") -> Path:
    """entries: [(label, base, grid_x, grid_y (n, K))] drawn one panel each, base function dashed."""
    plt = pyplot()
    k = max(1, len(entries))
    cols = 2 if k == 4 else min(3, k)
    rows = -(-k // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    for ax, (label, base, x, y) in zip(axes.flat, entries):
        _draw_activations(ax, np.asarray(x), np.asarray(y), base, label)
    for ax in list(axes.flat)[len(entries):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_learning_curves(steps, trials, path, metrics=("meta_loss", "heldout_accuracy"),
                         title: str = "Learning curves of all trials") -> Path:
    """One panel per metric, one line per trial over outer steps; pruned trials grey, dashed,
    ending early with an x; failed ones red and dotted."""
    plt = pyplot()
    status = dict(zip(trials["trial_id"].astype(str), trials["status"].astype(str))) if trials is not None else {}
    metrics = [m for m in metrics if m in steps.columns and steps[m].notna().any()]
    fig, axes = plt.subplots(1, max(1, len(metrics)), figsize=(6.2 * max(1, len(metrics)), 4.2), squeeze=False)
    ids = list(dict.fromkeys(steps["trial_id"].astype(str)))
    palette = [plt.cm.tab10(i) for i in (0, 1, 2, 4, 5, 6, 8, 9)]  # no red/grey: those mean failed/pruned
    for ax, metric in zip(axes.flat, metrics):
        for j, tid in enumerate(ids):
            part = steps[steps["trial_id"].astype(str) == tid].sort_values("step")
            st = status.get(tid, "COMPLETED")
            style = STATUS_STYLE.get(st, STATUS_STYLE["COMPLETED"])
            color = style["color"] if style["color"] is not None else palette[j % len(palette)]
            ax.plot(part["step"], part[metric], ls=style["ls"], color=color, alpha=style["alpha"], lw=1.3)
            if st != "COMPLETED" and len(part):
                ax.plot(part["step"].iloc[-1], part[metric].iloc[-1], "x", color=color, ms=7)
        ax.set_xlabel("outer (meta) step")
        ax.set_ylabel(metric_label(metric))
        short = metric_label(metric).split(" (")[0]
        ax.set_title(short[:1].upper() + short[1:] + " per step")
        ax.grid(alpha=0.3)
        from matplotlib.lines import Line2D
        present = [s for s in STATUS_STYLE if s in set(status.values())] or ["COMPLETED"]
        handles = [Line2D([], [], color=STATUS_STYLE[s]["color"] or palette[0], ls=STATUS_STYLE[s]["ls"],
                          marker="x" if s != "COMPLETED" else None, label=f"{s.lower()} trials")
                   for s in present]
        ax.legend(handles=handles, fontsize=8, loc="best")
    fig.suptitle(f"{title} ({len(ids)} trials)")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_importance(importances: dict, path, method: str, metric: str) -> Path:
    plt = pyplot()
    names = list(importances)[::-1]
    values = [importances[n] for n in names]
    fig, ax = plt.subplots(figsize=(6.5, 0.5 * len(names) + 1.6))
    bars = ax.barh(names, values, color="tab:blue")
    for bar, v in zip(bars, values):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {v:.2f}", va="center", fontsize=8)
    ax.set_xlabel("importance (fraction of the total, sums to 1)")
    ax.set_ylabel("hyperparameter")
    ax.set_xlim(0, max(values + [0.01]) * 1.18)
    ax.set_title(f"Hyperparameter importance for {metric}\n({method})", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def _numeric_axis(values):
    """Map a parameter column to numbers: numeric as is (log10 if it spans > 1 decade), categories by code."""
    import pandas as pd
    s = pd.Series(values)
    num = pd.to_numeric(s, errors="coerce")
    if num.notna().all():
        arr = num.to_numpy(dtype=float)
        if (arr > 0).all() and arr.max() / arr.min() > 10:
            return np.log10(arr), "log10", None
        return arr, "linear", None
    cats = sorted(s.astype(str).unique())
    return np.array([cats.index(v) for v in s.astype(str)], dtype=float), "category", cats


def plot_param_scatter(trials, params, metric: str, path, title: str | None = None) -> Path:
    """One panel per parameter: the metric of every finished trial against the sampled value."""
    plt = pyplot()
    k = max(1, len(params))
    cols = min(3, k)
    rows = -(-k // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.4 * rows), squeeze=False)
    for ax, param in zip(axes.flat, params):
        xs, scale, cats = _numeric_axis(trials[param])
        ys = trials[metric].to_numpy(dtype=float)
        for st, marker, color in (("COMPLETED", "o", "tab:blue"), ("PRUNED", "x", "0.45")):
            mask = np.asarray(trials["status"].astype(str) == st)
            if mask.any():
                ax.scatter(xs[mask], ys[mask], marker=marker, color=color, alpha=0.85, label=f"{st.lower()}")
        if cats:
            ax.set_xticks(range(len(cats)))
            ax.set_xticklabels(cats)
        elif scale == "linear" and np.allclose(xs, np.round(xs)):
            from matplotlib.ticker import MaxNLocator
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(f"log10 {param}" if scale == "log10" else param)
        ax.set_ylabel(metric_label(metric), fontsize=8)
        ax.set_title(f"{metric} vs {param}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(params):]:
        ax.axis("off")
    fig.suptitle(title or f"Sampled hyperparameters against {metric_label(metric)}")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_parallel_coordinates(trials, params, metric: str, path) -> Path:
    """Parallel coordinates: each finished trial a line across its (normalised) parameters and the
    metric, coloured by the metric."""
    plt = pyplot()
    cols = list(params) + [metric]
    data, ticks = [], []
    for c in cols:
        vals, scale, cats = _numeric_axis(trials[c])
        lo, hi = float(np.nanmin(vals)), float(np.nanmax(vals))
        span = hi - lo if hi > lo else 1.0
        data.append((vals - lo) / span)
        if cats:
            ticks.append(f"{c}\n({', '.join(cats)})")
        elif scale == "log10":
            ticks.append(f"{c}\n[{10 ** lo:.3g}, {10 ** hi:.3g}] log")
        else:
            ticks.append(f"{c}\n[{lo:.3g}, {hi:.3g}]")
    data = np.array(data)
    mvals = trials[metric].to_numpy(dtype=float)
    norm = plt.Normalize(np.nanmin(mvals), np.nanmax(mvals))
    cmap = plt.cm.viridis
    fig, ax = plt.subplots(figsize=(1.9 * len(cols) + 2, 4.4))
    for j in np.argsort(mvals):
        ax.plot(range(len(cols)), data[:, j], color=cmap(norm(mvals[j])), alpha=0.85, lw=1.4)
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels(ticks, fontsize=8)
    ax.set_ylabel("position within the sampled range (0 = min, 1 = max)")
    for i in range(len(cols)):
        ax.axvline(i, color="0.7", lw=0.8)
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=ax, label=metric_label(metric))
    ax.set_title(f"Parallel coordinates of the finished trials, coloured by {metric}")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_validation(table, path, value: str = "test_accuracy") -> Path:
    """Grouped bars: mean ± std of `value` over seeds, one group per dataset and exported trial
    (modes of different trials are different networks, so they are never pooled), one bar per mode."""
    plt = pyplot()
    table = table.copy()
    table["_group"] = table["dataset"].astype(str)
    if "trial_id" in table.columns:
        table["_group"] += "\ntrial " + table["trial_id"].astype(str)
    stats = table.groupby(["_group", "mode"])[value].agg(["mean", "std", "count"]).reset_index()
    groups = list(dict.fromkeys(table["_group"]))
    modes = _mode_order(table["mode"].astype(str))
    width = 0.8 / max(1, len(modes))
    fig, ax = plt.subplots(figsize=(min(11, max(6, 0.55 * len(groups) * len(modes) + 3)), 4.4))
    colors = plt.cm.tab10(np.linspace(0, 1, 10))
    for i, mode in enumerate(modes):
        part = stats[stats["mode"].astype(str) == mode].set_index("_group")
        means = [part["mean"].get(g, np.nan) for g in groups]
        stds = [np.nan_to_num(part["std"].get(g, 0.0)) for g in groups]
        xs = np.arange(len(groups)) + (i - (len(modes) - 1) / 2) * width
        ax.bar(xs, means, width, yerr=stds, capsize=4, label=mode, color=colors[i % 10], alpha=0.9)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups)
    ax.set_xlabel("dataset and exported trial")
    ax.set_ylabel(metric_label(value) if value != "test_accuracy" else "test accuracy (fraction correct)")
    lo = np.nanmin(stats["mean"] - stats["std"].fillna(0))
    if value.endswith("accuracy"):
        ax.set_ylim(max(0.0, lo - 0.05), min(1.0, np.nanmax(stats["mean"] + stats["std"].fillna(0)) + 0.05))
    runs = int(stats["count"].max()) if len(stats) else 0
    ax.set_title(f"Validation: {value.replace('_', ' ')} per mode (mean ± std over {runs} seeds)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title="mode", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def _mode_order(modes) -> list[str]:
    def key(m):
        if m == "pure":
            return (0, 0)
        if m.startswith("single:"):
            try:
                return (1, int(m.split(":", 1)[1]))
            except ValueError:
                return (1, 0)
        return (2, 0) if m == "diverse" else (3, 0)
    return sorted(dict.fromkeys(modes), key=key)


def plot_hessian_densities(table, path) -> Path:
    """Smoothed SLQ eigenvalue densities, one panel per dataset, one line per mode (log y).

    Each Gauss node contributes a Gaussian (std 1 % of the dataset's eigenvalue span) scaled by its
    weight; runs are averaged; all modes of a dataset share one grid so their curves compare."""
    plt = pyplot()
    datasets = list(dict.fromkeys(table["dataset"].astype(str)))
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.2), squeeze=False)
    colors = plt.cm.tab10(np.linspace(0, 1, 10))
    modes = _mode_order(table["mode"].astype(str))
    for ax, dataset in zip(axes.flat, datasets):
        part = table[table["dataset"].astype(str) == dataset]
        curves = {}
        for mode in modes:
            rows = part[part["mode"].astype(str) == mode]
            if len(rows):
                eig, wts = _runs(rows.iloc[0]["density_eigen"]), _runs(rows.iloc[0]["density_weight"])
                if any(len(r) for r in eig):
                    curves[mode] = (eig, wts)
        if not curves:
            ax.axis("off")
            continue
        nodes = np.concatenate([np.asarray(r, dtype=float) for eig, _ in curves.values() for r in eig if len(r)])
        lo, hi = float(nodes.min()), float(nodes.max())
        span = max(hi - lo, 1e-3)
        grid = np.linspace(lo - 0.08 * span, hi + 0.08 * span, 1500)
        sd = 0.01 * span
        for i, mode in enumerate(modes):
            if mode not in curves:
                continue
            dens = smoothed_density(*curves[mode], grid, sd)
            ax.semilogy(grid, np.maximum(dens, 1e-12), color=colors[i % 10], lw=1.3, label=mode)
        ax.set_xlabel("Hessian eigenvalue λ (curvature of the cross-entropy loss)")
        ax.set_ylabel("spectral density (per unit λ, log scale)")
        ax.set_ylim(bottom=1e-5)
        ax.set_title(f"Hessian spectral density: {dataset}")
        ax.grid(alpha=0.3)
        ax.legend(title="mode", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def _runs(value) -> list[list[float]]:
    """A density column as a list of runs: accepts a list of lists or one flat list (one run)."""
    if value is None:
        return []
    seq = list(value)
    if not seq:
        return []
    if np.ndim(seq[0]) == 0:
        return [[float(v) for v in seq]]
    return [[float(v) for v in run] for run in seq]


def plot_mode_comparison(panels, path, ylabel: str, log: bool = False, mark_hatch: str = "//") -> Path:
    """Bars with 95% confidence intervals, one panel per (title, bars) in PANELS.

    Each bar is a dict: `label` (x tick), `mean`, `lo`, `hi` (the interval; NaN: no error bar) and
    `mark` (None, or a short text such as "picked on val": the bar is hatched and the text written
    above it). LOG: a logarithmic value axis (for errors compared as ratios)."""
    plt = pyplot()
    panels = list(panels)
    widths = [max(6.0, 0.6 * len(bars) + 1.5) for _, bars in panels] or [6.0]
    fig, axes = plt.subplots(len(panels) or 1, 1, figsize=(min(14.0, max(widths)), 4.2 * max(1, len(panels))),
                             squeeze=False)
    colors = plt.cm.tab10(np.linspace(0, 1, 10))
    for ax, (title, bars) in zip(axes.flat, panels):
        xs = np.arange(len(bars))
        means = np.array([float(b["mean"]) for b in bars], dtype=float)
        lo = np.array([float(b["lo"]) for b in bars], dtype=float)
        hi = np.array([float(b["hi"]) for b in bars], dtype=float)
        err = np.vstack([np.where(np.isfinite(lo), means - lo, 0.0), np.where(np.isfinite(hi), hi - means, 0.0)])
        for i, b in enumerate(bars):
            kind = str(b.get("kind", ""))
            color = colors[{"pure": 7, "standard": 0, "homogeneous": 2, "diverse": 3}.get(kind, i % 10)]
            ax.bar(xs[i], means[i], 0.7, color=color, alpha=0.85, edgecolor="black" if b.get("mark") else color,
                   linewidth=1.5 if b.get("mark") else 0.5, hatch=mark_hatch if b.get("mark") else None)
        ax.errorbar(xs, means, yerr=err, fmt="none", ecolor="black", capsize=4, lw=1)
        top = np.nanmax(np.where(np.isfinite(hi), hi, means)) if len(bars) and np.isfinite(means).any() else 1.0
        for i, b in enumerate(bars):
            if b.get("mark") and np.isfinite(means[i]):
                y = hi[i] if np.isfinite(hi[i]) else means[i]
                ax.annotate(str(b["mark"]), (xs[i], y), xytext=(0, 4), textcoords="offset points", ha="center",
                            va="bottom", fontsize=7, rotation=90 if len(bars) > 6 else 0)
        ax.set_xticks(xs)
        ax.set_xticklabels([str(b["label"]) for b in bars], rotation=35 if len(bars) > 4 else 0, ha="right"
                           if len(bars) > 4 else "center", fontsize=8)
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")
        elif np.isfinite(means).any():
            low = np.nanmin(np.where(np.isfinite(lo), lo, means))
            span = max(top - low, 1e-9)
            ax.set_ylim(max(0.0, low - 0.4 * span) if low >= 0 else low - 0.4 * span, top + 0.35 * span)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_forecast(truth, forecasts: dict, path, title: str, dt: float = 0.01, state_names=None) -> Path:
    """A test trajectory against networks' forecasts of it: one panel per state variable over time,
    and the path in the plane of the first two variables (van der Pol's phase plane, Henon-Heiles'
    (q1, q2) configuration plane), where a forecast that drifts off the true orbit shows at a glance.

    `truth` (steps + 1, d); `forecasts` label -> (steps' + 1, d) arrays (e.g. {"pure": ..., "diverse":
    ...}, from `task.forecast(net, truth[0], steps)`); non-finite points are simply not drawn.
    """
    plt = pyplot()
    truth = np.asarray(truth, dtype=np.float64)
    d = truth.shape[1]
    names = list(state_names) if state_names is not None else [f"z{i + 1}" for i in range(d)]
    fig = plt.figure(figsize=(10, max(3.2, 1.6 * d)))
    grid = fig.add_gridspec(d, 2, width_ratios=(1.6, 1))
    colors = plt.cm.tab10(np.linspace(0, 1, 10))
    series = [("truth", truth, dict(color="black", lw=1.6))]
    series += [(label, np.asarray(f, dtype=np.float64), dict(color=colors[i % 10], lw=1.1, ls="--"))
               for i, (label, f) in enumerate(forecasts.items())]
    lo, hi = truth.min(0), truth.max(0)
    margin = 0.5 * np.maximum(hi - lo, 1e-9)
    for k in range(d):
        ax = fig.add_subplot(grid[k, 0])
        for label, values, style in series:
            ax.plot(np.arange(len(values)) * dt, values[:, k], label=label, **style)
        ax.set_ylim(lo[k] - margin[k], hi[k] + margin[k])  # a runaway forecast must not flatten the truth
        ax.set_ylabel(names[k])
        if k == d - 1:
            ax.set_xlabel("time")
        else:
            ax.tick_params(labelbottom=False)
    ax = fig.add_subplot(grid[:, 1])
    for label, values, style in series:
        ax.plot(values[:, 0], values[:, 1 % d], label=label, **style)
    ax.plot(truth[0, 0], truth[0, 1 % d], "o", color="black", ms=4)
    ax.set_xlim(lo[0] - margin[0], hi[0] + margin[0])
    ax.set_ylim(lo[1 % d] - margin[1 % d], hi[1 % d] + margin[1 % d])
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1 % d])
    ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)
