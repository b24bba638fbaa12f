"""dnn_search.hessian checked against the exact Hessian of a tiny network (float64)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.func import functional_call

from dnn_search.hessian import HessianResult, analyze, density_curve, plot_density

TRACE_ITERS = 600
# Hutchinson's standard error for this problem is sqrt(2 * sum_{i != j} H_ij^2 / N)
# = 0.326 * trace / sqrt(N) (computed from the exact Hessian), so with N = 600 samples
# the 5 % tolerance is about 3.8 standard errors.


def _problem():
    """A tiny tanh network after 50 full-batch SGD steps (an indefinite Hessian)."""
    gen = torch.Generator().manual_seed(1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = torch.nn.Sequential(
            torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)
        ).double()
    x = torch.randn(40, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=gen)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(50):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    for p in model.parameters():
        p.grad = None
    return model, x, y


def _exact_hessian(model, x, y) -> torch.Tensor:
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    shapes = [p.shape for n, p in model.named_parameters() if p.requires_grad]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters() if p.requires_grad])

    def loss(v):
        params, start = {}, 0
        for name, shape in zip(names, shapes):
            k = shape.numel()
            params[name] = v[start:start + k].view(shape)
            start += k
        return torch.nn.functional.cross_entropy(functional_call(model, params, (x,)), y)

    model.eval()
    return torch.autograd.functional.hessian(loss, flat)


@pytest.fixture(scope="module")
def problem():
    model, x, y = _problem()
    h = _exact_hessian(model, x, y)
    evals = torch.linalg.eigvalsh(h)
    return model, x, y, h, evals


@pytest.fixture(scope="module")
def result(problem):
    model, x, y, h, _ = problem
    return analyze(model, x, y, top_k=3, trace_iters=TRACE_ITERS, density_iters=h.shape[0],
                   density_runs=2, tol=1e-9, seed=7, eigen_iters=500)


def test_num_params(problem, result):
    model, *_ = problem
    assert result.num_params == 4 * 6 + 6 + 6 * 3 + 3 == 51


def test_top_eigenvalues(problem, result):
    *_, evals = problem
    exact_max = float(evals[-1])
    top = result.top_eigenvalues
    assert len(top) == 3
    assert top == sorted(top, reverse=True)
    # The largest-magnitude eigenvalue of this Hessian is its largest one.
    assert exact_max > abs(float(evals[0]))
    assert abs(top[0] - exact_max) <= 1e-2 * abs(exact_max)
    lo, hi = float(evals[0]), exact_max
    margin = 1e-6 * max(abs(lo), abs(hi))
    for v in top:
        assert lo - margin <= v <= hi + margin
    # With deflation and a clear gap, the top 3 are the 3 largest eigenvalues.
    exact_top3 = evals.flip(0)[:3].tolist()
    np.testing.assert_allclose(top, exact_top3, rtol=1e-2)


def test_trace(problem, result):
    _, _, _, h, _ = problem
    exact = float(torch.trace(h))
    assert abs(result.trace - exact) <= 0.05 * abs(exact)
    assert result.trace == pytest.approx(float(np.mean(result.trace_samples)))


def test_lanczos_nodes_span_spectrum(problem, result):
    *_, evals = problem
    radius = float(evals.abs().max())
    assert len(result.density_eigen) == len(result.density_weight) == 2
    for nodes, weights in zip(result.density_eigen, result.density_weight):
        assert len(nodes) == len(weights) <= result.num_params
        assert abs(min(nodes) - float(evals[0])) <= 1e-3 * radius
        assert abs(max(nodes) - float(evals[-1])) <= 1e-3 * radius
        assert sum(weights) == pytest.approx(1.0, abs=1e-10)
        assert all(w >= 0 for w in weights)
        # Every node is (up to rounding) inside the exact spectrum.
        assert min(nodes) >= float(evals[0]) - 1e-6 * radius
        assert max(nodes) <= float(evals[-1]) + 1e-6 * radius


def test_density_iters_capped(problem):
    model, x, y, h, _ = problem
    r = analyze(model, x, y, top_k=1, trace_iters=2, density_iters=10 * h.shape[0],
                tol=1e-3, seed=0, eigen_iters=5)
    assert len(r.density_eigen[0]) <= h.shape[0]


CHEAP = dict(top_k=2, trace_iters=20, density_iters=15, density_runs=2, tol=1e-9,
             eigen_iters=30)


def test_reproducible_and_rng_untouched(problem):
    model, x, y, _, _ = problem
    torch.manual_seed(99)
    state = torch.get_rng_state()
    model.train()
    first = analyze(model, x, y, seed=3, **CHEAP)
    assert torch.equal(torch.get_rng_state(), state)
    assert model.training  # mode restored
    assert all(p.grad is None for p in model.parameters())
    torch.manual_seed(5)  # a different global RNG state must not matter
    again = analyze(model, x, y, seed=3, **CHEAP)
    assert again.to_dict() == first.to_dict()
    other = analyze(model, x, y, seed=4, **CHEAP)
    assert other.trace_samples != first.trace_samples
    assert other.density_eigen != first.density_eigen
    model.eval()


def test_existing_grads_are_ignored_and_restored(problem):
    model, x, y, _, _ = problem
    clean = analyze(model, x, y, seed=3, **CHEAP)
    grads = [torch.full_like(p, 3.0) for p in model.parameters()]
    for p, g in zip(model.parameters(), grads):
        p.grad = g
    try:
        r = analyze(model, x, y, seed=3, **CHEAP)
        assert all(p.grad is g for p, g in zip(model.parameters(), grads))
    finally:
        for p in model.parameters():
            p.grad = None
    assert r.to_dict() == clean.to_dict()


def test_frozen_parameters_are_excluded(problem):
    model, x, y, _, _ = problem
    first = model[0]
    first.weight.requires_grad_(False)
    try:
        r = analyze(model, x, y, seed=0, **CHEAP)
    finally:
        first.weight.requires_grad_(True)
    assert r.num_params == 51 - 24


def test_density_curve_normalised(result):
    grid, dens = density_curve(result, num_bins=5000)
    assert grid.shape == dens.shape == (5000,)
    assert np.all(dens >= 0)
    assert float(dens.sum() * (grid[1] - grid[0])) == pytest.approx(1.0, rel=1e-9)
    allnodes = [v for run in result.density_eigen for v in run]
    assert grid[0] < min(allnodes) and grid[-1] > max(allnodes)


def test_plot_and_json(tmp_path, result):
    path = tmp_path / "density.png"
    plot_density(result, path, "tiny net")
    data = path.read_bytes()
    assert len(data) > 100
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["density.png"]  # no temp file left

    d = result.to_dict()
    for key in ("top_eigenvalues", "trace", "density_eigen", "density_weight", "num_params"):
        assert key in d
    back = json.loads(json.dumps(d))
    assert back == d
    assert HessianResult.from_dict(back) == result
