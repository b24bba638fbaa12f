"""The meta-learning engine: the fast path equals the textbook reference, runs are reproducible,
checkpoints continue bit-identically, and the update rule is the documented one."""
from __future__ import annotations

import pytest
import torch

from dnn_search.activations import block_sizes, neuron_blocks
from dnn_search.data import load_dataset, split_validation
from dnn_search.errors import UserError
from dnn_search.metalearn import GRAD_CLIP, MetaConfig, MetaLearner, MetaLearningDiverged


def toy_data(dtype=torch.float64, n=90, d=7, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    y = torch.randint(0, classes, (n,), generator=g)
    return x, y, x[:30], y[:30], classes


def meta_gradient(impl, data, dtype=torch.float64, **overrides):
    cfg = MetaConfig(impl=impl, **overrides)
    learner = MetaLearner(cfg, *data, dtype=dtype)
    loss, grads, _, _ = learner.meta_gradient()
    return loss, grads


def assert_close(reference, fast, rtol=1e-4):
    loss_ref, grads_ref = reference
    loss_fast, grads_fast = fast
    assert abs(loss_fast - loss_ref) <= rtol * abs(loss_ref)
    for name, g in grads_ref.items():
        assert g.abs().max() > 0, f"meta-gradient of {name} is zero: the test would prove nothing"
        scale = g.abs().max()
        err = ((grads_fast[name] - g).abs() / (g.abs() + 1e-3 * scale)).max()
        assert err <= rtol, f"{name}: relative error {float(err):.3g}"


SHAPES = [(1, 12), (2, 12), (3, 14)]  # n = 3 does not divide H = 14


@pytest.mark.parametrize("base", ["sin", "tanh", "elu"])
@pytest.mark.parametrize("n,hidden", SHAPES)
def test_fast_matches_reference(base, n, hidden):
    data = toy_data()
    sizes = dict(n_activations=n, inner_hidden_size=hidden, outer_hidden_size=6, inner_batch_size=40,
                 epochs=2, activation=base, noise=0.0)
    assert_close(meta_gradient("reference", data, **sizes), meta_gradient("fast", data, **sizes))


def test_fast_matches_reference_with_noise_and_outer_batch():
    data = toy_data()
    sizes = dict(n_activations=2, inner_hidden_size=10, outer_hidden_size=5, inner_batch_size=45,
                 epochs=1, noise=0.1, outer_batch_size=2)
    assert_close(meta_gradient("reference", data, **sizes), meta_gradient("fast", data, **sizes))


@pytest.fixture(scope="module")
def mnist1d_split():
    data = load_dataset("MNIST1D")
    return (*split_validation(data.x_train, data.y_train, 0.1, 0), data.num_classes)


@pytest.mark.slow
def test_fast_matches_reference_at_the_defaults(mnist1d_split):
    """One outer step at the paper's sizes (H=200, Ho=50, 5 epochs of batch 200), float32."""
    reference = meta_gradient("reference", mnist1d_split, torch.float32, n_activations=2, noise=0.0)
    fast = meta_gradient("fast", mnist1d_split, torch.float32, n_activations=2, noise=0.0)
    assert_close(reference, fast)


def test_same_seed_gives_identical_activations():
    runs = []
    for _ in range(2):
        learner = MetaLearner(MetaConfig(n_activations=2, inner_hidden_size=9, outer_hidden_size=4,
                                         inner_batch_size=30, epochs=1, seed=3), *toy_data(torch.float32),
                              dtype=torch.float32)
        for _ in range(3):
            learner.step()
        runs.append(learner.activations())
    for name in ("w1", "b1", "w2", "b2"):
        assert (getattr(runs[0], name) == getattr(runs[1], name)).all()
    other = MetaLearner(MetaConfig(n_activations=2, inner_hidden_size=9, outer_hidden_size=4, seed=4),
                        *toy_data(torch.float32), dtype=torch.float32)
    assert not (other.activations().w1 == runs[0].w1).all()


def test_checkpoint_continues_bit_identically():
    cfg = MetaConfig(n_activations=2, inner_hidden_size=9, outer_hidden_size=4, inner_batch_size=30, epochs=1)
    data = toy_data(torch.float32)
    straight = MetaLearner(cfg, *data, dtype=torch.float32)
    for _ in range(4):
        straight.step()
    first = MetaLearner(cfg, *data, dtype=torch.float32)
    for _ in range(2):
        first.step()
    state = first.state_dict()
    resumed = MetaLearner(cfg, *data, dtype=torch.float32)
    resumed.load_state_dict(state)
    for _ in range(2):
        resumed.step()
    assert resumed.step_index == 4
    for name in ("w1", "b1", "w2", "b2"):
        assert (getattr(resumed.activations(), name) == getattr(straight.activations(), name)).all()


def test_outer_update_is_clipped_heavy_ball_sgd():
    cfg = MetaConfig(n_activations=2, inner_hidden_size=8, outer_hidden_size=4, inner_batch_size=30, epochs=1,
                     outer_lr=0.3, outer_mu=0.5, noise=0.0)
    learner = MetaLearner(cfg, *toy_data(torch.float64), dtype=torch.float64)
    # Replay the same two meta-gradients by hand: same seed, same generator stream.
    twin = MetaLearner(cfg, *toy_data(torch.float64), dtype=torch.float64)
    phi = {k: v.detach().clone() for k, v in learner.phi.items()}
    momentum = {k: torch.zeros_like(v) for k, v in phi.items()}
    for _ in range(2):
        _, grads, _, _ = twin.meta_gradient()
        for k in phi:
            momentum[k] = 0.5 * momentum[k] + grads[k].clamp(-GRAD_CLIP, GRAD_CLIP)
            phi[k] = phi[k] - 0.3 * momentum[k]
        with torch.no_grad():
            for k in phi:
                twin.phi[k].copy_(phi[k])
        learner.step()
    for k in phi:
        torch.testing.assert_close(learner.phi[k].detach(), phi[k], rtol=1e-12, atol=1e-12)


def test_metrics_report_true_gradient_norms_and_whole_heldout_split():
    data = toy_data(torch.float64)
    learner = MetaLearner(MetaConfig(n_activations=3, inner_hidden_size=9, outer_hidden_size=4,
                                     inner_batch_size=30, epochs=1, noise=0.0), *data, dtype=torch.float64)
    twin = MetaLearner(learner.cfg, *data, dtype=torch.float64)
    _, grads, _, _ = twin.meta_gradient()
    metrics = learner.step()
    expected = torch.sqrt(sum((grads[k].reshape(3, -1) ** 2).sum(1) for k in grads))
    torch.testing.assert_close(torch.tensor(metrics.grad_norms, dtype=torch.float64), expected)
    # 30 held-out samples: accuracy is a multiple of 1/30, not of one batch's size.
    assert abs(metrics.heldout_accuracy * 30 - round(metrics.heldout_accuracy * 30)) < 1e-9
    assert len(metrics.grad_norms) == 3


def test_uneven_blocks_give_first_blocks_one_more_neuron():
    assert block_sizes(200, 3) == [67, 67, 66]
    assert block_sizes(10, 4) == [3, 3, 2, 2]
    assert neuron_blocks(10, 4).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 3, 3]
    with pytest.raises(UserError):
        block_sizes(10, 11)


