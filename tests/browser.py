"""Headless Debian Chromium for the page tests (service, worklist, report): offline flags, the DOM after
load, a screenshot, and structural checks of that screenshot (not pixel comparisons)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
NO_CHROMIUM = "chromium is not installed (apt-get install chromium)"

_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--allow-file-access-from-files",
]


def chromium(args: list[str], profile: Path, timeout: float = 90) -> subprocess.CompletedProcess:
    """Run headless Chromium with flags that keep it offline and quiet (its own profile folder)."""
    assert CHROMIUM is not None, NO_CHROMIUM
    command = [CHROMIUM, *_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def dom_and_screenshot(
    url: str, tmp_path: Path, name: str, size: tuple[int, int] = (1200, 1600), budget_ms: int = 30000
) -> tuple[str, np.ndarray]:
    """The DOM of ``url`` once its scripts have run (``budget_ms`` of virtual time) and an RGB screenshot."""
    budget = f"--virtual-time-budget={budget_ms}"
    dom = chromium([budget, "--dump-dom", url], tmp_path / f"{name}-p1").stdout
    shot = tmp_path / f"{name}.png"
    chromium([budget, f"--window-size={size[0]},{size[1]}", f"--screenshot={shot}", url], tmp_path / f"{name}-p2")
    assert shot.is_file(), f"Chromium wrote no screenshot of {url}"
    rgb = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert rgb.shape[:2] == (size[1], size[0])
    return dom, rgb


def assert_drawn(rgb: np.ndarray, min_coloured: int = 100) -> None:
    """The page is not blank and shows colour (a heatmap or a colour bar): grey text on white has none."""
    assert rgb.std() > 10, "the screenshot is blank"
    assert (np.abs(rgb[..., 0] - rgb[..., 2]) > 60).sum() > min_coloured, "nothing coloured is drawn"
