"""The scoring service: status codes by content, size limits, no PHI echoed, and one headless-browser run."""

from __future__ import annotations

import base64
import io
import logging
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

fastapi_testclient = pytest.importorskip("fastapi.testclient")

from xrad.inference.calibration import store_operating_point, threshold_for  # noqa: E402 - after the importorskip
from xrad.service.app import app_from_artefact, create_app  # noqa: E402 - after the importorskip

PATIENT_NAME, PATIENT_ID = "Doe^Jane", "SECRET-4711"


def png_bytes(shape=(96, 72), seed=0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(shape=(96, 72), seed=0) -> bytes:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    pixels = ((yy * 3 + xx * 2 + np.random.default_rng(seed).integers(0, 30, shape)) % 256).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def dicom_bytes(shape=(40, 30)) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.StudyInstanceUID = PATIENT_NAME, PATIENT_ID, generate_uid()
    ds.Rows, ds.Columns = shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.random.default_rng(1).integers(0, 4096, shape).astype(np.uint16).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def calibrated_artefact(tiny_artefact, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("svc") / "artefact"
    shutil.copytree(tiny_artefact, target)
    point = threshold_for(np.zeros(50), np.linspace(0.0, 1.0, 50), specificity=0.9)
    point["threshold"] = -1.0  # every real score is >= 0: uploads must come back flagged
    store_operating_point(target, point)
    return target


@pytest.fixture(scope="module")
def client(calibrated_artefact):
    app = app_from_artefact(calibrated_artefact, max_upload_bytes=200_000)
    return fastapi_testclient.TestClient(app)


def _upload(client, data: bytes, name: str = "x.bin", **params):
    return client.post("/score", files={"file": (name, data, "application/octet-stream")}, params=params)


def test_good_png_scores_with_flag_and_heatmap(client) -> None:
    response = _upload(client, png_bytes(), "image.png")
    assert response.status_code == 200, response.text
    body = response.json()
    assert np.isfinite(body["score"]) and body["score"] >= 0 and body["flagged"] is True
    assert body["operating_point"]["threshold"] == -1.0 and "study" not in body["operating_point"]
    assert body["image"] == {
        "format": "png",
        "width": 72,
        "height": 96,
        "bit_depth": 8,
        "truncated": False,
        "degenerate": "",
    }
    assert body["heatmap_on"] == "original"
    png = base64.b64decode(body["heatmap_png"].split(",", 1)[1])
    assert Image.open(io.BytesIO(png)).size == (72, 96)  # the overlay is in the original geometry
    # Raw-body upload of the same bytes gives the same score; without a heatmap none is returned.
    raw = client.post("/score", content=png_bytes(), params={"heatmap": "false"})
    assert raw.status_code == 200 and raw.json()["heatmap_png"] is None
    assert raw.json()["score"] == pytest.approx(body["score"], rel=1e-6)


def test_score_matches_framework_free_scoring(client, calibrated_artefact, tmp_path) -> None:
    import pandas as pd

    from xrad.inference.scoring import score_frame

    (tmp_path / "a.png").write_bytes(png_bytes(seed=4))
    expected = score_frame(calibrated_artefact, pd.DataFrame({"path": [str(tmp_path / "a.png")]}), workers=1)
    got = _upload(client, png_bytes(seed=4)).json()["score"]
    assert got == pytest.approx(float(expected["score"][0]), rel=1e-5)


def test_good_dicom_never_echoes_or_logs_identifiers(client, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    response = _upload(client, dicom_bytes(), f"{PATIENT_NAME}.dcm")
    assert response.status_code == 200, response.text
    assert response.json()["image"]["format"] == "dicom"
    for secret in (PATIENT_NAME, "Doe", PATIENT_ID):
        assert secret not in response.text
        assert secret not in caplog.text
    assert "scored a dicom upload" in caplog.text


def test_truncated_files_are_422(client) -> None:
    data = jpeg_bytes(shape=(200, 160))
    response = _upload(client, data[: len(data) * 2 // 3], "cut.jpg")
    assert response.status_code == 422 and "truncated" in response.json()["detail"]
    png = png_bytes(shape=(200, 160))
    response = _upload(client, png[:200], "cut.png")
    assert response.status_code == 422
    assert "cut.png" not in response.json()["detail"]  # the client-side name is never echoed


def test_truncated_allowed_when_configured(calibrated_artefact) -> None:
    client = fastapi_testclient.TestClient(app_from_artefact(calibrated_artefact, allow_truncated=True))
    data = jpeg_bytes(shape=(200, 160))
    response = client.post("/score", content=data[: len(data) * 2 // 3])
    assert response.status_code == 200 and response.json()["image"]["truncated"] is True


@pytest.mark.parametrize(
    "data",
    [b"hello, this is a text file\n", b"%PDF-1.7\n" + bytes(range(256)) * 4, b"<html><body>not an image</body></html>"],
)
def test_wrong_type_is_415(client, data: bytes) -> None:
    response = _upload(client, data, "looks-like.png")  # the name is not trusted, the content decides
    assert response.status_code == 415 and "PNG, JPEG, TIFF or DICOM" in response.json()["detail"]


def test_oversized_upload_is_413(client) -> None:
    big = png_bytes(shape=(800, 800))  # random pixels: ~640 kB, above the 200 kB limit
    assert len(big) > 200_000
    assert _upload(client, big, "big.png").status_code == 413
    assert client.post("/score", content=big).status_code == 413


def test_other_client_errors(client) -> None:
    assert _upload(client, b"", "empty.png").status_code == 422
    response = client.post("/score", data={"other": "field"}, files={"nofile": ("a", b"x")})
    assert response.status_code == 400 and "'file'" in response.json()["detail"]


def test_health_and_page(client) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["image_size"] == 64 and health["scorer"] == "sphere"
    assert health["max_upload_bytes"] == 200_000 and health["operating_point"]["threshold"] == -1.0
    page = client.get("/")
    assert page.status_code == 200 and 'id="heatmap"' in page.text and "demo" in page.text


def test_create_app_with_any_callable_and_no_operating_point() -> None:
    calls = []

    def predict(radiograph, want_heatmap, body_part):
        calls.append((radiograph.pixels.shape, want_heatmap, body_part))
        return {"score": 1.5, "sphere": None, "heatmap_png": None, "heatmap_on": None}

    client = fastapi_testclient.TestClient(create_app(predict, info={"method": "stub"}))
    response = client.post("/score", content=png_bytes(shape=(10, 12)), params={"body_part": "HAND"})
    assert response.status_code == 200
    assert response.json()["flagged"] is None and response.json()["score"] == 1.5
    assert calls == [((10, 12), True, "HAND")]


def test_an_image_the_model_cannot_be_fed_is_422_and_degenerate_ones_are_flagged(tiny_artefact, tmp_path) -> None:
    """A 1-pixel-high image made OpenCV assert inside preprocessing: HTTP 500. Now 422 naming the problem; a
    1x1 or all-black image that can be scored is answered with its degenerate reason."""
    from conftest import make_tiny_artefact

    from xrad.preprocess import PreprocessParams

    pre = make_tiny_artefact(tmp_path / "pre", preprocessing=PreprocessParams().to_dict())
    client = fastapi_testclient.TestClient(app_from_artefact(pre), raise_server_exceptions=False)
    response = client.post("/score", content=png_bytes(shape=(1, 300)))
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith("cannot score the image: cannot be prepared for the model")
    plain = fastapi_testclient.TestClient(app_from_artefact(tiny_artefact))
    tiny = plain.post("/score", content=png_bytes(shape=(1, 1)))
    assert tiny.status_code == 200 and tiny.json()["image"]["degenerate"].startswith("tiny image (1x1 px")
    black = io.BytesIO()
    Image.fromarray(np.zeros((60, 50), np.uint8)).save(black, format="PNG")
    flat = plain.post("/score", content=black.getvalue())
    assert flat.status_code == 200 and flat.json()["image"]["degenerate"] == "constant image (every pixel 0)"


def test_a_dicom_with_window_width_0_is_422(client) -> None:
    from pydicom import dcmread

    ds = dcmread(io.BytesIO(dicom_bytes()))
    ds.WindowCenter, ds.WindowWidth = 100, 0
    buffer = io.BytesIO()
    ds.save_as(buffer)
    response = _upload(client, buffer.getvalue(), "ww0.dcm")
    assert response.status_code == 422 and "window" in response.json()["detail"]  # was a pydicom ValueError: 500


# ------------------------------------------------------------------------------------ browser end to end
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def chromium(args: list[str], profile: Path, timeout: float = 90) -> subprocess.CompletedProcess:
    """Run headless Chromium with flags that keep it offline and quiet."""
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
    ]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_browser_uploads_and_shows_score_and_heatmap(calibrated_artefact, tmp_path) -> None:
    import uvicorn

    port = _free_port()
    app = app_from_artefact(calibrated_artefact)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started
        url = f"http://127.0.0.1:{port}/?demo=1"
        dom = chromium(["--virtual-time-budget=30000", "--dump-dom", url], tmp_path / "profile").stdout
        assert 'data-state="done"' in dom, dom[-2000:]
        assert 'id="heatmap"' in dom and 'src="data:image/png;base64,' in dom
        score = dom.split('id="score">', 1)[1].split("<", 1)[0]
        assert np.isfinite(float(score))
        shot = tmp_path / "service.png"
        chromium(
            ["--virtual-time-budget=30000", "--window-size=1100,1000", f"--screenshot={shot}", url],
            tmp_path / "profile2",
        )
        assert shot.is_file() and Image.open(shot).size == (1100, 1000)
        # The heatmap overlay is drawn in colour: the screenshot is not just grey and white.
        rgb = np.asarray(Image.open(shot).convert("RGB")).astype(int)
        assert (np.abs(rgb[..., 0] - rgb[..., 2]) > 60).sum() > 100
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_serve_binds_to_localhost_by_default() -> None:
    from xrad.cli.main import build_parser

    args = build_parser().parse_args(["serve", "some/artefact"])
    assert args.host == "127.0.0.1" and args.port == 8000 and args.max_upload_mb == 20.0
