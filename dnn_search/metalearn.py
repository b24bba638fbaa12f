"""Meta-learning of diverse activations (docs/design.md, "Meta-learning"), in two implementations.

One outer step: draw a fresh random network D -> H -> out, train it for `epochs` epochs with a
differentiable RMSprop whose steps depend on the activation weights phi, take the meta-loss J as
the mean of all inner training losses, and follow the exact meta-gradient dJ/dphi through the
whole unrolled inner run (clipped to +-0.1, then heavy-ball SGD on phi). What is predicted, the
loss and the held-out metrics come from the task (`dnn_search.tasks`); the loop is shared.

- `reference`: the textbook form. Inner gradients by autograd with create_graph=True, the
  activation written as plain tensor expressions (vectorised over activations, no Python loop).
- `fast`: the inner gradient is the task's hand-written one, so the meta-gradient needs only
  first-order autograd through the unrolled run, and the activation is the fused,
  recompute-in-backward kernel of `dnn_search.fused` that returns the derivatives the task's gradient
  takes (f and f'; f' and f'' for a Hamiltonian network), native C++ where it builds. A task may also
  give its whole inner step as one autograd node with a hand-derived backward
  (`Task.fused_inner_step`; classification: `dnn_search.inner_step`), which cuts the autograd
  bookkeeping of ~70 small ops per unrolled step.
Both draw every random number (classifier init, batch order, noise) from the same seeded
generator in the same order, so they compute the same function.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields

import torch

from dnn_search import checks
from dnn_search.activations import (BASES, ActivationSet, block_sizes, default_init,
                                    learned_activation, neuron_blocks)
from dnn_search.errors import UserError
from dnn_search.fused import DERIVATIVE_KERNELS, hidden_activation
from dnn_search.tasks.registry import DATASETS, task_for_dataset

IMPLEMENTATIONS = ("fast", "reference")
# `auto` (the default) resolves per task to the fastest exact implementation: fast where the task has a
# hand-written inner gradient a kernel can serve, reference otherwise.
IMPL_CHOICES = (*IMPLEMENTATIONS, "auto")
RMSPROP_EPS = 1e-8
GRAD_CLIP = 0.1
PARAM_NAMES = ("w1", "b1", "w2", "b2")


class MetaLearningDiverged(RuntimeError):
    """The meta-loss or the meta-gradient became NaN or infinite."""


def _known_dataset(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"must be one of {', '.join(DATASETS.names())}")


def _known_base(name: str) -> None:
    if name not in BASES:
        raise ValueError(f"must be one of {', '.join(BASES.names())}")


def _option(default, help: str, check=None, choices=None):
    """A MetaConfig field: its default, help text, check and choices (a callable listing them, as
    registries grow) are the CLI flag's too."""
    return field(default=default, metadata={"help": help, "check": check, "choices": choices})


@dataclass
class MetaConfig:
    """Hyperparameters of one meta-learning run; names and defaults are the original flags'.

    Each field's metadata holds its help text and its check: `MetaConfig.validate` and the
    `dnn-search metalearn` flags are both generated from them.
    """

    dataset: str = _option("MNIST1D", "dataset; it fixes the task", _known_dataset, DATASETS.names)
    activation: str = _option("sin", "base function of the learned activations", _known_base, BASES.names)
    n_activations: int = _option(1, "number of learned activations n", checks.positive_int)
    inner_hidden_size: int = _option(200, "hidden neurons H of the inner network", checks.positive_int)
    outer_hidden_size: int = _option(50, "hidden units Ho of each activation's sub-network g_i",
                                     checks.positive_int)
    inner_batch_size: int = _option(200, "inner training batch size", checks.positive_int)
    outer_batch_size: int = _option(1, "inner networks per outer step; the meta-loss is their mean",
                                    checks.positive_int)
    epochs: int = _option(5, "inner epochs per outer step", checks.positive_int)
    steps: int = _option(300, "outer (meta) steps", checks.positive_int)
    inner_lr: float = _option(0.01, "inner RMSprop learning rate", checks.positive_number)
    outer_lr: float = _option(0.4, "outer SGD learning rate", checks.positive_number)
    inner_mu: float = _option(0.8, "inner RMSprop decay", checks.unit_interval)
    outer_mu: float = _option(0.8, "outer heavy-ball momentum", checks.unit_interval)
    noise: float = _option(0.1, "uniform noise amplitude during meta-training (0: off)", checks.unit_interval)
    seed: int = _option(0, "seed of the run (initial activations, inner networks, batches, noise)")
    val_fraction: float = _option(0.1, "share of the training data held out for the search metric",
                                  checks.unit_interval)
    impl: str = _option("auto", "fast: fused kernel and the task's hand-derived inner gradient; "
                        "reference: textbook autograd; auto: the fastest exact one for the dataset's task "
                        "(fast where the task has one)", checks.one_of(IMPL_CHOICES), lambda: IMPL_CHOICES)

    def validate(self, task=None) -> "MetaConfig":
        """Check every field, that the base suits the task (`task`, default the dataset's) and that the
        implementation exists for it; resolves impl `auto` in place, so what is recorded is what ran."""
        for f in fields(self):
            check = f.metadata.get("check")
            value = getattr(self, f.name)
            if check is not None:
                try:
                    check(value)
                except (ValueError, TypeError) as exc:
                    raise UserError(f"--{f.name} {exc}, got {value!r}") from None
        block_sizes(self.inner_hidden_size, self.n_activations)  # raises on a bad n
        task = task if task is not None else task_for_dataset(self.dataset)
        task.check_base(self.activation)
        self.impl = resolve_impl(self.impl, task)
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "MetaConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def has_fast_path(task) -> bool:
    """Whether the fast path can run TASK exactly: a fused kernel must serve the derivatives of the
    activation that its hand-written inner gradient takes (`Task.inner_derivatives`), and they must
    reach the order the task says its gradient needs (a task that only raised inner_gradient_order
    has no hand-written gradient of that order)."""
    orders = tuple(task.inner_derivatives)
    return orders in DERIVATIVE_KERNELS and max(orders) >= task.inner_gradient_order


