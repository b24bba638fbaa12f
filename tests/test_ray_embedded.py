"""dnn_search.search.ray_embedded on a real embedded Ray (`ray_session` with no address): the node
starts without its autoscaler monitor, log monitor and dashboard head, and Ray's lookup of the new
raylet runs once it has registered (no second-long sleep); the driver starts the node before it
imports Tune; a Tune trial runs on a worker Ray prestarted while `ray.init` waited, with torch
preloaded where every such worker hosts a trial; and the session's end kills every process of the node at
once (the raylet ends by SIGKILL) and leaves none behind. After a body that raised, Ray's own
stop runs and leaves none behind either."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow

SCRIPT = r"""
import json, os, sys, time
from pathlib import Path
from dnn_search.search import ray_embedded
from dnn_search.search.ray_session import _alive as alive, ray_session

def cmdline(pid):
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""

def all_pids():
    return {int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()}

def trainable(config):
    preloaded = "torch" in sys.modules  # nothing on the way here imports torch: Ray preloaded it
    from ray import tune
    tune.report({"pid": os.getpid(), "torch_preloaded": preloaded})

from dnn_search.search import ray_session as session_module
session_module._ray_env()
session_module._embedded_auth()  # as ray_session does before Ray is imported
from ray._private import state as ray_state
ray_asked = []  # whether the node was in the GCS's node table when Ray's blocking lookup ran
blocking_get_node = ray_state.GlobalState.get_node
def get_node(self, node_id):
    ray_asked.append(any(n.get("NodeID") == node_id for n in self.node_table()))
    return blocking_get_node(self, node_id)
ray_state.GlobalState.get_node = get_node
import ray as ray_module
tune_at_init = []  # whether the driver had imported Tune when it started the node
ray_init = ray_module.init
def init(*args, **kwargs):
    tune_at_init.append("ray.tune" in sys.modules)
    return ray_init(*args, **kwargs)
ray_module.init = init

out = {}
root = Path(sys.argv[1])
from ray._private.utils import get_num_cpus
with ray_session(None, True, root / "ok", max_concurrent=get_num_cpus()) as ray:
    out["registered_when_ray_asked"] = list(ray_asked)
    out["tune_imported_before_the_node_started"] = list(tune_at_init)
    from ray import tune
    node = ray_embedded._embedded_node()
    raylet = node.all_processes["raylet"][0].process
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the workers Ray prestarts when this driver registers
        tree = ray_embedded._descendants({p.process.pid for infos in node.all_processes.values() for p in infos})
        if any("default_worker" in cmdline(p) or cmdline(p).startswith("ray::IDLE") for p in tree):
            break
        time.sleep(0.05)
    out["programs"] = sorted(cmdline(p)[:200] for p in tree)
    before = all_pids()
    grid = tune.Tuner(trainable, run_config=tune.RunConfig(storage_path=str(root / "tune"), verbose=0)).fit()
    pid = int(grid[0].metrics["pid"])
    out["torch_preloaded"] = grid[0].metrics["torch_preloaded"]
    out["trial_worker_prestarted"] = pid in before
    inside = ray_embedded._descendants({p.process.pid for infos in node.all_processes.values() for p in infos})
out["raylet_returncode"] = raylet.returncode
out["left_alive"] = sorted(cmdline(p)[:120] for p in inside if alive(p))
try:
    with ray_session(None, True, root / "failing") as ray:
        node = ray_embedded._embedded_node()
        inside = ray_embedded._descendants({p.process.pid for infos in node.all_processes.values() for p in infos})
        raise RuntimeError("the body failed")
except RuntimeError:
    pass
