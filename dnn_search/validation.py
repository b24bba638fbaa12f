"""Validation trials (docs/design.md, "Validation"): retrain ordinary networks with learned activations.

Modes: `pure` (the base function), `std:<name>` (a standard activation of the field: relu, gelu,
silu, tanh, elu), `single:k` (learned activation k, 1-based, on every neuron) and `diverse` (all
learned activations in contiguous blocks). Each mode is trained on the task's loss with one of two
optimisers and scored with the task's metrics on the dataset's test split and on a seeded split
carved from the training data (`val_*`, `val_fraction`, which is never trained on): every "best"
of a comparison is picked on that split, so that the test split only measures the picks.

Optimisers (`optimizer`):
- `sgd`: SGD with heavy-ball momentum `momentum`, the original's validation;
- `rmsprop`: exactly the meta-learning inner update (docs/design.md, "Meta-learning"): v <- mu v + (1 - mu) g^2,
  theta <- theta - lr g / (sqrt(v) + 1e-8), v starting at 1, mu = `momentum` (the trial's inner_mu).
  Not torch.optim.RMSprop, whose v starts at 0 (its first steps are ~1/sqrt(1 - mu) times larger)
  and whose eps sits inside the square root: activations learned under one update are validated
  under the same one.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from dnn_search.activations import neuron_blocks
from dnn_search.errors import UserError
from dnn_search.metalearn import RMSPROP_EPS  # the inner update that `rmsprop` reproduces
from dnn_search.modes import Mode, learned_modes
from dnn_search.stats import mean_std
from dnn_search.models import STANDARD_ACTIVATIONS, ValidationNet, build_net

OPTIMIZERS = ("sgd", "rmsprop")
STANDARD_MODES = tuple(f"std:{name}" for name in STANDARD_ACTIVATIONS)
# Twice continuously differentiable: what a task that differentiates through f' (a Hamiltonian
# network, Task.requires_smooth_base) can train with; relu's f'' is 0 and elu's jumps at 0.
SMOOTH_STANDARD_MODES = ("std:gelu", "std:silu", "std:tanh")


def standard_modes(task) -> tuple[str, ...]:
    """The standard activations that TASK can use as baselines."""
    return SMOOTH_STANDARD_MODES if getattr(task, "requires_smooth_base", False) else STANDARD_MODES
DEFAULT_VAL_FRACTION = 0.1


class MetaRMSprop(torch.optim.Optimizer):
    """The meta-learning inner update as a torch optimiser: second moment v starts at 1 and decays with
    `mu`; the step is lr * g / (sqrt(v) + eps), eps outside the root (docs/design.md, "Meta-learning")."""

    def __init__(self, params, lr: float, mu: float, eps: float = RMSPROP_EPS):
        super().__init__(params, {"lr": lr, "mu": mu, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, mu, eps = group["lr"], group["mu"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if "v" not in state:
                    state["v"] = torch.ones_like(p)
                v = state["v"]
                v.mul_(mu).add_((1 - mu) * g * g)
                p.sub_(lr * g / (torch.sqrt(v) + eps))


def make_optimizer(name: str, params, lr: float, momentum: float) -> torch.optim.Optimizer:
    """`sgd` (heavy-ball momentum) or `rmsprop` (the meta-learning inner update, mu = momentum)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum)
    if name == "rmsprop":
        return MetaRMSprop(params, lr=lr, mu=momentum)
    raise UserError(f"unknown validation optimizer {name!r}: choose from {', '.join(OPTIMIZERS)}")