def resolve_impl(impl: str, task) -> str:
    """`auto` -> the fastest exact implementation for TASK; `fast` on a task without a fast path is a
    UserError (never quietly the reference)."""
    if impl == "auto":
        return "fast" if has_fast_path(task) else "reference"
    if impl == "fast" and not has_fast_path(task):
        raise UserError(f"--impl fast: no fast path exists for task {task.name} (its inner gradient needs "
                        f"derivative order {task.inner_gradient_order} of the activation and no fused kernel "
                        f"serves the derivatives {tuple(task.inner_derivatives)} it takes): use --impl "
                        "reference or auto")
    return impl


@dataclass
class StepMetrics:
    """One outer step. `heldout` holds the task's metrics on the held-out split, keyed
    `heldout_<metric>` (classification: heldout_accuracy, heldout_loss)."""

    step: int
    meta_loss: float
    final_train_loss: float
    heldout: dict[str, float] = field(default_factory=dict)
    grad_norms: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def heldout_accuracy(self) -> float:
        return self.heldout.get("heldout_accuracy", math.nan)

    @property
    def heldout_loss(self) -> float:
        return self.heldout.get("heldout_loss", math.nan)


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


def network(theta, neuron_phi, base, act_noise=None, hidden_noise=None):
    """The inner network x -> W2 f(W1 x + b1) + b2 as a function, noise included when given."""
    w1, b1, w2, b2 = theta

    def forward(x):
        a = learned_activation(base, x @ w1.T + b1, *neuron_phi, act_noise)
        if hidden_noise is not None:
            a = a + hidden_noise
        return a @ w2.T + b2
    return forward


def _reference_batch(theta, neuron_phi, base, x, y, act_noise, hidden_noise, task):
    """Loss and inner gradients by autograd with create_graph=True (the textbook form)."""
    net = network(theta, neuron_phi, base, act_noise, hidden_noise)
    loss = task.loss(task.predict(net, x), y)
    # materialize_grads: a weight the loss does not depend on gets a zero gradient (an HNN's output
    # bias: the prediction is an input gradient of the network, where a constant vanishes)
    grads = torch.autograd.grad(loss, theta, create_graph=True, allow_unused=True, materialize_grads=True)
    return loss, grads


def _fast_batch(theta, neuron_phi, base, x, y, act_noise, hidden_noise, task):
    """Loss and the task's hand-written inner gradients, with the fused activation kernel that returns
    the derivatives of f the task's gradient takes."""
    activation = hidden_activation(task.inner_derivatives, neuron_phi, base, act_noise, hidden_noise)
    return task.inner_loss_and_grads(theta, activation, x, y)


_BATCH_FUNCTIONS = {"reference": _reference_batch, "fast": _fast_batch}


