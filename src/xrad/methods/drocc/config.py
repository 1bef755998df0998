"""The ``drocc`` config section (Lightning-free: the registry reads it without the training stack)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from xrad.config.sections import ADAugment, Check, milestone_checks


@dataclass
class DroccConfig:
    """DROCC (Goyal et al., ICML 2020; reference trainer: microsoft/EdgeML, reference-spec §8.1).

    A ResNet-18 with one "normality" logit (normal = 1) is trained with BCE on the training images; after
    ``only_ce_epochs`` each batch also gets adversarial negatives: from x + noise, ``ascent_num_steps`` steps
    of normalised gradient ascent (step ``ascent_step_size``) on BCE(logit(x'), 0) — the points the classifier
    still calls normal — each step followed by the projection of h = x' − x onto the annulus
    ``radius`` ≤ ‖h‖₂ ≤ ``gamma``·``radius`` (γ ≥ 1; norms are over the whole image, in [0, 1] intensities).
    Loss = BCE + ``lam``·BCE(logit(x'), 0). Score = −logit (higher = more abnormal).

    ``perturb_inside_mask``: the perturbation lives on the body-part pixels only (masked inputs are 0
    outside; noise there would be a give-away the classifier learns instead of the anatomy).
    ``use_known_anomalies``: the known anomalies (semi-label −1) join the training rows as labelled negatives
    (semi-supervised DROCC); otherwise only the normal rows train (the one-class setting of the paper).
    ``only_ce_epochs`` > 0 only makes sense with known anomalies: on normal images alone plain BCE is
    minimised by a constant (the authors' 5-epoch warm-up did exactly that, reference-spec §8.2).

    ``level: patch`` (:class:`~xrad.methods.drocc.scorer.DroccPatchScorer`): the linear head becomes a 1×1
    convolution on the layer2+layer3 map (:func:`xrad.models.patch.patch_features`, stride 8), one normality
    logit per cell; the BCE terms (and the ascent) average over the body cells, so every cell is a DROCC
    classifier; an image scores the mean of its ``top_k`` largest cell scores softplus(−logit) = −log P(normal).
    """

    epochs: int = 65
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-6
    milestones: list[float] = field(default_factory=lambda: [25 / 65, 50 / 65])
    lr_gamma: float = 0.1
    radius: float = 128.0
    gamma: float = 2.0
    ascent_step_size: float = 0.001
    ascent_num_steps: int = 50
    lam: float = 1.0
    only_ce_epochs: int = 0
    init_noise_std: float = 1.0  # x' starts at x + N(0, σ²) (the reference's σ = 1), projected at once
    perturb_inside_mask: bool = True
    use_known_anomalies: bool = False
    augment: ADAugment = field(default_factory=ADAugment)
    level: str = "image"
    top_k: int = 3

    def checks(self) -> Iterable[Check]:
        return [
            ("epochs", self.epochs >= 0, "must be ≥ 0"),
            ("batch_size", self.batch_size >= 2, "must be ≥ 2 (BatchNorm)"),
            ("lr", self.lr > 0, "must be > 0"),
            ("weight_decay", self.weight_decay >= 0, "must be ≥ 0"),
            ("lr_gamma", self.lr_gamma > 0, "must be > 0"),
            ("radius", self.radius > 0, f"must be > 0, got {self.radius}"),
            ("gamma", self.gamma >= 1, f"must be ≥ 1 (the annulus is radius ≤ ‖h‖ ≤ gamma·radius), got {self.gamma}"),
            ("ascent_step_size", self.ascent_step_size >= 0, "must be ≥ 0"),
            ("ascent_num_steps", self.ascent_num_steps >= 0, "must be ≥ 0"),
            ("lam", self.lam >= 0, "must be ≥ 0"),
            ("only_ce_epochs", self.only_ce_epochs >= 0, "must be ≥ 0"),
            ("init_noise_std", self.init_noise_std > 0, "must be > 0"),
            ("level", self.level in ("image", "patch"), f"must be image or patch, got {self.level!r}"),
            ("top_k", self.top_k >= 1, "must be ≥ 1"),
            *milestone_checks(self.milestones),
        ]


@dataclass
class DroccCellsConfig:
    """DROCC on the cells of a trained backbone (``drocc_synthetic``): the one-class classifier of the DROCC
    paper's tabular experiments, an MLP, on feature vectors instead of pixels.

    The normal vectors are a seeded sample of at most ``max_patches`` body cells (layer2+layer3 map,
    :func:`xrad.models.patch.patch_features`) of the normal training images, standardised per channel (the
    mean and s.d. are stored with the head). An MLP ``384 → hidden → 1`` gives a normality logit (normal = 1);
    each batch gets adversarial negatives z' = z + h, h searched by ``ascent_num_steps`` normalised ascent
    steps on BCE(logit(z'), 0) and projected onto the annulus r ≤ ‖h‖₂ ≤ ``gamma``·r after every step, with
    r = ``radius`` × the median distance of a normal vector to its nearest other one (so r follows the
    features' own spacing, as the paper tunes r to the data) and steps of ``ascent_step_size``·r.
    Loss = BCE(normal, 1) + ``lam``·BCE(z', 0). A cell scores softplus(−logit), an image the mean of its
    ``top_k`` largest cells. The backbone is frozen: DROCC decides only where normal cells end.
    """

    epochs: int = 20
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-6
    hidden: int = 128
    radius: float = 1.0
    gamma: float = 2.0
    ascent_step_size: float = 0.1
    ascent_num_steps: int = 5
    lam: float = 1.0
    max_patches: int = 20_000
    top_k: int = 3

    def checks(self) -> Iterable[Check]:
        return [
            ("epochs", self.epochs >= 0, "must be ≥ 0"),
            ("batch_size", self.batch_size >= 2, "must be ≥ 2"),
            ("lr", self.lr > 0, "must be > 0"),
            ("weight_decay", self.weight_decay >= 0, "must be ≥ 0"),
            ("hidden", self.hidden >= 1, "must be ≥ 1"),
            ("radius", self.radius > 0, f"must be > 0, got {self.radius}"),
            ("gamma", self.gamma >= 1, f"must be ≥ 1 (the annulus is r ≤ ‖h‖ ≤ gamma·r), got {self.gamma}"),
            ("ascent_step_size", self.ascent_step_size >= 0, "must be ≥ 0"),
            ("ascent_num_steps", self.ascent_num_steps >= 0, "must be ≥ 0"),
            ("lam", self.lam >= 0, "must be ≥ 0"),
            ("max_patches", self.max_patches >= 2, "must be ≥ 2"),
            ("top_k", self.top_k >= 1, "must be ≥ 1"),
        ]
