#!/usr/bin/env python
"""Break the ranking, summary and safety code on purpose, once per breakage, and check that the tests
catch it. Each breakage is applied to a temporary copy of the repository (never to this checkout);
the relevant tests run there (cwd and PYTHONPATH = the copy, so subprocesses of the CLI import the
broken copy too). Prints a markdown table: breakage -> caught (yes/no), with the failing tests.

    python scripts/break_check.py            # all breakages
    python scripts/break_check.py --fast     # skip the breakages whose tests run real searches
    python scripts/break_check.py --only rungs_of --only collector   # the breakages whose names contain these

A breakage names a snippet, not a file: it is looked up in every dnn_search/**/*.py, so it keeps
working when modules move (it must occur exactly once in the package, else the row says so).
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RANKING = ["tests/test_ranking.py"]
EXPORT = ["tests/test_search.py::test_exported_activations", "tests/test_search.py::test_min_mode_export_picks_the_lowest_loss",
          "tests/test_search.py::test_pruned_trials_are_pruned_everywhere"]
SCAN = ["tests/test_reliability.py::test_no_unsafe_loads_in_the_package"]
STATS = ["tests/test_comparisons.py", "tests/test_ranking.py"]
COMPARE = ["tests/test_comparisons.py", "tests/test_ranking.py", "tests/test_task_seam.py"]
# the fuzz fails a hang by its time limit (the other tests of rungs would hang with it)
HANG = ["tests/test_fuzz.py::test_every_accepted_space_finishes_its_rungs_and_summary"]
WRITES = ["tests/test_collector_writes.py::test_one_failed_write_is_retried",
          "tests/test_collector_writes.py::test_two_failed_writes_stop_the_search_and_optuna_is_not_told"]

# (name, snippet, replacement, tests, slow)
BREAKAGES = [
    ("rank_trials: reverse the sort (worst first)",
     'ranked = ranked.sort_values(["_pruned", "_key"], kind="stable")',
     'ranked = ranked.sort_values(["_pruned", "_key"], ascending=[True, False], kind="stable")', RANKING + EXPORT, True),
    ("rank_trials: swap the direction (max <-> min)",
     '(-1 if direction == "max" else 1)', '(-1 if direction == "min" else 1)', RANKING + EXPORT, True),
    ("rank_trials: pruned trials before completed ones",
     'ranked["_pruned"] = ranked["status"].astype(str).str.upper() != "COMPLETED"',
     'ranked["_pruned"] = ranked["status"].astype(str).str.upper() == "COMPLETED"', RANKING, False),
    ("rank_trials: keep NaN/inf scores",
     'ranked = ranked[np.isfinite(ranked["score"].to_numpy(dtype=float))]', 'ranked = ranked', RANKING, False),
    ("rank_trials: rank FAILED/RUNNING trials too",
     'RANKED_STATUSES = ("COMPLETED", "PRUNED")', 'RANKED_STATUSES = ("COMPLETED", "PRUNED", "FAILED", "RUNNING")',
     RANKING, False),
    ("top_per: the worst of each value", "return ranked.groupby(per, sort=False).head(top) if top is not None else ranked",
     "return ranked.groupby(per, sort=False).tail(top) if top is not None else ranked", RANKING, False),
    ("top_per: ignore the parameter (plain top-k)",
     "return ranked.groupby(per, sort=False).head(top) if top is not None else ranked",
     "return ranked.head(top) if top is not None else ranked", RANKING, False),
    ("Welch: Student's pooled df (n_a + n_b - 2) instead of Welch-Satterthwaite",
     "df = se2 * se2 / denominator if denominator > 0 else math.nan", "df = na + nb - 2", STATS, False),
    ("Welch p: constant 0.5", "return _from_t(estimate, math.sqrt(se2), df, na, nb, level)",
     "return __import__('dataclasses').replace(_from_t(estimate, math.sqrt(se2), df, na, nb, level), p=0.5)", STATS, False),
    ("paired t: pair by position instead of by seed", "return one_sample([fa[s] - fb[s] for s in fa if s in fb], level)",
     "return one_sample([a - b for a, b in zip(fa.values(), fb.values())], level)", STATS, False),
    ("Holm: no step-down maximum (not monotone)", "running = max(running, min(1.0, (m - rank) * p))",
     "running = min(1.0, (m - rank) * p)", STATS, False),
    ("summary: picks on the test split", 'split = "val" if any(math.isfinite(mean_of(a.val)) for a in arms) else "test"',
     'split = "test"', COMPARE, False),
    ("summary: the worst of each kind picked", "return view.best(candidates, lambda a: mean_of(getattr(a, split)))",
     "return view.best(candidates, lambda a: -mean_of(getattr(a, split)))", COMPARE, False),
    ("no-pickle rule: an aliased pickle.loads in the package", "    path = Path(folder) / STATE_FILE\n",
     "    path = Path(folder) / STATE_FILE\n    import pickle as _p\n    _restore = _p.loads\n", SCAN, False),
    ("no-pickle rule: torch.load without weights_only", 'torch.load(path, map_location="cpu", weights_only=True)',
     'torch.load(path, map_location="cpu")', SCAN, False),
    ("rungs_of: the int-multiply loop again (hangs on reduction_factor 1.5)",
     '    return [*SchedulerSpec.from_recorded(space.get("scheduler")).rungs(top), top]',
     '    scheduler, rungs = space.get("scheduler") or {}, []\n'
     '    grace, factor = scheduler.get("grace_period"), scheduler.get("reduction_factor")\n'
     '    if scheduler.get("type") in ("asha", "hyperband") and grace and factor and factor > 1:\n'
     '        r = int(grace)\n'
     '        while r < top:\n'
     '            rungs.append(r)\n'
     '            r *= int(factor)\n'
     '    return [*rungs, top]', HANG, False),
    ("collector: a failed table write swallowed (no retry, no stop)",
     "                except (UserError, OSError) as exc:\n",
     "                except (UserError, OSError) as exc:\n                    return\n", WRITES, False),
]


def copy_repo(dest: Path) -> None:
    everywhere = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.pyc", ".pytest_cache")

    def ignore(folder, names):
        # the committed results and docs are not needed, but only at the top: dnn_search/results/ is code
        top = {"results", "docs"} & set(names) if Path(folder) == REPO else set()
        return set(everywhere(folder, names)) | top
    shutil.copytree(REPO, dest, ignore=ignore, dirs_exist_ok=True)


def apply(root: Path, snippet: str, replacement: str) -> str | None:
    """Replace the one occurrence of SNIPPET in the copied package; an error text when there is not one."""
    hits = [(p, p.read_text().count(snippet)) for p in sorted((root / "dnn_search").rglob("*.py"))]
    hits = [(p, n) for p, n in hits if n]
    if len(hits) != 1 or hits[0][1] != 1:
        return f"snippet found {sum(n for _, n in hits)} time(s): breakage not applied"
    path = hits[0][0]
    path.write_text(path.read_text().replace(snippet, replacement))
    return None


def run_tests(root: Path, tests: list[str]) -> tuple[int, list[str], float]:
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    env["PYTHONPATH"] = str(root)
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", *tests], cwd=root,
                          env=env, capture_output=True, text=True)
    failed = sorted({m.group(1) for m in re.finditer(r"^(?:FAILED|ERROR) (\S+)", proc.stdout, re.M)})
    return proc.returncode, failed, time.time() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="skip breakages whose tests run real searches")
    parser.add_argument("--only", action="append", default=[], metavar="TEXT",
                        help="run only the breakages whose name contains TEXT (repeatable)")
    args = parser.parse_args()
    chosen = [b for b in BREAKAGES if not args.only or any(text in b[0] for text in args.only)]
    if not chosen:
        parser.error(f"no breakage name contains {' or '.join(args.only)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="break_check_") as tmp:
        base = Path(tmp) / "clean"
        copy_repo(base)
        rc, failed, secs = run_tests(base, sorted({t for b in chosen for t in b[3] if not (args.fast and b[4])}
                                                  - set(EXPORT)))
        rows.append(("(none: the unbroken copy, fast tests)", "no" if rc == 0 else "FAILS UNBROKEN", failed, secs))
        for name, snippet, replacement, tests, slow in chosen:
            if args.fast and slow:
                continue
            work = Path(tmp) / "broken"
            shutil.rmtree(work, ignore_errors=True)
            copy_repo(work)
            problem = apply(work, snippet, replacement)
            if problem:
                rows.append((name, f"n/a ({problem})", [], 0.0))
                continue
            rc, failed, secs = run_tests(work, tests)
            rows.append((name, "yes" if rc != 0 and failed else "no", failed, secs))
            print(f"{name}: {rows[-1][1]} ({secs:.0f} s)", file=sys.stderr, flush=True)
    print("| breakage | caught | failing tests | seconds |")
    print("|---|---|---|---|")
    for name, caught, failed, secs in rows:
        tests = "<br>".join(f"`{t.split('/')[-1]}`" for t in failed) or "–"
        print(f"| {name} | {caught} | {tests} | {secs:.0f} |")
    return 0 if all(r[1] == "yes" for r in rows[1:]) and rows[0][1] == "no" else 1


if __name__ == "__main__":
    sys.exit(main())
