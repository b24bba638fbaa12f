"""What the report shows, loaded and analysed: the search's tables, its record and study, and the
pipeline's results (`report.py` renders them). Missing pieces become notes, not errors; only a
folder with no trials at all is an error."""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dnn_search.errors import UserError
from dnn_search.results.layout import (HESSIAN_FILE, STEPS_FILE, SUMMARY_FILE, TRIALS_FILE,
                                       VALIDATION_FILE, find_search)
from dnn_search.results.ranking import RANKED_STATUSES, best_of, rank_trials, score_column
from dnn_search.results.record import SearchRecord, has_record, read_record
from dnn_search.results.study_record import StudyResults, is_study, load_study_results
from dnn_search.results.storage import load_study, locate_study

if TYPE_CHECKING:
    import optuna
    import pandas as pd

FIGURE_DIR = "report_figures"
REPORT_NAME = "report.html"
# trials.parquet columns that are not sampled hyperparameters
_NOT_PARAMS = {"trial_id", "optuna_number", "status", "error", "node_id", "steps_done", "final_meta_loss", "score",
               "retries", "started_at", "ended_at", "checkpoint_path",
               "final_heldout_accuracy", "best_heldout_accuracy", "wall_seconds", "final_heldout_loss",
               "final_train_loss", "best_meta_loss", "logdir", "path", "seed"}
_STATE_TO_STATUS = {"COMPLETE": "COMPLETED", "PRUNED": "PRUNED", "FAIL": "FAILED", "RUNNING": "RUNNING",
                    "WAITING": "RUNNING"}


@dataclass
class SearchResults:
    folder: Path
    name: str
    metric: str
    mode: str
    record: SearchRecord | None
    trials: pd.DataFrame      # maybe empty
    steps: pd.DataFrame       # maybe empty
    study: optuna.Study | None
    validation: pd.DataFrame | None
    hessian: pd.DataFrame | None
    summary_md: str | None
    notes: list[str] = field(default_factory=list)

    @property
    def dataset(self) -> str:
        """The search's dataset (its task labels the metrics); without search.json the default one,
        whose task's metric (heldout_accuracy) is the one assumed."""
        if self.record is not None:
            return self.record.dataset
        from dnn_search.metalearn import MetaConfig
        return MetaConfig().dataset


# ------------------------------------------------------------------------------------- loading

def _read_parquet(path: Path, notes: list[str]):
    import pandas as pd
    if not path.is_file():
        return None
    try:
        return pd.read_parquet(path)
    except Exception as e:  # a truncated or foreign file: say so, keep going
        notes.append(f"{path.name} could not be read ({type(e).__name__}: {' '.join(str(e).split())[:200]}).")
        return None


def _load_study(folder: Path, notes: list[str]):
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return load_study(locate_study(folder))
    except Exception as e:  # a corrupt journal, an unreachable database: the tables still make a report
        notes.append(f"The Optuna study could not be opened ({type(e).__name__}).")
        return None


def _trials_from_study(study, metric: str, direction: str):
    """trials/steps tables rebuilt from the Optuna study, when the parquet files are missing: the score
    is the trial's value, else its last intermediate value; best_<metric> the best in DIRECTION."""
    import pandas as pd
    rows, steps = [], []
    for t in study.trials:
        tid = str(t.user_attrs.get("trial_id", t.number))
        iv = t.intermediate_values
        values = [iv[k] for k in sorted(iv)]
        rows.append({"trial_id": tid, "optuna_number": t.number,
                     "status": _STATE_TO_STATUS.get(t.state.name, t.state.name), **t.params,
                     "steps_done": len(values),
                     "score": t.value if t.value is not None else (values[-1] if values else np.nan),
                     f"best_{metric}": best_of(values, direction)})
        steps += [{"trial_id": tid, "step": k, metric: v} for k, v in sorted(iv.items())]
    return pd.DataFrame(rows), pd.DataFrame(steps, columns=["trial_id", "step", metric])


def load_results(folder: str | os.PathLike) -> SearchResults:
    import pandas as pd
    folder = Path(folder).resolve()
    notes: list[str] = []
    record = read_record(folder) if has_record(folder) else None
    if record is None:
        notes.append("search.json is missing: the metric is taken to be heldout_accuracy (max).")
    name = record.name if record else folder.name
    metric = record.metric if record else "heldout_accuracy"
    mode = record.mode if record else "max"
    study = _load_study(folder, notes)
    trials = _read_parquet(folder / TRIALS_FILE, notes)
    steps = _read_parquet(folder / STEPS_FILE, notes)
    if trials is None and study is not None:
        trials, rebuilt_steps = _trials_from_study(study, metric, mode)
        steps = rebuilt_steps if steps is None else steps
        notes.append("trials.parquet is missing: the trial table was rebuilt from the Optuna study.")
    if trials is None or len(trials) == 0:
        raise UserError(f"no trials in {folder}: neither trials.parquet nor an Optuna study with trials "
                        "(has the search started?)")
    if steps is None:
        steps = pd.DataFrame(columns=["trial_id", "step"])
        notes.append("steps.parquet is missing: no learning curves.")
    trials = trials.copy()
    trials["trial_id"] = trials["trial_id"].astype(str)
    trials["status"] = trials["status"].astype(str).str.upper()
    steps = steps.copy()
    steps["trial_id"] = steps["trial_id"].astype(str)
    summary = folder / SUMMARY_FILE
    return SearchResults(folder, name, metric, mode, record, trials, steps, study,
                         _read_parquet(folder / VALIDATION_FILE, notes),
                         _read_parquet(folder / HESSIAN_FILE, notes),
                         summary.read_text(encoding="utf-8", errors="replace") if summary.is_file() else None,
                         notes)


