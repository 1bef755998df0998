"""Every detector xrad ships, one row each: its stages, its config sections, its scorer.

A detector is a sequence of named stages; each stage is declared once as a :class:`StageSpec` (the module
that trains it, the file it leaves, the config sections that decide its output, its own config sections)
and reused by the detectors that share it — the self-taught detector and the kNN ablation both start with
:data:`CONTRASTIVE`. Everything else is derived from the rows: the config sections a YAML may hold
(:func:`load_config`), the scorer class an artefact names (:func:`get_scorer_class`), the stages
``xrad train --stage`` offers (:func:`stage_names`) and which stage 1 two benchmark cells can share
(:func:`shared_stage_key`).

Adding a detector: its module (stage + scorer + config section), its YAML, one row in :data:`DETECTORS`
(and a :class:`StageSpec` for a new kind of stage). ``tests/test_all_methods.py`` then trains, scores,
saves and reloads it.

This module is light on purpose — dataclasses and strings only, no torch — so ``xrad --help`` and config
loading stay fast; stage and scorer modules are imported when used (:meth:`StageSpec.implementation`,
:func:`get_scorer_class`). Scorer modules never import Lightning: ``xrad score`` and the service load them
without the training stack.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xrad.config import Config, build_config, config_to_dict, read_config_source
from xrad.config.loader import apply_overrides
from xrad.config.sections import Check
from xrad.errors import ConfigError
from xrad.methods.autoencoder.config import AEConfig, image_size_checks
from xrad.methods.drocc.config import DroccCellsConfig, DroccConfig
from xrad.methods.gan.config import GanConfig, gan_checks
from xrad.methods.imagenet.config import ImageNetConfig
from xrad.methods.joint.config import JointConfig
from xrad.methods.moco.config import MocoConfig
from xrad.methods.salad.config import SaladConfig, salad_checks
from xrad.methods.subspace.config import SubspaceConfig, patch_level_checks
from xrad.methods.supervised.config import SupervisedConfig
from xrad.methods.synthetic.config import SyntheticConfig
from xrad.methods.synthetic.config import image_size_checks as patch_size_checks
from xrad.methods.vae.config import VAEConfig

if TYPE_CHECKING:  # pragma: no cover
    from xrad.methods.base import Scorer

_SHARED_READS = ("seed", "data", "model", "pretrain")


@dataclass(frozen=True)
class ScorerRef:
    """A scorer class by name: ``kind`` (stored in ``artefact.json``) and ``module:Class`` (torch only)."""

    kind: str
    path: str


@dataclass(frozen=True)
class StageSpec:
    """One kind of stage.

    ``module`` implements :class:`~xrad.methods.base.Stage` (``run``/``load``; Lightning side). ``output``
    is the file it leaves under ``<run>/<stage>/`` — what ``pretrain.encoder_from`` points another run at.
    ``reads`` are the config keys that decide that output: two runs whose ``reads`` agree (on the same
    split) train the same stage, so a benchmark trains a ``shareable`` stage once. ``schedule`` is the section
    holding its epochs; ``sections`` its own config sections; ``checks`` rules across sections.
    """

    kind: str
    module: str
    output: str
    reads: tuple[str, ...] = _SHARED_READS
    schedule: str | None = None
    shareable: bool = False
    sections: Mapping[str, type] = field(default_factory=dict)
    checks: Callable[[Config], Iterable[Check]] | None = None

    def implementation(self) -> Any:
        """The stage module (imports Lightning)."""
        return importlib.import_module(self.module)


@dataclass(frozen=True)
class Detector:
    """One registry row: a detector's name, its stages in order and the scorers it can produce."""

    name: str
    stages: tuple[tuple[str, StageSpec], ...]
    scorers: tuple[ScorerRef, ...]  # the scorers its artefacts may name (config options choose among them)
    summary: str

    @property
    def stage_names(self) -> tuple[str, ...]:
        """The stage names in training order."""
        return tuple(name for name, _ in self.stages)

    @property
    def sections(self) -> dict[str, type]:
        """The config sections of its stages (beyond the shared ones)."""
        out: dict[str, type] = {}
        for _, spec in self.stages:
            out.update(spec.sections)
        return out

    def checks(self, config: Config) -> list[Check]:
        """Its stages' rules across sections."""
        return [check for _, spec in self.stages if spec.checks for check in spec.checks(config)]


