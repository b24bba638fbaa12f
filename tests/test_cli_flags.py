"""`dnn-search metalearn` flags come from MetaConfig: same names, defaults, help and checks."""
from __future__ import annotations

import dataclasses

import pytest

from dnn_search.cli import build_parser, main
from dnn_search.metalearn import MetaConfig


def _metalearn_parser():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices["metalearn"]


def test_every_field_is_a_flag_with_its_default_and_help():
    parser = _metalearn_parser()
    actions = {a.dest: a for a in parser._actions}
    for f in dataclasses.fields(MetaConfig):
        assert f"--{f.name}" in actions[f.name].option_strings
        assert actions[f.name].default == f.default
        assert f.metadata["help"] in actions[f.name].help
    args = parser.parse_args([])
    assert MetaConfig.from_dict(vars(args)) == MetaConfig()


def test_flags_parse_to_the_config():
    args = _metalearn_parser().parse_args(["--n_activations", "3", "--inner_lr", "0.05", "--activation", "tanh",
                                           "--dataset", "mnist-1d", "--impl", "reference"])
    cfg = MetaConfig.from_dict(vars(args)).validate()
    assert (cfg.n_activations, cfg.inner_lr, cfg.activation, cfg.impl) == (3, 0.05, "tanh", "reference")


@pytest.mark.parametrize("flag,value,message", [
    ("--n_activations", "0", "must be a positive integer, got '0'"),
    ("--steps", "-3", "must be a positive integer, got '-3'"),
    ("--epochs", "1.5", "expected an integer, got '1.5'"),
    ("--inner_lr", "0", "must be a positive number"),
    ("--outer_lr", "nan", "must be a positive number"),
    ("--inner_mu", "1", "must be in [0, 1)"),
    ("--noise", "-0.1", "must be in [0, 1)"),
    ("--activation", "relu", "must be one of sin, tanh, elu"),
    ("--dataset", "SVHN", "must be one of MNIST1D"),
    ("--impl", "turbo", "must be one of fast, reference"),
    ("--runs", "0", "must be a positive integer"),
])
def test_bad_values_exit_2_with_one_clear_line(capsys, flag, value, message):
    assert main(["metalearn", flag, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0] and message in err[0], err


def test_shared_positive_int_type_rejects_zero(capsys):
    assert main(["report", "x", "--top", "0"]) == 2
    assert "must be a positive integer" in capsys.readouterr().err


def test_help_lists_the_choices(capsys):
    assert main(["metalearn", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "MNIST1D, MNIST, CIFAR" in out and "sin, tanh, elu" in out and "outer heavy-ball momentum" in out


def test_validate_val_fraction_adds_val_columns(tmp_path, monkeypatch):
    import pandas as pd
    import torch

    from dnn_search.activations import ActivationSet, default_init
    from dnn_search.actfile import write_activation_files
    monkeypatch.setenv("DNN_SEARCH_COMPILE", "0")
    acts = ActivationSet.from_tensors("sin", default_init(2, 4, torch.Generator().manual_seed(0)))
    npz = write_activation_files(tmp_path, "acts", acts, {"dataset": "MNIST1D"})["npz"]
    argv = ["validate", "--act_path", str(npz), "--runs", "1", "--epochs", "1", "--validation_mode", "diverse",
            "--inner_hidden_size", "16", "--output_folder", str(tmp_path / "out")]
    assert main([*argv, "--val_fraction", "0.2"]) == 0
    table = pd.read_parquet(tmp_path / "out" / "validation.parquet")
    assert {"test_accuracy", "test_loss", "val_accuracy", "val_loss"} <= set(table.columns)
    assert table["val_accuracy"].between(0, 1).all()
    assert main([*argv, "--val_fraction", "1"]) == 2
