"""summary.md: how the networks retrained with the exported activations compare, honestly.

Per dataset and optimiser, four networks are shown: `pure` (the base function: the reference), the
*best standard* (the best of `pure` and the standard activations `std:*`), the *best homogeneous*
(the best learned activation `single:k` of any exported trial) and the *best diverse* (the best
`diverse` network of a trial with at least two activations; a one-activation trial's "diverse"
network is homogeneous and never counts as diverse). Every "best" is picked by the mean over seeds
of the validation split (`val_<metric>`, carved from the training data), never on test; test
numbers are reported for the picks and for pure only. Files without a validation split (older
pipelines) are picked on test, and the summary says so.

The unit of replication is the retraining seed; the same seed gives every mode the same
initialisation and batch order, so modes are paired by seed. Differences between the picks come
with a Welch–Satterthwaite 95% CI and Welch p, and with a paired t-test on the seeds both have;
both kinds of p are Holm-adjusted within each comparison table. MSE metrics are compared on
log MSE, so their differences are ratios (of geometric means) with their CIs.

Which column is "the" metric, which direction is better and how it is shown come from the
dataset's task (classification: accuracy in %, higher is better; a regression task: its MSE, lower).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dnn_search.atomic import atomic_write_text
from dnn_search.results.layout import (HESSIAN_FILE, SEARCH_FILE, STEPS_FILE, SUMMARY_FILE, TRIALS_FILE,
                                      VALIDATION_FILE)
from dnn_search.stats import Difference, MeanCI, format_mean_std as _pm, format_number, holm, mean_ci, paired_t, welch

PICK_ROLES = ("pure", "best standard", "best homogeneous", "best diverse")
# (A, B) of each comparison: A − B (or A / B for a log metric)
COMPARISONS = (("best diverse", "pure"), ("best diverse", "best standard"), ("best diverse", "best homogeneous"),
               ("best homogeneous", "pure"), ("best homogeneous", "best standard"))
NO_VALIDATION = "picked on test: no validation split in this file"
_STATUS_WORDS = {"COMPLETED": "completed", "PRUNED": "early-stopped"}


@dataclass(frozen=True)
class MetricView:
    """How the summary shows a dataset's primary validation metric, and its other one."""

    column: str          # e.g. test_accuracy
    label: str           # e.g. "test accuracy (%)"
    direction: str       # max | min
    scale: float         # 100 for accuracies (shown in %)
    digits: int
    secondary: str | None  # e.g. test_loss, shown with 4 digits
    log: bool = False    # statistics on log(value), differences shown as ratios (the *mse metrics)

    @property
    def metric(self) -> str:
        """The metric's name without its split: accuracy, mse, ..."""
        return self.column[len("test_"):] if self.column.startswith("test_") else self.column

    @property
    def val_column(self) -> str:
        """The same metric on the validation split: val_accuracy, val_mse, ..."""
        return f"val_{self.metric}"

    def best(self, keys, mean):
        pick = max if self.direction == "max" else min
        return pick(keys, key=mean) if keys else None


def metric_view(dataset: str) -> MetricView:
    """The view of DATASET's task (classification when the dataset is unknown to the registry)."""
    from dnn_search.errors import UserError
    from dnn_search.tasks import task_for_dataset
    try:
        task = task_for_dataset(dataset)
        primary, directions = task.primary_metric, task.metric_directions
    except UserError:
        primary, directions = "accuracy", {"accuracy": "max", "loss": "min"}
    others = [m for m in directions if m != primary]
    percent = primary == "accuracy"
    return MetricView(f"test_{primary}", f"test {primary} (%)" if percent else f"test {primary}",
                      directions[primary], 100.0 if percent else 1.0, 2 if percent else 4,
                      f"test_{others[0]}" if others else None, log=primary.endswith("mse"))


# ------------------------------------------------------------------------------------- the analysis

@dataclass(frozen=True)
class TrialInfo:
    """What trials.parquet says about an exported trial (None where it does not say)."""

    trial_id: str
    n_activations: int | None
    steps_done: int | None
    status: str | None     # COMPLETED, PRUNED, ...

    @property
    def status_word(self) -> str:
        return "–" if not self.status else _STATUS_WORDS.get(self.status, self.status.lower())


