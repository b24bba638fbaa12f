"""Datasets: the classification loaders and `load_dataset`, the one entry to every registered dataset.

Loaders: MNIST-1D (generated offline), MNIST (IDX files) and CIFAR-10 (binary version); each returns
a `Dataset` (`dnn_search.dataset`) of float32 inputs flattened to (N, D) and int64 labels. Which names
exist and which task each serves is the dataset registry's business (`dnn_search.tasks`):
`load_dataset` only looks up. MNIST and CIFAR-10 are read with numpy from the standard distribution
files in --data_path; nothing is downloaded. MNIST-1D is generated with the `mnist1d` package
(bit-equal to its published frozen file) and cached as a pickle-free .npz in the cache folder of
`dnn_search.cache` (never in $HOME). `Dataset` and `split_validation` are re-exported from here.
"""
from __future__ import annotations

import gzip
import os
import random
import zlib
from pathlib import Path

import numpy as np
import torch

from dnn_search.cache import cache_candidates, read_npz, steer_matplotlib, write_cache
from dnn_search.dataset import Dataset, split_validation
from dnn_search.errors import UserError
from dnn_search.tasks.registry import canonical_dataset, dataset_entry

__all__ = ["Dataset", "split_validation", "load_dataset", "canonical_name", "load_mnist1d", "load_mnist",
           "load_cifar10", "generate_mnist1d"]

NUM_CLASSES = 10
MNIST1D_FILE = "mnist1d.npz"
_MNIST1D_SHAPES = {"x": (4000, 40), "y": (4000,), "x_test": (1000, 40), "y_test": (1000,)}

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IDX_IMAGES_MAGIC = 2051
_IDX_LABELS_MAGIC = 2049
_MNIST_SIDE = 28

CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST_FILE = "test_batch.bin"
_CIFAR_PIXELS = 3 * 32 * 32
_CIFAR_RECORD = 1 + _CIFAR_PIXELS


def canonical_name(name: str) -> str:
    """'mnist1d', 'MNIST-1D' -> 'MNIST1D'; 'cifar10', 'CIFAR-10' -> 'CIFAR' (from the dataset registry)."""
    return canonical_dataset(name)


def load_dataset(name: str, data_path: str | os.PathLike | None = None) -> Dataset:
    """A registered dataset, labelled with the task it serves (what every command loads).

    Args:
        name: a registered name or alias, case-insensitive ("MNIST1D", "MNIST", "CIFAR", "VanDerPol",
            "HenonHeiles", or one added with `register_dataset`).
        data_path: the folder with the files of a dataset read from disk (MNIST, CIFAR-10); generated
            datasets look there first for their cache file.

    Returns:
        A `Dataset`: x_train, y_train, x_test, y_test tensors, trajectory ids and dense test
        trajectories where the data has them, and the name of its task.

    Raises:
        UserError: an unknown name (the message lists the registered ones), or missing files.
    """
    entry = dataset_entry(name)
    dataset = entry.loader(data_path)
    dataset.task = entry.task
    return dataset


def validation_data(dataset: str, data_path: str | os.PathLike | None = None, trajectories: int | None = None,
                    source: str = "") -> Dataset:
    """DATASET as a study's validation networks see it: forecasts from the first TRAJECTORIES test
    trajectories (None: all). What the validation trials, the dry run's unit costs and the start-up
    check all load, so the dry run prices the forecasts the study will make. A count beyond the test
    trajectories is the file's error (one UserError naming the key)."""
    data = load_dataset(dataset, data_path)
    if trajectories is None:
        return data
    available = int(data.trajectories_test.shape[0])
    if trajectories > available:
        where = f"search space {source}: " if source else "search space: "
        raise UserError(f"{where}study.forecast.trajectories: {trajectories} is beyond the {available} test "
                        f"trajectories of {data.name}")
    return data.with_rollouts(None, trajectories)


def _local_folder(name: str, data_path) -> Path:
    if data_path is None:
        raise UserError(f"{name} is read from local files: pass --data_path with the folder that holds them")
    return Path(data_path)


# --------------------------------------------------------------------------------------- MNIST-1D

def _read_mnist1d_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when the file is absent or unusable (it is then regenerated)."""
    arrays = read_npz(path, _MNIST1D_SHAPES)
    if arrays is None:
        return None
    for key, shape in _MNIST1D_SHAPES.items():
        a = arrays[key]
        if a.shape != shape or a.dtype != (np.float64 if key.startswith("x") else np.int64):
            return None
    if not (np.isfinite(arrays["x"]).all() and np.isfinite(arrays["x_test"]).all()):
        return None
    return arrays


def generate_mnist1d() -> dict[str, np.ndarray]:
    """MNIST-1D from its generator with the published arguments: float64 x, int64 y."""
    steer_matplotlib()  # the mnist1d package imports matplotlib
    from mnist1d.data import get_dataset_args, make_dataset  # slow import, only needed without a cache

    # make_dataset reseeds the global `random` and numpy generators; restore them for the caller.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(get_dataset_args())
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {"x": np.asarray(data["x"], dtype=np.float64), "y": np.asarray(data["y"], dtype=np.int64),
            "x_test": np.asarray(data["x_test"], dtype=np.float64),
            "y_test": np.asarray(data["y_test"], dtype=np.int64)}


def load_mnist1d(data_path: str | os.PathLike | None = None) -> Dataset:
    candidates = cache_candidates(MNIST1D_FILE, data_path)
    for path in candidates:
        arrays = _read_mnist1d_cache(path)
        if arrays is not None:
            break
    else:
        arrays = generate_mnist1d()
        write_cache(candidates, arrays)
    return Dataset("MNIST1D", torch.from_numpy(arrays["x"]).float(), torch.from_numpy(arrays["y"]),
                   torch.from_numpy(arrays["x_test"]).float(), torch.from_numpy(arrays["y_test"]))


# ------------------------------------------------------------------------------ MNIST and CIFAR-10

def _read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped when it ends in .gz."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise UserError(f"cannot read {path}: {e}") from e


def _standardised(train: np.ndarray, test: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 pixels -> [0, 1] -> standardised with the training set's scalar mean and std."""
    # The byte histogram gives the exact float64 mean/std without a float64 copy of the data.
    counts = np.bincount(train.ravel(), minlength=256).astype(np.float64)
    levels = np.arange(256) / 255.0
    total = counts.sum()
    mean = float((counts * levels).sum() / total) if total else 0.0
    std = float(np.sqrt((counts * (levels - mean) ** 2).sum() / total)) if total else 1.0
    std = std if std > 0 else 1.0  # constant images: only centre them
    out = []
    for pixels in (train, test):
        x = torch.from_numpy(pixels.astype(np.float32))  # a writable float32 copy of read-only bytes
        out.append(x.div_(255.0).sub_(mean).div_(std))
    return out[0], out[1]


