"""Lightning glue: loaders, stage modules, resumable fit, and :func:`run_training` (the run folder)."""

from __future__ import annotations

from typing import Any


def run_training(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """See :func:`xrad.training.run.run_training` (imported lazily: it pulls in Lightning)."""
    from xrad.training.run import run_training as _run_training

    return _run_training(*args, **kwargs)


__all__ = ["run_training"]
