"""Reading configs: one YAML reader, one override syntax, typed sections, every check at load time.

- :func:`read_yaml` is the only YAML reader of xrad (run configs, benchmark grids): a file that is not text,
  not YAML or repeats a key is one :class:`~xrad.errors.ConfigError` line naming the file.
- Overrides are ``section.key=value`` strings (``--set`` of ``xrad train``, ``run`` and ``benchmark``,
  values parsed as YAML scalars) or mappings with dotted keys (a benchmark's per-method overrides); both go
  through :func:`merge_overrides`.
- :func:`build_config` turns a mapping into a :class:`~xrad.config.sections.Config`: unknown keys and wrong
  types are refused with the key named, floats must be finite, and each section's ``checks()`` run. The
  detector's own sections are passed in explicitly (``sections``); nothing registers itself on import.
  :func:`xrad.methods.registry.load_config` is the detector-aware front door that passes them.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from xrad.config.sections import SHARED_SECTIONS, Config
from xrad.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


# ------------------------------------------------------------------------------------------------ YAML
class _UniqueKeyLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no type hints: SafeLoader is Any
    """SafeLoader that refuses a mapping with a repeated key (PyYAML silently keeps the last one)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"line {key_node.start_mark.line + 1}: key {key!r} is given twice; keep one")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def read_yaml(path: str | Path, what: str = "config") -> Any:
    """The parsed content of a YAML file; one-line :class:`ConfigError` naming it when it cannot be read."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; give a YAML {what}") from None
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; give a YAML {what} file") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None


def packaged_configs() -> list[str]:
    """Names of the configs shipped with xrad (``xrad/configs/*.yaml``), sorted."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def resolve_config_path(path: str | Path) -> Path:
    """Find a config file: a path as given, or the name of a packaged config (``self_taught_cpu``)."""
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    packaged = CONFIG_DIR / (candidate.name if candidate.suffix else f"{candidate.name}.yaml")
    if packaged.is_file():
        return packaged
    raise ConfigError(
        f"{path}: config file not found; give a YAML path or a packaged config ({', '.join(packaged_configs())})"
    )


def read_config_source(source: str | Path | Mapping[str, Any] | Config) -> tuple[dict[str, Any], str]:
    """(mapping, where) of a YAML path, a packaged config name, a mapping or a Config."""
    if isinstance(source, Config):
        return config_to_dict(source), "config"
    if isinstance(source, Mapping):
        return copy.deepcopy(dict(source)), "config"
    path = resolve_config_path(source)
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return data, str(path)


# ------------------------------------------------------------------------------------------- overrides
def parse_override(text: str) -> tuple[str, Any]:
    """``section.key=value`` (value as a YAML scalar or list) → (dotted key, value)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. finetune.epochs=3")
    key, raw = text.split("=", 1)
    key = ".".join(part for part in key.strip().split(".") if part)
    if not key:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key, value


def merge_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into a copy of ``base``; a key ``"a.b"`` means ``{"a": {"b": ...}}``.

    A mapping value is merged into an existing mapping (so ``{pretrain: {epochs: 3}}`` keeps the other
    pretrain keys); any other value replaces what was there.
    """
    out = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        target, parts = out, str(key).split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"override {key!r}: {part} is not a section")
        leaf = parts[-1]
        if isinstance(value, dict) and isinstance(target.get(leaf), dict):
            target[leaf] = merge_overrides(target[leaf], value)
        else:
            target[leaf] = copy.deepcopy(value)
    return out


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of ``data`` with ``--set`` strings applied in order (validation happens afterwards)."""
    out = copy.deepcopy(dict(data))
    for text in overrides:
        key, value = parse_override(text)
        try:
            out = merge_overrides(out, {key: value})
        except ConfigError:
            raise ConfigError(f"--set {text!r}: {key.rsplit('.', 1)[0]} is not a section") from None
    return out


# ---------------------------------------------------------------------------------------- typed build
def _coerce(value: Any, annotation: Any, key: str, where: str) -> Any:
    """Check/convert one YAML value against a type annotation."""
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
        number: float | None = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads "1e-6" as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"{where}: {key} must be a number, got {value!r}")
        if not math.isfinite(number):  # .inf / .nan would train to NaN scores without a word
            raise ConfigError(f"{where}: {key} must be a finite number, got {value!r}")
        return number
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: {key} must be a string, got {value!r}")
    if dataclasses.is_dataclass(annotation):
        return _build(annotation, value, key, where)
    raise ConfigError(f"{where}: {key} has an unsupported type")  # a bug in a section definition


def _build(cls: Any, data: Any, prefix: str, where: str, extra_names: Iterable[str] = ()) -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys (``extra_names`` are skipped)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {prefix or 'the config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.name != "extra"}
    skip = set(extra_names)
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key in skip:
            continue
        if key not in names:
            raise ConfigError(f"{where}: unknown key {dotted!r} (known: {', '.join(sorted(names | skip))})")
        kwargs[key] = _coerce(value, hints[key], dotted, where)
    return cls(**kwargs)


def _run_checks(obj: Any, prefix: str, where: str) -> None:
    """Run ``obj.checks()`` (if any); the first failed rule is one line naming the full key."""
    checks = getattr(obj, "checks", None)
    if checks is None:
        return
    for key, ok, message in checks():
        if not ok:
            dotted = f"{prefix}.{key}" if prefix else key
            raise ConfigError(f"{where}: {dotted} {message}")


def build_config(data: Mapping[str, Any], sections: Mapping[str, type] | None = None, where: str = "config") -> Config:
    """Validate a nested mapping (as read from YAML) into a :class:`Config`.

    ``sections`` are the detector's own sections (name → dataclass); a YAML section of that name is built
    with its class, an absent one has its defaults (:meth:`Config.section`).
    """
    sections = dict(sections or {})
    clash = set(sections) & ({f.name for f in dataclasses.fields(Config)} | set(SHARED_SECTIONS))
    if clash:
        raise ValueError(f"detector sections {sorted(clash)} clash with the shared config")  # a registry bug
    cfg: Config = _build(Config, dict(data), "", where, extra_names=sections)
    for name, cls in sections.items():
        if name in data:
            cfg.extra[name] = _build(cls, data[name], name, where)
    object.__setattr__(cfg, "declared_sections", sections)
    _run_checks(cfg, "", where)
    for name in SHARED_SECTIONS:
        _run_checks(getattr(cfg, name), name, where)
    for name in sections:
        _run_checks(cfg.section(name), name, where)
    return cfg


def load_config(
    source: str | Path | Mapping[str, Any] | Config,
    overrides: Iterable[str] = (),
    *,
    sections: Mapping[str, type] | None = None,
) -> Config:
    """Load a config from a YAML path, packaged name, mapping or Config, with ``--set`` overrides.

    Generic: the caller passes the detector's own sections. Use
    :func:`xrad.methods.registry.load_config`, which finds them from the config's ``method``.
    """
    overrides = list(overrides)
    if isinstance(source, Config) and not overrides:
        return source
    data, where = read_config_source(source)
    if overrides:
        data = apply_overrides(data, overrides)
        where = f"{where} (with --set overrides)"
    return build_config(data, sections, where)


# ---------------------------------------------------------------------------------------------- output
def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The resolved config as plain data (what ``config.yaml`` and the artefact store)."""
    data: dict[str, Any] = _plain(dataclasses.asdict(cfg))
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
    text: str = yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
    return text


def milestone_epochs(fractions: list[float], epochs: int) -> list[int]:
    """Milestone fractions → epoch numbers for MultiStepLR (e.g. 0.7 of 100 → 70)."""
    return sorted({max(1, round(f * epochs)) for f in fractions})
