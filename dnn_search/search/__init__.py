"""Search orchestration: Ray Tune schedules the meta-learning trials, Optuna samples them. The only
code that imports Ray (and only when a search runs: `import dnn_search.search` stays cheap).

Read top-down:
    options      what `search` / `pipeline` are asked to do, resolved with the space file
    space        the space file (`search_spaces/*.yaml`), checked; its sections:
                 samplers, schedulers (name -> factory tables), pipeline_spec; checker (key-path errors)
    driver       one search from start to end on one Ray session (`run_search`, `export`)
    ray_session  the embedded local Ray or a cluster; cleaning up after a killed driver
    ray_embedded the embedded Ray's lean start, trials on its prestarted (preloaded) workers, its stop at once
    study        Optuna: distributions, the truthful searcher, which trials the study holds finished
    state        the driver's state, handed to the searcher and the collector
    collector    the Tune callback that writes trials.parquet / steps.parquet
    artifacts    each trial's activation plot, attached to its Optuna trial
    console      what the search prints
    trainables   the functions Ray runs: meta-learning, validation and Hessian trials
    pipeline     search -> validation trials -> Hessian trials -> summary
    tune_patches a fix for one failure-handling race in Ray Tune 2.60
    faults       test-only observation and fault points (act only when the test suite armed them)
"""
from __future__ import annotations


def __getattr__(name: str):
    # The entry points, imported on first use (the driver imports Optuna and, when it runs, Ray).
    if name in ("run_search", "export"):
        from dnn_search.search import driver
        return getattr(driver, name)
    if name == "run_pipeline":
        from dnn_search.search.pipeline import run_pipeline
        return run_pipeline
    if name == "Options":
        from dnn_search.search.options import Options
        return Options
    raise AttributeError(name)
