"""Typed command-line values, checked when the arguments are parsed.

A bad number (``--batch-size 0``, ``--port 70000``, ``--confidence 2``) is refused by argparse with one line
naming the option, before any work is done — not hours later as a traceback from deep inside a library.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer ≥ ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be ≥ {minimum}, got {value}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer in [``low``, ``high``]."""
    any_int = int_at_least(-(2**63))

    def parse(text: str) -> int:
        value = any_int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in {low}..{high}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def finite_float(text: str) -> float:
    """An argparse type: a finite number (no nan / inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def float_at_least(minimum: float, *, strict: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number ≥ ``minimum`` (> when ``strict``)."""

    def parse(text: str) -> float:
        value = finite_float(text)
        if value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '≥'} {minimum:g}, got {value:g}")
        return value

    parse.__name__ = "number"
    return parse


def open_fraction(text: str) -> float:
    """An argparse type: a number strictly between 0 and 1 (a specificity, a confidence level)."""
    value = finite_float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {value:g}")
    return value


def open_fractions(text: str) -> tuple[float, ...]:
    """An argparse type: comma-separated numbers strictly between 0 and 1 (e.g. ``0.9,0.95``)."""
    values = tuple(open_fraction(part.strip()) for part in text.split(",") if part.strip())
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers in (0, 1), got {text!r}")
    return values
