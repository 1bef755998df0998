"""An artefact written by the code before the refactor (commit 6c3bd21) still loads and scores identically.

The fixtures (``tests/fixtures/old_artefacts``, made by its ``make_fixture.py`` with the old code) are tiny
runs trained with 0 epochs, so every network weight is the seeded initialisation; only the data-dependent
tensors (k-means centres, the kNN memory bank) are committed, beside the old ``artefact.json`` and the old
code's scores of a committed uint8 batch. Each test rebuilds ``model.safetensors`` with TODAY's network
constructors from the config stored in the old ``artefact.json`` and checks

1. the rebuilt bytes have the SHA-256 the old ``artefact.json`` records — the file is byte-identical to the
   one the old code wrote (same initialisation, same tensor names, same safetensors layout);
2. today's ``read_artefact_meta`` accepts the old JSON unchanged;
3. today's ``load_scorer`` scores the batch exactly as the old code did (scores rtol 1e-6, spheres equal).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load, save

FIXTURES = Path(__file__).parent / "fixtures" / "old_artefacts"
ARTEFACTS = ("self_taught", "autoencoder", "knn")


def _network(method: str, config: Any) -> tuple[str, torch.nn.Module]:
    """(prefix the old scorer stored the weights under, the seeded network as training builds it today)."""
    if method == "autoencoder":  # old ReconstructionScorer: "ae." + Autoencoder.state_dict()
        from xrad.methods.autoencoder.stage import new_autoencoder

        return "ae.", new_autoencoder(config)
    # old SphereScorer / KnnScorer: "encoder." + Encoder.state_dict(); with 0 epochs (and the head
    # transferred to stage 2) the encoder is the seeded stage-1 encoder.
    from xrad.methods.contrastive.stage import new_encoder

    assert method in ("self_taught", "knn"), method
    return "encoder.", new_encoder(config)


def _rebuild_weights(name: str) -> tuple[bytes, dict[str, Any]]:
    """The old artefact's model.safetensors, rebuilt with today's code; and the old artefact.json."""
    from xrad.methods.registry import load_config

    old_meta = json.loads((FIXTURES / name / "artefact.json").read_text(encoding="utf-8"))
    config = load_config(old_meta["config"])
    assert config.pretrain.epochs == 0 and config.finetune.epochs == 0  # weights = the seeded initialisation
    prefix, network = _network(old_meta["method"], config)
    tensors = {prefix + k: v for k, v in network.state_dict().items()}
    data_file = FIXTURES / name / "data.safetensors"
    if data_file.is_file():
        data = load(data_file.read_bytes())
        assert not set(data) & set(tensors)
        tensors.update(data)
    # As the old xrad.artefact.save_artefact wrote them.
    plain = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    return save(plain, metadata={"format": "xrad-artefact/1"}), old_meta


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """The uint8 batch the old code scored (old ``xrad.export.parity_batch(32, n=6, seed=0)``)."""
    tensors = load((FIXTURES / "batch.safetensors").read_bytes())
    images, masks = tensors["images"], tensors["masks"]
    assert images.dtype == masks.dtype == torch.uint8 and images.shape == masks.shape == (6, 1, 32, 32)
    return images, masks


@pytest.mark.parametrize("name", ARTEFACTS)
def test_old_artefact_rebuilds_byte_identical_and_scores_identically(
    name: str, batch: tuple[torch.Tensor, torch.Tensor], tmp_path: Path
) -> None:
    from xrad.inference.artefact import read_artefact_meta
    from xrad.inference.scoring import load_scorer

    blob, old_meta = _rebuild_weights(name)
    assert hashlib.sha256(blob).hexdigest() == old_meta["sha256"], (
        f"{name}: the weights rebuilt with today's code differ from the file the old code wrote"
    )

    folder = tmp_path / "artefact"
    folder.mkdir()
    shutil.copyfile(FIXTURES / name / "artefact.json", folder / "artefact.json")
    (folder / "model.safetensors").write_bytes(blob)
    assert read_artefact_meta(folder) == old_meta

    expected = json.loads((FIXTURES / name / "scores.json").read_text(encoding="utf-8"))
    scorer = load_scorer(folder)
    assert scorer.kind == old_meta["scorer"]["kind"]
    images, masks = batch
    out = scorer.score_batches(images, masks)
    np.testing.assert_allclose(out["score"].numpy(), np.array(expected["score"], dtype=np.float64), rtol=1e-6, atol=0)
    assert out["sphere"].tolist() == expected["sphere"]


def test_fixtures_cover_every_old_scorer_kind() -> None:
    kinds = {json.loads((FIXTURES / n / "artefact.json").read_text())["scorer"]["kind"] for n in ARTEFACTS}
    assert kinds == {"sphere", "reconstruction", "knn"}
    assert json.loads((FIXTURES / "knn" / "artefact.json").read_text())["scorer"]["args"]["feature"] == "z"
