"""Benchmark grids: methods × training seeds × split seeds × anomaly ratios, resumable, tabulated.

Config (YAML)::

    methods:                                       # config names in xrad/configs, or paths to YAML files;
      - self_taught_cpu
      - ae_cpu: {pretrain.epochs: 10}              # a one-key mapping adds overrides for that method only
    training_seeds: [0, 1]
    split_seeds: [0, 1]
    abnormal_ratios: [0.05]
    data:
      manifest: cache/manifest.csv                 # an indexed (and preprocessed) manifest
      body_parts: [HAND, SHOULDER]                 # or null for all
      known_normal: 0.05                           # also: known_abnormal, group, train_fraction
    overrides: {finetune: {epochs: 5}}             # merged into every method config ("a.b: v" keys work too)
    trainer: {}                                    # passed to run_training as trainer_overrides
    output: runs/bench                             # relative paths are relative to this file's folder

Each split (split seed × ratio) is made once and shared by every method and training seed, so methods are
compared on identical data. Methods whose stage 1 is the same (same family in
:data:`xrad.methods.registry.PRETRAIN_FAMILIES`, same seed, identical ``data``/``model``/``pretrain`` and, for
autoencoders, ``ae`` sections) train it once per split: later cells load the first cell's finished stage 1
through ``pretrain.encoder_from`` (recorded as ``pretrain_from`` in ``benchmark_cell.json``), so e.g. the kNN
ablation scores the very encoder the self-taught detector was fine-tuned from, as in the paper. Each cell is a run folder ``output/cells/<method>__r<ratio>__split<s>__seed<t>``
written by :func:`xrad.jobs.train.run_training`; a cell whose ``summary.json`` exists is skipped, so
re-running the command resumes the grid.

Results are tied to the settings that produced them, so an edited YAML cannot silently reuse them:
``split_records/split<s>__r<ratio>.json`` records the settings and the source manifest's SHA-256 that made
``splits/split<s>__r<ratio>.csv``, and each cell folder holds ``benchmark_inputs.json`` (its method
config after every override, and its split's record), written before it trains. Before anything is trained,
a split or a finished or partly-trained cell whose record differs from what the YAML asks for now is refused
with :class:`~xrad.errors.ConfigError` naming it and the changed keys (:mod:`xrad.jobs.benchmark_records`). Execution-only settings (``trainer``
sections, ``--progress``, ``--only``, ``--split-seeds``) are not compared.

Outputs: ``results.csv`` (one row per cell and split), ``table1.csv``/``table1.md`` (the paper's Table 1
layout) and ``pairwise.csv`` (Welch t-tests).
"""

from __future__ import annotations

import copy
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xrad.errors import ConfigError, DataError
from xrad.evaluation import metrics
from xrad.jobs.benchmark_records import (
    CELL_INPUTS,
    cell_record,
    check_cell,
    check_split,
    split_path,
    split_record,
    split_record_path,
    split_settings,
)
from xrad.evaluation.tables import pairwise_tests, table1, table1_markdown
from xrad.utils.atomic import write_csv, write_json, write_text

RESULT_COLUMNS = (
    "method",
    "abnormal_ratio",
    "split_seed",
    "training_seed",
    "split",
    "auroc",
    "auprc_abnormal",
    "auprc_normal",
    "prevalence",
    "n_images",
    "seconds",
    "cell",
)
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


def _list(raw: dict, key: str, kind: type, where: str) -> list:
    value = raw.get(key)
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: '{key}' must be a non-empty list")
    try:
        return [kind(v) for v in value]
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: '{key}' must hold {kind.__name__} values, got {value!r}") from None


