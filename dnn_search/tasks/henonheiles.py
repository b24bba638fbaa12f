"""HenonHeiles: a Hamiltonian neural network (HNN) on the Henon-Heiles system (docs/design.md).

An MLP 4 -> H -> 1 outputs a scalar H^(q, p); the prediction is its symplectic gradient
(dH^/dp, -dH^/dq), which conserves H^ along the learned flow by construction (the reason an HNN is
used: its forecasts cannot gain or lose energy the way an unconstrained field does). Because the
prediction is an input gradient, the loss depends on the activation's f', the inner gradient on
f'', and the exact meta-gradient through the unrolled run on f''' and df'/dphi, df''/dphi; so the
task needs a smooth base (sin, tanh: elu's f'' jumps at 0). Its fast path is the inner gradient
written out with f' and f'' (docs/design.md, "The Hamiltonian network's fast path"), served by the
f'/f'' kernel of `dnn_search.fused`; the reference path differentiates `symplectic_gradient` with
create_graph=True.
"""
from __future__ import annotations

from functools import partial

import numpy as np
import torch

from dnn_search import dynamics
from dnn_search.metrics import Metric
from dnn_search.tasks.forecast import ForecastTask
from dnn_search.tasks.registry import register_dataset, register_task


def symplectic_gradient(hamiltonian, x: torch.Tensor, create_graph: bool = True) -> torch.Tensor:
    """(dH/dp, -dH/dq) of the scalar function `hamiltonian` (x (B, 2k) -> (B,) or (B, 1)) at states
    x = (q, p). With create_graph the result stays differentiable (inner gradients and Hessians)."""
    with torch.enable_grad():
        x = x if x.requires_grad else x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(hamiltonian(x).sum(), x, create_graph=create_graph)
    k = x.shape[1] // 2
    return torch.cat([grad[:, k:], -grad[:, :k]], dim=1)


class HenonHeiles(ForecastTask):
    name = "hnn"
    system = dynamics.HENON_HEILES
    inner_gradient_order = 2
    inner_derivatives = (1, 2)  # activation(z) -> (f', f''): the loss and its gradient need no f
    requires_smooth_base = True
    predict_needs_grad = True
    extra_metrics = (*ForecastTask.extra_metrics, Metric("energy_drift", "min", "relative energy drift (median)"))

    def output_size(self, data) -> int:
        return 1

    def predict(self, net, x):
        return symplectic_gradient(net, x, create_graph=True)

    def vector_field(self, net, z):
        return symplectic_gradient(net, z, create_graph=False).detach()

    def inner_loss_and_grads(self, theta, activation, x, y):
        """MSE of the symplectic gradient and its gradient in (W1, b1, w2, b2), written out with f' and
        f'' (docs/design.md, "The Hamiltonian network's fast path"): the same function as `predict`
        followed by `loss`, with the sign convention of `symplectic_gradient`."""
        w1, b1, w2, b2 = theta
        k = x.shape[1] // 2
        f1, f2 = activation(x @ w1.T + b1)
        a = f1 * w2                                          # (B, H): dH^/du
        grad_h = a @ w1                                      # (B, 2k): dH^/dz = W1^T a
        prediction = torch.cat([grad_h[:, k:], -grad_h[:, :k]], dim=1)
        loss, r = self.output_loss_and_grad(prediction, y)   # r = dL/dz^
        s = torch.cat([-r[:, k:], r[:, :k]], dim=1)          # J^T r
        c = s @ w1.T                                         # (B, H): W1 s
        d = c * w2 * f2
        return loss, (a.T @ s + d.T @ x, d.sum(0), (c * f1).sum(0, keepdim=True), torch.zeros_like(b2))

    def rollout_summary(self, forecast, truth):
        """Adds energy_drift: max over t of |H(z^_t) - H(z_0)| / H(z_0) with the true H, median over
        the forecasts that did not diverge."""
        summary = super().rollout_summary(forecast, truth)
        energy = dynamics.henon_heiles_energy
        inside = self.stayed_inside(forecast)
        with np.errstate(invalid="ignore", over="ignore"):
            start = energy(truth[:, 0])
            drift = (np.abs(energy(forecast) - start[:, None]) / np.abs(start)[:, None]).max(1)
        summary["energy_drift"] = float(np.median(drift[inside])) if inside.any() else float("nan")
        return summary


register_task(HenonHeiles.name, HenonHeiles)
register_dataset("HenonHeiles", partial(dynamics.load_system, dynamics.HENON_HEILES), HenonHeiles.name,
                 aliases=("HenonHeilesHNN",),
                 description="Henon-Heiles Hamiltonian system for an HNN, generated offline: 4000 train / "
                             "1000 test states of 200 / 50 RK4 trajectories below the escape energy")
