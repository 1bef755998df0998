"""xrad: semi-supervised anomaly detection on radiographs.

The front door (:mod:`xrad.api`, imported on first use so that ``import xrad`` and ``xrad --help`` stay
light)::

    import xrad
    detector = xrad.Detector.load("runs/default/detector/artefact")
    table = detector.score("my_images/")

The data flow, top to bottom: ``xrad.data`` (I/O, indexing, splits, phantoms, transforms) →
``xrad.preprocess`` (carrier crop, inversion, body-part mask) → ``xrad.models`` (plain ``torch.nn``
networks) → ``xrad.losses`` (pure functions) → ``xrad.methods`` (one module per detector) →
``xrad.evaluation`` (metrics, statistics, plots, reports) → ``xrad.cli`` / ``xrad.service`` / ``xrad.api``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Detector", "__version__", "fit"]

if TYPE_CHECKING:  # pragma: no cover
    from xrad.api import Detector, fit


def __getattr__(name: str) -> Any:
    """``xrad.Detector`` and ``xrad.fit``, imported from :mod:`xrad.api` when first used."""
    if name in ("Detector", "fit"):
        import importlib

        return getattr(importlib.import_module("xrad.api"), name)
    raise AttributeError(f"module 'xrad' has no attribute {name!r}")
