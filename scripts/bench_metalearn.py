#!/usr/bin/env python
"""Benchmark one outer meta-learning step: `--impl fast` against `--impl reference`.

Each (implementation, n) runs in its own process so that peak memory is that configuration's
alone. A process does one warm-up step (compilation, allocator warm-up), then times --steps more
and reports their median (wall clock, and CPU time of the process, which is steadier on a
shared machine), the peak resident memory of the whole process, and the resident
memory after each step (flat = no graph kept alive across steps). Defaults are the paper's sizes
on MNIST-1D (H=200, Ho=50, 5 epochs of batch 200 over the 90 % training split).

    python scripts/bench_metalearn.py                  # n in 1, 2, 16; markdown table on stdout
    python scripts/bench_metalearn.py --n 2 --steps 5
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(args) -> None:
    import torch
    from dnn_search.data import load_dataset, split_validation
    from dnn_search.metalearn import MetaConfig, MetaLearner
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset("MNIST1D")
    split = split_validation(data.x_train, data.y_train, 0.1, 0)
    learner = MetaLearner(MetaConfig(n_activations=args.n, impl=args.impl), *split, data.num_classes)
    rss_setup = rss_mb()
    started = time.perf_counter()
    learner.step()
    warmup = time.perf_counter() - started
    times, cpu, rss = [], [], []
    for _ in range(args.steps):
        cpu_start = time.process_time()
        times.append(learner.step().seconds)
        cpu.append(time.process_time() - cpu_start)
        rss.append(rss_mb())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"impl": args.impl, "n": args.n, "warmup_s": warmup, "times": times,
                      "median_s": statistics.median(times), "median_cpu_s": statistics.median(cpu), "rss_setup_mb": rss_setup, "rss_after_steps_mb": rss,
                      "peak_rss_mb": peak, "threads": torch.get_num_threads()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[1, 2, 16], help="numbers of activations")
    parser.add_argument("--impl", nargs="+", default=["fast", "reference"], choices=["fast", "reference"])
    parser.add_argument("--steps", type=int, default=3, help="timed outer steps after the warm-up (>= 3)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.n, args.impl = args.n[0], args.impl[0]
        return worker(args)
    results = []
    for n in args.n:
        for impl in args.impl:
            cmd = [sys.executable, __file__, "--worker", "--n", str(n), "--impl", impl, "--steps", str(args.steps),
                   "--threads", str(args.threads)]
            print(f"running {impl} n={n} ...", file=sys.stderr, flush=True)
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"{impl} n={n} failed:\n{done.stderr}")
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    by_key = {(r["impl"], r["n"]): r for r in results}
    print("| n | impl | median s/step (wall) | median CPU s/step | steps timed | peak RSS (MB) "
          "| RSS after each step (MB) | speed-up vs reference (wall, CPU) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        ref = by_key.get(("reference", r["n"]))
        ratio = (f"{ref['median_s'] / r['median_s']:.2f}x, {ref['median_cpu_s'] / r['median_cpu_s']:.2f}x"
                 if ref and r["impl"] == "fast" else "")
        after = ", ".join(f"{v:.0f}" for v in r["rss_after_steps_mb"])
        print(f"| {r['n']} | {r['impl']} | {r['median_s']:.3f} | {r['median_cpu_s']:.3f} | {len(r['times'])} | "
              f"{r['peak_rss_mb']:.0f} | "
              f"{after} | {ratio} |")
    fast = {r["n"]: r["median_s"] for r in results if r["impl"] == "fast"}
    if 1 in fast and 16 in fast:
        print(f"\nfast: n=16 / n=1 step time = {fast[16] / fast[1]:.2f}")


if __name__ == "__main__":
    main()
