"""The preprocessed cache: :func:`xrad.preprocess.preprocess_image` over a manifest, in parallel, resumable.

Layout of ``CACHE``::

    params.json           the PreprocessParams (a cache is never mixed across parameters)
    images/<key>.png      uint8 square image          masks/<key>.png   0/1 body mask
    meta/<key>.json       per-image record, written last: the image's done-marker
    metadata.csv          one row per image (flags, crop polygon, transform) — rebuilt at the end
    failures.csv          path, reason for images that could not be processed
    timings.csv           seconds per image (kept apart: timings differ between runs)
    manifest.csv          the input manifest + cache_path, mask_path and the flags; failed rows left out
    contact_sheet.png     with --visualize K

An image is done when its record exists *and* records the SHA-256 of the file's current content: an image
replaced under the same path (or a record from before content hashes were kept) is preprocessed again, so
stale pixels are never served from the cache.

Every file is written atomically and every table is rebuilt, sorted, from the per-image records, so a run
killed at any point and started again produces byte-identical outputs (timings.csv aside). A failing image
is recorded (its record says why) and never stops the run.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from xrad.data.manifest import write_manifest
from xrad.errors import ConfigError, DataError, XradError
from xrad.preprocess.params import PreprocessParams
from xrad.utils.atomic import write_csv, write_json
from xrad.utils.hashing import sha256_file, short_hash
from xrad.utils.processes import die_with_parent

FLAG_COLUMNS = ("uncropped", "inverted", "inversion_uncertain", "low_contrast", "mask_fallback", "truncated")


def cache_key(path: str) -> str:
    """A stable, readable file key: the image stem plus a hash of its absolute path."""
    return f"{Path(path).stem}_{short_hash(path)}"


def _content_hash(path: str) -> str:
    """SHA-256 of the file's content; "" when it cannot be hashed (not a regular file, unreadable): the
    reader then records why."""
    try:
        return sha256_file(path)
    except OSError:
        return ""


def _up_to_date(record_path: Path, path: str) -> bool:
    """True when the image's record exists and was made from the file's current content."""
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # absent (not done yet) or unreadable (redo it)
    recorded = record.get("source_sha256")
    return bool(recorded) and recorded == _content_hash(path)


def _process_one(task: tuple[str, str, str, dict[str, Any]]) -> dict[str, Any]:
    """Worker: preprocess one image into the cache and write its record (the done-marker) last."""
    from xrad.data.io import read_radiograph, write_png
    from xrad.preprocess import preprocess_image

    path, body_part, cache_dir, params_dict = task
    cache = Path(cache_dir)
    key = cache_key(path)
    record: dict[str, Any] = {"key": key, "path": path}
    start = time.perf_counter()
    try:
        record["source_sha256"] = _content_hash(path)
        radiograph = read_radiograph(path)
        result = preprocess_image(
            radiograph.pixels,
            PreprocessParams.from_dict(params_dict),
            body_part or None,
            photometric=radiograph.meta.photometric,
        )
        write_png(cache / "images" / f"{key}.png", result.image)
        write_png(cache / "masks" / f"{key}.png", result.mask)
        record.update(result.meta, truncated=int(radiograph.meta.truncated), failed="")
    except XradError as exc:
        record["failed"] = str(exc).splitlines()[0]
    except Exception as exc:
        record["failed"] = f"{path}: unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    seconds = time.perf_counter() - start
    write_json(cache / "meta" / f"{key}.json", record)
    return {"key": key, "seconds": seconds, "failed": bool(record["failed"])}


def _check_params(cache: Path, params: PreprocessParams) -> None:
    params_path = cache / "params.json"
    if params_path.is_file():
        previous = json.loads(params_path.read_text(encoding="utf-8"))
        # Through from_dict: a cache written before a parameter existed has that parameter's default.
        try:
            recorded = PreprocessParams.from_dict(previous).to_dict()
        except (ConfigError, TypeError) as exc:
            raise DataError(f"{params_path}: not usable by this xrad version ({exc}); use another -o folder") from None
        if recorded != params.to_dict():
            raise DataError(
                f"{cache}: this cache was made with other preprocessing parameters; use another -o folder or delete it"
            )
    else:
        write_json(params_path, params.to_dict())


def build_cache(
    frame: pd.DataFrame,
    cache_dir: str | Path,
    params: PreprocessParams | None = None,
    *,
    workers: int = 2,
    progress: bool = True,
) -> dict[str, Any]:
    """Preprocess every row of ``frame`` into ``cache_dir`` (skipping finished ones); write the tables.

    Returns a summary: counts of processed/skipped/failed images, flag counts, images per second.
    """
    from xrad.utils.progress import progress as progress_bar

    params = params or PreprocessParams()
    if len(frame) == 0:  # else the tables below have no columns to select (a KeyError, not a message)
        raise DataError(f"{cache_dir}: the manifest has no rows; index some images with `xrad index` first")
    cache = Path(cache_dir).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    _check_params(cache, params)
    # A killed run can leave the temporary files of interrupted atomic writes: never outputs, remove them.
    for folder in ("images", "masks", "meta"):
        for stale in (cache / folder).glob(".*.tmp"):
            stale.unlink(missing_ok=True)
    frame = frame.reset_index(drop=True)
    if frame["path"].duplicated().any():
        raise DataError(f"manifest lists {frame['path'].duplicated().sum()} image path(s) twice; de-duplicate it")
    keys = [cache_key(p) for p in frame["path"]]
    body_parts = frame["body_part"] if "body_part" in frame.columns else [""] * len(frame)
    todo = [
        (p, str(b), str(cache), params.to_dict())
        for p, b, k in zip(frame["path"], body_parts, keys)
        if not _up_to_date(cache / "meta" / f"{k}.json", p)
    ]
    timings: dict[str, float] = {}
    start = time.perf_counter()
    with progress_bar(len(todo), "preprocess", "img", enabled=progress) as bar:
        if workers <= 1:
            for task in todo:
                done = _process_one(task)
                timings[done["key"]] = done["seconds"]
                bar.update(1)
        else:
            # die_with_parent: a SIGKILLed run must not leave its workers waiting for work for ever.
            with ProcessPoolExecutor(max_workers=workers, initializer=die_with_parent) as pool:
                for done in pool.map(_process_one, todo, chunksize=4):
                    timings[done["key"]] = done["seconds"]
                    bar.update(1)
    elapsed = time.perf_counter() - start
    summary = _write_tables(frame, keys, cache, timings)
    summary.update(
        processed=len(todo),
        skipped=len(frame) - len(todo),
        seconds=round(elapsed, 2),
        images_per_second=round(len(todo) / elapsed, 2) if todo and elapsed > 0 else None,
    )
    return summary


def _write_tables(frame: pd.DataFrame, keys: list[str], cache: Path, timings: dict[str, float]) -> dict[str, Any]:
    """Rebuild metadata/failures/manifest tables from the per-image records, deterministically."""
    records = [json.loads((cache / "meta" / f"{k}.json").read_text(encoding="utf-8")) for k in keys]
    meta = pd.DataFrame(records)
    failed = meta["failed"].astype(bool).to_numpy()
    failures = meta.loc[failed, ["path", "failed"]].rename(columns={"failed": "reason"}).sort_values("path")
    write_csv(cache / "failures.csv", failures)
    ok = meta.loc[~failed].copy()
    for column in ("crop_polygon", "transform", "source_shape"):
        if column in ok.columns:
            ok[column] = ok[column].map(lambda v: json.dumps(v, separators=(",", ":")))
    write_csv(cache / "metadata.csv", ok.drop(columns=["failed"]).sort_values("path"))
    if timings:
        previous = {}
        timing_path = cache / "timings.csv"
        if timing_path.is_file():
            previous = dict(pd.read_csv(timing_path).itertuples(index=False, name=None))
        previous.update(timings)
        write_csv(timing_path, pd.DataFrame(sorted(previous.items()), columns=["key", "seconds"]))
    out = frame.loc[~failed].copy()
    out_keys = [k for k, bad in zip(keys, failed) if not bad]
    out["cache_path"] = [str(cache / "images" / f"{k}.png") for k in out_keys]
    out["mask_path"] = [str(cache / "masks" / f"{k}.png") for k in out_keys]
    for flag in FLAG_COLUMNS:
        out[flag] = ok[flag].astype(int).to_numpy() if flag in ok.columns else 0
    write_manifest(out, cache / "manifest.csv")
    summary: dict[str, Any] = {"images": len(frame), "failed": int(failed.sum())}
    summary.update({flag: int(out[flag].sum()) for flag in FLAG_COLUMNS})
    write_json(cache / "summary.json", summary)
    return {**summary, "manifest": str(cache / "manifest.csv")}
