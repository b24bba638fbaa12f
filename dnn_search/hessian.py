"""Hessian analysis of a trained model (docs/design.md, "Hessian").

For the task's loss of a model on one batch (cross-entropy for classification), with
respect to its trainable parameters, :func:`analyze` computes

* the top-k Hessian eigenvalues (power iteration, ``pyhessian.hessian.eigenvalues``),
* the Hessian trace (Hutchinson's estimator, ``pyhessian.hessian.trace``),
* the eigenvalue spectral density by stochastic Lanczos quadrature (SLQ).

PyPI's pyhessian 0.1 ``density()`` calls the removed ``torch.eig``, so the SLQ here is
its own Lanczos loop built on pyhessian's Hessian-vector products, with full
reorthogonalisation and ``torch.linalg.eigh`` on the symmetric tridiagonal matrix.

This is a science module: it does not import Ray.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from pyhessian import hessian as _PyHessian
from pyhessian.utils import hessian_vector_product

from dnn_search.plots import pyplot, save_figure, smoothed_density

__all__ = ["HessianResult", "analyze", "density_curve", "plot_density"]


@dataclass
class HessianResult:
    """Hessian statistics of one model on one batch.

    ``density_eigen[r]`` / ``density_weight[r]`` are the Gauss quadrature nodes and
    weights of SLQ run ``r`` (the weights of one run sum to 1).
    """

    top_eigenvalues: list[float]
    trace: float
    density_eigen: list[list[float]]
    density_weight: list[list[float]]
    num_params: int
    trace_samples: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (plain floats and ints only)."""
        d = asdict(self)
        d["top_eigenvalues"] = [float(v) for v in self.top_eigenvalues]
        d["trace"] = float(self.trace)
        d["density_eigen"] = [[float(v) for v in run] for run in self.density_eigen]
        d["density_weight"] = [[float(v) for v in run] for run in self.density_weight]
        d["num_params"] = int(self.num_params)
        d["trace_samples"] = [float(v) for v in self.trace_samples]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "HessianResult":
        return cls(
            top_eigenvalues=[float(v) for v in d["top_eigenvalues"]],
            trace=float(d["trace"]),
            density_eigen=[[float(v) for v in run] for run in d["density_eigen"]],
            density_weight=[[float(v) for v in run] for run in d["density_weight"]],
            num_params=int(d["num_params"]),
            trace_samples=[float(v) for v in d.get("trace_samples", [])],
        )


# --------------------------------------------------------------------------- helpers


