"""One-way hashing of identifiers so that no patient or study identifier is written in clear."""

from __future__ import annotations

import hashlib

# A fixed, public salt: the point is that outputs never contain identifiers in clear, and that the same
# identifier maps to the same pseudonym across runs so splits stay reproducible.
_SALT = b"xrad-pseudonym-v1"


def pseudonymise(identifier: str, prefix: str = "") -> str:
    """Return a stable 16-hex-digit pseudonym for ``identifier`` (empty stays empty)."""
    if identifier is None or str(identifier) == "":
        return ""
    digest = hashlib.sha256(_SALT + str(identifier).encode("utf-8")).hexdigest()[:16]
    return f"{prefix}{digest}"
