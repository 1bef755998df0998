"""Hashing, in one place: pseudonyms for identifiers, short keys for file names, content hashes of files."""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

# A fixed, public salt: the point is that outputs never contain identifiers in clear, and that the same
# identifier maps to the same pseudonym across runs so splits stay reproducible.
_SALT = b"xrad-pseudonym-v1"


def pseudonymise(identifier: str, prefix: str = "") -> str:
    """Return a stable 16-hex-digit pseudonym for ``identifier`` (empty stays empty)."""
    if identifier is None or str(identifier) == "":
        return ""
    digest = hashlib.sha256(_SALT + str(identifier).encode("utf-8")).hexdigest()[:16]
    return f"{prefix}{digest}"


def short_hash(text: str, length: int = 12) -> str:
    """The first ``length`` hex digits of the SHA-1 of ``text``: a stable key for file names (not security)."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:length]


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's content, streamed; memoised on (path, size, mtime) so an edited file is hashed again."""
    stat = os.stat(path)
    return _sha256_file(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256_file(path: str, size: int, mtime_ns: int) -> str:
    from xrad.utils.files import open_regular

    digest = hashlib.sha256()
    with open_regular(path) as handle:  # a FIFO named like an image must not block the hash
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
