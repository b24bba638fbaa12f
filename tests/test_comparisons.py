"""Honest comparisons (issue 14): the statistics against examples worked by hand, and the summary's
and report's picks made on the validation split, never on test.

Validation tables are built as rows (dicts) and written by the code's own writer
(`results.tables.write_table`), then read back by its own reader, as the pipeline does."""
from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import pandas as pd
import pytest

from dnn_search import stats
from dnn_search.metrics import Metric
from dnn_search.results import comparison, summary, tables
from dnn_search.tasks import Task

from conftest import markdown_table_rows

sys.path.insert(0, str(Path(__file__).parent))


# ------------------------------------------------------------------------------ (c) textbook statistics
#
# Only degrees of freedom 2 and 4 are used, where the t distribution has a closed form:
#   df = 2: F(t) = 1/2 + t / (2 sqrt(2 + t^2)), so two-sided p = 1 - |t| / sqrt(2 + t^2) and the
#           0.975 quantile solves t / sqrt(2 + t^2) = 0.95: t^2 = 2 * 0.9025 / 0.0975 = 18.512821,
#           t_{0.975,2} = 4.302653 (the t table's 4.303).
#   df = 4: F(t) = 1/2 + 3/8 * u * (1 - u^2/12) with u = t / sqrt(1 + t^2/4); t_{0.975,4} = 2.776445
#           (the t table's 2.776; check: u = 2.776445/sqrt(2.927146) = 1.622803,
#            F = 0.5 + 0.375 * 1.622803 * (1 - 0.219457) = 0.975000).

def test_mean_ci_by_hand():
    # [1, 2, 3]: mean 2, s^2 = (1 + 0 + 1)/2 = 1, s = 1, se = 1/sqrt(3) = 0.5773503, df = 2,
    # half width = 4.302653 * 0.5773503 = 2.484138 -> [-0.484138, 4.484138]
    ci = stats.mean_ci([1.0, 2.0, float("nan"), 3.0, None])
    assert (ci.mean, ci.sd, ci.n) == (2.0, 1.0, 3)
    assert ci.lo == pytest.approx(-0.484138, abs=2e-6) and ci.hi == pytest.approx(4.484138, abs=2e-6)
    # [1, 2, 3, 4, 5]: mean 3, s^2 = 10/4 = 2.5, se = sqrt(0.5) = 0.7071068, df = 4,
    # half width = 2.776445 * 0.7071068 = 1.963243 -> [1.036757, 4.963243]
    ci = stats.mean_ci([1, 2, 3, 4, 5])
    assert ci.sd == pytest.approx(1.581139, abs=1e-6)
    assert ci.lo == pytest.approx(1.036757, abs=2e-6) and ci.hi == pytest.approx(4.963243, abs=2e-6)
    one = stats.mean_ci([7.0])
    assert (one.mean, one.sd, one.n) == (7.0, 0.0, 1) and math.isnan(one.lo) and math.isnan(one.hi)
    assert stats.mean_ci([]).n == 0 and math.isnan(stats.mean_ci([]).mean)


# Welch, worked by hand: a = [0.86, 0.86, 0.83], b = [0.78, 0.79, 0.80, 0.81, 0.82]
#   mean a = 0.85, s_a^2 = (1e-4 + 1e-4 + 4e-4)/2 = 3.0e-4, v_a = s_a^2/3 = 1.0e-4
#   mean b = 0.80, s_b^2 = (4e-4 + 1e-4 + 0 + 1e-4 + 4e-4)/4 = 2.5e-4, v_b = s_b^2/5 = 5.0e-5
#   difference 0.05, se = sqrt(1.5e-4) = 0.01224745, t = 0.05/se = sqrt(50/3) = 4.082483
#   df = (v_a + v_b)^2 / (v_a^2/2 + v_b^2/4) = 2.25e-8 / (5e-9 + 6.25e-10) = 4.000000
#   (Student's pooled test: df = 6, t = 4.1926, p = 0.005733, which is not what is asked for)
#   p (df 4): u = t/sqrt(1 + t^2/4) = 10/sqrt(31) = 1.796053, F = 1/2 + 17/62 * 10/sqrt(31) = 0.9924662,
#     p = 2 (1 - F) = 0.0150677
#   95% CI: 0.05 -+ 2.776445 * 0.01224745 = 0.05 -+ 0.0340044 -> [0.0159956, 0.0840044]
WELCH_A = [0.86, 0.86, 0.83]
WELCH_B = [0.78, 0.79, 0.80, 0.81, 0.82]


