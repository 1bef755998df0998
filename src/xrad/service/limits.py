"""What keeps the scoring service responsive under load: bounded scoring, budgets, upload timeouts, quiet logs.

- **Bounded scoring** (:class:`ScoringPool`): decoding and scoring run in a dedicated pool of ``workers``
  threads, off the event loop, so ``/health`` and uploads in progress are never starved. A request that
  cannot start at once waits only when fewer than ``queue`` wait and the work ahead of it (estimated from
  the images' declared sizes) is at most half its own: it is answered within about twice its unloaded
  time, or refused at once with 503 and a ``Retry-After`` header. A large image in progress therefore turns
  small ones away instead of making them wait behind it. ``Retry-After`` is the expected wait for a worker
  plus the turn of the clients refused just before (each a typical job long): told "1 s", fifty refused
  clients would all come back at once, and answering their 503s slows the image being scored.
- **Per-request budgets**: an image declaring more than ``max_pixels`` is refused (413) from its header,
  before decoding. A request still unanswered after ``time_budget_s`` gets 504; the work it started stops
  at the next step boundary (:func:`check_time`, called between preparing, scoring and drawing the
  heatmap) and a request whose time ran out while queued never starts, so an over-budget image cannot keep
  the workers from the others.
- **Upload timeouts**: the body must arrive within ``upload_timeout_s`` and never pause longer than
  ``upload_idle_s`` (408, connection closed): a stalled or trickling client cannot hold a connection and its
  buffer forever. At most ``max_uploads`` bodies are read at once (503 beyond).
- **Quiet**: a client that disconnects is one info line, not a traceback; the access log keeps the path
  without the query string (a ``body_part`` value may carry anything a user typed, a patient name included).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import HTTPException, Request
from starlette.requests import ClientDisconnect

__all__ = [
    "ClientGone",
    "OverTimeBudget",
    "ScoringPool",
    "ServiceLimits",
    "check_time",
    "declared_pixels",
    "hide_query_strings",
    "read_body",
    "uvicorn_server",
]

log = logging.getLogger("xrad.service")
T = TypeVar("T")

# The monotonic time by which the current scoring job must be done (None outside a job).
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("xrad_service_deadline", default=None)


@dataclass(frozen=True)
class ServiceLimits:
    """The service's load limits (``xrad serve`` options of the same names); see the module docstring."""

    workers: int = 1  # 2 cores: torch already uses both for one image
    # No waiting by default: a waiting request's wait plus its own slowed-down scoring broke the "answered
    # within 2x its unloaded time" promise under load (4 of 14 within 2x with 1 place, 13 of 13 with none).
    queue: int = 0
    max_pixels: int = 25_000_000  # a 43x43 cm plate at 0.1 mm is ~18.5 Mpx
    time_budget_s: float = 30.0
    upload_timeout_s: float = 60.0
    upload_idle_s: float = 10.0
    max_uploads: int = 64
    heatmap_px: int = 1024  # the overlay's major axis at most: drawing it at 9 Mpx took longer than scoring

    def __post_init__(self) -> None:
        for name in ("workers", "max_pixels", "max_uploads", "heatmap_px"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ServiceLimits.{name} must be >= 1, got {getattr(self, name)}")
        if self.queue < 0:
            raise ValueError(f"ServiceLimits.queue must be >= 0, got {self.queue}")
        for name in ("time_budget_s", "upload_timeout_s", "upload_idle_s"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"ServiceLimits.{name} must be a finite number > 0, got {value}")


class OverTimeBudget(Exception):
    """Raised inside a scoring job whose request has run out of time (the request is already answered 504)."""


class ClientGone(Exception):
    """The client disconnected before its upload was complete."""


def check_time(step: str) -> None:
    """Stop the current scoring job before ``step`` when its request's time budget is spent.

    Long steps call this at their boundaries; outside a job (``xrad score``, tests) it does nothing."""
    deadline = _DEADLINE.get()
    if deadline is not None and time.monotonic() > deadline:
        raise OverTimeBudget(step)


# A request may wait for at most half its own estimated time: with the slowdown of a busy machine (measured
# ~1.5x on one shared core with 10 clients) it is then still answered within about twice its unloaded time.
_WAIT_SHARE = 0.5
_MAX_RETRY_AFTER_S = 60


class _Job:
    """One admitted request: its estimated cost and when a worker took it (None while queued)."""

    def __init__(self, estimate: float) -> None:
        self.estimate = estimate
        self.started: float | None = None

    def remaining(self, now: float) -> float:
        """Estimated seconds left. A job past its estimate was underestimated (large images cost more per
        pixel than small ones): it is taken to need half as long again as it has run so far."""
        if self.started is None:
            return self.estimate
        elapsed = now - self.started
        return max(self.estimate - elapsed, 0.5 * elapsed)


class ScoringPool:
    """A fixed pool of scoring threads with an admission rule (see the module docstring).

    A request is admitted when a worker is free, or, to wait, when fewer than ``queue`` wait already and
    the work ahead of it (the estimated remaining time of the admitted images, shared by the workers) is
    at most half its own estimated time: it is then answered within about twice its unloaded time.
    Estimates are per megapixel (plus a fixed half megapixel for the per-request overhead), learned
    from the images scored so far.
    """

    def __init__(self, limits: ServiceLimits) -> None:
        self.limits = limits
        self.capacity = limits.workers + limits.queue
        self._jobs: set[_Job] = set()  # running + waiting
        self._lock = threading.Lock()  # jobs are released from the pool's threads
        self._executor = ThreadPoolExecutor(limits.workers, thread_name_prefix="xrad-score")
        self._seconds_per_unit = 0.5  # running mean of seconds / (megapixels + 0.5)
        self._seconds_per_job = 0.5  # running mean of a job's seconds (the turn of one refused client)
        self._refused: deque[float] = deque(maxlen=10_000)  # when recent 503s were sent
        self._last_retry_after = 1.0

    @property
    def admitted(self) -> int:
        """Requests running or waiting for a worker."""
        return len(self._jobs)

    def _units(self, pixels: int) -> float:
        return pixels / 1e6 + 0.5

    def _wait(self, now: float) -> float:
        """Estimated seconds before a worker is free for a new request."""
        return sum(job.remaining(now) for job in self._jobs) / self.limits.workers

    def retry_after(self) -> int:
        """The Retry-After of a 503, in seconds: until a worker is likely free, plus one typical job for each
        client refused within the last advertised Retry-After (about the clients still waiting for a turn,
        when they honour it). Records this refusal."""
        with self._lock:
            now = time.monotonic()
            while self._refused and now - self._refused[0] > self._last_retry_after:
                self._refused.popleft()
            crowd = len(self._refused) * self._seconds_per_job / self.limits.workers
            self._refused.append(now)
            seconds = min(_MAX_RETRY_AFTER_S, max(1, math.ceil(self._wait(now) + crowd)))
            self._last_retry_after = float(seconds)
            return seconds

    def refuse_if_full(self) -> None:
        """503 before the upload is even read when every worker and queue place is taken: a refused upload
        costs the server no receiving, parsing or decoding (which would slow the images being scored)."""
        if len(self._jobs) >= self.capacity:
            raise self._busy()

    def _busy(self) -> HTTPException:
        return HTTPException(
            503,
            "the service is busy (images being scored or queued); retry after the Retry-After seconds",
            headers={"Retry-After": str(self.retry_after()), "Connection": "close"},
        )

    def _admit(self, pixels: int) -> _Job | None:
        with self._lock:
            now = time.monotonic()
            job = _Job(self._seconds_per_unit * self._units(pixels))
            if len(self._jobs) < self.limits.workers or (
                len(self._jobs) < self.capacity and self._wait(now) <= _WAIT_SHARE * job.estimate
            ):
                self._jobs.add(job)
                return job
            return None

    async def run(self, job: Callable[[], T], pixels: int = 0) -> T:
        """Run ``job()`` (an image of ``pixels``, 0 when unknown) in the pool within the time budget: 503
        when it would wait too long, 504 when over time."""
        admitted = self._admit(pixels)
        if admitted is None:
            raise self._busy()
        budget = self.limits.time_budget_s
        context = contextvars.copy_context()
        context.run(_DEADLINE.set, time.monotonic() + budget)
        units = self._units(pixels)

        def timed() -> T:
            admitted.started = time.monotonic()
            return job()

        def release(_: object) -> None:
            with self._lock:
                self._jobs.discard(admitted)
                if admitted.started is not None:
                    seconds = time.monotonic() - admitted.started
                    self._seconds_per_unit = 0.7 * self._seconds_per_unit + 0.3 * seconds / units
                    self._seconds_per_job = 0.7 * self._seconds_per_job + 0.3 * seconds

        # The slot is freed when the thread is really done (or the job is cancelled before it started),
        # not when the request gives up: the number of images in memory stays bounded.
        future = self._executor.submit(context.run, timed)
        future.add_done_callback(release)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), budget)
        except (asyncio.TimeoutError, OverTimeBudget):
            future.cancel()  # never starts if it was still queued
            log.warning("a request exceeded the time budget of %g s", budget)
            raise HTTPException(
                504,
                f"scoring took longer than this service's time budget of {budget:g} s; send a smaller image "
                "or retry when the service is less busy",
            ) from None

    def shutdown(self) -> None:
        """Stop the threads (queued jobs are dropped)."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def declared_pixels(data: bytes) -> int:
    """The pixel count an image's header declares (0 when it cannot be read: decoding will say why).

    Header only (Pillow opens lazily; DICOM stops before the pixel data), cheap enough for the event loop."""
    import io

    try:
        if data[128:132] == b"DICM":
            import pydicom

            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            return int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0)
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            return int(image.size[0]) * int(image.size[1])
    except Exception:  # any damaged header: the decoder's one-line reason comes later
        return 0


class UploadGate:
    """Counts bodies being received, so a flood of slow uploads is refused (503) instead of buffered."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0


