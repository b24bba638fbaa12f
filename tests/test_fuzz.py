"""Property-based fuzzing of the search-space loader: any file gives either a valid SearchSpace or the
tool's own one-line UserError, never another exception. (The activation-file readers are fuzzed in
tests/test_actfile.py.)"""
from __future__ import annotations

import copy
import math

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dnn_search.errors import UserError
from dnn_search.search import pipeline_spec, samplers, schedulers
from dnn_search.search.space import PARAM_KEYS, RESOURCE_KEYS, TOP_KEYS, SearchSpace, from_dict, load_space

PIPELINE_KEYS, SAMPLER_KEYS, SCHEDULER_KEYS = pipeline_spec.KEYS, samplers.KEYS, schedulers.KEYS

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

VALID = {
    "metric": "heldout_accuracy", "num_samples": 4, "max_concurrent": 2,
    "sampler": {"type": "tpe", "seed": 0, "n_startup_trials": 2},
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
    "checkpoint_every": 2, "compile": False,
    "fixed": {"inner_hidden_size": 16, "outer_hidden_size": 8, "epochs": 1, "steps": 4, "val_fraction": 0.1},
    "params": {"outer_lr": {"type": "loguniform", "low": 0.04, "high": 4.0},
               "n_activations": {"type": "int", "low": 1, "high": 3}},
    "top": 2,
}

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                    st.sampled_from(["tpe", "asha", "loguniform", "int", "categorical", "uniform", "relu", "sin",
                                     "MNIST1D", "max", "min", "heldout_loss", "random", "none", "1e-3", ""]),
                    st.integers(0, 5))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.one_of(st.text(max_size=8), st.integers()),
                                                                       inner, max_size=4)),
                      max_leaves=10)
known_keys = st.sampled_from(sorted(set(TOP_KEYS) | set(SAMPLER_KEYS) | set(SCHEDULER_KEYS) | set(RESOURCE_KEYS)
                                    | set(PIPELINE_KEYS) | {"low", "high", "log", "choices", "type", "steps",
                                                            "outer_lr", "inner_lr", "n_activations", "activation"}))
keys = st.one_of(known_keys, st.text(max_size=8))


def _check(load):
    try:
        result = load()
    except UserError as exc:
        message = str(exc)
        assert message and "\n" not in message, repr(message)
        return None
    assert isinstance(result, SearchSpace)
    return result


@FUZZ
@given(content=st.binary(max_size=400))
def test_arbitrary_bytes(tmp_path, content):
    path = tmp_path / "space.yaml"
    path.write_bytes(content)
    _check(lambda: load_space(path))


@FUZZ
@given(text=st.text(max_size=300))
def test_arbitrary_text(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    _check(lambda: load_space(path))


@st.composite
def mutated_spaces(draw):
    """The valid space with a few keys replaced, added or removed at any depth."""
    data = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 4))):
        node = data
        # walk down into nested mappings
        while isinstance(node, dict) and node and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(node, key=str)))
            if not isinstance(node[key], dict):
                break
            node = node[key]
        if not isinstance(node, dict):
            continue
        action = draw(st.sampled_from(["set", "set", "drop"]))
        if action == "drop" and node:
            node.pop(draw(st.sampled_from(sorted(node, key=str))))
        else:
            node[draw(keys)] = draw(values)
    return data


@FUZZ
@given(data=mutated_spaces())
def test_yamlish_mappings(tmp_path, data):
    _check(lambda: from_dict(copy.deepcopy(data), source="fuzz.yaml"))
    # the same through a real YAML file
    try:
        text = yaml.safe_dump(data)
    except yaml.YAMLError:
        return
    path = tmp_path / "space.yaml"
    path.write_text(text)
    space = _check(lambda: load_space(path))
    if space is not None:
        # a valid space has sane numbers
        for p in space.params.values():
            if p.type in ("loguniform", "uniform", "int"):
                assert math.isfinite(float(p.low)) and math.isfinite(float(p.high)) and p.low <= p.high


@FUZZ
@given(param=st.dictionaries(st.sampled_from(sorted({k for ks in PARAM_KEYS.values() for k in ks} | {"step"})),
                             values, max_size=4),
       name=st.sampled_from(["outer_lr", "inner_lr", "n_activations", "activation", "steps", "bogus"]))
def test_arbitrary_param_specs(param, name):
    data = copy.deepcopy(VALID)
    data["params"][name] = param
    _check(lambda: from_dict(data, source="fuzz.yaml"))


@FUZZ
@given(key=st.sampled_from(TOP_KEYS), value=values)
def test_arbitrary_top_level_values(key, value):
    data = copy.deepcopy(VALID)
    data[key] = value
    _check(lambda: from_dict(data, source="fuzz.yaml"))


@FUZZ
@given(section=st.sampled_from(["sampler", "scheduler", "resources", "pipeline", "fixed"]),
       key=keys, value=values)
def test_arbitrary_section_values(section, key, value):
    data = copy.deepcopy(VALID)
    data.setdefault(section, {})[key] = value
    _check(lambda: from_dict(data, source="fuzz.yaml"))
