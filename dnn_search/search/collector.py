"""The trial collector: a Tune callback on the driver that keeps every trial and every reported outer
step, and writes them as trials.parquet and steps.parquet.

The tables are rewritten every 15 s (so a dashboard or report sees a running search), at the end,
and before each trial is told to Optuna (`DriverState.persist`), so that what the study calls
finished is on disk. On --resume it starts from the killed run's tables and Tune's result files, and
keeps the rows of trials that Tune's restored snapshot does not know: Tune saves that snapshot
now and then, so a driver that stopped can leave trials (even ones Optuna was told about) newer
than it; their rows stay, with the study's verdict (a trial lost that way is marked failed as
"stale" by the searcher's restore). A trial asked for in the step that stopped the driver may be in no
table at all: the study's record of it gives its row.

A write that fails (a full disk, a permission) is retried once; a second failure stops the search:
it is recorded in `DriverState.failure` (so the searcher tells Optuna nothing more and the driver's
stopper ends the run before Tune's next snapshot) and raised as `TableWriteFailed`, which names the
reason and the `--resume` that continues.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

from dnn_search.errors import UserError
from dnn_search.results.layout import RAY_DIR, SEARCH_EXPERIMENT, STEPS_FILE, TRIALS_FILE
from dnn_search.results.tables import STEP_COLUMNS, TRIAL_COLUMNS, plain, write_table
from dnn_search.search import faults
from dnn_search.search.console import progress_text
from dnn_search.search.space import SearchSpace
from dnn_search.search.state import DriverState

log = logging.getLogger(__name__)


class TableWriteFailed(UserError):
    """The search's tables could not be written twice in a row: the search stops (resumably)."""


