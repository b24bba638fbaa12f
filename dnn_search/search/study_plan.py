"""What a study runs, derived from its spec alone: the replicates (arm × meta-seed), the networks each
replicate is validated with, their retraining seeds and settings, and the cost of it all.

The replicates and their seeds are the study record's (`results/study_record.py`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from dnn_search.results.study_record import Arm, Replicate, StudySpec, networks, retraining_seed

PRIMARY_OPTIMIZER = "rmsprop"  # the meta-learning inner update (validation.MetaRMSprop)


def validation_settings(spec: StudySpec, arm: Arm, mode: str) -> dict:
    """The primary protocol's ValidationConfig fields for MODE of ARM's replicates: the meta-learning
    inner update at the arm's own inner lr, decay and epochs for the learned networks; pure and std:*
    at the n = 1 arm's (so that the baselines are one protocol for every arm). Every network is
    scored on the selection split (val_fraction = the selection fraction, split seed = its seed).
    The controls' networks (copies, random, mix) train at the arm's settings, as its diverse one."""
    from dnn_search.metalearn import MetaConfig
    # the controls (copies:k, random*, mix) are learned-activation networks of the arm: its protocol
    learned = mode.startswith(("single:", "copies:", "random")) or mode in ("diverse", "mix")
    source = arm if learned or spec.reference_arm is None else spec.reference_arm
    cfg = MetaConfig.from_dict(spec.arm_config(source))
    return {"optimizer": PRIMARY_OPTIMIZER, "lr": cfg.inner_lr, "momentum": cfg.inner_mu, "epochs": cfg.epochs,
            "batch_size": cfg.inner_batch_size, "hidden_size": spec.hidden_size or cfg.inner_hidden_size,
            "val_fraction": spec.selection_fraction}


def secondary_settings(spec: StudySpec, arm: Arm, mode: str) -> dict:
    """The secondary protocol's ValidationConfig fields for MODE of ARM's replicates (the lr is the
    grid's, set per training): SGD with the file's momentum, otherwise as the primary protocol."""
    return {**validation_settings(spec, arm, mode), "optimizer": "sgd", "momentum": spec.secondary.momentum}


@dataclass(frozen=True)
class ValidationJob:
    replicate: Replicate
    mode: str
    run: int
    seed: int

    @property
    def key(self) -> str:
        return f"{self.replicate.key}-{self.mode.replace(':', '')}-r{self.run}"


def validation_jobs(spec: StudySpec, reps: list[Replicate]) -> list[ValidationJob]:
    return [ValidationJob(rep, mode, r, retraining_seed(spec, rep, r))
            for rep in reps for mode in networks(spec, spec.arm(rep.arm)) for r in range(spec.runs)]


# -------------------------------------------------------------------------------------- costs

@dataclass(frozen=True)
class UnitCost:
    """Measured seconds of one outer step of an arm, and of one validation training of its primary
    network (on one core: torch's threads as a trial gets them)."""

    arm: str
    step_s: float
    training_s: float


def measure_costs(spec: StudySpec, data_path=None) -> list[UnitCost]:
    """Time one outer step (the second of two: the first pays one-off costs) and one validation
    training per arm, on this machine, with one thread. CPU time of this process, not wall time: what
    a trial costs a core, whatever else the machine runs. A training is timed at 1 and at 2 epochs:
    the difference is one epoch, the rest is what a training pays once (building the network, the
    test metrics, the forecasts of a forecast task), so the estimate at the protocol's epochs does
    not multiply the forecasts by the epochs."""
    import torch

    from dnn_search.metalearn import MetaConfig, MetaLearner
    from dnn_search.search.study_spec import study_data
    from dnn_search.validation import ValidationConfig, run_mode

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = study_data(spec, data_path)  # the forecasts as the study's validation makes them
        out = []
        for arm in spec.arms:
            cfg = MetaConfig.from_dict({**spec.arm_config(arm), "seed": 0})
            learner = MetaLearner.from_dataset(cfg, data)
            learner.step()
            started = time.process_time()
            learner.step()
            step_s = time.process_time() - started
            settings = validation_settings(spec, arm, arm.primary)
            acts = _loaded(learner)
            seconds = []
            for epochs in (1, 1, 2):  # the first call pays one-off costs too
                started = time.process_time()
                run_mode(acts, data, arm.primary, len(seconds),
                         ValidationConfig(**{**settings, "epochs": epochs}).validate())
                seconds.append(time.process_time() - started)
            epoch_s = max(seconds[2] - seconds[1], 0.0)
            once_s = max(seconds[1] - epoch_s, 0.0)
            out.append(UnitCost(arm.name, step_s, once_s + epoch_s * settings["epochs"]))
        return out
    finally:
        torch.set_num_threads(threads)


def _loaded(learner):
    """The learner's activations as validation loads them (exact weights)."""
    import tempfile
    from pathlib import Path

    from dnn_search.actfile import read_activation_file, write_activation_files
    with tempfile.TemporaryDirectory(prefix="dnn_cost_") as folder:
        paths = write_activation_files(Path(folder), "a", learner.activations(), {"config": learner.cfg.to_dict()})
        return read_activation_file(paths["npz"])


def plan_lines(spec: StudySpec, costs: list[UnitCost] | None = None) -> list[str]:
    """What the study will run, per arm and in all, with core-hours where COSTS are measured."""
    by_arm = {c.arm: c for c in costs or []}
    lines = [f"study: {len(spec.arms)} arms x {spec.replicates} meta-seeds, {spec.steps} outer steps each, "
             f"{spec.runs} retraining seeds per replicate"]
    total_runs = total_trainings = 0
    total_s = 0.0
    for arm in spec.arms:
        nets = networks(spec, arm)
        trainings = spec.replicates * spec.runs * len(nets)
        total_runs += spec.replicates
        total_trainings += trainings
        line = (f"  {arm.name} (n={arm.n}): {spec.replicates} meta-learning runs x {spec.steps} steps; "
                f"{trainings} trainings ({len(nets)} networks: {', '.join(nets)})")
        if arm.name in by_arm:
            c = by_arm[arm.name]
            # pure and std:* train at the reference arm's settings; the primary's cost stands for them
            seconds = spec.replicates * spec.steps * c.step_s + trainings * c.training_s
            total_s += seconds
            line += f"; {c.step_s:.2f} s/step, {c.training_s:.2f} s/training -> {seconds / 3600:.3g} core-h"
        lines.append(line)
    cal_lines, cal_s = calibration_lines(spec, by_arm)
    lines += cal_lines
    total_s += cal_s
    sec_lines, sec_s, sec_n = secondary_lines(spec, by_arm)
    lines += sec_lines
    total_s += sec_s
    total_trainings += sec_n
    lines.append(f"  total: {total_runs} meta-learning runs, {total_trainings} trainings"
                 + (f", {total_s / 3600:.3g} core-hours ({total_s / 3600 / max(1, spec.max_concurrent or 1):.3g} h "
                    f"wall at {spec.max_concurrent or 1} at once)" if costs else ""))
    return lines


def calibration_lines(spec: StudySpec, by_arm: dict[str, UnitCost]) -> tuple[list[str], float]:
    """The calibration's line (its trials per arm, the settings each arm searches) and its seconds."""
    from dnn_search.results.study_record import calibration_trials
    cal = spec.calibration
    if cal is None:
        return [], 0.0
    runs = sum(len(calibration_trials(spec, arm)) for arm in spec.arms)
    seconds = sum(cal.trials * cal.steps * by_arm[a.name].step_s for a in spec.arms if a.name in by_arm)
    searched = "; ".join(f"{a.name}: {', '.join(cal.params_for(a))}" for a in spec.arms)
    line = (f"  calibration: {runs} trials ({cal.trials} per arm x {cal.steps} steps, {cal.scheduler}, "
            f"{cal.sampler['type']} sampler per arm; {searched})")
    if by_arm:
        line += f" -> {seconds / 3600:.3g} core-h"
    return [line], seconds


def secondary_lines(spec: StudySpec, by_arm: dict[str, UnitCost]) -> tuple[list[str], float, int]:
    """The secondary protocol's line, its seconds and its number of trainings."""
    from dnn_search.results.study_record import secondary_networks
    from dnn_search.results.study_secondary import secondary_plan_count
    if spec.secondary is None:
        return [], 0.0, 0
    per = secondary_plan_count(spec)
    count = {a.name: spec.replicates * len(secondary_networks(spec, a)) * per for a in spec.arms}
    seconds = sum(n * by_arm[a].training_s for a, n in count.items() if a in by_arm)
    line = (f"  secondary protocol (sgd, momentum {spec.secondary.momentum:g}, lrs {list(spec.secondary.lrs)}, "
            f"pick on {spec.secondary.pick_seeds} seeds): {sum(count.values())} trainings ({per} per network and "
            f"replicate; networks: primary, pure)")
    if by_arm:
        line += f" -> {seconds / 3600:.3g} core-h"
    return [line], seconds, sum(count.values())
