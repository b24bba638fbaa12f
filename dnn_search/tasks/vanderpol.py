"""VanDerPol: an MLP 2 -> H -> 2 maps a state (x, v) to its time derivative (docs/design.md).

The prediction is the network's output, so the default hand-written inner gradient of Task (back
through the one hidden layer, with f' only) is the fast path, given the MSE's output gradient from
ForecastTask: no kernel of its own is needed.
"""
from __future__ import annotations

from functools import partial

from dnn_search import dynamics
from dnn_search.tasks.forecast import ForecastTask
from dnn_search.tasks.registry import register_dataset, register_task


class VanDerPol(ForecastTask):
    name = "vanderpol"
    system = dynamics.VANDERPOL
    inner_gradient_order = 1


register_task(VanDerPol.name, VanDerPol)
register_dataset("VanDerPol", partial(dynamics.load_system, dynamics.VANDERPOL), VanDerPol.name,
                 description="van der Pol oscillator (mu = 1), generated offline: 4000 train / 1000 test "
                             "states of 200 / 50 RK4 trajectories, targets the exact derivatives")
