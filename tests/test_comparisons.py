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
from dnn_search.results import summary, tables

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
