"""Ray Tune trainables: meta-learning, validation and Hessian trials.

Each function runs inside a Ray worker. It calls the science modules (which know nothing about
Ray) and talks to Tune only through `tune.report` / `tune.get_checkpoint`. `settings` is a plain
dict of run-wide options passed with `tune.with_parameters` (not part of the sampled config).
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path

from dnn_search.results.checkpoint import ACTIVATION_PLOT, STATE_FILE, load_checkpoint_state, state_activations
from dnn_search.search import faults


def _prepare(settings: dict):
    """Environment, thread count and device for one trial."""
    for key, value in (settings.get("env") or {}).items():
        os.environ[key] = str(value)
    import ray
    import torch
    cpus = float(settings.get("cpus_per_trial", 1) or 1)
    torch.set_num_threads(max(1, int(cpus)))
    device = "cpu"
    if ray.get_gpu_ids() and torch.cuda.is_available():
        device = "cuda"  # Ray sets CUDA_VISIBLE_DEVICES to the trial's GPU(s)
    return device, ray.get_runtime_context().get_node_id()


def checkpoint_steps(step: int, last: int, every: int, milestones) -> bool:
    """Checkpoint every `every` steps, at each scheduler rung (so a stopped trial's final state is
    saved) and at the last step."""
    return step % every == 0 or step == last or step in milestones


# ------------------------------------------------------------------------------ meta-learning

def plot_checkpoint(state: dict, base: str, folder: Path, title: str) -> None:
    """The learned activations of a checkpoint as `ACTIVATION_PLOT` inside it, drawn here in the
    trial's worker: the driver attaches it to the Optuna trial when the trial ends
    (search/artifacts.py) instead of drawing it there, where every trial's plot held up Tune's
    event loop (about 0.4 s per trial, measured in docs/benchmarks_search.md)."""
    from dnn_search.plots import plot_activations
    acts = state_activations(state, base)
    plot_activations(acts, folder / ACTIVATION_PLOT, f"{title}: {acts.n} learned {acts.base} activation(s)")


def metalearn_trial(config: dict, settings: dict) -> None:
    import ray
    import torch
    from ray import tune

    from dnn_search.data import canonical_name, load_dataset
    from dnn_search.metalearn import MetaConfig, MetaLearner, MetaLearningDiverged

    device, node_id = _prepare(settings)
    cfg = MetaConfig.from_dict(config)
    cfg.dataset = canonical_name(cfg.dataset)
    last_step = min(cfg.steps, int(settings.get("max_steps") or cfg.steps))
    started = time.time()
    common = {"node_id": node_id, "started_at": started, "target_steps": last_step}
    trial_id = tune.get_context().get_trial_id()
    finished = (settings.get("finished") or {}).get(trial_id)
    if finished is not None:
        # Optuna was told this trial's outcome before the driver stopped, but Tune's last snapshot of
        # its own state predates that: report the recorded final result again instead of training.
        faults.trace("replay", trial_id=trial_id, step=finished.get("step"), node_id=node_id)
        tune.report({**finished, **common, "replayed": True})
        return
    data = load_dataset(cfg.dataset, settings.get("data_path"))
    learner = MetaLearner.from_dataset(cfg, data, device=device)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            learner.load_state_dict(load_checkpoint_state(folder))
    restored_from = learner.step_index
    every = int(settings.get("checkpoint_every", 5))
    milestones = set(settings.get("milestones") or ())
    previous = {"meta_loss": math.nan, "final_train_loss": math.nan, **dict.fromkeys(learner.task.columns("heldout"), math.nan),
                "grad_norms": [], "grad_norm": math.nan, "seconds": 0.0}
    while learner.step_index < last_step:
        try:
            m = learner.step()
        except MetaLearningDiverged as exc:
            # A final result, not an exception: Ray must not retry a diverged configuration.
            tune.report({**previous, **common, "step": learner.step_index, "diverged": True, "error": str(exc)})
            return
        metrics = {"step": m.step, "meta_loss": m.meta_loss, "final_train_loss": m.final_train_loss,
                   **m.heldout,  # the task's metrics on the held-out split (heldout_accuracy, ...)
                   "grad_norms": list(m.grad_norms), "grad_norm": math.sqrt(sum(g * g for g in m.grad_norms)),
                   "seconds": m.seconds}
        previous = metrics
        faults.trace("step", trial_id=trial_id, step=m.step, restored_from=restored_from, node_id=node_id,
                     meta_loss=m.meta_loss, **m.heldout, gpu_ids=ray.get_gpu_ids())
        result = {**metrics, **common, "diverged": False, "error": "", "reported_at": time.time()}
        if checkpoint_steps(m.step, last_step, every, milestones):
            with tempfile.TemporaryDirectory(prefix="dnn_ckpt_") as folder:
                state = learner.state_dict()
                torch.save(state, Path(folder) / STATE_FILE)
                if m.step == last_step or m.step in milestones:  # where the trial may end
                    plot_checkpoint(state, cfg.activation, Path(folder), f"trial {trial_id} at step {m.step}")
                tune.report(result, checkpoint=tune.Checkpoint.from_directory(folder))
        else:
            tune.report(result)


# --------------------------------------------------------------------------------- validation

def validation_trial(config: dict, settings: dict) -> None:
    from ray import tune

    from dnn_search.actfile import read_activation_file
    from dnn_search.data import load_dataset
    from dnn_search.jobs import save_validation_model
    from dnn_search.validation import ValidationConfig, metric_columns, run_mode

    device, node_id = _prepare(settings)
    job = config["job"]
    acts = read_activation_file(job["act_path"])
    cfg = ValidationConfig(**job["validation"]).validate()  # the plan resolved it from the file and the space
    data = load_dataset(job["dataset"], settings.get("data_path"))
    result, net = run_mode(acts, data, job["mode"], int(job["seed"]), cfg, device)
    model_path = ""
    if job.get("model_dir"):
        model_path = str(save_validation_model(Path(job["model_dir"]), net, job["dataset"], job["mode"],
                                               int(job["seed"]), job["act_path"]))
    # the task's metric columns (classification: test_accuracy, test_loss), and their curves per epoch
    metrics = {k: result[k] for k in metric_columns(result, data.task_object())}
    curves = {f"curve_{k[len('test_'):]}": [c[k] for c in result["curve"]] for k in metrics if k.startswith("test_")}
    tune.report({"trial_id_meta": job["trial_id"], "dataset": job["dataset"], "optimizer": cfg.optimizer,
                 "mode": job["mode"], "run": int(job["run"]), "seed": int(job["seed"]), **metrics, "epochs": cfg.epochs,
                 "seconds": result["seconds"], "model_path": model_path, "node_id": node_id, **curves})


# ------------------------------------------------------------------------------------ Hessian

def hessian_trial(config: dict, settings: dict) -> None:
    from ray import tune

    from dnn_search.jobs import hessian

    device, node_id = _prepare(settings)
    job = config["job"]
    record = hessian(job["model_path"], dataset=job["dataset"], data_path=settings.get("data_path"),
                     num_samples=int(settings.get("hessian_samples", 1000)),
                     top_k=int(settings.get("hessian_top_k", 3)), iters=int(settings.get("hessian_iters", 50)),
                     seed=int(settings.get("seed", 0)), use_gpu=device != "cpu",
                     output_folder=job["output_folder"], quiet=True)
    tune.report({"trial_id_meta": job["trial_id"], "dataset": job["dataset"], "optimizer": job["optimizer"],
                 "mode": job["mode"], "top_eigenvalue": float(record["top_eigenvalues"][0]), "trace": float(record["trace"]),
                 "top_eigenvalues": [float(v) for v in record["top_eigenvalues"]],
                 "density_eigen": record["density_eigen"], "density_weight": record["density_weight"],
                 "num_params": int(record["num_params"]), "model_path": job["model_path"], "node_id": node_id})
