"""Shared fixtures: the real data in ../shared (skipped when absent) and small generated data sets."""

from __future__ import annotations

from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
FRACATLAS = SHARED_DATA / "fracatlas"


@pytest.fixture(scope="session")
def fracatlas_dir() -> Path:
    """The FracAtlas folder of ../shared/data; the test is skipped where it is absent."""
    if not (FRACATLAS / "labels.csv").is_file():
        pytest.skip(f"real FracAtlas data not found at {FRACATLAS} (../shared/data is absent on this machine)")
    return FRACATLAS
