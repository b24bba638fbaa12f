"""A failed table write is retried once, then stops the search with the reason; Optuna is never told
about a trial before its tables are on disk, and --resume finishes what the stop left (issue 18).

In-process: the real collector and searcher (Ray's callback and OptunaSearch classes, a real Optuna
journal storage) with the tables' writer failing on purpose. End to end: a real driver whose writes
fail through the fault point `DNN_SEARCH_FAIL_TABLE_WRITE` (search/faults.py), then --resume."""
from __future__ import annotations

import logging

import optuna
import pandas as pd
import pytest

from conftest import run_cli
from dnn_search.results.layout import STEPS_FILE, TRIALS_FILE
from dnn_search.results.storage import open_storage, storage_spec
from dnn_search.search import collector as collector_module
from dnn_search.search.collector import TableWriteFailed, make_collector
from dnn_search.search.driver import make_stopper
from dnn_search.search.space import from_dict
from dnn_search.search.state import DriverState
from dnn_search.search.study import make_searcher

SPACE = {"sampler": {"type": "random", "seed": 0}, "scheduler": {"type": "none"}, "num_samples": 2,
         "fixed": {"steps": 3}, "params": {"outer_lr": {"type": "loguniform", "low": 0.05, "high": 1.0}}}


@pytest.fixture
def failing_writer(monkeypatch):
    """The collector's table writer, failing (as a full disk does) the number of times set in `left`."""
    real = collector_module.write_table
    left = {"failures": 0, "calls": 0}

    def write_table(path, rows, columns=()):
        left["calls"] += 1
        if left["failures"] > 0:
            left["failures"] -= 1
            raise OSError(28, "No space left on device")
        return real(path, rows, columns)

    monkeypatch.setattr(collector_module, "write_table", write_table)
    return left


def _searcher(tmp_path):
    space = from_dict(SPACE)
    state = DriverState()
    collector = make_collector(tmp_path, space, True, state)
    state.persist = collector.persist
    storage = open_storage(storage_spec(tmp_path, None))
    searcher = make_searcher(space, "w", storage, state)
    state.study = optuna.load_study(study_name="w", storage=storage)
    return space, state, collector, searcher


def _resumed(tmp_path, space, snapshot):
    """The driver of a --resume: a new collector (reading the stopped run's tables) and a searcher
    restored from Tune's snapshot SNAPSHOT (which marks the trials it does not know stale)."""
    state = DriverState()
    collector = make_collector(tmp_path, space, True, state)
    storage = open_storage(storage_spec(tmp_path, None))
    make_searcher(space, "w", storage, state).restore(str(snapshot))
    state.study = optuna.load_study(study_name="w", storage=storage)
    return collector


def _result(space, step=3):
    return {"step": step, "target_steps": 3, space.metric: 0.5, "meta_loss": 1.0, "diverged": False}


def test_one_failed_write_is_retried(tmp_path, failing_writer, caplog):
    space, state, collector, searcher = _searcher(tmp_path)
    searcher.suggest("t1")
    collector._add_step("t1", _result(space))
    failing_writer["failures"] = 1
    with caplog.at_level(logging.WARNING, logger="dnn_search"):
        searcher.on_trial_complete("t1", result=_result(space))
    assert "retrying once" in caplog.text and "No space left on device" in caplog.text
    assert state.failure is None and failing_writer["failures"] == 0
    assert list(pd.read_parquet(tmp_path / STEPS_FILE).trial_id) == ["t1"]
    (told,) = state.study.get_trials(deepcopy=False)
    assert told.state.name == "COMPLETE" and told.user_attrs["ray_trial_id"] == "t1"
    make_stopper(state).stop_all()  # nothing to stop for


