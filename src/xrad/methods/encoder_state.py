"""An :class:`~xrad.models.encoder.Encoder` inside an artefact: its weights under a prefix, and the
JSON-able arguments that rebuild it (shared by the scorers that embed with one: spheres, kNN)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from xrad.models.encoder import Encoder, build_encoder

PREFIX = "encoder."


def encoder_args(encoder: Encoder) -> dict[str, Any]:
    """The arguments of :func:`~xrad.models.encoder.build_encoder` that rebuild ``encoder``."""
    linears = [m for m in encoder.head.modules() if isinstance(m, nn.Linear)]
    dims = [linears[0].in_features] + [m.out_features for m in linears]
    return {"head_dims": dims, "head_bias": linears[0].bias is not None, "in_channels": 1}


def encoder_tensors(encoder: Encoder) -> dict[str, Tensor]:
    """The encoder's state_dict under :data:`PREFIX`."""
    return {PREFIX + k: v for k, v in encoder.state_dict().items()}


def encoder_from(tensors: dict[str, Tensor], args: dict[str, Any]) -> Encoder:
    """Rebuild an encoder from an artefact's tensors (those under :data:`PREFIX`) and :func:`encoder_args`."""
    encoder = build_encoder(
        args["head_dims"], bias=bool(args["head_bias"]), in_channels=int(args.get("in_channels", 1))
    )
    state = {k[len(PREFIX) :]: v for k, v in tensors.items() if k.startswith(PREFIX)}
    encoder.load_state_dict(state, strict=True)
    return encoder