@dataclass(frozen=True)
class Arm:
    """One network retrained over seeds: a mode, of a trial (None for `pure` and `std:*`, which do not
    depend on the trial), with its per-seed values of the metric on both splits (seed -> value)."""

    mode: str
    trial_id: str | None
    val: dict
    test: dict

    @property
    def kind(self) -> str:
        if self.mode == "pure":
            return "pure"
        if self.mode.startswith("std:"):
            return "standard"
        return "homogeneous" if self.mode.startswith("single:") else "diverse"

    @property
    def label(self) -> str:
        return self.mode if self.trial_id is None else f"{self.mode} of {self.trial_id}"


@dataclass(frozen=True)
class ComparisonRow:
    """A − B on test: Welch (unequal variances) and paired by seed, each p also Holm-adjusted within
    its table. For a log view the differences are of log values (ratios after exp)."""

    a_role: str
    b_role: str
    a: Arm | None
    b: Arm | None
    welch: Difference | None
    paired: Difference | None
    welch_p_holm: float
    paired_p_holm: float

    @property
    def label(self) -> str:
        return f"{self.a_role.replace('best ', '')} − {self.b_role.replace('best ', '')}"


@dataclass(frozen=True)
class Comparison:
    """The honest comparison of one (dataset, optimizer): every arm, the picks made on `split` ("val";
    "test" when the file has no validation split), the comparisons, and the trials whose
    one-activation "diverse" was left out."""

    dataset: str
    optimizer: str
    view: MetricView
    split: str
    arms: tuple
    picks: dict              # role (PICK_ROLES) -> Arm or None
    rows: tuple              # ComparisonRow, in COMPARISONS order
    homogeneous_diverse: tuple  # trial ids whose diverse network was homogeneous (n = 1): not diverse

    @property
    def picked_on_test(self) -> bool:
        return self.split == "test"


def _finite(values) -> list[float]:
    out = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out.append(f)
    return out


def _mean(mapping: dict) -> float:
    vals = _finite(mapping.values())
    return float(np.mean(vals)) if vals else math.nan


def _transformed(view: MetricView, mapping: dict) -> dict:
    """The statistics' scale: log for a log view (non-positive values dropped), else the values."""
    if not view.log:
        return mapping
    return {s: (math.log(v) if isinstance(v, float) and math.isfinite(v) and v > 0 else math.nan)
            for s, v in mapping.items()}


def trial_info(trials) -> dict:
    """trial_id -> TrialInfo from trials.parquet (an empty dict without it)."""
    if trials is None or "trial_id" not in getattr(trials, "columns", []):
        return {}

    def num(row, col):
        v = row.get(col)
        try:
            return int(v) if v is not None and math.isfinite(float(v)) else None
        except (TypeError, ValueError):
            return None
    out = {}
    for row in trials.to_dict("records"):
        status = row.get("status")
        out[str(row["trial_id"])] = TrialInfo(str(row["trial_id"]), num(row, "n_activations"), num(row, "steps_done"),
                                              str(status).upper() if status is not None else None)
    return out


def _normalised(validation):
    """A copy with str trial_id/mode/dataset, an `optimizer` column (old files: sgd) and a `seed`."""
    frame = validation.copy()
    if "optimizer" not in frame.columns:
        frame["optimizer"] = "sgd"
    frame["optimizer"] = frame["optimizer"].fillna("sgd").astype(str)
    if "trial_id" not in frame.columns:
        frame["trial_id"] = ""
    for col in ("trial_id", "mode", "dataset"):
        frame[col] = frame[col].astype(str)
    if "seed" not in frame.columns:
        frame["seed"] = frame["run"] if "run" in frame.columns else range(len(frame))
    return frame


def _n_activations(trial: str, group, info: dict) -> int:
    known = info.get(trial)
    if known is not None and known.n_activations is not None:
        return known.n_activations
    # no trials.parquet: the number of learned activations the trial was validated with
    return int(group[group["mode"].str.startswith("single:")]["mode"].nunique())


