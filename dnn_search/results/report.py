"""`dnn-search report`: one self-contained HTML report of a search (and its pipeline), plus its PNGs.

Reads the results folder (`report_data.py`): `trials.parquet`, `steps.parquet`, `search.json`, the Optuna
study, `activations/<trial>/`, and after a pipeline `validation.parquet`, `hessian.parquet`,
`summary.md`. Writes `report.html` (every image embedded as a base64 data URI, inline CSS, no
script, no network fetch) and `report_figures/*.png` beside it. Missing pieces become a sentence
in the report, not an error; only a folder with no trials at all is an error.

The report is a list of sections (SECTIONS), each a builder that returns its HTML parts: a new
section (the diversity study's) is one more builder, not a longer function.
"""
from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from dnn_search.atomic import atomic_write_text
from dnn_search.errors import UserError
from dnn_search.results import figures_search as figs
from dnn_search.results.comparison import task_of
from dnn_search.results.figures_validation import plot_hessian_densities
from dnn_search.results.html import CSS, esc, figure, fmt, markdown_to_html, table
from dnn_search.results.layout import find_search
from dnn_search.results.report_data import (FIGURE_DIR, REPORT_NAME, SearchResults, load_results, param_columns,
                                            param_importance, ranked_trials, varying)
from dnn_search.results.report_validation import validation_section

if TYPE_CHECKING:
    import pandas as pd

    from dnn_search.tasks.base import Task


@dataclass
class Context:
    """What every section builder gets: the results, the figure folder, the ranking (best first, the
    score under the name `final_<metric>`: the last reported value of the search metric), the
    sampled parameters, the search's task (for labels; None when unknown) and the --top count."""

    res: SearchResults
    figdir: Path
    ranked: pd.DataFrame
    score: str | None
    params: list[str]
    task: Task | None
    top: int


def _activation_file(folder: Path) -> Path | None:
    for pattern in ("*.npz", "*.txt"):
        files = sorted(p for p in folder.glob(pattern) if not p.name.startswith("."))
        if files:
            return files[0]
    return None


def header_section(c: Context) -> list[str]:
    """Title, metric and direction, trial counts by status, the best trial, and the loading notes."""
    from dnn_search import __version__
    res, counts = c.res, c.res.trials["status"].value_counts()
    order = ["COMPLETED", "PRUNED", "FAILED", "RUNNING"]
    count_html = "".join(f"<span>{int(counts.get(s, 0))} {s.lower()}</span>" for s in order if counts.get(s, 0))
    parts = [f"<h1>Search report: {esc(res.name)}</h1>",
             f'<p class="meta">Folder <code>{esc(res.folder.name)}</code> · metric <b>{esc(res.metric)}</b> '
             f"({'higher' if res.mode == 'max' else 'lower'} is better) · generated "
             f"{_dt.datetime.now().strftime('%Y-%m-%d %H:%M')} by dnn-search {__version__}</p>",
             f'<p class="counts" id="trial-count"><span>{len(res.trials)} trials</span>{count_html}</p>']
    if c.score is not None and len(c.ranked):
        best = c.ranked.iloc[0]
        parts.append(f"<p>Best trial: <b>{esc(best['trial_id'])}</b> with {esc(c.score)} = {fmt(best[c.score])}.</p>")
    return parts + [f'<p class="note">{esc(note)}</p>' for note in res.notes]


def activations_section(c: Context) -> list[str]:
    """The top trials' learned activations (from their exported files) and the ranking table."""
    from dnn_search.actfile import read_activation_file
    res, score, top = c.res, c.score, c.top
    parts = ["<h2>Top trials: learned activations</h2>"]
    entries, not_exported = [], []
    for _, row in c.ranked.head(top).iterrows():
        tid = row["trial_id"]
        folder_t = res.folder / "activations" / tid
        path = _activation_file(folder_t) if folder_t.is_dir() else None
        if path is None:
            not_exported.append(tid)
            continue
        try:
            loaded = read_activation_file(path)
        except UserError as e:
            parts.append(f'<p class="note">Trial {esc(tid)}: {esc(e)}</p>')
            continue
        label = f"{tid} ({score} {fmt(row[score])})" if score else tid
        entries.append((label, loaded.base, loaded.grid_x, loaded.grid_y))
    if not_exported:
        parts.append(f'<p class="note">No exported activations for trial{"s" if len(not_exported) > 1 else ""} '
                     f"{esc(', '.join(not_exported))} (among the top {min(top, len(c.ranked))}); "
                     f"<code>dnn-search export {esc(res.folder)} --top {top}</code> exports them.</p>")
    if entries:
        fig = figs.plot_top_activations(entries, c.figdir / "top_activations.png",
                                        title=f"Learned activations of the top {len(entries)} trials "
                                              "(dashed: base function)")
        parts.append(figure(fig, "Each panel: the trial's learned activations f_i(x) = base(x) + 0.2 g_i(x) on "
                                 "[-5, 5], with the base function dashed.", "top trials' activations"))
    else:
        parts.append('<p class="note">No learned activations to show yet (no finished trial has an activation '
                     'file).</p>')
    if len(c.ranked):
        import pandas as pd
        cols = ["trial_id", "status"] + c.params + [x for x in ("steps_done", score, "wall_seconds")
                                                    if x and x in c.ranked.columns]
        parts.append(table(pd.DataFrame(c.ranked.head(max(top, 10))[list(dict.fromkeys(cols))]),
                           left=("trial_id", "status", "activation")))
    return parts


