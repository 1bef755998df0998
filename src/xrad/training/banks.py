"""In-memory image banks over the preprocessed cache, and a cheap Dataset over them.

A stage loads its images once (:func:`load_image_bank`) into uint8 tensors ``(N, 1, S, S)`` with their
0/1 masks; the DataLoader then only indexes memory and yields uint8 batches, and augmentation runs batched
inside the training step (:mod:`xrad.training.augment`). Decoding is done by a small thread pool (OpenCV
releases the GIL) and memoised on disk, keyed by the files' paths, sizes and modification times, so a
resumed run or a second stage does not decode again.

Images come from ``cache_path``/``mask_path`` (square 8-bit PNGs written by ``xrad preprocess``). Rows
without a cache file fall back to the original image through :func:`xrad.data.io.read_radiograph`, resized
and padded the same way with a mask covering the image (not the padding); this is slower and skips the
carrier removal and body-part masking, so running ``xrad preprocess`` first is recommended.

One unreadable file does not stop a bank: with ``on_error="skip"`` its row is left out and recorded in
``bank.failures`` (input row, path, one-line reason naming the file); with ``on_error="raise"`` the first one
raises an :class:`~xrad.errors.ImageReadError` naming the file — never a decoder's own exception. Images that
decode but cannot be trusted (tiny, constant: :func:`xrad.data.model_input.degenerate_reason`) are kept and
named in ``bank.degenerate``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch import Tensor

from xrad.data.io import read_cache_png
from xrad.data.model_input import degenerate_reason, resize_image_and_mask
from xrad.data.radiograph import short_reason
from xrad.errors import DataError, ImageReadError, XradError
from xrad.utils.atomic import atomic_open

# Bump when the decoding/resizing changes, so old memo files are not reused.
_BANK_VERSION = 2
FAILURE_COLUMNS = ("row", "path", "reason")


def _no_failures() -> pd.DataFrame:
    return pd.DataFrame({"row": pd.Series(dtype="int64"), "path": pd.Series(dtype=str), "reason": pd.Series(dtype=str)})


@dataclass
class ImageBank:
    """Everything a stage needs, in memory, rows in the order of ``frame``."""

    images: Tensor  # uint8 (N, 1, S, S)
    masks: Tensor  # uint8 (N, 1, S, S), values 0/1
    labels: Tensor  # int64 (N,): 1 abnormal, 0 normal, -1 unknown
    semi_labels: Tensor  # int64 (N,): +1 known normal, -1 known abnormal, 0 unlabelled
    frame: pd.DataFrame  # the manifest rows, index reset to 0..N-1 (rows that could not be read left out)
    failures: pd.DataFrame = field(default_factory=_no_failures)  # row (in the input frame), path, reason
    degenerate: list[str] = field(default_factory=list)  # per bank row: "" or why its image is degenerate

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _decode_row(path: str, cache_path: str, mask_path: str, size: int) -> tuple[Tensor, Tensor, str]:
    """Decode one manifest row to (image, mask) uint8 ``(1, size, size)`` and its degenerate reason ("" if none).

    Any failure is an :class:`ImageReadError` naming the file (a decoder's or OpenCV's own exception included).
    """
    name = cache_path or path
    try:
        if cache_path:
            image = read_cache_png(cache_path, "cached image")
            mask = read_cache_png(mask_path, "mask") if mask_path else None
            if mask is not None and mask.shape != image.shape:
                raise ImageReadError(
                    mask_path,
                    f"mask is {mask.shape[1]}x{mask.shape[0]} px but its image "
                    f"{image.shape[1]}x{image.shape[0]}; re-run `xrad preprocess`",
                )
            return (*resize_image_and_mask(image, mask, size), degenerate_reason(image, mask))
        from xrad.data.io import read_radiograph  # the raw-file reader (DICOM, 16-bit PNG, JPEG ...)

        pixels = read_radiograph(path).pixels
        image = np.clip(np.round(np.asarray(pixels, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
        return (*resize_image_and_mask(image, None, size), degenerate_reason(pixels))
    except XradError:
        raise
    except Exception as exc:
        raise ImageReadError(name, f"cannot be prepared ({type(exc).__name__}: {short_reason(exc)})") from exc


def _row_sources(frame: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(original path, cache path or "", mask path or "") per row."""

    def column(name: str) -> list[str]:
        if name not in frame.columns:
            return [""] * len(frame)
        return ["" if pd.isna(v) else str(v) for v in frame[name]]

    return list(zip(column("path"), column("cache_path"), column("mask_path")))


