"""Activation files: write/read round trips, the original naming scheme, refusal of bad or
malicious input (always a UserError naming the file)."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dnn_search.activations import ActivationSet, default_init, standard_grid
from dnn_search.actfile import (LoadedActivations, original_stem, parse_original_name,
                                read_activation_file, write_activation_files)
from dnn_search.errors import UserError


def make_acts(n=3, ho=50, base="sin", seed=0) -> ActivationSet:
    return ActivationSet.from_tensors(base, default_init(n, ho, torch.Generator().manual_seed(seed),
                                                         dtype=torch.float64))


STEM = original_stem("MNIST1D", "tanh", 3, "cpu", 7, 0.01, 0.4, 300, 2)


@pytest.fixture
def written(tmp_path):
    acts = make_acts(base="tanh")
    paths = write_activation_files(tmp_path / "acts", STEM, acts, {"trial_id": "abc", "accuracy": 0.9})
    return acts, paths


# ------------------------------------------------------------------------------------ round trips

def test_write_creates_three_files(written):
    _, paths = written
    assert set(paths) == {"txt", "npz", "json"}
    assert sorted(p.name for p in paths["txt"].parent.iterdir()) == sorted(p.name for p in paths.values())
    meta = json.loads(paths["json"].read_text())
    assert meta["trial_id"] == "abc" and meta["base"] == "tanh" and meta["n_activations"] == 3
    assert meta["files"]["npz"] == paths["npz"].name


def test_npz_round_trip_is_exact(written):
    acts, paths = written
    with np.load(paths["npz"], allow_pickle=False) as f:  # no object arrays anywhere
        assert f["base"].shape == () and str(f["base"]) == "tanh"
        assert f["x"].shape == (100,) and f["y"].shape == (3, 100)
    loaded = read_activation_file(paths["npz"])
    assert isinstance(loaded, LoadedActivations) and loaded.is_exact()
    assert loaded.base == "tanh" and loaded.n == 3 and loaded.source == paths["npz"]
    for key in ("w1", "b1", "w2", "b2"):
        assert np.array_equal(getattr(loaded.exact, key), getattr(acts, key))
    assert np.array_equal(loaded.grid_x, standard_grid())
    assert loaded.metadata["trial_id"] == "abc"
    assert read_activation_file(paths["npz"], base="elu").base == "elu"  # the argument wins


def test_txt_round_trip_matches_evaluate(written):
    acts, paths = written
    rows = paths["txt"].read_text().strip().split("\n")
    assert len(rows) == 3 and all(len(r.split(" ")) == 100 for r in rows)
    loaded = read_activation_file(paths["txt"])
    assert not loaded.is_exact() and loaded.n == 3 and loaded.base == "tanh"
    expected = acts.evaluate(standard_grid())
    np.testing.assert_allclose(loaded.grid_y, expected, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(loaded.grid_x, np.linspace(-5, 5, 100))
    # Name fields and the sibling JSON both feed the metadata; the JSON wins where they overlap.
    assert loaded.metadata["seed"] == 7 and loaded.metadata["trial_id"] == "abc"


def test_txt_json_overrides_name(tmp_path):
    path = tmp_path / f"{STEM}.txt"
    np.savetxt(path, make_acts(n=2).evaluate(standard_grid()))
    assert read_activation_file(path).metadata["activation"] == "tanh"
    path.with_suffix(".json").write_text(json.dumps({"activation": "elu", "run": 9}))
    loaded = read_activation_file(path)
    assert loaded.base == "elu" and loaded.metadata["run"] == 9 and loaded.metadata["steps"] == 300


def test_original_name_round_trip():
    stem = original_stem("MNIST1D", "sin", 4, "cuda", 12, 0.01, 1e-05, 300, 3)
    assert stem == ("MNIST1D_sin_4_cuda_activations_start_seed_12_inner_lr_0.01_outer_lr_1e-05"
                    "_steps_300_run_3")
    assert parse_original_name(stem + ".txt") == {
        "dataset": "MNIST1D", "activation": "sin", "n_activations": 4, "device": "cuda", "seed": 12,
        "inner_lr": 0.01, "outer_lr": 1e-05, "steps": 300, "run": 3}
    # No suffix, a path, and a dataset name with underscores.
    assert parse_original_name(stem)["outer_lr"] == 1e-05
    info = parse_original_name(f"/x/y/{original_stem('my_data', 'elu', 1, 'gpu', 0, 0.5, 2, 10, 0)}.npz")
    assert info["dataset"] == "my_data" and info["activation"] == "elu" and info["outer_lr"] == 2.0
    assert parse_original_name("activations.txt") is None
    assert parse_original_name(stem.replace("_run_3", "_run_x")) is None


def test_fifty_column_single_row_txt(tmp_path):
    path = tmp_path / "custom.txt"
    x = np.linspace(-5, 5, 50)
    path.write_text(" ".join(repr(float(v)) for v in np.sin(x)) + "\n")
    loaded = read_activation_file(path, base="sin")
    assert loaded.n == 1 and loaded.grid_y.shape == (1, 50)
    np.testing.assert_allclose(loaded.grid_x, x)
    np.testing.assert_allclose(loaded.grid_y[0], np.sin(x))


# ------------------------------------------------------------------------------------ bad input

def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


GOOD = {"w1": np.ones((2, 5)), "b1": np.ones((2, 5)), "w2": np.ones((2, 5)), "b2": np.ones(2),
        "base": np.array("sin")}

BAD_NPZ = {
    "missing key": npz_bytes(**{k: v for k, v in GOOD.items() if k != "w2"}),
    "wrong shape": npz_bytes(**{**GOOD, "b2": np.ones(3)}),
    "1-d weights": npz_bytes(**{**GOOD, "w1": np.ones(5)}),
    "nan": npz_bytes(**{**GOOD, "b1": np.full((2, 5), np.nan)}),
    "inf grid": npz_bytes(**GOOD, x=np.linspace(-5, 5, 4), y=np.full((2, 4), np.inf)),
    "grid shape": npz_bytes(**GOOD, x=np.linspace(-5, 5, 4), y=np.ones((3, 4))),
    "half grid": npz_bytes(**GOOD, x=np.linspace(-5, 5, 4)),
    "string weights": npz_bytes(**{**GOOD, "w1": np.full((2, 5), "a")}),
    "bad base": npz_bytes(**{**GOOD, "base": np.array("relu")}),
    "numeric base": npz_bytes(**{**GOOD, "base": np.array(3.0)}),
    "not a zip": b"hello world",
    "empty": b"",
    "plain npy": (lambda b: (np.save(b, np.ones(3)), b.getvalue())[1])(io.BytesIO()),
    "truncated zip": npz_bytes(**GOOD)[:200],
}


@pytest.mark.parametrize("case", sorted(BAD_NPZ))
def test_bad_npz_raises_user_error(tmp_path, case):
    path = tmp_path / "acts.npz"
    path.write_bytes(BAD_NPZ[case])
    with pytest.raises(UserError) as err:
        read_activation_file(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_npz_without_base_needs_argument(tmp_path):
    path = tmp_path / "acts.npz"
    path.write_bytes(npz_bytes(**{k: v for k, v in GOOD.items() if k != "base"}))
    with pytest.raises(UserError, match="--activation"):
        read_activation_file(path)
    loaded = read_activation_file(path, base="elu")
    assert loaded.base == "elu" and loaded.grid_y.shape == (2, 100)


BAD_TXT = {
    "empty": "",
    "blank lines": "\n  \n\n",
    "non-numeric": "1 2 3\n4 five 6\n",
    "ragged": "1 2 3\n4 5\n",
    "nan": "1 2 nan\n",
    "inf": "1 inf 3\n",
    "one column": "1\n2\n3\n",
}


@pytest.mark.parametrize("case", sorted(BAD_TXT))
def test_bad_txt_raises_user_error(tmp_path, case):
    path = tmp_path / "bad.txt"
    path.write_text(BAD_TXT[case])
    with pytest.raises(UserError) as err:
        read_activation_file(path, base="sin")
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_txt_without_base_asks_for_activation(tmp_path):
    path = tmp_path / "plain.txt"
    path.write_text("1 2 3\n")
    with pytest.raises(UserError, match=r"pass --activation"):
        read_activation_file(path)


def test_missing_directory_and_unknown_suffix(tmp_path):
    with pytest.raises(UserError, match="activation file not found"):
        read_activation_file(tmp_path / "nope.npz")
    with pytest.raises(UserError, match="not a regular file"):
        read_activation_file(tmp_path)
    other = tmp_path / "acts.csv"
    other.write_text("1,2\n")
    with pytest.raises(UserError, match="acts.csv"):
        read_activation_file(other)


def test_broken_sidecar_json_is_user_error(written):
    _, paths = written
    paths["json"].write_text("{not json")
    with pytest.raises(UserError, match=paths["json"].name):
        read_activation_file(paths["npz"])


# ------------------------------------------------------------------------------- malicious pickle

class Payload:
    """Unpickling this creates the marker file: proof that untrusted code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def evil_npz(path, marker):
    evil = np.empty(1, dtype=object)
    evil[0] = Payload(marker)
    with zipfile.ZipFile(path, "w") as archive:
        for key, value in {**GOOD, "w1": evil, "base": evil}.items():
            member = io.BytesIO()
            np.save(member, value, allow_pickle=True)
            archive.writestr(f"{key}.npy", member.getvalue())


