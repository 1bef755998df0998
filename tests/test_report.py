"""HTML reports for a run folder and a benchmark folder: embedded figures, every section, Chromium render."""

from __future__ import annotations

import html
import re
import shutil

import numpy as np
import pytest
import yaml
from browser import CHROMIUM, NO_CHROMIUM, assert_drawn, dom_and_screenshot  # tests/browser.py
from PIL import Image

from xrad.data.manifest import read_manifest, write_manifest
from xrad.data.splits import SplitConfig, make_split
from xrad.errors import DataError
from xrad.evaluation.report import render_report, stage_metrics
from xrad.jobs.benchmark import load_benchmark_config, run_benchmark

RUN_SECTIONS = (
    "Headline",
    "Per body part (test)",
    "ROC and precision–recall curves",
    "Score distributions",
    "Embeddings (t-SNE",
    "Validation AUROC per epoch",
    "Surviving spheres per epoch",
    "Loss curves",
    "Appendix: run summary and every metric",
    "Appendix: environment",
)
BENCH_SECTIONS = (
    "Table 1: validation and test AUROC",
    "Results per cell",
    "ROC and precision–recall curves",
    "Score distributions",
    "Embeddings (t-SNE",
    "Validation AUROC per epoch",
    "Surviving spheres per epoch",
    "Loss curves",
    "Environment",
)


@pytest.fixture()
def run_dir(tmp_path, toy_manifest, fake_run_training):
    split = make_split(read_manifest(toy_manifest), SplitConfig(seed=0))
    write_manifest(split, tmp_path / "split.csv")
    fake_run_training({"seed": 3, "fake_shift": 1.2, "method": "fake"}, tmp_path / "split.csv", tmp_path / "run")
    return tmp_path / "run"


@pytest.fixture()
def bench_dir(tmp_path, toy_manifest, fake_run_training):
    (tmp_path / "good.yaml").write_text("method: good\nfake_shift: 1.5\n")
    (tmp_path / "weak.yaml").write_text("method: weak\nfake_shift: 0.3\n")
    (tmp_path / "bench.yaml").write_text(
        yaml.safe_dump(
            {
                "methods": ["good.yaml", "weak.yaml"],
                "training_seeds": [0, 1],
                "split_seeds": [0],
                "abnormal_ratios": [0.05],
                "data": {"manifest": toy_manifest.name},
                "output": "bench",
            }
        )
    )
    config = load_benchmark_config(tmp_path / "bench.yaml")
    run_benchmark(config, train=fake_run_training)
    return config.output


def _images(page: str) -> list[str]:
    return re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)


def test_stage_metrics_merges_lightning_rows(run_dir):
    stages = stage_metrics(run_dir)
    assert list(stages) == ["pretrain", "finetune"]
    finetune = stages["finetune"]
    assert finetune["epoch"].tolist() == [0, 1, 2, 3]
    assert finetune[["train_loss", "valid_auroc", "n_spheres"]].notna().all().all()
    assert finetune["n_spheres"].tolist() == [5, 3, 1, 1]


def test_run_report_is_self_contained(run_dir):
    path = render_report(run_dir, n_bootstrap=100)
    page = path.read_text()
    for section in RUN_SECTIONS:
        assert f"<h2>{section}" in page, section
    images = _images(page)
    # ROC/PR, distributions, t-SNE of h and z, valid AUROC, spheres, 2 loss curves.
    assert len(images) == 8
    assert len(list((run_dir / "report").glob("*.png"))) == 8
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "Cohen&#x27;s kappa at threshold" in page and "Youden" in page
    assert "fake_shift" in page and "&quot;commit&quot;: &quot;abc&quot;" in page  # config and environment shown


def test_run_report_says_what_is_missing(run_dir):
    for name in ("embeddings_test.safetensors", "env.json"):
        (run_dir / name).unlink()
    (run_dir / "finetune" / "metrics.csv").write_text("epoch,train_loss\n0,1.0\n1,0.5\n")
    page = render_report(run_dir, n_bootstrap=0).read_text()
    assert "embeddings_test.safetensors not found" in page and "env.json not found" in page
    assert "no n_spheres column" in page and "no valid_auroc column" in page
    for section in RUN_SECTIONS:
        assert f"<h2>{section}" in page, section


def test_benchmark_report(bench_dir):
    page = render_report(bench_dir).read_text()
    for section in BENCH_SECTIONS:
        assert f"<h2>{section}" in page, section
    assert "<td>good</td>" in page and "Welch" in page and "t-interval" in page
    # Fig. 7 comparison, the split summary (Fig. 6), ROC/PR, 2 score distributions, 2 t-SNE, valid AUROC,
    # spheres, 2 loss curves.
    assert len(_images(page)) == 11
    assert "<h2>Split summary" in page and "images per split by semi-label" in page


def test_report_rejects_other_folders(tmp_path):
    with pytest.raises(DataError, match="neither a run folder"):
        render_report(tmp_path)
    with pytest.raises(DataError, match="not a folder"):
        render_report(tmp_path / "nope")


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_report_renders_in_headless_chromium(bench_dir, tmp_path):
    report = render_report(bench_dir)
    _, rgb = dom_and_screenshot(report.resolve().as_uri(), tmp_path, "bench", size=(1200, 2000), budget_ms=3000)
    pixels = rgb.mean(axis=2)
    assert pixels.std() > 20  # a blank (all white) page has std 0
    # The figures are drawn: a good share of rows is not plain white.
    assert (pixels.min(axis=1) < 200).mean() > 0.3


