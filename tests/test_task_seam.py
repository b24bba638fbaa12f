"""The task seam holds a task that is not classification, defined and registered only here.

ToySine is a regression task: y = sin(3x) on x ~ U(-1, 1), mean squared error, direction min. Nothing
in the package knows it, yet meta-learning (both implementations), validation and Hessian analysis
run on it through the registries, and report its metric under its own names (heldout_mse,
test_mse, val_mse). It also declares a validation metric with a name no module knows (max_error):
it reaches validation.parquet, summary.md and the report only because the task declares it.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.func import functional_call

from dnn_search import jobs
from dnn_search.activations import ActivationSet, base_derivatives, base_names, default_init, get_base
from dnn_search.actfile import read_activation_file, write_activation_files
from dnn_search.data import Dataset, load_dataset
from dnn_search.errors import UserError
from dnn_search.hessian import analyze
from dnn_search.metrics import Metric
from dnn_search.metalearn import MetaConfig, MetaLearner
from dnn_search.tasks import Task, dataset_names, get_task
from dnn_search.tasks.registry import DATASETS, TASKS, DatasetEntry
from dnn_search.validation import ValidationConfig, run_mode


class ToySine(Task):
    name = "toy_sine"
    primary_metric = "mse"
    metrics = (Metric("mse", "min", "mean squared error", log=True),)
    extra_metrics = (Metric("max_error", "min", "largest absolute error on test", digits=3, detail=True),)

    def output_size(self, data) -> int:
        return data.y_train.shape[1]

    def loss(self, prediction, y):
        return ((prediction - y) ** 2).mean()

    def output_loss_and_grad(self, out, y):
        diff = out - y
        return (diff * diff).mean(), 2 * diff / diff.numel()

    def metric_sums(self, prediction, y):
        return {"mse": float(((prediction - y) ** 2).mean(1).sum())}

    def validation_metrics(self, net, data, device="cpu"):
        with torch.no_grad():
            return {"max_error": float((self.predict(net, data.x_test) - data.y_test).abs().max())}

    def figures(self, net, data, folder):
        """A figure per trained network: here just its predictions on the test inputs, as text."""
        folder.mkdir(parents=True, exist_ok=True)
        with torch.no_grad():
            prediction = self.predict(net, data.x_test)
        path = folder / "fit.txt"
        np.savetxt(path, torch.cat([data.x_test, data.y_test, prediction], 1).numpy())
        return {"fit": path}


class WrongSign(ToySine):
    """A deliberately broken hand-written gradient: the comparison below must catch it."""

    def output_loss_and_grad(self, out, y):
        loss, d_out = super().output_loss_and_grad(out, y)
        return loss, -d_out


class SmoothOnly(ToySine):
    """Like a Hamiltonian network: its inner gradient would use f'', and it needs a smooth base."""

    inner_gradient_order = 2
    requires_smooth_base = True


def load_toy_sine(data_path=None, n_train=240, n_test=80):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n_train + n_test, 1, generator=g) * 2 - 1
    y = torch.sin(3 * x)
    return Dataset("ToySine", x[:n_train], y[:n_train], x[n_train:], y[n_train:], task=ToySine.name)


@pytest.fixture(autouse=True)
def toy_task(monkeypatch):
    monkeypatch.setenv("DNN_SEARCH_COMPILE", "0")
    with TASKS.registered(ToySine.name, ToySine), \
            DATASETS.registered("ToySine", DatasetEntry("ToySine", load_toy_sine, ToySine.name)):
        yield


SIZES = dict(dataset="ToySine", inner_hidden_size=10, outer_hidden_size=6, inner_batch_size=40, epochs=2)


def meta_gradient(impl, dtype, task=None, **overrides):
    data = load_dataset("ToySine")
    cfg = MetaConfig(impl=impl, **{**SIZES, **overrides})
    learner = MetaLearner(cfg, *data.split(0.25, 0), 1, dtype=dtype, task=task)
    loss, grads, _, _ = learner.meta_gradient()
    return loss, grads


def relative_errors(reference, fast):
    (loss_ref, grads_ref), (loss_fast, grads_fast) = reference, fast
    errors = {"meta_loss": abs(loss_fast - loss_ref) / abs(loss_ref)}
    for name, g in grads_ref.items():
        assert g.abs().max() > 0, f"meta-gradient of {name} is zero: the comparison would prove nothing"
        errors[name] = float(((grads_fast[name] - g).abs() / g.abs().clamp_min(1e-30)).max())
    return errors


def test_registries_list_the_toy_task_and_dataset():
    assert "ToySine" in dataset_names() and "MNIST1D" in dataset_names()
    task = get_task("toy_sine")
    assert (task.search_metric, task.search_mode) == ("heldout_mse", "min")
    assert task.columns("test") == {"test_mse": "min"}
    assert get_task("classification").search_metric == "heldout_accuracy"
    assert load_dataset("toysine").task == "toy_sine"


def test_hand_written_gradient_is_the_gradient_of_the_loss():
    data = load_toy_sine()
    g = torch.Generator().manual_seed(1)
    theta = [torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
             for shape in ((5, 1), (5,), (1, 5), (1,))]
    x, y = data.x_train.double(), data.y_train.double()
    task = ToySine()
    loss, grads = task.inner_loss_and_grads(theta, lambda z: (torch.sin(z), torch.cos(z)), x, y)
    out = torch.sin(x @ theta[0].T + theta[1]) @ theta[2].T + theta[3]
    expected = torch.autograd.grad(task.loss(out, y), theta)
    torch.testing.assert_close(loss, task.loss(out, y), rtol=1e-12, atol=0)
    for mine, autograd in zip(grads, expected):
        torch.testing.assert_close(mine, autograd, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("base,n,noise", [("sin", 1, 0.0), ("tanh", 2, 0.1), ("elu", 3, 0.1)])
def test_fast_meta_gradient_matches_reference(dtype, base, n, noise):
    """Meta-loss and every meta-gradient element to 1e-4 relative (measured: ~1e-15 in float64,
    a few 1e-6 in float32)."""
    sizes = dict(activation=base, n_activations=n, noise=noise)
    errors = relative_errors(meta_gradient("reference", dtype, **sizes), meta_gradient("fast", dtype, **sizes))
    assert max(errors.values()) <= 1e-4, errors


def test_a_wrong_hand_written_gradient_is_caught():
    reference = meta_gradient("reference", torch.float64, task=WrongSign())
    broken = meta_gradient("fast", torch.float64, task=WrongSign())
    assert max(relative_errors(reference, broken).values()) > 1e-2


def test_metalearn_job_reports_the_task_metric(tmp_path):
    cfg = MetaConfig(**{**SIZES, "steps": 3, "n_activations": 2, "val_fraction": 0.25})
    written = jobs.metalearn(cfg, runs=1, data_path=None, output_folder=tmp_path, save_curve=True)
    meta = json.loads(written[0]["json"].read_text())
    assert meta["dataset"] == "ToySine"
    curve = np.genfromtxt(written[0]["curve"], delimiter=",", names=True)
    assert "heldout_mse" in curve.dtype.names and "heldout_accuracy" not in curve.dtype.names
    assert meta["best_heldout_mse"] == pytest.approx(curve["heldout_mse"].min(), rel=1e-12)
    assert meta["final_heldout_mse"] == pytest.approx(curve["heldout_mse"][-1], rel=1e-12)
    # The trained inner network beats predicting zero (the targets' mean square is about 0.5).
    assert curve["heldout_mse"][-1] < float((load_toy_sine().y_train ** 2).mean())


def _activation_file(tmp_path, base="sin", n=2):
    acts = ActivationSet.from_tensors(base, default_init(n, 6, torch.Generator().manual_seed(0)))
    return write_activation_files(tmp_path, "toy", acts, {"dataset": "ToySine"})["npz"]


def test_validation_rows_carry_the_task_metrics(tmp_path):
    npz = _activation_file(tmp_path)
    rows = jobs.validate(npz, validation_mode="pure,1,2,diverse", runs=2, epochs=3, lr=0.05, hidden_size=12,
                         val_fraction=0.25, save_curve=True, save_model=True, output_folder=tmp_path, quiet=True)
    assert {r["mode"] for r in rows} == {"pure", "single:1", "single:2", "diverse"}
    for row in rows:
        assert {"test_mse", "val_mse", "curve_mse"} <= set(row)
        assert not {"test_accuracy", "val_accuracy"} & set(row)
        assert np.isfinite(row["test_mse"]) and np.isfinite(row["val_mse"]) and len(row["curve_mse"]) == 3
        assert np.loadtxt(row["figure_fit"]).shape == (80, 3)
    # The library call behind the job: same seed, same numbers.
    result, _ = run_mode(read_activation_file(npz), load_dataset("ToySine"), "diverse", 1,
                         ValidationConfig(epochs=3, lr=0.05, hidden_size=12, val_fraction=0.25))
    diverse = next(r for r in rows if r["mode"] == "diverse" and r["seed"] == 1)
    assert (result["test_mse"], result["val_mse"]) == (diverse["test_mse"], diverse["val_mse"])

    record = jobs.hessian(diverse["model_path"], num_samples=100, top_k=1, iters=20, quiet=True)
    assert record["dataset"] == "ToySine" and np.isfinite(record["trace"])


def test_hessian_is_the_hessian_of_the_task_loss(tmp_path):
    torch.manual_seed(0)
    acts = read_activation_file(_activation_file(tmp_path, "tanh", 1))
    from dnn_search.validation import build_for_mode
    net = build_for_mode("diverse", acts, 1, 1, 4).double()
    data = load_toy_sine()
    x, y = data.x_train[:60].double(), data.y_train[:60].double()
    task = ToySine()
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])

    def loss(v):
        params, start = {}, 0
        for name, shape in zip(names, shapes):
            params[name] = v[start:start + shape.numel()].view(shape)
            start += shape.numel()
        return task.loss(functional_call(net, params, (x,)), y)
    exact = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss, flat))
    result = analyze(net, x, y, task=task, top_k=1, eigen_iters=500, tol=1e-8, density_iters=flat.numel())
    largest = exact[exact.abs().argmax()]
    assert result.top_eigenvalues[0] == pytest.approx(float(largest), rel=1e-4)
    # Lanczos over the whole space: the SLQ nodes are the exact eigenvalues.
    assert max(result.density_eigen[0]) == pytest.approx(float(exact.max()), rel=1e-6, abs=1e-9)


def test_a_task_that_needs_a_smooth_base_refuses_elu():
    data = load_dataset("ToySine")
    for base in ("sin", "tanh"):
        MetaLearner(MetaConfig(**SIZES, activation=base, impl="reference"), *data.split(0.25, 0), 1,
                    task=SmoothOnly())
    with pytest.raises(UserError, match="smooth"):
        MetaLearner(MetaConfig(**SIZES, activation="elu", impl="reference"), *data.split(0.25, 0), 1,
                    task=SmoothOnly())
    # The fused kernel stops at f': such a task cannot silently run a wrong fast path.
    with pytest.raises(UserError, match="--impl reference"):
        MetaLearner(MetaConfig(**SIZES, activation="sin", impl="fast"), *data.split(0.25, 0), 1, task=SmoothOnly())


@pytest.mark.parametrize("name", ["sin", "tanh", "elu"])
def test_base_derivatives_are_the_derivatives_of_the_value(name):
    x = torch.linspace(-3, 3, 61, dtype=torch.float64)
    x = x[x.abs() > 1e-3]  # elu's higher derivatives jump at 0
    values = base_derivatives(name, x, order=3)
    assert torch.equal(values[0], get_base(name).value(x)) or name == "elu"
    for k in range(3):
        xs = x.clone().requires_grad_(True)
        (d,) = torch.autograd.grad(base_derivatives(name, xs, order=3)[k].sum(), xs)
        torch.testing.assert_close(d, values[k + 1], rtol=1e-12, atol=1e-12)
    assert set(base_names()) >= {"sin", "tanh", "elu"}
    assert get_base(name).smooth == (name != "elu")


def test_held_out_split_takes_whole_trajectories():
    g = torch.Generator().manual_seed(0)
    ids = torch.arange(20).repeat_interleave(5)[torch.randperm(100, generator=g)]
    x = torch.cat([ids[:, None].float(), torch.randn(100, 1, generator=g)], 1)
    data = Dataset("traj", x, torch.randn(100, 2, generator=g), x[:10], torch.randn(10, 2), task=ToySine.name,
                   traj_train=ids)
    x_tr, y_tr, x_val, y_val = data.split(0.25, seed=3)
    train_ids, val_ids = set(x_tr[:, 0].tolist()), set(x_val[:, 0].tolist())
    assert len(val_ids) == 5 and not train_ids & val_ids and len(x_val) == 25 and len(y_tr) == 75
    assert torch.equal(data.split(0.25, seed=3)[2], x_val)  # seeded
    assert data.split(0.25, seed=4)[2][:, 0].unique().tolist() != sorted(val_ids)


def test_summary_uses_the_task_metric_and_its_direction(tmp_path):
    """summary.md of the toy task's validation: the table shows test mse (not accuracy), and every
    "best" is the LOWEST mean (of the validation split's mse), because the task says mse is minimised."""
    import pandas as pd

    from dnn_search.results.summary import summary_markdown
    npz = _activation_file(tmp_path)
    rows = jobs.validate(npz, validation_mode="all", runs=3, epochs=2, lr=0.05, hidden_size=12,
                         output_folder=tmp_path, quiet=True)
    table = pd.DataFrame([{**r, "trial_id": "T", "dataset": "ToySine"} for r in rows])
    text = summary_markdown("toy", table, None, pd.DataFrame({"trial_id": ["T"], "n_activations": [2]}))
    assert "test mse" in text and "accuracy" not in text and "lowest mean mse" in text
    means = table.groupby("mode")["val_mse"].mean()
    best_single = means[["single:1", "single:2"]].idxmin()
    line = next(ln for ln in text.splitlines() if ln.startswith("| ToySine | T | 2 |"))
    assert f"({best_single})" in line
    assert f"{means[best_single]:.4f}" in line


def test_a_declared_validation_metric_reaches_the_summary_and_the_report(tmp_path):
    """The toy task's max_error (a name no module knows) is declared once, in ToySine.extra_metrics: the
    real validation job writes it to validation.parquet, and the real summary and report writers show
    it (its label from the declaration, its value with the declared 3 digits) in their detail tables."""
    import re
    import sys
    from pathlib import Path

    import pandas as pd

    sys.path.insert(0, str(Path(__file__).parent))
    from fixtures_results import build_results

    from dnn_search.results.report import write_report
    from dnn_search.results.summary import write_summary
    from dnn_search.stats import format_mean_std
    folder = build_results(tmp_path, "toy", pipeline=False)
    jobs.validate(_activation_file(tmp_path), validation_mode="pure,1,2,diverse", runs=2, epochs=2, lr=0.05,
                  hidden_size=12, val_fraction=0.25, output_folder=folder, quiet=True)
    written = pd.read_parquet(folder / "validation.parquet")
    assert written["max_error"].notna().all()
    text = write_summary(folder, "toy")
    assert (folder / "summary.md").read_text() == text
    detail = text.split("## Every mode", 1)[1]
    assert "| val mse | test mse | max error | top eigenvalue | trace |" in detail
    shown = format_mean_std(written[written["mode"] == "pure"]["max_error"], 1.0, 3)
    assert re.search(rf"\| pure \| 2 \| [^|]+ \| [^|]+ \| {re.escape(shown)} \|", detail), detail
    page = write_report(folder).read_text(encoding="utf-8")
    every_mode = page.split("Every mode (detail, not used for picks)</h3>", 1)[1].split("</table>", 1)[0]
    assert "<th" in every_mode and "max error</th>" in every_mode
    assert "max error" in page.split("<h2>Summary</h2>", 1)[1]  # summary.md, rendered


def test_task_is_abstract():
    """A task that forgets a required method fails when it is made, not halfway through a search."""
    class NoLoss(Task):
        name = "no_loss"

        def output_size(self, data) -> int:
            return 1

        def metric_sums(self, prediction, y):
            return {}
    with pytest.raises(TypeError, match="loss"):
        NoLoss()
    ToySine()  # everything required is there
