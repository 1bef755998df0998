"""``xrad serve ARTEFACT``: the scoring service (FastAPI + uvicorn) with its upload page.

Binds to 127.0.0.1 unless ``--host`` says otherwise: the service has no authentication, so exposing it
on a network is a deliberate choice (put it behind an authenticating proxy).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from xrad.cli.options import float_at_least, int_at_least, int_in

if TYPE_CHECKING:  # pragma: no cover
    from xrad.service.limits import ServiceLimits

_LOCAL = ("127.0.0.1", "localhost", "::1")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``xrad serve``."""
    parser.add_argument("artefact", type=Path, help="artefact folder written by training (calibrated or not)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: this machine only)")
    parser.add_argument("--port", type=int_in(1, 65535), default=8000, help="TCP port")
    parser.add_argument(
        "--max-upload-mb", type=float_at_least(0.0, strict=True), default=20.0, help="largest accepted upload in MiB"
    )
    parser.add_argument(
        "--allow-truncated",
        action="store_true",
        help="score truncated files from what decodes (default: refuse them with 422)",
    )
    parser.add_argument("--device", default="cpu", help="torch device for scoring")
    load = parser.add_argument_group("load limits (see xrad.service.limits)")
    load.add_argument("--workers", type=int_at_least(1), default=1, help="images scored at the same time")
    load.add_argument(
        "--queue",
        type=int_at_least(0),
        default=0,  # as every default here, ServiceLimits' (not imported: it pulls in FastAPI)
        help="images waiting for a worker; more get 503 with Retry-After (default 0: an image that is "
        "answered at all is answered within ~2x its unloaded time; 1 or more trade that for throughput)",
    )
    load.add_argument(
        "--max-megapixels",
        type=float_at_least(0.0, strict=True),
        default=25.0,
        help="largest image accepted per request, from its header (413 above)",
    )
    load.add_argument(
        "--time-budget",
        type=float_at_least(0.0, strict=True),
        default=30.0,
        help="seconds a request may take once its upload is in, queueing included (504 after)",
    )
    load.add_argument(
        "--upload-timeout",
        type=float_at_least(0.0, strict=True),
        default=60.0,
        help="seconds an upload may take in all (408 after)",
    )
    load.add_argument(
        "--upload-idle",
        type=float_at_least(0.0, strict=True),
        default=10.0,
        help="seconds an upload may pause (408 after)",
    )
    load.add_argument(
        "--heatmap-px", type=int_at_least(16), default=1024, help="largest side of the returned heatmap overlay"
    )


def limits_from_args(args: argparse.Namespace) -> ServiceLimits:
    """The :class:`~xrad.service.limits.ServiceLimits` of the parsed options (their defaults are that
    class's: tests/test_service.py checks that they agree)."""
    from xrad.service.limits import ServiceLimits

    return ServiceLimits(
        workers=args.workers,
        queue=args.queue,
        max_pixels=max(1, int(args.max_megapixels * 1_000_000)),
        time_budget_s=args.time_budget,
        upload_timeout_s=args.upload_timeout,
        upload_idle_s=args.upload_idle,
        heatmap_px=args.heatmap_px,
    )


def run(args: argparse.Namespace) -> int:
    """Load the artefact and serve it until interrupted."""
    import logging

    from xrad.service.app import app_from_artefact
    from xrad.service.limits import uvicorn_server

    _check_device_and_port(args.device, args.host, args.port)
    limits = limits_from_args(args)
    app = app_from_artefact(
        args.artefact,
        device=args.device,
        allow_truncated=args.allow_truncated,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        limits=limits,
    )
    if args.host not in _LOCAL:
        print(
            f"xrad serve: warning: binding {args.host} exposes an unauthenticated service to the network",
            file=sys.stderr,
        )
    # One line per scored upload (sizes, score, time; never names or DICOM tags) next to uvicorn's access log.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    print(f"serving {args.artefact} at http://{args.host}:{args.port}/ (Ctrl-C to stop)")
    uvicorn_server(app, args.host, args.port, limits).run()
    return 0


def _check_device_and_port(device: str, host: str, port: int) -> None:
    """Refuse a malformed --device or a port already in use with one line, before the artefact loads."""
    import socket

    import torch

    from xrad.errors import ConfigError

    try:
        torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"--device {device!r}: {str(exc).splitlines()[0]}; e.g. cpu or cuda:0") from None
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"{host}:{port}: cannot listen there ({exc.strerror}); choose another --port (or --host)"
            ) from None
