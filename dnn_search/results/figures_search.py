"""Figures of the report's search sections: the top trials' activations, the learning curves, the
hyperparameters (importance, scatter, parallel coordinates). Each draws one figure from plain
tables (pandas DataFrames) and writes it as a PNG; axis labels come from `metric_label`, which
asks the search's task (`Task.metrics`, `Task.loss_label`) rather than guessing from a name."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dnn_search.activations import base_value
from dnn_search.plots import pyplot, save_figure

STATUS_STYLE: dict[str, dict[str, Any]] = {
    "COMPLETED": {"color": None, "ls": "-", "alpha": 0.9},
    "PRUNED": {"color": "0.55", "ls": "--", "alpha": 0.8},
    "FAILED": {"color": "tab:red", "ls": ":", "alpha": 0.8},
    "RUNNING": {"color": "tab:orange", "ls": "-.", "alpha": 0.8},
}
_SPLIT_WORDS = {"heldout": "held-out", "test": "test", "val": "validation"}


def metric_label(name: str, task=None) -> str:
    """An axis label with units for a column of the search tables, from TASK's declared metrics
    (Task.metric, Task.loss_label): 'final_heldout_accuracy' -> 'final held-out accuracy (fraction
    correct)'; the name with spaces for a column the task does not declare, or without a task."""
    loss = f" ({task.loss_label})" if task is not None else ""
    own = {"meta_loss": f"meta-loss J (mean inner {task.loss_label})" if task is not None else "meta-loss J",
           "final_train_loss": f"final training loss{loss}", "grad_norm": "meta-gradient norm"}
    if name in own:
        return own[name]
    for prefix in ("final_", "best_"):
        inner = name[len(prefix):]
        if name.startswith(prefix) and (inner in own or (task is not None and task.metric(inner) is not None)):
            return f"{prefix[:-1]} {metric_label(inner, task)}"
    metric = task.metric(name) if task is not None else None
    if metric is None:
        return name.replace("_", " ")
    split = name.split("_", 1)[0]
    return f"{_SPLIT_WORDS[split]} {metric.label}" if name != metric.name else metric.label


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
                         title: str = "Learning curves of all trials", task=None) -> Path:
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
        ax.set_ylabel(metric_label(metric, task))
        short = metric_label(metric, task).split(" (")[0]
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


def plot_param_scatter(trials, params, metric: str, path, title: str | None = None, task=None) -> Path:
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
        ax.set_ylabel(metric_label(metric, task), fontsize=8)
        ax.set_title(f"{metric} vs {param}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(params):]:
        ax.axis("off")
    fig.suptitle(title or f"Sampled hyperparameters against {metric_label(metric, task)}")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_parallel_coordinates(trials, params, metric: str, path, task=None) -> Path:
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
    grid = np.array(data)
    mvals = trials[metric].to_numpy(dtype=float)
    norm = plt.Normalize(np.nanmin(mvals), np.nanmax(mvals))
    cmap = plt.cm.viridis
    fig, ax = plt.subplots(figsize=(1.9 * len(cols) + 2, 4.4))
    for j in np.argsort(mvals):
        ax.plot(range(len(cols)), grid[:, j], color=cmap(norm(mvals[j])), alpha=0.85, lw=1.4)
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels(ticks, fontsize=8)
    ax.set_ylabel("position within the sampled range (0 = min, 1 = max)")
    for i in range(len(cols)):
        ax.axvline(i, color="0.7", lw=0.8)
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=ax, label=metric_label(metric, task))
    ax.set_title(f"Parallel coordinates of the finished trials, coloured by {metric}")
    fig.tight_layout()
    return save_figure(fig, path)
