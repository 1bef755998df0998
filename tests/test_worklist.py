"""Worklist and the score → calibrate → score → worklist flow, rendered in headless Chromium."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from browser import CHROMIUM, NO_CHROMIUM, assert_drawn, dom_and_screenshot  # tests/browser.py
from PIL import Image

from xrad.cli.main import main
from xrad.inference.worklist import build_worklist, worklist_table


def test_worklist_table_sorts_studies_and_flags() -> None:
    scores = pd.DataFrame(
        {
            "path": [f"/x/{i}.png" for i in range(6)],
            "study_id": list("aabbcc"),
            "score": [0.1, 0.9, 0.3, 0.4, 0.2, 0.25],
            "label": [1, 1, 0, 0, "", ""],
            "body_part": ["HAND", "HAND", "WRIST", "WRIST", "HAND", "HAND"],
        }
    )
    studies, _ = worklist_table(scores, aggregation="max", threshold=0.4)
    assert studies["study_id"].tolist() == ["a", "b", "c"] and studies["rank"].tolist() == [1, 2, 3]
    assert studies["score"].tolist() == [0.9, 0.4, 0.25] and studies["flagged"].tolist() == [True, True, False]
    studies, _ = worklist_table(scores.drop(columns="study_id"), aggregation="mean")
    assert len(studies) == 6 and studies["study_id"].iloc[0] == "1" and studies["flagged"].isna().all()


def _write_images(folder: Path, n_studies: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for s in range(n_studies):
        for k in range(2):
            path = folder / f"s{s}_{k}.png"
            xx = np.mgrid[:80, :60][1]
            pixels = (60 + 120 * np.exp(-((xx - 30) ** 2) / 60) + rng.normal(0, 10, (80, 60))).clip(0, 255)
            if s == 0:
                pixels[20:30, 10:20] = 255  # an obvious spot
            Image.fromarray(pixels.astype(np.uint8)).save(path)
            rows.append(
                {
                    "path": str(path),
                    "study_id": f"study{s}",
                    "patient_id": f"p{s // 2}",
                    "body_part": "HAND",
                    "label": 0 if s % 2 else "",
                    "split": "valid" if s % 2 else "test",
                }
            )
    return pd.DataFrame(rows)


def test_score_calibrate_worklist_flow(tiny_artefact, tmp_path, capsys) -> None:
    artefact = tmp_path / "artefact"
    shutil.copytree(tiny_artefact, artefact)
    (tmp_path / "img").mkdir()
    manifest = _write_images(tmp_path / "img")
    manifest.to_csv(tmp_path / "manifest.csv", index=False)

    assert (
        main(
            ["calibrate", str(artefact), str(tmp_path / "manifest.csv"), "--specificity", "0.5", "--aggregation", "max"]
        )
        == 0
    )
    assert "study level (max)" in capsys.readouterr().out

    out = tmp_path / "out" / "scores.csv"
    assert (
        main(
            [
                "score",
                str(artefact),
                str(tmp_path / "manifest.csv"),
                "-o",
                str(out),
                "--heatmaps",
                str(tmp_path / "heat"),
            ]
        )
        == 0
    )
    images = pd.read_csv(out)
    assert images["flagged"].dtype == bool and len(images) == 10
    assert all(Path(p).is_file() for p in images["heatmap"])
    studies = pd.read_csv(tmp_path / "out" / "scores_studies.csv")
    patients = pd.read_csv(tmp_path / "out" / "scores_patients.csv")
    assert len(studies) == 5 and len(patients) == 3 and "flagged" in studies and "flagged" in patients
    expected = images.groupby("study_id")["score"].max()  # the calibrated aggregation is reused
    assert np.allclose(studies.set_index("study_id")["score"], expected.loc[studies["study_id"]])

    wl = tmp_path / "worklist"
    assert main(["worklist", str(out), "-o", str(wl), "--artefact", str(artefact)]) == 0
    table = pd.read_csv(wl / "worklist.csv")
    assert table["score"].is_monotonic_decreasing and len(table) == 5
    page = (wl / "index.html").read_text()
    assert page.count('class="thumb"') == 20  # 2 images + 2 heatmaps per study
    assert 'class="threshold"' in page and "http" not in page  # offline: no external resource
    assert len(list((wl / "thumbs").glob("*.png"))) == 20


def test_worklist_threshold_override_and_unreadable(tmp_path) -> None:
    scores = pd.DataFrame(
        {"path": [str(tmp_path / "missing.png"), str(tmp_path / "ok.png")], "study_id": ["m", "o"], "score": [2.0, 1.0]}
    )
    Image.fromarray(np.full((10, 10), 128, np.uint8)).save(tmp_path / "ok.png")
    result = build_worklist(scores, tmp_path / "wl", threshold=5.0)
    page = (tmp_path / "wl" / "index.html").read_text()
    assert result["n_flagged"] == 0 and "unreadable" in page
    # The threshold line sits above every study when none reaches it.
    assert page.index('class="threshold"') < page.index('<td class="id">m</td>')


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_fracatlas_worklist_renders_in_chromium(fracatlas_dir, readout_artefact, tmp_path) -> None:
    """Eight real FracAtlas studies scored by a HAND-phantom artefact, listed in Chromium: each study shows
    its top percentile, its flag against the threshold line, its heatmap (drawn with the colour bar) and the
    warning that a phantom-trained detector's score of a real radiograph means nothing."""
    import re

    labels = pd.read_csv(fracatlas_dir / "labels.csv")
    picked = pd.concat([labels[labels["label"] == 1].head(4), labels[labels["label"] == 0].head(4)])
    manifest = pd.DataFrame(
        {
            "path": [str(fracatlas_dir / p) for p in picked["path"]],
            "study_id": [Path(p).stem for p in picked["path"]],
            "body_part": picked["body_part"].to_numpy(),
            "label": picked["label"].to_numpy(),
        }
    )
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    out = tmp_path / "scores.csv"
    command = ["score", str(readout_artefact), str(tmp_path / "manifest.csv"), "-o", str(out)]
    assert main([*command, "--heatmaps", str(tmp_path / "heat")]) == 0
    scores = pd.read_csv(out)["score"]
    threshold = float(np.sort(scores)[4])  # 4 studies at or above it
    assert main(["worklist", str(out), "-o", str(tmp_path / "wl"), "--threshold", str(threshold)]) == 0
    dom, rgb = dom_and_screenshot((tmp_path / "wl" / "index.html").as_uri(), tmp_path, "worklist", budget_ms=5000)
    assert dom.count('class="flagged"') == 4 and dom.count('alt="heatmap"') == 8
    assert "8 studies (8 images)" in dom and re.search(r'class="threshold"><td[^>]*>threshold ', dom)
    assert "top image percentile" in dom and len(re.findall(r">\d+\.\d</td>", dom)) >= 8
    assert dom.count("warning: trained on generated phantoms only") == 8
    assert_drawn(rgb)
    heatmap = Image.open(sorted((tmp_path / "heat").glob("*.png"))[0]).convert("RGB")
    top, bottom = np.asarray(heatmap).astype(int)[[1, -2]]  # the JET colour bar: red at the top, blue below
    assert ((top[:, 0] > 100) & (top[:, 2] < 60) & (bottom[:, 2] > 100) & (bottom[:, 0] < 60)).sum() >= 8