def load_benchmark_config(path: str | Path, output: str | Path | None = None) -> BenchmarkConfig:
    """Read and validate a benchmark YAML; ``output`` overrides its ``output`` entry."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: benchmark config not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; give a YAML config") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    where = str(path)
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(_TOP_KEYS))}"
        )
    base = path.resolve().parent
    data = raw.get("data") or {}
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
        name, extra = entry, {}
        if isinstance(entry, dict) and len(entry) == 1:
            name, extra = next(iter(entry.items()))
            extra = extra or {}
        if not isinstance(name, str) or not isinstance(extra, dict):
            raise ConfigError(f"{where}: a 'methods' entry must be a config name/path or a one-key mapping "
                              f"{{name: {{key: value}}}}, got {entry!r}")
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


def merge_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into a copy of ``base``; a key ``"a.b"`` means ``{"a": {"b": ...}}``."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        target, parts = out, str(key).split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        if isinstance(value, dict) and isinstance(target.get(parts[-1]), dict):
            target[parts[-1]] = merge_overrides(target[parts[-1]], value)
        else:
            target[parts[-1]] = copy.deepcopy(value)
    return out


def method_config(config: BenchmarkConfig, cell: Cell) -> dict[str, Any]:
    """The method's YAML as a dict, with the benchmark's overrides, then the method's own, then the cell's
    training seed applied."""
    import yaml

    path = config.methods[cell.method]
    loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    merged = merge_overrides(loaded, config.overrides)
    merged = merge_overrides(merged, config.method_overrides.get(cell.method, {}))
    return merge_overrides(merged, {"seed": cell.training_seed})


def pretrain_key(method_cfg: dict[str, Any], manifest: Path) -> tuple[str, str] | None:
    """(family, key) identifying the stage 1 a cell would train, or None when it has no shareable stage 1."""
    from xrad.config import config_to_dict, load_config
    from xrad.methods.registry import PRETRAIN_FAMILIES, import_method_sections

    family = PRETRAIN_FAMILIES.get(str(method_cfg.get("method")))
    if family is None:
        return None
    import_method_sections(str(method_cfg["method"]))
    resolved = config_to_dict(load_config(method_cfg))
    if resolved["pretrain"].get("encoder_from"):
        return None
    sections = {name: resolved.get(name) for name in ("seed", "data", "model", "pretrain")}
    if family[0] == "autoencoder":
        sections["ae"] = resolved.get("ae")
    sections["family"], sections["manifest"] = family[0], str(manifest)
    return family[1], json.dumps(sections, sort_keys=True, default=str)


def prepare_split(config: BenchmarkConfig, split_seed: int, ratio: float) -> Path:
    """Make (once) the split manifest shared by every method and training seed of that split, with its
    record; an existing one is checked against the YAML's settings (see :func:`check_split`)."""
    from xrad.data.manifest import read_manifest, write_manifest
    from xrad.data.splits import check_leakage, make_split

    path = split_path(config, split_seed, ratio)
    check_split(config, split_seed, ratio)
    if path.is_file():
        return path
    # The record goes first: a split CSV without a record can then only be one made before records existed.
    write_json(split_record_path(config, split_seed, ratio), split_record(config, split_seed, ratio))
    split = make_split(read_manifest(config.manifest), split_settings(config, split_seed, ratio))
    check_leakage(split)
    write_manifest(split, path)
    return path


def _seconds_from_summary(summary: dict[str, Any]) -> float:
    for key in ("seconds", "total_seconds", "wall_seconds"):
        if isinstance(summary.get(key), (int, float)):
            return float(summary[key])
    timings = summary.get("timings_s", summary.get("timings"))
    if isinstance(timings, dict):  # per-step seconds; "total_*" entries would count them twice
        values = [
            v for k, v in timings.items() if isinstance(v, (int, float)) and not str(k).startswith("total")
        ]
        if values:
            return float(sum(values))
    return float("nan")


def cell_rows(cell_dir: Path, cell: Cell) -> list[dict[str, Any]]:
    """Result rows (valid, test) of a finished cell, from its scores CSVs (else from summary.json)."""
    summary = json.loads((cell_dir / "summary.json").read_text(encoding="utf-8"))
    record = cell_dir / "benchmark_cell.json"
    seconds = (
        json.loads(record.read_text(encoding="utf-8")).get("seconds")
        if record.is_file()
        else _seconds_from_summary(summary)
    )
    rows = []
    for split in ("valid", "test"):
        row: dict[str, Any] = {
            "method": cell.method,
            "abnormal_ratio": cell.abnormal_ratio,
            "split_seed": cell.split_seed,
            "training_seed": cell.training_seed,
            "split": split,
            "seconds": seconds,
            "cell": cell.name,
        }
        scores_path = cell_dir / f"scores_{split}.csv"
        if scores_path.is_file():
            frame = pd.read_csv(scores_path)
            frame = frame[pd.to_numeric(frame.get("label"), errors="coerce").notna()]
            labels = frame["label"].astype(int).to_numpy()
            scores = frame["score"].astype(float).to_numpy()
            row.update(
                auroc=metrics.auroc(labels, scores),
                auprc_abnormal=metrics.average_precision(labels, scores),
                auprc_normal=metrics.average_precision(labels, scores, positive=0),
                prevalence=float(labels.mean()) if labels.size else np.nan,
                n_images=int(labels.size),
            )
        else:
            row.update(
                auroc=summary.get(f"{split}_auroc", np.nan),
                auprc_abnormal=np.nan,
                auprc_normal=np.nan,
                prevalence=np.nan,
                n_images=np.nan,
            )
        rows.append(row)
    return rows


