"""The manifest: one table describing every image, shared by every stage of xrad.

A manifest is a CSV file with one row per image. Indexing writes the core columns; splitting adds
``split`` and ``semi_label``; preprocessing adds the cache columns. Paths are stored absolute, so a
manifest can be read from any working directory.

Column meanings:

- ``path``: the original image file (absolute).
- ``patient_id``, ``study_id``: grouping identifiers (pseudonymised for DICOM; empty when unknown,
  e.g. FracAtlas has no patient ids). ``study_id`` is unique across the whole table.
- ``body_part``: upper-case body part (``HAND``, ``SHOULDER``, ...), empty when unknown.
- ``view``: view/projection when known (``frontal``, ``lateral``, ``PA`` ...), else empty.
- ``label``: 1 abnormal, 0 normal, empty (``<NA>``) unknown.
- ``source``: which indexer produced the row (``mura``, ``csv``, ``dicom``).
- ``split``: ``train`` / ``valid`` / ``test`` (after ``xrad split``).
- ``semi_label``: +1 known normal, −1 known abnormal, 0 unlabelled (after ``xrad split``).
- ``cache_path``, ``mask_path``: preprocessed image and body-part mask (after ``xrad preprocess``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from xrad.errors import DataError
from xrad.utils.atomic import write_csv

CORE_COLUMNS: tuple[str, ...] = ("path", "patient_id", "study_id", "body_part", "view", "label", "source")
SPLIT_COLUMNS: tuple[str, ...] = ("split", "semi_label")
CACHE_COLUMNS: tuple[str, ...] = ("cache_path", "mask_path")
SPLITS: tuple[str, ...] = ("train", "valid", "test")

_STRING_COLUMNS = ("path", "patient_id", "study_id", "body_part", "view", "source", "split", "cache_path", "mask_path")
_INT_COLUMNS = ("label", "semi_label")


def normalise_types(frame: pd.DataFrame) -> pd.DataFrame:
    """Give the known columns their canonical dtypes (strings with "" for missing; nullable ints)."""
    frame = frame.copy()
    for column in _STRING_COLUMNS:
        if column in frame.columns:
            frame[column] = frame[column].fillna("").astype(str)
    for column in _INT_COLUMNS:
        if column in frame.columns:
            frame[column] = pd.to_numeric(frame[column], errors="raise").astype("Int64")
    return frame


def validate(frame: pd.DataFrame, require: tuple[str, ...] = CORE_COLUMNS, where: str = "manifest") -> None:
    """Raise :class:`DataError` if required columns are missing or values are out of range."""
    missing = [c for c in require if c not in frame.columns]
    if missing:
        raise DataError(
            f"{where}: missing column(s) {', '.join(missing)}; run the step that adds them (index → split → preprocess)"
        )
    if "label" in frame.columns:
        bad = frame["label"].dropna()
        bad = bad[~bad.isin([0, 1])]
        if len(bad):
            raise DataError(f"{where}: label must be 0, 1 or empty, found {bad.iloc[0]!r}")
    if "semi_label" in frame.columns:
        bad = frame["semi_label"].dropna()
        bad = bad[~bad.isin([-1, 0, 1])]
        if len(bad):
            raise DataError(f"{where}: semi_label must be -1, 0 or 1, found {bad.iloc[0]!r}")
    if "split" in frame.columns:
        bad = frame.loc[~frame["split"].isin(SPLITS + ("",)), "split"]
        if len(bad):
            raise DataError(f"{where}: split must be one of {SPLITS}, found {bad.iloc[0]!r}")


def read_manifest(path: str | Path, require: tuple[str, ...] = CORE_COLUMNS) -> pd.DataFrame:
    """Read and validate a manifest CSV written by xrad (or by hand with the same columns)."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a manifest CSV; index it with `xrad index {path} -o manifest.csv`")
    if not path.is_file():
        from xrad.utils.files import entry_kind

        kind = entry_kind(path)
        if kind not in ("missing", "broken symbolic link"):  # a FIFO would block the CSV reader for ever
            raise DataError(f"{path}: is a {kind}, not a manifest CSV; pass the manifest file")
        raise DataError(f"{path}: manifest not found; create one with `xrad index SOURCE -o {path}`")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a readable CSV manifest ({str(exc).splitlines()[0]})") from None
    for column in _INT_COLUMNS:
        if column in frame.columns:
            frame[column] = frame[column].replace("", pd.NA)
            try:
                frame[column] = pd.to_numeric(frame[column]).astype("Int64")
            except (ValueError, TypeError):
                raise DataError(f"{path}: column {column!r} must hold integers or be empty") from None
    frame = normalise_types(frame)
    validate(frame, require=require, where=str(path))
    return frame


def manifest_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The table :func:`write_manifest` writes: canonical types, core columns first, then any others in order."""
    frame = normalise_types(frame)
    ordered = [c for c in CORE_COLUMNS + SPLIT_COLUMNS + CACHE_COLUMNS if c in frame.columns]
    ordered += [c for c in frame.columns if c not in ordered]
    return frame[ordered]


def write_manifest(frame: pd.DataFrame, path: str | Path) -> None:
    """Atomically write a manifest CSV (core columns first, then any others in their order)."""
    write_csv(path, manifest_table(frame))