def curves_section(c: Context) -> list[str]:
    """Every trial's learning curves (meta-loss, the search metric and the task's held-out primary)."""
    res, steps = c.res, c.res.steps
    held_out = f"heldout_{c.task.primary_metric}" if c.task is not None else "heldout_accuracy"
    metrics = list(dict.fromkeys(m for m in ("meta_loss", res.metric, held_out) if m in steps.columns))
    if not (len(steps) and metrics):
        return ["<h2>Learning curves</h2>", '<p class="note">No per-step metrics recorded yet.</p>']
    fig = figs.plot_learning_curves(steps, res.trials, c.figdir / "learning_curves.png", metrics=metrics,
                                    task=c.task)
    return ["<h2>Learning curves</h2>",
            figure(fig, "Per outer step, every trial. Pruned trials (grey, dashed, ending in x) stopped early; "
                        "failed trials are red and dotted.", "learning curves")]


def hyperparameter_section(c: Context) -> list[str]:
    """Parameter importance, and each finished trial's score against its sampled parameters."""
    res, score, finished = c.res, c.score, c.ranked
    parts = ["<h2>Hyperparameters</h2>"]
    imp, method = param_importance(res, c.params)
    if imp:
        fig = figs.plot_importance(imp, c.figdir / "param_importance.png",
                                   method=method.split(",")[0].split(" (")[0], metric=res.metric)
        parts.append(figure(fig, f"Importance method: {method}.", "hyperparameter importance"))
    else:
        parts.append(f'<p class="note">{esc(method)}</p>')
    shown = varying(finished, c.params) if score else []
    if not (score and len(finished) >= 2 and shown):
        return parts + ['<p class="note">Too few finished trials with varying hyperparameters for a scatter view.</p>']
    fig = figs.plot_param_scatter(finished, shown, score, c.figdir / "param_scatter.png", task=c.task)
    parts.append(figure(fig, f"Each finished trial's {score} against each sampled hyperparameter "
                             "(learning rates on a log10 axis; pruned trials report a truncated value).",
                        "hyperparameters against the metric"))
    done = finished[finished["status"] == "COMPLETED"]
    if len(done) >= 2:
        fig = figs.plot_parallel_coordinates(done, shown, score, c.figdir / "parallel_coordinates.png", task=c.task)
        parts.append(figure(fig, "Completed trials across their sampled ranges, coloured by the metric.",
                            "parallel coordinates"))
    return parts


def hessian_section(c: Context) -> list[str]:
    """Hessian spectral densities per mode and the mean top eigenvalue and trace."""
    hess = c.res.hessian
    if hess is None or not len(hess):
        return ["<h2>Hessian spectra</h2>",
                '<p class="note">No Hessian results yet (run `dnn-search pipeline` or `hessian`).</p>']
    parts = ["<h2>Hessian spectra</h2>"]
    if "density_eigen" in hess.columns:
        tasks = {d: task_of(d) for d in hess["dataset"].astype(str).unique()}
        fig = plot_hessian_densities(hess, c.figdir / "hessian_density.png",
                                     {d: t.loss_label for d, t in tasks.items() if t is not None})
        parts.append(figure(fig, "Smoothed stochastic-Lanczos-quadrature densities of the Hessian eigenvalues of "
                                 "the trained validation networks, per mode.", "Hessian spectral densities"))
    cols = [x for x in ("dataset", "mode", "top_eigenvalue", "trace") if x in hess.columns]
    agg = hess[cols].groupby([x for x in ("dataset", "mode") if x in cols]).mean().reset_index()
    return parts + [table(agg, left=("dataset", "mode"))]


def summary_section(c: Context) -> list[str]:
    if c.res.summary_md:
        return ["<h2>Summary</h2>", markdown_to_html(c.res.summary_md)]
    return ["<h2>Summary</h2>", '<p class="note">No summary.md yet (written by `dnn-search pipeline`).</p>']


SECTIONS: tuple[Callable[[Context], list[str]], ...] = (
    header_section, activations_section, curves_section, hyperparameter_section,
    lambda c: validation_section(c.res, c.figdir), hessian_section, summary_section)


def write_report(folder: str | os.PathLike, top: int = 4) -> Path:
    """Write FOLDER/report.html and FOLDER/report_figures/*.png; return the report's path."""
    res = load_results(folder)
    figdir = res.folder / FIGURE_DIR
    figdir.mkdir(parents=True, exist_ok=True)
    for old in figdir.glob("*.png"):  # figures of an earlier report that may no longer apply
        old.unlink()
    ranked, score = ranked_trials(res)
    if score is not None:  # shown as what it is: the last reported value of the search metric
        score = f"final_{res.metric}"
        ranked = ranked.drop(columns=score, errors="ignore").rename(columns={"score": score})
    context = Context(res, figdir, ranked, score, param_columns(res), task_of(res.dataset), top)
    parts = [part for section in SECTIONS for part in section(context)]
    doc = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
           f"<title>dnn-search report: {esc(res.name)}</title><style>{CSS}</style></head>"
           f"<body>\n{chr(10).join(parts)}\n</body></html>\n")
    return atomic_write_text(res.folder / REPORT_NAME, doc)


def run_report(name_or_dir: str, storage: str = "results", top: int = 4, out=None) -> Path:
    import sys
    out = out or sys.stdout
    from dnn_search.results.report_study import write_study_report
    from dnn_search.results.study_record import is_study
    folder = find_search(name_or_dir, storage)
    path = write_study_report(folder) if is_study(folder) else write_report(folder, top=top)
    figs = sorted((folder / FIGURE_DIR).glob("*.png"))
    print(f"Report: {path}", file=out)
    print(f"  {len(figs)} figures in {folder / FIGURE_DIR}", file=out, flush=True)
    return path
