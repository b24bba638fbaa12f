#!/usr/bin/env python
"""Benchmark one outer meta-learning step: `--impl fast` against `--impl reference`, and against
the fast path of an older commit (`--baseline REF`), all in one run so that ratios are fair on a
shared machine. Writes docs/benchmarks.md (machine, versions, date, table, ratios).

Each (implementation, sizes, n) runs in its own process so that peak memory is that
configuration's alone. A process does one warm-up step (compilation, native build or load,
allocator warm-up), then times --steps more and reports their median (wall clock, and CPU time
of the process, which is steadier on a shared machine), the peak resident memory of the whole
process, and the resident memory after each step (flat = no graph kept alive across steps).
`--baseline REF` checks REF out into a git worktree under the temp dir (kept for reuse) and runs
the same worker with PYTHONPATH pointing there, so "old fast" is that commit's `dnn_search`.
Sizes: the paper's defaults on MNIST-1D (H=200, Ho=50, 5 epochs of batch 200 = 90 inner steps)
for n in --n, and the smoke sizes (search_spaces/smoke.yaml: H=100, Ho=20, 2 epochs) for n in
--smoke-n. `--tasks` adds rows for the physics datasets (VanDerPol, HenonHeiles) at their notebook sizes
(H=100, Ho=50, 5 epochs of batch 200) for n in --physics-n, fast (the HNN's: the f'/f'' kernel) and
reference; an implementation a task does not have is left out.

    python scripts/bench_metalearn.py --tasks VanDerPol HenonHeiles --n --smoke-n --threads 1 --no-doc

    python scripts/bench_metalearn.py --baseline 5da0317          # everything, writes the doc
    python scripts/bench_metalearn.py --n 2 --smoke-n --impl fast reference --no-doc
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZES = {"default": {}, "smoke": {"inner_hidden_size": 100, "outer_hidden_size": 20, "epochs": 2},
         "physics": {"inner_hidden_size": 100, "outer_hidden_size": 50},
         "images": {"epochs": 1}}
TASK_SIZES = {"VanDerPol": "physics", "HenonHeiles": "physics", "MNIST": "images", "CIFAR": "images"}
IMAGE_SHAPES = {"MNIST": (60000, 10000), "CIFAR": (50000, 10000)}  # training, test images


def synthetic_images(folder: Path) -> Path:
    """Full-sized MNIST (IDX) and CIFAR-10 (binary) files of seeded random pixels and labels, in the
    standard formats `dnn_search.data` reads: a step's cost depends on the shapes only, and the real
    files cannot be downloaded here. Written once per folder."""
    import numpy as np
    rng = np.random.default_rng(0)
    mnist, cifar = folder / "MNIST", folder / "CIFAR"
    if not (mnist / "t10k-labels-idx1-ubyte").is_file():
        mnist.mkdir(parents=True, exist_ok=True)
        for split, count in zip(("train", "t10k"), IMAGE_SHAPES["MNIST"]):
            header = np.array([2051, count, 28, 28], dtype=">i4").tobytes()
            (mnist / f"{split}-images-idx3-ubyte").write_bytes(
                header + rng.integers(0, 256, count * 784, dtype=np.uint8).tobytes())
            (mnist / f"{split}-labels-idx1-ubyte").write_bytes(
                np.array([2049, count], dtype=">i4").tobytes() + rng.integers(0, 10, count, dtype=np.uint8).tobytes())
    if not (cifar / "test_batch.bin").is_file():
        cifar.mkdir(parents=True, exist_ok=True)
        names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
        for name in names:
            records = rng.integers(0, 256, (10000, 1 + 3072), dtype=np.uint8)
            records[:, 0] %= 10
            (cifar / name).write_bytes(records.tobytes())
    return folder


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(args) -> None:
    import torch
    from dnn_search.data import load_dataset
    from dnn_search.metalearn import MetaConfig, MetaLearner
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset, args.data_path)
    values = dict(SIZES[args.sizes], n_activations=args.n, impl=args.impl, dataset=args.dataset, val_fraction=0.1,
                  seed=0)
    learner = MetaLearner.from_dataset(MetaConfig.from_dict(values), data)
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
    print(json.dumps({"impl": args.impl, "n": args.n, "sizes": args.sizes, "dataset": args.dataset,
                      "warmup_s": warmup, "times": times,
                      "median_s": statistics.median(times), "median_cpu_s": statistics.median(cpu),
                      "rss_setup_mb": rss_setup, "rss_after_steps_mb": rss, "peak_rss_mb": peak,
                      "threads": torch.get_num_threads()}))


def canonical(dataset: str) -> str:
    sys.path.insert(0, str(REPO))
    from dnn_search.data import canonical_name
    name = canonical_name(dataset)
    if name not in TASK_SIZES:
        sys.exit(f"--tasks {dataset}: one of {', '.join(TASK_SIZES)}")
    return name


def has_fast_path(dataset: str) -> bool:
    sys.path.insert(0, str(REPO))
    from dnn_search import metalearn
    from dnn_search.tasks import task_for_dataset
    return metalearn.has_fast_path(task_for_dataset(dataset))


def baseline_tree(ref: str) -> tuple[Path, str]:
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", f"{ref}^{{commit}}"], check=True,
                         capture_output=True, text=True).stdout.strip()
    path = Path(tempfile.gettempdir()) / f"dnn_search-baseline-{sha[:12]}"
    if not (path / "dnn_search").is_dir():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), sha], check=True,
                       capture_output=True, text=True)
    return path, sha


def machine() -> dict:
    info = {"cpu": platform.processor() or platform.machine(), "flags": ""}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and info["cpu"] in ("", platform.machine(), platform.processor()):
                    info["cpu"] = value.strip()
                if key.strip() == "flags" and not info["flags"]:
                    info["flags"] = value.strip()
    except OSError:
        pass
    import torch
    info.update(cores=os.cpu_count(), torch=torch.__version__, python=platform.python_version(),
                date=datetime.datetime.now().astimezone().isoformat(timespec="minutes"))
    return info


def run_worker(tree: Path, impl: str, sizes: str, n: int, args, label: str, threads: int,
               dataset: str = "MNIST1D") -> dict:
    cmd = [sys.executable, __file__, "--worker", "--n", str(n), "--impl", impl, "--sizes", sizes,
           "--steps", str(args.steps), "--threads", str(threads)]
    if dataset != "MNIST1D":  # (an old commit's worker, --baseline, knows MNIST-1D only)
        cmd += ["--dataset", dataset]
    if dataset in IMAGE_SHAPES:
        cmd += ["--data-path", str(synthetic_images(Path(tempfile.gettempdir()) / "dnn_search-bench-images")
                                   / ("MNIST" if dataset == "MNIST" else "CIFAR"))]
    env = dict(os.environ, PYTHONPATH=str(tree))
    print(f"running {label} {dataset} {sizes} n={n} threads={threads or 'default'} ...", file=sys.stderr,
          flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(tree))
    if done.returncode != 0:
        sys.exit(f"{label} {sizes} n={n} failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["label"] = label
    return result


def concurrency(args) -> None:
    """One fast worker alone, then K at once: per-process step time and total throughput."""
    n = args.n[0] if args.n else 2
    cmd = [sys.executable, __file__, "--worker", "--n", str(n), "--impl", "fast", "--sizes", "default",
           "--steps", str(args.steps), "--threads", str(args.threads)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    rows = []
    for k in (1, args.concurrent):
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) for _ in range(k)]
        outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
        step = statistics.mean(o["median_s"] for o in outs)
        rows.append(f"| {k} | {outs[0]['threads']} | {step:.3f} | {k / step:.2f} |")
    print("| processes | threads each | mean median s/step | outer steps/s (all processes) |")
    print("|---|---|---|---|")
    print("\n".join(rows))


def table(results: list[dict]) -> list[str]:
    for r in results:
        r.setdefault("dataset", "MNIST1D")  # an old commit's worker (--baseline) does not say
    by_key = {(r["label"], r["dataset"], r["sizes"], r["n"], r["threads"]): r for r in results}
    lines = ["| dataset | sizes | n | threads | impl | median s/step (wall) | median CPU s/step | peak RSS (MB) "
             "| RSS after steps 1..3 (MB) | vs reference (wall, CPU) | vs old fast (wall, CPU) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def ratio(other, r):
        if other is None or other is r:
            return ""
        return f"{other['median_s'] / r['median_s']:.2f}x, {other['median_cpu_s'] / r['median_cpu_s']:.2f}x"
    for r in results:
        key = (r["dataset"], r["sizes"], r["n"], r["threads"])
        ref = by_key.get(("reference", *key)) if r["label"] != "reference" else None
        old = by_key.get(("old fast", *key)) if r["label"] == "fast" else None
        after = ", ".join(f"{v:.0f}" for v in r["rss_after_steps_mb"][:3])
        lines.append(f"| {r['dataset']} | {r['sizes']} | {r['n']} | {r['threads']} | {r['label']} | "
                     f"{r['median_s']:.3f} | "
                     f"{r['median_cpu_s']:.3f} | "
                     f"{r['peak_rss_mb']:.0f} | {after} | {ratio(ref, r)} | {ratio(old, r)} |")
    lines.append("")
    for threads in sorted({r["threads"] for r in results}):
        for label in ("fast", "old fast", "reference"):
            times = {r["n"]: r["median_s"] for r in results
                     if r["label"] == label and r["sizes"] == "default" and r["threads"] == threads
                     and r["dataset"] == "MNIST1D"}
            if 1 in times and 16 in times:
                lines.append(f"- {label}, {threads} thread(s): n=16 / n=1 step time (defaults) = "
                             f"{times[16] / times[1]:.2f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="*", default=[1, 2, 16], help="numbers of activations (defaults)")
    parser.add_argument("--smoke-n", type=int, nargs="*", default=[1, 2], help="numbers of activations (smoke sizes)")
    parser.add_argument("--impl", nargs="+", default=["fast", "reference"], choices=["fast", "reference"])
    parser.add_argument("--tasks", nargs="*", default=[], metavar="DATASET",
                        help="also time these datasets: VanDerPol, HenonHeiles (H=100, Ho=50, 5 epochs), MNIST, "
                             "CIFAR (H=200, Ho=50, 1 epoch, over synthetic pixels of the real shapes)")
    parser.add_argument("--physics-n", type=int, nargs="*", default=[2],
                        help="numbers of activations for the --tasks rows")
    parser.add_argument("--dataset", default="MNIST1D", help=argparse.SUPPRESS)
    parser.add_argument("--data-path", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--baseline", metavar="REF", help="also time the fast path of this git commit")
    parser.add_argument("--steps", type=int, default=3, help="timed outer steps after the warm-up (>= 3)")
    parser.add_argument("--threads", type=int, nargs="+", default=[0],
                        help="torch threads per process, one table block each (0: torch's choice)")
    parser.add_argument("--concurrent", type=int, default=0, metavar="K",
                        help="instead of the table: time K fast workers started at once (one per core, as "
                             "Ray packs trials) against one alone, at the default sizes, n = first --n")
    parser.add_argument("--doc", default=str(REPO / "docs" / "benchmarks.md"), help="markdown file written")
    parser.add_argument("--no-doc", action="store_true", help="print the table only")
    parser.add_argument("--sizes", default="default", choices=sorted(SIZES), help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.n, args.impl, args.threads = args.n[0], args.impl[0], args.threads[0]
        return worker(args)
    if args.concurrent:
        args.threads = args.threads[0]
        return concurrency(args)
    runs = ([("MNIST1D", "default", n) for n in args.n] + [("MNIST1D", "smoke", n) for n in args.smoke_n]
            + [(canonical(dataset), TASK_SIZES[canonical(dataset)], n) for dataset in args.tasks
               for n in args.physics_n])
    base = baseline_tree(args.baseline) if args.baseline else None
    results = []
    for threads in args.threads:
        for dataset, sizes, n in runs:
            for impl in args.impl:
                if impl == "fast" and not has_fast_path(dataset):
                    print(f"{dataset}: no fast path, fast row left out", file=sys.stderr)
                    continue
                results.append(run_worker(REPO, impl, sizes, n, args, impl, threads, dataset))
                if impl == "fast" and base and dataset == "MNIST1D":
                    results.append(run_worker(base[0], "fast", sizes, n, args, "old fast", threads))
    lines = table(results)
    print("\n".join(lines))
    if args.no_doc:
        return
    info = machine()
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    doc = ["# Meta-learning step benchmark", "",
           f"Written by `scripts/bench_metalearn.py` on {info['date']} (HEAD {head}"
           + (f", old fast = {base[1][:10]}" if base else "") + ").", "",
           f"- CPU: {info['cpu']}, {info['cores']} logical cores visible",
           f"- CPU flags: {info['flags']}",
           f"- torch {info['torch']}, Python {info['python']}; torch threads per process in the `threads` "
           "column (search trials run with one thread per CPU they are given)",
           f"- {args.steps} timed outer steps per row after one warm-up step; median shown. Each row is its own "
           "process; ratios compare rows of this one run (the machine may be shared, absolute times are noisy).",
           "- sizes `default`: MNIST-1D, H=200, Ho=50, 5 epochs of batch 200 (90 inner steps); "
           "`smoke`: H=100, Ho=20, 2 epochs; `physics` (VanDerPol, HenonHeiles): H=100, Ho=50, 5 epochs of batch "
           "200 (90 inner steps); `images` (MNIST, CIFAR): H=200, Ho=50, 1 epoch of batch 200 (270 and 225 "
           "inner steps), over seeded random pixels of the real shapes written in the standard file formats "
           "(timing only: the real files cannot be downloaded on this machine; a step's cost depends on the "
           "shapes).", "", *lines, ""]
    Path(args.doc).write_text("\n".join(doc))
    print(f"wrote {args.doc}", file=sys.stderr)


if __name__ == "__main__":
    main()