def test_unreadable_images_stay_on_the_worklist(tmp_path) -> None:
    """A study whose images failed to score is listed (unranked), never silently dropped; partial failures
    are counted in their study."""
    scores = pd.DataFrame(
        {
            "path": [str(tmp_path / f"{i}.png") for i in range(5)],
            "study_id": ["a", "a", "b", "c", "c"],
            "body_part": "HAND",
            "score": [2.0, np.nan, 1.0, np.nan, np.nan],
            "error": ["", "x.png: truncated", "", "c1: bad", "c2: bad"],
        }
    )
    studies, _ = worklist_table(scores, aggregation="max", threshold=1.5)
    table = studies.set_index("study_id")
    assert table.loc["a", "unreadable"] == 1 and table.loc["a", "rank"] == 1 and bool(table.loc["a", "flagged"])
    assert table.loc["b", "unreadable"] == 0 and table.loc["b", "rank"] == 2
    assert table.loc["c", "unreadable"] == 2 and pd.isna(table.loc["c", "rank"]) and np.isnan(table.loc["c", "score"])
    result = build_worklist(scores, tmp_path / "wl", threshold=1.5)
    assert (result["n_studies"], result["n_unscored"], result["n_unreadable_images"]) == (2, 1, 3)
    page = (tmp_path / "wl" / "index.html").read_text()
    assert 'id="unscored"' in page and "read them yourself: c" in page and "+1 unreadable" in page
    written = pd.read_csv(tmp_path / "wl" / "worklist.csv")
    assert sorted(written["study_id"]) == ["a", "b", "c"] and written["unreadable"].sum() == 3


