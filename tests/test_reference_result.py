"""The committed reference result (results/mnist1d-sin, made by scripts/reproduce_mnist1d.sh) is
self-consistent: its summary table is exactly what its parquet files say."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from dnn_search.actfile import read_activation_file
from dnn_search.results.summary import write_summary

RESULT = Path(__file__).resolve().parent.parent / "results" / "mnist1d-sin"


@pytest.fixture(scope="module")
def tables():
    if not RESULT.is_dir():
        pytest.fail(f"{RESULT} is missing: run scripts/reproduce_mnist1d.sh")
    return {name: pd.read_parquet(RESULT / f"{name}.parquet") for name in ("trials", "validation", "hessian")}


def test_summary_is_regenerated_exactly_from_the_parquet_files(tmp_path):
    import shutil
    copy = tmp_path / "mnist1d-sin"
    shutil.copytree(RESULT, copy, ignore=shutil.ignore_patterns("summary.md", "report*", "activations"))
    assert (RESULT / "summary.md").read_text() == write_summary(copy, "mnist1d-sin")


def test_the_experiment_has_what_the_issue_asks(tables):
    validation = tables["validation"]
    exported = set(validation["trial_id"].astype(str))
    trials = tables["trials"].set_index("trial_id")
    assert sorted(int(trials.loc[t, "n_activations"]) for t in exported) == [1, 2]  # best homogeneous + diverse
    for (_, mode), group in validation.groupby(["trial_id", "mode"]):
        assert len(group) >= 10, f"{mode}: fewer than 10 seeds"
    assert {"pure", "single:1", "single:2", "diverse"} <= set(validation["mode"])
    hessian = tables["hessian"]
    assert set(zip(hessian["trial_id"], hessian["mode"])) == set(zip(validation["trial_id"], validation["mode"]))
    run = json.loads((RESULT / "run.json").read_text())
    assert run["wall_seconds"] > 0 and "mnist1d_reference.yaml" in run["command"]
    for folder in (RESULT / "activations").iterdir():
        for suffix in ("npz", "txt"):
            loaded = read_activation_file(next(folder.glob(f"*.{suffix}")))
            assert loaded.n == int(trials.loc[folder.name, "n_activations"])
