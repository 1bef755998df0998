"""Table 1 baselines: reconstruction and classifier scorers against NumPy, the ImageNet initialisation, and
per family a behavioural test — AUROC well above chance on small images with planted bright squares."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from xrad.errors import ConfigError
from xrad.inference.scoring import load_scorer
from xrad.jobs.train import run_training
from xrad.methods.autoencoder.scorer import ReconstructionScorer
from xrad.methods.imagenet import stage as imagenet_stage
from xrad.methods.imagenet.stage import fold_input_normalisation
from xrad.methods.registry import load_config
from xrad.methods.supervised.scorer import ClassifierScorer
from xrad.methods.supervised.stage import labelled_rows
from xrad.models.autoencoder import build_autoencoder
from xrad.models.resnet import ResNet18Backbone, ResNet50Backbone
from xrad.training.context import RunContext


def _masked_batch(seed: int, n: int = 3, size: int = 32) -> torch.Tensor:
    """Prepared inputs: positive intensities inside a per-image rectangle, exactly 0 outside."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, size, size, generator=g) * 0.9 + 0.05
    mask = torch.zeros_like(x)
    for i in range(n):
        mask[i, :, 2 + i : size - 4, 3 : size - 2 - i] = 1
    return x * mask


def _randomise_bn(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1, generator=g)
            m.running_var.uniform_(0.5, 1.5, generator=g)


@pytest.mark.parametrize(
    ("kind", "top_k_pixels"), [("mse", 0), ("l1", 0), ("topk", 0), ("topk", 30), ("l1_topk", 0), ("l1_topk", 30)]
)
def test_reconstruction_scorer_matches_numpy_and_survives_the_artefact(kind: str, top_k_pixels: int) -> None:
    torch.manual_seed(0)
    ae = build_autoencoder(32, head_dims=(512, 64, 16), bias=False, channels=(32, 16, 16, 8, 8)).eval()
    _randomise_bn(ae, 1)
    scorer = ReconstructionScorer(ae, kind, top_k_fraction=0.1, top_k_pixels=top_k_pixels).eval()
    x = _masked_batch(0)
    with torch.no_grad():
        scores = scorer(x).numpy()
        recon = scorer.reconstruct(x).numpy()
    xn, support = x.numpy(), (x.numpy() > 0)
    err = np.abs(recon - xn) if kind.startswith("l1") else (recon - xn) ** 2
    expected = []
    for i in range(len(xn)):
        inside = err[i][support[i]]
        if kind.endswith("topk"):
            k = top_k_pixels or int(np.ceil(0.1 * support[i].sum()))
            expected.append(np.sort(inside)[::-1][:k].mean())
        else:
            expected.append(inside.mean())
    np.testing.assert_allclose(scores, expected, rtol=1e-5)

    heat = scorer.heatmap(x).numpy()
    assert heat.shape == x.shape
    np.testing.assert_allclose(heat, err * support, rtol=1e-5, atol=1e-8)
    assert (heat[~support] == 0).all()

    tensors, args = scorer.artefact_state()
    rebuilt = ReconstructionScorer.from_artefact(tensors, args).eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(x), scorer(x))


def _np_box_smoothed(err: np.ndarray, support: np.ndarray, width: int) -> np.ndarray:
    """uniform(e·m) / uniform(m) inside the support (scipy, zero padding), 0 outside: the smoothed error map."""
    from scipy.ndimage import uniform_filter

    m = support.astype(np.float64)
    num = uniform_filter(err * m, size=(1, 1, width, width), mode="constant", cval=0.0)
    den = uniform_filter(m, size=(1, 1, width, width), mode="constant", cval=0.0)
    return np.where(m > 0, num / np.where(den > 0, den, 1.0), 0.0)


