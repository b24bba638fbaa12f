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
    git worktree add /tmp/before COMMIT    # then, on a quiet machine: before/after alternating, 3 each
    python scripts/bench_search_throughput.py --trials 16 --steps 30 --repeat 3 --compare-with /tmp/before
"""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import socket
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


def decompose(trials, steps, wall: float, t0: float, t_end: float, concurrency: int) -> dict[str, float]:
    """Where the search's core-seconds went, from its own tables' timestamps (seconds summed over trials).

    Per trial: `started_at` is the trial function's entry, each step row its `seconds` inside the
    outer step and `wall_time` when it was reported. So trial start-up (data, model, native kernels)
    is first report - its step - entry; reporting (tune.report, checkpoints) the gaps between reports
    less the steps. A slot is idle when fewer trials run than the concurrency: before the last trial
    started that is the hand-over between trials (the trial's final checkpoint and plot, Tune's
    hand-over to the reused worker, Optuna's tell and ask, the tables); after it, the tail (no trial
    left to start while the last ones finish: trials of unequal length). Fixed start-up (imports,
    Ray, Tune, the study, the first workers) and the end (tables, export, Ray's shutdown, exit) are
    the rest of the wall time, on every slot."""
    setup = report = inside = 0.0
    spans = []
    for r in trials.to_dict("records"):
        rows = steps[steps.trial_id == r["trial_id"]].sort_values("step")
        if rows.empty:
            continue
        seconds, times = rows["seconds"].to_numpy(float), rows["wall_time"].to_numpy(float)
        inside += seconds.sum()
        setup += max(0.0, times[0] - seconds[0] - r["started_at"])
        report += max(0.0, float(((times[1:] - times[:-1]) - seconds[1:]).sum()))
        spans.append((float(r["started_at"]), float(times[-1])))
    first = min(a for a, _ in spans)
    last = max(b for _, b in spans)
    last_start = max(a for a, _ in spans)
    events = sorted({first, last, last_start, *(a for a, _ in spans), *(b for _, b in spans)})
    handover = tail = 0.0
    for lo, hi in zip(events[:-1], events[1:]):
        running = sum(1 for a, b in spans if a <= lo and b >= hi)
        idle = max(0, concurrency - running) * (hi - lo)
        if hi <= last_start:
            handover += idle
        else:
            tail += idle
    return {"outer steps (inside)": inside, "trial start-up (data, model, kernels)": setup,
            "reporting and checkpoints": report,
            "hand-over between trials (final checkpoint and plot, Tune, Optuna, tables)": handover,
            "tail: no trial left to start while the last ones finish": tail,
            "fixed start-up (imports, Ray, Tune, study, first workers)": concurrency * (first - t0),
            "end (tables, export, Ray shutdown, exit)": concurrency * (t_end - last)}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            time.sleep(2)  # the head answers before its raylet has registered
            return
        time.sleep(0.2)
    raise SystemExit(f"the local Ray head did not answer on port {port} within {timeout:.0f} s")


PROFILED_MAIN = """
import cProfile, sys
from dnn_search.cli import main
out, sys.argv = sys.argv[1], ["dnn-search", *sys.argv[2:]]
profile = cProfile.Profile()
code = profile.runcall(main)
profile.dump_stats(out)
sys.exit(code)
"""


def profile_top(path: Path, n: int = 12) -> str:
    """The driver's cProfile: the functions with the most cumulative time, as markdown rows."""
    import pstats
    stats = pstats.Stats(str(path))
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][3], reverse=True)
    out = ["| cumulative s | own s | calls | function |", "|---|---|---|---|"]
    for (file, line, name), (_, calls, own, cum, _) in rows[:n]:
        where = file.split("site-packages/")[-1].split("/work/")[-1]
        out.append(f"| {cum:.2f} | {own:.2f} | {calls} | `{name}` ({where}:{line}) |")
    return "\n".join(out)


