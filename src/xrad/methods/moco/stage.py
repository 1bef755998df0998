"""Stage 1 of ``moco_multi_sphere``: MoCo v2 pre-training of the encoder, which then goes through the same
multi-sphere fine-tuning as the contrastive pretext (the ``finetune`` stage of the self-taught detector).

The key encoder and the queue are part of the module (a parameter copy and buffers), so the epoch checkpoint
carries them and a resumed run continues with the same keys. Single-device batch statistics: MoCo's
"shuffling BN" across GPUs is not reproduced (under DDP each rank's BatchNorm sees only its own batch).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from xrad.config import Config
from xrad.methods.base import EncoderResult
from xrad.methods.contrastive.stage import load as load_encoder
from xrad.methods.contrastive.stage import train_encoder
from xrad.methods.moco.config import MocoConfig
from xrad.methods.moco.queue import enqueue, moco_info_nce, momentum_update
from xrad.models.encoder import Encoder
from xrad.training.augment import contrastive_views
from xrad.training.context import RunContext
from xrad.training.module import StageModule


class MocoModule(StageModule):
    """Query encoder (trained), momentum key encoder and queue of keys."""

    queue: Tensor  # buffer (K, D), L2-normalised keys
    queue_pointer: Tensor  # buffer (), next row to overwrite

    def __init__(self, encoder: Encoder, config: Config, metrics_path: Path | None) -> None:
        super().__init__(config, config.pretrain, metrics_path)
        self.moco: MocoConfig = config.section("moco")
        self.encoder = encoder
        self.key_encoder = copy.deepcopy(encoder)
        for p in self.key_encoder.parameters():
            p.requires_grad_(False)
        self.augment = config.pretrain.augment
        generator = torch.Generator().manual_seed(config.seed + 17)
        initial = torch.randn(self.moco.queue_size, config.model.head_dims[-1], generator=generator)
        self.register_buffer("queue", F.normalize(initial, dim=1))
        self.register_buffer("queue_pointer", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update_key_encoder(self) -> None:
        """θ_k ← m·θ_k + (1 − m)·θ_q for every parameter; BatchNorm statistics are copied from the query."""
        for key, query in zip(self.key_encoder.parameters(), self.encoder.parameters()):
            key.copy_(momentum_update(key, query, self.moco.momentum))
        for key_buffer, query_buffer in zip(self.key_encoder.buffers(), self.encoder.buffers()):
            key_buffer.copy_(query_buffer)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        v1, v2 = contrastive_views(batch["image"], batch["mask"], self.augment, self.augment_generator(batch_idx))
        _, q = self.encoder(v1)
        with torch.no_grad():
            self.update_key_encoder()
            _, k = self.key_encoder(v2)
            k = F.normalize(k.float(), dim=1)
        loss = moco_info_nce(q, k, self.queue, self.moco.temperature)
        with torch.no_grad():
            queue, pointer = enqueue(self.queue, int(self.queue_pointer), k)
            self.queue.copy_(queue)
            self.queue_pointer.fill_(pointer)
        self.record_loss(loss, v1.shape[0])
        return loss


def run(ctx: RunContext, stage: str, previous: Any = None) -> EncoderResult:
    """Train (or load via ``pretrain.encoder_from``) the MoCo query encoder."""
    return train_encoder(ctx, stage, MocoModule)


def load(ctx: RunContext, stage: str, previous: Any = None) -> EncoderResult:
    """The finished stage's query encoder."""
    return load_encoder(ctx, stage, previous)
