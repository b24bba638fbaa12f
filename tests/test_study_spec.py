"""A study file's bad input is one line and exit 2 before anything starts; the plan's seeds; a
replicate interrupted and continued is bit-identical to one run straight through (no Ray here)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from dnn_search.errors import UserError
from dnn_search.search.study_spec import load_study, parse_study
from tests.conftest import REPO, run_cli

SMOKE = REPO / "search_spaces" / "study_smoke.yaml"


def _smoke(**study) -> dict:
    data = yaml.safe_load(SMOKE.read_text())
    data["study"].update(study)
    return data


@pytest.mark.parametrize("change, message", [
    ({"arms": [{"n_activations": 1}, {"n_activations": 1}]}, "does not differ"),
    ({"arms": [{"n_activations": 2}]}, "at least two arms"),
    ({"replicates": 1}, "study.replicates"),
    ({"margin": 0}, "study.margin"),
    ({"margin": -1.0}, "study.margin"),
    ({"contrasts": [{"a": "n4/diverse", "b": "n1/single:1"}]}, "no arm named 'n4'"),
    ({"contrasts": [{"a": "n1/diverse", "b": "n2/diverse"}]}, "has no network 'diverse'"),
    ({"divergence": {"grad_norm": 0}}, "study.divergence.grad_norm"),
    ({"divergence": {"grad_norm": -5}}, "study.divergence.grad_norm"),
    ({"arms": [{"n_activations": 1, "seed": 3}, {"n_activations": 2}]}, "set by the study"),
    ({"arms": [{"n_activations": 1}, {"n_activations": 2, "outer_lr_typo": 1}]}, "not a meta-learning setting"),
    ({"standard": ["relu", "swish"]}, "std:swish"),
    ({"controls": {"copies": "yes"}}, "study.controls.copies: expected true or false"),
    ({"controls": {"shuffle": True}}, "study.controls.shuffle: unknown key"),
    ({"controls": {"matched": {}}}, "study.controls.matched: give m"),
    ({"controls": {"matched": {"m": 0}}}, "study.controls.matched.m: must be at least 1"),
    ({"arms": [{"n_activations": 1}, {"name": "b", "n_activations": 1, "inner_lr": 0.1}],
      "contrasts": [{"a": "b/single:1", "b": "n1/single:1"}], "controls": {"random": True}},
     "study.controls.random: needs an arm with n_activations >= 2"),
    ({"arms": [{"n_activations": 2}, {"n_activations": 4}], "controls": {"mix": True}},
     "study.controls.mix: needs an arm with n_activations 1"),
    ({"arms": [{"n_activations": 1}, {"name": "matched", "n_activations": 2}], "controls": {"matched": {"m": 2}}},
     "already named 'matched'"),
])
def test_bad_study_files_are_one_line_errors(change, message):
    with pytest.raises(UserError, match=message) as info:
        parse_study(_smoke(**change), source="x.yaml")
    assert "\n" not in str(info.value)


def test_ratio_margin_for_mse_tasks():
    data = _smoke()
    data["fixed"].update(dataset="HenonHeiles")
    with pytest.raises(UserError, match="ratio interval"):
        parse_study(data)
    data["study"]["margin"] = [0.8, 1.25]
    data["study"]["standard"] = ["gelu"]
    spec = parse_study(data)
    assert spec.margin == pytest.approx((np.log(0.8), np.log(1.25)))
    data["study"]["margin"] = [1.1, 1.25]
    with pytest.raises(UserError, match="must contain 1"):
        parse_study(data)


def test_bad_input_exits_2_before_anything_starts(tmp_path, search_env):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_smoke(replicates=1)))
    proc = run_cli(["study", "--space", bad, "--name", "x", "--storage", tmp_path / "r"], search_env, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("path", sorted((REPO / "search_spaces").glob("study_*.yaml")), ids=lambda p: p.name)
def test_every_shipped_study_file_parses(path):
    """Each committed study file is a valid study (the pre-registered ones are run from the file as it is)."""
    spec = load_study(path)
    assert len(spec.arms) >= 2 and spec.replicates >= 2


def test_default_primary_family_and_seeds():
    from dnn_search.results.study_record import replicates_of, retraining_seed
    spec = load_study(SMOKE)
    assert [c.label for c in spec.contrasts] == ["n2/diverse vs n1/single:1"]
    reps = replicates_of(spec)
    assert len({r.meta_seed for r in reps}) == len(reps) == 6  # n1, n2 and the matched control arm
    seeds = {retraining_seed(spec, r, k) for r in reps for k in range(spec.runs)}
    assert len(seeds) == 6 * spec.runs


def test_interrupted_replicate_continues_bit_identically(tmp_path):
    """A replicate stopped after its checkpoint at step 4 and continued to 6 equals one run straight
    to 6: the state holds the activations, momentum and the generator."""
    from dnn_search.data import load_dataset
    from dnn_search.metalearn import MetaConfig
    from dnn_search.replicate import RESULT_FILE, STEPS_FILE, read_result, run_replicate
    from dnn_search.splits import selection_split
    data = load_dataset("MNIST1D")
    rest, _ = selection_split(data, 0.1, 7)
    cfg = dict(n_activations=2, inner_hidden_size=16, outer_hidden_size=6, epochs=1, steps=6, seed=11)
    straight = run_replicate(MetaConfig(**cfg), data, rest, tmp_path / "a", grad_norm_limit=1e6, checkpoint_every=2)
    run_replicate(MetaConfig(**{**cfg, "steps": 4}), data, rest, tmp_path / "b", grad_norm_limit=1e6,
                  checkpoint_every=2)
    (tmp_path / "b" / RESULT_FILE).unlink()  # as if killed after the checkpoint at step 4
    resumed = run_replicate(MetaConfig(**cfg), data, rest, tmp_path / "b", grad_norm_limit=1e6, checkpoint_every=2)
    assert straight == resumed and straight.steps == 6
    a, b = (np.load(tmp_path / x / "activations.npz") for x in "ab")
    for key in ("w1", "b1", "w2", "b2"):
        assert np.array_equal(a[key], b[key]), key
    rows = json.loads((tmp_path / "b" / STEPS_FILE).read_text())
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert read_result(tmp_path / "b")["status"] == "COMPLETED"


def test_a_diverging_replicate_fails_and_is_not_replaced(tmp_path):
    from dnn_search.data import load_dataset
    from dnn_search.metalearn import MetaConfig
    from dnn_search.replicate import read_result, run_replicate
    from dnn_search.splits import selection_split
    data = load_dataset("MNIST1D")
    rest, _ = selection_split(data, 0.1, 7)
    out = run_replicate(MetaConfig(n_activations=1, inner_hidden_size=16, outer_hidden_size=6, epochs=1, steps=5,
                                   seed=1), data, rest, tmp_path, grad_norm_limit=1e-9)
    assert out.status == "FAILED" and out.steps == 1 and "above the limit" in out.reason
    assert read_result(tmp_path)["status"] == "FAILED" and not (tmp_path / "activations.npz").exists()


def test_controls_and_memory_parse_and_survive_study_json():
    """The smoke file asks for every control: the matched arm is added last (no other arm's
    meta-seeds move) with Ho = m x the n = 1 arm's; the spec, memory included, reads back from
    study.json's dict as it was (what --resume uses)."""
    from dnn_search.results.study_record import StudySpec, control_modes, networks, replicates_of
    spec = load_study(SMOKE)
    assert spec.controls == {"copies": True, "mix": True, "random": True, "matched": 2}
    assert spec.memory_per_trial == 300_000_000
    matched = spec.arms[-1]
    assert (matched.name, matched.control, matched.n, matched.settings["outer_hidden_size"]) == ("matched", "matched",
                                                                                                  1, 20)
    assert spec.reference_arm.name == "n1" and networks(spec, matched) == ["single:1"]
    assert control_modes(spec, spec.arm("n2")) == ["copies:1", "random:diverse", "random:single",
                                                   "random-scaled:diverse", "random-scaled:single"]
    assert control_modes(spec, spec.arm("n1")) == []
    assert StudySpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    plain = parse_study(_smoke(controls=None))
    assert [a.name for a in plain.arms] == ["n1", "n2"] and not plain.controls
    before = {r.key: r.meta_seed for r in replicates_of(plain)}
    assert {r.key: r.meta_seed for r in replicates_of(spec) if r.key in before} == before


