"""Where caches go: one folder per command (`--cache-dir`), never the user's home.

Three things write caches: our data loaders (the generated MNIST-1D arrays), matplotlib (its font
list, built at first import) and torch's compiler (its cache folder). Left alone they land in ~/.cache
or the system's temporary folder, on every cluster worker too, which breaks the promise that a run
writes nothing outside its results folder. All are steered by environment variables, set here before
any is used; Ray workers started afterwards inherit them
(cluster workers get them through the trial settings, see `cache_environment`).
"""
from __future__ import annotations

import os
from pathlib import Path

CACHE_VARIABLE = "DNN_SEARCH_CACHE"
CACHE_FOLDER = ".cache"
# torch creates its compile cache folder ($TMPDIR/torchinductor_<user>) when a trial imports it, even
# with compilation off: a folder left outside the results unless it is steered here too
INDUCTOR_VARIABLE = "TORCHINDUCTOR_CACHE_DIR"


def cache_environment(folder: str | os.PathLike) -> dict[str, str]:
    """The environment variables that send every cache under FOLDER."""
    folder = Path(folder).expanduser().resolve()
    return {CACHE_VARIABLE: str(folder), "MPLCONFIGDIR": str(folder / "matplotlib"),
            INDUCTOR_VARIABLE: str(folder / "torchinductor")}


def use_cache_dir(explicit: str | os.PathLike | None, default_root: str | os.PathLike) -> Path:
    """Point the caches of this process (and its children) at EXPLICIT (--cache-dir), else at the
    DNN_SEARCH_CACHE variable when set, else at DEFAULT_ROOT/.cache. Returns the folder."""
    chosen = explicit or os.environ.get(CACHE_VARIABLE) or Path(default_root) / CACHE_FOLDER
    env = cache_environment(chosen)
    os.environ.update(env)
    return Path(env[CACHE_VARIABLE])


def current_environment() -> dict[str, str]:
    """The cache variables of this process, to hand to trials on other nodes."""
    return {k: os.environ[k] for k in (CACHE_VARIABLE, "MPLCONFIGDIR", INDUCTOR_VARIABLE) if os.environ.get(k)}
