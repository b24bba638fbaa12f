"""Datasets: MNIST-1D generation and cache, MNIST/CIFAR-10 parsing from small files in the real
formats, validation splits, and atomic writes."""
from __future__ import annotations

import gzip
import hashlib
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from dnn_search import data
from dnn_search.atomic import atomic_path, atomic_write_bytes, atomic_write_text
from dnn_search.cache import cache_environment
from dnn_search.data import Dataset, load_dataset, split_validation
from dnn_search.errors import UserError

from conftest import fresh_home, temporary_environment

# sha1 of the float64 training inputs of the published MNIST-1D (first 12 hex digits).
MNIST1D_X_SHA1 = "a1cc2c1f0a16"


# ------------------------------------------------------------------------------------- MNIST-1D

@pytest.fixture(scope="module")
def mnist1d_run(tmp_path_factory):
    """Generate MNIST-1D once from an empty working directory and an empty cache."""
    cwd = tmp_path_factory.mktemp("cwd")
    cache = tmp_path_factory.mktemp("cache")
    old_cwd = os.getcwd()
    os.chdir(cwd)
    try:  # the cache variables as a command sets them (cache.use_cache_dir)
        with temporary_environment(**cache_environment(cache)):
            ds = load_dataset("MNIST1D", None)
    finally:
        os.chdir(old_cwd)
    return ds, cwd, cache


def test_mnist1d_shapes_and_dtypes(mnist1d_run):
    ds = mnist1d_run[0]
    assert ds.name == "MNIST1D"
    assert ds.x_train.shape == (4000, 40) and ds.x_test.shape == (1000, 40)
    assert ds.y_train.shape == (4000,) and ds.y_test.shape == (1000,)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.input_size == 40 and ds.num_classes == 10


def test_mnist1d_writes_nothing_into_cwd_and_caches(mnist1d_run):
    _, cwd, cache = mnist1d_run
    assert os.listdir(cwd) == []
    # no temp file left behind (matplotlib's folder appears if the generator was the first to import it)
    assert set(os.listdir(cache)) - {"matplotlib"} == {data.MNIST1D_FILE}


def test_mnist1d_matches_published_data(mnist1d_run):
    ds, _, cache = mnist1d_run
    with np.load(cache / data.MNIST1D_FILE, allow_pickle=False) as f:
        x = f["x"]
    assert x.dtype == np.float64
    assert hashlib.sha1(x.tobytes()).hexdigest()[:12] == MNIST1D_X_SHA1
    assert torch.equal(ds.x_train, torch.from_numpy(x).float())


def test_mnist1d_cache_round_trip_without_mnist1d_import(mnist1d_run, tmp_path):
    ds, _, cache = mnist1d_run
    # A fresh interpreter must load the cache without importing the slow generator package.
    code = ("import sys; from dnn_search.data import load_dataset; "
            "d = load_dataset('mnist-1d', None); "
            "assert 'mnist1d' not in sys.modules, 'mnist1d imported'; "
            "import torch; torch.save(d.x_test, sys.argv[1])")
    out = tmp_path / "x_test.pt"
    env = {**os.environ, "DNN_SEARCH_CACHE": str(cache)}
    subprocess.run([sys.executable, "-c", code, str(out)], check=True, env=env, cwd=tmp_path)
    assert torch.equal(torch.load(out, weights_only=True), ds.x_test)


def test_mnist1d_data_path_cache_and_corrupt_cache(mnist1d_run, tmp_path, monkeypatch):
    ds, _, cache = mnist1d_run
    monkeypatch.setenv("DNN_SEARCH_CACHE", str(cache))
    # A cache in data_path wins over the default cache ...
    target = tmp_path / data.MNIST1D_FILE
    target.write_bytes((cache / data.MNIST1D_FILE).read_bytes())
    again = load_dataset("mnist1d", tmp_path)
    assert torch.equal(again.x_train, ds.x_train) and torch.equal(again.y_test, ds.y_test)
    # ... and a corrupt one is regenerated (stubbed here: generation itself is tested above).
    target.write_bytes(b"not an npz")
    calls = []
    with np.load(cache / data.MNIST1D_FILE, allow_pickle=False) as f:
        real = dict(f.items())
    monkeypatch.setattr(data, "generate_mnist1d", lambda: calls.append(1) or real)
    monkeypatch.setenv("DNN_SEARCH_CACHE", str(tmp_path / "empty-cache"))
    rebuilt = load_dataset("MNIST-1D", tmp_path)
    assert calls == [1]
    assert torch.equal(rebuilt.x_train, ds.x_train)
    assert data._read_mnist1d_cache(target) is not None  # rewritten in place