# ------------------------------------------------------------------------------------------- stages
CONTRASTIVE = StageSpec(
    "contrastive", "xrad.methods.contrastive.stage", "encoder.safetensors", schedule="pretrain", shareable=True
)
AUTOENCODER = StageSpec(
    "autoencoder",
    "xrad.methods.autoencoder.stage",
    "autoencoder.safetensors",
    reads=(*_SHARED_READS, "ae"),
    schedule="pretrain",
    shareable=True,
    sections={"ae": AEConfig},
    checks=image_size_checks,
)
VAE_STAGE = StageSpec(
    "vae",
    "xrad.methods.vae.stage",
    "vae.safetensors",
    reads=(*_SHARED_READS, "vae"),
    schedule="pretrain",
    sections={"vae": VAEConfig},
    checks=image_size_checks,  # the same decoder: a multiple of 32
)
IMAGENET = StageSpec(
    "imagenet",
    "xrad.methods.imagenet.stage",
    "encoder.safetensors",
    reads=("seed", "model", "imagenet"),
    sections={"imagenet": ImageNetConfig},
)
MULTISPHERE = StageSpec("multisphere", "xrad.methods.multisphere.stage", "model.safetensors", schedule="finetune")
KNN_MEMORY = StageSpec("knn_memory", "xrad.methods.knn.stage", "memory.safetensors")
SUPERVISED = StageSpec(
    "supervised",
    "xrad.methods.supervised.stage",
    "model.safetensors",
    schedule="supervised",
    sections={"supervised": SupervisedConfig},
)

SYNTHETIC = StageSpec(
    "synthetic",
    "xrad.methods.synthetic.stage",
    "model.safetensors",
    schedule="synthetic",
    sections={"synthetic": SyntheticConfig},
    checks=patch_size_checks,
)

SALAD_STAGE = StageSpec(
    "salad",
    "xrad.methods.salad.stage",
    "model.safetensors",
    reads=(*_SHARED_READS, "salad"),
    schedule="salad",
    sections={"salad": SaladConfig},
    checks=salad_checks,
)

GAN_STAGE = StageSpec(
    "gan",
    "xrad.methods.gan.stage",
    "model.safetensors",
    reads=(*_SHARED_READS, "gan"),
    schedule="gan",
    sections={"gan": GanConfig},
    checks=gan_checks,
)
SUBSPACE = StageSpec(
    "subspace", "xrad.methods.subspace.stage", "subspace.safetensors", sections={"subspace": SubspaceConfig}
)
SUBSPACE_OF_CELLS = replace(SUBSPACE, checks=patch_level_checks)  # after a stage that yields a backbone only
DROCC_STAGE = StageSpec(
    "drocc", "xrad.methods.drocc.stage", "model.safetensors", schedule="drocc", sections={"drocc": DroccConfig}
)
DROCC_OF_CELLS = StageSpec(
    "drocc_cells", "xrad.methods.drocc.cells", "drocc_cells.safetensors", sections={"drocc_cells": DroccCellsConfig}
)
JOINT = StageSpec(
    "joint", "xrad.methods.joint.stage", "model.safetensors", schedule="finetune", sections={"joint": JointConfig}
)
MOCO = StageSpec(
    "moco",
    "xrad.methods.moco.stage",
    "encoder.safetensors",
    reads=(*_SHARED_READS, "moco"),
    schedule="pretrain",
    shareable=True,
    sections={"moco": MocoConfig},
)

SPHERE = ScorerRef("sphere", "xrad.methods.multisphere.scorer:SphereScorer")
KNN = ScorerRef("knn", "xrad.methods.knn.scorer:KnnScorer")
RECONSTRUCTION = ScorerRef("reconstruction", "xrad.methods.autoencoder.scorer:ReconstructionScorer")
CLASSIFIER = ScorerRef("classifier", "xrad.methods.supervised.scorer:ClassifierScorer")
VAE_SCORER = ScorerRef("vae", "xrad.methods.vae.scorer:VAEScorer")
PATCH_SPHERE = ScorerRef("patch_sphere", "xrad.methods.multisphere.patch_scorer:PatchSphereScorer")
PATCH_KNN = ScorerRef("patch_knn", "xrad.methods.knn.patch_scorer:PatchKnnScorer")
PATCH_CLASSIFIER = ScorerRef("patch_classifier", "xrad.methods.synthetic.scorer:PatchClassifierScorer")
PATCH_GAUSSIAN = ScorerRef("patch_gaussian", "xrad.methods.synthetic.gaussian:PatchGaussianScorer")
SALAD_KNN = ScorerRef("salad", "xrad.methods.salad.scorer:SaladScorer")
GAN = ScorerRef("gan", "xrad.methods.gan.scorer:GanScorer")
DROCC_LOGIT = ScorerRef("drocc", "xrad.methods.drocc.scorer:DroccScorer")
SUBSPACE_DISTANCE = ScorerRef("subspace", "xrad.methods.subspace.scorer:SubspaceScorer")
SUBSPACE_PATCH = ScorerRef("subspace_patch", "xrad.methods.subspace.patch_scorer:SubspacePatchScorer")
DROCC_PATCH = ScorerRef("drocc_patch", "xrad.methods.drocc.scorer:DroccPatchScorer")
DROCC_CELLS = ScorerRef("drocc_cells", "xrad.methods.drocc.scorer:DroccCellScorer")

