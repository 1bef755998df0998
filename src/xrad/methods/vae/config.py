"""The ``vae`` config section (Lightning-free: the registry reads it without the training stack)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from xrad.config.sections import ADAugment, Check, smooth_check, top_k_checks

# Image scores of the VAE: the reconstruction kinds of xrad.losses plus the latent term and the objective.
VAE_LATENT_SCORES = ("kld", "loss")


def _no_augment() -> ADAugment:
    return ADAugment(enabled=False)


@dataclass
class VAEConfig:
    """The variational autoencoder (Davletshina et al.): the CAE's encoder/decoder with a Gaussian latent.

    Its schedule is the ``pretrain`` section and its latent size the last entry of ``model.head_dims``.
    Training minimises the masked MSE + ``kld_weight`` · KLD / pixels (:func:`xrad.losses.vae_loss`).

    ``score`` is the image score (Table 1 of the paper): ``mse`` / ``l1`` (masked mean error of the
    reconstruction of μ), ``topk`` / ``l1_topk`` (mean of the k largest masked squared / absolute pixel
    errors; k = ``top_k_pixels`` when > 0 — the paper's "top-200" — else the ``top_k_fraction`` of the body
    part), ``kld`` (the KL divergence of the posterior from N(0, I)) or ``loss`` (their combination: the
    training objective per image, masked MSE + ``kld_weight`` · KLD / pixels — the paper names no other
    combination for the VAE; its one mixed score, the mean of two discriminator probabilities, is α-GAN's).
    ``smooth`` > 0 (an odd width in pixels) box-smooths the pixel error inside the body part before the
    reconstruction scores aggregate it, and in the heatmap (:func:`xrad.losses.smooth_error_map`); ``kld`` and
    ``loss`` (the training objective) ignore it.
    """

    decoder_channels: list[int] = field(default_factory=lambda: [256, 128, 64, 64, 32])
    kld_weight: float = 1.0
    score: str = "mse"
    top_k_pixels: int = 200  # Davletshina et al.'s k; 0 switches to the fraction form
    top_k_fraction: float = 0.05
    smooth: int = 0  # box width (odd, pixels) of the error smoothing before the score; 0: off
    # A reconstruction detector should not learn to reconstruct the anomalies it is told about (as ae.*).
    exclude_known_abnormal: bool = True
    augment: ADAugment = field(default_factory=_no_augment)

    def checks(self) -> Iterable[Check]:
        from xrad.losses import RECONSTRUCTION_KINDS  # torch: imported when a config is checked, not listed

        kinds = (*RECONSTRUCTION_KINDS, *VAE_LATENT_SCORES)
        return [
            ("score", self.score in kinds, f"must be one of {kinds}, got {self.score!r}"),
            ("kld_weight", self.kld_weight >= 0, f"must be ≥ 0, got {self.kld_weight}"),
            *top_k_checks(self.top_k_pixels, self.top_k_fraction),
            smooth_check(self.smooth),
            (
                "decoder_channels",
                len(self.decoder_channels) == 5 and min(self.decoder_channels) >= 1,
                f"must list 5 positive widths, got {self.decoder_channels}",
            ),
        ]
