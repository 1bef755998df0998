"""Shared fixtures: the real data in ../shared (skipped when absent) and small generated data sets."""

from __future__ import annotations

from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
FRACATLAS = SHARED_DATA / "fracatlas"


@pytest.fixture(scope="session")
def fracatlas_dir() -> Path:
    """The FracAtlas folder of ../shared/data; the test is skipped where it is absent."""
    if not (FRACATLAS / "labels.csv").is_file():
        pytest.skip(f"real FracAtlas data not found at {FRACATLAS} (../shared/data is absent on this machine)")
    return FRACATLAS


def _fake_run_training(
    config, manifest, run_dir, *, stages=("pretrain", "finetune"), trainer_overrides=None, progress=True
):
    """Stand-in for xrad.jobs.train.run_training writing the run-folder contract from a split manifest.

    Scores are ``fake_shift · label + noise`` (seeded by config["seed"]), so methods with a larger
    ``fake_shift`` in their YAML are measurably better. Used by the evaluation/report/benchmark tests.
    """
    import json

    import numpy as np
    import pandas as pd
    from safetensors.numpy import save_file

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed, shift = int(config.get("seed", 0)), float(config.get("fake_shift", 1.0))
    rng = np.random.default_rng(seed)
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    (run_dir / "config.yaml").write_text(f"seed: {seed}\nfake_shift: {shift}\n")
    (run_dir / "env.json").write_text(json.dumps({"python": "3", "torch": "fake", "seed": seed, "commit": "abc"}))
    epochs = np.arange(4)
    for stage in stages:
        (run_dir / stage).mkdir(exist_ok=True)
        rows = []
        for e in epochs:  # Lightning's CSV logger: train and validation values on separate rows
            rows.append({"epoch": e, "train_loss": 1.0 / (e + 1) + rng.normal(0, 0.01), "lr": 1e-3})
            if stage == "finetune":
                rows.append({"epoch": e, "valid_auroc": 0.6 + 0.05 * e * shift, "n_spheres": max(1, 5 - 2 * e)})
        pd.DataFrame(rows).to_csv(run_dir / stage / "metrics.csv", index=False)
    summary = {"method": config.get("method", "fake"), "seconds": 1.5}
    for split in ("valid", "test"):
        part = frame[frame["split"] == split].copy()
        labels = pd.to_numeric(part["label"]).to_numpy()
        part["score"] = shift * labels + rng.normal(size=len(part))
        part["sphere"] = rng.integers(0, 3, len(part))
        part[["path", "patient_id", "study_id", "body_part", "label", "split", "score", "sphere"]].to_csv(
            run_dir / f"scores_{split}.csv", index=False
        )
        summary[f"{split}_auroc"] = 0.5
        if split == "test":
            z = rng.normal(size=(len(part), 8)) + labels[:, None] * shift
            save_file(
                {
                    "h": np.hstack([z, rng.normal(size=(len(part), 8))]).astype(np.float32),
                    "z": z.astype(np.float32),
                    "sphere": part["sphere"].to_numpy().astype(np.int64),
                    "labels": labels.astype(np.int64),
                },
                str(run_dir / "embeddings_test.safetensors"),
            )
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return summary


@pytest.fixture()
def fake_run_training():
    """A run_training stand-in that writes a complete fake run folder (see _fake_run_training)."""
    return _fake_run_training


