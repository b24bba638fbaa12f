"""The report's validation section: every network's test metric with its interval (picks marked),
the picks and comparison tables (the rows summary.md shows, from `summary_tables`), forecasts of a
test trajectory for tasks that forecast, and every mode in detail with the task's detail metrics."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from dnn_search.modes import Mode, is_shared, sorted_modes
from dnn_search.results.comparison import PICK_ROLES, compare, metric_view, task_of, trial_info
from dnn_search.results.figures_validation import plot_mode_comparison
from dnn_search.results.html import esc, figure, markdown_to_html, rows_table, table
from dnn_search.results.summary_tables import comparison_note, comparison_table, picks_table, split_sentence
from dnn_search.stats import format_mean_std, mean_ci


def comparison_panels(comps) -> tuple[list, list[str]]:
    """Bars for `figures_validation.plot_mode_comparison`, one panel per (dataset, optimizer): every arm's test mean
    (geometric mean for a log metric) with its 95% t-interval, the picks marked "picked on <split>";
    and, per panel, a line naming the marked bars (for the figure's alt text)."""
    panels, picked = [], []
    for comp in comps:
        view = comp.view
        pick_of: dict[int, str] = {}
        for role, arm in comp.picks.items():
            if arm is not None and role != "pure":
                pick_of.setdefault(id(arm), role)
        arms = sorted(comp.arms, key=lambda a: (a.trial_id is not None, a.trial_id or "", Mode.parse(a.mode).sort_key()))
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
    from dnn_search.models import load_net
    task = task_of(comp.dataset)
    if task is None or not hasattr(task, "forecast") or "model_path" not in val.columns:
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


def every_mode_table(val, view, homogeneous_diverse=frozenset()) -> str:
    """Every mode's val and test mean ± std per (dataset, optimizer, trial): detail, not used for picks.
    pure and std:* do not depend on the trial: shown once, deduplicated by seed. HOMOGENEOUS_DIVERSE:
    (dataset, optimizer, trial) of one-activation trials, whose diverse row is labelled as homogeneous."""
    import pandas as pd
    frame = val.copy()
    if "optimizer" not in frame.columns:
        frame["optimizer"] = "sgd"
    frame["optimizer"] = frame["optimizer"].fillna("sgd").astype(str)
    frame["mode"] = frame["mode"].astype(str)
    shared = frame["mode"].map(is_shared).astype(bool)
    frame["trial"] = np.where(shared, "–", frame["trial_id"].astype(str) if "trial_id" in frame else "–")
    if "seed" in frame.columns:
        frame = pd.concat([frame[shared].drop_duplicates(["dataset", "optimizer", "mode", "seed"]), frame[~shared]])
    keys = ["dataset", "optimizer", "trial", "mode"]
    columns = [c for c in (view.val_column, view.column, *(c for c, _ in view.details)) if c in frame.columns]
    groups = frame.groupby(keys, sort=False)
    stats = groups.agg(runs=(view.column, "size")).reset_index()
    for col in columns:  # the one mean ± std of the tool (dnn_search.stats)
        stats[col.replace("_", " ")] = list(groups[col].agg(lambda v: format_mean_std(v, digits=4)))
    order = {m: i for i, m in enumerate(sorted_modes(stats["mode"].astype(str)))}
    stats = stats.assign(_o=stats["mode"].map(order), _shared=stats["trial"] != "–")
    stats = stats.sort_values(["dataset", "optimizer", "_shared", "trial", "_o"], kind="stable")
    one = [(d, o, t) in homogeneous_diverse and Mode.parse(m).kind == "diverse"
           for d, o, t, m in zip(stats["dataset"].astype(str), stats["optimizer"], stats["trial"], stats["mode"])]
    stats.loc[one, "mode"] = "diverse (n = 1: homogeneous, not diverse)"
    return table(stats[[*keys, "runs", *[c.replace("_", " ") for c in columns]]],
                  left=("dataset", "optimizer", "trial", "mode"))


def validation_section(res, figdir: Path) -> list[str]:
    """The validation section of RES's report (figures written into FIGDIR), as HTML parts."""
    parts: list[str] = []
    add = parts.append
    add("<h2>Validation</h2>")
    val = res.validation
    trials = res.trials
    if val is not None and len(val):
        comps = compare(val, trials)
        view = comps[0].view if comps else metric_view(str(val["dataset"].iloc[0]))
        name = view.metric  # the task's metric: accuracy, mse, ...
        panels, picked = comparison_panels(comps)
        unit = view.unit or (" (geometric mean, log scale)" if view.log else "")
        fig = plot_mode_comparison(panels, figdir / f"validation_{name}.png", ylabel=f"test {name}{unit}",
                                         log=view.log)
        splits = sorted({c.split for c in comps})
        add(figure(fig, f"Test {name} of the networks retrained with the base function (pure), standard activations "
                         "(std:*), one learned activation everywhere (single:k, per trial) or all of a trial's "
                         "activations in blocks (diverse, trials with at least two activations); error bars: 95% "
                         f"t-intervals over seeds{' of log values' if view.log else ''}. Hatched and labelled "
                         f"\"picked on {'/'.join(splits)}\": the best standard, homogeneous and diverse networks, chosen "
                         f"on the {'validation split' if splits == ['val'] else 'split named'}, not on test.",
                    "validation comparison; " + "; ".join(picked)))
        info = trial_info(trials)
        for comp in comps:
            add(f"<h3>{esc(comp.dataset)}, optimizer {esc(comp.optimizer)}</h3>")
            add(markdown_to_html(split_sentence(comp)))
            if comp.homogeneous_diverse:
                add(f'<p class="note">Not counted as diverse (one activation, so homogeneous): the diverse rows of '
                    f"{esc(', '.join(comp.homogeneous_diverse))}.</p>")
            header, rows = picks_table(comp, info)
            add(rows_table(header, rows, left=("row", "picked", "trial", "picked on")))
            add(markdown_to_html(comparison_note(comp)))
            header, rows = comparison_table(comp)
            add(rows_table(header, rows, left=("comparison (A − B)", "A", "B")))
        for comp in comps:
            drawn = forecast_figure(comp, val, figdir)
            if drawn is not None:
                add(figure(drawn, f"{comp.dataset}, optimizer {comp.optimizer}: the first test trajectory (black) "
                                 "against the forecasts (RK4 on the learned vector field, from its first state) of "
                                 "the seed-0 networks: pure and the networks picked on validation.",
                            f"forecast of a {comp.dataset} test trajectory"))
        add("<h3>Every mode (detail, not used for picks)</h3>")
        add(every_mode_table(val, view, {(c.dataset, c.optimizer, t) for c in comps for t in c.homogeneous_diverse}))
    else:
        add('<p class="note">No validation results yet (run `dnn-search pipeline` or `validate`).</p>')
    return parts