def _arms(group, view: MetricView, info: dict) -> tuple[list[Arm], list[str]]:
    """The arms of one (dataset, optimizer) group: pure and std:* once (deduplicated by seed: the
    pipeline repeats them under every trial), single:k and diverse per trial; the diverse networks of
    one-activation trials are left out (and listed)."""
    has_val = view.val_column in group.columns

    def values(rows, column):
        if column not in rows.columns:
            return {s: math.nan for s in rows["seed"]}
        return {s: (float(v) if v is not None and not (isinstance(v, float) and math.isnan(v)) else math.nan)
                for s, v in zip(rows["seed"], rows[column])}

    arms, homogeneous_diverse = [], []
    shared = group[(group["mode"] == "pure") | group["mode"].str.startswith("std:")]
    for mode, rows in shared.groupby("mode", sort=False):
        rows = rows.drop_duplicates("seed", keep="first")
        arms.append(Arm(mode, None, values(rows, view.val_column) if has_val else values(rows, "_none"),
                        values(rows, view.column)))
    own = group[~group.index.isin(shared.index)]
    for trial, rows_t in own.groupby("trial_id", sort=False):
        n = _n_activations(trial, group[group["trial_id"] == trial], info)
        for mode, rows in rows_t.groupby("mode", sort=False):
            if mode == "diverse" and n < 2:
                homogeneous_diverse.append(trial)
                continue
            rows = rows.drop_duplicates("seed", keep="first")
            arms.append(Arm(mode, trial, values(rows, view.val_column) if has_val else values(rows, "_none"),
                            values(rows, view.column)))
    return arms, homogeneous_diverse


def _pick(arms: list[Arm], kinds: tuple, view: MetricView, split: str) -> Arm | None:
    """The arm of one of KINDS with the best mean over seeds on SPLIT; the first one on a tie."""
    candidates = [a for a in arms if a.kind in kinds and math.isfinite(_mean(getattr(a, split)))]
    return view.best(candidates, lambda a: _mean(getattr(a, split)))


def compare(validation, trials=None) -> list[Comparison]:
    """The honest comparison of every (dataset, optimizer) in VALIDATION (validation.parquet as a
    DataFrame), with TRIALS (trials.parquet, for n_activations) when available. Picks are made on
    the validation split (`val_<metric>`); on test only where the file has no finite validation value."""
    if validation is None or len(validation) == 0:
        return []
    frame = _normalised(validation)
    info = trial_info(trials)
    out = []
    for (dataset, optimizer), group in frame.groupby(["dataset", "optimizer"], sort=False):
        view = metric_view(dataset)
        arms, homogeneous_diverse = _arms(group, view, info)
        split = "val" if any(math.isfinite(_mean(a.val)) for a in arms) else "test"
        picks = {"pure": next((a for a in arms if a.mode == "pure"), None),
                 "best standard": _pick(arms, ("pure", "standard"), view, split),
                 "best homogeneous": _pick(arms, ("homogeneous",), view, split),
                 "best diverse": _pick(arms, ("diverse",), view, split)}
        raw = []
        for a_role, b_role in COMPARISONS:
            a, b = picks[a_role], picks[b_role]
            if a is None or b is None:
                raw.append((a_role, b_role, a, b, None, None))
                continue
            ta, tb = _transformed(view, a.test), _transformed(view, b.test)
            raw.append((a_role, b_role, a, b, welch(list(ta.values()), list(tb.values())), paired_t(ta, tb)))
        welch_holm = holm([r[4].p if r[4] else math.nan for r in raw])
        paired_holm = holm([r[5].p if r[5] else math.nan for r in raw])
        rows = tuple(ComparisonRow(*r, wh, ph) for r, wh, ph in zip(raw, welch_holm, paired_holm))
        out.append(Comparison(dataset, optimizer, view, split, tuple(arms), picks, rows,
                              tuple(dict.fromkeys(homogeneous_diverse))))
    return out


# ------------------------------------------------------------------------------------- formatting

def _num(v: float, digits: int) -> str:
    return format_number(v, digits)


def _p(v: float) -> str:
    return f"{v:.3g}" if v is not None and math.isfinite(v) else "–"


