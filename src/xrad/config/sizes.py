"""The two image sizes of xrad and their one rule each.

- The **cache size** (``xrad preprocess --size``, ``xrad run --cache-px``, :class:`~xrad.preprocess.params.
  PreprocessParams` ``size``, the phantoms' ``size``): the major axis of the images written to disk.
- The **network input size** (``data.image_size`` of a detector config, ``image_size`` in an artefact): the
  square the image banks and scoring resize the cache to. It may be smaller than the cache size.
"""

from __future__ import annotations

MIN_INPUT_SIZE = 32  # ResNet-18 downsamples by 32
CACHE_SIZE_RANGE = (32, 4096)


def cache_size_problem(px: int) -> str | None:
    """Why ``px`` cannot be a cache size, or None when it can."""
    low, high = CACHE_SIZE_RANGE
    return None if low <= px <= high else f"must be {low}..{high} px, got {px}"


def input_size_problem(px: int) -> str | None:
    """Why ``px`` cannot be a network input size, or None when it can."""
    return None if px >= MIN_INPUT_SIZE else f"must be ≥ {MIN_INPUT_SIZE} (ResNet-18 downsamples by 32), got {px}"