def test_run_report_opens_with_the_headline_and_accepts_the_xrad_run_folder(run_dir, tmp_path) -> None:
    import pandas as pd

    from xrad.utils.notice import RESEARCH_NOTICE

    pipeline = tmp_path / "default"  # the layout `xrad run` writes: pipeline.json and detector/
    pipeline.mkdir()
    (pipeline / "pipeline.json").write_text("{}")
    shutil.copytree(run_dir, pipeline / "detector")
    (pipeline / "detector" / "artefact").mkdir()
    (pipeline / "detector" / "artefact" / "artefact.json").write_text('{"operating_point": {"threshold": 0.5}}')
    page = render_report(pipeline, n_bootstrap=20).read_text(encoding="utf-8")
    first_section = re.findall(r"<h2>(.*?)</h2>", page)[0]
    assert first_section == "Headline" and page.index(html.escape(RESEARCH_NOTICE)) < page.index("Per body part")
    assert re.search(r"Test AUROC <b>0\.\d\d</b> \(95% interval 0\.\d\d–[01]\.\d\d\)", page)
    assert "threshold 0.5, stored by xrad calibrate" in page
    test = pd.read_csv(run_dir / "scores_test.csv")
    tp = int(((test["score"] >= 0.5) & (test["label"] == 1)).sum())
    tn = int(((test["score"] < 0.5) & (test["label"] == 0)).sum())
    confusion = re.search(r"<table id='confusion'>.*?</table>", page).group(0)
    assert f"<th>abnormal</th><td>{tp}</td>" in confusion and f"<td>{tn}</td></tr></table>" in confusion
    assert "Fig. 9" not in page and page.index("Appendix: run summary") > page.index("Loss curves")


def test_report_shows_a_gallery_of_the_highest_and_lowest_scored_test_images(tiny_run, tmp_path) -> None:
    """`xrad report` draws the 2 highest- and 2 lowest-scored test images with the run's artefact into
    gallery/ and the report embeds them in that order, each with its score; a re-run with fewer images leaves
    no PNG of the earlier one."""
    import json

    import pandas as pd

    from xrad.cli.main import main

    run = tmp_path / "run"
    shutil.copytree(tiny_run["run_dir"], run)
    assert main(["report", str(run), "--gallery", "2", "--n-bootstrap", "10"]) == 0
    listing = json.loads((run / "gallery" / "gallery.json").read_text())
    test = pd.read_csv(run / "scores_test.csv").sort_values("score", ascending=False)
    expected = list(test["score"].head(2)) + list(test["score"].tail(2)[::-1])
    assert [e["which"] for e in listing["images"]] == ["highest", "highest", "lowest", "lowest"]
    assert np.allclose([e["score"] for e in listing["images"]], expected)
    for entry in listing["images"]:
        assert Image.open(run / "gallery" / entry["png"]).size[0] > 16  # a drawn heatmap figure
    page = (run / "report.html").read_text(encoding="utf-8")
    section = page[page.index("Examples: the highest") : page.index("Per body part")]
    assert section.count("<figure><img") == 4 and section.index("Highest") < section.index("Lowest")
    shown = [float(s) for s in re.findall(r"<figcaption>[^<]*score (-?[\d.e+-]+)", section)]
    assert np.allclose(shown, expected, rtol=1e-3)
    assert main(["report", str(run), "--gallery", "1", "--n-bootstrap", "10"]) == 0
    assert sorted(p.name for p in (run / "gallery").glob("*.png")) == ["highest_01.png", "lowest_01.png"]


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_run_report_in_chromium_shows_headline_operating_point_gallery_and_warning(tiny_run, tmp_path) -> None:
    """The report of a trained run, as a reader opens it: the AUROC with its interval, the flag rule (the
    calibrated threshold with its sensitivity and specificity and the confusion matrix), the gallery with each
    image's percentile and its heatmap in colour, and the warning that a phantom-trained detector's scores of
    real radiographs mean nothing."""
    from xrad.cli.main import main
    from xrad.inference.artefact import update_artefact_meta

    run = tmp_path / "run"
    shutil.copytree(tiny_run["run_dir"], run)
    update_artefact_meta(run / "artefact", training_data={"phantoms": True}, operating_point={"threshold": 0.5})
    assert main(["report", str(run), "--gallery", "3", "--n-bootstrap", "20"]) == 0
    dom, rgb = dom_and_screenshot((run / "report.html").as_uri(), tmp_path, "report", budget_ms=3000)
    assert re.search(r"id=\"auroc\">Test AUROC <b>\d\.\d\d</b> \(95% interval", dom)
    assert re.search(r'id="operating">Operating point: threshold 0\.5, stored by xrad calibrate', dom)
    assert re.search(r"sensitivity \d\.\d\d, specificity \d\.\d\d", dom) and 'id="confusion"' in dom
    assert 'id="warning">Warning: trained on generated phantoms only' in dom
    assert len(re.findall(r"<figcaption>[^<]*percentile \d+\.\d</figcaption>", dom)) == 6
    assert dom.index("Examples: the highest") < dom.index("Per body part")
    assert_drawn(rgb)  # the gallery's heatmaps and colour bars are in the first screen