def test_welch_by_hand():
    d = stats.welch(WELCH_A, WELCH_B)
    assert d.estimate == pytest.approx(0.05, abs=1e-12)
    assert d.t == pytest.approx(4.082483, abs=2e-6)
    assert d.df == pytest.approx(4.0, abs=1e-9)
    assert d.p == pytest.approx(0.0150677, abs=2e-7)
    assert d.lo == pytest.approx(0.0159956, abs=2e-7) and d.hi == pytest.approx(0.0840044, abs=2e-7)
    assert (d.n_a, d.n_b) == (3, 5)
    back = stats.welch(WELCH_B, WELCH_A)  # the other way round: the sign flips, p stays
    assert back.estimate == pytest.approx(-0.05) and back.p == pytest.approx(d.p) and back.hi == pytest.approx(-d.lo)
    assert math.isnan(stats.welch([1.0], WELCH_B).p) and stats.welch([1.0], WELCH_B).estimate == pytest.approx(0.2)


# Paired t, worked by hand: the values are matched by seed, not by position.
#   seed 10: 11 - 10 = 1, seed 11: 14 - 11 = 3, seed 12: 20 - 15 = 5 (seed 13 has no partner: left out)
#   mean d = 3, s_d^2 = (4 + 0 + 4)/2 = 4, s_d = 2, se = 2/sqrt(3) = 1.1547005, df = 2
#   t = 3/1.1547005 = 2.5980762 (= 3 sqrt(3)/2), t^2 = 6.75
#   p (df 2) = 1 - t/sqrt(2 + t^2) = 1 - 2.5980762/2.9580399 = 1 - 0.8783101 = 0.1216899
#   95% CI: 3 -+ 4.302653 * 1.1547005 = 3 -+ 4.968275 -> [-1.968275, 7.968275]
def test_paired_t_matches_by_seed_by_hand():
    a = {10: 11.0, 11: 14.0, 12: 20.0, 13: 99.0}
    b = {12: 15.0, 10: 10.0, 11: 11.0, 14: float("nan")}
    d = stats.paired_t(a, b)
    assert (d.n_a, d.n_b) == (3, 3)
    assert d.estimate == pytest.approx(3.0) and d.df == 2.0
    assert d.t == pytest.approx(2.5980762, abs=1e-7)
    assert d.p == pytest.approx(0.1216899, abs=1e-7)
    assert d.lo == pytest.approx(-1.968275, abs=2e-6) and d.hi == pytest.approx(7.968275, abs=2e-6)
    # matched by position instead (11-15, 14-10, 20-11 = -4, 4, 9) the answer would differ
    assert stats.paired_t(dict(enumerate([11.0, 14.0, 20.0])), dict(enumerate([15.0, 10.0, 11.0]))).estimate == \
        pytest.approx(3.0)  # the mean is the same...
    assert stats.paired_t(dict(enumerate([11.0, 14.0, 20.0])), dict(enumerate([15.0, 10.0, 11.0]))).p != \
        pytest.approx(d.p, abs=1e-3)  # ...the spread of the differences is not


# ------------------------------------------------------------------------------ (d) Holm
#
# The example of Holm's method on Wikipedia (Holm–Bonferroni method, "Example"): four hypotheses with
# p = 0.01, 0.04, 0.03, 0.005. Sorted: 0.005, 0.01, 0.03, 0.04, multiplied by m - j + 1 = 4, 3, 2, 1:
#   0.02, 0.03, 0.06, 0.04; made monotone (running maximum): 0.02, 0.03, 0.06, 0.06.
# In the input order: 0.03, 0.06, 0.06, 0.02. At alpha = 0.05 only H4 (0.005) and H1 (0.01) are
# rejected, as on the page.

