"""Ordinary networks that use learned activations: the networks of validation and Hessian trials.

A `ValidationNet` is D -> H -> out (out: classes for classification; `NetSpec.num_classes` keeps
that name for saved specs, whatever the task) with a `NeuronActivations` layer whose neuron h applies one of
four kinds of function:
- `pure`: the base function itself (a registered base: sin, tanh, elu, ...);
- `standard`: a standard activation of the field (relu, gelu, silu, tanh, elu: the torch functions
  themselves), the baselines a reader knows;
- `exact`: a learned activation from its saved sub-network weights;
- `interpolated`: a learned activation sampled on a grid, evaluated piecewise-linearly.
Everything the layer needs lives in buffers, so a saved state dict plus the small JSON spec from
`NetSpec` rebuild the network without the activation file.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from dnn_search.activations import ActivationSet, base_value, check_base, learned_activation
from dnn_search.errors import UserError

KINDS = ("pure", "standard", "exact", "interpolated")
# The field's standard activations, as torch implements them: validation mode `std:<name>`.
STANDARD_ACTIVATIONS = {"relu": torch.relu, "gelu": torch.nn.functional.gelu, "silu": torch.nn.functional.silu,
                        "tanh": torch.tanh, "elu": torch.nn.functional.elu}


@dataclass
class NetSpec:
    """Shapes and kind of a ValidationNet: enough to rebuild it before loading its state dict."""

    input_size: int
    hidden_size: int
    num_classes: int
    base: str
    kind: str
    n_activations: int = 1
    outer_hidden_size: int = 0
    grid_points: int = 0
    standard: str = ""  # kind `standard`: the name in STANDARD_ACTIVATIONS

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "NetSpec":
        try:
            spec = cls(**{k: values[k] for k in cls.__dataclass_fields__ if k in values or k != "standard"})
        except (KeyError, TypeError) as exc:
            raise UserError(f"model description is incomplete or malformed: {exc}") from None
        if spec.kind not in KINDS:
            raise UserError(f"model description has unknown activation kind {spec.kind!r}")
        if spec.kind == "standard" and spec.standard not in STANDARD_ACTIVATIONS:
            raise UserError(f"model description has unknown standard activation {spec.standard!r}")
        check_base(spec.base)
        return spec


def interpolate_rows(grid_x: torch.Tensor, rows: torch.Tensor, row_index: torch.Tensor, z: torch.Tensor):
    """Piecewise-linear value of sampled function rows[row_index[h]] at z[..., h].

    grid_x (K,) increasing, rows (n, K), row_index (H,), z (..., H). Linear extrapolation beyond
    the grid with the end segments' slopes; differentiable with respect to z.
    """
    k = grid_x.shape[0]
    seg = (torch.searchsorted(grid_x, z.detach().contiguous(), right=True) - 1).clamp(0, k - 2)
    flat = rows.reshape(-1)
    base_idx = row_index * k + seg
    y0, y1 = flat[base_idx], flat[base_idx + 1]
    x0, x1 = grid_x[seg], grid_x[seg + 1]
    return y0 + (z - x0) * (y1 - y0) / (x1 - x0)


class NeuronActivations(nn.Module):
    def __init__(self, spec: NetSpec, neuron_index: torch.Tensor | None = None):
        super().__init__()
        self.base, self.kind, self.standard = spec.base, spec.kind, spec.standard
        h = spec.hidden_size
        index = torch.zeros(h, dtype=torch.long) if neuron_index is None else neuron_index.long()
        self.register_buffer("neuron_index", index)
        if self.kind == "exact":
            n, ho = spec.n_activations, spec.outer_hidden_size
            for name, shape in (("w1", (n, ho)), ("b1", (n, ho)), ("w2", (n, ho)), ("b2", (n,))):
                self.register_buffer(name, torch.zeros(shape))
        elif self.kind == "interpolated":
            self.register_buffer("grid_x", torch.zeros(spec.grid_points))
            self.register_buffer("grid_y", torch.zeros(spec.n_activations, spec.grid_points))

    def forward(self, z):
        if self.kind == "pure":
            return base_value(self.base, z)
        if self.kind == "standard":
            return STANDARD_ACTIVATIONS[self.standard](z)
        if self.kind == "exact":
            idx = self.neuron_index
            return learned_activation(self.base, z, self.w1[idx], self.b1[idx], self.w2[idx], self.b2[idx])
        return interpolate_rows(self.grid_x, self.grid_y, self.neuron_index, z)


class ValidationNet(nn.Module):
    def __init__(self, spec: NetSpec, neuron_index: torch.Tensor | None = None):
        super().__init__()
        self.spec = spec
        self.fc1 = nn.Linear(spec.input_size, spec.hidden_size)
        self.act = NeuronActivations(spec, neuron_index)
        self.fc2 = nn.Linear(spec.hidden_size, spec.num_classes)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def build_net(input_size: int, hidden_size: int, num_classes: int, base: str, *,
              exact: ActivationSet | None = None, grid_x: np.ndarray | None = None,
              grid_y: np.ndarray | None = None, neuron_index: torch.Tensor | None = None,
              standard: str | None = None) -> ValidationNet:
    """A freshly initialised net. Give `exact` weights, or a sampled grid, or a `standard` activation's
    name, or none of them for `pure`.

    `neuron_index` maps each hidden neuron to an activation row (default: all use row 0).
    """
    if exact is not None:
        spec = NetSpec(input_size, hidden_size, num_classes, base, "exact", exact.n, exact.outer_hidden_size)
    elif grid_y is not None:
        spec = NetSpec(input_size, hidden_size, num_classes, base, "interpolated", grid_y.shape[0],
                       grid_points=grid_y.shape[1])
    elif standard is not None:
        if standard not in STANDARD_ACTIVATIONS:
            raise UserError(f"unknown standard activation {standard!r}: choose from {', '.join(STANDARD_ACTIVATIONS)}")
        spec = NetSpec(input_size, hidden_size, num_classes, base, "standard", standard=standard)
    else:
        spec = NetSpec(input_size, hidden_size, num_classes, base, "pure")
    net = ValidationNet(spec, neuron_index)
    with torch.no_grad():
        if exact is not None:
            for name, value in exact.tensors().items():
                getattr(net.act, name).copy_(value)
        elif grid_y is not None:
            net.act.grid_x.copy_(torch.as_tensor(grid_x))
            net.act.grid_y.copy_(torch.as_tensor(grid_y))
    return net


def load_net(spec_dict: dict, state_path) -> ValidationNet:
    """Rebuild a ValidationNet from its spec and a state dict, never unpickling arbitrary objects."""
    spec = NetSpec.from_dict(spec_dict)
    net = ValidationNet(spec)
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"model file not found: {state_path}") from None
    except Exception as exc:  # weights_only refuses pickled code; anything else is a corrupt file
        raise UserError(f"cannot load model {state_path}: not a plain state dict "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(state, dict):
        raise UserError(f"cannot load model {state_path}: expected a state dict")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise UserError(f"model {state_path} does not match the architecture {spec.to_dict()}: {first}") from None
    return net
