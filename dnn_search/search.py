"""Search orchestration: Ray Tune schedules the trials, Optuna samples their hyperparameters.

`run_search` runs one search (`dnn-search search`), `run_pipeline` chains search -> export ->
validation trials -> Hessian trials -> summary (`dnn-search pipeline`), all on one Ray session:
an embedded local Ray that is started and stopped here, or a running cluster (`--address`).

Truthfulness of the Optuna study: Ray's OptunaSearch tells every trial that ends COMPLETE, even
one that ASHA stopped early. `StudySearch` tells those PRUNED, diverged or errored ones FAIL, and
attaches a plot of the trial's learned activations to the Optuna trial before it is finished.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import astuple, dataclass, field
from pathlib import Path

from dnn_search import store, tune_patches
from dnn_search.atomic import ensure_writable_folder
from dnn_search.errors import UserError
from dnn_search.space import SearchSpace, from_dict, load_space

RAY_DIR = "ray"
SEARCH_EXPERIMENT = "search"
ARTIFACT_DIR = "artifacts"
ADDRESS_TIMEOUT_S = 30

# The driver-side state of the running search, reached by the searcher (which Ray pickles and
# restores, so it cannot hold these references itself).
_DRIVER: dict = {}


@dataclass
class Options:
    """Command-line options of search/pipeline (None: take the space file's value)."""

    name: str
    space_path: str | None = None
    storage: str = "results"
    num_samples: int | None = None
    max_concurrent: int | None = None
    cpus_per_trial: float | None = None
    gpus_per_trial: float | None = None
    address: str | None = None
    resume: bool = False
    top: int | None = None
    max_failures: int | None = None
    optuna_storage: str | None = None
    data_path: str | None = None
    quiet: bool = False
    dashboard: bool = False
    dashboard_port: int = 8080
    # pipeline
    runs: int | None = None
    datasets: list | None = None
    hessian: bool | None = None
    extra: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------ Ray session

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


SESSION_FILE = ".ray_session.json"


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
        try:
            if (proc / "stat").read_text().split(")")[-1].split()[0] == "Z":
                continue
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
    with contextlib.suppress(OSError):
        if (Path("/proc") / str(pid) / "stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True


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
    import signal
    pids = processes_under(temp)
    for p in pids:
        with contextlib.suppress(OSError):
            os.kill(p, signal.SIGKILL)
    shutil.rmtree(temp, ignore_errors=True)
    with contextlib.suppress(OSError):
        record_path.unlink()
    if pids and not quiet:
        print(f"note: stopped {len(pids)} Ray process(es) left behind by the killed run (pid {pid})",
              file=sys.stderr)
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


@contextlib.contextmanager
def ray_session(address: str | None, quiet: bool = False, exp_dir: Path | None = None):
    """An embedded local Ray (started and stopped here, temp files removed) or a running cluster.
    With EXP_DIR, an embedded session is recorded there (SESSION_FILE) so that a later --resume can
    clean up after a driver that was killed."""
    _ray_env()
    if address is None:
        _embedded_auth()
    import ray
    tune_patches.apply()
    if ray.is_initialized():
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
                from dnn_search.atomic import atomic_write_text
                record = Path(exp_dir) / SESSION_FILE
                atomic_write_text(record, json.dumps({"pid": os.getpid(), "temp": temp}) + "\n")
            ray.init(include_dashboard=False, _temp_dir=temp, log_to_driver=False,
                     logging_level=logging.ERROR, configure_logging=True)
        else:
            _probe_address(address)
            try:
                ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise UserError(f"--address {address}: cannot join the Ray cluster: "
                                f"{' '.join(str(exc).split())[:300]}") from None
        yield ray
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if temp:
            shutil.rmtree(temp, ignore_errors=True)
        if record is not None:
            with contextlib.suppress(OSError):
                record.unlink()


def _check_resources(ray, space: SearchSpace) -> list[dict]:
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
    return nodes


def _warn_storage(address, exp_dir: Path, nodes: list[dict], quiet: bool) -> None:
    if address is None or len(nodes) <= 1:
        return
    print(f"note: this cluster has {len(nodes)} nodes and the results go to the local path {exp_dir}. "
          "Every node must see that path (a shared NFS mount at the same path); otherwise checkpoints, "
          "exports and validation models written on workers are lost. Pass --storage /shared/path.",
          file=sys.stderr)


# ------------------------------------------------------------------------------ Optuna side

def optuna_storage(exp_dir: Path, url: str | None):
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend
    if url is None or url.endswith(".log"):
        path = Path(url) if url else exp_dir / store.JOURNAL_FILE
        return JournalStorage(JournalFileBackend(str(path)))
    try:
        return RDBStorage(url, heartbeat_interval=None)
    except Exception as exc:  # bad URL, driver missing, server down
        raise UserError(f"--optuna-storage {url}: {' '.join(str(exc).split())[:300]}") from None


def make_sampler(space: SearchSpace):
    import optuna
    s = space.sampler
    if s["type"] == "random":
        return optuna.samplers.RandomSampler(seed=s["seed"])
    if s["type"] == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=s["seed"], n_startup_trials=s.get("n_startup_trials", 1))
    return optuna.samplers.TPESampler(seed=s["seed"], n_startup_trials=s.get("n_startup_trials", 10))


def distributions(space: SearchSpace) -> dict:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    out = {}
    for name, p in space.params.items():
        if p.type == "categorical":
            out[name] = CategoricalDistribution(p.choices)
        elif p.type == "int":
            out[name] = IntDistribution(int(p.low), int(p.high), log=p.log)
        else:
            out[name] = FloatDistribution(float(p.low), float(p.high), log=p.type == "loguniform")
    return out


def _make_searcher_class():
    from optuna.trial import TrialState
    from ray.tune.search.optuna import OptunaSearch

    class StudySearch(OptunaSearch):
        """OptunaSearch that tells Optuna the truth: PRUNED for early-stopped trials, FAIL for
        diverged or errored ones; reports every outer step as an intermediate value."""

        def suggest(self, trial_id):
            config = super().suggest(trial_id)
            ot_trial = self._ot_trials.get(trial_id)
            if ot_trial is not None:
                with contextlib.suppress(Exception):
                    ot_trial.set_user_attr("ray_trial_id", trial_id)
                _DRIVER.setdefault("numbers", {})[trial_id] = ot_trial.number
            return config

        def on_trial_result(self, trial_id, result):
            if trial_id in self._completed_trials or result.get("diverged"):
                return
            value = result.get(self.metric)
            if value is None or not math.isfinite(float(value)):
                return
            ot_trial = self._ot_trials[trial_id]
            step = int(result.get("step", result.get("training_iteration", 0)))
            if step in ot_trial.storage.get_trial(ot_trial._trial_id).intermediate_values:
                return  # replayed after a restore from checkpoint
            ot_trial.report(float(value), step)

        def on_trial_complete(self, trial_id, result=None, error=False):
            if trial_id in self._completed_trials or trial_id not in self._ot_trials:
                return
            ot_trial = self._ot_trials[trial_id]
            if not result and not error and _DRIVER.get("last_result"):
                # A paused trial stopped by the scheduler (HyperBand) arrives without its result.
                with contextlib.suppress(Exception):
                    result = _DRIVER["last_result"](trial_id) or None
            value = result.get(self.metric) if result else None
            if result and not error:
                # The last result reaches the searcher here, not through on_trial_result.
                self.on_trial_result(trial_id, result)
            if error:
                state, reason = TrialState.FAIL, "the trial raised an error (see trials.parquet)"
            elif not result:
                state, reason = TrialState.FAIL, "the trial ended without reporting a result"
            elif result.get("diverged"):
                state, reason = TrialState.FAIL, str(result.get("error") or "diverged")
            elif value is None or not math.isfinite(float(value)):
                state, reason = TrialState.FAIL, f"{self.metric} is {value}"
            elif int(result.get("step", 0)) < int(result.get("target_steps", 0)):
                state, reason = TrialState.PRUNED, ""
            else:
                state, reason = TrialState.COMPLETE, ""
            hook = _DRIVER.get("on_complete")
            if hook is not None:
                with contextlib.suppress(Exception):
                    hook(trial_id, ot_trial, state.name, result)
            with contextlib.suppress(Exception):
                if reason:
                    ot_trial.set_user_attr("error", reason)
                if result:
                    ot_trial.set_user_attr("steps_done", int(result.get("step", 0)))
            try:
                if ot_trial.storage.get_trial(ot_trial._trial_id).state.is_finished():
                    # told before the driver was killed; Tune completes the restored trial again
                    self._completed_trials.add(trial_id)
                    return
                self._ot_study.tell(ot_trial, float(value) if state == TrialState.COMPLETE else None,
                                    state=state)
            except Exception as exc:  # e.g. already finished after a restore
                logging.getLogger(__name__).warning("optuna tell failed for %s: %s", trial_id, exc)
            self._completed_trials.add(trial_id)

        def restore(self, checkpoint_path):
            super().restore(checkpoint_path)
            # Trials asked from Optuna after Tune's last snapshot are unknown to Tune: they would
            # stay RUNNING forever in the study (and TPE would count them as pending).
            live = {t.number for tid, t in self._ot_trials.items() if tid not in self._completed_trials}
            storage = self._ot_study._storage
            for frozen in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if frozen.number not in live:
                    with contextlib.suppress(Exception):
                        storage.set_trial_user_attr(frozen._trial_id, "error", "stale: lost when the driver stopped")
                        storage.set_trial_state_values(frozen._trial_id, TrialState.FAIL)

    return StudySearch


def fail_stale_trials(storage, name: str, keep_numbers=()) -> int:
    """Mark RUNNING Optuna trials of study NAME as FAIL (a driver that died left them behind)."""
    import optuna
    from optuna.trial import TrialState
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return 0
    count = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.number in keep_numbers:
            continue
        storage.set_trial_user_attr(t._trial_id, "error", "stale: lost when the driver stopped")
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        count += 1
    return count


# ------------------------------------------------------------------------------- callbacks

def _make_callbacks(exp_dir: Path, space: SearchSpace, quiet: bool):
    from ray.tune import Callback

    class Collector(Callback):
        """Keeps every trial and every reported step; writes trials/steps parquet now and then
        (so the dashboard sees a running search) and prints a progress table."""

        def __init__(self):
            self.trials = {}
            self.steps = {}
            self.errors = {}
            self.last_write = 0.0
            self.last_print = 0.0
            self.tty = sys.stdout.isatty()
            self.print_every = 5.0 if self.tty else 30.0
            self.started = time.time()
            self._load_previous()

        def _load_previous(self):
            """On --resume: the steps of the killed run. steps.parquet is only rewritten now and then,
            so the steps reported after its last write are read back from Tune's result.json files."""
            path = exp_dir / store.STEPS_FILE
            if path.is_file():
                import pandas as pd
                with contextlib.suppress(Exception):
                    for row in pd.read_parquet(path).to_dict("records"):
                        row["grad_norms"] = list(row.get("grad_norms") if row.get("grad_norms") is not None else [])
                        self.steps[(str(row["trial_id"]), int(row["step"]))] = row
            for results in (exp_dir / RAY_DIR / SEARCH_EXPERIMENT).glob("*/result.json"):
                with contextlib.suppress(OSError):
                    for line in results.read_text(encoding="utf-8", errors="replace").splitlines():
                        try:
                            result = json.loads(line)
                        except ValueError:  # a line cut by the kill
                            continue
                        if isinstance(result, dict) and result.get("trial_id"):
                            self._add_step(str(result["trial_id"]), result)

        def _add_step(self, trial_id, result):
            if result.get("diverged") or "step" not in result:
                return
            row = {k: result.get(k) for k in store.STEP_COLUMNS if k != "trial_id"}
            row["trial_id"] = trial_id
            row["grad_norms"] = [float(v) for v in (result.get("grad_norms") or [])]
            row["wall_time"] = result.get("reported_at")
            self.steps[(trial_id, int(result["step"]))] = row

        def on_step_end(self, iteration, trials, **info):
            for t in trials:
                self.trials[t.trial_id] = t
            now = time.time()
            if now - self.last_write > 15:
                self.write()
            if not quiet and now - self.last_print > self.print_every:
                self.last_print = now
                self.print_progress()

        def on_trial_start(self, iteration, trials, trial, **info):
            self.trials[trial.trial_id] = trial

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.trials[trial.trial_id] = trial
            self._add_step(trial.trial_id, result)

        def on_trial_error(self, iteration, trials, trial, **info):
            self.errors[trial.trial_id] = _error_text(trial)

        def on_experiment_end(self, trials, **info):
            for t in trials:
                self.trials[t.trial_id] = t
            self.write()
            if not quiet:
                self.print_progress(final=True)

        # ------------------------------------------------------------------------------ tables

        def trial_rows(self) -> list[dict]:
            numbers, states = _optuna_index(exp_dir)
            rows = []
            for tid, t in self.trials.items():
                res = t.last_result or {}
                steps = [r for (trial_id, _), r in self.steps.items() if trial_id == tid]
                accs = [r["heldout_accuracy"] for r in steps if _finite(r.get("heldout_accuracy"))]
                ckpt = t.checkpoint
                error = self.errors.get(tid) or (str(res.get("error") or "") if res.get("diverged") else "")
                if t.status == "ERROR" and not error:
                    error = _error_text(t)
                status = _status(t, states.get(tid), res)
                config = {k: v for k, v in (t.config or {}).items() if not isinstance(v, dict)}
                times = [r.get("wall_time") for r in steps if r.get("wall_time")]
                row = {"trial_id": tid, "optuna_number": numbers.get(tid, _DRIVER.get("numbers", {}).get(tid)),
                       "status": status, "error": error, "retries": int(getattr(t, "num_failures", 0) or 0),
                       "node_id": res.get("node_id", ""),
                       **config,
                       "steps_done": int(res.get("step", 0) or 0),
                       "score": _num(res.get(space.metric)) if not res.get("diverged") else math.nan,
                       "final_meta_loss": _num(res.get("meta_loss")),
                       "final_heldout_accuracy": _num(res.get("heldout_accuracy")),
                       "best_heldout_accuracy": max(accs) if accs else math.nan,
                       "wall_seconds": _num(res.get("time_total_s")),
                       "started_at": _num(res.get("started_at")),
                       "ended_at": max(times) if times else math.nan,
                       "checkpoint_path": _relative(ckpt.path, exp_dir) if ckpt is not None else ""}
                rows.append(row)
            rows.sort(key=lambda r: (r["optuna_number"] is None, r["optuna_number"] or 0, r["trial_id"]))
            return rows

        def write(self):
            self.last_write = time.time()
            with contextlib.suppress(UserError):
                store.write_table(exp_dir / store.TRIALS_FILE, self.trial_rows(), store.TRIAL_COLUMNS)
                rows = sorted(self.steps.values(), key=lambda r: (str(r["trial_id"]), int(r["step"])))
                store.write_table(exp_dir / store.STEPS_FILE,
                                  [{k: r.get(k) for k in (*store.STEP_COLUMNS, "wall_time")} for r in rows],
                                  store.STEP_COLUMNS)

        def print_progress(self, final=False):
            rows = self.trial_rows()
            counts = {s: sum(r["status"] == s for r in rows) for s in store.STATUSES}
            elapsed = time.time() - self.started
            head = (f"[{elapsed:6.0f}s] trials {len(rows)}/{space.num_samples}: "
                    + ", ".join(f"{v} {k.lower()}" for k, v in counts.items() if v))
            if not self.tty and not final:
                print(head, flush=True)
                return
            columns = ["trial_id", "status", "node", *space.params, "step", space.metric]
            table = [{**{p: _short(r.get(p)) for p in space.params}, "trial_id": r["trial_id"],
                      "status": r["status"], "node": str(r["node_id"])[:8], "step": r["steps_done"],
                      space.metric: r["score"]} for r in rows]
            text = head + "\n" + store.format_table(table, columns)
            if self.tty and not final:
                print("\033[2J\033[H" + text, flush=True)
            else:
                print(text, flush=True)

    return Collector()


def _short(v):
    return float(f"{v:.4g}") if isinstance(v, float) else v


def _finite(v) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _num(v) -> float:
    return float(v) if _finite(v) else math.nan


def _relative(path: str, exp_dir: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(Path(path).resolve().relative_to(exp_dir))
    return str(path)


def _error_text(trial) -> str:
    with contextlib.suppress(Exception):
        path = trial.error_file
        if path and os.path.isfile(path):
            lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
            if lines:
                return lines[-1].strip()[:500]
    return str(getattr(trial, "error_msg", "") or "error")[:500]


_STATE_NAMES = {"COMPLETE": "COMPLETED", "PRUNED": "PRUNED", "FAIL": "FAILED", "RUNNING": "RUNNING",
                "WAITING": "RUNNING"}


def _status(trial, optuna_state, result) -> str:
    if trial.status in ("RUNNING", "PENDING", "PAUSED"):
        return "RUNNING"
    if optuna_state in _STATE_NAMES and optuna_state not in ("RUNNING", "WAITING"):
        return _STATE_NAMES[optuna_state]
    if trial.status == "ERROR" or result.get("diverged"):
        return "FAILED"
    if int(result.get("step", 0) or 0) >= int(result.get("target_steps", 1) or 1):
        return "COMPLETED"
    return "PRUNED"


def _optuna_index(exp_dir: Path):
    """{ray trial id: optuna number}, {ray trial id: optuna state name} from the study."""
    study = _DRIVER.get("study")
    numbers, states = {}, {}
    if study is None:
        return numbers, states
    with contextlib.suppress(Exception):
        for t in study.get_trials(deepcopy=False):
            tid = t.user_attrs.get("ray_trial_id")
            if tid:
                numbers[tid], states[tid] = t.number, t.state.name
    return numbers, states


def _artifact_hook(exp_dir: Path, collector):
    """Before a trial is told to Optuna: plot its learned activations, attach the PNG."""
    def hook(trial_id, ot_trial, state_name, result):
        from optuna.artifacts import FileSystemArtifactStore, upload_artifact

        from dnn_search.plots import plot_activations
        trial = collector.trials.get(trial_id)
        ckpt = trial.checkpoint if trial is not None else None
        if ckpt is None:
            return
        config = trial.config or {}
        acts = store.load_trial_activations(exp_dir, ckpt.path, config.get("activation", "sin"))
        plots = exp_dir / "plots"
        png = plot_activations(acts, plots / f"{trial_id}_activations.png",
                               f"trial {trial_id} ({state_name.lower()}): {acts.n} learned {acts.base} activation(s)")
        artifacts = exp_dir / ARTIFACT_DIR
        artifacts.mkdir(parents=True, exist_ok=True)

        class AtomicArtifactStore(FileSystemArtifactStore):
            """Optuna's file store writes in place; this one writes a temp file and renames it."""

            def write(self, artifact_id, content_body):
                from dnn_search.atomic import atomic_path
                target = Path(self._base_path) / artifact_id
                if target.resolve().parent != Path(self._base_path).resolve():
                    raise ValueError(f"bad artifact id {artifact_id!r}")
                with atomic_path(target) as tmp, open(tmp, "wb") as fh:
                    shutil.copyfileobj(content_body, fh)

        upload_artifact(artifact_store=AtomicArtifactStore(str(artifacts)), file_path=str(png),
                        study_or_trial=ot_trial)
    return hook


# --------------------------------------------------------------------------------- the search

def resolve(opts: Options) -> tuple[SearchSpace, Path, dict]:
    """The space (file + flags, or the recorded one with --resume), the folder and search.json."""
    exp_dir = store.experiment_dir(opts.storage, opts.name)
    if opts.top is not None and opts.top < 1:
        raise UserError(f"--top must be a positive integer, got {opts.top}")
    for flag, value in (("--num-samples", opts.num_samples), ("--max-concurrent", opts.max_concurrent),
                        ("--runs", opts.runs)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be a positive integer, got {value}")
    if opts.max_failures is not None and opts.max_failures < 0:
        raise UserError(f"--max-failures must be zero or a positive integer, got {opts.max_failures}")
    if opts.cpus_per_trial is not None and not opts.cpus_per_trial > 0:
        raise UserError(f"--cpus-per-trial must be positive, got {opts.cpus_per_trial}")
    if opts.gpus_per_trial is not None and not opts.gpus_per_trial >= 0:
        raise UserError(f"--gpus-per-trial must be zero or positive, got {opts.gpus_per_trial}")
    if opts.resume:
        if not (exp_dir / store.SEARCH_FILE).is_file():
            raise UserError(f"--resume: no search named {opts.name!r} in {exp_dir.parent} "
                            f"({store.SEARCH_FILE} is missing)")
        recorded = store.read_search(exp_dir)
        space = from_dict(recorded["space"], source=str(exp_dir / store.SEARCH_FILE))
        overrides = {"top": opts.top, "runs": opts.runs, "datasets": opts.datasets, "hessian": opts.hessian,
                     "max_failures": opts.max_failures}
        space = space.with_overrides(**overrides)
        options = {**recorded.get("options", {})}
        if opts.address is not None:
            options["address"] = opts.address
        return space, exp_dir, {**recorded, "space": space.to_dict(), "options": options}
    if not opts.space_path:
        raise UserError("--space FILE.yaml is required (or --resume to continue a recorded search)")
    space = load_space(opts.space_path)
    datasets = opts.datasets
    space = space.with_overrides(num_samples=opts.num_samples, max_concurrent=opts.max_concurrent,
                                 cpus_per_trial=opts.cpus_per_trial, gpus_per_trial=opts.gpus_per_trial,
                                 top=opts.top, data_path=opts.data_path, runs=opts.runs, datasets=datasets,
                                 hessian=opts.hessian, max_failures=opts.max_failures)
    if (exp_dir / RAY_DIR / SEARCH_EXPERIMENT).exists():
        raise UserError(f"a search named {opts.name!r} already exists in {exp_dir}: "
                        "pass --resume to continue it, or choose another --name")
    record = {"name": opts.name, "space_file": str(Path(opts.space_path).resolve()), "space": space.to_dict(),
              "options": {"address": opts.address, "optuna_storage": opts.optuna_storage,
                          "storage": str(exp_dir.parent)},
              "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    return space, exp_dir, record


def _settings(space: SearchSpace) -> dict:
    env = {"DNN_SEARCH_COMPILE": "1" if space.compile else "0"}
    for name in ("DNN_SEARCH_CACHE", "DNN_SEARCH_NATIVE"):  # data/build cache; native kernels on/off
        if os.environ.get(name):
            env[name] = os.environ[name]
    return {"env": env, "cpus_per_trial": space.cpus_per_trial, "data_path": space.data_path,
            "checkpoint_every": space.checkpoint_every, "milestones": space.milestones(),
            "max_steps": space.max_steps()}


def _scheduler(space: SearchSpace):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, HyperBandScheduler
    s = space.scheduler
    if s["type"] == "asha":
        return ASHAScheduler(time_attr="step", metric=space.metric, mode=space.mode, max_t=space.max_steps(),
                             grace_period=s["grace_period"], reduction_factor=s["reduction_factor"])
    if s["type"] == "hyperband":
        return HyperBandScheduler(time_attr="step", metric=space.metric, mode=space.mode,
                                  max_t=space.max_steps(), reduction_factor=s["reduction_factor"])
    return FIFOScheduler()


def _search_in_session(ray, space: SearchSpace, exp_dir: Path, record: dict, opts: Options) -> dict:
    import optuna
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    from dnn_search.trials import metalearn_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    options = record.get("options", {})
    storage = optuna_storage(exp_dir, options.get("optuna_storage"))
    collector = _make_callbacks(exp_dir, space, opts.quiet)
    _DRIVER.clear()
    _DRIVER.update(on_complete=_artifact_hook(exp_dir, collector), numbers={},
                   last_result=lambda tid: dict(collector.trials[tid].last_result or {}))
    trainable = tune.with_resources(tune.with_parameters(metalearn_trial, settings=_settings(space)),
                                    {"cpu": space.cpus_per_trial, "gpu": space.gpus_per_trial})
    run_config = tune.RunConfig(
        name=SEARCH_EXPERIMENT, storage_path=str(exp_dir / RAY_DIR), verbose=0,
        callbacks=[JsonLoggerCallback(), collector],
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        failure_config=tune.FailureConfig(max_failures=space.max_failures))
    path = exp_dir / RAY_DIR / SEARCH_EXPERIMENT
    started = time.time()
    if opts.resume and tune.Tuner.can_restore(str(path)):
        tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=True)
        # RunConfig callbacks are not restored with the tuner: attach ours again.
        tuner._local_tuner._run_config.callbacks = run_config.callbacks
        tuner._local_tuner._run_config.verbose = 0
    else:
        searcher = _make_searcher_class()(space=distributions(space), metric=space.metric, mode=space.mode,
                                          sampler=make_sampler(space), study_name=opts.name, storage=storage)
        fixed = {k: v for k, v in _full_config(space).items() if k not in space.params}
        tuner = tune.Tuner(trainable, param_space=fixed,
                           tune_config=tune.TuneConfig(search_alg=searcher, scheduler=_scheduler(space),
                                                       num_samples=space.num_samples,
                                                       max_concurrent_trials=space.max_concurrent,
                                                       reuse_actors=True),
                           run_config=run_config)
    try:
        _DRIVER["study"] = optuna.load_study(study_name=opts.name, storage=storage)
    except KeyError:  # restored before the searcher created it
        _DRIVER["study"] = None
    if not opts.quiet:
        where = options.get("address") or "embedded local Ray"
        print(f"search {opts.name}: {space.num_samples} trials of {', '.join(p.describe() for p in space.params.values())}"
              f" on {where}; {space.cpus_per_trial:g} CPU + {space.gpus_per_trial:g} GPU per trial; "
              f"results in {exp_dir}", flush=True)
    tuner.fit()
    collector.write()
    return {"collector": collector, "seconds": time.time() - started}


def _full_config(space: SearchSpace) -> dict:
    from dnn_search.metalearn import MetaConfig
    return {**MetaConfig().to_dict(), **space.fixed}


def _print_best(exp_dir: Path, space: SearchSpace, name: str, top: int) -> None:
    trials = store.read_table(exp_dir / store.TRIALS_FILE)
    best = store.rank_trials(trials, space.mode, top, space.top_per)
    counts = trials["status"].value_counts().to_dict()
    print(f"\n{len(trials)} trials: " + ", ".join(f"{v} {k.lower()}" for k, v in counts.items()))
    cols = ["trial_id", "optuna_number", "status", *space.params, "steps_done", "score", "best_heldout_accuracy"]
    rows = [{c: store._plain(r.get(c)) for c in cols} for r in best.to_dict("records")]
    print(f"best {len(rows)} trial(s) by {space.metric} ({space.mode}):")
    print(store.format_table(rows, cols))
    print_failures(trials)


def print_failures(trials) -> None:
    """The failed trials with their reasons, and the trials that Ray retried after a crash."""
    failed = trials[trials["status"] == "FAILED"]
    if len(failed):
        print(f"\n{len(failed)} failed trial(s):")
        for r in failed.to_dict("records"):
            reason = " ".join(str(r.get("error") or "no reason recorded").split())[:300]
            print(f"  {r['trial_id']} (optuna #{store._plain(r.get('optuna_number'))}): {reason}")
    if "retries" in trials.columns:
        retried = trials[trials["retries"].fillna(0).astype(int) > 0]
        for r in retried.to_dict("records"):
            print(f"  {r['trial_id']} was retried {int(r['retries'])} time(s) from its last checkpoint "
                  f"and ended {str(r['status']).lower()}")


def _print_next(exp_dir: Path, name: str, storage: str) -> None:
    flag = "" if Path(storage).resolve() == Path("results").resolve() else f" --storage {storage}"
    print(f"\nresults: {exp_dir}")
    print(f"next:  dnn-search dashboard {name}{flag}     (Optuna dashboard: curves, parameters, plots)")
    print(f"       dnn-search export {exp_dir} --top 5 --out {exp_dir / 'activations'}")
    print(f"       dnn-search validate --act_path {exp_dir / 'activations'}/<trial_id>/<file>.npz")
    print(f"       dnn-search report {name}{flag}")


def run_search(opts: Options, *, then=None) -> dict:
    """`dnn-search search`: run (or resume) a search; export the top trials. `then(ray, ...)` runs
    more work in the same Ray session (the pipeline)."""
    space, exp_dir, record = resolve(opts)
    created = not exp_dir.exists()
    ensure_writable_folder(exp_dir, "storage")
    address = record.get("options", {}).get("address")
    opts.resume = bool(opts.resume)
    try:
        return _run_search(opts, space, exp_dir, record, address, then)
    except UserError:
        if created:  # refused before anything ran: leave no empty folder behind
            with contextlib.suppress(OSError):
                exp_dir.rmdir()
        raise


def _run_search(opts, space, exp_dir, record, address, then) -> dict:
    if opts.resume:
        clean_stale_session(exp_dir, opts.quiet)
    with ray_session(address, opts.quiet, exp_dir) as ray, contextlib.ExitStack() as stack:
        nodes = _check_resources(ray, space)
        _warn_storage(address, exp_dir, nodes, opts.quiet)
        from dnn_search.atomic import atomic_write_text
        atomic_write_text(exp_dir / store.SEARCH_FILE, json.dumps(record, indent=2, default=str) + "\n")
        if opts.dashboard:
            from dnn_search.dashboard import start_dashboard_process, stop_dashboard
            dashboard, url = start_dashboard_process(exp_dir, port=opts.dashboard_port)
            stack.callback(stop_dashboard, dashboard)
            print(f"Dashboard: {url}  (stops with this command; reopen with `dnn-search dashboard "
                  f"{opts.name}`)", flush=True)
        try:
            outcome = _search_in_session(ray, space, exp_dir, record, opts)
        finally:
            _DRIVER.pop("on_complete", None)
        exported = []
        trials = store.read_table(exp_dir / store.TRIALS_FILE)
        if len(store.rank_trials(trials, space.mode, space.top, space.top_per)):
            exported = store.export_trials(exp_dir, space.top, quiet=True)
        if not opts.quiet:
            _print_best(exp_dir, space, opts.name, space.top)
            print(f"search took {outcome['seconds']:.0f} s; exported {len(exported)} trial(s) to "
                  f"{exp_dir / 'activations'}")
        result = {"exp_dir": exp_dir, "space": space, "exported": exported, "seconds": outcome["seconds"]}
        if then is not None:
            result.update(then(ray, space, exp_dir, exported, opts) or {})
    if not opts.quiet:
        _print_next(exp_dir, opts.name, opts.storage)
    return result


# ------------------------------------------------------------------------------ the pipeline

def _grid_run(name: str, trainable, jobs: list[dict], exp_dir: Path, space: SearchSpace, settings: dict,
              quiet: bool, label: str):
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback
    path = exp_dir / RAY_DIR / name
    if path.exists():
        shutil.rmtree(path)  # a re-run of the pipeline's later stages starts them afresh
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(trainable, settings=settings),
                            {"cpu": space.cpus_per_trial, "gpu": space.gpus_per_trial}),
        param_space={"job": tune.grid_search(jobs)},
        tune_config=tune.TuneConfig(max_concurrent_trials=space.max_concurrent, reuse_actors=True),
        run_config=tune.RunConfig(name=name, storage_path=str(exp_dir / RAY_DIR), verbose=0,
                                  callbacks=[JsonLoggerCallback()],
                                  failure_config=tune.FailureConfig(max_failures=space.max_failures)))
    started = time.time()
    if not quiet:
        print(f"{label}: {len(jobs)} trials", flush=True)
    grid = tuner.fit()
    rows, failed = [], []
    for res in grid:
        if res.error is not None or not res.metrics:
            failed.append(f"{(res.config or {}).get('job', {})}: {' '.join(str(res.error).split())[:200]}")
            continue
        rows.append(res.metrics)
    if not quiet:
        print(f"{label}: {len(rows)} done, {len(failed)} failed in {time.time() - started:.0f} s", flush=True)
    for line in failed[:5]:
        print(f"  failed: {line}", file=sys.stderr)
    return rows, time.time() - started


def _job_key(trial_id, dataset, mode, run) -> tuple:
    return (str(trial_id), str(dataset), str(mode), int(run))


def _validation_plan(exported: list[dict], p: dict, exp_dir: Path) -> tuple[list[dict], list[tuple]]:
    """Every (trial, dataset, mode, run) the pipeline reports, and for each the key of the training
    that produces it. Equal keys train the same network, so it is trained once: `pure` depends only
    on the base function and the validation settings (not on the learned activations), and with
    n=1 `diverse` builds exactly the `single:1` network (bit-identical, tested)."""
    from dnn_search.actfile import read_activation_file
    from dnn_search.validation import config_for

    wanted, keys = [], []
    for e in exported:
        acts = read_activation_file(e["npz"])
        cfg = config_for(acts.metadata, epochs=p.get("epochs"), lr=p.get("lr"), momentum=p.get("momentum"),
                         hidden_size=p.get("hidden_size"))
        modes = ["pure", *[f"single:{k}" for k in range(1, e["n"] + 1)], "diverse"]
        for dataset in p["datasets"]:
            for mode in modes:
                for run in range(p["runs"]):
                    seed = p.get("seed", 0) + run
                    model_dir = (str(exp_dir / "validation" / e["trial_id"] / "models")
                                 if p["hessian"] and run == 0 else "")
                    wanted.append({"trial_id": e["trial_id"], "act_path": str(e["npz"]), "dataset": dataset,
                                   "mode": mode, "run": run, "seed": seed, "model_dir": model_dir})
                    if mode == "pure":
                        keys.append(("pure", acts.base, dataset, seed, run, astuple(cfg)))
                    else:
                        same = "single:1" if mode == "diverse" and e["n"] == 1 else mode
                        keys.append((e["trial_id"], same, dataset, seed, run))
    return wanted, keys


def _pipeline_stages(ray, space: SearchSpace, exp_dir: Path, exported: list[dict], opts: Options) -> dict:
    from dnn_search.trials import hessian_trial, validation_trial
    if not exported:
        raise UserError("the search produced no finished trial to validate")
    p = space.pipeline
    settings = {"env": _settings(space)["env"], "cpus_per_trial": space.cpus_per_trial,
                "data_path": space.data_path, "epochs": p.get("epochs"), "lr": p.get("lr"),
                "momentum": p.get("momentum"), "hidden_size": p.get("hidden_size"), "seed": p.get("seed", 0),
                "hessian_samples": p["hessian_samples"], "hessian_iters": p["hessian_iters"],
                "hessian_top_k": p["hessian_top_k"]}
    if any(d != "MNIST1D" for d in p["datasets"]) and not space.data_path:
        raise UserError(f"datasets {', '.join(p['datasets'])}: MNIST and CIFAR are read from local files; "
                        "set data_path in the space file or pass --data-path")
    wanted, key_of = _validation_plan(exported, p, exp_dir)
    trained_by: dict[tuple, dict] = {}  # training key -> the job that trains it
    for job, key in zip(wanted, key_of):
        trained_by.setdefault(key, job)
    jobs = list(trained_by.values())
    if not opts.quiet and len(jobs) < len(wanted):
        print(f"validation: {len(wanted)} (trial, dataset, mode, run) results from {len(jobs)} trainings "
              "(trials with equal settings share their pure network; an n=1 diverse network is single:1)")
    rows, v_seconds = _grid_run("validation", validation_trial, jobs, exp_dir, space, settings, opts.quiet,
                                "validation")
    results = {_job_key(r["trial_id_meta"], r["dataset"], r["mode"], r["run"]): r for r in rows}
    v_rows = []
    for job, key in zip(wanted, key_of):
        src = trained_by[key]
        r = results.get(_job_key(src["trial_id"], src["dataset"], src["mode"], src["run"]))
        if r is None:  # that training failed
            continue
        v_rows.append({"trial_id": job["trial_id"], "dataset": job["dataset"], "mode": job["mode"],
                       "run": job["run"], "seed": job["seed"],
                       **{k: r[k] for k in ("test_accuracy", "test_loss", "epochs", "seconds", "node_id",
                                            "model_path", "curve_accuracy", "curve_loss")}})
    store.write_table(exp_dir / "validation.parquet", v_rows,
                      ("trial_id", "dataset", "mode", "run", "seed", "test_accuracy", "test_loss"))
    h_rows, h_seconds = [], 0.0
    if p["hessian"]:
        with_model = [r for r in v_rows if r["model_path"]]
        h_jobs_by_model: dict[str, dict] = {}  # a shared model gets one Hessian
        for r in with_model:
            h_jobs_by_model.setdefault(r["model_path"], {
                "trial_id": r["trial_id"], "dataset": r["dataset"], "mode": r["mode"], "model_path": r["model_path"],
                "output_folder": str(exp_dir / "hessian" / r["trial_id"])})
        h_jobs = list(h_jobs_by_model.values())
        rows, h_seconds = _grid_run("hessian", hessian_trial, h_jobs, exp_dir, space, settings, opts.quiet,
                                    "hessian")
        by_model = {r["model_path"]: r for r in rows}
        h_rows = [{"trial_id": v["trial_id"], "dataset": v["dataset"], "mode": v["mode"],
                   **{k: by_model[v["model_path"]][k] for k in ("top_eigenvalue", "trace", "top_eigenvalues",
                                                                "density_eigen", "density_weight", "num_params",
                                                                "model_path", "node_id")}}
                  for v in with_model if v["model_path"] in by_model]
    store.write_table(exp_dir / "hessian.parquet", h_rows,
                      ("trial_id", "dataset", "mode", "top_eigenvalue", "trace", "top_eigenvalues",
                       "density_eigen", "density_weight"))
    summary = write_summary(exp_dir, opts.name)
    if not opts.quiet:
        print("\n" + summary)
    return {"validation_seconds": v_seconds, "hessian_seconds": h_seconds}


def write_summary(exp_dir: Path, name: str) -> str:
    import pandas as pd

    from dnn_search.atomic import atomic_write_text
    validation = pd.read_parquet(exp_dir / "validation.parquet")
    hpath = exp_dir / "hessian.parquet"
    hessian = pd.read_parquet(hpath) if hpath.is_file() else None
    tpath = exp_dir / store.TRIALS_FILE
    trials = pd.read_parquet(tpath) if tpath.is_file() else None
    text = store.summary_markdown(name, validation, hessian, trials)
    atomic_write_text(exp_dir / "summary.md", text)
    return text


def run_pipeline(opts: Options) -> dict:
    """`dnn-search pipeline`: search -> export -> validation trials -> Hessian trials -> summary."""
    return run_search(opts, then=_pipeline_stages)


def export(name_or_dir: str, top: int, out: str | None, storage: str = "results") -> list[dict]:
    exp_dir = store.resolve_experiment(name_or_dir, storage)
    return store.export_trials(exp_dir, top, out)
