"""Parameters of the offline preprocessing, stored with every cache and every trained artefact."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from xrad.config.sizes import cache_size_problem
from xrad.errors import ConfigError

# Keys of earlier versions that no longer mean anything; from_dict accepts and ignores them.
RETIRED_KEYS = frozenset({"border_fraction", "inverted_border_median"})


@dataclass(frozen=True)
class PreprocessParams:
    """Every knob of :func:`xrad.preprocess.preprocess_image`, with the defaults used by xrad.

    Carrier detection: quadrilateral candidates must cover at least ``carrier_min_area`` of the image,
    be convex, and have corner angles with ``|cos| < carrier_max_cos`` (≈ 73°–107° at 0.3). The chosen
    candidate maximises the quality score documented in :mod:`xrad.preprocess.carrier`.
    Inversion (:func:`xrad.preprocess.segment.inversion_evidence`, on a copy of at most ``inversion_px``):
    bright plateaus touching the border whose surroundings are darker than ``inversion_margin_dark``
    (normalised) are film margins and set aside; then the image is inverted only when the
    bright-plateau/dark-basin cue (h-domes of ``inversion_dome_height`` × the 1–99 % range) exceeds
    ``inversion_min_extrema``, the edge-texture cue ``inversion_min_texture`` and the tissue-edge cue
    ``inversion_min_tissue``; pixels whose polarity is known (DICOM) are never re-guessed.
    Intensity: the crop is stretched between its ``contrast_low``/``contrast_high`` percentiles (1 % and
    99.9 %: the paper's AutoContrast cuts 1 % at both ends, which saturates the brightest 1 % of every
    image and so erases exactly what makes metal implants stand out from bone; 99.9 % still ignores a
    burned-in marker's few pixels).
    Segmentation: Yen threshold on the equalised crop with hysteresis low factors from ``hysteresis_grid``
    (searched once per image at ``search_px``), an opening of radius ``opening_fraction`` × major axis,
    then the body component, holes smaller than ``max_hole_fraction`` of it filled: flat rows and columns
    the mask covers end to end within ``mask_border_band`` × the major axis of a side (collimator bars,
    film and detector edges) are cut off, and the largest component that is not a border strip, flat (no
    bone texture), darker than the rest or a plate-sized rectangle is taken
    (:func:`xrad.preprocess.segment._body_component`); ``mask_border_band`` = 0 takes the largest component,
    as before.
    Output: major axis resized to ``size`` (the cache size, :mod:`xrad.config.sizes`) and padded to a square.
    Ablation switches (Davletshina et al.: raw vs carrier crop vs crop + body mask, each ± histogram
    equalisation): ``carrier_crop`` off keeps the whole image (no carrier search; flag ``uncropped``),
    ``body_mask`` off makes the mask the whole image (every pixel is "body"), and ``equalize`` (``none``,
    ``global`` or ``clahe`` with ``clahe_clip_limit`` and a ``clahe_tile_grid`` × ``clahe_tile_grid`` grid,
    OpenCV's) equalises the body part of the resized image (:mod:`xrad.preprocess.equalise`).
    """

    size: int = 512
    carrier_min_area: float = 0.15
    carrier_max_cos: float = 0.3
    inversion_px: int = 256
    inversion_dome_height: float = 0.2
    inversion_min_extrema: float = 0.2
    inversion_min_texture: float = 0.08
    inversion_min_tissue: float = 0.02
    inversion_margin_dark: float = 0.3
    low_contrast_fraction: float = 0.05
    contrast_low: float = 1.0
    contrast_high: float = 99.9
    hysteresis_grid: tuple[float, ...] = (0.3, 0.45, 0.6, 0.75, 0.9)
    search_px: int = 128
    opening_fraction: float = 0.01
    max_hole_fraction: float = 0.02
    mask_border_band: float = 0.06
    carrier_crop: bool = True
    body_mask: bool = True
    equalize: str = "none"
    clahe_clip_limit: float = 2.0
    clahe_tile_grid: int = 8

    def __post_init__(self) -> None:
        if cache_size_problem(self.size):
            raise ConfigError(f"preprocess size (the cache size) {cache_size_problem(self.size)}")
        if not 0.0 < self.carrier_min_area < 1.0:
            raise ConfigError(f"carrier_min_area must be in (0, 1), got {self.carrier_min_area}")
        if not 0.0 <= self.contrast_low < self.contrast_high <= 100.0:
            raise ConfigError("contrast percentiles must satisfy 0 <= low < high <= 100")
        if self.inversion_px < 32:
            raise ConfigError(f"inversion_px must be >= 32, got {self.inversion_px}")
        if not 0.0 < self.inversion_dome_height < 1.0:
            raise ConfigError(f"inversion_dome_height must be in (0, 1), got {self.inversion_dome_height}")
        if not all(
            0.0 <= t < 1.0
            for t in (
                self.inversion_min_extrema,
                self.inversion_min_texture,
                self.inversion_min_tissue,
                self.inversion_margin_dark,
            )
        ):
            raise ConfigError("inversion_min_extrema/_texture/_tissue and inversion_margin_dark must be in [0, 1)")
        if not self.hysteresis_grid or not all(0.0 < f <= 1.0 for f in self.hysteresis_grid):
            raise ConfigError("hysteresis_grid must hold factors in (0, 1]")
        if not 0.0 <= self.mask_border_band < 0.5:
            raise ConfigError(f"mask_border_band must be in [0, 0.5), got {self.mask_border_band}")
        if self.equalize not in ("none", "global", "clahe"):
            raise ConfigError(f"equalize must be none, global or clahe, got {self.equalize!r}")
        if not self.clahe_clip_limit > 0:
            raise ConfigError(f"clahe_clip_limit must be > 0, got {self.clahe_clip_limit}")
        if not 1 <= self.clahe_tile_grid <= 64:
            raise ConfigError(f"clahe_tile_grid must be in [1, 64], got {self.clahe_tile_grid}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (tuples become lists)."""
        out = asdict(self)
        out["hysteresis_grid"] = list(self.hysteresis_grid)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessParams:
        """Inverse of :meth:`to_dict`; unknown keys are a :class:`ConfigError`, retired ones are dropped.

        Files written before the inversion rule changed carry ``border_fraction`` and
        ``inverted_border_median``: they parameterised the outer-band rule, which no longer exists, so
        they load with today's rule (the old one inverted correctly exposed images with bright margins).
        Files without ``mask_border_band`` load with 0 (the largest-component mask they were made with).
        """
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k not in RETIRED_KEYS}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown preprocessing parameter(s): {', '.join(unknown)}")
        if "hysteresis_grid" in values:
            values["hysteresis_grid"] = tuple(float(v) for v in values["hysteresis_grid"])
        # Written before the border-bar rule: its masks were the largest component, so keep that rule (an
        # artefact scores raw images as it was trained; an old cache is refused, not resumed with mixed masks).
        values.setdefault("mask_border_band", 0.0)
        return cls(**values)