def test_images_without_study_ids_are_never_merged_by_file_name(tmp_path) -> None:
    """image1.png of two patients, no study ids: two studies (the worklist grouped them as one)."""
    scores = pd.DataFrame(
        {
            "path": ["/data/p1/image1.png", "/data/p2/image1.png", "/data/p2/image2.png"],
            "study_id": ["", "", ""],
            "score": [0.9, 0.1, 0.5],
        }
    )
    studies, images = worklist_table(scores, aggregation="max")
    assert len(studies) == 3 and (studies["n_images"] == 1).all()
    ids = set(studies["study_id"])
    assert "image2" in ids and sum(i.startswith("image1~") for i in ids) == 2
    # A stem that is some other row's real study id is not taken over either.
    mixed = pd.DataFrame({"path": ["/a/s1.png", "/b/x.png"], "study_id": ["", "s1"], "score": [1.0, 2.0]})
    assert len(worklist_table(mixed, aggregation="max")[0]) == 2


def test_a_failed_rerun_keeps_the_previous_worklist_whole(tmp_path, monkeypatch) -> None:
    from xrad.errors import OutputError

    Image.fromarray(np.full((10, 10), 128, np.uint8)).save(tmp_path / "ok.png")
    first = pd.DataFrame({"path": [str(tmp_path / "ok.png")], "study_id": ["first"], "score": [1.0]})
    build_worklist(first, tmp_path / "wl")
    before = {p.name: p.read_bytes() for p in (tmp_path / "wl").iterdir() if p.is_file()}

    import xrad.utils.atomic as atomic  # worklist imports write_text from here when it builds

    def fail(path, text):  # index.html cannot be written: worklist.csv of the new run exists already
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic, "write_text", fail)
    second = first.assign(study_id="second", score=2.0)
    with pytest.raises(OSError):
        build_worklist(second, tmp_path / "wl")
    monkeypatch.undo()
    after = {p.name: p.read_bytes() for p in (tmp_path / "wl").iterdir() if p.is_file()}
    assert after == before and b"first" in after["worklist.csv"]  # not the new CSV next to the old page
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staged folder left
    build_worklist(second, tmp_path / "wl")  # a successful re-run replaces the set as a whole
    assert b"second" in (tmp_path / "wl" / "worklist.csv").read_bytes()
    assert "second" in (tmp_path / "wl" / "index.html").read_text()
    # A folder holding anything else is refused, never replaced.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.docx").write_text("precious")
    with pytest.raises(OutputError, match="holds files this output did not write"):
        build_worklist(second, tmp_path / "mine")
    assert (tmp_path / "mine" / "thesis.docx").read_text() == "precious"