def _check_labels(labels: np.ndarray, path: Path) -> None:
    if labels.size and labels.max() >= NUM_CLASSES:
        raise UserError(f"malformed file {path}: label {int(labels.max())} is not in 0..{NUM_CLASSES - 1}")


def _find_files(folder: Path, subfolder: str, names: list[str], gz: bool, what: str) -> list[Path]:
    """Locate each expected file in `folder` or `folder/subfolder` (MNIST also accepts .gz)."""
    folders = [folder, folder / subfolder]
    found, missing = [], []
    for name in names:
        variants = [name + ".gz", name] if gz else [name]
        hit = next((d / v for d in folders for v in variants if (d / v).is_file()), None)
        found.append(hit)
        if hit is None:
            missing.append(name + ".gz" if gz else name)
    if missing:
        expected = ", ".join(n + ".gz" if gz else n for n in names)
        suffix = " (or the same names without .gz)" if gz else ""
        raise UserError(f"{what} files not found in {folder} or {folder / subfolder}: expected {expected}"
                        f"{suffix}; missing {', '.join(missing)}")
    return found


def _parse_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    """An IDX file (big-endian int32 magic and dimension sizes, then uint8 data) as an array."""
    raw = _read_bytes(path)
    header = 4 * (1 + ndim)
    if len(raw) < header:
        raise UserError(f"malformed file {path}: too short for an IDX header")
    fields = np.frombuffer(raw, dtype=">i4", count=1 + ndim)
    if fields[0] != magic:
        raise UserError(f"malformed file {path}: IDX magic number {int(fields[0])}, expected {magic}")
    dims = tuple(int(d) for d in fields[1:])
    if any(d < 0 for d in dims):
        raise UserError(f"malformed file {path}: negative dimension in {dims}")
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        raise UserError(f"malformed file {path}: {len(raw)} bytes, the header {dims} implies {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_mnist(data_path: str | os.PathLike | None) -> Dataset:
    folder = _local_folder("MNIST", data_path)
    paths = dict(zip(MNIST_FILES, _find_files(folder, "MNIST/raw", list(MNIST_FILES.values()), True, "MNIST")))
    splits = []
    for split in ("train", "test"):
        images = _parse_idx(paths[f"{split}_images"], _IDX_IMAGES_MAGIC, 3)
        labels = _parse_idx(paths[f"{split}_labels"], _IDX_LABELS_MAGIC, 1)
        if images.shape[1:] != (_MNIST_SIDE, _MNIST_SIDE):
            raise UserError(f"malformed file {paths[f'{split}_images']}: images are "
                            f"{images.shape[1]}x{images.shape[2]}, expected {_MNIST_SIDE}x{_MNIST_SIDE}")
        if len(images) != len(labels):
            raise UserError(f"malformed file {paths[f'{split}_labels']}: {len(labels)} labels for "
                            f"{len(images)} images in {paths[f'{split}_images'].name}")
        _check_labels(labels, paths[f"{split}_labels"])
        splits.append((images.reshape(len(images), -1), labels))
    x_train, x_test = _standardised(splits[0][0], splits[1][0])
    return Dataset("MNIST", x_train, torch.from_numpy(splits[0][1].astype(np.int64)),
                   x_test, torch.from_numpy(splits[1][1].astype(np.int64)))


def _parse_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 binary records: 1 label byte then 3072 pixel bytes (1024 R, 1024 G, 1024 B)."""
    raw = _read_bytes(path)
    if not raw or len(raw) % _CIFAR_RECORD:
        raise UserError(f"malformed file {path}: {len(raw)} bytes is not a whole number of "
                        f"{_CIFAR_RECORD}-byte CIFAR-10 records")
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0]
    _check_labels(labels, path)
    return records[:, 1:], labels


def load_cifar10(data_path: str | os.PathLike | None) -> Dataset:
    folder = _local_folder("CIFAR", data_path)
    names = [*CIFAR_TRAIN_FILES, CIFAR_TEST_FILE]
    paths = _find_files(folder, "cifar-10-batches-bin", names, False, "CIFAR-10")
    train = [_parse_cifar_batch(p) for p in paths[:-1]]
    test_x, test_y = _parse_cifar_batch(paths[-1])
    train_x = np.concatenate([x for x, _ in train])
    train_y = np.concatenate([y for _, y in train])
    x_train, x_test = _standardised(train_x, test_x)
    return Dataset("CIFAR", x_train, torch.from_numpy(train_y.astype(np.int64)),
                   x_test, torch.from_numpy(test_y.astype(np.int64)))
