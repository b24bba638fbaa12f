"""Ranking, per-parameter picks and the summary's Welch t-tests, on tables whose right answer is known
in advance. Tables are written by the code's own writer (`results.tables.write_table`) and read back by its own
reader; only public functions are called (`rank_trials`, `summary_markdown`)."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from dnn_search.results import ranking, summary, tables
from dnn_search.results.layout import TRIALS_FILE

from conftest import markdown_table_rows

# (trial_id, status, score, checkpoint, n_activations): written in optuna_number order, as the search does
ROWS = [
    ("t0", "COMPLETED", 0.5, True, 3),
    ("t1", "COMPLETED", 0.9, True, 2),
    ("t2", "PRUNED", 0.95, True, 1),      # better than every completed trial, but pruned: ranked after them
    ("t3", "FAILED", 0.99, True, 1),      # never ranked
    ("t4", "RUNNING", 0.98, True, 2),     # never ranked
    ("t5", "COMPLETED", math.nan, True, 2),   # no score (diverged): never ranked
    ("t6", "COMPLETED", 0.7, True, 1),    # tie with t7: the earlier trial first, in both directions
    ("t7", "COMPLETED", 0.7, True, 1),
    ("t8", "COMPLETED", 0.8, False, 2),   # no checkpoint: nothing to export, never ranked
    ("t9", "PRUNED", 0.3, True, 3),
    ("t10", "COMPLETED", math.inf, True, 2),  # not a finite score: never ranked
]
BEST_MAX = ["t1", "t6", "t7", "t0", "t2", "t9"]
BEST_MIN = ["t0", "t6", "t7", "t1", "t9", "t2"]


@pytest.fixture
def trials(tmp_path):
    rows = [{"trial_id": tid, "optuna_number": i, "status": status, "score": score, "n_activations": n,
             "steps_done": 4 if status == "COMPLETED" else 1,
             "checkpoint_path": f"ray/search/{tid}/checkpoint_000000" if ckpt else ""}
            for i, (tid, status, score, ckpt, n) in enumerate(ROWS)]
    path = tmp_path / TRIALS_FILE
    tables.write_table(path, rows, tables.TRIAL_COLUMNS)
    return tables.read_table(path)


def exportable(trials, direction, top, per=None):
    """The ranking export and the terminal use: only trials with a checkpoint."""
    return ranking.rank_trials(trials, direction, top, per, need_checkpoint=True)


@pytest.mark.parametrize("mode, expected", [("max", BEST_MAX), ("min", BEST_MIN)])
def test_rank_trials_both_directions(trials, mode, expected):
    for top in range(1, len(expected) + 2):
        assert list(exportable(trials, mode, top)["trial_id"]) == expected[:top], (mode, top)


def test_rank_trials_pruned_fill_up_only_after_completed(trials):
    only_pruned = trials[trials.status != "COMPLETED"]
    assert list(exportable(only_pruned, "max", 5)["trial_id"]) == ["t2", "t9"]
    assert list(exportable(only_pruned, "min", 5)["trial_id"]) == ["t9", "t2"]
    nothing = trials[trials.status.isin(["FAILED", "RUNNING"])]
    assert exportable(nothing, "max", 3).empty


def test_report_export_and_terminal_rank_alike(trials):
    """One ranking: the report ranks every finished trial with a score (t8 too, which has no checkpoint);
    export and the terminal rank the same way among the trials they can export."""
    for direction in ("max", "min"):
        everything = list(ranking.rank_trials(trials, direction)["trial_id"])
        assert "t8" in everything
        assert [t for t in everything if t != "t8"] == list(exportable(trials, direction, None)["trial_id"])


def test_a_table_rebuilt_from_the_study_honours_a_minimised_metric(tmp_path):
    """Without trials.parquet the report rebuilds the table from the Optuna study: best_<metric> is the
    best in the metric's direction (the minimum of an MSE), and the trials rank lowest first."""
    import optuna

    from dnn_search.results.record import SearchRecord, write_record
    from dnn_search.results.report_data import load_results, ranked_trials
    folder = tmp_path / "min-search"
    folder.mkdir()
    write_record(folder, SearchRecord("min-search", {"metric": "heldout_mse", "mode": "min",
                                                     "fixed": {"dataset": "VanDerPol"}}))
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(folder / "optuna_journal.log")))
    study = optuna.create_study(study_name="min-search", storage=storage, direction="minimize")
    for curve in ([0.9, 0.4, 0.6], [0.5, 0.2, 0.3]):
        trial = study.ask()
        for step, value in enumerate(curve, start=1):
            trial.report(value, step)
        study.tell(trial, curve[-1])
    res = load_results(folder)
    assert list(res.trials["best_heldout_mse"]) == [0.4, 0.2]
    ranked, score = ranked_trials(res)
    assert score == "score" and list(ranked["score"]) == [0.3, 0.6] and list(ranked["trial_id"]) == ["1", "0"]


@pytest.mark.parametrize("mode, top, expected", [
    # the best `top` of each n_activations value, groups in the order of their best trial
    ("max", 1, {2: ["t1"], 1: ["t6"], 3: ["t0"]}),
    ("max", 2, {2: ["t1"], 1: ["t6", "t7"], 3: ["t0", "t9"]}),
    ("min", 1, {3: ["t0"], 1: ["t6"], 2: ["t1"]}),
    ("min", 3, {3: ["t0", "t9"], 1: ["t6", "t7", "t2"], 2: ["t1"]}),
])
def test_top_per_picks_the_best_of_each_value(trials, mode, top, expected):
    picked = exportable(trials, mode, top, per="n_activations")
    groups = {}
    for tid, n in zip(picked.trial_id, picked.n_activations):
        groups.setdefault(int(n), []).append(tid)
    assert groups == expected
    assert list(groups) == list(expected)  # group order: by each group's best trial
    # a column that the table lacks: plain top-k
    assert list(exportable(trials, mode, top, per="no_such_column").trial_id) == \
        (BEST_MAX if mode == "max" else BEST_MIN)[:top]


