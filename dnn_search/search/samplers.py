"""Optuna samplers a search space can name (`sampler: {type: tpe, seed: 0, n_startup_trials: 5}`).

One table, name -> factory. Adding a sampler is one function and one line in `SAMPLERS`; the
space file's `sampler.type` accepts exactly the table's names. Factories import Optuna when called,
so reading a space file stays cheap.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

from dnn_search.search.checker import Checker

KEYS = ("type", "seed", "n_startup_trials")


@dataclass(frozen=True)
class SamplerSpec:
    """The space's `sampler` section. `n_startup_trials`: random trials before the model takes over."""

    type: str = "tpe"
    seed: int = 0
    n_startup_trials: int = 5

    def to_dict(self) -> dict:
        return asdict(self)


def _tpe(spec: SamplerSpec):
    import optuna
    return optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=spec.n_startup_trials)


def _random(spec: SamplerSpec):
    import optuna
    return optuna.samplers.RandomSampler(seed=spec.seed)


def _cmaes(spec: SamplerSpec):
    import optuna
    return optuna.samplers.CmaEsSampler(seed=spec.seed, n_startup_trials=spec.n_startup_trials)


SAMPLERS: dict[str, Callable[[SamplerSpec], object]] = {"tpe": _tpe, "random": _random, "cmaes": _cmaes}


def parse_sampler(c: Checker, data, default: SamplerSpec | None = None) -> SamplerSpec:
    """The `sampler` section of a space file, checked (unknown keys, types, ranges)."""
    spec = default or SamplerSpec()
    section = c.mapping("sampler", data, KEYS)
    values = spec.to_dict()
    if "type" in section:
        values["type"] = c.choice("sampler.type", section["type"], tuple(SAMPLERS))
    if section.get("seed") is not None:
        values["seed"] = c.integer("sampler.seed", section["seed"], 0)
    if section.get("n_startup_trials") is not None:
        values["n_startup_trials"] = c.integer("sampler.n_startup_trials", section["n_startup_trials"], 0)
    return SamplerSpec(**values)


def make_sampler(spec: SamplerSpec):
    """The Optuna sampler the spec names (seeded)."""
    return SAMPLERS[spec.type](spec)
