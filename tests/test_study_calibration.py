"""Calibration inside each arm (no Ray): the score, the drop of an unstable setting and the pick, on
trial folders written by the study's own writers (`write_trial_params`, `replicate.run_replicate`);
the calibration section's one-line errors. The calibration run by the driver, as Tune trials, is
tested in test_study.py's shared study."""
from __future__ import annotations

import json

import pytest
import yaml

from dnn_search.errors import UserError
from dnn_search.results.study_calibration import (CalibrationFailed, calibration_rows, picks, trial_score,
                                                  write_trial_params)
from dnn_search.results.study_record import calibration_folder, calibration_trials, mix_seed, replicates_of
from dnn_search.search.study_spec import parse_study
from tests.conftest import REPO


def _smoke(**calibration) -> dict:
    data = yaml.safe_load((REPO / "search_spaces" / "study_smoke.yaml").read_text())
    data["study"]["calibration"].update(calibration)
    return data


def _run_trial(exp, spec, arm, index: int, params: dict, data, rest) -> None:
    from dnn_search.metalearn import MetaConfig
    from dnn_search.replicate import run_replicate
    trial = calibration_trials(spec, arm)[index]
    folder = calibration_folder(exp, trial.key)
    write_trial_params(folder, params, index)
    cfg = MetaConfig.from_dict({**spec.arm_config(arm), **params, "steps": spec.calibration.steps,
                                "seed": trial.meta_seed})
    run_replicate(cfg, data, rest, folder, grad_norm_limit=spec.calibration.grad_norm)


def test_an_unstable_setting_is_dropped_and_never_picked(tmp_path):
    """Arm n1's trial 0 has an outer lr so large that its meta-gradient norm jumps from ~0.04 to ~5 at
    step 2 (and its values stop being finite at step 3): with the threshold at 1 it is dropped at step 2
    by the norm (whatever its score), and the stable trial 1 is picked; an arm whose every trial is
    dropped stops the study with a line that names it."""
    from dnn_search.data import load_dataset
    from dnn_search.splits import selection_split
    spec = parse_study(_smoke(steps=3, grad_norm=1.0))
    arm = spec.arms[0]
    data = load_dataset("MNIST1D", None)
    rest, _ = selection_split(data, spec.selection_fraction, 1)
    _run_trial(tmp_path, spec, arm, 0, {"inner_lr": 0.03, "outer_lr": 1e3}, data, rest)
    _run_trial(tmp_path, spec, arm, 1, {"inner_lr": 0.03, "outer_lr": 0.4}, data, rest)
    rows = {r["index"]: r for r in calibration_rows(tmp_path, spec, "heldout_accuracy", "max")}
    assert rows[0]["dropped"] and rows[0]["status"] == "FAILED" and "meta-gradient norm" in rows[0]["reason"]
    assert rows[0]["max_grad_norm"] > spec.calibration.grad_norm
    assert not rows[1]["dropped"] and rows[1]["picked"] and not rows[0]["picked"]
    steps = json.loads((calibration_folder(tmp_path, "n1-c1") / "steps.json").read_text())
    assert rows[1]["score"] == pytest.approx(sum(r["heldout_accuracy"] for r in steps) / 3)
    assert picks(spec, list(rows.values())) == {"n1": {"inner_lr": 0.03, "outer_lr": 0.4}}
    with pytest.raises(CalibrationFailed, match="arm n1: every one of its 1 trials was dropped"):
        picks(spec, [rows[0]])


def test_score_is_the_mean_of_the_last_steps():
    steps = [{"m": float(v)} for v in range(1, 13)]
    assert trial_score(steps, "m", 10) == pytest.approx(sum(range(3, 13)) / 10)
    assert trial_score(steps[:4], "m", 10) == pytest.approx(2.5)  # fewer steps than 10: all of them
    assert trial_score([{"m": float("nan")}], "m", 10) != trial_score([{"m": float("nan")}], "m", 10)


def test_calibration_meta_seeds_are_a_stream_of_their_own():
    spec = parse_study(_smoke(trials=50))
    cal = {t.meta_seed for arm in spec.arms for t in calibration_trials(spec, arm)}
    assert len(spec.arms) == 3  # n1, n2 and the smoke file's matched control arm
    assert len(cal) == 50 * len(spec.arms) and not cal & {r.meta_seed for r in replicates_of(spec)}
    # nor the controls' seeds: SeedSequence ignores trailing zeros, so a mix draw on (seed, 3, n) was
    # the meta-seed of calibration trial 0 of arm index n
    assert not cal & {mix_seed(spec, arm) for arm in spec.arms}