def inner_run(phi, blocks, cfg: MetaConfig, x, y, output_size, generator, task):
    """Train one fresh network; return (meta-loss J with its graph, final weights, last-epoch loss)."""
    dtype, device = x.dtype, x.device
    n, ho = phi["w1"].shape
    hidden = cfg.inner_hidden_size
    theta = init_classifier(x.shape[1], hidden, output_size, generator, dtype, device)
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
            whole_step = task.fused_inner_step if cfg.impl == "fast" else None
            if whole_step is not None:  # the task's whole inner step, its backward written out
                loss, theta, second_moment = whole_step(theta, second_moment, neuron_phi, act_noise, hidden_noise,
                                                        xb, yb, cfg.activation, mu, lr, RMSPROP_EPS)
            else:
                loss, grads = _BATCH_FUNCTIONS[cfg.impl](theta, neuron_phi, cfg.activation, xb, yb, act_noise,
                                                         hidden_noise, task)
                second_moment = [mu * v + (1 - mu) * g * g for v, g in zip(second_moment, grads)]
                theta = [t - lr * g / (torch.sqrt(v) + RMSPROP_EPS)
                         for t, g, v in zip(theta, grads, second_moment)]
            losses.append(loss)
            epoch_losses.append(loss.detach())
        epoch_loss = float(torch.stack(epoch_losses).mean())
    return torch.stack(losses).mean(), [t.detach() for t in theta], epoch_loss


def evaluate_inner(theta, phi, blocks, base, x, y, task, chunk=1024) -> dict[str, float]:
    """The task's metrics of a trained inner network (no noise) on a whole split."""
    neuron_phi = expand_to_neurons({k: v.detach() for k, v in phi.items()}, blocks)
    return task.evaluate(network(theta, neuron_phi, base), x, y, chunk)


# ---------------------------------------------------------------------------------------------
# The outer loop


def _targets(y, dtype, device):
    """Labels keep their integer type; regression targets take the run's float type."""
    return y.to(device=device, dtype=dtype) if y.is_floating_point() else y.to(device=device)


class MetaLearner:
    """The state of one meta-learning run: activation weights, momentum, RNG, step counter.

    `output_size` is the inner network's output width (classes for classification). `task` defaults
    to the task that `cfg.dataset` is registered with.
    """

    def __init__(self, cfg: MetaConfig, x_train, y_train, x_val, y_val, output_size: int,
                 device="cpu", dtype=torch.float32, task=None):
        self.task = task if task is not None else task_for_dataset(cfg.dataset)
        self.cfg = cfg.validate(self.task)
        self.device = torch.device(device)
        self.dtype = dtype
        self.x_train, self.y_train = x_train.to(dtype=dtype, device=self.device), _targets(y_train, dtype, self.device)
        self.x_val, self.y_val = x_val.to(dtype=dtype, device=self.device), _targets(y_val, dtype, self.device)
        self.output_size = output_size
        self.generator = torch.Generator().manual_seed(cfg.seed)
        init = default_init(cfg.n_activations, cfg.outer_hidden_size, self.generator, dtype)
        self.phi = {k: v.to(self.device).requires_grad_(True) for k, v in init.items()}
        self.momentum = {k: torch.zeros_like(v) for k, v in self.phi.items()}
        self.blocks = neuron_blocks(cfg.inner_hidden_size, cfg.n_activations).to(self.device)
        self.step_index = 0

    @classmethod
    def from_dataset(cls, cfg: MetaConfig, data, device="cpu", dtype=torch.float32) -> "MetaLearner":
        """A learner on a loaded dataset, as `dnn-search metalearn` makes it.

        Args:
            cfg: the run's hyperparameters (checked; `impl="auto"` is resolved for the data's task).
            data: a `Dataset` from `load_dataset`; its held-out split is (cfg.val_fraction, cfg.seed).
            device: where the tensors live ("cpu", "cuda").
            dtype: the floating type of every tensor (float64 for exactness checks).

        Returns:
            A `MetaLearner` at step 0: `.step()` runs one outer step and returns its `StepMetrics`;
            `.activations()` gives the learned `ActivationSet`.
        """
        task = data.task_object()
        return cls(cfg, *data.split(cfg.val_fraction, cfg.seed), task.output_size(data), device=device,
                   dtype=dtype, task=task)

    def meta_gradient(self):
        """(mean meta-loss, dJ/dphi, last classifier, its last-epoch loss) for one outer step."""
        grads = {k: torch.zeros_like(v) for k, v in self.phi.items()}
        total = 0.0
        theta, epoch_loss = None, float("nan")
        for _ in range(self.cfg.outer_batch_size):
            meta_loss, theta, epoch_loss = inner_run(self.phi, self.blocks, self.cfg, self.x_train,
                                                     self.y_train, self.output_size, self.generator, self.task)
            # materialize_grads: an activation weight the loss does not depend on gets a zero gradient
            # (the output bias of g_i, when the task's prediction uses only f')
            part = torch.autograd.grad(meta_loss / self.cfg.outer_batch_size, list(self.phi.values()),
                                       allow_unused=True, materialize_grads=True)
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
        heldout = evaluate_inner(theta, self.phi, self.blocks, self.cfg.activation, self.x_val, self.y_val,
                                 self.task)
        self.step_index += 1
        return StepMetrics(step=self.step_index, meta_loss=meta_loss, final_train_loss=epoch_loss,
                           heldout={f"heldout_{k}": v for k, v in heldout.items()},
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
