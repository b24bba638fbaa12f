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
import re
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
    "mnist1d-diversity-2": ("scripts/reproduce_mnist1d_diversity_2.sh", "search_spaces/study_mnist1d_2.yaml",
                            "results/plans/mnist1d-diversity-2.md"),
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


# ------------------------------------------------------------------------------ the diversity studies' numbers
# Each committed study is checked from its own tables: its summary is what the code renders from them, its
# comparisons are what the study's statistics make of its validation table, and every number the README's
# account of it quotes is one of those (or a design number of its plan, space file or run record).

def _study_folder(name: str) -> Path:
    folder = REPO / "results" / name
    if not folder.is_dir():
        pytest.skip(f"results/{name}/ does not exist yet: {DIVERSITY[name][0]} has not been run")
    return folder


def _study_rows(folder: Path) -> tuple[list[dict], list[dict]]:
    """The committed replicates and validation tables as the analysis reads them (rows of dicts; a
    missing value is NaN, which the analysis treats as missing)."""
    reps = pd.read_parquet(folder / "replicates.parquet").to_dict("records")
    rows = pd.read_parquet(folder / "validation.parquet").to_dict("records")
    return reps, rows


def recomputed_comparisons(folder: Path) -> list[dict]:
    """comparisons.parquet rebuilt from replicates.parquet and validation.parquet with the study's
    statistics (`study_comparisons`: every family, before the realised-power columns)."""
    from dnn_search.results.study_analysis import study_comparisons, study_scale
    from dnn_search.results.study_record import read_spec
    spec = read_spec(folder)
    reps, every_row = _study_rows(folder)
    return study_comparisons(folder, spec, reps, every_row, study_scale(spec))


@pytest.mark.parametrize("name", sorted(DIVERSITY))
def test_diversity_comparisons_are_recomputed_from_the_validation_table(name):
    folder = _study_folder(name)
    committed = pd.read_parquet(folder / "comparisons.parquet")
    again = recomputed_comparisons(folder)
    assert len(again) == len(committed)
    for row, (_, old) in zip(again, committed.iterrows()):
        assert (row["family"], row["contrast"]) == (old["family"], old["contrast"])
        for key in ("estimate", "ci_lo", "ci_hi", "p", "holm_p", "ci90_lo", "ci90_hi", "tost_p"):
            if key in row and row[key] is not None and math.isfinite(row[key]):
                assert row[key] == pytest.approx(old[key], rel=1e-9, abs=1e-12), (row["contrast"], key)
        if "verdict" in row:
            assert row["verdict"] == old["verdict"], row["contrast"]


@pytest.mark.parametrize("name", sorted(DIVERSITY))
def test_diversity_summary_is_rendered_from_its_tables(name, tmp_path):
    from dnn_search.results.study_summary import render_summary
    folder = _study_folder(name)
    copy = tmp_path / name
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("summary.md", "report*"))
    assert (folder / "summary.md").read_text() == render_summary(copy, name)


@pytest.mark.parametrize("name", sorted(DIVERSITY))
def test_diversity_summary_says_which_arm_leaves_a_contrast_without_estimate(name):
    """A t-test contrast with no estimate is 'not computable' and names each side that completed no
    replicate, and a Welch row between arms with different counts shows both (`K = 12 vs 0`), never
    one arm's count alone (the first MNIST-1D study printed `welch (K = 12)` for a contrast whose other
    arm had none)."""
    from dnn_search.results.study_summary import not_computable
    folder = _study_folder(name)
    comparisons = pd.read_parquet(folder / "comparisons.parquet")
    summary = (folder / "summary.md").read_text()
    for _, r in comparisons[comparisons["test"].isin(["welch", "one-sample"])].iterrows():
        reason = not_computable(r)
        na, nb = int(r["n_a"]), int(r["n_b"])
        if r["test"] == "welch" and na != nb:
            assert f"| {r['contrast']} | welch (K = {na} vs {nb}) |" in summary, r["contrast"]
        if math.isfinite(r["estimate"]):
            assert reason is None, r["contrast"]
            continue
        if r["test"] == "welch" and 0 in (na, nb):
            empty = [side for side, n in ((r["a"], na), (r["b"], nb)) if n == 0]
            assert reason is not None and all(side in reason for side in empty), (r["contrast"], reason)
        if reason:
            assert f"| {r['contrast']} | {r['test']} (K = " in summary and reason in summary, r["contrast"]


_NUMBER = re.compile(r"(?<![\w.:/-])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?![\w.]*[a-df-zA-DF-Z_/])")