def test_two_failed_writes_stop_the_search_and_optuna_is_not_told(tmp_path, failing_writer):
    space, state, collector, searcher = _searcher(tmp_path)
    searcher.suggest("t1")
    searcher.suggest("t2")
    collector._add_step("t1", _result(space))
    failing_writer["failures"] = 2
    searcher.on_trial_complete("t1", result=_result(space))  # Tune would turn a raise here into a trial error
    assert isinstance(state.failure, TableWriteFailed)
    message = str(state.failure)
    assert "No space left on device" in message and "--resume" in message and "\n" not in message
    assert not (tmp_path / STEPS_FILE).exists() and not (tmp_path / TRIALS_FILE).exists()
    # the study (read back from its storage) was told nothing, and is told nothing more
    searcher.on_trial_complete("t2", result=_result(space))
    fresh = optuna.load_study(study_name="w", storage=open_storage(storage_spec(tmp_path, None)))
    assert [t.state.name for t in fresh.get_trials()] == ["RUNNING", "RUNNING"]
    assert failing_writer["calls"] == 2  # the failed write and its one retry; no write after the stop
    with pytest.raises(TableWriteFailed):  # Tune's next check, before its next snapshot
        make_stopper(state).stop_all()
    with pytest.raises(TableWriteFailed):  # a periodic write fails the same way
        failing_writer["failures"] = 2
        collector.write()


def _tune_trial(tid, status, result=None):
    """A real Tune Trial object (a stub: no trainable registered), as the collector gets them."""
    from ray.tune.experiment import Trial
    trial = Trial("metalearn_trial", config={"outer_lr": 0.1}, trial_id=tid, stub=True)
    trial.set_status(status)
    if result:
        trial.update_last_result(result)
    return trial


def test_resume_keeps_the_rows_of_trials_newer_than_tunes_snapshot(tmp_path):
    """Tune's snapshot of its trials lags (it is copied to the storage now and then): a resume from it
    does not know the trials created after it. One told to Optuna keeps its row and verdict; one lost
    with the driver is FAILED as stale, with the searcher's reason; none disappears from the table."""
    space, state, collector, searcher = _searcher(tmp_path)
    searcher.suggest("t1")
    snapshot = tmp_path / "searcher-state.pkl"
    searcher.save(str(snapshot))  # Tune's last snapshot: it knows t1 only
    searcher.suggest("t2")
    searcher.suggest("t3")
    for tid in ("t1", "t2", "t3"):
        collector.trials[tid] = _tune_trial(tid, "RUNNING")
    collector._add_step("t2", _result(space))
    collector.trials["t2"] = _tune_trial("t2", "TERMINATED", _result(space))
    searcher.on_trial_complete("t2", result=_result(space))  # written, then told
    assert set(pd.read_parquet(tmp_path / TRIALS_FILE).trial_id) == {"t1", "t2", "t3"}

    # the driver stops; --resume restores Tune's snapshot, which knows t1, and Tune adds a new trial
    collector2 = _resumed(tmp_path, space, snapshot)
    collector2.trials = {"t1": _tune_trial("t1", "RUNNING"), "t4": _tune_trial("t4", "PENDING")}
    collector2.write()
    table = pd.read_parquet(tmp_path / TRIALS_FILE).set_index("trial_id")
    assert sorted(table.index) == ["t1", "t2", "t3", "t4"], table.to_string()
    assert table.loc["t2", "status"] == "COMPLETED" and table.loc["t2", "optuna_number"] == 1
    assert table.loc["t3", "status"] == "FAILED" and "stale" in table.loc["t3", "error"]
    assert table.loc["t1", "status"] == "RUNNING"
    assert [r.step for r in pd.read_parquet(tmp_path / STEPS_FILE).itertuples() if r.trial_id == "t2"] == [3]


def test_resume_writes_a_row_for_a_stale_trial_no_table_ever_held(tmp_path):
    """A trial asked for in the very step whose table write stopped the driver is in no table and in
    no Tune snapshot: the study alone knows it. The resume marks it stale, and the table gets its row
    (FAILED, with the reason and the values it was asked to run with), so that the table holds every
    trial of the study."""
    space, state, collector, searcher = _searcher(tmp_path)
    searcher.suggest("t1")
    collector.trials["t1"] = _tune_trial("t1", "RUNNING")
    collector.write()
    snapshot = tmp_path / "searcher-state.pkl"
    searcher.save(str(snapshot))
    asked = searcher.suggest("t2")  # the driver stops before any table or snapshot holds t2
    assert set(pd.read_parquet(tmp_path / TRIALS_FILE).trial_id) == {"t1"}

    collector2 = _resumed(tmp_path, space, snapshot)
    collector2.trials = {"t1": _tune_trial("t1", "RUNNING")}
    collector2.write()
    table = pd.read_parquet(tmp_path / TRIALS_FILE).set_index("trial_id")
    assert sorted(table.index) == ["t1", "t2"], table.to_string()
    assert table.loc["t2", "status"] == "FAILED" and "stale" in table.loc["t2", "error"]
    assert table.loc["t2", "optuna_number"] == 1 and table.loc["t2", "steps_done"] == 0
    assert all(table.loc["t2", k] == v for k, v in asked.items() if k in space.params), (asked, table.loc["t2"])


