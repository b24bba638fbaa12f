"""Ray Tune trial schedulers a search space can name (`scheduler: {type: asha, grace_period: 4, ...}`).

One table, name -> the Ray factory. A scheduler type is added here (its factory) and in
`results/rungs.py` (its rung rule: the steps where it compares trials, which the trials checkpoint at
and the summary's steps ablation reads, without Ray); tests/test_rungs.py checks that both tables
name the same types and that each rule matches the Ray object the factory builds. Factories import
Ray when called.

HyperBand takes no grace period: Ray's `HyperBandScheduler` has none (its first rung is
`max_steps / rf**s` for each bracket s), so a space that gives one for it is refused, with one line,
rather than silently ignored; the same for the keys `none` does not use.
"""
from __future__ import annotations

from typing import Callable

from dnn_search.results.rungs import MAX_RUNGS, RUNG_RULES, SchedulerSpec
from dnn_search.search.checker import Checker

KEYS = ("type", "grace_period", "reduction_factor", "max_steps")
__all__ = ["KEYS", "SCHEDULERS", "SchedulerSpec", "check_scheduler", "make_scheduler", "parse_scheduler"]


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


SCHEDULERS: dict[str, Callable[[SchedulerSpec, str, str, int], object]] = {
    "asha": _asha,
    "hyperband": _hyperband,
    "none": _none,
}

_WHY_NOT = {("hyperband", "grace_period"): "Ray's HyperBand has no grace period (its rungs follow from "
                                           "max_steps and reduction_factor)",
            ("none", "grace_period"): "it stops no trial early",
            ("none", "reduction_factor"): "it stops no trial early"}


def parse_scheduler(c: Checker, data) -> SchedulerSpec:
    """The `scheduler` section of a space file, checked (unknown keys, keys the type does not use,
    types, ranges). The checks that need the trials' step count are `check_scheduler`'s."""
    section = c.mapping("scheduler", data, KEYS)
    values = SchedulerSpec().to_dict()
    if "type" in section:
        values["type"] = c.choice("scheduler.type", section["type"], tuple(SCHEDULERS))
    used = RUNG_RULES[values["type"]].keys
    for key in KEYS[1:]:
        if key not in used:
            if section.get(key) is not None:
                c.fail(f"scheduler.{key}", f"not used by scheduler {values['type']}: "
                                           f"{_WHY_NOT.get((values['type'], key), 'it has no such setting')}; remove the key")
            values[key] = None
    if section.get("grace_period") is not None:
        values["grace_period"] = c.integer("scheduler.grace_period", section["grace_period"], 1)
    if section.get("reduction_factor") is not None:
        rf = c.number("scheduler.reduction_factor", section["reduction_factor"], 1, strictly=True)
        # a whole factor goes to Ray as an int (whole-step rungs); one beyond 2**53 stays a float, which
        # numpy's log takes (it refuses Python ints past int64)
        values["reduction_factor"] = int(rf) if rf.is_integer() and rf < 2**53 else rf
    if section.get("max_steps") is not None:
        values["max_steps"] = c.integer("scheduler.max_steps", section["max_steps"], 1)
    return SchedulerSpec(**values)


def check_scheduler(c: Checker, spec: SchedulerSpec, max_steps: int) -> None:
    """The checks against the trials' horizon MAX_STEPS: the grace period fits in it (Ray's ASHA
    asserts it) and the scheduler keeps at most `MAX_RUNGS` rungs (a factor too close to 1)."""
    if spec.grace_period is not None and spec.grace_period > max_steps:
        c.fail("scheduler.grace_period", f"{spec.grace_period} is beyond the {max_steps} steps a trial runs")
    count = spec.milestone_count(max_steps)
    if count > MAX_RUNGS:
        c.fail("scheduler.reduction_factor", f"{spec.reduction_factor} makes {count} rungs over {max_steps} steps "
                                             f"(at most {MAX_RUNGS}): use a larger factor")


def make_scheduler(spec: SchedulerSpec, metric: str, mode: str, max_steps: int):
    """The Ray Tune scheduler the spec names, deciding on METRIC (MODE) over outer steps."""
    return SCHEDULERS[spec.type](spec, metric, mode, max_steps)
