"""The space's `scheduler` section (`SchedulerSpec`) and its rungs: the outer steps at which Ray's
trial scheduler compares a trial with the others and may stop (ASHA) or pause (HyperBand) it.

Two consumers need the rungs and they sit in different layers: the search checkpoints every trial at
its rungs (so a stopped or paused trial's state at that step is saved), and the summary's steps
ablation reads the search metric there, from the space recorded in search.json, without Ray. So the
formulas live here, below both, and each is the arithmetic of the Ray 2.60 scheduler it stands for,
step for step (tests/test_rungs.py builds the real Ray objects and drives them to compare):

- ASHA (`AsyncHyperBandScheduler`, one bracket): milestones `grace * rf**k` for
  `k < int(log(max_t / grace) / log(rf) + 1)`. A trial reports whole steps 1, 2, ...; at each, Ray
  consults the highest milestone at or below it that this trial has not passed yet, at most one per
  step; a step at or beyond max_t stops every trial without a comparison. With a non-integer factor
  (1.5) a milestone falls between steps, and two may fall before the same step: the second is then
  taken at the next step.
- HyperBand (`HyperBandScheduler`): brackets `s < round(log(max_t) / log(rf)) + 1`, each starting at
  `int(max_t * rf**-s)` steps (skipped when 0) and multiplying by rf (capped at max_t) s times; a
  trial pauses at each of its bracket's milestones. Ray's HyperBand has no grace period: a space that
  gives one for it is refused, rather than silently ignored.

A scheduler type is added in two places that a test keeps in step: its rule in `RUNG_RULES` here and
its Ray factory in `search/schedulers.py`. No rule loops over steps: each is bounded by the number of
milestones, which a space may not push above `MAX_RUNGS`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, NamedTuple

import numpy as np

# More milestones than this means a reduction factor so close to 1 that the scheduler keeps nearly
# every trial at every rung, while Ray walks all of them on each reported step (ASHA) or keeps a
# bracket for each (HyperBand): refused when the space is read (`check_rung_count`).
MAX_RUNGS = 64


@dataclass(frozen=True)
class SchedulerSpec:
    """The space's `scheduler` section. Steps are outer meta-learning steps; `max_steps` (default: the
    trials' step count) is the scheduler's horizon (Ray's max_t). A key the type does not use is None
    (HyperBand: no grace period; none: neither grace period nor factor)."""

    type: str = "asha"
    grace_period: int | None = 5
    reduction_factor: float | None = 2
    max_steps: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_recorded(cls, section: dict | None) -> "SchedulerSpec":
        """The spec a recorded space's `scheduler` dict (`to_dict`) describes; missing keys take the
        defaults, as when the space file left them out. Not a check: the space was checked when read."""
        names = ("type", "grace_period", "reduction_factor", "max_steps")
        return cls(**{k: v for k, v in (section or {}).items() if k in names})

    def rule(self) -> "RungRule":
        if self.type not in RUNG_RULES:
            raise ValueError(f"unknown scheduler type {self.type!r}; known: {', '.join(RUNG_RULES)}")
        return RUNG_RULES[self.type]

    def milestone_count(self, max_steps: int) -> int:
        """How many milestones Ray's scheduler keeps for a horizon of MAX_STEPS."""
        return self.rule().milestones(self, int(max_steps))

    def rungs(self, max_steps: int) -> list[int]:
        """The whole steps below MAX_STEPS at which the scheduler compares a trial that reports every
        step (sorted, distinct). Raises ValueError past `MAX_RUNGS` milestones instead of looping."""
        max_steps = int(max_steps)
        count = self.milestone_count(max_steps)
        if count > MAX_RUNGS:
            raise ValueError(f"scheduler {self.type} with reduction factor {self.reduction_factor} over "
                             f"{max_steps} steps has {count} rungs (at most {MAX_RUNGS})")
        return self.rule().steps(self, max_steps)


class RungRule(NamedTuple):
    """One scheduler type's arithmetic: its milestone count, its rung steps, and the keys it uses."""

    milestones: Callable[[SchedulerSpec, int], int]
    steps: Callable[[SchedulerSpec, int], list[int]]
    keys: tuple[str, ...]


def _grace(spec: SchedulerSpec) -> int:
    if spec.grace_period is None:
        raise ValueError(f"scheduler {spec.type} needs a grace_period")
    return spec.grace_period


def _factor(spec: SchedulerSpec) -> float:
    if spec.reduction_factor is None:
        raise ValueError(f"scheduler {spec.type} needs a reduction_factor")
    return spec.reduction_factor


def _asha_count(spec: SchedulerSpec, max_t: int) -> int:
    # Ray: MAX_RUNGS = int(np.log(max_t / min_t) / np.log(self.rf) - s + 1), with s = 0 (one bracket)
    return max(0, int(np.log(max_t / _grace(spec)) / np.log(_factor(spec)) + 1))


def _asha_steps(spec: SchedulerSpec, max_t: int) -> list[int]:
    # Ray: milestones min_t * rf ** k; each reported step takes at most one milestone it has reached.
    # Which milestone a step takes does not change which steps take one: the steps are the earliest
    # free whole steps at or after each milestone, in order.
    steps: list[int] = []
    for k in range(_asha_count(spec, max_t)):
        step = max(math.ceil(_grace(spec) * _factor(spec) ** k), steps[-1] + 1 if steps else 1)
        if step >= max_t:  # Ray stops a trial at max_t before consulting its rungs
            break
        steps.append(step)
    return steps


def _hyperband_count(spec: SchedulerSpec, max_t: int) -> int:
    # Ray: self._s_max_1 = int(np.round(np.log(max_t) / np.log(reduction_factor))) + 1 (brackets)
    return int(np.round(np.log(max_t) / np.log(_factor(spec)))) + 1


def _hyperband_steps(spec: SchedulerSpec, max_t: int) -> list[int]:
    eta, found = _factor(spec), set()
    for s in range(_hyperband_count(spec, max_t)):
        r = int(max_t * eta ** (-s))  # Ray: _get_r0(s); a bracket with r0 == 0 is skipped
        if r == 0:
            continue
        found.add(r)
        for _ in range(s):  # Ray: successive_halving, s times: r = int(min(r * eta, max_t))
            r = int(min(r * eta, max_t))
            found.add(r)
    return sorted(step for step in found if step < max_t)


RUNG_RULES: dict[str, RungRule] = {
    "asha": RungRule(_asha_count, _asha_steps, ("grace_period", "reduction_factor", "max_steps")),
    "hyperband": RungRule(_hyperband_count, _hyperband_steps, ("reduction_factor", "max_steps")),
    "none": RungRule(lambda spec, max_t: 0, lambda spec, max_t: [], ("max_steps",)),
}


def horizon(space: dict) -> int | None:
    """The most outer steps a trial of a space (`SearchSpace.to_dict()`) can run: the scheduler's
    max_steps, else the highest sampled `steps`, else `fixed.steps`; None when the space leaves it to
    the meta-learning default."""
    top = (space.get("scheduler") or {}).get("max_steps")
    if top:
        return int(top)
    sampled = (space.get("params") or {}).get("steps")
    if sampled:
        return int(max(sampled["choices"]) if "choices" in sampled else sampled["high"])
    fixed = (space.get("fixed") or {}).get("steps")
    return int(fixed) if fixed else None
