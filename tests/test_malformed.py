"""Hostile input through every entry point: the malformed-file corpus (tests/malformed_corpus.py, generated here)
driven through index, preprocess, the training loader, score, worklist and the service, plus fuzzing of the
readers with hypothesis.

What every entry point must show, for every kind: no hang (each call runs under a time limit), no foreign
exception (a failure is one line naming the file: an ``ImageReadError`` / ``DataError``, a failure row, a 4xx),
and every good image of a folder with bad ones mixed in is scored exactly as it is alone.
"""

from __future__ import annotations

import contextlib
import io
import logging
import signal
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from malformed_corpus import CASES, Case, build_corpus, dicom_bytes, good_png

from xrad.cli.main import main
from xrad.data.io import decode_radiograph, read_cache_png, read_radiograph
from xrad.data.model_input import degenerate_reason
from xrad.errors import DataError, ImageReadError

LIMIT_S = 60.0  # per entry point over the whole corpus: a hang fails the test instead of stalling the suite
SECRETS = ("Doe^Jane", "PAT-SECRET-42")  # the corpus DICOMs' patient fields: never printed, logged or stored
BY_KIND = {case.kind: case for case in CASES}
REGULAR = [case for case in CASES if case.upload is not None]  # cases whose bytes can be posted


@contextlib.contextmanager
def time_limit(seconds: float = LIMIT_S) -> Iterator[None]:
    """Fail (TimeoutError in the main thread) if the block takes longer than ``seconds``: a hang is a failure."""

    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds:.0f} s: an entry point hangs")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def one_line_naming(message: str, path: Path) -> None:
    assert "\n" not in message.replace(path.name, ""), message  # one line (a file name may hold a newline)
    assert str(path) in message, f"{message!r} does not name {path}"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """kind -> path of every case, written once for the module (read-only for the tests)."""
    return build_corpus(tmp_path_factory.mktemp("corpus") / "files")


def manifest_of(paths: dict[str, Path], kinds: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "path": [str(paths[k]) for k in kinds],
            "patient_id": [f"p{i}" for i in range(len(kinds))],
            "study_id": [f"s{i}" for i in range(len(kinds))],
            "body_part": "HAND",
            "view": "",
            "label": 0,
            "source": "csv",
        }
    )


def expected_failure(case: Case) -> str | None:
    """Words the failure reason of a scored/loaded ``case`` holds, or None when it is read."""
    return None if case.read == "ok" else ("truncated" if case.read == "partial" else case.read)


# ------------------------------------------------------------------------------------------------ readers
@pytest.mark.parametrize("case", CASES, ids=[c.kind for c in CASES])
def test_reader_outcome_of_every_case(case: Case, corpus: dict[str, Path]) -> None:
    path = corpus[case.kind]
    with time_limit(10):
        if case.read in ("ok", "partial"):
            radiograph = read_radiograph(path)
            pixels = radiograph.pixels
            assert pixels.dtype == np.float32 and pixels.ndim == 2 and np.isfinite(pixels).all()
            assert 0.0 <= pixels.min() <= pixels.max() <= 1.0
            assert radiograph.meta.truncated == (case.read == "partial")
            reason = degenerate_reason(pixels)
            assert (case.degenerate in reason) if case.degenerate else reason == ""
        else:
            with pytest.raises(ImageReadError) as info:
                read_radiograph(path)
            assert case.read.lower() in info.value.reason.lower(), info.value.reason
            one_line_naming(str(info.value), path)
    if case.upload is not None:  # the in-memory path (the service's) decides alike
        data = path.read_bytes()
        if case.read in ("ok", "partial"):
            assert decode_radiograph(data, "<upload>").meta.truncated == (case.read == "partial")
        else:
            with pytest.raises(ImageReadError):
                decode_radiograph(data, "<upload>")


def test_the_corpus_has_at_least_30_kinds() -> None:
    assert len(CASES) >= 30 and len(BY_KIND) == len(CASES)


