"""Where a search's Optuna study lives, and opening it.

By default the study is the journal file `optuna_journal.log` in the search's folder (an
append-only log: fast, and safe with several writers); `--optuna-storage` puts it in any
database Optuna supports (`sqlite:///...`, `postgresql://...`) or in another journal file (a
path ending in .log). The choice is in the search record, so the search, --resume, the
dashboard and the report all open the same study through `open_storage`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dnn_search.errors import UserError
from dnn_search.results.layout import ARTIFACT_DIR, JOURNAL_FILE
from dnn_search.results.record import has_record, read_record


@dataclass(frozen=True)
class StudyLocation:
    folder: Path
    storage: str          # a database URL, or the path of a journal file
    study_name: str
    artifact_dir: Path

    @property
    def is_journal(self) -> bool:
        return "://" not in self.storage


def storage_spec(exp_dir: str | os.PathLike, url: str | None) -> str:
    """The journal file of EXP_DIR when URL is None, else URL (a database URL or a journal path)."""
    return url if url else os.fspath(Path(exp_dir) / JOURNAL_FILE)


def open_storage(spec: str):
    """An Optuna storage for a database URL or a journal file path (one UserError line when it fails)."""
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend
    if "://" not in spec:
        Path(spec).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(spec))
    try:
        return RDBStorage(spec, heartbeat_interval=None)
    except Exception as exc:  # a bad URL, a missing driver, a server that does not answer
        raise UserError(f"--optuna-storage {spec}: {' '.join(str(exc).split())[:300]}") from None


def locate_study(folder: str | os.PathLike) -> StudyLocation:
    """Where the study of the search in FOLDER lives (per its record; it need not exist yet)."""
    folder = Path(folder).resolve()
    record = read_record(folder) if has_record(folder) else None
    url = record.optuna_storage if record else None
    name = record.name if record else folder.name
    return StudyLocation(folder, storage_spec(folder, url), name, folder / ARTIFACT_DIR)


def study_names(loc: StudyLocation) -> list[str]:
    """The study names in the storage; a UserError when there is none to show."""
    if loc.is_journal and not Path(loc.storage).is_file():
        raise UserError(f"no Optuna study in {loc.folder}: {Path(loc.storage).name} is missing "
                        "(is this a `dnn-search search` results folder?)")
    import optuna
    try:
        names = optuna.get_all_study_names(open_storage(loc.storage))
    except UserError:
        raise
    except Exception as exc:  # a corrupt journal, an unreachable database
        raise UserError(f"cannot open the Optuna storage of {loc.folder}: {' '.join(str(exc).split())}") from None
    if not names:
        raise UserError(f"no Optuna study in {loc.folder}: the storage holds no study yet")
    return names


def load_study(loc: StudyLocation):
    """The search's study, or None when it does not exist (yet)."""
    import optuna
    if loc.is_journal and not Path(loc.storage).is_file():
        return None
    storage = open_storage(loc.storage)
    names = optuna.get_all_study_names(storage)
    chosen = loc.study_name if loc.study_name in names else (names[0] if len(names) == 1 else None)
    return optuna.load_study(study_name=chosen, storage=storage) if chosen else None
