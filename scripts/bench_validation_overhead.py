#!/usr/bin/env python
"""Per-training overhead of the validation stages, run for real on this machine.

A diversity study retrains thousands of small networks, so what each training costs beyond its own
epochs matters as much as the epochs. This runs the smoke pipeline (search_spaces/smoke.yaml: one
Tune trial per training) and the smoke study (search_spaces/study_smoke.yaml: one Tune trial per
replicate, its trainings one after the other inside it), and from their own records (stages.json:
the stage's wall time; validation.parquet: each training's `seconds`) reports

    overhead per training = (stage wall time x trials at once - sum of the trainings' seconds) / trainings

i.e. what the stage's slots spent outside the trainings (trial start, data, result writes, Tune),
spread over the trainings.

    python scripts/bench_validation_overhead.py --write docs/benchmarks_search.md --append
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from bench_search_throughput import cpu_model  # noqa: E402


def measure(command: str, space: Path, tmp: Path, cache: str) -> dict:
    """Run `dnn-search COMMAND --space SPACE` into TMP; its validation stage's overhead per training."""
    import pandas as pd
    data = yaml.safe_load(space.read_text())
    concurrency = int(data.get("max_concurrent", 1))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.run([sys.executable, "-m", "dnn_search", command, "--space", str(space), "--name", "v",
                           "--storage", str(tmp), "--quiet", "--cache-dir", cache],
                          env=env, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{command} failed:\n{proc.stderr[-3000:]}")
    exp = tmp / "v"
    stage = json.loads((exp / "stages.json").read_text())["validation_seconds"]
    table = pd.read_parquet(exp / "validation.parquet")
    inside = float(table["seconds"].sum())
    n = len(table)
    return {"what": f"`{command}` ({space.relative_to(REPO)}): {n} trainings, {concurrency} at once",
            "stage": stage, "inside": inside, "per_training": inside / max(n, 1),
            "overhead": (stage * concurrency - inside) / max(n, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", default=None, help="write (or with --append, add) the table to this file")
    parser.add_argument("--append", action="store_true")
    parser.add_argument("--label", default="")
    parser.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "dnn_search-throughput-cache"))
    args = parser.parse_args()
    rows = []
    for command, space in (("pipeline", "smoke.yaml"), ("study", "study_smoke.yaml")):
        with tempfile.TemporaryDirectory(prefix="valoverhead") as tmp:
            rows.append(measure(command, REPO / "search_spaces" / space, Path(tmp), args.cache_dir))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    table = (f"| validation stage ({cpu_model()}, {os.cpu_count()} cores, code {commit}) | stage wall (s) | "
             "trainings' own s | mean training (s) | overhead per training (s) |\n|---|---|---|---|---|\n"
             + "\n".join(f"| {r['what']} | {r['stage']:.1f} | {r['inside']:.1f} | {r['per_training']:.2f} | "
                         f"{r['overhead']:.2f} |" for r in rows) + "\n")
    print(table)
    if args.write:
        block = (f"## validation stages{' (' + args.label + ')' if args.label else ''}\n\nMade by "
                 f"`python scripts/bench_validation_overhead.py{' --label ' + args.label if args.label else ''} "
                 f"--write {args.write}{' --append' if args.append else ''}` on {time.strftime('%Y-%m-%d %H:%M')}. "
                 "Overhead per training = (stage wall time x trials at once - the trainings' own seconds) / "
                 "trainings.\n\n" + table)
        target = Path(args.write)
        target.write_text((target.read_text() + "\n" if args.append and target.is_file() else "") + block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
