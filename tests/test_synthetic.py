"""The synthetic-anomaly detector: corruptions stay inside the body and are reproducible, cell targets equal
their definition, and a trained detector ranks planted local defects above clean images and points at them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from xrad.training.corruptions import KINDS, corrupt, corrupt_batch


def _limb(size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A phantom-like limb: a soft-tissue band with a bright bone along it, zero outside the body."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    tilt = rng.uniform(-0.3, 0.3)
    across = (xx - size / 2) - tilt * (yy - size / 2)
    body = (np.abs(across) < size * 0.3).astype(np.float32)
    bone = np.exp(-((across / (size * 0.07)) ** 8))
    image = body * (0.35 + 0.45 * bone + rng.normal(0, 0.01, (size, size))).astype(np.float32)
    return np.clip(image, 0, 1).astype(np.float32), body


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_corruption_changes_only_the_body_and_is_reproducible(kind: str) -> None:
    image, body = _limb(seed=3)
    first = corrupt(image, body, np.random.default_rng(5), (kind,))
    again = corrupt(image, body, np.random.default_rng(5), (kind,))
    out, changed, used = first
    assert used == kind and np.array_equal(out, again[0]) and np.array_equal(changed, again[1])
    assert changed.sum() >= 2, f"{kind} changed nothing"
    assert (out[body == 0] == 0).all() and (changed[body == 0] == 0).all()
    assert out.min() >= 0 and out.max() <= 1
    moved = np.abs(out - image) > 1e-6
    assert moved[changed > 0].mean() > 0.5  # what is marked changed did change


def test_the_config_checks_know_every_corruption_kind() -> None:
    from xrad.config.sections import CORRUPTION_KINDS

    assert set(CORRUPTION_KINDS) == set(KINDS)


def test_a_lytic_spot_darkens_and_a_bump_brightens_around_the_bone() -> None:
    image, body = _limb(seed=2)
    for seed in range(6):
        out, changed, _ = corrupt(image, body, np.random.default_rng(seed), ("density_spot",))
        assert changed.sum() > 0 and not np.allclose(out, image)
        out, changed, _ = corrupt(image, body, np.random.default_rng(seed), ("cortical_bump",))
        assert (out[changed > 0] > image[changed > 0]).all()


def test_metal_brightens_and_a_gap_darkens_the_bone() -> None:
    image, body = _limb(seed=1)
    out, changed, _ = corrupt(image, body, np.random.default_rng(0), ("bright_bar",))
    assert (out[changed > 0] >= image[changed > 0] - 1e-6).all() and out[changed > 0].mean() > 0.8
    out, changed, _ = corrupt(image, body, np.random.default_rng(0), ("gap_across_bone",))
    assert (out[changed > 0] < image[changed > 0]).all()


def _straight_limb(size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A vertical limb (soft tissue 0.35) with one bone (0.8, 10 px wide) in it, and the bone's 0/1 map."""
    xx = np.mgrid[:size, :size][1].astype(np.float32)
    body = (np.abs(xx - size / 2) < size * 0.3).astype(np.float32)
    bone = (np.abs(xx - size / 2) < 5).astype(np.float32)
    return body * (0.35 + 0.45 * bone), body, bone


def test_a_gap_crosses_the_bone_from_edge_to_edge_down_to_the_soft_tissue() -> None:
    """The gap is what a fracture looks like: across the whole bone, not along it nor into the soft tissue,
    and inside it the image falls most of the way to the soft tissue beside the bone."""
    image, body, bone = _straight_limb()
    for seed in range(8):
        out, changed, _ = corrupt(image, body, np.random.default_rng(seed), ("gap_across_bone",))
        rows, cols = np.nonzero(changed)
        assert len(rows) >= 10, f"seed {seed}: {len(rows)} pixels"
        near_bone = np.abs(np.arange(64) - 32) < 6  # the bone and the pixel beside it (its smoothed edge)
        assert near_bone[cols].all()  # only bone loses attenuation
        assert set(np.unique(cols)) >= set(np.flatnonzero(bone[0])[1:-1])  # edge to edge
        assert np.ptp(rows) <= 12  # a band across the bone (≤ 30° off the perpendicular), not along it
        removed = (image - out) / 0.45  # the share of the bone's own attenuation taken away
        for col in np.flatnonzero(bone[0])[1:-1]:  # the band centre takes at least half, even anti-aliased
            assert removed[:, col].max() >= 0.5, f"seed {seed}, column {col}"
        assert (out >= 0.35 - 0.05)[body > 0].all()  # never much darker than the soft tissue behind it


