"""The physics tasks end to end (issue 11): each smoke space through `dnn-search pipeline` (a real
local Ray: search, export, validation, Hessian, summary) and `dnn-search report`, as a new user runs
them. One pipeline per task, shared by the tests of this module."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, run_cli

TASKS = {"VanDerPol": "vanderpol_smoke.yaml", "HenonHeiles": "henonheiles_smoke.yaml"}


@pytest.fixture(scope="module", params=sorted(TASKS))
def physics_run(request, tmp_path_factory, search_env):
    dataset = request.param
    root = tmp_path_factory.mktemp(dataset.lower())
    proc = run_cli(["pipeline", "--space", REPO / "search_spaces" / TASKS[dataset], "--name", "phys",
                    "--storage", root], search_env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = run_cli(["report", root / "phys"], search_env)
    assert report.returncode == 0, report.stderr[-3000:]
    return dataset, root / "phys", proc


def test_validation_reports_the_task_metrics(physics_run):
    dataset, exp, _ = physics_run
    val = pd.read_parquet(exp / "validation.parquet")
    columns = {"test_mse", "val_mse", "rollout_mse", "rollout_diverged"}
    assert columns <= set(val.columns) and "test_accuracy" not in val.columns
    assert ("energy_drift" in val.columns) == (dataset == "HenonHeiles")
    assert np.isfinite(val.test_mse).all() and np.isfinite(val.val_mse).all() and (val.test_mse > 0).all()
    assert ((val.rollout_diverged >= 0) & (val.rollout_diverged <= 50)).all()
    # the HNN gets only the smooth standard baselines; vanderpol_smoke.yaml runs none (standard: false)
    standard = {"std:gelu", "std:silu", "std:tanh"} if dataset == "HenonHeiles" else set()
    assert set(val["mode"]) - {"diverse"} - {m for m in val["mode"] if m.startswith("single:")} == {"pure", *standard}
    trials = pd.read_parquet(exp / "trials.parquet")
    assert set(trials.dataset) == {dataset} and trials.score.notna().any()
    hes = pd.read_parquet(exp / "hessian.parquet")
    assert len(hes) and np.isfinite(hes.top_eigenvalue).all() and np.isfinite(hes.trace).all()


def test_summary_and_report_speak_mse(physics_run):
    dataset, exp, proc = physics_run
    summary = (exp / "summary.md").read_text()
    assert "test mse" in summary and "accuracy" not in summary
    assert "ratio" in summary and "picked on validation" in summary.lower()
    assert "test mse" in proc.stdout  # the pipeline printed the summary
    report = (exp / "report.html").read_text()
    assert (exp / "report_figures" / f"forecast_{dataset}_sgd.png").is_file()
    assert f"forecast of a {dataset} test trajectory" in report
