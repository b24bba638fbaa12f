"""Activation files: writing learned activations and reading them back, exactly or as sampled grids.

A trial's activations are saved under one stem in three forms:
- STEM.txt  the original DiversityNN text format, n rows x 100 samples of f_i on linspace(-5, 5, 100);
- STEM.npz  the exact sub-network weights (w1 b1 w2 (n, Ho), b2 (n,)), the base name and the grid;
- STEM.json metadata (hyperparameters, trial id, metrics, versions).
Reading accepts the .npz (exact) or any K-column .txt (sampled, used by piecewise-linear
interpolation), including files produced by the original code. Files are untrusted input: the
.npz is loaded without pickle, and every problem surfaces as a one-line UserError naming the file.
"""
from __future__ import annotations

import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dnn_search.activations import ActivationSet, base_names, check_base, standard_grid
from dnn_search.atomic import atomic_path, atomic_write_text
from dnn_search.errors import UserError

WEIGHT_KEYS = ("w1", "b1", "w2", "b2")
_KNOWN_SUFFIXES = (".txt", ".npz", ".json")

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_ORIGINAL_NAME = re.compile(
    r"^(?P<dataset>.+?)_(?P<activation>[^_]+)_(?P<n_activations>\d+)_(?P<device>[^_]+)"
    rf"_activations_start_seed_(?P<seed>-?\d+)_inner_lr_(?P<inner_lr>{_NUMBER})"
    rf"_outer_lr_(?P<outer_lr>{_NUMBER})_steps_(?P<steps>\d+)_run_(?P<run>\d+)$")
_NAME_TYPES = {"n_activations": int, "seed": int, "inner_lr": float, "outer_lr": float,
               "steps": int, "run": int}


def original_stem(dataset: str, activation: str, n: int, device: str, seed: int,
                  inner_lr: float, outer_lr: float, steps: int, run: int) -> str:
    """The file stem the original DiversityNN code used for its activation files."""
    return (f"{dataset}_{activation}_{n}_{device}_activations_start_seed_{seed}"
            f"_inner_lr_{inner_lr}_outer_lr_{outer_lr}_steps_{steps}_run_{run}")


def parse_original_name(filename: str | os.PathLike) -> dict | None:
    """Invert `original_stem` (the name may carry a .txt/.npz/.json suffix); None if it does not match."""
    name = Path(filename).name
    # Not Path.stem: learning rates such as 0.01 put dots into the name itself.
    if name.lower().endswith(_KNOWN_SUFFIXES):
        name = name[:-4]
    match = _ORIGINAL_NAME.match(name)
    if match is None:
        return None
    info: dict = match.groupdict()
    for key, kind in _NAME_TYPES.items():
        info[key] = kind(info[key])
    return info


@dataclass
class LoadedActivations:
    """Activations read from a file: exact weights (from .npz) and/or samples on a grid."""

    base: str
    n: int
    exact: ActivationSet | None
    grid_x: np.ndarray  # (K,) increasing sample points
    grid_y: np.ndarray  # (n, K) f_i at grid_x
    metadata: dict = field(default_factory=dict)
    source: Path | None = None

    def is_exact(self) -> bool:
        return self.exact is not None


# ------------------------------------------------------------------------------------- writing

