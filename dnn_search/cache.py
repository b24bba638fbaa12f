"""Where caches go: the one module that resolves cache folders (everything else asks it).

Two kinds of cache, with different lifetimes:

- **The storage's cache** (`cache_dir()`): generated data (MNIST-1D, the physics trajectories) and
  matplotlib's font list. It lives beside what a command writes: `--cache-dir`, else
  $DNN_SEARCH_CACHE, else `.cache` inside the command's --output_folder or --storage. The Python API
  used without a command has no output folder; it then uses `results/.cache` under the working
  directory (the default --storage's cache, so API and commands share it) and says so once through
  `logging`. Never the user's home: left alone, the data loaders and matplotlib would write to
  ~/.cache, on every cluster worker too, breaking the promise that a run writes nothing outside
  its results. Both are steered by environment variables set by `use_cache_dir` before either is
  used; Ray workers started afterwards inherit them (cluster workers get them through the trial
  settings, see `current_environment`).
- **The installation's kernel folder** (`kernel_dir()`): the native kernels, built once per
  installation by scripts/setup.sh into the environment (`<sys.prefix>/dnn_search_kernels`, i.e.
  `.venv/dnn_search_kernels`), so that a command into a fresh folder does not compile for 30-50 s.
  $DNN_SEARCH_KERNELS moves it (e.g. where the environment is read-only).

Generated data is cached as pickle-free .npz files through `cache_candidates`, `read_npz` and
`write_cache`, shared by every generator (`data.py`, `dynamics.py`).
"""
from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path

import numpy as np

from dnn_search.atomic import atomic_path
from dnn_search.errors import UserError

log = logging.getLogger(__name__)

CACHE_VARIABLE = "DNN_SEARCH_CACHE"
KERNELS_VARIABLE = "DNN_SEARCH_KERNELS"
CACHE_FOLDER = ".cache"
KERNELS_FOLDER = "dnn_search_kernels"
# The commands' default --storage; the Python API's cache sits in it when nothing else is set.
DEFAULT_STORAGE = "results"


# ------------------------------------------------------------------------------ the storage's cache

def cache_environment(folder: str | os.PathLike) -> dict[str, str]:
    """The environment variables that send every cache under FOLDER."""
    folder = Path(folder).expanduser().resolve()
    return {CACHE_VARIABLE: str(folder), "MPLCONFIGDIR": str(folder / "matplotlib")}


def use_cache_dir(explicit: str | os.PathLike | None, default_root: str | os.PathLike) -> Path:
    """Point the caches of this process (and its children) at EXPLICIT (--cache-dir), else at the
    DNN_SEARCH_CACHE variable when set, else at DEFAULT_ROOT/.cache. Returns the folder.

    Called once by each command before it starts; `cache_dir()` reads the result back."""
    chosen = explicit or os.environ.get(CACHE_VARIABLE) or Path(default_root) / CACHE_FOLDER
    env = cache_environment(chosen)
    os.environ.update(env)
    return Path(env[CACHE_VARIABLE])


def cache_dir() -> Path:
    """The storage's cache folder of this process: the one `use_cache_dir` chose ($DNN_SEARCH_CACHE),
    else (the Python API without a command) `results/.cache` under the working directory."""
    chosen = os.environ.get(CACHE_VARIABLE)
    if chosen:
        return Path(chosen)
    return _announced_default(Path(DEFAULT_STORAGE, CACHE_FOLDER).resolve())


@functools.cache
def _announced_default(folder: Path) -> Path:
    """FOLDER, logged the first time it is used (once per process and folder)."""
    log.info("no cache folder set (a command's --cache-dir or $%s): caching generated data in %s",
             CACHE_VARIABLE, folder)
    return folder


def steer_matplotlib() -> None:
    """Send matplotlib's config folder and font cache into the cache folder unless a command already
    did: matplotlib reads MPLCONFIGDIR once, when first imported, and otherwise writes ~/.config and
    ~/.cache. Call it before anything imports matplotlib (our figures, the mnist1d generator)."""
    if not os.environ.get("MPLCONFIGDIR"):
        os.environ["MPLCONFIGDIR"] = str(cache_dir() / "matplotlib")


def current_environment() -> dict[str, str]:
    """The cache variables of this process, to hand to trials on other nodes."""
    return {k: os.environ[k] for k in (CACHE_VARIABLE, KERNELS_VARIABLE, "MPLCONFIGDIR") if os.environ.get(k)}


# ----------------------------------------------------------------------------------- generated data

def cache_candidates(file_name: str, data_path: str | os.PathLike | None = None) -> list[Path]:
    """Where a generated dataset's cache file is looked for, in order: --data_path, then the cache folder."""
    return [*([Path(data_path) / file_name] if data_path is not None else []), cache_dir() / file_name]


def read_npz(path: Path, keys) -> dict[str, np.ndarray] | None:
    """The arrays KEYS of the .npz at PATH (no pickles), or None when the file is absent or unreadable
    (truncated, not a zip, a key missing: the caller regenerates it; the reason is logged)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in keys}
    except Exception as exc:  # any unreadable file: numpy raises zipfile, OS, value and key errors
        log.info("cache file %s is unusable (%s: %s); regenerating it", path, type(exc).__name__, exc)
        return None


def write_cache(candidates: list[Path], arrays: dict[str, np.ndarray]) -> Path | None:
    """Save ARRAYS (pickle-free .npz) to the first writable candidate and return it; none writable:
    the data stays in memory only (logged), since a cache is an optimisation, not an output."""
    reasons = []
    for path in candidates:
        try:
            with atomic_path(path) as temp:
                np.savez(temp, **arrays)
            return path
        except (UserError, OSError) as exc:
            reasons.append(f"{path}: {exc}")
    log.warning("could not cache generated data (%s); it is regenerated next time", "; ".join(reasons))
    return None


# ------------------------------------------------------------------------ the installation's kernels

def kernel_dir() -> Path:
    """Where the native kernels of this installation are built and looked for: $DNN_SEARCH_KERNELS,
    else `dnn_search_kernels` in the Python environment (`sys.prefix`, the .venv of scripts/setup.sh)."""
    chosen = os.environ.get(KERNELS_VARIABLE)
    return Path(chosen).expanduser().resolve() if chosen else Path(sys.prefix) / KERNELS_FOLDER
