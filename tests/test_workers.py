"""Worker processes never outlive the command that started them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


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

