#!/usr/bin/env python
"""Whole-search throughput: a search of mnist1d.yaml-sized trials, run for real on this machine.

The space is `search_spaces/mnist1d.yaml` (paper sizes: H=200, Ho=50, 5 inner epochs, n from 1 to
8) with fewer trials and outer steps (`--trials`, `--steps`, no early stopping, so every trial runs
every step) at `--max-concurrent` trials at once, one CPU each. From the search's own tables it
reports outer steps and trials per hour of wall time, and the share of wall time spent outside the
trials' outer steps: Ray start and stop, Tune's trial start-up (worker start, imports, data),
Optuna, checkpoints and reporting -- what a longer search amortises.

    python scripts/bench_search_throughput.py                       # 4 trials x 6 steps, 2 at once
    python scripts/bench_search_throughput.py --write docs/benchmarks_search.md
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument("--write", default=None, help="write the result as markdown to this file")
    parser.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "dnn_search-throughput-cache"),
                        help="kept between runs, so the native kernels' one-time build (30-50 s) and the data "
                             "generation are not measured; run twice when it is new")
    args = parser.parse_args()
    import pandas as pd
    space = yaml.safe_load((REPO / "search_spaces" / "mnist1d.yaml").read_text())
    space.update(num_samples=args.trials, max_concurrent=args.max_concurrent, scheduler={"type": "none"},
                 checkpoint_every=max(1, args.steps // 2))
    space["fixed"]["steps"] = args.steps
    with tempfile.TemporaryDirectory(prefix="throughput") as tmp:
        path = Path(tmp) / "space.yaml"
        path.write_text(yaml.safe_dump(space))
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        started = time.time()
        proc = subprocess.run([sys.executable, "-m", "dnn_search", "search", "--space", str(path), "--name", "tp",
                               "--storage", str(Path(tmp) / "r"), "--quiet", "--cache-dir", args.cache_dir],
                              env=env, cwd=REPO,
                              capture_output=True, text=True)
        wall = time.time() - started
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        trials = pd.read_parquet(Path(tmp) / "r" / "tp" / "trials.parquet")
        steps = pd.read_parquet(Path(tmp) / "r" / "tp" / "steps.parquet")
    done_steps = len(steps)
    step_seconds = float(steps["seconds"].sum())  # time inside outer steps, summed over trials
    busy = step_seconds / args.max_concurrent     # if the concurrent trials overlapped perfectly
    rows = {
        "CPU": f"{cpu_model()} ({os.cpu_count()} cores), torch threads per trial: 1",
        "search": f"{len(trials)} trials x {args.steps} outer steps, {args.max_concurrent} at once, "
                  f"mnist1d.yaml sizes, statuses {trials.status.value_counts().to_dict()}",
        "wall time (whole command)": f"{wall:.1f} s",
        "outer steps per hour": f"{done_steps / wall * 3600:.0f}",
        "trials per hour": f"{len(trials) / wall * 3600:.1f}",
        "mean outer step inside a trial": f"{step_seconds / max(done_steps, 1):.2f} s",
        "share of wall time outside outer steps": f"{max(0.0, 1 - busy / wall) * 100:.0f} %",
    }
    text = "\n".join(f"| {k} | {v} |" for k, v in rows.items())
    table = ("| whole-search throughput | |\n|---|---|\n" + text + "\n")
    print(table)
    if args.write:
        Path(args.write).write_text(
            f"# Whole-search throughput\n\nMade by `python scripts/bench_search_throughput.py --trials {args.trials} "
            f"--steps {args.steps} --max-concurrent {args.max_concurrent} --write {args.write}` on "
            f"{time.strftime('%Y-%m-%d')}. The outside share is 1 - (sum of the trials' outer-step seconds / "
            f"concurrency) / wall time: Ray and Tune start-up, trial start-up, Optuna, checkpoints, reporting.\n\n"
            + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