def _json_safe(value):
    """Plain JSON types; numpy scalars/arrays and paths converted, NaN/inf written as null."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None  # strict JSON has no NaN; dashboards and other languages reject it
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def write_activation_files(folder: str | os.PathLike, stem: str, acts: ActivationSet,
                           metadata: dict) -> dict[str, Path]:
    """Write STEM.txt, STEM.npz and STEM.json into `folder`, each atomically."""
    folder = Path(folder)
    paths = {kind: folder / f"{stem}.{kind}" for kind in ("txt", "npz", "json")}
    grid_x = standard_grid()
    grid_y = acts.evaluate(grid_x)

    text = io.StringIO()
    np.savetxt(text, grid_y, fmt="%.18e", delimiter=" ")  # full float64 precision
    atomic_write_text(paths["txt"], text.getvalue())

    with atomic_path(paths["npz"]) as temp:
        np.savez(temp, w1=acts.w1, b1=acts.b1, w2=acts.w2, b2=acts.b2,
                 base=np.array(acts.base), x=grid_x, y=grid_y)

    meta = {**metadata, "base": acts.base, "n_activations": acts.n,
            "files": {kind: p.name for kind, p in paths.items()}}
    atomic_write_text(paths["json"], json.dumps(_json_safe(meta), indent=2, allow_nan=False) + "\n")
    return paths


# ------------------------------------------------------------------------------------- reading

def _one_line(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())


def _read_sidecar(path: Path) -> dict:
    """Metadata from the .json with the same stem, or {} when there is none."""
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        return {}
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise UserError(f"cannot read metadata {sidecar}: {_one_line(e)}") from e
    if not isinstance(meta, dict):
        raise UserError(f"cannot read metadata {sidecar}: expected a JSON object")
    return meta


def _choose_base(path: Path, *candidates) -> str:
    """The first base name given (argument, file, metadata), checked against the known bases."""
    for name in candidates:
        if name is not None:
            try:
                return check_base(str(name))
            except UserError as e:
                raise UserError(f"{path}: {e}") from e
    raise UserError(f"{path}: cannot tell the base activation ({', '.join(base_names())}) from the file: "
                    "pass --activation")


def _numeric(path: Path, key: str, value: np.ndarray) -> np.ndarray:
    if value.dtype.kind not in "fiu":
        raise UserError(f"{path}: array {key!r} has dtype {value.dtype}, expected real numbers")
    value = value.astype(np.float64)
    if not np.isfinite(value).all():
        raise UserError(f"{path}: array {key!r} contains NaN or inf")
    return value


def _read_npz(path: Path, base: str | None) -> LoadedActivations:
    arrays = {}
    try:
        # allow_pickle=False: an object array (pickle) is refused before anything is unpickled.
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise UserError(f"{path}: not an .npz archive (a single .npy array?)")
        with archive:
            for key in (*WEIGHT_KEYS, "base", "x", "y"):
                if key in archive.files:
                    arrays[key] = archive[key]
    except UserError:
        raise
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise UserError(f"{path}: contains pickled (object) data, which is refused") from e
        raise UserError(f"{path}: not a readable .npz archive ({_one_line(e)})") from e
    except Exception as e:  # a corrupt zip fails in many ways (BadZipFile, zlib.error, EOFError, ...)
        raise UserError(f"{path}: not a readable .npz archive ({_one_line(e)})") from e

    missing = [k for k in WEIGHT_KEYS if k not in arrays]
    if missing:
        raise UserError(f"{path}: missing array(s) {', '.join(missing)}; expected {', '.join(WEIGHT_KEYS)}")
    w1, b1, w2, b2 = (_numeric(path, k, arrays[k]) for k in WEIGHT_KEYS)
    if (w1.ndim != 2 or w1.shape[0] < 1 or w1.shape[1] < 1 or b1.shape != w1.shape
            or w2.shape != w1.shape or b2.shape != (w1.shape[0],)):
        raise UserError(f"{path}: expected w1, b1, w2 of shape (n, Ho) and b2 of shape (n,); got "
                        f"{w1.shape}, {b1.shape}, {w2.shape}, {b2.shape}")

    metadata = _read_sidecar(path)
    file_base = None
    if "base" in arrays:
        stored = arrays["base"]
        if stored.dtype.kind != "U" or stored.size != 1:
            raise UserError(f"{path}: 'base' must be a single string, got dtype {stored.dtype} "
                            f"shape {stored.shape}")
        file_base = str(stored.reshape(())[()])
    name = _choose_base(path, base, file_base, metadata.get("base"), metadata.get("activation"))
    exact = ActivationSet(name, w1, b1, w2, b2)

    if "x" in arrays or "y" in arrays:
        if not ("x" in arrays and "y" in arrays):
            raise UserError(f"{path}: has only one of the grid arrays 'x' and 'y'")
        grid_x, grid_y = _numeric(path, "x", arrays["x"]), _numeric(path, "y", arrays["y"])
        _check_grid(path, grid_x, grid_y, exact.n)
    else:
        grid_x = standard_grid()
        grid_y = exact.evaluate(grid_x)
    return LoadedActivations(name, exact.n, exact, grid_x, grid_y, metadata, path)


def _check_grid(path: Path, grid_x: np.ndarray, grid_y: np.ndarray, n: int) -> None:
    if grid_x.ndim != 1 or len(grid_x) < 2 or not (np.diff(grid_x) > 0).all():
        raise UserError(f"{path}: grid 'x' must be at least 2 increasing values, got shape {grid_x.shape}")
    if grid_y.shape != (n, len(grid_x)):
        raise UserError(f"{path}: grid 'y' has shape {grid_y.shape}, expected {(n, len(grid_x))}")


def _parse_matrix(path: Path, text: str) -> np.ndarray:
    """A whitespace-separated numeric matrix; blank lines and '#' comment lines are skipped."""
    rows, width = [], None
    for number, line in enumerate(text.split("\n"), start=1):
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        try:
            row = [float(t) for t in tokens]
        except ValueError:
            bad = next(t for t in tokens if not _is_float(t))
            raise UserError(f"{path}: line {number}: non-numeric value {bad[:40]!r}") from None
        if width is None:
            width = len(row)
        elif len(row) != width:
            raise UserError(f"{path}: line {number} has {len(row)} values, earlier lines have {width}")
        rows.append(row)
    if not rows:
        raise UserError(f"{path}: empty activation file, expected rows of sampled values")
    if width < 2:
        raise UserError(f"{path}: each row needs at least 2 samples, got {width}")
    matrix = np.array(rows, dtype=np.float64)
    if not np.isfinite(matrix).all():
        raise UserError(f"{path}: contains NaN or inf")
    return matrix


def _is_float(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _read_txt(path: Path, base: str | None) -> LoadedActivations:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file (invalid UTF-8)") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {_one_line(e)}") from e
    grid_y = _parse_matrix(path, text)
    metadata = {**(parse_original_name(path.name) or {}), **_read_sidecar(path)}
    name = _choose_base(path, base, metadata.get("base"), metadata.get("activation"))
    grid_x = np.linspace(-5.0, 5.0, grid_y.shape[1])
    return LoadedActivations(name, grid_y.shape[0], None, grid_x, grid_y, metadata, path)


def read_activation_file(path: str | os.PathLike, base: str | None = None) -> LoadedActivations:
    """Load learned activations from a file this tool or the original DiversityNN code wrote.

    Args:
        path: an .npz (exact sub-network weights, evaluated exactly) or a .txt (n rows of samples on
            linspace(-5, 5, K), interpolated piecewise-linearly).
        base: the base function's name, overriding the one recorded in the file or its metadata
            (needed for a .txt without a recognisable name or sidecar).

    Returns:
        `LoadedActivations`: the base, n, the exact weights (None for a .txt), the sampled grid and
        the metadata.

    Raises:
        UserError: when the file is missing, unreadable, or not in either format (one line).
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"activation file not found: {path}")
    if not path.is_file():
        raise UserError(f"activation file {path} is not a regular file")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _read_npz(path, base)
    if suffix == ".txt":
        return _read_txt(path, base)
    raise UserError(f"activation file {path}: unsupported type {path.suffix!r}, expected .npz or .txt")