def make_collector(exp_dir: Path, space: SearchSpace, quiet: bool, state: DriverState):
    """The Collector callback of one search (a factory: Ray is imported only when a search runs)."""
    task = space.task()
    heldout_columns = tuple(task.columns("heldout"))
    step_columns = (*STEP_COLUMNS[:4], *heldout_columns, *STEP_COLUMNS[4:])
    from ray.tune import Callback

    class Collector(Callback):
        """Keeps every trial and every reported step; writes trials/steps parquet now and then
        (so the dashboard sees a running search) and prints a progress table."""

        def __init__(self):
            self.trials = {}
            self.steps = {}
            self.errors = {}
            self.last_write = 0.0
            self.last_print = 0.0
            self.persisted = 0  # writes made before a tell (the fault point counts them)
            self.tty = sys.stdout.isatty()
            self.print_every = 5.0 if self.tty else 30.0
            self.started = time.time()
            self.previous_rows = {}  # trials.parquet of the stopped run, by trial id (--resume)
            self._load_previous()

        def _load_previous(self):
            """On --resume: the trials and steps of the killed run. steps.parquet is only rewritten now
            and then, so the steps reported after its last write are read back from Tune's result.json
            files."""
            self.previous_rows = _previous_trials(exp_dir / TRIALS_FILE)
            path = exp_dir / STEPS_FILE
            if path.is_file():
                import pandas as pd
                import pyarrow
                try:
                    for row in pd.read_parquet(path).to_dict("records"):
                        row["grad_norms"] = list(row.get("grad_norms") if row.get("grad_norms") is not None else [])
                        self.steps[(str(row["trial_id"]), int(row["step"]))] = row
                except (OSError, ValueError, KeyError, pyarrow.ArrowException) as exc:
                    log.warning("%s is unreadable (%s): the steps are read back from Tune's result files only",
                                path, exc)
            for results in (exp_dir / RAY_DIR / SEARCH_EXPERIMENT).glob("*/result.json"):
                try:
                    lines = results.read_text(encoding="utf-8", errors="replace").splitlines()
                except OSError as exc:
                    log.warning("cannot read %s (%s): its trial's steps come from steps.parquet only", results, exc)
                    continue
                for line in lines:
                    try:
                        result = json.loads(line)
                    except ValueError:  # a line cut by the kill
                        continue
                    if isinstance(result, dict) and result.get("trial_id"):
                        self._add_step(str(result["trial_id"]), result)

        def _add_step(self, trial_id, result):
            if result.get("diverged") or "step" not in result:
                return
            row = {k: result.get(k) for k in STEP_COLUMNS if k != "trial_id"}
            row.update({k: result[k] for k in heldout_columns if k in result})
            row["trial_id"] = trial_id
            row["grad_norms"] = [float(v) for v in (result.get("grad_norms") or [])]
            row["wall_time"] = result.get("reported_at")
            self.steps[(trial_id, int(result["step"]))] = row

        def on_step_end(self, iteration, trials, **info):
            for t in trials:
                self.trials[t.trial_id] = t
            now = time.time()
            if now - self.last_write > 15:
                self.write()
            if not quiet and now - self.last_print > self.print_every:
                self.last_print = now
                self.print_progress()

        def on_trial_start(self, iteration, trials, trial, **info):
            self.trials[trial.trial_id] = trial

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.trials[trial.trial_id] = trial
            self._add_step(trial.trial_id, result)

        def on_trial_error(self, iteration, trials, trial, **info):
            self.errors[trial.trial_id] = _error_text(trial)

        def on_experiment_end(self, trials, **info):
            for t in trials:
                self.trials[t.trial_id] = t
            if state.failure is not None:  # the run is being stopped for it: let that error through
                log.warning("the tables were not written at the end: %s", state.failure)
                return
            self.write()
            if not quiet:
                self.print_progress(final=True)

        # ------------------------------------------------------------------------------ tables

        def trial_rows(self) -> list[dict]:
            numbers, states, errors, params = _optuna_index(state)
            # the task's search metric, final and best (classification: heldout_accuracy, max)
            tracked_metric = task.search_metric
            best = max if task.search_mode == "max" else min
            rows = []
            for tid, t in self.trials.items():
                res = t.last_result or {}
                steps = [r for (trial_id, _), r in self.steps.items() if trial_id == tid]
                tracked = [r[tracked_metric] for r in steps if _finite(r.get(tracked_metric))]
                ckpt = t.checkpoint
                error = self.errors.get(tid) or (str(res.get("error") or "") if res.get("diverged") else "")
                if t.status == "ERROR" and not error:
                    error = _error_text(t)
                status = _status(t, states.get(tid), res)
                config = {k: v for k, v in (t.config or {}).items() if not isinstance(v, dict)}
                times = [r.get("wall_time") for r in steps if r.get("wall_time")]
                row = {"trial_id": tid, "optuna_number": numbers.get(tid, state.numbers.get(tid)),
                       "status": status, "error": error, "retries": int(getattr(t, "num_failures", 0) or 0),
                       "node_id": res.get("node_id", ""),
                       **config,
                       "steps_done": int(res.get("step", 0) or 0),
                       "score": _num(res.get(space.metric)) if not res.get("diverged") else math.nan,
                       "final_meta_loss": _num(res.get("meta_loss")),
                       f"final_{tracked_metric}": _num(res.get(tracked_metric)),
                       f"best_{tracked_metric}": best(tracked) if tracked else math.nan,
                       "wall_seconds": _num(res.get("time_total_s")),
                       "started_at": _num(res.get("started_at")),
                       "ended_at": max(times) if times else math.nan,
                       "checkpoint_path": _relative(ckpt.path, exp_dir) if ckpt is not None else ""}
                rows.append(row)
            for tid, previous in self.previous_rows.items():
                if tid not in self.trials:  # newer than Tune's restored snapshot (module doc)
                    rows.append(_carried_row(previous, numbers.get(tid), states.get(tid), errors.get(tid)))
            for tid, number in numbers.items():
                # asked for and ended in the study, known neither to Tune nor to an earlier table: a trial
                # created in the very step a stopped driver's table write failed (marked stale on resume)
                if tid not in self.trials and tid not in self.previous_rows and _told_status(states[tid]):
                    rows.append(_carried_row(_lost_row(tid, params.get(tid, {})), number, states[tid], errors[tid]))
            rows.sort(key=lambda r: (r["optuna_number"] is None, r["optuna_number"] or 0, r["trial_id"]))
            return rows

        def persist(self):
            """The write before a trial is told to Optuna (`DriverState.persist`)."""
            self.persisted += 1
            self.write(before_tell=self.persisted)

        def write(self, before_tell: int = 0):
            """Both tables, atomically; retried once; a second failure stops the search (module doc)."""
            self.last_write = time.time()
            for attempt in (1, 2):
                try:
                    faults.fail_table_write(before_tell, attempt)
                    self._write_tables()
                    return
                except (UserError, OSError) as exc:
                    if attempt == 1:
                        log.warning("writing the search tables failed (%s); retrying once", exc)
                        continue
                    state.failure = TableWriteFailed(
                        f"search stopped: cannot write the search tables in {exp_dir} ({exc}); Optuna was not told "
                        f"about trials that ended since. Fix the cause, then continue with --resume")
                    raise state.failure from exc

        def _write_tables(self):
            write_table(exp_dir / TRIALS_FILE, self.trial_rows(), TRIAL_COLUMNS)
            rows = sorted(self.steps.values(), key=lambda r: (str(r["trial_id"]), int(r["step"])))
            write_table(exp_dir / STEPS_FILE,
                        [{k: r.get(k) for k in (*step_columns, "wall_time")} for r in rows], step_columns)

        def print_progress(self, final=False):
            text = progress_text(self.trial_rows(), space, time.time() - self.started, self.tty, final)
            log.info(("\033[2J\033[H" + text) if self.tty and not final else text)

    return Collector()


