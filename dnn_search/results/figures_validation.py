"""Figures of the report's validation and Hessian sections: every network's test metric with its
95% interval (the picks marked), and the Hessian spectral densities per mode. Plain tables in,
one PNG out; modes appear in the one order of `dnn_search.modes`."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dnn_search.modes import sorted_modes
from dnn_search.plots import pyplot, save_figure, smoothed_density


def plot_hessian_densities(table, path, loss_labels: dict | None = None) -> Path:
    """Smoothed SLQ eigenvalue densities, one panel per dataset, one line per mode (log y).

    Each Gauss node contributes a Gaussian (std 1 % of the dataset's eigenvalue span) scaled by its
    weight; runs are averaged; all modes of a dataset share one grid so their curves compare.
    LOSS_LABELS: dataset -> its task's loss in words (Task.loss_label), for the axis."""
    plt = pyplot()
    datasets = list(dict.fromkeys(table["dataset"].astype(str)))
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.2), squeeze=False)
    colors = plt.cm.tab10(np.linspace(0, 1, 10))
    modes = sorted_modes(table["mode"].astype(str))
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
        loss = (loss_labels or {}).get(dataset, "loss").split(",")[0]
        ax.set_xlabel(f"Hessian eigenvalue λ (curvature of the {loss} loss)")
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
