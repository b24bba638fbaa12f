"""The tables of the comparison (`comparison.py`) as rows of text: summary.md and the report render
the same rows, one as Markdown, one as HTML, so their numbers cannot differ."""
from __future__ import annotations

import math

from dnn_search.results.comparison import (NO_VALIDATION, PICK_ROLES, Arm, Comparison, MetricView, finite_list,
                                           mean_of, stat_scale)
from dnn_search.stats import Difference, MeanCI, format_mean_std as _pm, format_number, mean_ci


def show_number(v: float, digits: int) -> str:
    return format_number(v, digits)


def _p(v: float) -> str:
    return f"{v:.3g}" if v is not None and math.isfinite(v) else "–"


def _ci_text(ci: MeanCI, view: MetricView) -> str:
    """The 95% t-CI of the mean (of log values, shown as the CI of the geometric mean, for a log view)."""
    if view.log:
        if ci.n == 0:
            return "–"
        bounds = (f"[{show_number(math.exp(ci.lo), view.digits)}, {show_number(math.exp(ci.hi), view.digits)}]"
                  if math.isfinite(ci.lo) else "–")
        return f"{show_number(math.exp(ci.mean), view.digits)} {bounds}"
    s = view.scale
    return f"[{show_number(ci.lo * s, view.digits)}, {show_number(ci.hi * s, view.digits)}]" if math.isfinite(ci.lo) else "–"


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
    unit = view.unit
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
        val = mean_of(arm.val)
        test = list(arm.test.values())
        ci = mean_ci(list(stat_scale(view, arm.test).values()))
        rows.append([role, arm.mode, _trial_text(arm, info), on,
                     show_number(val * view.scale, view.digits) if math.isfinite(val) else "–",
                     _pm(test, view.scale, view.digits), _ci_text(ci, view), str(len(finite_list(test)))])
    return header, rows


def comparison_table(comp: Comparison) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the comparisons: A − B (A / B for a log view) with Welch–Satterthwaite and
    paired 95% CIs, raw and Holm-adjusted p-values, and the number of seed pairs."""
    view = comp.view
    if view.log:
        est = ["A / B (ratio of geometric means)", "95% CI (Welch)"]
        paired = ["paired A / B (geometric mean ratio)", "95% CI (paired)"]
    else:
        unit = " (points)" if view.primary.unit == "%" else ""
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
        how = (f"A − B of mean test {view.metric}" + (" in percentage points" if view.primary.unit == "%" else "") +
               f" ({'positive' if view.direction == 'max' else 'negative'}: A is better).")
    return (f"{how} Welch: unequal variances, Welch–Satterthwaite degrees of freedom. Paired: the mean of the "
            "per-seed differences over the seeds both networks have (same seed: same initialisation and batch "
            "order). Holm: each kind of p adjusted over the distinct tests of this table. Unit of replication: the "
            "retraining seed." + (" The best standard network is pure here, so its rows repeat pure's (the same "
                                  "tests, counted once by Holm)."
                                  if comp.picks.get("best standard") is comp.picks.get("pure") is not None else ""))
