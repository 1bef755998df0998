"""The trained-detector artefact: a self-contained folder, loadable without pickle and without Lightning.

Layout::

    ARTEFACT/model.safetensors   every tensor the scorer needs (encoder weights, centres or memory bank)
    ARTEFACT/artefact.json       what the numbers mean: format, method, scorer kind and arguments,
                                 image_size, preprocessing parameters (or null), centres (readable copy),
                                 resolved config, package versions, training-data summary, xrad version,
                                 SHA-256 of model.safetensors

``artefact.json`` is written last, so its presence means the folder is complete; the checksum catches a
weights file swapped or truncated afterwards.
"""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path
from typing import Any

from xrad.errors import DataError
from xrad.utils.atomic import write_bytes, write_json

FORMAT = "xrad-artefact/1"
WEIGHTS = "model.safetensors"
META = "artefact.json"


def package_versions() -> dict[str, str]:
    """Versions of the packages that determine a trained model's numbers (for the record)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("xrad", "torch", "torchvision", "lightning", "numpy", "scikit-learn", "opencv-python-headless",
                 "safetensors", "pandas"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def save_artefact(directory: str | Path, tensors: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write ``tensors`` (name → torch.Tensor) as safetensors and ``meta`` (JSON-able) beside it.

    ``format``, ``xrad_version``, ``versions`` and the weights' ``sha256`` are added to ``meta``.
    Returns the folder.
    """
    import torch
    from safetensors.torch import save

    from xrad import __version__

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # safetensors needs contiguous, non-shared CPU tensors.
    plain = {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}
    for name, t in plain.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"artefact tensor {name!r} is not a tensor")
    blob = save(plain, metadata={"format": FORMAT})
    write_bytes(directory / WEIGHTS, blob)
    record = dict(meta)
    record.update({"format": FORMAT, "xrad_version": __version__, "sha256": hashlib.sha256(blob).hexdigest()})
    record.setdefault("versions", package_versions())
    write_json(directory / META, record)
    return directory


def read_artefact_meta(directory: str | Path) -> dict[str, Any]:
    """Read and check ``artefact.json`` only (cheap; no tensors)."""
    directory = Path(directory)
    meta_path = directory / META
    if not meta_path.is_file():
        raise DataError(f"{directory}: not an xrad artefact (no {META}); point to the `artefact` folder of a "
                        "finished `xrad train` run")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{meta_path}: unreadable artefact metadata ({exc}); re-run `xrad train` to rewrite it") from None
    if meta.get("format") != FORMAT:
        raise DataError(f"{meta_path}: artefact format {meta.get('format')!r} is not {FORMAT!r}; "
                        "use the xrad version that wrote it or re-train")
    return meta


def load_artefact(directory: str | Path, verify: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return ``(tensors, meta)`` of an artefact folder; no pickle is involved (safetensors + JSON)."""
    from safetensors.torch import load

    directory = Path(directory)
    meta = read_artefact_meta(directory)
    weights = directory / WEIGHTS
    if not weights.is_file():
        raise DataError(f"{weights}: artefact weights missing; copy the whole artefact folder")
    blob = weights.read_bytes()
    if verify and meta.get("sha256") and hashlib.sha256(blob).hexdigest() != meta["sha256"]:
        raise DataError(f"{weights}: checksum does not match {META} (corrupt or replaced); copy the artefact again")
    try:
        tensors = load(blob)
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise DataError(f"{weights}: not a readable safetensors file ({exc}); copy the artefact again") from None
    return tensors, meta
