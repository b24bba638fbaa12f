"""`dnn-search dashboard`: a real optuna-dashboard server on a real results folder."""
from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import browser  # noqa: E402
from conftest import listening_addresses  # noqa: E402
from fixtures_results import TRIAL_PLAN, build_results  # noqa: E402

from dnn_search import cli  # noqa: E402
from dnn_search.results.dashboard import start_dashboard_process, stop_dashboard  # noqa: E402
from dnn_search.errors import UserError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NAME = "fixture-search"


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    return build_results(tmp_path_factory.mktemp("results"), NAME, pipeline=False)


def _get(url: str, timeout: float = 10.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.headers.get("Content-Type"), r.read()


def _get_json(url: str):
    return json.loads(_get(url)[2])


def _answers(url: str) -> bool:
    try:
        _get(url, timeout=1.0)
        return True
    except (urllib.error.URLError, OSError):
        return False


class CliProcess:
    """`dnn-search dashboard ...` in a subprocess, stdout/stderr collected by threads; each stream's
    end (the process closed it) is an event, so a test reads everything a process wrote without sleeping."""

    def __init__(self, *args: str, sigint_ignored: bool = False):
        # SIGINT_IGNORED: started as by a parent that ignores SIGINT (Ray's processes and test runners
        # may), which the child inherits
        ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
        self.proc = subprocess.Popen([sys.executable, "-m", "dnn_search.cli", "dashboard", *args],
                                     cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"),
                                     preexec_fn=ignore)
        self.out: queue.Queue = queue.Queue()
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.readers = [threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout, self.out),
                                         daemon=True),
                        threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr, None), daemon=True)]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _read(stream, sink, q):
        for line in iter(stream.readline, ""):
            sink.append(line.rstrip("\n"))
            if q is not None:
                q.put(line.rstrip("\n"))
        if q is not None:
            q.put(None)  # end of stdout: the process closed it (it exited)

    def wait_for_url(self, timeout: float = 60.0) -> str:
        """The URL the command prints; fails (with what it wrote) when it ends without one, or after
        TIMEOUT seconds without a line (a bounded wait on its output, not a sleep)."""
        try:
            for line in iter(lambda: self.out.get(timeout=timeout), None):
                if line.startswith("Dashboard: "):
                    return line.split(" ", 1)[1].strip()
        except queue.Empty:
            pass
        self.close()
        raise AssertionError(f"no URL printed; stdout={self.stdout} stderr={self.stderr}")

    def server_pids(self) -> list[int]:
        """The dashboard server processes (children of the command)."""
        import psutil
        return [p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)]

    def interrupt(self, timeout: float = 60.0) -> int:  # generous: CI machines can be loaded
        """Ctrl-C; returns the exit status once the command exited and all its output was read."""
        self.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        status = self.proc.wait(timeout)
        for reader in self.readers:  # EOF follows the exit at once
            reader.join(timeout)
            assert not reader.is_alive(), "the command exited but its output did not end"
        return status

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _gone(pid: int) -> bool:
    import psutil
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture(scope="module")
def served(results):
    """The CLI serving the fixture on a free port: (url, process)."""
    cli = CliProcess(str(results), "--port", "0")
    try:
        url = cli.wait_for_url()
        yield url, cli
    finally:
        cli.close()


def test_default_bind_is_loopback_on_the_socket(served):
    """The server's listening socket (read from the kernel) is 127.0.0.1, not only the printed URL."""
    url, cli = served
    port = int(url.split(":")[2].split("/")[0])
    assert listening_addresses(cli.proc.pid) == {("127.0.0.1", port)}


def test_api_lists_study_trials_and_artifact(served, results):
    url, _ = served
    assert url.startswith("http://127.0.0.1:") and url.endswith("/dashboard")
    base = url.rsplit("/", 1)[0]
    summaries = _get_json(f"{base}/api/studies")["study_summaries"]
    assert [s["study_name"] for s in summaries] == [NAME]
    study_id = summaries[0]["study_id"]
    detail = _get_json(f"{base}/api/studies/{study_id}")
    trials = detail["trials"]
    assert len(trials) == len(TRIAL_PLAN)
    assert [t["state"] for t in trials] == [state.capitalize() if state != "FAIL" else "Fail"
                                            for state, _ in TRIAL_PLAN]
    # per-step metrics are intermediate values (learning curves); pruned curves are shorter
    assert [len(t["intermediate_values"]) for t in trials] == [steps for _, steps in TRIAL_PLAN]
    assert detail["has_intermediate_values"]
    # the activation PNG of trial 0 is attached and downloadable
    t0 = trials[0]
    (art,) = t0["artifacts"]
    assert art["filename"] == "activations.png" and art["mimetype"] == "image/png"
    status, ctype, body = _get(f"{base}/artifacts/{study_id}/{t0['trial_id']}/{art['artifact_id']}")
    assert status == 200 and ctype == "image/png"
    assert body == (results / "activations" / f"{NAME}_00000" / "activations.png").read_bytes()
    # the SPA itself is served
    status, ctype, page = _get(url)
    assert status == 200 and b"<html" in page.lower()


