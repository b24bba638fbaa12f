"""The Hamiltonian network's fast path (docs/design.md, "The Hamiltonian network's fast path").

Held to the textbook reference at three levels, each with the native C++ kernels (skipped where
they cannot be built) and the plain torch kernels: the f'/f'' tile and its backward against
autograd of the activation itself; the hand-written inner gradient against autograd of the HNN's
loss; and the whole unrolled meta-loss and meta-gradient against `--impl reference` (float64 to
1e-10, float32 to 1e-4 of each tensor's largest element, sin and tanh, several shapes, noise on so
that both paths must draw the same random stream). Also: the fast path keeps no B x H x Ho tensor
alive across the unrolled run, and `auto` picks it.
"""
from __future__ import annotations

import pytest
import torch

from dnn_search import native
from dnn_search.activations import learned_activation
from dnn_search.data import load_dataset
from dnn_search.fused import first_and_second_derivative
from dnn_search.metalearn import MetaConfig, MetaLearner, inner_run, network
from dnn_search.tasks import get_task


@pytest.fixture(params=["native", "torch"])
def kernel(request, monkeypatch):
    """Which kernels the fast path runs: the native C++ ones or the eager torch ones."""
    monkeypatch.setenv("DNN_SEARCH_COMPILE", "0")
    monkeypatch.setenv("DNN_SEARCH_NATIVE", "1" if request.param == "native" else "0")
    if request.param == "native":
        mod = native.load()
        if mod is None:
            pytest.skip("native kernels unavailable (no compiler?)")
        assert hasattr(mod, "derivatives_forward")
    return request.param


@pytest.fixture(scope="module")
def hh_split():
    data = load_dataset("HenonHeiles")
    return [t[:200] for t in data.split(0.1, 0)]


def _plain_derivatives(z, w1, b1, w2, b2, base):
    """f' and f'' of the activation by autograd of f itself (the reference path's activation)."""
    z = z if z.requires_grad else z.detach().requires_grad_(True)
    f = learned_activation(base, z, w1, b1, w2, b2)
    (f1,) = torch.autograd.grad(f.sum(), z, create_graph=True)
    (f2,) = torch.autograd.grad(f1.sum(), z, create_graph=True)
    return f1, f2


def _tile_args(shape, dtype, seed=0):
    b, h, ho = shape
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, h, generator=g, dtype=dtype) * 2
    w1, b1 = (torch.randn(h, ho, generator=g, dtype=dtype) for _ in range(2))
    w2 = torch.randn(h, ho, generator=g, dtype=dtype) / ho ** 0.5
    b2 = torch.randn(h, generator=g, dtype=dtype)
    return [t.requires_grad_(True) for t in (z, w1, b1, w2, b2)]


# ------------------------------------------------------------------------------------ the tile

@pytest.mark.parametrize("base", ["sin", "tanh"])
@pytest.mark.parametrize("shape", [(9, 5, 4), (200, 100, 50)])
def test_tile_and_its_backward_equal_autograd_of_the_activation(kernel, base, shape):
    args = _tile_args(shape, torch.float64)
    fast = first_and_second_derivative(*args, base)
    plain = _plain_derivatives(*args, base)
    g = torch.Generator().manual_seed(1)
    cotangents = [torch.randn(shape[:2], generator=g, dtype=torch.float64) for _ in range(2)]
    for f, p in zip(fast, plain):
        torch.testing.assert_close(f, p, rtol=1e-12, atol=1e-12)
    vjp_fast = torch.autograd.grad(fast, args, cotangents, allow_unused=True, materialize_grads=True)
    vjp_plain = torch.autograd.grad(plain, args, cotangents, allow_unused=True, materialize_grads=True)
    for name, f, p in zip(("z", "w1", "b1", "w2", "b2"), vjp_fast, vjp_plain):
        torch.testing.assert_close(f, p, rtol=1e-10, atol=1e-10, msg=name)
    assert float(vjp_fast[4].abs().max()) == 0.0  # g's output bias changes neither f' nor f''


@pytest.mark.parametrize("base", ["sin", "tanh"])
def test_tile_gradcheck(kernel, base):
    args = _tile_args((6, 4, 3), torch.float64, seed=2)
    assert torch.autograd.gradcheck(lambda *a: first_and_second_derivative(*a, base), args)


def test_float32_tile_is_the_float64_tile_rounded(kernel):
    args64 = _tile_args((200, 100, 50), torch.float64, seed=3)
    args32 = [a.detach().float() for a in args64]
    for f32, f64 in zip(first_and_second_derivative(*args32, "sin"), first_and_second_derivative(*args64, "sin")):
        torch.testing.assert_close(f32.double(), f64, rtol=1e-5, atol=2e-5)


# --------------------------------------------------------------------------- the inner gradient

