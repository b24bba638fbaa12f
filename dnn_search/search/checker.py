"""Checks of the values in a search space file: every problem is one UserError naming its key path
(`params.outer_lr.low: must be positive ...`), so the command exits with status 2 before anything
starts. Shared by the space and by the sampler, scheduler and pipeline sections' parsers."""
from __future__ import annotations

import math

from dnn_search.errors import UserError


def _one_line(text: str) -> str:
    """Keys and values in a message come from the file: escape line breaks and other control characters."""
    return "".join(ch if ch.isprintable() or ch == " " else ascii(ch)[1:-1] for ch in text)


class Checker:
    def __init__(self, source: str):
        self.source = source

    def fail(self, path: str, message: str):
        where = f"search space {self.source}: " if self.source else "search space: "
        raise UserError(_one_line(f"{where}{path}: {message}"))

    def mapping(self, path: str, value, allowed: tuple) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(path, f"expected a mapping, got {type(value).__name__}")
        for key in value:
            if not isinstance(key, str):
                self.fail(path, f"keys must be strings, got {key!r}")
            if key not in allowed:
                self.fail(f"{path}.{key}" if path else key,
                          f"unknown key; allowed: {', '.join(allowed)}")
        return value

    def integer(self, path: str, value, minimum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"expected an integer, got {value!r}")
        if minimum is not None and value < minimum:
            self.fail(path, f"must be at least {minimum}, got {value}")
        return value

    def number(self, path: str, value, minimum: float | None = None, strictly: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(path, f"expected a finite number, got {value!r}")
        if minimum is not None and (value <= minimum if strictly else value < minimum):
            self.fail(path, f"must be {'above' if strictly else 'at least'} {minimum}, got {value}")
        return float(value)

    def boolean(self, path: str, value) -> bool:
        if not isinstance(value, bool):
            self.fail(path, f"expected true or false, got {value!r}")
        return value

    def choice(self, path: str, value, allowed) -> str:
        if not isinstance(value, str) or value.lower() not in allowed:
            self.fail(path, f"expected one of {', '.join(allowed)}, got {value!r}")
        return value.lower()


def read_yaml_file(path, what: str):
    """The YAML mapping in the file at PATH (a search space or a study file, WHAT names it in the
    messages): a missing, unreadable, invalid or empty file is one UserError line."""
    from pathlib import Path

    import yaml
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {what} {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{what} {path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        raise UserError(f"{what} {path}: the file is empty (expected a mapping of keys)")
    return data