def test_holm_on_the_textbook_example():
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # NaN entries stay NaN and do not count in m
    out = stats.holm([0.01, float("nan"), 0.04, None, 0.03, 0.005])
    assert math.isnan(out[1]) and math.isnan(out[3])
    assert [out[i] for i in (0, 2, 4, 5)] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # capped at 1, still monotone: 2 * 0.6 = 1.2 -> 1, then max(1, 0.7) = 1
    assert stats.holm([0.6, 0.7]) == [1.0, 1.0]
    assert stats.holm([]) == [] and stats.holm([0.2]) == [0.2]


# ------------------------------------------------------------------------------ (a), (b) the picks
#
# Five seeds per mode; each mode's values are its level plus the same small spread (so every sd > 0).
# The validation split and the test set disagree on purpose:
#   standard:     val best std:relu (74)        test best std:gelu (81)
#   homogeneous:  val best T1 single:1 (79)     test best T1 single:2 (86)
#   diverse:      val best T2 diverse (83)      test best T1 diverse (91)
# and T0 has one activation: its "diverse" network (val 97, test 98) is homogeneous and must never be
# reported as diverse. The rmsprop rows of the same dataset are a separate comparison.
SPREAD = [-0.02, 0.01, 0.0, -0.01, 0.02]
LEVELS = {  # (trial, mode): (val level, test level)
    ("T1", "pure"): (0.70, 0.71), ("T1", "std:relu"): (0.74, 0.67), ("T1", "std:gelu"): (0.72, 0.81),
    ("T1", "single:1"): (0.79, 0.72), ("T1", "single:2"): (0.77, 0.86), ("T1", "diverse"): (0.78, 0.91),
    ("T2", "single:1"): (0.76, 0.73), ("T2", "single:2"): (0.75, 0.74), ("T2", "single:3"): (0.60, 0.61),
    ("T2", "diverse"): (0.83, 0.63),
    ("T0", "single:1"): (0.66, 0.64), ("T0", "diverse"): (0.97, 0.98),
}
TRIALS = [{"trial_id": "T0", "status": "COMPLETED", "steps_done": 40, "n_activations": 1, "score": 0.5},
          {"trial_id": "T1", "status": "COMPLETED", "steps_done": 40, "n_activations": 2, "score": 0.6},
          {"trial_id": "T2", "status": "PRUNED", "steps_done": 10, "n_activations": 3, "score": 0.4}]


def _validation_rows(levels=LEVELS, dataset="MNIST1D", metric="accuracy", optimizer="sgd"):
    rows = []
    for trial in ("T0", "T1", "T2"):
        shared = [(m, lv) for (t, m), lv in levels.items() if t == "T1" and (m == "pure" or m.startswith("std:"))]
        own = [(m, lv) for (t, m), lv in levels.items() if t == trial and not (m == "pure" or m.startswith("std:"))]
        for mode, (val, test) in shared + own:  # pure and std:* written under every trial, as the pipeline does
            for run, d in enumerate(SPREAD):
                rows.append({"trial_id": trial, "dataset": dataset, "optimizer": optimizer, "mode": mode, "run": run,
                             "seed": 100 + run, f"test_{metric}": test + d, f"val_{metric}": val + d / 2,
                             "epochs": 3})
    return rows


def _write(tmp_path, rows, name="validation.parquet"):
    path = tmp_path / name
    tables.write_table(path, rows)
    return tables.read_table(path)


@pytest.fixture
def trials_table(tmp_path):
    path = tmp_path / "trials.parquet"
    tables.write_table(path, TRIALS, tables.TRIAL_COLUMNS)
    return tables.read_table(path)


@pytest.fixture
def validation(tmp_path):
    rmsprop = [r for r in _validation_rows(optimizer="rmsprop") if r["mode"] in ("pure", "std:relu")]
    for r in rmsprop:  # with rmsprop, relu is worse than pure on validation
        r["val_accuracy"] -= 0.10 if r["mode"] == "std:relu" else 0.0
    return _write(tmp_path, _validation_rows() + rmsprop)


def _picks(comp) -> dict:
    return {role: (arm.mode, arm.trial_id) if arm else None for role, arm in comp.picks.items()}


