"""One whole inner training step of the fast path as a single autograd node.

Why: the meta-gradient differentiates through 90 unrolled inner steps. Written as ordinary torch
expressions, each step records ~70 autograd nodes, and the bookkeeping of those small ops cost
about a third of an outer step. Here one step (forward: loss, hand-written gradient of the
one-hidden-layer MLP, RMSprop update) is one `torch.autograd.Function` whose backward is the
hand-derived vector-Jacobian product of the whole step: the same maths, far fewer dispatches.
It is tested against autograd through the plain expression (tests/test_inner_step.py, float64
gradcheck) and, through `--impl fast`, against the reference meta-gradient.

Notation (one batch of B samples, H hidden, C classes):
    z = x W1^T + b1;  f, f' = act(z);  a = f + 0.2 an + hn;  logits = a W2^T + b2
    p = softmax(logits);  loss = -mean log p[y];  dl = (p - Y) / B;  M = dl W2;  dz = M * f'
    g = (dz^T x, sum dz, dl^T a, sum dl);  v' = mu v + (1 - mu) g^2;  t' = t - lr g / (sqrt(v') + eps)
"""
from __future__ import annotations

import torch

from dnn_search.activations import RESIDUAL_SCALE
from dnn_search.fused import tile_backward, tile_forward


class InnerStep(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, y, hidden_noise, options, w1, b1, w2, b2, v1, v2, v3, v4, ew1, eb1, ew2, eb2, act_noise):
        base, mu, lr, eps = options
        batch = x.shape[0]
        z = x @ w1.T + b1  # written as the reference writes it: same rounding, closer float32 agreement
        f, fp, saved = tile_forward(z, ew1, eb1, ew2, eb2, base)
        a = f + RESIDUAL_SCALE * act_noise + hidden_noise
        logits = a @ w2.T + b2
        log_p = torch.log_softmax(logits, dim=1)
        loss = -log_p.gather(1, y[:, None]).mean()
        p = log_p.exp()
        dl = p.scatter_add(1, y[:, None], torch.full((batch, 1), -1.0, dtype=p.dtype, device=p.device)).div_(batch)
        m = dl @ w2
        dz = m * fp
        grads = (dz.T @ x, dz.sum(0), dl.T @ a, dl.sum(0))
        mod = saved[0]  # the native module when the tile kernels are native: RMSprop in one call too
        if mod is not None:
            out = mod.rmsprop_forward([w1, b1, w2, b2], list(grads), [v1, v2, v3, v4], mu, lr, eps)
            new, second, roots = out[0:4], out[4:8], out[8:12]
        else:
            second = tuple(mu * v + (1 - mu) * g * g for v, g in zip((v1, v2, v3, v4), grads))
            roots = tuple(torch.sqrt(v) for v in second)
            new = tuple(t - lr * g / (r + eps) for t, g, r in zip((w1, b1, w2, b2), grads, roots))
        ctx.saved = saved
        ctx.options = options
        ctx.save_for_backward(x, w2, a, fp, p, dl, m, *grads, *roots)
        return (loss, *new, *second)

    @staticmethod
    def backward(ctx, loss_bar, *bars):
        base, mu, lr, eps = ctx.options
        x, w2, a, fp, p, dl, m, *rest = ctx.saved_tensors
        grads, roots = rest[0:4], rest[4:8]
        theta_bars, second_bars = bars[0:4], bars[4:8]
        batch = x.shape[0]
        mod = ctx.saved[0]
        if mod is not None:
            out = mod.rmsprop_backward(list(grads), list(roots), list(theta_bars), list(second_bars), mu, lr, eps)
            g_bars, v_bars = out[0:4], out[4:8]
        else:
            g_bars, v_bars = [], []
            for g, r, tb, vb in zip(grads, roots, theta_bars, second_bars):
                # t' = t - lr g / d,  d = sqrt(v') + eps,  v' = mu v + (1 - mu) g^2
                d = r + eps
                scaled = tb * lr / d
                v_total = vb + scaled * g / (d * 2 * r)
                g_bars.append(torch.addcmul(-scaled, v_total, g, value=2 * (1 - mu)))
                v_bars.append(v_total * mu)
        gw1_bar, gb1_bar, gw2_bar, gb2_bar = g_bars
        dz_bar = torch.addmm(gb1_bar, x, gw1_bar.T)
        dl_bar = torch.addmm(gb2_bar, a, gw2_bar.T)
        a_bar = dl @ gw2_bar
        m_bar = dz_bar * fp
        fp_bar = dz_bar * m
        dl_bar.addmm_(m_bar, w2.T)
        w2_bar = dl.T @ m_bar
        p_bar = dl_bar / batch
        logits_bar = p * (p_bar - (p * p_bar).sum(1, keepdim=True))
        logits_bar.add_(dl * loss_bar)  # loss = -mean log p[y]: d loss / d logits = dl
        a_bar.addmm_(logits_bar, w2)
        w2_bar.addmm_(logits_bar.T, a)
        z_bar, ew1_bar, eb1_bar, ew2_bar, eb2_bar = tile_backward(ctx.saved, a_bar, fp_bar)
        w1_bar = z_bar.T @ x
        return (None, None, None, None,
                theta_bars[0] + w1_bar, theta_bars[1] + z_bar.sum(0), theta_bars[2] + w2_bar,
                theta_bars[3] + logits_bar.sum(0), *v_bars,
                ew1_bar, eb1_bar, ew2_bar, eb2_bar, RESIDUAL_SCALE * a_bar.sum(0))


def inner_step(theta, second_moment, neuron_phi, act_noise, hidden_noise, x, y, base, mu, lr, eps):
    """(loss, new theta, new second moment) of one inner step, differentiable once."""
    hidden = theta[0].shape[0]
    if act_noise is None:
        act_noise = x.new_zeros(hidden)
    if hidden_noise is None:
        hidden_noise = x.new_zeros(1, hidden)
    out = InnerStep.apply(x, y, hidden_noise, (base, mu, lr, eps), *theta, *second_moment, *neuron_phi, act_noise)
    return out[0], list(out[1:5]), list(out[5:9])