async def read_body(request: Request, limit: int, limits: ServiceLimits, gate: UploadGate) -> bytes:
    """The request body within the size limit (413), the upload timeouts (408) and the upload count (503).

    A client disconnect raises :class:`ClientGone` (answered quietly by the app)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(
            413,
            f"upload is {int(declared)} bytes, above the limit of {limit} bytes; "
            "send a smaller image or raise --max-upload-mb",
        )
    if gate.active >= gate.limit:
        raise HTTPException(
            503,
            f"the service is receiving {gate.active} uploads already; retry shortly",
            headers={"Retry-After": "2"},
        )
    gate.active += 1
    try:
        return await _receive(request, limit, limits)
    finally:
        gate.active -= 1


async def _receive(request: Request, limit: int, limits: ServiceLimits) -> bytes:
    chunks: list[bytes] = []
    total = 0
    deadline = time.monotonic() + limits.upload_timeout_s
    stream = request.stream().__aiter__()
    while True:
        wait = min(limits.upload_idle_s, deadline - time.monotonic())
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), max(wait, 0.0))
        except StopAsyncIteration:
            return b"".join(chunks)
        except asyncio.TimeoutError:
            overall = time.monotonic() >= deadline
            raise HTTPException(
                408,
                f"the upload {'did not complete within' if overall else 'paused for more than'} "
                f"{limits.upload_timeout_s if overall else limits.upload_idle_s:g} s; send the file again",
                headers={"Connection": "close"},
            ) from None
        except ClientDisconnect:
            raise ClientGone() from None
        total += len(chunk)
        if total > limit:
            raise HTTPException(
                413, f"upload is above the limit of {limit} bytes; send a smaller image or raise --max-upload-mb"
            )
        chunks.append(chunk)


class _NoQueryString(logging.Filter):
    """Drops the query string from uvicorn's access-log lines (its 3rd argument is the path with query)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], args[2].split("?", 1)[0], *args[3:])
        return True


def hide_query_strings(logger_name: str = "uvicorn.access") -> None:
    """Install the query-string filter on the access logger (idempotent)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, _NoQueryString) for f in logger.filters):
        logger.addFilter(_NoQueryString())


def uvicorn_server(app: Any, host: str, port: int, limits: ServiceLimits, log_level: str = "info") -> Any:
    """The uvicorn server ``xrad serve`` runs: access log without query strings, connections bounded.

    Connections beyond the admitted uploads plus the scoring capacity (and room for ``/health``) get
    uvicorn's own 503 before any work is done; idle keep-alive connections close after 5 s."""
    import uvicorn

    connections = limits.max_uploads + limits.workers + limits.queue + 32
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, limit_concurrency=connections, timeout_keep_alive=5
    )
    hide_query_strings()  # after Config, which (re)configures the loggers
    return uvicorn.Server(config)
