"""SALAD (Bozorgtabar et al. 2020): its losses, bank update and Eq. 4 score against NumPy transcriptions, the
round helpers against brute force, and the detector end to end (exact resume, known anomalies dropped from the
bank, planted squares found)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from training_helpers import make_dataset

from xrad.errors import ConfigError
from xrad.jobs.train import run_training
from xrad.losses import (
    aggregation_loss,
    arccos_knn_score,
    instance_discrimination,
    memory_update,
    salad_loss,
)
from xrad.methods.registry import load_config
from xrad.methods.salad.bank import bank_entropy, nearest_rows, prototypical_rows, random_unit_bank


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _with_ties(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """A bank whose rows 1 and 2 equal row 0 and row 4 equals row 3: tied similarities everywhere."""
    bank = _unit(rng, n, d)
    bank[1] = bank[2] = bank[0]
    bank[4] = bank[3]
    return bank


# ---------------------------------------------------------------- NumPy transcriptions
def np_p(z: np.ndarray, bank: np.ndarray, tau: float) -> np.ndarray:
    """Eq. 1's p_ij = exp(z_iᵀm_j/τ) / Σ_k exp(z_iᵀm_k/τ), one entry at a time."""
    p = np.zeros((len(z), len(bank)))
    for i in range(len(z)):
        denominator = sum(np.exp(z[i] @ bank[k] / tau) for k in range(len(bank)))
        for j in range(len(bank)):
            p[i, j] = np.exp(z[i] @ bank[j] / tau) / denominator
    return p


def np_l_ss(z: np.ndarray, bank: np.ndarray, index: np.ndarray, tau: float) -> float:
    """Eq. 1 with AUG_i = image i's own bank slot, divided by the batch size."""
    p = np_p(z, bank, tau)
    return float(np.mean([-np.log(p[i, index[i]]) for i in range(len(z))]))


def np_l_agg(z: np.ndarray, bank: np.ndarray, neighbours: np.ndarray, tau: float) -> float:
    """Eq. 2: −log Σ_{j∈N_k(i)} p_ij, averaged over the prototypical samples."""
    p = np_p(z, bank, tau)
    return float(np.mean([-np.log(sum(p[i, j] for j in neighbours[i])) for i in range(len(z))]))


def np_eq4(z: np.ndarray, bank: np.ndarray, k: int) -> np.ndarray:
    """Eq. 4: (1/K) Σ_{K nearest} arccos d / Σ_{all N} arccos d, d the cosine clamped to [−1, 1]."""
    out = []
    for q in z.astype(np.float64):
        cos = [np.clip(q @ m / (np.linalg.norm(q) * np.linalg.norm(m)), -1.0, 1.0) for m in bank.astype(np.float64)]
        angles = np.sort(np.arccos(cos))
        kk = min(k, len(bank))
        out.append(np.sum(angles[:kk]) / (kk * np.sum(angles)))
    return np.array(out)


# ---------------------------------------------------------------- losses
@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_instance_discrimination_matches_numpy(tau: float) -> None:
    rng = np.random.default_rng(int(tau * 10))
    bank, z = _with_ties(rng, 12, 6), _unit(rng, 5, 6)
    index = np.array([0, 1, 3, 4, 11])  # tied slots 0/1 and 3/4 are distinct targets with equal logits
    got = instance_discrimination(torch.tensor(z), torch.tensor(bank), torch.tensor(index), tau).item()
    assert got == pytest.approx(np_l_ss(z, bank, index, tau), rel=1e-9)


@pytest.mark.parametrize("tau", [0.1, 0.7])
def test_aggregation_loss_matches_numpy(tau: float) -> None:
    rng = np.random.default_rng(3 + int(tau * 10))
    bank, z = _with_ties(rng, 15, 4), _unit(rng, 6, 4)
    neighbours = np.stack([rng.choice(15, size=4, replace=False) for _ in range(6)])
    neighbours[0] = [0, 1, 2, 3]  # three tied entries in one neighbourhood
    got = aggregation_loss(torch.tensor(z), torch.tensor(bank), torch.tensor(neighbours), tau).item()
    assert got == pytest.approx(np_l_agg(z, bank, neighbours, tau), rel=1e-9)
    # The neighbourhood {i} alone is L_ss; widening it can only lower the loss.
    own = neighbours[:, :1]
    single = aggregation_loss(torch.tensor(z), torch.tensor(bank), torch.tensor(own), tau)
    assert single.item() == pytest.approx(np_l_ss(z, bank, own[:, 0], tau), rel=1e-9)
    assert got < single.item()


