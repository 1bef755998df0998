"""Run configuration: YAML files a user can read and diff, loaded into validated dataclasses.

A config has one section per concern. Every paper hyper-parameter is a named default here, so a YAML
file only states what differs (``configs/self_taught_paper.yaml`` spells everything out anyway, as
documentation). Loading is strict: an unknown key or a value of the wrong type raises
:class:`xrad.errors.ConfigError` naming the key and the file. ``--set section.key=value`` overrides
are parsed as YAML scalars (``--set finetune.epochs=3``, ``--set data.image_size=64``).

Methods that need a section of their own (issue 6: ``ae``, ``supervised`` ...) register it with
:func:`register_section` at import time; it is then validated like the built-in ones.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from xrad.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class DataConfig:
    """How images are fed: size of the square network input, batch sizes, loader workers."""

    image_size: int = 512
    eval_batch_size: int = 64
    # The bank is in memory as uint8 tensors, so worker processes only pay off when collation is the
    # bottleneck (large images); 0 is fastest on 2 cores for 64-128 px.
    workers: int = 2
    decode_workers: int = 2  # threads decoding the PNG cache into the bank (once; memoised on disk)
    cache_dir: str | None = None  # on-disk memo of decoded image banks (None: <run_dir>/bank_cache)


@dataclass
class ModelConfig:
    """The encoder shared by both stages: ResNet-18 (1 channel) + MLP head."""

    head_dims: list[int] = field(default_factory=lambda: [512, 256, 128])
    head_bias: bool = True  # the authors' head keeps its biases; Deep SAD prefers bias-free nets


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


@dataclass
class KnnConfig:
    """kNN ablation on stage-1 embeddings: mean distance to the k nearest normal train embeddings."""

    k: int = 100
    chunk_size: int = 1024
    feature: str = "h"  # h (512-d, before the head, as the authors) | z (128-d head output)


@dataclass
class TrainerConfig:
    """Passed straight to ``lightning.Trainer``: devices, precision and distribution are Lightning's."""

    accelerator: str = "auto"
    devices: Any = "auto"
    strategy: str = "auto"
    precision: str = "32-true"
    num_nodes: int = 1
    log_every_n_steps: int = 10


