"""Two fixes for Ray Tune's trial controller in failure paths (seen in Ray 2.60).

**A lost snapshot.** Tune saves a snapshot of its trials into a local staging folder and copies
it to the storage in the background, skipping a copy while the previous one runs. When its loop
raises (our stopper does, when the search tables cannot be written), Tune ends without a final
copy: the snapshot on the storage may be older than the one it saved, or missing, and a
`--resume` then finds trials missing, or none (Tune then starts the experiment again, logging
only "Failed to restore the run state"). The fix waits for the copy in flight and copies the
last saved snapshot once more before the error goes on. That snapshot predates the event that
raised (Tune saves after handling each event, and the raise comes first), so it never shows a
trial as ended that Optuna was not told about.

**A double failure on actor reuse.**

With actor reuse on (it halves the smoke pipeline's wall time), Tune keeps a finished trial's
actor and hands it to the next trial with a RESET call. When that cached actor has died meanwhile
(its node was lost, or its process killed), two errors arrive for one trial: first the actor's
death, which Tune handles correctly (one failure counted, trial requeued as PENDING), then the
failed RESET future, which Tune counts as a second failure of a PENDING trial and ends the trial
as ERROR without any retry, whatever `max_failures` says; the trial also stays marked as
"resetting". Measured: 4 of 8 node-loss runs lost a trial this way.

The fix wraps only the RESET call's error handler: it forgets the trial's "resetting" mark, drops
the error if Tune has already given up that actor, and otherwise treats it as that actor's death
(Tune's own path, which retries the trial under `max_failures`). Any other error of a RESET keeps
Tune's handling. This module touches private Tune names of one Ray minor release (`WRITTEN_FOR`, the release
`setup.cfg` allows and `requirements.lock` pins): on any other Ray it warns once and leaves Tune
alone, and where the private names are missing it does the same.
"""
from __future__ import annotations

import logging
import warnings

from dnn_search.search import faults

log = logging.getLogger(__name__)

WRITTEN_FOR = (2, 60)  # the Ray minor release whose TuneController this patch was written against


def ray_minor(version: str) -> tuple[int, int]:
    """(major, minor) of a Ray version string such as '2.60.0' or '2.61.0rc1'."""
    parts = version.split(".")
    return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)


def applies_to(version: str) -> bool:
    return ray_minor(version) == WRITTEN_FOR

_INSTANCE_STATE = ("_trial_to_actor", "_actor_to_trial", "_resetting_trials")


def _reset_error_handler(controller, tracked_actor, tune_handler):
    from ray.exceptions import RayActorError

    def on_reset_error(trial, exception):
        if not isinstance(exception, RayActorError):
            return tune_handler(trial, exception)
        controller._resetting_trials.discard(trial)
        if controller._actor_to_trial.get(tracked_actor) is not trial:
            log.debug("dropping the RESET error of trial %s: its actor's death was already handled", trial)
            return None
        log.debug("RESET of trial %s failed because its cached actor died: retrying the trial", trial)
        return controller._actor_failed(tracked_actor, exception)

    return on_reset_error


def flush_snapshot(controller) -> None:
    """Copy the controller's last saved snapshot to the storage and wait for it (module doc)."""
    storage = getattr(controller, "_storage", None)
    syncer = getattr(storage, "syncer", None)
    if syncer is None:
        return
    try:
        syncer.wait()  # the copy in flight, if any
        syncer.sync_up(storage.experiment_driver_staging_path, storage.experiment_fs_path)
        syncer.wait()
    except Exception as exc:  # the error that stopped the loop matters more; say why a resume may lose trials
        log.warning("could not save Tune's last snapshot to %s (%s): a --resume may miss the newest trials",
                    getattr(storage, "experiment_fs_path", "?"), exc)


def _flushing_step(original):
    def step(self):
        try:
            return original(self)
        except Exception:
            flush_snapshot(self)
            raise
    return step


def apply() -> bool:
    """Install the fixes once per process; True when they are in place."""
    import ray
    from ray.tune.execution.tune_controller import TuneController

    if getattr(TuneController, "_dnn_search_reset_fix", False):
        return True
    if faults.armed(faults.TUNE_PATCHES_VARIABLE) == "0":  # measurements of Tune as it is (test-only)
        return False
    if not applies_to(ray.__version__):
        # warnings show a given message once per process by default
        warnings.warn(f"dnn_search.tune_patches was written for Ray {WRITTEN_FOR[0]}.{WRITTEN_FOR[1]}; "
                      f"Ray {ray.__version__} is installed, so Tune is left as it is (a trial whose reused "
                      "worker died may end as ERROR without a retry; a search stopped by an error may "
                      "resume without its newest trials)", RuntimeWarning, stacklevel=2)
        return False
    original = getattr(TuneController, "_schedule_trial_task", None)
    if original is None or not hasattr(TuneController, "_actor_failed"):
        log.debug("this Tune has no _schedule_trial_task/_actor_failed: actor-reuse reset fix not applied")
        return False

    def schedule_trial_task(self, trial, method_name, *args, on_error=None, **kwargs):
        if (method_name == "reset" and on_error is not None
                and all(hasattr(self, name) for name in _INSTANCE_STATE) and trial in self._trial_to_actor):
            on_error = _reset_error_handler(self, self._trial_to_actor[trial], on_error)
        return original(self, trial, method_name, *args, on_error=on_error, **kwargs)

    TuneController._schedule_trial_task = schedule_trial_task
    TuneController.step = _flushing_step(TuneController.step)
    TuneController._dnn_search_reset_fix = True
    return True
