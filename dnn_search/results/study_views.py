"""The views of a diversity study, drawn by its analysis stage into `report_figures/`: what a reader
checks before trusting the answer (docs/design.md, "Diversity studies").

- `study_curves.png`: per arm, every replicate's held-out metric per outer step (its `steps.json`)
  overlaid: does the budget of outer steps reach a plateau, or is one arm still improving when it
  stops? The same question as numbers: each replicate's change over the last quarter of its steps
  (`plateau_columns`, added to replicates.parquet and shown in the summary);
- `study_activations.png`: per arm, every replicate's learned f_i on the standard grid (its
  `activations.npz`), one colour per replicate: do meta-seeds learn the same shapes?
- `study_variance.png`: the variance components of each arm's primary network (between meta-seeds,
  between retraining seeds), the numbers the summary's table gives.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from dnn_search.results.study_record import StudySpec, replicate_folder, replicates_of

CURVES = "report_figures/study_curves.png"
ACTIVATIONS = "report_figures/study_activations.png"
VARIANCE = "report_figures/study_variance.png"


def curves(exp_dir: Path, spec: StudySpec, metric: str) -> dict[str, list[tuple[str, list[int], list[float]]]]:
    """Arm -> [(replicate, steps, METRIC per step)] for every replicate that has a steps.json."""
    from dnn_search.replicate import STEPS_FILE
    out: dict[str, list] = {a.name: [] for a in spec.arms}
    for rep in replicates_of(spec):
        path = replicate_folder(exp_dir, rep.key) / STEPS_FILE
        if not path.is_file():
            continue
        rows = [r for r in json.loads(path.read_text()) if r.get(metric) is not None]
        out[rep.arm].append((rep.key, [int(r["step"]) for r in rows], [float(r[metric]) for r in rows]))
    return out


def plateau_columns(values: list[float]) -> dict[str, float]:
    """A replicate's curve summarised: its last value, and the change of its mean from the third to
    the last quarter of its steps (near 0 on a plateau; nan with fewer than 4 steps)."""
    finite = [v for v in values if math.isfinite(v)]
    out = {"heldout_last": finite[-1] if finite else math.nan, "heldout_change_last_quarter": math.nan}
    q = len(values) // 4
    if q >= 1:
        out["heldout_change_last_quarter"] = float(np.mean(values[-q:]) - np.mean(values[-2 * q:-q]))
    return out


def _panels(count: int):
    from dnn_search.plots import pyplot
    plt = pyplot()
    fig, axes = plt.subplots(1, count, figsize=(3.4 * count, 3.0), squeeze=False, sharey=True)
    return fig, axes[0]


def plot_curves(data: dict, metric: str, path: Path) -> Path:
    from dnn_search.plots import save_figure
    from dnn_search.results.figures_search import metric_label
    fig, axes = _panels(len(data))
    for ax, (arm, reps) in zip(axes, data.items()):
        for key, steps, values in reps:
            ax.plot(steps, values, lw=1.2, alpha=0.8, label=key.rsplit("-", 1)[-1])
        ax.set_title(f"{arm}: {len(reps)} replicates", fontsize=9)
        ax.set_xlabel("outer step")
        ax.grid(alpha=0.3)
        if len(reps) <= 8 and reps:
            ax.legend(fontsize=6)
    axes[0].set_ylabel(metric_label(metric))
    return save_figure(fig, path)


def plot_activations(exp_dir: Path, spec: StudySpec, path: Path) -> Path:
    """Each arm's panel: every completed replicate's f_i (one colour per replicate), base dashed."""
    import torch

    from dnn_search.activations import base_value
    from dnn_search.plots import pyplot, save_figure
    from dnn_search.replicate import ACTIVATIONS_STEM
    plt = pyplot()
    fig, axes = _panels(len(spec.arms))
    for ax, arm in zip(axes, spec.arms):
        files = [(rep.key, replicate_folder(exp_dir, rep.key) / f"{ACTIVATIONS_STEM}.npz")
                 for rep in replicates_of(spec) if rep.arm == arm.name]
        files = [(k, f) for k, f in files if f.is_file()]
        colors = plt.cm.tab10(np.arange(max(1, len(files))) % 10)
        base = None
        for (key, file), color in zip(files, colors):
            with np.load(file, allow_pickle=False) as z:
                x, y, base = z["x"], z["y"], str(z["base"])
            for i, row in enumerate(y):
                ax.plot(x, row, color=color, lw=1.0, alpha=0.8, label=key.rsplit("-", 1)[-1] if i == 0 else None)
        if base is not None:
            ax.plot(x, base_value(base, torch.as_tensor(x)).numpy(), "k--", lw=1.2, label=f"base: {base}")
            ax.legend(fontsize=6)
        ax.set_title(f"{arm.name} (n = {arm.n}): f_i of each replicate", fontsize=9)
        ax.set_xlabel("input x")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("activation f(x)")
    return save_figure(fig, path)


def plot_variance(variance: list[dict], path: Path) -> Path:
    from dnn_search.plots import pyplot, save_figure
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.8 + 1.3 * len(variance), 3.0))
    x = np.arange(len(variance))
    for offset, column, label in ((-0.2, "sigma2_meta", "between meta-seeds"),
                                  (0.2, "sigma2_ret", "between retraining seeds")):
        ax.bar(x + offset, [float(v[column]) if v[column] is not None else math.nan for v in variance], 0.4,
               label=label)
    ax.set_xticks(x, [f"{v['arm']}\n{v['network']}" for v in variance])
    ax.set_ylabel("variance (analysis scale)")
    ax.set_title("variance components of the primary networks", fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def write_views(exp_dir: Path, spec: StudySpec, metric: str, variance: list[dict]) -> list[Path]:
    """The three figures of the module docstring, from the study's files."""
    exp_dir = Path(exp_dir)
    return [plot_curves(curves(exp_dir, spec, metric), metric, exp_dir / CURVES),
            plot_activations(exp_dir, spec, exp_dir / ACTIVATIONS),
            plot_variance(variance, exp_dir / VARIANCE)]


def summary_lines(replicates, spec: StudySpec) -> list[str]:
    """summary.md's views section: the figures, and per arm whether its curves had levelled off."""
    from dnn_search.stats import format_number
    lines = ["## Views", "",
             f"![learning curves]({CURVES})", "", f"![learned activations]({ACTIVATIONS})", "",
             f"![variance components]({VARIANCE})", "",
             "| arm | held-out metric at the last step (mean over replicates) | change over the last quarter of "
             "the steps (mean; near 0: a plateau) |", "|---|---|---|"]
    if "heldout_last" not in replicates.columns:
        return lines[:7]
    for arm in spec.arms:
        mine = replicates[(replicates["arm"] == arm.name) & (replicates["status"] == "COMPLETED")]
        last = [v for v in mine["heldout_last"] if v is not None and math.isfinite(v)]
        change = [v for v in mine["heldout_change_last_quarter"] if v is not None and math.isfinite(v)]
        lines.append(f"| {arm.name} | {format_number(float(np.mean(last)), 4) if last else '–'} | "
                     f"{format_number(float(np.mean(change)), 4) if change else '–'} |")
    return lines + [""]
