"""Golden search: a search with one trial at a time is deterministic (seeded TPE, ASHA deciding on
results in a fixed order, seeded trials, the reference implementation, one thread per trial), so
its tables must stay bit-equal across refactors of the orchestration. The golden tables were
recorded with `python tests/test_golden_search.py --record` before the orchestration was split into
packages; a deliberate change of behaviour re-records them (and says so in its commit).

The search with two concurrent trials is not deterministic (TPE and ASHA see results in the order
trials finish), so it cannot serve here."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import run_cli  # noqa: E402

pytestmark = pytest.mark.slow

_spec = importlib.util.spec_from_file_location("make_golden", Path(__file__).parents[1] / "scripts" / "make_golden.py")
_make_golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_make_golden)
GOLDEN = _make_golden.GOLDEN / "search"  # per kind of CPU, as the science goldens
SPACE = """\
metric: heldout_accuracy
num_samples: 5
max_concurrent: 1
sampler: {type: tpe, seed: 0, n_startup_trials: 2}
scheduler: {type: asha, grace_period: 1, reduction_factor: 2}
checkpoint_every: 2
compile: false
fixed: {inner_hidden_size: 16, outer_hidden_size: 8, epochs: 1, steps: 4, val_fraction: 0.1, impl: reference}
params:
  outer_lr: {type: loguniform, low: 0.04, high: 4.0}
  inner_lr: {type: loguniform, low: 0.001, high: 0.1}
  n_activations: {type: int, low: 1, high: 3}
top: 2
"""
TRIAL_COLUMNS = ["optuna_number", "status", "outer_lr", "inner_lr", "n_activations", "steps_done", "score",
                 "final_meta_loss", "final_heldout_accuracy", "best_heldout_accuracy"]
STEP_COLUMNS = ["optuna_number", "step", "meta_loss", "final_train_loss", "heldout_accuracy", "heldout_loss",
                "grad_norm"]


def golden_tables(folder: Path, env) -> tuple[pd.DataFrame, pd.DataFrame]:
    space = folder / "golden.yaml"
    space.write_text(SPACE)
    proc = run_cli(["search", "--space", space, "--name", "golden", "--storage", folder / "r", "--quiet"], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    exp = folder / "r" / "golden"
    trials = pd.read_parquet(exp / "trials.parquet")
    steps = pd.read_parquet(exp / "steps.parquet")
    steps = steps.merge(trials[["trial_id", "optuna_number"]], on="trial_id")
    trials = trials[TRIAL_COLUMNS].sort_values("optuna_number").reset_index(drop=True)
    steps = steps[STEP_COLUMNS].sort_values(["optuna_number", "step"]).reset_index(drop=True)
    return trials, steps


def test_search_tables_are_bit_equal_to_the_golden_run(tmp_path, search_env):
    if not GOLDEN.is_dir():
        pytest.skip(f"no golden search recorded for this kind of CPU ({_make_golden.machine_key()}); "
                    "see scripts/make_golden.py")
    trials, steps = golden_tables(tmp_path, search_env)
    pd.testing.assert_frame_equal(trials, pd.read_parquet(GOLDEN / "trials.parquet"), check_exact=True,
                                  check_dtype=False)
    pd.testing.assert_frame_equal(steps, pd.read_parquet(GOLDEN / "steps.parquet"), check_exact=True,
                                  check_dtype=False)
    assert (trials.status == "PRUNED").any() and (trials.status == "COMPLETED").any()


if __name__ == "__main__" and "--record" in sys.argv:
    import os
    import tempfile
    env = {**os.environ, "DNN_SEARCH_COMPILE": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    with tempfile.TemporaryDirectory() as tmp:
        env["HOME"] = tmp
        t, s = golden_tables(Path(tmp), env)
    GOLDEN.mkdir(parents=True, exist_ok=True)
    t.to_parquet(GOLDEN / "trials.parquet", index=False)
    s.to_parquet(GOLDEN / "steps.parquet", index=False)
    print(t.to_string())
