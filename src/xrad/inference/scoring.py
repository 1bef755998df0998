"""Framework-free scoring with a trained artefact: no Lightning, no pickle.

:func:`load_scorer` rebuilds the detector's :class:`~xrad.methods.base.Scorer` from an artefact folder;
:func:`score_frame` scores the rows of a manifest-like table exactly as training evaluated them:

- rows with ``cache_path`` (``xrad preprocess`` output) are decoded by the same bank loader as training;
- other rows are read with :func:`xrad.data.io.read_radiograph` and, when the artefact records
  preprocessing parameters, preprocessed with :func:`xrad.preprocess.preprocess_image` first;
- then the one resize (:func:`xrad.data.model_input.resize_image_and_mask`) and the deterministic
  :func:`xrad.data.model_input.prepare_eval`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from xrad.inference.artefact import load_artefact
from xrad.errors import ImageReadError, XradError
from xrad.methods.base import Scorer
from xrad.methods.registry import get_scorer_class


def load_scorer(artefact_dir: str | Path, device: str | torch.device = "cpu") -> Scorer:
    """Rebuild the scorer of an artefact folder (eval mode, on ``device``); ``scorer.artefact_meta`` holds
    the artefact's metadata."""
    tensors, meta = load_artefact(artefact_dir)
    scorer_info = meta.get("scorer") or {}
    cls = get_scorer_class(str(scorer_info.get("kind")))
    scorer = cls.from_artefact(tensors, scorer_info.get("args", {}))
    scorer.artefact_meta = meta
    return scorer.to(device).eval()


def _has_cache(frame: pd.DataFrame) -> np.ndarray:
    if "cache_path" not in frame.columns:
        return np.zeros(len(frame), dtype=bool)
    return frame["cache_path"].fillna("").astype(str).str.len().to_numpy() > 0


def _decode_preprocessed(row: pd.Series, size: int, params: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw image → preprocessing with the artefact's parameters → the one resize."""
    from xrad.data.model_input import resize_image_and_mask
    from xrad.data.io import read_radiograph
    from xrad.preprocess import preprocess_image

    radiograph = read_radiograph(row["path"])
    if radiograph.meta.truncated:  # a partial image would get a confident but meaningless score
        raise ImageReadError(row["path"], f"truncated {radiograph.meta.format.upper()} file (only part of it "
                                          "decodes); re-export or re-download it")
    pixels = radiograph.pixels
    body_part = str(row.get("body_part", "") or "") or None
    result = preprocess_image(pixels, params, body_part=body_part)
    return resize_image_and_mask(np.asarray(result.image, dtype=np.uint8), np.asarray(result.mask), size)


def _decode(frame: pd.DataFrame, size: int, params: Any, workers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode rows to uint8 (N,1,S,S) images and masks, as training did."""
    from xrad.training.banks import load_image_bank

    cached = _has_cache(frame)
    images = torch.zeros((len(frame), 1, size, size), dtype=torch.uint8)
    masks = torch.zeros_like(images)
    via_bank = np.flatnonzero(cached | (params is None))
    if len(via_bank):
        bank = load_image_bank(frame.iloc[via_bank], size, workers=workers, progress=False)
        images[via_bank], masks[via_bank] = bank.images, bank.masks
    for i in np.flatnonzero(~cached & (params is not None)):
        images[i], masks[i] = _decode_preprocessed(frame.iloc[i], size, params)
    return images, masks


def score_frame(artefact: str | Path | Scorer, frame: pd.DataFrame, batch_size: int = 64, *,
                workers: int = 2, chunk_size: int = 512, on_error: str = "raise",
                progress: bool = False) -> pd.DataFrame:
    """Score every row of ``frame`` (needs ``path`` or ``cache_path``); returns a copy with ``score``
    (and ``sphere``, the nearest centre, for sphere detectors).

    ``on_error="skip"`` gives unreadable rows a NaN score and a one-line ``error`` instead of raising.
    Rows are decoded ``chunk_size`` at a time, so memory stays bounded for large tables.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError("on_error must be 'raise' or 'skip'")
    scorer = artefact if isinstance(artefact, Scorer) else load_scorer(artefact)
    meta = getattr(scorer, "artefact_meta", {})
    size = int(meta["image_size"])
    params = None
    if meta.get("preprocessing") is not None:
        from xrad.preprocess import PreprocessParams

        params = PreprocessParams.from_dict(meta["preprocessing"])
    out = frame.reset_index(drop=True).copy()
    n = len(out)
    scores = np.full(n, np.nan)
    spheres = np.full(n, -1, dtype=np.int64)
    errors = [""] * n
    from tqdm.auto import tqdm

    with tqdm(total=n, desc="scoring", unit="img", disable=not progress) as bar:
        for start in range(0, n, chunk_size):
            rows = list(range(start, min(n, start + chunk_size)))
            try:
                images, masks = _decode(out.iloc[rows], size, params, workers)
                ok = rows
            except XradError:
                if on_error == "raise":
                    raise
                ok, parts = [], []
                for i in rows:  # isolate the unreadable rows
                    try:
                        parts.append(_decode(out.iloc[[i]], size, params, 1))
                        ok.append(i)
                    except XradError as exc:
                        errors[i] = str(exc).splitlines()[0]
                if not parts:
                    bar.update(len(rows))
                    continue
                images = torch.cat([p[0] for p in parts])
                masks = torch.cat([p[1] for p in parts])
            result = scorer.score_batches(images, masks, batch_size=batch_size)
            scores[ok] = result["score"].numpy()
            spheres[ok] = result["sphere"].numpy()
            bar.update(len(rows))
    out["score"] = scores
    if meta.get("scorer", {}).get("kind") == "sphere" or (spheres >= 0).any():
        out["sphere"] = spheres
    if on_error == "skip":
        out["error"] = errors
    return out
