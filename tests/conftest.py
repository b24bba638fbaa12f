"""Shared fixtures. `search_env`: environment for tests that start Ray (used by the search and
cluster tests only, so other tests keep the default compile and cache settings)."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dnn_search.search import faults

REPO = Path(__file__).resolve().parents[1]

# The suite arms the package's test-only fault points (dnn_search/search/faults.py): this process and
# every process it starts (CLI runs, Ray nodes and their workers) inherit the token. Only the suite
# sets it; a fault variable in a user's shell is refused without it.
os.environ[faults.GATE_VARIABLE] = faults.TEST_TOKEN

TINY_SPACE = """\
metric: heldout_accuracy
num_samples: {num_samples}
max_concurrent: {max_concurrent}
sampler: {{type: {sampler}, seed: 0, n_startup_trials: 2}}
scheduler: {{type: asha, grace_period: 1, reduction_factor: 2}}
checkpoint_every: 2
compile: false
fixed: {{inner_hidden_size: 16, outer_hidden_size: 8, epochs: 1, steps: {steps}, val_fraction: 0.1{extra_fixed}}}
params:
  outer_lr: {{type: loguniform, low: 0.04, high: 4.0}}
{inner_lr}  n_activations: {{type: int, low: 1, high: 3}}
top: 2
pipeline: {{runs: 2, epochs: 1, lr: 0.05, momentum: 0.9, hessian_samples: 200, hessian_iters: 5, hessian_top_k: 1,
           optimizers: [sgd, {{name: rmsprop, lr: 0.01, momentum: 0.8, epochs: 2}}]}}