VAL_PICKS = {"pure": ("pure", None), "best standard": ("std:relu", None), "best homogeneous": ("single:1", "T1"),
             "best diverse": ("diverse", "T2")}


def _section(md: str, heading: str) -> str:
    return md.split(heading, 1)[1].split("\n## ", 1)[0]


def test_picks_are_made_on_validation_not_test(validation, trials_table, tmp_path):
    comps = {(c.dataset, c.optimizer): c for c in comparison.compare(validation, trials_table)}
    sgd = comps[("MNIST1D", "sgd")]
    assert sgd.split == "val" and _picks(sgd) == VAL_PICKS
    assert _picks(comps[("MNIST1D", "rmsprop")])["best standard"] == ("pure", None)
    md = summary.summary_markdown("s", validation, None, trials_table)
    section = _section(md, "## MNIST1D, optimizer sgd")
    assert comparison.NO_VALIDATION not in md.lower() and "Picked on validation" in section
    picks = markdown_table_rows(section, "| row | picked |")
    assert [picks[r][1] for r in comparison.PICK_ROLES] == ["pure", "std:relu", "single:1", "diverse"]
    assert picks["best diverse"][2].startswith("T2 (n = 3, 10 outer steps, early-stopped)")
    assert picks["best homogeneous"][2].startswith("T1 (n = 2, 40 outer steps, completed)")
    assert [picks[r][3] for r in comparison.PICK_ROLES] == ["reference", "val", "val", "val"]
    assert picks["best standard"][4] == "74.00" and picks["best standard"][5] == "67.00 ± 1.58"
    # test numbers only for the picks and pure: the test-best modes' test means appear only in the detail
    above_detail = md.split("## Every mode", 1)[0]
    for test_mean in ("81.00", "86.00", "91.00", "98.00"):  # std:gelu, T1 single:2, T1 diverse, T0 diverse
        assert test_mean not in above_detail, test_mean
    assert "81.00 ± 1.58" in md.split("## Every mode", 1)[1]  # ...where every mode is shown, labelled
    assert "not used for picks" in md

    # every test value gone: the same picks
    blank = [{**r, **{k: math.nan for k in r if k.startswith("test_")}} for r in _validation_rows()]
    no_test = _write(tmp_path, blank, "no_test.parquet")
    (comp,) = comparison.compare(no_test, trials_table)
    assert comp.split == "val" and _picks(comp) == VAL_PICKS
    summary.summary_markdown("s", no_test, None, trials_table)  # renders, with "–" for the statistics


def test_holm_counts_each_distinct_test_once(trials_table, tmp_path):
    """With pure as the best standard, "diverse − pure" and "diverse − standard" are one test (and so are
    the two homogeneous rows): Holm's family is the 3 distinct tests, not the 5 rows of the table."""
    levels = {**LEVELS, ("T1", "std:relu"): (0.60, 0.67), ("T1", "std:gelu"): (0.65, 0.81)}
    (comp,) = comparison.compare(_write(tmp_path, _validation_rows(levels)), trials_table)
    assert comp.picks["best standard"] is comp.picks["pure"]
    rows = {r.label: r for r in comp.rows}
    distinct = [rows["diverse − pure"], rows["diverse − homogeneous"], rows["homogeneous − pure"]]
    for kind in ("welch",):  # (every mode has the same per-seed spread: the paired differences have none)
        raw = [getattr(r, kind).p for r in distinct]
        assert all(0 < p < 1 for p in raw) and len(set(raw)) == 3
        assert [getattr(r, f"{kind}_p_holm") for r in distinct] == pytest.approx(stats.holm(raw), rel=1e-12)
        assert getattr(rows["diverse − standard"], f"{kind}_p_holm") == getattr(rows["diverse − pure"], f"{kind}_p_holm")
        assert getattr(rows["homogeneous − standard"], f"{kind}_p_holm") == \
            getattr(rows["homogeneous − pure"], f"{kind}_p_holm")


