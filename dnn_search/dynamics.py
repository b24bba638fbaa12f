"""The dynamical systems of the paper's physics tasks: vector fields, RK4, and their trajectory data.

Two systems (docs/design.md, "Tasks"):

- van der Pol, `x' = v`, `v' = mu (1 - x^2) v - x` with mu = 1, state (x, v);
- Henon-Heiles, `H(q, p) = (p1^2 + p2^2)/2 + (q1^2 + q2^2)/2 + q1^2 q2 - q2^3/3`, state (q1, q2, p1, p2),
  whose vector field is the symplectic gradient (dH/dp, -dH/dq).

The data are generated here, offline and deterministically: 200 train and 50 test trajectories from a
fixed seed, integrated in float64 with RK4 (dt = 0.01, T = 10, 1001 points), 20 states drawn from each
(4000 / 1000), and as targets the exact time derivatives at those states (the vector field itself:
finite differences of the trajectory would add an O(dt^2) error the network would learn). Train and
test states come from different trajectories, and every state carries its trajectory id, so that
held-out splits can take whole trajectories (two states of one trajectory are strongly correlated).
The test trajectories are kept dense, because validation forecasts them from their first state.

`integrate` and `rk4_step` only use arithmetic on the state, so the same code integrates the true field
(numpy, float64) and a network's learned field (torch, in validation rollouts).

The arrays are cached as a pickle-free .npz in the cache folder of `dnn_search.cache` (like MNIST-1D);
a missing or unusable cache is regenerated, which takes well under a second. Science module: no Ray,
no Optuna; it builds its `Dataset` from `dnn_search.dataset` and never imports the classification
loaders of `dnn_search.data` (which reach this module through the task registry).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from dnn_search.cache import cache_candidates, read_npz, write_cache
from dnn_search.dataset import Dataset

DT = 0.01
STEPS = 1000  # T = 10 at dt = 0.01: 1001 points per trajectory
TRAIN_TRAJECTORIES = 200
TEST_TRAJECTORIES = 50
STATES_PER_TRAJECTORY = 20
# A forecast whose state leaves this radius (or stops being finite) has diverged: both systems' data
# stay well inside it (van der Pol's transients from [-3, 3]^2 peak below 7, Henon-Heiles below 1).
ESCAPE_RADIUS = 10.0
# Bumped whenever the generated arrays change, so that an old cache file is never read as new data.
DATA_VERSION = 1


# ------------------------------------------------------------------------------------ integration

def rk4_step(field: Callable, z, dt: float):
    """One classical Runge-Kutta step of z' = field(z); z is (..., d), numpy or torch."""
    k1 = field(z)
    k2 = field(z + 0.5 * dt * k1)
    k3 = field(z + 0.5 * dt * k2)
    k4 = field(z + dt * k3)
    return z + (dt / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)


def integrate(field: Callable, z0, dt: float, steps: int):
    """The states z0, z1, ..., z_steps of RK4 from z0 (batch, d): shape (batch, steps + 1, d)."""
    states = [z0]
    z = z0
    for _ in range(steps):
        z = rk4_step(field, z, dt)
        states.append(z)
    if isinstance(z0, np.ndarray):
        return np.stack(states, axis=1)
    return torch.stack(states, dim=1)


def _stack(parts, like):
    """Stack the components of a field along the last axis, as numpy or torch like the state."""
    return np.stack(parts, axis=-1) if isinstance(like, np.ndarray) else torch.stack(parts, dim=-1)


# --------------------------------------------------------------------------------------- systems

VANDERPOL_MU = 1.0


def vanderpol_field(z):
    """(x', v') = (v, mu (1 - x^2) v - x) of states z (..., 2)."""
    x, v = z[..., 0], z[..., 1]
    return _stack([v, VANDERPOL_MU * (1 - x * x) * v - x], z)


def vanderpol_initial_states(rng: np.random.Generator, count: int) -> np.ndarray:
    """Uniform in [-3, 3]^2: inside, outside and across the limit cycle (amplitude about 2)."""
    return rng.uniform(-3.0, 3.0, size=(count, 2))


def henon_heiles_energy(z):
    """H(q1, q2, p1, p2) of states z (..., 4), numpy or torch (the analytic Hamiltonian)."""
    q1, q2, p1, p2 = z[..., 0], z[..., 1], z[..., 2], z[..., 3]
    return 0.5 * (p1 * p1 + p2 * p2) + 0.5 * (q1 * q1 + q2 * q2) + q1 * q1 * q2 - q2 * q2 * q2 / 3


def henon_heiles_field(z):
    """(q', p') = (dH/dp, -dH/dq) = (p1, p2, -q1 - 2 q1 q2, -q2 - q1^2 + q2^2)."""
    q1, q2, p1, p2 = z[..., 0], z[..., 1], z[..., 2], z[..., 3]
    return _stack([p1, p2, -q1 - 2 * q1 * q2, -q2 - q1 * q1 + q2 * q2], z)


HENON_HEILES_ESCAPE_ENERGY = 1.0 / 6.0
HENON_HEILES_MIN_ENERGY = 0.02


