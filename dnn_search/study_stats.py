"""The statistics of a diversity study (DESIGN.md §1.7): the meta-seed is the unit of replication.

Each replicate (one meta-learning run) contributes one observation, the mean over its R retraining
seeds (on the log scale for MSE tasks). Independent arms are compared by Welch's t on those means
(`stats.welch`); within-replicate contrasts by a one-sample t on the K per-replicate differences
(`one_sample`). A primary contrast is then called better, equivalent, worse or inconclusive
(`verdict`), which needs an equivalence test (`tost`) as well as the usual two-sided one: "no
significant difference" alone is not evidence of "no difference". The rest sizes and audits a
study: how the variance splits between meta-seeds and retraining seeds and the R that spends a
budget best (`variance_components`), whether arms fail equally often (`fisher_failures`), the
sensitivity row that counts failures against their arm (`worst_case`), and the power of TOST for
a plan (`tost_power`, `k_for_power`).

Margins are given in the analysis scale: ±1 accuracy point is (-1, 1) on accuracy in points; the
MSE ratio window [0.8, 1.25] is (log 0.8, log 1.25) on the log-MSE scale (the caller converts).
numpy and scipy only; statistics that cannot be computed are NaN, never an exception.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
from scipy import special
from scipy import stats as sps

from dnn_search.stats import Difference, _t_quantile, finite_values, one_sample

# "max": a higher metric is better (accuracy); "min": lower is better (loss, log MSE). The sign
# turns a difference (arm minus reference) into "favours the arm" when positive; `worst` is the
# arm's worst observed value, at which the sensitivity row counts a failure.
FAVOUR_SIGN: Mapping[str, float] = MappingProxyType({"max": 1.0, "min": -1.0})
WORST: Mapping[str, Callable[[np.ndarray], float]] = MappingProxyType(
    {"max": lambda v: float(np.min(v)), "min": lambda v: float(np.max(v))})

VERDICTS = ("better", "equivalent", "worse", "inconclusive")


def _direction(direction: str) -> str:
    if direction not in FAVOUR_SIGN:
        raise ValueError(f"direction must be one of {sorted(FAVOUR_SIGN)}, not {direction!r}")
    return direction


def _bounds(margin: float | tuple[float, float]) -> tuple[float, float]:
    """(low, high) of an equivalence margin: a number Δ > 0 means [−Δ, Δ]; a pair is taken as is
    (asymmetric windows such as (log 0.8, log 1.25)). It must satisfy low < 0 < high: a window that
    excludes 0 would call a zero difference non-equivalent."""
    if isinstance(margin, (int, float)):
        low, high = -float(margin), float(margin)
    else:
        low, high = float(margin[0]), float(margin[1])
    if not (math.isfinite(low) and math.isfinite(high) and low < 0.0 < high):
        raise ValueError(f"equivalence margin must satisfy low < 0 < high, got [{low}, {high}]")
    return low, high


@dataclass(frozen=True)
class Tost:
    """Two one-sided tests of equivalence within [low, high] at `alpha` per side: `lo`, `hi` the
    (1 − 2α) CI of the estimate (90 % at α = 0.05), `p_low` for H0: δ ≤ low, `p_high` for
    H0: δ ≥ high, `p` = max of the two, `equivalent` = p < alpha (⇔ the CI lies inside the window)."""

    estimate: float
    lo: float
    hi: float
    df: float
    low: float
    high: float
    p_low: float
    p_high: float
    p: float
    alpha: float
    equivalent: bool


def tost(diff: Difference | Iterable[float | None], low: float, high: float, alpha: float = 0.05) -> Tost:
    """TOST of a difference against the window [low, high] (analysis scale; see the module doc).

    With the estimate δ̂, its standard error se and degrees of freedom df (Welch–Satterthwaite for a
    `stats.welch` result, K − 1 for `one_sample`; raw values are taken as per-replicate differences
    and go through `one_sample`): t_low = (δ̂ − low)/se, p_low = P(T_df > t_low);
    t_high = (δ̂ − high)/se, p_high = P(T_df < t_high); p = max(p_low, p_high). The (1 − 2α) CI is
    δ̂ ± t_{1−α, df}·se, and p < α exactly when low < CI lo and CI hi < high. se is recovered from
    the Difference's own interval, se = (hi − lo)/(2·t_{(1+level)/2, df}), so it works for any level
    the Difference was built at. NaN p-values (too few values, zero spread) give equivalent = False."""
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must lie in (0, 0.5), got {alpha}")
    if not low < high:
        raise ValueError(f"equivalence window must satisfy low < high, got [{low}, {high}]")
    d = diff if isinstance(diff, Difference) else one_sample(diff)
    # scipy.special's Student t cdf and quantile: the values of scipy.stats.t, without its per-call
    # overhead (simulations call this thousands of times)
    se = (d.hi - d.lo) / (2.0 * special.stdtrit(d.df, 0.5 + d.level / 2.0)) if d.df > 0 else math.nan
    if not (math.isfinite(se) and se > 0):
        return Tost(d.estimate, math.nan, math.nan, d.df, low, high, math.nan, math.nan, math.nan, alpha, False)
    p_low = float(special.stdtr(d.df, (low - d.estimate) / se))  # P(T > t_low), as a lower tail
    p_high = float(special.stdtr(d.df, (d.estimate - high) / se))
    half = float(special.stdtrit(d.df, 1.0 - alpha)) * se
    p = max(p_low, p_high)
    return Tost(d.estimate, d.estimate - half, d.estimate + half, d.df, low, high, p_low, p_high, p, alpha,
                bool(p < alpha))


def verdict(diff: Difference, equivalence: Tost, direction: str, alpha: float = 0.05,
            p_adjusted: float | None = None) -> str:
    """The call on one primary contrast, `diff` = arm minus reference, with `equivalence` the TOST
    of the same estimate (its window is the margin fixed in the plan):

    - p = `p_adjusted` (Holm within the plan's family) when given, else the raw two-sided diff.p;
    - "better": p < alpha and the estimate favours the arm (δ̂ > 0 for direction 'max', δ̂ < 0 for
      'min'); "worse": p < alpha and it favours the reference;
    - "equivalent": not significant, and TOST says equivalent;
    - "inconclusive": everything else (neither significant nor equivalent, or not computable).

    A difference that is both significant and inside the margin (small but real) is called better or
    worse, not equivalent: the two-sided test has shown a direction, and the TOST window only says
    the size is below what the plan cared about (the table shows the CI, which tells the size). TOST
    itself is not multiplicity-adjusted here; build it at a smaller alpha to adjust it."""
    sign = FAVOUR_SIGN[_direction(direction)]
    if not (diff.estimate == equivalence.estimate or (math.isnan(diff.estimate) and math.isnan(equivalence.estimate))):
        raise ValueError("verdict: the TOST result is of a different estimate than the difference")
    p = diff.p if p_adjusted is None else float(p_adjusted)
    if math.isfinite(p) and p < alpha and diff.estimate != 0.0:
        return "better" if sign * diff.estimate > 0 else "worse"
    return "equivalent" if equivalence.equivalent else "inconclusive"


# --------------------------------------------------------------------------- variance components


@dataclass(frozen=True)
class VarianceComponents:
    """One-way random-effects ANOVA of k meta-seeds (groups) with n_i retraining seeds each: the mean
    squares, the variance between meta-seeds `sigma2_meta` and between retraining seeds `sigma2_ret`,
    the intraclass correlation `icc` = σ²_meta/(σ²_meta + σ²_ret), and the F test of σ²_meta = 0."""

    k: int
    n_total: int
    n0: float
    ms_between: float
    ms_within: float
    df_between: int
    df_within: int
    sigma2_meta: float
    sigma2_ret: float
    icc: float
    f: float
    p: float

    def optimal_r(self, cost_meta: float, cost_ret: float) -> int | None:
        """Retraining seeds per meta-seed that minimise the variance of the study mean at a fixed
        budget: Var = σ²_meta/K + σ²_ret/(K·R) at cost K·(c_meta + R·c_ret) gives
        R* = √((c_meta/c_ret)·σ²_ret/σ²_meta) (the classic nested-design optimum), rounded up, ≥ 1.
        c_meta is the cost of one meta-learning run, c_ret of one retraining seed of a replicate
        (all the networks validated at that seed). None when σ²_meta = 0 (the estimate leaves no
        finite optimum: more R always helps; with few meta-seeds that zero is usually noise) or when
        the components are not computable."""
        if not (cost_meta > 0 and cost_ret > 0):
            raise ValueError(f"costs must be > 0, got cost_meta={cost_meta}, cost_ret={cost_ret}")
        if not (math.isfinite(self.sigma2_meta) and math.isfinite(self.sigma2_ret)) or self.sigma2_meta <= 0:
            return None
        return max(1, math.ceil(math.sqrt(cost_meta / cost_ret * self.sigma2_ret / self.sigma2_meta)))


def variance_components(groups: Iterable[Iterable[float | None]]) -> VarianceComponents:
    """One-way random-effects ANOVA on GROUPS (one sequence per meta-seed of its retraining-seed
    values; non-finite values dropped, empty groups left out). With N values in k groups of n_i,
    group means ȳ_i and grand mean ȳ: MS_between = Σ n_i (ȳ_i − ȳ)²/(k − 1),
    MS_within = Σ_i Σ_r (y_ir − ȳ_i)²/(N − k); σ²_ret = MS_within,
    σ²_meta = max(0, (MS_between − MS_within)/n0) with n0 = (N − Σ n_i²/N)/(k − 1), which is R when
    every group has R values (the usual unbalanced-design coefficient otherwise); F = MS_between /
    MS_within on (k − 1, N − k) df. NaN where k < 2 or N − k < 1."""
    arrays = [a for a in (finite_values(g) for g in groups) if a.size]
    k = len(arrays)
    sizes = np.asarray([a.size for a in arrays], dtype=float)
    n_total = int(sizes.sum())
    df_b, df_w = k - 1, n_total - k
    if k < 2 or df_w < 1:
        nan = math.nan
        return VarianceComponents(k, n_total, nan, nan, nan, df_b, df_w, nan, nan, nan, nan, nan)
    means = np.asarray([a.mean() for a in arrays])
    grand = float(np.concatenate(arrays).mean())
    ms_b = float(np.sum(sizes * (means - grand) ** 2)) / df_b
    ms_w = float(sum(np.sum((a - m) ** 2) for a, m in zip(arrays, means))) / df_w
    n0 = float((n_total - np.sum(sizes ** 2) / n_total) / df_b)
    sigma2_meta = max(0.0, (ms_b - ms_w) / n0)
    total = sigma2_meta + ms_w
    f = ms_b / ms_w if ms_w > 0 else math.nan
    return VarianceComponents(k, n_total, n0, ms_b, ms_w, df_b, df_w, sigma2_meta, ms_w,
                              sigma2_meta / total if total > 0 else math.nan, f,
                              float(sps.f.sf(f, df_b, df_w)) if math.isfinite(f) else math.nan)


# ------------------------------------------------------------------------------ failures


@dataclass(frozen=True)
class FailureTest:
    """FAILED replicates of two arms, their proportions, and Fisher's exact two-sided p."""

    failed_a: int
    total_a: int
    failed_b: int
    total_b: int
    odds_ratio: float
    p: float


def fisher_failures(failed_a: int, total_a: int, failed_b: int, total_b: int) -> FailureTest:
    """Fisher's exact test (two-sided, scipy.stats.fisher_exact) on the 2×2 table
    [[failed_a, total_a − failed_a], [failed_b, total_b − failed_b]]: p = the total hypergeometric
    probability, with the margins fixed, of the tables no more likely than the observed one. An arm
    with no replicates gives NaN (nothing to compare)."""
    for failed, total in ((failed_a, total_a), (failed_b, total_b)):
        if not 0 <= failed <= total:
            raise ValueError(f"failed counts must satisfy 0 <= failed <= total, got {failed} of {total}")
    if total_a == 0 or total_b == 0:
        return FailureTest(failed_a, total_a, failed_b, total_b, math.nan, math.nan)
    result = sps.fisher_exact([[failed_a, total_a - failed_a], [failed_b, total_b - failed_b]])
    return FailureTest(failed_a, total_a, failed_b, total_b, float(result.statistic), float(result.pvalue))


def worst_case(values: Iterable[float | None], n_failed: int, direction: str) -> np.ndarray:
    """The sensitivity row's values for one arm: its finite per-replicate VALUES plus N_FAILED copies
    of its worst observed value (the minimum for a 'max' metric, the maximum for a 'min' one), so a
    failure is counted against the arm instead of dropped. With no observed value there is nothing
    to count a failure at, and the (empty) observed values are returned."""
    worst = WORST[_direction(direction)]
    if n_failed < 0:
        raise ValueError(f"n_failed must be >= 0, got {n_failed}")
    observed = finite_values(values)
    if observed.size == 0 or n_failed == 0:
        return observed
    return np.concatenate([observed, np.full(n_failed, worst(observed))])


# ------------------------------------------------------------------------------- power for plans
#
# Exact TOST power for normal per-replicate values, by numerical quadrature (no simulation).
# Given the standard error se, the estimate δ̂ ~ N(δ, τ²) is independent of se (a normal sample's
# mean is independent of its variance), and TOST accepts iff low + q·se < δ̂ < high − q·se with
# q = t_{1−α, df}, so P(accept | se) = [Φ((high − q·se − δ)/τ) − Φ((low + q·se − δ)/τ)]⁺.
# One sample of K: se = σ·s/√(K(K−1)) with s ~ χ_{K−1}, df = K − 1, τ = σ/√K.
# Welch, two arms of K with the same σ: with U_a, U_b ~ χ²_{K−1}, S = U_a + U_b ~ χ²_{2(K−1)} and
# B = U_a/S ~ Beta((K−1)/2, (K−1)/2) are independent; se = σ·√S/√(K(K−1)) and the Welch df is
# (K − 1)/(B² + (1 − B)²), a function of B alone. So power = E_B[E_S[P(accept | se)]]. The inner
# expectation integrates over s = √S on [s_lo, min(s_max, s_hi)], s_lo/s_hi the χ quantiles at
# 1e-13 and s_max where the accepting interval closes: the integrand is smooth inside, so
# Gauss–Legendre nodes converge fast. The outer uses Gauss–Jacobi nodes, whose weight is exactly
# the Beta density. tests/test_study_stats.py checks both against adaptive quadrature and against
# simulated TOST calls.

_LEGENDRE_NODES = 192
_JACOBI_NODES = 48


def _accept_given_q(q: np.ndarray, chi_df: float, se_per_s: float, tau: float, delta: float,
                    low: float, high: float) -> np.ndarray:
    """E_s[P(accept | se = se_per_s·s)] for s ~ χ_{chi_df}, one value per entry of the quantiles Q."""
    chi = sps.chi(chi_df)
    s_lo, s_hi = float(chi.ppf(1e-13)), float(chi.isf(1e-13))
    s_top = np.minimum((high - low) / (2.0 * q * se_per_s), s_hi)  # beyond s_max nothing is accepted
    x, w = special.roots_legendre(_LEGENDRE_NODES)
    width = np.maximum(s_top - s_lo, 0.0)[:, None]
    s = s_lo + width * (x[None, :] + 1.0) / 2.0
    se = se_per_s * s
    gap = special.ndtr((high - q[:, None] * se - delta) / tau) - special.ndtr((low + q[:, None] * se - delta) / tau)
    return np.asarray(np.sum(np.maximum(gap, 0.0) * chi.pdf(s) * w[None, :], axis=1) * width[:, 0] / 2.0, dtype=float)


def _power_one_sample(sigma: float, k: int, low: float, high: float, alpha: float, delta: float) -> float:
    q = np.asarray([_t_quantile(1.0 - 2.0 * alpha, k - 1)])
    return float(_accept_given_q(q, k - 1, sigma / math.sqrt(k * (k - 1)), sigma / math.sqrt(k),
                                 delta, low, high)[0])


def _power_welch(sigma: float, k: int, low: float, high: float, alpha: float, delta: float) -> float:
    a = (k - 1) / 2.0
    x, w = special.roots_jacobi(_JACOBI_NODES, a - 1.0, a - 1.0)
    b = (1.0 + x) / 2.0
    q = sps.t.ppf(1.0 - alpha, (k - 1) / (b ** 2 + (1.0 - b) ** 2))
    inner = _accept_given_q(q, 2 * (k - 1), sigma / math.sqrt(k * (k - 1)), sigma * math.sqrt(2.0 / k),
                            delta, low, high)
    return float(np.dot(w, inner) / np.sum(w))


POWER_DESIGNS: Mapping[str, Callable[[float, int, float, float, float, float], float]] = MappingProxyType(
    {"welch": _power_welch, "one_sample": _power_one_sample})


def tost_power(sigma: float, k: int, margin: float | tuple[float, float], alpha: float = 0.05,
               design: str = "welch", true_difference: float = 0.0) -> float:
    """P(TOST calls "equivalent") for normal per-replicate values with sd SIGMA, computed exactly
    (numerical quadrature, see the comment above; no simulation). design 'welch': two independent
    arms of K replicates each, the same σ in both, compared by `stats.welch` + `tost`; 'one_sample':
    K per-replicate differences with sd σ, by `one_sample` + `tost`. MARGIN is Δ (window [−Δ, Δ]) or
    (low, high) in the analysis scale. TRUE_DIFFERENCE 0 gives the power; at a window edge it gives
    the type-I error, which is at most alpha."""
    low, high = _bounds(margin)
    if design not in POWER_DESIGNS:
        raise ValueError(f"design must be one of {sorted(POWER_DESIGNS)}, not {design!r}")
    if not (sigma > 0 and math.isfinite(sigma)) or k < 2 or not 0.0 < alpha < 0.5:
        raise ValueError(f"tost_power needs sigma > 0, k >= 2, 0 < alpha < 0.5; got {sigma}, {k}, {alpha}")
    return min(1.0, max(0.0, POWER_DESIGNS[design](float(sigma), int(k), low, high, alpha, float(true_difference))))


def k_for_power(sigma: float, margin: float | tuple[float, float], power: float = 0.8, alpha: float = 0.05,
                design: str = "welch", k_max: int = 10_000) -> int | None:
    """The smallest K (replicates per arm, ≥ 2) whose `tost_power` at a true difference of 0 reaches
    POWER; None when even K_MAX does not. Found by doubling then bisection, which relies on the power
    growing with K (it does for a true difference inside the window)."""
    if not 0.0 < power < 1.0:
        raise ValueError(f"power must lie in (0, 1), got {power}")

    def enough(k: int) -> bool:
        return tost_power(sigma, k, margin, alpha, design) >= power

    if enough(2):
        return 2
    lo, hi = 2, 4  # enough(lo) is False
    while not enough(hi):
        if hi >= k_max:
            return None
        lo, hi = hi, min(2 * hi, k_max)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi
