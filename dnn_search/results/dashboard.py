"""The live dashboard: optuna-dashboard served on a search's Optuna study and its artifacts.

`dnn-search dashboard NAME_OR_DIR` and `dnn-search search --dashboard` both run the server in a
child process (`python -m dnn_search.results.dashboard ...`), so that Ctrl-C (or the end of the search)
stops it cleanly and a slow dashboard request can never stall the search. The child

* opens the study's storage (where the search record says it is: `results.storage`) and the
  artifact folder `artifacts/`, so a trial's page shows the PNG of its learned activations;
* binds a threaded WSGI server to HOST:PORT (port 0: a free port), prints one line
  `DNN_SEARCH_DASHBOARD_LISTENING <port>` on stdout, then serves until SIGINT/SIGTERM, or until
  the process that started it is gone (no orphan servers).

The parent waits (bounded) until the HTTP API answers before it prints the URL.
"""
from __future__ import annotations

import argparse
import errno
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path

from dnn_search.errors import UserError
from dnn_search.results.layout import find_search
from dnn_search.results.storage import locate_study, open_storage, study_names

READY_PREFIX = "DNN_SEARCH_DASHBOARD_LISTENING"
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


# ----------------------------------------------------------------------------------- the server (child)

def _make_server(host: str, port: int, app):
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = family

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, *args):  # no access log on the terminal of a running search
            pass

    return make_server(host, port, app, server_class=Server, handler_class=QuietHandler)


def serve(storage: str, artifact_dir: str | None, host: str, port: int, parent_pid: int | None = None) -> int:
    """Serve optuna-dashboard until SIGINT/SIGTERM or the parent's exit. Returns an exit status."""
    import optuna
    import optuna_dashboard

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = None
    if artifact_dir:
        Path(artifact_dir).mkdir(parents=True, exist_ok=True)
        store = optuna.artifacts.FileSystemArtifactStore(artifact_dir)
    app = optuna_dashboard.wsgi(open_storage(storage), artifact_store=store)
    try:
        server = _make_server(host, port, app)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            print(f"port {port} on {host} is already in use: choose another with --port "
                  "(--port 0 picks a free one)", file=sys.stderr)
        else:
            print(f"cannot listen on {host}:{port}: {e.strerror or e}", file=sys.stderr)
        return 2

    def stop(*_):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if parent_pid:
        def watch_parent():
            while True:
                time.sleep(1.0)
                if os.getppid() != parent_pid:
                    stop()
                    return
        threading.Thread(target=watch_parent, daemon=True).start()

    print(f"{READY_PREFIX} {server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dnn_search.results.dashboard",
                                description="optuna-dashboard on a storage (internal: started by dnn-search)")
    p.add_argument("--storage", required=True, help="storage URL or journal file path")
    p.add_argument("--artifact-dir", default=None)
    p.add_argument("--host", default=DEFAULT_HOST)
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--parent-pid", type=int, default=None, help="exit when this process is gone")
    args = p.parse_args(argv)
    return serve(args.storage, args.artifact_dir, args.host, args.port, args.parent_pid)


# ----------------------------------------------------------------------------------- the parent side

def _url_host(host: str) -> str:
    if host in WILDCARD_HOSTS:
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def listening_url(url: str, host: str) -> str:
    """The URL to print: what the server really listens on. A wildcard bind is shown as such (every
    interface), with the loopback URL that opens it on this machine."""
    if host not in WILDCARD_HOSTS:
        return url
    shown = url.replace("http://127.0.0.1:", f"http://{'[::]' if host == '::' else '0.0.0.0'}:", 1)
    return f"{shown}  (listening on every interface; on this machine: {url})"


def _drain(stream, lines: deque, ready: list, event: threading.Event) -> None:
    for raw in iter(stream.readline, ""):
        line = raw.rstrip("\n")
        if line.startswith(READY_PREFIX) and not ready:
            ready.append(int(line.split()[1]))
            event.set()
        else:
            lines.append(line)
    event.set()  # EOF: the child exited