def test_divergence_is_reported_not_silently_continued():
    x, y, xv, yv, c = toy_data(torch.float32)
    learner = MetaLearner(MetaConfig(n_activations=1, inner_hidden_size=8, outer_hidden_size=4, epochs=1,
                                     inner_batch_size=30), x * 1e38, y, xv, yv, c, dtype=torch.float32)
    with pytest.raises(MetaLearningDiverged, match="diverged at step 1"):
        learner.step()


@pytest.mark.parametrize("field,value", [("inner_lr", 0.0), ("outer_lr", -1.0), ("epochs", 0), ("steps", 0),
                                         ("inner_batch_size", 0), ("n_activations", 0), ("activation", "relu"),
                                         ("impl", "slow"), ("inner_mu", 1.0), ("inner_hidden_size", -3)])
def test_bad_config_is_a_user_error(field, value):
    with pytest.raises(UserError):
        MetaConfig(**{field: value}).validate()


@pytest.fixture(autouse=True)
def eager_kernels(monkeypatch, request):
    """The parity tests run the eager kernels (same maths, no compile warm-up); the compiled ones
    are held to them in `test_compiled_kernels_match_eager`, the native ones in tests/test_native.py."""
    if "compiled" not in request.node.name:
        monkeypatch.setenv("DNN_SEARCH_COMPILE", "0")
    monkeypatch.setenv("DNN_SEARCH_NATIVE", "0")


def test_compiled_kernels_match_eager(monkeypatch):
    from dnn_search import fused
    monkeypatch.setenv("DNN_SEARCH_COMPILE", "1")
    monkeypatch.setenv("DNN_SEARCH_COMPILE_STRICT", "1")  # a compiler failure must fail this test
    g = torch.Generator().manual_seed(0)
    b, h, ho = 16, 12, 5
    z, grad_f, grad_fp = (torch.randn(b, h, generator=g) for _ in range(3))
    w1, b1, w2 = (torch.randn(h, ho, generator=g) for _ in range(3))
    b2 = torch.randn(h, generator=g)
    for base in ("sin", "elu"):
        eager_fwd = fused._forward_kernel(z, w1, b1, w2, b2, base)
        compiled_fwd = fused._run("forward", z, w1, b1, w2, b2, base)
        eager_bwd = fused._backward_kernel(z, w1, b1, w2, grad_f, grad_fp, base)
        compiled_bwd = fused._run("backward", z, w1, b1, w2, grad_f, grad_fp, base)
        assert fused._compiled["forward"] is not fused._forward_kernel
        for eager, compiled in zip((*eager_fwd, *eager_bwd), (*compiled_fwd, *compiled_bwd)):
            torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)


def test_custom_backward_matches_autograd_of_the_plain_expression():
    """The hand-written vector-Jacobian product of (f, f') equals autograd's, in float64."""
    from dnn_search.activations import base_derivatives
    from dnn_search.fused import activation_and_derivative
    g = torch.Generator().manual_seed(1)
    b, h, ho = 6, 5, 4
    args = [torch.randn(s, generator=g, dtype=torch.float64, requires_grad=True)
            for s in ((b, h), (h, ho), (h, ho), (h, ho), (h,))]
    for base in ("sin", "tanh", "elu"):
        assert torch.autograd.gradcheck(lambda *a: activation_and_derivative(*a, base), args)

        def plain(z, w1, b1, w2, b2):
            t = torch.tanh(z[..., None] * w1 + b1)
            value, d1, _ = base_derivatives(base, z)
            return value + 0.2 * ((t * w2).sum(-1) + b2), d1 + 0.2 * ((1 - t * t) * w2 * w1).sum(-1)
        for fast, ref in zip(activation_and_derivative(*args, base), plain(*args)):
            torch.testing.assert_close(fast, ref)
