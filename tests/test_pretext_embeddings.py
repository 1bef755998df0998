"""Fig. 9: a two-stage run writes the validation embeddings of its stage-1 (pretext) encoder beside the final
ones, and the run report shows their t-SNE side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from safetensors.torch import load_file as load_torch
from training_helpers import make_dataset

from xrad.data.manifest import read_manifest
from xrad.data.model_input import prepare_eval
from xrad.evaluation.report import render_report
from xrad.jobs.train import run_training
from xrad.methods.contrastive.stage import new_encoder
from xrad.methods.registry import load_config
from xrad.training.banks import load_image_bank


@pytest.mark.parametrize(
    ("config", "overrides"), [("tiny_joint_deep_sad", []), ("tiny", ["pretrain.epochs=1", "finetune.epochs=1"])]
)
def test_pretext_and_final_validation_embeddings(tmp_path: Path, config: str, overrides: list[str]) -> None:
    manifest = make_dataset(tmp_path / "data", n=48, size=32)
    run = tmp_path / "run"
    run_training(config, manifest, run, progress=False, overrides=overrides)
    pretext = load_file(str(run / "embeddings_valid_pretext.safetensors"))
    final = load_file(str(run / "embeddings_valid.safetensors"))
    frame = read_manifest(manifest)
    valid = frame[frame["split"] == "valid"].reset_index(drop=True)
    assert len(pretext["z"]) == len(final["z"]) == len(valid)
    # The pretext embeddings are those of the finished stage-1 encoder, recomputed independently ...
    cfg = load_config(config, overrides)
    encoder = new_encoder(cfg)
    encoder.load_state_dict(load_torch(str(run / "pretrain/encoder.safetensors")))
    bank = load_image_bank(valid, cfg.data.image_size, workers=1, progress=False)
    with torch.no_grad():
        _, z = encoder.eval()(prepare_eval(bank.images, bank.masks))
    np.testing.assert_allclose(pretext["z"], z.numpy(), rtol=1e-4, atol=1e-5)
    # ... and fine-tuning changed them.
    assert not np.allclose(pretext["z"], final["z"], atol=1e-4)
    page = render_report(run, n_bootstrap=50).read_text()
    assert "pretext beside fine-tuned (Fig. 9)" in page
    assert (run / "report" / "tsne_valid_pretext.png").is_file() and (
        run / "report" / "tsne_valid_fine-tuned.png"
    ).is_file()
