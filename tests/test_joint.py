"""Joint Deep SAD: a run interrupted inside the joint stage and resumed equals the uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from training_helpers import make_dataset

from xrad.jobs.train import run_training


class _Crash(Exception):
    pass


class _CrashBeforeEpoch(L.Callback):
    """Simulates the process dying once epoch ``epoch − 1`` of the joint stage is checkpointed."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if type(pl_module).__name__ == "JointModule" and trainer.current_epoch == self.epoch:
            raise _Crash


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("joint") / "data", n=48, size=32)


@pytest.mark.parametrize("n_spheres", [1, 3])
def test_joint_training_resumes_exactly(manifest: Path, tmp_path: Path, n_spheres: int) -> None:
    overrides = ["finetune.epochs=2", f"finetune.n_spheres={n_spheres}"]
    reference = run_training("tiny_joint_deep_sad", manifest, tmp_path / "ref", progress=False, overrides=overrides)
    with pytest.raises(_Crash):
        run_training(
            "tiny_joint_deep_sad",
            manifest,
            tmp_path / "run",
            progress=False,
            overrides=overrides,
            trainer_overrides={"callbacks": [_CrashBeforeEpoch(1)]},
        )
    assert (tmp_path / "run/finetune/checkpoints/last.ckpt").exists()
    resumed = run_training("tiny_joint_deep_sad", manifest, tmp_path / "run", progress=False, overrides=overrides)
    assert resumed["n_spheres_history"] == reference["n_spheres_history"]
    want = load_file(str(tmp_path / "ref/finetune/model.safetensors"))
    got = load_file(str(tmp_path / "run/finetune/model.safetensors"))
    assert want.keys() == got.keys()
    for key in want:  # decoder weights, encoder weights, centres, active mask and loss scales
        assert torch.equal(want[key], got[key]), key
    assert not torch.equal(want["scales"], torch.ones(2, dtype=want["scales"].dtype))  # the scales were measured
    a = pd.read_csv(tmp_path / "ref/scores_test.csv")
    b = pd.read_csv(tmp_path / "run/scores_test.csv")
    np.testing.assert_array_equal(a["score"].to_numpy(), b["score"].to_numpy())