# ------------------------------------------------------------------------------ Welch t-test
#
# Worked by hand (two-sided Welch t-test), diverse a = [0.86, 0.86, 0.83], pure b = [0.78 .. 0.82]:
#   mean a = 0.85, s_a^2 = (0.01^2 + 0.01^2 + 0.02^2) / 2 = 3.0e-4, n_a = 3, v_a = s_a^2/n_a = 1.0e-4
#   mean b = 0.80, s_b^2 = (0.02^2 + 0.01^2 + 0 + 0.01^2 + 0.02^2) / 4 = 2.5e-4, n_b = 5, v_b = 5.0e-5
#   t  = (0.85 - 0.80) / sqrt(v_a + v_b) = 0.05 / sqrt(1.5e-4) = sqrt(50/3) = 4.08248
#   df = (v_a + v_b)^2 / (v_a^2/(n_a-1) + v_b^2/(n_b-1)) = 2.25e-8 / (5e-9 + 6.25e-10) = 4.00000
#   (Student's pooled test would give df = 6, t = 4.1926, p = 0.005733: not what is asked for)
#   With df = 4 the t distribution has a closed form:
#     F(t) = 1/2 + 3/8 * t/sqrt(1 + t^2/4) * (1 - t^2/(12 (1 + t^2/4)))
#     t/sqrt(1 + t^2/4) = 10/sqrt(31) = 1.79605,  t^2/(1 + t^2/4) = 100/31,  1 - 100/372 = 68/93
#     F = 1/2 + 17/62 * 10/sqrt(31) = 0.992466
#   p  = 2 * (1 - F) = 0.0150677   -> printed with 3 significant digits: 0.0151
# Diverse against the best homogeneous network single:2 = [0.83 .. 0.87] (mean 0.85 = mean a): t = 0, p = 1.
DIVERSE = [0.86, 0.86, 0.83]
PURE = [0.78, 0.79, 0.80, 0.81, 0.82]
SINGLE_BEST = [0.83, 0.84, 0.85, 0.86, 0.87]
SINGLE_WORSE = [0.70, 0.71, 0.72]


@pytest.fixture
def validation(tmp_path):
    rows = []

    def add(trial, mode, values):
        for run, v in enumerate(values):
            rows.append({"trial_id": trial, "dataset": "MNIST1D", "mode": mode, "run": run, "seed": run,
                         "test_accuracy": v, "test_loss": 1.0 - v})
    # trial B is listed first and is worse in every learned mode: the picks must not take the first seen.
    # pure does not depend on the trial: the pipeline writes the same values under each trial.
    add("B", "pure", PURE)
    add("B", "single:1", [0.60, 0.61, 0.65])
    add("B", "diverse", [0.62, 0.64, 0.66])
    add("A", "pure", PURE)
    add("A", "single:1", SINGLE_WORSE)
    add("A", "single:2", SINGLE_BEST)
    add("A", "diverse", DIVERSE)
    path = tmp_path / "validation.parquet"
    tables.write_table(path, rows, ("trial_id", "dataset", "mode", "run", "seed", "test_accuracy", "test_loss"))
    return tables.read_table(path)


N_ACTIVATIONS = pd.DataFrame({"trial_id": ["A", "B"], "n_activations": [2, 1]})


def test_welch_p_values_match_the_hand_computation(validation):
    md = summary.summary_markdown("s", validation, None, N_ACTIVATIONS)
    assert "Picked on test: no validation split in this file" in md  # no val_ columns here
    picks = markdown_table_rows(md, "| row | picked |")
    assert picks["best diverse"][1] == "diverse" and picks["best diverse"][2].startswith("A ")
    assert picks["best diverse"][5] == "85.00 ± 1.73"       # s_a = sqrt(3e-4) = 0.01732
    assert picks["pure"][5] == "80.00 ± 1.58"               # s_b = sqrt(2.5e-4) = 0.01581
    assert picks["best homogeneous"][1] == "single:2" and picks["best homogeneous"][5] == "85.00 ± 1.58"
    comparisons = markdown_table_rows(md, "| comparison (A − B) |")
    header = next(x for x in md.splitlines() if x.startswith("| comparison (A − B) |"))
    col = [c.strip() for c in header.strip().strip("|").split("|")].index("Welch p")
    assert comparisons["diverse − pure"][col] == "0.0151"              # 0.0150677, see above
    assert comparisons["diverse − pure"][col - 2] == "+5.00"           # 85.00 - 80.00 points
    assert float(comparisons["diverse − homogeneous"][col]) == pytest.approx(1.0)  # t = 0


def test_summary_picks_the_best_homogeneous_per_trial(validation):
    md = summary.summary_markdown("s", validation, None, N_ACTIVATIONS)
    lines = [x for x in md.split("## Exported trials", 1)[1].splitlines() if x.startswith("| MNIST1D |")]
    cells = [[c.strip() for c in x.strip().strip("|").split("|")] for x in lines]
    rows = {c[1]: c for c in cells}  # by trial
    # A: single:2 (85.00) beats single:1 (71.00); its diverse network has mean 85.00
    assert rows["A"][-2] == "85.00 (single:2)" and rows["A"][-1] == "85.00", rows["A"]
    # B: one single only; one activation, so its "diverse" network is homogeneous and not reported as diverse
    assert rows["B"][-2] == "62.00 (single:1)" and "homogeneous" in rows["B"][-1], rows["B"]
