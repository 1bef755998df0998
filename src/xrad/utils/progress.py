"""Progress that a person can read in a terminal and in a log file.

On a terminal a bar redraws in place (tqdm). When the output is a file or a pipe, a redrawing bar writes
every redraw as text (the main job once wrote 60 kB of them), so instead at most ``PLAIN_LINES`` plain
lines are written per task: how far it got, how fast, and a final line.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

_ENABLED = True  # the process-wide switch of the CLI's --quiet (set_progress)

PLAIN_LINES = 4  # lines per task when not on a terminal: 25 %, 50 %, 75 %, done
QUIET_SECONDS = 10.0  # a task that is this young writes no intermediate line (short tasks: one line)


def set_progress(enabled: bool) -> None:
    """Turn every progress display of this process on or off (``xrad VERB --quiet`` turns them off)."""
    global _ENABLED
    _ENABLED = bool(enabled)


def is_terminal(stream: IO[str] | None = None) -> bool:
    """Whether ``stream`` (stderr by default) is an interactive terminal."""
    stream = stream if stream is not None else sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


class PlainProgress:
    """The non-terminal stand-in for a tqdm bar: ``update(n)`` and ``set_postfix_str``, a few lines in all."""

    def __init__(self, total: int | None, desc: str, unit: str, stream: IO[str]) -> None:
        self.total, self.desc, self.unit, self.stream = total, desc, unit, stream
        self.n, self.postfix, self.started = 0, "", time.perf_counter()
        self._next = 1

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.total and self._next < PLAIN_LINES and self.n >= self._next * self.total / PLAIN_LINES:
            while self._next < PLAIN_LINES and self.n >= self._next * self.total / PLAIN_LINES:
                self._next += 1
            if time.perf_counter() - self.started >= QUIET_SECONDS:
                self._line()

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text

    def _line(self, final: bool = False) -> None:
        seconds = time.perf_counter() - self.started
        rate = f", {self.n / seconds:.1f} {self.unit}/s" if seconds > 0 and self.n else ""
        of = f"/{self.total}" if self.total else ""
        tail = f" — {self.postfix}" if self.postfix else ""
        word = "done" if final else "…"
        print(
            f"{self.desc}: {self.n}{of} {self.unit} in {seconds:.0f} s{rate} {word}{tail}", file=self.stream, flush=True
        )

    def close(self) -> None:
        self._line(final=True)


@contextmanager
def progress(
    total: int | None, desc: str, unit: str = "img", enabled: bool = True, stream: IO[str] | None = None
) -> Iterator[Any]:
    """A progress reporter: a tqdm bar on a terminal, a few plain lines otherwise, nothing when disabled."""
    stream = stream if stream is not None else sys.stderr
    if not (enabled and _ENABLED):
        from tqdm.auto import tqdm

        with tqdm(total=total, disable=True) as bar:
            yield bar
        return
    if is_terminal(stream):
        from tqdm.auto import tqdm

        with tqdm(total=total, desc=desc, unit=unit, file=stream, mininterval=0.5, dynamic_ncols=True) as bar:
            yield bar
        return
    plain = PlainProgress(total, desc, unit, stream)
    try:
        yield plain
    finally:
        plain.close()
