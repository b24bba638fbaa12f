"""The secondary protocol of a diversity study: plain SGD (heavy-ball momentum, 0.9 by default) at a
learning rate picked per network from a small grid (docs/design.md, "Diversity studies").

Why a second protocol: the primary one trains every network with the meta-learning inner update at
the arm's own inner lr, the setting the activations were learned for; a diverse set that only wins
there may be fitted to that optimiser. Under SGD each network gets the lr that suits it best, so
the comparison is not decided by one lr. Per replicate and network:
1. the **grid**: every lr of the file at the replicate's first `pick_seeds` retraining seeds;
2. the **pick**: the lr with the best mean metric on the selection split (`val_*`; never test) over
   those seeds (on the log scale for an MSE; ties and equal values: the smaller lr; a grid where no
   lr gave a finite value: the smallest lr, logged);
3. the **runs**: all R retraining seeds at the pick (the grid's seeds at the pick are reused, not
   trained again). Its observations are the R runs at the pick, averaged as the primary protocol's.
Everything is derived from the trainings' own files, so the trainable that makes the pick, the
driver that checks what is left and the analysis agree by construction.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from dnn_search.results.study_record import Replicate, StudySpec, retraining_seed, secondary_networks

log = logging.getLogger(__name__)

PROTOCOL = "secondary"
OPTIMIZER = "sgd"


def secondary_key(rep_key: str, mode: str, lr: float, run: int) -> str:
    return f"{rep_key}-{mode.replace(':', '')}-sgd{lr:g}-r{run}"


def grid_trainings(spec: StudySpec, rep: Replicate, mode: str) -> list[dict]:
    """The pick's trainings of MODE for REP: each lr at the first `pick_seeds` retraining seeds."""
    return [{"key": secondary_key(rep.key, mode, lr, r), "mode": mode, "run": r, "lr": lr,
             "seed": retraining_seed(spec, rep, r)}
            for lr in spec.secondary_spec().lrs for r in range(spec.secondary_spec().pick_seeds)]


def final_trainings(spec: StudySpec, rep: Replicate, mode: str, lr: float) -> list[dict]:
    """MODE's R runs at the picked LR."""
    return [{"key": secondary_key(rep.key, mode, lr, r), "mode": mode, "run": r, "lr": lr,
             "seed": retraining_seed(spec, rep, r)} for r in range(spec.runs)]


def _scaled(value, log_scale: bool) -> float:
    if value is None or not math.isfinite(float(value)):
        return math.nan
    if log_scale:
        return math.log(value) if value > 0 else math.nan
    return float(value)


def pick_lr(grid_rows: list[dict], metric: str, direction: str, log_scale: bool) -> float:
    """The lr whose rows have the best mean `val_<metric>` (see the module docstring for ties)."""
    by_lr: dict[float, list[float]] = {}
    for r in grid_rows:
        by_lr.setdefault(float(r["lr"]), []).append(_scaled(r.get(f"val_{metric}"), log_scale))
    means = {lr: sum(v) / len(v) for lr, v in by_lr.items() if all(math.isfinite(x) for x in v)}
    if not means:
        log.warning("secondary protocol: no lr of %s gave a finite val_%s; picking the smallest", sorted(by_lr),
                    metric)
        return min(by_lr)
    sign = 1.0 if direction == "max" else -1.0
    return max(sorted(means), key=lambda lr: sign * means[lr])  # max keeps the first (smallest) of ties


def _read(out_dir: Path, key: str) -> dict | None:
    path = Path(out_dir) / f"{key}.json"
    return json.loads(path.read_text()) if path.exists() else None


def pick_from_files(out_dir: Path, spec: StudySpec, rep: Replicate, mode: str, metric: str, direction: str,
                    log_scale: bool) -> float | None:
    """MODE's pick for REP from its grid files; None while a grid training has not finished."""
    rows = [_read(out_dir, t["key"]) for t in grid_trainings(spec, rep, mode)]
    done = [r for r in rows if r is not None]
    return None if len(done) < len(rows) else pick_lr(done, metric, direction, log_scale)


def secondary_done(out_dir: Path, spec: StudySpec, rep: Replicate, mode: str, metric: str, direction: str,
                   log_scale: bool) -> bool:
    lr = pick_from_files(out_dir, spec, rep, mode, metric, direction, log_scale)
    return lr is not None and all(_read(out_dir, t["key"]) is not None
                                  for t in final_trainings(spec, rep, mode, lr))


def picked_rows(rows: list[dict], spec: StudySpec, metric: str, direction: str, log_scale: bool) -> list[dict]:
    """The secondary protocol's observations: per (replicate, mode), its runs r < R at the pick, each
    with `picked_lr`; ROWS are every validation row (either protocol)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        if r.get("protocol") == PROTOCOL:
            groups.setdefault((r["replicate"], r["mode"]), []).append(r)
    out = []
    for group in groups.values():
        sec = spec.secondary_spec()
        grid = [r for r in group if r["run"] < sec.pick_seeds]
        if len({(float(r["lr"]), r["run"]) for r in grid}) < len(sec.lrs) * sec.pick_seeds:
            continue  # the grid has not finished: no pick yet
        lr = pick_lr(grid, metric, direction, log_scale)
        out += [{**r, "picked_lr": lr} for r in group if float(r["lr"]) == lr and r["run"] < spec.runs]
    return out


def secondary_plan_count(spec: StudySpec) -> int:
    """Trainings per secondary network and replicate: the grid, then the runs the grid did not cover."""
    if spec.secondary is None:
        return 0
    return len(spec.secondary.lrs) * spec.secondary.pick_seeds + max(0, spec.runs - spec.secondary.pick_seeds)


def summary_lines(exp_dir: Path, spec: StudySpec, comparisons, table_lines) -> list[str]:
    """summary.md's secondary-protocol section from the tables alone: its family of contrasts
    (TABLE_LINES renders a family as the summary's other comparison tables) and each network's picks."""
    import pandas as pd
    path = Path(exp_dir) / "validation.parquet"
    if spec.secondary is None or not path.is_file():
        return []
    v = pd.read_parquet(path)
    sec = v[(v["protocol"] == PROTOCOL) & v["picked_lr"].notna()] if "picked_lr" in v.columns else v.iloc[:0]
    lines = [f"## Secondary protocol: SGD (momentum {spec.secondary.momentum:g}), lr picked per network", "",
             f"Each replicate's network trained at every lr of {list(spec.secondary.lrs)} with its first "
             f"{spec.secondary.pick_seeds} retraining seed(s), the lr with the best mean on the selection split "
             f"picked, then all {spec.runs} seeds at the pick. The primary contrasts it covers, Holm within "
             "this table:", "", *table_lines(comparisons, "secondary protocol"), "",
             "| arm | network | picked lr: replicates |", "|---|---|---|"]
    once = sec.drop_duplicates(["replicate", "mode"])
    for arm in spec.arms:
        for mode in secondary_networks(spec, arm):
            counts = once[(once["arm"] == arm.name) & (once["mode"] == mode)]["picked_lr"].value_counts().sort_index()
            if len(counts):
                lines.append(f"| {arm.name} | {mode} | {', '.join(f'{lr:g}: {n}' for lr, n in counts.items())} |")
    return lines + [""]
