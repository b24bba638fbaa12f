"""The space's `pipeline` section: what `dnn-search pipeline` does after the search.

    runs             validation seeds per (trial, mode, dataset, optimizer)
    datasets         where the exported activations are retrained (MNIST1D, MNIST, CIFAR, ...)
    epochs, lr, momentum, hidden_size   the validation training (None: the activation file's)
    optimizers       a list: `sgd`, `rmsprop`, or {name: NAME, lr: .., momentum: .., epochs: ..} to give
                     that optimiser its own settings. Unset, sgd falls back to epochs/lr/momentum above;
                     rmsprop to the epochs above and to the trial's own inner_lr/inner_mu (the update the
                     activations were learned under)
    val_fraction     share of the training data held out (never trained on) for the val_* metrics on
                     which every "best" of the summary is picked; must be > 0
    standard         whether the standard activations (std:relu, ...) run as baselines beside pure
    hessian          whether Hessian trials follow; hessian_samples/_iters/_top_k their sizes
    seed             the first validation seed
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from dnn_search.errors import UserError
from dnn_search.search.checker import Checker

KEYS = ("runs", "datasets", "epochs", "lr", "momentum", "hidden_size", "optimizers", "val_fraction", "standard",
        "hessian", "hessian_samples", "hessian_iters", "hessian_top_k", "seed")
OPTIMIZER_KEYS = ("name", "lr", "momentum", "epochs")
OPTIMIZER_NAMES = ("sgd", "rmsprop")  # dnn_search.validation.OPTIMIZERS, without importing torch here


@dataclass(frozen=True)
class OptimizerSetting:
    """One validation optimiser and its settings (None: the pipeline's, then the activation file's)."""

    name: str = "sgd"
    lr: float | None = None
    momentum: float | None = None
    epochs: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PipelineSpec:
    runs: int = 3
    datasets: list = field(default_factory=lambda: ["MNIST1D"])
    epochs: int | None = None
    lr: float | None = None
    momentum: float | None = None
    hidden_size: int | None = None
    optimizers: tuple = (OptimizerSetting(),)
    val_fraction: float = 0.1
    standard: bool = True
    hessian: bool = True
    hessian_samples: int = 1000
    hessian_iters: int = 50
    hessian_top_k: int = 3
    seed: int = 0

    def to_dict(self) -> dict:
        out = asdict(self)
        out["datasets"] = list(self.datasets)
        out["optimizers"] = [o.to_dict() if isinstance(o, OptimizerSetting) else dict(o) for o in self.optimizers]
        return out

    def settings(self, optimizer: OptimizerSetting) -> dict:
        """The validation settings of OPTIMIZER: its own where given, else the pipeline's (sgd) or the
        activation file's (rmsprop: None here, so validation.config_for takes inner_lr and inner_mu)."""
        sgd = optimizer.name == "sgd"
        return {"optimizer": optimizer.name, "val_fraction": self.val_fraction, "hidden_size": self.hidden_size,
                "epochs": optimizer.epochs if optimizer.epochs is not None else self.epochs,
                "lr": optimizer.lr if optimizer.lr is not None else (self.lr if sgd else None),
                "momentum": (optimizer.momentum if optimizer.momentum is not None
                             else (self.momentum if sgd else None))}


def parse_pipeline(c: Checker, data) -> PipelineSpec:
    """The `pipeline` section of a space file, checked (unknown keys, types, ranges)."""
    section = c.mapping("pipeline", data, KEYS)
    p = PipelineSpec().to_dict()
    if section.get("runs") is not None:
        p["runs"] = c.integer("pipeline.runs", section["runs"], 1)
    if section.get("datasets") is not None:
        p["datasets"] = parse_datasets(section["datasets"], c, "pipeline.datasets")
    if section.get("epochs") is not None:
        p["epochs"] = c.integer("pipeline.epochs", section["epochs"], 1)
    if section.get("hidden_size") is not None:
        p["hidden_size"] = c.integer("pipeline.hidden_size", section["hidden_size"], 1)
    for key in ("lr", "momentum"):
        if section.get(key) is not None:
            p[key] = c.number(f"pipeline.{key}", section[key], 0.0, strictly=(key == "lr"))
    if section.get("optimizers") is not None:
        p["optimizers"] = parse_optimizers(c, section["optimizers"])
    else:
        p["optimizers"] = (OptimizerSetting(),)
    if section.get("val_fraction") is not None:
        p["val_fraction"] = c.number("pipeline.val_fraction", section["val_fraction"], 0.0, strictly=True)
        if p["val_fraction"] >= 1:
            c.fail("pipeline.val_fraction", f"must be below 1, got {p['val_fraction']}")
    if section.get("standard") is not None:
        p["standard"] = c.boolean("pipeline.standard", section["standard"])
    if section.get("hessian") is not None:
        p["hessian"] = c.boolean("pipeline.hessian", section["hessian"])
    for key in ("hessian_samples", "hessian_iters", "hessian_top_k"):
        if section.get(key) is not None:
            p[key] = c.integer(f"pipeline.{key}", section[key], 1)
    if section.get("seed") is not None:
        p["seed"] = c.integer("pipeline.seed", section["seed"], 0)
    return PipelineSpec(**p)


def parse_optimizers(c: Checker, value) -> tuple:
    """`[sgd, {name: rmsprop, lr: 0.01}]` -> OptimizerSettings, names unique."""
    items = [value] if isinstance(value, (str, dict)) else value
    if not isinstance(items, list) or not items:
        c.fail("pipeline.optimizers", f"expected a non-empty list such as [sgd, rmsprop], got {value!r}")
    out = []
    for i, item in enumerate(items):
        path = f"pipeline.optimizers[{i}]"
        entry = {"name": item} if isinstance(item, str) else c.mapping(path, item, OPTIMIZER_KEYS)
        name = c.choice(f"{path}.name", entry.get("name"), OPTIMIZER_NAMES)
        setting = {"name": name}
        if entry.get("lr") is not None:
            setting["lr"] = c.number(f"{path}.lr", entry["lr"], 0.0, strictly=True)
        if entry.get("momentum") is not None:
            setting["momentum"] = c.number(f"{path}.momentum", entry["momentum"], 0.0)
            if setting["momentum"] >= 1:
                c.fail(f"{path}.momentum", f"must be below 1, got {setting['momentum']}")
        if entry.get("epochs") is not None:
            setting["epochs"] = c.integer(f"{path}.epochs", entry["epochs"], 1)
        if any(o.name == name for o in out):
            c.fail(path, f"optimizer {name} is listed twice")
        out.append(OptimizerSetting(**setting))
    return tuple(out)


def parse_datasets(value, c: Checker | None = None, path: str = "--datasets") -> list[str]:
    """'MNIST1D,MNIST' or a list -> canonical names (MNIST1D, MNIST, CIFAR)."""
    from dnn_search.data import canonical_name
    c = c or Checker("")
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        c.fail(path, f"expected a non-empty list of datasets, got {value!r}")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, str) or not item.strip():
            c.fail(f"{path}[{i}]", f"expected a dataset name, got {item!r}")
        try:
            name = canonical_name(item.strip())
        except UserError as exc:
            c.fail(f"{path}[{i}]", str(exc))
        if name not in out:
            out.append(name)
    return out