@dataclass
class ValidationConfig:
    epochs: int = 5
    lr: float = 0.01
    momentum: float = 0.8
    batch_size: int = 200
    hidden_size: int = 200
    # Share of the training data held out for `val_*` metrics, never trained on (0: none).
    val_fraction: float = DEFAULT_VAL_FRACTION
    optimizer: str = "sgd"  # sgd | rmsprop; `momentum` is rmsprop's decay mu

    def validate(self) -> "ValidationConfig":
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"unknown validation optimizer {self.optimizer!r}: choose from {', '.join(OPTIMIZERS)}")
        if self.epochs < 1 or self.batch_size < 1 or self.hidden_size < 1:
            raise UserError("epochs, batch size and hidden size must be positive integers")
        if not 0 <= self.val_fraction < 1:
            raise UserError(f"the validation fraction must be in [0, 1), got {self.val_fraction}")
        if not self.lr > 0:
            raise UserError(f"the learning rate must be positive, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise UserError(f"the momentum must be in [0, 1), got {self.momentum}")
        return self


def config_for(metadata: dict | None, *, epochs=None, lr=None, momentum=None, batch_size=None,
               hidden_size=None, val_fraction=None, optimizer=None) -> ValidationConfig:
    """Explicit settings win over the activation file's hyperparameters, which win over the defaults.

    Epochs, learning rate (inner_lr), momentum (inner_mu) and batch size default to the file's, as
    the original validation reused the meta-learning flags; the hidden size is the paper's 200
    unless given, since the network being validated need not be the meta-learning classifier.
    """
    metadata = metadata or {}
    nested = metadata.get("config") if isinstance(metadata.get("config"), dict) else {}

    def pick(value, key, default):
        if value is not None:
            return value
        for source in (metadata, nested):
            if source.get(key) is not None:
                return source[key]
        return default
    return ValidationConfig(epochs=int(pick(epochs, "epochs", 5)), lr=float(pick(lr, "inner_lr", 0.01)),
                            momentum=float(pick(momentum, "inner_mu", 0.8)),
                            batch_size=int(pick(batch_size, "inner_batch_size", 200)),
                            hidden_size=int(hidden_size or 200),
                            val_fraction=float(DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction),
                            optimizer=str(optimizer or "sgd")).validate()


def parse_modes(spec: str, n_activations: int, standard: tuple[str, ...] = STANDARD_MODES) -> list[str]:
    """Modes from a comma-separated SPEC: the original spellings (`0`/`false` for diverse, 1-based
    indices), `pure`, `std:<name>`, `std` (all standard activations) and `all` (pure, the standard
    activations, every single:k, and diverse when there are at least two activations: with one, the
    diverse network is single:1, a homogeneous network, and is never reported as diverse). STANDARD:
    the standard activations the task can use (`standard_modes(task)`)."""
    modes: list[str] = []
    for part in str(spec).split(","):
        for mode in _parse_mode(part.strip().lower(), n_activations, spec, standard):
            if mode not in modes:
                modes.append(mode)
    return modes


def _parse_mode(text: str, n_activations: int, spec, standard: tuple[str, ...]) -> list[str]:
    if text in ("0", "false"):  # the original's spellings of diverse
        text = "diverse"
    if text in ("std", "standard"):
        return list(standard)
    if text == "all":
        return ["pure", *standard, *(str(m) for m in learned_modes(n_activations))]
    if text.isdigit():  # the original's 1-based activation index
        text = f"single:{text}"
    head, _, index = text.partition(":")
    if head == "single" and index.isdigit() and not 1 <= int(index) <= n_activations:
        raise UserError(f"validation mode {spec!r}: the file has {n_activations} activation(s); "
                        f"choose an index from 1 to {n_activations}")
    try:
        mode = Mode.parse(text)
    except ValueError:
        raise UserError(f"unknown validation mode {spec!r}: use pure, std:<{'|'.join(STANDARD_ACTIVATIONS)}>, std, "
                        f"diverse, all or an activation index 1..{n_activations} (comma-separated for several)") from None
    if mode.kind == "std":
        if str(mode) not in STANDARD_MODES:
            raise UserError(f"validation mode {text!r}: standard activations are {', '.join(STANDARD_MODES)}")
        if str(mode) not in standard:
            raise UserError(f"validation mode {text!r}: this task differentiates through the activation's "
                            f"derivative and needs a smooth one: {', '.join(standard)}")
    return [str(mode)]


def build_for_mode(mode: str | Mode, acts, input_size: int, num_classes: int, hidden: int) -> ValidationNet:
    """The network of one mode, with fresh (global-RNG) classifier weights. `acts`: LoadedActivations."""
    mode = Mode.parse(mode)
    if mode.kind == "pure":
        return build_net(input_size, hidden, num_classes, acts.base)
    if mode.kind == "std":
        return build_net(input_size, hidden, num_classes, acts.base, standard=mode.name)
    if mode.kind == "diverse":
        index = neuron_blocks(hidden, acts.n) if acts.n <= hidden else None
        if index is None:
            raise UserError(f"diverse mode needs at most {hidden} activations, the file has {acts.n}")
        rows = None
    elif mode.kind == "single" and mode.index is not None:
        index, rows = torch.zeros(hidden, dtype=torch.long), mode.index - 1
    else:
        raise UserError(f"validation mode {mode} builds no network here")
    if acts.exact is not None:
        exact = acts.exact if rows is None else acts.exact.subset(rows)
        return build_net(input_size, hidden, num_classes, acts.base, exact=exact, neuron_index=index)
    grid_y = acts.grid_y if rows is None else acts.grid_y[rows:rows + 1]
    return build_net(input_size, hidden, num_classes, acts.base, grid_x=acts.grid_x, grid_y=grid_y,
                     neuron_index=index)


def evaluate(net, task, x, y, chunk=2000) -> dict[str, float]:
    """The task's metrics of `net` on a whole split (eval mode, no autograd unless the task needs it)."""
    net.eval()
    return task.evaluate(net, x, y, chunk)


def _finite(metrics: dict[str, float]) -> bool:
    return all(np.isfinite(v) for v in metrics.values())


def train(net, task, x_train, y_train, x_test, y_test, cfg: ValidationConfig, seed: int,
          on_epoch: Callable[[int, dict], None] | None = None) -> dict:
    """`cfg.optimizer` on the task's loss; returns `test_<metric>` values and per-epoch curves."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = make_optimizer(cfg.optimizer, net.parameters(), cfg.lr, cfg.momentum)
    curve = []
    for epoch in range(cfg.epochs):
        net.train()
        order = torch.randperm(x_train.shape[0], generator=generator).to(x_train.device)
        for start in range(0, x_train.shape[0], cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            loss = task.loss(task.predict(net, x_train[idx]), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        metrics = evaluate(net, task, x_test, y_test)
        if not _finite(metrics):
            break
        curve.append({"epoch": epoch + 1, **{f"test_{k}": v for k, v in metrics.items()}})
        if on_epoch:
            on_epoch(epoch + 1, metrics)
    return {**{f"test_{k}": v for k, v in evaluate(net, task, x_test, y_test).items()}, "curve": curve}


def run_mode(acts, dataset, mode: str, seed: int, cfg: ValidationConfig, device="cpu",
             on_epoch=None, split_seed: int | None = None) -> tuple[dict, ValidationNet]:
    """Train and test one (mode, seed) network. Seeds the network init, the batch order and the
    held-out split, so every mode of one seed sees the same data in the same order. SPLIT_SEED, when
    given, draws the held-out split instead (a study's selection split: one for every network)."""
    task = dataset.task_object()
    torch.manual_seed(seed)
    net = build_for_mode(mode, acts, dataset.input_size, task.output_size(dataset), cfg.hidden_size).to(device)
    if cfg.val_fraction > 0:
        x_train, y_train, x_val, y_val = dataset.split(cfg.val_fraction, seed if split_seed is None else split_seed)
    else:
        x_train, y_train, x_val, y_val = dataset.x_train, dataset.y_train, None, None
    started = time.perf_counter()
    result = train(net, task, x_train.to(device), y_train.to(device), dataset.x_test.to(device),
                   dataset.y_test.to(device), cfg, seed, on_epoch)
    if x_val is not None:
        result.update({f"val_{k}": v for k, v in evaluate(net, task, x_val.to(device), y_val.to(device)).items()})
    result.update(task.validation_metrics(net, dataset, device))
    result.update(mode=mode, seed=seed, optimizer=cfg.optimizer, seconds=time.perf_counter() - started)
    return result, net


def metric_columns(row: dict, task) -> list[str]:
    """The metric columns of a result row that TASK declares (Task.validation_columns), in row order.
    A metric the task does not declare is not a column, whatever its name."""
    declared = set(task.validation_columns())
    return [k for k in row if k in declared and isinstance(row[k], (int, float))]


def summarise(rows: list[dict], task) -> list[dict]:
    """Mean and sample std of every metric column of TASK per (dataset, mode), in first-seen order."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row.get("dataset"), row.get("optimizer", "sgd"), row["mode"]), []).append(row)
    out = []
    for (dataset, optimizer, mode), items in groups.items():
        summary = {"dataset": dataset, "optimizer": optimizer, "mode": mode, "runs": len(items)}
        for column in metric_columns(items[0], task):
            summary[f"{column}_mean"], summary[f"{column}_std"], _ = mean_std([r[column] for r in items])
        out.append(summary)
    return out


def format_summary(summary: list[dict]) -> str:
    columns = [k[:-5] for k in summary[0] if k.endswith("_mean")] if summary else []
    lines = [f"{'dataset':<8} {'optimizer':<9} {'mode':<10} {'runs':>4}" + "".join(f"  {c:>19}" for c in columns)]
    for s in summary:
        cells = "".join(f"  {s[c + '_mean']:9.4g} ± {s[c + '_std']:7.3g}" for c in columns)
        lines.append(f"{str(s['dataset']):<8} {s['optimizer']:<9} {s['mode']:<10} {s['runs']:>4}{cells}")
    return "\n".join(lines)