def henon_heiles_initial_states(rng: np.random.Generator, count: int) -> np.ndarray:
    """Energies E ~ U(0.02, 1/6) (below 1/6 the orbits stay bounded), q1 = 0, and (q2, p2) by
    rejection from q2 in [-0.5, 1), |p2| <= sqrt(2E) until p1^2 = 2E - p2^2 - q2^2 + 2 q2^3 / 3 > 0;
    p1 is the positive root, so every state lies on the surface of section q1 = 0 with energy E."""
    states = np.empty((count, 4))
    for i in range(count):
        energy = rng.uniform(HENON_HEILES_MIN_ENERGY, HENON_HEILES_ESCAPE_ENERGY)
        while True:
            q2 = rng.uniform(-0.5, 1.0)
            p2 = rng.uniform(-np.sqrt(2 * energy), np.sqrt(2 * energy))
            p1_squared = 2 * energy - p2 * p2 - q2 * q2 + 2 * q2 ** 3 / 3
            if p1_squared > 0:
                break
        states[i] = (0.0, q2, np.sqrt(p1_squared), p2)
    return states


@dataclass(frozen=True)
class System:
    """A dynamical system as the data generator needs it. `energy`: the conserved quantity, if any
    (validation reports the drift of a forecast's energy)."""

    name: str
    state_names: tuple[str, ...]
    field: Callable
    initial_states: Callable[[np.random.Generator, int], np.ndarray]
    seed: int
    energy: Callable | None = None

    @property
    def dim(self) -> int:
        return len(self.state_names)

    @property
    def cache_file(self) -> str:
        return f"{self.name.lower()}_v{DATA_VERSION}.npz"


VANDERPOL = System("VanDerPol", ("x", "v"), vanderpol_field, vanderpol_initial_states, seed=1)
HENON_HEILES = System("HenonHeiles", ("q1", "q2", "p1", "p2"), henon_heiles_field,
                      henon_heiles_initial_states, seed=2, energy=henon_heiles_energy)


# ------------------------------------------------------------------------------------------ data

def generate(system: System) -> dict[str, np.ndarray]:
    """Every array of the system's data set, in float64, from its fixed seed.

    Keys: x, y, traj, t_index (train states, exact derivatives, trajectory id 0..199, time index),
    the same with a _test suffix (ids 200..249), and trajectories (250, 1001, d), all of them dense.
    """
    rng = np.random.default_rng(system.seed)
    total = TRAIN_TRAJECTORIES + TEST_TRAJECTORIES
    z0 = system.initial_states(rng, total)
    trajectories = integrate(system.field, z0, DT, STEPS)
    t_index = np.stack([rng.choice(STEPS + 1, STATES_PER_TRAJECTORY, replace=False) for _ in range(total)])
    ids = np.repeat(np.arange(total), STATES_PER_TRAJECTORY)
    t_flat = t_index.reshape(-1)
    states = trajectories[ids, t_flat]
    targets = system.field(states)
    train = ids < TRAIN_TRAJECTORIES
    out = {"trajectories": trajectories}
    for suffix, mask in (("", train), ("_test", ~train)):
        out.update({f"x{suffix}": states[mask], f"y{suffix}": targets[mask], f"traj{suffix}": ids[mask],
                    f"t_index{suffix}": t_flat[mask]})
    return out


def _shapes(system: System) -> dict[str, tuple]:
    n_train = TRAIN_TRAJECTORIES * STATES_PER_TRAJECTORY
    n_test = TEST_TRAJECTORIES * STATES_PER_TRAJECTORY
    d = system.dim
    return {"x": (n_train, d), "y": (n_train, d), "traj": (n_train,), "t_index": (n_train,),
            "x_test": (n_test, d), "y_test": (n_test, d), "traj_test": (n_test,), "t_index_test": (n_test,),
            "trajectories_test": (TEST_TRAJECTORIES, STEPS + 1, d)}


def _read_cache(path: Path, system: System) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when the file is absent or unusable (it is then regenerated)."""
    shapes = _shapes(system)
    arrays = read_npz(path, shapes)
    if arrays is None:
        return None
    for key, shape in shapes.items():
        a = arrays[key]
        integer = key.startswith(("traj", "t_index")) and key != "trajectories_test"
        if a.shape != shape or a.dtype != (np.int64 if integer else np.float64):
            return None
        if not integer and not np.isfinite(a).all():
            return None
    return arrays


def cached_arrays(system: System, data_path: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """The arrays a Dataset needs (no dense train trajectories), from the cache or generated."""
    candidates = cache_candidates(system.cache_file, data_path)
    for path in candidates:
        arrays = _read_cache(path, system)
        if arrays is not None:
            return arrays
    full = generate(system)
    arrays = {k: full[k] for k in _shapes(system) if k != "trajectories_test"}
    arrays["trajectories_test"] = full["trajectories"][TRAIN_TRAJECTORIES:]
    write_cache(candidates, arrays)
    return arrays


def load_system(system: System, data_path: str | os.PathLike | None = None):
    """The system's Dataset: float32 states and targets with trajectory ids, plus the dense float64
    test trajectories (row k is trajectory id 200 + k) and their time step for forecasts."""
    a = cached_arrays(system, data_path)
    return Dataset(system.name, torch.from_numpy(a["x"]), torch.from_numpy(a["y"]),
                   torch.from_numpy(a["x_test"]), torch.from_numpy(a["y_test"]), task="",
                   traj_train=torch.from_numpy(a["traj"]), traj_test=torch.from_numpy(a["traj_test"]),
                   trajectories_test=torch.from_numpy(a["trajectories_test"]), dt=DT)
