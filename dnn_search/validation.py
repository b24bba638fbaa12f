"""Validation trials (DESIGN.md §1.4): retrain ordinary networks with learned activations.

Modes: `pure` (the base function), `single:k` (learned activation k, 1-based, on every neuron)
and `diverse` (all learned activations in contiguous blocks). Each mode is trained with SGD with
momentum and scored on the dataset's test split, repeated over seeds.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from dnn_search.activations import neuron_blocks
from dnn_search.errors import UserError
from dnn_search.models import ValidationNet, build_net


@dataclass
class ValidationConfig:
    epochs: int = 5
    lr: float = 0.01
    momentum: float = 0.8
    batch_size: int = 200
    hidden_size: int = 200

    def validate(self) -> "ValidationConfig":
        if self.epochs < 1 or self.batch_size < 1 or self.hidden_size < 1:
            raise UserError("epochs, batch size and hidden size must be positive integers")
        if not self.lr > 0:
            raise UserError(f"the learning rate must be positive, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise UserError(f"the momentum must be in [0, 1), got {self.momentum}")
        return self


def config_for(metadata: dict | None, *, epochs=None, lr=None, momentum=None, batch_size=None,
               hidden_size=None) -> ValidationConfig:
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
                            hidden_size=int(hidden_size or 200)).validate()


def parse_modes(spec: str, n_activations: int) -> list[str]:
    """The original spellings (`0`/`false` for diverse, 1-based indices) plus `pure` and `all`."""
    text = str(spec).strip().lower()
    if text in ("diverse", "0", "false"):
        return ["diverse"]
    if text == "pure":
        return ["pure"]
    if text == "all":
        return ["pure", *[f"single:{k}" for k in range(1, n_activations + 1)], "diverse"]
    index = text.split(":", 1)[1] if text.startswith("single:") else text
    if index.isdigit():
        k = int(index)
        if not 1 <= k <= n_activations:
            raise UserError(f"validation mode {spec!r}: the file has {n_activations} activation(s); "
                            f"choose an index from 1 to {n_activations}")
        return [f"single:{k}"]
    raise UserError(f"unknown validation mode {spec!r}: use pure, diverse, all or an activation index 1..{n_activations}")


def build_for_mode(mode: str, acts, input_size: int, num_classes: int, hidden: int) -> ValidationNet:
    """The network of one mode, with fresh (global-RNG) classifier weights. `acts`: LoadedActivations."""
    if mode == "pure":
        return build_net(input_size, hidden, num_classes, acts.base)
    if mode == "diverse":
        index = neuron_blocks(hidden, acts.n) if acts.n <= hidden else None
        if index is None:
            raise UserError(f"diverse mode needs at most {hidden} activations, the file has {acts.n}")
        rows = None
    else:
        k = int(mode.split(":")[1]) - 1
        index, rows = torch.zeros(hidden, dtype=torch.long), k
    if acts.exact is not None:
        exact = acts.exact if rows is None else acts.exact.subset(rows)
        return build_net(input_size, hidden, num_classes, acts.base, exact=exact, neuron_index=index)
    grid_y = acts.grid_y if rows is None else acts.grid_y[rows:rows + 1]
    return build_net(input_size, hidden, num_classes, acts.base, grid_x=acts.grid_x, grid_y=grid_y,
                     neuron_index=index)


@torch.no_grad()
def evaluate(net, x, y, chunk=2000) -> tuple[float, float]:
    net.eval()
    correct, total = 0, 0.0
    for start in range(0, x.shape[0], chunk):
        logits = net(x[start:start + chunk])
        total += float(F.cross_entropy(logits, y[start:start + chunk], reduction="sum"))
        correct += int((logits.argmax(1) == y[start:start + chunk]).sum())
    return correct / x.shape[0], total / x.shape[0]


def train(net, x_train, y_train, x_test, y_test, cfg: ValidationConfig, seed: int,
          on_epoch: Callable[[int, float, float], None] | None = None) -> dict:
    """SGD with momentum on cross-entropy; returns final test metrics and per-epoch curves."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    curve = []
    for epoch in range(cfg.epochs):
        net.train()
        order = torch.randperm(x_train.shape[0], generator=generator).to(x_train.device)
        for start in range(0, x_train.shape[0], cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            loss = F.cross_entropy(net(x_train[idx]), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        accuracy, test_loss = evaluate(net, x_test, y_test)
        if not np.isfinite(test_loss):
            break
        curve.append({"epoch": epoch + 1, "test_accuracy": accuracy, "test_loss": test_loss})
        if on_epoch:
            on_epoch(epoch + 1, accuracy, test_loss)
    accuracy, test_loss = evaluate(net, x_test, y_test)
    return {"test_accuracy": accuracy, "test_loss": test_loss, "curve": curve}


def run_mode(acts, dataset, mode: str, seed: int, cfg: ValidationConfig, device="cpu",
             on_epoch=None) -> tuple[dict, ValidationNet]:
    """Train and test one (mode, seed) network. Seeds the classifier init and the batch order."""
    torch.manual_seed(seed)
    net = build_for_mode(mode, acts, dataset.input_size, dataset.num_classes, cfg.hidden_size).to(device)
    started = time.perf_counter()
    result = train(net, dataset.x_train.to(device), dataset.y_train.to(device),
                   dataset.x_test.to(device), dataset.y_test.to(device), cfg, seed, on_epoch)
    result.update(mode=mode, seed=seed, seconds=time.perf_counter() - started)
    return result, net


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and sample std of test accuracy and loss per (dataset, mode), in first-seen order."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row.get("dataset"), row["mode"]), []).append(row)
    out = []
    for (dataset, mode), items in groups.items():
        acc = np.array([r["test_accuracy"] for r in items])
        loss = np.array([r["test_loss"] for r in items])
        out.append({"dataset": dataset, "mode": mode, "runs": len(items),
                    "acc_mean": acc.mean(), "acc_std": acc.std(ddof=1) if len(items) > 1 else 0.0,
                    "loss_mean": loss.mean(), "loss_std": loss.std(ddof=1) if len(items) > 1 else 0.0})
    return out


def format_summary(summary: list[dict]) -> str:
    lines = [f"{'dataset':<8} {'mode':<10} {'runs':>4}  {'test accuracy':>17}  {'test loss':>17}"]
    for s in summary:
        lines.append(f"{str(s['dataset']):<8} {s['mode']:<10} {s['runs']:>4}  "
                     f"{s['acc_mean']*100:7.2f} ± {s['acc_std']*100:5.2f} %  "
                     f"{s['loss_mean']:8.4f} ± {s['loss_std']:6.4f}")
    return "\n".join(lines)
