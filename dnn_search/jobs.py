"""The science commands as file-to-file jobs: metalearn, validate, hessian.

Each job takes plain arguments (parsed by `dnn_search.cli`), reads its inputs, runs the science
modules and writes its outputs atomically. Nothing here imports Ray.
"""
from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import pandas as pd
import torch

from dnn_search.actfile import original_stem, read_activation_file, write_activation_files
from dnn_search.atomic import atomic_path, atomic_write_text, ensure_writable_folder
from dnn_search.data import canonical_name, load_dataset
from dnn_search.errors import UserError
from dnn_search.hessian import analyze, plot_density
from dnn_search.metalearn import MetaConfig, MetaLearner, StepMetrics
from dnn_search.models import load_net
from dnn_search.validation import (build_for_mode, config_for, format_summary, metric_columns, parse_modes, run_mode,
                                   standard_modes, summarise)
from dnn_search.progress import Progress
from dnn_search.tasks.registry import DATASETS, dataset_entry, get_task
from dnn_search.versions import versions


def resolve_device(use_gpu: bool, gpu_no: int = 0) -> torch.device:
    if not use_gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError("--use_gpu was given but no CUDA device is available (CPU-only torch or no GPU)")
    if not 0 <= gpu_no < torch.cuda.device_count():
        raise UserError(f"--gpu_no {gpu_no} does not exist: {torch.cuda.device_count()} CUDA device(s) visible")
    return torch.device(f"cuda:{gpu_no}")


def write_csv(path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else [])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def step_row(metrics: StepMetrics) -> dict:
    row = {"step": metrics.step, "meta_loss": metrics.meta_loss, "final_train_loss": metrics.final_train_loss,
           **metrics.heldout, "seconds": metrics.seconds}
    row.update({f"grad_norm_{i + 1}": v for i, v in enumerate(metrics.grad_norms)})
    return row


# ----------------------------------------------------------------------------------- metalearn

def metalearn(cfg: MetaConfig, *, runs: int, data_path, output_folder, use_gpu=False, gpu_no=0,
              save_curve=False, save_model=False, verbose=False, dtype=torch.float32) -> list[dict]:
    """Meta-learn `runs` independent activation sets (seed, seed+1, ...); returns written paths."""
    cfg.dataset = canonical_name(cfg.dataset)
    cfg.validate()
    if runs < 1:
        raise UserError(f"--runs must be a positive integer, got {runs}")
    device = resolve_device(use_gpu, gpu_no)
    out = ensure_writable_folder(output_folder)
    data = load_dataset(cfg.dataset, data_path)
    task = data.task_object()
    metric, pick = task.search_metric, (max if task.search_mode == "max" else min)
    x_tr, y_tr, x_val, y_val = data.split(cfg.val_fraction, cfg.seed)
    device_name = "cpu" if device.type == "cpu" else "cuda"
    written = []
    for run in range(runs):
        run_cfg = MetaConfig.from_dict({**cfg.to_dict(), "seed": cfg.seed + run})
        learner = MetaLearner(run_cfg, x_tr, y_tr, x_val, y_val, task.output_size(data), device=device,
                              dtype=dtype, task=task)
        progress = Progress(cfg.steps, f"run {run + 1}/{runs}", line_s=2.0 if verbose else 10.0)
        rows = []
        for _ in range(cfg.steps):
            metrics = learner.step()
            rows.append(step_row(metrics))
            progress.update(metrics.step, meta_loss=metrics.meta_loss, **{metric: metrics.heldout[metric]},
                            **{"s/step": metrics.seconds})
        progress.close()
        stem = original_stem(cfg.dataset, cfg.activation, cfg.n_activations, device_name, cfg.seed,
                             cfg.inner_lr, cfg.outer_lr, cfg.steps, run)
        last = rows[-1]
        metadata = {"config": run_cfg.to_dict(), "run": run, "steps_done": learner.step_index,
                    "final_meta_loss": last["meta_loss"], f"final_{metric}": last[metric],
                    f"best_{metric}": pick(r[metric] for r in rows),
                    "device": str(device), "versions": versions(), "dataset": cfg.dataset,
                    "activation": cfg.activation}
        paths = write_activation_files(out, stem, learner.activations(), metadata)
        if save_curve:
            paths["curve"] = out / f"{stem}_curve.csv"
            write_csv(paths["curve"], rows)
        if save_model:
            paths["model"] = out / f"{stem}_state.pt"
            with atomic_path(paths["model"]) as tmp:
                torch.save(learner.state_dict(), tmp)
        print(f"run {run + 1}: meta-loss {last['meta_loss']:.4f}, {metric} {last[metric]:.4g} -> {paths['txt']}")
        written.append(paths)
    return written


