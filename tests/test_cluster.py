"""A simulated 3-node Ray cluster on this machine: the search joins it with --address, fractional
GPUs let two trials share each worker's (logical) GPU, and trials land on both workers."""
from __future__ import annotations

import pandas as pd
import pytest

from conftest import run_cli, tiny_space

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(search_env):
    from ray.cluster_utils import Cluster
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "num_gpus": 0,
                                                      "include_dashboard": False})
    workers = [c.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    c.wait_for_nodes()
    try:
        yield c, [w.node_id for w in workers]
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
    c, worker_ids = cluster
    space = tiny_space(tmp_path, num_samples=6, max_concurrent=4, steps=4)
    proc = run_cli(["search", "--space", space, "--name", "multi", "--storage", tmp_path / "r", "--quiet",
                    "--address", c.address, "--gpus-per-trial", "0.5", "--cpus-per-trial", "0.5"], search_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "shared" in proc.stderr  # local storage path on a multi-node cluster: said clearly
    trials = pd.read_parquet(tmp_path / "r" / "multi" / "trials.parquet")
    assert len(trials) == 6 and set(trials.status) <= {"COMPLETED", "PRUNED"}
    assert set(trials.node_id) == set(worker_ids)  # both workers, never the CPU-less head
    for node, group in trials.groupby("node_id"):
        intervals = list(zip(group.started_at, group.ended_at))
        assert _max_overlap(intervals) <= 2, (node, intervals)
    # the cluster is still up: the command only disconnected from it
    import ray
    ray.init(address=c.address)
    try:
        assert len([n for n in ray.nodes() if n["Alive"]]) == 3
    finally:
        ray.shutdown()


def test_gpu_request_beyond_any_node(cluster, tmp_path, search_env):
    c, _ = cluster
    proc = run_cli(["search", "--space", tiny_space(tmp_path), "--name", "big", "--storage", tmp_path / "r",
                    "--address", c.address, "--gpus-per-trial", "1.5"], search_env, timeout=120)
    assert proc.returncode == 2
    assert "no node has that many GPUs (the most on one node: 1)" in proc.stderr