# ---------------------------------------------------------------------------------------- detectors
DETECTORS: dict[str, Detector] = {
    d.name: d
    for d in (
        Detector(
            "self_taught",
            (("pretrain", CONTRASTIVE), ("finetune", MULTISPHERE)),
            (SPHERE, PATCH_SPHERE),
            "contrastive pre-training + multi-sphere semi-supervised Deep SAD (n_spheres 1: uni-modal)",
        ),
        Detector(
            "moco_multi_sphere",
            (("pretrain", MOCO), ("finetune", MULTISPHERE)),
            (SPHERE, PATCH_SPHERE),
            "MoCo v2 pre-training (momentum encoder, queue of negatives) + the multi-sphere fine-tuning "
            "(the paper's He et al. row)",
        ),
        Detector(
            "knn",
            (("pretrain", CONTRASTIVE), ("finetune", KNN_MEMORY)),
            (KNN,),
            "mean distance to the k nearest normal train embeddings of the contrastive encoder",
        ),
        Detector(
            "autoencoder",
            (("pretrain", AUTOENCODER),),
            (RECONSTRUCTION,),
            "masked-MSE convolutional autoencoder, reconstruction-error score",
        ),
        Detector(
            "vae",
            (("train", VAE_STAGE),),
            (VAE_SCORER,),
            "variational autoencoder (Davletshina et al.): masked MSE + KLD; reconstruction, top-k or KLD score",
        ),
        Detector(
            "deep_sad_ae",
            (("pretrain", AUTOENCODER), ("finetune", MULTISPHERE)),
            (SPHERE, PATCH_SPHERE),
            "Deep SAD (one or several spheres) on autoencoder pre-training (Ruff et al.)",
        ),
        Detector(
            "joint_deep_sad",
            (("pretrain", AUTOENCODER), ("finetune", JOINT)),
            (SPHERE,),
            "autoencoder and (multi-sphere) Deep SAD trained together: reconstruction + one-class loss "
            "(n_spheres 1: the paper's joint Deep SAD)",
        ),
        Detector(
            "knn_ae",
            (("pretrain", AUTOENCODER), ("finetune", KNN_MEMORY)),
            (KNN,),
            "kNN on the autoencoder's embeddings",
        ),
        Detector(
            "subspace",
            (("pretrain", CONTRASTIVE), ("finetune", SUBSPACE)),
            (SUBSPACE_DISTANCE, SUBSPACE_PATCH),
            "distance ‖e − P e‖² of the contrastive embedding to the subspace of the normal train embeddings "
            "(level patch: of each feature-map cell to that of normal cells, top-k mean)",
        ),
        Detector(
            "subspace_synthetic",
            (("pretrain", SYNTHETIC), ("finetune", SUBSPACE_OF_CELLS)),
            (SUBSPACE_PATCH,),
            "subspace distance of each feature-map cell to the normal cells of the synthetic-anomaly "
            "detector's backbone (patch level): the subspace score on an encoder that sees local defects",
        ),
        Detector(
            "subspace_ae",
            (("pretrain", AUTOENCODER), ("finetune", SUBSPACE)),
            (SUBSPACE_DISTANCE, SUBSPACE_PATCH),
            "subspace distance on the autoencoder's embeddings (the paper's joint subspace row, un-jointed)",
        ),
        Detector(
            "deep_sad_imagenet",
            (("pretrain", IMAGENET), ("finetune", MULTISPHERE)),
            (SPHERE, PATCH_SPHERE),
            "multi-sphere Deep SAD from ImageNet weights in a local torchvision file",
        ),
        Detector(
            "supervised",
            (("train", SUPERVISED),),
            (CLASSIFIER,),
            "supervised ResNet-50, class-balanced BCE on the labelled train images",
        ),
        Detector(
            "drocc",
            (("train", DROCC_STAGE),),
            (DROCC_LOGIT, DROCC_PATCH),
            "DROCC: ResNet-18 classifier against adversarial negatives searched in an annulus around the "
            "normal images (known anomalies as labelled negatives optional; level patch: one logit per cell)",
        ),
        Detector(
            "drocc_synthetic",
            (("pretrain", SYNTHETIC), ("finetune", DROCC_OF_CELLS)),
            (DROCC_CELLS,),
            "DROCC's MLP on the standardised feature-map cells of the synthetic-anomaly detector's frozen "
            "backbone: adversarial negatives searched in an annulus around the normal cells (patch level)",
        ),
        Detector(
            "synthetic",
            (("train", SYNTHETIC),),
            (PATCH_CLASSIFIER, PATCH_KNN, PATCH_GAUSSIAN),
            "xrad's own: a patch classifier trained to find local synthetic anomalies; patch-map score",
        ),
        Detector(
            "salad",
            (("train", SALAD_STAGE),),
            (SALAD_KNN, PATCH_KNN),
            "SALAD: autoencoder + memory bank, progressive aggregation rounds, Eq. 4 weighted-kNN score "
            "(MemDAE and the ablations are its configs)",
        ),
        Detector(
            "dcgan",
            (("train", GAN_STAGE),),
            (GAN,),
            "DCGAN (Davletshina et al.): score 1 − D(x); reconstruction by a bounded latent search",
        ),
        Detector(
            "bigan",
            (("train", GAN_STAGE),),
            (GAN,),
            "BiGAN/ALI: encoder + generator against a joint discriminator D(x, z); score 1 − D(x, E(x))",
        ),
        Detector(
            "alpha_gan",
            (("train", GAN_STAGE),),
            (GAN,),
            "α-GAN: encoder, generator, image and code discriminators + reconstruction; score 1 − mean(D, C)",
        ),
        Detector(
            "ocgan",
            (("train", GAN_STAGE),),
            (GAN,),
            "one-class GAN (Tang et al. 2019): adversarially trained autoencoder; score 1 − D(x)",
        ),
    )
}


