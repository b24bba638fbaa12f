"""What a search prints on the terminal: the progress table while it runs, the best trials and the
failures at the end, and the commands to run next."""
from __future__ import annotations

from pathlib import Path

from dnn_search.results.ranking import rank_trials
from dnn_search.results.layout import TRIALS_FILE
from dnn_search.results.tables import STATUSES, format_table, plain, read_table
from dnn_search.search.space import SearchSpace


def progress_text(rows: list[dict], space: SearchSpace, elapsed: float, tty: bool, final: bool) -> str:
    """One status line; on a terminal (or at the end) with the table of trials below it."""
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    head = (f"[{elapsed:6.0f}s] trials {len(rows)}/{space.num_samples}: "
            + ", ".join(f"{v} {k.lower()}" for k, v in counts.items() if v))
    if not tty and not final:
        return head
    columns = ["trial_id", "status", "node", *space.params, "step", space.metric]
    table = [{**{p: _short(r.get(p)) for p in space.params}, "trial_id": r["trial_id"],
              "status": r["status"], "node": str(r["node_id"])[:8], "step": r["steps_done"],
              space.metric: r["score"]} for r in rows]
    return head + "\n" + format_table(table, columns)


def _short(v):
    return float(f"{v:.4g}") if isinstance(v, float) else v


def print_best(exp_dir: Path, space: SearchSpace, name: str, top: int) -> None:
    trials = read_table(exp_dir / TRIALS_FILE)
    best = rank_trials(trials, space.mode, top, space.top_per, metric=space.metric, need_checkpoint=True)
    counts = trials["status"].value_counts().to_dict()
    print(f"\n{len(trials)} trials: " + ", ".join(f"{v} {k.lower()}" for k, v in counts.items()))
    cols = ["trial_id", "optuna_number", "status", *space.params, "steps_done", "score", f"best_{space.task().search_metric}"]
    rows = [{c: plain(r.get(c)) for c in cols} for r in best.to_dict("records")]
    print(f"best {len(rows)} trial(s) by {space.metric} ({space.mode}):")
    print(format_table(rows, cols))
    print_failures(trials)


def print_failures(trials) -> None:
    """The failed trials with their reasons, and the trials that Ray retried after a crash."""
    failed = trials[trials["status"] == "FAILED"]
    if len(failed):
        print(f"\n{len(failed)} failed trial(s):")
        for r in failed.to_dict("records"):
            reason = " ".join(str(r.get("error") or "no reason recorded").split())[:300]
            print(f"  {r['trial_id']} (optuna #{plain(r.get('optuna_number'))}): {reason}")
    if "retries" in trials.columns:
        retried = trials[trials["retries"].fillna(0).astype(int) > 0]
        for r in retried.to_dict("records"):
            print(f"  {r['trial_id']} was retried {int(r['retries'])} time(s) from its last checkpoint "
                  f"and ended {str(r['status']).lower()}")


def print_next(exp_dir: Path, name: str, storage: str) -> None:
    flag = "" if Path(storage).resolve() == Path("results").resolve() else f" --storage {storage}"
    print(f"\nresults: {exp_dir}")
    print(f"next:  dnn-search dashboard {name}{flag}     (Optuna dashboard: curves, parameters, plots)")
    print(f"       dnn-search export {exp_dir} --top 5 --out {exp_dir / 'activations'}")
    print(f"       dnn-search validate --act_path {exp_dir / 'activations'}/<trial_id>/<file>.npz")
    print(f"       dnn-search report {name}{flag}")
