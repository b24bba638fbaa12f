"""A meta-learning trial's checkpoint: the learner state it holds, read without unpickling.

Trials write `state.pt` (a mapping of tensors: the activation weights phi.*, the outer momentum,
the step, the generator state) into each Tune checkpoint folder; export and the trial itself on
a restore read it back here. `trials.parquet` is data: a checkpoint path in it must not lead a
reader outside the search's folder.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

from dnn_search.errors import UserError
from dnn_search.results.layout import TRIALS_FILE

STATE_FILE = "state.pt"
ACTIVATION_PLOT = "activations.png"  # drawn by the trial at checkpoints where it may end


def load_checkpoint_state(folder: str | os.PathLike) -> dict:
    """The learner state in FOLDER (tensors only). `weights_only=True` refuses any pickled object other
    than tensors and plain containers without running it; such a file, or a damaged one, is a
    UserError naming it. A missing file raises FileNotFoundError."""
    import torch
    path = Path(folder) / STATE_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError,
            ImportError, IndexError, KeyError, OSError) as exc:
        raise UserError(f"checkpoint {path}: refused or unreadable ({' '.join(str(exc).split())[:160]})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise UserError(f"checkpoint {path}: not a learner state (expected a mapping of tensors)")
    return state


def checkpoint_folder(exp_dir: str | os.PathLike, checkpoint_path: str) -> Path:
    """The folder of the trial checkpoint CHECKPOINT_PATH (as trials.parquet records it: relative to
    EXP_DIR, or absolute inside it); a path leading outside EXP_DIR is a UserError."""
    folder = Path(checkpoint_path)
    if not folder.is_absolute():
        folder = Path(exp_dir) / folder
    root = Path(exp_dir).resolve()
    if root not in folder.resolve().parents:
        raise UserError(f"checkpoint path {checkpoint_path!r} in {TRIALS_FILE} is outside {root}: refused")
    return folder


def state_activations(state: dict, base: str):
    """The ActivationSet a learner state holds (its phi.* tensors), on base function BASE."""
    from dnn_search.activations import ActivationSet
    return ActivationSet.from_tensors(base, {k: state[f"phi.{k}"] for k in ("w1", "b1", "w2", "b2")})


def load_trial_activations(exp_dir: str | os.PathLike, checkpoint_path: str, base: str):
    """The ActivationSet of the trial checkpoint CHECKPOINT_PATH (relative to EXP_DIR, or absolute
    inside it)."""
    folder = checkpoint_folder(exp_dir, checkpoint_path)
    try:
        state = load_checkpoint_state(folder)
    except FileNotFoundError:
        raise UserError(f"checkpoint {folder} is missing: the trial's activations cannot be exported") from None
    try:
        return state_activations(state, base)
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        raise UserError(f"checkpoint {folder}: not a learner state ({' '.join(str(exc).split())[:160]})") from None
