"""``xrad serve ARTEFACT``: the scoring service (FastAPI + uvicorn) with its upload page.

Binds to 127.0.0.1 unless ``--host`` says otherwise: the service has no authentication, so exposing it
on a network is a deliberate choice (put it behind an authenticating proxy).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

_LOCAL = ("127.0.0.1", "localhost", "::1")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``xrad serve``."""
    parser.add_argument("artefact", type=Path, help="artefact folder written by training (calibrated or not)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port")
    parser.add_argument("--max-upload-mb", type=float, default=20.0, help="largest accepted upload in MiB")
    parser.add_argument("--allow-truncated", action="store_true",
                        help="score truncated files from what decodes (default: refuse them with 422)")
    parser.add_argument("--device", default="cpu", help="torch device for scoring")


def run(args: argparse.Namespace) -> int:
    """Load the artefact and serve it until interrupted."""
    import logging

    import uvicorn

    from xrad.service.app import app_from_artefact

    app = app_from_artefact(args.artefact, device=args.device, allow_truncated=args.allow_truncated,
                            max_upload_bytes=int(args.max_upload_mb * 1024 * 1024))
    if args.host not in _LOCAL:
        print(f"xrad serve: warning: binding {args.host} exposes an unauthenticated service to the network",
              file=sys.stderr)
    # One line per scored upload (sizes, score, time; never names or DICOM tags) next to uvicorn's access log.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    print(f"serving {args.artefact} at http://{args.host}:{args.port}/ (Ctrl-C to stop)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