@pytest.mark.parametrize("change, message", [
    ({"params": {"steps": {"type": "int", "low": 1, "high": 3}}}, "params.steps: set by the study"),
    ({"params": {"n_activations": {"type": "int", "low": 1, "high": 3}}}, "params.n_activations"),
    ({"params": {"inner_lr": {"type": "loguniform", "low": -1, "high": 0.1}}}, "must be positive"),
    ({"params": {"inner_lr": {"type": "loguniform", "low": 0.01, "high": 0.1}}, "scheduler": "asha"},
     "study.calibration.scheduler: expected one of fifo"),
    ({"trials": 0}, "study.calibration.trials"),
    ({"grad_norm": None}, "study.calibration.grad_norm"),
    ({"bogus": 1}, "bogus"),
])
def test_bad_calibration_is_one_line(change, message):
    data = _smoke()
    data["study"]["calibration"].update(change)
    if change.get("grad_norm", 0) is None:
        del data["study"]["calibration"]["grad_norm"]
    with pytest.raises(UserError, match=message) as info:
        parse_study(data)
    assert "\n" not in str(info.value)


def test_an_arm_that_sets_every_calibrated_setting_is_refused():
    data = _smoke()
    data["study"]["arms"][1]["inner_lr"] = 0.05
    data["study"]["arms"][1]["outer_lr"] = 0.5
    with pytest.raises(UserError, match="arm n2 sets every calibrated setting itself"):
        parse_study(data)
    data["study"]["arms"][1].pop("outer_lr")
    spec = parse_study(data)
    assert list(spec.calibration.params_for(spec.arms[1])) == ["outer_lr"]
    calibrated = spec.calibrated({"n2": {"outer_lr": 0.7}})
    assert calibrated.arm_config(calibrated.arm("n2")) == {**spec.arm_config(spec.arms[1]), "outer_lr": 0.7}
    assert calibrated.arm_config(calibrated.arm("n2"))["inner_lr"] == 0.05


def test_secondary_pick_is_the_best_mean_on_the_selection_split():
    """The secondary protocol's pick: best mean val metric over the pick seeds; an MSE on the log scale
    (a geometric mean, so one huge seed does not decide); ties: the smaller lr; no finite value at
    any lr: the smallest lr."""
    from dnn_search.results.study_secondary import pick_lr
    rows = lambda pairs, col="val_accuracy": [{"lr": lr, col: v} for lr, v in pairs]
    assert pick_lr(rows([(0.1, 0.5), (0.1, 0.7), (0.01, 0.65), (0.01, 0.5)]), "accuracy", "max", False) == 0.1
    assert pick_lr(rows([(0.1, 0.6), (0.01, 0.6)]), "accuracy", "max", False) == 0.01
    assert pick_lr(rows([(0.1, float("nan")), (0.1, 0.9), (0.01, 0.2)]), "accuracy", "max", False) == 0.01
    mse = rows([(0.1, 1e-4), (0.1, 10.0), (0.01, 0.05), (0.01, 0.05)], "val_mse")
    assert pick_lr(mse, "mse", "min", True) == 0.1  # geometric mean 0.0316 < 0.05 (arithmetic: 5.0)
    assert pick_lr(rows([(0.1, float("nan")), (0.03, float("inf"))]), "accuracy", "max", False) == 0.03


@pytest.mark.parametrize("secondary, message", [
    ({"lrs": []}, "study.secondary.lrs: give a small list"),
    ({"lrs": [0.1, 0.1]}, "contains duplicates"),
    ({"lrs": [0.1], "momentum": 1.0}, "must be in \\[0, 1\\)"),
    ({"lrs": [-0.1]}, "study.secondary.lrs\\[0\\]"),
    ({"lrs": [0.1], "pick_seeds": 0}, "study.secondary.pick_seeds"),
])
def test_bad_secondary_is_one_line(secondary, message):
    data = _smoke()
    data["study"]["secondary"] = secondary
    with pytest.raises(UserError, match=message):
        parse_study(data)
