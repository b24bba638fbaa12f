"""`search.json`: the typed record of what a search was asked to do.

Written once by the search driver when a search starts (and again on --resume, with any new
--address), read by everything that comes after: --resume, export, report, dashboard. One writer
and one reader, so the shape cannot drift between them (it did: the report and the dashboard each
read their own idea of it, and missed the sampled parameters and the --optuna-storage URL).

On disk:
    {"name": ..., "space_file": ..., "space": {...the resolved space...}, "created": "...",
     "options": {"address": ..., "optuna_storage": ..., "storage": ...}}
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from dnn_search.atomic import atomic_write_text
from dnn_search.errors import UserError
from dnn_search.results.layout import SEARCH_FILE


@dataclass(frozen=True)
class SearchRecord:
    name: str
    space: dict                          # the resolved search space (SearchSpace.to_dict())
    space_file: str | None = None
    address: str | None = None           # None: an embedded local Ray
    optuna_storage: str | None = None    # a database URL or a journal file; None: optuna_journal.log
    storage: str | None = None           # the --storage root
    created: str = ""
    extra: dict = field(default_factory=dict, compare=False)  # keys written by later versions, kept

    # the parts of the space every reader needs
    @property
    def metric(self) -> str:
        return str(self.space.get("metric") or "heldout_accuracy")

    @property
    def mode(self) -> str:
        return str(self.space.get("mode") or "max")

    @property
    def dataset(self) -> str:
        """The (first) dataset the search meta-learns on: its task names and shows the metrics."""
        choice = (self.space.get("params") or {}).get("dataset")
        if isinstance(choice, dict) and choice.get("choices"):
            return str(choice["choices"][0])
        fixed = (self.space.get("fixed") or {}).get("dataset")
        if fixed:
            return str(fixed)
        from dnn_search.metalearn import MetaConfig
        return MetaConfig().dataset

    @property
    def params(self) -> list[str]:
        """The sampled hyperparameters, in the space file's order."""
        return list(self.space.get("params") or {})

    @property
    def top(self) -> int:
        return int(self.space.get("top") or 3)

    @property
    def top_per(self) -> str | None:
        return self.space.get("top_per")

    def replace(self, **changes) -> "SearchRecord":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict:
        return {**self.extra, "name": self.name, "space_file": self.space_file, "space": self.space,
                "options": {"address": self.address, "optuna_storage": self.optuna_storage, "storage": self.storage},
                "created": self.created}

    @classmethod
    def from_json(cls, data, where: str = SEARCH_FILE) -> "SearchRecord":
        if not isinstance(data, dict) or not isinstance(data.get("space"), dict) or not data.get("name"):
            raise UserError(f"{where} is not a search record (expected a name and a space)")
        options: dict = data["options"] if isinstance(data.get("options"), dict) else {}
        known = {"name", "space_file", "space", "options", "created"}
        return cls(name=str(data["name"]), space=data["space"], space_file=data.get("space_file"),
                   address=options.get("address"), optuna_storage=options.get("optuna_storage"),
                   storage=options.get("storage"), created=str(data.get("created") or ""),
                   extra={k: v for k, v in data.items() if k not in known})


def normalise_storage_url(url: str | None) -> str | None:
    """An --optuna-storage value that means the same from any working folder: a journal file path or a
    sqlite URL with a relative path is made absolute (`sqlite:///rel.db` -> `sqlite:////abs/rel.db`)."""
    if not url:
        return None
    if "://" not in url:
        return os.fspath(Path(url).expanduser().resolve())
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
        return prefix + os.fspath(Path(url[len(prefix):]).resolve())
    return url


def write_record(exp_dir: str | os.PathLike, record: SearchRecord) -> Path:
    return atomic_write_text(Path(exp_dir) / SEARCH_FILE, json.dumps(record.to_json(), indent=2, default=str) + "\n")


def read_record(exp_dir: str | os.PathLike) -> SearchRecord:
    """The record of the search in EXP_DIR; a UserError when it is missing or unreadable."""
    path = Path(exp_dir) / SEARCH_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"no search recorded in {exp_dir} ({SEARCH_FILE} is missing)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"cannot read {path}: {' '.join(str(exc).split())}") from None
    return SearchRecord.from_json(data, str(path))


def has_record(exp_dir: str | os.PathLike) -> bool:
    return (Path(exp_dir) / SEARCH_FILE).is_file()
