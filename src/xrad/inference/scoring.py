"""Framework-free scoring with a trained artefact: no Lightning, no pickle.

:func:`load_scorer` rebuilds the detector's :class:`~xrad.methods.base.Scorer` from an artefact folder
(``scorer.artefact_meta`` is its :class:`~xrad.inference.artefact.ArtefactMeta`); :func:`score_frame`
scores the rows of a manifest-like table exactly as training evaluated them. Every row goes through the
rules of :mod:`xrad.inference.input` (pixel limit, truncated files refused, the artefact's preprocessing,
the one resize):

- rows with ``cache_path`` (``xrad preprocess`` output) are decoded in bulk by the training banks' loader
  (:func:`xrad.training.banks.load_image_bank`, whose PNG reader applies the pixel limit to the header);
- other rows are prepared one by one by :func:`~xrad.inference.input.prepare_row`, in ``workers`` threads;
- then the deterministic :func:`xrad.data.model_input.prepare_eval` (inside ``Scorer.score_batches``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from xrad.errors import XradError
from xrad.inference.artefact import InputSpec, load_artefact, meta_of
from xrad.methods.base import Scorer
from xrad.methods.registry import get_scorer_class


def load_scorer(artefact_dir: str | Path, device: str | torch.device = "cpu") -> Scorer:
    """Rebuild the scorer of an artefact folder (eval mode, on ``device``); ``scorer.artefact_meta`` holds
    the artefact's :class:`~xrad.inference.artefact.ArtefactMeta`."""
    tensors, meta = load_artefact(artefact_dir)
    cls = get_scorer_class(str(meta.scorer_kind))
    scorer = cls.from_artefact(tensors, meta.scorer_args if meta.scorer_args is not None else {})
    scorer.artefact_meta = meta
    return scorer.to(device).eval()


def _has_cache(frame: pd.DataFrame) -> np.ndarray:
    if "cache_path" not in frame.columns:
        return np.zeros(len(frame), dtype=bool)
    cached: np.ndarray = frame["cache_path"].fillna("").astype(str).str.len().to_numpy() > 0
    return cached


def _decode(
    frame: pd.DataFrame, spec: InputSpec, workers: int, strict: bool
) -> tuple[torch.Tensor, torch.Tensor, list[str], list[str]]:
    """Decode rows to uint8 (N,1,S,S) images and masks, as training did; also each row's one-line error ("" when
    it decoded; its image is then zeros) and degenerate reason. ``strict``: the first error raises instead."""
    from concurrent.futures import ThreadPoolExecutor

    from xrad.inference.input import prepare_row
    from xrad.training.banks import load_image_bank

    size = spec.image_size
    n = len(frame)
    cached = _has_cache(frame)
    images = torch.zeros((n, 1, size, size), dtype=torch.uint8)
    masks = torch.zeros_like(images)
    errors, flags = [""] * n, [""] * n
    via_bank = np.flatnonzero(cached)
    if len(via_bank):  # the training banks' own loader (pixel limit and regular-file rule included)
        bank = load_image_bank(
            frame.iloc[via_bank], size, workers=workers, progress=False, on_error="raise" if strict else "skip"
        )
        failed = dict(zip(bank.failures["row"].tolist(), bank.failures["reason"].tolist()))
        kept = [int(via_bank[j]) for j in range(len(via_bank)) if j not in failed]
        images[kept], masks[kept] = bank.images, bank.masks
        for j, reason in failed.items():
            errors[int(via_bank[j])] = reason
        for i, flag in zip(kept, bank.degenerate):
            flags[i] = flag

    def one(i: int) -> None:
        try:
            model_input = prepare_row(frame.iloc[i], spec)
        except XradError as exc:
            if strict:
                raise
            errors[i] = " ".join(str(exc).split())  # one line, naming the file
            return
        images[i], masks[i], flags[i] = model_input.image, model_input.mask, model_input.degenerate

    raw = np.flatnonzero(~cached).tolist()
    if workers <= 1 or len(raw) < 2:
        for i in raw:
            one(i)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(one, raw))  # re-raises the first row's error (strict)
    return images, masks, errors, flags


def score_frame(
    artefact: str | Path | Scorer,
    frame: pd.DataFrame,
    batch_size: int = 64,
    *,
    workers: int = 2,
    chunk_size: int = 512,
    on_error: str = "raise",
    progress: bool = False,
) -> pd.DataFrame:
    """Score every row of ``frame`` (needs ``path`` or ``cache_path``); returns a copy with ``score``
    (and ``sphere``, the nearest centre, for sphere detectors), ``input_mean`` and ``input_std`` (the model
    input's brightness and contrast inside its mask, :func:`xrad.data.model_input.input_statistics`) and
    ``input_appearance`` (its distance to the nearest stored training image,
    :func:`xrad.data.model_input.appearance_distance`; NaN when the artefact stores none).

    ``on_error="skip"`` gives unreadable rows a NaN score and a one-line ``error`` naming the file instead of
    raising; one bad file never stops the others. ``degenerate`` names images whose score cannot be trusted
    though they decoded (tiny, constant: :func:`xrad.data.model_input.degenerate_reason`), "" for the others.
    Rows are decoded ``chunk_size`` at a time, so memory stays bounded for large tables.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError("on_error must be 'raise' or 'skip'")
    scorer = artefact if isinstance(artefact, Scorer) else load_scorer(artefact)
    meta = meta_of(scorer)
    spec = meta.input_spec()
    out = frame.reset_index(drop=True).copy()
    n = len(out)
    scores = np.full(n, np.nan)
    spheres = np.full(n, -1, dtype=np.int64)
    errors, flags = [""] * n, [""] * n
    stats = np.full((n, 2), np.nan)
    looks = np.full(n, np.nan)
    from xrad.data.model_input import appearance_distance, input_appearance, input_statistics
    from xrad.utils.progress import progress as progress_bar

    with progress_bar(n, "scoring", "img", enabled=progress) as bar:
        for start in range(0, n, chunk_size):
            rows = list(range(start, min(n, start + chunk_size)))
            images, masks, chunk_errors, chunk_flags = _decode(out.iloc[rows], spec, workers, on_error == "raise")
            ok = [j for j, error in enumerate(chunk_errors) if not error]
            for j, i in enumerate(rows):
                errors[i], flags[i] = chunk_errors[j], chunk_flags[j]
            if ok:
                index = torch.as_tensor(ok, dtype=torch.int64)
                result = scorer.score_batches(images[index], masks[index], batch_size=batch_size)
                rows_ok = [rows[j] for j in ok]
                scores[rows_ok] = result["score"].numpy()
                pixels, body = images[index].numpy(), masks[index].numpy()
                stats[rows_ok] = input_statistics(pixels, body)
                looks[rows_ok] = appearance_distance(input_appearance(pixels, body), meta.normal_reference)
                spheres[rows_ok] = result["sphere"].numpy()
            bar.update(len(rows))
    out["score"] = scores
    if meta.scorer_kind == "sphere" or (spheres >= 0).any():
        out["sphere"] = spheres
    out["degenerate"] = flags
    out["input_mean"], out["input_std"] = stats[:, 0], stats[:, 1]  # compared with training (readout)
    out["input_appearance"] = looks  # distance to the nearest stored training image (readout)
    if on_error == "skip":
        out["error"] = errors
    return out
