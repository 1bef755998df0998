"""The variational autoencoder: its scorer against NumPy for every score kind (and through the artefact),
deterministic training for a seed, resume == uninterrupted, and pixel localisation of planted anomalies."""

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
from xrad.methods.registry import load_config
from xrad.methods.vae.scorer import VAEScorer
from xrad.models.vae import build_vae


def _masked_batch(seed: int, n: int = 3, size: int = 32) -> torch.Tensor:
    """Prepared inputs: positive intensities inside a per-image rectangle, exactly 0 outside."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, size, size, generator=g) * 0.9 + 0.05
    mask = torch.zeros_like(x)
    for i in range(n):
        mask[i, :, 2 + i : size - 4, 3 : size - 2 - i] = 1
    return x * mask


def _np_kld(mu: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    return -0.5 * (1 + logvar - mu**2 - np.exp(logvar)).sum(axis=1)


@pytest.mark.parametrize("kind", ["mse", "l1", "topk", "l1_topk", "kld", "loss"])
def test_vae_scorer_matches_numpy_and_survives_the_artefact(kind: str) -> None:
    torch.manual_seed(0)
    vae = build_vae(32, head_dims=(512, 64, 8), channels=(32, 16, 16, 8, 8)).eval()
    scorer = VAEScorer(vae, kind, kld_weight=0.5, top_k_fraction=0.1, top_k_pixels=40).eval()
    x = _masked_batch(0)
    with torch.no_grad():
        scores = scorer(x).double().numpy()
        recon = scorer.reconstruct(x).numpy()
        mu, logvar = (t.double().numpy() for t in vae.encode(x))
        again = scorer.reconstruct(x).numpy()
    assert np.array_equal(recon, again)  # scoring decodes μ: no sampling
    xn, support = x.numpy(), x.numpy() > 0
    sq, ab = (recon - xn) ** 2, np.abs(recon - xn)
    expected = []
    for i in range(len(xn)):
        inside_sq, inside_ab = sq[i][support[i]], ab[i][support[i]]
        expected.append(
            {
                "mse": inside_sq.mean(),
                "l1": inside_ab.mean(),
                "topk": np.sort(inside_sq)[::-1][:40].mean(),
                "l1_topk": np.sort(inside_ab)[::-1][:40].mean(),
                "kld": _np_kld(mu[i : i + 1], logvar[i : i + 1])[0],
                "loss": inside_sq.mean() + 0.5 * _np_kld(mu[i : i + 1], logvar[i : i + 1])[0] / (32 * 32),
            }[kind]
        )
    np.testing.assert_allclose(scores, expected, rtol=1e-5)

    heat = scorer.heatmap(x).numpy()
    np.testing.assert_allclose(heat, (ab if kind.startswith("l1") else sq) * support, rtol=1e-5, atol=1e-8)
    assert (heat[~support] == 0).all()

    rebuilt = VAEScorer.from_artefact(*scorer.artefact_state()).eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(x), scorer(x))


def test_the_head_must_hold_mean_and_log_variance() -> None:
    from xrad.errors import ConfigError
    from xrad.models.autoencoder import ResNet18Decoder
    from xrad.models.encoder import build_encoder
    from xrad.models.vae import VariationalAutoencoder

    with pytest.raises(ConfigError, match="2 × the latent size"):
        VariationalAutoencoder(build_encoder((512, 16)), ResNet18Decoder(in_dim=16, image_size=32))


def test_config_refuses_unknown_scores_and_encoder_transfer(tmp_path: Path) -> None:
    from xrad.errors import ConfigError

    with pytest.raises(ConfigError, match="vae.score"):
        load_config("tiny_vae", ["vae.score=ssim"])
    with pytest.raises(ConfigError, match="multiple of 32"):
        load_config("tiny_vae", ["data.image_size=40"])
    assert load_config("vae_cpu").section("vae").top_k_pixels == 200
    assert load_config("vae_paper").data.image_size == 512


# ------------------------------------------------------------------------------------- training
class _Crash(RuntimeError):
    pass


class _CrashAtEpoch(L.Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise _Crash(f"simulated crash before epoch {self.epoch}")


TWO_EPOCHS = ["pretrain.epochs=2", "vae.score=topk"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("vae") / "data")


@pytest.fixture(scope="module")
def reference_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("vae_ref") / "run"
    run_training("tiny_vae", tiny_data, run_dir, progress=False, overrides=TWO_EPOCHS)
    return run_dir


def test_training_is_deterministic_for_a_seed(tiny_data: Path, reference_run: Path, tmp_path: Path) -> None:
    run_training("tiny_vae", tiny_data, tmp_path / "again", progress=False, overrides=TWO_EPOCHS)
    a = load_file(str(reference_run / "train" / "vae.safetensors"))
    b = load_file(str(tmp_path / "again" / "train" / "vae.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    run_training("tiny_vae", tiny_data, tmp_path / "seed1", progress=False, overrides=[*TWO_EPOCHS, "seed=1"])
    c = load_file(str(tmp_path / "seed1" / "train" / "vae.safetensors"))
    assert not torch.equal(a["decoder.fc.weight"], c["decoder.fc.weight"])


def test_resumed_training_equals_uninterrupted(tiny_data: Path, reference_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "resumed"
    with pytest.raises(_Crash):
        run_training(
            "tiny_vae",
            tiny_data,
            run_dir,
            progress=False,
            overrides=TWO_EPOCHS,
            trainer_overrides={"callbacks": [_CrashAtEpoch(1)]},
        )
    assert (run_dir / "train/checkpoints/last.ckpt").exists()
    run_training("tiny_vae", tiny_data, run_dir, progress=False, overrides=TWO_EPOCHS)
    a = pd.read_csv(reference_run / "scores_test.csv")
    b = pd.read_csv(run_dir / "scores_test.csv")
    assert list(a["path"]) == list(b["path"])
    np.testing.assert_allclose(b["score"], a["score"], rtol=0, atol=1e-6)
