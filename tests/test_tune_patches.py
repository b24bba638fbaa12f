"""dnn_search.search.tune_patches against a real Ray Tune: a cached (reused) trial worker that died
while idle. Ray Tune 2.60 ends the next trial as ERROR without a retry; with the fix it is retried."""
from __future__ import annotations

import json
import secrets
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow

# Deterministic: one CPU, one trial at a time, actor reuse on. The searcher itself forces the moment:
# when Tune asks it for trial 2, trial 1 has ended and Tune holds its worker cached for reuse (Tune
# caches the actor when the trial stops, before it asks for the next one); the searcher kills that
# worker there and returns only once the process is gone (a bounded wait on the process table). Tune
# then hands trial 2 the dead cached worker, and its RESET call fails. Tune learns of an idle actor's
# death only through a failed call on it, so nothing else can get in between.
SCRIPT = """
import json, os, shutil, signal, sys, tempfile, time
import psutil
import ray
from ray import tune
from ray.tune.search import Searcher


def kill_and_wait(pid, limit=60.0):
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.02)
    raise RuntimeError(f"trial worker {pid} still alive {limit} s after SIGKILL")


class KillCachedWorkerBeforeSecondTrial(Searcher):
    def __init__(self):
        super().__init__(metric="x", mode="max")
        self.suggested = 0
        self.worker = None

    def suggest(self, trial_id):
        self.suggested += 1
        if self.suggested > 2:
            return Searcher.FINISHED
        if self.suggested == 2:
            assert self.worker is not None, "trial 1 did not complete before trial 2 was asked for"
            kill_and_wait(self.worker)
        return {}

    def on_trial_complete(self, trial_id, result=None, error=False):
        if self.worker is None and result:
            self.worker = int(result["worker_pid"])


def trainable(config):
    tune.report({"x": 1.0, "worker_pid": os.getpid()})


def fit(storage):
    grid = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=KillCachedWorkerBeforeSecondTrial(), num_samples=-1,
                                    max_concurrent_trials=1, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=storage, verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=2))).fit()
    return [{"errored": r.error is not None, "x": (r.metrics or {}).get("x")} for r in grid]


root = sys.argv[1]
ray_temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # Ray's socket paths must stay under 107 bytes
ray.init(num_cpus=1, include_dashboard=False, _temp_dir=ray_temp, log_to_driver=False)
outcome = {"plain": fit(root + "/plain")}  # Tune as it is first: the fix patches Tune's class for good
from dnn_search.search import tune_patches
assert tune_patches.apply()
outcome["patched"] = fit(root + "/patched")
print("OUTCOME", json.dumps(outcome), flush=True)  # Ray may print its own lines around it
ray.shutdown()
shutil.rmtree(ray_temp, ignore_errors=True)
"""


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, search_env):
    """Both runs of the script, Tune as it is and then with the fix, in one Ray session (one start-up):
    each run's trials as (errored, x)."""
    import ray

    from dnn_search.search import tune_patches
    if not tune_patches.applies_to(ray.__version__):
        pytest.skip(f"Ray {ray.__version__} is not the release tune_patches was written for "
                    f"({tune_patches.WRITTEN_FOR[0]}.{tune_patches.WRITTEN_FOR[1]}, see requirements.lock): "
                    "the patch leaves Tune alone there")
    root = tmp_path_factory.mktemp("reuse")
    script = root / "reuse_dead_worker.py"
    script.write_text(SCRIPT)
    env = {**search_env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    proc = subprocess.run([sys.executable, str(script), str(root)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("OUTCOME ")]
    return json.loads(line.split(" ", 1)[1])


def test_dead_cached_worker_is_retried(outcomes):
    assert outcomes["patched"] == [{"errored": False, "x": 1.0}] * 2


def test_patch_is_only_for_its_ray_release():
    from dnn_search.search import tune_patches
    assert tune_patches.applies_to("2.60.0") and tune_patches.applies_to("2.60.3")
    assert not tune_patches.applies_to("2.61.0") and not tune_patches.applies_to("2.59.1")
    assert not tune_patches.applies_to("3.60.0")


def test_unpatched_tune_still_loses_the_trial(outcomes):
    """The race the fix is for, on the Ray release the patch was written for (the one the lock pins).
    On another Ray this canary skips and says which: the patch then leaves Tune alone anyway."""
    assert outcomes["plain"] == [{"errored": False, "x": 1.0}, {"errored": True, "x": None}]
