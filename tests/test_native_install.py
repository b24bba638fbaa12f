"""The native kernels are built once per installation (issue 21, point 2): setup's build step
(`python -m dnn_search.native --build`) puts them where commands look, commands into fresh folders
load them without compiling (proved by the loader's own report, not by a timing), a build for other
sources is never loaded, and an unusable kernel folder or a missing compiler degrades to the torch
kernels with the reason logged. Every process here has an empty HOME that must stay empty.

The tests use the installation's own kernel folder (where commands look, `.venv/dnn_search_kernels`
unless DNN_SEARCH_KERNELS says otherwise): after scripts/setup.sh the build step finds the kernels up
to date and nothing is compiled here; without them it builds them there once (30-100 s), as a first
command would. The no-compiler case uses a private folder."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dnn_search import native, native_build
from dnn_search.cache import kernel_dir

from conftest import fresh_home

# The CLI as a user runs it, with the library's INFO log lines shown (the loader reports through logging).
CLI_WITH_LOG = ("import logging, sys; logging.basicConfig(level=logging.INFO, format='%(name)s: %(message)s'); "
                "from dnn_search.cli import main; sys.exit(main(sys.argv[1:]))")
LOAD_AND_REPORT = ("import logging, sys; logging.basicConfig(level=logging.INFO, format='%(name)s: %(message)s'); "
                   "from dnn_search import native; native.load(); r = native.load_report(); "
                   "print('REPORT', r.origin, r.path, r.reason)")


def _env(root: Path, **extra: str) -> dict:
    """A new user's shell (empty HOME, no cache variables), plus EXTRA variables."""
    return fresh_home(root / "home", {**os.environ, "DNN_SEARCH_NATIVE": "1", "DNN_SEARCH_COMPILE": "0", **extra})


def _run(args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=900)
    return done


