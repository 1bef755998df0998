"""Worker processes never outlive the command that started them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


_POOL = """
import os, sys, time
from concurrent.futures import ProcessPoolExecutor
from xrad.utils.processes import die_with_parent

def pid(_):
    return os.getpid()

if __name__ == "__main__":
    with ProcessPoolExecutor(2, initializer=die_with_parent) as pool:
        list(pool.map(pid, range(4)))
        print("ready", flush=True)
        time.sleep(600)
"""


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc (Linux)")
def test_pool_workers_started_with_die_with_parent_end_with_their_parent(tmp_path: Path) -> None:
    (tmp_path / "pool.py").write_text(_POOL)
    proc = subprocess.Popen([sys.executable, str(tmp_path / "pool.py")], stdout=subprocess.PIPE, text=True)
    workers: set[int] = set()
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        workers = _children(proc.pid)
        assert len(workers) == 2
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in workers), "a pool worker outlived its SIGKILLed parent"
    finally:
        for pid in [proc.pid, *workers]:  # the processes this test started, by their ids
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc (Linux)")
def test_sigkill_of_preprocess_leaves_no_worker_behind(tmp_path: Path) -> None:
    """Its two worker processes stayed alive, waiting for work for ever, after the parent was SIGKILLed."""
    rng = np.random.default_rng(0)
    rows = []
    (tmp_path / "img").mkdir()
    for i in range(300):
        path = tmp_path / "img" / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (192, 160), dtype=np.uint8)).save(path)
        rows.append(
            {
                "path": str(path),
                "patient_id": f"p{i}",
                "study_id": f"s{i}",
                "body_part": "HAND",
                "view": "",
                "label": 0,
                "source": "csv",
            }
        )
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "xrad.cli.main",
            "preprocess",
            str(tmp_path / "m.csv"),
            "-o",
            str(tmp_path / "cache"),
            "--workers",
            "2",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(workers) < 2 and proc.poll() is None:
            workers = _children(proc.pid)
            time.sleep(0.05)
        assert len(workers) >= 2, "the workers never started"
        while time.monotonic() < deadline and not list((tmp_path / "cache" / "meta").glob("*.json")):
            time.sleep(0.05)  # they are working
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in workers), "a worker outlived the killed preprocess"
    finally:
        for pid in [proc.pid, *workers]:  # the processes this test started, by their ids
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
