"""The ``ae`` config section (Lightning-free: the registry reads it without the training stack)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from xrad.config.sections import ADAugment, Check, Config, smooth_check, top_k_checks


def _no_augment() -> ADAugment:
    return ADAugment(enabled=False)


@dataclass
class AEConfig:
    """The convolutional autoencoder (shared ResNet-18 encoder + mirrored decoder, Davletshina et al.).

    Its training schedule is the ``pretrain`` section (paper: 100 epochs, batch 16, Adam 1e-4, ×0.1 at
    70/90). ``score`` is the image score of the ``autoencoder`` detector: ``mse`` (masked mean squared
    error), ``l1`` (masked mean absolute error), ``topk`` / ``l1_topk`` (mean of the k largest masked squared /
    absolute pixel errors: k = ``top_k_pixels`` when > 0 — Davletshina et al.'s "top-200" —, else the
    ``top_k_fraction`` of the body part). ``smooth`` > 0 (an odd width in pixels) box-smooths the pixel error
    inside the body part before it is aggregated, and in the heatmap (:func:`xrad.losses.smooth_error_map`).

    The bottleneck size is the last entry of ``model.head_dims`` (128 by default) when ``decode_from`` is z,
    the ResNet-18's 512 features when it is h. It has no ``ae`` key of its own: the AE's encoder, head
    included, is the stage 1 of deep_sad_ae, knn_ae and subspace_ae, and Deep SAD's stage 2 builds its new
    head from ``model.head_dims`` (``finetune.transfer_head: false``) — a second key would be a second source
    of truth for the same number.
    """

    decode_from: str = "z"  # z: the head output (model.head_dims[-1]) is the bottleneck (Ruff et al.); h: the 512-d
    decoder_channels: list[int] = field(default_factory=lambda: [256, 128, 64, 64, 32])
    score: str = "mse"
    top_k_fraction: float = 0.05
    top_k_pixels: int = 0  # 0: the fraction form; Davletshina et al. use k = 200 pixels
    smooth: int = 0  # box width (odd, pixels) of the error smoothing before the score; 0: off
    # Ruff et al. pre-train the AE on every training image; a reconstruction *detector* should not learn to
    # reconstruct the anomalies it is told about, so known abnormal rows (semi-label −1) are left out by default.
    exclude_known_abnormal: bool = True
    # The reconstruction target is the augmented image itself, so augmentation only widens what "normal" is.
    augment: ADAugment = field(default_factory=_no_augment)

    def checks(self) -> Iterable[Check]:
        from xrad.losses import RECONSTRUCTION_KINDS  # torch: imported when a config is checked, not listed

        return [
            ("decode_from", self.decode_from in ("z", "h"), f"must be 'z' or 'h', got {self.decode_from!r}"),
            ("score", self.score in RECONSTRUCTION_KINDS, f"must be one of {RECONSTRUCTION_KINDS}, got {self.score!r}"),
            *top_k_checks(self.top_k_pixels, self.top_k_fraction),
            smooth_check(self.smooth),
            (
                "decoder_channels",
                len(self.decoder_channels) == 5 and min(self.decoder_channels) >= 1,
                f"must list 5 positive widths, got {self.decoder_channels}",
            ),
        ]


def image_size_checks(config: Config) -> Iterable[Check]:
    """The decoder upsamples by 2 five times: the network input must be a multiple of 32."""
    return [
        (
            "data.image_size",
            config.data.image_size % 32 == 0,
            f"{config.data.image_size} must be a multiple of 32 for the autoencoder's decoder "
            "(e.g. --set data.image_size=64)",
        )
    ]