# ------------------------------------------------------------------------------------ validate

def _mode_slug(mode: str) -> str:
    return mode.replace(":", "-")


def validate(act_path, *, validation_mode="all", dataset=None, data_path=None, runs=5, seed=0,
             epochs=None, lr=None, momentum=None, batch_size=None, hidden_size=None, activation=None,
             output_folder=None, use_gpu=False, gpu_no=0, save_curve=False, save_model=False,
             val_fraction=None, optimizer=None, quiet=False, rollout_steps=None,
             rollout_trajectories=None) -> list[dict]:
    """Train validation networks for each mode and seed; write validation.parquet; return rows.

    A row holds dataset, optimizer, mode, run, seed, the task's metrics as `test_<m>` (and `val_<m>`
    with val_fraction > 0), epochs, kind, activation_file, seconds; with save_curve the per-epoch
    `curve_<m>` lists, with save_model `model_path`, and `figure_<name>` for each figure the
    task draws (classification draws none).
    """
    acts = read_activation_file(act_path, base=activation)
    meta = acts.metadata or {}
    nested = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    dataset_name = canonical_name(dataset or meta.get("dataset") or nested.get("dataset") or "MNIST1D")
    cfg = config_for(meta, epochs=epochs, lr=lr, momentum=momentum, batch_size=batch_size, hidden_size=hidden_size,
                     val_fraction=val_fraction, optimizer=optimizer)
    task = get_task(dataset_entry(dataset_name).task)
    modes = parse_modes(validation_mode, acts.n, standard_modes(task))
    if runs < 1:
        raise UserError(f"--runs must be a positive integer, got {runs}")
    if "diverse" in modes and acts.n > cfg.hidden_size:
        raise UserError(f"diverse mode needs at most {cfg.hidden_size} activations, the file has {acts.n}")
    for name, value in (("--rollout_steps", rollout_steps), ("--rollout_trajectories", rollout_trajectories)):
        if value is not None and value < 1:
            raise UserError(f"{name} must be a positive integer, got {value}")
    task.check_base(acts.base)
    source = meta.get("dataset") or nested.get("dataset")
    if source is not None and canonical_name(source) != dataset_name:
        source_task = dataset_entry(source).task if source in DATASETS else None
        if source_task != task.name:
            print(f"note: activations learned on {source} ({source_task} task) are validated on {dataset_name} "
                  f"({task.name} task)", file=sys.stderr)
    device = resolve_device(use_gpu, gpu_no)
    out = ensure_writable_folder(output_folder or Path(act_path).parent)
    data = load_dataset(dataset_name, data_path).with_rollouts(rollout_steps, rollout_trajectories)
    primary = f"test_{task.primary_metric}"
    rows = []
    total = len(modes) * runs
    progress = Progress(total, "validate", enabled=not quiet)
    for mode in modes:
        for run in range(runs):
            run_seed = seed + run
            result, net = run_mode(acts, data, mode, run_seed, cfg, device)
            metrics = {k: result[k] for k in metric_columns(result, task)}
            row = {"dataset": dataset_name, "optimizer": cfg.optimizer, "mode": mode, "run": run, "seed": run_seed,
                   **metrics, "epochs": cfg.epochs, "kind": net.spec.kind,
                   "activation_file": str(act_path), "seconds": result["seconds"]}
            if save_curve:
                for key in (k for k in metrics if k.startswith("test_")):
                    row[f"curve_{key[5:]}"] = [c[key] for c in result["curve"]]
            if save_model:
                row["model_path"] = str(save_validation_model(out, net, dataset_name, mode, run_seed, act_path))
            figures = task.figures(net, data, out / "figures" / f"{dataset_name}_{_mode_slug(mode)}_seed{run_seed}")
            row.update({f"figure_{name}": str(path) for name, path in figures.items()})
            rows.append(row)
            progress.update(len(rows), mode=mode, **{primary: result[primary]})
    progress.close()
    write_parquet(out / "validation.parquet", rows)
    if not quiet:
        print(format_summary(summarise(rows, task)))
        print(f"wrote {out / 'validation.parquet'}")
    return rows


