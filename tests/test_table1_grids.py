"""benchmarks/table1/: the paper's Table 1 and anomaly-ratio sweep as benchmark grids, and their CPU twins."""

from __future__ import annotations

from pathlib import Path

import pytest

from xrad.jobs.benchmark_grid import Cell, load_benchmark_config, method_config
from xrad.methods.registry import load_config

GRIDS = Path(__file__).resolve().parents[1] / "benchmarks" / "table1"
NEW_ROWS = {"subspace", "subspace_ae", "drocc", "joint_deep_sad", "moco_multi_sphere", "ocgan"}


@pytest.mark.parametrize("name", sorted(p.name for p in GRIDS.glob("*.yaml")))
def test_every_grid_loads_and_every_method_config_is_valid(name: str) -> None:
    config = load_benchmark_config(GRIDS / name)
    for label in config.methods:
        cfg = load_config(method_config(config, Cell(label, config.abnormal_ratios[0], 0, config.training_seeds[0])))
        assert cfg.seed == config.training_seeds[0]


@pytest.mark.parametrize("name", ["table1_paper.yaml", "table1_cpu.yaml", "table1_phantoms_cpu.yaml"])
def test_table1_grids_hold_every_row_at_five_percent_with_four_replicates(name: str) -> None:
    config = load_benchmark_config(GRIDS / name)
    assert config.abnormal_ratios == [0.05] and len(config.training_seeds) == 4
    methods = {load_config(method_config(config, Cell(m, 0.05, 0, 0))).method for m in config.methods}
    assert methods >= NEW_ROWS
    assert {"self_taught", "deep_sad_ae", "knn", "knn_ae", "supervised", "deep_sad_imagenet"} <= methods


def test_the_paper_grids_use_the_paper_settings() -> None:
    table = load_benchmark_config(GRIDS / "table1_paper.yaml")
    assert table.training_seeds == [1, 11, 111, 1111] and table.split_options["group"] == "unit"
    # As the grid runs them: a row's own overrides count (ocgan_paper is 128 px alone, 512 px in the grid).
    cells = [Cell(label, 0.05, 0, table.training_seeds[0]) for label in table.methods]
    assert all(load_config(method_config(table, cell)).data.image_size == 512 for cell in cells)
    for name in ("sweep_paper.yaml", "sweep_cpu.yaml"):
        sweep = load_benchmark_config(GRIDS / name)
        assert sweep.abnormal_ratios == [0.025, 0.05, 0.10, 0.15] and len(sweep.training_seeds) == 4
        assert {load_config(p).method for p in sweep.methods.values()} == {"self_taught", "deep_sad_ae"}
