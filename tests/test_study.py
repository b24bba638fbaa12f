"""Diversity studies (`dnn-search study`): one shared study, run as a user would and interrupted twice.

The fixture runs the smoke study's file (calibration, the secondary protocol, every control, a
per-trial memory resource) with a third arm whose answer is known by construction (`frozen`: n = 1 at
an inner learning rate of 1e-5, so its networks barely train) and contrasts whose verdicts are
therefore known; the file's `matched` control arm comes fourth. The driver is killed (-9) in the
middle of calibration, of meta-learning and of validation, at test-only fault points
(`faults.stall_at`), and resumed each time;
every other test reads what that one study left behind: the recorded indices, the tables, the
Optuna study, the trace of what was computed where.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.slow

K, STEPS, RUNS = 3, 6, 2


def _study_file(folder: Path) -> Path:
    data = yaml.safe_load((REPO / "search_spaces" / "study_smoke.yaml").read_text())
    data["study"].update(replicates=K, steps=STEPS, runs=RUNS, margin=5.0)
    data["study"]["arms"] = [{"n_activations": 1}, {"n_activations": 2},
                             {"name": "frozen", "n_activations": 1, "inner_lr": 1e-5}]
    data["study"]["contrasts"] = [{"a": "n2/diverse", "b": "n1/single:1"},
                                  {"a": "n1/primary", "b": "frozen/primary"},   # better, by construction
                                  {"a": "frozen/primary", "b": "n1/primary"},   # worse
                                  {"a": "n1/pure", "b": "frozen/pure"}]         # the same network: equivalent
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _run_until_stall(args, env, stall: str, marker: Path) -> float:
    """Start the study, wait for the driver to reach the fault point, kill -9 its whole group."""
    driver = subprocess.Popen([sys.executable, "-m", "dnn_search", *map(str, args)], cwd=REPO,
                              env={**env, "DNN_SEARCH_STALL_AT": f"{stall}:{marker}"},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 420
    while time.time() < deadline and driver.poll() is None and not marker.exists():
        time.sleep(0.2)
    output = "" if marker.exists() else driver.stdout.read().decode()[-3000:]
    assert marker.exists() and driver.poll() is None, output
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait(60)
    return time.time()


@pytest.fixture(scope="session")
def study(tmp_path_factory, search_env):
    root = tmp_path_factory.mktemp("study")
    trace = root / "trace.jsonl"
    env = {**search_env, "DNN_SEARCH_TRACE": str(trace)}
    storage, name = root / "results", "div"
    exp = storage / name
    args = ["study", "--space", _study_file(root), "--name", name, "--storage", storage]
    killed = {}
    resume = ["study", "--name", name, "--storage", storage, "--resume"]
    killed["calibration"] = _run_until_stall(args, env, "calibration:3", root / "stalled0")
    calibration_asked = {p.parent.name: p.read_text() for p in (exp / "calibration").glob("*/params.json")}
    calibration_finished = {p.parent.name for p in (exp / "calibration").glob("*/result.json")}
    killed["metalearning"] = _run_until_stall(resume, env, "metalearning:18", root / "stalled1")
    finished_replicates = {p.parent.name for p in (exp / "replicates").glob("*/result.json")}
    killed["validation"] = _run_until_stall(resume, env, "validation:10", root / "stalled2")
    finished_trainings = {p.stem for p in (exp / "study_validation").glob("*.json")}
    proc = run_cli(resume, env)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    from dnn_search.search.faults import read_trace
    return {"exp": exp, "name": name, "storage": storage, "stdout": proc.stdout, "trace": read_trace(trace),
            "killed": killed, "finished_replicates": finished_replicates, "finished_trainings": finished_trainings,
            "calibration_asked": calibration_asked, "calibration_finished": calibration_finished, "env": env}


def test_selection_split_disjoint_from_what_meta_learning_recorded(study):
    """The indices every replicate recorded (not the function that drew them) never touch the
    study's selection split, and its own held-out split is carved from the rest."""
    exp = study["exp"]
    split = np.load(exp / "split.npz")
    selection, rest = set(split["selection"].tolist()), set(split["rest"].tolist())
    import pandas as pd
    reps = pd.read_parquet(exp / "replicates.parquet")  # the tables record the split's seed and sizes
    assert set(reps["selection_seed"]) == {int(split["seed"])} and set(reps["selection_size"]) == {len(selection)}
    assert len(selection) == 400 and not selection & rest and len(rest) == 3600
    folders = sorted((exp / "replicates").iterdir())
    assert len(folders) == 4 * K  # n1, n2, frozen and the matched control arm
    seen_train = set()
    for folder in folders:
        idx = np.load(folder / "indices.npz")
        train, held = set(idx["train"].tolist()), set(idx["heldout"].tolist())
        assert not (train | held) & selection, folder.name
        assert not train & held and (train | held) == rest
        seen_train.add(tuple(sorted(held)))
    assert len(seen_train) == 4 * K  # each meta-seed carves its own held-out split


