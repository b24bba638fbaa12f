"""Four shortcuts for the embedded local Ray (the default session), which its start and its stop
otherwise pay on every command (docs/benchmarks_search.md, issue 21 point 3, measured on 2 cores).

**Trial actors on the workers Ray prestarts.** A new local Ray starts one idle worker per CPU
while `ray.init` waits, so that the first tasks need not boot one. Tune registers every trainable
with a runtime env, `{"env_vars": {"PL_DISABLE_FORK": "1", ...}}`, and Ray keeps workers of
different runtime envs apart: the prestarted workers never serve a trial, and each trial slot
boots a fresh worker through Ray's runtime-env set-up (two Python starts, then Tune's and torch's
imports), 0.7 s later on the first trial's clock. On an embedded node the workers inherit the
environment of the raylet, which inherited this driver's when it started: where every variable
Tune would set already has that value in the raylet's environment, the runtime env changes nothing
in the worker, and the trainable is registered without it (`prepare_environment` sets Tune's
defaults, `TUNE_ENV_VARS`, in this process before `ray.init`, so that they are inherited). Anywhere
else (a cluster, a variable that differs, no /proc) Tune's runtime env stays.

**Trial workers that import torch and Tune while the driver sets up.** Each trial's worker imports
Tune and torch before its first step (~1.9 CPU-s here), and until the trials are placed the driver
works alone on one core: importing Tune, building the Tuner. `ray_session` starts an embedded node
before the driver imports Tune, and where every worker Ray prestarts (one per CPU) will host a
trial (`system_config`: trials at once >= the node's CPUs), Ray preloads torch and Tune into them
(`PRELOADED`), so the two overlap: the first trial's entry 5.28 s -> 4.91 s after the command's
start (median of five paired runs, 2 trials of one step; preloading with Tune imported before the
node's start gained nothing, 5.91 -> 5.86 s, both cores being busy with the node's start then).
Where fewer trials than CPUs run at once, idle workers would each hold ~0.3 GB of modules for
nothing: no preloading there. Only third-party modules are preloaded, so that a worker can never
hold another checkout's `dnn_search`.

**Stopping at once.** `ray.shutdown` stops the node's processes one after the other, each with
SIGTERM and up to a second to exit (1.35 s here). After a command whose work is all written, the
embedded node holds nothing a graceful exit would save, so `stop_at_once` makes that shutdown
SIGKILL the node's processes and everything they started, all at once (the whole `ray.shutdown`
then takes 0.3 s, the driver's own disconnect included). The session uses
it only when its body ended without an error; otherwise Ray's own stop runs.

**A lean start.** A new local Ray also starts an autoscaler monitor, a log monitor and a dashboard
head (the last even with `include_dashboard=False`, and `ray.init` polls until it has registered):
three Python processes taking ~0.7 CPU-s each while the node, the driver and the first trials'
workers start on the same cores. An embedded node never scales, the session streams no worker
logs to the driver (`log_to_driver=False`), and nothing here uses Ray's dashboard, job or state
APIs: `lean_start` starts the node without the three. Measured here, the first trials start 1.5 s
sooner (median of five paired runs, 2 trials of one step each: 7.0 s -> 5.4 s).
`ray.init` then waits for the new raylet to register with the GCS (the raylet first waits for its
two Python agents, ~0.45 s here) by asking the GCS with a blocking call that, when the node is
not there yet, sleeps a whole second before it asks again: `lean_start` polls the GCS's node
table every 20 ms first, so that the blocking call finds the node at once (`ray.init` 1.73 s ->
1.15 s here, three runs each).

All four touch private names of one Ray minor release (`tune_patches.WRITTEN_FOR`): on any other Ray,
or where a name is missing, they do nothing and Ray behaves as it does without them.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from types import MappingProxyType

from dnn_search.search import tune_patches

log = logging.getLogger(__name__)


def _applies() -> bool:
    import ray
    return tune_patches.applies_to(ray.__version__)


def _tune_env_module():
    """Tune's trainable registration module, where this is the Ray release written for; else None."""
    if not _applies():
        return None
    try:
        from ray.tune.execution import class_cache
    except ImportError:
        return None
    if not all(hasattr(class_cache, name) for name in ("DEFAULT_ENV_VARS", "ENV_VARS_TO_PROPAGATE", "_ActorClassCache")):
        return None
    return class_cache


