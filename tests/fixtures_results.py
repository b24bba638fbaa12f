"""Build a real `results/NAME/` folder, as `dnn-search search` + `pipeline` leave it (test data).

Everything is written with the real libraries and the tool's own writers: an Optuna journal study
with intermediate values and COMPLETE / PRUNED / FAIL trials, a trial artifact uploaded to a
FileSystemArtifactStore, the tables (`results.tables.write_table`), the search record
(`results.record.write_record` of a space checked by `search.space.from_dict`), summary.md
(`results.summary.write_summary`) and the activation files (`actfile.write_activation_files`).
Only the numbers are synthetic (made-up learning curves), so that building it takes a second.
Tests of the report on a real search use the shared smoke pipeline instead (conftest).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import torch

from dnn_search.actfile import write_activation_files
from dnn_search.activations import ActivationSet, default_init
from dnn_search.plots import plot_activations
from dnn_search.results.layout import HESSIAN_FILE, STEPS_FILE, TRIALS_FILE, VALIDATION_FILE
from dnn_search.results.record import SearchRecord, write_record
from dnn_search.results.summary import write_summary
from dnn_search.results.tables import STEP_COLUMNS, TRIAL_COLUMNS, write_table
from dnn_search.search.space import from_dict

# (state, steps reported) per trial, in order
TRIAL_PLAN = [("COMPLETE", 12), ("COMPLETE", 12), ("PRUNED", 4), ("COMPLETE", 12),
              ("PRUNED", 6), ("COMPLETE", 12), ("FAIL", 2)]
STATUS = {"COMPLETE": "COMPLETED", "PRUNED": "PRUNED", "FAIL": "FAILED"}


def _curve(quality: float, steps: int, rng: np.random.Generator):
    s = np.arange(1, steps + 1)
    acc = 0.35 + 0.45 * quality * (1 - np.exp(-s / 4.0)) + rng.normal(0, 0.01, steps)
    loss = 2.3 - 1.2 * quality * (1 - np.exp(-s / 3.0)) + rng.normal(0, 0.02, steps)
    return acc, loss


def build_results(root: str | Path, name: str = "fixture-search", pipeline: bool = True,
                  with_artifacts: bool = True) -> Path:
    """Create `root/name/` and return it."""
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    journal = folder / "optuna_journal.log"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    store_dir = folder / "artifacts"
    store_dir.mkdir(exist_ok=True)
    store = optuna.artifacts.FileSystemArtifactStore(str(store_dir))
    rng = np.random.default_rng(0)

    trial_rows, step_rows = [], []
    for number, (state, steps) in enumerate(TRIAL_PLAN):
        trial = study.ask()
        params = {
            "outer_lr": trial.suggest_float("outer_lr", 0.05, 1.0, log=True),
            "inner_lr": trial.suggest_float("inner_lr", 1e-3, 0.1, log=True),
            "n_activations": trial.suggest_int("n_activations", 1, 4),
            "activation": trial.suggest_categorical("activation", ["sin", "tanh"]),
        }
        trial_id = f"{name}_{number:05d}"
        trial.set_user_attr("trial_id", trial_id)
        quality = 0.3 + 0.6 * (1 - abs(math.log10(params["outer_lr"]) + 0.4)) * (0.5 + 0.1 * params["n_activations"])
        quality = float(np.clip(quality, 0.05, 1.0))
        acc, loss = _curve(quality, steps, rng)
        for s in range(steps):
            trial.report(float(acc[s]), s + 1)
            norms = rng.uniform(0.01, 0.1, params["n_activations"]).tolist()
            step_rows.append({"trial_id": trial_id, "step": s + 1, "meta_loss": float(loss[s]),
                              "final_train_loss": float(loss[s] * 0.9), "heldout_accuracy": float(acc[s]),
                              "heldout_loss": float(loss[s] * 1.05), "grad_norms": norms,
                              "grad_norm": float(np.linalg.norm(norms)), "seconds": 0.5})
        if state != "FAIL":
            gen = torch.Generator().manual_seed(number)
            acts = ActivationSet.from_tensors(params["activation"],
                                              default_init(params["n_activations"], 50, gen))
            act_dir = folder / "activations" / trial_id
            meta = {"trial_id": trial_id, **params, "steps": steps,
                    "final_heldout_accuracy": float(acc[-1])}
            write_activation_files(act_dir, "activations", acts, meta)
            (act_dir / "metadata.json").write_text(json.dumps(meta, indent=2))
            png = plot_activations(acts, act_dir / "activations.png",
                                   title=f"Trial {number}: learned activations")
            if with_artifacts:
                optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(png),
                                                 study_or_trial=trial, mimetype="image/png")
        if state == "COMPLETE":
            study.tell(trial, float(acc[-1]))
        elif state == "PRUNED":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        trial_rows.append({"trial_id": trial_id, "optuna_number": number, "status": STATUS[state],
                           "error": "RuntimeError: simulated failure" if state == "FAIL" else None,
                           "node_id": "node-0", **params, "steps": 12, "steps_done": steps,
                           "final_meta_loss": float(loss[-1]), "final_heldout_accuracy": float(acc[-1]),
                           "best_heldout_accuracy": float(acc.max()), "wall_seconds": 0.5 * steps})

    # the tool's own writers: tables and the search record exactly as a search writes them
    trials = pd.DataFrame(trial_rows)
    write_table(folder / TRIALS_FILE, trial_rows, TRIAL_COLUMNS)
    write_table(folder / STEPS_FILE, step_rows, STEP_COLUMNS)
    space = from_dict({"metric": "heldout_accuracy", "mode": "max", "num_samples": len(TRIAL_PLAN),
                       "sampler": {"type": "random", "seed": 0},
                       "params": {"outer_lr": {"type": "loguniform", "low": 0.05, "high": 1.0},
                                  "inner_lr": {"type": "loguniform", "low": 1e-3, "high": 0.1},
                                  "n_activations": {"type": "int", "low": 1, "high": 4},
                                  "activation": {"type": "categorical", "choices": ["sin", "tanh"]}}})
    write_record(folder, SearchRecord(name=name, space=space.to_dict(), storage=str(Path(root).resolve())))

    if pipeline:
        best = trials[trials.status == "COMPLETED"].sort_values("final_heldout_accuracy").iloc[-1]
        n = int(best["n_activations"])
        modes = ["pure"] + [f"single:{k}" for k in range(1, n + 1)] + ["diverse"]
        val_rows, hess_rows = [], []
        for dataset, base_acc in (("MNIST1D", 0.6), ("MNIST", 0.9)):
            for m, mode in enumerate(modes):
                for run in range(3):
                    val_rows.append({"trial_id": best["trial_id"], "dataset": dataset, "mode": mode,
                                     "run": run, "seed": run,
                                     "test_accuracy": base_acc + 0.01 * m + float(rng.normal(0, 0.01)),
                                     "test_loss": 1.0 - 0.02 * m + float(rng.normal(0, 0.02))})
                eig = np.sort(np.concatenate([rng.normal(0, 0.05 * (m + 1), 18), [2.0 + m, 4.0 + 2 * m]]))
                w = rng.dirichlet(np.ones(eig.size))
                hess_rows.append({"trial_id": best["trial_id"], "dataset": dataset, "mode": mode,
                                  "top_eigenvalue": float(eig[-1]), "trace": float(eig.sum() * 10),
                                  "top_eigenvalues": eig[::-1][:3].tolist(),
                                  "density_eigen": [eig.tolist()], "density_weight": [w.tolist()]})
        write_table(folder / VALIDATION_FILE, val_rows)
        write_table(folder / HESSIAN_FILE, hess_rows)
        write_summary(folder, name)
    return folder
