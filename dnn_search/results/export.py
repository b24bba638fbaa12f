"""Exporting the best trials' learned activations (ranked by `results.ranking.rank_trials`, among the
trials with a checkpoint)."""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from dnn_search.errors import UserError
from dnn_search.results.checkpoint import ACTIVATION_PLOT, checkpoint_folder, load_trial_activations
from dnn_search.results.layout import ACTIVATIONS_DIR, TRIALS_FILE
from dnn_search.results.ranking import rank_trials
from dnn_search.results.record import read_record
from dnn_search.results.tables import plain, read_table

log = logging.getLogger(__name__)


def _config_defaults() -> dict:
    """The meta-learning settings and their defaults (a trial's config holds those it set)."""
    from dnn_search.metalearn import MetaConfig
    return MetaConfig().to_dict()


def export_trials(exp_dir: str | os.PathLike, top: int, out: str | os.PathLike | None = None,
                  quiet: bool = False) -> list[dict]:
    """Write the best trials' activations into OUT/<trial_id>/ (default: the search's activations/): the
    original .txt, the exact .npz, a .json and metadata.json, and a plot. Returns one dict per trial."""
    from dnn_search.actfile import original_stem, write_activation_files
    from dnn_search.atomic import atomic_path, atomic_write_text
    from dnn_search.plots import plot_activations
    from dnn_search.versions import versions

    exp_dir = Path(exp_dir)
    if top < 1:
        raise UserError(f"--top must be a positive integer, got {top}")
    record = read_record(exp_dir)
    trials = read_table(exp_dir / TRIALS_FILE)
    best = rank_trials(trials, record.mode, top, record.top_per, metric=record.metric, need_checkpoint=True)
    if best.empty:
        raise UserError(f"no finished trial with a checkpoint in {exp_dir / TRIALS_FILE}: nothing to export")
    out = Path(out) if out else exp_dir / ACTIVATIONS_DIR
    defaults = _config_defaults()
    param_cols = [c for c in trials.columns if c in defaults]
    exported = []
    for rank, (_, row) in enumerate(best.iterrows(), start=1):
        config = {c: plain(row[c]) for c in param_cols}
        acts = load_trial_activations(exp_dir, row["checkpoint_path"], config.get("activation", "sin"))
        folder = out / str(row["trial_id"])
        setting = {**defaults, **{k: v for k, v in config.items() if v is not None}}
        steps = int(row["steps_done"]) if row["steps_done"] == row["steps_done"] else int(setting["steps"])
        stem = original_stem(setting["dataset"], setting["activation"], acts.n, "cpu", int(setting["seed"]),
                             float(setting["inner_lr"]), float(setting["outer_lr"]), steps, 0)
        metadata = {"config": config, "search": record.name, "trial_id": str(row["trial_id"]),
                    "optuna_number": plain(row.get("optuna_number")), "rank": rank, "status": row["status"],
                    "metric": record.metric, "mode": record.mode, "score": plain(row["score"]),
                    "steps_done": steps, "final_meta_loss": plain(row["final_meta_loss"]),
                    **{c: plain(row[c]) for c in row.index if c.startswith(("final_heldout_", "best_heldout_"))},
                    "dataset": config.get("dataset"), "activation": config.get("activation"), "run": 0,
                    "versions": versions()}
        paths = write_activation_files(folder, stem, acts, metadata)
        meta_json = json.loads(paths["json"].read_text())
        atomic_write_text(folder / "metadata.json", json.dumps(meta_json, indent=2) + "\n")
        drawn = checkpoint_folder(exp_dir, row["checkpoint_path"]) / ACTIVATION_PLOT  # by the trial itself
        if drawn.is_file():
            png = folder / "activations.png"
            with atomic_path(png) as tmp:
                shutil.copyfile(drawn, tmp)
        else:  # a checkpoint of an older run
            png = plot_activations(acts, folder / "activations.png",
                                   f"trial {row['trial_id']}: {acts.n} learned {acts.base} activation(s)")
        exported.append({"trial_id": str(row["trial_id"]), "rank": rank, "folder": folder, "npz": paths["npz"],
                         "txt": paths["txt"], "png": png, "n": acts.n, "score": plain(row["score"])})
    if not quiet:
        for e in exported:
            log.info("exported #%s %s (n=%s, score %.4g) -> %s", e["rank"], e["trial_id"], e["n"], e["score"], e["folder"])
    return exported
