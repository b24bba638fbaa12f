"""Ray Tune trainables of a diversity study: one replicate's meta-learning, one network's training.

Each is thin: it resolves its job, calls the science (`replicate.run_replicate`,
`validation.run_mode`) and leaves its outcome in the study folder, where the driver (and a resume)
reads it. A finished job's file is the proof that it finished: the driver never schedules it again.
"""
from __future__ import annotations

import json
from pathlib import Path

from dnn_search.atomic import atomic_write_text
from dnn_search.search import faults
from dnn_search.search.trainables import _prepare


def _assigned() -> dict:
    """The resources Ray reserved for this trial's worker (CPU, GPU, memory in bytes): traced, so a
    test reads what a trial was actually given, not what the driver meant to ask for."""
    import ray
    return ray.get_runtime_context().get_assigned_resources()


def replicate_trial(config: dict, settings: dict) -> None:
    from ray import tune

    from dnn_search.data import load_dataset
    from dnn_search.metalearn import MetaConfig
    from dnn_search.replicate import run_replicate
    from dnn_search.splits import selection_split

    device, node_id = _prepare(settings)
    job = config["job"]
    faults.trace("replicate_trial", replicate=job["key"], node_id=node_id, resources=_assigned())
    cfg = MetaConfig.from_dict(job["meta"])
    data = load_dataset(cfg.dataset, settings.get("data_path"))
    rest, _ = selection_split(data, settings["selection_fraction"], settings["selection_seed"])

    def report(row: dict) -> None:
        faults.trace("replicate_step", replicate=job["key"], step=row["step"], node_id=node_id)
        tune.report({**{k: v for k, v in row.items() if isinstance(v, (int, float))}, "replicate": job["key"]})

    # a calibration trial carries the calibration's own threshold; a replicate, the study's
    limit = job.get("grad_norm_limit", settings["grad_norm_limit"])
    outcome = run_replicate(cfg, data, rest, Path(job["folder"]), grad_norm_limit=limit,
                            checkpoint_every=settings["checkpoint_every"], device=device, on_step=report,
                            metadata={"arm": job["arm"], "replicate": job["key"], "meta_seed": cfg.seed})
    tune.report({"replicate": job["key"], "status": outcome.status, "steps_done": outcome.steps, "done": True})


def study_validation_trial(config: dict, settings: dict) -> None:
    """Every training of one replicate not yet done (its networks × retraining seeds), one after the
    other in one trial: a study runs thousands of short trainings, and a Tune trial per training would
    spend more on scheduling than on training. Each finished network leaves its file at once, so a
    restart trains only the networks that had not finished."""
    from dnn_search.actfile import read_activation_file
    from dnn_search.data import validation_data

    device, node_id = _prepare(settings)
    batch = config["job"]
    files: dict[str, object] = {}  # a control network trains from its own activation file

    def acts_at(path: str):
        if path not in files:
            files[path] = read_activation_file(path)
        return files[path]
    # the study's forecast subset (study.forecast); None forecasts from every test trajectory
    data = validation_data(batch["dataset"], settings.get("data_path"), settings.get("forecast_trajectories"))
    faults.trace("validation_trial", replicate=batch["replicate"], node_id=node_id, resources=_assigned())
    context = (acts_at, data, batch, settings, device, node_id)
    for job in batch["trainings"]:
        _train(context, job, job["validation"], "primary")
    for network in batch.get("secondary", []):
        _secondary(context, network)


def _train(context, job: dict, validation: dict, protocol: str) -> None:
    """One training of a validation network (`train_network`), reported to Tune once its row is written."""
    from ray import tune
    if train_network(context, job, validation, protocol):
        tune.report({"key": job["key"], "replicate": context[2]["replicate"]})


def train_network(context, job: dict, validation: dict, protocol: str) -> bool:
    """One training of a validation network, its row written to job["out"] (skipped when it exists:
    finished before a restart, and a network is never trained twice); True when it trained. Every
    network of a study goes through here: the arm's own, the secondary protocol's and the controls'.
    Nothing here needs a Tune session, so a test writes a study's rows with this very code."""
    from dnn_search.validation import ValidationConfig, metric_columns, run_mode
    acts_at, data, batch, settings, device, node_id = context
    out = Path(job["out"])
    if out.exists():
        return False
    cfg = ValidationConfig(**validation).validate()
    faults.trace("train", key=job["key"], node_id=node_id)
    # a control network trains from its own activation file (`act_path`) and builds with the validation
    # mode `build` (copies:1 is `diverse` on n copies of one activation); the row keeps the control's mode
    result, _ = run_mode(acts_at(job.get("act_path") or batch["act_path"]), data, job.get("build") or job["mode"],
                         int(job["seed"]), cfg, device, split_seed=int(settings["selection_seed"]))
    row = {"key": job["key"], "arm": batch["arm"], "replicate": batch["replicate"],
           "meta_seed": int(batch["meta_seed"]), "mode": job["mode"], "run": int(job["run"]),
           "seed": int(job["seed"]), "protocol": protocol, "optimizer": cfg.optimizer, "lr": cfg.lr,
           "epochs": cfg.epochs, **{k: result[k] for k in metric_columns(result, data.task_object())},
           "seconds": result["seconds"], "node_id": node_id}
    atomic_write_text(out, json.dumps(row, allow_nan=True) + "\n")
    return True


def _secondary(context, network: dict) -> None:
    """The secondary protocol for one network of this replicate: its lr grid at the pick seeds, the
    pick from those files (`results.study_secondary.pick_lr`), then its R runs at the pick."""
    from dnn_search.results.study_secondary import pick_lr, secondary_key
    out_dir = Path(network["out_dir"])

    def job(item: dict) -> dict:
        return {**item, "mode": network["mode"], "out": str(out_dir / f"{item['key']}.json")}
    for item in network["grid"]:
        _train(context, job(item), {**network["validation"], "lr": item["lr"]}, "secondary")
    rows = [json.loads((out_dir / f"{item['key']}.json").read_text()) for item in network["grid"]]
    lr = pick_lr(rows, network["metric"], network["direction"], network["log"])
    for run, seed in network["runs"]:
        item = {"key": secondary_key(network["replicate"], network["mode"], lr, run), "run": run, "seed": seed}
        _train(context, job(item), {**network["validation"], "lr": lr}, "secondary")
