"""The whole-step autograd node of the fast path (dnn_search.inner_step) equals the textbook
step (autograd with create_graph=True through the plain expression, then RMSprop), values and
vector-Jacobian products, in float64, with the eager and (where built) the native kernels."""
from __future__ import annotations

import pytest
import torch

from dnn_search import native
from dnn_search.inner_step import inner_step
from dnn_search.metalearn import RMSPROP_EPS, _reference_batch
from dnn_search.tasks import get_task


def plain_step(theta, second, neuron_phi, act_noise, hidden_noise, x, y, base, mu, lr):
    loss, grads = _reference_batch(theta, neuron_phi, base, x, y, act_noise, hidden_noise, get_task("classification"))
    second = [mu * v + (1 - mu) * g * g for v, g in zip(second, grads)]
    theta = [t - lr * g / (torch.sqrt(v) + RMSPROP_EPS) for t, g, v in zip(theta, grads, second)]
    return (loss, *theta, *second)


def inputs(seed=0, b=9, d=5, h=7, ho=4, c=3, noise=True):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).requires_grad_(True)
    theta = [r(h, d, scale=0.5), r(h, scale=0.5), r(c, h, scale=0.5), r(c, scale=0.5)]
    second = [(torch.rand(t.shape, generator=g, dtype=torch.float64) + 0.5).requires_grad_(True) for t in theta]
    phi = [r(h, ho), r(h, ho), r(h, ho, scale=0.5), r(h, scale=0.5)]
    act_noise = r(h, scale=0.1) if noise else None
    hidden_noise = torch.randn(1, h, generator=g, dtype=torch.float64) * 0.1 if noise else None
    x = torch.randn(b, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, c, (b,), generator=g)
    return theta, second, phi, act_noise, hidden_noise, x, y


@pytest.fixture(params=["eager", "native"])
def kernels(request, monkeypatch):
    monkeypatch.setenv("DNN_SEARCH_COMPILE", "0")
    monkeypatch.setenv("DNN_SEARCH_NATIVE", "1" if request.param == "native" else "0")
    if request.param == "native" and native.load() is None:
        pytest.skip("native kernels unavailable")
    return request.param


@pytest.mark.parametrize("base", ["sin", "tanh", "elu"])
@pytest.mark.parametrize("noise", [True, False])
def test_inner_step_matches_plain_step(kernels, base, noise):
    theta, second, phi, act_noise, hidden_noise, x, y = inputs(noise=noise)
    leaves = [*theta, *second, *phi] + ([act_noise] if noise else [])
    fast = inner_step(theta, second, phi, act_noise, hidden_noise, x, y, base, 0.8, 0.05, RMSPROP_EPS)
    fast = (fast[0], *fast[1], *fast[2])
    plain = plain_step(theta, second, phi, act_noise, hidden_noise, x, y, base, 0.8, 0.05)
    g = torch.Generator().manual_seed(5)
    cotangents = [torch.randn(o.shape, generator=g, dtype=torch.float64) for o in plain]
    for got, want in zip(fast, plain):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    got = torch.autograd.grad(fast, leaves, cotangents)
    want = torch.autograd.grad(plain, leaves, cotangents)
    for i, (a, b) in enumerate(zip(got, want)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11, msg=f"input {i}")


def test_inner_step_gradcheck(kernels):
    theta, second, phi, act_noise, hidden_noise, x, y = inputs(b=4, d=3, h=3, ho=2, c=2)

    def fn(*leaves):
        out = inner_step(list(leaves[0:4]), list(leaves[4:8]), list(leaves[8:12]), leaves[12], hidden_noise,
                         x, y, "sin", 0.8, 0.05, RMSPROP_EPS)
        return (out[0], *out[1], *out[2])
    assert torch.autograd.gradcheck(fn, (*theta, *second, *phi, act_noise))
