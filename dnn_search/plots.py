"""Science figures and the one way the tool draws and writes them with matplotlib (Agg backend, atomic
PNGs): Hessian spectral densities (`smoothed_density`) and forecasts of a trajectory; and learned
activations, the one chart drawn with Pillow instead (`linechart.py`: every search trial draws it as it
ends). The report's figures, drawn from search tables, live in `dnn_search.results.figures_*`."""
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
    """FIG as a PNG at PATH, atomically, cropped to its drawn content."""
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
    """Each learned f_i on [-5, 5] next to its base function (dashed). Every search trial draws one
    as it ends, while its slot waits: drawn with Pillow (`linechart.py`), not matplotlib, in ~0.02 s
    instead of 0.07 s, and without matplotlib's 0.37 s import in each worker (docs/benchmarks_search.md)."""
    import torch

    from dnn_search.linechart import Series, line_chart, viridis
    x = standard_grid()
    y = acts.evaluate(x)
    series = [Series(base_value(acts.base, torch.as_tensor(x)).numpy(), (0, 0, 0), dashed=True,
                     label=f"base: {acts.base}")]
    for i, color in enumerate(viridis(np.linspace(0, 0.9, acts.n))):
        series.append(Series(y[i], color, label=f"f{i + 1}" if acts.n <= 10 else None))
    return line_chart(path, x, series, title=title, xlabel="input x (pre-activation)", ylabel="activation f(x)")


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
