"""kNN ablation: score = mean distance of a stage-1 embedding to its k nearest normal training embeddings.

The paper's ablation (reference-spec §5.5) on the same contrastive encoder as the self-taught detector:
stage ``pretrain`` is shared with :mod:`xrad.methods.self_taught` (set ``pretrain.encoder_from`` to
reuse a finished run's encoder instead of training it again); stage ``finetune`` trains nothing — it
embeds the training images with semi-label ≠ −1 (deterministic inputs, eval mode) into the memory bank.
"""

from __future__ import annotations

import torch

from xrad.training.augment import prepare_eval
from xrad.methods.scorers import KnnScorer
from xrad.methods.self_taught import load_pretrain, load_tensors, normal_train_indices, run_pretrain, save_tensors
from xrad.training.context import RunContext

MEMORY_FILE = "memory.safetensors"


@torch.no_grad()
def build_memory(ctx: RunContext) -> None:
    """Embed the normal training images → ``state['memory']`` (M, D)."""
    cfg = ctx.config
    encoder = ctx.state["encoder"].eval()
    bank = ctx.banks["train"]
    idx = torch.tensor(normal_train_indices(ctx))
    encoder = encoder.to(ctx.device)
    parts = []
    for start in range(0, len(idx), cfg.data.eval_batch_size):
        rows = idx[start:start + cfg.data.eval_batch_size]
        h, z = encoder(prepare_eval(bank.images[rows].to(ctx.device), bank.masks[rows].to(ctx.device)))
        parts.append((h if cfg.knn.feature == "h" else z).float().cpu())
    ctx.state["encoder"] = encoder.cpu()
    ctx.state["memory"] = torch.cat(parts)
    if ctx.is_global_zero:
        save_tensors(ctx.stage_dir("finetune") / MEMORY_FILE, {"memory": ctx.state["memory"]})


class KnnEmbedding:
    """``METHOD`` of the kNN-on-embeddings ablation."""

    name = "knn"
    stages = ("pretrain", "finetune")

    def run_stage(self, stage: str, ctx: RunContext) -> None:
        """Stage 1 as the self-taught detector; "finetune" builds the memory bank."""
        {"pretrain": run_pretrain, "finetune": build_memory}[stage](ctx)

    def load_stage(self, stage: str, ctx: RunContext) -> None:
        """Load a finished stage."""
        if stage == "pretrain":
            load_pretrain(ctx)
        else:
            ctx.state["memory"] = load_tensors(ctx.stage_dir("finetune") / MEMORY_FILE)["memory"]

    def build_scorer(self, ctx: RunContext) -> KnnScorer:
        """Encoder of stage 1 + the memory bank."""
        knn = ctx.config.knn
        return KnnScorer(ctx.state["encoder"], ctx.state["memory"], k=knn.k, chunk_size=knn.chunk_size,
                         feature=knn.feature)


METHOD = KnnEmbedding()
