"""A benchmark grid as its YAML declares it: methods × training seeds × split seeds × anomaly ratios.

See :mod:`xrad.jobs.benchmark` for the YAML layout and how a grid runs; this module only reads and checks the
YAML (:func:`load_benchmark_config`, through the one YAML reader of :mod:`xrad.config`) and names its cells.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from xrad.config import merge_overrides, read_yaml
from xrad.errors import ConfigError

_SPLIT_KEYS = ("known_normal", "known_abnormal", "group", "train_fraction")
_TOP_KEYS = {
    "methods",
    "training_seeds",
    "split_seeds",
    "abnormal_ratios",
    "data",
    "overrides",
    "trainer",
    "output",
}


@dataclass
class BenchmarkConfig:
    """A parsed benchmark YAML (see the module docstring)."""

    methods: dict[str, Path]  # label -> method config file
    training_seeds: list[int]
    split_seeds: list[int]
    abnormal_ratios: list[float]
    manifest: Path
    output: Path
    body_parts: tuple[str, ...] | None = None
    split_options: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    trainer: dict[str, Any] = field(default_factory=dict)
    method_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> its own overrides


@dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    method: str
    abnormal_ratio: float
    split_seed: int
    training_seed: int

    @property
    def name(self) -> str:
        return f"{self.method}__r{self.abnormal_ratio:g}__split{self.split_seed}__seed{self.training_seed}"


def resolve_method(name: str, base: Path) -> Path:
    """A method is a config name shipped in ``xrad/configs`` or a YAML path (relative to ``base``)."""
    candidate = Path(name)
    for path in (candidate, base / candidate):
        if path.suffix in (".yaml", ".yml") and path.is_file():
            return path.resolve()
    shipped = resources.files("xrad") / "configs" / f"{name}.yaml"
    if shipped.is_file():
        return Path(str(shipped))
    raise ConfigError(
        f"benchmark method {name!r}: no such config in xrad/configs nor file; "
        f"use a config name (e.g. self_taught_cpu) or a path to a YAML file"
    )


_T = TypeVar("_T")


def _list(raw: dict[str, Any], key: str, kind: Callable[[Any], _T], where: str) -> list[_T]:
    value = raw.get(key)
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: '{key}' must be a non-empty list")
    try:
        return [kind(v) for v in value]
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: '{key}' must hold {kind.__name__} values, got {value!r}") from None


def load_benchmark_config(
    path: str | Path, output: str | Path | None = None, manifest: str | Path | None = None
) -> BenchmarkConfig:
    """Read and validate a benchmark YAML; ``output`` overrides its ``output`` entry and ``manifest`` its
    ``data.manifest`` (both relative to the working directory, not to the YAML)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: benchmark config not found")
    raw = read_yaml(path, "benchmark config") or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping (methods, training_seeds, ...)")
    where = str(path)
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(_TOP_KEYS))}"
        )
    base = path.resolve().parent
    data = raw.get("data") or {}
    if manifest is not None:
        data = {**data, "manifest": str(Path(manifest).resolve())}
    if not data.get("manifest"):
        raise ConfigError(f"{where}: data.manifest is required (an indexed, preprocessed manifest CSV)")
    bad = set(data) - {"manifest", "body_parts", *_SPLIT_KEYS}
    if bad:
        raise ConfigError(f"{where}: unknown data key(s) {', '.join(sorted(bad))}")
    methods: dict[str, Path] = {}
    method_overrides: dict[str, dict[str, Any]] = {}
    entries = raw.get("methods")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where}: 'methods' must be a non-empty list")
    for entry in entries:
        # YAML values: checked below before use.
        name: object = entry
        extra: object = {}
        if isinstance(entry, dict) and len(entry) == 1:
            name, extra = next(iter(entry.items()))
            extra = extra or {}
        if not isinstance(name, str) or not isinstance(extra, dict):
            raise ConfigError(
                f"{where}: a 'methods' entry must be a config name/path or a one-key mapping "
                f"{{name: {{key: value}}}}, got {entry!r}"
            )
        label = Path(name).stem
        if label in methods:
            raise ConfigError(f"{where}: method {label!r} is listed twice; copy its YAML under another name")
        methods[label] = resolve_method(name, base)
        if extra:
            method_overrides[label] = dict(extra)
    out = output if output is not None else raw.get("output")
    if not out:
        raise ConfigError(f"{where}: 'output' is required (or pass -o DIR)")
    body_parts = data.get("body_parts")
    return BenchmarkConfig(
        methods=methods,
        method_overrides=method_overrides,
        training_seeds=_list(raw, "training_seeds", int, where),
        split_seeds=_list(raw, "split_seeds", int, where),
        abnormal_ratios=_list(raw, "abnormal_ratios", float, where),
        manifest=(base / data["manifest"]).resolve(),
        output=Path(out) if output is not None else (base / out).resolve(),
        body_parts=tuple(str(p).upper() for p in body_parts) if body_parts else None,
        split_options={k: data[k] for k in _SPLIT_KEYS if k in data},
        overrides=dict(raw.get("overrides") or {}),
        trainer=dict(raw.get("trainer") or {}),
    )


def iter_cells(config: BenchmarkConfig) -> list[Cell]:
    """All cells, ordered so that every method gets its first replicate before anyone gets a second."""
    return [
        Cell(m, r, s, t)
        for r, s, t, m in itertools.product(
            config.abnormal_ratios, config.split_seeds, config.training_seeds, config.methods
        )
    ]


def method_config(config: BenchmarkConfig, cell: Cell) -> dict[str, Any]:
    """The method's YAML as a dict, with the benchmark's overrides, then the method's own, then the cell's
    training seed applied."""
    path = config.methods[cell.method]
    loaded = read_yaml(path) or {}
    merged = merge_overrides(loaded, config.overrides)
    merged = merge_overrides(merged, config.method_overrides.get(cell.method, {}))
    return merge_overrides(merged, {"seed": cell.training_seed})
