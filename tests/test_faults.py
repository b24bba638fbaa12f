"""The test-only fault points act only when the suite armed them (dnn_search/search/faults.py): a fault
variable left in a user's shell is refused with one warning and never acted on."""
from __future__ import annotations

import logging

import pytest

from dnn_search.search import faults

FAULT_VARIABLES = faults.FAULT_VARIABLES


@pytest.mark.parametrize("gate", [None, "1", faults.TEST_TOKEN + "x"], ids=["unset", "one", "near-token"])
def test_unarmed_fault_points_refuse_once_and_do_nothing(tmp_path, monkeypatch, caplog, gate):
    if gate is None:
        monkeypatch.delenv(faults.GATE_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(faults.GATE_VARIABLE, gate)
    trace, stall, pause = tmp_path / "trace.jsonl", tmp_path / "stalled", tmp_path / "paused"
    monkeypatch.setenv(faults.TRACE_VARIABLE, str(trace))
    monkeypatch.setenv(faults.STALL_VARIABLE, f"1:{stall}")
    monkeypatch.setenv(faults.PAUSE_VARIABLE, f"1:{pause}")
    with caplog.at_level(logging.WARNING, logger=faults.__name__):
        assert faults.worker_environment() == {}  # nothing armed travels to the trial workers
        # the driver calls it at start: every refused variable is reported there, before any trial
        assert sum(r.levelno == logging.WARNING for r in caplog.records) == 3
        faults.trace("step", step=1)
        faults.trace("step", step=2)
        faults.stall_after_tell(1)  # returns: an armed stall would never return
    assert not trace.exists() and not stall.exists() and not pause.exists()
    refused = [r.getMessage() for r in caplog.records]
    for name in (faults.TRACE_VARIABLE, faults.STALL_VARIABLE, faults.PAUSE_VARIABLE):
        assert sum(name in m for m in refused) == 1, refused  # one warning each, however many calls
    assert all("test-only" in m for m in refused)


@pytest.mark.parametrize("variable", FAULT_VARIABLES)
def test_every_fault_variable_goes_through_the_gate(monkeypatch, variable):
    monkeypatch.setenv(variable, "0")
    assert faults.armed(variable) == "0"  # the suite armed them (tests/conftest.py)
    monkeypatch.setenv(faults.GATE_VARIABLE, "yes")
    assert faults.armed(variable) is None


def test_armed_trace_and_worker_environment(tmp_path, monkeypatch):
    trace = tmp_path / "trace.jsonl"
    monkeypatch.setenv(faults.TRACE_VARIABLE, str(trace))
    assert faults.worker_environment() == {faults.TRACE_VARIABLE: str(trace),
                                           faults.GATE_VARIABLE: faults.TEST_TOKEN}
    faults.trace("step", trial_id="t", step=3)
    (event,) = faults.read_trace(trace)
    assert event["event"] == "step" and event["trial_id"] == "t" and event["step"] == 3


def test_the_package_reads_fault_variables_only_through_the_gate():
    """No module reads a fault variable by name, around `armed` (grep-like, on the sources)."""
    from conftest import REPO
    names = [v for v in FAULT_VARIABLES] + ["TRACE_VARIABLE", "STALL_VARIABLE", "PAUSE_VARIABLE",
                                             "TUNE_PATCHES_VARIABLE"]
    offenders = []
    for path in sorted((REPO / "dnn_search").rglob("*.py")):
        if path.name == "faults.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if "environ" in line and any(name in line for name in names):
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert offenders == []
