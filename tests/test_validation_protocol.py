"""The validation protocol of honest comparisons (issue 14): standard activations as baselines, the
validation optimiser as a choice (rmsprop = the meta-learning inner update, exactly), and a held-out
validation split that is never trained on."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dnn_search import jobs
from dnn_search.activations import ActivationSet, default_init, neuron_blocks
from dnn_search.actfile import read_activation_file, write_activation_files
from dnn_search.data import load_dataset
from dnn_search.errors import UserError
from dnn_search.metalearn import MetaConfig, init_classifier, inner_run
from dnn_search.models import build_net
from dnn_search.tasks import get_task
from dnn_search.validation import (STANDARD_MODES, MetaRMSprop, ValidationConfig, build_for_mode, config_for,
                                   make_optimizer, run_mode)

TRUE_FUNCTIONS = {"std:relu": torch.relu, "std:gelu": F.gelu, "std:silu": lambda z: z * torch.sigmoid(z),
                  "std:tanh": torch.tanh, "std:elu": lambda z: torch.where(z > 0, z, torch.expm1(z))}


def _acts(tmp_path, n=2, ho=4, seed=0):
    init = default_init(n, ho, torch.Generator().manual_seed(seed))
    paths = write_activation_files(tmp_path, "acts", ActivationSet.from_tensors("sin", init), {"dataset": "MNIST1D"})
    return read_activation_file(paths["npz"])


@pytest.mark.parametrize("mode", STANDARD_MODES)
def test_standard_modes_are_the_true_functions(tmp_path, mode):
    net = build_for_mode(mode, _acts(tmp_path), 5, 3, 7)
    z = torch.linspace(-6, 6, 7 * 11).reshape(11, 7)
    assert net.spec.kind == "standard"
    # silu and elu are checked against their formulas, the others against the torch functions
    torch.testing.assert_close(net.act(z), TRUE_FUNCTIONS[mode](z), rtol=1e-6, atol=1e-7)


def test_standard_modes_train_end_to_end_on_mnist1d(tmp_path):
    data = load_dataset("MNIST1D")
    cfg = ValidationConfig(epochs=3, lr=0.05, momentum=0.9, hidden_size=64, val_fraction=0.1)
    acts = _acts(tmp_path)
    for mode in STANDARD_MODES:
        result, net = run_mode(acts, data, mode, 0, cfg)
        # chance is 10 %; three epochs of a 40 -> 64 -> 10 network get well above it on both splits
        assert result["test_accuracy"] > 0.25 and result["val_accuracy"] > 0.25, (mode, result)
        assert [c["epoch"] for c in result["curve"]] == [1, 2, 3]
        assert net.spec.standard == mode[len("std:"):]


def test_rmsprop_step_is_the_meta_learning_inner_step():
    """One `rmsprop` validation step on a network with learned activations equals the meta-learner's
    inner step (differentiable RMSprop, v0 = 1, eps outside the root) from the same weights, in float64."""
    torch.manual_seed(0)
    data = load_dataset("MNIST1D")
    x, y = data.x_train[:50].double(), data.y_train[:50]
    n, hidden, ho = 2, 8, 4
    cfg = MetaConfig(n_activations=n, inner_hidden_size=hidden, outer_hidden_size=ho, inner_batch_size=50,
                     epochs=1, noise=0.0, impl="reference", inner_lr=0.03, inner_mu=0.7).validate()
    # activation weights representable in float32, so the validation net's buffers hold them exactly
    phi32 = default_init(n, ho, torch.Generator().manual_seed(1))
    phi = {k: v.double().requires_grad_(True) for k, v in phi32.items()}
    blocks = neuron_blocks(hidden, n)
    theta0 = init_classifier(40, hidden, 10, torch.Generator().manual_seed(2), torch.float64, "cpu")
    _, theta1, _ = inner_run(phi, blocks, cfg, x, y, 10, torch.Generator().manual_seed(2), get_task("classification"))

    net = build_net(40, hidden, 10, "sin", exact=ActivationSet.from_tensors("sin", phi32), neuron_index=blocks).double()
    with torch.no_grad():
        for p, t in zip((net.fc1.weight, net.fc1.bias, net.fc2.weight, net.fc2.bias), theta0):
            p.copy_(t)
    optimizer = make_optimizer("rmsprop", net.parameters(), lr=cfg.inner_lr, momentum=cfg.inner_mu)
    assert isinstance(optimizer, MetaRMSprop)
    loss = F.cross_entropy(net(x), y)
    loss.backward()
    optimizer.step()
    for p, t, t0 in zip((net.fc1.weight, net.fc1.bias, net.fc2.weight, net.fc2.bias), theta1, theta0):
        assert not torch.equal(t, t0)  # the step moved the weights
        torch.testing.assert_close(p.detach(), t, rtol=1e-12, atol=1e-14)
    # torch.optim.RMSprop (v0 = 0, eps inside the root) is a different update: the check above can tell
    other = build_net(40, hidden, 10, "sin", exact=ActivationSet.from_tensors("sin", phi32), neuron_index=blocks).double()
    with torch.no_grad():
        for p, t in zip((other.fc1.weight, other.fc1.bias, other.fc2.weight, other.fc2.bias), theta0):
            p.copy_(t)
    torch_opt = torch.optim.RMSprop(other.parameters(), lr=cfg.inner_lr, alpha=cfg.inner_mu, eps=1e-8)
    F.cross_entropy(other(x), y).backward()
    torch_opt.step()
    assert not torch.allclose(other.fc1.weight, theta1[0], rtol=1e-6, atol=1e-9)


def test_rmsprop_second_moment_starts_at_one():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = MetaRMSprop([p], lr=0.1, mu=0.8)
    p.grad = torch.tensor([0.5, 3.0], dtype=torch.float64)
    opt.step()
    v = 0.8 * 1 + 0.2 * torch.tensor([0.25, 9.0], dtype=torch.float64)
    expected = torch.tensor([1.0, -2.0], dtype=torch.float64) - 0.1 * torch.tensor([0.5, 3.0], dtype=torch.float64) / (v.sqrt() + 1e-8)
    torch.testing.assert_close(p.detach(), expected.double(), rtol=1e-15, atol=0)


def test_optimizer_choice_and_validation_split(tmp_path):
    acts = _acts(tmp_path)
    data = load_dataset("MNIST1D")
    results = {}
    for optimizer in ("sgd", "rmsprop"):
        cfg = config_for({}, epochs=2, lr=0.02, momentum=0.8, hidden_size=16, optimizer=optimizer)
        assert cfg.val_fraction == 0.1  # validation always holds out a split unless told not to
        results[optimizer], _ = run_mode(acts, data, "single:1", 3, cfg)
        assert results[optimizer]["optimizer"] == optimizer
        assert math.isfinite(results[optimizer]["val_accuracy"])
    assert results["sgd"]["test_loss"] != results["rmsprop"]["test_loss"]
    with pytest.raises(UserError, match="optimizer"):
        config_for({}, optimizer="adam")


def test_validate_command_optimizer_and_standard_modes(tmp_path):
    init = default_init(1, 4, torch.Generator().manual_seed(0))
    paths = write_activation_files(tmp_path, "acts", ActivationSet.from_tensors("sin", init), {"dataset": "MNIST1D"})
    rows = jobs.validate(paths["npz"], validation_mode="all", runs=1, epochs=1, lr=0.01, hidden_size=16,
                         optimizer="rmsprop", output_folder=tmp_path, quiet=True)
    modes = [r["mode"] for r in rows]
    assert modes == ["pure", *STANDARD_MODES, "single:1"]  # n=1: no diverse (it would be single:1)
    assert {r["optimizer"] for r in rows} == {"rmsprop"}
    assert all(np.isfinite(r["val_accuracy"]) for r in rows)
    assert [r["kind"] for r in rows] == ["pure", *["standard"] * 5, "exact"]


def test_mode_is_one_value_type_with_one_order():
    """Mode: every spelling the tables hold parses and prints back; its kind, index and word; one order
    for every table and figure (pure, std:* by name, single:k by k, diverse: single:10 after single:2)."""
    from dnn_search.modes import Mode, is_shared, learned_modes, sorted_modes
    texts = ["diverse", "single:10", "std:relu", "single:2", "pure", "std:gelu", "single:1"]
    for text in texts:
        assert str(Mode.parse(text)) == text and Mode.parse(Mode.parse(text)) == Mode.parse(text)
    assert Mode.parse("single:3") == Mode.single(3) and Mode.parse("single:3").index == 3
    assert Mode.parse("std:gelu").name == "gelu" and Mode.parse("std:gelu") == Mode.standard("gelu")
    assert [Mode.parse(t).word for t in ("pure", "std:elu", "single:1", "diverse")] == \
        ["pure", "standard", "homogeneous", "diverse"]
    assert [is_shared(t) for t in ("pure", "std:elu", "single:1", "diverse")] == [True, True, False, False]
    assert sorted_modes(texts + ["pure"]) == ["pure", "std:gelu", "std:relu", "single:1", "single:2", "single:10",
                                              "diverse"]
    assert [str(m) for m in learned_modes(2)] == ["single:1", "single:2", "diverse"]
    assert [str(m) for m in learned_modes(1)] == ["single:1"]
    for bad in ("single:0", "single:x", "single", "std:", "std", "diverse:1", "pure:1", "mix", ""):
        with pytest.raises(ValueError):
            Mode.parse(bad)
