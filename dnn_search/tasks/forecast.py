"""What the physics tasks share: a network learns a vector field from states and exact derivatives.

Inner loss and metric are the mean squared error over every output element (as F.mse_loss), so one
number means the same in meta-learning (`heldout_mse`), validation (`test_mse`, `val_mse`) and the
search. Validation also forecasts: from the first state of each dense test trajectory it integrates
the learned field with RK4 at the data's step over the trajectory's length, because a small one-step
error says little about how a learned field behaves when its own errors feed back (docs/design.md,
"Forecast metrics"). A forecast that stops being finite or leaves the escape radius counts as
diverged and is left out of the median, which would otherwise be an infinity, or a number dominated
by how fast one runaway orbit grows.

This module registers nothing: `vanderpol` and `henonheiles` subclass ForecastTask and register.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from dnn_search import dynamics
from dnn_search.metrics import Metric
from dnn_search.tasks.base import Task


class ForecastTask(Task):
    primary_metric = "mse"
    # errors span decades between networks: compared on log scale, as ratios
    metrics = (Metric("mse", "min", "mean squared error of the derivative", log=True),)
    extra_metrics = (Metric("rollout_mse", "min", "forecast mean squared error (median over trajectories)"),
                     Metric("rollout_diverged", "min", "diverged forecasts", digits=0))
    loss_label = "mean squared error"
    system: dynamics.System

    def output_size(self, data) -> int:
        return data.y_train.shape[1]

    def loss(self, prediction, y):
        diff = prediction - y
        return (diff * diff).mean()

    def output_loss_and_grad(self, out, y):
        diff = out - y
        return (diff * diff).mean(), 2 * diff / diff.numel()

    def metric_sums(self, prediction, y):
        # per-sample mean over the state's components, so that evaluate()'s mean over samples is the
        # mean over every element, the same number as loss()
        return {"mse": float(((prediction.detach() - y) ** 2).mean(1).sum())}

    # --------------------------------------------------------------------------- forecasts
    def vector_field(self, net, z: torch.Tensor) -> torch.Tensor:
        """The learned time derivative at states z, without a graph (forecasts never backpropagate)."""
        with torch.no_grad():
            return self.predict(net, z)

    def forecast(self, net, z0, steps: int, dt: float = dynamics.DT) -> np.ndarray:
        """RK4 forecast of the learned field from z0 ((d,) or (batch, d)) for `steps` steps of `dt`:
        float64 array (steps + 1, d) or (batch, steps + 1, d), the first row being z0.

        Runs in the dtype and on the device of the network's parameters; a diverged forecast simply
        carries inf/NaN on (`stayed_inside` tells).
        """
        if steps < 0:
            raise ValueError(f"steps must be non-negative, got {steps}")
        param = next(iter(net.parameters()), None) if hasattr(net, "parameters") else None
        dtype = param.dtype if param is not None else torch.float64  # a plain function: full precision
        device = param.device if param is not None else torch.device("cpu")
        z = torch.as_tensor(np.asarray(z0, dtype=np.float64)).to(dtype=dtype, device=device)
        single = z.ndim == 1
        z = z[None] if single else z
        was_training = getattr(net, "training", False)
        if hasattr(net, "eval"):
            net.eval()
        try:
            path = dynamics.integrate(lambda s: self.vector_field(net, s), z, dt, steps)
        finally:
            if was_training:
                net.train()
        out = path.detach().double().cpu().numpy()
        return out[0] if single else out

    @staticmethod
    def stayed_inside(forecast: np.ndarray) -> np.ndarray:
        """Per forecast (batch, steps + 1, d): True when it stayed finite and within the escape radius."""
        with np.errstate(invalid="ignore", over="ignore"):
            radius = np.nan_to_num(np.linalg.norm(forecast, axis=2), nan=np.inf).max(1)
        return np.isfinite(forecast).all(axis=(1, 2)) & (radius <= dynamics.ESCAPE_RADIUS)

    def rollout_summary(self, forecast: np.ndarray, truth: np.ndarray) -> dict[str, float]:
        """rollout_mse (median over the forecasts that stayed inside of the mean over steps 1.. of
        |z^ - z|^2) and rollout_diverged (how many did not: non-finite or beyond the escape radius)."""
        inside = self.stayed_inside(forecast)
        with np.errstate(invalid="ignore", over="ignore"):
            errors = ((forecast[:, 1:] - truth[:, 1:]) ** 2).sum(2).mean(1)
        return {"rollout_mse": float(np.median(errors[inside])) if inside.any() else math.nan,
                "rollout_diverged": int((~inside).sum())}

    def validation_metrics(self, net, data, device="cpu") -> dict[str, float]:
        """Forecast metrics of a trained network from each dense test trajectory's first state."""
        truth = getattr(data, "trajectories_test", None)
        if truth is None or truth.shape[1] < 2:
            return {}
        truth = truth.numpy()
        forecast = self.forecast(net, truth[:, 0], truth.shape[1] - 1, data.dt or dynamics.DT)
        return self.rollout_summary(forecast, truth)
