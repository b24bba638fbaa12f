"""`dnn-search report`: one self-contained HTML report of a search (and its pipeline), plus its PNGs.

Reads the results folder (`report_data.py`): `trials.parquet`, `steps.parquet`, `search.json`, the Optuna
study, `activations/<trial>/`, and after a pipeline `validation.parquet`, `hessian.parquet`,
`summary.md`. Writes `report.html` (every image embedded as a base64 data URI, inline CSS, no
script, no network fetch) and `report_figures/*.png` beside it. Missing pieces become a sentence
in the report, not an error; only a folder with no trials at all is an error.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
import os
import re
from pathlib import Path

import numpy as np

from dnn_search.atomic import atomic_write_text
from dnn_search.errors import UserError
from dnn_search.results.layout import find_search
from dnn_search.results.summary import (PICK_ROLES, comparison_note, comparison_table, compare, metric_view, picks_table,
                                        split_sentence, trial_info)
from dnn_search.stats import format_mean_std, mean_ci
from dnn_search.results.report_data import (FIGURE_DIR, REPORT_NAME, load_results, param_columns,
                                            param_importance, ranked_trials, varying)


def _activation_file(folder: Path) -> Path | None:
    for pattern in ("*.npz", "*.txt"):
        files = sorted(p for p in folder.glob(pattern) if not p.name.startswith("."))
        if files:
            return files[0]
    return None


# ------------------------------------------------------------------------------------- HTML

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0 auto;max-width:1200px;
padding:1.5em;color:#222;background:#fff;line-height:1.45}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
.meta{color:#555}.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.5em .8em}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.9em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}th{background:#f3f3f3}
td.l,th.l{text-align:left}.counts span{display:inline-block;margin-right:1em;font-weight:600}
code{background:#f3f3f3;padding:0 .2em}
"""


def _esc(x) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, (float, np.floating)):
        if not math.isfinite(v):
            return ""
        return f"{v:.4g}"
    return str(v)


