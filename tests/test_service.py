"""The scoring service: status codes by content, size limits, no PHI echoed, and one headless-browser run."""

from __future__ import annotations

import base64
import io
import logging
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

fastapi_testclient = pytest.importorskip("fastapi.testclient")

from browser import CHROMIUM, NO_CHROMIUM, assert_drawn, dom_and_screenshot  # noqa: E402 - tests/browser.py

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
    """A 1-pixel-high image made OpenCV assert inside preprocessing: HTTP 500. Preprocessing handles it now
    (scored, flagged tiny); an image that cannot be prepared is 422 naming the problem; a 1x1 or all-black
    image that can be scored is answered with its degenerate reason."""
    from conftest import make_tiny_artefact

    from xrad.errors import ImageReadError
    from xrad.preprocess import PreprocessParams

    pre = make_tiny_artefact(tmp_path / "pre", preprocessing=PreprocessParams().to_dict())
    client = fastapi_testclient.TestClient(app_from_artefact(pre), raise_server_exceptions=False)
    response = client.post("/score", content=png_bytes(shape=(1, 300)))
    assert response.status_code == 200, response.text
    assert response.json()["image"]["degenerate"].startswith("tiny image (300x1 px")

    def unpreparable(radiograph, want_heatmap, body_part):
        raise ImageReadError("<upload>", "cannot be prepared for the model (error: an OpenCV assertion)")

    refused = fastapi_testclient.TestClient(create_app(unpreparable)).post("/score", content=png_bytes())
    assert refused.status_code == 422
    assert (
        refused.json()["detail"]
        == "cannot score the image: cannot be prepared for the model (error: an OpenCV assertion)"
    )
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
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_browser_uploads_and_shows_score_percentile_flag_colour_bar_and_warning(readout_artefact, tmp_path) -> None:
    """The page scores its demo image as body part KNEE (the detector saw HAND phantoms only) and shows the
    score, its percentile among the validation normals, the flag with the operating point, the heatmap with
    its colour bar on the fixed scale, and the out-of-distribution warnings."""
    import re

    import uvicorn

    port = _free_port()
    app = app_from_artefact(readout_artefact)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started
        url = f"http://127.0.0.1:{port}/?demo=1&body_part=KNEE"
        dom, rgb = dom_and_screenshot(url, tmp_path, "service", size=(1100, 1000))
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert 'data-state="done"' in dom, dom[-2000:]
    assert 'id="heatmap"' in dom and 'src="data:image/png;base64,' in dom
    assert np.isfinite(float(dom.split('id="score">', 1)[1].split("<", 1)[0]))
    assert re.search(r'id="percentile">\d+\.\d — higher than \d+\.\d % of the 50 validation normals<', dom)
    assert re.search(r'id="flagged" class="flag-(yes|no)">(yes|no)<', dom)
    assert re.search(r'id="operating">[^<]*threshold [^<]*specificity', dom)
    assert 'id="colourbar"' in dom and 'id="barmax">1.00<' in dom and "fixed scale" in dom
    warnings = dom.split('id="warnings" class="warning">', 1)[1].split("</div>", 1)[0]
    assert "Warning: body part KNEE was not in training (HAND)" in warnings
    assert "Warning: trained on generated phantoms only" in warnings
    assert_drawn(rgb)  # the heatmap and the colour bar are drawn in colour


def test_serve_binds_to_localhost_by_default() -> None:
    from xrad.cli.main import build_parser

    args = build_parser().parse_args(["serve", "some/artefact"])
    assert args.host == "127.0.0.1" and args.port == 8000 and args.max_upload_mb == 20.0
    assert (args.workers, args.queue, args.max_megapixels, args.time_budget) == (1, 0, 25.0, 30.0)


def test_serve_option_defaults_are_the_service_limits_defaults() -> None:
    from xrad.cli.main import build_parser
    from xrad.cli.serve import limits_from_args
    from xrad.service.limits import ServiceLimits

    assert limits_from_args(build_parser().parse_args(["serve", "some/artefact"])) == ServiceLimits()


# ------------------------------------------------------------------------------------ load limits
def _stub_app(predict=None, **limits):
    from xrad.service.limits import ServiceLimits

    def fast(radiograph, want_heatmap, body_part):
        return {"score": 0.5, "sphere": None, "heatmap_png": None, "heatmap_on": None}

    return create_app(predict or fast, limits=ServiceLimits(**limits))