def test_every_replicate_reached_the_same_steps_and_each_experiment_holds_one_arm(study):
    exp = study["exp"]
    for folder in (exp / "replicates").iterdir():
        result = json.loads((folder / "result.json").read_text())
        rows = json.loads((folder / "steps.json").read_text())
        assert result["status"] == "COMPLETED" and result["steps"] == STEPS
        assert [r["step"] for r in rows] == list(range(1, STEPS + 1))  # nothing lost, nothing twice
    for arm in ("n1", "n2", "frozen", "matched"):
        experiment = exp / "ray" / f"study_{arm}"
        params = [json.loads(p.read_text()) for p in experiment.glob("*/params.json")]
        assert params and {p["job"]["arm"] for p in params} == {arm}


def test_resume_loses_nothing_and_never_trains_a_finished_network_again(study):
    events, killed = study["trace"], study["killed"]
    # meta-learning: a replicate finished before the first kill computed no step after it
    after = [e for e in events if e["event"] == "replicate_step" and e["time"] > killed["metalearning"]]
    assert study["finished_replicates"], "the first kill came before any replicate finished"
    assert not {e["replicate"] for e in after} & study["finished_replicates"]
    # and an interrupted one continued from its checkpoint: its first step after the kill is > 1
    resumed = {}
    for e in after:
        resumed.setdefault(e["replicate"], e["step"])
    assert any(step > 1 for step in resumed.values()), resumed
    # validation: each training finished before the second kill ran exactly once
    trained = {}
    for e in events:
        if e["event"] == "train":
            trained[e["key"]] = trained.get(e["key"], 0) + 1
    assert study["finished_trainings"]
    assert all(trained[key] == 1 for key in study["finished_trainings"]), trained
    rows = [json.loads(p.read_text()) for p in (study["exp"] / "study_validation").glob("*.json")]
    # n1, frozen: single:1, pure, std:gelu; n2: diverse, single:1, single:2, pure, std:gelu and 5 controls
    # (copies:1, random:diverse/single, random-scaled:diverse/single); matched: single:1; one mix group (K1 = 3)
    assert sum(r["protocol"] == "primary" for r in rows) == K * RUNS * (3 + 3 + 10 + 1) + RUNS
    # the secondary protocol: every arm's (matched's too) primary network and pure, 2 lrs x 2 pick seeds
    # each (R = 2: no more runs)
    assert sum(r["protocol"] == "secondary" for r in rows) == 4 * K * 2 * (2 * 2)
    assert len(rows) == K * RUNS * (3 + 3 + 10 + 1) + RUNS + 4 * K * 2 * (2 * 2)


def test_retraining_seeds_nested_in_replicates(study):
    import pandas as pd
    v = pd.read_parquet(study["exp"] / "validation.parquet")
    per_replicate = v.groupby("replicate")["seed"].apply(lambda s: frozenset(s))
    for rep, seeds in per_replicate.items():
        assert len(seeds) == RUNS, rep  # every network of a replicate (or mix group) uses the same R seeds
    assert len(per_replicate) == 4 * K + 1  # the replicates and the one mix group
    assert len(set().union(*per_replicate)) == RUNS * (4 * K + 1)  # distinct across replicates
    pick = _picks(study["exp"])
    v = v[v["protocol"] == "primary"]
    primary = v[(v["arm"] == "n2") & (v["mode"] == "diverse")]
    # the primary protocol trains at the arm's calibrated inner lr
    assert set(primary["optimizer"]) == {"rmsprop"} and set(primary["lr"]) == {pick["n2"]["inner_lr"]}
    assert set(v[(v["arm"] == "frozen") & (v["mode"] == "single:1")]["lr"]) == {1e-5}  # its own, never calibrated
    assert set(v[(v["arm"] == "frozen") & (v["mode"] == "pure")]["lr"]) == {pick["n1"]["inner_lr"]}  # the n = 1 arm's


