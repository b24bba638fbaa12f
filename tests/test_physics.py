"""The paper's physics tasks: van der Pol forecasting and a Henon-Heiles Hamiltonian neural network.

Data (integration, exact targets, energy, trajectory splits), the HNN's prediction and its derivatives
(against finite differences and the analytic Hamiltonian), the exact meta-gradient (fast against
reference for VanDerPol, finite differences of the meta-loss for the HNN on both paths; the HNN's fast
path against its reference is tests/test_hnn_fast.py), forecast metrics, and the
commands end to end with their refusals.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from dnn_search import cli, dynamics
from dnn_search.activations import ActivationSet, default_init
from dnn_search.actfile import write_activation_files
from dnn_search.data import load_dataset
from dnn_search.hessian import analyze
from dnn_search.metalearn import MetaConfig, MetaLearner
from dnn_search.models import build_net
from dnn_search.plots import plot_forecast
from dnn_search.tasks import get_task, task_for_dataset

SYSTEMS = [dynamics.VANDERPOL, dynamics.HENON_HEILES]


@pytest.fixture(autouse=True)
def quiet_kernels(monkeypatch, tmp_path_factory):
    """Eager kernels (no compile warm-up, no native build) and a private data cache."""
    monkeypatch.setenv("DNN_SEARCH_COMPILE", "0")
    monkeypatch.setenv("DNN_SEARCH_NATIVE", "0")
    monkeypatch.setenv("DNN_SEARCH_CACHE", str(tmp_path_factory.getbasetemp() / "physics_cache"))


@pytest.fixture(scope="module")
def generated():
    return {s.name: dynamics.generate(s) for s in SYSTEMS}


# ------------------------------------------------------------------------------------------ data

@pytest.mark.parametrize("system", SYSTEMS, ids=lambda s: s.name)
def test_targets_are_the_derivatives_of_the_trajectories(system, generated):
    """Targets against second-order finite differences of the dense trajectory (not the field that
    made them): equal up to the O(dt^2) difference error, 1e-3 of the largest target."""
    g = generated[system.name]
    slopes = np.gradient(g["trajectories"], dynamics.DT, axis=1, edge_order=2)
    for suffix in ("", "_test"):
        ids, t = g[f"traj{suffix}"], g[f"t_index{suffix}"]
        np.testing.assert_array_equal(g[f"x{suffix}"], g["trajectories"][ids, t])
        y = g[f"y{suffix}"]
        assert np.abs(slopes[ids, t] - y).max() <= 1e-3 * np.abs(y).max()
    assert g["trajectories"].shape == (250, 1001, system.dim)
    assert len(g["x"]) == 4000 and len(g["x_test"]) == 1000


@pytest.mark.parametrize("system", SYSTEMS, ids=lambda s: s.name)
def test_loaded_dataset_is_the_generated_one_and_is_cached(system, generated, tmp_path, monkeypatch):
    monkeypatch.setenv("DNN_SEARCH_CACHE", str(tmp_path))
    g = generated[system.name]
    data = load_dataset(system.name)
    assert (tmp_path / system.cache_file).is_file()  # written on first use
    again = load_dataset(system.name.lower())  # read back from the cache
    for d in (data, again):
        assert d.task == task_for_dataset(system.name).name
        torch.testing.assert_close(d.x_train, torch.from_numpy(g["x"]).float(), rtol=0, atol=0)
        torch.testing.assert_close(d.y_test, torch.from_numpy(g["y_test"]).float(), rtol=0, atol=0)
        torch.testing.assert_close(d.trajectories_test, torch.from_numpy(g["trajectories"][200:]), rtol=0, atol=0)
        assert d.dt == dynamics.DT and d.trajectories_test.dtype == torch.float64
    # the public entry point gives the same arrays (deterministic: fixed seed, no file downloaded)
    import dnn_search
    assert torch.equal(dnn_search.load_dataset(system.name).x_test, data.x_test)


def test_henon_heiles_energy_is_conserved_and_initial_states_follow_the_recipe(generated):
    traj = generated["HenonHeiles"]["trajectories"]
    energy = dynamics.henon_heiles_energy(traj)
    assert np.abs(energy - energy[:, :1]).max() <= 1e-6 * np.abs(energy[:, :1]).min()
    start = traj[:, 0]
    assert (start[:, 0] == 0).all() and (start[:, 2] > 0).all() and (start[:, 1] >= -0.5).all()
    assert ((energy[:, 0] > 0.02) & (energy[:, 0] < 1 / 6)).all()
    # van der Pol from [-3, 3]^2: bounded, well inside the forecasts' escape radius
    vdp = generated["VanDerPol"]["trajectories"]
    assert np.abs(vdp[:, 0]).max() <= 3 and np.linalg.norm(vdp, axis=2).max() < dynamics.ESCAPE_RADIUS / 2


@pytest.mark.parametrize("name", ["VanDerPol", "HenonHeiles"])
def test_trajectory_ids_are_disjoint_across_train_validation_and_test(name):
    data = load_dataset(name)
    id_of = {tuple(row): int(i) for row, i in zip(data.x_train.tolist(), data.traj_train)}
    assert len(id_of) == len(data.x_train)  # states are distinct, so rows identify trajectories
    x_tr, _, x_val, _ = data.split(0.1, seed=3)
    train_ids = {id_of[tuple(r)] for r in x_tr.tolist()}
    val_ids = {id_of[tuple(r)] for r in x_val.tolist()}
    test_ids = set(data.traj_test.tolist())
    assert len(val_ids) == 20 and len(train_ids) == 180 and len(test_ids) == 50
    assert not (train_ids & val_ids) and not (train_ids & test_ids) and not (val_ids & test_ids)


# ----------------------------------------------------------------------------------- HNN maths

class TrueHamiltonian(torch.nn.Module):
    """The analytic Henon-Heiles H as a 'network' (sign -1: a wrong one)."""

    def __init__(self, sign=1.0):
        super().__init__()
        self.sign = sign

    def forward(self, z):
        return self.sign * dynamics.henon_heiles_energy(z)[:, None]


def test_true_hamiltonian_gives_zero_loss():
    g = dynamics.generate(dynamics.HENON_HEILES)
    task = get_task("hnn")
    x, y = torch.from_numpy(g["x"]), torch.from_numpy(g["y"])
    assert float(task.loss(task.predict(TrueHamiltonian(), x), y).detach()) < 1e-12
    assert float(task.loss(task.predict(TrueHamiltonian(-1.0), x), y).detach()) > 1e-2
    # the metric path agrees (chunked evaluation with autograd on for the input gradient)
    assert task.evaluate(TrueHamiltonian(), x, y, chunk=300)["mse"] < 1e-12


def _tiny_hnn(base="sin", n=2, hidden=3, seed=0):
    torch.manual_seed(seed)
    acts = ActivationSet.from_tensors(base, default_init(n, 5, torch.Generator().manual_seed(seed)))
    index = torch.arange(hidden) % n
    return build_net(4, hidden, 1, base, exact=acts, neuron_index=index).double()


def test_hnn_prediction_is_the_symplectic_gradient_by_finite_differences():
    net = _tiny_hnn()
    x = torch.randn(7, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    predicted = get_task("hnn").predict(net, x).detach()
    h, eye = 1e-6, torch.eye(4, dtype=torch.float64)
    with torch.no_grad():
        grad = torch.stack([(net(x + h * eye[i]) - net(x - h * eye[i]))[:, 0] / (2 * h) for i in range(4)], 1)
    expected = torch.cat([grad[:, 2:], -grad[:, :2]], 1)
    torch.testing.assert_close(predicted, expected, rtol=1e-7, atol=1e-9)


def test_hnn_loss_gradient_against_finite_differences():
    """The loss of the input-gradient prediction, differentiated w.r.t. every parameter (fc2's bias
    has no effect: its gradient is zero) and checked by torch.autograd.gradcheck's finite differences,
    twice: the gradient (f'') and its derivative (f''', what the exact meta-gradient needs)."""
    net = _tiny_hnn("tanh")
    task = get_task("hnn")
    g = dynamics.generate(dynamics.HENON_HEILES)
    x, y = torch.from_numpy(g["x"][:40]), torch.from_numpy(g["y"][:40])
    names = [n for n, _ in net.named_parameters()]
    values = tuple(p.detach().clone().requires_grad_(True) for p in net.parameters())

    def loss(*params):
        def hamiltonian(z):
            return torch.func.functional_call(net, dict(zip(names, params)), (z,))
        return task.loss(task.predict(hamiltonian, x), y)
    assert torch.autograd.gradcheck(loss, values, eps=1e-6, atol=1e-7, rtol=1e-5)
    assert torch.autograd.gradgradcheck(loss, values, eps=1e-6, atol=1e-6, rtol=1e-4)
    grads = torch.autograd.grad(loss(*values), values, allow_unused=True, materialize_grads=True)
    assert float(grads[names.index("fc2.bias")].abs().max()) == 0.0


def _flat_loss(net, task, x, y):
    params = {n: p for n, p in net.named_parameters() if n != "fc2.bias"}
    names, shapes = list(params), [p.shape for p in params.values()]
    flat = torch.cat([p.detach().reshape(-1) for p in params.values()])

    def loss(v):
        values, start = {}, 0
        for name, shape in zip(names, shapes):
            values[name] = v[start:start + shape.numel()].view(shape)
            start += shape.numel()
        fn = (lambda z: torch.func.functional_call(net, values, (z,), strict=False))
        return task.loss(task.predict(fn, x), y)
    return loss, flat


def test_hnn_hessian_statistics_against_the_exact_hessian():
    net = _tiny_hnn("sin", hidden=4)
    task = get_task("hnn")
    g = dynamics.generate(dynamics.HENON_HEILES)
    x, y = torch.from_numpy(g["x"][:200]), torch.from_numpy(g["y"][:200])
    loss, flat = _flat_loss(net, task, x, y)
    exact = torch.autograd.functional.hessian(loss, flat)
    # the exact Hessian itself against finite differences of the gradient
    grad = lambda v: torch.autograd.grad(loss(v.requires_grad_(True)), v)[0]  # noqa: E731
    h, k = 1e-5, 3
    e = torch.zeros_like(flat)
    e[k] = h
    torch.testing.assert_close((grad(flat + e) - grad(flat - e)) / (2 * h), exact[k], rtol=1e-5, atol=1e-8)
    eig = torch.linalg.eigvalsh(exact)
    result = analyze(net, x, y, task=task, top_k=1, eigen_iters=300, tol=1e-9, trace_iters=200,
                     density_iters=flat.numel())
    assert result.num_params == flat.numel()  # fc2's bias (no effect on the prediction) is left out
    assert result.top_eigenvalues[0] == pytest.approx(float(eig[eig.abs().argmax()]), rel=1e-5)
    assert max(result.density_eigen[0]) == pytest.approx(float(eig.max()), rel=1e-6, abs=1e-9)
    assert min(result.density_eigen[0]) == pytest.approx(float(eig.min()), rel=1e-6, abs=1e-9)
    # Hutchinson: within 5 standard errors of the exact trace
    offdiag = exact - torch.diag(torch.diag(exact))
    stderr = float(torch.sqrt(2 * (offdiag ** 2).sum() / len(result.trace_samples)))
    assert abs(result.trace - float(torch.trace(exact))) <= 5 * stderr + 1e-9
    assert all(p.requires_grad for p in net.parameters())  # restored


# ------------------------------------------------------------------------------- meta-learning

def _vdp_subset(dtype=torch.float64):
    data = load_dataset("VanDerPol")
    x_tr, y_tr, x_val, y_val = data.split(0.1, 0)
    return x_tr[:240], y_tr[:240], x_val[:60], y_val[:60]


@pytest.mark.parametrize("base,n,noise", [("sin", 2, 0.1), ("elu", 3, 0.0), ("tanh", 1, 0.1)])
def test_vanderpol_fast_meta_gradient_matches_reference(base, n, noise):
    results = {}
    for impl in ("reference", "fast"):
        cfg = MetaConfig(dataset="VanDerPol", impl=impl, activation=base, n_activations=n, inner_hidden_size=9,
                         outer_hidden_size=6, inner_batch_size=60, epochs=2, noise=noise)
        learner = MetaLearner(cfg, *_vdp_subset(), 2, dtype=torch.float64)
        results[impl] = learner.meta_gradient()[:2]
    (loss_ref, grads_ref), (loss_fast, grads_fast) = results["reference"], results["fast"]
    assert abs(loss_fast - loss_ref) <= 1e-4 * abs(loss_ref)
    for name, g in grads_ref.items():
        assert g.abs().min() > 0, f"a zero meta-gradient element in {name}: the comparison would prove little"
        assert float(((grads_fast[name] - g).abs() / g.abs()).max()) <= 1e-4, name


@pytest.mark.parametrize("impl", ["reference", "fast"])
def test_hnn_meta_gradient_against_finite_differences_of_the_meta_loss(impl):
    """The exact unrolled second-order meta-gradient of the HNN (both paths) equals central
    differences of the meta-loss in the activation weights (noise off, so the meta-loss is a
    deterministic function of phi for a fixed seed)."""
    data = load_dataset("HenonHeiles")
    split = [t[:120] for t in data.split(0.1, 0)]

    def learner(phi=None):
        cfg = MetaConfig(dataset="HenonHeiles", activation="tanh", n_activations=2, inner_hidden_size=6,
                         outer_hidden_size=4, inner_batch_size=40, epochs=2, noise=0.0, inner_lr=0.05, impl=impl)
        m = MetaLearner(cfg, *split, 1, dtype=torch.float64)
        if phi is not None:
            with torch.no_grad():
                for k in m.phi:
                    m.phi[k].copy_(phi[k])
        return m

    base = learner()
    assert base.cfg.impl == impl
    loss, grads, _, _ = base.meta_gradient()
    phi0 = {k: v.detach().clone() for k, v in base.phi.items()}
    h = 1e-6
    checked = 0
    for name, index in (("w1", (0, 1)), ("b1", (1, 2)), ("w2", (1, 0)), ("w1", (1, 3))):
        plus, minus = ({k: v.clone() for k, v in phi0.items()} for _ in range(2))
        plus[name][index] += h
        minus[name][index] -= h
        numeric = (learner(plus).meta_gradient()[0] - learner(minus).meta_gradient()[0]) / (2 * h)
        assert float(grads[name][index]) == pytest.approx(numeric, rel=1e-4, abs=1e-9)
        checked += abs(numeric) > 1e-6
    assert checked >= 3
    assert float(grads["b2"].abs().max()) == 0.0  # g's output bias does not change f'


def test_impl_auto_resolves_per_task_and_is_recorded():
    assert MetaConfig(dataset="MNIST1D").validate().impl == "fast"
    assert MetaConfig(dataset="VanDerPol").validate().impl == "fast"
    assert MetaConfig(dataset="HenonHeiles").validate().impl == "fast"
    assert MetaConfig(dataset="HenonHeiles", impl="reference").validate().impl == "reference"


# ----------------------------------------------------------------------------------- forecasts

class TrueField(torch.nn.Module):
    """The true van der Pol field as a 'network' (scale != 1: a wrong one)."""

    def __init__(self, scale=1.0):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(scale, dtype=torch.float64))

    def forward(self, z):
        return self.scale * dynamics.vanderpol_field(z)


class Growth(torch.nn.Module):
    """z' = 5 z: every forecast leaves the escape radius (then overflows to inf and NaN)."""

    def forward(self, z):
        return 5 * z


def test_forecast_metrics_of_exact_and_wrong_fields():
    vdp, hh = load_dataset("VanDerPol").with_rollouts(300, 6), load_dataset("HenonHeiles").with_rollouts(300, 6)
    exact = get_task("vanderpol").validation_metrics(TrueField(), vdp)
    assert exact["rollout_mse"] < 1e-20 and exact["rollout_diverged"] == 0
    wrong = get_task("vanderpol").validation_metrics(TrueField(1.3), vdp)
    assert wrong["rollout_mse"] > 1e-2 and wrong["rollout_diverged"] == 0
    # time reversed: orbits outside the (now repelling) limit cycle escape, those inside fall to the origin
    reversed_ = get_task("vanderpol").validation_metrics(TrueField(-3.0), vdp)
    assert 0 < reversed_["rollout_diverged"] < 6 and np.isfinite(reversed_["rollout_mse"])
    blowup = get_task("vanderpol").validation_metrics(Growth(), vdp)
    assert blowup["rollout_diverged"] == 6 and np.isnan(blowup["rollout_mse"])
    hnn = get_task("hnn")
    true_h = TrueHamiltonian().double()
    metrics = hnn.validation_metrics(true_h, hh)
    # (1e-14, not 0: the autograd gradient of H rounds differently from the written-out field)
    assert metrics["rollout_mse"] < 1e-12 and metrics["energy_drift"] < 1e-8 and metrics["rollout_diverged"] == 0
    # the forecast API: one state in, (steps + 1, d) out, starting at the state
    z0 = hh.trajectories_test[0, 0].numpy()
    path = get_task("vanderpol").forecast(TrueField(), np.zeros(2), 5)  # the origin is a fixed point
    assert path.shape == (6, 2) and np.all(path == 0)
    path = hnn.forecast(true_h, z0, 300)
    np.testing.assert_allclose(path, hh.trajectories_test[0].numpy(), atol=1e-12)


def test_plot_forecast_writes_a_png(tmp_path):
    truth = load_dataset("VanDerPol").trajectories_test[0].numpy()
    forecast = get_task("vanderpol").forecast(TrueField(1.1), truth[0], 1000)
    path = plot_forecast(truth, {"pure": forecast, "diverse": forecast[:500]}, tmp_path / "f.png", "van der Pol",
                         state_names=("x", "v"))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -------------------------------------------------------------------------------- the commands

def _act_file(folder, dataset, base="sin", n=2):
    acts = ActivationSet.from_tensors(base, default_init(n, 6, torch.Generator().manual_seed(0)))
    return write_activation_files(folder, f"{dataset}_{base}", acts, {"dataset": dataset})["npz"]


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_hnn_refuses_elu(tmp_path, capsys):
    common = ["metalearn", "--dataset", "HenonHeiles", "--steps", "1", "--output_folder", str(tmp_path)]
    assert cli.main([*common, "--impl", "fast", "--activation", "elu"]) == 2
    assert "smooth" in _one_error_line(capsys)
    elu = _act_file(tmp_path, "HenonHeiles", "elu")
    assert cli.main(["validate", "--act_path", str(elu), "--runs", "1"]) == 2
    assert "smooth" in _one_error_line(capsys)
    # refused before anything ran
    assert not list(tmp_path.glob("*activations*")) and not (tmp_path / "validation.parquet").exists()


@pytest.mark.parametrize("flag,value", [("--rollout_steps", "0"), ("--rollout_trajectories", "-2"),
                                        ("--rollout_steps", "1001"), ("--rollout_trajectories", "51")])
def test_bad_rollout_flags_exit_2(tmp_path, capsys, flag, value):
    npz = _act_file(tmp_path, "VanDerPol")
    assert cli.main(["validate", "--act_path", str(npz), "--runs", "1", "--epochs", "1", flag, value]) == 2
    assert flag in _one_error_line(capsys)
    assert not (tmp_path / "validation.parquet").exists()


def test_rollout_limits_are_checked_in_the_library_too():
    from dnn_search.errors import UserError
    data = load_dataset("VanDerPol")
    for steps, trajectories in ((0, None), (None, 0), (1001, None), (None, 51)):
        with pytest.raises(UserError, match="--rollout_"):
            data.with_rollouts(steps, trajectories)
    assert data.with_rollouts(10, 3).trajectories_test.shape == (3, 11, 2)
    assert data.with_rollouts().trajectories_test.shape == (50, 1001, 2)


def test_search_space_refuses_elu_for_the_hnn(tmp_path):
    from dnn_search.errors import UserError
    from dnn_search.search.space import from_dict
    with pytest.raises(UserError, match="smooth"):
        from_dict({"fixed": {"dataset": "HenonHeiles", "activation": "elu"}})


@pytest.mark.parametrize("name", ["vanderpol", "henonheiles", "vanderpol_smoke", "henonheiles_smoke"])
def test_search_space_files(name):
    from dnn_search.search.space import load_space
    from pathlib import Path
    space = load_space(Path(__file__).resolve().parents[1] / "search_spaces" / f"{name}.yaml")
    assert (space.metric, space.mode, space.scheduler.type) == ("heldout_mse", "min", "asha")
    assert space.pipeline.datasets == [space.fixed["dataset"]]
    if "smoke" not in name:
        assert space.fixed["inner_hidden_size"] == 100 and space.fixed["outer_hidden_size"] == 50
        assert space.fixed["steps"] == 100 and space.params["n_activations"].choices == [1, 2]


def test_dataset_entries_say_whether_they_need_local_files():
    from dnn_search.tasks import dataset_entry
    assert {d: dataset_entry(d).needs_data_path for d in ("MNIST1D", "MNIST", "CIFAR", "VanDerPol", "HenonHeiles")} \
        == {"MNIST1D": False, "MNIST": True, "CIFAR": True, "VanDerPol": False, "HenonHeiles": False}


@pytest.mark.parametrize("dataset", ["VanDerPol", "HenonHeiles"])
def test_metalearn_validate_hessian_end_to_end(dataset, tmp_path, capsys):
    out = tmp_path / "acts"
    assert cli.main(["metalearn", "--dataset", dataset, "--inner_hidden_size", "8", "--outer_hidden_size", "4",
                     "--epochs", "1", "--inner_batch_size", "1000", "--steps", "2", "--n_activations", "2",
                     "--activation", "tanh", "--save_curve", "--output_folder", str(out)]) == 0
    meta = json.loads(next(out.glob("*.json")).read_text())
    assert meta["config"]["impl"] == "fast"  # auto: both tasks have a fast path
    assert "final_heldout_mse" in meta
    npz = next(out.glob("*.npz"))
    assert cli.main(["validate", "--act_path", str(npz), "--validation_mode", "all", "--runs", "1",
                     "--epochs", "1", "--inner_hidden_size", "8", "--val_fraction", "0.1", "--save_model",
                     "--rollout_steps", "50", "--rollout_trajectories", "4"]) == 0
    table = pd.read_parquet(out / "validation.parquet")
    columns = {"test_mse", "val_mse", "rollout_mse", "rollout_diverged"}
    assert columns <= set(table.columns) and "test_accuracy" not in table.columns
    assert ("energy_drift" in table.columns) == (dataset == "HenonHeiles")
    # the standard baselines a task can train with: only the smooth ones for the HNN (it needs f'')
    standard = ({"std:gelu", "std:silu", "std:tanh"} if dataset == "HenonHeiles"
                else {"std:relu", "std:gelu", "std:silu", "std:tanh", "std:elu"})
    assert set(table["mode"]) == {"pure", "single:1", "single:2", "diverse", *standard}
    assert np.isfinite(table["test_mse"]).all() and (table["rollout_diverged"] <= 4).all()
    model = out / "models" / f"{dataset}_diverse_seed0.pt"
    assert cli.main(["hessian", "--model_path", str(model), "--num_samples", "100", "--iters", "5",
                     "--top_k", "1"]) == 0
    record = json.loads((out / "models" / f"{dataset}_diverse_seed0_hessian.json").read_text())
    assert record["dataset"] == dataset and np.isfinite(record["trace"])
    # activations learned on one task, validated on another: allowed, with a one-line note
    capsys.readouterr()
    other = "HenonHeiles" if dataset == "VanDerPol" else "VanDerPol"
    assert cli.main(["validate", "--act_path", str(npz), "--dataset", other, "--validation_mode", "pure",
                     "--runs", "1", "--epochs", "1", "--inner_hidden_size", "8", "--rollout_steps", "5",
                     "--rollout_trajectories", "2", "--output_folder", str(tmp_path / "cross")]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and dataset in notes[0] and other in notes[0]
