"""The Ray session a search runs in: an embedded local Ray started and stopped here (the default),
or a running cluster joined with --address.

An embedded Ray is hermetic: its temporary folder is private (/tmp/dnnray*) and removed at the end,
its session is recorded in the search folder so that a --resume after a killed driver can stop what
the killed run left behind (Ray's agents and workers outlive a SIGKILLed driver), and it keeps
token auth on with a fresh token, since Ray's ports listen on every interface.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path

from dnn_search.atomic import atomic_write_text
from dnn_search.errors import UserError
from dnn_search.search import ray_embedded, tune_patches
from dnn_search.search.space import SearchSpace

log = logging.getLogger(__name__)

ADDRESS_TIMEOUT_S = 30
SESSION_FILE = ".ray_session.json"


def _ray_env() -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Tune's default CSV/TensorBoard loggers are not needed (we write parquet); result.json is kept
    # by adding JsonLoggerCallback explicitly.
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "60")


def _probe_address(address: str) -> None:
    """Fail within seconds when a host:port (or ray://host:port) does not answer."""
    if address == "auto":
        return
    target = address[len("ray://"):] if address.startswith("ray://") else address
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address {address!r}: expected 'auto', HOST:PORT or ray://HOST:PORT")
    try:
        with socket.create_connection((host, int(port)), timeout=min(10, ADDRESS_TIMEOUT_S)) as conn:
            speaks = _speaks_grpc(conn)
    except OSError as exc:
        raise UserError(f"--address {address}: no Ray cluster answers there ({exc.strerror or exc})") from None
    if not speaks and os.environ.get("RAY_USE_TLS", "0") in ("0", ""):
        # ray.init would wait minutes for a GCS that never answers: say so now
        raise UserError(f"--address {address}: something listens there but it is not a Ray cluster "
                        "(no gRPC answer within 10 s); pass the head's GCS port (default 6379) or ray://HOST:10001")


def _speaks_grpc(conn: socket.socket) -> bool:
    """Ray's GCS and Ray Client servers are gRPC (HTTP/2): after the client preface, a server sends its
    SETTINGS frame at once. Anything else (a silent port, an HTTP/1 server) does not."""
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    try:
        conn.settimeout(10)
        conn.sendall(preface)
        head = b""
        while len(head) < 9:
            chunk = conn.recv(9 - len(head))
            if not chunk:
                return False
            head += chunk
    except OSError:
        return False
    return head[3] == 0x04  # frame type SETTINGS


def processes_under(folder: str) -> list[int]:
    """PIDs of live processes that belong to the embedded Ray whose temp folder is FOLDER: its path is
    in their command line, their working folder or their stdout (Ray workers rename themselves
    'ray::...', so the command line alone misses them)."""
    found = []
    proc_root = Path("/proc")
    if not folder or not proc_root.is_dir():
        return found
    for proc in proc_root.iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        if ray_embedded.ended(int(proc.name)):  # gone, or a zombie
            continue
        try:
            hits = folder in (proc / "cmdline").read_bytes().decode(errors="replace")
            for link in ("cwd", "fd/1", "fd/2"):
                if not hits:
                    with contextlib.suppress(OSError):
                        hits = os.readlink(proc / link).startswith(folder)
        except OSError:
            continue
        if hits:
            found.append(int(proc.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not ray_embedded.ended(pid)


def clean_stale_session(exp_dir: Path, quiet: bool = False) -> int:
    """A driver killed with SIGKILL leaves its embedded Ray behind (agents and trial workers ignore
    SIGTERM and outlive it). Its record in EXP_DIR names the driver and the Ray temp folder: when that
    driver is gone, kill (by PID) the processes of that folder and remove it. Returns how many."""
    record_path = Path(exp_dir) / SESSION_FILE
    try:
        record = json.loads(record_path.read_text())
        pid, temp = int(record["pid"]), str(record["temp"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0
    if _alive(pid) or not temp.startswith(("/tmp/dnnray", tempfile.gettempdir())) or "dnnray" not in temp:
        return 0
    pids = processes_under(temp)
    for p in pids:
        with contextlib.suppress(OSError):
            os.kill(p, signal.SIGKILL)
    shutil.rmtree(temp, ignore_errors=True)
    with contextlib.suppress(OSError):
        record_path.unlink()
    if pids and not quiet:
        log.warning("stopped %d Ray process(es) left behind by the killed run (pid %s)", len(pids), pid)
    return len(pids)


def _embedded_auth() -> None:
    """Ray's gRPC ports listen on every interface (Ray 2.60 has no setting to bind them to 127.0.0.1),
    so an embedded Ray keeps token auth on, with a fresh random token passed in the environment
    (inherited by the workers) instead of the ~/.ray/auth_token file Ray would otherwise write.
    Ray reads the mode when it is imported: where it was imported already (a caller that uses Ray
    itself), the token cannot be set up and auth stays as that caller left it."""
    if "RAY_AUTH_MODE" in os.environ or "ray" in sys.modules:
        return
    import secrets
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)


def _patch_tune() -> None:
    """Our fixes to Tune (tune_patches, ray_embedded); this imports Tune (~0.7 s), which the session
    does once its Ray is up, so that a new embedded node starts meanwhile (ray_embedded)."""
    tune_patches.apply()
    ray_embedded.apply()


@contextlib.contextmanager
def ray_session(address: str | None, quiet: bool = False, exp_dir: Path | None = None,
                max_concurrent: int | None = None, cpus_per_trial: float = 1.0):
    """An embedded local Ray (started and stopped here, temp files removed) or a running cluster.
    With EXP_DIR, an embedded session is recorded there (SESSION_FILE) so that a later --resume can
    clean up after a driver that was killed. MAX_CONCURRENT trials of CPUS_PER_TRIAL at once let an
    embedded node preload the trials' modules where that wastes nothing (ray_embedded)."""
    _ray_env()
    if address is None:
        _embedded_auth()
    import ray
    if ray.is_initialized():
        _patch_tune()
        yield ray
        return
    temp = None
    record = None
    try:
        if address is None:
            # (auth settings: see _embedded_auth, applied before Ray was imported)
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            temp = tempfile.mkdtemp(prefix="dnnray", dir="/tmp" if os.path.isdir("/tmp") else None)
            if exp_dir is not None:
                record = Path(exp_dir) / SESSION_FILE
                atomic_write_text(record, json.dumps({"pid": os.getpid(), "temp": temp}) + "\n")
            ray_embedded.prepare_environment()
            with ray_embedded.lean_start():
                ray.init(include_dashboard=False, _temp_dir=temp, log_to_driver=False,
                         logging_level=logging.ERROR, configure_logging=True,
                         _system_config=ray_embedded.system_config(max_concurrent, cpus_per_trial) or None)
        else:
            _probe_address(address)
            try:
                ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                hint = ("" if os.environ.get("RAY_AUTH_MODE") else
                        "; if the cluster uses token authentication (Ray turns it on when the head has "
                        "~/.ray/auth_token), set RAY_AUTH_MODE=token here, with the head's token in RAY_AUTH_TOKEN "
                        "or ~/.ray/auth_token")
                raise UserError(f"--address {address}: cannot join the Ray cluster: "
                                f"{' '.join(str(exc).split())[:300]}{hint}") from None
        _patch_tune()
        yield ray
        if temp and ray.is_initialized():
            ray_embedded.stop_at_once()  # all written: no graceful stop needed (ray_embedded)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if temp:
            shutil.rmtree(temp, ignore_errors=True)
        if record is not None:
            with contextlib.suppress(OSError):
                record.unlink()


def check_resources(ray, space: SearchSpace) -> list[dict]:
    """Fail before waiting forever when no node can hold one trial."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cpu = max((n["Resources"].get("CPU", 0) for n in nodes), default=0)
    gpu = max((n["Resources"].get("GPU", 0) for n in nodes), default=0)
    if space.gpus_per_trial > 0 and space.gpus_per_trial > gpu:
        raise UserError(f"--gpus-per-trial {space.gpus_per_trial:g}: no node has that many GPUs "
                        f"(the most on one node: {gpu:g})")
    if space.cpus_per_trial > cpu:
        raise UserError(f"--cpus-per-trial {space.cpus_per_trial:g}: no node has that many CPUs "
                        f"(the most on one node: {cpu:g})")
    memory = max((n["Resources"].get("memory", 0) for n in nodes), default=0)
    if space.memory_per_trial > memory:
        raise UserError(f"resources.memory {space.memory_per_trial / 1e9:.3g} GB: no node offers that much "
                        f"memory to Ray (the most on one node: {memory / 1e9:.3g} GB)")
    return nodes


def warn_storage(address, exp_dir: Path, nodes: list[dict], quiet: bool) -> None:
    if address is None or len(nodes) <= 1:
        return
    log.warning("this cluster has %d nodes and the results go to the local path %s. Every node must see that "
                "path (a shared NFS mount at the same path); otherwise checkpoints, exports and validation "
                "models written on workers are lost. Pass --storage /shared/path.", len(nodes), exp_dir)