def _picks(exp: Path) -> dict[str, dict]:
    import pandas as pd
    table = pd.read_parquet(exp / "calibration.parquet")
    return {row["arm"]: {c[len("param_"):]: row[c] for c in table.columns
                         if c.startswith("param_") and row[c] == row[c]}
            for _, row in table[table["picked"]].iterrows()}


def test_calibration_inside_each_arm_on_meta_seeds_of_its_own(study):
    """Every arm ran its calibration trials (the same number and steps), one pick per arm, on meta-seeds
    that no replicate ran (as recorded by the runs themselves), and the replicates meta-learned at the
    pick; the frozen arm's own inner lr was never calibrated."""
    import dnn_search
    exp = study["exp"]
    table = dnn_search.open_search(study["name"], storage=study["storage"]).calibration
    assert table.groupby("arm").size().to_dict() == {"n1": 2, "n2": 2, "frozen": 2, "matched": 2}
    assert table.groupby("arm")["picked"].sum().to_dict() == {"n1": 1, "n2": 1, "frozen": 1, "matched": 1}
    assert set(table["steps"]) == {3} and not table["dropped"].any()
    assert table[table["arm"] == "frozen"]["param_inner_lr"].isna().all()
    seeds = lambda folder: {json.loads(p.read_text())["meta_seed"] for p in (exp / folder).glob("*/result.json")}
    calibration, replicates = seeds("calibration"), seeds("replicates")
    assert len(calibration) == 8 and len(replicates) == 4 * K and not calibration & replicates
    pick = _picks(exp)
    for folder in (exp / "replicates").iterdir():
        config = json.loads((folder / "activations.json").read_text())["config"]
        arm = folder.name.rsplit("-m", 1)[0]
        assert {k: config[k] for k in pick[arm]} == pick[arm], folder.name
        if arm == "frozen":
            assert config["inner_lr"] == 1e-5
    # killed during calibration: the trials asked before the kill ran at their recorded settings (not
    # asked again), a finished one never ran again, and the Optuna study of each arm holds its 2 trials
    import optuna

    from dnn_search.results.storage import open_storage, storage_spec
    asked, finished = study["calibration_asked"], study["calibration_finished"]
    assert asked and set(asked) < {f"{a}-c{i}" for a in ("n1", "n2", "frozen", "matched") for i in range(2)}
    assert all((exp / "calibration" / key / "params.json").read_text() == text for key, text in asked.items())
    after = [e for e in study["trace"] if e["event"] == "replicate_step" and e["time"] > study["killed"]["calibration"]
             and "-c" in e["replicate"]]
    assert {e["replicate"] for e in after} >= set(asked) - finished and not {e["replicate"] for e in after} & finished
    storage = open_storage(storage_spec(exp, None))
    for arm in ("n1", "n2", "frozen", "matched"):
        trials = optuna.load_study(study_name=f"{study['name']}:calibration:{arm}", storage=storage).trials
        assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"], arm
    # and after the second kill (in meta-learning) no calibration trial ran again
    later = [e for e in study["trace"] if e["event"] == "replicate_step" and e["time"] > study["killed"]["metalearning"]]
    assert later and not [e for e in later if "-c" in e["replicate"]]


def test_known_answers_get_the_right_verdicts(study):
    import pandas as pd
    c = pd.read_parquet(study["exp"] / "comparisons.parquet")
    primary = c[c["family"] == "primary"].set_index("contrast")["verdict"].to_dict()
    assert primary["n1/single:1 vs frozen/single:1"] == "better"
    assert primary["frozen/single:1 vs n1/single:1"] == "worse"
    assert primary["n1/pure vs frozen/pure"] == "equivalent"
    assert set(c["schema_version"]) == {1}