def _table(frame, left=()) -> str:
    head = "".join(f'<th class="{"l" if c in left else ""}">{_esc(c)}</th>' for c in frame.columns)
    body = []
    for _, row in frame.iterrows():
        body.append("<tr>" + "".join(f'<td class="{"l" if c in left else ""}">{_esc(_fmt(row[c]))}</td>'
                                     for c in frame.columns) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _figure(path: Path, caption: str, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{_esc(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_esc(caption)} <code>{_esc(FIGURE_DIR + '/' + path.name)}</code></figcaption></figure>")


def markdown_to_html(text: str) -> str:
    """The small Markdown subset summary.md uses: headings, pipe tables, lists, paragraphs, `code`."""
    def inline(s: str) -> str:
        s = _esc(s)
        s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
        s = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", s)
        return re.sub(r"\b(?:https?|ftp)://\S+", "[link removed]", s)  # the report fetches nothing

    out, para, lines, i = [], [], text.splitlines(), 0

    def flush():
        if para:
            out.append(f"<p>{inline(' '.join(para))}</p>")
            para.clear()
    while i < len(lines):
        line = lines[i].rstrip()
        if line.lstrip().startswith("|"):
            flush()
            rows = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(re.fullmatch(r":?-{2,}:?", c) for c in cells if c):
                    rows.append(cells)
                i += 1
            if rows:
                head = "".join(f"<th>{inline(c)}</th>" for c in rows[0])
                body = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            continue
        m = re.match(r"(#{1,6})\s+(.*)", line)
        if m:
            flush()
            level = min(6, len(m.group(1)) + 2)  # nested below the report's own h2
            out.append(f"<h{level}>{inline(m.group(2))}</h{level}>")
        elif re.match(r"\s*[-*]\s+", line):
            flush()
            items = []
            while i < len(lines) and re.match(r"\s*[-*]\s+", lines[i]):
                item = re.sub(r"^\s*[-*]\s+", "", lines[i])
                items.append(f"<li>{inline(item)}</li>")
                i += 1
            out.append(f"<ul>{''.join(items)}</ul>")
            continue
        elif not line.strip():
            flush()
        else:
            para.append(line.strip())
        i += 1
    flush()
    return "\n".join(out)


# ------------------------------------------------------------------------------------- validation

def _rows_table(header, rows, left=()) -> str:
    import pandas as pd
    return _table(pd.DataFrame(rows, columns=header), left=left)


def comparison_panels(comps) -> tuple[list, list[str]]:
    """Bars for `plots.plot_mode_comparison`, one panel per (dataset, optimizer): every arm's test mean
    (geometric mean for a log metric) with its 95% t-interval, the picks marked "picked on <split>";
    and, per panel, a line naming the marked bars (for the figure's alt text)."""
    panels, picked = [], []
    for comp in comps:
        view = comp.view
        pick_of = {}
        for role, arm in comp.picks.items():
            if arm is not None and role != "pure":
                pick_of.setdefault(id(arm), role)
        order = {"pure": 0, "standard": 1, "homogeneous": 2, "diverse": 3}
        arms = sorted(comp.arms, key=lambda a: (a.trial_id is not None, a.trial_id or "", order[a.kind], a.mode))
        bars = []
        for arm in arms:
            values = [v for v in arm.test.values()]
            if view.log:
                ci = mean_ci([math.log(v) for v in values if math.isfinite(v) and v > 0])
                mean, lo, hi = (math.exp(x) if math.isfinite(x) else math.nan for x in (ci.mean, ci.lo, ci.hi))
            else:
                ci = mean_ci(values)
                mean, lo, hi = ci.mean * view.scale, ci.lo * view.scale, ci.hi * view.scale
            mark = f"{pick_of[id(arm)]}\npicked on {comp.split}" if id(arm) in pick_of else None
            bars.append({"label": arm.mode if arm.trial_id is None else f"{arm.mode}\n{arm.trial_id}",
                         "mean": mean, "lo": lo, "hi": hi, "mark": mark, "kind": arm.kind,
                         "role": pick_of.get(id(arm)), "name": arm.label})
        # what the figure marks, read back from its bars
        marked = [f"{b['role']} {b['name']}" for b in sorted((b for b in bars if b["mark"]),
                                                             key=lambda b: PICK_ROLES.index(b["role"]))]
        panels.append((f"{comp.dataset}, optimizer {comp.optimizer}: test {view.metric} "
                       f"(picks on {'validation' if comp.split == 'val' else 'TEST: no validation split'})", bars))
        picked.append(f"picked on {comp.split} for {comp.dataset} {comp.optimizer}: " + ", ".join(marked))
    return panels, picked


def forecast_figure(comp, val, figdir: Path) -> Path | None:
    """For a task that forecasts trajectories: the first test trajectory against the forecasts of the
    saved seed-0 networks of pure, the best homogeneous and the best diverse pick. None when the task
    does not forecast or no model was saved (the pipeline saves run-0 models when Hessians run)."""
    from dnn_search import plots
    from dnn_search.data import load_dataset
    from dnn_search.errors import UserError
    from dnn_search.models import load_net
    from dnn_search.tasks import task_for_dataset
    try:
        task = task_for_dataset(comp.dataset)
    except UserError:
        return None
    if not hasattr(task, "forecast") or "model_path" not in val.columns:
        return None
    rows = val[(val["dataset"] == comp.dataset) & (val.get("optimizer", "sgd") == comp.optimizer)
               & (val["model_path"].fillna("").astype(str) != "")]
    forecasts, truth = {}, None
    for role in ("pure", "best homogeneous", "best diverse"):
        arm = comp.picks.get(role)
        if arm is None:
            continue
        match = rows[rows["mode"] == arm.mode]
        if arm.trial_id is not None:
            match = match[match["trial_id"].astype(str) == arm.trial_id]
        if not len(match) or not Path(str(match["model_path"].iloc[0])).is_file():
            continue
        path = Path(str(match["model_path"].iloc[0]))
        spec = json.loads(path.with_suffix(".json").read_text())
        if truth is None:
            data = load_dataset(comp.dataset)
            if data.trajectories_test is None:
                return None
            truth = data.trajectories_test[0].numpy()
        net = load_net(spec, path)
        forecasts[f"{role} ({arm.mode})"] = task.forecast(net, truth[0], len(truth) - 1)
    if not forecasts:
        return None
    slug = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{comp.dataset}_{comp.optimizer}")
    return plots.plot_forecast(truth, forecasts, figdir / f"forecast_{slug}.png",
                               f"{comp.dataset}: a test trajectory and its forecasts")


def _every_mode_table(val, view, homogeneous_diverse=frozenset()) -> str:
    """Every mode's val and test mean ± std per (dataset, optimizer, trial): detail, not used for picks.
    pure and std:* do not depend on the trial: shown once, deduplicated by seed. HOMOGENEOUS_DIVERSE:
    (dataset, optimizer, trial) of one-activation trials, whose diverse row is labelled as homogeneous."""
    import pandas as pd

    from dnn_search.plots import _mode_order
    frame = val.copy()
    if "optimizer" not in frame.columns:
        frame["optimizer"] = "sgd"
    frame["optimizer"] = frame["optimizer"].fillna("sgd").astype(str)
    frame["mode"] = frame["mode"].astype(str)
    shared = (frame["mode"] == "pure") | frame["mode"].str.startswith("std:")
    frame["trial"] = np.where(shared, "–", frame["trial_id"].astype(str) if "trial_id" in frame else "–")
    if "seed" in frame.columns:
        frame = pd.concat([frame[shared].drop_duplicates(["dataset", "optimizer", "mode", "seed"]), frame[~shared]])
    keys = ["dataset", "optimizer", "trial", "mode"]
    columns = [c for c in (view.val_column, view.column, view.secondary) if c and c in frame.columns]
    groups = frame.groupby(keys, sort=False)
    stats = groups.agg(runs=(view.column, "size")).reset_index()
    for col in columns:  # the one mean ± std of the tool (dnn_search.stats)
        stats[col.replace("_", " ")] = list(groups[col].agg(lambda v: format_mean_std(v, digits=4)))
    order = {m: i for i, m in enumerate(_mode_order(stats["mode"].astype(str)))}
    stats = stats.assign(_o=stats["mode"].map(order), _shared=stats["trial"] != "–")
    stats = stats.sort_values(["dataset", "optimizer", "_shared", "trial", "_o"], kind="stable")
    one = [(d, o, t) in homogeneous_diverse and m == "diverse"
           for d, o, t, m in zip(stats["dataset"].astype(str), stats["optimizer"], stats["trial"], stats["mode"])]
    stats.loc[one, "mode"] = "diverse (n = 1: homogeneous, not diverse)"
    return _table(stats[[*keys, "runs", *[c.replace("_", " ") for c in columns]]],
                  left=("dataset", "optimizer", "trial", "mode"))


# ------------------------------------------------------------------------------------- the report

def write_report(folder: str | os.PathLike, top: int = 4) -> Path:
    """Write FOLDER/report.html and FOLDER/report_figures/*.png; return the report's path."""
    from dnn_search import __version__, plots
    from dnn_search.actfile import read_activation_file

    res = load_results(folder)
    figdir = res.folder / FIGURE_DIR
    figdir.mkdir(parents=True, exist_ok=True)
    for old in figdir.glob("*.png"):  # figures of an earlier report that may no longer apply
        old.unlink()
    trials, steps = res.trials, res.steps
    counts = trials["status"].value_counts()
    ranked, score = ranked_trials(res)
    params = param_columns(res)
    parts: list[str] = []
    add = parts.append

    # header
    order = ["COMPLETED", "PRUNED", "FAILED", "RUNNING"]
    count_html = "".join(f"<span>{int(counts.get(s, 0))} {s.lower()}</span>" for s in order if counts.get(s, 0))
    add(f"<h1>Search report: {_esc(res.name)}</h1>")
    add(f'<p class="meta">Folder <code>{_esc(res.folder.name)}</code> · metric <b>{_esc(res.metric)}</b> '
        f"({'higher' if res.mode == 'max' else 'lower'} is better) · generated "
        f"{_dt.datetime.now().strftime('%Y-%m-%d %H:%M')} by dnn-search {__version__}</p>")
    add(f'<p class="counts" id="trial-count"><span>{len(trials)} trials</span>{count_html}</p>')
    if score is not None and len(ranked):
        best = ranked.iloc[0]
        add(f"<p>Best trial: <b>{_esc(best['trial_id'])}</b> with {_esc(score)} = {_fmt(best[score])}.</p>")
    for note in res.notes:
        add(f'<p class="note">{_esc(note)}</p>')

    # top trials' activations
    add("<h2>Top trials: learned activations</h2>")
    entries, table_rows, not_exported = [], [], []
    for _, row in ranked.head(top).iterrows():
        tid = row["trial_id"]
        folder_t = res.folder / "activations" / tid
        path = _activation_file(folder_t) if folder_t.is_dir() else None
        label = f"{tid} ({score} {_fmt(row[score])})" if score else tid
        if path is None:
            not_exported.append(tid)
            continue
        try:
            loaded = read_activation_file(path)
        except UserError as e:
            add(f'<p class="note">Trial {_esc(tid)}: {_esc(e)}</p>')
            continue
        entries.append((label, loaded.base, loaded.grid_x, loaded.grid_y))
        table_rows.append(row)
    if not_exported:
        add(f'<p class="note">No exported activations for trial{"s" if len(not_exported) > 1 else ""} '
            f"{_esc(', '.join(not_exported))} (among the top {min(top, len(ranked))}); "
            f"<code>dnn-search export {_esc(res.folder)} --top {top}</code> exports them.</p>")
    if entries:
        fig = plots.plot_top_activations(entries, figdir / "top_activations.png",
                                         title=f"Learned activations of the top {len(entries)} trials "
                                               "(dashed: base function)")
        add(_figure(fig, "Each panel: the trial's learned activations f_i(x) = base(x) + 0.2 g_i(x) on [-5, 5], "
                         "with the base function dashed.", "top trials' activations"))
    else:
        add('<p class="note">No learned activations to show yet (no finished trial has an activation file).</p>')
    if len(ranked):
        import pandas as pd
        cols = ["trial_id", "status"] + params + [c for c in ("steps_done", score, "wall_seconds")
                                                  if c and c in ranked.columns]
        add(_table(pd.DataFrame(ranked.head(max(top, 10))[list(dict.fromkeys(cols))]),
                   left=("trial_id", "status", "activation")))

    # learning curves
    add("<h2>Learning curves</h2>")
    metrics = [m for m in ("meta_loss", res.metric, "heldout_accuracy") if m in steps.columns]
    metrics = list(dict.fromkeys(metrics))
    if len(steps) and metrics:
        fig = plots.plot_learning_curves(steps, trials, figdir / "learning_curves.png", metrics=metrics)
        add(_figure(fig, "Per outer step, every trial. Pruned trials (grey, dashed, ending in x) stopped early; "
                         "failed trials are red and dotted.", "learning curves"))
    else:
        add('<p class="note">No per-step metrics recorded yet.</p>')

    # hyperparameters
    add("<h2>Hyperparameters</h2>")
    imp, method = param_importance(res, params)
    if imp:
        fig = plots.plot_importance(imp, figdir / "param_importance.png", method=method.split(",")[0].split(" (")[0],
                                    metric=res.metric)
        add(_figure(fig, f"Importance method: {method}.", "hyperparameter importance"))
    else:
        add(f'<p class="note">{_esc(method)}</p>')
    finished = ranked
    shown = varying(finished, params) if score else []
    if score and len(finished) >= 2 and shown:
        fig = plots.plot_param_scatter(finished, shown, score, figdir / "param_scatter.png")
        add(_figure(fig, f"Each finished trial's {score} against each sampled hyperparameter "
                         "(learning rates on a log10 axis; pruned trials report a truncated value).",
                    "hyperparameters against the metric"))
        done = finished[finished["status"] == "COMPLETED"]
        if len(done) >= 2:
            fig = plots.plot_parallel_coordinates(done, shown, score, figdir / "parallel_coordinates.png")
            add(_figure(fig, "Completed trials across their sampled ranges, coloured by the metric.",
                        "parallel coordinates"))
    else:
        add('<p class="note">Too few finished trials with varying hyperparameters for a scatter view.</p>')

    # validation
    add("<h2>Validation</h2>")
    val = res.validation
    if val is not None and len(val):
        comps = compare(val, trials)
        view = comps[0].view if comps else metric_view(str(val["dataset"].iloc[0]))
        name = view.metric  # the task's metric: accuracy, mse, ...
        panels, picked = comparison_panels(comps)
        unit = " (%)" if view.scale == 100.0 else (" (geometric mean, log scale)" if view.log else "")
        fig = plots.plot_mode_comparison(panels, figdir / f"validation_{name}.png", ylabel=f"test {name}{unit}",
                                         log=view.log)
        splits = sorted({c.split for c in comps})
        add(_figure(fig, f"Test {name} of the networks retrained with the base function (pure), standard activations "
                         "(std:*), one learned activation everywhere (single:k, per trial) or all of a trial's "
                         "activations in blocks (diverse, trials with at least two activations); error bars: 95% "
                         f"t-intervals over seeds{' of log values' if view.log else ''}. Hatched and labelled "
                         f"\"picked on {'/'.join(splits)}\": the best standard, homogeneous and diverse networks, chosen "
                         f"on the {'validation split' if splits == ['val'] else 'split named'}, not on test.",
                    "validation comparison; " + "; ".join(picked)))
        info = trial_info(trials)
        for comp in comps:
            add(f"<h3>{_esc(comp.dataset)}, optimizer {_esc(comp.optimizer)}</h3>")
            add(markdown_to_html(split_sentence(comp)))
            if comp.homogeneous_diverse:
                add(f'<p class="note">Not counted as diverse (one activation, so homogeneous): the diverse rows of '
                    f"{_esc(', '.join(comp.homogeneous_diverse))}.</p>")
            header, rows = picks_table(comp, info)
            add(_rows_table(header, rows, left=("row", "picked", "trial", "picked on")))
            add(markdown_to_html(comparison_note(comp)))
            header, rows = comparison_table(comp)
            add(_rows_table(header, rows, left=("comparison (A − B)", "A", "B")))
        for comp in comps:
            fig = forecast_figure(comp, val, figdir)
            if fig is not None:
                add(_figure(fig, f"{comp.dataset}, optimizer {comp.optimizer}: the first test trajectory (black) "
                                 "against the forecasts (RK4 on the learned vector field, from its first state) of "
                                 "the seed-0 networks: pure and the networks picked on validation.",
                            f"forecast of a {comp.dataset} test trajectory"))
        add("<h3>Every mode (detail, not used for picks)</h3>")
        add(_every_mode_table(val, view, {(c.dataset, c.optimizer, t) for c in comps for t in c.homogeneous_diverse}))
    else:
        add('<p class="note">No validation results yet (run `dnn-search pipeline` or `validate`).</p>')

    # hessian
    add("<h2>Hessian spectra</h2>")
    hess = res.hessian
    if hess is not None and len(hess):
        if "density_eigen" in hess.columns:
            fig = plots.plot_hessian_densities(hess, figdir / "hessian_density.png")
            add(_figure(fig, "Smoothed stochastic-Lanczos-quadrature densities of the Hessian eigenvalues of "
                             "the trained validation networks, per mode.", "Hessian spectral densities"))
        cols = [c for c in ("dataset", "mode", "top_eigenvalue", "trace") if c in hess.columns]
        agg = hess[cols].groupby([c for c in ("dataset", "mode") if c in cols]).mean().reset_index()
        add(_table(agg, left=("dataset", "mode")))
    else:
        add('<p class="note">No Hessian results yet (run `dnn-search pipeline` or `hessian`).</p>')

    # summary
    add("<h2>Summary</h2>")
    if res.summary_md:
        add(markdown_to_html(res.summary_md))
    else:
        add('<p class="note">No summary.md yet (written by `dnn-search pipeline`).</p>')

    doc = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
           f"<title>dnn-search report: {_esc(res.name)}</title><style>{CSS}</style></head>"
           f"<body>\n{chr(10).join(parts)}\n</body></html>\n")
    return atomic_write_text(res.folder / REPORT_NAME, doc)


def run_report(name_or_dir: str, storage: str = "results", top: int = 4, out=None) -> Path:
    import sys
    out = out or sys.stdout
    folder = find_search(name_or_dir, storage)
    path = write_report(folder, top=top)
    figs = sorted((folder / FIGURE_DIR).glob("*.png"))
    print(f"Report: {path}", file=out)
    print(f"  {len(figs)} figures in {folder / FIGURE_DIR}", file=out, flush=True)
    return path
