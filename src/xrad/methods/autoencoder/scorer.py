"""Framework-free scorer of the convolutional autoencoder (torch only; no Lightning): masked reconstruction
error (MSE, L1 or the mean of the top-k pixel errors, optionally of the box-smoothed error); its heatmap is
the per-pixel error map the score aggregates (smoothed alike).

Masks: a scorer sees what :func:`~xrad.data.model_input.prepare_eval` returns — image × body-part mask — and
nothing else (that keeps ``forward(images)`` a single-input graph for ONNX and the service). The mask is
therefore recovered as the support of the input, ``images > 0``; training uses the same definition, so a
body-part pixel of intensity exactly 0 is ignored in both (it carries no reconstruction target anyway).
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn

from xrad.losses import masked_error_map, reconstruction_scores
from xrad.methods.base import Scorer
from xrad.models.autoencoder import Autoencoder, UpResBlock, build_autoencoder

__all__ = ["ReconstructionScorer", "autoencoder_args", "autoencoder_from", "input_support"]

_AE = "ae."


def input_support(images: Tensor) -> Tensor:
    """The body-part mask recovered from prepared (masked) images: 1 where the input is non-zero, (B, 1, S, S)."""
    return (images > 0).to(images.dtype)


def autoencoder_args(ae: Autoencoder) -> dict[str, Any]:
    """JSON-able arguments of :func:`xrad.models.autoencoder.build_autoencoder` that rebuild ``ae``."""
    linears = [m for m in ae.encoder.head.modules() if isinstance(m, nn.Linear)]
    stages = [cast(UpResBlock, block) for block in ae.decoder.stages]  # the decoder holds UpResBlocks only
    return {
        "image_size": ae.decoder.image_size,
        "head_dims": [linears[0].in_features] + [m.out_features for m in linears],
        "head_bias": linears[0].bias is not None,
        "in_channels": int(ae.encoder.backbone.in_channels),
        "decode_from": ae.decode_from,
        "channels": [int(block.conv1.out_channels) for block in stages],
    }


def autoencoder_from(state: dict[str, Tensor], args: dict[str, Any]) -> Autoencoder:
    """Rebuild an autoencoder from :func:`autoencoder_args` and its (un-prefixed) state_dict."""
    ae = build_autoencoder(
        int(args["image_size"]),
        head_dims=args["head_dims"],
        bias=bool(args["head_bias"]),
        in_channels=int(args.get("in_channels", 1)),
        decode_from=str(args["decode_from"]),
        channels=args["channels"],
    )
    ae.load_state_dict(state, strict=True)
    return ae


class ReconstructionScorer(Scorer):
    """Masked reconstruction error of a convolutional autoencoder (Davletshina et al.)."""

    kind: ClassVar[str] = "reconstruction"

    def __init__(
        self,
        autoencoder: Autoencoder,
        score_kind: str = "mse",
        top_k_fraction: float = 0.05,
        top_k_pixels: int = 0,
        smooth: int = 0,
    ) -> None:
        super().__init__()
        self.autoencoder = autoencoder
        self.score_kind = str(score_kind)
        self.top_k_fraction = float(top_k_fraction)
        self.top_k_pixels = int(top_k_pixels)
        self.smooth = int(smooth)

    def reconstruct(self, images: Tensor) -> Tensor:
        """The reconstruction (B, 1, S, S) of prepared images."""
        recon: Tensor = self.autoencoder(images)[0]
        return recon

    def score(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """Image scores (B,) from the masked error; no sphere."""
        recon = self.reconstruct(images)
        return reconstruction_scores(
            recon,
            images,
            input_support(images),
            kind=self.score_kind,
            top_k_fraction=self.top_k_fraction,
            top_k_pixels=self.top_k_pixels,
            smooth=self.smooth,
        ), None

    def heatmap(self, images: Tensor) -> Tensor:
        """The per-pixel reconstruction error inside the body part (B, 1, S, S) (absolute for the L1 scores,
        squared otherwise), box-smoothed as the score's when ``smooth`` > 0."""
        with torch.no_grad():
            recon = self.reconstruct(images)
            return masked_error_map(recon, images, input_support(images), kind=self.score_kind, smooth=self.smooth)

    def embed(self, images: Tensor) -> dict[str, Tensor]:
        """The encoder's h (B, 512) and bottleneck z."""
        _, h, z = self.autoencoder(images)
        return {"h": h, "z": z}

    def artefact_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Autoencoder weights (``ae.*``); the architecture and score kind as arguments."""
        tensors = {_AE + k: v for k, v in self.autoencoder.state_dict().items()}
        args = autoencoder_args(self.autoencoder)
        args.update(
            score_kind=self.score_kind,
            top_k_fraction=self.top_k_fraction,
            top_k_pixels=self.top_k_pixels,
            smooth=self.smooth,
        )
        return tensors, args

    @classmethod
    def from_artefact(cls, tensors: dict[str, Tensor], args: dict[str, Any]) -> ReconstructionScorer:
        """Rebuild from an artefact's tensors and scorer arguments."""
        state = {k[len(_AE) :]: v for k, v in tensors.items() if k.startswith(_AE)}
        # Artefacts written before top_k_pixels / smooth existed used the fraction form and no smoothing (0).
        return cls(
            autoencoder_from(state, args),
            args["score_kind"],
            args["top_k_fraction"],
            args.get("top_k_pixels", 0),
            args.get("smooth", 0),
        )
