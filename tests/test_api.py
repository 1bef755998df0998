"""The front door: ``xrad.Detector.load`` / ``.score`` / ``.heatmap`` and ``xrad.fit``, and the README's
Python example run exactly as written."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    """The ```python block that follows the ``python-example`` marker in README.md."""
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- python-example:[^>]*-->\s*```python\n(.*?)```", text, re.DOTALL)
    assert match, "README.md lost its marked Python example"
    return match.group(1)


def test_the_readme_example_runs_as_written(
    tiny_run: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code = readme_example()
    assert len(code.strip().splitlines()) == 5
    # The folders the example names: the artefact where `xrad run` puts it, and two images to score.
    shutil.copytree(tiny_run["run_dir"] / "artefact", tmp_path / "runs/default/detector/artefact")
    data = Path(tiny_run["manifest"]).parent
    (tmp_path / "my_images").mkdir()
    shutil.copyfile(data / "image000.png", tmp_path / "my_images/hand.png")  # abnormal (planted square)
    shutil.copyfile(data / "image001.png", tmp_path / "my_images/wrist.png")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    table, explanation = namespace["table"], namespace["explanation"]
    assert isinstance(table, pd.DataFrame) and len(table) == 2
    assert {"path", "score", "percentile", "degenerate", "error"} <= set(table.columns)
    assert (table["error"] == "").all() and np.isfinite(table["score"]).all()
    assert ((table["percentile"] >= 0) & (table["percentile"] <= 100)).all()
    hand = table.loc[table["path"].str.endswith("hand.png"), "score"].item()
    assert explanation.score == pytest.approx(hand, rel=1e-5)  # the map explains the score the table holds
    assert (
        explanation.heat.shape == explanation.base.shape and 0 <= explanation.heat.min() <= explanation.heat.max() <= 1
    )
    assert explanation.overlay_png().startswith(b"\x89PNG")
    assert "percentile" in capsys.readouterr().out


def test_score_matches_the_cli_table_and_accepts_lists_and_frames(tiny_run: dict, tmp_path: Path) -> None:
    import xrad
    from xrad.cli.main import main

    detector = xrad.Detector.load(tiny_run["run_dir"] / "artefact")
    manifest = pd.read_csv(tiny_run["manifest"])
    test = manifest[manifest["split"] == "test"]
    paths = test["path"].tolist()
    from_list = detector.score(paths)
    from_frame = detector.score(test[["path", "study_id"]])
    np.testing.assert_allclose(from_list["score"], from_frame["score"], rtol=1e-6)
    images = tmp_path / "images"
    images.mkdir()
    for p in paths:
        shutil.copyfile(p, images / Path(p).name)
    assert main(["score", str(tiny_run["run_dir"] / "artefact"), str(images), "-o", str(tmp_path / "s.csv")]) == 0
    cli = pd.read_csv(tmp_path / "s.csv", keep_default_na=False)
    api = detector.score(images)
    assert list(cli.columns) == list(api.columns)
    np.testing.assert_allclose(cli["score"], api["score"], rtol=1e-6)
    np.testing.assert_allclose(cli["percentile"], api["percentile"], rtol=1e-6)


def test_fit_returns_the_trained_detector(tiny_run: dict) -> None:
    import xrad

    # The run folder is finished, so fit resumes it: nothing is trained again, the same artefact is loaded.
    detector = xrad.fit("tiny", tiny_run["manifest"], tiny_run["run_dir"], progress=False)
    assert detector.summary is not None and detector.summary["test_auroc"] == tiny_run["summary"]["test_auroc"]
    assert detector.meta.method == "self_taught" and "self_taught" in repr(detector)


def test_import_xrad_stays_light() -> None:
    code = "import sys, xrad; print('torch' in sys.modules, 'pandas' in sys.modules, callable(xrad.fit))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False", "True"]
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        import xrad

        xrad.nope  # noqa: B018
