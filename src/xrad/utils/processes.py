"""Worker processes that do not outlive the process that started them.

A ``ProcessPoolExecutor``'s workers wait on a pipe for work; when the parent is killed with SIGKILL (the OOM
killer, ``kill -9``, a scheduler's time limit) nothing closes that pipe for them, so they wait for ever and keep
their memory. :func:`die_with_parent` is a pool ``initializer``: on Linux the kernel is asked to kill the worker
when its parent dies (``PR_SET_PDEATHSIG``); everywhere, a daemon thread checks once a second that the parent
is still the one the worker started under and exits otherwise (also covering a parent that died before the
worker got this far).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

__all__ = ["die_with_parent"]

_PR_SET_PDEATHSIG = 1
POLL_SECONDS = 1.0


def die_with_parent(parent: int | None = None) -> None:
    """Make the calling (worker) process exit when its parent process ends; ``parent`` defaults to the current
    parent's pid."""
    parent = os.getppid() if parent is None else parent
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watchdog below still applies
    if os.getppid() != parent:  # the parent is gone already
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(POLL_SECONDS)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="xrad-die-with-parent", daemon=True).start()