def tune_env_vars() -> dict[str, str] | None:
    """The variables Tune puts in each trainable's runtime env (None where this Tune is unknown)."""
    class_cache = _tune_env_module()
    if class_cache is None:
        return None
    env = dict(class_cache.DEFAULT_ENV_VARS)
    env.update({k: os.environ[k] for k in class_cache.ENV_VARS_TO_PROPAGATE if k in os.environ})
    return env


# Tune's DEFAULT_ENV_VARS in the release written for, known here so that the node can start before
# Tune is imported (module doc); tests/test_ray_embedded.py holds it to Tune's. Were it ever to
# differ, the trainable would keep its runtime env (`_registering_without_env` compares with Tune's).
TUNE_ENV_VARS = MappingProxyType({"PL_DISABLE_FORK": "1"})
PRELOADED = ("torch", "ray.tune")


def prepare_environment() -> None:
    """Before an embedded `ray.init`: Tune's default trainable variables into this process's
    environment, for the raylet and its workers to inherit (a value already set is kept)."""
    if _applies():
        for key, value in TUNE_ENV_VARS.items():
            os.environ.setdefault(key, value)


def system_config(max_concurrent: int | None, cpus_per_trial: float) -> dict:
    """Ray settings of an embedded node that runs at most MAX_CONCURRENT trials of CPUS_PER_TRIAL at
    once: torch and Tune preloaded into the workers Ray prestarts, where each of them will host a
    trial (module doc); nothing otherwise (MAX_CONCURRENT None: not known)."""
    if not max_concurrent or not _applies():
        return {}
    try:
        from ray._private.utils import get_num_cpus  # the node's CPUs: one prestarted worker each
        cpus = get_num_cpus()
    except (ImportError, AttributeError, ValueError, OSError) as exc:
        log.debug("no preloading: the node's CPU count is unknown (%s)", exc)
        return {}
    slots = max_concurrent if cpus_per_trial <= 0 else min(max_concurrent, int(cpus / cpus_per_trial + 1e-9))
    return {"preload_python_modules": list(PRELOADED)} if slots >= cpus else {}


def _embedded_node():
    """Ray's node object when this driver started the node itself (embedded), else None."""
    try:
        from ray._private import worker
    except ImportError:
        return None
    node = getattr(worker, "_global_node", None)
    processes = getattr(node, "all_processes", None)
    if not isinstance(processes, dict) or not processes.get("raylet"):
        return None  # joined a running cluster (connect-only), or a Ray whose node looks different
    return node


def raylet_environment() -> dict[str, str] | None:
    """The environment of the embedded node's raylet (which its workers inherit), read from /proc;
    None on a cluster or where it cannot be read."""
    node = _embedded_node()
    if node is None:
        return None
    try:
        pid = node.all_processes["raylet"][0].process.pid
        raw = (Path("/proc") / str(pid) / "environ").read_bytes()
    except (AttributeError, IndexError, OSError):
        return None
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def _registering_without_env(original):
    def get(self, trainable_cls):
        if trainable_cls not in self._cache:
            wanted, inherited = tune_env_vars(), raylet_environment()
            if wanted is not None and inherited is not None and all(inherited.get(k) == v for k, v in wanted.items()):
                import ray
                self._cache[trainable_cls] = ray.remote(trainable_cls)
        return original(self, trainable_cls)
    return get


def apply() -> bool:
    """Install the trainable registration of the module doc once per process; True when in place.
    It acts only on an embedded node whose raylet already has Tune's variables."""
    class_cache = _tune_env_module()
    if class_cache is None:
        return False
    cache_cls = class_cache._ActorClassCache
    if not getattr(cache_cls, "_dnn_search_prestarted", False):
        cache_cls.get = _registering_without_env(cache_cls.get)
        cache_cls._dnn_search_prestarted = True
    return True


REGISTRATION_POLL_S = 0.02
REGISTRATION_WAIT_S = 30.0  # Ray's own limit for a new raylet to register (node.py)