def test_malicious_pickle_is_refused_and_never_run(tmp_path):
    # The payload is live: loading it the unsafe way does create the marker.
    control, control_marker = tmp_path / "control.npz", tmp_path / "control-marker"
    evil_npz(control, control_marker)
    with np.load(control, allow_pickle=True) as f:
        f["w1"]
    assert control_marker.exists()

    path, marker = tmp_path / "evil.npz", tmp_path / "marker"
    evil_npz(path, marker)
    with pytest.raises(UserError, match="pickle"):
        read_activation_file(path)
    assert not marker.exists()


def test_raw_pickle_file_is_refused(tmp_path):
    import pickle
    path, marker = tmp_path / "evil.npz", tmp_path / "marker"
    path.write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(UserError, match="evil.npz"):
        read_activation_file(path)
    assert not marker.exists()


# ------------------------------------------------------------------------------------ fuzzing

def _read_or_user_error(path, content: bytes):
    path.write_bytes(content)
    try:
        result = read_activation_file(path, base="sin")
    except UserError as e:
        assert str(path) in str(e) or path.name in str(e)
        return
    assert isinstance(result, LoadedActivations)
    assert np.isfinite(result.grid_y).all() and result.grid_y.shape == (result.n, len(result.grid_x))


FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(content=st.binary(max_size=2000), suffix=st.sampled_from([".txt", ".npz"]))
def test_fuzz_arbitrary_bytes(tmp_path, content, suffix):
    _read_or_user_error(tmp_path / f"fuzz{suffix}", content)


@FUZZ
@given(text=st.text(max_size=500) | st.lists(
    st.lists(st.one_of(st.floats(), st.integers(), st.sampled_from(["x", "#", "", "nan", "1e999"])),
             max_size=6).map(lambda row: " ".join(map(str, row))), max_size=6).map("\n".join),
    suffix=st.sampled_from([".txt", ".npz"]))
def test_fuzz_arbitrary_text(tmp_path, text, suffix):
    _read_or_user_error(tmp_path / f"fuzz{suffix}", text.encode("utf-8", "surrogatepass"))


VALID_NPZ = npz_bytes(**GOOD, x=np.linspace(-5, 5, 4), y=np.zeros((2, 4)))


@FUZZ
@given(start=st.integers(0, len(VALID_NPZ) - 1), patch=st.binary(min_size=1, max_size=16),
       cut=st.booleans())
def test_fuzz_corrupted_npz(tmp_path, start, patch, cut):
    # Damage a real archive so the zip and .npy parsers, not only the magic check, are exercised.
    content = VALID_NPZ[:start] + patch + (b"" if cut else VALID_NPZ[start + len(patch):])
    _read_or_user_error(tmp_path / "fuzz.npz", content)
