"""The one ranking of a search's trials: export, the report and the terminal all call `rank_trials`.

A trial's score is its last reported value of the search metric (the `score` column the search
writes; `final_<metric>` in a table written before that column existed). Completed trials rank
before pruned ones (a pruned trial's score was measured at an earlier rung, so it is not
comparable), and pruned ones fill up when too few completed. Failed and running trials and trials
without a finite score never rank; `need_checkpoint` also drops trials without a checkpoint (what
export and the terminal's "best trials" need: only those can be exported). The order honours the
metric's direction: before, the report and export ranked on different columns, and the report's
rebuilt `best_<metric>` took the max even of a minimised metric.
"""
from __future__ import annotations

import math

import numpy as np

RANKED_STATUSES = ("COMPLETED", "PRUNED")


def score_column(trials, metric: str) -> str | None:
    """The column holding each trial's score: `score`, else `final_<metric>`; None if neither has a value."""
    for column in ("score", f"final_{metric}"):
        if column in trials.columns and trials[column].notna().any():
            return column
    return None


def best_of(values, direction: str) -> float:
    """The best of VALUES in DIRECTION (max or min), NaN when none is finite."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return math.nan
    return max(finite) if direction == "max" else min(finite)


def rank_trials(trials, direction: str, top: int | None = None, per: str | None = None, *, metric: str = "",
                need_checkpoint: bool = False):
    """TRIALS (a trials table) best first, with a `score` column; the best TOP (all when None).

    direction: the metric's (max or min). per: a parameter column: the best TOP of each of its values,
    in overall rank order (e.g. the best homogeneous, n = 1, and the best diverse trial). metric: the
    search metric, for tables whose score is `final_<metric>`. need_checkpoint: only trials with a
    checkpoint to export.
    """
    import pandas as pd
    column = score_column(trials, metric)
    keep = trials["status"].astype(str).str.upper().isin(RANKED_STATUSES)
    if need_checkpoint:
        checkpoints = trials["checkpoint_path"] if "checkpoint_path" in trials.columns else pd.Series("", trials.index)
        keep &= checkpoints.notna() & (checkpoints.astype(str) != "")
    ranked = trials[keep].copy()
    scores = pd.to_numeric(ranked[column], errors="coerce") if column else pd.Series(math.nan, ranked.index)
    ranked["score"] = scores.astype(float)
    ranked = ranked[np.isfinite(ranked["score"].to_numpy(dtype=float))]
    ranked["_pruned"] = ranked["status"].astype(str).str.upper() != "COMPLETED"
    ranked["_key"] = ranked["score"] * (-1 if direction == "max" else 1)
    ranked = ranked.sort_values(["_pruned", "_key"], kind="stable").drop(columns=["_pruned", "_key"])
    if per is not None and per in ranked.columns:
        return ranked.groupby(per, sort=False).head(top) if top is not None else ranked
    return ranked.head(top) if top is not None else ranked
