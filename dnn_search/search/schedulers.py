"""Ray Tune trial schedulers a search space can name (`scheduler: {type: asha, grace_period: 4, ...}`).

One table, name -> (factory, whether it stops trials at rungs). Adding a scheduler is one function
and one line in `SCHEDULERS`. The rungs (`SchedulerSpec.milestones`) are where a scheduler may stop
a trial: trials checkpoint there, so a stopped trial's last state is saved. Factories import Ray
when called.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, NamedTuple

from dnn_search.search.checker import Checker

KEYS = ("type", "grace_period", "reduction_factor", "max_steps")


@dataclass(frozen=True)
class SchedulerSpec:
    """The space's `scheduler` section. Steps are outer meta-learning steps; `max_steps` (default: the
    trials' step count) is the scheduler's horizon."""

    type: str = "asha"
    grace_period: int = 5
    reduction_factor: float = 2
    max_steps: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def milestones(self, max_steps: int) -> list[int]:
        """Steps at which the scheduler may stop a trial."""
        if not SCHEDULERS[self.type].uses_rungs:
            return []
        out, k = [], 0
        while self.grace_period * self.reduction_factor ** k <= max_steps and k < 64:
            out.append(int(math.ceil(self.grace_period * self.reduction_factor ** k)))
            k += 1
        return sorted(set(out))


def _asha(spec: SchedulerSpec, metric: str, mode: str, max_steps: int):
    from ray.tune.schedulers import ASHAScheduler
    return ASHAScheduler(time_attr="step", metric=metric, mode=mode, max_t=max_steps,
                         grace_period=spec.grace_period, reduction_factor=spec.reduction_factor)


def _hyperband(spec: SchedulerSpec, metric: str, mode: str, max_steps: int):
    from ray.tune.schedulers import HyperBandScheduler
    return HyperBandScheduler(time_attr="step", metric=metric, mode=mode, max_t=max_steps,
                              reduction_factor=spec.reduction_factor)


def _none(spec: SchedulerSpec, metric: str, mode: str, max_steps: int):
    from ray.tune.schedulers import FIFOScheduler
    return FIFOScheduler()


class Scheduler(NamedTuple):
    factory: Callable[[SchedulerSpec, str, str, int], object]
    uses_rungs: bool


SCHEDULERS: dict[str, Scheduler] = {
    "asha": Scheduler(_asha, True),
    "hyperband": Scheduler(_hyperband, True),
    "none": Scheduler(_none, False),
}


def parse_scheduler(c: Checker, data, default: SchedulerSpec | None = None) -> SchedulerSpec:
    """The `scheduler` section of a space file, checked (unknown keys, types, ranges)."""
    section = c.mapping("scheduler", data, KEYS)
    values = (default or SchedulerSpec()).to_dict()
    if "type" in section:
        values["type"] = c.choice("scheduler.type", section["type"], tuple(SCHEDULERS))
    if section.get("grace_period") is not None:
        values["grace_period"] = c.integer("scheduler.grace_period", section["grace_period"], 1)
    if section.get("reduction_factor") is not None:
        rf = c.number("scheduler.reduction_factor", section["reduction_factor"], 1, strictly=True)
        values["reduction_factor"] = int(rf) if float(rf).is_integer() else rf
    if section.get("max_steps") is not None:
        values["max_steps"] = c.integer("scheduler.max_steps", section["max_steps"], 1)
    return SchedulerSpec(**values)


def make_scheduler(spec: SchedulerSpec, metric: str, mode: str, max_steps: int):
    """The Ray Tune scheduler the spec names, deciding on METRIC (MODE) over outer steps."""
    return SCHEDULERS[spec.type].factory(spec, metric, mode, max_steps)