def _run(coroutine):
    import asyncio

    return asyncio.run(coroutine)


def test_scoring_is_bounded_full_means_503_with_retry_after_and_health_stays_fast() -> None:
    """1 worker + 1 place to wait. An image whose wait would exceed half its own estimated time (0.5 s per
    megapixel + 0.5 s at first) is refused at once; once the running one is nearly done a second waits;
    with both places taken the next upload gets 503 before its body is read, with Retry-After, while
    /health still answers; the admitted images are answered when the worker is free."""
    import asyncio

    import httpx

    release, started = threading.Event(), threading.Event()

    def slow(radiograph, want_heatmap, body_part):
        started.set()
        assert release.wait(10)
        return {"score": 0.5, "sphere": None, "heatmap_png": None, "heatmap_on": None}

    app = _stub_app(slow, workers=1, queue=1)
    megapixel = io.BytesIO()
    Image.fromarray(np.zeros((1000, 1000), np.uint8)).save(megapixel, format="PNG")  # estimated 0.75 s

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            first = asyncio.create_task(http.post("/score", content=megapixel.getvalue()))
            for _ in range(500):
                if started.is_set():
                    break
                await asyncio.sleep(0.01)
            at_once = await http.post("/score", content=megapixel.getvalue())  # 0.75 s ahead > 0.375 s
            await asyncio.sleep(0.42)  # now ~0.3 s ahead: <= half its own 0.75 s, so it may wait
            second = asyncio.create_task(http.post("/score", content=megapixel.getvalue()))
            for _ in range(200):
                busy = (await http.get("/health")).json()["busy"]
                if busy["scoring"] == 2:
                    break
                await asyncio.sleep(0.01)
            tick = time.perf_counter()
            third = await http.post("/score", content=png_bytes(seed=2))
            health = await http.get("/health")
            waited = time.perf_counter() - tick
            release.set()
            results = await first, await second
            return at_once, busy, third, health, waited, results, (await http.get("/health")).json()["busy"]

    at_once, busy, third, health, waited, (first, second), after = _run(scenario())
    assert at_once.status_code == 503 and int(at_once.headers["Retry-After"]) >= 1
    assert busy == {"scoring": 2, "capacity": 2, "uploads": 0}
    assert third.status_code == 503 and "busy" in third.json()["detail"]
    assert int(third.headers["Retry-After"]) >= 1 and third.headers["Connection"] == "close"
    assert health.status_code == 200 and waited < 1.0  # refused and health answered while scoring is blocked
    assert first.status_code == 200 and second.status_code == 200
    assert after["scoring"] == 0  # both places were given back


def test_a_request_over_its_time_budget_gets_504_and_stops_without_blocking_the_next() -> None:
    from xrad.service.limits import check_time

    steps = []
    slow_mode = threading.Event()
    slow_mode.set()

    def predict(radiograph, want_heatmap, body_part):
        while slow_mode.is_set() and len(steps) < 200:  # a long job checking its budget between steps
            time.sleep(0.02)
            steps.append(1)
            check_time("the next step")
        return {"score": 0.25, "sphere": None, "heatmap_png": None, "heatmap_on": None}

    client = fastapi_testclient.TestClient(_stub_app(predict, workers=1, queue=0, time_budget_s=0.3))
    tick = time.perf_counter()
    response = client.post("/score", content=png_bytes())
    assert response.status_code == 504 and "time budget of 0.3 s" in response.json()["detail"]
    assert time.perf_counter() - tick < 2.0
    slow_mode.clear()
    deadline = time.monotonic() + 2
    while client.get("/health").json()["busy"]["scoring"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(steps) < 40  # it stopped at a step boundary soon after 0.3 s, not after 200 steps
    following = client.post("/score", content=png_bytes())
    assert following.status_code == 200 and following.json()["score"] == 0.25


def test_the_per_request_pixel_budget_refuses_from_the_header_before_decoding() -> None:
    from malformed_corpus import _png_declaring

    calls = []

    def predict(radiograph, want_heatmap, body_part):
        calls.append(1)
        return {"score": 0.5, "sphere": None, "heatmap_png": None, "heatmap_on": None}

    client = fastapi_testclient.TestClient(_stub_app(predict, max_pixels=5_000))
    assert client.post("/score", content=png_bytes(shape=(50, 100))).status_code == 200
    big = client.post("/score", content=png_bytes(shape=(60, 100)))
    assert big.status_code == 413
    assert big.json()["detail"].startswith("the image declares 100x60 = 6000 pixels: above this service's")
    # A near-limit bomb (7,700 x 7,700 declared in ~100 bytes) is refused from its header, in milliseconds.
    tick = time.perf_counter()
    bomb = client.post("/score", content=_png_declaring(7700, 7700))
    assert bomb.status_code == 413 and "7700x7700" in bomb.json()["detail"]
    assert time.perf_counter() - tick < 1.0 and calls == [1]


def _raw_receive(chunks):
    """An ASGI receive that yields the given messages, then waits forever."""
    import asyncio

    queue = list(chunks)

    async def receive():
        if queue:
            return queue.pop(0)
        await asyncio.sleep(3600)

    return receive


def _call(app, receive, headers=()):
    sent = []

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/score",
        "raw_path": b"/score",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test"), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
    }
    _run(app(scope, receive, send))
    return sent


