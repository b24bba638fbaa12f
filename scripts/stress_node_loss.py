#!/usr/bin/env python
"""Stress test: lose a Ray node as one of its trials finishes, many times; count the trials lost.

Each run starts a simulated 3-node cluster (`ray.cluster_utils.Cluster`: a head without CPUs and two
1-CPU workers), runs a 4-trial search on it with `--address`, and removes one worker node without
grace when a trial on it reports one of its last steps (read from the trial trace, DNN_SEARCH_TRACE)
-- the moment Ray Tune 2.60 may hand the node's dead cached worker to the next trial. A run *lost a
trial* when trials.parquet does not end with 4 COMPLETED trials of every step.

    python scripts/stress_node_loss.py --runs 10                  # with dnn_search.search.tune_patches
    python scripts/stress_node_loss.py --runs 10 --unpatched      # Tune as it is (the race's effect)
    python scripts/stress_node_loss.py --runs 10 --log docs/evidence/node_loss.txt   # append the table

The README's node-loss counts come from the log this writes (docs/evidence/node_loss.txt).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEPS = 30
SPACE = f"""\
metric: heldout_accuracy
num_samples: 4
max_concurrent: 2
max_failures: 3
sampler: {{type: random, seed: 3}}
scheduler: {{type: none}}
checkpoint_every: 2
compile: false
fixed: {{inner_hidden_size: 16, outer_hidden_size: 8, epochs: 1, steps: {STEPS}, val_fraction: 0.1}}
params:
  outer_lr: {{type: loguniform, low: 0.04, high: 4.0}}
  n_activations: {{type: int, low: 1, high: 3}}
top: 1
"""


def one_run(folder: Path, unpatched: bool) -> dict:
    import pandas as pd
    from ray.cluster_utils import Cluster

    from dnn_search.search import faults
    from dnn_search.search.faults import read_trace
    space = folder / "space.yaml"
    space.write_text(SPACE)
    trace = folder / "trace.jsonl"
    # the trace and the unpatched switch are test-only fault points: this measurement arms them
    env = {**os.environ, faults.GATE_VARIABLE: faults.TEST_TOKEN, "DNN_SEARCH_TRACE": str(trace),
           "DNN_SEARCH_COMPILE": "0", "RAY_USAGE_STATS_ENABLED": "0",
           "DNN_SEARCH_CACHE": str(folder.parent / "cache"), "HOME": str(folder)}
    if unpatched:
        env["DNN_SEARCH_TUNE_PATCHES"] = "0"
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        c.add_node(num_cpus=1)
        lose = c.add_node(num_cpus=1)
        c.wait_for_nodes()
        driver = subprocess.Popen([sys.executable, "-m", "dnn_search", "search", "--space", str(space), "--name", "s",
                                   "--storage", str(folder / "r"), "--quiet", "--address", c.address],
                                  env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        removed_at = None
        deadline = time.time() + 240
        while time.time() < deadline and driver.poll() is None and removed_at is None:
            time.sleep(0.05)
            if trace.exists() and any(e.get("node_id") == lose.node_id and e.get("step", 0) >= STEPS - 1
                                      for e in read_trace(trace) if e["event"] == "step"):
                c.remove_node(lose, allow_graceful=False)
                removed_at = time.time()
        out, _ = driver.communicate(timeout=400)
        trials_path = folder / "r" / "s" / "trials.parquet"
        trials = pd.read_parquet(trials_path) if trials_path.exists() else pd.DataFrame()
        complete = (len(trials) == 4 and (trials.status == "COMPLETED").all()
                    and (trials.steps_done == STEPS).all())
        return {"exit": driver.returncode, "node_removed": removed_at is not None,
                "lost": 0 if complete else int(4 - (trials.status == "COMPLETED").sum()) if len(trials) else 4,
                "retries": int(trials.retries.sum()) if len(trials) else 0,
                "statuses": trials.status.value_counts().to_dict() if len(trials) else {},
                "tail": "" if complete else out[-400:]}
    finally:
        c.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--unpatched", action="store_true", help="measure Ray Tune without dnn_search's patch")
    parser.add_argument("--log", default=None, help="append the result table to this file")
    args = parser.parse_args()
    import ray
    rows = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="nodeloss") as tmp:
            folder = Path(tmp) / "run"
            folder.mkdir()
            started = time.time()
            r = one_run(folder, args.unpatched)
            r["seconds"] = round(time.time() - started, 1)
            rows.append(r)
            print(json.dumps({"run": i + 1, **{k: v for k, v in r.items() if k != "tail"}}), flush=True)
            if r["tail"]:
                print("   " + r["tail"].replace("\n", "\n   "), flush=True)
    lost_runs = sum(r["lost"] > 0 for r in rows)
    summary = (f"{time.strftime('%Y-%m-%d %H:%M')} ray {ray.__version__}, {platform.processor() or platform.machine()}, "
               f"{'UNPATCHED' if args.unpatched else 'patched'}: {args.runs} runs, node removed in "
               f"{sum(r['node_removed'] for r in rows)}, a trial lost in {lost_runs}, "
               f"trials lost {sum(r['lost'] for r in rows)}, retries {sum(r['retries'] for r in rows)}")
    print(summary)
    if args.log:
        with open(args.log, "a") as fh:
            fh.write(summary + "\n" + "".join(f"  run {i + 1}: {json.dumps({k: v for k, v in r.items() if k != 'tail'})}\n"
                                             for i, r in enumerate(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