out["left_alive_after_error"] = sorted(cmdline(p)[:120] for p in inside if alive(p))
print("OUTCOME", json.dumps(out), flush=True)
"""


@pytest.fixture(scope="module")
def outcome(tmp_path_factory, search_env):
    import ray

    from dnn_search.search import tune_patches
    if not tune_patches.applies_to(ray.__version__):
        pytest.skip(f"Ray {ray.__version__} is not the release ray_embedded was written for")
    root = tmp_path_factory.mktemp("embedded")
    script = root / "embedded.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(root)], env=search_env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("OUTCOME ")]
    return json.loads(line.split(" ", 1)[1])


def test_the_node_starts_without_autoscaler_log_monitor_or_dashboard(outcome):
    programs = " | ".join(outcome["programs"])
    assert "raylet" in programs and "gcs_server" in programs, programs
    for absent in ("autoscaler/_private/monitor.py", "log_monitor.py", "dashboard/dashboard.py"):
        assert absent not in programs, programs


def test_rays_blocking_lookup_of_the_new_node_finds_it_at_once(outcome):
    # without lean_start's poll, the lookup runs 0.1 s after the raylet starts, before it has
    # registered (it waits for its Python agents first), and sleeps a second before it asks again
    assert outcome["registered_when_ray_asked"] == [True]


def test_a_trial_runs_on_a_worker_ray_prestarted(outcome):
    assert outcome["trial_worker_prestarted"] is True


def test_the_node_starts_before_tune_is_imported_and_its_workers_preload_torch(outcome):
    # a trial per CPU: every prestarted worker hosts one, so torch and Tune are preloaded into them
    # while the driver imports Tune after the node's start
    assert outcome["tune_imported_before_the_node_started"] == [False]
    assert outcome["torch_preloaded"] is True


def test_preloading_only_where_every_prestarted_worker_hosts_a_trial():
    from ray._private.utils import get_num_cpus

    from dnn_search.search import ray_embedded
    cpus = get_num_cpus()
    preload = {"preload_python_modules": ["torch", "ray.tune"]}
    assert ray_embedded.system_config(cpus, 1.0) == preload
    assert ray_embedded.system_config(2 * cpus, 0.5) == preload
    assert ray_embedded.system_config(cpus, 2.0) == {}       # half the workers would idle
    assert ray_embedded.system_config(None, 1.0) == {}       # not known: Ray as it is
    if cpus > 1:
        assert ray_embedded.system_config(cpus - 1, 1.0) == {}


def test_the_variables_set_before_tune_is_imported_are_tunes():
    from ray.tune.execution import class_cache

    from dnn_search.search import ray_embedded
    assert dict(ray_embedded.TUNE_ENV_VARS) == class_cache.DEFAULT_ENV_VARS


def test_the_end_kills_the_whole_node_at_once(outcome):
    assert outcome["raylet_returncode"] == -9  # SIGKILL: stop_at_once ran, not Ray's one-by-one stop
    assert outcome["left_alive"] == []


def test_after_an_error_rays_own_stop_leaves_nothing_either(outcome):
    assert outcome["left_alive_after_error"] == []


def test_other_ray_releases_are_left_alone(monkeypatch):
    from ray._private import services
    from ray._private.node import Node
    from ray._private.parameter import RayParams

    from dnn_search.search import ray_embedded, tune_patches
    monkeypatch.setattr(tune_patches, "applies_to", lambda version: False)
    params, api = RayParams.__init__, Node.start_api_server
    get_node = services.get_node
    with ray_embedded.lean_start():
        assert RayParams.__init__ is params and Node.start_api_server is api and services.get_node is get_node
    assert ray_embedded.apply() is False and ray_embedded.stop_at_once() is False
    assert ray_embedded.system_config(64, 1.0) == {}
    assert ray_embedded.raylet_environment() is None  # no embedded node in this process


def test_a_poll_that_cannot_read_the_node_table_leaves_the_wait_to_ray(monkeypatch):
    from ray._private import state

    from dnn_search.search import ray_embedded

    def unreadable(self):
        raise RuntimeError("the GCS did not answer")
    monkeypatch.setattr(state.GlobalState, "node_table", unreadable)
    # no exception, and no waiting out the timeout: Ray's own lookup runs next and reports
    assert ray_embedded.wait_for_registration("127.0.0.1:1", "ab" * 28, timeout_s=60) is False
