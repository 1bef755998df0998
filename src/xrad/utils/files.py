"""Opening input files safely: only regular files are read, and opening never blocks.

``open(path)`` on a named pipe (FIFO) waits for a writer forever, and a character device (``/dev/zero``) never
ends; a folder of images or a manifest row can point at either. :func:`open_regular` opens without blocking
(``O_NONBLOCK``), checks what was opened with ``fstat`` (no race between a check and the open) and refuses
anything but a regular file with :class:`NotRegularFileError`. Symbolic links to regular files are followed;
a link loop fails with ``ELOOP`` as usual. :func:`read_problem` turns the ``OSError`` of a failed read into the
one-line reason the readers report.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

__all__ = ["NotRegularFileError", "entry_kind", "open_regular", "read_problem", "read_regular"]

_KINDS = (
    (stat.S_ISDIR, "directory"),
    (stat.S_ISFIFO, "named pipe (FIFO)"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
)


class NotRegularFileError(OSError):
    """The path exists but is a folder, FIFO, socket or device, not a regular file."""

    def __init__(self, path: str | Path, kind: str) -> None:
        super().__init__(
            errno.EISDIR if kind == "directory" else errno.EINVAL, f"is a {kind}, not a regular file", str(path)
        )
        self.kind = kind


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "special file"


def entry_kind(path: str | Path) -> str:
    """What ``path`` is, without opening it: "file", "directory", "named pipe (FIFO)", ..., "symbolic link loop",
    "broken symbolic link" or "missing"."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop"
        return "broken symbolic link" if os.path.islink(path) else "missing"
    return "file" if stat.S_ISREG(mode) else _kind(mode)


def open_regular(path: str | Path) -> BinaryIO:
    """Open ``path`` for binary reading if it is a regular file (never blocks); else raise an ``OSError``
    (:class:`NotRegularFileError` for folders, FIFOs, sockets and devices)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFileError(path, _kind(mode))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)  # a regular file: ordinary reads from here on
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | Path) -> bytes:
    """The bytes of a regular file (:func:`open_regular`)."""
    with open_regular(path) as handle:
        return handle.read()


def read_problem(path: str | Path, exc: OSError) -> str:
    """A one-line reason (with the fix) for an ``OSError`` raised while opening or reading ``path``."""
    if isinstance(exc, NotRegularFileError):
        if exc.kind == "directory":
            return "is a directory, not an image file; pass one file (index folders with `xrad index`)"
        return f"is a {exc.kind}, not a regular file; copy the image into a regular file"
    if exc.errno == errno.ELOOP:
        return "is a symbolic link loop; fix or remove the link"
    if isinstance(exc, FileNotFoundError):
        if os.path.islink(path):
            return "is a broken symbolic link (its target is missing); fix or remove the link"
        return "file not found; check the path"
    if isinstance(exc, PermissionError):
        return "permission denied; make the file readable"
    if isinstance(exc, IsADirectoryError):
        return "is a directory, not an image file; pass one file (index folders with `xrad index`)"
    return f"cannot read the file ({exc.strerror or exc}); check the disk and the path"