def _ci_text(ci: MeanCI, view: MetricView) -> str:
    """The 95% t-CI of the mean (of log values, shown as the CI of the geometric mean, for a log view)."""
    if view.log:
        if ci.n == 0:
            return "–"
        bounds = (f"[{_num(math.exp(ci.lo), view.digits)}, {_num(math.exp(ci.hi), view.digits)}]"
                  if math.isfinite(ci.lo) else "–")
        return f"{_num(math.exp(ci.mean), view.digits)} {bounds}"
    s = view.scale
    return f"[{_num(ci.lo * s, view.digits)}, {_num(ci.hi * s, view.digits)}]" if math.isfinite(ci.lo) else "–"


def _diff_text(d: Difference | None, view: MetricView) -> tuple[str, str]:
    """(estimate, 95% CI) of a difference: signed, in display units; exp of it (a ratio) for a log view."""
    if d is None or not math.isfinite(d.estimate):
        return "–", "–"
    if view.log:
        est = f"{math.exp(d.estimate):.3f}"
        ci = f"[{math.exp(d.lo):.3f}, {math.exp(d.hi):.3f}]" if math.isfinite(d.lo) else "–"
        return est, ci
    s = view.scale
    ci = f"[{d.lo * s:+.{view.digits}f}, {d.hi * s:+.{view.digits}f}]" if math.isfinite(d.lo) else "–"
    return f"{d.estimate * s:+.{view.digits}f}", ci


def _trial_text(arm: Arm | None, info: dict) -> str:
    if arm is None or arm.trial_id is None:
        return "–"
    t = info.get(arm.trial_id)
    if t is None:
        return arm.trial_id
    steps = f"{t.steps_done} outer steps" if t.steps_done is not None else "outer steps unknown"
    n = f"n = {t.n_activations}, " if t.n_activations is not None else ""
    return f"{arm.trial_id} ({n}{steps}, {t.status_word})"


def split_sentence(comp: Comparison) -> str:
    """Which split chose the picks, in words."""
    metric = comp.view.metric
    if comp.picked_on_test:
        return (f"**{NO_VALIDATION[0].upper() + NO_VALIDATION[1:]}** (no finite `{comp.view.val_column}`): "
                "the best standard, homogeneous and diverse networks are chosen on the same test values that "
                "are reported, which favours them.")
    return (f"Picked on validation: every best is the {'highest' if comp.view.direction == 'max' else 'lowest'} "
            f"mean `{comp.view.val_column}` over seeds (the validation split carved from the training data); "
            f"test {metric} is reported only for the picks and for pure.")