def _quoted_numbers(section: str) -> list[str]:
    """The numbers of a README section, leaving out link targets, inline code and image paths (file
    names, commands) and identifiers (n1, single:1)."""
    text = re.sub(r"\]\([^)]*\)", "]", section)
    text = re.sub(r"`[^`]*`", "", text).replace("−", "-")
    return _NUMBER.findall(text)


def _accounted(token: str, values: list[float], integers: set[int]) -> bool:
    """Whether TOKEN, as printed, is one of VALUES rounded to the token's digits (relative digits for
    scientific notation), or an exact integer of INTEGERS."""
    x = float(token)
    if re.fullmatch(r"[-+]?\d+", token):
        return int(x) in integers or abs(int(x)) in integers
    mantissa = token.lower().split("e")[0]
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    if "e" in token.lower():
        scale = 10.0 ** math.floor(math.log10(abs(x))) if x else 1.0
        tol = 0.5 * 10.0 ** -decimals * scale
    else:
        tol = 0.5 * 10.0 ** -decimals
    return any(abs(v - x) <= tol * (1 + 1e-9) or abs(abs(v) - abs(x)) <= tol * (1 + 1e-9) for v in values)


def _study_numbers(name: str, folder: Path) -> tuple[list[float], set[int]]:
    """Every number the README may quote about study NAME: its statistics (recomputed), the arms' and
    controls' means and CIs, the forecast medians and counts, the calibration picks, the stage times,
    and the design numbers of its plan, space file and spec."""
    from dnn_search.results.study_analysis import study_scale
    from dnn_search.results.study_record import read_spec
    from dnn_search.stats import mean_ci
    spec = read_spec(folder)
    scale = study_scale(spec)
    natural = (lambda v: math.exp(v)) if scale.log else (lambda v: v)
    values: list[float] = []
    for row in recomputed_comparisons(folder):
        for key in ("estimate", "ci_lo", "ci_hi", "ci90_lo", "ci90_hi"):
            v = row.get(key)
            if v is not None and math.isfinite(v):
                values.append(natural(v) if row.get("unit") in ("ratio", "points") else v)
                if row.get("unit") == "ratio":
                    values.append(1 / natural(v))  # a ratio may be quoted either way round
        values += [row[k] for k in ("p", "holm_p", "tost_p") if row.get(k) is not None and math.isfinite(row[k])]
    committed = pd.read_parquet(folder / "comparisons.parquet")
    for key in ("sigma_rep", "realised_power"):
        values += [v for v in committed[key] if math.isfinite(v)]
    tables = [pd.read_parquet(folder / "replicates.parquet")]
    if (folder / "mix.parquet").is_file():
        tables.append(pd.read_parquet(folder / "mix.parquet"))
    for table in tables:
        done = table[table["status"] == "COMPLETED"] if "status" in table.columns else table
        for column in (c for c in done.columns if c.startswith(("test_", "val_")) and "[" in c):
            for _, part in done.groupby("arm"):  # mean, CI and spread over meta-seeds, as the arm table prints them
                finite = [v for v in part[column] if v is not None and math.isfinite(v)]
                if len(finite) > 1:
                    ci = mean_ci([math.log(v) for v in finite] if scale.log else [100 * v for v in finite])
                    values += [natural(ci.mean), natural(ci.lo), natural(ci.hi), natural(ci.sd) if scale.log else ci.sd]
        if "heldout_last" in done.columns:  # the views: each arm's learning curves at their end
            for column in ("heldout_last", "heldout_change_last_quarter"):
                values += [float(part[column].mean()) for _, part in done.groupby("arm")]
    validation = pd.read_parquet(folder / "validation.parquet")
    variance = pd.read_parquet(folder / "variance.parquet")
    for column in ("sigma2_meta", "sigma2_ret", "icc"):
        values += [float(v) for v in variance[column]] + [math.sqrt(v) for v in variance[column] if v >= 0]
    for column in ("rollout_mse", "energy_drift"):
        if column in validation.columns:
            primary = validation[validation["protocol"] == "primary"]
            for _, part in primary.groupby(["arm", "mode"]):
                finite = part[column][part[column].map(math.isfinite)]
                if len(finite):
                    values.append(float(finite.median()))
    if (folder / "calibration.parquet").is_file():
        calibration = pd.read_parquet(folder / "calibration.parquet")
        values += [float(v) for c in calibration.columns if c.startswith("param_") or c == "score"
                   for v in calibration[c] if isinstance(v, float) and math.isfinite(v)]
    run = json.loads((folder / "run.json").read_text())
    seconds = [v for v in run.get("stage_seconds_total", {}).values()] + [run.get("wall_seconds_last_session", 0)]
    # the work itself, from the committed records (a stage's wall time is lost where its session was stopped):
    # the replicates' outer steps and the trainings, in core-seconds
    steps = [json.loads(f.read_text()) for f in sorted((folder / "replicates").glob("*/steps.json"))]
    seconds += [sum(s.get("seconds", 0.0) for run_steps in steps for s in run_steps),
                float(validation["seconds"].sum())]
    values += [s / 60 for s in seconds] + [s / 3600 for s in seconds] + seconds
    integers = {int(v) for v in values if float(v).is_integer()}
    integers |= {round(s) for s in seconds} | {round(s / 60) for s in seconds}
    # counts: replicates per arm and status, trainings, forecasts, diverged forecasts
    reps = pd.read_parquet(folder / "replicates.parquet")
    integers |= {int(c) for c in reps.groupby(["arm", "status"]).size()} | {len(reps), len(validation)}
    if "rollout_diverged" in validation.columns:
        primary = validation[validation["protocol"] == "primary"]
        for _, part in primary.groupby(["arm", "mode"]):
            integers |= {len(part), int(part["rollout_diverged"].sum()), int(part["forecasts"].sum())}
        integers.add(int(primary["rollout_diverged"].sum()))
    # the design: every number of the plan (its anchor and margins included), the space file and the spec
    design = " ".join((REPO / p).read_text() for p in DIVERSITY[name][1:]) + json.dumps(
        json.loads((folder / "study.json").read_text())["spec"])
    for token in re.findall(r"\d+(?:\.\d+)?(?:e-?\d+)?", design):
        v = float(token)
        values.append(v)
        if v.is_integer():
            integers.add(int(v))
    integers |= {90, 95}  # the CIs' levels
    return values, integers


