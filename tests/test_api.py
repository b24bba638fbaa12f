"""The package-root Python API: cheap to import, and the README example runs as written."""
from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

import dnn_search

REPO = Path(__file__).resolve().parents[1]


def test_import_is_cheap_and_never_imports_ray():
    code = ("import sys, dnn_search; "
            "print(sorted(m for m in ('ray', 'optuna', 'torch') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout.strip() == "[]"
    # The science layer as a whole (what Ray workers import) stays free of Ray and Optuna.
    code = ("import sys, dnn_search, dnn_search.jobs, dnn_search.validation, dnn_search.hessian, dnn_search.tasks; "
            "dnn_search.MetaLearner; dnn_search.tasks.task_names(); "
            "print(sorted(m for m in ('ray', 'optuna') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout.strip() == "[]"


def test_api_example_runs(monkeypatch, capsys):
    monkeypatch.setenv("DNN_SEARCH_COMPILE", "0")
    runpy.run_path(str(REPO / "docs" / "api_example.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "heldout_accuracy" in out and "heldout_loss" in out


def test_load_dataset_and_activations(tmp_path):
    data = dnn_search.load_dataset("mnist1d")
    assert data.x_train.shape == (4000, 40) and data.y_test.dtype == torch.int64
    cfg = dnn_search.MetaConfig(n_activations=3, inner_hidden_size=12, outer_hidden_size=4, epochs=1, steps=1)
    learner = dnn_search.MetaLearner.from_dataset(cfg, data)
    learner.step()
    from dnn_search.actfile import write_activation_files
    paths = write_activation_files(tmp_path, "api", learner.activations(), {"dataset": "MNIST1D"})
    exact = dnn_search.load_activations(paths["npz"])
    sampled = dnn_search.load_activations(paths["txt"])
    assert exact.is_exact() and not sampled.is_exact() and exact.n == sampled.n == 3
    np.testing.assert_array_equal(exact.grid_y, sampled.grid_y)
    assert sorted(dir(dnn_search)) == sorted(set(dir(dnn_search)))
    assert {"MetaConfig", "MetaLearner", "load_dataset", "load_activations"} <= set(dnn_search.__all__)


def test_readme_shows_the_example_that_runs():
    """The README's notebook example is exactly docs/api_example.py (which the test above runs)."""
    example = (REPO / "docs" / "api_example.py").read_text().strip()
    assert len(example.splitlines()) == 5
    assert f"```python\n{example}\n```" in (REPO / "README.md").read_text()


def test_open_search_reads_a_real_pipeline(pipeline_run):
    exp, _, _, _ = pipeline_run
    res = dnn_search.open_search(exp.name, storage=exp.parent)
    assert len(res.trials) == 4 and set(res.steps.trial_id) <= set(res.trials.trial_id)
    assert res.record.name == exp.name and res.record.params == ["outer_lr", "inner_lr", "n_activations"]
    assert res.validation is not None and {"test_accuracy", "test_loss"} <= set(res.validation.columns)
    assert res.study is not None and len(res.study.trials) == 4
