"""What the driver knows while one search runs, handed to the searcher and the trial collector.

It replaces a module-level dictionary: each search builds its own `DriverState` and passes it in.
Tune pickles its searcher (tuner.pkl, searcher-state-*.pkl) and the references held here (a live
study, hooks) cannot travel with it, so a DriverState pickles to an empty one; after a restore the
driver attaches its live state to the restored searcher again (`driver.py`).
"""
from __future__ import annotations

from typing import Callable


class DriverState:
    def __init__(self) -> None:
        self.study = None                   # the optuna Study of this search (None until it exists)
        self.numbers: dict[str, int] = {}   # Ray trial id -> Optuna trial number
        # (trial_id, optuna trial, state name, result) -> None: runs before a trial is told to Optuna
        self.on_complete: Callable | None = None
        self.persist: Callable[[], None] | None = None        # writes the tables (before each tell)
        self.last_result: Callable[[str], dict] | None = None  # a trial's last result, by Ray trial id
        self.told = 0                       # trials told to Optuna by this driver
        # why the search must stop (a table write that failed twice): nothing more is told to Optuna,
        # and the driver's stopper ends the run before Tune's next snapshot of its state
        self.failure: Exception | None = None

    def __reduce__(self):
        return (DriverState, ())