def test_smoothed_reconstruction_score_and_heatmap_match_scipy_and_survive_the_artefact() -> None:
    torch.manual_seed(0)
    ae = build_autoencoder(32, head_dims=(512, 64, 16), bias=False, channels=(32, 16, 16, 8, 8)).eval()
    _randomise_bn(ae, 1)
    scorer = ReconstructionScorer(ae, "topk", top_k_fraction=0.1, top_k_pixels=30, smooth=5).eval()
    x = _masked_batch(0)
    with torch.no_grad():
        scores, heat = scorer(x).numpy(), scorer.heatmap(x).numpy()
        recon = scorer.reconstruct(x).numpy()
    xn, support = x.numpy(), x.numpy() > 0
    smoothed = _np_box_smoothed((recon.astype(np.float64) - xn) ** 2, support, 5)
    expected = [np.sort(smoothed[i][support[i]])[::-1][:30].mean() for i in range(len(xn))]
    np.testing.assert_allclose(scores, expected, rtol=1e-5)
    np.testing.assert_allclose(heat, smoothed, rtol=1e-5, atol=1e-8)  # the map the score ranks
    tensors, args = scorer.artefact_state()
    assert args["smooth"] == 5
    with torch.no_grad():
        assert torch.equal(ReconstructionScorer.from_artefact(tensors, args).eval()(x), scorer(x))
        del args["smooth"]  # an artefact written before the key: no smoothing
        assert ReconstructionScorer.from_artefact(tensors, args).smooth == 0
    for bad in ("-1", "4"):
        with pytest.raises(ConfigError, match=r"ae\.smooth must be 0 \(off\) or an odd box width"):
            load_config("ae_cpu", [f"ae.smooth={bad}"])
    assert load_config("ae_cpu", ["ae.smooth=3"]).section("ae").smooth == 3


def test_classifier_scorer_is_the_sigmoid_of_its_logit_and_round_trips() -> None:
    torch.manual_seed(0)
    backbone = ResNet50Backbone(1)
    _randomise_bn(backbone, 2)
    scorer = ClassifierScorer(backbone, torch.nn.Linear(2048, 1)).eval()
    x = _masked_batch(1, n=4)
    with torch.no_grad():
        logits = scorer.logits(x).double().numpy()
        scores = scorer(x)
    assert scores.dtype == torch.float64
    np.testing.assert_allclose(scores.numpy(), 1.0 / (1.0 + np.exp(-logits)), rtol=1e-12)
    rebuilt = ClassifierScorer.from_artefact(*scorer.artefact_state()).eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(x), scores)


def test_supervised_uses_only_labelled_rows_with_abnormal_as_positive() -> None:
    rows, targets = labelled_rows(torch.tensor([0, 1, -1, 0, -1, 1, 1]))
    assert rows == [1, 2, 4, 5, 6]
    assert targets.tolist() == [0.0, 1.0, 1.0, 0.0, 0.0]


def test_folded_normalisation_equals_normalising_the_input() -> None:
    torch.manual_seed(0)
    plain = ResNet18Backbone(1).eval()
    _randomise_bn(plain, 3)
    folded = ResNet18Backbone(1).eval()
    folded.load_state_dict(plain.state_dict())
    fold_input_normalisation(folded, mean=0.449, std=0.226)
    x = torch.rand(2, 1, 48, 48)
    with torch.no_grad():
        want = plain.bn1(plain.conv1((x - 0.449) / 0.226))
        got = folded.bn1(folded.conv1(x))
    # conv1 is 7×7 with padding 3 and stride 2: outputs whose window avoids the zero padding are exact.
    np.testing.assert_allclose(got[..., 2:-2, 2:-2].numpy(), want[..., 2:-2, 2:-2].numpy(), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(got[..., :1, :], want[..., :1, :])  # the border differs, as documented


def _imagenet_ctx(tmp_path: Path, *overrides: str) -> RunContext:
    cfg = load_config("tiny", ["method=deep_sad_imagenet", *overrides])
    return RunContext(cfg, tmp_path / "run", banks={}, progress=False)


def test_imagenet_initialisation_reads_a_local_torchvision_file(tmp_path: Path) -> None:
    from torchvision.models import resnet18

    with pytest.raises(ConfigError, match="imagenet.weights is not set.*nothing is downloaded"):
        imagenet_stage.run(_imagenet_ctx(tmp_path), "pretrain")
    missing = tmp_path / "nowhere" / "resnet18.pth"
    with pytest.raises(ConfigError, match="nowhere.*no download"):
        imagenet_stage.run(_imagenet_ctx(tmp_path, f"imagenet.weights={missing}"), "pretrain")

    torch.manual_seed(5)
    state = resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    ctx = _imagenet_ctx(tmp_path, f"imagenet.weights={path}", "imagenet.normalise=false")
    backbone = imagenet_stage.run(ctx, "pretrain").encoder.backbone
    assert torch.equal(backbone.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])
    assert torch.allclose(backbone.conv1.weight, state["conv1.weight"].sum(dim=1, keepdim=True))
    assert (tmp_path / "run" / "pretrain" / "encoder.safetensors").is_file()
    # With the default normalisation fold, conv1 carries 1/std.
    ctx = _imagenet_ctx(tmp_path / "b", f"imagenet.weights={path}")
    folded = imagenet_stage.run(ctx, "pretrain").encoder.backbone
    assert torch.allclose(folded.conv1.weight * 0.226, state["conv1.weight"].sum(dim=1, keepdim=True), atol=1e-6)