"""


def tiny_space(folder: Path, name: str = "tiny.yaml", *, num_samples=4, max_concurrent=2, steps=4,
               sampler="tpe", inner_lr=True, extra_fixed="") -> Path:
    """A search space whose trials take about a second each on one core."""
    text = TINY_SPACE.format(num_samples=num_samples, max_concurrent=max_concurrent, steps=steps, sampler=sampler,
                             extra_fixed=extra_fixed,
                             inner_lr="  inner_lr: {type: loguniform, low: 0.001, high: 0.1}\n" if inner_lr else "")
    path = folder / name
    path.write_text(text)
    return path


@pytest.fixture(scope="session")
def search_env(tmp_path_factory):
    """Environment for subprocess runs of dnn-search that start Ray: a private HOME (to prove that
    nothing is written to ~/ray_results or ~/.ray), a data cache, no torch.compile warm-up and no
    native-kernel build in the fresh cache (the kernels are tested in test_native.py)."""
    home = tmp_path_factory.mktemp("home")
    cache = tmp_path_factory.mktemp("cache")
    env = {**os.environ, "HOME": str(home), "DNN_SEARCH_CACHE": str(cache), "DNN_SEARCH_COMPILE": "0",
           "DNN_SEARCH_NATIVE": "0", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    return env


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory, search_env):
    """The shared smoke pipeline (every test that needs a finished pipeline uses this one), run as a new
    user would: an empty HOME, no cache settings. Its process tree is watched (which processes, and the
    embedded Ray's temp folder they name), and it gets a private, empty TMPDIR: what it leaves in the
    system's temporary folder (Ray's default /tmp/ray, Ray's lock files) is seen there, exactly, instead
    of by comparing listings of the shared /tmp, where other tests and other jobs come and go."""
    root = tmp_path_factory.mktemp("pipe")
    space = tiny_space(root)
    env = fresh_home(root / "home", search_env)
    proc, tree = run_watched(["pipeline", "--space", space, "--name", "demo", "--storage", root / "results"], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "results" / "demo", proc, env, {"tree": tree}


def markdown_table_rows(md: str, header_start: str) -> dict[str, list[str]]:
    """The rows of the first Markdown table whose header starts with HEADER_START, by first cell
    (the first row wins when two share it)."""
    lines = md.splitlines()
    i = next(k for k, x in enumerate(lines) if x.startswith(header_start))
    out = {}
    for line in lines[i + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        out.setdefault(cells[0], cells)
    return out


def run_cli(args, env, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dnn_search", *map(str, args)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def _driver_alive(cmd: str) -> bool:
    """Ray names its session folder session_<date>_<time>_<driver pid>: a process whose driver is still
    running belongs to a live search (another job on this machine), not a leftover of a test."""
    import re
    m = re.search(r"session_[0-9_-]+_(\d+)/", cmd)
    if not m:
        return False
    try:
        os.kill(int(m.group(1)), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def ray_processes(marker: str = "dnnray") -> list[str]:
    """Command lines of live processes left by an embedded Ray of this tool whose driver has exited."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().split()[2]
        except OSError:
            continue
        if marker in cmd and state != "Z" and not _driver_alive(cmd):
            found.append(f"{proc.name}: {cmd[:200]}")
    return found


# ------------------------------------------------------------------------ processes and sockets

def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """(ip, port) of every TCP socket that PID or any of its descendants listens on, read from the
    kernel (psutil), not from what the program prints."""
    import psutil
    root = psutil.Process(pid)
    found = set()
    for proc in [root, *root.children(recursive=True)]:
        try:
            for conn in proc.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN:
                    found.add((conn.laddr.ip, conn.laddr.port))
        except psutil.Error:
            continue
    return found


class ProcessTree:
    """Every process that a command started, seen by polling psutil while it runs: Ray's raylet, GCS,
    agents and workers (which rename themselves `ray::...`) included. `survivors()` after the command
    exits lists those still alive (a PID reused by an unrelated process does not count)."""

    def __init__(self, pid: int):
        import psutil
        self.root = psutil.Process(pid)
        self.seen: dict[int, float] = {}
        self.cmdlines: dict[int, set[str]] = {}  # every command line a process showed (Ray's retitle themselves)

    def poll(self) -> None:
        import psutil
        try:
            for proc in self.root.children(recursive=True):
                if proc.pid not in self.seen:
                    self.seen[proc.pid] = proc.create_time()
                with contextlib.suppress(psutil.Error):
                    self.cmdlines.setdefault(proc.pid, set()).add(" ".join(proc.cmdline()))
        except psutil.Error:
            pass

    def ray_temp_folders(self) -> set[str]:
        """The embedded Ray temp folders (/tmp/dnnray*) that the watched processes named."""
        import re
        return {m for cmds in self.cmdlines.values() for cmd in cmds for m in re.findall(r"/tmp/dnnray\w+", cmd)}

    def survivors(self) -> list[str]:
        import psutil
        alive = []
        for pid, created in self.seen.items():
            try:
                proc = psutil.Process(pid)
                if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{pid}: {' '.join(proc.cmdline())[:160]}")
            except psutil.Error:
                continue
        return alive


def run_watched(args, env, timeout=600) -> tuple[subprocess.CompletedProcess, ProcessTree]:
    """`run_cli`, watching the process tree of the command while it runs."""
    import time
    proc = subprocess.Popen([sys.executable, "-m", "dnn_search", *map(str, args)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tree = ProcessTree(proc.pid)
    out: dict = {}

    def drain(name, stream):
        out[name] = stream.read()
    import threading
    readers = [threading.Thread(target=drain, args=(n, s), daemon=True)
               for n, s in (("stdout", proc.stdout), ("stderr", proc.stderr))]
    for r in readers:
        r.start()
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        tree.poll()
        time.sleep(0.2)
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for r in readers:
        r.join(10)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out.get("stdout", ""), out.get("stderr", "")), tree


def fresh_home(folder: Path, base_env: dict) -> dict:
    """BASE_ENV with an empty HOME at FOLDER, the XDG folders inside it, an empty TMPDIR beside it, and no
    cache override: what a new user's shell looks like, to prove that nothing is written there."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder.parent / "tmp").mkdir(exist_ok=True)
    env = {**base_env, "HOME": str(folder), "TMPDIR": str(folder.parent / "tmp"),
           "XDG_CACHE_HOME": str(folder / ".cache"),
           "XDG_CONFIG_HOME": str(folder / ".config"), "XDG_DATA_HOME": str(folder / ".local" / "share"),
           "XDG_STATE_HOME": str(folder / ".local" / "state")}
    env.pop("DNN_SEARCH_CACHE", None)
    env.pop("MPLCONFIGDIR", None)
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)
    return env


@contextlib.contextmanager
def temporary_environment(**variables: str):
    """Set environment variables of this process for the duration of a block, then restore them (for
    fixtures of wider scope than pytest's monkeypatch, e.g. raylets that must inherit a variable)."""
    saved = {k: os.environ.get(k) for k in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