def _http_ok(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_dashboard_process(results_dir: str | os.PathLike, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                            timeout: float = 30.0) -> tuple[subprocess.Popen, str]:
    """Start optuna-dashboard on `results_dir`'s study in a background process; return (process, url).

    Returns once the HTTP API answers (at most `timeout` seconds; UserError otherwise, with the
    child's message, e.g. a port in use). The study need not exist yet: it appears in the dashboard
    as soon as the search creates it. `port=0` picks a free port. Stop it with `stop_dashboard`.
    """
    loc = locate_study(results_dir)
    if loc.is_journal:
        Path(loc.storage).parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "dnn_search.results.dashboard", "--storage", loc.storage,
           "--artifact-dir", os.fspath(loc.artifact_dir), "--host", host, "--port", str(int(port)),
           "--parent-pid", str(os.getpid())]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    package_root = os.fspath(Path(__file__).resolve().parents[2])  # importable even when not installed
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    errors: deque = deque(maxlen=50)
    ready: list = []
    event = threading.Event()
    threading.Thread(target=_drain, args=(proc.stdout, deque(maxlen=50), ready, event), daemon=True).start()
    stderr_done = threading.Event()  # set at the child's EOF on stderr: all its last words are in ERRORS
    threading.Thread(target=_drain, args=(proc.stderr, errors, [], stderr_done), daemon=True).start()
    proc.stderr_tail = errors  # type: ignore[attr-defined]

    deadline = time.monotonic() + timeout
    event.wait(timeout)
    if not ready:
        _fail(proc, errors, stderr_done, f"the dashboard did not start on {host}:{port}")
    actual = ready[0]
    base = f"http://{_url_host(host)}:{actual}"
    while not _http_ok(f"{base}/api/studies", timeout=2.0):
        if proc.poll() is not None or time.monotonic() > deadline:
            _fail(proc, errors, stderr_done, f"the dashboard on {base} did not answer within {timeout:.0f} s")
        time.sleep(0.1)
    return proc, f"{base}/dashboard"


def _fail(proc: subprocess.Popen, errors: deque, stderr_done: threading.Event, what: str):
    stop_dashboard(proc)
    stderr_done.wait(5.0)  # the child is gone, so its stderr ends: ERRORS then holds its last words
    detail = next((line for line in reversed(errors) if line.strip()), "")
    raise UserError(f"{what}: {detail}" if detail else what)


def stop_dashboard(process: subprocess.Popen | None, timeout: float = 5.0) -> None:
    """Stop a dashboard started by `start_dashboard_process` (SIGTERM, then SIGKILL); idempotent."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


def run_dashboard(name_or_dir: str, storage: str = "results", host: str = DEFAULT_HOST,
                  port: int = DEFAULT_PORT, out=None) -> None:
    """`dnn-search dashboard`: serve until Ctrl-C (or until the server exits)."""
    out = out or sys.stdout
    # Ctrl-C must stop the server even when this process was started with SIGINT ignored (an
    # ignored signal is inherited, e.g. from a parent that runs Ray): Python then installs no
    # KeyboardInterrupt handler of its own.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    folder = find_search(name_or_dir, storage)
    loc = locate_study(folder)
    names = study_names(loc)
    if host in WILDCARD_HOSTS:
        print("warning: --host 0.0.0.0 makes the dashboard reachable by anyone on the network, "
              "with no authentication (and it can edit trial notes); prefer an SSH tunnel to 127.0.0.1",
              file=sys.stderr)
    proc, url = start_dashboard_process(folder, host=host, port=port)
    shown = loc.study_name if loc.study_name in names else ", ".join(names)
    try:  # from the first line printed on, Ctrl-C is a clean stop (a user may press it at once)
        print(f"Dashboard: {listening_url(url, host)}", file=out)
        print(f"  study {shown} in {folder}; press Ctrl-C to stop", file=out, flush=True)
        while proc.poll() is None:
            time.sleep(0.3)
    except KeyboardInterrupt:
        stop_dashboard(proc)
        print("dashboard stopped", file=out, flush=True)
        return
    finally:
        stop_dashboard(proc)
    tail = [line for line in getattr(proc, "stderr_tail", []) if line.strip()]
    if proc.returncode not in (0, -signal.SIGTERM):
        raise UserError(f"the dashboard exited with status {proc.returncode}" + (f": {tail[-1]}" if tail else ""))


if __name__ == "__main__":
    sys.exit(main())
