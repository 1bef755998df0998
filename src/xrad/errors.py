"""User-facing error types.

Every error a user can cause (bad file, bad config value, missing folder) is raised as a subclass of
:class:`XradError` with a one-line message that names the file and the fix. The CLI prints that line and
exits with status 2; it never dumps a traceback for these.
"""

from __future__ import annotations

from pathlib import Path


class XradError(Exception):
    """Base class of errors caused by input, configuration or environment (not by a bug)."""


class ImageReadError(XradError):
    """A radiograph file could not be decoded. Carries the file and a one-line reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class DataError(XradError):
    """A manifest, folder or split is missing, malformed or inconsistent."""


class ConfigError(XradError):
    """A configuration value is missing or invalid."""


class OutputError(XradError):
    """An output file or folder cannot be written (missing permission, a file or folder in the way)."""

    def __init__(self, path: str | Path, exc: OSError) -> None:
        self.path = str(path)
        reason = exc.strerror or str(exc)
        super().__init__(f"{self.path}: cannot write ({reason}); choose another output path")