def test_aggregation_loss_of_no_prototypical_sample_is_zero_with_a_graph() -> None:
    z = torch.zeros(0, 4, requires_grad=True)
    loss = aggregation_loss(z, torch.eye(4), torch.zeros(0, 2, dtype=torch.long))
    assert loss.item() == 0.0 and loss.requires_grad


def test_salad_loss_is_eq3_and_losses_reject_bad_inputs() -> None:
    rec, ss, agg = torch.tensor(0.3), torch.tensor(2.0), torch.tensor(5.0)
    assert salad_loss(rec, ss, agg, lam=0.25).item() == pytest.approx(0.3 + 0.25 * 7.0)
    with pytest.raises(ConfigError):
        instance_discrimination(torch.eye(3), torch.eye(3), torch.arange(3), temperature=0.0)
    with pytest.raises(ValueError):
        instance_discrimination(torch.eye(3), torch.eye(4), torch.arange(3))


def test_gradients_are_finite_at_low_temperature() -> None:
    g = torch.Generator().manual_seed(0)
    bank = torch.nn.functional.normalize(torch.randn(30, 8, generator=g), dim=1)
    z = bank[:4].clone().requires_grad_(True)
    loss = instance_discrimination(z, bank, torch.arange(4), 0.01) + aggregation_loss(
        z, bank, torch.arange(12).view(4, 3), 0.01
    )
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()


# ---------------------------------------------------------------- memory bank
@pytest.mark.parametrize("t", [0.0, 0.5, 0.9, 1.0])
def test_memory_update_is_the_formula(t: float) -> None:
    rng = np.random.default_rng(int(t * 10))
    bank, z = _unit(rng, 10, 5), rng.normal(size=(3, 5))
    index = np.array([7, 2, 4])
    before = torch.tensor(bank)
    got = memory_update(before, torch.tensor(index), torch.tensor(z), momentum=t).numpy()
    expected = bank.copy()
    for row, zi in zip(index, z):
        mixed = (1 - t) * bank[row] + t * zi
        expected[row] = mixed / np.linalg.norm(mixed)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(before.numpy(), bank)  # the input bank is not modified
    with pytest.raises(ConfigError):
        memory_update(before, torch.tensor(index), torch.tensor(z), momentum=1.5)


def test_random_bank_is_unit_and_seeded() -> None:
    a, b = random_unit_bank(50, 7, seed=3), random_unit_bank(50, 7, seed=3)
    assert torch.equal(a, b) and not torch.equal(a, random_unit_bank(50, 7, seed=4))
    torch.testing.assert_close(a.norm(dim=1), torch.ones(50))


def test_round_helpers_match_brute_force_with_ties() -> None:
    rng = np.random.default_rng(11)
    bank = _with_ties(rng, 20, 5)
    tau = 0.2
    p = np_p(bank, bank, tau)
    entropy = -(p * np.log(p)).sum(axis=1)
    np.testing.assert_allclose(bank_entropy(torch.tensor(bank), tau, chunk=7).numpy(), entropy, rtol=1e-9)
    chosen = prototypical_rows(torch.tensor(bank), tau, fraction=0.25, chunk=6).numpy()
    assert chosen.sum() == 5 and set(np.flatnonzero(chosen)) == set(np.argsort(entropy, kind="stable")[:5])
    rows = np.array([0, 3, 9, 1])
    got = nearest_rows(torch.tensor(bank), torch.tensor(rows), k=4, chunk=3).numpy()
    for r, picked in zip(rows, got):
        sims = [(-(bank[r] @ bank[j]), j) for j in range(len(bank)) if j != r]
        # Most similar first; equal similarities (the duplicated rows) by the lower index.
        expected = [j for _, j in sorted(sims, key=lambda s: (round(s[0], 12), s[1]))[:4]]
        assert list(picked) == expected
    assert 1 in got[0][:2] and 2 in got[0][:2]  # row 0's exact duplicates come first


