"""The kNN ablation's second stage: it trains nothing — it embeds the training images with semi-label ≠ −1
(deterministic inputs, eval mode) with the previous stage's encoder into the memory bank.

The paper's ablation (reference-spec §5.5) scores the very encoder the self-taught detector is fine-tuned
from (stage 1 shared through ``pretrain.encoder_from``); ``knn_ae`` does the same on the autoencoder's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from xrad.config import Config
from xrad.data.model_input import prepare_eval
from xrad.errors import ConfigError
from xrad.methods.base import ProvidesEncoder
from xrad.methods.knn.scorer import KnnScorer
from xrad.methods.stage_io import load_tensors, save_tensors
from xrad.models.encoder import Encoder
from xrad.training.context import RunContext

MEMORY_FILE = "memory.safetensors"


@dataclass
class MemoryResult:
    """The encoder and the (M, D) embeddings of the normal training images."""

    encoder: Encoder
    memory: Tensor

    def scorer(self, config: Config) -> KnnScorer:
        """Mean distance to the ``knn.k`` nearest memory rows."""
        knn = config.knn
        return KnnScorer(self.encoder, self.memory, k=knn.k, chunk_size=knn.chunk_size, feature=knn.feature)


def _encoder_of(previous: ProvidesEncoder | None, stage: str) -> Encoder:
    if previous is None:
        raise ConfigError(
            f"the {stage} stage needs a finished pretrain stage in this run folder; "
            "run `xrad train --stage pretrain` (or all) first, or set pretrain.encoder_from"
        )
    return previous.encoder


@torch.no_grad()
def run(ctx: RunContext, stage: str, previous: ProvidesEncoder | None) -> MemoryResult:
    """Embed the normal training images into the memory bank."""
    cfg = ctx.config
    encoder = _encoder_of(previous, stage).eval().to(ctx.device)
    bank = ctx.banks["train"]
    idx = torch.tensor(ctx.normal_train_rows())
    parts = []
    for start in range(0, len(idx), cfg.data.eval_batch_size):
        rows = idx[start : start + cfg.data.eval_batch_size]
        h, z = encoder(prepare_eval(bank.images[rows].to(ctx.device), bank.masks[rows].to(ctx.device)))
        parts.append((h if cfg.knn.feature == "h" else z).float().cpu())
    memory = torch.cat(parts)
    if ctx.is_global_zero:
        save_tensors(ctx.stage_dir(stage) / MEMORY_FILE, {"memory": memory})
    return MemoryResult(encoder.cpu(), memory)


def load(ctx: RunContext, stage: str, previous: ProvidesEncoder | None) -> MemoryResult:
    """The finished memory bank (with the previous stage's encoder)."""
    memory = load_tensors(ctx.stage_dir(stage) / MEMORY_FILE)["memory"]
    return MemoryResult(_encoder_of(previous, stage), memory)