def run_benchmark(
    config: BenchmarkConfig,
    *,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    train: Callable[..., dict] | None = None,
    only: list[str] | None = None,
    only_split_seeds: list[int] | None = None,
) -> pd.DataFrame:
    """Run every unfinished cell, then write and return the tidy results (and the tables).

    ``only`` and ``only_split_seeds`` restrict training to those method labels and split seeds (to spread
    one grid over several processes or machines sharing the output folder; keep the methods that share a
    stage 1 in one process); the tables always collect every finished cell of the grid.
    ``train`` defaults to :func:`xrad.jobs.train.run_training` (tests inject a stand-in).
    """
    if train is None:
        from xrad.jobs.train import run_training as train
    log = log or (lambda message: None)
    if not config.manifest.is_file():
        raise DataError(
            f"{config.manifest}: benchmark manifest not found; make it with `xrad index` "
            f"(and `xrad preprocess`)"
        )
    cells = iter_cells(config)
    unknown = sorted(set(only or ()) - set(config.methods))
    if unknown:
        raise ConfigError(f"--only {', '.join(unknown)}: not a method of this benchmark "
                          f"(its methods: {', '.join(config.methods)})")
    unknown_seeds = sorted(set(only_split_seeds or ()) - set(config.split_seeds))
    if unknown_seeds:
        raise ConfigError(f"--split-seeds {unknown_seeds}: not split seeds of this benchmark "
                          f"(its split seeds: {config.split_seeds})")
    # Every recorded output is checked before anything is trained or written, so an edited YAML is refused
    # at once (not after hours of training the cells it did not touch) and benchmark.json stays as it was.
    cell_configs = {cell: method_config(config, cell) for cell in cells}
    for split_seed, ratio in itertools.product(config.split_seeds, config.abnormal_ratios):
        check_split(config, split_seed, ratio)
    for cell in cells:
        check_cell(config.output / "cells" / cell.name, cell_record(config, cell, cell_configs[cell]))
    config.output.mkdir(parents=True, exist_ok=True)
    write_json(
        config.output / "benchmark.json",
        {
            "methods": {k: str(v) for k, v in config.methods.items()},
            "method_overrides": config.method_overrides,
            "training_seeds": config.training_seeds,
            "split_seeds": config.split_seeds,
            "abnormal_ratios": config.abnormal_ratios,
            "manifest": str(config.manifest),
            "body_parts": config.body_parts,
            "split_options": config.split_options,
            "overrides": config.overrides,
            "trainer": config.trainer,
        },
    )
    stage1: dict[str, Path] = {}  # pretrain key -> the first cell folder that trains that stage 1
    for index, cell in enumerate(cells, 1):
        cell_dir = config.output / "cells" / cell.name
        prefix = f"[{index}/{len(cells)}] {cell.name}"
        manifest = split_path(config, cell.split_seed, cell.abnormal_ratio)  # made below, only if trained
        cell_cfg = cell_configs[cell]
        shared = pretrain_key(cell_cfg, manifest)
        source = stage1.setdefault(shared[1], cell_dir) if shared else None
        if source is not None and source != cell_dir and (source / "pretrain" / shared[0]).is_file():
            cell_cfg = merge_overrides(cell_cfg, {"pretrain.encoder_from": str(source)})
        else:
            source = None
        if (cell_dir / "summary.json").is_file():
            log(f"{prefix}: done, skipped")
            continue
        if (only and cell.method not in only) or (only_split_seeds and cell.split_seed not in only_split_seeds):
            continue
        log(f"{prefix}: training" + (f" (stage 1 from {source.name})" if source else ""))
        prepare_split(config, cell.split_seed, cell.abnormal_ratio)
        if not (cell_dir / CELL_INPUTS).is_file():  # before training: a crashed attempt is tied to it too
            write_json(cell_dir / CELL_INPUTS, cell_record(config, cell, cell_configs[cell]))
        start = time.perf_counter()
        train(
            cell_cfg,
            manifest,
            cell_dir,
            trainer_overrides=dict(config.trainer) or None,
            progress=progress,
        )
        seconds = time.perf_counter() - start
        write_json(
            cell_dir / "benchmark_cell.json",
            {
                "cell": cell.name,
                "method": cell.method,
                "abnormal_ratio": cell.abnormal_ratio,
                "split_seed": cell.split_seed,
                "training_seed": cell.training_seed,
                "seconds": seconds,
                "split_manifest": str(manifest),
                "pretrain_from": str(source) if source else None,
            },
        )
        log(f"{prefix}: finished in {seconds:.0f} s")
    return write_tables(config.output, cells)


def write_tables(output: Path, cells: list[Cell]) -> pd.DataFrame:
    """Collect finished cells into ``results.csv`` and write ``table1.csv/.md`` and ``pairwise.csv``."""
    rows = []
    for cell in cells:
        cell_dir = output / "cells" / cell.name
        if (cell_dir / "summary.json").is_file():
            rows.extend(cell_rows(cell_dir, cell))
    results = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    write_csv(output / "results.csv", results)
    table = table1(results)
    pairs = pairwise_tests(results)
    write_csv(output / "table1.csv", table)
    write_csv(output / "pairwise.csv", pairs)
    write_text(output / "table1.md", table1_markdown(table, pairs))
    return results
