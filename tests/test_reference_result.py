"""The committed results (results/mnist1d-sin from scripts/reproduce_mnist1d.sh, results/henonheiles-sin
from scripts/reproduce_henonheiles.sh) are self-consistent and have what their issues ask: the summary
is exactly what the code makes of the parquet files, every (mode, optimiser) has at least 10 seeds,
picks could be made on a validation split, the run fit its time budget with each stage timed, and the
README quotes the numbers of the summary."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from dnn_search.actfile import read_activation_file
from dnn_search.results.comparison import compare
from dnn_search.results.summary import write_summary

REPO = Path(__file__).resolve().parent.parent
# name -> (script, space, hours allowed, standard baselines, plan)
RESULTS = {
    "mnist1d-sin": ("scripts/reproduce_mnist1d.sh", "search_spaces/mnist1d.yaml", 3,
                    {"std:relu", "std:gelu", "std:silu", "std:tanh", "std:elu"}),
    "henonheiles-sin": ("scripts/reproduce_henonheiles.sh", "search_spaces/henonheiles.yaml", 4,
                        {"std:gelu", "std:silu", "std:tanh"}),
}


@pytest.fixture(scope="module", params=sorted(RESULTS))
def result(request):
    folder = REPO / "results" / request.param
    if not folder.is_dir():
        pytest.fail(f"{folder} is missing: run {RESULTS[request.param][0]}")
    tables = {name: pd.read_parquet(folder / f"{name}.parquet") for name in ("trials", "validation", "hessian")}
    return request.param, folder, tables


def test_summary_is_regenerated_exactly_from_the_parquet_files(result, tmp_path):
    name, folder, _ = result
    copy = tmp_path / name
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("summary.md", "report*", "activations"))
    assert (folder / "summary.md").read_text() == write_summary(copy, name)


def test_the_experiment_has_what_the_issues_ask(result):
    name, folder, tables = result
    script, space_file, hours, standard = RESULTS[name]
    validation, trials = tables["validation"], tables["trials"].set_index("trial_id")
    assert set(validation["optimizer"]) == {"sgd", "rmsprop"}
    assert {"pure", *standard} <= set(validation["mode"])
    val_column = next(c for c in validation.columns if c.startswith("val_"))
    assert validation[val_column].notna().all()  # every network was scored on its held-out split
    shared = validation["mode"].isin(["pure", *standard])
    per_network = pd.concat([validation[shared].drop_duplicates(["optimizer", "mode", "seed"]), validation[~shared]])
    counts = per_network.groupby(["optimizer", "trial_id", "mode"]).seed.nunique()
    counts = pd.concat([counts, per_network[per_network["mode"].isin(["pure", *standard])].groupby(["optimizer", "mode"]).seed.nunique()])
    assert (counts >= 10).all(), counts[counts < 10]
    for trial_id, group in validation.groupby("trial_id"):
        n = int(trials.loc[trial_id, "n_activations"])
        assert ("diverse" in set(group["mode"])) == (n > 1)  # an n=1 network is never called diverse
        assert {f"single:{k}" for k in range(1, n + 1)} <= set(group["mode"])
    run = json.loads((folder / "run.json").read_text())
    assert 0 < run["wall_seconds"] <= hours * 3600 and space_file in run["command"] and run["script"] == script
    assert {"search_seconds", "validation_seconds", "hessian_seconds", "report_seconds"} <= set(run["stage_seconds"])
    record = json.loads((folder / "search.json").read_text())
    assert len(trials) == record["space"]["num_samples"]
    assert (REPO / "results" / "plans" / f"{name}.md").is_file()
    for comp in compare(validation, tables["trials"]):
        assert comp.split == "val"
        assert comp.picks["best diverse"] is None or comp.picks["best diverse"].kind == "diverse"
    for sub in (folder / "activations").iterdir():
        for suffix in ("npz", "txt"):
            loaded = read_activation_file(next(sub.glob(f"*.{suffix}")))
            assert loaded.n == int(trials.loc[sub.name, "n_activations"])


def test_readme_quotes_the_summary(result):
    """The README's Results tables carry the test means of pure and of each pick, as the summary
    computes them from the committed tables (so a re-run that changes them must change the README)."""
    name, _, tables = result
    readme = (REPO / "README.md").read_text()
    assert f"results/{name}/" in readme
    for comp in compare(tables["validation"], tables["trials"]):
        for role in ("pure", "best diverse"):
            arm = comp.picks[role]
            if arm is None:
                continue
            values = [v for v in arm.test.values() if math.isfinite(v)]
            if comp.view.log:
                mean = math.exp(sum(math.log(v) for v in values) / len(values))
                text = f"{mean:.3g}"
            else:
                text = f"{sum(values) / len(values) * comp.view.scale:.{comp.view.digits}f}"
            assert text in readme, f"{name} {comp.optimizer} {role}: {text} is not in the README"


def test_readme_counts_every_failed_trial(result):
    """The README's account of each committed run says how many of its trials FAILED (diverged): a
    run's failures are part of its result, not a footnote of the tables."""
    name, _, tables = result
    failed = int((tables["trials"]["status"] == "FAILED").sum())
    readme = (REPO / "README.md").read_text()
    start = readme.index(f"(results/{name}/)")
    account = readme[start:readme.find("\n### ", start)]
    said = "No trial FAILED" if failed == 0 else f"**{failed} FAILED**"
    assert said in account, f"README's account of {name} does not say '{said}' ({failed} trials FAILED)"
