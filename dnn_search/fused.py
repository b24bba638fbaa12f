"""Fast evaluation of the learned activations for the meta-learning inner loop.

Each hidden neuron h of the classifier applies f(z) = base(z) + 0.2 * g(z), where g's weights
are those of the neuron's block. The inner loop needs f(z) and f'(z) (the hand-written inner
gradient uses f'), and the meta-gradient needs their derivatives with respect to z and the
activation weights. The B x H x Ho tensor tanh(z * w1 + b1) dominates the cost; it is recomputed
in the backward instead of being stored, so one inner step keeps only z (B x H) alive. A
Hamiltonian network's hand-written gradient takes f' and f'' instead (`first_and_second_derivative`,
its maths in `dnn_search.hnn_kernel`); a task says which it takes (Task.inner_derivatives) and
`hidden_activation` picks the kernel from `DERIVATIVE_KERNELS`.

Kernel choice, fastest first: the native C++ kernels of `dnn_search.native` (one pass over the
tile per direction; CPU tensors only; off with DNN_SEARCH_NATIVE=0 or when no compiler works),
else the torch.compile'd kernels below (off with DNN_SEARCH_COMPILE=0), else the same kernels
eagerly. All three compute the same maths and are tested against each other.
"""
from __future__ import annotations

import logging
import os
import threading

import torch

from dnn_search import hnn_kernel, native
from dnn_search.activations import RESIDUAL_SCALE, base_derivatives


def _tanh(u):
    """tanh through expm1: the same function to float rounding, and Inductor's CPU code for it
    runs about 2.3x faster than its tanh (measured single-threaded, scripts/bench_metalearn.py)."""
    m = torch.expm1(-2 * u.abs())
    return torch.sign(u) * (-m) / (m + 2)


def _forward_kernel(z, w1, b1, w2, b2, base: str):
    t = _tanh(z[..., None] * w1 + b1)
    g = (t * w2).sum(-1) + b2
    g_prime = ((1 - t * t) * (w2 * w1)).sum(-1)
    value, d1, _ = base_derivatives(base, z)
    return value + RESIDUAL_SCALE * g, d1 + RESIDUAL_SCALE * g_prime


def _backward_kernel(z, w1, b1, w2, grad_f, grad_fp, base: str):
    """Vector-Jacobian product of (f, f') with respect to z and the per-neuron weights."""
    t = _tanh(z[..., None] * w1 + b1)
    sech2 = 1 - t * t
    c = grad_f[..., None]
    cp = grad_fp[..., None]
    # u = z * w1 + b1;  f = base + s * sum(w2 * t);  f' = base' + s * sum(w2 * w1 * sech2(u))
    # d tanh/du = sech2,  d sech2/du = -2 t sech2
    grad_u = RESIDUAL_SCALE * w2 * sech2 * (c - 2 * cp * w1 * t)
    grad_w2 = RESIDUAL_SCALE * (c * t + cp * w1 * sech2).sum(0)
    grad_b1 = grad_u.sum(0)
    grad_w1 = (grad_u * z[..., None]).sum(0) + RESIDUAL_SCALE * (cp * w2 * sech2).sum(0)
    _, d1, d2 = base_derivatives(base, z)
    grad_z = (grad_u * w1).sum(-1) + grad_f * d1 + grad_fp * d2
    grad_b2 = RESIDUAL_SCALE * grad_f.sum(0)
    return grad_z, grad_w1, grad_b1, grad_w2, grad_b2


_kernels = {"forward": _forward_kernel, "backward": _backward_kernel,
            "derivatives_forward": hnn_kernel.derivatives_forward,
            "derivatives_backward": hnn_kernel.derivatives_backward}
_compiled: dict[str, object] = {}
_lock = threading.Lock()
log = logging.getLogger(__name__)


def compile_enabled() -> bool:
    """torch.compile is used unless DNN_SEARCH_COMPILE=0 (e.g. where no C++ compiler exists)."""
    return os.environ.get("DNN_SEARCH_COMPILE", "1") != "0"


def _kernel(name: str):
    if not compile_enabled():
        return _kernels[name]
    with _lock:
        if name not in _compiled:
            try:
                _compiled[name] = torch.compile(_kernels[name], dynamic=False, fullgraph=True)
            except Exception as exc:  # no compiler backend at all: the eager kernel is the same maths
                log.warning("torch.compile is unavailable (%s: %s); using the eager %s kernel",
                            type(exc).__name__, exc, name)
                _compiled[name] = _kernels[name]
        return _compiled[name]


def _run(name: str, *args):
    fn = _kernel(name)
    if fn is _kernels[name]:
        return fn(*args)
    try:
        return fn(*args)
    except Exception as exc:  # a compiler that fails at first call (missing toolchain): fall back
        if os.environ.get("DNN_SEARCH_COMPILE_STRICT") == "1":
            raise
        log.warning("torch.compile failed (%s: %s); using the eager %s kernel", type(exc).__name__, exc, name)
        with _lock:
            _compiled[name] = _kernels[name]
        return _kernels[name](*args)


def native_module(z: torch.Tensor):
    """The native kernels' module if they apply to z (CPU, float32/64, built), else None."""
    if z.device.type != "cpu" or z.dtype not in (torch.float32, torch.float64):
        return None
    return native.load()


