"""Each trial's learned activations as a plot attached to its Optuna trial (an Optuna artifact), so
the dashboard shows it on the trial's page. Attached on the driver just before the trial is told;
drawn by the trial itself into its final checkpoint (search/trainables.py `plot_checkpoint`), so
the driver draws only for a checkpoint without one (an older run's, on --resume)."""
from __future__ import annotations

import shutil
from pathlib import Path

from dnn_search.results.checkpoint import ACTIVATION_PLOT, load_trial_activations
from dnn_search.results.layout import ARTIFACT_DIR


def artifact_hook(exp_dir: Path, collector):
    """Before a trial is told to Optuna: plot its learned activations, attach the PNG."""
    def hook(trial_id, ot_trial, state_name, result):
        from optuna.artifacts import FileSystemArtifactStore, upload_artifact

        from dnn_search.plots import plot_activations
        trial = collector.trials.get(trial_id)
        ckpt = trial.checkpoint if trial is not None else None
        if ckpt is None:
            return
        config = trial.config or {}
        png = Path(ckpt.path) / ACTIVATION_PLOT
        if not png.is_file():
            acts = load_trial_activations(exp_dir, ckpt.path, config.get("activation", "sin"))
            png = plot_activations(acts, exp_dir / "plots" / f"{trial_id}_activations.png",
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