@pytest.mark.slow
def test_search_stops_on_a_failing_write_and_resume_finishes_it(tmp_path, search_env):
    """A real driver: the write before the 1st tell fails once (retried, the search goes on), the
    write before the 2nd tell fails twice (the search stops with the reason, exit 2, and that trial is
    not told); --resume, with the disk back, finishes every trial and tells each exactly once."""
    from test_reliability import study_of, write_space
    name, storage = "full", tmp_path / "r"
    space = write_space(tmp_path, num_samples=4, max_concurrent=2, steps=4)
    # TUNE_GLOBAL_CHECKPOINT_S=0: Tune snapshots its state at every step, so a snapshot taken between
    # the untold trial's end and the stop would be on disk (and the resume would never tell it)
    env = {**search_env, "DNN_SEARCH_FAIL_TABLE_WRITE": "1:1,2:2", "TUNE_GLOBAL_CHECKPOINT_S": "0"}
    proc = run_cli(["search", "--space", space, "--name", name, "--storage", storage, "--quiet"], env, timeout=400)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "retrying once" in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("dnn-search search: error: search stopped: cannot write the search tables"), last
    assert "No space left on device" in last and "--resume" in last
    exp = storage / name
    study = study_of(exp, name)
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) == 1, [(t.number, t.state.name) for t in study.trials]  # the 2nd was not told
    untold = [t.user_attrs["ray_trial_id"] for t in study.trials if t.state.name == "RUNNING"]
    assert untold
    # Tune's last saved snapshot reached the storage before the driver ended (tune_patches.flush_snapshot):
    # it knows every trial that had reported a step (each was created, and saved, at an earlier step of
    # Tune's loop), so the resume continues them. A trial created in the very step that raised has no
    # result and is in no snapshot: the resume marks it failed as stale, and Tune starts another.
    snapshots = sorted((exp / "ray" / "search").glob("experiment_state-*.json"))
    assert snapshots, "no snapshot of Tune's trials on the storage"
    text = snapshots[-1].read_text(encoding="utf-8", errors="replace")
    reported = {d.name.split("_")[2] for d in (exp / "ray" / "search").glob("metalearn_trial_*")
                if (d / "result.json").is_file() and (d / "result.json").stat().st_size > 0}
    assert reported and all(tid in text for tid in reported), (reported, [t.number for t in study.trials])
    asked = {t.user_attrs["ray_trial_id"] for t in study.trials}

    env = {**search_env, "TUNE_GLOBAL_CHECKPOINT_S": "0"}
    proc = run_cli(["search", "--name", name, "--storage", storage, "--resume", "--quiet"], env, timeout=400)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    trials = pd.read_parquet(exp / TRIALS_FILE)
    study = study_of(exp, name)
    by_tid = {t.user_attrs.get("ray_trial_id"): t for t in study.trials}
    # one row per trial the study holds, with its verdict; none left running; the search ran its 4 trials
    assert sorted(trials.trial_id) == sorted(by_tid), trials.to_string()
    expected = {"COMPLETE": "COMPLETED", "FAIL": "FAILED", "PRUNED": "PRUNED"}
    assert all(expected[by_tid[r.trial_id].state.name] == r.status for r in trials.itertuples()), trials.to_string()
    stale = {t for t in asked - reported if by_tid[t].state.name == "FAIL"}
    assert all("stale" in by_tid[t].user_attrs.get("error", "") for t in stale)
    assert len(trials) == 4 + len(stale) and trials.status.isin(["COMPLETED", "FAILED"]).all(), trials.to_string()
    assert finished[0].user_attrs["ray_trial_id"] in set(trials.trial_id)
    for tid in set(untold) & reported:  # told on the resume, as the table says
        assert by_tid[tid].state.is_finished() and tid not in stale
    steps = pd.read_parquet(exp / STEPS_FILE)
    for r in trials[trials.status == "COMPLETED"].to_dict("records"):
        assert sorted(steps[steps.trial_id == r["trial_id"]].step) == [1, 2, 3, 4]
