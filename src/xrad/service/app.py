"""The scoring service: ``POST /score``, ``GET /health`` and ``GET /`` (a one-page upload form).

:func:`create_app` takes any scoring callable (so tests and other back-ends can plug in);
:func:`app_from_artefact` builds the real one from an artefact folder.

Upload handling (why each step):

- Size is limited *while reading*: a declared ``Content-Length`` above the limit is refused before
  reading, and the streamed body is counted chunk by chunk, so an oversized upload never sits in memory
  whole (413).
- The type is decided by *content* (magic bytes, :func:`xrad.data.io.sniff_format`), never by the
  filename or the client's Content-Type (415 for anything but PNG, JPEG, TIFF, DICOM).
- Decoding uses the same I/O layer as everything else (:func:`xrad.data.io.decode_radiograph`); its
  one-line :class:`~xrad.errors.ImageReadError` reason is returned with 422. A truncated file is refused
  too (422) by the rule every entry point applies (:func:`xrad.inference.input.check_complete`; ``xrad
  score`` gives it an ``error`` row): a score computed from a partial image would be a misleading answer
  (``xrad preprocess`` keeps such files, flagged ``truncated=1``). ``allow_truncated=True`` accepts it
  (flagged in the reply).
- The artefact's predict function prepares the image with :func:`xrad.inference.input.prepare_input`, the
  input path of ``xrad score``, so an upload scores exactly as the same file scored from disk.
- The client's filename is never used (it may carry a patient name) and DICOM tags are never logged or
  echoed: the reply holds the score, the flag, the operating point, image size/format and the heatmap.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from xrad.data.io import Radiograph, decode_radiograph, sniff_format
from xrad.errors import ImageReadError
from xrad.inference.artefact import ArtefactMeta, meta_of
from xrad.inference.heatmaps import Explanation
from xrad.inference.input import check_complete
from xrad.service.limits import (
    ClientGone,
    ScoringPool,
    ServiceLimits,
    UploadGate,
    check_time,
    declared_pixels,
    read_body,
)

__all__ = ["DEFAULT_MAX_UPLOAD_BYTES", "Predict", "app_from_artefact", "artefact_predictor", "create_app"]

DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024
# Room for multipart boundaries and part headers on top of the file itself.
_MULTIPART_SLACK = 64 * 1024
_UPLOAD_NAME = "<upload>"  # used in place of the client's filename in every message
_BOMB_GUARD = "(decompression-bomb guard)"  # the reader's wording when a declared size is over max_pixels
STATIC = Path(__file__).with_name("static")
log = logging.getLogger("xrad.service")

# (decoded radiograph, want heatmap, body part or None) -> {"score", "sphere", "heatmap_png", "heatmap_on",
# "degenerate"}; an ImageReadError it raises (an image that cannot be prepared) is the client's: 422
Predict = Callable[[Radiograph, bool, "str | None"], dict[str, Any]]


async def _upload_bytes(request: Request, limit: int, limits: ServiceLimits, gate: UploadGate) -> bytes:
    """The uploaded file: the ``file`` field of a multipart form, or the raw body otherwise."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        return await read_body(request, limit, limits, gate)
    body = await read_body(request, limit + _MULTIPART_SLACK, limits, gate)
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form()
    except Exception as exc:
        raise HTTPException(
            400,
            f"malformed multipart form ({str(exc).splitlines()[0] if str(exc) else 'unparsable'}); "
            "send the image as the 'file' field",
        ) from None
    try:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise HTTPException(
                400, "no 'file' field in the form; send the image as multipart field 'file' or as the raw request body"
            )
        data = await upload.read()
    finally:
        await form.close()  # releases spooled temporary files
    if len(data) > limit:
        raise HTTPException(
            413,
            f"upload is {len(data)} bytes, above the limit of {limit} bytes; "
            "send a smaller image or raise --max-upload-mb",
        )
    return data


def _check_type(data: bytes) -> None:
    """Cheap refusals on the event loop, before a scoring slot is taken."""
    if not data:
        raise HTTPException(422, "upload is empty (0 bytes); choose an image file")
    if sniff_format(data) is None:
        raise HTTPException(415, "unsupported file type (by content): send a PNG, JPEG, TIFF or DICOM image")


