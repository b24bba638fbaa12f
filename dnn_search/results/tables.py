"""The search's tables, trials.parquet and steps.parquet: their columns, atomic writes, reads, and
the plain-text tables the commands print."""
from __future__ import annotations

import os
from pathlib import Path

from dnn_search.atomic import atomic_path
from dnn_search.errors import UserError

STATUSES = ("COMPLETED", "PRUNED", "FAILED", "RUNNING")
# (then the sampled and fixed settings, and final_<m> / best_<m> of the task's search metric m,
# e.g. final_heldout_accuracy and best_heldout_accuracy for classification)
TRIAL_COLUMNS = ("trial_id", "optuna_number", "status", "error", "retries", "node_id", "steps_done", "score",
                 "final_meta_loss", "wall_seconds", "started_at", "ended_at", "checkpoint_path")
# (then heldout_<m> for each metric m of the task: heldout_accuracy and heldout_loss for classification)
STEP_COLUMNS = ("trial_id", "step", "meta_loss", "final_train_loss", "grad_norms", "grad_norm", "seconds")


def write_table(path: str | os.PathLike, rows: list[dict], columns=()) -> None:
    """Parquet, atomically; `columns` first (present even when there are no rows)."""
    import pandas as pd
    frame = pd.DataFrame(rows)
    for col in columns:
        if col not in frame.columns:
            frame[col] = None
    ordered = list(columns) + [c for c in frame.columns if c not in columns]
    with atomic_path(path) as tmp:
        frame[ordered].to_parquet(tmp, index=False)


def read_table(path: str | os.PathLike):
    import pandas as pd
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} is missing: has the search run (or finished)?")
    return pd.read_parquet(path)


def plain(value):
    """numpy/pandas scalars -> Python (JSON-friendly)."""
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        try:
            return value.item()
        except (ValueError, AttributeError):
            pass
    return value


def format_table(rows: list[dict], columns: list[str]) -> str:
    """Left-aligned columns; floats with 4 significant digits."""
    def cell(v):
        if isinstance(v, float):
            return "nan" if v != v else f"{v:.4g}"
        return "" if v is None else str(v)
    body = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(b[i]) for b in body]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths)) for b in body]
    return "\n".join(lines)
