"""The rung formulas (`results/rungs.py`) against the real Ray 2.60 schedulers that the search builds
(`search/schedulers.py`): each scheduler is constructed by the search's own factory and driven with
one trial reporting every outer step; the steps at which it compares that trial are the rungs. Then
a space with a non-integer reduction factor through parse, rungs and the summary's ablation."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import markdown_table_rows

from dnn_search.errors import UserError
from dnn_search.results.ablation import ablation_markdown, rungs_of
from dnn_search.results.rungs import MAX_RUNGS, RUNG_RULES, SchedulerSpec
from dnn_search.search.schedulers import SCHEDULERS, make_scheduler
from dnn_search.search.space import from_dict


class _Trial:
    """What the schedulers read of a trial: its id (and that it can be a dict key)."""

    def __init__(self, trial_id: str):
        self.trial_id = trial_id


def ray_asha_rungs(spec: SchedulerSpec, max_t: int) -> list[int]:
    """The steps below max_t at which Ray's ASHA consults a rung for one trial reporting every step."""
    sched = make_scheduler(spec, "m", "max", max_t)
    trial = _Trial("t")
    sched.on_trial_add(None, trial)
    (bracket,) = sched._brackets
    out, seen = [], 0
    for step in range(1, max_t):
        sched.on_trial_result(None, trial, {"step": step, "m": 0.0})
        recorded = sum(len(r) for _, r in bracket._rungs)
        if recorded > seen:
            out.append(step)
        seen = recorded
    return out


def ray_hyperband_rungs(spec: SchedulerSpec, max_t: int) -> list[int]:
    """The steps below max_t at which one trial of any of Ray's HyperBand brackets is paused or stopped."""
    sched = make_scheduler(spec, "m", "max", max_t)
    out = set()
    for s in range(sched._s_max_1):
        if sched._get_r0(s) == 0:  # Ray skips these brackets
            continue
        bracket, trial = sched._create_bracket(s), _Trial(f"t{s}")
        bracket.add_trial(trial)
        for step in range(1, max_t + 1):
            bracket.update_trial_stats(trial, {"step": step, "m": 0.0})
            finished = False
            while not bracket.continue_trial(trial):  # the trial would be paused here
                out.add(step)
                if bracket.finished():
                    finished = True
                    break
                bracket.successive_halving("m", 1.0)
            if finished:
                break
    return sorted(s for s in out if s < max_t)


def ray_count(spec: SchedulerSpec, max_t: int) -> int:
    sched = make_scheduler(spec, "m", "max", max_t)
    return len(sched._brackets[0]._rungs) if spec.type == "asha" else sched._s_max_1


RAY_RUNGS = {"asha": ray_asha_rungs, "hyperband": ray_hyperband_rungs}


def test_every_scheduler_has_a_rung_rule():
    assert set(SCHEDULERS) == set(RUNG_RULES)


@pytest.mark.parametrize("spec,max_t,expected", [
    (SchedulerSpec("asha", 1, 2), 4, [1, 2]),
    (SchedulerSpec("asha", 3, 2), 12, [3, 6]),
    (SchedulerSpec("asha", 20, 2), 100, [20, 40, 80]),
    (SchedulerSpec("asha", 25, 3), 300, [25, 75, 225]),
    (SchedulerSpec("asha", 1, 1.5), 20, [1, 2, 3, 4, 6, 8, 12, 18]),
    (SchedulerSpec("asha", 4, 1.5), 100, [4, 6, 9, 14, 21, 31, 46, 69]),
    (SchedulerSpec("asha", 1, 10), 1000, [1, 10, 100]),  # Ray's log(1000)/log(10) rounds below 3
    (SchedulerSpec("asha", 1, 1.1), 30, list(range(1, 30))),  # several milestones per step: one a step
    (SchedulerSpec("asha", 2, 2.5), 50, [2, 5, 13, 32]),
    (SchedulerSpec("hyperband", None, 3), 81, [1, 3, 9, 27]),
    (SchedulerSpec("hyperband", None, 3), 10, [1, 3, 9]),
    (SchedulerSpec("hyperband", None, 1.5), 40, None),
    (SchedulerSpec("hyperband", None, 2), 100, None),
    (SchedulerSpec("hyperband", None, 4), 7, None),
    (SchedulerSpec("none", None, None), 10, []),
])
def test_rungs_are_the_steps_where_ray_compares(spec, max_t, expected):
    rungs = spec.rungs(max_t)
    if expected is not None:
        assert rungs == expected
    if spec.type in RAY_RUNGS:
        assert rungs == RAY_RUNGS[spec.type](spec, max_t)
        assert spec.milestone_count(max_t) == ray_count(spec, max_t)


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(["asha", "hyperband"]), grace=st.integers(1, 12),
       factor=st.one_of(st.integers(2, 6), st.floats(1.2, 5.0)), max_t=st.integers(1, 150))