@pytest.fixture()
def toy_manifest(tmp_path) -> Path:
    """An indexed manifest of 240 images (60 patients × 2 body parts × 2 images), a third abnormal."""
    import pandas as pd

    rows = []
    for p in range(60):
        for part in ("HAND", "WRIST"):
            label = int((p + (part == "WRIST")) % 3 == 0)
            for k in range(2):
                rows.append(
                    {
                        "path": str(tmp_path / f"img/p{p}_{part}_{k}.png"),
                        "patient_id": f"p{p}",
                        "study_id": f"p{p}_{part}",
                        "body_part": part,
                        "view": "",
                        "label": label,
                        "source": "csv",
                    }
                )
    path = tmp_path / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def make_tiny_artefact(
    directory: Path, *, image_size: int = 64, kind: str = "sphere", seed: int = 0, preprocessing: dict | None = None
) -> Path:
    """An untrained but complete artefact (1-channel ResNet-18 + small head) in seconds, for scoring tests.

    BatchNorm running statistics are randomised so eval-mode numbers are not the trivial identity ones.
    ``preprocessing`` (PreprocessParams.to_dict()) makes raw images go through preprocessing when scored.
    """
    import torch

    from xrad.inference.artefact import save_artefact
    from xrad.methods.knn.scorer import KnnScorer
    from xrad.methods.multisphere.scorer import SphereScorer
    from xrad.models.encoder import build_encoder

    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = build_encoder((512, 64, 16), bias=False)
    for module in encoder.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1, generator=generator)
            module.running_var.uniform_(0.5, 1.5, generator=generator)
    if kind == "sphere":
        scorer = SphereScorer(encoder, torch.randn(3, 16, generator=generator))
    else:
        scorer = KnnScorer(encoder, torch.randn(20, 512, generator=generator), k=3)
    tensors, args = scorer.artefact_state()
    meta = {
        "method": "tiny-untrained",
        "scorer": {"kind": scorer.kind, "args": args},
        "image_size": image_size,
        "preprocessing": preprocessing,
        "input": "uint8 image x 0/1 mask",
    }
    return save_artefact(directory, tensors, meta)


@pytest.fixture(scope="session")
def tiny_artefact(tmp_path_factory) -> Path:
    """A tiny untrained sphere-scorer artefact at 64 px (see make_tiny_artefact); treat as read-only."""
    return make_tiny_artefact(tmp_path_factory.mktemp("tiny_artefact") / "artefact")


@pytest.fixture(scope="session")
def readout_artefact(tiny_artefact, tmp_path_factory) -> Path:
    """The tiny artefact with everything a reader is shown: validation normals (percentiles), a fixed heat
    scale (colour bar), an operating point at 90 % specificity, and training data recorded as HAND phantoms
    (so a real image or another body part is warned about); treat as read-only."""
    import shutil

    import numpy as np

    from xrad.inference.artefact import update_artefact_meta
    from xrad.inference.calibration import store_operating_point, threshold_for

    target = tmp_path_factory.mktemp("readout") / "artefact"
    shutil.copytree(tiny_artefact, target)
    normals = np.linspace(0.0, 20.0, 50)
    update_artefact_meta(
        target,
        normal_reference={
            "split": "valid",
            "n_normals": 50,
            "quantiles": False,
            "scores": list(normals),
            "heat_scale": 1.0,
        },
        training_data={"phantoms": True, "train_body_parts": {"HAND": 40}},
    )
    labels = np.r_[np.zeros(50), np.ones(50)]
    store_operating_point(target, threshold_for(labels, np.r_[normals, normals + 5.0], specificity=0.9))
    return target


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A finished tiny self-taught run (tests/training_helpers.py data, configs/tiny.yaml), shared by the
    training and artefact/scoring tests: {"manifest", "run_dir", "summary"}."""
    from training_helpers import make_dataset

    from xrad.jobs.train import run_training

    root = tmp_path_factory.mktemp("tiny_run")
    manifest = make_dataset(root / "data")
    summary = run_training("tiny", manifest, root / "run", progress=False)
    return {"manifest": manifest, "run_dir": root / "run", "summary": summary}


@pytest.fixture(scope="session")
def squares_split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """96 tiny radiograph-like images, a third with a planted bright square (tests/training_helpers.py), with
    every train anomaly labelled known abnormal as in the papers' split (no contaminated unlabelled data).
    Shared by the behavioural tests of every detector family; treat as read-only."""
    import pandas as pd
    from training_helpers import make_dataset

    manifest = make_dataset(tmp_path_factory.mktemp("squares") / "data", n=96)
    frame = pd.read_csv(manifest)
    frame.loc[(frame["split"] == "train") & (frame["label"] == 1), "semi_label"] = -1
    frame.to_csv(manifest, index=False)
    return manifest


@pytest.fixture(scope="session")
def phantoms(tmp_path_factory) -> Path:
    """Phantom radiographs (30 patients, 256 px, seed 7) with ground truth, generated once per session."""
    from xrad.data.phantoms.generate import SynthConfig, generate_phantoms

    out = tmp_path_factory.mktemp("phantoms")
    generate_phantoms(out, SynthConfig(n_patients=30, seed=7, size=256, workers=2), progress=False)
    return out