def test_without_a_validation_split_the_summary_says_it_picked_on_test(validation, trials_table, tmp_path):
    rows = [{k: v for k, v in r.items() if not k.startswith("val_") and k != "optimizer"}
            for r in _validation_rows()]
    old = _write(tmp_path, rows, "old.parquet")
    (comp,) = comparison.compare(old, trials_table)
    assert comp.split == "test" and comp.optimizer == "sgd"
    assert _picks(comp) == {"pure": ("pure", None), "best standard": ("std:gelu", None),
                            "best homogeneous": ("single:2", "T1"), "best diverse": ("diverse", "T1")}
    md = summary.summary_markdown("s", old, None, trials_table)
    assert comparison.NO_VALIDATION in md.lower()
    assert [c[3] for c in markdown_table_rows(md, "| row | picked |").values()] == ["reference", "test", "test", "test"]


def test_a_one_activation_trial_is_never_reported_as_diverse(validation, trials_table, tmp_path):
    # T0's diverse network is the best on both splits; it has one activation, so it is not diverse
    for table, trials in ((validation, trials_table), (validation, None)):  # n from trials.parquet, or counted
        comps = comparison.compare(table, trials)
        assert all(c.picks["best diverse"] is None or c.picks["best diverse"].trial_id != "T0" for c in comps)
        assert not any(a.trial_id == "T0" and a.kind == "diverse" for c in comps for a in c.arms)
        sgd = next(c for c in comps if c.optimizer == "sgd")
        assert sgd.homogeneous_diverse == ("T0",)
        md = summary.summary_markdown("s", table, None, trials)
        detail = md.split("## Every mode", 1)[1]
        assert "| T0 | diverse (n = 1: homogeneous, not diverse) |" in detail
        assert "| T0 | diverse |" not in md
    # only the one-activation trial: there is no diverse network at all
    only_t0 = _write(tmp_path, [r for r in _validation_rows() if r["trial_id"] == "T0"], "t0.parquet")
    (comp,) = comparison.compare(only_t0, trials_table)
    assert comp.picks["best diverse"] is None
    rows = markdown_table_rows(summary.summary_markdown("s", only_t0, None, trials_table), "| comparison (A − B) |")
    assert rows["diverse − pure"][1] == "–" and rows["diverse − pure"][5] == "–"


# ------------------------------------------------------------------------------ MSE: log scale, ratios
#
# A regression task (mse, min). Per seed, diverse = pure * f_s with log f = log 0.5 + (0, 0.1, -0.1):
#   paired log differences d = log 0.5 + (0, 0.1, -0.1): mean log 0.5, s_d = 0.1, se = 0.1/sqrt(3) = 0.0577350,
#   df = 2: half width 4.302653 * 0.0577350 = 0.248414; ratio exp(mean) = 0.500,
#   CI 0.5 * exp(-+0.248414) = 0.5 * [0.780037, 1.281990] = [0.390019, 0.640995] -> "[0.390, 0.641]".
#   paired t = log 0.5 / 0.0577350 = -12.00566, p (df 2) = 1 - 12.00566/sqrt(2 + 144.1359)
#   = 1 - 12.00566/12.08867 = 0.006867

class _MseToy(Task):
    """A regression task; the summary reads only its declared metrics (mse on log scale, minimised)."""

    name = "mse_toy"
    primary_metric = "mse"
    metrics = (Metric("mse", "min", log=True),)

    def output_size(self, data) -> int:
        return 1

    def loss(self, prediction, y):
        return ((prediction - y) ** 2).mean()

    def metric_sums(self, prediction, y):
        return {"mse": float(((prediction - y) ** 2).sum())}


@pytest.fixture
def mse_task():
    from dnn_search.tasks.registry import DATASETS, TASKS, DatasetEntry
    with TASKS.registered(_MseToy.name, _MseToy), \
            DATASETS.registered("MseToy", DatasetEntry("MseToy", lambda data_path=None: None, _MseToy.name)):
        yield


