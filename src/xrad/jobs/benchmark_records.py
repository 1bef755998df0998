"""What produced a benchmark's splits and cells, recorded and checked, so an edited YAML cannot reuse them.

``split_records/split<s>__r<ratio>.json`` records the settings and the source manifest's SHA-256 that made
``splits/split<s>__r<ratio>.csv``; each cell folder holds ``benchmark_inputs.json`` (its method config after
every override, and its split's record), written before it trains. :func:`check_split` and
:func:`check_cell` raise :class:`~xrad.errors.ConfigError` naming the output and the changed keys.
Execution-only settings (the ``trainer`` section) are not compared.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xrad.config import comparable_config
from xrad.errors import ConfigError
from xrad.utils.atomic import write_json
from xrad.utils.hashing import sha256_file

if TYPE_CHECKING:
    from xrad.data.splits import SplitConfig
    from xrad.jobs.benchmark_grid import BenchmarkConfig, Cell

CELL_INPUTS = "benchmark_inputs.json"  # in each cell folder: what the cell is trained from (see check_cell)


def split_path(config: BenchmarkConfig, split_seed: int, ratio: float) -> Path:
    """Where the split manifest of (split seed, ratio) lives."""
    return config.output / "splits" / f"split{split_seed}__r{ratio:g}.csv"


def split_record_path(config: BenchmarkConfig, split_seed: int, ratio: float) -> Path:
    """Where the record of what made that split lives (:func:`split_record`). Its own folder keeps
    ``splits/`` a folder of manifests only, as before records existed."""
    return config.output / "split_records" / f"split{split_seed}__r{ratio:g}.json"


def split_settings(config: BenchmarkConfig, split_seed: int, ratio: float) -> SplitConfig:
    """The validated :class:`xrad.data.splits.SplitConfig` of (split seed, ratio); ConfigError if invalid."""
    from xrad.data.splits import SplitConfig

    settings = SplitConfig(seed=split_seed, abnormal_ratio=ratio, body_parts=config.body_parts, **config.split_options)
    settings.validate()
    return settings


def split_record(config: BenchmarkConfig, split_seed: int, ratio: float) -> dict[str, Any]:
    """What a split is made from: every split setting (defaults included, so spelling out a default is no
    change) and the source manifest's content hash (its path is kept for people, not compared: a moved but
    identical manifest is the same data)."""
    settings = dataclasses.asdict(split_settings(config, split_seed, ratio))
    record: dict[str, Any] = _plain(
        {
            "split": settings,
            "manifest": str(config.manifest),
            "manifest_sha256": sha256_file(config.manifest),
        }
    )
    return record


def _plain(value: Any) -> Any:
    """``value`` as JSON reads it back (tuples → lists, keys → str): records compare with fresh values."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested mappings (added and removed keys included)."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [] if old == new else [prefix.rstrip(".") or "(all)"]
    changed = []
    for key in sorted(set(old) | set(new), key=str):
        if key not in old or key not in new:
            changed.append(f"{prefix}{key}")
        else:
            changed.extend(_changed_keys(old[key], new[key], f"{prefix}{key}."))
    return changed


def _split_changes(recorded: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """The benchmark-YAML names of the split settings that differ between two split records."""
    names = {"seed": "split seed", "abnormal_ratio": "abnormal ratio"}
    changed = [names.get(key, f"data.{key}") for key in _changed_keys(recorded.get("split"), expected["split"])]
    if recorded.get("manifest_sha256") != expected["manifest_sha256"]:
        moved = recorded.get("manifest") != expected["manifest"]
        changed.append(
            f"data.manifest ({recorded.get('manifest')} → {expected['manifest']})"
            if moved
            else "data.manifest (its content)"
        )
    return changed


def check_split(config: BenchmarkConfig, split_seed: int, ratio: float) -> None:
    """Refuse an existing split manifest made from other settings or data than the YAML's (ConfigError)."""
    path = split_path(config, split_seed, ratio)
    expected = split_record(config, split_seed, ratio)  # validates the settings even for finished splits
    if not path.is_file():
        return
    record = split_record_path(config, split_seed, ratio)
    if not record.is_file():
        # Made before splits had records: nothing tells what produced it, so it is adopted as made from
        # the present settings (the alternative, refusing, would orphan every older benchmark). From now
        # on a change is caught.
        write_json(record, expected)
        return
    changed = _split_changes(json.loads(record.read_text(encoding="utf-8")), expected)
    if changed:
        raise ConfigError(
            f"{path}: this split was made with other settings ({'; '.join(changed)} changed); choose another "
            f"`output:` (or -o) for the new settings, or delete this file and the cells/*__r{ratio:g}__"
            f"split{split_seed}__* folders trained on it to remake them (its record: {record})"
        )


def cell_record(config: BenchmarkConfig, cell: Cell, cell_cfg: dict[str, Any]) -> dict[str, Any]:
    """What a cell is trained from: its method config after every override (before the benchmark points
    ``pretrain.encoder_from`` at a shared stage 1: which identical stage 1 gets loaded depends on the order
    cells ran in, not on the settings) and its split's record."""
    return {"config": _plain(cell_cfg), "split": split_record(config, cell.split_seed, cell.abnormal_ratio)}


def check_cell(cell_dir: Path, expected: dict[str, Any]) -> None:
    """Refuse a (finished or partly trained) cell folder trained from other settings than ``expected``.

    The configs compare by run_training's own rule (:func:`xrad.config.comparable_config`: the ``trainer``
    section, devices and the like, may change between invocations). A finished cell without a record (from
    before records existed) is adopted as trained from the present settings, like an unrecorded split.
    """
    path = cell_dir / CELL_INPUTS
    if not path.is_file():
        if (cell_dir / "summary.json").is_file():
            write_json(path, expected)
        return  # an unfinished cell without a record gets one when it trains; run_training checks its config
    recorded = json.loads(path.read_text(encoding="utf-8"))
    changed = _changed_keys(comparable_config(recorded.get("config") or {}), comparable_config(expected["config"]))
    changed += _split_changes(recorded.get("split") or {}, expected["split"])
    if changed:
        raise ConfigError(
            f"{cell_dir}: this cell was trained with other settings ({'; '.join(changed)} changed); choose "
            f"another `output:` (or -o) for the new settings, or delete this cell folder to retrain it"
        )
