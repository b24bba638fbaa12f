"""The science commands end to end, and every bad input answered with one line and exit 2."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dnn_search.activations import ActivationSet, default_init
from dnn_search.actfile import write_activation_files
from dnn_search.cli import main

ENV = {**os.environ, "DNN_SEARCH_COMPILE": "0"}


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "dnn_search", *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=600)


@pytest.fixture(autouse=True)
def eager(monkeypatch):
    monkeypatch.setenv("DNN_SEARCH_COMPILE", "0")


@pytest.mark.slow
def test_metalearn_validate_hessian_end_to_end(tmp_path):
    out = tmp_path / "run"
    done = run_cli("metalearn", "--steps", 2, "--n_activations", 2, "--inner_hidden_size", 40,
                   "--outer_hidden_size", 10, "--epochs", 1, "--output_folder", out, "--save_curve", "--save_model")
    assert done.returncode == 0, done.stderr
    txt = list(out.glob("*_activations_*.txt"))
    assert len(txt) == 1
    stem = txt[0].name[:-4]
    assert stem == "MNIST1D_sin_2_cpu_activations_start_seed_0_inner_lr_0.01_outer_lr_0.4_steps_2_run_0"
    grid = np.loadtxt(txt[0])
    assert grid.shape == (2, 100)
    with np.load(out / f"{stem}.npz", allow_pickle=False) as npz:
        assert npz["w1"].shape == (2, 10) and npz["b2"].shape == (2,)
    meta = json.loads((out / f"{stem}.json").read_text())
    assert meta["config"]["n_activations"] == 2 and meta["steps_done"] == 2
    curve = pd.read_csv(out / f"{stem}_curve.csv")
    assert list(curve["step"]) == [1, 2] and {"grad_norm_1", "grad_norm_2", "heldout_accuracy"} <= set(curve)

    for source, folder in ((txt[0], tmp_path / "val_txt"), (out / f"{stem}.npz", tmp_path / "val_npz")):
        done = run_cli("validate", "--act_path", source, "--validation_mode", "pure,std:relu,1,2,diverse", "--runs", 2,
                       "--epochs", 1, "--output_folder", folder, "--save_model")
        assert done.returncode == 0, done.stderr
        table = pd.read_parquet(folder / "validation.parquet")
        assert sorted(set(table["mode"])) == ["diverse", "pure", "single:1", "single:2", "std:relu"]
        assert len(table) == 10 and table["test_accuracy"].between(0, 1).all()
        assert table["val_accuracy"].between(0, 1).all() and set(table["optimizer"]) == {"sgd"}
        assert "diverse" in done.stdout and "±" in done.stdout
    # Pure is the same network whichever file it came with.
    pure = [pd.read_parquet(f / "validation.parquet").query("mode == 'pure'")["test_accuracy"].tolist()
            for f in (tmp_path / "val_txt", tmp_path / "val_npz")]
    assert pure[0] == pure[1]

    model = tmp_path / "val_npz" / "models" / "MNIST1D_diverse_seed0.pt"
    spec = json.loads(model.with_suffix(".json").read_text())
    # The validation network is the paper's D -> 200 -> C, not the meta-learning classifier (40).
    assert spec["hidden_size"] == 200 and spec["kind"] == "exact" and spec["mode"] == "diverse"
    done = run_cli("hessian", "--model_path", model, "--num_samples", 200, "--iters", 20)
    assert done.returncode == 0, done.stderr
    record = json.loads((model.parent / "MNIST1D_diverse_seed0_hessian.json").read_text())
    assert len(record["top_eigenvalues"]) == 3 and record["top_eigenvalues"][0] > 0
    assert record["trace"] > 0 and len(record["density_eigen"][0]) == len(record["density_weight"][0])
    assert (model.parent / "MNIST1D_diverse_seed0_density.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def write_acts(folder: Path, n=2, ho=5) -> Path:
    acts = ActivationSet.from_tensors("sin", default_init(n, ho, torch.Generator().manual_seed(0)))
    return write_activation_files(folder, "acts", acts, {"dataset": "MNIST1D"})["npz"]


def expect_user_error(capsys, argv, fragment, folder: Path | None = None):
    before = sorted(folder.rglob("*")) if folder and folder.exists() else []
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert fragment.lower() in err[0].lower(), err[0]
    if folder is not None:
        after = sorted(folder.rglob("*")) if folder.exists() else []
        assert after == before, "a failed command left files behind"
    return err[0]


@pytest.mark.parametrize("content,fragment", [
    ("", "empty"), ("1 2 x\n", "numeric"), ("1 2 3\n4 5\n", "line 2 has 2 values"), ("1 nan 3\n", "nan"),
    ("1 inf 3\n", "inf"), ("1\n2\n", "at least 2 samples"),
])
def test_bad_activation_text_files(tmp_path, capsys, content, fragment):
    bad = tmp_path / "acts" / "MNIST1D_sin_2_cpu_activations_start_seed_0_inner_lr_0.01_outer_lr_0.4_steps_2_run_0.txt"
    bad.parent.mkdir()
    bad.write_text(content)
    expect_user_error(capsys, ["validate", "--act_path", bad, "--output_folder", tmp_path / "out"], fragment,
                      tmp_path / "out")


def test_bad_npz_files(tmp_path, capsys):
    np.savez(tmp_path / "missing.npz", w1=np.zeros((2, 3)), b1=np.zeros((2, 3)), base=np.array("sin"))
    expect_user_error(capsys, ["validate", "--act_path", tmp_path / "missing.npz"], "w2")
    np.savez(tmp_path / "shape.npz", w1=np.zeros((2, 3)), b1=np.zeros((2, 4)), w2=np.zeros((2, 3)),
             b2=np.zeros(2), base=np.array("sin"))
    expect_user_error(capsys, ["validate", "--act_path", tmp_path / "shape.npz"], "shape")


def test_bad_choices_and_numbers(tmp_path, capsys):
    act = write_acts(tmp_path / "a")
    out = tmp_path / "out"
    expect_user_error(capsys, ["validate", "--act_path", act, "--dataset", "FASHION", "--output_folder", out],
                      "unknown dataset", out)
    expect_user_error(capsys, ["validate", "--act_path", act, "--validation_mode", "weird", "--output_folder", out],
                      "unknown validation mode", out)
    expect_user_error(capsys, ["validate", "--act_path", act, "--validation_mode", "3", "--output_folder", out],
                      "has 2 activation", out)
    expect_user_error(capsys, ["validate", "--act_path", act, "--dataset", "MNIST", "--data_path", tmp_path,
                               "--output_folder", out], "train-images-idx3-ubyte", out)
    expect_user_error(capsys, ["validate", "--act_path", act, "--dataset", "CIFAR", "--data_path", tmp_path,
                               "--output_folder", out], "data_batch_1.bin", out)
    expect_user_error(capsys, ["validate", "--act_path", act, "--activation", "relu", "--output_folder", out],
                      "unknown base activation", out)
    for argv, fragment in [(["--activation", "relu"], "--activation must be one of sin, tanh, elu"),
                           (["--n_activations", 0], "n_activations"), (["--n_activations", 201], "n_activations"),
                           (["--inner_lr", 0], "inner_lr"), (["--outer_lr", -0.1], "outer_lr"),
                           (["--inner_batch_size", 0], "inner_batch_size"), (["--epochs", 0], "epochs"),
                           (["--inner_hidden_size", -1], "inner_hidden_size"), (["--dataset", "X"], "--dataset must be one of"),
                           (["--use_gpu"] if not torch.cuda.is_available() else ["--gpu_no", 99], "cuda")]:
        expect_user_error(capsys, ["metalearn", "--output_folder", out, *argv], fragment, out)


def test_unwritable_output_folder(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    expect_user_error(capsys, ["metalearn", "--output_folder", blocker / "sub"], "cannot write")
    expect_user_error(capsys, ["validate", "--act_path", write_acts(tmp_path / "a"), "--output_folder", blocker],
                      "cannot write")


def test_model_file_checks(tmp_path, capsys):
    from dnn_search.models import build_net
    net = build_net(40, 20, 10, "sin")
    torch.save(net.state_dict(), tmp_path / "m.pt")
    spec = {**net.spec.to_dict(), "hidden_size": 30, "mode": "pure", "dataset": "MNIST1D"}
    (tmp_path / "m.json").write_text(json.dumps(spec))
    expect_user_error(capsys, ["hessian", "--model_path", tmp_path / "m.pt"], "does not match")
    expect_user_error(capsys, ["hessian", "--model_path", tmp_path / "none.pt"], "not found")


class _Exploit:
    def __reduce__(self):
        return (Path.write_text, (Path(os.environ["EXPLOIT_MARKER"]), "pwned"))


def test_malicious_pickled_model_is_refused_without_running(tmp_path, capsys, monkeypatch):
    from dnn_search.models import build_net
    marker = tmp_path / "marker"
    monkeypatch.setenv("EXPLOIT_MARKER", str(marker))
    net = build_net(40, 20, 10, "sin")
    (tmp_path / "evil.json").write_text(json.dumps({**net.spec.to_dict(), "mode": "pure", "dataset": "MNIST1D"}))
    with open(tmp_path / "evil.pt", "wb") as fh:
        pickle.dump({"fc1.weight": _Exploit()}, fh)
    expect_user_error(capsys, ["hessian", "--model_path", tmp_path / "evil.pt"], "cannot load model")
    assert not marker.exists()