def test_derived_seeds_differ_by_length_too():
    """numpy's SeedSequence ignores trailing zeros; derived seeds of different streams must not."""
    from dnn_search.splits import derive_seed
    assert derive_seed(0, 3, 2) != derive_seed(0, 3, 2, 0)
    assert len({derive_seed(0, s, a, j) for s in range(6) for a in range(4) for j in range(8)}) == 6 * 4 * 8


def _henonheiles(**study) -> dict:
    data = _smoke(margin=[0.8, 1.25], standard=["gelu"], **study)
    data["fixed"].update(dataset="HenonHeiles")
    return data


@pytest.mark.parametrize("data, message", [
    (_smoke(forecast={"trajectories": 5}), "study.forecast: the MNIST1D task .* has no forecasts"),
    (_henonheiles(forecast={"trajectories": 0}), "study.forecast.trajectories: must be at least 1"),
    (_henonheiles(forecast={"trajectories": "ten"}), "study.forecast.trajectories: expected an integer"),
    (_henonheiles(forecast={"steps": 10}), "study.forecast.steps: unknown key"),
    (_henonheiles(forecast={}), "study.forecast.trajectories: missing"),
])
def test_bad_forecast_sections_are_one_line_errors(data, message):
    with pytest.raises(UserError, match=message) as info:
        parse_study(data, source="x.yaml")
    assert "\n" not in str(info.value)


def test_forecast_subset_reaches_the_validation_data():
    """study.forecast.trajectories travels from the file through study.json (what --resume reads) and
    the trials' settings to the data a validation trial loads, which then forecasts from exactly the
    first N test trajectories; a count beyond the data's is one line naming the key."""
    from dnn_search.results.study_record import StudySpec
    from dnn_search.search.study_run import _settings
    from dnn_search.data import validation_data
    from dnn_search.search.study_spec import study_data
    spec = parse_study(_henonheiles(forecast={"trajectories": 3}), source="x.yaml")
    assert StudySpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    settings = _settings(spec)
    full = validation_data("HenonHeiles", None, None)
    data = validation_data("HenonHeiles", settings.get("data_path"), settings["forecast_trajectories"])
    assert full.trajectories_test.shape[0] > 3 and data.trajectories_test.shape[0] == 3
    assert np.array_equal(data.trajectories_test.numpy(), full.trajectories_test[:3].numpy())
    assert np.array_equal(data.x_train.numpy(), full.x_train.numpy())  # meta-learning and training data untouched
    assert parse_study(_henonheiles(), source="x.yaml").forecast_trajectories is None
    too_many = parse_study(_henonheiles(forecast={"trajectories": 10_000}), source="x.yaml")
    with pytest.raises(UserError, match="study.forecast.trajectories: 10000 is beyond the") as info:
        study_data(too_many)
    assert "\n" not in str(info.value)
