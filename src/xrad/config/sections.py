"""The config sections every detector shares, as typed dataclasses with the papers' defaults.

Each section may define ``checks()``: (key, ok, message) triples for rules that types alone cannot express;
the loader runs them when a config is read and reports the first failure as one line naming the full key
(``finetune.gamma must be in [0, 1]``). Floats are checked finite for every section by the loader itself.
A detector's own sections (``ae``, ``supervised`` ...) are declared in its module and listed in its
registry row (:mod:`xrad.methods.registry`), never registered as an import side effect.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from xrad.config.sizes import input_size_problem

Check = tuple[str, bool, str]  # (key relative to the section, rule holds, what the rule is)

# The local corruptions of xrad.training.corruptions, by name (listed here so configs are checked without it).
CORRUPTION_KINDS = (
    "bright_bar",
    "screws",
    "gap_across_bone",
    "step_across_bone",
    "cut_paste",
    "blur_scar",
    "density_spot",
    "cortical_bump",
)


def milestone_checks(milestones: list[float]) -> list[Check]:
    """The rule shared by every schedule: milestones are fractions of the epochs in (0, 1]."""
    return [("milestones", all(0 < m <= 1 for m in milestones), "must be fractions of the epochs in (0, 1]")]


def top_k_checks(top_k_pixels: int, top_k_fraction: float) -> list[Check]:
    """The rules of the reconstruction detectors' top-k keys (ae, vae, gan; :func:`xrad.losses.reconstruction_scores`):
    a fixed pixel count (0: use the fraction) and the fraction of the body part."""
    return [
        ("top_k_pixels", top_k_pixels >= 0, f"must be ≥ 0 (0: the fraction form), got {top_k_pixels}"),
        ("top_k_fraction", 0.0 < top_k_fraction <= 1.0, f"must be in (0, 1], got {top_k_fraction}"),
    ]


def is_box_width(smooth: int) -> bool:
    """The rule of the reconstruction detectors' ``smooth`` (:func:`xrad.losses.smooth_error_map`): a box
    centred on a pixel has an odd width, and 0 switches the smoothing off."""
    return smooth == 0 or (smooth > 0 and smooth % 2 == 1)


def smooth_check(smooth: int) -> Check:
    """The config check of ``smooth`` (:func:`is_box_width`)."""
    return ("smooth", is_box_width(smooth), f"must be 0 (off) or an odd box width in pixels, got {smooth}")


@dataclass
class DataConfig:
    """How images are fed: size of the square network input, batch sizes, loader workers.

    ``image_size`` is the *network input* size (the bank resizes the cache to it); the size of the
    preprocessed cache is ``xrad preprocess --size`` / ``xrad run --cache-px`` (:mod:`xrad.config.sizes`).
    """

    image_size: int = 512
    eval_batch_size: int = 64
    # The bank is in memory as uint8 tensors, so worker processes only pay off when collation is the
    # bottleneck (large images); 0 is fastest on 2 cores for 64-128 px.
    workers: int = 2
    decode_workers: int = 2  # threads decoding the PNG cache into the bank (once; memoised on disk)
    cache_dir: str | None = None  # on-disk memo of decoded image banks (None: <run_dir>/bank_cache)

    def checks(self) -> Iterable[Check]:
        return [
            ("image_size", input_size_problem(self.image_size) is None, str(input_size_problem(self.image_size))),
            ("eval_batch_size", self.eval_batch_size >= 1, "must be ≥ 1"),
            ("workers", self.workers >= 0, "must be ≥ 0"),
            ("decode_workers", self.decode_workers >= 1, "must be ≥ 1"),
        ]


@dataclass
class ModelConfig:
    """The encoder shared by both stages: ResNet-18 (1 channel) + MLP head."""

    head_dims: list[int] = field(default_factory=lambda: [512, 256, 128])
    head_bias: bool = True  # the authors' head keeps its biases; Deep SAD prefers bias-free nets

    def checks(self) -> Iterable[Check]:
        return [
            (
                "head_dims",
                len(self.head_dims) >= 2 and self.head_dims[0] == 512,
                "must start with 512 (the ResNet-18 feature size) and have ≥ 2 entries",
            )
        ]


@dataclass(frozen=True)
class ADAugment:
    """Anomaly-detection step augmentations (Fig. 5, left); defaults are the paper's.

    ``hflip``/``vflip`` are probabilities, ``brightness`` and ``scale`` the ranges of uniform factors
    (scale > 1 zooms in, about the image centre), ``rotation_deg`` the half-width of a uniform (real-valued)
    rotation angle. ``enabled`` switches the whole step off (the transforms themselves ignore it).
    """

    enabled: bool = True
    hflip: float = 0.5
    vflip: float = 0.5
    brightness: tuple[float, float] = (0.8, 1.2)
    scale: tuple[float, float] = (0.8, 1.2)
    rotation_deg: float = 20.0


@dataclass(frozen=True)
class ContrastiveAugment:
    """Contrastive-view augmentations (Fig. 5, right); defaults are the paper's.

    ``crop_scale`` is the range of the crop's area as a fraction of the image, ``crop_ratio`` the range of
    its width/height (sampled log-uniformly). With probability ``jitter_p`` a brightness factor
    U[1 - brightness, 1 + brightness] and then a contrast factor U[1 - contrast, 1 + contrast] are applied.
    With probability ``blur_p`` a Gaussian blur with sigma U[blur_sigma] is applied; ``blur_sigma`` is in
    pixels of a ``blur_reference_px``-pixel image (the paper's 512) and scales with the working size, so a
    64-px run blurs the same anatomy as the paper's 512-px one (unscaled, sigma 2 at 64 px is sigma 16 at
    512 px: it wipes out the one-pixel detail — screws, fracture lines — that anomalies are made of).
    """

    hflip: float = 0.5
    scale: tuple[float, float] = (0.8, 1.2)
    rotation_deg: float = 45.0
    crop_scale: tuple[float, float] = (0.4, 1.0)
    crop_ratio: tuple[float, float] = (0.8, 1.25)
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_reference_px: int = 512

    def checks(self) -> Iterable[Check]:
        return [
            (
                "blur_reference_px",
                self.blur_reference_px >= 1,
                "must be ≥ 1 (the image size, in pixels, at which blur_sigma is given; the paper's is 512)",
            )
        ]


@dataclass
class PretrainConfig:
    """Stage 1, contrastive pre-training (Eq. 1). Paper: 100 epochs, batch 24, Adam 1e-3, ×0.1 at 70/90."""

    epochs: int = 100
    batch_size: int = 24
    lr: float = 1e-3
    weight_decay: float = 1e-6  # Adam's coupled L2, as in the paper
    milestones: list[float] = field(default_factory=lambda: [0.7, 0.9])  # fractions of `epochs`
    lr_gamma: float = 0.1
    temperature: float = 0.5
    pretext: str = "simclr"  # simclr (InfoNCE, Eq. 1) | supcon (supervised contrastive, ref. [36])
    # Reuse a finished stage 1 instead of training: a run folder or an encoder .safetensors file.
    encoder_from: str | None = None
    augment: ContrastiveAugment = field(default_factory=ContrastiveAugment)

    def checks(self) -> Iterable[Check]:
        return [
            ("epochs", self.epochs >= 0, "must be ≥ 0"),
            ("batch_size", self.batch_size >= 2, "must be ≥ 2 (InfoNCE needs negatives)"),
            ("lr", self.lr > 0, "must be > 0"),
            ("weight_decay", self.weight_decay >= 0, "must be ≥ 0"),
            ("lr_gamma", self.lr_gamma > 0, "must be > 0"),
            ("temperature", self.temperature > 0, "must be > 0"),
            (
                "pretext",
                self.pretext in ("simclr", "supcon"),
                f"must be one of ('simclr', 'supcon'), got {self.pretext!r}",
            ),
            *milestone_checks(self.milestones),
            *(("augment." + key, ok, message) for key, ok, message in self.augment.checks()),
        ]


@dataclass
class FinetuneConfig:
    """Stage 2, multi-sphere Deep SAD "MAD" (Eq. 2). Paper: 150 epochs, batch 16, Adam 1e-4, ×0.1 at 90/140."""

    epochs: int = 150
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 1e-6  # the λ term of Eq. 2
    milestones: list[float] = field(default_factory=lambda: [0.6, 140 / 150])
    lr_gamma: float = 0.1
    n_spheres: int = 100  # N_s; 1 = the uni-modal Deep SAD variant
    gamma: float = 0.05  # prune a centre holding fewer than gamma × the largest count
    eta: float = 1.0
    eps: float = 1e-6
    prune_warmup: int = 0  # epochs before pruning starts
    center_min_abs: float = 0.1  # Deep SAD's guard: centre coordinates pushed away from 0
    # The authors re-initialised the head for stage 2; we transfer the whole encoder (backbone and
    # head) because the head is what k-means and the spheres live in: a random head maps the
    # pre-trained features to an arbitrary 128-d space and throws away what stage 1 learnt there.
    transfer_head: bool = True
    augment: ADAugment = field(default_factory=ADAugment)
    # Where the spheres live: "image" (the paper: one pooled embedding per image) or "patch" (one embedding
    # per feature-map cell, synthetic local corruptions of the normal images as known anomalies, score = mean
    # of the top_k largest cell distances; xrad.methods.multisphere.patch_stage).
    level: str = "image"
    top_k: int = 1
    corruptions: list[str] = field(
        default_factory=lambda: ["bright_bar", "screws", "gap_across_bone", "step_across_bone"]
    )
    cell_fraction: float = 0.05

    def checks(self) -> Iterable[Check]:
        return [
            ("epochs", self.epochs >= 0, "must be ≥ 0"),
            ("batch_size", self.batch_size >= 2, "must be ≥ 2 (BatchNorm in train mode)"),
            ("lr", self.lr > 0, "must be > 0"),
            ("weight_decay", self.weight_decay >= 0, "must be ≥ 0"),
            ("lr_gamma", self.lr_gamma > 0, "must be > 0"),
            ("n_spheres", self.n_spheres >= 1, "must be ≥ 1"),
            ("gamma", 0 <= self.gamma <= 1, "must be in [0, 1]"),
            ("eta", self.eta > 0, "must be > 0"),
            ("eps", self.eps > 0, "must be > 0"),
            ("prune_warmup", self.prune_warmup >= 0, "must be ≥ 0"),
            ("center_min_abs", self.center_min_abs >= 0, "must be ≥ 0"),
            ("level", self.level in ("image", "patch"), f"must be image or patch, got {self.level!r}"),
            ("top_k", self.top_k >= 1, "must be ≥ 1"),
            ("cell_fraction", 0 < self.cell_fraction < 1, "must be in (0, 1)"),
            (
                "corruptions",
                set(self.corruptions) <= set(CORRUPTION_KINDS),
                f"must list corruption kinds of {CORRUPTION_KINDS} (or none: no synthetic anomalies)",
            ),
            *milestone_checks(self.milestones),
        ]


@dataclass
class KnnConfig:
    """kNN ablation on stage-1 embeddings: mean distance to the k nearest normal train embeddings."""

    k: int = 100
    chunk_size: int = 1024
    feature: str = "h"  # h (512-d, before the head, as the authors) | z (128-d head output)

    def checks(self) -> Iterable[Check]:
        return [
            ("k", self.k >= 1, "must be ≥ 1"),
            ("chunk_size", self.chunk_size >= 1, "must be ≥ 1"),
            ("feature", self.feature in ("h", "z"), f"must be one of ('h', 'z'), got {self.feature!r}"),
        ]


@dataclass
class TrainerConfig:
    """Passed straight to ``lightning.Trainer``: devices, precision and distribution are Lightning's."""

    accelerator: str = "auto"
    devices: Any = "auto"
    strategy: str = "auto"
    precision: str = "32-true"
    num_nodes: int = 1
    log_every_n_steps: int = 10

    def checks(self) -> Iterable[Check]:
        return [
            ("num_nodes", self.num_nodes >= 1, "must be ≥ 1"),
            ("log_every_n_steps", self.log_every_n_steps >= 1, "must be ≥ 1"),
        ]


@dataclass
class Config:
    """A whole run: method, seed, the shared sections and the detector's own ones (``extra``)."""

    method: str = "self_taught"
    seed: int = 0
    deterministic: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    knn: KnnConfig = field(default_factory=KnnConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    # The detector's own sections (declared in its registry row), by name, validated with their dataclasses.
    extra: dict[str, Any] = field(default_factory=dict)

    def section(self, name: str) -> Any:
        """A shared or detector section by name (a detector section not in the YAML has its defaults)."""
        if name in SHARED_SECTIONS:
            return getattr(self, name)
        if name in self.extra:
            return self.extra[name]
        declared = getattr(self, "declared_sections", {})  # set by the loader: the detector's sections
        if name in declared:
            return declared[name]()
        from xrad.errors import ConfigError

        raise ConfigError(f"config has no section {name!r} (method {self.method!r})")

    def checks(self) -> Iterable[Check]:
        return [("seed", self.seed >= 0, "must be ≥ 0")]


SHARED_SECTIONS = ("data", "model", "pretrain", "finetune", "knn", "trainer")
