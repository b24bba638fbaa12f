"""The `Dataset` container every task's data arrives in, and its seeded validation split.

Its own module (below the loaders) so that every data source can build one without importing the
others: `data.py` (the classification loaders) and `dynamics.py` (the physics trajectories) both
import it and neither imports the other.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from dnn_search.errors import UserError
from dnn_search.tasks.registry import get_task


def _targets(y) -> torch.Tensor:
    """Class labels as int64, regression targets as float32."""
    y = torch.as_tensor(y)
    return y.to(torch.float32) if y.is_floating_point() else y.to(torch.int64)


@dataclass
class Dataset:
    """Inputs x are float32 (N, D); targets y are int64 labels (N,) or float32 values (N, k).

    `task` names the registered task the data serves. `traj_train` / `traj_test` give each sample's
    trajectory id where samples are states of trajectories (None otherwise), so that held-out splits
    can take whole trajectories. `trajectories_test` (n_traj, points, d), float64, holds the dense test
    trajectories that forecasts start from and are scored against, sampled every `dt` (None when the
    data has no trajectories).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    task: str = "classification"
    traj_train: torch.Tensor | None = None
    traj_test: torch.Tensor | None = None
    trajectories_test: torch.Tensor | None = None
    dt: float | None = None

    def __post_init__(self):
        self.x_train, self.x_test = (torch.as_tensor(x, dtype=torch.float32) for x in (self.x_train, self.x_test))
        self.y_train, self.y_test = _targets(self.y_train), _targets(self.y_test)
        for x, y in ((self.x_train, self.y_train), (self.x_test, self.y_test)):
            if x.ndim != 2 or y.ndim not in (1, 2) or len(x) != len(y) or x.shape[1] != self.x_train.shape[1]:
                raise ValueError(f"inconsistent dataset shapes: x {tuple(x.shape)}, y {tuple(y.shape)}")
        for ids, x in ((self.traj_train, self.x_train), (self.traj_test, self.x_test)):
            if ids is not None and tuple(torch.as_tensor(ids).shape) != (len(x),):
                raise ValueError(f"trajectory ids of shape {tuple(torch.as_tensor(ids).shape)} for {len(x)} samples")
        if self.trajectories_test is not None:
            self.trajectories_test = torch.as_tensor(self.trajectories_test, dtype=torch.float64)
            if self.trajectories_test.ndim != 3 or self.trajectories_test.shape[2] != self.x_train.shape[1]:
                raise ValueError(f"test trajectories of shape {tuple(self.trajectories_test.shape)} for "
                                 f"{self.x_train.shape[1]} state variables")

    def task_object(self):
        """The Task that this data serves (from the task registry)."""
        return get_task(self.task)

    def split(self, fraction: float, seed: int):
        """(x_train, y_train, x_val, y_val): a seeded held-out split of the training data, whole
        trajectories at a time when the samples come from trajectories."""
        return split_validation(self.x_train, self.y_train, fraction, seed, groups=self.traj_train)

    def with_rollouts(self, steps: int | None = None, trajectories: int | None = None) -> "Dataset":
        """The same data with its forecasts limited to the first `trajectories` test trajectories and
        `steps` time steps (None: all). Forecast metrics read the horizon and the count from the dense
        test trajectories, so limiting these limits the forecasts."""
        if self.trajectories_test is None:
            return self
        for name, value in (("--rollout_steps", steps), ("--rollout_trajectories", trajectories)):
            if value is not None and value < 1:
                raise UserError(f"{name} must be a positive integer, got {value}")
        n_traj, points = self.trajectories_test.shape[:2]
        if steps is not None and steps > points - 1:
            raise UserError(f"--rollout_steps {steps} is beyond the {points - 1} steps of the {self.name} "
                            "test trajectories")
        if trajectories is not None and trajectories > n_traj:
            raise UserError(f"--rollout_trajectories {trajectories} is beyond the {n_traj} {self.name} "
                            "test trajectories")
        dense = self.trajectories_test[:trajectories, :None if steps is None else steps + 1]
        return dataclasses.replace(self, trajectories_test=dense)

    @property
    def input_size(self) -> int:
        return self.x_train.shape[1]

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1


# ------------------------------------------------------------------------------------ validation

def split_validation(x: torch.Tensor, y: torch.Tensor, fraction: float, seed: int, groups=None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded random split: the last round(fraction * N) of a permutation become the validation set.

    With `groups` (a trajectory id per sample), the permutation is of the distinct groups and whole
    groups go to the validation set, so no trajectory is seen on both sides.
    """
    if not 0 <= fraction < 1:
        raise UserError(f"validation fraction must be in [0, 1), got {fraction}")
    n = len(x)
    if len(y) != n:
        raise ValueError(f"x has {n} rows but y has {len(y)}")
    if groups is not None:
        ids, inverse = torch.unique(torch.as_tensor(groups), return_inverse=True)
        n_val = round(fraction * len(ids))
        if n_val >= len(ids) and len(ids) > 0:
            raise UserError(f"validation fraction {fraction} leaves no training trajectories out of {len(ids)}")
        perm = torch.randperm(len(ids), generator=torch.Generator().manual_seed(int(seed)))
        is_val = torch.zeros(len(ids), dtype=torch.bool)
        is_val[perm[len(ids) - n_val:]] = True
        mask = is_val[inverse].to(x.device)
        return x[~mask], y[~mask], x[mask], y[mask]
    n_val = round(fraction * n)
    if n_val >= n and n > 0:
        raise UserError(f"validation fraction {fraction} leaves no training examples out of {n}")
    generator = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=generator).to(x.device)
    train_idx, val_idx = perm[:n - n_val], perm[n - n_val:]
    return x[train_idx], y[train_idx], x[val_idx], y[val_idx]
