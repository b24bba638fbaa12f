"""The search driver: one search (or its resume) from start to end on one Ray session.

`run_search` resolves the options, starts (or joins) Ray, runs the Tune experiment whose trials
Optuna samples, writes the tables and exports the best trials; `then` runs more work in the same
session (the pipeline's validation and Hessian stages, `pipeline.py`).

A search stops early, resumably, when its tables cannot be written (`collector.py`): the stopper
here raises the recorded reason at Tune's next check, which comes before Tune's next snapshot of
its own state, so the snapshot on disk never shows a trial as ended that Optuna was not told about.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

from dnn_search.atomic import ensure_writable_folder
from dnn_search.cache import current_environment
from dnn_search.errors import UserError
from dnn_search.results.export import export_trials, rank_trials
from dnn_search.results.layout import RAY_DIR, SEARCH_EXPERIMENT, TRIALS_FILE, find_search
from dnn_search.results.record import SearchRecord, write_record
from dnn_search.results.storage import open_storage, storage_spec
from dnn_search.results.tables import read_table
from dnn_search.search import faults
from dnn_search.search.artifacts import artifact_hook
from dnn_search.search.collector import make_collector
from dnn_search.search.console import print_best, print_next
from dnn_search.search.options import Options, resolve
from dnn_search.search.ray_session import check_resources, clean_stale_session, ray_session, warn_storage
from dnn_search.search.schedulers import make_scheduler
from dnn_search.search.space import SearchSpace, tune_resources
from dnn_search.search.state import DriverState
from dnn_search.search.study import finished_trials, make_searcher

log = logging.getLogger(__name__)


def make_stopper(state: DriverState):
    """A Tune stopper that ends the run with `state.failure` (checked by Tune after each event, before
    it snapshots its state). Raising, not returning True: Tune's own stop would mark the running trials
    finished, and a resume would not continue them."""
    from ray.tune import Stopper

    class StopOnFailure(Stopper):
        def __call__(self, trial_id, result):
            return False

        def stop_all(self):
            if state.failure is not None:
                raise state.failure
            return False

    return StopOnFailure()


def trial_settings(space: SearchSpace) -> dict:
    """Run-wide settings every trial gets (not sampled): environment, resources, checkpoints, rungs."""
    env = {"DNN_SEARCH_COMPILE": "1" if space.compile else "0"}
    env.update(current_environment())  # caches under --cache-dir on every node, never in $HOME
    # workers of a cluster do not inherit the driver's environment: armed fault points, native kernels on/off
    env.update(faults.worker_environment())
    if os.environ.get("DNN_SEARCH_NATIVE"):
        env["DNN_SEARCH_NATIVE"] = os.environ["DNN_SEARCH_NATIVE"]
    return {"env": env, "cpus_per_trial": space.cpus_per_trial, "data_path": space.data_path,
            "checkpoint_every": space.checkpoint_every, "milestones": space.milestones(),
            "max_steps": space.max_steps()}


def _search_in_session(space: SearchSpace, exp_dir: Path, record: SearchRecord, opts: Options) -> dict:
    import optuna
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    from dnn_search.search.trainables import metalearn_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(storage_spec(exp_dir, record.optuna_storage))
    state = DriverState()
    collector = make_collector(exp_dir, space, opts.quiet, state)
    state.on_complete = artifact_hook(exp_dir, collector)
    state.persist = collector.persist
    state.last_result = lambda tid: dict(collector.trials[tid].last_result or {})
    settings = trial_settings(space)
    path = exp_dir / RAY_DIR / SEARCH_EXPERIMENT
    resuming = opts.resume and tune.Tuner.can_restore(str(path))
    if resuming:
        settings["finished"] = finished_trials(storage, opts.name, exp_dir, space.metric)
        if not any(path.glob("experiment_state-*.json")):
            log.warning("Tune saved no snapshot of its trials in %s before the search stopped: Tune starts its "
                        "trials again; the trials the Optuna study holds as finished keep their rows in %s",
                        path, TRIALS_FILE)
    trainable = tune.with_resources(tune.with_parameters(metalearn_trial, settings=settings),
                                    tune_resources(space.cpus_per_trial, space.gpus_per_trial, space.memory_per_trial))
    run_config = tune.RunConfig(
        name=SEARCH_EXPERIMENT, storage_path=str(exp_dir / RAY_DIR), verbose=0,
        callbacks=[JsonLoggerCallback(), collector], stop=make_stopper(state),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        failure_config=tune.FailureConfig(max_failures=space.max_failures))
    started = time.time()
    if resuming:
        tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=True)
        # RunConfig callbacks are not restored with the tuner: attach ours again; and the restored
        # searcher and stopper carry an empty DriverState (it cannot be pickled): attach the live one.
        tuner._local_tuner._run_config.callbacks = run_config.callbacks
        tuner._local_tuner._run_config.stop = run_config.stop
        tuner._local_tuner._run_config.verbose = 0
        tuner._local_tuner._tune_config.search_alg._driver = state
    else:
        searcher = make_searcher(space, opts.name, storage, state)
        fixed = {k: v for k, v in _full_config(space).items() if k not in space.params}
        scheduler = make_scheduler(space.scheduler, space.metric, space.mode, space.max_steps())
        tuner = tune.Tuner(trainable, param_space=fixed,
                           tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler,
                                                       num_samples=space.num_samples,
                                                       max_concurrent_trials=space.max_concurrent,
                                                       reuse_actors=True),
                           run_config=run_config)
    try:
        state.study = optuna.load_study(study_name=opts.name, storage=storage)
    except KeyError:  # restored before the searcher created it
        state.study = None
    if not opts.quiet:
        where = record.address or "embedded local Ray"
        log.info(f"search {opts.name}: {space.num_samples} trials of {', '.join(p.describe() for p in space.params.values())}"
                 f" on {where}; {space.cpus_per_trial:g} CPU + {space.gpus_per_trial:g} GPU per trial; "
                 f"results in {exp_dir}")
    tuner.fit()
    collector.write()
    return {"collector": collector, "seconds": time.time() - started}


def _full_config(space: SearchSpace) -> dict:
    from dnn_search.metalearn import MetaConfig
    return {**MetaConfig().to_dict(), **space.fixed}


def run_search(opts: Options, *, then=None) -> dict:
    """`dnn-search search`: run (or resume) a search; export the top trials. `then(ray, ...)` runs
    more work in the same Ray session (the pipeline)."""
    space, exp_dir, record = resolve(opts)
    created = not exp_dir.exists()
    ensure_writable_folder(exp_dir, "storage")
    opts.resume = bool(opts.resume)
    try:
        return _run_search(opts, space, exp_dir, record, then)
    except UserError:
        if created:  # refused before anything ran: leave no empty folder behind
            with contextlib.suppress(OSError):
                exp_dir.rmdir()
        raise


def _run_search(opts: Options, space: SearchSpace, exp_dir: Path, record: SearchRecord, then) -> dict:
    if opts.resume:
        clean_stale_session(exp_dir, opts.quiet)
    with ray_session(record.address, opts.quiet, exp_dir, space.max_concurrent, space.cpus_per_trial) as ray, \
            contextlib.ExitStack() as stack:
        nodes = check_resources(ray, space)
        warn_storage(record.address, exp_dir, nodes, opts.quiet)
        write_record(exp_dir, record)
        if opts.dashboard:
            from dnn_search.results.dashboard import start_dashboard_process, stop_dashboard
            dashboard, url = start_dashboard_process(exp_dir, port=opts.dashboard_port)
            stack.callback(stop_dashboard, dashboard)
            log.info(f"Dashboard: {url}  (stops with this command; reopen with `dnn-search dashboard "
                     f"{opts.name}`)")
        outcome = _search_in_session(space, exp_dir, record, opts)
        exported = []
        trials = read_table(exp_dir / TRIALS_FILE)
        if len(rank_trials(trials, space.mode, space.top, space.top_per)):
            exported = export_trials(exp_dir, space.top, quiet=True)
        if not opts.quiet:
            print_best(exp_dir, space, opts.name, space.top)
            log.info(f"search took {outcome['seconds']:.0f} s; exported {len(exported)} trial(s) to "
                     f"{exp_dir / 'activations'}")
        result = {"exp_dir": exp_dir, "space": space, "exported": exported, "seconds": outcome["seconds"]}
        if then is not None:
            result.update(then(ray, space, exp_dir, exported, opts) or {})
    if not opts.quiet:
        print_next(exp_dir, opts.name, opts.storage)
    return result


def export(name_or_dir: str, top: int, out: str | None, storage: str = "results") -> list[dict]:
    """`dnn-search export`: the best trials' activation files of a finished (or running) search."""
    return export_trials(find_search(name_or_dir, storage), top, out)