def _readme_accounts(name: str) -> list[str]:
    """Every place the README speaks of study NAME: each line of a table that links its folder, and
    the section that opens with the link (up to the next heading)."""
    readme = (REPO / "README.md").read_text()
    link, places, start = f"(results/{name}/)", [], 0
    while (start := readme.find(link, start)) != -1:
        line_start = readme.rfind("\n", 0, start) + 1
        if readme.startswith("|", line_start):
            end = readme.find("\n", start)
        else:
            ends = [i for i in (readme.find("\n### ", start), readme.find("\n## ", start)) if i != -1]
            end = min(ends) if ends else len(readme)
        places.append(readme[line_start:end])
        start = end
    assert places, f"the README does not link results/{name}/"
    return places


@pytest.mark.parametrize("name", sorted(DIVERSITY))
def test_readme_quotes_only_numbers_of_the_diversity_study(name):
    """Every number in the README's accounts of a diversity study (its section, and each table row that
    links it) is recomputed here from its committed tables with the study's statistics (or is a design
    number of its plan, space file or spec, or a stage time of its run.json), and each account quotes
    the primary contrast's estimate with its 95 % CI and its verdict as the summary prints them."""
    from dnn_search.results.study_summary import _fmt_estimate, _interval
    folder = _study_folder(name)
    places = _readme_accounts(name)
    values, integers = _study_numbers(name, folder)
    stray = [t for place in places for t in _quoted_numbers(place) if not _accounted(t, values, integers)]
    assert not stray, f"README's account of {name} quotes numbers its tables do not give: {stray}"
    comparisons = pd.read_parquet(folder / "comparisons.parquet")
    primary = comparisons[(comparisons["family"] == "primary") & (comparisons["protocol"] == "primary")]
    for place in places:
        flat = re.sub(r"\s+", " ", place)
        for _, r in primary.iterrows():
            if not math.isfinite(r["estimate"]):  # an arm with fewer than 2 completed replicates: no estimate
                quotes = ["not computable", f"**{r['verdict']}**"]
            else:
                estimate = _fmt_estimate(r["estimate"], r["unit"]).lstrip("×")
                quotes = [f"{estimate} {_interval(r['ci_lo'], r['ci_hi'], r['unit'])}", f"**{r['verdict']}**"]
                if not place.startswith("|"):  # the section also gives the equivalence test's interval
                    quotes.append(_interval(r["ci90_lo"], r["ci90_hi"], r["unit"]))
            for text in quotes:
                assert text in flat, f"README's account of {name} does not quote {text!r} ({r['contrast']})"
