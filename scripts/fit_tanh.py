#!/usr/bin/env python
"""Fit an odd rational float32 tanh offline, and measure it in float32 ulps.

Why: the activation tile needs ~2e6 tanh per kernel call, and libm's tanh does not vectorise.
Outcome (recorded in dnn_search/native.py): over the whole range [0, 9.02] the best fits here
are 5-6 ulp after float32 evaluation, over the 4-ulp bound; a (2, 2) rational on [0, 0.625]
(`--limit 0.625 --num 2 --den 2`: 3 ulp) joined to an exp form above was correct but slower than
the expm1 form the kernels now use. Method: on x in [0, limit] we write
tanh(x) = x * P(s) / Q(s) with s = x*x (odd by construction, exact
at 0 and for subnormals), and beyond X_SAT tanh(x) rounds to 1.0f in float32 anyway, so the
kernel saturates there. P/Q approximates r(s) = tanh(sqrt(s)) / sqrt(s) in the *relative* sense
(the relative error of x*P/Q is the relative error of P/Q), found by a linearised weighted least
squares (Loeb's iteration: divide by the previous Q) with Lawson reweighting towards minimax, on
a dense grid, in float64. The script then evaluates the result the way the kernel does (float32
Horner, one division) and prints the worst error in float32 ulps against float64 tanh rounded
to float32.

    python scripts/fit_tanh.py                         # whole range, P and Q of degree 5 in s
    python scripts/fit_tanh.py --limit 0.625 --num 2 --den 2
"""
from __future__ import annotations

import argparse

import numpy as np

X_SAT = 9.02  # tanh(x) rounds to 1.0f in float32 for x > 13 ln 2 = 9.0109


def fit(num_deg: int, den_deg: int, iters: int = 60, points: int = 20000):
    x = np.concatenate([np.linspace(0, X_SAT, points), np.geomspace(1e-4, 1.0, points // 4)])
    x = np.unique(np.clip(x, 1e-8, X_SAT))
    s = x * x / X_SAT**2  # scaled to [0, 1] for conditioning
    r = np.tanh(x) / x
    weights = np.ones_like(s)
    q_prev = np.ones_like(s)
    best = None
    for it in range(iters):
        # unknowns: p_0..p_m, q_1..q_n (q_0 = 1); residual (P - r Q) / (r q_prev) ~ relative error
        cols = [s**k for k in range(num_deg + 1)] + [-r * s**k for k in range(1, den_deg + 1)]
        a = np.stack(cols, 1) / (r * q_prev)[:, None]
        b = r / (r * q_prev)
        sw = np.sqrt(weights)
        coef, *_ = np.linalg.lstsq(a * sw[:, None], b * sw, rcond=None)
        p, q = coef[:num_deg + 1], np.concatenate([[1.0], coef[num_deg + 1:]])
        q_val = np.polyval(q[::-1], s)
        err = np.abs(np.polyval(p[::-1], s) / q_val / r - 1)
        if best is None or err.max() < best[0]:
            best = (err.max(), p.copy(), q.copy())
        q_prev = q_val
        if it >= 5:  # Lawson: weight the points where the error is large
            weights = weights * (err / err.max()) ** 0.5 + 1e-12
            weights /= weights.sum()
    _, p, q = best
    scale = X_SAT ** -2.0
    p = p * scale ** np.arange(len(p))  # back to powers of s = x*x
    q = q * scale ** np.arange(len(q))
    return p / q[0], q / q[0]


def tanh_f32(x, p, q):
    """The kernel's evaluation order in float32 (without FMA contraction)."""
    x = x.astype(np.float32)
    a = np.minimum(np.abs(x), np.float32(X_SAT))
    s = a * a
    pn = np.float32(p[-1])
    for c in p[-2::-1]:
        pn = pn * s + np.float32(c)
    qn = np.float32(q[-1])
    for c in q[-2::-1]:
        qn = qn * s + np.float32(c)
    return np.copysign(a * pn / qn, x).astype(np.float32)


def ulps(approx, exact32):
    """Distance in float32 ulps (ordered integer representation)."""
    def ordered(v):
        i = v.astype(np.float32).view(np.int32).astype(np.int64)
        return np.where(i < 0, -(i & 0x7FFFFFFF), i)
    return np.abs(ordered(approx) - ordered(exact32))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num", type=int, default=5)
    parser.add_argument("--den", type=int, default=5)
    parser.add_argument("--limit", type=float, default=9.02, help="fit on [0, limit] (default: saturation)")
    args = parser.parse_args()
    global X_SAT
    X_SAT = args.limit
    p, q = fit(args.num, args.den)
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-12, 12, 10**6), rng.standard_normal(10**6) * 3,
                        np.geomspace(1e-30, 12, 10**5)]).astype(np.float32)
    x = x[np.abs(x) <= X_SAT]  # the fitted range only
    exact = np.tanh(x.astype(np.float64)).astype(np.float32)
    err = ulps(tanh_f32(x, p, q), exact)
    print(f"P degree {args.num}, Q degree {args.den} in s = x*x: max {err.max()} ulp, "
          f"mean {err.mean():.3f} ulp")
    print("P =", ", ".join(f"{c:.9e}f" for c in p))
    print("Q =", ", ".join(f"{c:.9e}f" for c in q))


if __name__ == "__main__":
    main()