def test_mnist1d_generation_keeps_global_rng_state(monkeypatch):
    # Stub the heavy generator: the contract under test is only that global RNG state survives.
    import types
    fake = types.ModuleType("mnist1d.data")
    fake.get_dataset_args = lambda: None

    def make_dataset(args):
        np.random.seed(42)
        return {"x": np.zeros((4000, 40)), "y": np.zeros(4000, int),
                "x_test": np.zeros((1000, 40)), "y_test": np.zeros(1000, int)}
    fake.make_dataset = make_dataset
    monkeypatch.setitem(sys.modules, "mnist1d.data", fake)
    np.random.seed(7)
    expected = np.random.rand()
    np.random.seed(7)
    data.generate_mnist1d()
    assert np.random.rand() == expected


@pytest.mark.parametrize("name,canonical", [("mnist1d", "MNIST1D"), ("MNIST-1D", "MNIST1D"),
                                            ("mnist", "MNIST"), ("CIFAR10", "CIFAR"),
                                            ("cifar-10", "CIFAR"), ("Cifar", "CIFAR")])
def test_dataset_name_aliases(name, canonical):
    assert data.canonical_name(name) == canonical


def test_unknown_dataset_lists_choices():
    with pytest.raises(UserError, match="MNIST1D, MNIST, CIFAR"):
        load_dataset("imagenet", None)


def test_mnist_and_cifar_need_data_path():
    for name in ("MNIST", "CIFAR"):
        with pytest.raises(UserError, match="--data_path"):
            load_dataset(name, None)


# ---------------------------------------------------------------------------------------- MNIST

def idx_bytes(magic: int, array: np.ndarray) -> bytes:
    header = np.array([magic, *array.shape], dtype=">i4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def write_mnist(folder, n_train=20, n_test=10, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"train_images": rng.integers(0, 256, (n_train, 28, 28)),
              "train_labels": np.arange(n_train) % 10,
              "test_images": rng.integers(0, 256, (n_test, 28, 28)),
              "test_labels": (np.arange(n_test) * 3) % 10}
    for key, name in data.MNIST_FILES.items():
        magic = 2051 if "images" in key else 2049
        raw = idx_bytes(magic, arrays[key])
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return arrays


def expected_standardised(train, test):
    train, test = train.reshape(len(train), -1) / 255.0, test.reshape(len(test), -1) / 255.0
    mean, std = train.mean(), train.std()
    return (train - mean) / std, (test - mean) / std


@pytest.mark.parametrize("gz,sub", [(True, ""), (False, ""), (True, "MNIST/raw")])
def test_mnist_parsing(tmp_path, gz, sub):
    arrays = write_mnist(tmp_path / sub if sub else tmp_path, gz=gz)
    ds = load_dataset("MNIST", tmp_path)
    assert ds.name == "MNIST" and ds.input_size == 784 and ds.num_classes == 10
    assert ds.x_train.shape == (20, 784) and ds.x_test.shape == (10, 784)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.y_train.tolist() == arrays["train_labels"].tolist()
    assert ds.y_test.tolist() == arrays["test_labels"].tolist()
    x_tr, x_te = expected_standardised(arrays["train_images"], arrays["test_images"])
    np.testing.assert_allclose(ds.x_train.numpy(), x_tr, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ds.x_test.numpy(), x_te, rtol=1e-5, atol=1e-5)
    assert abs(float(ds.x_train.double().mean())) < 1e-5
    assert abs(float(ds.x_train.double().std(unbiased=False)) - 1) < 1e-5


def test_mnist_missing_files_named(tmp_path):
    with pytest.raises(UserError) as err:
        load_dataset("MNIST", tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message
    for name in data.MNIST_FILES.values():
        assert f"{name}.gz" in message


def test_mnist_one_missing_file(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UserError, match="missing t10k-labels-idx1-ubyte.gz"):
        load_dataset("MNIST", tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "magic", "count", "not-gzip", "truncated-gzip", "label"])
