"""The splits of a diversity study, as indices into the training data, and the seeds it derives.

A study answers "does diversity help?" with meta-seeds as the unit, so nothing that chooses between
networks may have been seen by meta-learning. Per study, a seeded **selection split** (a share of
the training data; whole trajectories where samples are states of trajectories) is set aside first:
meta-learning never touches it, every validation network is scored on it, and every pick is made
on it. Each meta-learning run then carves its own held-out split (for its search metric) from the
rest. Indices, not tensors, so that a run can record exactly what it trained on and a test can
check that record against the selection split.

The permutations are the ones `data.split_validation` draws (it is applied to the index vector
itself), so a study's selection split equals a validation network's held-out split at the same
fraction and seed: validation with `split_seed` = the selection seed scores on exactly this split.
"""
from __future__ import annotations

import numpy as np
import torch

from dnn_search.data import split_validation


def derive_seed(*parts: int) -> int:
    """A seed in [0, 2³¹) determined by PARTS (the study seed, a stream, an arm, a meta-seed, a run,
    ...): the first word of numpy's SeedSequence of (len(PARTS), *PARTS), so that seeds of different
    parts do not collide the way `seed + j` does across arms and replicates. The length leads because
    SeedSequence ignores trailing zeros: (0, 3, 2) and (0, 3, 2, 0) would otherwise be one seed."""
    return int(np.random.SeedSequence([len(parts), *(int(p) for p in parts)]).generate_state(1)[0] & 0x7FFFFFFF)


def _split(count: int, fraction: float, seed: int, groups) -> tuple[np.ndarray, np.ndarray]:
    index = torch.arange(count)
    keep, _, held, _ = split_validation(index[:, None], index, fraction, seed, groups=groups)
    return keep[:, 0].numpy(), held[:, 0].numpy()


def selection_split(data, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rest, selection): indices into DATA's training set; the selection split holds FRACTION of it
    (whole trajectories when the data has trajectory ids), drawn with SEED."""
    return _split(len(data.x_train), fraction, seed, data.traj_train)


def metalearning_split(data, rest: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, heldout): meta-learning's own split of the REST indices (never the selection split),
    FRACTION held out with SEED (the run's meta-seed), whole trajectories where there are any."""
    groups = None if data.traj_train is None else torch.as_tensor(data.traj_train)[torch.as_tensor(rest)]
    train, held = _split(len(rest), fraction, seed, groups)
    return rest[train], rest[held]


def take(data, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of the training samples at INDICES."""
    index = torch.as_tensor(indices, dtype=torch.long)
    return data.x_train[index], data.y_train[index]
