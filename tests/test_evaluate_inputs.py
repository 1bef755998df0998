"""What `xrad evaluate` accepts: the label vocabulary of `xrad index`, `xrad score`'s own output with unreadable
rows, and nothing silently wrong (non-finite scores, an image listed twice, an unknown label spelling)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xrad.cli.main import main
from xrad.errors import DataError
from xrad.evaluation.evaluate import evaluate_scores, prepare_scores, read_scores


def _scores(n: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    return pd.DataFrame(
        {"path": [f"/x/{i}.png" for i in range(n)], "label": labels, "score": labels + rng.normal(0, 0.8, n)}
    )


def test_label_spellings_are_those_of_index() -> None:
    frame = _scores()
    spelled = frame.assign(label=frame["label"].map({1: "abnormal", 0: "normal"}).astype(object))
    spelled.loc[0, "label"], spelled.loc[1, "label"] = "TRUE", " no "
    spelled.loc[2, "label"], spelled.loc[3, "label"] = "", "unknown"
    numeric = frame.assign(label=frame["label"].astype(float))
    numeric.loc[0, "label"], numeric.loc[1, "label"] = 1.0, 0.0
    numeric.loc[[2, 3], "label"] = np.nan
    got = prepare_scores(spelled)["label"]
    np.testing.assert_array_equal(got.to_numpy(), numeric["label"].to_numpy())  # was: "abnormal" → unlabelled
    a = evaluate_scores(spelled, n_bootstrap=0)
    b = evaluate_scores(numeric, n_bootstrap=0)
    assert a["n_labelled"] == b["n_labelled"] == 38 and a["levels"]["image"]["auroc"] == b["levels"]["image"]["auroc"]
    with pytest.raises(DataError, match=r"label 'maybe' is not 0/1, true/false, normal/abnormal or empty"):
        prepare_scores(frame.assign(label=["maybe"] + ["1"] * (len(frame) - 1)))


@pytest.mark.parametrize("bad", ["inf", "-inf", np.inf])
def test_non_finite_scores_are_refused(bad) -> None:
    frame = _scores().astype({"score": object})
    frame.loc[5, "score"] = bad
    with pytest.raises(DataError, match=r"1 row\(s\) have a non-finite score"):
        prepare_scores(frame)


def test_an_image_listed_twice_is_refused_but_not_across_splits() -> None:
    frame = _scores()
    with pytest.raises(DataError, match=r"image /x/3.png is listed 2 times"):
        evaluate_scores(pd.concat([frame, frame.iloc[[3]]]), n_bootstrap=0)
    with_split = pd.concat([frame.assign(split="test"), frame.iloc[[3]].assign(split="test")])
    with pytest.raises(DataError, match="in one split"):
        prepare_scores(with_split)
    prepare_scores(pd.concat([frame.assign(split="test"), frame.assign(split="valid")]))  # one per split: fine


def test_evaluate_reads_score_output_with_unreadable_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`xrad score` writes NaN + an error for an unreadable image; evaluate refused the whole file."""
    frame = _scores().assign(error="", degenerate="")
    frame.loc[[4, 9], "score"] = np.nan
    frame.loc[[4, 9], "error"] = ["/x/4.png: truncated PNG file", "/x/9.png: is a named pipe (FIFO)"]
    frame.to_csv(tmp_path / "scores.csv", index=False)
    read = read_scores(tmp_path / "scores.csv")
    assert len(read) == 38 and read.attrs["unreadable"] == 2
    assert main(["evaluate", str(tmp_path / "scores.csv"), "--n-bootstrap", "0"]) == 0
    out = capsys.readouterr().out
    assert "2 image(s) could not be read when scored" in out
    result = __import__("json").loads((tmp_path / "scores.evaluation.json").read_text())
    assert result["n_unreadable"] == 2 and result["n_images"] == 38
    # A NaN score without an error is still refused: that is a broken table, not an unreadable image.
    frame.loc[4, "error"] = ""
    frame.to_csv(tmp_path / "broken.csv", index=False)
    assert main(["evaluate", str(tmp_path / "broken.csv"), "--n-bootstrap", "0"]) == 2
    assert "1 row(s) have no numeric score" in capsys.readouterr().err


def test_unreadable_rows_are_counted_in_their_own_split() -> None:
    frame = pd.concat(
        [_scores().assign(split="test"), _scores(seed=1).assign(split="valid", path=lambda f: f["path"] + "v")]
    )
    frame = frame.reset_index(drop=True).assign(error="")
    frame.loc[[0, 1], "error"] = "test image unreadable"
    frame.loc[45, "error"] = "valid image unreadable"
    frame.loc[[0, 1, 45], "score"] = np.nan
    prepared = prepare_scores(frame)
    assert prepared.attrs["unreadable"] == 3
    test = prepared[prepared["split"] == "test"]
    assert evaluate_scores(test, n_bootstrap=0)["n_unreadable"] == 2
