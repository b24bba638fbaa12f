"""Atomic file writes: write a temp file in the target's folder, then os.replace() it into place.

A reader (the dashboard, a second process) therefore sees either the old file or the complete
new one, never a half-written file. The temp file lives in the same folder so that the final
rename stays on one filesystem, and it keeps the target's suffix because numpy, pyarrow and
matplotlib pick the format from (or append) the file extension.
"""
from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dnn_search.errors import UserError


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


def _reserve_temp(path: Path) -> Path:
    """Create the parent folders and an empty, uniquely named temp file next to `path`."""
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot write to {folder}: {_reason(e)}") from e
    for _ in range(100):
        temp = folder / f".{path.name}.tmp-{secrets.token_hex(4)}{path.suffix}"
        try:
            # O_EXCL reserves the name; mode 0o666 lets the umask decide the final permissions,
            # as for a file written in place.
            os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return temp
        except FileExistsError:
            continue
        except OSError as e:
            raise UserError(f"cannot write to {folder}: {_reason(e)}") from e
    raise UserError(f"cannot write to {folder}: could not create a temporary file")


def _discard(temp: Path) -> None:
    try:
        temp.unlink()
    except FileNotFoundError:
        pass


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it replaces `path`, on an exception it is removed.

        with atomic_path("out/table.parquet") as tmp:
            frame.to_parquet(tmp)
    """
    path = Path(path)
    temp = _reserve_temp(path)
    try:
        yield temp
    except BaseException:
        _discard(temp)
        raise
    try:
        os.replace(temp, path)
    except OSError as e:
        _discard(temp)
        raise UserError(f"cannot write to {path}: {_reason(e)}") from e


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    with atomic_path(path) as temp:
        try:
            temp.write_bytes(data)
        except OSError as e:
            raise UserError(f"cannot write to {path.parent}: {_reason(e)}") from e
    return path


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    return atomic_write_bytes(path, text.encode(encoding))


def unwritable_reason(folder: str | os.PathLike) -> str | None:
    """None when FOLDER exists (or can be created) and accepts a new file, else the system's reason
    (e.g. 'Permission denied'): the one write probe behind every "is this folder usable" check."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        # A unique probe name: concurrent trials check the same folder.
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def ensure_writable_folder(folder: str | os.PathLike, what: str = "output folder") -> Path:
    """Create `folder` now and prove it writable, so a bad path fails before any work is done."""
    path = Path(folder)
    reason = unwritable_reason(path)
    if reason is not None:
        raise UserError(f"cannot write to {what} {path}: {reason}")
    return path