def save_validation_model(folder: Path, net, dataset: str, mode: str, seed: int, act_path) -> Path:
    """State dict (plain tensors) plus a JSON spec, enough for `hessian` to rebuild the net."""
    models = folder / "models"
    stem = f"{dataset}_{_mode_slug(mode)}_seed{seed}"
    path = models / f"{stem}.pt"
    with atomic_path(path) as tmp:
        torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, tmp)
    spec = {**net.spec.to_dict(), "mode": mode, "dataset": dataset, "seed": seed,
            "activation_file": str(act_path), "versions": versions()}
    atomic_write_text(models / f"{stem}.json", json.dumps(spec, indent=2))
    return path


def write_parquet(path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp:
        pd.DataFrame(rows).to_parquet(tmp, index=False)


# ------------------------------------------------------------------------------------- hessian

def hessian(model_path, *, act_path=None, dataset=None, data_path=None, num_samples=1000, top_k=3,
            iters=100, seed=0, use_gpu=False, gpu_no=0, output_folder=None, quiet=False) -> dict:
    """Top-k eigenvalues, trace and spectral density of a saved validation model's training loss."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise UserError(f"model file not found: {model_path}")
    spec_path = model_path.with_suffix(".json")
    if spec_path.is_file():
        try:
            spec = json.loads(spec_path.read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read model description {spec_path}: {exc}") from None
        if not isinstance(spec, dict):
            raise UserError(f"model description {spec_path} is not a JSON object")
    elif act_path is None:
        raise UserError(f"{spec_path} (written by `validate --save_model`) is missing: "
                        "pass --act_path and --dataset so the network can be rebuilt")
    else:
        spec = {}
    if not 1 <= top_k <= 100 or iters < 1 or num_samples < 1:
        raise UserError("--top_k must be 1..100, --iters and --num_samples positive")
    acts = read_activation_file(act_path) if act_path is not None else None
    data_name = canonical_name(dataset or spec.get("dataset")
                               or (acts.metadata.get("dataset") if acts else None) or "MNIST1D")
    data = load_dataset(data_name, data_path)
    if acts is not None:
        data.task_object().check_base(acts.base)
        # Rebuild the activation layer from the file; load_net then checks the saved weights fit it.
        mode = spec.get("mode", "diverse")
        shape = build_for_mode(mode, acts, data.input_size, data.task_object().output_size(data),
                               spec.get("hidden_size", 200))
        spec = {**shape.spec.to_dict(), "mode": mode, "dataset": data_name}
    device = resolve_device(use_gpu, gpu_no)
    out = ensure_writable_folder(output_folder or model_path.parent)
    net = load_net(spec, model_path).to(device)
    if data.input_size != net.spec.input_size:
        raise UserError(f"model expects {net.spec.input_size} inputs but {data_name} has {data.input_size}")
    generator = torch.Generator().manual_seed(seed)
    idx = torch.randperm(data.x_train.shape[0], generator=generator)[:num_samples]
    x, y = data.x_train[idx].to(device), data.y_train[idx].to(device)
    result = analyze(net, x, y, top_k=top_k, trace_iters=iters, density_iters=min(iters, 100),
                     eigen_iters=iters, seed=seed, device=str(device), task=data.task_object())
    record = {**result.to_dict(), "model": str(model_path), "mode": spec.get("mode"), "dataset": data_name,
              "num_samples": int(x.shape[0]), "seed": seed, "versions": versions()}
    json_path = out / f"{model_path.stem}_hessian.json"
    png_path = out / f"{model_path.stem}_density.png"
    atomic_write_text(json_path, json.dumps(record, indent=2))
    plot_density(result, png_path, f"Hessian spectral density: {spec.get('mode', '')} on {data_name}")
    if not quiet:
        top = ", ".join(f"{v:.4g}" for v in result.top_eigenvalues)
        print(f"top eigenvalues [{top}], trace {result.trace:.4g}, {result.num_params} parameters")
        print(f"wrote {json_path} and {png_path}")
    return record
