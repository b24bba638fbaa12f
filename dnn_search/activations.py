"""Learned activation functions: f_i(x) = base(x) + 0.2 * g_i(x), g_i a 1 -> Ho -> 1 tanh MLP.

Everything here is plain torch; nothing imports Ray. The parameters of all n activations are
held as stacked tensors (w1, b1, w2 of shape (n, Ho), b2 of shape (n,)) so that evaluating
every neuron's activation is one vectorised expression, never a Python loop over activations.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from dnn_search.errors import UserError

BASES = ("sin", "tanh", "elu")
RESIDUAL_SCALE = 0.2
# The original text format samples each activation at 100 points on [-5, 5].
GRID_POINTS = 100
GRID_LIMIT = 5.0


def check_base(name: str) -> str:
    if name not in BASES:
        raise UserError(f"unknown base activation {name!r}: choose one of {', '.join(BASES)}")
    return name


def base_value(name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "sin":
        return torch.sin(x)
    if name == "tanh":
        return torch.tanh(x)
    if name == "elu":
        return torch.nn.functional.elu(x)
    raise UserError(f"unknown base activation {name!r}: choose one of {', '.join(BASES)}")


def base_derivatives(name: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """base(x), base'(x), base''(x) written out (the fast path needs them without autograd)."""
    if name == "sin":
        s = torch.sin(x)
        return s, torch.cos(x), -s
    if name == "tanh":
        t = torch.tanh(x)
        d1 = 1 - t * t
        return t, d1, -2 * t * d1
    if name == "elu":
        e = torch.expm1(torch.clamp(x, max=0.0))
        pos = x > 0
        value = torch.where(pos, x, e)
        d1 = torch.where(pos, torch.ones_like(x), e + 1)
        d2 = torch.where(pos, torch.zeros_like(x), e + 1)
        return value, d1, d2
    raise UserError(f"unknown base activation {name!r}: choose one of {', '.join(BASES)}")


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
        g = evaluate_residual(xt[None, :], p["w1"][:, None, :], p["b1"][:, None, :],
                              p["w2"][:, None, :], p["b2"][:, None])
        return (base_value(self.base, xt)[None, :] + RESIDUAL_SCALE * g).numpy()


def evaluate_residual(z, w1, b1, w2, b2):
    """g(z) = sum_k w2_k tanh(w1_k z + b1_k) + b2, broadcasting z against the trailing Ho axis."""
    return (torch.tanh(z[..., None] * w1 + b1) * w2).sum(-1) + b2


def standard_grid() -> np.ndarray:
    return np.linspace(-GRID_LIMIT, GRID_LIMIT, GRID_POINTS)
