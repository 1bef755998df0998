"""Heatmaps on one scale per artefact (fixed at training from the validation normals' maps), with the mask
outline and a colour bar, and a flag when the body mask failed."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from xrad.inference.heatmaps import HEAT_SCALE_QUANTILE, heat_scale_of, mask_problem, scale_maps


def test_scale_maps_divides_by_the_fixed_scale_and_clips() -> None:
    maps = np.array([[[[0.0, 1.0], [2.0, 4.0]]], [[[0.5, 0.5], [0.5, 1.0]]]], np.float32)
    masks = np.array([[[[1, 1], [1, 0]]], [[[1, 1], [1, 1]]]], np.uint8)
    fixed = scale_maps(maps, masks, 2.0)
    np.testing.assert_allclose(fixed[0, 0], [[0.0, 0.5], [1.0, 0.0]])  # 4 is outside the mask
    np.testing.assert_allclose(fixed[1, 0], [[0.25, 0.25], [0.25, 0.5]])  # a weak map stays weak
    per_image = scale_maps(maps, masks, None)
    assert per_image[1].max() == 1.0  # the old behaviour, each map to its own maximum


def test_the_scale_is_a_quantile_of_the_normals_map_maxima() -> None:
    class Fixed(torch.nn.Module):
        def heatmap(self, images: torch.Tensor) -> torch.Tensor:
            return images * 10.0

    images = torch.zeros((5, 1, 8, 8), dtype=torch.uint8)
    for i in range(5):
        images[i, 0, 2, 3] = 51 * (i + 1)  # peaks 2, 4, 6, 8, 10 after ×10 of [0, 1] inputs
    masks = torch.ones_like(images)
    expected = float(np.quantile([2.0, 4.0, 6.0, 8.0, 10.0], HEAT_SCALE_QUANTILE))
    assert heat_scale_of(Fixed(), images, masks) == pytest.approx(expected, rel=1e-5)


def test_mask_problem_flags_an_empty_mask_and_one_on_the_background() -> None:
    image = np.full((40, 40), 20, np.uint8)
    image[10:30, 10:30] = 200  # the body
    body = np.zeros((40, 40), np.uint8)
    body[10:30, 10:30] = 1
    assert mask_problem(image, body) == ""
    assert "covers the background" in mask_problem(image, 1 - body)
    assert "covers 0.0 %" in mask_problem(image, np.zeros_like(body))


def test_trained_artefact_draws_every_map_on_its_stored_scale(tiny_run: dict) -> None:
    from xrad.data.manifest import read_manifest
    from xrad.inference.artefact import read_meta
    from xrad.inference.heatmaps import explain_row
    from xrad.inference.scoring import load_scorer

    scale = read_meta(tiny_run["run_dir"] / "artefact").normal_reference["heat_scale"]
    assert scale > 0
    scorer = load_scorer(tiny_run["run_dir"] / "artefact")
    frame = read_manifest(tiny_run["manifest"])
    rows = frame[frame["split"] == "test"].head(6)
    explanations = [explain_row(scorer, row) for _, row in rows.iterrows()]
    assert all(e.heat_scale == scale and e.mask_warning == "" for e in explanations)
    peaks = [float(e.heat.max()) for e in explanations]
    assert min(peaks) < 1.0  # not every map is stretched to its own maximum
    figure = Image.open(io.BytesIO(explanations[0].figure_png()))
    assert figure.size[1] == 40 and figure.size[0] > 40  # the colour bar beside the overlay
    bar = np.asarray(figure.convert("RGB"))[:, 41]
    assert bar[0, 0] > bar[0, 2] and bar[-1, 2] > bar[-1, 0]  # red (high) at the top, blue (0) at the bottom


def test_service_reply_carries_the_scale_and_the_page_a_colour_bar(tiny_run: dict) -> None:
    fastapi_testclient = pytest.importorskip("fastapi.testclient")
    from xrad.inference.artefact import read_meta
    from xrad.service.app import app_from_artefact

    artefact = tiny_run["run_dir"] / "artefact"
    client = fastapi_testclient.TestClient(app_from_artefact(artefact))
    from pathlib import Path

    image = Path(tiny_run["manifest"]).parent / "image001.png"  # like the training images
    body = client.post("/score", params={"body_part": "HAND"}, content=image.read_bytes()).json()
    assert body["heat_scale"] == read_meta(artefact).normal_reference["heat_scale"]
    assert body["warnings"] == []  # in distribution, and the mask (the whole image here) did not fail
    page = client.get("/").text
    assert 'id="colourbar"' in page and 'id="warnings"' in page


def test_service_serves_no_cdn_backed_docs_page_but_its_schema() -> None:
    fastapi_testclient = pytest.importorskip("fastapi.testclient")
    from xrad.service.app import create_app

    client = fastapi_testclient.TestClient(create_app(lambda *a: {"score": 0.0}))
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404
    assert "/score" in client.get("/openapi.json").json()["paths"]
