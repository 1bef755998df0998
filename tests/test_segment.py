"""Body segmentation against border bars: a bright collimator bar larger than the body part is not the body."""

from __future__ import annotations

import numpy as np
import pytest

from xrad.preprocess import PreprocessParams, preprocess_image
from xrad.preprocess.segment import segment_body

PARAMS = PreprocessParams(size=256)


def _limb_on_bar(touching: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uint8 image, body truth, bar truth): dark noisy air, a flat saturated bar along the bottom border
    (larger than the body) and a forearm-like limb (soft tissue with a brighter, textured bone inside)."""
    rng = np.random.default_rng(seed)
    h, w = 320, 256
    image = 20 + rng.normal(0, 3, (h, w))
    bar = np.zeros((h, w), bool)
    bar[h - 36 :, :] = True  # 36 x 256 = 9,216 px, 11 % of the height (FracAtlas's bars: about 5-8 %)
    body = np.zeros((h, w), bool)
    bottom = h - 36 if touching else h - 90
    body[40:bottom, 106:150] = True  # 44 x 190 = 8,360 px apart from the bar
    bone = np.zeros((h, w), bool)
    bone[40:bottom, 120:136] = True
    image[body] = 110 + rng.normal(0, 6, int(body.sum()))
    image[bone] = 170 + rng.normal(0, 12, int(bone.sum()))  # trabecular texture
    image[bar] = 255
    return np.clip(np.round(image), 0, 255).astype(np.uint8), body, bar


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.parametrize("touching", [False, True])
def test_a_border_bar_larger_than_the_body_is_not_the_mask(touching):
    gray, body, bar = _limb_on_bar(touching)
    assert bar.sum() > body.sum() or touching  # the old rule (largest component) picks the bar
    mask, fallback, _ = segment_body(gray, PARAMS)
    mask = mask > 0
    assert not fallback
    assert (mask & bar).sum() < 0.02 * bar.sum(), "the mask covers the collimator bar"
    assert _iou(mask, body) >= 0.85


def test_mask_border_band_zero_is_the_largest_component():
    """The switch keeps the old rule: the largest bright component, here the bar."""
    gray, body, bar = _limb_on_bar(touching=False)
    mask, _, _ = segment_body(gray, PreprocessParams(size=256, mask_border_band=0.0))
    assert (mask > 0)[bar].mean() > 0.9 and not (mask > 0)[body].any()


def test_through_preprocess_image_the_mask_is_on_the_limb():
    gray, body, bar = _limb_on_bar(touching=False, seed=1)
    result = preprocess_image(gray.astype(np.float32) / 255.0, PreprocessParams(size=256, carrier_crop=False))
    mask = result.mask > 0
    # 320 px tall -> 256: the bar's 36 rows become the bottom ~29 rows of the output.
    rows = np.flatnonzero(mask.any(axis=1))
    assert rows.size and rows.max() < 256 - 29, "the mask reaches into the bar"
    assert mask.sum() > 0.5 * body.sum() * (256 / 320) ** 2


def test_segmentation_is_deterministic():
    gray, _, _ = _limb_on_bar(touching=True, seed=2)
    first, second = segment_body(gray, PARAMS), segment_body(gray.copy(), PARAMS)
    assert np.array_equal(first[0], second[0]) and first[1:] == second[1:]


def test_records_written_before_the_rule_keep_the_largest_component(tmp_path):
    """A params.json / artefact without ``mask_border_band`` was made with the largest-component mask: it loads
    with 0, so an artefact scores as it was trained and an old cache is refused instead of resumed with mixed masks."""
    import json

    from xrad.errors import DataError
    from xrad.preprocess.cache import _check_params

    old = PARAMS.to_dict()
    old.pop("mask_border_band")
    assert PreprocessParams.from_dict(old).mask_border_band == 0.0
    assert PreprocessParams.from_dict(PARAMS.to_dict()) == PARAMS
    (tmp_path / "params.json").write_text(json.dumps(old), encoding="utf-8")
    with pytest.raises(DataError, match="other preprocessing parameters"):
        _check_params(tmp_path, PARAMS)
    _check_params(tmp_path, PreprocessParams(size=256, mask_border_band=0.0))