def _flatten(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _unflatten(flat: torch.Tensor, like) -> list[torch.Tensor]:
    out, start = [], 0
    for p in like:
        n = p.numel()
        out.append(flat[start:start + n].view_as(p))
        start += n
    return out


def _rademacher(n: int, generator: torch.Generator, dtype, device) -> torch.Tensor:
    bits = torch.randint(0, 2, (n,), generator=generator, dtype=torch.int64)
    return (bits * 2 - 1).to(dtype=dtype, device=device)


def _lanczos(hvp, n: int, num_iters: int, v0: torch.Tensor) -> tuple[list[float], list[float]]:
    """Lanczos with full reorthogonalisation for the symmetric operator ``hvp``.

    ``hvp`` maps a flat vector of length ``n`` to a flat vector.  Returns the Ritz values
    (nodes) and the squared first components of the Ritz vectors (weights) of the
    tridiagonal matrix built from the start vector ``v0``.  Stops early on breakdown
    (an invariant Krylov subspace was found).
    """
    eps = torch.finfo(v0.dtype).eps
    basis = torch.empty((num_iters, n), dtype=v0.dtype, device=v0.device)
    alphas: list[float] = []
    betas: list[float] = []
    v = v0 / torch.linalg.vector_norm(v0)
    v_prev = None
    beta_prev = 0.0
    scale = 0.0  # running bound on the operator norm (Gershgorin on T)
    for j in range(num_iters):
        basis[j] = v
        w = hvp(v)
        alpha = float(torch.dot(w, v))
        w = w - alpha * v
        if v_prev is not None:
            w = w - beta_prev * v_prev
        # Full reorthogonalisation against all Lanczos vectors so far (twice is enough).
        q = basis[: j + 1]
        for _ in range(2):
            w = w - q.T @ (q @ w)
        beta = float(torch.linalg.vector_norm(w))
        alphas.append(alpha)
        scale = max(scale, abs(alpha) + beta + beta_prev)
        if j == num_iters - 1:
            break
        if not math.isfinite(beta) or beta <= 1e3 * eps * max(scale, 1e-30):
            break  # breakdown: the Krylov subspace is invariant
        betas.append(beta)
        v_prev, v, beta_prev = v, w / beta, beta
    k = len(alphas)
    t = torch.zeros((k, k), dtype=torch.float64)
    t[range(k), range(k)] = torch.tensor(alphas, dtype=torch.float64)
    if k > 1:
        off = torch.tensor(betas[: k - 1], dtype=torch.float64)
        t[range(k - 1), range(1, k)] = off
        t[range(1, k), range(k - 1)] = off
    evals, evecs = torch.linalg.eigh(t)
    weights = evecs[0, :] ** 2
    return evals.tolist(), weights.tolist()


def _hutchinson(hess, max_iter: int, tol: float) -> list[float]:
    """Hutchinson trace samples from pyhessian, with a sign-safe stopping rule.

    pyhessian 0.1's ``trace()`` stops when ``|mean - prev| / (prev + 1e-6) < tol``; when
    the running mean ``prev`` is negative (e.g. a negative first sample of an indefinite
    Hessian) that ratio is negative and it stops after two samples.  So draw the samples
    one ``trace(maxIter=1)`` call at a time (the same Rademacher vectors from the same
    global RNG stream) and apply the rule with ``|prev|`` and at least two samples.
    """
    samples: list[float] = []
    prev = 0.0
    for i in range(max_iter):
        samples.extend(float(s) for s in hess.trace(maxIter=1, tol=tol))
        mean = float(np.mean(samples))
        if i > 0 and abs(mean - prev) / (abs(prev) + 1e-6) < tol:
            break
        prev = mean
    return samples


def _fork_devices(device: str) -> list[int]:
    dev = torch.device(device)
    if dev.type != "cuda":
        return []
    return [dev.index if dev.index is not None else torch.cuda.current_device()]


class _Predicting(torch.nn.Module):
    """`model` seen through a task's predict(): pyhessian calls model(x) and then its criterion."""

    def __init__(self, model: torch.nn.Module, task):
        super().__init__()
        self.model, self.task = model, task

    def forward(self, x):
        return self.task.predict(self.model, x)


def _criterion_and_model(model, task):
    """Cross-entropy of the raw model's output without a task, else the task's loss of its prediction."""
    if task is None:
        return torch.nn.CrossEntropyLoss(), model
    return task.loss, _Predicting(model, task)


# --------------------------------------------------------------------------- analysis


def analyze(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    top_k: int = 3,
    trace_iters: int = 100,
    density_iters: int = 100,
    density_runs: int = 1,
    tol: float = 1e-3,
    seed: int = 0,
    device: str = "cpu",
    eigen_iters: int = 100,
    task=None,
) -> HessianResult:
    """Hessian statistics of the loss of ``model`` on ``(x, y)``: ``task``'s loss of its
    prediction, or cross-entropy of the model's output when no task is given.

    Derivatives are taken w.r.t. the parameters with ``requires_grad=True`` that the loss depends
    on (``num_params`` counts those).  The model
    is expected to live on ``device`` already; it is put in eval mode for the analysis
    and its training flags and ``.grad`` fields are restored afterwards.  The global
    torch RNG state is left untouched; results are reproducible for a given ``seed``.

    ``eigen_iters`` is the maximum number of power iterations per eigenvalue and
    ``tol`` the relative tolerance of both power iteration and Hutchinson's estimator.
    ``density_iters`` (Lanczos steps per SLQ run) is capped at the number of parameters.
    """
    if top_k < 1:
        raise ValueError("top_k must be >= 1")
    if trace_iters < 1 or density_iters < 1 or density_runs < 1 or eigen_iters < 1:
        raise ValueError("iteration counts must be >= 1")

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")

    modes = [(m, m.training) for m in model.modules()]
    saved_grads = [(p, p.grad) for p in model.parameters()]
    x = x.to(device)
    y = y.to(device)
    unused: list[torch.nn.Parameter] = []
    try:
        for p, _ in saved_grads:
            p.grad = None  # pyhessian adds any existing .grad into its gradient
        model.eval()
        with torch.random.fork_rng(devices=_fork_devices(device)), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*create_graph=True.*reference cycle.*")
            torch.manual_seed(seed)
            with torch.enable_grad():
                criterion, wrapped = _criterion_and_model(model, task)
                # A weight the loss does not depend on at all (an HNN's output bias: its prediction is
                # an input gradient of the network) spans zero rows and columns of the Hessian: leave
                # it out, as pyhessian cannot differentiate through it.
                first = torch.autograd.grad(criterion(wrapped(x), y), params, allow_unused=True)
                unused = [p for p, g in zip(params, first) if g is None]
                del first
                if len(unused) == len(params):
                    raise ValueError("no trainable parameter affects the loss")
                for p in unused:
                    p.requires_grad_(False)
                num_params = int(sum(p.numel() for p in params if p.requires_grad))
                hess = _PyHessian(wrapped, criterion, data=(x, y), cuda=(device != "cpu"))
                if any(not torch.is_tensor(g) for g in hess.gradsH):
                    raise ValueError("a trainable parameter does not affect the loss")
                eigvals, _ = hess.eigenvalues(maxIter=eigen_iters, tol=tol, top_n=top_k)
                samples = _hutchinson(hess, trace_iters, tol)

                dtype = hess.params[0].dtype
                pdevice = hess.params[0].device
                hvp = _flat_hvp(hess.gradsH, hess.params)
                m = min(density_iters, num_params)
                gen = torch.Generator().manual_seed(seed)
                nodes_all: list[list[float]] = []
                weights_all: list[list[float]] = []
                for _ in range(density_runs):
                    v0 = _rademacher(num_params, gen, dtype, pdevice)
                    nodes, weights = _lanczos(hvp, num_params, m, v0)
                    nodes_all.append(nodes)
                    weights_all.append(weights)
            del hess, hvp  # the graph of the first gradient goes with them
    finally:
        for p in unused:
            p.requires_grad_(True)
        for p, g in saved_grads:
            p.grad = g  # also breaks the param <-> create_graph grad reference cycle
        for mod, training in modes:
            mod.training = training

    return HessianResult(
        top_eigenvalues=sorted((float(v) for v in eigvals), reverse=True),
        trace=float(np.mean(samples)),
        density_eigen=nodes_all,
        density_weight=weights_all,
        num_params=num_params,
        trace_samples=[float(s) for s in samples],
    )


def _flat_hvp(grads, params):
    """H·v on flat vectors, for Lanczos: the Hessian-vector product of GRADS (made with
    create_graph) with respect to PARAMS."""
    def hvp(flat: torch.Tensor) -> torch.Tensor:
        return _flatten(hessian_vector_product(grads, params, _unflatten(flat, params))).detach()
    return hvp


# --------------------------------------------------------------------------- density


def density_curve(
    result: HessianResult,
    num_bins: int = 10000,
    sigma_squared: float = 1e-5,
    pad: float = 0.01,
) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed SLQ spectral density on a uniform grid.

    Each node contributes a Gaussian of variance ``sigma_squared * max(1, span)``
    (``span`` = range of all nodes) scaled by its weight; runs are averaged and the
    result is normalised to integrate to 1 over the grid, which covers the nodes with a
    margin of ``pad * max(1, span)`` on each side.
    """
    nodes = np.asarray([v for run in result.density_eigen for v in run], dtype=np.float64)
    if nodes.size == 0:
        raise ValueError("result has no density nodes")
    lo, hi = float(nodes.min()), float(nodes.max())
    width = max(1.0, hi - lo)
    lo -= pad * width
    hi += pad * width
    grid = np.linspace(lo, hi, num_bins)
    density = smoothed_density(result.density_eigen, result.density_weight, grid, math.sqrt(sigma_squared * width))
    dx = grid[1] - grid[0] if num_bins > 1 else 1.0
    total = density.sum() * dx
    if total > 0:
        density /= total
    return grid, density


def plot_density(result: HessianResult, path: str | os.PathLike, title: str) -> None:
    """Write the smoothed SLQ density as a PNG (log-scale y axis), atomically."""
    plt = pyplot()
    grid, density = density_curve(result)
    peak = float(density.max()) if density.size else 1.0
    floor = peak * 1e-10 if peak > 0 else 1e-12
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.semilogy(grid, np.maximum(density, floor))
    ax.set_xlabel("Eigenvalue")
    ax.set_ylabel("Density (log scale)")
    ax.set_title(title)
    save_figure(fig, path)
