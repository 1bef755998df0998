"""The ``salad`` config section (Lightning-free: the registry reads it without the training stack)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from xrad.config.sections import ADAugment, Check, Config, milestone_checks

NETWORKS = ("resnet18", "conv6")  # as xrad.models.salad.NETWORKS (listed here: no torch at config time)
SCORE_FORMULAS = ("paper", "mean_angle")  # as xrad.losses.SALAD_SCORE_FORMULAS
SCORE_LEVELS = ("image", "patch")


def _augment() -> ADAugment:
    # The authors' only training augmentation is a random horizontal flip (reference-spec §7.2).
    return ADAugment(hflip=0.5, vflip=0.0, brightness=(1.0, 1.0), scale=(1.0, 1.0), rotation_deg=0.0)


@dataclass
class SaladConfig:
    """SALAD (Bozorgtabar et al., MICCAI 2020): an autoencoder with a memory bank of one unit vector per
    training image; defaults are the paper's.

    Training: ``warmup_epochs`` of pre-training (L_rec, plus λ·L_ss when ``warmup_instance``: the paper trains
    the two jointly), then ``rounds`` × ``round_epochs`` of Eq. 3, L = L_rec + λ(L_ss + L_agg). At the start of
    round r the ``min(1, r·prototype_fraction)`` share of bank entries with the lowest neighbourhood entropy are
    the prototypical samples B_ps; each one's neighbourhood is its own slot and its ``neighbours`` +
    (r − 1)·``neighbours_growth`` most cosine-similar bank entries, fixed for the round. The bank is updated
    after every step, m_i ← normalise((1 − t)m_i + t·z_i), t = ``momentum``. ``reconstruction``, ``instance``
    and ``aggregation`` switch the three terms (the ablations: MemDAE has neither latent term); the
    reconstruction loss is the masked MSE (paper) or L1 (authors' code). Known anomalies (semi-label −1) train
    like every image (no label is used) unless ``exclude_known_abnormal`` (MemDAE's all-normal split), and are
    left out of the bank at scoring.

    Score (``level: image``): Eq. 4 over the normal bank entries, the ``k`` nearest (``formula: paper``, scaled
    by N so it lies in [0, 1], same ranking), or the authors' mean of the k smallest angles / π
    (``mean_angle``). ``level: patch`` (ResNet-18 only) scores PatchCore-style on the trained backbone's
    layer2+3 cells instead (``patch_top_k``, ``patch_smooth``, ``patch_memory_size``).
    """

    network: str = "resnet18"  # resnet18 (the paper's MURA setting) | conv6 (NIH: 6-conv encoder/decoder)
    latent_dim: int = 200
    conv_width: int = 16  # conv6: widths conv_width·2^i, 16 … 1024
    decoder_channels: list[int] = field(default_factory=lambda: [256, 128, 64, 64, 32])  # resnet18's decoder
    warmup_epochs: int = 50
    warmup_instance: bool = True
    rounds: int = 10
    round_epochs: int = 50
    prototype_fraction: float = 0.1
    neighbours: int = 10
    neighbours_growth: int = 0
    temperature: float = 0.1
    lam: float = 0.25
    momentum: float = 0.5
    reconstruction: bool = True
    instance: bool = True
    aggregation: bool = True
    reconstruction_loss: str = "mse"  # mse (paper) | l1 (authors' code)
    exclude_known_abnormal: bool = False
    batch_size: int = 16
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 0.0
    milestones: list[float] = field(default_factory=list)  # the paper decays nothing
    lr_gamma: float = 0.1
    k: int = 100
    formula: str = "paper"
    chunk_size: int = 256
    level: str = "image"
    patch_top_k: int = 3
    patch_smooth: int = 3
    patch_memory_size: int = 10_000
    augment: ADAugment = field(default_factory=_augment)

    @property
    def epochs(self) -> int:
        """All epochs of the stage: pre-training then the rounds."""
        return self.warmup_epochs + self.rounds * self.round_epochs

    def round_of(self, epoch: int) -> int:
        """0 during pre-training, r ∈ 1..rounds during round r."""
        if epoch < self.warmup_epochs or self.round_epochs == 0:
            return 0
        return min(self.rounds, 1 + (epoch - self.warmup_epochs) // self.round_epochs)

    def neighbours_in(self, round_: int) -> int:
        """The neighbourhood size (beyond the sample's own slot) of round ``round_`` ≥ 1."""
        return self.neighbours + (round_ - 1) * self.neighbours_growth

    def checks(self) -> Iterable[Check]:
        return [
            ("network", self.network in NETWORKS, f"must be one of {NETWORKS}, got {self.network!r}"),
            ("latent_dim", self.latent_dim >= 2, "must be ≥ 2"),
            ("conv_width", self.conv_width >= 1, "must be ≥ 1"),
            (
                "decoder_channels",
                len(self.decoder_channels) == 5 and min(self.decoder_channels) >= 1,
                f"must list 5 positive widths, got {self.decoder_channels}",
            ),
            ("warmup_epochs", self.warmup_epochs >= 0, "must be ≥ 0"),
            ("rounds", self.rounds >= 0, "must be ≥ 0"),
            ("round_epochs", self.round_epochs >= 0, "must be ≥ 0"),
            ("prototype_fraction", 0 < self.prototype_fraction <= 1, "must be in (0, 1]"),
            ("neighbours", self.neighbours >= 1, "must be ≥ 1"),
            ("neighbours_growth", self.neighbours_growth >= 0, "must be ≥ 0"),
            ("temperature", self.temperature > 0, "must be > 0"),
            ("lam", self.lam >= 0, "must be ≥ 0"),
            ("momentum", 0 <= self.momentum <= 1, "must be in [0, 1]"),
            (
                "reconstruction",
                self.reconstruction or self.instance or self.aggregation,
                "is off together with instance and aggregation: nothing would be trained",
            ),
            (
                "reconstruction_loss",
                self.reconstruction_loss in ("mse", "l1"),
                f"must be mse or l1, got {self.reconstruction_loss!r}",
            ),
            ("batch_size", self.batch_size >= 2, "must be ≥ 2 (BatchNorm)"),
            ("lr", self.lr > 0, "must be > 0"),
            ("betas", all(0 <= b < 1 for b in self.betas) and len(self.betas) == 2, "must be two numbers in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, "must be ≥ 0"),
            ("lr_gamma", self.lr_gamma > 0, "must be > 0"),
            ("k", self.k >= 1, "must be ≥ 1"),
            ("formula", self.formula in SCORE_FORMULAS, f"must be one of {SCORE_FORMULAS}, got {self.formula!r}"),
            ("chunk_size", self.chunk_size >= 1, "must be ≥ 1"),
            ("level", self.level in SCORE_LEVELS, f"must be one of {SCORE_LEVELS}, got {self.level!r}"),
            ("patch_top_k", self.patch_top_k >= 1, "must be ≥ 1"),
            ("patch_smooth", self.patch_smooth >= 1, "must be ≥ 1"),
            ("patch_memory_size", self.patch_memory_size >= 1, "must be ≥ 1"),
            *milestone_checks(self.milestones),
        ]


def salad_checks(config: Config) -> Iterable[Check]:
    """Rules across sections: the network's input size, and the patch score needs the ResNet."""
    salad: SaladConfig = config.section("salad")
    size = config.data.image_size
    multiple = 64 if salad.network == "conv6" else 32
    return [
        (
            "data.image_size",
            size % multiple == 0,
            f"{size} must be a multiple of {multiple} for SALAD's {salad.network} network (e.g. --set "
            f"data.image_size={max(multiple, size // multiple * multiple)})",
        ),
        (
            "salad.level",
            salad.level == "image" or salad.network == "resnet18",
            "patch needs network resnet18 (the patch features are ResNet-18's layer2+3)",
        ),
    ]