# ------------------------------------------------------------------------------------- analysis

def param_columns(res: SearchResults) -> list[str]:
    """Sampled hyperparameters: the search record's if known, else the non-result columns."""
    cols = res.trials.columns
    if res.record is not None:
        return [k for k in res.record.params if k in cols]
    return [c for c in cols if c not in _NOT_PARAMS and not c.startswith(("final_", "best_"))]


def varying(trials, params) -> list[str]:
    out = []
    for p in params:
        values = trials[p].dropna()
        if len(values) and values.astype(str).nunique() > 1:
            out.append(p)
    return out


def ranked_trials(res: SearchResults):
    """(finished trials best first with their `score`, "score"), or (the finished trials, None) when
    the table has no score at all: `results.ranking.rank_trials`, every finished trial (not only
    those with a checkpoint, which is export's concern)."""
    ranked = rank_trials(res.trials, res.mode, metric=res.metric)
    if score_column(res.trials, res.metric) is None:
        return res.trials[res.trials["status"].isin(RANKED_STATUSES)], None
    return ranked, "score"


def param_importance(res: SearchResults, params: list[str]):
    """(importances, method) or (None, reason). PED-ANOVA on the Optuna study (what
    optuna-dashboard shows; no sklearn needed), else |Spearman rank correlation| from the table."""
    import optuna
    study = res.study
    if study is not None:
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if len(complete) >= 2:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    imp = optuna.importance.get_param_importances(
                        study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
                if imp and sum(imp.values()) > 0 and all(math.isfinite(v) for v in imp.values()):
                    return dict(imp), ("PED-ANOVA (Optuna), over the completed Optuna trials; "
                                       "it scores how much each parameter separates the top 10 % of trials")
            except Exception:
                pass
    ranked, col = ranked_trials(res)
    done = ranked[ranked["status"] == "COMPLETED"] if col else ranked
    params = varying(done, params) if col else []
    if col is None or len(done) < 3 or not params:
        return None, ("Hyperparameter importance is not computable yet: it needs at least 2 completed trials "
                      "whose sampled parameters vary" + (" (3 for the correlation fallback)." if col else "."))
    import pandas as pd
    y = done[col].rank().to_numpy(dtype=float)
    scores = {}
    for p in params:
        v = done[p]
        num = pd.to_numeric(v, errors="coerce")
        x = (num if num.notna().all() else v.astype(str).astype("category").cat.codes).rank().to_numpy(dtype=float)
        r = np.corrcoef(x, y)[0, 1] if np.std(x) > 0 and np.std(y) > 0 else 0.0
        scores[p] = abs(float(r)) if math.isfinite(r) else 0.0
    total = sum(scores.values())
    if total <= 0:
        return None, "Hyperparameter importance is not computable: no parameter correlates with the metric."
    imp = dict(sorted(((k, v / total) for k, v in scores.items()), key=lambda kv: -kv[1]))
    return imp, ("|Spearman rank correlation| with the metric over completed trials, normalised to sum to 1 "
                 "(a simple stand-in: PED-ANOVA was not computable on this study)")


def open_search(name_or_dir: str | os.PathLike, storage: str | os.PathLike = "results") -> SearchResults | StudyResults:
    """A search's or a diversity study's results, for a notebook.

    Args:
        name_or_dir: a name under STORAGE (`--name` of the command), or the results folder itself.
        storage: the root folder of the results (`--storage`).

    Returns:
        For a search, `SearchResults`: `.trials`, `.steps`, `.validation`, `.hessian` (pandas
        DataFrames, None where the pipeline has not run), `.record` (its search.json), `.study`
        (Optuna), `.summary_md`, and `.notes` on anything that could not be read. For a study,
        `StudyResults`: `.replicates`, `.comparisons`, `.validation`, `.calibration`, `.variance`,
        `.spec`, `.record`, `.summary_md`.

    Raises:
        UserError: no results there (one line naming where it looked).
    """
    folder = find_search(name_or_dir, storage)
    return load_study_results(folder) if is_study(folder) else load_results(folder)
