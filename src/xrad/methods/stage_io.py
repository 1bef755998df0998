"""What a finished stage leaves in its folder, and how another run picks it up.

Stage outputs are safetensors files (no pickle) written atomically under ``<run>/<stage>/``; a later
invocation reloads them instead of training again, and ``pretrain.encoder_from`` lets another run (a
benchmark cell, a kNN ablation) load a finished stage 1 instead of training its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from torch import Tensor, nn

from xrad.errors import ConfigError, DataError
from xrad.utils.atomic import write_bytes

ENCODER_FILE = "encoder.safetensors"  # an Encoder's state_dict (stage 1 of every encoder-based detector)
MODEL_FILE = "model.safetensors"  # a final stage's weights (and centres)

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def save_tensors(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> None:
    """Atomically write a safetensors file (stage outputs; no pickle)."""
    from safetensors.torch import save

    write_bytes(path, save({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, metadata=metadata))


def load_tensors(path: Path) -> dict[str, Tensor]:
    """Read a safetensors file written by :func:`save_tensors`."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise DataError(f"{path}: stage output missing; re-run the stage (`xrad train --stage ...`)")
    return load_file(str(path))


def load_finished(source: str, network: ModuleT, filename: str, must_match: str) -> ModuleT:
    """Load ``pretrain.encoder_from``: a run folder (its ``pretrain/<filename>``) or such a file, into
    ``network``; one-line :class:`ConfigError` when it is missing or was trained with other settings."""
    path = Path(source)
    if path.is_dir():
        path = path / "pretrain" / filename
    if not path.is_file():
        raise ConfigError(
            f"pretrain.encoder_from: {source} is neither a run folder with a finished pretrain "
            f"stage nor a {filename} file"
        )
    try:
        network.load_state_dict(load_tensors(path), strict=True)
    except RuntimeError as exc:
        raise ConfigError(
            f"pretrain.encoder_from: {path} was trained with other settings; match {must_match} "
            f"({str(exc).splitlines()[0]})"
        ) from None
    return network
