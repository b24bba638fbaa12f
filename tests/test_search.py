"""search / export / pipeline end to end on an embedded Ray, with tiny trials (~1 s each)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from conftest import listening_addresses, ray_processes, run_cli, tiny_space
from dnn_search import cli
from dnn_search.actfile import read_activation_file

pytestmark = pytest.mark.slow


def _study(exp: Path, name: str):
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(exp / "optuna_journal.log")))
    return optuna.load_study(study_name=name, storage=storage)


def best_by_hand(trials: pd.DataFrame, mode: str, top: int) -> list[str]:
    """The trials `export --top TOP` must pick, computed here from the table alone: completed trials
    with a finite score and a checkpoint by score (ties: the lower Optuna number), then pruned ones."""
    rows = [r for r in trials.to_dict("records") if r["status"] in ("COMPLETED", "PRUNED")
            and r["checkpoint_path"] and np.isfinite(r["score"])]
    sign = -1 if mode == "max" else 1
    rows.sort(key=lambda r: (r["status"] != "COMPLETED", sign * r["score"], r["optuna_number"]))
    return [r["trial_id"] for r in rows[:top]]


def test_pipeline_files(pipeline_run):
    exp, proc, env, _ = pipeline_run
    for name in ("search.json", "optuna_journal.log", "trials.parquet", "steps.parquet", "validation.parquet",
                 "hessian.parquet", "summary.md"):
        assert (exp / name).is_file(), name
    assert (exp / "ray" / "search").is_dir()
    record = json.loads((exp / "search.json").read_text())
    assert record["name"] == "demo" and "params" in record["space"]
    # the best trials are printed, with the commands to run next
    assert "best 2 trial(s)" in proc.stdout and "dnn-search dashboard demo" in proc.stdout
    assert not ray_processes(), ray_processes()


def test_nothing_outside_storage(pipeline_run):
    """README: nothing is written outside --storage, Ray's temporary folder is removed and no process
    outlives the command -- for the pipeline (search included), report and dashboard, in an empty HOME."""
    import subprocess
    import sys
    exp, _, env, watch = pipeline_run
    assert not watch["tree"].survivors(), watch["tree"].survivors()
    assert len(watch["tree"].seen) >= 3  # the watch saw Ray's processes (raylet, GCS, workers)
    report = run_cli(["report", "demo", "--storage", exp.parent], env)
    assert report.returncode == 0, report.stderr[-2000:]
    dash = subprocess.Popen([sys.executable, "-m", "dnn_search", "dashboard", "demo", "--storage", str(exp.parent),
                             "--port", "0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = dash.stdout.readline()
        assert line.startswith("Dashboard: http://127.0.0.1:"), line + dash.stderr.read()
    finally:
        dash.send_signal(2)
        dash.wait(60)
    home, tmp = Path(env["HOME"]), Path(env["TMPDIR"])
    assert not any(home.iterdir()), sorted(str(p) for p in home.rglob("*"))[:20]
    assert (exp.parent / ".cache" / "mnist1d.npz").is_file()  # the caches went under --storage
    assert (exp.parent / ".cache" / "matplotlib").is_dir()
    # the embedded Ray's own folder (named by its processes' command lines) is removed, and nothing
    # is left in the temporary folder (Ray's default one would be $TMPDIR/ray)
    ray_folders = watch["tree"].ray_temp_folders()
    assert ray_folders and not [f for f in ray_folders if Path(f).exists()], ray_folders
    assert not any(tmp.iterdir()), sorted(str(p) for p in tmp.rglob("*"))[:20]


def test_trials_table(pipeline_run):
    exp, _, _, _ = pipeline_run
    trials = pd.read_parquet(exp / "trials.parquet")
    assert len(trials) == 4 and trials["trial_id"].is_unique
    required = {"trial_id", "optuna_number", "status", "error", "node_id", "steps_done", "final_meta_loss",
                "final_heldout_accuracy", "best_heldout_accuracy", "wall_seconds", "outer_lr", "inner_lr",
                "n_activations", "inner_hidden_size", "steps", "activation", "dataset", "seed"}
    assert required <= set(trials.columns)
    assert set(trials["status"]) <= {"COMPLETED", "PRUNED"} and (trials["status"] == "COMPLETED").any()
    assert (trials.loc[trials.status == "COMPLETED", "steps_done"] == 4).all()
    assert (trials.loc[trials.status == "PRUNED", "steps_done"] < 4).all()
    assert (trials["node_id"].str.len() > 10).all() and (trials["wall_seconds"] > 0).all()
    assert (trials["best_heldout_accuracy"] >= trials["final_heldout_accuracy"]).all()
    steps = pd.read_parquet(exp / "steps.parquet")
    for col in ("trial_id", "step", "meta_loss", "final_train_loss", "heldout_accuracy", "heldout_loss",
                "grad_norms", "grad_norm", "seconds"):
        assert col in steps.columns
    per_trial = steps.groupby("trial_id")["step"].max()
    assert per_trial.to_dict() == dict(zip(trials.trial_id, trials.steps_done))
    row = steps.iloc[0]
    assert np.isclose(row["grad_norm"], np.linalg.norm(np.asarray(row["grad_norms"])))
    n = dict(zip(trials.trial_id, trials.n_activations))[row["trial_id"]]
    assert len(row["grad_norms"]) == n


def test_optuna_study_is_truthful(pipeline_run):
    exp, _, _, _ = pipeline_run
    trials = pd.read_parquet(exp / "trials.parquet")
    status = dict(zip(trials.trial_id, trials.status))
    study = _study(exp, "demo")
    assert len(study.trials) == len(trials)
    expected = {"COMPLETED": "COMPLETE", "PRUNED": "PRUNED"}
    for t in study.trials:
        tid = t.user_attrs["ray_trial_id"]
        assert t.state.name == expected[status[tid]]
        steps = int(trials.loc[trials.trial_id == tid, "steps_done"].iloc[0])
        assert sorted(t.intermediate_values) == list(range(1, steps + 1))
        # every trial has its activation plot attached (optuna-dashboard shows it)
        arts = [k for k in t.system_attrs if k.startswith("artifacts:")]
        assert len(arts) == 1
        art_id = arts[0].split(":", 1)[1]
        assert (exp / "artifacts" / art_id).is_file()
        # drawn by the trial into the checkpoint where it ended (pruned ones at their rung), not by the driver
        ckpt = trials.loc[trials.trial_id == tid, "checkpoint_path"].iloc[0]
        assert (exp / "artifacts" / art_id).read_bytes() == (exp / ckpt / "activations.png").read_bytes()
    assert not (exp / "plots").exists()
    assert study.best_trial.state.name == "COMPLETE"


def test_exported_activations(pipeline_run, tmp_path):
    exp, _, _, _ = pipeline_run
    folders = sorted((exp / "activations").iterdir())
    assert len(folders) == 2
    for folder in folders:
        assert (folder / "metadata.json").is_file() and (folder / "activations.png").is_file()
        npz = list(folder.glob("*_activations_start_seed_*.npz"))
        txt = list(folder.glob("*_activations_start_seed_*.txt"))
        assert len(npz) == 1 and len(txt) == 1
        acts = read_activation_file(npz[0])
        assert acts.is_exact() and acts.metadata["trial_id"] == folder.name
        assert np.loadtxt(txt[0], ndmin=2).shape == (acts.n, 100)
    # export NAME --top K --out DIR, readable by `validate`
    out = tmp_path / "export"
    assert cli.main(["export", "demo", "--storage", str(exp.parent), "--top", "1", "--out", str(out)]) == 0
    (only,) = list(out.iterdir())
    trials = pd.read_parquet(exp / "trials.parquet")
    expected = best_by_hand(trials, "max", 2)
    assert only.name == expected[0]
    assert json.loads((only / "metadata.json").read_text())["rank"] == 1
    assert sorted(f.name for f in folders) == sorted(expected)  # the search itself exported its top 2
    npz = next(only.glob("*.npz"))
    assert cli.main(["validate", "--act_path", str(npz), "--runs", "1", "--epochs", "1",
                     "--validation_mode", "diverse"]) == 0


def test_validation_and_hessian_tables(pipeline_run):
    exp, _, _, _ = pipeline_run
    val = pd.read_parquet(exp / "validation.parquet")
    for col in ("trial_id", "dataset", "optimizer", "mode", "run", "seed", "test_accuracy", "test_loss",
                "val_accuracy", "val_loss"):
        assert col in val.columns
    assert set(val.optimizer) == {"sgd", "rmsprop"}  # both optimisers of the space ran
    assert np.isfinite(val.val_accuracy).all()  # every network was scored on the held-out split
    exported = {p.name: read_activation_file(next(p.glob("*.npz"))).n for p in (exp / "activations").iterdir()}
    assert set(val.trial_id) == set(exported)
    standard = {"std:relu", "std:gelu", "std:silu", "std:tanh", "std:elu"}
    for tid, n in exported.items():
        for optimizer in ("sgd", "rmsprop"):
            modes = set(val.loc[(val.trial_id == tid) & (val.optimizer == optimizer), "mode"])
            # an n=1 trial has no diverse network: it would be single:1, homogeneous
            assert modes == {"pure", *standard, *[f"single:{k}" for k in range(1, n + 1)],
                             *(["diverse"] if n > 1 else [])}
    assert (val.groupby(["trial_id", "optimizer", "mode"]).size() == 2).all()  # runs=2 seeds
    assert set(val.seed) == {0, 1}
    assert set(val.loc[val.optimizer == "rmsprop", "epochs"]) == {2}  # the optimiser's own settings
    assert set(val.loc[val.optimizer == "sgd", "epochs"]) == {1}
    hes = pd.read_parquet(exp / "hessian.parquet")
    for col in ("trial_id", "dataset", "optimizer", "mode", "top_eigenvalue", "trace", "top_eigenvalues",
                "density_eigen", "density_weight"):
        assert col in hes.columns
    assert len(hes) == val.groupby(["trial_id", "dataset", "optimizer", "mode"]).ngroups
    # one training per distinct network: the trials share the pure and std:* networks of each
    # (optimiser, seed), as their validation settings are equal
    shared = val[val["mode"].isin(["pure", *standard])]
    per_network = shared.groupby(["optimizer", "mode", "run"]).test_accuracy.nunique()
    assert (per_network == 1).all()
    # the two optimisers train different networks
    pure = val[val["mode"] == "pure"].groupby("optimizer").test_accuracy.apply(tuple)
    assert pure["sgd"] != pure["rmsprop"]
    trainings = len(list((exp / "ray" / "validation").glob("*/result.json")))
    assert trainings == len(val) - (len(exported) - 1) * 6 * 2 * 2  # 6 shared modes x 2 optimisers x 2 runs
    assert len(list((exp / "ray" / "hessian").glob("*/result.json"))) == hes.model_path.nunique()
    assert np.isfinite(hes.top_eigenvalue).all() and np.isfinite(hes.trace).all()
    summary = (exp / "summary.md").read_text()
    assert "±" in summary and "rmsprop" in summary and "sgd" in summary


def test_same_seed_same_configs(tmp_path, search_env):
    space = tiny_space(tmp_path, num_samples=4, max_concurrent=1, steps=2)
    configs = []
    for name in ("a", "b"):
        proc = run_cli(["search", "--space", space, "--name", name, "--storage", tmp_path / "r", "--quiet",
                        "--max-concurrent", "1"], search_env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        trials = pd.read_parquet(tmp_path / "r" / name / "trials.parquet").sort_values("optuna_number")
        configs.append(trials[["outer_lr", "inner_lr", "n_activations"]].to_numpy().tolist())
    assert configs[0] == configs[1]


def test_cmaes_sampler_drives_the_search(tmp_path, search_env):
    space = tiny_space(tmp_path, num_samples=5, max_concurrent=1, steps=2, sampler="cmaes")
    space.write_text(space.read_text().replace("{type: asha, grace_period: 1, reduction_factor: 2}", "{type: none}"))
    proc = run_cli(["search", "--space", space, "--name", "cma", "--storage", tmp_path / "r", "--quiet"], search_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = _study(tmp_path / "r" / "cma", "cma")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 5
    # after the 2 random start-up trials, CMA-ES itself sampled every trial (it tags them)
    assert [("cma:generation" in t.system_attrs) for t in study.trials] == [False, False, True, True, True]


def test_divergence_is_failed_not_retried(tmp_path, search_env):
    space = tiny_space(tmp_path, num_samples=2, inner_lr=False, extra_fixed=", inner_lr: 1000.0")
    proc = run_cli(["search", "--space", space, "--name", "div", "--storage", tmp_path / "r", "--quiet"],
                   search_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    exp = tmp_path / "r" / "div"
    trials = pd.read_parquet(exp / "trials.parquet")
    assert list(trials.status) == ["FAILED", "FAILED"]
    assert trials.error.str.contains("diverged").all()
    study = _study(exp, "div")
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL"]
    assert all("diverged" in t.user_attrs["error"] for t in study.trials)

    # --resume: a stale RUNNING Optuna trial (a driver killed mid-ask) becomes FAIL, nothing re-runs
    study.ask()
    proc = run_cli(["search", "--name", "div", "--storage", tmp_path / "r", "--resume", "--quiet"], search_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    states = [t.state.name for t in _study(exp, "div").trials]
    assert states == ["FAIL", "FAIL", "FAIL"]
    assert len(pd.read_parquet(exp / "trials.parquet")) == 2


@pytest.mark.parametrize("args, message", [
    (["--name", "a/b"], "invalid search name"),
    (["--name", ".."], "invalid search name"),
    (["--name", "x", "--top", "0"], "--top must be a positive integer"),
    (["--name", "nothing", "--resume"], "--resume: no search named 'nothing'"),
    (["--name", "x", "--address", "127.0.0.1:1"], "--address 127.0.0.1:1: no Ray cluster answers there"),
])
def test_bad_input_one_line_exit_2(tmp_path, capsys, args, message):
    space = tiny_space(tmp_path)
    storage = tmp_path / "results"
    argv = ["search", "--storage", str(storage), *args]
    if "--resume" not in args:
        argv += ["--space", str(space)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not list(storage.glob("*/ray"))


def test_unwritable_storage(tmp_path, capsys):
    if os.geteuid() == 0:
        blocker = tmp_path / "file"
        blocker.write_text("not a folder")
        storage = blocker / "sub"
    else:
        storage = tmp_path / "ro"
        storage.mkdir(mode=0o500)
    assert cli.main(["search", "--space", str(tiny_space(tmp_path)), "--name", "x", "--storage", str(storage)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write to storage" in err[0]


def test_too_many_gpus_fails_before_waiting(tmp_path, search_env):
    proc = run_cli(["search", "--space", tiny_space(tmp_path), "--name", "g", "--storage", tmp_path / "r",
                    "--gpus-per-trial", "2"], search_env, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--gpus-per-trial 2: no node has that many GPUs" in lines[0]
    assert not (tmp_path / "r" / "g" / "ray").exists()
    assert not ray_processes()


@pytest.fixture(scope="module")
def sqlite_search_with_dashboard(tmp_path_factory, search_env):
    """One search for the two tests below (a search costs a Ray session): `search --dashboard` with its
    study in an SQLite database (`--optuna-storage sqlite:///...`). Its output is read line by line;
    the moment the dashboard URL is printed (the search still runs: it stops the dashboard when it
    ends), the kernel's listening sockets and the dashboard's API are read."""
    import subprocess
    import sys
    import urllib.request
    root = tmp_path_factory.mktemp("sq")
    db, storage = root / "studies.db", root / "results"
    space = tiny_space(root, num_samples=2, steps=4)
    proc = subprocess.Popen([sys.executable, "-m", "dnn_search", "search", "--space", str(space), "--name", "sq",
                             "--storage", str(storage), "--dashboard", "--dashboard-port", "0",
                             "--optuna-storage", f"sqlite:///{db}"],
                            env=search_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    live: dict = {}
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Dashboard: ") and not live:
                url = line.split()[1]
                live["url"] = url
                if url.startswith("http://127.0.0.1:"):
                    port = int(url.split(":")[2].split("/")[0])
                    live["sockets"] = {a for a in listening_addresses(proc.pid) if a[1] == port}
                    with urllib.request.urlopen(url.replace("/dashboard", "/api/studies"), timeout=10) as reply:
                        live["api"] = json.load(reply)
        returncode = proc.wait(timeout=300)
    finally:
        proc.kill()
        proc.wait(30)
    return {"returncode": returncode, "lines": lines, "live": live, "db": db, "storage": storage}


def test_search_serves_the_dashboard_before_the_first_trial(sqlite_search_with_dashboard):
    """`search --dashboard`: optuna-dashboard answers while the search runs; its URL comes first."""
    run = sqlite_search_with_dashboard
    lines, live = run["lines"], run["live"]
    assert run["returncode"] == 0, "".join(lines)[-3000:]
    assert "url" in live, "no dashboard URL printed:\n" + "".join(lines)[-3000:]
    assert live["url"].startswith("http://127.0.0.1:")
    # the kernel's view: the dashboard (a child of the search) listens on loopback only
    port = int(live["url"].split(":")[2].split("/")[0])
    assert live["sockets"] == {("127.0.0.1", port)}
    first = next(i for i, line in enumerate(lines) if line.startswith("Dashboard: "))
    assert not any("RUNNING" in line or "TERMINATED" in line for line in lines[:first])
    assert "study_summaries" in live["api"]


def test_optuna_storage_url_end_to_end(sqlite_search_with_dashboard, search_env):
    """--optuna-storage sqlite:///...: the search writes its study there (no journal file), and
    dashboard (its API lists the study) and report read it from there, through the search record."""
    import subprocess
    import sys
    import urllib.request
    run = sqlite_search_with_dashboard
    db, storage = run["db"], run["storage"]
    assert run["returncode"] == 0, "".join(run["lines"])[-3000:]
    exp = storage / "sq"
    assert db.is_file() and not (exp / "optuna_journal.log").exists()
    study = optuna.load_study(study_name="sq", storage=f"sqlite:///{db}")
    assert len(study.trials) == 2
    dash = subprocess.Popen([sys.executable, "-m", "dnn_search", "dashboard", "sq", "--storage", str(storage),
                             "--port", "0"], env=search_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = dash.stdout.readline()
        assert line.startswith("Dashboard: "), line + dash.stderr.read()
        url = line.split()[1]
        with urllib.request.urlopen(url.replace("/dashboard", "/api/studies"), timeout=10) as reply:
            names = [s["study_name"] for s in json.load(reply)["study_summaries"]]
        assert names == ["sq"]
    finally:
        dash.send_signal(2)
        dash.wait(60)
    report = run_cli(["report", "sq", "--storage", storage], search_env)
    assert report.returncode == 0, report.stderr[-2000:]
    assert "could not be opened" not in (exp / "report.html").read_text()
    assert "importance" in (exp / "report.html").read_text().lower()


# --------------------------------------------------------------- min mode, pruning that must happen

@pytest.fixture(scope="module")
def pruned_min_run(tmp_path_factory, search_env):
    """A search that minimises meta_loss, one trial at a time, with ASHA (grace 1, reduction factor 2).
    One trial at a time makes the pruning deterministic: the random sampler (seed 0) draws the same
    six configurations every run, and ASHA stops a trial at step 1 when its meta-loss there is worse
    than the median of the trials before it. With these six, trials 1 and 5 are pruned (measured)."""
    root = tmp_path_factory.mktemp("minprune")
    space = tiny_space(root, num_samples=6, max_concurrent=1, steps=4, sampler="random")
    space.write_text(space.read_text().replace("metric: heldout_accuracy\n", "metric: meta_loss\nmode: min\n"))
    proc = run_cli(["search", "--space", space, "--name", "minp", "--storage", root / "r", "--quiet"], search_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "r" / "minp"


def test_pruned_trials_are_pruned_everywhere(pruned_min_run):
    exp = pruned_min_run
    trials = pd.read_parquet(exp / "trials.parquet").sort_values("optuna_number")
    steps = pd.read_parquet(exp / "steps.parquet")
    pruned = trials[trials.status == "PRUNED"]
    assert len(pruned) >= 1, trials[["trial_id", "status", "steps_done", "score"]].to_string()
    assert set(trials.status) == {"COMPLETED", "PRUNED"}
    assert (pruned.steps_done < 4).all() and (trials.loc[trials.status == "COMPLETED", "steps_done"] == 4).all()
    study = _study(exp, "minp")
    assert study.direction.name == "MINIMIZE"
    by_tid = {t.user_attrs["ray_trial_id"]: t for t in study.trials}
    loss = {(r["trial_id"], r["step"]): r["meta_loss"] for r in steps.to_dict("records")}
    for r in trials.to_dict("records"):
        t = by_tid[r["trial_id"]]
        assert t.state.name == ("PRUNED" if r["status"] == "PRUNED" else "COMPLETE"), r["trial_id"]
        # the study holds every step the trial computed, with the values of steps.parquet
        assert t.intermediate_values == {s: pytest.approx(loss[(r["trial_id"], s)])
                                         for s in range(1, r["steps_done"] + 1)}, r["trial_id"]
    # stopped for the right reason (the direction is min): when a trial was stopped at step s,
    # a trial before it (one ran at a time) had a lower meta-loss at step s
    for r in pruned.to_dict("records"):
        s = r["steps_done"]
        before = trials[trials.optuna_number < r["optuna_number"]].trial_id
        earlier = [loss[(tid, s)] for tid in before if (tid, s) in loss]
        assert earlier and min(earlier) < loss[(r["trial_id"], s)], (r, earlier)


def test_min_mode_export_picks_the_lowest_loss(pruned_min_run, tmp_path):
    exp = pruned_min_run
    trials = pd.read_parquet(exp / "trials.parquet")
    expected = best_by_hand(trials, "min", 2)
    completed = trials[trials.status == "COMPLETED"]
    assert expected[0] == completed.loc[completed.score.idxmin(), "trial_id"]
    assert (trials.score == trials.final_meta_loss).all()  # the score is the metric asked for
    out = tmp_path / "export"
    assert cli.main(["export", "minp", "--storage", str(exp.parent), "--top", "1", "--out", str(out)]) == 0
    assert [p.name for p in out.iterdir()] == expected[:1]
    meta = json.loads((out / expected[0] / "metadata.json").read_text())
    assert meta["mode"] == "min" and meta["metric"] == "meta_loss" and meta["rank"] == 1
    assert sorted(p.name for p in (exp / "activations").iterdir()) == sorted(expected)


def test_search_ablations_from_the_real_tables(pipeline_run):
    """The steps and n ablations of a real search: the counts per rung and per n agree with the
    trials' own records (steps_done, status), which the ablation code does not read."""
    from dnn_search.results.ablation import n_ablation, steps_ablation
    exp, _, _, _ = pipeline_run
    trials = pd.read_parquet(exp / "trials.parquet")
    steps = pd.read_parquet(exp / "steps.parquet")
    rungs = [1, 2, 4]
    lines = steps_ablation(steps, "heldout_accuracy", rungs, 100.0)
    assert len(lines) == 2 + len(rungs)
    for line, r in zip(lines[2:], rungs):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert int(cells[0]) == r and int(cells[1]) == int((trials.steps_done >= r).sum())
    last = steps[steps.step == 4].heldout_accuracy
    assert lines[-1].split("|")[5].strip() == f"{last.max() * 100:.2f}"
    lowest = steps_ablation(steps, "heldout_accuracy", rungs, 100.0, direction="min")
    assert lowest[-1].split("|")[5].strip() == f"{last.min() * 100:.2f}"
    by_n = n_ablation(trials, "score", "max", 100.0)
    done = trials[trials.status.isin(["COMPLETED", "PRUNED"])]
    assert len(by_n) == 2 + done.n_activations.nunique()
    for line in by_n[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        group = done[done.n_activations == int(cells[0])]
        assert int(cells[1]) == len(group) and int(cells[2]) == int((group.status == "COMPLETED").sum())
        assert cells[3] == f"{group.score.max() * 100:.2f}"
