"""Atomic file writes: a reader never sees a half-written output, an interrupted run never leaves one.

Everything is written to a temporary file in the destination folder and moved into place with
:func:`os.replace`, which is atomic on POSIX and Windows for paths on one file system.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from xrad.errors import OutputError


def check_writable(path: str | Path) -> Path:
    """Fail now, with :class:`OutputError`, if ``path`` cannot become a file — before hours of work produce it.

    Creates the missing parent folders (as the atomic writers below would) and checks they are writable.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(path, IsADirectoryError(21, "it is a folder"))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(path, exc) from None
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise OutputError(path, PermissionError(13, "its folder is not writable"))
    return path


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; on success move it onto ``path``."""
    path = check_writable(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:  # name the output the user chose, not our temporary sibling
        raise OutputError(path, exc) from None
    try:
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise OutputError(path, exc) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    """Atomically write ``data`` to ``path``."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def write_text(path: str | Path, text: str) -> None:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented, key-sorted JSON (diffable, reproducible)."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_csv(path: str | Path, frame: Any, **kwargs: Any) -> None:
    """Atomically write a pandas DataFrame as CSV without its index."""
    kwargs.setdefault("index", False)
    with atomic_open(path, "w", encoding="utf-8", newline="") as handle:
        frame.to_csv(handle, **kwargs)