def assert_realised_power(exp: Path) -> int:
    """Each primary contrast's `realised_power` in comparisons.parquet is `tost_power(σ_rep, K, margin)`
    recomputed from variance.parquet (σ²_rep = σ²_meta + σ²_ret/R, the larger of the two arms'; K the
    smaller k), NaN where a side has no variance components and on every other row; summary.md's
    primary table shows it beside the verdict, with the sentence that it never changes one. Returns
    how many contrasts had a power."""
    import math

    import pandas as pd

    from dnn_search.results.study_record import read_spec
    from dnn_search.stats import format_number
    from dnn_search.study_stats import tost_power
    from tests.conftest import markdown_table_rows
    spec = read_spec(exp)
    c = pd.read_parquet(exp / "comparisons.parquet")
    var = pd.read_parquet(exp / "variance.parquet").set_index(["arm", "network"])
    is_primary = (c["family"] == "primary") & (c["protocol"] == "primary")
    summary = (exp / "summary.md").read_text()
    table = markdown_table_rows(summary, "| contrast | test | estimate | 95 % CI | 90 % CI | Holm p | TOST p |")
    computed = 0
    for _, r in c[is_primary].iterrows():
        sides = [tuple(r[s].split("/", 1)) for s in ("a", "b")]
        cells = table[r["contrast"]]
        assert cells[7] == f"**{r['verdict']}**"
        if not all(s in var.index for s in sides):
            assert math.isnan(r["realised_power"]) and cells[-1] == "–", r["contrast"]
            continue
        sigma = math.sqrt(max(var.loc[s, "sigma2_meta"] + var.loc[s, "sigma2_ret"] / spec.runs for s in sides))
        k = min(int(var.loc[s, "k"]) for s in sides)
        power = tost_power(sigma, k, spec.margin, alpha=spec.alpha)
        assert r["sigma_rep"] == pytest.approx(sigma, rel=1e-12) and r["power_k"] == k, r["contrast"]
        assert r["realised_power"] == pytest.approx(power, rel=1e-12), r["contrast"]
        assert cells[-1] == format_number(power, 2) and cells[-2] == str(k)
        computed += 1
    assert c[~is_primary]["realised_power"].isna().all()
    assert "it describes what the design could detect and never changes a verdict" in summary
    return computed


def test_realised_power_beside_each_primary_verdict(study):
    """Three of the fixture's four primary contrasts are between arms' primary networks (their power is
    computed, at K = 3 per arm); n1/pure vs frozen/pure has no variance components (NaN). A
    classification study has no forecast table and no forecast column."""
    import pandas as pd
    assert assert_realised_power(study["exp"]) == 3
    assert "## Forecasts" not in (study["exp"] / "summary.md").read_text()
    assert "forecasts" not in pd.read_parquet(study["exp"] / "validation.parquet").columns


def test_tables_and_summary_read_back(study):
    import pandas as pd

    import dnn_search
    exp = study["exp"]
    opened = dnn_search.open_search(study["name"], storage=study["storage"])
    reps = opened.replicates
    assert len(reps) == 4 * K and set(reps["status"]) == {"COMPLETED"}
    assert {"arm", "meta_seed", "status", "steps", "test_accuracy[diverse]"} <= set(reps.columns)
    assert len(opened.comparisons) == len(pd.read_parquet(exp / "comparisons.parquet"))
    summary = (exp / "summary.md").read_text()
    assert summary.splitlines()[4] == "## The answer"
    assert "n2/diverse vs n1/single:1" in summary and "FAILED replicates" in summary
    assert (exp / "report_figures" / "study_arms.png").stat().st_size > 5000
    # the summary is rebuilt from the tables alone
    from dnn_search.results.study_summary import render_summary
    (exp / "study_validation").rename(exp / "moved")
    try:
        assert render_summary(exp, study["name"]) == summary
    finally:
        (exp / "moved").rename(exp / "study_validation")


def test_replicates_in_the_optuna_study(study):
    import optuna

    from dnn_search.results.storage import open_storage, storage_spec
    trials = optuna.load_study(study_name=study["name"], storage=open_storage(storage_spec(study["exp"], None))).trials
    assert len(trials) == 4 * K  # once each, though the driver was resumed twice
    assert {t.params["arm"] for t in trials} == {"n1", "n2", "frozen", "matched"}
    assert all(len(t.intermediate_values) == STEPS for t in trials)
    assert len({t.params["meta_seed"] for t in trials}) == 4 * K


