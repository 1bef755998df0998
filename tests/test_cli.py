"""Command-line behaviour shared by every verb: bad values refused at parse time, unwritable outputs and
unexpected errors reported as one line (never a traceback), nothing scored → a failing exit status."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_tiny_artefact
from PIL import Image

from xrad.cli.main import TRACEBACK_ENV, main

BAD_VALUES = [
    (["score", "a", "b", "-o", "c.csv", "--batch-size", "0"], "--batch-size", "must be ≥ 1"),
    (["score", "a", "b", "-o", "c.csv", "--workers", "-1"], "--workers", "must be ≥ 1"),
    (["serve", "a", "--port", "70000"], "--port", "must be in 1..65535"),
    (["serve", "a", "--max-upload-mb", "-1"], "--max-upload-mb", "must be > 0"),
    (["serve", "a", "--workers", "0"], "--workers", "must be ≥ 1"),
    (["serve", "a", "--time-budget", "nan"], "--time-budget", "must be a finite number"),
    (["serve", "a", "--upload-idle", "0"], "--upload-idle", "must be > 0"),
    (["calibrate", "a", "m.csv", "--specificity", "0.9", "--confidence", "2"], "--confidence", "between 0 and 1"),
    (["calibrate", "a", "m.csv", "--specificity", "1.5"], "--specificity", "between 0 and 1"),
    (["evaluate", "s.csv", "--specificities", "0.9,5"], "--specificities", "between 0 and 1"),
    (["evaluate", "s.csv", "--threshold", "nan"], "--threshold", "finite"),
    (["evaluate", "s.csv", "--n-bootstrap", "-5"], "--n-bootstrap", "must be ≥ 0"),
    (["preprocess", "m.csv", "-o", "c", "--limit", "0"], "--limit", "must be ≥ 1"),
    (["preprocess", "m.csv", "-o", "c", "--visualize", "-1"], "--visualize", "must be ≥ 0"),
    (["report", "f", "--max-tsne-points", "2"], "--max-tsne-points", "must be ≥ 10"),
    (["export", "a", "--onnx", "x.onnx", "--opset", "0"], "--opset", "must be in 7..20"),
    (["export", "a", "--onnx", "x.onnx", "--tolerance", "-1"], "--tolerance", "must be ≥ 0"),
    (["worklist", "s.csv", "-o", "w", "--thumb-size", "0"], "--thumb-size", "must be ≥ 16"),
    (["train", "--config", "tiny", "--num-nodes", "0"], "--num-nodes", "must be ≥ 1"),
]


@pytest.mark.parametrize(
    ("argv", "option", "reason"), BAD_VALUES, ids=[" ".join(a[:1] + a[-2:]) for a, _, _ in BAD_VALUES]
)
def test_bad_numbers_are_refused_when_parsed(
    argv: list[str], option: str, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert option in err and reason in err and "Traceback" not in err


def _scores_csv(path: Path) -> Path:
    pd.DataFrame({"score": [0.1, 0.9, 0.2, 0.8], "label": [0, 1, 0, 1]}).to_csv(path, index=False)
    return path


def test_unwritable_outputs_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scores = _scores_csv(tmp_path / "scores.csv")
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    (tmp_path / "a_folder").mkdir()
    for output, reason in ((blocker / "out.json", "cannot write"), (tmp_path / "a_folder", "it is a folder")):
        assert main(["evaluate", str(scores), "-o", str(output), "--n-bootstrap", "0"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("xrad evaluate: error: ") and str(output) in err and reason in err
        assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_folder", "afile", "scores.csv"]  # no temporary left


def test_unexpected_errors_are_one_line_unless_the_traceback_is_asked_for(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import xrad.cli.evaluate

    def broken(args: object) -> int:
        raise ValueError("something\nwent wrong")

    monkeypatch.setattr(xrad.cli.evaluate, "run", broken)
    monkeypatch.delenv(TRACEBACK_ENV, raising=False)
    assert main(["evaluate", str(tmp_path / "s.csv")]) == 1
    err = capsys.readouterr().err
    assert "xrad evaluate: error: ValueError: something went wrong" in err and TRACEBACK_ENV in err
    assert "Traceback" not in err
    monkeypatch.setenv(TRACEBACK_ENV, "1")
    with pytest.raises(ValueError, match="went wrong"):
        main(["evaluate", str(tmp_path / "s.csv")])


def test_score_refuses_truncated_files_and_fails_when_nothing_is_readable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from xrad.preprocess import PreprocessParams

    artefact = make_tiny_artefact(tmp_path / "artefact", preprocessing=PreprocessParams().to_dict())
    rng = np.random.default_rng(0)
    image = np.zeros((96, 80), np.uint8)
    image[10:86, 10:70] = rng.integers(60, 200, size=(76, 60), dtype=np.uint8)
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(image).save(folder / "whole.png")
    data = (folder / "whole.png").read_bytes()
    (folder / "cut.png").write_bytes(data[: len(data) // 2])

    assert main(["score", str(artefact), str(folder), "-o", str(tmp_path / "s.csv"), "--workers", "1"]) == 0
    scores = pd.read_csv(tmp_path / "s.csv", keep_default_na=False).set_index(
        Path(p).name for p in pd.read_csv(tmp_path / "s.csv")["path"]
    )
    assert "truncated PNG" in scores.loc["cut.png", "error"] and scores.loc["cut.png", "score"] == ""
    assert scores.loc["whole.png", "error"] == "" and np.isfinite(float(scores.loc["whole.png", "score"]))
    capsys.readouterr()

    (folder / "whole.png").unlink()
    assert main(["score", str(artefact), str(folder), "-o", str(tmp_path / "t.csv"), "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert "none of the 1 image(s) could be read" in err and (tmp_path / "t.csv").is_file()


def test_score_refuses_a_bad_aggregation_before_scoring(
    tmp_path: Path, tiny_artefact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "score",
                str(tiny_artefact),
                str(tmp_path / "missing"),
                "-o",
                str(tmp_path / "s.csv"),
                "--aggregation",
                "median",
            ]
        )
        == 2
    )
    assert "unknown aggregation 'median'" in capsys.readouterr().err  # not "not found": checked first


def test_preprocess_fails_when_no_image_could_be_processed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = []
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(b"\x89PNG not really" + bytes(range(40)))
        paths.append(str(tmp_path / name))
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame(
        {
            "path": paths,
            "patient_id": ["p1", "p2"],
            "study_id": ["s1", "s2"],
            "body_part": "HAND",
            "view": "",
            "label": 0,
            "source": "csv",
        }
    ).to_csv(manifest, index=False)
    assert main(["preprocess", str(manifest), "-o", str(tmp_path / "cache"), "--workers", "1"]) == 2
    captured = capsys.readouterr()
    assert "0 in the cache" in captured.out and "2 failed" in captured.out
    assert "none of the 2 image(s) could be preprocessed" in captured.err
    assert len(pd.read_csv(tmp_path / "cache" / "failures.csv")) == 2


def test_serve_refuses_a_bad_device_or_a_busy_port(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    assert main(["serve", str(tmp_path / "artefact"), "--device", "bogus"]) == 2
    assert "--device 'bogus'" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(tmp_path / "artefact"), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port}: cannot listen there" in err and len(err.strip().splitlines()) == 1


def test_a_folder_given_as_manifest_is_named_as_such(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["split", str(tmp_path), "-o", str(tmp_path / "split.csv")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path}: is a folder, not a manifest CSV" in err and "xrad index" in err


@pytest.mark.parametrize("rule", ["bogus", "specificity:2", "sensitivity:x", "youden:0.5"])
def test_a_bad_threshold_rule_is_refused_without_validation_rows(
    rule: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scores = _scores_csv(tmp_path / "scores.csv")  # no split column: the rule would never be used
    assert main(["evaluate", str(scores), "--threshold-rule", rule, "--n-bootstrap", "0"]) == 2
    assert f"unknown threshold rule {rule!r}" in capsys.readouterr().err


def test_a_config_that_is_not_text_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    binary = tmp_path / "x.png"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xde\xad\xbe\xef")
    assert (
        main(["train", "--config", str(binary), "--manifest", str(tmp_path / "m.csv"), "-o", str(tmp_path / "r")]) == 2
    )
    assert f"{binary}: not a text file; give a YAML config" in capsys.readouterr().err
    assert main(["benchmark", str(binary)]) == 2
    assert f"{binary}: not a text file" in capsys.readouterr().err


def _core_manifest(paths: list[str], splits: list[str] | None = None) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "path": paths,
            "patient_id": [f"p{i}" for i in range(len(paths))],
            "study_id": [f"s{i}" for i in range(len(paths))],
            "body_part": "HAND",
            "view": "",
            "label": 0,
            "source": "csv",
        }
    )
    if splits is not None:
        frame["split"], frame["semi_label"] = splits, 0
    return frame


@pytest.mark.parametrize("verb", ["preprocess", "split"])
def test_a_header_only_manifest_is_a_one_line_error(
    verb: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was ``KeyError: 'failed'`` (preprocess) and an ``AttributeError`` (split)."""
    _core_manifest([]).to_csv(tmp_path / "m.csv", index=False)
    assert main([verb, str(tmp_path / "m.csv"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "m.csv: the manifest has no rows" in err and "Error:" not in err


def test_train_refuses_one_image_in_two_splits_unless_forced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from xrad.errors import XradError

    for name in ("a", "b"):
        Image.fromarray(np.full((40, 40), 100 if name == "a" else 150, np.uint8)).save(tmp_path / f"{name}.png")
    (tmp_path / "copy.png").write_bytes((tmp_path / "a.png").read_bytes())
    paths = [str(tmp_path / n) for n in ("a.png", "b.png", "copy.png")]
    _core_manifest(paths, ["train", "valid", "test"]).to_csv(tmp_path / "m.csv", index=False)
    argv = ["train", "--config", "tiny", "--manifest", str(tmp_path / "m.csv"), "-o", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "are the same image (same content)" in err and "--allow-leakage" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()  # refused before anything was written

    import xrad.jobs.train as train_job

    def stop(*args, **kwargs):  # the check passed: stop before anything is trained
        raise XradError("reached the image banks")

    monkeypatch.setattr(train_job, "_load_banks", stop)
    assert main(argv + ["--allow-leakage"]) == 2
    assert "reached the image banks" in capsys.readouterr().err


def test_training_banks_leave_unreadable_images_out_and_list_them(tmp_path: Path) -> None:
    """One bad file no longer stops training: it is left out of its bank and named in unreadable.csv."""
    from xrad.config import load_config
    from xrad.jobs.train import _load_banks
    from xrad.run_folder import RunFolder

    paths = []
    for i in range(4):
        pixels = np.random.default_rng(i).integers(0, 255, (40, 40), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    (tmp_path / "ww0.dcm").write_bytes(__import__("malformed_corpus").dicom_bytes(WindowCenter=5, WindowWidth=0))
    paths.append(str(tmp_path / "ww0.dcm"))
    frame = _core_manifest(paths, ["train", "train", "valid", "test", "train"])
    folder = RunFolder(tmp_path / "run")
    with pytest.warns(UserWarning, match=r"1 image\(s\) could not be read and are left out .*ww0.dcm: DICOM window"):
        banks = _load_banks(load_config("tiny"), frame, folder, progress=False)
    assert [len(banks[s]) for s in ("train", "valid", "test")] == [2, 1, 1]
    listed = pd.read_csv(folder.unreadable)
    assert listed[["split", "path"]].values.tolist() == [["train", paths[-1]]] and "window" in listed["reason"][0]
    # A degenerate (constant) image is kept but named in a warning.
    frame = _core_manifest(paths[:4], ["train", "train", "valid", "test"])
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "0.png")
    with pytest.warns(UserWarning, match=r"1 image\(s\) are degenerate .*0.png in train: constant image"):
        banks = _load_banks(load_config("tiny"), frame, folder, progress=False)
    assert len(banks["train"]) == 2 and not folder.unreadable.exists()