def _decode(data: bytes, allow_truncated: bool, max_pixels: int) -> Radiograph:
    try:  # the declared size is checked from the header, before any pixel is decoded
        radiograph = decode_radiograph(data, _UPLOAD_NAME, max_pixels=max_pixels)
    except ImageReadError as exc:
        if _BOMB_GUARD in exc.reason or "decompression-bomb" in exc.reason:
            size = exc.reason.split(", above", 1)[0] if _BOMB_GUARD in exc.reason else "is too large to decode"
            raise HTTPException(
                413,
                f"the image {size}: above this service's per-request budget of {max_pixels} pixels; "
                "send a downsampled image (or restart the service with a larger --max-megapixels)",
            ) from None
        raise HTTPException(422, f"cannot decode the image: {exc.reason}") from None
    try:  # before any predict callable sees it, so the rule holds for every back-end
        return check_complete(radiograph, allow_truncated)
    except ImageReadError as exc:
        raise HTTPException(422, f"cannot score the image: {exc.reason}") from None


def create_app(
    predict: Predict,
    *,
    info: dict[str, Any] | None = None,
    operating_point: dict[str, Any] | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    allow_truncated: bool = False,
    limits: ServiceLimits | None = None,
    normal_reference: dict[str, Any] | None = None,
) -> FastAPI:
    """The FastAPI app around a scoring callable.

    ``predict(radiograph, want_heatmap, body_part)`` returns ``score`` (float), ``sphere`` (int or None),
    ``heatmap_png`` (bytes or None) and ``heatmap_on`` (``original``/``preprocessed``). ``info`` is shown by
    ``/health``; ``operating_point`` (as stored by ``xrad calibrate``) decides ``flagged``. ``limits``
    bound the work in flight (:mod:`xrad.service.limits`); ``predict`` runs in their scoring pool and may
    call :func:`~xrad.service.limits.check_time` between its steps. ``normal_reference`` (stored by training)
    gives each score its ``percentile`` among the validation normals (None for artefacts without it). Every
    reply carries the research-use ``notice``.
    """
    from xrad import __version__
    from xrad.inference.readout import operating_point_text, percentiles
    from xrad.utils.notice import RESEARCH_NOTICE

    info = dict(info or {})
    point = None
    if operating_point:
        point = {k: v for k, v in operating_point.items() if k != "study"}  # one upload = one image
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    limits = limits or ServiceLimits()
    pool = ScoringPool(limits)
    uploads = UploadGate(limits.max_uploads)
    app = FastAPI(
        title="xrad scoring service",
        version=__version__,
        description="Anomaly scores for radiographs (PNG, JPEG, TIFF, DICOM).",
        # FastAPI's /docs and /redoc pages load their scripts from a CDN and stay blank offline (the service is
        # meant to run without a network): off; the machine-readable schema stays at /openapi.json.
        docs_url=None,
        redoc_url=None,
    )

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        """The upload page."""
        return HTMLResponse(page)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness plus what is being served; answered on the event loop, never behind scoring."""
        return {
            "status": "ok",
            "busy": {"scoring": pool.admitted, "capacity": pool.capacity, "uploads": uploads.active},
            "xrad_version": __version__,
            "max_upload_bytes": max_upload_bytes,
            "operating_point": point,
            "operating_point_text": operating_point_text(point),
            "notice": RESEARCH_NOTICE,
            **info,
        }

    @app.post("/score")
    async def score(request: Request, heatmap: bool = True, body_part: str | None = None) -> dict[str, Any]:
        """Score one uploaded image (multipart field ``file`` or the raw body)."""
        started = time.perf_counter()
        pool.refuse_if_full()
        try:
            data = await _upload_bytes(request, max_upload_bytes, limits, uploads)
        except ClientGone:  # nobody to answer: one quiet line, no traceback
            log.info("a client disconnected during its upload")
            return Response(status_code=499)  # type: ignore[return-value]
        _check_type(data)

        def job() -> tuple[Radiograph, dict[str, Any]]:
            radiograph = _decode(data, allow_truncated, limits.max_pixels)
            check_time("scoring")
            try:
                return radiograph, predict(radiograph, heatmap, body_part)
            except ImageReadError as exc:  # decoded but cannot be prepared for the model: the client's file
                raise HTTPException(422, f"cannot score the image: {exc.reason}") from None

        radiograph, result = await pool.run(job, declared_pixels(data))
        value = float(result["score"])
        flagged = None if point is None else bool(value >= float(point["threshold"]))
        percentile = float(percentiles([value], normal_reference)[0])
        png = result.get("heatmap_png")
        meta = radiograph.meta
        # Only numbers about the image: never its name, never DICOM tags.
        log.info(
            "scored a %s upload (%dx%d, %d bytes): score %.4g in %.0f ms",
            meta.format,
            meta.shape[1],
            meta.shape[0],
            len(data),
            value,
            1000 * (time.perf_counter() - started),
        )
        return {
            "score": value,
            "percentile": percentile if percentile == percentile else None,  # NaN: the artefact has no reference
            "n_reference_normals": (normal_reference or {}).get("n_normals"),
            "flagged": flagged,
            "operating_point": point,
            "operating_point_text": operating_point_text(point),
            "notice": RESEARCH_NOTICE,
            "sphere": result.get("sphere"),
            "heatmap_png": None if png is None else "data:image/png;base64," + base64.b64encode(png).decode("ascii"),
            "heatmap_on": result.get("heatmap_on"),
            # the raw map value drawn as the colour bar's top (fixed per artefact; None: each map's own maximum)
            "heat_scale": result.get("heat_scale"),
            # out of distribution (xrad.inference.readout.input_warnings) or a failed body mask
            "warnings": [w for w in (str(result.get("mask_warning") or ""), *result.get("warnings", [])) if w],
            "image": {
                "format": meta.format,
                "width": meta.shape[1],
                "height": meta.shape[0],
                "bit_depth": meta.bit_depth,
                "truncated": meta.truncated,
                "degenerate": str(result.get("degenerate") or ""),
            },
            "method": info.get("method"),
        }

    app.router.on_shutdown.append(pool.shutdown)
    return app


def artefact_predictor(
    artefact_dir: str | Path, device: str = "cpu", *, allow_truncated: bool = False, heatmap_px: int = 1024
) -> tuple[Predict, ArtefactMeta]:
    """A :data:`Predict` over an artefact folder, and the artefact's metadata. Images are prepared by
    :func:`xrad.inference.input.prepare_input` (as :func:`~xrad.inference.heatmaps.explain_pixels` does) and
    explained by :func:`~xrad.inference.heatmaps.explain_input`, with a time-budget check between the steps;
    a truncated radiograph is refused unless ``allow_truncated``. An unusable image size or preprocessing is
    refused here, at start-up, not per upload. The overlay is drawn with its major axis at most
    ``heatmap_px`` (the same picture, scaled: the page shows it at screen size)."""
    from xrad.inference.heatmaps import explain_input
    from xrad.inference.input import prepare_input
    from xrad.inference.readout import input_warnings
    from xrad.inference.scoring import load_scorer

    scorer = load_scorer(artefact_dir, device=device)
    meta = meta_of(scorer)
    spec = meta.input_spec()
    # The model one image at a time (Grad-CAM hooks are per model; torch already uses both cores);
    # preparing and drawing run in parallel when the pool has more than one worker.
    lock = threading.Lock()

    def predict(radiograph: Radiograph, want_heatmap: bool, body_part: str | None) -> dict[str, Any]:
        model_input = prepare_input(radiograph, spec, body_part=body_part, allow_truncated=allow_truncated)
        check_time("scoring")
        with lock:
            result = explain_input(scorer, model_input, heatmap=want_heatmap)
        if want_heatmap:
            check_time("drawing the heatmap")
            result = _at_most(result, heatmap_px)  # a full-size overlay of a large image took seconds
        return {
            "score": result.score,
            "sphere": result.sphere if result.sphere >= 0 else None,
            "heatmap_png": result.overlay_png() if want_heatmap else None,
            "heatmap_on": "original" if result.on_original else "preprocessed",
            "degenerate": result.degenerate,
            "heat_scale": result.heat_scale,
            "mask_warning": result.mask_warning,
            "warnings": input_warnings(
                meta,
                body_part=body_part or "",
                mean=result.statistics[0],
                std=result.statistics[1],
                appearance=result.appearance,
            ),
        }

    return predict, meta


def _at_most(result: Explanation, side: int) -> Explanation:
    """The explanation with its base image and heatmap scaled down so the major axis is at most ``side``."""
    import cv2

    height, width = result.base.shape
    scale = side / max(height, width)
    if scale >= 1:
        return result
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    base = cv2.resize(result.base, size, interpolation=cv2.INTER_AREA)
    heat = cv2.resize(np.ascontiguousarray(result.heat, dtype=np.float32), size, interpolation=cv2.INTER_AREA)
    return dataclasses.replace(result, base=base, heat=heat)


def app_from_artefact(
    artefact_dir: str | Path,
    *,
    device: str = "cpu",
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    allow_truncated: bool = False,
    limits: ServiceLimits | None = None,
) -> FastAPI:
    """The service for one artefact folder (its operating point decides ``flagged``)."""
    limits = limits or ServiceLimits()
    predict, meta = artefact_predictor(
        artefact_dir, device, allow_truncated=allow_truncated, heatmap_px=limits.heatmap_px
    )
    info = {
        "method": meta.method,
        "scorer": meta.scorer_kind,
        "image_size": meta.image_size,
        "artefact_sha256": meta.sha256,
    }
    return create_app(
        predict,
        info=info,
        operating_point=meta.operating_point,
        max_upload_bytes=max_upload_bytes,
        allow_truncated=allow_truncated,
        limits=limits,
        normal_reference=meta.normal_reference,
    )