def test_dry_run_prints_costs_and_starts_nothing(tmp_path, search_env):
    proc = run_cli(["study", "--space", REPO / "search_spaces" / "study_smoke.yaml", "--name", "dry",
                    "--storage", tmp_path, "--dry-run"], search_env)
    assert proc.returncode == 0, proc.stderr
    # n1: 2 x 2 x 3; n2: 2 x 2 x (5 + 5 controls); matched: 2 x 2 x 1 (the mix group's 2 on its own line);
    # the secondary protocol: each of the 3 arms' primary network and pure, 2 x 2 x 2 x (2 lrs x 2 seeds)
    assert "6 meta-learning runs, 104 trainings" in proc.stdout and "secondary protocol (sgd" in proc.stdout
    assert "core-hours" in proc.stdout and "calibration: 6 trials (2 per arm x 3 steps" in proc.stdout
    assert "mix for n2: 1 group(s) of 2 n1 replicates x 2 seeds = 2 trainings (fewer than 2 groups" in proc.stdout
    assert "s/step" in proc.stdout and not (tmp_path / "dry").exists()


def test_secondary_protocol_picks_an_lr_per_network_on_the_selection_split(study):
    """Under the secondary protocol each replicate's primary network and pure trained with SGD at every
    lr of the grid on the same seeds; the pick is the lr with the best mean selection-split accuracy;
    the rows carry it; its primary contrasts are a family of their own, Holm within it."""
    import pandas as pd

    from dnn_search.stats import holm
    exp = study["exp"]
    v = pd.read_parquet(exp / "validation.parquet")
    sec = v[v["protocol"] == "secondary"]
    assert set(sec["optimizer"]) == {"sgd"} and set(sec["lr"]) == {0.03, 0.1}
    assert set(zip(sec["arm"], sec["mode"])) == {("n1", "single:1"), ("n1", "pure"), ("n2", "diverse"),
                                                 ("n2", "pure"), ("frozen", "single:1"), ("frozen", "pure"),
                                                 ("matched", "single:1"), ("matched", "pure")}
    seeds = v[v["protocol"] == "primary"].groupby("replicate")["seed"].apply(frozenset)
    for (rep, mode), group in sec.groupby(["replicate", "mode"]):
        assert frozenset(group["seed"]) == seeds[rep]
        means = group.groupby("lr")["val_accuracy"].mean()
        picked = group["picked_lr"].dropna()
        assert len(picked) == RUNS and set(group[group["picked_lr"].notna()]["lr"]) == {picked.iloc[0]}
        assert means[picked.iloc[0]] == means.max(), (rep, mode)
    c = pd.read_parquet(exp / "comparisons.parquet")
    family = c[c["family"] == "secondary protocol"]
    assert set(family["protocol"]) == {"secondary"} and set(c[c["family"] == "primary"]["protocol"]) == {"primary"}
    assert list(family["contrast"]) == list(c[c["family"] == "primary"]["contrast"])  # every one is covered
    assert list(family["holm_p"]) == pytest.approx(holm(list(family["p"])))
    assert set(family["verdict"]) <= {"better", "equivalent", "worse", "inconclusive"}
    summary = (exp / "summary.md").read_text()
    assert "## Secondary protocol: SGD (momentum 0.9)" in summary and "## Calibration inside each arm" in summary


def test_views_curves_activations_variance_and_controls_beside_the_arms(study):
    """The analysis stage draws the per-arm learning curves, the learned activations per arm and the
    variance components; each replicate's plateau numbers come from its own steps.json; the comparison
    figure puts the controls (pure, std:*: the n = 1 arm's) to the right of the arms' primary networks."""
    import pandas as pd

    from dnn_search.results.study_record import read_spec
    from dnn_search.results.study_summary import figure_networks
    exp = study["exp"]
    for name in ("study_curves.png", "study_activations.png", "study_variance.png", "study_arms.png"):
        assert (exp / "report_figures" / name).stat().st_size > 5000, name
    reps = pd.read_parquet(exp / "replicates.parquet").set_index("replicate")
    for key, row in reps.iterrows():
        acc = [r["heldout_accuracy"] for r in json.loads((exp / "replicates" / key / "steps.json").read_text())]
        assert row["heldout_last"] == acc[-1]
        assert row["heldout_change_last_quarter"] == pytest.approx(acc[-1] - acc[-2])  # 6 steps: quarters of 1
    summary = (exp / "summary.md").read_text()
    assert "## Views" in summary and "![learning curves](report_figures/study_curves.png)" in summary
    spec = read_spec(exp)
    assert figure_networks(spec, reps.reset_index(), "accuracy") == [
        ("n1", "single:1"), ("n2", "diverse"), ("frozen", "single:1"), ("matched", "single:1"), ("n1", "pure"),
        ("n1", "std:gelu"), ("n2", "copies:1"), ("n2", "random-scaled:diverse"), ("n2", "random-scaled:single"),
        ("n2", "random:diverse"), ("n2", "random:single")]