def get_detector(name: str) -> Detector:
    """The row of detector ``name``; one-line :class:`ConfigError` listing the known ones otherwise."""
    if name not in DETECTORS:
        raise ConfigError(f"unknown method {name!r}; choose one of {sorted(DETECTORS)}")
    return DETECTORS[name]


def stage_names() -> list[str]:
    """Every stage name some detector has, in first-seen order (``xrad train --stage`` choices)."""
    names: list[str] = []
    for detector in DETECTORS.values():
        names.extend(n for n in detector.stage_names if n not in names)
    return names


def scorer_refs() -> dict[str, ScorerRef]:
    """Scorer kind → reference, from the rows."""
    return {ref.kind: ref for d in DETECTORS.values() for ref in d.scorers}


def get_scorer_class(kind: str) -> type[Scorer]:
    """Resolve a scorer kind from an artefact to its class (imports only torch-level modules)."""
    refs = scorer_refs()
    if kind not in refs:
        raise ConfigError(
            f"artefact scorer {kind!r} is unknown to this xrad version (known: {sorted(refs)}); "
            "upgrade xrad or re-train"
        )
    module_name, class_name = refs[kind].path.split(":")
    scorer_class: type[Scorer] = getattr(importlib.import_module(module_name), class_name)
    return scorer_class


def load_config(source: str | Path | Mapping[str, Any] | Config, overrides: Iterable[str] = ()) -> Config:
    """Load a detector's config (YAML path, packaged name, mapping or Config, plus ``--set`` overrides),
    with the sections of its ``method``, every check run at load time."""
    overrides = list(overrides)
    if isinstance(source, Config) and not overrides:
        return source
    data, where = read_config_source(source)
    if overrides:
        data = apply_overrides(data, overrides)
        where = f"{where} (with --set overrides)"
    method = data.get("method", Config.method)
    if not isinstance(method, str) or method not in DETECTORS:
        raise ConfigError(f"{where}: method must be one of {sorted(DETECTORS)}, got {method!r}")
    detector = DETECTORS[method]
    cfg = build_config(data, detector.sections, where)
    for key, ok, message in detector.checks(cfg):
        if not ok:
            raise ConfigError(f"{where}: {key} {message}")
    return cfg


def shared_stage_key(config: Config, manifest: Path) -> tuple[str, str] | None:
    """(output file, key) of the shareable stage 1 a config would train, or None when it has none.

    Two cells with the same key train the same stage 1 (same stage kind, the same values of what it
    ``reads``, the same split manifest), so the later one loads the first one's output instead.
    """
    name, spec = get_detector(config.method).stages[0]
    if not spec.shareable or name != "pretrain" or config.pretrain.encoder_from:
        return None
    resolved = config_to_dict(config)
    sections: dict[str, Any] = {key: resolved.get(key) for key in spec.reads}
    sections["family"], sections["manifest"] = spec.kind, str(manifest)
    return spec.output, json.dumps(sections, sort_keys=True, default=str)


def stage_epochs(config: Config, stage: str) -> int | None:
    """The epochs of ``stage`` of the config's detector (from its schedule section), if it has one."""
    spec = dict(get_detector(config.method).stages).get(stage)
    if spec is None or spec.schedule is None:
        return None
    return getattr(config.section(spec.schedule), "epochs", None)
