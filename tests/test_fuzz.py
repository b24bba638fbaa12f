"""Property-based fuzzing of the search-space loader: any file gives either a valid SearchSpace or the
tool's own one-line UserError, never another exception. (The activation-file readers are fuzzed in
tests/test_actfile.py.)"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import signal

import yaml
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from dnn_search.errors import UserError
from dnn_search.results.rungs import MAX_RUNGS
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


# ------------------------------------------------------------------ numbers: parse -> rungs -> summary

numbers = st.one_of(st.none(), st.integers(-3, 40), st.integers(-10**9, 10**9),
                    st.floats(allow_nan=True, allow_infinity=True), st.floats(1.0, 3.0, exclude_min=True),
                    st.sampled_from([1.5, 2.5, 1.01, 1.0001, 1 + 2**-40, 1e300, 0.5, 10**18]))


def mostly(valid):
    """Values of the key's valid kind seven times in eight (else any number), so that most examples
    pass the loader and reach the rungs and the summary (the other fuzzers here cover refusals)."""
    return st.integers(0, 7).flatmap(lambda pick: numbers if pick == 0 else valid)


@contextlib.contextmanager
def time_limit(seconds: float):
    """Fail (TimeoutError) instead of hanging: a rung loop that never ends is the bug this guards."""
    def expired(signum, frame):
        raise TimeoutError(f"did not finish within {seconds} s")
    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _ablation_of(space: SearchSpace) -> tuple[list[int], list[str]]:
    """The rungs of the space as recorded, and the summary's ablation section on tables holding one
    trial that reached the top and one stopped at the first rung."""
    import pandas as pd

    from dnn_search.results.ablation import ablation_markdown, rungs_of
    recorded = json.loads(json.dumps(space.to_dict()))  # as search.json holds it
    rungs = rungs_of(recorded)
    steps = pd.DataFrame([{"trial_id": "a", "step": s, space.metric: 0.5} for s in rungs]
                         + [{"trial_id": "b", "step": rungs[0], space.metric: 0.25}])
    trials = pd.DataFrame([{"trial_id": "a", "status": "COMPLETED", "n_activations": 2, "score": 0.5},
                           {"trial_id": "b", "status": "PRUNED", "n_activations": 1, "score": 0.25}])
    return rungs, ablation_markdown(trials, steps, recorded, space.metric, space.mode, 1.0, 4)


@settings(max_examples=50, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow])
@example(kind="asha", grace=1, factor=1.5, scheduler_max=None, steps=4, sampled_steps=None, others={})
@given(kind=st.sampled_from(["asha", "asha", "hyperband", "hyperband", "none", None]),
       grace=st.one_of(st.none(), mostly(st.integers(1, 12))),
       factor=st.one_of(st.none(), mostly(st.one_of(st.integers(2, 8), st.floats(1.05, 6.0)))),
       scheduler_max=st.one_of(st.none(), st.none(), mostly(st.integers(1, 10**4))),
       steps=mostly(st.one_of(st.integers(1, 400), st.integers(1, 10**7))),
       sampled_steps=st.one_of(st.none(), st.none(), st.tuples(mostly(st.integers(1, 50)), mostly(st.integers(2, 500)))),
       others=st.dictionaries(st.sampled_from(["num_samples", "checkpoint_every", "max_failures", "top"]),
                              mostly(st.integers(2, 20)), max_size=2))
def test_every_accepted_space_finishes_its_rungs_and_summary(kind, grace, factor, scheduler_max, steps,
                                                             sampled_steps, others):
    """Every space file the loader accepts also finishes: its rungs are few, sorted whole steps up to
    the trials' maximum, and the summary's ablation section comes back (issue 18: factor 1.5 hung)."""
    data = copy.deepcopy(VALID)
    data.update(others)
    data["scheduler"] = {k: v for k, v in (("type", kind), ("grace_period", grace), ("reduction_factor", factor),
                                           ("max_steps", scheduler_max)) if v is not None}
    refused = {"hyperband": ("grace_period",), "none": ("grace_period", "reduction_factor")}.get(kind, ())
    for key in refused:  # keys these types refuse (one line): kept now and then
        if data["scheduler"].get(key) not in (None, 1, 2):
            del data["scheduler"][key]
    data["fixed"]["steps"] = steps
    if sampled_steps is not None:
        del data["fixed"]["steps"]
        data["params"]["steps"] = {"type": "int", "low": sampled_steps[0], "high": sampled_steps[1]}
    space = _check(lambda: from_dict(data, source="fuzz.yaml"))
    if space is None:
        return
    with time_limit(3.0):
        rungs, section = _ablation_of(space)
    top = space.max_steps()
    assert rungs == sorted(set(rungs)) and all(isinstance(r, int) for r in rungs)
    # HyperBand: up to s + 1 rungs in bracket s < MAX_RUNGS; ASHA: at most MAX_RUNGS; and the top step
    assert 1 <= rungs[0] and rungs[-1] == top and len(rungs) <= min(top, MAX_RUNGS * (MAX_RUNGS + 1) // 2 + 1)
    assert rungs[:-1] == space.milestones()  # the steps the trials checkpoint at
    assert "### Outer steps" in section
    shown = [int(line.split("|")[1]) for line in section[section.index("### Outer steps") + 4:]
             if line.startswith("| ") and line.split("|")[1].strip().isdigit()]
    assert shown[:len(rungs)] == rungs
