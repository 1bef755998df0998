"""``xrad run`` (xrad.jobs.pipeline): options are checked before any step runs, and a run folder only refuses
option changes that would invalidate a step it has already finished.

Kept cheap: a dozen 64-px phantom patients, one worker and the ``tiny`` config; one test trains for real.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import xrad.data.phantoms.generate
import xrad.jobs.train
from xrad.cli.main import main
from xrad.config import dump_config
from xrad.errors import DataError
from xrad.jobs.pipeline import RunOptions, run_pipeline
from xrad.methods.registry import load_config

TINY = {"config": "tiny", "patients": 12, "cache_px": 64, "workers": 1}


def _options(root: Path, **changes: Any) -> RunOptions:
    return RunOptions(output=root, **{**TINY, **changes})


def _stub_training(calls: list[str]):
    """A run_training stand-in that only returns a summary, for tests about the steps before training."""

    def stub(config: str, manifest: Path, run_dir: Path, **kwargs: Any) -> dict[str, Any]:
        calls.append(config)
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        return {"method": "stub", "valid_auroc": 0.5, "test_auroc": 0.5}

    return stub


BAD_OPTIONS = [
    (["--config", "nope"], "--config", "config file not found"),
    (["--abnormal-ratio", "3"], "--abnormal-ratio", "must lie in [0, 1]"),
    (["--known-normal", "0.99"], "--known-normal", "lower it"),
    (["--patients", "0"], "--patients", "n_patients must be 1..99999"),
    (["--difficulty", "0"], "--difficulty", "difficulty must be > 0"),
    (["--cache-px", "8"], "--cache-px", "size must be 32..4096 px, got 8"),
    (["--split-seed", "-1"], "--split-seed", "must be ≥ 0"),
]


@pytest.mark.parametrize(("extra", "option", "reason"), BAD_OPTIONS, ids=[a[0] for a, _, _ in BAD_OPTIONS])
def test_a_bad_option_fails_before_any_step_runs(
    extra: list[str], option: str, reason: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "R"
    assert main(["run", "-o", str(out), "--patients", "12", "--workers", "1", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"xrad run: error: {option}") and reason in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    # Nothing generated and nothing recorded: the corrected command starts from a clean slate.
    assert not out.exists()


def test_a_folder_whose_first_step_failed_accepts_corrected_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(config: Any) -> list:
        raise KeyboardInterrupt  # after generate_phantoms recorded its config in the folder, before any image

    out = tmp_path / "R"
    with monkeypatch.context() as patch:
        patch.setattr(xrad.data.phantoms.generate, "plan_census", interrupted)
        with pytest.raises(KeyboardInterrupt):
            run_pipeline(_options(out, patients=12), log=lambda line: None)
    assert (out / "data" / xrad.data.phantoms.generate.CONFIG_FILE).is_file()  # what the failed attempt left behind

    calls: list[str] = []
    monkeypatch.setattr(xrad.jobs.train, "run_training", _stub_training(calls))
    lines: list[str] = []
    done = run_pipeline(_options(out, patients=10), log=lines.append)
    assert list(done) == ["synth", "index", "split", "preprocess", "train"] and calls == ["tiny"]
    truth = pd.read_csv(out / "data" / "ground_truth.csv")
    assert truth["patient_id"].nunique() == 10  # made with the corrected value, not the failed one
    assert any("[synth] deleting" in line for line in lines)


def test_config_can_change_until_training_finished_but_not_what_finished_steps_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "R"

    def interrupted_training(config: str, manifest: Path, run_dir: Path, **kwargs: Any) -> dict[str, Any]:
        # A training run stopped early leaves its config in the detector folder; the real run_training
        # refuses to resume that folder with another config, so the pipeline has to clear it.
        Path(run_dir).mkdir(parents=True)
        (Path(run_dir) / "config.yaml").write_text(dump_config(load_config(config)), encoding="utf-8")
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(xrad.jobs.train, "run_training", interrupted_training)
        with pytest.raises(KeyboardInterrupt):
            run_pipeline(_options(out, config="tiny_supervised"), log=lambda line: None)
    phantom = next((out / "data").rglob("*.png"))
    made_at = phantom.stat().st_mtime_ns

    # Another config only changes the unfinished training: accepted, and the finished steps are kept.
    lines: list[str] = []
    done = run_pipeline(_options(out, config="tiny"), log=lines.append)
    for step in ("synth", "index", "split", "preprocess"):
        assert f"[{step}] done earlier, skipped" in lines
    assert phantom.stat().st_mtime_ns == made_at
    assert "test_auroc" in done["train"] and (out / "detector" / "artefact").is_dir()

    # Changes that would alter a finished step's outputs are refused, naming the earliest such step.
    refused = [
        ({"abnormal_ratio": 0.1}, r"--abnormal-ratio 0\.1 \(was 0\.05\)", "split"),
        ({"patients": 11}, r"--patients 11 \(was 12\)", "synth"),
        ({"config": "tiny_supervised"}, r"--config tiny_supervised \(was tiny\)", "train"),
    ]
    for change, what, step in refused:
        with pytest.raises(DataError, match=f"{what} would invalidate the finished step '{step}'"):
            run_pipeline(_options(out, **change), log=lambda line: None)
    # Refusals leave the record alone: the original command still just skips everything.
    lines.clear()
    run_pipeline(_options(out, workers=2), log=lines.append)  # workers never change outputs
    assert "[train] done earlier, skipped" in lines
