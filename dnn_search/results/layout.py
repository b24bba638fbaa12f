"""The folder of one search, `STORAGE/NAME/`, and the names of what it holds.

    search.json           the search record (`record.py`): resolved space and options
    optuna_journal.log    the Optuna study (a journal file; or any database URL, see `storage.py`)
    ray/                  Ray Tune's own storage (experiments `search`, `validation`, `hessian`)
    trials.parquet        one row per trial        steps.parquet   one row per (trial, outer step)
    activations/<trial>/  the best trials' activation files (+ metadata.json, activations.png)
    artifacts/            Optuna artifact store (activation plots attached to the trials)
    validation.parquet, hessian.parquet, summary.md, stages.json (each stage's wall time)   (pipeline)
    report.html, report_figures/                      (report)
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from dnn_search.errors import UserError

SEARCH_FILE = "search.json"
TRIALS_FILE = "trials.parquet"
STEPS_FILE = "steps.parquet"
JOURNAL_FILE = "optuna_journal.log"
VALIDATION_FILE = "validation.parquet"
HESSIAN_FILE = "hessian.parquet"
SUMMARY_FILE = "summary.md"
STAGES_FILE = "stages.json"
RAY_DIR = "ray"
SEARCH_EXPERIMENT = "search"
ARTIFACT_DIR = "artifacts"
ACTIVATIONS_DIR = "activations"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_name(name: str) -> str:
    """A search name: it names the folder under --storage and the Optuna study."""
    if not name or "/" in name or "\\" in name or ".." in name or not _NAME.match(name):
        raise UserError(f"invalid search name {name!r}: use letters, digits, '.', '_' and '-' "
                        "(no '/' or '..'); it names the folder under --storage and the Optuna study")
    return name


def experiment_dir(storage: str | os.PathLike, name: str) -> Path:
    return Path(storage).expanduser().resolve() / check_name(name)


def find_search(name_or_dir: str | os.PathLike, storage: str | os.PathLike = "results") -> Path:
    """NAME_OR_DIR as the commands take it: an existing folder, else the search NAME under STORAGE."""
    given = Path(name_or_dir).expanduser()
    if given.is_dir():
        return given.resolve()
    if "/" not in str(name_or_dir):
        candidate = Path(storage).expanduser() / given
        if candidate.is_dir():
            return candidate.resolve()
    raise UserError(f"no search results at {os.fspath(name_or_dir)!r}: neither a folder nor a search name under "
                    f"{os.fspath(storage)}/ (run `dnn-search search` first, or pass the results folder)")
