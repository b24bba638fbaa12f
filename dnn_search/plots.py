"""Matplotlib figures shared by the dashboard artifacts and the report (Agg backend, atomic PNGs)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dnn_search.activations import ActivationSet, base_value, standard_grid
from dnn_search.atomic import atomic_path


def pyplot():
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