def run_once(args, checkout: Path) -> dict:
    """One search with the code of CHECKOUT (a checkout of this repository: `python -m dnn_search` run
    there imports its own package first), measured from its own tables."""
    import pandas as pd
    space = yaml.safe_load((REPO / "search_spaces" / "mnist1d.yaml").read_text())
    space.update(num_samples=args.trials, max_concurrent=args.max_concurrent, scheduler={"type": "none"},
                 checkpoint_every=max(1, args.steps // 2))
    space["fixed"]["steps"] = args.steps
    with tempfile.TemporaryDirectory(prefix="throughput") as tmp:
        path = Path(tmp) / "space.yaml"
        path.write_text(yaml.safe_dump(space))
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        prof = Path(tmp) / "driver.prof"
        # `dnn-search` ends with os._exit (no interpreter teardown), so `python -m cProfile` would never
        # write its file: profile `main` itself and write the file before exiting
        runner = ([sys.executable, "-c", PROFILED_MAIN, str(prof)] if args.profile
                  else [sys.executable, "-m", "dnn_search"])
        address = []
        head = None
        if args.local_ray:
            env["RAY_AUTH_MODE"] = "disabled"  # a private head on this machine, for this measurement only
            port = _free_port()
            head = subprocess.Popen([str(Path(sys.executable).with_name("ray")), "start", "--head", "--block",
                                     f"--port={port}", f"--num-cpus={args.max_concurrent}", "--include-dashboard=false",
                                     "--disable-usage-stats", f"--temp-dir={Path(tmp) / 'ray'}"],
                                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True)
            _wait_for_port(port)
            address = ["--address", f"127.0.0.1:{port}"]
        try:
            started = time.time()
            proc = subprocess.run([*runner, "search", "--space", str(path), "--name", "tp",
                                   "--storage", str(Path(tmp) / "r"), "--quiet", "--cache-dir", args.cache_dir,
                                   *address],
                                  env=env, cwd=checkout,
                                  capture_output=True, text=True)
            ended = time.time()
        finally:
            if head is not None:
                os.killpg(head.pid, signal.SIGTERM)
                head.wait(60)
        if proc.returncode != 0:
            raise SystemExit(f"the search in {checkout} failed:\n{proc.stderr[-3000:]}")
        trials = pd.read_parquet(Path(tmp) / "r" / "tp" / "trials.parquet")
        steps = pd.read_parquet(Path(tmp) / "r" / "tp" / "steps.parquet")
        top = profile_top(prof) if args.profile else ""
    wall = ended - started
    step_seconds = float(steps["seconds"].sum())  # time inside outer steps, summed over trials
    busy = step_seconds / args.max_concurrent     # if the concurrent trials overlapped perfectly
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True,
                            text=True).stdout.strip()
    return {"commit": commit, "wall": wall, "trials": len(trials), "steps": len(steps),
            "statuses": trials.status.value_counts().to_dict(), "step_seconds": step_seconds,
            "outside": max(0.0, 1 - busy / wall), "top": top,
            "parts": decompose(trials, steps, wall, started, ended, args.max_concurrent)}


def one_run_table(args, r: dict, label: str) -> str:
    """A run's summary and where its slots' core-seconds went, as markdown."""
    n = max(r["trials"], 1)
    rows = {
        "CPU": f"{cpu_model()} ({os.cpu_count()} cores), torch threads per trial: 1",
        "code": r["commit"],
        "search": f"{r['trials']} trials x {args.steps} outer steps, {args.max_concurrent} at once, "
                  f"mnist1d.yaml sizes, statuses {r['statuses']}, "
                  f"{'on a local Ray head started before it (--address)' if args.local_ray else 'embedded Ray'}",
        "wall time (whole command)": f"{r['wall']:.1f} s",
        "outer steps per hour": f"{r['steps'] / r['wall'] * 3600:.0f}",
        "trials per hour": f"{r['trials'] / r['wall'] * 3600:.1f}",
        "mean outer step inside a trial": f"{r['step_seconds'] / max(r['steps'], 1):.2f} s",
        "share of wall time outside outer steps": f"{r['outside'] * 100:.1f} %",
    }
    total = args.max_concurrent * r["wall"]
    parts_rows = [f"| {k} | {v:.1f} | {v / total * 100:.1f} % | {v / n:.2f} |" for k, v in r["parts"].items()]
    title = f"whole-search throughput{' (' + label + ')' if label else ''}"
    table = (f"| {title} | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows.items()) + "\n\n"
             f"| where the {args.max_concurrent} slots' {total:.0f} core-seconds went | core-s | share | per trial (s) |\n"
             "|---|---|---|---|\n" + "\n".join(parts_rows) + "\n")
    if r["top"]:
        table += "\nThe driver's profile (cProfile, cumulative):\n\n" + r["top"] + "\n"
    return table


# the parts of `decompose`, by the short names of the comparison table's columns
SHORT = {"fixed start-up": "fixed start-up", "tail": "tail", "hand-over": "hand-over",
         "reporting": "reporting", "end (": "end"}


def comparison_table(args, runs: list[tuple[str, dict]]) -> str:
    """Each run as one row (in the order run), then the mean share outside outer steps per code."""
    head = ("| run | code | wall time | **outside outer steps** | "
            + " | ".join(SHORT.values()) + " |\n|" + "---|" * (4 + len(SHORT)) + "\n")
    lines = []
    for label, r in runs:
        total = args.max_concurrent * r["wall"]
        shares = [next(v for k, v in r["parts"].items() if k.startswith(prefix)) / total * 100 for prefix in SHORT]
        lines.append(f"| {label} | {r['commit']} | {r['wall']:.1f} s | **{r['outside'] * 100:.1f} %** | "
                     + " | ".join(f"{x:.1f} %" for x in shares) + " |")
    means = {}
    for label, r in runs:
        means.setdefault(label.rsplit(" ", 1)[0], []).append(r["outside"] * 100)
    summary = "; ".join(f"{k}: mean {sum(v) / len(v):.1f} % ({', '.join(f'{x:.1f}' for x in v)})"
                        for k, v in means.items())
    return head + "\n".join(lines) + f"\n\nOutside outer steps, {summary}.\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument("--write", default=None, help="write the result as markdown to this file")
    parser.add_argument("--label", default="", help="a name for this run in the written file (e.g. before/after)")
    parser.add_argument("--append", action="store_true", help="append to --write instead of replacing it")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the search this many times (the share outside outer steps varies by about a "
                             "point between runs on a 2-core machine) and add a row per run and their mean")
    parser.add_argument("--compare-with", default=None, metavar="CHECKOUT",
                        help="another checkout of this repository (e.g. `git worktree add /tmp/before COMMIT`): "
                             "its code runs first, then this one's, alternating, --repeat times each")
    parser.add_argument("--profile", action="store_true",
                        help="run the driver under cProfile and add its top functions (the trials run in "
                             "Ray workers: their parts come from the decomposition)")
    parser.add_argument("--local-ray", action="store_true",
                        help="start a local Ray head first (`ray start --head --block`, its own temp folder, "
                             "stopped at the end) and run the search on it with --address: a Ray session kept "
                             "across commands, so the search pays neither Ray's start nor its shutdown")
    parser.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "dnn_search-throughput-cache"),
                        help="kept between runs, so the native kernels' one-time build (30-50 s) and the data "
                             "generation are not measured; run twice when it is new")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    other = Path(args.compare_with).resolve() if args.compare_with else None
    if other is not None and not (other / "dnn_search" / "__main__.py").is_file():
        parser.error(f"--compare-with {args.compare_with}: not a checkout of this repository")
    runs = []
    for i in range(1, args.repeat + 1):
        for name, checkout in ((("before", other),) if other else ()) + ((("after" if other else args.label or "run"), REPO),):
            label = f"{name} {i}"
            print(f"run {label} ({checkout}) ...", file=sys.stderr, flush=True)
            runs.append((label, run_once(args, checkout)))
    single = len(runs) == 1
    table = one_run_table(args, runs[0][1], args.label) if single else comparison_table(args, runs)
    print(table)
    if args.write:
        compared = f" --compare-with CHECKOUT (of {runs[0][1]['commit']})" if other else ""
        command = (f"python scripts/bench_search_throughput.py --trials {args.trials} --steps {args.steps} "
                   f"--max-concurrent {args.max_concurrent}{' --profile' if args.profile else ''}"
                   f"{' --local-ray' if args.local_ray else ''}"
                   f"{f' --repeat {args.repeat}' if args.repeat > 1 else ''}"
                   f"{compared}"
                   f"{' --label ' + args.label if args.label else ''} --write {args.write}")
        block = f"## {args.label or 'run'}\n\nMade by `{command}` on {time.strftime('%Y-%m-%d %H:%M')}.\n\n" + table
        head = ("# Whole-search throughput\n\nThe outside share is 1 - (sum of the trials' outer-step seconds / "
                "concurrency) / wall time. The second table splits the slots' core-seconds "
                "(`decompose` in the script says how each part is measured from the search's own tables).\n\n")
        target = Path(args.write)
        if args.append and target.is_file():
            target.write_text(target.read_text() + "\n" + block)
        else:
            target.write_text(head + block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
