"""Training engine: config validation, run-folder contract, resume == uninterrupted, pruning, uni-modal,
kNN, k-means reproducibility, DDP on CPU."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from xrad.config import CONFIG_DIR, dump_config, milestone_epochs
from xrad.errors import ConfigError, DataError
from xrad.jobs.train import run_training
from xrad.methods.registry import load_config


def _metrics(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


# --------------------------------------------------------------------------------------------- config
def test_packaged_configs_load_and_paper_defaults() -> None:
    names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    assert {"self_taught_paper", "self_taught_cpu", "uni_modal_cpu", "knn_cpu", "tiny"} <= set(names)
    for name in names:
        load_config(name)
    paper = load_config("self_taught_paper")
    assert (paper.pretrain.epochs, paper.pretrain.batch_size, paper.pretrain.lr) == (100, 24, 1e-3)
    assert (paper.pretrain.weight_decay, paper.pretrain.temperature) == (1e-6, 0.5)
    assert milestone_epochs(paper.pretrain.milestones, paper.pretrain.epochs) == [70, 90]
    assert (paper.finetune.epochs, paper.finetune.batch_size, paper.finetune.lr) == (150, 16, 1e-4)
    assert milestone_epochs(paper.finetune.milestones, paper.finetune.epochs) == [90, 140]
    assert (paper.finetune.n_spheres, paper.finetune.gamma, paper.finetune.eta) == (100, 0.05, 1.0)
    assert paper.data.image_size == 512
    assert load_config("uni_modal_cpu").finetune.n_spheres == 1
    assert load_config("knn_cpu").method == "knn"


def test_config_errors_name_the_key_and_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: self_taught\nfinetune:\n  n_sphere: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*finetune\.n_sphere"):
        load_config(bad)
    bad.write_text("pretrain:\n  lr: fast\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*pretrain\.lr.*number"):
        load_config(bad)
    bad.write_text("pretrain:\n  pretext: moco\n")
    with pytest.raises(ConfigError, match=r"pretrain\.pretext"):
        load_config(bad)
    bad.write_text("method: nope\n")
    with pytest.raises(ConfigError, match=r"method"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"finetune\.gamma"):
        load_config("tiny", ["finetune.gamma=2"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_overrides_are_typed() -> None:
    cfg = load_config(
        "tiny",
        [
            "finetune.epochs=7",
            "data.image_size=64",
            "pretrain.milestones=[0.5]",
            "finetune.augment.enabled=false",
            "trainer.devices=2",
        ],
    )
    assert cfg.finetune.epochs == 7 and cfg.data.image_size == 64 and cfg.pretrain.milestones == [0.5]
    assert cfg.finetune.augment.enabled is False and cfg.trainer.devices == 2
    assert cfg.finetune.eps == 1e-6  # YAML "1.0e-6"-style floats and defaults survive


def test_augmentation_ranges_are_pairs_and_round_trip(tmp_path: Path) -> None:
    cfg = load_config("tiny", ["finetune.augment.scale=[0.9, 1.1]", "pretrain.augment.crop_scale=[0.5, 1]"])
    assert cfg.finetune.augment.scale == (0.9, 1.1) and cfg.pretrain.augment.crop_scale == (0.5, 1.0)
    with pytest.raises(ConfigError, match=r"finetune\.augment\.scale must be a list of 2 values"):
        load_config("tiny", ["finetune.augment.scale=[0.8]"])
    with pytest.raises(ConfigError, match=r"pretrain\.augment\.blur_sigma\[1\] must be a number"):
        load_config("tiny", ["pretrain.augment.blur_sigma=[0.1, big]"])
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(cfg), encoding="utf-8")
    assert load_config(path) == cfg  # what config.yaml stores loads back to the same config
    assert "(0.9" not in path.read_text(encoding="utf-8")  # ranges are written as plain YAML lists


# ----------------------------------------------------------------------------------------- run folder
def test_run_folder_contract(tiny_run: dict) -> None:
    run_dir, summary = tiny_run["run_dir"], tiny_run["summary"]
    for name in (
        "config.yaml",
        "env.json",
        "summary.json",
        "scores_valid.csv",
        "scores_test.csv",
        "embeddings_test.safetensors",
        "artefact/model.safetensors",
        "artefact/artefact.json",
        "pretrain/metrics.csv",
        "finetune/metrics.csv",
        "pretrain/done.json",
        "finetune/done.json",
    ):
        assert (run_dir / name).exists(), name
    # resume points are deleted once their stage is done: a finished stage reloads its exported weights
    assert not (run_dir / "pretrain/checkpoints").exists() and not (run_dir / "finetune/checkpoints").exists()
    cfg = load_config("tiny")
    pre, fin = _metrics(run_dir / "pretrain/metrics.csv"), _metrics(run_dir / "finetune/metrics.csv")
    assert [int(r["epoch"]) for r in pre] == list(range(cfg.pretrain.epochs))
    assert [int(r["epoch"]) for r in fin] == list(range(cfg.finetune.epochs))
    assert list(fin[0]) == ["epoch", "train_loss", "valid_auroc", "n_spheres", "lr"]
    assert all(np.isfinite(float(r["train_loss"])) for r in pre + fin)
    assert float(pre[0]["lr"]) == cfg.pretrain.lr and float(fin[0]["lr"]) == cfg.finetune.lr
    history = [int(r["n_spheres"]) for r in fin]
    assert history == sorted(history, reverse=True) and 1 <= history[-1] <= cfg.finetune.n_spheres
    assert summary["n_spheres_history"] == history and summary["n_spheres"] == history[-1]
    assert all(0.0 <= float(r["valid_auroc"]) <= 1.0 for r in fin)
    scores = pd.read_csv(run_dir / "scores_test.csv")
    assert list(scores.columns) == ["path", "patient_id", "study_id", "body_part", "label", "split", "score", "sphere"]
    assert len(scores) == summary["n_images"]["test"] == 16 and (scores["split"] == "test").all()
    assert scores["sphere"].between(0, history[-1] - 1).all()
    from sklearn.metrics import roc_auc_score

    assert summary["test_auroc"] == pytest.approx(roc_auc_score(scores["label"], scores["score"]))
    from safetensors.torch import load_file

    emb = load_file(str(run_dir / "embeddings_test.safetensors"))
    assert emb["h"].shape == (16, 512) and emb["z"].shape == (16, 128)
    assert torch.equal(emb["sphere"], torch.as_tensor(scores["sphere"].to_numpy()))
    env = json.loads((run_dir / "env.json").read_text())
    assert env["seed"] == 0 and "torch" in env["versions"]


def test_rerun_of_a_finished_run_trains_nothing(tiny_run: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from xrad.methods.contrastive import stage as contrastive
    from xrad.methods.multisphere import stage as multisphere

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished stage was trained again")

    monkeypatch.setattr(contrastive, "run", fail)
    monkeypatch.setattr(multisphere, "run", fail)
    again = run_training("tiny", tiny_run["manifest"], tiny_run["run_dir"], progress=False)
    assert again["test_auroc"] == tiny_run["summary"]["test_auroc"]


def test_changed_config_in_an_existing_run_folder_is_refused(tiny_run: dict) -> None:
    with pytest.raises(ConfigError, match="different config"):
        run_training("tiny", tiny_run["manifest"], tiny_run["run_dir"], overrides=["finetune.eta=2"], progress=False)


class _Crash(Exception):
    pass


def _crash_at(module_name: str, epoch: int):
    import lightning as L

    class CrashAtEpoch(L.Callback):
        """Simulates the process dying once epoch ``epoch - 1`` of a stage is checkpointed."""

        def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            if type(pl_module).__name__ == module_name and trainer.current_epoch == epoch:
                raise _Crash(f"simulated crash before epoch {epoch} of {module_name}")

    return CrashAtEpoch()


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted_run(tiny_run: dict, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with pytest.raises(_Crash):
        run_training(
            "tiny",
            tiny_run["manifest"],
            run_dir,
            progress=False,
            trainer_overrides={"callbacks": [_crash_at("ContrastiveModule", 1)]},
        )
    assert (run_dir / "pretrain/checkpoints/last.ckpt").exists() and not (run_dir / "pretrain/done.json").exists()
    with pytest.raises(_Crash):
        run_training(
            "tiny",
            tiny_run["manifest"],
            run_dir,
            progress=False,
            trainer_overrides={"callbacks": [_crash_at("MADModule", 2)]},
        )
    assert (run_dir / "pretrain/done.json").exists() and not (run_dir / "finetune/done.json").exists()
    assert not (run_dir / "pretrain/checkpoints").exists() and (run_dir / "finetune/checkpoints/last.ckpt").exists()
    summary = run_training("tiny", tiny_run["manifest"], run_dir, progress=False)
    resumed = pd.read_csv(run_dir / "scores_test.csv")
    reference = pd.read_csv(tiny_run["run_dir"] / "scores_test.csv")
    assert list(resumed["path"]) == list(reference["path"])
    np.testing.assert_allclose(resumed["score"], reference["score"], rtol=0, atol=1e-6)
    assert (resumed["sphere"] == reference["sphere"]).all()
    assert summary["n_spheres_history"] == tiny_run["summary"]["n_spheres_history"]
    assert [int(r["epoch"]) for r in _metrics(run_dir / "finetune/metrics.csv")] == [0, 1, 2]


def test_a_damaged_resume_checkpoint_is_a_clear_error(tiny_run: dict, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with pytest.raises(_Crash):
        run_training(
            "tiny",
            tiny_run["manifest"],
            run_dir,
            progress=False,
            trainer_overrides={"callbacks": [_crash_at("ContrastiveModule", 1)]},
        )
    last = run_dir / "pretrain/checkpoints/last.ckpt"
    data = last.read_bytes()
    last.resolve().write_bytes(data[: len(data) // 2])  # last.ckpt links to the epoch file: cut that short
    with pytest.raises(DataError, match=r"last\.ckpt: the pretrain stage's resume checkpoint is damaged.*delete"):
        run_training("tiny", tiny_run["manifest"], run_dir, progress=False)


# ------------------------------------------------------------------------------------ spheres and kNN
def _reuse(tiny_run: dict, *extra: str) -> list[str]:
    return [f"pretrain.encoder_from={tiny_run['run_dir']}", *extra]


def test_pruning_starts_after_the_warm_up(tiny_run: dict, tmp_path: Path) -> None:
    summary = run_training(
        "tiny",
        tiny_run["manifest"],
        tmp_path / "run",
        progress=False,
        overrides=_reuse(tiny_run, "finetune.epochs=2", "finetune.gamma=1.0", "finetune.prune_warmup=1"),
    )
    history = summary["n_spheres_history"]
    assert history[0] == 4  # k-means placed 4 centres and nothing is pruned during the warm-up epoch
    assert history[1] < history[0]  # gamma = 1 keeps only the most populated centre(s)
    meta = json.loads((tmp_path / "run/artefact/artefact.json").read_text())
    assert len(meta["centres"]) == history[1]


def _normal_train_embeddings(tiny_run: dict) -> np.ndarray:
    """z of the deterministic train images with semi-label != -1, from the stage-1 encoder (independently)."""
    from safetensors.torch import load_file

    from xrad.data.manifest import read_manifest
    from xrad.data.model_input import prepare_eval
    from xrad.models.encoder import build_encoder
    from xrad.training.banks import load_image_bank

    frame = read_manifest(tiny_run["manifest"])
    train = frame[(frame["split"] == "train") & (frame["semi_label"] != -1)]
    bank = load_image_bank(train, 32, workers=1, progress=False)
    encoder = build_encoder()
    encoder.load_state_dict(load_file(str(tiny_run["run_dir"] / "pretrain/encoder.safetensors")))
    with torch.no_grad():
        h, z = encoder.eval()(prepare_eval(bank.images, bank.masks))
    return h.numpy(), z.numpy()


def test_uni_modal_centre_is_the_mean_normal_embedding(tiny_run: dict, tmp_path: Path) -> None:
    run_training(
        "tiny",
        tiny_run["manifest"],
        tmp_path / "init",
        progress=False,
        overrides=_reuse(tiny_run, "finetune.n_spheres=1", "finetune.epochs=0"),
    )
    meta = json.loads((tmp_path / "init/artefact/artefact.json").read_text())
    _, z = _normal_train_embeddings(tiny_run)
    expected = z.mean(axis=0)
    expected = np.where(np.abs(expected) < 0.1, np.where(expected < 0, -0.1, 0.1), expected)
    np.testing.assert_allclose(np.array(meta["centres"]), expected[None], atol=1e-5)
    trained = run_training(
        "tiny",
        tiny_run["manifest"],
        tmp_path / "train",
        progress=False,
        overrides=_reuse(tiny_run, "finetune.n_spheres=1", "finetune.epochs=1"),
    )
    assert trained["n_spheres_history"] == [1] and np.isfinite(trained["test_auroc"])


def test_kmeans_initialisation_is_reproducible_for_a_seed(tiny_run: dict, tmp_path: Path) -> None:
    from xrad.methods.multisphere.centres import kmeans_centers

    def centres(name: str) -> np.ndarray:
        run_training(
            "tiny",
            tiny_run["manifest"],
            tmp_path / name,
            progress=False,
            overrides=_reuse(tiny_run, "finetune.epochs=0"),
        )
        return np.array(json.loads((tmp_path / name / "artefact/artefact.json").read_text())["centres"])

    first, again = centres("a"), centres("b")
    np.testing.assert_array_equal(first, again)
    # ... and they are k-means (seed of the config) of the deterministic, un-augmented normal embeddings.
    _, z = _normal_train_embeddings(tiny_run)
    np.testing.assert_allclose(first, kmeans_centers(z, 4, seed=0), atol=1e-4)


def test_knn_method_scores_mean_distance_to_k_nearest_normals(tiny_run: dict, tmp_path: Path) -> None:
    summary = run_training(
        "tiny", tiny_run["manifest"], tmp_path / "knn", progress=False, overrides=_reuse(tiny_run, "method=knn")
    )
    assert summary["method"] == "knn" and np.isfinite(summary["test_auroc"])
    memory, _ = _normal_train_embeddings(tiny_run)
    from safetensors.torch import load_file

    test_h = load_file(str(tmp_path / "knn/embeddings_test.safetensors"))["h"].numpy().astype(np.float64)
    dist = np.sqrt(((test_h[:, None, :] - memory[None].astype(np.float64)) ** 2).sum(-1))
    expected = np.sort(dist, axis=1)[:, :5].mean(axis=1)  # tiny.yaml: knn.k = 5
    scores = pd.read_csv(tmp_path / "knn/scores_test.csv")
    np.testing.assert_allclose(scores["score"], expected, rtol=1e-4, atol=1e-4)
    assert (scores["sphere"] == -1).all()


# ------------------------------------------------------------------------------------------- behaviour
@pytest.mark.slow
def test_self_taught_and_its_knn_separate_planted_squares(squares_split: Path, tmp_path: Path) -> None:
    """The detector the project exists for must detect something: planted bright squares (a third of the
    images, every train anomaly a known anomaly as in the papers' split) rank above the normals."""
    detector = run_training(
        "tiny", squares_split, tmp_path / "run", progress=False, overrides=["pretrain.epochs=5", "finetune.epochs=5"]
    )
    assert detector["method"] == "self_taught" and detector["test_auroc"] >= 0.9
    knn = run_training(
        "tiny",
        squares_split,
        tmp_path / "knn",
        progress=False,
        overrides=["method=knn", f"pretrain.encoder_from={tmp_path / 'run'}", "knn.k=5"],
    )
    assert knn["test_auroc"] >= 0.8


# ------------------------------------------------------------------------------------------ CLI / DDP
def _xrad(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, "-m", "xrad.cli.main", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_cli_train_bad_key_is_a_one_line_error(tiny_run: dict, tmp_path: Path) -> None:
    result = _xrad(
        "train",
        "--config",
        "tiny",
        "--manifest",
        str(tiny_run["manifest"]),
        "-o",
        str(tmp_path / "r"),
        "--set",
        "finetune.bogus=1",
        "--quiet",
    )
    assert result.returncode == 2
    assert "finetune.bogus" in result.stderr and "tiny.yaml" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_ddp_two_processes_on_cpu_writes_a_valid_artefact(tiny_run: dict, tmp_path: Path) -> None:
    run_dir = tmp_path / "ddp"
    result = _xrad(
        "train",
        "--config",
        "tiny",
        "--manifest",
        str(tiny_run["manifest"]),
        "-o",
        str(run_dir),
        "--accelerator",
        "cpu",
        "--devices",
        "2",
        "--strategy",
        "ddp",
        "--quiet",
        "--set",
        "pretrain.epochs=1",
        "--set",
        "finetune.epochs=2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test AUROC" in result.stdout
    from xrad.inference.scoring import load_scorer, score_frame

    scorer = load_scorer(run_dir / "artefact")
    frame = pd.read_csv(tiny_run["manifest"])
    test = frame[frame["split"] == "test"]
    scored = score_frame(scorer, test)
    reference = pd.read_csv(run_dir / "scores_test.csv")
    np.testing.assert_allclose(scored["score"], reference["score"], rtol=0, atol=1e-5)
    history = [int(r["n_spheres"]) for r in _metrics(run_dir / "finetune/metrics.csv")]
    assert len(history) == 2 and history == sorted(history, reverse=True)
    config = load_config(run_dir / "config.yaml")
    assert config.trainer.devices == 2 and config.trainer.strategy == "ddp"