def _finite(v) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _num(v) -> float:
    return float(v) if _finite(v) else math.nan


def _relative(path: str, exp_dir: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(Path(path).resolve().relative_to(exp_dir))
    return str(path)


def _error_text(trial) -> str:
    """The last line of the trial's error file (Tune's traceback), else its error message."""
    path = getattr(trial, "error_file", None)
    if path and os.path.isfile(path):
        try:
            lines = [line for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
        except OSError as exc:
            log.warning("cannot read the error file of trial %s (%s)", trial.trial_id, exc)
            lines = []
        if lines:
            return lines[-1].strip()[:500]
    return str(getattr(trial, "error_msg", "") or "error")[:500]


_STATE_NAMES = {"COMPLETE": "COMPLETED", "PRUNED": "PRUNED", "FAIL": "FAILED", "RUNNING": "RUNNING",
                "WAITING": "RUNNING"}


def _told_status(optuna_state) -> str | None:
    """The table's status of a trial Optuna was told about (None while the study has it running)."""
    if optuna_state in _STATE_NAMES and optuna_state not in ("RUNNING", "WAITING"):
        return _STATE_NAMES[optuna_state]
    return None


def _status(trial, optuna_state, result) -> str:
    if trial.status in ("RUNNING", "PENDING", "PAUSED"):
        return "RUNNING"
    told = _told_status(optuna_state)
    if told is not None:
        return told
    if trial.status == "ERROR" or result.get("diverged"):
        return "FAILED"
    if int(result.get("step", 0) or 0) >= int(result.get("target_steps", 1) or 1):
        return "COMPLETED"
    return "PRUNED"


def _optuna_index(state: DriverState):
    """{ray trial id: optuna number}, {.. : optuna state name}, {.. : recorded error}, {.. : sampled
    params} from the study."""
    study = state.study
    numbers, states, errors, params = {}, {}, {}, {}
    if study is None:
        return numbers, states, errors, params
    try:
        frozen = study.get_trials(deepcopy=False)
    except Exception as exc:  # the storage's own errors (sqlalchemy, journal): the table still gets written
        log.warning("cannot read the Optuna study (%s): trials.parquet shows Tune's statuses only", exc)
        return numbers, states, errors, params
    for t in frozen:
        tid = t.user_attrs.get("ray_trial_id")
        if tid:
            numbers[tid], states[tid] = t.number, t.state.name
            errors[tid] = str(t.user_attrs.get("error") or "")
            params[tid] = dict(t.params)
    return numbers, states, errors, params


def _lost_row(tid: str, params: dict) -> dict:
    """The row of a trial only the study knows (it never reported a step): the values it was asked to
    run with; `_carried_row` adds its number and the study's verdict and reason."""
    return {"trial_id": tid, "error": "", "retries": 0, "node_id": "", **params, "steps_done": 0,
            "score": math.nan, "final_meta_loss": math.nan, "wall_seconds": math.nan, "started_at": math.nan,
            "ended_at": math.nan, "checkpoint_path": ""}


def _previous_trials(path: Path) -> dict[str, dict]:
    """The rows of an earlier run's trials.parquet, by trial id ({} when there is none)."""
    if not path.is_file():
        return {}
    import pandas as pd
    import pyarrow
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError, pyarrow.ArrowException) as exc:
        log.warning("%s is unreadable (%s): trials that Tune's snapshot does not know lose their rows", path, exc)
        return {}
    return {str(r["trial_id"]): {k: plain(v) for k, v in r.items()} for r in frame.to_dict("records")}


def _carried_row(previous: dict, number, optuna_state, error) -> dict:
    """An earlier run's row of a trial that the resumed Tune does not know, with the study's verdict:
    told trials keep theirs; one the searcher's restore marked stale is FAILED with that reason."""
    row = dict(previous)
    if number is not None:
        row["optuna_number"] = number
    told = _told_status(optuna_state)
    if told is not None:
        row["status"] = told
        if optuna_state == "FAIL" and error:
            row["error"] = error
    return row
