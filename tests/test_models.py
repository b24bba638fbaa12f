"""Networks of validation and Hessian trials: interpolation, modes, rebuilding from a state dict."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dnn_search.activations import ActivationSet, base_value, default_init, neuron_blocks
from dnn_search.actfile import read_activation_file, write_activation_files
from dnn_search.errors import UserError
from dnn_search.models import interpolate_rows, load_net
from dnn_search.validation import build_for_mode, parse_modes


def interpolate(grid_x, grid_y_row, z):
    """One sampled function evaluated at z (its last axis indexes neurons, all using row 0)."""
    grid_y_row = grid_y_row if torch.is_tensor(grid_y_row) else torch.as_tensor(grid_y_row, dtype=z.dtype)
    return interpolate_rows(torch.as_tensor(grid_x, dtype=z.dtype), grid_y_row.to(z.dtype)[None],
                            torch.zeros(z.shape[-1], dtype=torch.long), z)


# ------------------------------------------------------------------------------- interpolation

def test_interpolation_exact_at_grid_points_and_linear_between():
    x = np.linspace(-5, 5, 11)
    y = np.sin(x) * 3 + x ** 2
    at_grid = interpolate(x, y, torch.tensor(x))
    np.testing.assert_allclose(at_grid.numpy(), y, rtol=0, atol=1e-12)
    mid = (x[:-1] + x[1:]) / 2
    np.testing.assert_allclose(interpolate(x, y, torch.tensor(mid)).numpy(), (y[:-1] + y[1:]) / 2,
                               atol=1e-12)


def test_interpolation_matches_np_interp_and_extrapolates_linearly():
    rng = np.random.default_rng(0)
    x = np.sort(rng.uniform(-5, 5, 30))
    y = rng.normal(size=30)
    z = rng.uniform(x[0], x[-1], (7, 9))
    np.testing.assert_allclose(interpolate(x, y, torch.tensor(z)).numpy(), np.interp(z, x, y), atol=1e-12)
    # Beyond the ends: the end segments continue.
    left, right = torch.tensor([x[0] - 2.0]), torch.tensor([x[-1] + 3.0])
    slope_l, slope_r = (y[1] - y[0]) / (x[1] - x[0]), (y[-1] - y[-2]) / (x[-1] - x[-2])
    np.testing.assert_allclose(interpolate(x, y, left).numpy(), [y[0] - 2.0 * slope_l], atol=1e-12)
    np.testing.assert_allclose(interpolate(x, y, right).numpy(), [y[-1] + 3.0 * slope_r], atol=1e-12)


def test_interpolation_keeps_dtype_and_shape_and_accepts_tensors():
    x, y = np.linspace(-5, 5, 100), np.tanh(np.linspace(-5, 5, 100))
    z = torch.randn(4, 5, 6)
    out = interpolate(torch.tensor(x), torch.tensor(y), z)
    assert out.shape == z.shape and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), np.interp(z.numpy(), x, y), atol=1e-6)


def test_interpolation_gradcheck():
    x = np.linspace(-5, 5, 50)
    y = np.sin(x) + 0.3 * np.cos(3 * x)
    # Points away from the knots (the derivative jumps there) and beyond both ends.
    z = torch.tensor([-7.3, -4.93, -1.01, 0.05, 2.47, 4.99, 6.2], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: interpolate(x, y, t), (z,))
    grid_y = torch.tensor(y, requires_grad=True)
    assert torch.autograd.gradcheck(lambda g: interpolate(x, g, z.detach()), (grid_y,))


def make_loaded(tmp_path, n=3, ho=6, exact=True):
    acts = ActivationSet.from_tensors("sin", default_init(n, ho, torch.Generator().manual_seed(5), torch.float64))
    paths = write_activation_files(tmp_path, "acts", acts, {})
    return acts, read_activation_file(paths["npz" if exact else "txt"])


@pytest.mark.parametrize("exact", [True, False])
def test_diverse_gives_each_neuron_its_block_activation(tmp_path, exact):
    acts, loaded = make_loaded(tmp_path, exact=exact)
    hidden = 11  # 3 does not divide 11: blocks of 4, 4, 3
    net = build_for_mode("diverse", loaded, 5, 4, hidden).double()
    z = torch.linspace(-4.3, 4.1, 37, dtype=torch.float64)[:, None].expand(37, hidden).contiguous()
    out = net.act(z).detach().numpy()
    blocks = neuron_blocks(hidden, 3).tolist()
    assert blocks == [0] * 4 + [1] * 4 + [2] * 3
    exact_values = acts.evaluate(z[:, 0].numpy())  # (3, 37)
    for h, block in enumerate(blocks):
        if exact:
            np.testing.assert_allclose(out[:, h], exact_values[block], rtol=1e-6, atol=1e-6)  # float32 buffers
        else:
            expected = np.interp(z[:, 0].numpy(), loaded.grid_x, loaded.grid_y[block])
            np.testing.assert_allclose(out[:, h], expected, rtol=1e-6, atol=1e-6)
            # The interpolant is close to the true function, and differs between blocks.
            np.testing.assert_allclose(out[:, h], exact_values[block], atol=5e-2)
    assert not np.allclose(out[:, 0], out[:, 4]) and not np.allclose(out[:, 4], out[:, 8])


@pytest.mark.parametrize("exact", [True, False])
def test_single_k_uses_activation_k_everywhere(tmp_path, exact):
    acts, loaded = make_loaded(tmp_path, exact=exact)
    net = build_for_mode("single:2", loaded, 5, 4, 7).double()
    z = torch.tensor([[-1.234] * 7, [0.77] * 7], dtype=torch.float64)
    out = net.act(z).detach().numpy()
    expected = acts.evaluate(np.array([-1.234, 0.77]))[1]
    np.testing.assert_allclose(out, np.repeat(expected[:, None], 7, 1), atol=1e-6 if exact else 5e-2)


@pytest.mark.parametrize("exact", [True, False])
def test_pure_is_the_true_base_function(tmp_path, exact):
    _, loaded = make_loaded(tmp_path, exact=exact)
    net = build_for_mode("pure", loaded, 5, 4, 7)
    z = torch.tensor([[0.123456, 3.3, -4.9, 7.5, -9.0, 0.0, 1.5707]], dtype=torch.float32)
    assert net.spec.kind == "pure" and not list(net.act.buffers())[1:]
    torch.testing.assert_close(net.act(z), base_value("sin", z), rtol=0, atol=0)


def test_parse_modes_accepts_original_spellings():
    assert parse_modes("0", 3) == ["diverse"] and parse_modes("false", 3) == ["diverse"]
    assert parse_modes("2", 3) == ["single:2"] and parse_modes("pure", 3) == ["pure"]
    standard = ["std:relu", "std:gelu", "std:silu", "std:tanh", "std:elu"]
    assert parse_modes("all", 2) == ["pure", *standard, "single:1", "single:2", "diverse"]
    assert parse_modes("all", 1) == ["pure", *standard, "single:1"]  # n=1: diverse would be single:1
    assert parse_modes("pure,std:gelu,2", 2) == ["pure", "std:gelu", "single:2"]
    assert parse_modes("std", 1) == standard
    for bad in ("4", "-1", "x", "single:0"):
        with pytest.raises(UserError):
            parse_modes(bad, 3)


@pytest.mark.parametrize("exact", [True, False])
def test_one_activation_diverse_trains_exactly_as_single_1(tmp_path, exact):
    """The pipeline trains an n=1 file's `diverse` network once, as `single:1`: they must be the
    same network, trained to the same bits."""
    from dnn_search.data import Dataset
    from dnn_search.validation import ValidationConfig, run_mode
    _, loaded = make_loaded(tmp_path, n=1, exact=exact)
    g = torch.Generator().manual_seed(0)
    data = Dataset("toy", torch.randn(120, 5, generator=g), torch.randint(0, 4, (120,), generator=g),
                   torch.randn(40, 5, generator=g), torch.randint(0, 4, (40,), generator=g))
    cfg = ValidationConfig(epochs=2, lr=0.05, momentum=0.9, batch_size=30, hidden_size=9)
    diverse, diverse_net = run_mode(loaded, data, "diverse", 3, cfg)
    single, single_net = run_mode(loaded, data, "single:1", 3, cfg)
    assert diverse["test_accuracy"] == single["test_accuracy"] and diverse["test_loss"] == single["test_loss"]
    for (name, a), (_, b) in zip(diverse_net.state_dict().items(), single_net.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("exact", [True, False])
def test_saved_net_rebuilds_from_state_dict_and_spec(tmp_path, exact):
    _, loaded = make_loaded(tmp_path, exact=exact)
    net = build_for_mode("diverse", loaded, 5, 4, 11)
    torch.save(net.state_dict(), tmp_path / "m.pt")
    again = load_net(json.loads(json.dumps(net.spec.to_dict())), tmp_path / "m.pt")
    x = torch.randn(8, 5)
    torch.testing.assert_close(again(x), net(x), rtol=0, atol=0)
