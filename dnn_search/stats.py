"""Summary statistics shared by every table the tool prints: one mean ± std, written once.

The unit of replication is a retraining seed (validation) or a trial (search tables); the spread
is the sample standard deviation (ddof = 1), and a single value has spread 0 rather than NaN so
tables stay readable.
"""
from __future__ import annotations

import math

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


def format_mean_std(values, scale: float = 1.0, digits: int = 2) -> str:
    """'mean ± std' of the finite values ('–' when there are none)."""
    mean, std, n = mean_std(values, scale)
    return "–" if n == 0 else f"{mean:.{digits}f} ± {std:.{digits}f}"
