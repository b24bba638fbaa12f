"""A forecast task through a diversity study's analysis: the tiny Hénon–Heiles smoke study
(search_spaces/study_smoke_hh.yaml: 2 arms × 2 meta-seeds × 2 outer steps, R = 2, forecasts from 2 test
trajectories), made by the study's own code in this process: its split and study.json writers, each
replicate's meta-learning (`replicate.run_replicate`, as the replicate trial calls it), each training
through the validation trial's own `train_network` (run_mode, the row, its file) on the batches the
driver builds (`study_run._batch`), then `write_study_results`. Only the Ray/Tune scheduling is left
out: the same study through `dnn-search study` took 50 s here (its ~1 s forecasts per training and Tune's
start-up). To stay cheap it trains each replicate's primary network, and pure on each arm's first
replicate only (every training forecasts for ~1 s: 1000 RK4 steps of the HNN's gradient field).
Its summary's forecast table is recomputed from validation.parquet, and its primary contrast's realised
power (log-MSE scale, the ratio margin) from variance.parquet."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO
from tests.test_study import assert_realised_power

pytestmark = pytest.mark.slow

TRAJECTORIES, K, RUNS = 2, 2, 2


@pytest.fixture(scope="module")
def hh_study(tmp_path_factory) -> Path:
    from dnn_search.actfile import read_activation_file
    from dnn_search.data import load_dataset
    from dnn_search.metalearn import MetaConfig
    from dnn_search.replicate import run_replicate
    from dnn_search.results.study_analysis import write_study_results
    from dnn_search.results.study_record import (STUDY_VALIDATION_DIR, replicate_folder, replicates_of, selection_seed,
                                                 write_study_record)
    from dnn_search.search.study_plan import validation_jobs
    from dnn_search.search.study_run import _batch, _settings, _write_split
    from dnn_search.data import validation_data
    from dnn_search.search.study_spec import load_study
    from dnn_search.search.study_trainables import train_network
    from dnn_search.splits import selection_split
    space = REPO / "search_spaces" / "study_smoke_hh.yaml"
    spec = load_study(space)
    exp = tmp_path_factory.mktemp("hh_study") / "hh"
    exp.mkdir()
    write_study_record(exp, {"name": "hh", "spec": spec.to_dict(), "space_file": str(space), "created": "",
                             "resumes": []})
    _write_split(exp, spec)
    data = load_dataset("HenonHeiles")
    rest, _ = selection_split(data, spec.selection_fraction, selection_seed(spec))
    for rep in replicates_of(spec):  # as search/study_trainables.replicate_trial
        cfg = MetaConfig.from_dict({**spec.arm_config(spec.arm(rep.arm)), "seed": rep.meta_seed})
        outcome = run_replicate(cfg, data, rest, replicate_folder(exp, rep.key), grad_norm_limit=spec.grad_norm_limit,
                                checkpoint_every=spec.checkpoint_every,
                                metadata={"arm": rep.arm, "replicate": rep.key, "meta_seed": rep.meta_seed})
        assert outcome.status == "COMPLETED"
    out_dir = exp / STUDY_VALIDATION_DIR
    out_dir.mkdir()
    settings = _settings(spec)
    forecast_data = validation_data("HenonHeiles", None, spec.forecast_trajectories)
    for rep in replicates_of(spec):  # as study_validation_trial, on the batch the driver builds
        arm = spec.arm(rep.arm)
        jobs = [j for j in validation_jobs(spec, [rep]) if j.mode == arm.primary or (j.mode, rep.index) == ("pure", 0)]
        batch = _batch(exp, spec, rep, jobs, out_dir)
        context = (read_activation_file, forecast_data, batch, settings, "cpu", "test")
        for job in batch["trainings"]:
            assert train_network(context, job, job["validation"], "primary")
    write_study_results(exp, spec, "hh")
    return exp


def _forecast_table(summary: str) -> dict[tuple[str, str], list[str]]:
    """The forecast section's rows of summary.md by (arm, network)."""
    lines = summary.splitlines()
    start = lines.index("## Forecasts (descriptive)")
    header = next(i for i in range(start, len(lines)) if lines[i].startswith("| arm | network | trainings |"))
    assert lines[header].split("|")[4:-1] == [" median rollout_mse ", " median energy_drift ", " diverged / forecasts "]
    out = {}
    for line in lines[header + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        out[(cells[0], cells[1].removesuffix(" (primary)"))] = cells[2:]
    return out


def test_forecast_table_is_recomputed_from_validation_parquet(hh_study):
    """Per arm and network (primary, single:k, pure, std:*; controls and other protocols aside): the
    median rollout_mse and energy_drift over every (replicate, seed) row, and the diverged forecasts
    out of all made, each row having made the file's 2."""
    v = pd.read_parquet(hh_study / "validation.parquet")
    assert set(v["forecasts"]) == {TRAJECTORIES} and v["rollout_diverged"].between(0, TRAJECTORIES).all()
    table = _forecast_table((hh_study / "summary.md").read_text())
    assert set(table) == {("n1", "single:1"), ("n1", "pure"), ("n2", "diverse"), ("n2", "pure")}
    for (arm, mode), group in v[v["protocol"] == "primary"].groupby(["arm", "mode"]):
        trainings, rollout, drift, diverged = table[(arm, mode)]
        assert int(trainings) == len(group) == (RUNS if mode == "pure" else K * RUNS)  # pure: first replicate
        for cell, column in ((rollout, "rollout_mse"), (drift, "energy_drift")):
            finite = group[column][group[column].notna()]
            assert cell == (f"{finite.median():.3g}" if len(finite) else "–"), (arm, mode, column)
        assert diverged == f"{int(group['rollout_diverged'].sum())} / {len(group) * TRAJECTORIES}", (arm, mode)


def test_forecast_table_networks_are_the_plans():
    """The committed Hénon–Heiles study's table rows, as its plan lists them: per arm, its primary
    network, single:k, pure and std:*; no control (copies, random, mix)."""
    from dnn_search.results.study_summary import forecast_networks
    from dnn_search.search.study_spec import load_study
    spec = load_study(REPO / "search_spaces" / "study_henonheiles.yaml")
    std = ["std:gelu", "std:silu", "std:tanh"]
    assert forecast_networks(spec) == [("n1", m) for m in ["single:1", "pure", *std]] + [
        ("n2", m) for m in ["diverse", "single:1", "single:2", "pure", *std]]


def test_forecast_table_numbers_exactly(hh_study):
    """The table's unrounded numbers (`forecast_rows`) against pandas' own medians and sums."""
    from dnn_search.results.study_record import read_spec
    from dnn_search.results.study_summary import forecast_rows
    from dnn_search.tasks import task_for_dataset
    v = pd.read_parquet(hh_study / "validation.parquet")
    rows = forecast_rows(v, read_spec(hh_study), task_for_dataset("HenonHeiles"))
    expected = v.groupby(["arm", "mode"]).agg(rollout_mse=("rollout_mse", "median"),
                                              energy_drift=("energy_drift", "median"),
                                              diverged=("rollout_diverged", "sum"), forecasts=("forecasts", "sum"))
    assert len(rows) == len(expected) == 4
    for r in rows:
        e = expected.loc[(r["arm"], r["mode"])]
        assert (r["diverged"], r["forecasts"]) == (e["diverged"], e["forecasts"])
        for column in ("rollout_mse", "energy_drift"):
            assert (math.isnan(r[column]) and math.isnan(e[column])) or r[column] == pytest.approx(e[column], rel=1e-12)
    # the smoke run's forecasts did not diverge: one real row edited into one whose 2 forecasts both did
    # (no rollout_mse or energy_drift left) is counted, and left out of the medians
    first = v[(v["arm"] == "n2") & (v["mode"] == "diverse")].index[0]
    edited = v.copy()
    edited.loc[first, ["rollout_diverged", "rollout_mse", "energy_drift"]] = [TRAJECTORIES, math.nan, math.nan]
    row = next(r for r in forecast_rows(edited, read_spec(hh_study), task_for_dataset("HenonHeiles"))
               if (r["arm"], r["mode"]) == ("n2", "diverse"))
    rest = v[(v["arm"] == "n2") & (v["mode"] == "diverse") & (v.index != first)]
    assert row["diverged"] == TRAJECTORIES + int(rest["rollout_diverged"].sum()) and row["forecasts"] == K * RUNS * 2
    assert row["rollout_mse"] == pytest.approx(rest["rollout_mse"].median(), rel=1e-12)
    assert row["energy_drift"] == pytest.approx(rest["energy_drift"].median(), rel=1e-12)


def test_forecasts_made_default_to_every_test_trajectory(hh_study):
    """Without study.forecast every test trajectory is forecast (50 for Hénon–Heiles), as the trials'
    own data (data.validation_data) holds them."""
    from dataclasses import replace

    from dnn_search.results.study_analysis import _forecasts_column
    from dnn_search.results.study_record import read_spec
    from dnn_search.data import validation_data
    spec = read_spec(hh_study)
    row = {"rollout_diverged": 0}
    assert _forecasts_column(spec, [row]) == TRAJECTORIES and _forecasts_column(spec, [{}]) is None
    everything = validation_data("HenonHeiles").trajectories_test.shape[0]
    assert _forecasts_column(replace(spec, forecast_trajectories=None), [row]) == everything == 50


def test_realised_power_on_the_log_scale(hh_study):
    """The one primary contrast (n2/diverse vs n1/single:1) gets tost_power at the ratio margin
    (log 0.8, log 1.25) from the log-MSE variance components."""
    from dnn_search.results.study_record import read_spec
    assert read_spec(hh_study).margin == pytest.approx((math.log(0.8), math.log(1.25)))
    assert assert_realised_power(hh_study) == 1


def test_report_page_shows_the_forecast_table(hh_study):
    """`dnn-search report` on the study embeds summary.md, the forecast table with it."""
    import io

    from dnn_search.results.report import run_report
    page = run_report(str(hh_study), out=io.StringIO()).read_text()
    assert "Forecasts (descriptive)" in page and "median energy_drift" in page and "realised power" in page