# ------------------------------------------------------------------------------------ controls

def test_copies_equal_single_and_a_replaced_block_stops_the_study(study):
    """copies:1 computes single:1 (the check before validation passed with difference 0, and every
    trained copies:1 network scored exactly as its replicate's single:1 at the same seed); a copies
    file with one block replaced by another activation stops a resumed study with one clear line."""
    import pandas as pd

    from dnn_search.actfile import read_activation_file, write_activation_files
    from dnn_search.controls import combine
    exp = study["exp"]
    check = json.loads((exp / "study_controls" / "copies_check.json").read_text())
    assert check == {"n2": {"replicate": "n2-m0", "k": 1, "seed": check["n2"]["seed"], "batch": 256,
                            "max_abs_difference": 0.0}}
    learned = read_activation_file(exp / "replicates" / "n2-m0" / "activations.npz").exact
    copies = read_activation_file(exp / "study_controls" / "n2-m0" / "copies.npz").exact
    assert copies.n == 2 and all(np.array_equal(getattr(copies, k)[i], getattr(learned, k)[0])
                                 for k in ("w1", "b1", "w2", "b2") for i in range(2))
    v = pd.read_parquet(exp / "validation.parquet")
    v = v[v["protocol"] == "primary"]  # the secondary protocol trains n2's diverse and pure again, at other lrs
    n2 = v[(v["arm"] == "n2") & (v["mode"] != "mix")].set_index(["replicate", "run", "mode"])["test_accuracy"].unstack()
    assert len(n2) == K * RUNS and (n2["copies:1"] == n2["single:1"]).all()

    folder = exp / "study_controls" / "n2-m0"
    saved = {p.name: p.read_bytes() for p in folder.glob("copies.*")}
    recorded = (exp / "study_controls" / "copies_check.json").read_bytes()
    try:
        # block 2 now uses learned activation 2 instead of a copy of activation 1
        write_activation_files(folder, "copies", combine([learned.subset(0), learned.subset(1)]), {})
        (exp / "study_controls" / "copies_check.json").unlink()
        proc = run_cli(["study", "--name", study["name"], "--storage", study["storage"], "--resume"], study["env"])
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "the copies control does not reproduce single:1" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    finally:
        for name, data in saved.items():
            (folder / name).write_bytes(data)
        (exp / "study_controls" / "copies_check.json").write_bytes(recorded)


def test_mix_groups_disjoint_and_from_the_n1_replicates_only(study):
    """From the recorded ids (mix.parquet): each group holds n different replicates of the n = 1 arm
    (not of frozen or matched, also n = 1), groups are disjoint, and the group's activation file
    is those replicates' learned activations, in that order."""
    import pandas as pd

    from dnn_search.actfile import read_activation_file
    exp = study["exp"]
    mix = pd.read_parquet(exp / "mix.parquet")
    n1 = {f"n1-m{j}" for j in range(K)}
    groups = [row["members"].split(",") for _, row in mix.iterrows()]
    assert len(groups) == K // 2 and set(mix["arm"]) == {"n2"} and set(mix["k1"]) == {K}
    members = [m for g in groups for m in g]
    assert all(len(set(g)) == 2 for g in groups) and len(set(members)) == len(members)  # disjoint
    assert set(members) <= n1
    for (_, row), g in zip(mix.iterrows(), groups):
        mixed = read_activation_file(exp / "study_controls" / "mix" / f"n2-g{row['group']}.npz").exact
        for i, key in enumerate(g):
            own = read_activation_file(exp / "replicates" / key / "activations.npz").exact
            assert np.array_equal(mixed.w2[i], own.w2[0]) and np.array_equal(mixed.b1[i], own.b1[0])
        assert np.isfinite(row["test_accuracy[mix]"])
    v = pd.read_parquet(exp / "validation.parquet")
    assert len(v[v["mode"] == "mix"]) == len(groups) * RUNS
    assert set(v[v["mode"] == "mix"]["protocol"]) == {"primary"}  # trained by the one `_train`, like every network
    summary = (exp / "summary.md").read_text()
    assert "- mix for n2 is descriptive only: 1 group(s) (fewer than 2)" in summary


