"""The ``gan`` config section (Lightning-free: the registry reads it without the training stack).

The variant is the detector's name (``method: dcgan | bigan | alpha_gan | ocgan``): the four share this
section, their scorer and their training stage.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from xrad.config.sections import ADAugment, Check, Config, smooth_check, top_k_checks

VARIANTS = ("dcgan", "bigan", "alpha_gan", "ocgan")  # as xrad.models.gan.GAN_VARIANTS (no torch here)
RECONSTRUCTION_SCORES = ("mse", "l1", "topk")  # as xrad.losses.RECONSTRUCTION_KINDS
# 1 − D(x) | 1 − C(E(x)) | 1 − mean(D, C) (Davletshina's α-GAN score) | masked reconstruction error |
# AnoGAN's (1 − λ)·R + λ·(1 − D)
SCORES = ("discriminator", "code_discriminator", "mean_discriminators", "reconstruction", "residual_mix")


def _no_augment() -> ADAugment:
    return ADAugment(enabled=False)


@dataclass
class GanConfig:
    """Adversarial training of the GAN detectors; defaults are DCGAN's (Radford et al.) where Davletshina et al.
    state nothing (their appendix sizes are not in the text xrad has).

    Networks (:mod:`xrad.models.gan`): latent size ``latent_dim``, ``width`` channels at the first halving
    doubling up to ``max_width``; ``spectral_norm`` on the critics. Optimisation: Adam with betas (0.5, 0.999)
    for each player; ``lr_generator`` (generator + encoder) and ``lr_discriminator`` (image, joint and code
    discriminators) are the two time-scale rates (Heusel et al.: TTUR), ``d_steps`` discriminator updates per
    generator update. ``reconstruction_weight`` is the λ of α-GAN's and the one-class GAN's λ·L_rec
    (``reconstruction_loss``: masked l1 (Rosca et al.) or mse).

    Score: ``discriminator`` 1 − D(x) (BiGAN: D(x, E(x))), ``code_discriminator`` 1 − C(E(x)),
    ``mean_discriminators`` 1 − mean(D(x), C(E(x))) (the α-GAN score of Davletshina et al.), ``reconstruction``
    the masked ``reconstruction_score`` (mse | l1 | topk: mean of the k largest pixel errors, k =
    ``top_k_pixels`` when > 0 — Davletshina et al.'s "top-200" — else the ``top_k_fraction`` of the body part)
    of G(E(x)) — for DCGAN of G(z*), z* found by ``latent_steps`` Adam steps (rate ``latent_lr``) on the
    masked L1 from a fixed prior sample (AnoGAN's search, bounded) — and ``residual_mix`` AnoGAN's
    (1 − ``mix_weight``)·R + ``mix_weight``·(1 − D). Heatmaps are the per-pixel reconstruction error.
    ``smooth`` > 0 (an odd width in pixels) box-smooths that error inside the body part before R aggregates it,
    and in the heatmap (:func:`xrad.losses.smooth_error_map`).
    """

    epochs: int = 25
    batch_size: int = 64
    latent_dim: int = 100
    width: int = 64
    max_width: int = 512
    spectral_norm: bool = False
    joint_hidden: int = 256  # BiGAN's joint discriminator: features of x and of z before they are joined
    code_hidden: int = 750  # α-GAN's code discriminator (Rosca et al.: 3 layers of 750)
    lr_generator: float = 2e-4
    lr_discriminator: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 0.0
    d_steps: int = 1
    reconstruction_weight: float = 1.0
    reconstruction_loss: str = "l1"
    score: str = "discriminator"
    reconstruction_score: str = "mse"
    top_k_pixels: int = 0  # 0: the fraction form; Davletshina et al. use k = 200 pixels
    top_k_fraction: float = 0.05  # of the body part (at most 205 of the 4,096 pixels of a 64-px image)
    smooth: int = 0  # box width (odd, pixels) of the residual smoothing before R; 0: off
    mix_weight: float = 0.1  # AnoGAN's λ
    latent_steps: int = 50
    latent_lr: float = 0.05
    exclude_known_abnormal: bool = True  # a one-class model should not learn the anomalies it is told about
    augment: ADAugment = field(default_factory=_no_augment)

    def checks(self) -> Iterable[Check]:
        return [
            ("epochs", self.epochs >= 0, "must be ≥ 0"),
            ("batch_size", self.batch_size >= 2, "must be ≥ 2 (BatchNorm)"),
            ("latent_dim", self.latent_dim >= 1, "must be ≥ 1"),
            ("width", self.width >= 1, "must be ≥ 1"),
            ("max_width", self.max_width >= self.width, "must be ≥ width"),
            ("joint_hidden", self.joint_hidden >= 1, "must be ≥ 1"),
            ("code_hidden", self.code_hidden >= 1, "must be ≥ 1"),
            ("lr_generator", self.lr_generator > 0, "must be > 0"),
            ("lr_discriminator", self.lr_discriminator > 0, "must be > 0"),
            ("betas", all(0 <= b < 1 for b in self.betas), "must be two numbers in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, "must be ≥ 0"),
            ("d_steps", self.d_steps >= 1, "must be ≥ 1"),
            ("reconstruction_weight", self.reconstruction_weight >= 0, "must be ≥ 0"),
            (
                "reconstruction_loss",
                self.reconstruction_loss in ("l1", "mse"),
                f"must be l1 or mse, got {self.reconstruction_loss!r}",
            ),
            ("score", self.score in SCORES, f"must be one of {SCORES}, got {self.score!r}"),
            (
                "reconstruction_score",
                self.reconstruction_score in RECONSTRUCTION_SCORES,
                f"must be one of {RECONSTRUCTION_SCORES}, got {self.reconstruction_score!r}",
            ),
            *top_k_checks(self.top_k_pixels, self.top_k_fraction),
            smooth_check(self.smooth),
            ("mix_weight", 0 <= self.mix_weight <= 1, "must be in [0, 1]"),
            ("latent_steps", self.latent_steps >= 0, "must be ≥ 0"),
            ("latent_lr", self.latent_lr > 0, "must be > 0"),
        ]


def gan_checks(config: Config) -> Iterable[Check]:
    """Rules across sections: a power-of-two input, and the score must exist for the variant."""
    gan: GanConfig = config.section("gan")
    size = config.data.image_size
    needs_code = gan.score in ("code_discriminator", "mean_discriminators")
    needs_reconstruction = gan.score in ("reconstruction", "residual_mix")
    return [
        (
            "data.image_size",
            size >= 16 and size & (size - 1) == 0,
            f"{size} must be a power of two ≥ 16 for the GAN networks (e.g. --set data.image_size=64)",
        ),
        (
            "gan.score",
            config.method == "alpha_gan" or not needs_code,
            f"{gan.score} needs α-GAN's code discriminator (method alpha_gan), not {config.method}",
        ),
        (
            "gan.latent_steps",
            config.method != "dcgan" or not needs_reconstruction or gan.latent_steps >= 1,
            "must be ≥ 1 for a DCGAN reconstruction score (DCGAN has no encoder: z is searched for)",
        ),
    ]
