"""Atomic file writes: a reader never sees a half-written output, an interrupted run never leaves one.

Everything is written to a temporary file in the destination folder and moved into place with
:func:`os.replace`, which is atomic on POSIX and Windows for paths on one file system. The temporary file is
given the permissions an ordinary ``open()`` would give (``0666`` minus the umask, so ``0644`` under ``022``):
``mkstemp`` creates it ``0600``, which would hide every output from colleagues and web servers.

Outputs that belong together are published together: :func:`staged_folder` builds a whole output folder
beside its destination and swaps it in by renaming (a re-run that fails leaves the previous folder whole, never
a mix of old and new files); :class:`FileSet` writes several sibling files to temporaries and moves them into
place only once every one of them was written.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from xrad.errors import OutputError

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask (read from /proc where possible; else set and restored under a lock)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _honour_umask(target: int | str, folder: bool = False) -> None:
    """Give a file descriptor (or a path) the mode ``open()``/``mkdir()`` would have given it."""
    mode = (0o777 if folder else 0o666) & ~current_umask()
    if isinstance(target, int):
        if hasattr(os, "fchmod"):
            os.fchmod(target, mode)
    else:
        os.chmod(target, mode)


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
        _honour_umask(fd)
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


# ------------------------------------------------------------------------------------- sets of outputs
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where that is not available."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    # Non-zero: EINVAL (a file system without exchange), ENOSYS ...: the caller falls back to two renames.
    return bool(renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0)


def _publish(staged: Path, dest: Path) -> None:
    """Move the folder ``staged`` onto ``dest`` (replacing a previous ``dest`` folder as a whole)."""
    if not dest.exists():
        os.rename(staged, dest)
        return
    if _exchange(staged, dest):  # dest now holds the new folder, staged the old one
        shutil.rmtree(staged, ignore_errors=True)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old.", dir=dest.parent))
    os.rmdir(old)
    os.rename(dest, old)  # between these two renames dest is absent for an instant, never half-written
    try:
        os.rename(staged, dest)
    except OSError:
        os.rename(old, dest)
        raise
    shutil.rmtree(old, ignore_errors=True)


def check_replaceable(dest: str | Path, owned: Callable[[Path], bool] = lambda entry: False) -> Path:
    """Fail now, with :class:`OutputError`, if the output folder ``dest`` could not be replaced by
    :func:`staged_folder` (a file is in the way, or it holds entries ``owned`` does not claim)."""
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise OutputError(dest, NotADirectoryError(20, "it is a file, not a folder"))
    if dest.is_dir():
        foreign = sorted(entry.name for entry in dest.iterdir() if not owned(entry))
        if foreign:
            raise OutputError(
                dest,
                FileExistsError(
                    17, f"it holds files this output did not write (e.g. {foreign[0]!r}); choose an empty or new folder"
                ),
            )
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(dest, exc) from None
    if not os.access(dest.parent, os.W_OK | os.X_OK):  # the staged sibling is made there
        raise OutputError(dest, PermissionError(13, "its parent folder is not writable"))
    return dest


@contextlib.contextmanager
def staged_folder(dest: str | Path, owned: Callable[[Path], bool] = lambda entry: False) -> Iterator[Path]:
    """Yield an empty folder beside ``dest``; when the block succeeds it replaces ``dest`` as a whole.

    A previous ``dest`` is replaced only when every entry in it satisfies ``owned`` (it holds what this
    output writes and nothing else), so a user's folder given by mistake is refused with :class:`OutputError`
    before any work, never deleted. On failure the staged folder is removed and ``dest`` is untouched.
    """
    dest = check_replaceable(dest, owned)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
        _honour_umask(str(staged), folder=True)
    except OSError as exc:
        raise OutputError(dest, exc) from None
    try:
        yield staged
        try:
            _publish(staged, dest)
        except OSError as exc:
            raise OutputError(dest, exc) from None
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


class FileSet:
    """Several output files published together: each ``write_*`` goes to a temporary sibling of its target;
    :meth:`publish` moves all of them into place (and deletes ``stale`` files of an earlier run that this run
    does not write) only after every one was written. Use as a context manager: leaving the block with an
    exception removes the temporaries and leaves every earlier output as it was.
    """

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path]] = []
        self._stale: list[Path] = []

    def _stage(self, path: str | Path) -> Path:
        path = check_writable(path)
        if any(target == path for target, _ in self._staged):
            raise ValueError(f"{path} is written twice in one FileSet")
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.close(fd)
        except OSError as exc:
            raise OutputError(path, exc) from None
        self._staged.append((path, Path(tmp)))
        return Path(tmp)

    def write_text(self, path: str | Path, text: str) -> None:
        """Stage ``text`` (UTF-8) for ``path``."""
        tmp = self._stage(path)
        with atomic_open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)

    def write_csv(self, path: str | Path, frame: Any, **kwargs: Any) -> None:
        """Stage a DataFrame as CSV for ``path`` (as :func:`write_csv`)."""
        tmp = self._stage(path)
        write_csv(tmp, frame, **kwargs)

    def write_json(self, path: str | Path, obj: Any) -> None:
        """Stage ``obj`` as JSON for ``path`` (as :func:`write_json`)."""
        tmp = self._stage(path)
        write_json(tmp, obj)

    def write_bytes(self, path: str | Path, data: bytes) -> None:
        """Stage ``data`` for ``path``."""
        tmp = self._stage(path)
        with atomic_open(tmp, "wb") as handle:
            handle.write(data)

    def remove_stale(self, path: str | Path) -> None:
        """Delete ``path`` at publication unless this set writes it (an earlier run's output that would be
        mistaken for this run's)."""
        self._stale.append(Path(path))

    def publish(self) -> None:
        """Move every staged file into place, then delete the stale ones."""
        written = {target for target, _ in self._staged}
        for target, tmp in self._staged:
            try:
                os.replace(tmp, target)
            except OSError as exc:
                raise OutputError(target, exc) from None
        self._staged = []
        for path in self._stale:
            if path not in written:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def discard(self) -> None:
        """Remove the temporaries (nothing is published)."""
        for _, tmp in self._staged:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        self._staged = []

    def __enter__(self) -> FileSet:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.publish()
        else:
            self.discard()
