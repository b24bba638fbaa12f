"""Summary statistics shared by every table the tool prints: one mean ± std, written once, and the
few tests the summary uses (t-interval of a mean, Welch and paired t comparisons, Holm adjustment).

The unit of replication is a retraining seed (validation) or a trial (search tables); the spread
is the sample standard deviation (ddof = 1), and a single value has spread 0 rather than NaN so
tables stay readable. Nothing here knows about activations or datasets (numpy and scipy only).
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


def finite_values(values, scale: float = 1.0) -> np.ndarray:
    """The finite entries of VALUES (None and NaN dropped), times SCALE, as float64."""
    out = [float(v) for v in values if v is not None and isinstance(v, (int, float, np.floating, np.integer))
           and math.isfinite(float(v))]
    return np.asarray(out, dtype=float) * scale


def mean_std(values, scale: float = 1.0) -> tuple[float, float, int]:
    """(mean, sample std, count) of the finite values; (nan, nan, 0) when there are none."""
    arr = finite_values(values, scale)
    if arr.size == 0:
        return math.nan, math.nan, 0
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0, int(arr.size)


def format_number(value: float, digits: int = 2) -> str:
    """VALUE with DIGITS decimals, or DIGITS significant digits when fixed point would show fewer
    than two of them (a test MSE of 5e-6 must not print as 0.0000); '–' when not finite."""
    if value is None or not math.isfinite(value):
        return "–"
    if value != 0 and abs(value) < 10.0 ** (1 - digits):
        return f"{value:.{digits}g}"
    return f"{value:.{digits}f}"


def format_mean_std(values, scale: float = 1.0, digits: int = 2) -> str:
    """'mean ± std' of the finite values ('–' when there are none)."""
    mean, std, n = mean_std(values, scale)
    return "–" if n == 0 else f"{format_number(mean, digits)} ± {format_number(std, digits)}"


# ------------------------------------------------------------------------------------- inference
#
# Everything below is plain frequentist statistics on a handful of per-seed values: a t-interval
# for one mean, Welch's two-sample comparison (unequal variances, Welch–Satterthwaite degrees of
# freedom), the paired t-test on values matched by seed, and Holm's step-down adjustment. Values
# that are None, NaN or infinite are dropped first; a result that cannot be computed (too few
# values, zero spread) holds NaN rather than raising, so a table shows "–".


@dataclass(frozen=True)
class MeanCI:
    """Mean of n finite values, their sample standard deviation (ddof = 1; 0 for one value, NaN
    for none) and a two-sided t-interval (NaN bounds with fewer than 2 values)."""

    mean: float
    sd: float
    n: int
    lo: float
    hi: float
    level: float = 0.95


@dataclass(frozen=True)
class Difference:
    """A difference of means `estimate` (first sample minus second, or the mean of the paired
    differences), its two-sided confidence interval [lo, hi], the t statistic, its degrees of
    freedom `df`, the two-sided p-value, and the sample sizes (for a paired test both are the
    number of pairs)."""

    estimate: float
    lo: float
    hi: float
    t: float
    df: float
    p: float
    n_a: int
    n_b: int
    level: float = 0.95


def _t_quantile(level: float, df: float) -> float:
    from scipy.stats import t as student_t
    return float(student_t.ppf(0.5 + level / 2.0, df))


def _two_sided_p(t: float, df: float) -> float:
    from scipy.stats import t as student_t
    return float(2.0 * student_t.sf(abs(t), df))


def mean_ci(values, level: float = 0.95) -> MeanCI:
    """Mean ± t_{(1+level)/2, n-1} · sd/√n of the finite VALUES (the usual t-interval for a mean)."""
    arr = finite_values(values)
    n = int(arr.size)
    if n == 0:
        return MeanCI(math.nan, math.nan, 0, math.nan, math.nan, level)
    mean = float(arr.mean())
    if n == 1:
        return MeanCI(mean, 0.0, 1, math.nan, math.nan, level)
    sd = float(arr.std(ddof=1))
    half = _t_quantile(level, n - 1) * sd / math.sqrt(n)
    return MeanCI(mean, sd, n, mean - half, mean + half, level)


def format_over_replicates(values, log: bool) -> tuple[str, str, str]:
    """(mean, '[lo, hi]', spread) of the finite VALUES, a metric over replicates, as the study tables
    print them: for an MSE (LOG) the geometric mean, its 95 % t-interval on the log scale and the spread
    as the factor ×exp(sd); for an accuracy, points (× 100) with its interval and sd. An interval that
    is not defined (one value) prints '[–]'; no value at all prints '–' three times."""
    finite = finite_values(values)
    if finite.size == 0:
        return "–", "[–]", "–"
    ci = mean_ci(np.log(finite) if log else 100.0 * finite)

    def show(x: float) -> str:
        return format_number(math.exp(x), 3) if log else f"{x:.2f}"
    bounds = f"[{show(ci.lo)}, {show(ci.hi)}]" if math.isfinite(ci.lo) else "[–]"
    spread = "–" if not math.isfinite(ci.sd) else f"×{math.exp(ci.sd):.2f}" if log else f"{ci.sd:.2f}"
    return show(ci.mean), bounds, spread


def _from_t(estimate: float, se: float, df: float, n_a: int, n_b: int, level: float) -> Difference:
    if not (se > 0 and math.isfinite(se) and df > 0):
        return Difference(estimate, math.nan, math.nan, math.nan, df if df > 0 else math.nan, math.nan,
                          n_a, n_b, level)
    t = estimate / se
    half = _t_quantile(level, df) * se
    return Difference(estimate, estimate - half, estimate + half, t, df, _two_sided_p(t, df), n_a, n_b, level)


def welch(a, b, level: float = 0.95) -> Difference:
    """mean(A) − mean(B) with Welch's unequal-variance t-test: se = √(s_a²/n_a + s_b²/n_b),
    Welch–Satterthwaite df = se⁴ / ((s_a²/n_a)²/(n_a−1) + (s_b²/n_b)²/(n_b−1)), t = difference/se,
    two-sided p, CI difference ± t_{(1+level)/2, df} · se. NaN statistics with fewer than 2 finite
    values a side or when both samples have zero spread."""
    xa, xb = finite_values(a), finite_values(b)
    na, nb = int(xa.size), int(xb.size)
    if na == 0 or nb == 0:
        return Difference(math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, na, nb, level)
    estimate = float(xa.mean() - xb.mean())
    if na < 2 or nb < 2:
        return Difference(estimate, math.nan, math.nan, math.nan, math.nan, math.nan, na, nb, level)
    va, vb = float(xa.var(ddof=1)) / na, float(xb.var(ddof=1)) / nb
    se2 = va + vb
    denominator = va * va / (na - 1) + vb * vb / (nb - 1)
    df = se2 * se2 / denominator if denominator > 0 else math.nan
    return _from_t(estimate, math.sqrt(se2), df, na, nb, level)


def paired_t(a_by_seed, b_by_seed, level: float = 0.95) -> Difference:
    """Paired t-test of A − B on the seeds present, with finite values, in both mappings
    (seed -> value): d_s = a_s − b_s, mean d̄, sd s_d, se = s_d/√m, df = m − 1, t = d̄/se, two-sided p,
    CI d̄ ± t_{(1+level)/2, m−1} · se. Seeds found on one side only are left out."""
    def finite(mapping):
        return {s: float(v) for s, v in dict(mapping).items()
                if v is not None and isinstance(v, (int, float, np.floating, np.integer)) and math.isfinite(float(v))}
    fa, fb = finite(a_by_seed), finite(b_by_seed)
    return one_sample([fa[s] - fb[s] for s in fa if s in fb], level)


def one_sample(diffs: Iterable[float | None], level: float = 0.95) -> Difference:
    """One-sample t on the K finite per-replicate differences d_j: estimate d̄, se = s_d/√K
    (s_d with ddof = 1), df = K − 1, t = d̄/se, two-sided p = 2·P(T_{K−1} > |t|) against 0, CI
    d̄ ± t_{(1+level)/2, K−1}·se. n_a = n_b = K. NaN statistics with K < 2 or zero spread."""
    d = finite_values(diffs)
    k = int(d.size)
    if k == 0:
        return Difference(math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, 0, 0, level)
    estimate = float(d.mean())
    if k < 2:
        return Difference(estimate, math.nan, math.nan, math.nan, math.nan, math.nan, k, k, level)
    return _from_t(estimate, float(d.std(ddof=1)) / math.sqrt(k), float(k - 1), k, k, level)


def holm(pvalues) -> list[float]:
    """Holm's step-down adjustment of PVALUES, in their order. With the m finite p-values sorted
    ascending, p_(1) ≤ … ≤ p_(m): adjusted p_(i) = max over j ≤ i of min(1, (m − j + 1) · p_(j)), so the
    adjusted values keep the order of the raw ones. NaN (or None) entries stay NaN and do not count in m."""
    raw = [math.nan if p is None else float(p) for p in pvalues]
    finite = sorted((p, i) for i, p in enumerate(raw) if math.isfinite(p))
    m = len(finite)
    out = [math.nan] * len(raw)
    running = 0.0
    for rank, (p, i) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def holm_distinct(pvalues, keys) -> list[float]:
    """Holm over the distinct tests among PVALUES: entries with equal KEYS are the same test (e.g. a
    comparison table whose "best standard" is pure repeats pure's rows), counted once in the family;
    every entry gets the adjusted p of its test. The first entry of a key gives that test's p."""
    first: dict = {}
    for key, p in zip(keys, pvalues):
        first.setdefault(key, p)
    adjusted = dict(zip(first, holm(list(first.values()))))
    return [adjusted[key] for key in keys]