# ---------------------------------------------------------------- Eq. 4
def _overshooting_queries() -> tuple[np.ndarray, np.ndarray]:
    """float32 unit vectors whose cosine with themselves rounds past 1 (and past −1 with their negation)."""
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(4000, 32, generator=g), dim=1)
    over = (x * x).sum(dim=1) > 1.0
    assert over.any(), "no float32 overshoot found: the clamp test would prove nothing"
    picked = x[over][:3]
    return picked.numpy(), (-picked).numpy()


@pytest.mark.parametrize("k", [1, 3, 100])
def test_eq4_matches_numpy_with_ties_and_clamping(k: int) -> None:
    rng = np.random.default_rng(k)
    same, opposite = _overshooting_queries()
    bank = np.concatenate([same, _with_ties(rng, 9, 32)]).astype(np.float32)
    queries = np.concatenate([same, opposite, rng.normal(size=(4, 32))]).astype(np.float32)
    got = arccos_knn_score(torch.tensor(queries), torch.tensor(bank), k=k)
    assert torch.isfinite(got).all()
    np.testing.assert_allclose(got.numpy(), np_eq4(queries, bank, k), rtol=1e-5, atol=1e-7)
    # Chunked over queries and bank: the same numbers.
    chunked = arccos_knn_score(torch.tensor(queries), torch.tensor(bank), k=k, query_chunk=3, memory_chunk=4)
    np.testing.assert_allclose(chunked.numpy(), got.numpy(), rtol=1e-6, atol=1e-7)
    # The authors' variant: the mean of the K smallest angles over π.
    mean_angle = arccos_knn_score(torch.tensor(queries), torch.tensor(bank), k=k, formula="mean_angle")
    cos = np.clip(
        (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float64)
        @ (bank / np.linalg.norm(bank, axis=1, keepdims=True)).astype(np.float64).T,
        -1,
        1,
    )
    expected = np.sort(np.arccos(cos), axis=1)[:, : min(k, len(bank))].mean(axis=1) / np.pi
    np.testing.assert_allclose(mean_angle.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_eq4_without_the_clamp_would_be_nan() -> None:
    same, _ = _overshooting_queries()
    q = torch.nn.functional.normalize(torch.tensor(same), dim=1)
    assert torch.isnan(torch.arccos(q @ q.T)).any()  # what the clamp prevents
    assert torch.isfinite(arccos_knn_score(torch.tensor(same), torch.tensor(same), k=2)).all()


# ---------------------------------------------------------------- config and optimiser
def test_schedule_rounds_and_adam_betas_from_config() -> None:
    from xrad.methods.salad.stage import SaladModule, new_net

    cfg = load_config("salad_paper")
    salad = cfg.section("salad")
    assert (salad.warmup_epochs, salad.rounds, salad.round_epochs, salad.epochs) == (50, 10, 50, 550)
    assert [salad.round_of(e) for e in (0, 49, 50, 99, 100, 549)] == [0, 0, 1, 1, 2, 10]
    assert (salad.temperature, salad.lam, salad.momentum, salad.k, salad.batch_size) == (0.1, 0.25, 0.5, 100, 16)
    tiny = load_config("tiny_salad")
    module = SaladModule(
        new_net(tiny), tiny, None, SimpleNamespace(banks={"train": [0] * 6}), list(range(6)),
        random_unit_bank(6, 16, 0), torch.zeros(6, dtype=torch.long),
    )  # fmt: skip
    optimiser = module.configure_optimizers()["optimizer"]
    assert optimiser.param_groups[0]["betas"] == (0.5, 0.999)
    with pytest.raises(ConfigError, match=r"data\.image_size 96 must be a multiple of 64"):
        load_config("tiny_salad", ["salad.network=conv6", "data.image_size=96"])
    with pytest.raises(ConfigError, match=r"salad\.level patch needs network resnet18"):
        load_config("tiny_salad", ["salad.network=conv6", "data.image_size=64", "salad.level=patch"])


def test_conv6_network_shapes() -> None:
    from xrad.models.salad import build_salad_net

    net = build_salad_net("conv6", 64, latent_dim=20, width=2).eval()
    recon, z = net(torch.rand(2, 1, 64, 64))
    assert recon.shape == (2, 1, 64, 64) and z.shape == (2, 20)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(2))
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    n_conv = sum(isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) for m in net.modules())
    assert n_bn == n_conv - 2  # every convolution but the projection and the output head: BN (+ leaky ReLU)