def test_mnist_malformed_file_named(tmp_path, damage):
    write_mnist(tmp_path, gz=True)
    target = tmp_path / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(target.read_bytes())
    if damage == "truncate":
        target.write_bytes(gzip.compress(raw[:-5]))
    elif damage == "magic":
        target.write_bytes(gzip.compress(np.array([2049], ">i4").tobytes() + raw[4:]))
    elif damage == "count":  # 19 images against 20 labels
        target.write_bytes(gzip.compress(idx_bytes(2051, np.zeros((19, 28, 28)))))
    elif damage == "not-gzip":
        target.write_bytes(b"hello, not gzip")
    elif damage == "truncated-gzip":
        target.write_bytes(gzip.compress(raw)[:100])
    elif damage == "label":
        target = tmp_path / "train-labels-idx1-ubyte.gz"
        target.write_bytes(gzip.compress(idx_bytes(2049, np.full(20, 12))))
    with pytest.raises(UserError) as err:
        load_dataset("MNIST", tmp_path)
    assert target.name in str(err.value)


# ------------------------------------------------------------------------------------- CIFAR-10

def write_cifar(folder, per_batch=3, n_test=4, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name, n in [(f, per_batch) for f in data.CIFAR_TRAIN_FILES] + [(data.CIFAR_TEST_FILE, n_test)]:
        labels = rng.integers(0, 10, n)
        pixels = rng.integers(0, 256, (n, 3072))
        records = np.concatenate([labels[:, None], pixels], axis=1).astype(np.uint8)
        (folder / name).write_bytes(records.tobytes())
        batches[name] = (pixels, labels)
    return batches


@pytest.mark.parametrize("sub", ["", "cifar-10-batches-bin"])
def test_cifar_parsing(tmp_path, sub):
    batches = write_cifar(tmp_path / sub if sub else tmp_path)
    ds = load_dataset("CIFAR-10", tmp_path)
    assert ds.name == "CIFAR" and ds.input_size == 3072
    assert ds.x_train.shape == (15, 3072) and ds.x_test.shape == (4, 3072)
    train_pixels = np.concatenate([batches[f][0] for f in data.CIFAR_TRAIN_FILES])
    train_labels = np.concatenate([batches[f][1] for f in data.CIFAR_TRAIN_FILES])
    assert ds.y_train.tolist() == train_labels.tolist()
    assert ds.y_test.tolist() == batches[data.CIFAR_TEST_FILE][1].tolist()
    x_tr, x_te = expected_standardised(train_pixels, batches[data.CIFAR_TEST_FILE][0])
    np.testing.assert_allclose(ds.x_train.numpy(), x_tr, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ds.x_test.numpy(), x_te, rtol=1e-5, atol=1e-5)


def test_cifar_missing_files_named(tmp_path):
    with pytest.raises(UserError) as err:
        load_dataset("CIFAR", tmp_path)
    for name in (*data.CIFAR_TRAIN_FILES, data.CIFAR_TEST_FILE):
        assert name in str(err.value)
    assert str(tmp_path) in str(err.value)


@pytest.mark.parametrize("damage", ["truncate", "empty", "label"])
def test_cifar_malformed_file_named(tmp_path, damage):
    write_cifar(tmp_path)
    target = tmp_path / "data_batch_3.bin"
    raw = target.read_bytes()
    if damage == "truncate":
        target.write_bytes(raw[:-1])
    elif damage == "empty":
        target.write_bytes(b"")
    else:
        target.write_bytes(bytes([200]) + raw[1:])
    with pytest.raises(UserError, match="data_batch_3.bin"):
        load_dataset("CIFAR", tmp_path)


# ------------------------------------------------------------------------------ validation split

def test_split_validation_is_seeded_partition():
    x = torch.arange(100, dtype=torch.float32)[:, None]
    y = torch.arange(100)
    x_tr, y_tr, x_val, y_val = split_validation(x, y, 0.1, seed=3)
    assert len(x_tr) == 90 and len(x_val) == 10
    assert sorted(y_tr.tolist() + y_val.tolist()) == list(range(100))
    assert torch.equal(x_tr[:, 0].long(), y_tr) and torch.equal(x_val[:, 0].long(), y_val)
    again = split_validation(x, y, 0.1, seed=3)
    assert torch.equal(again[3], y_val)
    assert not torch.equal(split_validation(x, y, 0.1, seed=4)[3], y_val)


def test_split_validation_zero_and_bad_fractions():
    x, y = torch.zeros(10, 2), torch.zeros(10, dtype=torch.int64)
    x_tr, y_tr, x_val, y_val = split_validation(x, y, 0.0, seed=0)
    assert len(x_tr) == 10 and len(x_val) == 0 and x_val.shape == (0, 2)
    for bad in (-0.1, 1.0, 1.5, float("nan")):
        with pytest.raises(UserError):
            split_validation(x, y, bad, seed=0)


def test_dataset_converts_dtypes():
    ds = Dataset("toy", np.zeros((4, 3)), np.array([0, 1, 2, 1]), np.zeros((2, 3)), np.array([0, 4]))
    assert ds.x_train.dtype == torch.float32 and ds.y_test.dtype == torch.int64
    assert ds.input_size == 3 and ds.num_classes == 5


# ------------------------------------------------------------------------------------ atomic writes

def test_atomic_writes(tmp_path):
    target = tmp_path / "a" / "b" / "out.txt"
    atomic_write_text(target, "hello")
    assert target.read_text() == "hello"
    atomic_write_bytes(target, b"again")
    assert target.read_bytes() == b"again"
    assert sorted(os.listdir(target.parent)) == ["out.txt"]


def test_atomic_path_keeps_suffix_and_cleans_up(tmp_path):
    target = tmp_path / "arrays.npz"
    with atomic_path(target) as temp:
        assert temp.parent == tmp_path and temp.name.startswith(".arrays.npz.tmp-")
        assert temp.suffix == ".npz"
        np.savez(temp, a=np.arange(3))
    assert os.listdir(tmp_path) == ["arrays.npz"]
    with pytest.raises(RuntimeError):
        with atomic_path(target) as temp:
            temp.write_bytes(b"partial")
            raise RuntimeError("writer failed")
    assert os.listdir(tmp_path) == ["arrays.npz"]  # old content kept, temp removed
    with np.load(target) as f:
        assert f["a"].tolist() == [0, 1, 2]


def test_atomic_unwritable_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match=re.escape(f"cannot write to {blocker}")):
        atomic_write_text(blocker / "sub" / "out.txt", "x")
    # The target exists as a folder: the final rename fails.
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "inside").write_text("x")
    with pytest.raises(UserError, match="cannot write to"):
        atomic_write_text(tmp_path / "dir", "x")
    assert sorted(os.listdir(tmp_path)) == ["dir", "file"]