# ------------------------------------------------------------------------------------------------ index
@pytest.mark.parametrize("case", CASES, ids=[c.kind for c in CASES])
def test_index_csv_of_every_case(case: Case, corpus: dict[str, Path], tmp_path: Path) -> None:
    """A CSV table lists files: any regular file is indexed (its content is judged later); a FIFO, folder or
    broken link is refused at once, named, before it can hang or fail a later step."""
    from xrad.data.indexing import index_csv

    table = tmp_path / "table.csv"
    (tmp_path / "companion.png").write_bytes(good_png())
    pd.DataFrame({"path": [str(tmp_path / "companion.png"), str(corpus[case.kind])], "label": [0, 1]}).to_csv(
        table, index=False
    )
    with time_limit(10):
        if case.upload is not None:
            frame = index_csv(table)
            assert len(frame) == 2 and frame["study_id"].is_unique
        else:
            with pytest.raises(DataError) as info:
                index_csv(table)
            assert "not regular image files" in str(info.value) and "\n" not in str(info.value)
            assert str(corpus[case.kind]) in str(info.value)


def test_index_dicom_folder_with_every_case(
    corpus: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A DICOM folder holding every kind: DICOM files with a readable header are indexed, the rest left out with
    warnings naming an example; the FIFO is never opened (no hang); patient fields are never stored or printed."""
    from xrad.data.indexing import index_dicom_folder

    with time_limit(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = index_dicom_folder(corpus["good-png"].parent)
    listed = {Path(p).name for p in frame["path"]}
    assert listed == {c.name for c in CASES if c.dicom}
    messages = [str(w.message) for w in caught]
    assert any("left out as not DICOM" in m for m in messages)
    assert any("not regular files" in m for m in messages)
    assert all("\n" not in m.replace("two\nlines.png", "") for m in messages)
    assert frame["study_id"].is_unique and (frame["patient_id"] != "").sum() >= 2
    text = frame.to_csv()
    assert not any(secret in text for secret in SECRETS)
    # The CLI, end to end, writes the manifest and prints no identifier.
    with time_limit():
        assert main(["index", str(corpus["good-png"].parent), "-o", str(tmp_path / "m.csv")]) == 0
    out = capsys.readouterr()
    assert "left out" in out.out and not any(secret in out.out + out.err for secret in SECRETS)
    assert not any(secret in (tmp_path / "m.csv").read_text(encoding="utf-8") for secret in SECRETS)


# ------------------------------------------------------------------------------------------------ preprocess
def test_preprocess_isolates_every_case(corpus: dict[str, Path], tmp_path: Path) -> None:
    """The cache of the whole corpus: readable images are cached, each other one is a failure row naming it."""
    from xrad.preprocess.cache import build_cache

    kinds = [c.kind for c in CASES]
    with time_limit(180):
        summary = build_cache(manifest_of(corpus, kinds), tmp_path / "cache", workers=1, progress=False)
    failures = pd.read_csv(tmp_path / "cache" / "failures.csv", keep_default_na=False).set_index("path")
    cached = set(pd.read_csv(tmp_path / "cache" / "manifest.csv", keep_default_na=False)["path"])
    assert summary["images"] == len(kinds) and summary["failed"] == len(failures)
    for case in CASES:
        path = str(corpus[case.kind])
        words = expected_failure(case)
        if case.read == "partial" or (words is None and not case.degenerate):
            assert path in cached, (case.kind, failures["reason"].get(path))
        elif words is not None:
            assert path in failures.index and words.lower() in failures.loc[path, "reason"].lower(), case.kind
        if path in failures.index:  # degenerate images may fail preprocessing, but as rows, named, one line
            one_line_naming(failures.loc[path, "reason"], corpus[case.kind])


# ------------------------------------------------------------------------------------------------ training loader
def test_training_bank_isolates_every_case(corpus: dict[str, Path]) -> None:
    from xrad.training.banks import load_image_bank

    kinds = [c.kind for c in CASES]
    frame = manifest_of(corpus, kinds)
    with time_limit():
        bank = load_image_bank(frame, 32, workers=2, progress=False, on_error="skip")
    failures = bank.failures.set_index("path")
    loaded = dict(zip(bank.frame["path"], bank.degenerate, strict=True))
    for case in CASES:
        path = str(corpus[case.kind])
        if case.read in ("ok", "partial"):  # training keeps truncated files (decoded part, flagged by preprocess)
            assert path in loaded, (case.kind, failures["reason"].get(path))
            assert (case.degenerate in loaded[path]) if case.degenerate else loaded[path] == ""
        else:
            assert case.read.lower() in failures.loc[path, "reason"].lower(), case.kind
            one_line_naming(failures.loc[path, "reason"], corpus[case.kind])
    assert len(bank) + len(bank.failures) == len(kinds) and bank.images.shape[0] == len(bank.frame)
    # Strict loading raises the bad file's own one-line error, never a decoder's exception.
    with pytest.raises(ImageReadError) as info:
        load_image_bank(manifest_of(corpus, ["good-png", "dicom-window-width-0"]), 32, workers=1, progress=False)
    one_line_naming(str(info.value), corpus["dicom-window-width-0"])


def test_training_bank_cache_paths_obey_the_reader_rules(corpus: dict[str, Path], tmp_path: Path) -> None:
    """A manifest's cache_path/mask_path may name any file: the same regular-file rule and pixel limit apply."""
    from xrad.training.banks import load_image_bank

    kinds = [c.kind for c in CASES]
    frame = manifest_of(corpus, kinds).assign(cache_path=[str(corpus[k]) for k in kinds], mask_path="")
    with time_limit():
        bank = load_image_bank(frame, 32, workers=2, progress=False, on_error="skip")
    failures = bank.failures.set_index("path")
    for kind in (
        "fifo",
        "symlink-loop",
        "directory-named-png",
        "zero-bytes",
        "decompression-bomb-png",
        "text-named-png",
        "good-dicom",
        "dangling-symlink",
    ):
        assert str(corpus[kind]) in failures.index, kind
        one_line_naming(failures.loc[str(corpus[kind]), "reason"], corpus[kind])
    assert str(corpus["good-png"]) in set(bank.frame["path"])
    # A good image whose mask is a bomb (or a FIFO) fails as a row too.
    masks = manifest_of(corpus, ["good-png", "good-png"]).assign(
        path=["a", "b"],
        cache_path=str(corpus["good-png"]),
        mask_path=[str(corpus["decompression-bomb-png"]), str(corpus["fifo"])],
    )
    with time_limit():
        bank = load_image_bank(masks, 32, workers=1, progress=False, on_error="skip")
    assert len(bank) == 0 and len(bank.failures) == 2


def test_cache_png_reader_refuses_a_declared_bomb_before_decoding(tmp_path: Path) -> None:
    from malformed_corpus import _png_declaring

    path = tmp_path / "big.png"
    path.write_bytes(_png_declaring(10_000, 8_000))  # 80 Mpx declared, a few bytes on disk
    with pytest.raises(ImageReadError, match=r"big.png: declares 10000x8000 = 80000000 pixels, above max_pixels"):
        read_cache_png(str(path), "cached image")
    path.write_bytes(_png_declaring(20_000, 20_000))  # 400 Mpx: above Pillow's own limit too
    with pytest.raises(ImageReadError, match=r"big.png: cached image declares a size above Pillow's"):
        read_cache_png(str(path), "cached image")


# ------------------------------------------------------------------------------------------------ score
def _score_outcomes(scored: pd.DataFrame) -> dict[str, tuple[str, str]]:
    return {p: (e, d) for p, e, d in zip(scored["path"], scored["error"], scored["degenerate"], strict=True)}


def test_score_frame_gives_every_case_its_outcome(corpus: dict[str, Path], tiny_artefact: Path) -> None:
    from xrad.inference.scoring import score_frame

    kinds = [c.kind for c in CASES]
    with time_limit():
        scored = score_frame(tiny_artefact, manifest_of(corpus, kinds), workers=2, on_error="skip")
    for case, (_, row) in zip(CASES, scored.iterrows(), strict=True):
        words = expected_failure(case)
        if words is None:
            assert row["error"] == "" and np.isfinite(row["score"]), (case.kind, row["error"])
            assert (case.degenerate in row["degenerate"]) if case.degenerate else row["degenerate"] == ""
        else:
            assert np.isnan(row["score"]) and words.lower() in row["error"].lower(), (case.kind, row["error"])
            one_line_naming(row["error"], corpus[case.kind])


def test_score_cli_on_a_folder_scores_every_good_image(
    corpus: dict[str, Path], tiny_artefact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Good images mixed with every bad kind in one folder: each good image gets the score it gets alone."""
    folder = corpus["good-png"].parent
    good = tmp_path / "good"
    good.mkdir()
    for case in CASES:
        if case.read == "ok" and not case.degenerate:
            (good / case.name).write_bytes(corpus[case.kind].read_bytes())
    with time_limit():
        assert main(["score", str(tiny_artefact), str(folder), "-o", str(tmp_path / "mixed.csv")]) == 0
        assert main(["score", str(tiny_artefact), str(good), "-o", str(tmp_path / "alone.csv")]) == 0
    out = capsys.readouterr()
    assert "unreadable" in out.out and "degenerate" in out.err
    assert not any(secret in out.out + out.err for secret in SECRETS)
    mixed = pd.read_csv(tmp_path / "mixed.csv", keep_default_na=False)
    alone = pd.read_csv(tmp_path / "alone.csv", keep_default_na=False)
    by_name = {Path(p).name: row for p, (_, row) in zip(mixed["path"], mixed.iterrows(), strict=True)}
    assert len(alone) == len(list(good.iterdir())) and (alone["error"] == "").all()
    for _, row in alone.iterrows():
        name = Path(row["path"]).name
        assert by_name[name]["error"] == "" and float(by_name[name]["score"]) == pytest.approx(float(row["score"]))
    for case in CASES:  # every bad file named like an image has its row (the folder's own content is recursed)
        if case.kind == "directory-named-png":
            assert "folder.png" not in by_name and "inside.png" in by_name
            continue
        words = expected_failure(case)
        if words is not None and Path(case.name).suffix.lower() in (".png", ".jpg", ".dcm", ".tif"):
            assert words.lower() in by_name[case.name]["error"].lower(), case.kind


def test_score_with_a_preprocessing_artefact_turns_opencv_failures_into_rows(
    corpus: dict[str, Path], tmp_path: Path
) -> None:
    """A 1-pixel-high image made OpenCV assert inside preprocessing and stopped the batch: now a row."""
    from conftest import make_tiny_artefact

    from xrad.inference.scoring import score_frame
    from xrad.preprocess import PreprocessParams

    artefact = make_tiny_artefact(tmp_path / "pre", preprocessing=PreprocessParams().to_dict())
    kinds = ["good-png", "one-by-n", "n-by-one", "one-by-one", "all-black", "dicom-window-width-0", "good-dicom"]
    with time_limit():
        scored = score_frame(artefact, manifest_of(corpus, kinds), workers=1, on_error="skip")
    for kind, (_, row) in zip(kinds, scored.iterrows(), strict=True):
        if row["error"]:
            one_line_naming(row["error"], corpus[kind])
        else:
            assert np.isfinite(row["score"])
    outcome = dict(zip(kinds, scored["error"], strict=True))
    assert outcome["good-png"] == "" and outcome["good-dicom"] == "" and "window" in outcome["dicom-window-width-0"]
    assert outcome["one-by-n"] == outcome["n-by-one"] == ""  # preprocessing handles them now (flagged tiny)


# ------------------------------------------------------------------------------------------------ worklist
def test_worklist_of_the_corpus_lists_every_image(corpus: dict[str, Path], tiny_artefact: Path, tmp_path: Path) -> None:
    from xrad.inference.scoring import score_frame

    kinds = [c.kind for c in CASES]
    scored = score_frame(tiny_artefact, manifest_of(corpus, kinds), workers=2, on_error="skip")
    scored.to_csv(tmp_path / "scores.csv", index=False)
    with time_limit():
        assert main(["worklist", str(tmp_path / "scores.csv"), "-o", str(tmp_path / "wl"), "--threshold", "0"]) == 0
    table = pd.read_csv(tmp_path / "wl" / "worklist.csv", keep_default_na=False)
    assert len(table) == len(kinds)
    ranked = table[table["rank"] != ""]
    assert len(ranked) == sum(expected_failure(c) is None for c in CASES)
    assert table["unreadable"].sum() == sum(expected_failure(c) is not None for c in CASES)
    assert table["degenerate"].sum() == sum(bool(c.degenerate) for c in CASES)
    page = (tmp_path / "wl" / "index.html").read_text(encoding="utf-8")
    assert "degenerate" in page and str(corpus["good-png"].parent) not in page  # no file names on the page


def test_worklist_thumbnails_survive_any_file(corpus: dict[str, Path], tmp_path: Path) -> None:
    """Scores rows (and heatmap columns) naming bad files: each thumbnail is 'unreadable', nothing raises or
    hangs — a 400 Mpx heatmap PNG included (it ended in DecompressionBombError)."""
    from malformed_corpus import _png_declaring

    from xrad.inference.worklist import build_worklist

    bomb = tmp_path / "heat.png"
    bomb.write_bytes(_png_declaring(20_000, 20_000))
    kinds = [c.kind for c in CASES]
    scores = pd.DataFrame(
        {
            "path": [str(corpus[k]) for k in kinds],
            "score": np.linspace(1, 0, len(kinds)),
            "study_id": kinds,
            "heatmap": [str(bomb)] * (len(kinds) - 1) + [str(corpus["fifo"])],
        }
    )
    with time_limit():
        result = build_worklist(scores, tmp_path / "wl", top=len(kinds))
    page = (tmp_path / "wl" / "index.html").read_text(encoding="utf-8")
    assert result["n_studies"] == len(kinds)
    assert page.count("heatmap unreadable") == len(kinds)
    unreadable = sum(c.read not in ("ok", "partial") for c in CASES)
    assert page.count("unreadable: ") == unreadable


# ------------------------------------------------------------------------------------------------ service
@pytest.fixture(scope="module")
def service(tiny_artefact: Path):
    testclient = pytest.importorskip("fastapi.testclient")
    from xrad.service.app import app_from_artefact

    return testclient.TestClient(app_from_artefact(tiny_artefact))


@pytest.mark.parametrize("case", REGULAR, ids=[c.kind for c in REGULAR])
def test_service_answers_every_case(
    case: Case, corpus: dict[str, Path], service, caplog: pytest.LogCaptureFixture
) -> None:
    data = corpus[case.kind].read_bytes()
    with time_limit(30), caplog.at_level(logging.DEBUG):
        response = service.post("/score", files={"file": (case.name, data, "application/octet-stream")})
    assert response.status_code == case.upload, response.text
    body = response.json()
    if case.upload == 200:
        assert np.isfinite(body["score"])
        assert (
            (case.degenerate in body["image"]["degenerate"]) if case.degenerate else body["image"]["degenerate"] == ""
        )
    else:
        assert "\n" not in body["detail"] and "Traceback" not in body["detail"]
    text = response.text + caplog.text
    assert case.name not in text and not any(secret in text for secret in SECRETS)


def test_service_preprocessing_failure_is_422_not_500(corpus: dict[str, Path], tmp_path: Path) -> None:
    testclient = pytest.importorskip("fastapi.testclient")
    from conftest import make_tiny_artefact

    from xrad.preprocess import PreprocessParams
    from xrad.service.app import app_from_artefact

    artefact = make_tiny_artefact(tmp_path / "pre", preprocessing=PreprocessParams().to_dict())
    client = testclient.TestClient(app_from_artefact(artefact), raise_server_exceptions=False)
    for kind in ("one-by-n", "n-by-one", "one-by-one", "all-black", "good-png"):
        with time_limit(30):
            response = client.post("/score", content=corpus[kind].read_bytes())
        assert response.status_code in (200, 422), (kind, response.status_code, response.text)
        if response.status_code == 422:
            assert "cannot score the image" in response.json()["detail"]
    assert client.post("/score", content=corpus["good-png"].read_bytes()).status_code == 200


# ------------------------------------------------------------------------------------------------ fuzzing
def _seed_files() -> list[bytes]:
    from PIL import Image

    out = [
        good_png((24, 20)),
        dicom_bytes(np.arange(480, dtype=np.uint16).reshape(24, 20), WindowCenter=200, WindowWidth=400),
    ]
    for fmt in ("JPEG", "TIFF"):
        buffer = io.BytesIO()
        Image.fromarray(np.arange(480, dtype=np.uint8).reshape(24, 20)).save(buffer, fmt)
        out.append(buffer.getvalue())
    return out


SEED_FILES = _seed_files()


@st.composite
def mutated(draw) -> bytes:
    """A valid PNG/JPEG/TIFF/DICOM with random damage: byte flips, a cut, an insertion, a header field rewritten."""
    data = bytearray(draw(st.sampled_from(SEED_FILES)))
    for _ in range(draw(st.integers(0, 6))):
        at = draw(st.integers(0, len(data) - 1))
        data[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    if draw(st.booleans()):
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.binary(max_size=64))
    return bytes(data)


def _check_decoded_or_refused(data: bytes) -> None:
    with time_limit(10):
        try:
            radiograph = decode_radiograph(data, "fuzz.bin", max_pixels=4_000_000)
        except ImageReadError as exc:
            assert exc.path == "fuzz.bin" and "\n" not in str(exc) and exc.reason
            return
    pixels = radiograph.pixels
    assert pixels.ndim == 2 and pixels.dtype == np.float32 and pixels.size > 0
    assert np.isfinite(pixels).all() and pixels.min() >= 0.0 and pixels.max() <= 1.0


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True, database=None
)
@given(mutated())
def test_fuzz_decoder_on_damaged_files(data: bytes) -> None:
    _check_decoded_or_refused(data)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"\0" * 128 + b"DICM", b""]),
    st.binary(max_size=512),
)
def test_fuzz_decoder_on_magic_plus_noise(magic: bytes, tail: bytes) -> None:
    _check_decoded_or_refused(magic + tail)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(mutated())
def test_fuzz_cache_reader_and_dicom_header_reader(tmp_path_factory, data: bytes) -> None:
    from xrad.data.io import read_dicom_tags

    path = tmp_path_factory.getbasetemp() / "fuzz-cache.png"
    path.write_bytes(data)
    with time_limit(10):
        try:
            image = read_cache_png(str(path), "cached image", max_pixels=4_000_000)
            assert image.ndim == 2 and image.dtype == np.uint8
        except ImageReadError as exc:
            assert exc.path == str(path) and "\n" not in str(exc)
        try:
            tags = read_dicom_tags(path)
            assert set(tags) == {"patient_id", "study_id", "series_id", "body_part", "view", "laterality"}
        except ImageReadError as exc:
            assert "\n" not in str(exc)
