"""Meta-learning of diverse activations (DESIGN.md §1.3), in two implementations that agree.

One outer step: draw a fresh random classifier D -> H -> C, train it for `epochs` epochs with a
differentiable RMSprop whose steps depend on the activation weights phi, take the meta-loss J as
the mean of all inner training losses, and follow the exact meta-gradient dJ/dphi through the
whole unrolled inner run (clipped to +-0.1, then heavy-ball SGD on phi).

- `reference`: the textbook form. Inner gradients by autograd with create_graph=True, the
  activation written as plain tensor expressions (vectorised over activations, no Python loop).
- `fast`: the inner gradient of the one-hidden-layer MLP is written out by hand, so the meta-
  gradient needs only first-order autograd through the unrolled run; each inner step is one
  autograd node with a hand-derived backward (`dnn_search.inner_step`), and the activation tile
  is the recompute-in-backward kernel of `dnn_search.fused` (native C++ where it builds).
Both draw every random number (classifier init, batch order, noise) from the same seeded
generator in the same order, so they compute the same function.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F

from dnn_search.activations import (RESIDUAL_SCALE, ActivationSet, base_value, block_sizes,
                                    check_base, default_init, neuron_blocks)
from dnn_search.errors import UserError
from dnn_search.fused import tile_forward
from dnn_search.inner_step import inner_step

IMPLEMENTATIONS = ("fast", "reference")
RMSPROP_EPS = 1e-8
GRAD_CLIP = 0.1
PARAM_NAMES = ("w1", "b1", "w2", "b2")


class MetaLearningDiverged(RuntimeError):
    """The meta-loss or the meta-gradient became NaN or infinite."""


@dataclass
class MetaConfig:
    """Hyperparameters of one meta-learning run; names and defaults are the original flags'."""

    dataset: str = "MNIST1D"
    activation: str = "sin"
    n_activations: int = 1
    inner_hidden_size: int = 200
    outer_hidden_size: int = 50
    inner_batch_size: int = 200
    outer_batch_size: int = 1
    epochs: int = 5
    steps: int = 300
    inner_lr: float = 0.01
    outer_lr: float = 0.4
    inner_mu: float = 0.8
    outer_mu: float = 0.8
    noise: float = 0.1
    seed: int = 0
    val_fraction: float = 0.1
    impl: str = "fast"

    def validate(self) -> "MetaConfig":
        check_base(self.activation)
        if self.impl not in IMPLEMENTATIONS:
            raise UserError(f"unknown --impl {self.impl!r}: choose one of {', '.join(IMPLEMENTATIONS)}")
        for name in ("inner_hidden_size", "outer_hidden_size", "inner_batch_size", "outer_batch_size",
                     "epochs", "steps"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"--{name} must be a positive integer, got {getattr(self, name)}")
        for name in ("inner_lr", "outer_lr"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise UserError(f"--{name} must be a positive number, got {value}")
        for name in ("inner_mu", "outer_mu"):
            if not 0 <= getattr(self, name) < 1:
                raise UserError(f"--{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0 <= self.noise < 1:
            raise UserError(f"--noise must be in [0, 1), got {self.noise}")
        if not 0 <= self.val_fraction < 1:
            raise UserError(f"--val_fraction must be in [0, 1), got {self.val_fraction}")
        block_sizes(self.inner_hidden_size, self.n_activations)  # raises on a bad n
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "MetaConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass
class StepMetrics:
    step: int
    meta_loss: float
    final_train_loss: float
    heldout_accuracy: float
    heldout_loss: float
    grad_norms: list[float] = field(default_factory=list)
    seconds: float = 0.0


# ---------------------------------------------------------------------------------------------
# The classifier and its inner training


def init_classifier(d_in: int, hidden: int, classes: int, generator: torch.Generator, dtype, device):
    """PyTorch's default nn.Linear init for both layers (weights and biases U(+-1/sqrt(fan_in)))."""
    def uniform(shape, fan_in):
        bound = 1.0 / math.sqrt(fan_in)
        return ((torch.rand(shape, generator=generator, dtype=dtype) * 2 - 1) * bound).to(device)
    return [uniform((hidden, d_in), d_in), uniform((hidden,), d_in),
            uniform((classes, hidden), hidden), uniform((classes,), hidden)]


def expand_to_neurons(phi: dict[str, torch.Tensor], blocks: torch.Tensor):
    """Per-neuron copies (H, Ho) of each block's activation weights; autograd sums them back."""
    return (phi["w1"].index_select(0, blocks), phi["b1"].index_select(0, blocks),
            phi["w2"].index_select(0, blocks), phi["b2"].index_select(0, blocks))


def _noise(shape, scale, generator, dtype, device):
    return ((torch.rand(shape, generator=generator, dtype=dtype) * 2 - 1) * scale).to(device)


def _reference_batch(theta, neuron_phi, base, x, y, act_noise, hidden_noise):
    """Loss and inner gradients by autograd with create_graph=True (the textbook form)."""
    w1, b1, w2, b2 = theta
    ew1, eb1, ew2, eb2 = neuron_phi
    z = x @ w1.T + b1
    g = (torch.tanh(z[..., None] * ew1 + eb1) * ew2).sum(-1) + eb2
    if act_noise is not None:
        g = g + act_noise
    a = base_value(base, z) + RESIDUAL_SCALE * g
    if hidden_noise is not None:
        a = a + hidden_noise
    loss = F.cross_entropy(a @ w2.T + b2, y)
    grads = torch.autograd.grad(loss, theta, create_graph=True)
    return loss, grads


def inner_run(phi, blocks, cfg: MetaConfig, x, y, num_classes, generator):
    """Train one fresh classifier; return (meta-loss J with its graph, final weights, last-epoch loss)."""
    dtype, device = x.dtype, x.device
    n, ho = phi["w1"].shape
    hidden = cfg.inner_hidden_size
    theta = init_classifier(x.shape[1], hidden, num_classes, generator, dtype, device)
    if cfg.impl == "reference":
        theta = [t.requires_grad_(True) for t in theta]
    second_moment = [torch.ones_like(t) for t in theta]
    neuron_phi = expand_to_neurons(phi, blocks)
    losses = []
    epoch_loss = 0.0
    count = x.shape[0]
    for _ in range(cfg.epochs):
        order = torch.randperm(count, generator=generator).to(device)
        x_epoch, y_epoch = x.index_select(0, order), y.index_select(0, order)  # batches are views
        epoch_losses = []
        for start in range(0, count, cfg.inner_batch_size):
            xb, yb = x_epoch[start:start + cfg.inner_batch_size], y_epoch[start:start + cfg.inner_batch_size]
            act_noise = hidden_noise = None
            if cfg.noise > 0:
                xi = _noise((n, ho), cfg.noise, generator, dtype, device)
                act_noise = (phi["w2"] * xi).sum(-1).index_select(0, blocks)
                hidden_noise = _noise((1, hidden), cfg.noise, generator, dtype, device)
            mu, lr = cfg.inner_mu, cfg.inner_lr
            if cfg.impl == "fast":  # the whole step, its backward written out (dnn_search.inner_step)
                loss, theta, second_moment = inner_step(theta, second_moment, neuron_phi, act_noise, hidden_noise,
                                                        xb, yb, cfg.activation, mu, lr, RMSPROP_EPS)
            else:
                loss, grads = _reference_batch(theta, neuron_phi, cfg.activation, xb, yb, act_noise, hidden_noise)
                second_moment = [mu * v + (1 - mu) * g * g for v, g in zip(second_moment, grads)]
                theta = [t - lr * g / (torch.sqrt(v) + RMSPROP_EPS)
                         for t, g, v in zip(theta, grads, second_moment)]
            losses.append(loss)
            epoch_losses.append(loss.detach())
        epoch_loss = float(torch.stack(epoch_losses).mean())
    return torch.stack(losses).mean(), [t.detach() for t in theta], epoch_loss


@torch.no_grad()
def evaluate_classifier(theta, phi, blocks, base, x, y, chunk=1024, fused=False):
    """Accuracy and mean loss of a trained classifier (no noise) on a whole split.

    fused=True (the fast path) evaluates the activation with the fused/native tile kernel."""
    if x.shape[0] == 0:
        return float("nan"), float("nan")
    w1, b1, w2, b2 = theta
    neuron_phi = expand_to_neurons({k: v.detach() for k, v in phi.items()}, blocks)
    correct, total_loss = 0, 0.0
    for start in range(0, x.shape[0], chunk):
        xb, yb = x[start:start + chunk], y[start:start + chunk]
        z = xb @ w1.T + b1
        ew1, eb1, ew2, eb2 = neuron_phi
        if fused:
            a = tile_forward(z, ew1, eb1, ew2, eb2, base)[0]
        else:
            a = base_value(base, z) + RESIDUAL_SCALE * ((torch.tanh(z[..., None] * ew1 + eb1) * ew2).sum(-1) + eb2)
        logits = a @ w2.T + b2
        total_loss += float(F.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(1) == yb).sum())
    return correct / x.shape[0], total_loss / x.shape[0]


# ---------------------------------------------------------------------------------------------
# The outer loop


class MetaLearner:
    """The state of one meta-learning run: activation weights, momentum, RNG, step counter."""

    def __init__(self, cfg: MetaConfig, x_train, y_train, x_val, y_val, num_classes: int,
                 device="cpu", dtype=torch.float32):
        self.cfg = cfg.validate()
        self.device = torch.device(device)
        self.dtype = dtype
        to = dict(device=self.device)
        self.x_train, self.y_train = x_train.to(dtype=dtype, **to), y_train.to(**to)
        self.x_val, self.y_val = x_val.to(dtype=dtype, **to), y_val.to(**to)
        self.num_classes = num_classes
        self.generator = torch.Generator().manual_seed(cfg.seed)
        init = default_init(cfg.n_activations, cfg.outer_hidden_size, self.generator, dtype)
        self.phi = {k: v.to(self.device).requires_grad_(True) for k, v in init.items()}
        self.momentum = {k: torch.zeros_like(v) for k, v in self.phi.items()}
        self.blocks = neuron_blocks(cfg.inner_hidden_size, cfg.n_activations).to(self.device)
        self.step_index = 0

    def meta_gradient(self):
        """(mean meta-loss, dJ/dphi, last classifier, its last-epoch loss) for one outer step."""
        grads = {k: torch.zeros_like(v) for k, v in self.phi.items()}
        total = 0.0
        theta, epoch_loss = None, float("nan")
        for _ in range(self.cfg.outer_batch_size):
            meta_loss, theta, epoch_loss = inner_run(self.phi, self.blocks, self.cfg, self.x_train,
                                                     self.y_train, self.num_classes, self.generator)
            part = torch.autograd.grad(meta_loss / self.cfg.outer_batch_size, list(self.phi.values()))
            for k, g in zip(self.phi, part):
                grads[k] += g
            total += float(meta_loss.detach()) / self.cfg.outer_batch_size
        return total, grads, theta, epoch_loss

    def step(self) -> StepMetrics:
        started = time.perf_counter()
        meta_loss, grads, theta, epoch_loss = self.meta_gradient()
        per_activation = torch.zeros(self.cfg.n_activations, dtype=torch.float64)
        for name in PARAM_NAMES:
            g = grads[name].detach().double().cpu()
            per_activation += (g * g).reshape(self.cfg.n_activations, -1).sum(1)
        norms = per_activation.sqrt()
        if not math.isfinite(meta_loss) or not torch.isfinite(norms).all():
            raise MetaLearningDiverged(
                f"meta-learning diverged at step {self.step_index + 1}: meta-loss {meta_loss}, "
                f"gradient norms {norms.tolist()}")
        with torch.no_grad():
            for name, p in self.phi.items():
                self.momentum[name].mul_(self.cfg.outer_mu).add_(grads[name].clamp(-GRAD_CLIP, GRAD_CLIP))
                p.sub_(self.cfg.outer_lr * self.momentum[name])
        accuracy, val_loss = evaluate_classifier(theta, self.phi, self.blocks, self.cfg.activation,
                                                 self.x_val, self.y_val, fused=self.cfg.impl == "fast")
        self.step_index += 1
        return StepMetrics(step=self.step_index, meta_loss=meta_loss, final_train_loss=epoch_loss,
                           heldout_accuracy=accuracy, heldout_loss=val_loss,
                           grad_norms=[float(v) for v in norms],
                           seconds=time.perf_counter() - started)

    def activations(self) -> ActivationSet:
        return ActivationSet.from_tensors(self.cfg.activation, self.phi)

    def state_dict(self) -> dict:
        """Everything needed to continue bit-identically: tensors only (loadable with weights_only)."""
        state = {f"phi.{k}": v.detach().cpu().clone() for k, v in self.phi.items()}
        state.update({f"momentum.{k}": v.detach().cpu().clone() for k, v in self.momentum.items()})
        state["generator"] = self.generator.get_state()
        state["step"] = torch.tensor(self.step_index)
        return state

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            for k in self.phi:
                self.phi[k].copy_(state[f"phi.{k}"])
                self.momentum[k].copy_(state[f"momentum.{k}"])
        self.generator.set_state(state["generator"])
        self.step_index = int(state["step"])
