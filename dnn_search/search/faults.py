"""Observation and fault points for tests of crash safety, armed only by the test suite.

Crash-safety bugs live in windows of milliseconds: between telling Optuna that a trial finished and
Tune's next snapshot of its own state, say. A test that waits for such a window by polling files is
a test that passes or fails by timing. These points make the windows reachable on purpose:

- `DNN_SEARCH_TRACE=FILE`: every trial appends one JSON line per event (a computed outer step, a
  replayed result) with its trial id, process id, node and the step it was restored from, so a test
  reads what was computed where, instead of Tune's result.json (a copy Tune syncs to storage only at
  its periodic snapshots, and replaces on a resume).
- `DNN_SEARCH_STALL_AFTER_TELL=N:FILE`: the driver stops forever right after the N-th trial it
  tells Optuna about, having written FILE, so a test can kill it exactly there.
- `DNN_SEARCH_PAUSE_AFTER_TELL=N:FILE`: the driver pauses right after the N-th tell (before Tune
  stops that trial's worker or caches it for reuse), having written FILE, until the test removes
  FILE: the test acts on the cluster in that moment (removes the node the trial ran on).
- `DNN_SEARCH_FAIL_TABLE_WRITE=K:N[,K:N]`: the table write before the K-th tell fails its first N
  attempts (as a full disk would), so a test reaches the collector's retry and its stop.
- `DNN_SEARCH_TUNE_PATCHES=0`: Ray Tune without `tune_patches`' fix (measurements of the race).

A fault point left set in a user's shell would hang a search or lose its trials, so none acts unless
`DNN_SEARCH_TEST_FAULTS` holds `TEST_TOKEN`, which only `tests/conftest.py` (and the stress script
that measures the race) sets. Every point reads its variable through `armed`, one call: a variable
set without the token is refused with one logged warning, removed from this process's environment
(so no child process inherits it), and never acted on.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

GATE_VARIABLE = "DNN_SEARCH_TEST_FAULTS"
TEST_TOKEN = "dnn_search-test-suite-arms-fault-points"  # set by tests/conftest.py; never by the package
TRACE_VARIABLE = "DNN_SEARCH_TRACE"
STALL_VARIABLE = "DNN_SEARCH_STALL_AFTER_TELL"
PAUSE_VARIABLE = "DNN_SEARCH_PAUSE_AFTER_TELL"
TUNE_PATCHES_VARIABLE = "DNN_SEARCH_TUNE_PATCHES"
FAIL_WRITE_VARIABLE = "DNN_SEARCH_FAIL_TABLE_WRITE"
FAULT_VARIABLES = (TRACE_VARIABLE, STALL_VARIABLE, PAUSE_VARIABLE, TUNE_PATCHES_VARIABLE, FAIL_WRITE_VARIABLE)
# what trial workers on other nodes need to see (they do not inherit the driver's environment)
WORKER_VARIABLES = (TRACE_VARIABLE,)


def armed(variable: str) -> str | None:
    """The value of fault variable VARIABLE when the test suite armed the fault points; else None.

    Set without the token: refused (a warning, then removed from os.environ, so the warning comes
    once per process and no child inherits the variable)."""
    value = os.environ.get(variable)
    if not value:
        return None
    if os.environ.get(GATE_VARIABLE) == TEST_TOKEN:
        return value
    log.warning("%s is a test-only fault point and is ignored: it acts only under the test suite "
                "(%s); unset it", variable, GATE_VARIABLE)
    os.environ.pop(variable, None)
    return None


def worker_environment() -> dict[str, str]:
    """The armed fault variables trial workers need, with the token that arms them there (empty
    when none is armed). Called by the driver at start, so a refused variable is reported there."""
    values = {name: armed(name) for name in FAULT_VARIABLES}  # each refused one is reported now
    env = {name: value for name, value in values.items() if name in WORKER_VARIABLES and value}
    return {**env, GATE_VARIABLE: TEST_TOKEN} if env else {}


def trace(event: str, **fields) -> None:
    """Append one event to the trace file, if tracing is armed (one write call: lines never interleave)."""
    path = armed(TRACE_VARIABLE)
    if not path:
        return
    line = json.dumps({"event": event, "pid": os.getpid(), "time": time.time(), **fields}, default=str) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def read_trace(path) -> list[dict]:
    """The events of a trace file, in order (a line cut by a kill is skipped)."""
    events = []
    for line in Path(path).read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def _told_marker(variable: str, told: int) -> Path | None:
    spec = armed(variable)
    if not spec:
        return None
    count, _, marker = spec.partition(":")
    return Path(marker) if told == int(count) else None


def stall_after_tell(told: int) -> None:
    """Called by the driver after it told Optuna about its TOLD-th trial: stall there forever, or
    pause there until the test removes the marker, if asked to."""
    marker = _told_marker(STALL_VARIABLE, told)
    if marker is not None:
        marker.write_text(f"{os.getpid()}\n")
        while True:  # until the test kills this process
            time.sleep(3600)
    marker = _told_marker(PAUSE_VARIABLE, told)
    if marker is not None:
        partial = marker.with_name(marker.name + ".part")
        partial.write_text(f"{os.getpid()}\n")
        partial.replace(marker)  # the test never reads a half-written marker
        while marker.exists():  # the test removes it when it has done what this pause is for
            time.sleep(0.05)



def fail_table_write(before_tell: int, attempt: int) -> None:
    """Called by the collector before each attempt to write the tables: with
    `DNN_SEARCH_FAIL_TABLE_WRITE=K:N[,K:N...]`, the write made before the K-th tell to Optuna fails on
    its first N attempts (as a full disk would), so a test reaches the retry and the stop on purpose."""
    spec = armed(FAIL_WRITE_VARIABLE)
    if not spec or not before_tell:
        return
    for item in spec.split(","):
        tell, _, count = item.partition(":")
        if before_tell == int(tell) and attempt <= int(count or 1):
            raise OSError(28, f"No space left on device (test fault {FAIL_WRITE_VARIABLE}={spec})")


STALL_AT_VARIABLE = "DNN_SEARCH_STALL_AT"


def stall_at(point: str, count: int) -> None:
    """Called by a study's driver with its COUNT-th result of stage POINT (`metalearning`,
    `validation`): with `DNN_SEARCH_STALL_AT=POINT:N:FILE`, stall forever at the N-th, having written
    FILE, so that a test kills the driver exactly while that stage is under way."""
    spec = os.environ.get(STALL_AT_VARIABLE)
    if not spec:
        return
    where, n, marker = spec.split(":", 2)
    if where != point or count != int(n):
        return
    Path(marker).write_text(f"{os.getpid()}\n")
    while True:  # until the test kills this process
        time.sleep(3600)