def _home_is_empty(env: dict) -> bool:
    return not any(Path(env["HOME"]).rglob("*"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """scripts/setup.sh's build step, run as setup runs it: (kernel folder, env, its output)."""
    root = tmp_path_factory.mktemp("install")
    env = _env(root)
    done = _run(["-m", "dnn_search.native", "--build"], env, root)
    if done.returncode != 0 and "not built" in done.stderr:
        pytest.skip(f"native kernels cannot be built here: {done.stderr.strip()[-300:]}")
    assert done.returncode == 0, done.stderr[-3000:]
    return kernel_dir(), env, done.stderr


def test_setup_build_puts_the_kernels_where_commands_look(installed, tmp_path):
    kernels, env, output = installed
    name = native.extension().module_name()
    assert f"native kernels: built {kernels / name}" in output or f"up to date in {kernels / name}" in output
    record = json.loads((kernels / name / native_build.RECORD).read_text())
    assert (kernels / name / record["library"]).is_file() and record["functions"] == list(native.extension().functions)
    # where commands look, as the package itself says ...
    where = _run(["-m", "dnn_search.native", "--where"], env, tmp_path)
    assert where.stdout.strip() == str(kernels / name)
    # ... and what a fresh process's loader does there: load, not compile
    loaded = _run(["-c", LOAD_AND_REPORT], env, tmp_path)
    assert f"REPORT prebuilt {kernels / name} " in loaded.stdout, loaded.stderr[-2000:]
    assert "compiling" not in loaded.stderr
    # running setup again is a no-op
    again = _run(["-m", "dnn_search.native", "--build"], env, tmp_path)
    assert again.returncode == 0 and f"up to date in {kernels / name}" in again.stderr
    assert json.loads((kernels / name / native_build.RECORD).read_text()) == record
    assert _home_is_empty(env)


def test_metalearn_into_fresh_folders_never_compiles(installed, tmp_path):
    """Two `metalearn` runs, each into a new --output_folder (so each has a new, empty storage cache),
    load the installation's kernels: the loader reports 'loaded prebuilt' and nothing is compiled."""
    kernels, env, _ = installed
    name = native.extension().module_name()
    record = (kernels / name / native_build.RECORD).read_text()
    before = sorted(kernels.iterdir())
    for run in ("first", "second"):
        out = tmp_path / run
        done = _run(["-c", CLI_WITH_LOG, "metalearn", "--steps", "1", "--epochs", "1", "--inner_hidden_size", "16",
                     "--outer_hidden_size", "4", "--impl", "fast", "--output_folder", str(out)], env, tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        said = done.stdout + done.stderr  # the CLI logs progress (INFO) to stdout, warnings to stderr
        assert f"native kernels: loaded prebuilt {kernels / name}" in said, said[-3000:]
        assert "compiling" not in said and "native kernels: built" not in said
        assert (out / ".cache" / "mnist1d.npz").is_file()  # the storage's cache is still per folder ...
        assert not list(out.rglob("torch_extensions")) and not list(out.rglob("*.so"))  # ... the kernels are not
    assert (kernels / name / native_build.RECORD).read_text() == record  # never rebuilt
    assert sorted(kernels.iterdir()) == before  # nothing built beside it either
    assert _home_is_empty(env)


def test_a_build_for_other_sources_is_never_loaded(installed):
    """The build key covers sources, exported functions and flags: an edited kernel (an editable
    install) looks for, and would build, another folder beside the installed one."""
    kernels, _, _ = installed
    ext = native.extension()
    changed = [dataclasses.replace(ext, sources=(*ext.sources[:-1], ext.sources[-1] + "\n// edited\n")),
               dataclasses.replace(ext, functions=ext.functions[:-1]),
               dataclasses.replace(ext, cflags=(*ext.cflags, "-DEXTRA"))]
    names = {ext.module_name(), *(c.module_name() for c in changed)}
    assert len(names) == 4
    for other in changed:
        assert native_build.load_prebuilt(kernels, other) is None


def test_unusable_kernel_folder_degrades_with_the_reason(installed, tmp_path, caplog):
    """A kernel folder that cannot be created (a read-only or broken environment) is logged with its
    reason; the storage's cache is used instead (here it holds a build, loaded without compiling),
    and where that is unusable too the torch kernels are used (None), logged."""
    kernels, _, _ = installed
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    ext = native.extension()
    with caplog.at_level(logging.INFO, logger="dnn_search.native_build"):
        module, report = native_build.load_or_build(ext, blocker / "kernels", lambda: kernels)
    assert module is not None and report.origin == "prebuilt" and report.path == kernels / ext.module_name()
    assert f"{blocker / 'kernels'} is not writable" in caplog.text and "compiling" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dnn_search.native_build"):
        module, report = native_build.load_or_build(ext, blocker / "kernels", lambda: blocker / "cache")
    assert module is None and report.origin == "unavailable" and str(blocker / "cache") in report.reason
    assert f"native kernels unavailable: {blocker / 'cache'} is not writable" in caplog.text


def test_without_a_compiler_setup_says_so_once_and_commands_do_not_retry(tmp_path):
    """setup's build step with a compiler that fails: one line, exit 1, the failure recorded in the
    kernel folder; a command's loader then uses the torch kernels without trying to compile."""
    kernels = tmp_path / "kernels"
    env = _env(tmp_path, DNN_SEARCH_KERNELS=str(kernels), CXX="false")
    done = _run(["-m", "dnn_search.native", "--build"], env, tmp_path)
    assert done.returncode == 1
    said = [ln for ln in done.stderr.splitlines() if "native kernels not built" in ln]
    assert len(said) == 1 and "torch kernels" in said[0], done.stderr[-2000:]
    assert native_build.failure_marker(kernels, native.extension()).is_file()
    loaded = _run(["-c", LOAD_AND_REPORT], env, tmp_path)
    assert "REPORT unavailable None setup could not build them" in loaded.stdout, loaded.stderr[-2000:]
    assert "compiling" not in loaded.stderr
    assert _home_is_empty(env)
