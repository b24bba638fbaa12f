"""The science layer reproduces its recorded outputs bit for bit (tests/golden/<CPU kind>, scripts/make_golden.py).

Each case regenerates one golden into a temporary folder with the same writers and compares every
number exactly: tensors with torch.equal, arrays with np.array_equal, table cells and JSON values with
==. Only wall-clock seconds, absolute paths and library versions are left out. After a deliberate
change of the fast path's numerics, re-record only those with `scripts/make_golden.py fast`.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("make_golden", REPO / "scripts" / "make_golden.py")
make_golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_golden)
GOLDEN = make_golden.GOLDEN


@pytest.fixture(autouse=True)
def recorded_for_this_cpu():
    if not GOLDEN.is_dir():
        pytest.skip(f"no goldens recorded for this kind of CPU ({make_golden.machine_key()}; recorded: "
                    f"{', '.join(p.name for p in GOLDEN.parent.iterdir() if p.is_dir())}): bits are only "
                    "reproducible on the kind that recorded them; see scripts/make_golden.py")

VOLATILE = {"seconds", "activation_file", "model_path", "model", "versions", "files"}


@pytest.fixture(autouse=True)
def deterministic(monkeypatch):
    monkeypatch.setenv("DNN_SEARCH_COMPILE", "0")
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _names(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _same_json(a, b, where=""):
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) - VOLATILE == set(b) - VOLATILE, where
        for k in set(a) - VOLATILE:
            _same_json(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same_json(x, y, f"{where}[{i}]")
    else:
        assert a == b or (a != a and b != b), f"{where}: {a!r} != {b!r}"


def _same_file(new: Path, old: Path) -> None:
    if new.suffix == ".pt":
        a = torch.load(new, weights_only=True)
        b = torch.load(old, weights_only=True)
        assert set(a) == set(b), new.name
        for k in a:
            assert torch.equal(a[k], b[k]), f"{new.name}: {k}"
    elif new.suffix == ".npz":
        with np.load(new, allow_pickle=False) as a, np.load(old, allow_pickle=False) as b:
            assert set(a.files) == set(b.files), new.name
            for k in a.files:
                assert np.array_equal(a[k], b[k]), f"{new.name}: {k}"
    elif new.suffix == ".json":
        _same_json(json.loads(new.read_text()), json.loads(old.read_text()), new.name)
    elif new.suffix in (".csv", ".parquet"):
        read = pd.read_csv if new.suffix == ".csv" else pd.read_parquet
        a, b = read(new), read(old)
        assert list(a.columns) == list(b.columns), new.name
        for column in a.columns:
            if column in VOLATILE:
                continue
            _same_json([_plain(v) for v in a[column]], [_plain(v) for v in b[column]], f"{new.name}:{column}")
    else:
        assert new.read_bytes() == old.read_bytes(), new.name


def _plain(value):
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _same_tree(new: Path, old: Path) -> None:
    assert _names(new) == _names(old)
    for name in _names(old):
        _same_file(new / name, old / name)


@pytest.mark.parametrize("impl", ["reference", "fast"])
@pytest.mark.parametrize("name", list(make_golden.CONFIGS))
def test_metalearn_matches_golden(tmp_path, impl, name):
    folder = make_golden.metalearn(impl, name, tmp_path)
    _same_tree(folder, GOLDEN / f"metalearn_{impl}" / name)


def test_validate_and_hessian_match_golden(tmp_path):
    # Both start from the recorded reference activations and the recorded model, so a change in
    # meta-learning cannot hide a change here (or the other way round).
    _same_tree(make_golden.validate(GOLDEN, tmp_path), GOLDEN / "validate")
    _same_tree(make_golden.hessian(GOLDEN, tmp_path), GOLDEN / "hessian")
