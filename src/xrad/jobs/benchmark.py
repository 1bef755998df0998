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
compared on identical data. Methods whose stage 1 is the same (same shareable stage kind in their
registry rows and identical values of what it ``reads``: :func:`xrad.methods.registry.shared_stage_key`)
train it once per split: later cells load the first cell's finished stage 1
through ``pretrain.encoder_from`` (recorded as ``pretrain_from`` in ``benchmark_cell.json``), so e.g. the kNN
ablation scores the very encoder the self-taught detector was fine-tuned from, as in the paper. Each cell is a
run folder ``output/cells/<method>__r<ratio>__split<s>__seed<t>``
written by :func:`xrad.jobs.train.run_training`; a cell whose ``summary.json`` exists is skipped, so
re-running the command resumes the grid.

Results are tied to the settings that produced them, so an edited YAML cannot silently reuse them:
``split_records/split<s>__r<ratio>.json`` records the settings and the source manifest's SHA-256 that made
``splits/split<s>__r<ratio>.csv``, and each cell folder holds ``benchmark_inputs.json`` (its method
config after every override, and its split's record), written before it trains. Before anything is trained,
a split or a finished or partly-trained cell whose record differs from what the YAML asks for now is refused
with :class:`~xrad.errors.ConfigError` naming it and the changed keys (:mod:`xrad.jobs.benchmark_records`).
Execution-only settings (``trainer``
sections, ``--progress``, ``--only``, ``--split-seeds``) are not compared.

Outputs: ``results.csv`` (one row per cell and split), ``table1.csv``/``table1.md`` (the paper's Table 1
layout) and ``pairwise.csv`` (Welch t-tests).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xrad.config import merge_overrides
from xrad.errors import ConfigError, DataError
from xrad.evaluation import metrics
from xrad.evaluation.tables import pairwise_tests, table1, table1_markdown
from xrad.jobs.benchmark_grid import BenchmarkConfig, Cell, iter_cells, load_benchmark_config, method_config
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
from xrad.utils.atomic import write_csv, write_json, write_text

__all__ = ["RESULT_COLUMNS", "cell_rows", "load_benchmark_config", "prepare_split", "run_benchmark", "write_tables"]

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


def pretrain_key(method_cfg: dict[str, Any], manifest: Path) -> tuple[str, str] | None:
    """(stage-1 output file, key) identifying the stage 1 a cell would train, or None when it has no
    shareable stage 1 (see :func:`xrad.methods.registry.shared_stage_key`)."""
    from xrad.methods.registry import DETECTORS, load_config, shared_stage_key

    detector = DETECTORS.get(str(method_cfg.get("method")))
    if detector is None or not detector.stages[0][1].shareable:  # nothing to share: no need to load it
        return None
    return shared_stage_key(load_config(method_cfg), manifest)


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
    settings = split_settings(config, split_seed, ratio)
    split = make_split(read_manifest(config.manifest), settings)
    # group: unit is the papers' protocol (patient × body part units), in which one patient's hand and wrist
    # may fall in different splits by design: make_split records how many patients cross; only a
    # patient-level split must be leak-free.
    if settings.group == "patient":
        check_leakage(split)
    write_manifest(split, path)
    return path


def _seconds_from_summary(summary: dict[str, Any]) -> float:
    for key in ("seconds", "total_seconds", "wall_seconds"):
        if isinstance(summary.get(key), (int, float)):
            return float(summary[key])
    timings = summary.get("timings_s", summary.get("timings"))
    if isinstance(timings, dict):  # per-step seconds; "total_*" entries would count them twice
        values = [v for k, v in timings.items() if isinstance(v, (int, float)) and not str(k).startswith("total")]
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
    train: Callable[..., dict[str, Any]] | None = None,
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
        from xrad.jobs.train import run_training

        train = run_training
    log = log or (lambda message: None)
    if not config.manifest.is_file():
        raise DataError(
            f"{config.manifest}: benchmark manifest not found; make it with `xrad index` (and `xrad preprocess`)"
        )
    cells = iter_cells(config)
    unknown = sorted(set(only or ()) - set(config.methods))
    if unknown:
        raise ConfigError(
            f"--only {', '.join(unknown)}: not a method of this benchmark (its methods: {', '.join(config.methods)})"
        )
    unknown_seeds = sorted(set(only_split_seeds or ()) - set(config.split_seeds))
    if unknown_seeds:
        raise ConfigError(
            f"--split-seeds {unknown_seeds}: not split seeds of this benchmark (its split seeds: {config.split_seeds})"
        )
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
        if shared and source is not None and source != cell_dir and (source / "pretrain" / shared[0]).is_file():
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
