"""The Optuna side of a search: the space as Optuna distributions, and the searcher that keeps the
study truthful.

Ray's OptunaSearch tells every trial that ends COMPLETE, even one that ASHA stopped early.
`StudySearch` tells those PRUNED and diverged or errored ones FAIL, reports every outer step as an
intermediate value, attaches the trial's activation plot before it is told, and, after a driver
was killed, marks the trials it had asked for but never ran as FAIL ("stale"). The study is the
record of which trials finished: `finished_trials` reads it on --resume.

Nothing is told before the trial's tables are on disk and its record (steps done, error) is in the
study: when either fails, the searcher tells nothing, records the reason in `DriverState.failure`
and the driver's stopper ends the run (`--resume` continues, and tells those trials then).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

from dnn_search.errors import UserError
from dnn_search.results.layout import STEPS_FILE
from dnn_search.results.tables import plain, read_table
from dnn_search.search import faults
from dnn_search.search.collector import TableWriteFailed
from dnn_search.search.space import SearchSpace
from dnn_search.search.state import DriverState

log = logging.getLogger(__name__)


def distributions(space: SearchSpace) -> dict:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    out = {}
    for name, p in space.params.items():
        if p.type == "categorical":
            out[name] = CategoricalDistribution(p.choices)
        elif p.type == "int":
            out[name] = IntDistribution(int(p.low), int(p.high), log=p.log)
        else:
            out[name] = FloatDistribution(float(p.low), float(p.high), log=p.type == "loguniform")
    return out


def make_searcher(space: SearchSpace, name: str, storage, state: DriverState):
    """A StudySearch on study NAME in STORAGE, sampling SPACE with its seeded sampler."""
    from optuna.trial import TrialState
    from ray.tune.search.optuna import OptunaSearch

    class StudySearch(OptunaSearch):
        """OptunaSearch that tells Optuna the truth: PRUNED for early-stopped trials, FAIL for
        diverged or errored ones; reports every outer step as an intermediate value."""

        def suggest(self, trial_id):
            config = super().suggest(trial_id)
            ot_trial = self._ot_trials.get(trial_id)
            if ot_trial is not None:
                # not optional: a resume finds the trial's outcome through it (finished_trials)
                ot_trial.set_user_attr("ray_trial_id", trial_id)
                self._driver.numbers[trial_id] = ot_trial.number
            return config

        def on_trial_result(self, trial_id, result):
            if trial_id in self._completed_trials or result.get("diverged"):
                return
            value = result.get(self.metric)
            if value is None or not math.isfinite(float(value)):
                return
            ot_trial = self._ot_trials[trial_id]
            step = int(result.get("step", result.get("training_iteration", 0)))
            if step in ot_trial.storage.get_trial(ot_trial._trial_id).intermediate_values:
                return  # replayed after a restore from checkpoint
            ot_trial.report(float(value), step)

        def on_trial_complete(self, trial_id, result=None, error=False):
            if trial_id in self._completed_trials or trial_id not in self._ot_trials:
                return
            if self._driver.failure is not None:  # the run is stopping: tell nothing more (resume tells)
                log.warning("trial %s ended; Optuna is told on --resume: %s", trial_id, self._driver.failure)
                return
            ot_trial = self._ot_trials[trial_id]
            if not result and not error and self._driver.last_result is not None:
                # A paused trial stopped by the scheduler (HyperBand) arrives without its result.
                try:
                    result = self._driver.last_result(trial_id) or None
                except KeyError:  # never seen by the collector: no result to tell
                    log.warning("trial %s ended without a result the collector saw", trial_id)
            value = result.get(self.metric) if result else None
            if result and not error:
                # The last result reaches the searcher here, not through on_trial_result.
                self.on_trial_result(trial_id, result)
            if error:
                state, reason = TrialState.FAIL, "the trial raised an error (see trials.parquet)"
            elif not result:
                state, reason = TrialState.FAIL, "the trial ended without reporting a result"
            elif result.get("diverged"):
                state, reason = TrialState.FAIL, str(result.get("error") or "diverged")
            elif value is None or not math.isfinite(float(value)):
                state, reason = TrialState.FAIL, f"{self.metric} is {value}"
            elif int(result.get("step", 0)) < int(result.get("target_steps", 0)):
                state, reason = TrialState.PRUNED, ""
            else:
                state, reason = TrialState.COMPLETE, ""
            # told before the driver was killed (finished_trials): Tune completes the restored trial
            # again; the study keeps its record, the tables are written again
            told_before = ot_trial.storage.get_trial(ot_trial._trial_id).state.is_finished()
            hook = self._driver.on_complete
            if hook is not None and not told_before:
                try:
                    hook(trial_id, ot_trial, state.name, result)
                except Exception as exc:  # plotting or the artifact store: the trial's outcome still counts
                    log.warning("trial %s: its activation plot was not attached: %s", trial_id, exc)
            try:
                if reason and not told_before:
                    ot_trial.set_user_attr("error", reason)
                if result and not told_before:
                    ot_trial.set_user_attr("steps_done", int(result.get("step", 0)))
                persist = self._driver.persist
                if persist is not None:
                    # Once Optuna is told, a resume skips this trial (see finished_trials): its steps must be
                    # on disk first, since Tune's copy of them is only synced at its periodic snapshots.
                    persist()
            except TableWriteFailed:  # recorded in the driver state; the stopper ends the run
                log.warning("trial %s ended; Optuna is told on --resume: %s", trial_id, self._driver.failure)
                return
            except Exception as exc:  # the study's storage (sqlalchemy, journal file): same, resumable
                self._driver.failure = UserError(
                    f"search stopped: cannot record trial {trial_id} in the Optuna study ({exc}); fix the "
                    f"storage, then continue with --resume")
                log.warning("%s", self._driver.failure)
                return
            if told_before:
                self._completed_trials.add(trial_id)
                return
            try:
                self._ot_study.tell(ot_trial, float(value) if state == TrialState.COMPLETE else None,
                                    state=state)
            except Exception as exc:  # the storage's own errors: logged; a resume's finished_trials decides
                log.warning("optuna tell failed for %s: %s", trial_id, exc)
                self._completed_trials.add(trial_id)
                return
            self._completed_trials.add(trial_id)
            self._driver.told += 1
            faults.stall_after_tell(self._driver.told)

        def restore(self, checkpoint_path):
            driver = self._driver  # the live state, not the empty one pickled with the searcher
            super().restore(checkpoint_path)
            self._driver = driver
            # Trials asked from Optuna after Tune's last snapshot are unknown to Tune: they would
            # stay RUNNING forever in the study (and TPE would count them as pending).
            live = {t.number for tid, t in self._ot_trials.items() if tid not in self._completed_trials}
            storage = self._ot_study._storage
            for frozen in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if frozen.number not in live:
                    try:
                        storage.set_trial_user_attr(frozen._trial_id, "error", "stale: lost when the driver stopped")
                        storage.set_trial_state_values(frozen._trial_id, TrialState.FAIL)
                    except Exception as exc:  # finished meanwhile (RuntimeError), or the storage's own errors
                        log.warning("could not mark stale trial %d failed: %s", frozen.number, exc)

    from dnn_search.search.samplers import make_sampler
    searcher = StudySearch(space=distributions(space), metric=space.metric, mode=space.mode,
                           sampler=make_sampler(space.sampler), study_name=name, storage=storage)
    searcher._driver = state
    return searcher


def finished_trials(storage, name: str, exp_dir: Path, metric: str) -> dict:
    """{Ray trial id: its final result} for every trial the study NAME holds as finished.

    Optuna is told a trial's outcome before Tune takes its next periodic snapshot of its own state,
    so a driver killed in between leaves Tune believing the trial still runs: a resume would train
    it again from an older checkpoint. The study is the record of what finished, and steps.parquet
    (written before each tell) holds the final step: `metalearn_trial` reports that result again
    instead of training. A trial whose final step is missing from steps.parquet is left out (it runs
    again, deterministically, and the study keeps its first outcome)."""
    import optuna
    from optuna.trial import TrialState
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return {}
    steps = {}
    path = exp_dir / STEPS_FILE
    if path.is_file():
        for row in read_table(path).to_dict("records"):
            steps[(str(row["trial_id"]), int(row["step"]))] = row
    out = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)):
        tid = t.user_attrs.get("ray_trial_id")
        step = int(t.user_attrs.get("steps_done", 0) or 0)
        if not tid:
            continue
        if t.state == TrialState.FAIL:
            out[tid] = {"step": step, metric: math.nan, "diverged": True,
                        "error": str(t.user_attrs.get("error") or "failed before the driver stopped")}
            continue
        row = steps.get((tid, step))
        if row is None:
            continue
        result = {k: plain(v) for k, v in row.items() if k not in ("trial_id", "wall_time")}
        result["grad_norms"] = [float(v) for v in (row.get("grad_norms") if row.get("grad_norms") is not None else [])]
        out[tid] = {**result, "step": step, "diverged": False, "error": "",
                    "reported_at": plain(row.get("wall_time"))}
    return out