def test_positive_weights_balance_each_corrupted_image() -> None:
    from xrad.methods.synthetic.stage import positive_weights

    targets = torch.zeros(3, 4, 4)
    targets[0, :3, :] = 1  # a large defect: 12 cells
    targets[1, 0, :2] = 1  # a small one: 2 cells; image 2 is clean
    plain = positive_weights(targets, 5.0, balance=False)
    assert torch.equal(plain, torch.where(targets > 0, 5.0, 1.0))
    balanced = positive_weights(targets, 5.0, balance=True)
    totals = (balanced * targets).flatten(1).sum(dim=1)
    np.testing.assert_allclose(totals.numpy(), [35.0, 35.0, 0.0])  # 5 × mean count 7, each image alike
    assert torch.equal(balanced[targets == 0], torch.ones(int((targets == 0).sum())))


def test_corrupt_batch_and_cell_targets() -> None:
    from xrad.methods.synthetic.stage import cell_targets

    pairs = [_limb(32, seed) for seed in range(4)]
    images = torch.from_numpy(np.stack([p[0] for p in pairs]))[:, None]
    masks = torch.from_numpy(np.stack([p[1] for p in pairs]))[:, None]
    out, changed = corrupt_batch(images, masks, np.random.default_rng(0), ("bright_bar", "gap_across_bone"))
    assert out.shape == images.shape and changed.shape == images.shape and (changed.sum(dim=(1, 2, 3)) > 0).all()
    targets = cell_targets(changed, 4, 0.05)
    expected = changed.numpy()[:, 0].reshape(4, 4, 8, 4, 8).mean(axis=(2, 4)) > 0.05
    assert np.array_equal(targets.numpy().astype(bool), expected)
    with pytest.raises(ValueError, match="unknown corruption kind"):
        corrupt_batch(images, masks, np.random.default_rng(0), ("nope",))


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The synthetic detector trained briefly at 64 px on 80 phantom patients (the pipeline of xrad run)."""
    from xrad.jobs.pipeline import RunOptions, run_pipeline

    out = tmp_path_factory.mktemp("synthetic") / "run"
    options = RunOptions(
        output=out,
        config="synthetic_cpu",
        patients=80,
        cache_px=128,
        workers=1,
        overrides=("data.image_size=64", "synthetic.epochs=25"),
    )
    done = run_pipeline(options, log=lambda line: None)
    return {"root": out, "train": done["train"]}


def _planted(kind: str, root: Path, n: int = 24) -> dict:
    """Held-out normal test images at 64 px, clean and with ``kind`` planted, with the planted pixels."""
    import pandas as pd

    from xrad.data.model_input import prepare_eval
    from xrad.training.banks import load_image_bank

    frame = pd.read_csv(root / "cache" / "manifest.csv")
    normals = frame[(frame["split"] == "test") & (frame["label"] == 0)].head(n)
    bank = load_image_bank(normals, 64, workers=1, progress=False)
    clean = prepare_eval(bank.images, bank.masks)
    corrupted, changed = corrupt_batch(clean, (bank.masks > 0).float(), np.random.default_rng(11), (kind,))
    return {"clean": clean, "corrupted": corrupted, "changed": changed}


@pytest.mark.slow
def test_planted_bright_bars_rank_above_normals_and_the_heatmap_points_at_them(synthetic_run: dict) -> None:
    """At this test's 64 px and 25 epochs, over seeds 0-2 (2 threads): AUROC 0.83-0.93, heatmap hits 0.92-0.96.

    An untrained detector gives AUROC ~0.5 and hits ~0.2 (the dilated bar's share of the body). A one-pixel gap
    across the bone is *not* found at this scale (AUROC 0.48-0.52; 0.59-0.63 after 50 epochs), so it is not
    asserted here: gaps are measured at 128 px by benchmarks/bench_detection.py.
    """
    from xrad.evaluation.metrics import auroc
    from xrad.inference.scoring import load_scorer

    scorer = load_scorer(synthetic_run["root"] / "detector" / "artefact")
    data = _planted("bright_bar", synthetic_run["root"])
    with torch.no_grad():
        clean = scorer.score(data["clean"])[0].numpy()
        corrupted = scorer.score(data["corrupted"])[0].numpy()
        maps = scorer.heatmap(data["corrupted"])[:, 0]
    labels = np.r_[np.zeros(len(clean)), np.ones(len(corrupted))]
    assert auroc(labels, np.r_[clean, corrupted]) >= 0.75
    # The heatmap's maximum falls on (or within 4 px of) the planted bar in at least 80 % of the images.
    near = torch.nn.functional.max_pool2d(data["changed"], 9, stride=1, padding=4)[:, 0] > 0
    peaks = maps.flatten(1).argmax(dim=1)
    hits = near.flatten(1)[torch.arange(len(peaks)), peaks].float().mean().item()
    chance = near.flatten(1).float().mean().item()
    assert hits >= max(0.8, 2 * chance), f"heatmap maximum on the planted bar in {hits:.0%} of the images"


def test_self_taught_patch_form_trains_scores_and_reloads(squares_split: Path, tmp_path: Path) -> None:
    from xrad.inference.scoring import load_scorer
    from xrad.jobs.train import run_training
    from xrad.methods.multisphere.patch_scorer import PatchSphereScorer
    from xrad.training.banks import load_image_bank

    overrides = ["finetune.level=patch", "finetune.epochs=3", "finetune.lr=0.001", "finetune.top_k=2"]
    summary = run_training("tiny", squares_split, tmp_path / "run", progress=False, overrides=overrides)
    assert summary["test_auroc"] > 0.9  # the planted bright squares are local: the cell distances find them
    scorer = load_scorer(tmp_path / "run" / "artefact")
    assert isinstance(scorer, PatchSphereScorer) and scorer.top_k == 2 and summary["n_spheres"] >= 1
    import pandas as pd

    frame = pd.read_csv(squares_split)
    bank = load_image_bank(frame[frame["split"] == "test"], 32, workers=1, progress=False)
    scores = scorer.score_batches(bank.images, bank.masks)["score"].numpy()
    written = pd.read_csv(tmp_path / "run" / "scores_test.csv")["score"].to_numpy()
    np.testing.assert_allclose(scores, written, rtol=1e-6)
    from xrad.data.model_input import prepare_eval

    x = prepare_eval(bank.images[:4], bank.masks[:4])
    maps = scorer.heatmap(x)
    assert maps.shape == x.shape and (maps >= 0).all()
    # The map is the cell distance map: its top cell is the image score when top_k is 1.
    scorer.top_k = 1
    with torch.no_grad():
        cells = scorer.cell_scores(x)
    np.testing.assert_allclose(cells.flatten(1).amax(dim=1).numpy(), scorer.score(x)[0].detach().numpy(), rtol=1e-6)


def test_synthetic_detector_scored_patchcore_style(squares_split: Path, tmp_path: Path) -> None:
    from xrad.inference.scoring import load_scorer
    from xrad.jobs.train import run_training
    from xrad.methods.knn.patch_scorer import PatchKnnScorer

    overrides = ["synthetic.score=knn", "synthetic.top_k=2", "synthetic.memory_size=200", "synthetic.epochs=2"]
    summary = run_training("tiny_synthetic", squares_split, tmp_path / "run", progress=False, overrides=overrides)
    scorer = load_scorer(tmp_path / "run" / "artefact")
    assert isinstance(scorer, PatchKnnScorer) and scorer.memory.shape == (200, 384)
    assert summary["test_auroc"] > 0.8  # bright squares are far from every normal cell, even barely trained
    memory = scorer.memory.clone()
    again = run_training("tiny_synthetic", squares_split, tmp_path / "run", progress=False, overrides=overrides)
    assert again["test_auroc"] == summary["test_auroc"]
    assert torch.equal(load_scorer(tmp_path / "run" / "artefact").memory, memory)


def test_the_patch_form_trains_without_synthetic_anomalies(squares_split: Path, tmp_path: Path) -> None:
    """``finetune.corruptions: []`` switches the synthetic known anomalies off (the with/without ablation the
    detection issue asks for); an unknown kind is still refused."""
    import pandas as pd

    from xrad.errors import ConfigError
    from xrad.jobs.train import run_training
    from xrad.methods.registry import load_config

    base = ["finetune.level=patch", "finetune.epochs=2", "finetune.lr=0.001", "pretrain.epochs=1"]
    run_training("tiny", squares_split, tmp_path / "with", progress=False, overrides=base)
    run_training(
        "tiny", squares_split, tmp_path / "without", progress=False, overrides=[*base, "finetune.corruptions=[]"]
    )
    assert load_config("tiny", [*base, "finetune.corruptions=[]"]).finetune.corruptions == []
    scores_with = pd.read_csv(tmp_path / "with" / "scores_test.csv")["score"].to_numpy()
    scores_without = pd.read_csv(tmp_path / "without" / "scores_test.csv")["score"].to_numpy()
    assert np.isfinite(scores_without).all() and not np.allclose(scores_with, scores_without)
    with pytest.raises(ConfigError, match="corruptions"):
        load_config("tiny", [*base, "finetune.corruptions=[nope]"])