def test_rungs_match_ray_on_random_schedulers(kind, grace, factor, max_t):
    spec = SchedulerSpec(kind, grace if kind == "asha" else None, factor)
    if kind == "asha" and grace > max_t:  # refused when the space is read (Ray asserts it too)
        return
    if spec.milestone_count(max_t) > MAX_RUNGS:
        with pytest.raises(ValueError, match="rungs"):
            spec.rungs(max_t)
        return
    assert spec.rungs(max_t) == RAY_RUNGS[kind](spec, max_t)


def test_checkpoints_are_at_the_rungs_the_scheduler_uses():
    """The driver hands the trials `space.milestones()`: the same formula as the ablation's."""
    from dnn_search.search.driver import trial_settings
    space = from_dict({"scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 1.5},
                       "fixed": {"steps": 20}, "sampler": {"type": "random"}})
    settings_ = trial_settings(space)
    assert settings_["milestones"] == [1, 2, 3, 4, 6, 8, 12, 18] == ray_asha_rungs(space.scheduler, 20)
    assert rungs_of(space.to_dict()) == [*settings_["milestones"], 20]


def test_non_integer_factor_through_parse_rungs_and_summary(tmp_path):
    """The hang of issue 18: a reduction factor of 1.5 was accepted, then the summary's rung loop
    multiplied by int(1.5) == 1 forever. Now: parse, rungs, and a steps ablation with a row per rung."""
    import pandas as pd

    from dnn_search.results.tables import STEP_COLUMNS, TRIAL_COLUMNS, write_table
    space = from_dict({"scheduler": {"type": "asha", "grace_period": 2, "reduction_factor": 1.5},
                       "fixed": {"steps": 10}, "sampler": {"type": "random"}})
    assert space.scheduler.reduction_factor == 1.5
    recorded = space.to_dict()
    assert from_dict(recorded).scheduler == space.scheduler
    rungs = rungs_of(recorded)
    assert rungs == [2, 3, 5, 7, 10] == [*ray_asha_rungs(space.scheduler, 10), 10]
    steps = [{"trial_id": "a", "step": s, "heldout_accuracy": 0.1 * s} for s in range(1, 11)]
    steps += [{"trial_id": "b", "step": s, "heldout_accuracy": 0.05 * s} for s in range(1, 4)]
    trials = [{"trial_id": "a", "status": "COMPLETED", "n_activations": 2, "score": 1.0},
              {"trial_id": "b", "status": "PRUNED", "n_activations": 1, "score": 0.15}]
    write_table(tmp_path / "steps.parquet", steps, STEP_COLUMNS)
    write_table(tmp_path / "trials.parquet", trials, TRIAL_COLUMNS)
    lines = ablation_markdown(pd.read_parquet(tmp_path / "trials.parquet"), pd.read_parquet(tmp_path / "steps.parquet"),
                              recorded, "heldout_accuracy", "max", 100.0, 2)
    rows = markdown_table_rows("\n".join(lines), "| outer steps |")
    assert [int(r) for r in rows] == rungs
    assert [int(cells[1]) for cells in rows.values()] == [2, 2, 1, 1, 1]  # trials there


@pytest.mark.parametrize("section,message", [
    ({"type": "hyperband", "grace_period": 3}, "scheduler.grace_period: not used by scheduler hyperband"),
    ({"type": "none", "reduction_factor": 3}, "scheduler.reduction_factor: not used by scheduler none"),
    ({"type": "asha", "reduction_factor": 1.01}, r"scheduler.reduction_factor: 1.01 makes \d+ rungs"),
    ({"type": "hyperband", "reduction_factor": 1.0001}, r"scheduler.reduction_factor: 1.0001 makes \d+ rungs"),
])
def test_scheduler_keys_refused_with_one_line(section, message):
    with pytest.raises(UserError, match=message) as caught:
        from_dict({"scheduler": section, "fixed": {"steps": 100}})
    assert "\n" not in str(caught.value)


def test_hyperband_and_none_round_trip_without_the_keys_they_do_not_use():
    for section in ({"type": "hyperband", "reduction_factor": 3}, {"type": "none", "max_steps": 5}):
        space = from_dict({"scheduler": section, "fixed": {"steps": 10}})
        assert from_dict(space.to_dict()).scheduler == space.scheduler
    assert from_dict({"scheduler": {"type": "hyperband"}, "fixed": {"steps": 2}}).scheduler.grace_period is None