def test_random_starts_where_meta_learning_did_and_scaled_matches_the_learned_amplitude(study):
    from dnn_search.actfile import read_activation_file
    from dnn_search.controls import distance, initial
    exp = study["exp"]
    for j in range(K):
        key = f"n2-m{j}"
        meta_seed = json.loads((exp / "replicates" / key / "result.json").read_text())["meta_seed"]
        learned = read_activation_file(exp / "replicates" / key / "activations.npz").exact
        raw = read_activation_file(exp / "study_controls" / key / "random.npz").exact
        scaled = read_activation_file(exp / "study_controls" / key / "random-scaled.npz").exact
        start = initial("sin", 2, 10, meta_seed)
        assert all(np.array_equal(getattr(raw, k), getattr(start, k)) for k in ("w1", "b1", "w2", "b2"))
        assert np.all(np.abs(distance(scaled) / distance(learned) - 1) < 0.05)
        # the scaling acted on the output layer only, by the ratio of the learned to the raw amplitude
        # (after 6 steps that ratio is near 1, so "the distances differ" would test nothing)
        ratio = distance(learned) / distance(raw)
        assert np.array_equal(scaled.w1, raw.w1) and np.array_equal(scaled.b1, raw.b1)
        assert np.allclose(scaled.w2, raw.w2 * ratio[:, None], rtol=1e-9) and np.allclose(scaled.b2, raw.b2 * ratio)


def test_controls_in_the_tables_and_the_summary(study):
    import pandas as pd
    exp = study["exp"]
    reps = pd.read_parquet(exp / "replicates.parquet")
    n2 = reps[reps["arm"] == "n2"]
    for mode in ("copies:1", "random:diverse", "random:single", "random-scaled:diverse", "random-scaled:single"):
        assert n2[f"test_accuracy[{mode}]"].notna().all(), mode
    c = pd.read_parquet(exp / "comparisons.parquet")
    controls = c[c["family"] == "controls"].set_index("a")
    assert controls.loc["n2/copies:1", "test"] == "one-sample" and controls.loc["n2/copies:1", "estimate"] == 0
    assert controls.loc["n2/random:diverse", "b"] == "n2/random:single"
    assert controls.loc["n2/random-scaled:diverse", "b"] == "n2/random-scaled:single"
    assert controls.loc["n2/mix", "test"] == "descriptive" and controls.loc["n2/mix", "b"] == "n2/diverse"
    matched = c[(c["family"] == "controls") & (c["b"] == "matched/single:1")]
    assert set(matched["a"]) == {"n1/single:1", "n2/diverse", "frozen/single:1"} and set(matched["test"]) == {"welch"}
    assert (matched["n_a"] == K).all() and (matched["n_b"] == K).all()
    summary = (exp / "summary.md").read_text()
    assert "## Controls" in summary and "| matched | 1 | 3 / 0 | single:1 (primary) |" in summary
    assert "Ho = 20" in summary and "| n2 | 2 | 1 mix groups | mix |" in summary


def test_trials_were_granted_the_memory_they_asked_for(study):
    """resources.memory (300MB in the smoke file) reaches Ray: every trial's worker, meta-learning
    and validation alike, was assigned that much memory (read in the worker, from Ray)."""
    granted = [e["resources"] for e in study["trace"] if e["event"] in ("replicate_trial", "validation_trial")]
    assert {e["event"] for e in study["trace"] if "resources" in e} == {"replicate_trial", "validation_trial"}
    assert granted and all(r.get("memory") == 300_000_000 for r in granted), granted[:3]


def test_report_of_a_study_embeds_its_views_and_answer(study):
    """`dnn-search report NAME` on a study: one self-contained page with the four views (one dot per
    meta-seed with the CIs first) and the summary's answer."""
    import io

    from dnn_search.results.report import run_report
    path = run_report(str(study["exp"]), out=io.StringIO())
    page = path.read_text()
    assert page.count("data:image/png;base64,") == 4
    assert page.index("one dot per meta-seed") < page.index("every replicate of each arm overlaid")
    assert "The answer" in page and "n2/diverse vs n1/single:1" in page
