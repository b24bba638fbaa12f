"""The space's `pipeline` section: what `dnn-search pipeline` does after the search.

    runs             validation seeds per (trial, mode, dataset)
    datasets         where the exported activations are retrained (MNIST1D, MNIST, CIFAR)
    epochs, lr, momentum, hidden_size   the validation training (None: the activation file's)
    hessian          whether Hessian trials follow; hessian_samples/_iters/_top_k their sizes
    seed             the first validation seed
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from dnn_search.errors import UserError
from dnn_search.search.checker import Checker

KEYS = ("runs", "datasets", "epochs", "lr", "momentum", "hidden_size", "hessian", "hessian_samples",
        "hessian_iters", "hessian_top_k", "seed")


@dataclass(frozen=True)
class PipelineSpec:
    runs: int = 3
    datasets: list = field(default_factory=lambda: ["MNIST1D"])
    epochs: int | None = None
    lr: float | None = None
    momentum: float | None = None
    hidden_size: int | None = None
    hessian: bool = True
    hessian_samples: int = 1000
    hessian_iters: int = 50
    hessian_top_k: int = 3
    seed: int = 0

    def to_dict(self) -> dict:
        out = asdict(self)
        out["datasets"] = list(self.datasets)
        return out


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
    if section.get("hessian") is not None:
        p["hessian"] = c.boolean("pipeline.hessian", section["hessian"])
    for key in ("hessian_samples", "hessian_iters", "hessian_top_k"):
        if section.get(key) is not None:
            p[key] = c.integer(f"pipeline.{key}", section[key], 1)
    if section.get("seed") is not None:
        p["seed"] = c.integer("pipeline.seed", section["seed"], 0)
    return PipelineSpec(**p)


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
