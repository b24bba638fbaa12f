"""One replicate of a diversity study: a meta-learning run from its own meta-seed, to a fixed number
of outer steps, with no early stopping, in a folder of its own (docs/design.md, "Diversity studies").

Why a folder and not the search's Tune checkpoints: a study's unit is the replicate, and its
resume must work at that granularity whatever happened to the scheduler (a killed driver, a lost
worker, a new Ray session): the folder holds the state to continue bit-identically
(`state.pt`, written every few steps), the per-step rows up to that state (`steps.json`), the
indices it trained on and held out (`indices.npz`, checked against the study's selection split),
and, once finished, the learned activations and `result.json`. A replicate whose `result.json`
exists is never run again.

A replicate **fails** (status FAILED, never replaced) when its values stop being finite or its
meta-gradient norm exceeds the study's limit: a diverging meta-learning run is a property of the
arm's settings, and dropping it would flatter the arm.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from dnn_search.actfile import write_activation_files
from dnn_search.atomic import atomic_path, atomic_write_text
from dnn_search.metalearn import MetaConfig, MetaLearner, MetaLearningDiverged
from dnn_search.splits import metalearning_split, take

STATE_FILE = "state.pt"
STEPS_FILE = "steps.json"
INDICES_FILE = "indices.npz"
RESULT_FILE = "result.json"
ACTIVATIONS_STEM = "activations"


@dataclass(frozen=True)
class ReplicateOutcome:
    status: str          # COMPLETED | FAILED
    steps: int           # outer steps reached
    reason: str          # why it failed ('' when completed)


def read_result(folder: Path) -> dict | None:
    """The finished replicate's result.json, or None while it has not finished."""
    path = Path(folder) / RESULT_FILE
    return json.loads(path.read_text()) if path.exists() else None


def _save_state(folder: Path, learner: MetaLearner, rows: list[dict]) -> None:
    # the rows first: a kill between the two leaves rows ahead of the state, which the loader trims
    atomic_write_text(folder / STEPS_FILE, json.dumps(rows, allow_nan=True) + "\n")
    with atomic_path(folder / STATE_FILE) as tmp:
        torch.save(learner.state_dict(), tmp)


def run_replicate(cfg: MetaConfig, data, rest: np.ndarray, folder: str | Path, *, grad_norm_limit: float,
                  checkpoint_every: int = 5, metadata: dict | None = None, device="cpu",
                  on_step: Callable[[dict], None] | None = None) -> ReplicateOutcome:
    """Meta-learn CFG (its seed is the meta-seed) on DATA's training samples at REST (the selection
    split already removed) for cfg.steps outer steps, continuing from FOLDER's state if there is one.
    Writes the files the module docstring lists; ON_STEP gets each step's row (for progress)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    done = read_result(folder)
    if done is not None:
        return ReplicateOutcome(done["status"], int(done["steps"]), done.get("reason", ""))
    task = data.task_object()
    train, heldout = metalearning_split(data, rest, cfg.val_fraction, cfg.seed)
    if not (folder / INDICES_FILE).exists():
        with atomic_path(folder / INDICES_FILE) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, train=train, heldout=heldout)
    learner = MetaLearner(cfg, *take(data, train), *take(data, heldout), task.output_size(data), device=device,
                          task=task)
    rows: list[dict] = []
    if (folder / STATE_FILE).exists():
        learner.load_state_dict(torch.load(folder / STATE_FILE, weights_only=True))
        rows = json.loads((folder / STEPS_FILE).read_text())[:learner.step_index]
    status, reason = "COMPLETED", ""
    while learner.step_index < cfg.steps:
        try:
            m = learner.step()
        except MetaLearningDiverged as exc:
            status, reason = "FAILED", f"non-finite values: {exc}"
            break
        norm = math.sqrt(sum(g * g for g in m.grad_norms))
        row = {"step": m.step, "meta_loss": m.meta_loss, "final_train_loss": m.final_train_loss, **m.heldout,
               "grad_norm": norm, "seconds": m.seconds}
        rows.append(row)
        if on_step is not None:
            on_step(row)
        if norm > grad_norm_limit:
            status, reason = "FAILED", f"meta-gradient norm {norm:.4g} above the limit {grad_norm_limit:g} at step {m.step}"
            break
        if m.step % checkpoint_every == 0 or m.step == cfg.steps:
            _save_state(folder, learner, rows)
    if status == "COMPLETED":
        write_activation_files(folder, ACTIVATIONS_STEM, learner.activations(),
                               {**(metadata or {}), "config": cfg.to_dict(), "steps_done": learner.step_index})
    atomic_write_text(folder / STEPS_FILE, json.dumps(rows, allow_nan=True) + "\n")
    atomic_write_text(folder / RESULT_FILE, json.dumps(
        {"status": status, "steps": len(rows), "reason": reason, "meta_seed": cfg.seed,
         **{k: v for k, v in (rows[-1] if rows else {}).items() if k != "seconds"}}, allow_nan=True) + "\n")
    return ReplicateOutcome(status, len(rows), reason)
