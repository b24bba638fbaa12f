"""The committed results (results/mnist1d-sin from scripts/reproduce_mnist1d.sh, results/henonheiles-sin
from scripts/reproduce_henonheiles.sh) are self-consistent and have what their issues ask: the summary
is exactly what the code makes of the parquet files, every (mode, optimiser) has at least 10 seeds,
picks could be made on a validation split, the run fit its time budget with each stage timed, and the
README quotes the numbers of the summary.

The diversity studies (issue 22) are pre-registered: each plan, space file and script is committed, and
the commit that last changed each is an ancestor of the commit its run recorded in run.json (a plan
edited after the run fails here). Checked for each result folder that exists; the history check is
skipped, with the reason, in a shallow clone or outside git."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
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


# name -> (script, space file, plan) of the pre-registered diversity studies (issue 22)
DIVERSITY = {
    "mnist1d-diversity": ("scripts/reproduce_mnist1d_diversity.sh", "search_spaces/study_mnist1d.yaml",
                          "results/plans/mnist1d-diversity.md"),
    "henonheiles-diversity": ("scripts/reproduce_henonheiles_diversity.sh", "search_spaces/study_henonheiles.yaml",
                              "results/plans/henonheiles-diversity.md"),
}
PRE_REGISTERED = ("scripts/reproduce_study_common.sh", "scripts/study_power.py")


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)


def _history_or_skip() -> None:
    """Skip (saying why) where the history cannot tell which commit came first."""
    inside = _git("rev-parse", "--is-inside-work-tree")
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        pytest.skip("not a git checkout: the plans' commits cannot be checked")
    if _git("rev-parse", "--is-shallow-repository").stdout.strip() == "true":
        pytest.skip("shallow clone: the history may not reach the plans' commits (git fetch --unshallow)")


def last_commit(path: str) -> str:
    out = _git("log", "-1", "--format=%H", "--", path).stdout.strip()
    assert out, f"{path} has no commit"
    return out


def precedes(earlier: str, later: str) -> bool:
    """Whether commit EARLIER is an ancestor of (or is) commit LATER; an unknown commit is an error."""
    proc = _git("merge-base", "--is-ancestor", earlier, later)
    assert proc.returncode in (0, 1), f"git merge-base {earlier} {later}: {proc.stderr.strip()}"
    return proc.returncode == 0


def pre_registration_problems(name: str, run: dict) -> list[str]:
    """What a run.json of study NAME gets wrong about its pre-registration (empty: nothing)."""
    script, space, plan = DIVERSITY[name]
    problems = []
    for key in ("commit", "plan_commit"):
        if not run.get(key):
            problems.append(f"run.json has no {key!r}")
    if problems:
        return problems
    if not precedes(run["plan_commit"], run["commit"]):
        problems.append(f"the plan commit recorded in run.json ({run['plan_commit'][:10]}) is not an ancestor of "
                        f"the run's commit ({run['commit'][:10]})")
    for path in (plan, space, script, *PRE_REGISTERED):
        if not precedes(last_commit(path), run["commit"]):
            problems.append(f"{path} was last changed in {last_commit(path)[:10]}, after the run's commit "
                            f"{run['commit'][:10]}")
    return problems


@pytest.mark.parametrize("name", sorted(DIVERSITY))
def test_diversity_plans_and_scripts_are_committed(name):
    for path in (*DIVERSITY[name], *PRE_REGISTERED):
        assert (REPO / path).is_file(), f"{path} is missing"
    _history_or_skip()
    for path in (*DIVERSITY[name], *PRE_REGISTERED):
        assert _git("ls-files", "--error-unmatch", path).returncode == 0, f"{path} is not tracked"


@pytest.mark.parametrize("name", sorted(DIVERSITY))
def test_diversity_plan_was_committed_before_its_run(name):
    folder = REPO / "results" / name
    if not folder.is_dir():
        pytest.skip(f"results/{name}/ does not exist yet: {DIVERSITY[name][0]} has not been run")
    run = json.loads((folder / "run.json").read_text())
    script, space, plan = DIVERSITY[name]
    assert run["script"] == script and run["space"] == space and run["plan"] == plan
    assert run["first_full_run"] is True and not run.get("test_run")
    _history_or_skip()
    assert pre_registration_problems(name, run) == []


def test_a_run_recorded_before_its_plan_is_caught():
    """The check itself: a run.json whose commit predates the plan (the commit before the plan's) is
    reported, as is one with no commit; one recorded at the plan's commit passes."""
    _history_or_skip()
    name = "mnist1d-diversity"
    plan_commit = last_commit(DIVERSITY[name][2])
    before = _git("rev-parse", f"{plan_commit}^").stdout.strip()
    if not before:
        pytest.skip("the plan's commit has no parent in this history")
    head = _git("rev-parse", "HEAD").stdout.strip()
    problems = pre_registration_problems(name, {"commit": before, "plan_commit": plan_commit})
    assert any("is not an ancestor" in p for p in problems) and any(DIVERSITY[name][2] in p for p in problems)
    assert pre_registration_problems(name, {"plan_commit": plan_commit}) == ["run.json has no 'commit'"]
    assert pre_registration_problems(name, {"commit": head, "plan_commit": plan_commit}) == []