def picks_table(comp: Comparison, info: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the picks table: pure, best standard, best homogeneous, best diverse."""
    view = comp.view
    metric = view.metric
    unit = " (%)" if view.scale == 100.0 else ""
    ci_head = "test geometric mean [95% t-CI]" if view.log else "test 95% t-CI"
    header = ["row", "picked", "trial", "picked on", f"val {metric}{unit} (mean)", f"test {metric}{unit} (mean ± sd)",
              ci_head, "seeds"]
    rows = []
    for role in PICK_ROLES:
        arm = comp.picks.get(role)
        if arm is None:
            rows.append([role, "–", "–", "–", "–", "–", "–", "0"])
            continue
        on = "reference" if role == "pure" else comp.split
        val = _mean(arm.val)
        test = list(arm.test.values())
        ci = mean_ci(list(_transformed(view, arm.test).values()))
        rows.append([role, arm.mode, _trial_text(arm, info), on,
                     _num(val * view.scale, view.digits) if math.isfinite(val) else "–",
                     _pm(test, view.scale, view.digits), _ci_text(ci, view), str(len(_finite(test)))])
    return header, rows


def comparison_table(comp: Comparison) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the comparisons: A − B (A / B for a log view) with Welch–Satterthwaite and
    paired 95% CIs, raw and Holm-adjusted p-values, and the number of seed pairs."""
    view = comp.view
    if view.log:
        est = ["A / B (ratio of geometric means)", "95% CI (Welch)"]
        paired = ["paired A / B (geometric mean ratio)", "95% CI (paired)"]
    else:
        unit = " (points)" if view.scale == 100.0 else ""
        est = [f"A − B{unit}", "95% CI (Welch)"]
        paired = [f"paired A − B{unit}", "95% CI (paired)"]
    header = ["comparison (A − B)", "A", "B", *est, "Welch p", "Welch p (Holm)", *paired, "paired-t p",
              "paired-t p (Holm)", "pairs"]
    rows = []
    for r in comp.rows:
        w_est, w_ci = _diff_text(r.welch, view)
        p_est, p_ci = _diff_text(r.paired, view)
        rows.append([r.label, r.a.label if r.a else "–", r.b.label if r.b else "–", w_est, w_ci,
                     _p(r.welch.p if r.welch else math.nan), _p(r.welch_p_holm), p_est, p_ci,
                     _p(r.paired.p if r.paired else math.nan), _p(r.paired_p_holm),
                     str(r.paired.n_a) if r.paired else "0"])
    return header, rows


def comparison_note(comp: Comparison) -> str:
    """How to read the comparison table."""
    view = comp.view
    if view.log:
        how = (f"Statistics on log {view.metric}: A / B is exp of the difference of mean logs (the ratio of "
               "geometric means; below 1: A has the lower error), its CIs are exp of the log-scale CIs.")
    else:
        how = (f"A − B of mean test {view.metric}" + (" in percentage points" if view.scale == 100.0 else "") +
               f" ({'positive' if view.direction == 'max' else 'negative'}: A is better).")
    return (f"{how} Welch: unequal variances, Welch–Satterthwaite degrees of freedom. Paired: the mean of the "
            "per-seed differences over the seeds both networks have (same seed: same initialisation and batch "
            "order). Holm: each kind of p adjusted over the rows of this table. Unit of replication: the "
            "retraining seed." + (" The best standard network is pure here, so its rows repeat pure's."
                                  if comp.picks.get("best standard") is comp.picks.get("pure") is not None else ""))


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
            single = view.best([a for a in own if a.kind == "homogeneous" and math.isfinite(_mean(getattr(a, split)))],
                               lambda a: _mean(getattr(a, split)))
            diverse = next((a for a in own if a.kind == "diverse"), None)
            show = (lambda a: _num(_mean(getattr(a, split)) * view.scale, view.digits))
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
    frame = _normalised(validation)
    first = metric_view(str(frame["dataset"].iloc[0]))
    unit = " (%)" if first.scale == 100.0 else ""
    lines += [f"| dataset | optimizer | trial | mode | runs | val {first.metric}{unit} | {first.label} | "
              f"{first.secondary.replace('_', ' ') if first.secondary else '–'} | top eigenvalue | trace |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    hess = _normalised(hessian) if hessian is not None and len(hessian) else None
    for (dataset, optimizer), group in frame.groupby(["dataset", "optimizer"], sort=False):
        view = metric_view(dataset)
        shown = set()
        for (trial, mode), g in group.groupby(["trial_id", "mode"], sort=False):
            shared = mode == "pure" or mode.startswith("std:")
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
            second = _pm(g[view.secondary], 1.0, 4) if view.secondary in g else "–"
            val = _pm(g[view.val_column], view.scale, view.digits) if view.val_column in g else "–"
            shown_mode = mode
            if mode == "diverse" and _n_activations(trial, group[group["trial_id"] == trial], info) < 2:
                shown_mode = "diverse (n = 1: homogeneous, not diverse)"
            lines.append(f"| {dataset} | {optimizer} | {'–' if shared else trial} | {shown_mode} | {len(g)} | {val} | "
                         f"{_pm(g[view.column], view.scale, view.digits)} | {second} | {top} | {trace} |")
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
        space = json.loads((exp_dir / SEARCH_FILE).read_text()).get("space") or {}
        metric, direction = space.get("metric", ""), space.get("mode", "max")
        scale = 100.0 if metric.endswith("accuracy") else 1.0
        section = ablation_markdown(trials, steps, space, metric, direction, scale, 2 if scale != 1 else 4)
        if section:
            text = text.rstrip("\n") + "\n\n" + "\n".join(section)
    atomic_write_text(exp_dir / SUMMARY_FILE, text)
    return text