def test_chromium_renders_dashboard(served, tmp_path):
    browser.require_chromium()
    url, _ = served
    text = browser.visible_text(browser.dump_dom(f"{url}/studies/0/trials"))
    assert NAME in text
    assert f"{len(TRIAL_PLAN)} Trials" in text
    assert "activations.png" in text  # the trial's artifact is listed on its page
    shot = browser.screenshot(f"{url}/studies/0", tmp_path / "dashboard.png")
    assert shot.stat().st_size > 10_000
    assert browser.distinct_colours(shot) > 50


def test_ctrl_c_stops_cleanly_even_when_sigint_was_ignored_by_the_parent(results):
    """Ctrl-C stops the command and its server cleanly. It is started with SIGINT ignored, which a
    child inherits (Ray's processes and test runners may ignore it): the command must still stop
    instead of serving forever (the plain case takes the same path, the command's own handler)."""
    cli = CliProcess(str(results), "--port", "0", sigint_ignored=True)
    try:
        url = cli.wait_for_url()
        base = url.rsplit("/", 1)[0]
        assert _answers(f"{base}/api/studies")
        servers = cli.server_pids()
        assert servers, "no dashboard server process under the command"
        assert cli.interrupt() == 0, cli.stderr
        assert not any("Traceback" in line for line in cli.stderr), cli.stderr
        # the command waited for its server before it exited: the server is gone, nothing listens
        assert all(_gone(pid) for pid in servers), servers
        assert not _answers(f"{base}/api/studies")
    finally:
        cli.close()


# The two error paths run the command in this process (its server is still a real child process):
# a fresh interpreter per case would cost seconds of imports and test nothing more.

def test_port_in_use_is_a_clear_error(results, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        assert cli.main(["dashboard", str(results), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "already in use" in lines[0] and str(port) in lines[0], err


def test_no_study_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli.main(["dashboard", "empty", "--storage", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no Optuna study" in err, err


def test_wildcard_host_warns(results):
    cli = CliProcess(str(results), "--host", "0.0.0.0", "--port", "0")
    try:
        url = cli.wait_for_url()
        # the printed URL says what the socket does: every interface (and how to open it here)
        assert url.startswith("http://0.0.0.0:") and "every interface" in url, url
        port = int(url.split(":")[2].split("/")[0])
        assert listening_addresses(cli.proc.pid) == {("0.0.0.0", port)}
        assert _answers(f"http://127.0.0.1:{port}/api/studies")
        assert cli.interrupt() == 0  # returns once all of stderr was read
        assert any("warning" in line and "0.0.0.0" in line for line in cli.stderr), cli.stderr
    finally:
        cli.close()


def test_background_dashboard_before_the_study_exists(tmp_path):
    """What `search --dashboard` does: start on an empty folder, the study appears live."""
    folder = tmp_path / "live"
    proc, url = start_dashboard_process(folder, port=0, timeout=30)
    try:
        base = url.rsplit("/", 1)[0]
        assert _get_json(f"{base}/api/studies")["study_summaries"] == []
        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(folder / "optuna_journal.log")))
        study = optuna.create_study(study_name="live", storage=storage)
        trial = study.ask()
        trial.report(0.5, 1)
        summaries = _get_json(f"{base}/api/studies")["study_summaries"]
        assert [s["study_name"] for s in summaries] == ["live"]
        trials = _get_json(f"{base}/api/studies/{summaries[0]['study_id']}")["trials"]
        assert len(trials) == 1 and trials[0]["state"] == "Running"
        # a second one on the same port fails with a clear message
        with pytest.raises(UserError, match="already in use"):
            start_dashboard_process(folder, port=int(base.rsplit(":", 1)[1]), timeout=30)
    finally:
        stop_dashboard(proc)
    assert proc.returncode is not None
    assert not _answers(f"{base}/api/studies")
    stop_dashboard(proc)  # idempotent
