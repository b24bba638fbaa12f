"""Learned activation functions: f_i(x) = base(x) + 0.2 * g_i(x), g_i a 1 -> Ho -> 1 tanh MLP.

Everything here is plain torch; nothing imports Ray. The parameters of all n activations are
held as stacked tensors (w1, b1, w2 of shape (n, Ho), b2 of shape (n,)) so that evaluating
every neuron's activation is one vectorised expression, never a Python loop over activations.
Base functions live in a registry (`register_base`), so adding one touches this module only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from dnn_search.errors import UserError
from dnn_search.registry import Registry

RESIDUAL_SCALE = 0.2
# The original text format samples each activation at 100 points on [-5, 5].
GRID_POINTS = 100
GRID_LIMIT = 5.0


@dataclass(frozen=True)
class Base:
    """A base function: its value and its derivatives written out.

    `derivatives(x, order)` returns (b, b', ..., b^(order)). The fast inner step needs them without
    autograd, and a task whose hand-written inner gradient uses the k-th derivative of f needs
    order k + 1 here for the meta-gradient (a Hamiltonian network's inner gradient uses f'', so it
    needs f'''). `smooth` says every derivative up to `max_order` is continuous: elu's second
    derivative jumps at 0, so tasks that differentiate through f' refuse it.
    """

    name: str
    value: Callable[[torch.Tensor], torch.Tensor]
    derivatives: Callable[[torch.Tensor, int], tuple]
    max_order: int
    smooth: bool


def _sin_derivatives(x, order):
    s = torch.sin(x)
    if order <= 2:
        return (s, torch.cos(x), -s)[:order + 1]
    c = torch.cos(x)
    return (s, c, -s, -c)


def _tanh_derivatives(x, order):
    t = torch.tanh(x)
    d1 = 1 - t * t
    d2 = -2 * t * d1
    if order <= 2:
        return (t, d1, d2)[:order + 1]
    return (t, d1, d2, -2 * (d1 * d1 + t * d2))


def _elu_derivatives(x, order):
    e = torch.expm1(torch.clamp(x, max=0.0))
    pos = x > 0
    value = torch.where(pos, x, e)
    d1 = torch.where(pos, torch.ones_like(x), e + 1)
    higher = torch.where(pos, torch.zeros_like(x), e + 1)  # every derivative of exp(x) - 1 is exp(x)
    return (value, d1, higher, higher)[:order + 1]


BASES: Registry[Base] = Registry("base activation")
BASES.register("sin", Base("sin", torch.sin, _sin_derivatives, 3, smooth=True))
BASES.register("tanh", Base("tanh", torch.tanh, _tanh_derivatives, 3, smooth=True))
BASES.register("elu", Base("elu", torch.nn.functional.elu, _elu_derivatives, 3, smooth=False))


def register_base(base: Base) -> Base:
    """Make a base function available by name everywhere (--activation, activation files, validation).

    Args:
        base: the `Base` (its name, the function and its derivatives).

    Returns:
        `base`, unchanged.

    Raises:
        ValueError: when a base of that name is already registered.
    """
    return BASES.register(base.name, base)


def get_base(name: str) -> Base:
    return BASES.get(name)


def base_names() -> list[str]:
    return BASES.names()


def check_base(name: str) -> str:
    """The registered name of base `name`; a UserError listing the choices otherwise."""
    return get_base(name).name


def base_value(name: str, x: torch.Tensor) -> torch.Tensor:
    return get_base(name).value(x)


def base_derivatives(name: str, x: torch.Tensor, order: int = 2) -> tuple:
    """base(x), base'(x), ..., base^(order)(x) written out (the fast path needs them without autograd)."""
    base = get_base(name)
    if order > base.max_order:
        raise UserError(f"base {name!r} provides derivatives up to order {base.max_order}, not {order}")
    return base.derivatives(x, order)


def block_sizes(hidden: int, n: int) -> list[int]:
    """Split `hidden` neurons into n contiguous blocks; the first hidden % n blocks get one extra."""
    if n < 1 or n > hidden:
        raise UserError(f"n_activations must be between 1 and the hidden size {hidden}, got {n}")
    q, r = divmod(hidden, n)
    return [q + 1 if i < r else q for i in range(n)]


def neuron_blocks(hidden: int, n: int) -> torch.Tensor:
    """Index of the activation used by each hidden neuron, shape (hidden,)."""
    sizes = block_sizes(hidden, n)
    return torch.repeat_interleave(torch.arange(n), torch.tensor(sizes))


def default_init(n: int, outer_hidden: int, generator: torch.Generator,
                 dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """PyTorch's default nn.Linear init, drawn independently for each of the n sub-networks."""
    def uniform(shape, bound):
        return (torch.rand(shape, generator=generator, dtype=dtype) * 2 - 1) * bound
    inner_bound = 1.0  # nn.Linear(1, Ho): fan_in 1
    outer_bound = 1.0 / math.sqrt(outer_hidden)  # nn.Linear(Ho, 1): fan_in Ho
    return {
        "w1": uniform((n, outer_hidden), inner_bound),
        "b1": uniform((n, outer_hidden), inner_bound),
        "w2": uniform((n, outer_hidden), outer_bound),
        "b2": uniform((n,), outer_bound),
    }


@dataclass
class ActivationSet:
    """n learned activations sharing one base function. Arrays are float64 numpy."""

    base: str
    w1: np.ndarray  # (n, Ho) input weights of g_i
    b1: np.ndarray  # (n, Ho) hidden biases of g_i
    w2: np.ndarray  # (n, Ho) output weights of g_i
    b2: np.ndarray  # (n,)    output bias of g_i

    def __post_init__(self):
        check_base(self.base)
        self.w1, self.b1, self.w2, self.b2 = (np.asarray(a, dtype=np.float64)
                                              for a in (self.w1, self.b1, self.w2, self.b2))
        n, ho = self.w1.shape if self.w1.ndim == 2 else (None, None)
        if (n is None or n < 1 or ho < 1 or self.b1.shape != (n, ho) or self.w2.shape != (n, ho)
                or self.b2.shape != (n,)):
            raise UserError("activation weights must be w1, b1, w2 of shape (n, Ho) and b2 of shape (n,); "
                            f"got {self.w1.shape}, {self.b1.shape}, {self.w2.shape}, {self.b2.shape}")
        if not all(np.isfinite(a).all() for a in (self.w1, self.b1, self.w2, self.b2)):
            raise UserError("activation weights contain NaN or inf")

    @property
    def n(self) -> int:
        return self.w1.shape[0]

    @property
    def outer_hidden_size(self) -> int:
        return self.w1.shape[1]

    @classmethod
    def from_tensors(cls, base: str, params: dict[str, torch.Tensor]) -> "ActivationSet":
        return cls(base, *(params[k].detach().cpu().double().numpy() for k in ("w1", "b1", "w2", "b2")))

    def tensors(self, dtype=torch.float32, device="cpu") -> dict[str, torch.Tensor]:
        return {k: torch.as_tensor(getattr(self, k), dtype=dtype, device=device)
                for k in ("w1", "b1", "w2", "b2")}

    def subset(self, index: int) -> "ActivationSet":
        """The single activation `index` (0-based) as a one-activation set."""
        sl = slice(index, index + 1)
        return ActivationSet(self.base, self.w1[sl], self.b1[sl], self.w2[sl], self.b2[sl])

    def evaluate(self, x: np.ndarray) -> np.ndarray:
        """f_i(x) for every activation i, shape (n, len(x)), in float64."""
        xt = torch.as_tensor(np.asarray(x, dtype=np.float64))
        p = self.tensors(torch.float64)
        return learned_activation(self.base, xt[None, :], p["w1"][:, None, :], p["b1"][:, None, :],
                                  p["w2"][:, None, :], p["b2"][:, None]).numpy()


def evaluate_residual(z, w1, b1, w2, b2):
    """g(z) = sum_k w2_k tanh(w1_k z + b1_k) + b2, broadcasting z against the trailing Ho axis."""
    return (torch.tanh(z[..., None] * w1 + b1) * w2).sum(-1) + b2


def learned_activation(base: str, z, w1, b1, w2, b2, residual_noise=None):
    """f(z) = base(z) + 0.2 * (g(z) + noise): the one place the residual form is written.

    `residual_noise` is the meta-training noise after g's tanh layer, already mapped through g's
    output weights (docs/design.md, "Learned activations"); None outside meta-training.
    """
    g = evaluate_residual(z, w1, b1, w2, b2)
    if residual_noise is not None:
        g = g + residual_noise
    return base_value(base, z) + RESIDUAL_SCALE * g


def standard_grid() -> np.ndarray:
    return np.linspace(-GRID_LIMIT, GRID_LIMIT, GRID_POINTS)