# ------------------------------------------------------------------------------------- behaviour
@pytest.fixture(scope="module")
def ae_run(squares_split: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The autoencoder detector trained a few epochs at 32 px; its folder feeds the Deep SAD and kNN tests."""
    run_dir = tmp_path_factory.mktemp("ae") / "run"
    summary = run_training(
        "tiny",
        squares_split,
        run_dir,
        progress=False,
        overrides=["method=autoencoder", "pretrain.epochs=3", "pretrain.lr=0.001", "model.head_bias=false"],
    )
    return {"run_dir": run_dir, "summary": summary}


@pytest.mark.slow
def test_autoencoder_flags_and_localises_planted_squares(ae_run: dict, squares_split: Path) -> None:
    assert ae_run["summary"]["test_auroc"] >= 0.85
    # The reconstruction-error heatmap peaks at the planted square (the brightest patch) of abnormal images.
    from xrad.data.manifest import read_manifest
    from xrad.data.model_input import prepare_eval
    from xrad.training.banks import load_image_bank

    frame = read_manifest(squares_split)
    abnormal = frame[(frame["split"] == "test") & (frame["label"] == 1)].reset_index(drop=True)
    bank = load_image_bank(abnormal, 32, workers=1, progress=False)
    x = prepare_eval(bank.images, bank.masks)
    heat = load_scorer(ae_run["run_dir"] / "artefact").heatmap(x)
    # Heat at the planted square (around the brightest 3×3 patch) against the rest of the body: the square's
    # error must rank in the hottest tenth of the body's pixels in most abnormal images. (The argmax alone
    # is fragile: a few epochs leave other bright edges nearly as badly reconstructed.)
    brightest = torch.nn.functional.avg_pool2d(x, 3, 1, 1).flatten(1).argmax(1)
    square_heat = torch.nn.functional.max_pool2d(heat, 5, 1, 2).flatten(1).gather(1, brightest[:, None]).squeeze(1)
    body = bank.masks.flatten(1) > 0
    rank = torch.stack([(h[m] < v).float().mean() for h, m, v in zip(heat.flatten(1), body, square_heat)])
    assert (rank >= 0.9).float().mean() >= 0.7


@pytest.mark.slow
@pytest.mark.parametrize("n_spheres", [1, 4])
def test_deep_sad_on_the_autoencoder_separates_planted_squares(
    ae_run: dict, squares_split: Path, tmp_path: Path, n_spheres: int
) -> None:
    summary = run_training(
        "tiny",
        squares_split,
        tmp_path / "run",
        progress=False,
        overrides=[
            "method=deep_sad_ae",
            f"pretrain.encoder_from={ae_run['run_dir']}",
            f"finetune.n_spheres={n_spheres}",
            "finetune.epochs=6",
            "finetune.lr=0.001",
            "finetune.gamma=0.05",
            "model.head_bias=false",
        ],
    )
    assert summary["n_spheres"] <= n_spheres
    assert summary["test_auroc"] >= 0.75


@pytest.mark.slow
def test_knn_on_autoencoder_features_separates_planted_squares(
    ae_run: dict, squares_split: Path, tmp_path: Path
) -> None:
    summary = run_training(
        "tiny",
        squares_split,
        tmp_path / "run",
        progress=False,
        overrides=["method=knn_ae", f"pretrain.encoder_from={ae_run['run_dir']}", "knn.k=5", "model.head_bias=false"],
    )
    frame = pd.read_csv(squares_split)
    normal_train = int(((frame["split"] == "train") & (frame["semi_label"] != -1)).sum())
    from safetensors.torch import load_file

    assert load_file(str(tmp_path / "run" / "artefact" / "model.safetensors"))["memory"].shape == (normal_train, 512)
    assert summary["test_auroc"] >= 0.75


@pytest.mark.slow
def test_supervised_resnet50_learns_the_planted_squares(squares_split: Path, tmp_path: Path) -> None:
    # A supervised baseline needs labels: here every train image is labelled (+1 normal, −1 abnormal).
    frame = pd.read_csv(squares_split)
    train = frame["split"] == "train"
    frame.loc[train, "semi_label"] = np.where(frame.loc[train, "label"] == 1, -1, 1)
    manifest = tmp_path / "labelled.csv"
    frame.to_csv(manifest, index=False)
    summary = run_training(
        "tiny_supervised",
        manifest,
        tmp_path / "run",
        progress=False,
        overrides=[
            "supervised.epochs=8",
            "supervised.batch_size=8",
            "supervised.lr=0.001",
            "supervised.augment.enabled=false",
        ],
    )
    assert summary["test_auroc"] >= 0.75