def test_a_stalled_upload_is_cut_with_408_and_a_disconnect_is_one_quiet_line(caplog) -> None:
    caplog.set_level(logging.DEBUG)
    app = _stub_app(upload_idle_s=0.2, upload_timeout_s=5)
    data = png_bytes()
    tick = time.perf_counter()
    sent = _call(app, _raw_receive([{"type": "http.request", "body": data[:100], "more_body": True}]))
    assert time.perf_counter() - tick < 2.0
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 408 and (b"connection", b"close") in start["headers"]
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert b"paused for more than 0.2 s" in body
    # A trickle (a byte every 0.1 s) is cut by the overall timeout.
    trickle = _stub_app(upload_idle_s=1, upload_timeout_s=0.5)

    def dribble():
        import asyncio

        async def receive():
            await asyncio.sleep(0.1)
            return {"type": "http.request", "body": b"x", "more_body": True}

        return receive

    sent = _call(trickle, dribble())
    assert next(m for m in sent if m["type"] == "http.response.start")["status"] == 408
    assert b"did not complete within 0.5 s" in b"".join(m.get("body", b"") for m in sent if "body" in m)
    # The client goes away in the middle of its upload: no exception escapes the app, one info line.
    caplog.clear()
    sent = _call(
        app,
        _raw_receive([{"type": "http.request", "body": data[:100], "more_body": True}, {"type": "http.disconnect"}]),
    )
    assert "a client disconnected during its upload" in caplog.text
    assert "Traceback" not in caplog.text and "ClientDisconnect" not in caplog.text
    assert app.state is not None and _call(app, _raw_receive([{"type": "http.request", "body": data}]))  # still serves


def test_too_many_uploads_at_once_get_503() -> None:
    import asyncio

    import httpx

    app = _stub_app(max_uploads=2, upload_idle_s=5)
    gate = asyncio.Event

    async def scenario():
        hold = gate()

        async def stalled_body():
            yield png_bytes()[:50]
            await hold.wait()

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            pending = [asyncio.create_task(http.post("/score", content=stalled_body())) for _ in range(2)]
            for _ in range(200):
                if (await http.get("/health")).json()["busy"]["uploads"] == 2:
                    break
                await asyncio.sleep(0.01)
            refused = await http.post("/score", content=png_bytes())
            hold.set()
            await asyncio.gather(*pending, return_exceptions=True)
            return refused

    refused = _run(scenario())
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "2"


def test_real_server_keeps_query_strings_out_of_the_access_log_and_disconnects_quiet() -> None:
    """Through uvicorn as ``xrad serve`` runs it: the access log line has the path only, and a client that
    hangs up mid-upload leaves no traceback in any log."""
    from xrad.service.limits import ServiceLimits, uvicorn_server

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    port = _free_port()
    limits = ServiceLimits(upload_idle_s=0.5)
    server = uvicorn_server(_stub_app(upload_idle_s=0.5), "127.0.0.1", port, limits)
    keep = Keep()
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        for name in ("uvicorn.access", "uvicorn.error", "xrad.service"):
            logging.getLogger(name).addHandler(keep)
        logging.getLogger("xrad.service").setLevel(logging.INFO)
        import httpx

        answer = httpx.post(f"http://127.0.0.1:{port}/score?body_part={PATIENT_NAME}", content=png_bytes())
        assert answer.status_code == 200
        with socket.create_connection(("127.0.0.1", port)) as raw:  # declares 5000 bytes, sends 10, leaves
            raw.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + png_bytes()[:10])
            time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", port)) as raw:  # stalls: cut with 408 and closed
            raw.settimeout(5)
            raw.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + png_bytes()[:10])
            reply = b""
            while chunk := raw.recv(4096):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 408")
        time.sleep(0.2)
    finally:
        for name in ("uvicorn.access", "uvicorn.error", "xrad.service"):
            logging.getLogger(name).removeHandler(keep)
        logging.getLogger("xrad.service").setLevel(logging.NOTSET)
        server.should_exit = True
        thread.join(timeout=10)
    lines = [record.getMessage() for record in records]
    access = [line for line in lines if "/score" in line]
    assert any('"POST /score HTTP/1.1" 200' in line for line in access), lines
    assert all("?" not in line and "Doe" not in line for line in lines), lines
    assert not any(record.exc_info for record in records), lines
    assert "a client disconnected during its upload" in lines


