"""The statistics of a diversity study (issue 19, point 4): dnn_search.study_stats against scipy.stats,
against examples worked by hand, and in seeded simulations where the truth is known (interval
coverage, TOST acceptance and type-I error, variance components, TOST power).

Simulation tolerances are 3 binomial standard errors of the simulated rate (or, for the variance
components, 4 standard deviations of the estimator from its chi-squared sampling distribution); the
generators are seeded, so every run draws the same numbers."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate
from scipy import stats as sps

from dnn_search import stats
from dnn_search.study_stats import (
    Tost,
    fisher_failures,
    k_for_power,
    one_sample,
    tost,
    tost_power,
    variance_components,
    verdict,
    worst_case,
)

SAMPLE = [0.31, -0.12, 0.55, 0.08, 0.27, 0.41, -0.05]
ARM_A = [71.2, 73.5, 70.1, 74.8, 72.0]
ARM_B = [69.0, 69.4, 70.3, 68.1, 69.9, 70.6, 68.8, 69.5]


# ------------------------------------------------------------------------------------ against scipy

@pytest.mark.parametrize("level", [0.95, 0.90])
def test_one_sample_matches_scipy_ttest_1samp(level):
    d = one_sample(SAMPLE + [None, float("nan")], level=level)  # missing values are dropped
    ref = sps.ttest_1samp(SAMPLE, 0.0)
    ci = ref.confidence_interval(level)
    assert (d.n_a, d.n_b, d.df, d.level) == (7, 7, 6.0, level)
    assert d.estimate == pytest.approx(np.mean(SAMPLE), rel=1e-12)
    assert d.t == pytest.approx(ref.statistic, rel=1e-12) and d.p == pytest.approx(ref.pvalue, rel=1e-10)
    assert (d.lo, d.hi) == (pytest.approx(ci.low, rel=1e-12), pytest.approx(ci.high, rel=1e-12))


def test_one_sample_without_enough_values_is_nan():
    one, none, flat = one_sample([0.4]), one_sample([]), one_sample([0.5, 0.5, 0.5])
    assert one.estimate == 0.4 and math.isnan(one.p) and math.isnan(one.lo) and one.n_a == 1
    assert none.n_a == 0 and math.isnan(none.estimate)
    assert flat.estimate == 0.5 and math.isnan(flat.p)


def test_welch_matches_scipy_ttest_ind_unequal_variances():
    d = stats.welch(ARM_A, ARM_B)
    ref = sps.ttest_ind(ARM_A, ARM_B, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert d.t == pytest.approx(ref.statistic, rel=1e-12) and d.p == pytest.approx(ref.pvalue, rel=1e-10)
    assert d.df == pytest.approx(ref.df, rel=1e-12)
    assert (d.lo, d.hi) == (pytest.approx(ci.low, rel=1e-12), pytest.approx(ci.high, rel=1e-12))


def test_tost_one_sample_matches_two_one_sided_scipy_tests():
    low, high = -0.2, 0.6
    result = tost(SAMPLE, low, high)  # raw values: per-replicate differences, one-sample t
    assert result == tost(one_sample(SAMPLE), low, high)
    p_low = sps.ttest_1samp(SAMPLE, low, alternative="greater").pvalue
    p_high = sps.ttest_1samp(SAMPLE, high, alternative="less").pvalue
    ci90 = sps.ttest_1samp(SAMPLE, 0.0).confidence_interval(0.90)
    assert result.p_low == pytest.approx(p_low, rel=1e-10) and result.p_high == pytest.approx(p_high, rel=1e-10)
    assert result.p == max(result.p_low, result.p_high) and result.df == 6.0
    assert (result.lo, result.hi) == (pytest.approx(ci90.low, rel=1e-12), pytest.approx(ci90.high, rel=1e-12))


def test_tost_welch_matches_two_one_sided_scipy_tests():
    low, high = -1.0, 4.0
    result = tost(stats.welch(ARM_A, ARM_B), low, high)
    shifted = np.asarray(ARM_B)  # mean(A) - mean(B) - c is the Welch statistic of A against B + c
    p_low = sps.ttest_ind(ARM_A, shifted + low, equal_var=False, alternative="greater").pvalue
    p_high = sps.ttest_ind(ARM_A, shifted + high, equal_var=False, alternative="less").pvalue
    ref = sps.ttest_ind(ARM_A, ARM_B, equal_var=False)
    ci90 = ref.confidence_interval(0.90)
    assert result.p_low == pytest.approx(p_low, rel=1e-9) and result.p_high == pytest.approx(p_high, rel=1e-9)
    assert result.df == pytest.approx(ref.df, rel=1e-12)
    assert (result.lo, result.hi) == (pytest.approx(ci90.low, rel=1e-12), pytest.approx(ci90.high, rel=1e-12))


def test_tost_equivalent_exactly_when_the_90_percent_interval_lies_inside_the_window():
    d = stats.welch(ARM_A, ARM_B)
    seen = set()
    for low in np.linspace(-3.0, 2.0, 26):
        for high in np.linspace(2.5, 8.0, 23):
            r = tost(d, float(low), float(high))
            inside = low < r.lo and r.hi < high
            assert r.equivalent == inside == (r.p_low < 0.05 and r.p_high < 0.05)
            seen.add(r.equivalent)
    assert seen == {True, False}
    nan = tost([1.0], -1.0, 1.0)
    assert not nan.equivalent and math.isnan(nan.p)
    with pytest.raises(ValueError):
        tost(d, 1.0, -1.0)


def test_fisher_failures_matches_scipy_fisher_exact():
    for counts in [(3, 10, 0, 10), (1, 8, 5, 9), (0, 4, 0, 6), (7, 7, 2, 12)]:
        result = fisher_failures(*counts)
        fa, ta, fb, tb = counts
        ref = sps.fisher_exact([[fa, ta - fa], [fb, tb - fb]], alternative="two-sided")
        assert result.p == pytest.approx(ref.pvalue, rel=1e-12)
        assert result.odds_ratio == ref.statistic or (math.isnan(ref.statistic) and math.isnan(result.odds_ratio))
    # by hand: 3 of 3 failed against 0 of 3 -> only this table and its mirror are as extreme,
    # each with probability 1 / C(6, 3) = 1/20, so p = 0.1
    assert fisher_failures(3, 3, 0, 3).p == pytest.approx(0.1, rel=1e-12)
    assert math.isnan(fisher_failures(0, 0, 1, 3).p)
    with pytest.raises(ValueError):
        fisher_failures(4, 3, 0, 3)


# ------------------------------------------------------------------------- variance components, by hand

def test_variance_components_balanced_by_hand():
    # groups [1, 3], [4, 6], [7, 9]: means 2, 5, 8, grand mean 5, R = 2
    # SS_between = 2 * (9 + 0 + 9) = 36 on 2 df -> MS_between = 18
    # SS_within = (1 + 1) * 3 = 6 on 3 df -> MS_within = 2 = sigma2_ret
    # sigma2_meta = (18 - 2) / 2 = 8, ICC = 8 / 10 = 0.8, F = 9
    vc = variance_components([[1, 3], [4, 6], [7, 9]])
    assert (vc.k, vc.n_total, vc.df_between, vc.df_within) == (3, 6, 2, 3)
    assert vc.n0 == pytest.approx(2.0) and vc.ms_between == pytest.approx(18.0) and vc.ms_within == pytest.approx(2.0)
    assert vc.sigma2_ret == pytest.approx(2.0) and vc.sigma2_meta == pytest.approx(8.0) and vc.icc == pytest.approx(0.8)
    ref = sps.f_oneway([1, 3], [4, 6], [7, 9])
    assert vc.f == pytest.approx(ref.statistic) and vc.p == pytest.approx(ref.pvalue, rel=1e-10)
    # R* = ceil(sqrt(c_meta / c_ret * sigma2_ret / sigma2_meta)):
    # 100/1 * 2/8 = 25 -> 5 exactly; 8/1 * 2/8 = 2 -> sqrt 2 = 1.41 -> 2; 1/1 * 1/4 -> 0.5 -> at least 1
    assert (vc.optimal_r(100.0, 1.0), vc.optimal_r(8.0, 1.0), vc.optimal_r(1.0, 1.0)) == (5, 2, 1)
    with pytest.raises(ValueError):
        vc.optimal_r(0.0, 1.0)


def test_variance_components_unbalanced_by_hand():
    # groups [1, 3], [4, 5, 6], [8]: N = 6, means 2, 5, 8, grand mean 27/6 = 4.5
    # SS_between = 2 * 6.25 + 3 * 0.25 + 1 * 12.25 = 25.5 on 2 df -> MS_between = 12.75
    # SS_within = 2 + 2 + 0 = 4 on 3 df -> MS_within = 4/3
    # n0 = (6 - (4 + 9 + 1)/6) / 2 = (6 - 7/3) / 2 = 11/6
    # sigma2_meta = (12.75 - 4/3) / (11/6) = (137/12) * (6/11) = 137/22
    vc = variance_components([[1, 3], [4, 5, 6, None], [8], []])
    assert (vc.k, vc.n_total) == (3, 6)
    assert vc.n0 == pytest.approx(11 / 6) and vc.ms_between == pytest.approx(12.75)
    assert vc.sigma2_ret == pytest.approx(4 / 3) and vc.sigma2_meta == pytest.approx(137 / 22)
    assert vc.f == pytest.approx(sps.f_oneway([1, 3], [4, 5, 6], [8]).statistic)


def test_variance_components_without_meta_variance_has_no_optimal_r():
    vc = variance_components([[1, 3], [3, 1], [2, 2]])  # equal means: MS_between = 0
    assert vc.sigma2_meta == 0.0 and vc.icc == 0.0 and vc.optimal_r(10.0, 1.0) is None
    one = variance_components([[1.0, 2.0]])
    assert math.isnan(one.sigma2_meta) and one.optimal_r(10.0, 1.0) is None


def test_worst_case_counts_failures_at_the_arms_worst_value():
    values = [0.8, 0.9, None, 0.7]
    assert worst_case(values, 2, "max").tolist() == [0.8, 0.9, 0.7, 0.7, 0.7]
    assert worst_case(values, 1, "min").tolist() == [0.8, 0.9, 0.7, 0.9]
    assert worst_case(values, 0, "max").tolist() == [0.8, 0.9, 0.7]
    assert worst_case([], 3, "min").size == 0
    with pytest.raises(ValueError):
        worst_case(values, 1, "up")


# ------------------------------------------------------------------------------------------ verdicts

def _called(diffs, direction, margin=1.0, p_adjusted=None):
    d = one_sample(diffs)
    return verdict(d, tost(d, -margin, margin), direction, p_adjusted=p_adjusted)


UP = [2.0, 2.1, 1.9, 2.0, 2.2]             # arm clearly above the reference, beyond the margin
DOWN = [-x for x in UP]
FLAT = [0.1, -0.1, 0.05, -0.05, 0.0, 0.02]  # no difference, tight: inside the margin
NOISY = [1.5, -1.2, 0.8, -0.9]              # neither significant nor inside the margin
SMALL = [0.2, 0.21, 0.19, 0.2, 0.22]        # significant and inside the margin: small but real


@pytest.mark.parametrize("direction,up,down", [("max", "better", "worse"), ("min", "worse", "better")])
def test_verdict_each_outcome_in_both_directions(direction, up, down):
    assert _called(UP, direction) == up and _called(DOWN, direction) == down
    assert _called(FLAT, direction) == "equivalent"
    assert _called(NOISY, direction) == "inconclusive"
    assert _called(SMALL, direction) == up                    # a real difference wins over the window
    assert _called(UP, direction, p_adjusted=0.2) == "inconclusive"  # Holm took significance away
    assert _called(SMALL, direction, p_adjusted=0.2) == "equivalent"
    welch = stats.welch(ARM_A, ARM_B)  # independent arms: A about 3 points above B
    assert verdict(welch, tost(welch, -1.0, 1.0), direction) == up


def test_verdict_refuses_a_tost_of_another_estimate():
    d = one_sample(UP)
    with pytest.raises(ValueError):
        verdict(d, tost(FLAT, -1.0, 1.0), "max")
    with pytest.raises(ValueError):
        verdict(d, tost(d, -1.0, 1.0), "higher")


# ------------------------------------------------------------------------------ seeded simulations

DRAWS = 2000


def _within_simulation_error(rate, expected, n=DRAWS):
    return abs(rate - expected) < 3.0 * math.sqrt(expected * (1.0 - expected) / n)


def test_one_sample_interval_covers_the_true_difference_at_its_nominal_rate():
    rng = np.random.default_rng(20260101)
    truth, k = 0.7, 5
    covered = 0
    for _ in range(DRAWS):
        d = one_sample(rng.normal(truth, 2.0, size=k))
        covered += d.lo < truth < d.hi
    assert _within_simulation_error(covered / DRAWS, 0.95), covered / DRAWS


def test_welch_interval_covers_the_true_difference_at_its_nominal_rate():
    # unequal sizes with the larger variance in the smaller arm: Student's pooled interval covers
    # about 84 % here and Welch's standard error on pooled df about 93 %; Welch's own approximation
    # error at these sizes is below 0.1 % (400 000 draws), far inside the tolerance
    rng = np.random.default_rng(20260102)
    truth = -1.3
    covered = 0
    draws = 2 * DRAWS  # Student's df would be 1.8 % off: twice the draws see it with room to spare
    for _ in range(draws):
        d = stats.welch(rng.normal(truth, 2.0, size=10), rng.normal(0.0, 0.5, size=20))
        covered += d.lo < truth < d.hi
    assert _within_simulation_error(covered / draws, 0.95, draws), covered / draws


def _tost_rate(rng, design, truth, sigma, k, margin):
    accepted = 0
    for _ in range(DRAWS):
        if design == "welch":
            d = stats.welch(rng.normal(truth, sigma, size=k), rng.normal(0.0, sigma, size=k))
        else:
            d = one_sample(rng.normal(truth, sigma, size=k))
        accepted += tost(d, -margin, margin).equivalent
    return accepted / DRAWS


@pytest.mark.parametrize("design", ["welch", "one_sample"])
def test_tost_accepts_and_rejects_where_it_should(design):
    rng = np.random.default_rng({"welch": 7, "one_sample": 8}[design])
    sigma, k, margin = 0.5, 8, 1.0
    # no difference, small spread, enough replicates: equivalence is (almost) always found, at the
    # rate the exact power says
    accept = _tost_rate(rng, design, 0.0, sigma, k, margin)
    assert accept > 0.9 and _within_simulation_error(accept, tost_power(sigma, k, margin, design=design)), accept
    # a true difference well beyond the margin: (almost) never called equivalent
    assert _tost_rate(rng, design, 1.6 * margin, sigma, k, margin) < 0.005
    # at the margin itself, a call of "equivalent" is a type-I error: at most alpha
    at_margin = _tost_rate(rng, design, margin, 1.0, 6, margin)
    assert at_margin < 0.05 + 3.0 * math.sqrt(0.05 * 0.95 / DRAWS), at_margin
    assert _within_simulation_error(at_margin, tost_power(1.0, 6, margin, design=design, true_difference=margin))


def test_variance_components_recover_known_values_from_nested_data():
    # y_jr = mu + a_j + e_jr, a_j ~ N(0, 1), e_jr ~ N(0, 4), k = 500 meta-seeds, R = 4 seeds each.
    # MS_within * df_w / sigma2_ret ~ chi2(df_w) and MS_between * df_b / (sigma2_ret + R sigma2_meta)
    # ~ chi2(df_b), independent, so sd(MS_w) = sigma2_ret sqrt(2/df_w) = 0.073 and
    # sd(sigma2_meta^) = sqrt(Var MS_b + Var MS_w) / R = 0.13: 4 sd of each is the tolerance
    # (the wrong estimate MS_between / R would be 2, the truth 1).
    rng = np.random.default_rng(20260103)
    k, r, s2_meta, s2_ret = 500, 4, 1.0, 4.0
    y = 3.0 + rng.normal(0.0, math.sqrt(s2_meta), size=(k, 1)) + rng.normal(0.0, math.sqrt(s2_ret), size=(k, r))
    vc = variance_components(list(y))
    df_b, df_w = k - 1, k * (r - 1)
    sd_ret = s2_ret * math.sqrt(2.0 / df_w)
    sd_meta = math.sqrt((s2_ret + r * s2_meta) ** 2 * 2.0 / df_b + sd_ret ** 2) / r
    assert abs(vc.sigma2_ret - s2_ret) < 4.0 * sd_ret, vc
    assert abs(vc.sigma2_meta - s2_meta) < 4.0 * sd_meta, vc
    assert abs(vc.icc - 0.2) < 0.05 and vc.p < 1e-6


# ---------------------------------------------------------------------------------- power for plans

def _reference_power_one_sample(sigma, k, low, high, alpha, delta):
    """Plain adaptive quadrature over the chi-distributed sample sd."""
    q, tau, chi = sps.t.ppf(1.0 - alpha, k - 1), sigma / math.sqrt(k), sps.chi(k - 1)

    def accept(s):
        se = sigma * s / math.sqrt(k * (k - 1))
        gap = sps.norm.cdf((high - q * se - delta) / tau) - sps.norm.cdf((low + q * se - delta) / tau)
        return max(gap, 0.0) * chi.pdf(s)
    return integrate.quad(accept, 0.0, chi.isf(1e-13), limit=200)[0]


def _reference_power_welch(sigma, k, low, high, alpha, delta, n=400):
    """Plain midpoint rule over both arms' sample sds (in probability space), Welch df computed
    from them directly: independent of the sum/ratio reduction the module uses."""
    s = sps.chi(k - 1).ppf((np.arange(n) + 0.5) / n)
    va, vb = (sigma * s[:, None]) ** 2 / (k * (k - 1)), (sigma * s[None, :]) ** 2 / (k * (k - 1))
    se = np.sqrt(va + vb)
    q = sps.t.ppf(1.0 - alpha, (va + vb) ** 2 / ((va ** 2 + vb ** 2) / (k - 1)))
    tau = sigma * math.sqrt(2.0 / k)
    gap = sps.norm.cdf((high - q * se - delta) / tau) - sps.norm.cdf((low + q * se - delta) / tau)
    return float(np.maximum(gap, 0.0).mean())


@pytest.mark.parametrize("sigma,k,low,high,delta", [
    (1.0, 6, -1.5, 1.5, 0.0), (1.0, 3, -1.0, 1.2, 0.2), (1.0, 2, -3.0, 3.0, 0.0),
    (1.0, 10, -1.0, 1.0, 1.0), (0.3, 5, math.log(0.8), math.log(1.25), 0.0)])
def test_tost_power_matches_plain_quadrature(sigma, k, low, high, delta):
    one = tost_power(sigma, k, (low, high), design="one_sample", true_difference=delta)
    assert one == pytest.approx(_reference_power_one_sample(sigma, k, low, high, 0.05, delta), abs=1e-8)
    two = tost_power(sigma, k, (low, high), design="welch", true_difference=delta)
    assert two == pytest.approx(_reference_power_welch(sigma, k, low, high, 0.05, delta), abs=2e-5)


def test_k_for_power_is_the_smallest_sufficient_k():
    for design in ("welch", "one_sample"):
        k = k_for_power(1.0, 0.5, power=0.8, design=design)
        assert k is not None and k > 2
        assert tost_power(1.0, k, 0.5, design=design) >= 0.8 > tost_power(1.0, k - 1, 0.5, design=design)
    assert k_for_power(0.1, 5.0) == 2
    assert k_for_power(1.0, 0.01, k_max=64) is None
    with pytest.raises(ValueError):
        tost_power(1.0, 5, -1.0)
    assert isinstance(tost(SAMPLE, -1.0, 1.0), Tost)


def test_format_over_replicates_prints_the_study_tables_cells():
    """The arm table's and the mix table's cells, written once: geometric mean, its t-interval and the
    factor ×exp(sd) for an MSE; points and sd for an accuracy; '[–]' where one value has no interval."""
    mse = [0.004, 0.005, None, float("nan"), 0.0045]
    logs = np.log([0.004, 0.005, 0.0045])
    half = sps.t.ppf(0.975, 2) * logs.std(ddof=1) / math.sqrt(3)
    mean, bounds, spread = stats.format_over_replicates(mse, log=True)
    assert mean == f"{math.exp(logs.mean()):.3g}"
    assert bounds == f"[{math.exp(logs.mean() - half):.3g}, {math.exp(logs.mean() + half):.3g}]"
    assert spread == f"×{math.exp(logs.std(ddof=1)):.2f}"
    assert stats.format_over_replicates([0.61, 0.63], log=False)[0] == "62.00"
    assert stats.format_over_replicates([0.61, 0.63], log=False)[2] == f"{np.std([61.0, 63.0], ddof=1):.2f}"
    assert stats.format_over_replicates([0.5], log=False) == ("50.00", "[–]", "0.00")
    assert stats.format_over_replicates([None, float("nan")], log=True) == ("–", "[–]", "–")