def tile_forward(z, w1, b1, w2, b2, base: str):
    """(f, f', saved) with the best available kernel; `saved` is what `tile_backward` needs."""
    mod = native_module(z)
    if mod is not None:
        d0, d1, d2 = base_derivatives(base, z)
        f, fp = mod.forward(z, w1, b1, w2, b2, d0, d1)
        return f, fp, (mod, base, z, w1, b1, w2, d1, d2)
    f, fp = _run("forward", z, w1, b1, w2, b2, base)
    return f, fp, (None, base, z, w1, b1, w2)


def tile_backward(saved, grad_f, grad_fp):
    """(grad_z, grad_w1, grad_b1, grad_w2, grad_b2) of <grad_f, f> + <grad_fp, f'>."""
    mod, base, z, w1, b1, w2, *derivs = saved
    if mod is not None:
        return tuple(mod.backward(z, w1, b1, w2, grad_f, grad_fp, *derivs))
    return _run("backward", z, w1, b1, w2, grad_f.contiguous(), grad_fp.contiguous(), base)


class _LearnedActivation(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, w1, b1, w2, b2, base):
        ctx.base = base
        mod = native_module(z)
        ctx.native = mod
        if mod is not None:
            d0, d1, d2 = base_derivatives(base, z)
            ctx.save_for_backward(z, w1, b1, w2, d1, d2)
            return tuple(mod.forward(z, w1, b1, w2, b2, d0, d1))
        ctx.save_for_backward(z, w1, b1, w2)
        return _run("forward", z, w1, b1, w2, b2, base)

    @staticmethod
    def backward(ctx, grad_f, grad_fp):
        z, w1, b1, w2, *derivs = ctx.saved_tensors
        if grad_f is None:
            grad_f = torch.zeros_like(z)
        if grad_fp is None:
            grad_fp = torch.zeros_like(z)
        if ctx.native is not None:
            return (*ctx.native.backward(z, w1, b1, w2, grad_f, grad_fp, *derivs), None)
        grads = _run("backward", z, w1, b1, w2, grad_f.contiguous(), grad_fp.contiguous(), ctx.base)
        return (*grads, None)


def activation_and_derivative(z, w1, b1, w2, b2, base: str):
    """f(z) and f'(z) for z of shape (B, H) and per-neuron weights (H, Ho), bias (H,).

    Differentiable once (the meta-gradient needs first-order autograd only).
    """
    return _LearnedActivation.apply(z, w1, b1, w2, b2, base)


class _LearnedDerivatives(torch.autograd.Function):
    """(f', f'') of the activation tile; saves its inputs only and recomputes the tile backward."""

    @staticmethod
    def forward(ctx, z, w1, b1, w2, b2, base):
        ctx.base = base
        ctx.native = native_module(z)
        ctx.save_for_backward(z, w1, b1, w2)
        if ctx.native is not None:
            _, d1, d2 = base_derivatives(base, z)
            return tuple(ctx.native.derivatives_forward(z, w1, b1, w2, d1, d2))
        return _run("derivatives_forward", z, w1, b1, w2, base)

    @staticmethod
    def backward(ctx, grad_f1, grad_f2):
        z, w1, b1, w2 = ctx.saved_tensors
        grad_f1 = torch.zeros_like(z) if grad_f1 is None else grad_f1.contiguous()
        grad_f2 = torch.zeros_like(z) if grad_f2 is None else grad_f2.contiguous()
        if ctx.native is not None:
            _, _, d2, d3 = base_derivatives(ctx.base, z, order=3)
            grads = ctx.native.derivatives_backward(z, w1, b1, w2, grad_f1, grad_f2, d2, d3)
        else:
            grads = _run("derivatives_backward", z, w1, b1, w2, grad_f1, grad_f2, ctx.base)
        return (*grads, None, None)  # g's output bias b2 changes neither f' nor f'': no gradient


def first_and_second_derivative(z, w1, b1, w2, b2, base: str):
    """f'(z) and f''(z) for z (B, H) and per-neuron weights (H, Ho), bias (H,); differentiable once."""
    return _LearnedDerivatives.apply(z, w1, b1, w2, b2, base)


# Which derivatives of the hidden activation a task's hand-written inner gradient takes
# (Task.inner_derivatives) -> the kernel that returns them; 0 is f itself.
DERIVATIVE_KERNELS = {(0, 1): activation_and_derivative, (1, 2): first_and_second_derivative}


def hidden_activation(orders, neuron_phi, base: str, residual_noise=None, hidden_noise=None):
    """The `activation(z)` a task's `inner_loss_and_grads` gets: z -> the derivatives `orders` of f.

    The meta-training noise is constant in z, so it enters f only (order 0) and no derivative.
    """
    kernel = DERIVATIVE_KERNELS[tuple(orders)]

    def activation(z):
        values = list(kernel(z, *neuron_phi, base))
        if orders[0] == 0:
            if residual_noise is not None:
                values[0] = values[0] + RESIDUAL_SCALE * residual_noise
            if hidden_noise is not None:
                values[0] = values[0] + hidden_noise
        return tuple(values)
    return activation