def _memo_key(sources: list[tuple[str, str, str]], size: int) -> str:
    """Hash of every file the bank is decoded from (path, size, mtime) and the image size."""
    digest = hashlib.sha256(json.dumps({"version": _BANK_VERSION, "size": size}).encode())
    for path, cache_path, mask_path in sources:
        for name in (cache_path, mask_path) if cache_path else (path,):
            if not name:
                digest.update(b"<none>\n")
                continue
            try:
                stat = os.stat(name)
                digest.update(f"{name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
            except OSError:
                digest.update(f"{name}\t<missing>\n".encode())
    return digest.hexdigest()[:24]


def _int_column(frame: pd.DataFrame, name: str, missing: int) -> Tensor:
    if name not in frame.columns:
        return torch.full((len(frame),), missing, dtype=torch.int64)
    values = pd.to_numeric(frame[name], errors="coerce").fillna(missing).astype("int64").to_numpy()
    return torch.from_numpy(values.copy())


def _load_memo(path: Path, n: int, size: int) -> tuple[Tensor, Tensor, dict[int, str], list[str]] | None:
    """Read a memo file; None if it is absent or unusable (then the bank is simply decoded again)."""
    if not path.is_file():
        return None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        images, masks = data["images"], data["masks"]
        failed = {int(k): str(v) for k, v in dict(data["failed"]).items()}
        flags = [str(v) for v in data["degenerate"]]
    except Exception:
        return None
    if (
        images.shape != (n, 1, size, size)
        or masks.shape != images.shape
        or images.dtype != torch.uint8
        or len(flags) != n
    ):
        return None
    return images, masks, failed, flags


def _bank(
    images: Tensor,
    masks: Tensor,
    labels: Tensor,
    semi_labels: Tensor,
    frame: pd.DataFrame,
    failed: dict[int, str],
    flags: list[str],
    sources: list[tuple[str, str, str]],
) -> ImageBank:
    """The bank of the readable rows; the others go to ``failures``."""
    if not failed:
        return ImageBank(images, masks, labels, semi_labels, frame, _no_failures(), list(flags))
    keep = [i for i in range(len(frame)) if i not in failed]
    rows = sorted(failed)
    failures = pd.DataFrame(
        {
            "row": np.asarray(rows, dtype=np.int64),
            "path": [sources[i][0] or sources[i][1] for i in rows],
            "reason": [failed[i] for i in rows],
        }
    )
    index = torch.as_tensor(keep, dtype=torch.int64)
    return ImageBank(
        images[index].clone(),
        masks[index].clone(),
        labels[index].clone(),
        semi_labels[index].clone(),
        frame.iloc[keep].reset_index(drop=True),
        failures,
        [flags[i] for i in keep],
    )


def load_image_bank(
    frame: pd.DataFrame,
    image_size: int,
    *,
    workers: int = 2,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    on_error: str = "raise",
) -> ImageBank:
    """Decode every row of ``frame`` into an in-memory :class:`ImageBank` at ``image_size`` pixels.

    ``workers`` threads decode in parallel. With ``cache_dir``, the decoded tensors are memoised in
    ``cache_dir/bank_<hash>.pt`` (hash of paths, sizes, mtimes and image size) and reused by later calls.
    Unreadable files raise :class:`ImageReadError` naming the file; with ``on_error="skip"`` their rows are left
    out of the bank and listed in ``bank.failures`` instead.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError("on_error must be 'raise' or 'skip'")
    if image_size < 8:
        raise DataError(f"image size {image_size} is too small; use at least 8 pixels (e.g. 64, 128, 224)")
    frame = frame.reset_index(drop=True)
    if "path" not in frame.columns and "cache_path" not in frame.columns:
        raise DataError("manifest has neither a 'path' nor a 'cache_path' column; build it with `xrad index`")
    sources = _row_sources(frame)
    for path, cache_path, _ in sources:
        if not cache_path and not path:
            raise DataError("manifest row has an empty 'path' and no 'cache_path'; fix or drop that row")
    labels = _int_column(frame, "label", -1)
    semi_labels = _int_column(frame, "semi_label", 0)
    n = len(frame)

    memo = None
    if cache_dir is not None:
        memo = Path(cache_dir) / f"bank_{_memo_key(sources, image_size)}.pt"
        cached = _load_memo(memo, n, image_size)
        if cached is not None and (on_error == "skip" or not cached[2]):
            return _bank(cached[0], cached[1], labels, semi_labels, frame, cached[2], cached[3], sources)

    images = torch.zeros((n, 1, image_size, image_size), dtype=torch.uint8)
    masks = torch.zeros((n, 1, image_size, image_size), dtype=torch.uint8)
    flags = [""] * n
    failed: dict[int, str] = {}

    def work(i: int) -> int:
        try:
            images[i], masks[i], flags[i] = _decode_row(*sources[i], image_size)
        except XradError as exc:
            if on_error == "raise":
                raise
            failed[i] = " ".join(str(exc).split())  # one line, naming the file
        return i

    from xrad.utils.progress import progress as progress_bar

    desc = f"loading {n} images at {image_size} px"
    with progress_bar(n, desc, "img", enabled=progress) as bar:
        if workers <= 1 or n < 2:
            for i in range(n):
                work(i)
                bar.update()
        else:
            # cv2 would start its own thread pool per call; with our threads that only oversubscribes.
            previous = cv2.getNumThreads()
            cv2.setNumThreads(1)
            try:
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    for _ in pool.map(work, range(n)):
                        bar.update()
            finally:
                cv2.setNumThreads(previous)

    if memo is not None:
        with atomic_open(memo, "wb") as handle:
            torch.save({"images": images, "masks": masks, "failed": dict(failed), "degenerate": flags}, handle)
    return _bank(images, masks, labels, semi_labels, frame, failed, flags, sources)


class BankDataset(torch.utils.data.Dataset[dict[str, Tensor]]):
    """A Dataset over an :class:`ImageBank` (or a subset of its rows); items are uint8 tensors.

    ``index`` in each item is the row of the bank (not the position in ``indices``), so scores can be
    written back to the manifest row they belong to.
    """

    def __init__(self, bank: ImageBank, indices: Sequence[int] | None = None) -> None:
        self.bank = bank
        if indices is None:
            self.indices = torch.arange(len(bank), dtype=torch.int64)
        else:
            self.indices = torch.as_tensor(list(indices), dtype=torch.int64)
            if len(self.indices) and (int(self.indices.min()) < 0 or int(self.indices.max()) >= len(bank)):
                raise IndexError(f"indices out of range for a bank of {len(bank)} images")

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __getitem__(self, item: int) -> dict[str, Tensor]:
        row = int(self.indices[item])
        return {
            "image": self.bank.images[row],
            "mask": self.bank.masks[row],
            "label": self.bank.labels[row],
            "semi_label": self.bank.semi_labels[row],
            "index": self.indices[item],
        }


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` seeding NumPy's and Python's global generators per worker.

    xrad itself draws from explicit generators; this protects any user code that still uses the global
    ones from the every-worker-replays-one-stream defect (reference-spec §3). ``torch.initial_seed()`` is
    already distinct per worker and per epoch.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
