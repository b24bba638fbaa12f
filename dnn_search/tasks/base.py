"""The Task interface: what differs between learning problems, behind one small class.

Meta-learning (RMSprop inner loop, mean inner loss, exact unrolled meta-gradient, clipped heavy-ball
outer step), validation and Hessian trials are shared by every task; a task fixes only

- its data: registered datasets whose loaders return a `dnn_search.data.Dataset` (inputs, targets,
  trajectory ids where the samples come from trajectories, None otherwise);
- `predict(net, x)`: what the network predicts. Usually the network's output, but a Hamiltonian
  network predicts the symplectic gradient of its scalar output, which differentiates with
  respect to x; hence the prediction gets the network as a callable, not an output tensor;
- `loss(prediction, y)`: the mean inner loss, differentiated by autograd on the reference path
  and in validation and Hessian trials;
- `inner_loss_and_grads(theta, activation, x, y)`: the same loss with its gradient written out
  by hand, which is what makes the fast meta-learning path first-order in autograd. For tasks
  whose prediction is the network output (`predict` not overridden), the default back-propagates
  through the D -> H -> out network and needs only `output_loss_and_grad`;
- `inner_gradient_order`: the highest derivative of the activation f that the hand-written
  gradient uses (1: f'); the meta-gradient differentiates it once more, so the base must provide
  one order more, continuously when `requires_smooth_base`;
- its metrics (`metrics`: a `dnn_search.metrics.Metric` each, with its direction, label and display).
  A metric m is reported as `heldout_m` during meta-learning (on the split carved from the training
  data), `test_m` and `val_m` by validation trials. The search optimises `heldout_<primary_metric>`.
  `extra_metrics`: what only validation trials report, under its own name (a forecast's
  rollout_mse). Every table, summary and figure reads them from here, so a new task's metrics reach
  them without any consumer knowing its names;
- optional figures.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from pathlib import Path

import torch

from dnn_search.activations import get_base
from dnn_search.errors import UserError
from dnn_search.metrics import SPLITS, Metric


class Task(ABC):
    """Abstract: a task must say how big its output is, what its loss is and how its metrics add up
    over a chunk; everything else has a default."""

    name: str = ""
    primary_metric: str = ""
    metrics: tuple[Metric, ...] = ()
    extra_metrics: tuple[Metric, ...] = ()
    loss_label: str = "loss"  # the inner loss in words, for axes: "cross-entropy, nats"
    inner_gradient_order: int = 1
    # Which derivatives of the hidden activation `inner_loss_and_grads` gets from `activation(z)`
    # (0 is f, with the meta-training noise): the fast path picks the fused kernel that returns them.
    inner_derivatives: tuple[int, ...] = (0, 1)
    requires_smooth_base: bool = False
    # True when predict() differentiates with respect to x (evaluation then keeps autograd on).
    predict_needs_grad: bool = False
    # Optional: the whole fast inner step (loss, hand-written gradient, RMSprop update) as one autograd
    # node with a hand-derived backward, called as fused_inner_step(theta, second_moment, neuron_phi,
    # act_noise, hidden_noise, x, y, base, mu, lr, eps) -> (loss, theta, second_moment). None: the
    # fast path composes inner_loss_and_grads with the update instead (same maths, more autograd nodes).
    fused_inner_step = None

    # --------------------------------------------------------------------------- names
    @property
    def search_metric(self) -> str:
        return f"heldout_{self.primary_metric}"

    @property
    def search_mode(self) -> str:
        return self.metric_directions[self.primary_metric]

    @property
    def metric_directions(self) -> dict[str, str]:
        """Metric name -> direction ('max'/'min') of the metrics measured on a split."""
        return {m.name: m.direction for m in self.metrics}

    @property
    def validation_directions(self) -> dict[str, str]:
        """Extra metric name -> direction, for the metrics only validation trials report."""
        return {m.name: m.direction for m in self.extra_metrics}

    def metric(self, column: str) -> Metric | None:
        """The Metric behind a column name: an extra metric's own name, or <split>_<metric>
        (heldout_accuracy, test_mse, val_mse); None when the column is not this task's."""
        extra = {m.name: m for m in self.extra_metrics}
        if column in extra:
            return extra[column]
        split, _, name = column.partition("_")
        return next((m for m in self.metrics if m.name == name), None) if split in SPLITS else None

    def primary(self) -> Metric:
        """The declared Metric of primary_metric (a task that does not declare it is a programming error)."""
        for m in self.metrics:
            if m.name == self.primary_metric:
                return m
        raise TypeError(f"task {self.name}: primary_metric {self.primary_metric!r} is not among its metrics")

    def validation_columns(self) -> tuple[str, ...]:
        """The metric columns of a validation row: test_ and val_ of each metric, then the extras."""
        return (*(m.column(s) for s in ("test", "val") for m in self.metrics),
                *(m.column() for m in self.extra_metrics))

    def columns(self, prefix: str) -> dict[str, str]:
        """Column name -> direction ('max'/'min') of this task's metrics under `prefix` (test, val, ...)."""
        return {f"{prefix}_{m}": d for m, d in self.metric_directions.items()}

    # --------------------------------------------------------------------------- data and model
    @abstractmethod
    def output_size(self, data) -> int:
        """The network's output width for DATA (classes, state dimension, 1 for a scalar H)."""

    def check_base(self, base: str) -> str:
        """The base name if this task can use it; a UserError saying why not otherwise."""
        spec = get_base(base)
        if spec.max_order < self.inner_gradient_order + 1:
            raise UserError(f"task {self.name} needs derivatives of the base up to order "
                            f"{self.inner_gradient_order + 1}; {spec.name} provides {spec.max_order}")
        if self.requires_smooth_base and not spec.smooth:
            raise UserError(f"task {self.name} differentiates through the activation's derivative and "
                            f"needs a smooth base; {spec.name} is not smooth")
        return spec.name

    def predict(self, net, x: torch.Tensor) -> torch.Tensor:
        return net(x)

    # --------------------------------------------------------------------------- losses
    @abstractmethod
    def loss(self, prediction: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The mean inner loss, differentiable by autograd."""

    def output_loss_and_grad(self, out: torch.Tensor, y: torch.Tensor):
        """(mean loss, d loss / d out) written out, for tasks that predict the network output."""
        raise NotImplementedError

    def inner_loss_and_grads(self, theta, activation, x, y):
        """Loss and hand-written gradients for the one-hidden-layer network out = W2 a(W1 x + b1) + b2.

        `activation(z)` returns (a, a'): the hidden activation (meta-training noise included) and its
        derivative. Returns (loss, (dW1, db1, dW2, db2)). A task whose gradient needs a'' overrides
        this, raises inner_gradient_order and declares `inner_derivatives` (a Hamiltonian network:
        (1, 2), activation(z) -> (f', f'')); without a kernel for them the fast path refuses it.
        """
        w1, b1, w2, b2 = theta
        z = x @ w1.T + b1
        a, a_prime = activation(z)
        out = a @ w2.T + b2
        loss, d_out = self.output_loss_and_grad(out, y)
        d_z = (d_out @ w2) * a_prime
        return loss, (d_z.T @ x, d_z.sum(0), d_out.T @ a, d_out.sum(0))

    # --------------------------------------------------------------------------- metrics
    @abstractmethod
    def metric_sums(self, prediction: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Each metric summed over the examples of one chunk (so chunks add up exactly)."""

    def evaluate(self, net, x: torch.Tensor, y: torch.Tensor, chunk: int = 1024) -> dict[str, float]:
        """Every metric's mean over a whole split, evaluated in chunks; NaN for an empty split."""
        if x.shape[0] == 0:
            return {m: math.nan for m in self.metric_directions}
        sums: dict[str, float] = {}
        with torch.set_grad_enabled(self.predict_needs_grad):
            for start in range(0, x.shape[0], chunk):
                xb, yb = x[start:start + chunk], y[start:start + chunk]
                for m, value in self.metric_sums(self.predict(net, xb), yb).items():
                    sums[m] = sums.get(m, 0) + value
        return {m: v / x.shape[0] for m, v in sums.items()}

    def validation_metrics(self, net, data, device="cpu") -> dict[str, float]:
        """Extra metrics of a trained validation network on DATA (keys: extra_metrics' names); none by default."""
        return {}

    def figures(self, net, data, folder: Path) -> dict[str, Path]:
        """Task-specific figures of a trained network (e.g. forecasts); none by default."""
        return {}
