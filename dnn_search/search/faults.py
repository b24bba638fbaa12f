"""Observation and fault points for tests of crash safety (inactive unless their variable is set).

Crash-safety bugs live in windows of milliseconds: between telling Optuna that a trial finished and
Tune's next snapshot of its own state, say. A test that waits for such a window by polling files is
a test that passes or fails by timing. These two points make the windows reachable on purpose:

- `DNN_SEARCH_TRACE=FILE`: every trial appends one JSON line per event (a computed outer step, a
  replayed result) with its trial id, process id, node and the step it was restored from, so a test
  reads what was computed where, instead of Tune's result.json (a copy Tune syncs to storage only at
  its periodic snapshots, and replaces on a resume).
- `DNN_SEARCH_STALL_AFTER_TELL=N:FILE`: the driver stops forever right after the N-th trial it
  tells Optuna about, having written FILE, so a test can kill it exactly there.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

TRACE_VARIABLE = "DNN_SEARCH_TRACE"
STALL_VARIABLE = "DNN_SEARCH_STALL_AFTER_TELL"


def trace(event: str, **fields) -> None:
    """Append one event to the trace file, if tracing is on (one write call: lines never interleave)."""
    path = os.environ.get(TRACE_VARIABLE)
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


def stall_after_tell(told: int) -> None:
    """Called by the driver after it told Optuna about its TOLD-th trial: stall there if asked to."""
    spec = os.environ.get(STALL_VARIABLE)
    if not spec:
        return
    count, _, marker = spec.partition(":")
    if told != int(count):
        return
    Path(marker).write_text(f"{os.getpid()}\n")
    while True:  # until the test kills this process
        time.sleep(3600)


FAIL_WRITE_VARIABLE = "DNN_SEARCH_FAIL_TABLE_WRITE"


def fail_table_write(before_tell: int, attempt: int) -> None:
    """Called by the collector before each attempt to write the tables: with
    `DNN_SEARCH_FAIL_TABLE_WRITE=K:N[,K:N...]`, the write made before the K-th tell to Optuna fails on
    its first N attempts (as a full disk would), so a test reaches the retry and the stop on purpose."""
    spec = os.environ.get(FAIL_WRITE_VARIABLE)
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
