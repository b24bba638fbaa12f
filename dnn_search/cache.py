"""Where caches go: one folder per command (`--cache-dir`), never the user's home.

Two things write caches: our data loaders (the generated MNIST-1D arrays) and matplotlib (its font
list, built at first import). Left alone they land in ~/.cache, on every cluster worker too, which
breaks the promise that a run writes nothing outside its results folder. Both are steered by
environment variables, set here before either is used; Ray workers started afterwards inherit them
(cluster workers get them through the trial settings, see `cache_environment`).
"""
from __future__ import annotations

import os
from pathlib import Path

CACHE_VARIABLE = "DNN_SEARCH_CACHE"
CACHE_FOLDER = ".cache"


def cache_environment(folder: str | os.PathLike) -> dict[str, str]:
    """The environment variables that send every cache under FOLDER."""
    folder = Path(folder).expanduser().resolve()
    return {CACHE_VARIABLE: str(folder), "MPLCONFIGDIR": str(folder / "matplotlib")}


def use_cache_dir(explicit: str | os.PathLike | None, default_root: str | os.PathLike) -> Path:
    """Point the caches of this process (and its children) at EXPLICIT (--cache-dir), else at the
    DNN_SEARCH_CACHE variable when set, else at DEFAULT_ROOT/.cache. Returns the folder."""
    chosen = explicit or os.environ.get(CACHE_VARIABLE) or Path(default_root) / CACHE_FOLDER
    env = cache_environment(chosen)
    os.environ.update(env)
    return Path(env[CACHE_VARIABLE])


def current_environment() -> dict[str, str]:
    """The cache variables of this process, to hand to trials on other nodes."""
    return {k: os.environ[k] for k in (CACHE_VARIABLE, "MPLCONFIGDIR") if os.environ.get(k)}
