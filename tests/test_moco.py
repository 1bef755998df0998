"""MoCo v2: the momentum update, the queue and the loss equal their formulas; the module applies them."""

from __future__ import annotations

import numpy as np
import torch

from xrad.methods.contrastive.stage import new_encoder
from xrad.methods.moco.queue import enqueue, moco_info_nce, momentum_update
from xrad.methods.moco.stage import MocoModule
from xrad.methods.registry import load_config


def test_momentum_update_is_the_convex_combination() -> None:
    key, query = torch.tensor([1.0, -2.0, 4.0]), torch.tensor([3.0, 0.0, -4.0])
    np.testing.assert_allclose(momentum_update(key, query, 0.9).numpy(), 0.9 * key.numpy() + 0.1 * query.numpy())
    assert torch.equal(momentum_update(key, query, 1.0), key)  # m = 1: the key encoder never moves
    assert torch.equal(momentum_update(key, query, 0.0), query)  # m = 0: a copy of the query encoder


def test_enqueue_is_a_ring_buffer_replacing_the_oldest_keys() -> None:
    queue = torch.zeros(5, 2)
    keys = torch.arange(6.0).reshape(3, 2)
    q1, p1 = enqueue(queue, 0, keys)
    np.testing.assert_array_equal(q1.numpy(), [[0, 1], [2, 3], [4, 5], [0, 0], [0, 0]])
    assert p1 == 3
    q2, p2 = enqueue(q1, p1, keys + 10)  # wraps: rows 3, 4, 0
    np.testing.assert_array_equal(q2.numpy(), [[14, 15], [2, 3], [4, 5], [10, 11], [12, 13]])
    assert p2 == 1
    assert torch.equal(queue, torch.zeros(5, 2))  # pure: the input is not modified
    q3, p3 = enqueue(torch.zeros(2, 2), 1, keys)  # more keys than rows: as three writes at rows 1, 0, 1
    np.testing.assert_array_equal(q3.numpy(), [[2, 3], [4, 5]])
    assert p3 == 0


def np_moco_loss(q: np.ndarray, k: np.ndarray, queue: np.ndarray, tau: float) -> float:
    """−log exp(q·k/τ) / (exp(q·k/τ) + Σ_j exp(q·n_j/τ)) on normalised vectors, averaged over the batch."""

    def unit(a: np.ndarray) -> np.ndarray:
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    q, k, queue = unit(q), unit(k), unit(queue)
    total = 0.0
    for i in range(len(q)):
        pos = np.exp(q[i] @ k[i] / tau)
        neg = sum(np.exp(q[i] @ n / tau) for n in queue)
        total += -np.log(pos / (pos + neg))
    return total / len(q)


def test_moco_loss_equals_numpy() -> None:
    rng = np.random.default_rng(0)
    q, k, queue = rng.normal(size=(4, 8)), rng.normal(size=(4, 8)), rng.normal(size=(10, 8))
    got = moco_info_nce(torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(queue), 0.2)
    np.testing.assert_allclose(float(got), np_moco_loss(q, k, queue, 0.2), rtol=1e-5)


def test_one_step_moves_the_key_encoder_by_the_formula_and_enqueues_the_keys() -> None:
    cfg = load_config("tiny", ["method=moco_multi_sphere", "moco.queue_size=12", "moco.momentum=0.75"])
    module = MocoModule(new_encoder(cfg), cfg, None)
    with torch.no_grad():
        for p in module.encoder.parameters():
            p.add_(0.01)  # the query encoder has moved since the copy
    before_key = [p.clone() for p in module.key_encoder.parameters()]
    query = [p.clone() for p in module.encoder.parameters()]
    queue_before = module.queue.clone()
    g = torch.Generator().manual_seed(0)
    batch = {
        "image": torch.randint(0, 255, (4, 1, 32, 32), generator=g, dtype=torch.uint8),
        "mask": torch.ones(4, 1, 32, 32, dtype=torch.uint8),
        "semi_label": torch.zeros(4, dtype=torch.long),
    }
    loss = module.training_step(batch, 0)
    assert torch.isfinite(loss) and loss.requires_grad
    for key_after, key0, q in zip(module.key_encoder.parameters(), before_key, query):
        torch.testing.assert_close(key_after, 0.75 * key0 + 0.25 * q)
    assert int(module.queue_pointer) == 4
    assert torch.equal(module.queue[4:], queue_before[4:]) and not torch.equal(module.queue[:4], queue_before[:4])
    np.testing.assert_allclose(module.queue[:4].norm(dim=1).numpy(), 1.0, rtol=1e-5)
    assert all(p.grad is None for p in module.key_encoder.parameters())


def test_moco_stage_one_is_its_own_sharing_family(tmp_path) -> None:
    from xrad.methods.registry import shared_stage_key

    manifest = tmp_path / "split.csv"
    moco = shared_stage_key(load_config("moco_multi_sphere_cpu"), manifest)
    assert moco is not None and moco[0] == "encoder.safetensors"
    assert moco != shared_stage_key(load_config("self_taught_cpu"), manifest)  # same file name, other pretext
    assert shared_stage_key(load_config("moco_multi_sphere_cpu", ["finetune.epochs=3"]), manifest) == moco
    assert shared_stage_key(load_config("moco_multi_sphere_cpu", ["moco.queue_size=128"]), manifest) != moco
