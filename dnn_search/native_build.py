"""Build once, load many times: the native kernels' compiled module, kept in the installation.

Why its own module: compiling the C++ kernels (torch's `load_inline`) takes 30-50 s, and used to
happen in the cache of every --output_folder / --storage, so each `metalearn` into a new folder
paid it before its first step. Here a build goes to the installation's kernel folder
(`dnn_search.cache.kernel_dir()`, `.venv/dnn_search_kernels` by default), where scripts/setup.sh
puts it once and every later process loads it without invoking the compiler or ninja (a plain
import of the shared library, which also works from a read-only folder).

A build is only ever reused for exactly what it was built from: its folder is named after a hash of
the sources, the exported functions, the compiler flags, the CPU model and flags (-march=native),
the torch version and the Python ABI, so a changed source (an editable install), another torch or
another CPU looks for, and if need be builds, another folder. A build is staged in a private folder
and renamed into place only when complete, with its record (`build.json`: what was built, when,
how long it took) written last; an flock serialises concurrent builders of one key, so two trials
starting at once compile once. What the loader did is returned as a `LoadReport` and logged.
"""
from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from dnn_search.atomic import unwritable_reason

log = logging.getLogger(__name__)

RECORD = "build.json"


@dataclass(frozen=True)
class Extension:
    """What to compile: C++ sources (concatenated in order), the functions Python may call, flags."""

    prefix: str
    sources: tuple[str, ...]
    functions: tuple[str, ...]
    cflags: tuple[str, ...]
    ldflags: tuple[str, ...]

    def module_name(self) -> str:
        """PREFIX_<hash of everything the binary depends on>: the build's folder and module name."""
        key = "\n".join([*self.sources, " ".join(self.functions), " ".join(self.cflags), " ".join(self.ldflags),
                         _cpu_signature(), torch.__version__, platform.machine(), sys.implementation.cache_tag])
        return f"{self.prefix}_{hashlib.sha256(key.encode()).hexdigest()[:16]}"


@dataclass(frozen=True)
class LoadReport:
    """How the kernels of this process were obtained: 'prebuilt' (loaded, no compiler run),
    'built' (compiled now), or 'unavailable' (the torch kernels are used); where, and why."""

    origin: str
    path: Path | None = None
    reason: str = ""


def _cpu_signature() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            lines = [ln for ln in fh if ln.startswith(("model name", "flags"))][:2]
    except OSError:
        lines = [platform.processor()]
    return "".join(lines)


def failure_marker(folder: Path, ext: Extension) -> Path:
    """Where scripts/setup.sh records that this build failed (so commands do not retry it)."""
    return folder / f"{ext.module_name()}.failed"


def load_prebuilt(folder: Path, ext: Extension):
    """The module built earlier into FOLDER for exactly EXT, or None (absent, or unloadable: logged)."""
    build = folder / ext.module_name()
    record_path = build / RECORD
    if not record_path.is_file():
        return None
    try:
        record = json.loads(record_path.read_text())
        spec = importlib.util.spec_from_file_location(record["module"], build / record["library"])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except Exception as exc:  # a damaged build (truncated library, bad record): rebuilt by the caller
        log.warning("native kernels: the build in %s cannot be loaded (%s: %s)", build, type(exc).__name__, exc)
        return None
    return module


def writable_reason(folder: Path) -> str | None:
    """None if FOLDER exists (or can be created) and accepts a new file, else why not."""
    reason = unwritable_reason(folder)
    return None if reason is None else f"{folder} is not writable ({reason})"


def build_into(folder: Path, ext: Extension) -> tuple[object, bool]:
    """Compile EXT into FOLDER/<module name>; (the loaded module, True). Holding FOLDER's lock for this
    key, a build another process finished meanwhile is loaded instead: (module, False)."""
    from torch.utils.cpp_extension import load_inline  # imports setuptools machinery: only when building

    name = ext.module_name()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        module = load_prebuilt(folder, ext)
        if module is not None:
            return module, False
        shutil.rmtree(folder / name, ignore_errors=True)  # an unloadable earlier build
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.build-", dir=folder))
        try:
            log.info("native kernels: compiling %s into %s (once per installation, 30-50 s)", name, folder)
            start = time.monotonic()
            module = load_inline(name=name, cpp_sources=list(ext.sources), functions=list(ext.functions),
                                 extra_cflags=list(ext.cflags), extra_ldflags=list(ext.ldflags),
                                 build_directory=str(staging), verbose=False)
            library = Path(module.__file__).name
            record = {"module": module.__name__, "library": library, "seconds": round(time.monotonic() - start, 1),
                      "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "torch": torch.__version__,
                      "python": sys.version.split()[0], "cflags": list(ext.cflags), "functions": list(ext.functions)}
            (staging / RECORD).write_text(json.dumps(record, indent=1) + "\n")
            staging.chmod(0o755)  # mkdtemp's 0700 would hide a shared installation's build from its users
            os.rename(staging, folder / name)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        failure_marker(folder, ext).unlink(missing_ok=True)
    log.info("native kernels: built %s in %.0f s", folder / name, record["seconds"])
    return module, True


def load_or_build(ext: Extension, home: Path, fallback) -> tuple[object | None, LoadReport]:
    """EXT's module from HOME (the installation's folder): prebuilt, else built there; where HOME is
    not writable, from the folder FALLBACK() returns (the storage's cache), logged with the reason.
    (None, report) when nothing works: the callers then use their torch kernels."""
    module = load_prebuilt(home, ext)
    if module is not None:
        log.info("native kernels: loaded prebuilt %s", home / ext.module_name())
        return module, LoadReport("prebuilt", home / ext.module_name())
    marker = failure_marker(home, ext)
    if marker.is_file():
        reason = f"setup could not build them ({marker.read_text().strip().splitlines()[0][:200]}; see {marker})"
        log.info("native kernels unavailable: %s; using the torch kernels", reason)
        return None, LoadReport("unavailable", None, reason)
    folder = home
    unwritable = writable_reason(home)
    if unwritable is not None:
        folder = Path(fallback())
        log.warning("native kernels: no build for this installation and %s; building into %s for this storage "
                    "instead (run scripts/setup.sh, or set DNN_SEARCH_KERNELS to a writable folder, to build once)",
                    unwritable, folder)
        module = load_prebuilt(folder, ext)
        if module is not None:
            log.info("native kernels: loaded prebuilt %s", folder / ext.module_name())
            return module, LoadReport("prebuilt", folder / ext.module_name())
        unwritable = writable_reason(folder)
        if unwritable is not None:
            log.warning("native kernels unavailable: %s; using the torch kernels", unwritable)
            return None, LoadReport("unavailable", None, unwritable)
    try:
        module, built = build_into(folder, ext)
    except Exception as exc:  # no compiler, no headers, no ninja: the torch kernels remain
        reason = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
        log.warning("native kernels unavailable (%s); using the torch.compile/eager kernels", reason)
        return None, LoadReport("unavailable", None, reason)
    return module, LoadReport("built" if built else "prebuilt", folder / ext.module_name())