def test_mse_metrics_are_compared_as_ratios(mse_task, tmp_path):
    pure = [0.04, 0.06, 0.05]
    factors = [0.5, 0.5 * math.exp(0.1), 0.5 * math.exp(-0.1)]
    rows = []
    for mode, trial, test, val in (("pure", "T", pure, [0.05, 0.05, 0.05]),
                                   ("single:1", "T", [0.05, 0.07, 0.03], [0.06, 0.06, 0.06]),
                                   ("diverse", "T", [p * f for p, f in zip(pure, factors)], [0.02, 0.02, 0.02])):
        for s in range(3):
            rows.append({"trial_id": trial, "dataset": "MseToy", "optimizer": "sgd", "mode": mode, "run": s,
                         "seed": s, "test_mse": test[s], "val_mse": val[s] + 0.001 * s})
    table = _write(tmp_path, rows)
    trials = pd.DataFrame({"trial_id": ["T"], "n_activations": [2]})
    (comp,) = comparison.compare(table, trials)
    assert comp.view.log and comp.view.direction == "min"
    row = next(r for r in comp.rows if r.label == "diverse − pure")
    assert math.exp(row.paired.estimate) == pytest.approx(0.5)
    assert math.exp(row.paired.lo) == pytest.approx(0.390019, abs=2e-6)
    assert math.exp(row.paired.hi) == pytest.approx(0.640995, abs=2e-6)
    assert row.paired.p == pytest.approx(0.006867, abs=2e-6)
    md = summary.summary_markdown("s", table, None, trials)
    cells = markdown_table_rows(md, "| comparison (A − B) |")["diverse − pure"]
    assert cells[7:9] == ["0.500", "[0.390, 0.641]"]
    assert "A / B (ratio of geometric means)" in md and "accuracy" not in md
    assert "lowest mean `val_mse`" in md


# ------------------------------------------------------------------------------ (e) the report

def test_report_shows_the_bars_with_cis_and_marks_the_picks(validation, tmp_path):
    import base64

    import browser
    from dnn_search import cli
    folder = tmp_path / "search"
    folder.mkdir()
    tables.write_table(folder / "trials.parquet", TRIALS, tables.TRIAL_COLUMNS)
    tables.write_table(folder / "validation.parquet", _validation_rows())
    assert cli.main(["report", str(folder)]) == 0
    page = (folder / "report.html").read_text(encoding="utf-8")
    png = folder / "report_figures" / "validation_accuracy.png"
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
    # the figure is embedded, and its alt text names the bars marked as picked on validation
    alt = re.search(r'<img alt="(validation comparison[^"]*)" src="data:image/png;base64,([^"]+)"', page)
    assert alt, "no validation comparison figure"
    assert base64.b64decode(alt.group(2)) == png.read_bytes()
    assert ("picked on val for MNIST1D sgd: best standard std:relu, best homogeneous single:1 of T1, "
            "best diverse diverse of T2") in alt.group(1)
    assert "T0" not in alt.group(1) and "std:gelu" not in alt.group(1)
    plain = browser.visible_text(page)
    assert "95% t-intervals" in plain and "Hatched and labelled \"picked on val\"" in plain
    # the comparison tables, in the HTML itself
    assert re.search(r"<th[^>]*>Welch p \(Holm\)</th>", page) and re.search(r"<th[^>]*>paired-t p \(Holm\)</th>", page)
    assert "Picked on validation" in plain and "Every mode (detail, not used for picks)" in plain
    assert "diverse (n = 1: homogeneous, not diverse)" in plain  # T0's row in the detail
    assert "<script" not in page.lower() and not re.search(r"(?i)\bhttps?://", page)


def test_the_bars_figure_hatches_exactly_the_marked_bars(tmp_path, monkeypatch):
    """figures_validation.plot_mode_comparison: a marked bar is hatched and labelled, the others are not."""
    from dnn_search import plots
    from dnn_search.results.figures_validation import plot_mode_comparison
    seen = []
    plt = plots.pyplot()
    real = plt.Axes.bar

    def spy(self, x, height, *args, **kwargs):
        seen.append((float(x), kwargs.get("hatch")))
        return real(self, x, height, *args, **kwargs)
    monkeypatch.setattr(plt.Axes, "bar", spy)
    bars = [{"label": "pure", "mean": 0.7, "lo": 0.6, "hi": 0.8, "mark": None},
            {"label": "diverse", "mean": 0.8, "lo": 0.75, "hi": 0.85, "mark": "picked on val"}]
    plot_mode_comparison([("panel", bars)], tmp_path / "bars.png", ylabel="test accuracy")
    assert seen == [(0.0, None), (1.0, "//")]
