"""summary.md: how the networks retrained with the exported activations compare, honestly, in Markdown.

The analysis is `comparison.py`'s (the picks on validation, the tests on test, Holm over distinct
tests), the tables' rows `summary_tables.py`'s (shared with the report); this module lays them out
as one Markdown document, adds the exported trials and every mode in detail (with the task's
detail metrics, `Metric.detail`), and writes it.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from dnn_search.atomic import atomic_write_text
from dnn_search.results.comparison import (Comparison, compare, mean_of, metric_view, n_activations_of, normalised,
                                           task_of, trial_info)
from dnn_search.results.layout import (HESSIAN_FILE, SEARCH_FILE, STEPS_FILE, SUMMARY_FILE, TRIALS_FILE,
                                       VALIDATION_FILE)
from dnn_search.results.record import read_record
from dnn_search.results.summary_tables import show_number, comparison_note, comparison_table, picks_table, split_sentence
from dnn_search.modes import Mode, is_shared
from dnn_search.stats import format_mean_std as _pm


def _md_table(header, rows) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(r) + " |" for r in rows]]


def summary_markdown(name: str, validation, hessian, trials) -> str:
    """summary.md: per (dataset, optimizer) the picks (on validation) and their comparisons on test,
    the exported trials (outer steps reached, status), then every mode in detail."""
    comps = compare(validation, trials)
    info = trial_info(trials)
    lines = [f"# Summary of `{name}`", "",
             "Ordinary networks retrained with the exported activations (validation trials). Unit of replication: "
             "the retraining seed; the same seed gives every mode the same initialisation and batch order, so the "
             "modes are paired by seed.", "",
             "*Best standard*: the best of `pure` (the base function) and the standard activations `std:*`. "
             "*Best homogeneous*: the best learned activation `single:k` (on every neuron) of any exported trial. "
             "*Best diverse*: the best `diverse` network (all of a trial's activations) of a trial with at least "
             "two activations; a one-activation trial's diverse network is homogeneous and never counts as "
             "diverse. Each is picked by its mean over seeds on the validation split (a file without one is picked "
             "on test, and says so below); test numbers are shown for the picks and for `pure` (the reference) "
             "only.", ""]
    if not comps:
        lines += ["No validation results.", ""]
    lines += _trials_section(validation, comps, info)
    for comp in comps:
        view = comp.view
        lines += [f"## {comp.dataset}, optimizer {comp.optimizer}", "", split_sentence(comp), ""]
        if comp.homogeneous_diverse:
            lines += [f"Not counted as diverse (one activation, so homogeneous): the `diverse` rows of trial"
                      f"{'s' if len(comp.homogeneous_diverse) > 1 else ''} "
                      f"{', '.join(comp.homogeneous_diverse)}.", ""]
        lines += [*_md_table(*picks_table(comp, info)), ""]
        lines += [f"Comparisons on {view.label}, A − B of the picks above. " + comparison_note(comp), ""]
        lines += [*_md_table(*comparison_table(comp)), ""]
    lines += _every_mode(validation, hessian, info)
    return "\n".join(lines)


def _trials_section(validation, comps: list[Comparison], info: dict) -> list[str]:
    """The exported trials: n, outer steps reached, status, and (per dataset and optimizer) each one's
    best homogeneous network and diverse network by the mean on the picking split."""
    if not comps:
        return []
    first = comps[0].view
    better = "highest" if first.direction == "max" else "lowest"
    lines = ["## Exported trials", "",
             f"Outer steps reached and status of each exported trial, with its best homogeneous network (the "
             f"`single:k` with the {better} mean {first.metric} on the picking split) and its diverse network, "
             "as means on that split.", "",
             "| dataset | trial | n | optimizer | outer steps | status | picked on | best homogeneous | diverse |",
             "|---|---|---|---|---|---|---|---|---|"]
    for comp in comps:
        view = comp.view
        trial_ids = list(dict.fromkeys(a.trial_id for a in comp.arms if a.trial_id is not None))
        trial_ids += [t for t in comp.homogeneous_diverse if t not in trial_ids]
        for trial in trial_ids:
            t = info.get(trial)
            own = [a for a in comp.arms if a.trial_id == trial]
            split = comp.split
            single = view.best([a for a in own if a.kind == "homogeneous" and math.isfinite(mean_of(getattr(a, split)))],
                               lambda a: mean_of(getattr(a, split)))
            diverse = next((a for a in own if a.kind == "diverse"), None)
            show = (lambda a: show_number(mean_of(getattr(a, split)) * view.scale, view.digits))
            n = t.n_activations if t and t.n_activations is not None else \
                len({a.mode for a in own if a.kind == "homogeneous"})
            lines.append(f"| {comp.dataset} | {trial} | {n} | {comp.optimizer} | "
                         f"{t.steps_done if t and t.steps_done is not None else '–'} | "
                         f"{t.status_word if t else '–'} | {split} | "
                         f"{f'{show(single)} ({single.mode})' if single else '–'} | "
                         f"{show(diverse) if diverse else ('– (n = 1: homogeneous)' if trial in comp.homogeneous_diverse else '–')} |")
    return [*lines, ""]


def _every_mode(validation, hessian, info: dict) -> list[str]:
    """Every mode with its val and test means and Hessian numbers: detail, not used for picks."""
    lines = ["## Every mode (detail, not used for picks)", ""]
    if validation is None or len(validation) == 0:
        return lines + ["No validation results.", ""]
    frame = normalised(validation)
    first = metric_view(str(frame["dataset"].iloc[0]))
    # the task's detail metrics (Metric.detail), one column each; a "–" column when it has none
    details = [c.replace("_", " ") for c, _ in first.details] or ["–"]
    header = ["dataset", "optimizer", "trial", "mode", "runs", f"val {first.metric}{first.unit}", first.label,
              *details, "top eigenvalue", "trace"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    hess = normalised(hessian) if hessian is not None and len(hessian) else None
    for (dataset, optimizer), group in frame.groupby(["dataset", "optimizer"], sort=False):
        view = metric_view(dataset)
        shown = set()
        for (trial, mode), g in group.groupby(["trial_id", "mode"], sort=False):
            shared = is_shared(mode)
            if shared:
                if mode in shown:
                    continue
                shown.add(mode)
                g = group[group["mode"] == mode].drop_duplicates("seed", keep="first")
            top, trace = "–", "–"
            if hess is not None:
                h = hess[(hess["dataset"] == dataset) & (hess["mode"] == mode)]
                if "optimizer" in hessian.columns:
                    h = h[h["optimizer"] == optimizer]
                if not shared:
                    h = h[h["trial_id"] == trial]
                if len(h):
                    top, trace = f"{float(h['top_eigenvalue'].iloc[0]):.4g}", f"{float(h['trace'].iloc[0]):.4g}"
            detail = [_pm(g[c], m.scale, m.digits) if c in g else "–" for c, m in first.details] or ["–"]
            val = _pm(g[view.val_column], view.scale, view.digits) if view.val_column in g else "–"
            shown_mode = mode
            if Mode.parse(mode).kind == "diverse" and n_activations_of(trial, group[group["trial_id"] == trial], info) < 2:
                shown_mode = "diverse (n = 1: homogeneous, not diverse)"
            lines.append(f"| {dataset} | {optimizer} | {'–' if shared else trial} | {shown_mode} | {len(g)} | {val} | "
                         f"{_pm(g[view.column], view.scale, view.digits)} | {' | '.join(detail)} | {top} | {trace} |")
    return [*lines, ""]


def write_summary(exp_dir: str | os.PathLike, name: str) -> str:
    """Write EXP_DIR/summary.md from its validation, Hessian and trial tables; return the text."""
    import pandas as pd
    exp_dir = Path(exp_dir)
    validation = pd.read_parquet(exp_dir / VALIDATION_FILE)
    hessian = pd.read_parquet(exp_dir / HESSIAN_FILE) if (exp_dir / HESSIAN_FILE).is_file() else None
    trials = pd.read_parquet(exp_dir / TRIALS_FILE) if (exp_dir / TRIALS_FILE).is_file() else None
    text = summary_markdown(name, validation, hessian, trials)
    steps = pd.read_parquet(exp_dir / STEPS_FILE) if (exp_dir / STEPS_FILE).is_file() else None
    if (exp_dir / SEARCH_FILE).is_file() and len(validation):
        from dnn_search.results.ablation import ablation_markdown
        record = read_record(exp_dir)
        task = task_of(record.dataset)
        shown = task.metric(record.metric) if task is not None else None  # None: meta_loss, ...
        section = ablation_markdown(trials, steps, record.space, record.metric, record.mode,
                                    shown.scale if shown else 1.0, shown.digits if shown else 4)
        if section:
            text = text.rstrip("\n") + "\n\n" + "\n".join(section)
    atomic_write_text(exp_dir / SUMMARY_FILE, text)
    return text
