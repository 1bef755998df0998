"""Every registered method: train a couple of steps on the tiny phantoms, score, save the artefact, reload it,
and get identical scores. Methods are discovered from the registry, so a new method is covered automatically.

Tiny settings: ``configs/tiny_<method>.yaml`` when it exists (one epoch), else ``configs/tiny.yaml`` with
``method=<name>`` and each stage cut to one epoch (4 steps). A method that needs an external file gets it
from :data:`EXTRA`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from training_helpers import make_dataset

from xrad.config import CONFIG_DIR
from xrad.data.manifest import read_manifest
from xrad.inference.scoring import load_scorer
from xrad.jobs.train import run_training
from xrad.methods.registry import DETECTORS, load_config
from xrad.training.banks import load_image_bank


def _imagenet_weights(tmp: Path) -> list[str]:
    """A randomly initialised torchvision ResNet-18 saved like the ImageNet file (same keys and format)."""
    from torchvision.models import resnet18

    path = tmp / "resnet18-random.pth"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        torch.save(resnet18(weights=None).state_dict(), path)
    return [f"imagenet.weights={path}"]


EXTRA = {"deep_sad_imagenet": _imagenet_weights}

# Score forms a config option chooses (another scorer kind from the same detector), run like the detectors.
VARIANTS = [
    ("subspace", ["subspace.level=patch"]),
    ("drocc", ["drocc.level=patch"]),
    ("synthetic", ["synthetic.score=gaussian"]),
    ("synthetic", ["synthetic.score=gaussian_image"]),
]
CASES = [pytest.param(m, [], id=m) for m in sorted(DETECTORS)] + [
    pytest.param(m, extra, id=f"{m}-{extra[0]}") for m, extra in VARIANTS
]


def tiny_config(method: str) -> tuple[str, list[str]]:
    """(packaged config name, overrides) giving ``method``'s tiny settings, one epoch per stage."""
    name = f"tiny_{method}" if (CONFIG_DIR / f"tiny_{method}.yaml").is_file() else "tiny"
    return name, ([] if name != "tiny" else [f"method={method}", "pretrain.epochs=1", "finetune.epochs=1"])


@pytest.fixture(scope="module")
def tiny_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("all_methods") / "data")


@pytest.mark.slow
@pytest.mark.parametrize(("method", "variant"), CASES)
def test_train_score_save_reload_gives_identical_scores(
    method: str, variant: list[str], tiny_manifest: Path, tmp_path: Path
) -> None:
    config, overrides = tiny_config(method)
    overrides += variant
    overrides += EXTRA[method](tmp_path) if method in EXTRA else []
    assert load_config(config, overrides).method == method
    summary = run_training(config, tiny_manifest, tmp_path / "run", progress=False, overrides=overrides)
    assert summary["method"] == method
    assert set(DETECTORS[method].stage_names) <= {p.name for p in (tmp_path / "run").iterdir() if p.is_dir()}

    written = pd.read_csv(tmp_path / "run" / "scores_test.csv")
    assert np.isfinite(written["score"]).all() and written["score"].nunique() > 1

    frame = read_manifest(tiny_manifest)
    test = frame[frame["split"] == "test"].reset_index(drop=True)
    bank = load_image_bank(test, load_config(config, overrides).data.image_size, workers=1, progress=False)
    first = load_scorer(tmp_path / "run" / "artefact").score_batches(bank.images, bank.masks, batch_size=32)
    again = load_scorer(tmp_path / "run" / "artefact").score_batches(bank.images, bank.masks, batch_size=32)
    assert torch.equal(first["score"], again["score"])
    assert torch.equal(first["sphere"], again["sphere"])
    # The run scored its test split through the same artefact: the CSV holds the same numbers.
    np.testing.assert_allclose(written["score"].to_numpy(), first["score"].numpy(), rtol=1e-6, atol=1e-9)

    maps = load_scorer(tmp_path / "run" / "artefact").heatmap(
        torch.rand(2, 1, bank.images.shape[-1], bank.images.shape[-1])
    )
    assert maps.shape == (2, 1, bank.images.shape[-1], bank.images.shape[-1]) and bool((maps >= 0).all())