@dataclass
class Config:
    """A whole run: method, seed and one section per concern."""

    method: str = "self_taught"
    seed: int = 0
    deterministic: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    knn: KnnConfig = field(default_factory=KnnConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    # Sections registered by other methods (issue 6), validated with their own dataclasses.
    extra: dict[str, Any] = field(default_factory=dict)

    def section(self, name: str) -> Any:
        """Return a built-in or registered section by name."""
        if name in _BUILTIN_SECTIONS:
            return getattr(self, name)
        if name in self.extra:
            return self.extra[name]
        if name in _EXTRA_SECTIONS:
            return _EXTRA_SECTIONS[name]()
        raise ConfigError(f"config has no section {name!r}")


_BUILTIN_SECTIONS = ("data", "model", "pretrain", "finetune", "knn", "trainer")
_EXTRA_SECTIONS: dict[str, type] = {}
_CHOICES = {"pretrain.pretext": ("simclr", "supcon"), "knn.feature": ("h", "z")}


def register_section(name: str, cls: type) -> None:
    """Let a method add a config section ``name`` validated by dataclass ``cls``."""
    if name in _BUILTIN_SECTIONS or name in {f.name for f in dataclasses.fields(Config)}:
        raise ValueError(f"config section {name!r} is built in")
    _EXTRA_SECTIONS[name] = cls


def _coerce(value: Any, annotation: Any, key: str, where: str) -> Any:
    """Check/convert one YAML value against a (string) type annotation."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key, where)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is tuple:  # a fixed-length range such as (low, high); YAML gives a list
        item_types = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)) or len(value) != len(item_types):
            raise ConfigError(f"{where}: {key} must be a list of {len(item_types)} values, got {value!r}")
        return tuple(_coerce(v, t, f"{key}[{i}]", where) for i, (v, t) in enumerate(zip(value, item_types)))
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {key} must be a list, got {value!r}")
        return [_coerce(v, item_type, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: {key} must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: {key} must be an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-6" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: {key} must be a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: {key} must be a string, got {value!r}")
    if dataclasses.is_dataclass(annotation):
        return _build(annotation, value, key, where)
    raise ConfigError(f"{where}: {key} has an unsupported type")  # a bug in a section definition


def _build(cls: type, data: Any, prefix: str, where: str) -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {prefix or 'the config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.name != "extra"}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            if cls is Config and key in _EXTRA_SECTIONS:
                continue
            known = ", ".join(sorted(names | (set(_EXTRA_SECTIONS) if cls is Config else set())))
            raise ConfigError(f"{where}: unknown key {dotted!r} (known: {known})")
        kwargs[key] = _coerce(value, hints[key], dotted, where)
        if dotted in _CHOICES and kwargs[key] not in _CHOICES[dotted]:
            raise ConfigError(f"{where}: {dotted} must be one of {_CHOICES[dotted]}, got {kwargs[key]!r}")
    obj = cls(**kwargs)
    if cls is Config:
        for name, section_cls in _EXTRA_SECTIONS.items():
            if name in data:
                obj.extra[name] = _build(section_cls, data[name], name, where)
    return obj


def _validate(cfg: Config, where: str) -> None:
    """Range checks that types alone cannot express."""
    checks = [
        ("data.image_size", cfg.data.image_size >= 32, "must be ≥ 32 (ResNet-18 downsamples by 32)"),
        ("data.eval_batch_size", cfg.data.eval_batch_size >= 1, "must be ≥ 1"),
        ("data.workers", cfg.data.workers >= 0, "must be ≥ 0"),
        ("data.decode_workers", cfg.data.decode_workers >= 1, "must be ≥ 1"),
        ("pretrain.epochs", cfg.pretrain.epochs >= 0, "must be ≥ 0"),
        ("pretrain.batch_size", cfg.pretrain.batch_size >= 2, "must be ≥ 2 (InfoNCE needs negatives)"),
        ("pretrain.temperature", cfg.pretrain.temperature > 0, "must be > 0"),
        ("pretrain.augment.blur_reference_px", cfg.pretrain.augment.blur_reference_px >= 1,
         "must be ≥ 1 (the image size, in pixels, at which blur_sigma is given; the paper's is 512)"),
        ("finetune.epochs", cfg.finetune.epochs >= 0, "must be ≥ 0"),
        ("finetune.batch_size", cfg.finetune.batch_size >= 2, "must be ≥ 2 (BatchNorm in train mode)"),
        ("finetune.n_spheres", cfg.finetune.n_spheres >= 1, "must be ≥ 1"),
        ("finetune.gamma", 0 <= cfg.finetune.gamma <= 1, "must be in [0, 1]"),
        ("finetune.eta", cfg.finetune.eta > 0, "must be > 0"),
        ("finetune.eps", cfg.finetune.eps > 0, "must be > 0"),
        ("finetune.prune_warmup", cfg.finetune.prune_warmup >= 0, "must be ≥ 0"),
        ("knn.k", cfg.knn.k >= 1, "must be ≥ 1"),
        ("knn.chunk_size", cfg.knn.chunk_size >= 1, "must be ≥ 1"),
        ("model.head_dims", len(cfg.model.head_dims) >= 2 and cfg.model.head_dims[0] == 512,
         "must start with 512 (the ResNet-18 feature size) and have ≥ 2 entries"),
    ]
    for section in ("pretrain", "finetune"):
        for m in getattr(cfg, section).milestones:
            checks.append((f"{section}.milestones", 0 < m <= 1, "must be fractions of the epochs in (0, 1]"))
    for key, ok, message in checks:
        if not ok:
            raise ConfigError(f"{where}: {key} {message}")


def config_from_dict(data: dict[str, Any], where: str = "config") -> Config:
    """Validate a nested mapping (as read from YAML) into a :class:`Config`."""
    method = data.get("method", Config.method) if isinstance(data, dict) else Config.method
    if isinstance(method, str):
        # Importing the method registers its extra sections (if any) before validation.
        from xrad.methods.registry import import_method_sections

        import_method_sections(method)
    cfg = _build(Config, data, "", where)
    from xrad.methods.registry import METHODS

    if cfg.method not in METHODS:
        raise ConfigError(f"{where}: method must be one of {sorted(METHODS)}, got {cfg.method!r}")
    _validate(cfg, where)
    return cfg


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``section.key=value`` (value as a YAML scalar/list) into (path, value)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. finetune.epochs=3")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return [part for part in key.strip().split(".") if part], value


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Return a copy of ``data`` with ``--set`` overrides applied (validation happens afterwards)."""
    import copy

    data = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        if not path:
            raise ConfigError(f"--set {text!r}: empty key")
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text!r}: {part} is not a section")
        node[path[-1]] = value
    return data


def resolve_config_path(path: str | Path) -> Path:
    """Find a config file: a path as given, or the name of a packaged config (``self_taught_cpu``)."""
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    packaged = CONFIG_DIR / (candidate.name if candidate.suffix else f"{candidate.name}.yaml")
    if packaged.is_file():
        return packaged
    names = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(f"{path}: config file not found; give a YAML path or a packaged config ({names})")


def load_config(source: str | Path | dict[str, Any] | Config, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a config from a YAML path, a packaged config name, a mapping or a Config, plus overrides."""
    if isinstance(source, Config):
        if not overrides:
            return source
        source = config_to_dict(source)
    if isinstance(source, dict):
        data, where = source, "config"
    else:
        path = resolve_config_path(source)
        where = str(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a text file; give a YAML config") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    if overrides:
        data = apply_overrides(data, overrides)
        where = f"{where} (with --set overrides)"
    return config_from_dict(data, where)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The resolved config as plain data (what ``config.yaml`` and the artefact store)."""
    data = _plain(dataclasses.asdict(cfg))
    extra = data.pop("extra")
    data.update(extra)
    return data


def _plain(value: Any) -> Any:
    """Tuples (the augmentation ranges) → lists, recursively: the config as YAML/JSON would read it back."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def comparable_config(data: dict[str, Any]) -> dict[str, Any]:
    """A config mapping minus what may change between resumed invocations of one run (the ``trainer``
    section: devices, strategy, logging) — what decides whether a run folder holds "the same" run."""
    return {k: v for k, v in data.items() if k != "trainer"}


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML text (section order as in the dataclass)."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def milestone_epochs(fractions: list[float], epochs: int) -> list[int]:
    """Milestone fractions → epoch numbers for MultiStepLR (e.g. 0.7 of 100 → 70)."""
    return sorted({max(1, round(f * epochs)) for f in fractions})
