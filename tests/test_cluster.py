"""A simulated 3-node Ray cluster on this machine: the search joins it with --address, fractional
GPUs let two trials share each worker's (logical) GPU, and trials land on both workers."""
from __future__ import annotations


import pandas as pd
import pytest

from conftest import run_cli, temporary_environment, tiny_space
from dnn_search.search.faults import TRACE_VARIABLE, read_trace

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(search_env, tmp_path_factory):
    """The cluster's trial workers trace every step (dnn_search/search/faults.py) into CLUSTER_TRACE: they
    inherit the environment of the raylets started here, not the search driver's."""
    from ray.cluster_utils import Cluster
    trace = tmp_path_factory.mktemp("cluster") / "trace.jsonl"
    with temporary_environment(**{TRACE_VARIABLE: str(trace)}):
        c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "num_gpus": 0,
                                                          "include_dashboard": False})
        workers = [c.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
        c.wait_for_nodes()
    try:
        yield c, [w.node_id for w in workers], trace
    finally:
        c.shutdown()


def _max_overlap(intervals) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    live = best = 0
    for _, delta in events:
        live += delta
        best = max(best, live)
    return best


def test_search_spreads_over_workers(cluster, tmp_path, search_env):
    """Two trials share each worker's one logical GPU (--gpus-per-trial 0.5), never three: CPUs
    (0.25 a trial, 1 a node) would allow four, so the GPU is what limits. Who ran where, when and on
    which GPU comes from the trials themselves (the test-only trace, dnn_search/search/faults.py). All six
    trials may start at once (max_concurrent 6), so only the GPU request keeps a third one off a GPU."""
    c, worker_ids, trace = cluster
    space = tiny_space(tmp_path, num_samples=6, max_concurrent=6, steps=4)
    proc = run_cli(["search", "--space", space, "--name", "multi", "--storage", tmp_path / "r", "--quiet",
                    "--address", c.address, "--gpus-per-trial", "0.5", "--cpus-per-trial", "0.25"],
                   search_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "shared" in proc.stderr  # local storage path on a multi-node cluster: said clearly
    trials = pd.read_parquet(tmp_path / "r" / "multi" / "trials.parquet")
    assert len(trials) == 6 and set(trials.status) <= {"COMPLETED", "PRUNED"}
    assert set(trials.node_id) == set(worker_ids)  # both workers, never the CPU-less head
    steps = [e for e in read_trace(trace) if e["event"] == "step" and e["trial_id"] in set(trials.trial_id)]
    assert {e["trial_id"] for e in steps} == set(trials.trial_id)
    started = dict(zip(trials.trial_id, trials.started_at))
    gpu_of, last = {}, {}
    for e in steps:
        assert len(e["gpu_ids"]) == 1, e  # a fraction of one GPU, never none
        gpu_of.setdefault(e["trial_id"], set()).add((e["node_id"], str(e["gpu_ids"][0])))
        last[e["trial_id"]] = max(last.get(e["trial_id"], 0.0), e["time"])
    assert all(len(g) == 1 for g in gpu_of.values()), gpu_of
    by_gpu = {}
    for tid, (gpu,) in gpu_of.items():
        by_gpu.setdefault(gpu, []).append((started[tid], last[tid]))  # the trial's own clock: start, last step
    peaks = {gpu: _max_overlap(intervals) for gpu, intervals in by_gpu.items()}
    assert {node for node, _ in by_gpu} == set(worker_ids)
    assert max(peaks.values()) == 2 and all(p <= 2 for p in peaks.values()), (peaks, by_gpu)
    # the cluster is still up: the command only disconnected from it
    import ray
    ray.init(address=c.address)
    try:
        assert len([n for n in ray.nodes() if n["Alive"]]) == 3
    finally:
        ray.shutdown()


def test_gpu_request_beyond_any_node(cluster, tmp_path, search_env):
    c, _, _ = cluster
    proc = run_cli(["search", "--space", tiny_space(tmp_path), "--name", "big", "--storage", tmp_path / "r",
                    "--address", c.address, "--gpus-per-trial", "1.5"], search_env, timeout=120)
    assert proc.returncode == 2
    assert "no node has that many GPUs (the most on one node: 1)" in proc.stderr
