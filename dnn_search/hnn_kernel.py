"""The f' and f'' tile of the learned activations, for the Hamiltonian network's fast path.

Why: a Hamiltonian network predicts an input gradient of its output, so its loss uses f' and its
inner gradient f'' (docs/design.md, "The Hamiltonian network's fast path"); f itself is never
needed. This module holds that tile's maths in plain torch: the forward (f', f'') and the
vector-Jacobian product of <g1, f'> + <g2, f''> with respect to z and the per-neuron weights of
g, which uses f''' and df'/dphi, df''/dphi. `dnn_search.fused` wraps them in an autograd Function
that saves only its inputs and recomputes the B x H x Ho tile in the backward (memory is what the
reference path runs out of), and dispatches to the native C++ kernels whose source is below where
they build.

Notation per tile element (b, h, k): p = w1 z + b1, t = tanh p, e = 1 - t^2 = t', m = -2 t e = e',
n = e (6 t^2 - 2) = m'. Then f' = base' + 0.2 sum_k w2 w1 e and f'' = base'' + 0.2 sum_k w2 w1^2 m.
"""
from __future__ import annotations

import torch

from dnn_search.activations import RESIDUAL_SCALE, base_derivatives


def derivatives_forward(z, w1, b1, w2, base: str):
    """(f', f'') of shape (B, H) for z (B, H) and per-neuron weights (H, Ho)."""
    t = torch.tanh(z[..., None] * w1 + b1)
    e = 1 - t * t
    w21 = w2 * w1
    f1 = (e * w21).sum(-1)
    f2 = (t * e * (w21 * w1)).sum(-1)
    _, d1, d2 = base_derivatives(base, z)
    return d1 + RESIDUAL_SCALE * f1, d2 - 2 * RESIDUAL_SCALE * f2


def derivatives_backward(z, w1, b1, w2, g1, g2, base: str):
    """(grad_z, grad_w1, grad_b1, grad_w2) of <g1, f'> + <g2, f''>; g's output bias gets none."""
    t = torch.tanh(z[..., None] * w1 + b1)
    e = 1 - t * t
    m = -2 * t * e
    n = e * (6 * t * t - 2)
    c1, c2 = g1[..., None], g2[..., None]
    w1c2 = w1 * c2
    p = w1 * (c1 * m + w1c2 * n)  # P = g1 w1 m + g2 w1^2 n
    s = RESIDUAL_SCALE
    grad_w2 = s * (w1 * (c1 * e + w1c2 * m)).sum(0)
    grad_b1 = s * w2 * p.sum(0)
    grad_w1 = s * w2 * (c1 * e + 2 * w1c2 * m + z[..., None] * p).sum(0)
    _, _, d2, d3 = base_derivatives(base, z, order=3)
    grad_z = g1 * d2 + g2 * d3 + s * (p * (w2 * w1)).sum(-1)
    return grad_z, grad_w1, grad_b1, grad_w2
