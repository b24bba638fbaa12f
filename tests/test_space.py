"""Search space files: the shipped ones load, every kind of mistake is one clear error."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from dnn_search import cli
from dnn_search.errors import UserError
from dnn_search.search.space import from_dict, load_space

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p for p in (REPO / "search_spaces").glob("*.yaml") if not p.name.startswith("study_"))  # studies: test_study_spec


def test_shipped_spaces_load():
    names = {p.name for p in SHIPPED}
    assert {"smoke.yaml", "mnist1d.yaml"} <= names
    for path in SHIPPED:
        space = load_space(path)
        assert {"outer_lr", "inner_lr", "n_activations"} <= set(space.params)
        assert space.to_dict() == from_dict(space.to_dict()).to_dict()  # round trip (search.json)


def test_paper_space():
    space = load_space(REPO / "search_spaces" / "mnist1d.yaml")
    assert space.fixed["activation"] == "sin" and space.fixed["steps"] == 300
    n = space.params["n_activations"]
    assert (n.type, n.low, n.high) == ("int", 1, 8)
    for name, default in (("outer_lr", 0.4), ("inner_lr", 0.01)):
        p = space.params[name]
        assert p.type == "loguniform" and p.low < default < p.high and p.high / p.low >= 50
    assert space.sampler.type == "tpe" and space.scheduler.type == "asha"


def test_defaults_and_every_flag_sampleable():
    space = from_dict({"params": {"outer_lr": {"type": "loguniform", "low": 0.1, "high": 1}}})
    assert (space.metric, space.mode, space.sampler.type, space.scheduler.type) == \
        ("heldout_accuracy", "max", "tpe", "asha")
    data = {"fixed": {"dataset": "MNIST1D", "activation": "tanh", "inner_hidden_size": 32, "steps": 10},
            "params": {"noise": {"type": "uniform", "low": 0.0, "high": 0.2},
                       "epochs": {"type": "int", "low": 1, "high": 3},
                       "inner_batch_size": {"type": "int", "low": 50, "high": 400, "log": True},
                       "activation": {"type": "categorical", "choices": ["sin", "tanh", "elu"]}}}
    with pytest.raises(UserError, match="params.activation: is also under fixed"):
        from_dict(data)
    del data["fixed"]["activation"]
    space = from_dict(data)
    assert space.params["inner_batch_size"].log
    assert from_dict({"scheduler": {"type": "none"}, "sampler": {"type": "random"}}).milestones() == []
    assert from_dict({"scheduler": {"grace_period": 3, "reduction_factor": 2, "max_steps": 12},
                      "fixed": {"steps": 12}}).milestones() == [3, 6]  # 12: the last step, not a rung


BASE = {"metric": "heldout_accuracy", "fixed": {"steps": 10},
        "params": {"outer_lr": {"type": "loguniform", "low": 0.04, "high": 4.0}}}


@pytest.mark.parametrize("patch, message", [
    (lambda d: d.update(colour="red"), r"colour: unknown key"),
    (lambda d: d["params"].update(learning_rate={"type": "uniform", "low": 0, "high": 1}),
     r"params.learning_rate: unknown parameter"),
    (lambda d: d["params"]["outer_lr"].update(low=5.0), r"params.outer_lr: low must be below high"),
    (lambda d: d["params"]["outer_lr"].update(low=0.0), r"params.outer_lr.low: must be positive on a log scale"),
    (lambda d: d["params"]["outer_lr"].update(low="small"), r"params.outer_lr.low: expected a finite number"),
    (lambda d: d["params"]["outer_lr"].update(type="gaussian"), r"params.outer_lr.type: expected one of"),
    (lambda d: d["params"]["outer_lr"].update(step=2), r"params.outer_lr.step: unknown key"),
    (lambda d: d["params"].update(n_activations={"type": "uniform", "low": 1, "high": 4}),
     r"params.n_activations.type: n_activations is an integer"),
    (lambda d: d["params"].update(n_activations={"type": "int", "low": 1.5, "high": 4}),
     r"params.n_activations.low: expected an integer"),
    (lambda d: d["params"].update(activation={"type": "categorical", "choices": []}),
     r"params.activation.choices: expected a non-empty list"),
    (lambda d: d["fixed"].update(steps="ten"), r"fixed.steps: expected an integer"),
    (lambda d: d["fixed"].update(activation="relu"), r"fixed: .*relu"),
    (lambda d: d.update(metric="accuracy"), r"metric: expected one of"),
    (lambda d: d.update(mode="up"), r"mode: expected one of min, max"),
    (lambda d: d.update(num_samples=0), r"num_samples: must be at least 1"),
    (lambda d: d.update(sampler={"type": "grid"}), r"sampler.type: expected one of"),
    (lambda d: d.update(sampler={"seed": -1}), r"sampler.seed: must be at least 0"),
    (lambda d: d.update(scheduler={"reduction_factor": 1}), r"scheduler.reduction_factor: must be above 1"),
    (lambda d: d.update(scheduler={"grace_period": 50}), r"scheduler.grace_period: 50 is beyond"),
    (lambda d: d.update(resources={"gpus_per_trial": -1}), r"resources.gpus_per_trial: must be at least 0"),
    (lambda d: d.update(resources={"memory": "lots"}), r"resources.memory: 'lots': write bytes or a size"),
    (lambda d: d.update(resources={"memory": "4.4XB"}), r"resources.memory: '4.4XB'"),
    (lambda d: d.update(resources={"memory": -1}), r"resources.memory: must be at least 0"),
    (lambda d: d.update(resources={"memory": True}), r"resources.memory: expected bytes"),
    (lambda d: d.update(resources={"memory": "1e999GB"}), r"resources.memory: '1e999GB': not a finite size"),
    (lambda d: d.update(pipeline={"datasets": ["SVHN"]}), r"pipeline.datasets\[0\]: unknown dataset"),
    (lambda d: d["params"].update(n_activations={"type": "int", "low": 1, "high": 300}),
     r"params.n_activations: value 300 is invalid"),
])
def test_bad_space_names_the_key(patch, message):
    data = copy.deepcopy(BASE)
    patch(data)
    with pytest.raises(UserError, match=message) as info:
        from_dict(data, source="x.yaml")
    assert "\n" not in str(info.value) and str(info.value).startswith("search space x.yaml: ")


def test_bad_space_exits_2_and_starts_nothing(tmp_path, capsys):
    bad = copy.deepcopy(BASE)
    bad["params"]["inner_lr"] = {"type": "loguniform", "low": -1, "high": 0.1}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    storage = tmp_path / "results"
    for command in ("search", "pipeline"):
        assert cli.main([command, "--space", str(path), "--name", "x", "--storage", str(storage)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "params.inner_lr.low" in err[0]
    assert not storage.exists()


def test_unreadable_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_space(tmp_path / "missing.yaml")
    (tmp_path / "broken.yaml").write_text("metric: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_space(tmp_path / "broken.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="expected a mapping"):
        load_space(tmp_path / "list.yaml")


def test_flags_override_and_recheck():
    space = load_space(REPO / "search_spaces" / "smoke.yaml")
    over = space.with_overrides(num_samples=3, max_concurrent=1, gpus_per_trial=0.5, top=1, datasets=["MNIST"])
    assert (over.num_samples, over.max_concurrent, over.gpus_per_trial, over.top) == (3, 1, 0.5, 1)
    assert over.pipeline.datasets == ["MNIST"] and over.params.keys() == space.params.keys()


@pytest.mark.parametrize("raw, expected", [(1000, 1000), ("4.4GB", 4_400_000_000), ("512MiB", 512 * 2**20),
                                           ("2 gb", 2_000_000_000), ("1e3", 1000), ("0.5KiB", 512)])
def test_memory_resource_parses_and_reaches_tune(raw, expected):
    """`resources.memory` in bytes or with a unit; it survives search.json's round trip and is what
    the trials ask Tune for (with_resources's dict; a real trial's grant is read back in test_study)."""
    from dnn_search.search.space import tune_resources
    data = copy.deepcopy(BASE)
    data["resources"] = {"cpus_per_trial": 1, "memory": raw}
    space = from_dict(data)
    assert space.memory_per_trial == expected
    assert from_dict(space.to_dict()).memory_per_trial == expected
    assert tune_resources(space.cpus_per_trial, space.gpus_per_trial, space.memory_per_trial) == {
        "cpu": 1.0, "gpu": 0.0, "memory": expected}
    assert from_dict(copy.deepcopy(BASE)).memory_per_trial == 0  # none declared: Ray's default