# ---------------------------------------------------------------- end to end
class _Crash(RuntimeError):
    pass


class _CrashAtEpoch(L.Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise _Crash(f"simulated crash before epoch {self.epoch}")


ROUNDS = ["salad.warmup_epochs=1", "salad.rounds=1", "salad.round_epochs=2"]  # round 1: epochs 1 and 2


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("salad") / "data")


def test_resume_inside_a_round_gives_the_same_scores(tiny_data: Path, tmp_path: Path) -> None:
    reference = run_training("tiny_salad", tiny_data, tmp_path / "ref", progress=False, overrides=ROUNDS)
    run_dir = tmp_path / "resumed"
    with pytest.raises(_Crash):  # after epoch 1, the first of round 1: the round's choice is in the checkpoint
        run_training(
            "tiny_salad",
            tiny_data,
            run_dir,
            progress=False,
            overrides=ROUNDS,
            trainer_overrides={"callbacks": [_CrashAtEpoch(2)]},
        )
    assert (run_dir / "train/checkpoints/last.ckpt").exists()
    resumed = run_training("tiny_salad", tiny_data, run_dir, progress=False, overrides=ROUNDS)
    a = pd.read_csv(tmp_path / "ref" / "scores_test.csv")
    b = pd.read_csv(run_dir / "scores_test.csv")
    np.testing.assert_allclose(b["score"], a["score"], rtol=0, atol=1e-6)
    assert resumed["test_auroc"] == pytest.approx(reference["test_auroc"], abs=1e-9)
    from safetensors.torch import load_file

    saved_a = load_file(str(tmp_path / "ref" / "train" / "memory.safetensors"))
    saved_b = load_file(str(run_dir / "train" / "memory.safetensors"))
    torch.testing.assert_close(saved_b["memory"], saved_a["memory"], rtol=0, atol=1e-6)


def test_known_anomalies_train_but_leave_the_bank_at_scoring(tiny_data: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    frame = pd.read_csv(tiny_data)
    train = frame[frame["split"] == "train"]
    n_known = int((train["semi_label"] == -1).sum())
    assert n_known > 0
    run_training("tiny_salad", tiny_data, tmp_path / "salad", progress=False)
    bank = load_file(str(tmp_path / "salad" / "train" / "memory.safetensors"))
    assert bank["memory"].shape[0] == len(train)  # every train image has a slot and trains
    artefact = load_file(str(tmp_path / "salad" / "artefact" / "model.safetensors"))
    assert artefact["memory"].shape[0] == len(train) - n_known
    # MemDAE's all-normal training: the known anomalies never enter the bank.
    run_training(
        "tiny_salad",
        tiny_data,
        tmp_path / "memdae",
        progress=False,
        overrides=["salad.instance=false", "salad.aggregation=false", "salad.exclude_known_abnormal=true"],
    )
    memdae_bank = load_file(str(tmp_path / "memdae" / "train" / "memory.safetensors"))["memory"]
    assert memdae_bank.shape[0] == len(train) - n_known


@pytest.mark.slow
def test_salad_finds_planted_squares(squares_split: Path, tmp_path: Path) -> None:
    overrides = ["salad.warmup_epochs=4", "salad.rounds=2", "salad.round_epochs=2"]
    summary = run_training("tiny_salad", squares_split, tmp_path / "run", progress=False, overrides=overrides)
    assert summary["test_auroc"] >= 0.75


def test_patch_level_score_on_the_trained_backbone(tiny_data: Path, tmp_path: Path) -> None:
    from xrad.inference.scoring import load_scorer

    overrides = ["salad.level=patch", "salad.patch_memory_size=200", "salad.rounds=0"]
    summary = run_training("tiny_salad", tiny_data, tmp_path / "run", progress=False, overrides=overrides)
    scorer = load_scorer(tmp_path / "run" / "artefact")
    assert scorer.kind == "patch_knn" and scorer.memory.shape[0] <= 200
    assert np.isfinite(pd.read_csv(tmp_path / "run" / "scores_test.csv")["score"]).all()
    assert summary["method"] == "salad"