def test_writable_check_is_safe_for_concurrent_trials(tmp_path):
    """Pipeline trials check the same output folder at the same time; none may see a false error."""
    import threading

    from dnn_search.atomic import ensure_writable_folder
    errors = []

    def check():
        for _ in range(200):
            try:
                ensure_writable_folder(tmp_path / "shared")
            except Exception as exc:  # any error here is the bug
                errors.append(exc)
    threads = [threading.Thread(target=check) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and list((tmp_path / "shared").iterdir()) == []


# --------------------------------------------------------------------------- caches, never in $HOME

API_IN_EMPTY_HOME = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s: %(message)s")
import dnn_search
for name in dnn_search.__all__:  # every entry of the public API resolves
    getattr(dnn_search, name)
data = dnn_search.load_dataset("mnist1d")
dnn_search.load_dataset("vanderpol")
cfg = dnn_search.MetaConfig(n_activations=2, inner_hidden_size=12, outer_hidden_size=4, epochs=1, steps=1)
learner = dnn_search.MetaLearner.from_dataset(cfg, data)
learner.step()
from dnn_search.actfile import write_activation_files
paths = write_activation_files("acts", "api", learner.activations(), {"dataset": "MNIST1D"})
dnn_search.load_activations(paths["npz"])
"""


def test_python_api_writes_nothing_to_home(tmp_path):
    """Issue 18: the Python API used without a command (no --cache-dir, no DNN_SEARCH_CACHE) caches its
    generated data in ./results/.cache, the default storage's cache, says so once, and writes nothing
    under an empty HOME (nor its XDG folders)."""
    env = fresh_home(tmp_path / "home", {**os.environ, "DNN_SEARCH_NATIVE": "0", "DNN_SEARCH_COMPILE": "0"})
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run([sys.executable, "-c", API_IN_EMPTY_HOME], env=env, cwd=work, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [p for p in (tmp_path / "home").rglob("*")] == []
    cache = work / "results" / ".cache"
    assert sorted(p.name for p in cache.iterdir()) == ["matplotlib", data.MNIST1D_FILE, "vanderpol_v1.npz"]
    announced = [ln for ln in done.stdout.splitlines() if "no cache folder set" in ln]
    assert len(announced) == 1 and str(cache) in announced[0], done.stdout