@pytest.mark.parametrize("base", ["sin", "tanh"])
def test_hand_written_inner_gradient_equals_autograd_of_the_loss(kernel, hh_split, base):
    """HenonHeiles.inner_loss_and_grads (with the kernel's f', f'') against autograd of
    loss(predict(net, x)), the reference path's inner gradient, on real states, noise included."""
    task = get_task("hnn")
    x, y = hh_split[0][:50].double(), hh_split[1][:50].double()
    g = torch.Generator().manual_seed(0)
    hidden, ho = 7, 5
    def randn(*shape):
        return torch.randn(shape, generator=g, dtype=torch.float64)
    theta = [randn(hidden, 4) * 0.5, randn(hidden) * 0.5, randn(1, hidden) * 0.5, randn(1) * 0.5]
    phi = [randn(hidden, ho), randn(hidden, ho), randn(hidden, ho), randn(hidden)]
    act_noise, hidden_noise = randn(hidden), randn(1, hidden)

    params = [t.clone().requires_grad_(True) for t in theta]
    ref_loss = task.loss(task.predict(network(params, phi, base, act_noise, hidden_noise), x), y)
    ref_grads = torch.autograd.grad(ref_loss, params, allow_unused=True, materialize_grads=True)

    loss, grads = task.inner_loss_and_grads(theta, lambda z: first_and_second_derivative(z, *phi, base), x, y)
    assert float(loss) == pytest.approx(float(ref_loss.detach()), rel=1e-12)
    for name, fast, ref in zip(("w1", "b1", "w2", "b2"), grads, ref_grads):
        assert fast.shape == ref.shape, name
        torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-12, msg=name)
    assert float(grads[0].abs().max()) > 0 and float(grads[3].abs().max()) == 0.0


# ---------------------------------------------------------------------------- the meta-gradient

def _meta(impl, split, dtype, **sizes):
    cfg = MetaConfig(dataset="HenonHeiles", impl=impl, inner_batch_size=50, epochs=2, noise=0.1, **sizes)
    learner = MetaLearner(cfg, *split, 1, dtype=dtype)
    assert learner.cfg.impl == impl
    loss, grads, _, _ = learner.meta_gradient()
    return loss, grads


SHAPES = [dict(n_activations=1, inner_hidden_size=8, outer_hidden_size=5),
          dict(n_activations=2, inner_hidden_size=9, outer_hidden_size=6),   # 2 does not divide 9
          dict(n_activations=3, inner_hidden_size=10, outer_hidden_size=4, outer_batch_size=2)]


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)], ids=["f64", "f32"])
@pytest.mark.parametrize("sizes", SHAPES, ids=lambda s: f"n{s['n_activations']}H{s['inner_hidden_size']}")
@pytest.mark.parametrize("base", ["sin", "tanh"])
def test_fast_meta_gradient_matches_reference(kernel, hh_split, base, sizes, dtype, tol):
    split = [t.to(dtype) for t in hh_split]
    loss_ref, grads_ref = _meta("reference", split, dtype, activation=base, **sizes)
    loss_fast, grads_fast = _meta("fast", split, dtype, activation=base, **sizes)
    assert abs(loss_fast - loss_ref) <= tol * abs(loss_ref)
    for name, ref in grads_ref.items():
        scale = float(ref.abs().max())
        if name == "b2":
            assert scale == 0.0 and float(grads_fast[name].abs().max()) == 0.0
            continue
        assert scale > 0, f"meta-gradient of {name} is zero: the comparison would prove nothing"
        err = float((grads_fast[name] - ref).abs().max()) / scale
        assert err <= tol, f"{name}: error {err:.3g} of its largest element"


# ------------------------------------------------------------------------------------ memory

def _largest_saved(impl, split, sizes):
    """The largest tensor autograd keeps for the backward of one unrolled inner run (elements)."""
    cfg = MetaConfig(dataset="HenonHeiles", impl=impl, **sizes).validate()
    learner = MetaLearner(cfg, *split, 1, dtype=torch.float64)
    largest = 0

    def pack(t):
        nonlocal largest
        largest = max(largest, t.numel())
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        inner_run(learner.phi, learner.blocks, learner.cfg, learner.x_train, learner.y_train, 1,
                  learner.generator, learner.task)
    return largest


def test_fast_path_keeps_no_tile_alive(kernel, hh_split):
    """The fast path's kernel saves its inputs only (B x H per step); the reference keeps B x H x Ho."""
    sizes = dict(n_activations=2, inner_hidden_size=10, outer_hidden_size=8, inner_batch_size=50, epochs=1)
    tile = 50 * 10 * 8
    assert _largest_saved("reference", hh_split, sizes) >= tile  # the probe sees the tile where it is kept
    assert _largest_saved("fast", hh_split, sizes) < tile / 4


def test_auto_picks_the_fast_path_for_the_hnn():
    assert MetaConfig(dataset="HenonHeiles").validate().impl == "fast"
    assert MetaConfig(dataset="HenonHeiles", impl="fast").validate().impl == "fast"


def test_compiled_tile_kernels_match_eager(monkeypatch):
    """Where the native kernels do not build, the torch.compile'd ones run: the same numbers."""
    from dnn_search import fused, hnn_kernel
    monkeypatch.setenv("DNN_SEARCH_COMPILE", "1")
    monkeypatch.setenv("DNN_SEARCH_COMPILE_STRICT", "1")  # a compiler failure must fail this test
    z, w1, b1, w2, _ = (a.detach() for a in _tile_args((16, 12, 5), torch.float32, seed=4))
    g1, g2 = torch.randn(2, 16, 12, generator=torch.Generator().manual_seed(5))
    eager = (*hnn_kernel.derivatives_forward(z, w1, b1, w2, "tanh"),
             *hnn_kernel.derivatives_backward(z, w1, b1, w2, g1, g2, "tanh"))
    compiled = (*fused._run("derivatives_forward", z, w1, b1, w2, "tanh"),
                *fused._run("derivatives_backward", z, w1, b1, w2, g1, g2, "tanh"))
    assert fused._compiled["derivatives_backward"] is not hnn_kernel.derivatives_backward
    for e, c in zip(eager, compiled):
        torch.testing.assert_close(c, e, rtol=1e-5, atol=1e-5)