def wait_for_registration(gcs_address: str, node_id: str, timeout_s: float = REGISTRATION_WAIT_S) -> bool:
    """Poll the GCS's node table until NODE_ID (hex) is in it; True once it is. False at the timeout
    or where the table cannot be read: Ray's own lookup runs next either way, and it decides (and
    reports any real failure of the GCS) as it would without this poll, which is why any error of
    the poll itself is only logged."""
    try:
        from ray._private import services, state
        table = state.GlobalState()
        table._initialize_global_state(services._get_gcs_client_options(gcs_address))
    except (ImportError, AttributeError) as exc:
        log.debug("no poll for the raylet's registration: %s", exc)
        return False
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if any(node.get("NodeID") == node_id for node in table.node_table()):
                return True
            time.sleep(REGISTRATION_POLL_S)
    except Exception as exc:  # noqa: BLE001 -- Ray's own lookup follows (docstring)
        log.debug("poll for the raylet's registration stopped: %s", exc)
        return False
    finally:
        try:
            table.disconnect()
        except Exception as exc:  # noqa: BLE001 -- a failed disconnect must not fail the start
            log.debug("could not disconnect the poll's GCS client: %s", exc)
    return False


@contextlib.contextmanager
def lean_start():
    """Around an embedded `ray.init`: the node starts without its autoscaler monitor, log monitor
    and dashboard head, and the wait for its raylet to register polls (module doc). Ray's classes
    and functions are as they were once the block ends."""
    try:
        from ray._private import services
        from ray._private.node import Node
        from ray._private.parameter import RayParams
    except ImportError:
        Node = RayParams = services = None
    if RayParams is None or not _applies() or not callable(getattr(Node, "start_api_server", None)) \
            or not callable(getattr(services, "get_node", None)):
        yield
        return
    original_params, original_api, original_get_node = RayParams.__init__, Node.start_api_server, services.get_node

    def params(self, *args, **kwargs):
        original_params(self, *args, **kwargs)
        self.no_monitor = True
        self.include_log_monitor = False

    def no_api_server(self, **_ignored):
        self._webui_url = None

    def get_node_once_registered(gcs_address, node_id):
        wait_for_registration(gcs_address, node_id)
        return original_get_node(gcs_address, node_id)

    RayParams.__init__, Node.start_api_server = params, no_api_server
    services.get_node = get_node_once_registered
    try:
        yield
    finally:
        RayParams.__init__, Node.start_api_server = original_params, original_api
        services.get_node = original_get_node


def _stat_fields(pid: int | str) -> list[str]:
    """The fields of /proc/PID/stat after the command name (the state first, then the parent's PID);
    [] where there is no such process or /proc cannot be read."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def process_state(pid: int) -> str | None:
    """PID's state letter from /proc (R, S, D, Z, ...); None where it cannot be read."""
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def _descendants(roots: set[int]) -> set[int]:
    """ROOTS and every live process below them, from /proc (parents read before anything is killed)."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        fields = _stat_fields(proc.name)
        if len(fields) > 1 and fields[1].isdigit():
            children.setdefault(int(fields[1]), []).append(int(proc.name))
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found and pid != os.getpid():
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


STOP_WAIT_S = 5.0


def ended(pid: int) -> bool:
    """PID has exited: no such process, or only its zombie (or dead) entry is left for its parent to
    reap. The one test of it: the stop here, and ray_session's search for a killed driver's Ray."""
    return process_state(pid) in (None, "Z", "X")


def stop_at_once() -> bool:
    """Make the coming `ray.shutdown` SIGKILL the embedded node's processes and their children at
    once instead of stopping them one by one (module doc). True when it will."""
    node = _embedded_node() if _applies() else None
    if node is None or not callable(getattr(node, "kill_all_processes", None)):
        return False

    def kill_all_processes(**_ignored) -> None:
        popens = [info.process for infos in node.all_processes.values() for info in infos
                  if getattr(info, "process", None) is not None]
        killed = _descendants({p.pid for p in popens if p.poll() is None})
        for pid in killed:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + STOP_WAIT_S
        for popen in popens:
            try:
                popen.wait(timeout=max(0.0, deadline - time.monotonic()))  # reap our own children
            except subprocess.TimeoutExpired:
                pass
        # the workers are the raylet's children: wait until the kernel has ended them too (a worker
        # holding torch takes a moment to release its memory), so that nothing of the node runs on
        while (left := [pid for pid in killed if not ended(pid)]) and time.monotonic() < deadline:
            time.sleep(0.01)
        if left:  # stuck in the kernel (uninterruptible sleep): say so, go on
            log.warning("Ray process(es) %s did not end within %g s of SIGKILL; left to the system",
                        ", ".join(map(str, left)), STOP_WAIT_S)

    node.kill_all_processes = kill_all_processes
    return True