def test_a_large_image_in_progress_turns_small_ones_away_instead_of_making_them_wait() -> None:
    """The queue has room, but the work ahead (a 4 Mpx image) is far longer than a small image's own: a small
    upload gets 503 at once with a Retry-After covering that work, not a wait of many times its own time."""
    import asyncio

    import httpx

    release, started = threading.Event(), threading.Event()

    def predict(radiograph, want_heatmap, body_part):
        if radiograph.pixels.size > 1_000_000:
            started.set()
            assert release.wait(10)
        return {"score": 0.5, "sphere": None, "heatmap_png": None, "heatmap_on": None}

    app = _stub_app(predict, workers=1, queue=3)
    large = io.BytesIO()
    Image.fromarray(np.zeros((2000, 2000), np.uint8)).save(large, format="PNG")

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            big = asyncio.create_task(http.post("/score", content=large.getvalue()))
            for _ in range(500):
                if started.is_set():
                    break
                await asyncio.sleep(0.01)
            small = await http.post("/score", content=png_bytes())
            release.set()
            done = await big
            return done, small, await http.post("/score", content=png_bytes())

    big, small, after = _run(scenario())
    assert small.status_code == 503 and int(small.headers["Retry-After"]) >= 2  # 4.5 units x 0.5 s
    assert big.status_code == 200 and after.status_code == 200  # once it is done, small ones are served


def test_the_heatmap_overlay_is_drawn_at_most_heatmap_px(tiny_artefact) -> None:
    from xrad.service.limits import ServiceLimits

    client = fastapi_testclient.TestClient(app_from_artefact(tiny_artefact, limits=ServiceLimits(heatmap_px=40)))
    body = client.post("/score", content=png_bytes(shape=(96, 72))).json()
    png = base64.b64decode(body["heatmap_png"].split(",", 1)[1])
    assert Image.open(io.BytesIO(png)).size == (30, 40)  # the same aspect, major axis 40
    assert body["image"]["width"] == 72 and body["image"]["height"] == 96  # the image itself as uploaded


def test_retry_after_grows_with_the_clients_refused_just_before(monkeypatch: pytest.MonkeyPatch) -> None:
    """Told "1 s", fifty refused clients would come back together: each 503 within the last advertised
    Retry-After adds one typical job (0.5 s before any job has run) to the next one's Retry-After; once the
    refusals are older than that, it falls back to the expected wait for the worker."""
    from xrad.service import limits

    clock = [1000.0]  # the pool's clock, moved by hand (time.monotonic is restored after the test)
    monkeypatch.setattr(limits.time, "monotonic", lambda: clock[0])
    pool, pair = (
        limits.ScoringPool(limits.ServiceLimits(workers=1)),
        limits.ScoringPool(limits.ServiceLimits(workers=2)),
    )
    try:
        advertised = [pool.retry_after() for _ in range(9)]
        assert advertised == [1, 1, 1, 2, 2, 3, 3, 4, 4]  # ceil(k x 0.5 s), at least 1
        assert [pair.retry_after() for _ in range(5)] == [1, 1, 1, 1, 1]  # two workers: half a job each
        clock[0] += 3.5  # within the last Retry-After (4 s): the 9 refusals still count
        assert pool.retry_after() == 5
        clock[0] += 5.5  # past the last Retry-After (5 s): the earlier refusals have had their turn
        assert pool.retry_after() == 1
    finally:
        pool.shutdown()
        pair.shutdown()
