"""The inputs of scoring: one image, a folder of images or DICOM files, a MURA tree or a manifest CSV, as one
table with at least ``path`` (and ids where the source has them). Shared by ``xrad score`` and
:meth:`xrad.Detector.score`, so both read the same inputs the same way."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

__all__ = ["IMAGE_SUFFIXES", "collect_inputs"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom")


def collect_inputs(source: Path) -> pd.DataFrame:
    """Turn INPUT into a table with at least ``path`` (and ids where the source has them)."""
    from xrad.data.indexing import index_dicom_folder, index_mura, is_dicom
    from xrad.data.manifest import read_manifest
    from xrad.errors import DataError
    from xrad.utils.files import entry_kind

    kind = entry_kind(source)
    if kind == "missing":
        raise DataError(f"{source}: not found; pass an image, a folder or a manifest CSV")
    if kind == "file":
        if source.suffix.lower() == ".csv":
            return read_manifest(source, require=("path",))
        return pd.DataFrame({"path": [str(source.resolve())], "study_id": [source.stem]})
    if kind != "directory":
        raise DataError(f"{source}: is a {kind}, not an image, a folder or a manifest CSV; check the path")
    if source.name == "MURA-v1.1" or (source / "MURA-v1.1").is_dir():
        return index_mura(source)
    files: list[Path] = []
    special: list[Path] = []
    for dirpath, dirs, names in os.walk(source):  # links to folders are not followed (no loops)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            (files if entry_kind(path) == "file" else special).append(path)
    dicoms = [p for p in files if is_dicom(p)]
    dicom_set = set(dicoms)  # built once: membership per file, not a new set per file
    # An entry named like an image that is not a regular file (a FIFO, a broken link ...) is never opened, but
    # listed: its row says why it was not scored instead of it vanishing from the table.
    images = [p for p in files + special if p.suffix.lower() in IMAGE_SUFFIXES and p not in dicom_set]
    parts = []
    if dicoms:
        # The other images are read below; a damaged DICOM header is kept as a row, which will say why.
        parts.append(index_dicom_folder(source, warn_left_out=False, keep_unreadable=True))
    if images:
        parts.append(
            pd.DataFrame(
                {
                    "path": [str(p.absolute()) for p in images],
                    "study_id": [str(p.parent.relative_to(source) / p.stem) for p in images],
                }
            )
        )
    if not parts:
        raise DataError(f"{source}: no PNG, JPEG, TIFF or DICOM files found")
    return pd.concat(parts, ignore_index=True)
