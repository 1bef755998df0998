"""SALAD's training stage: the autoencoder of :mod:`xrad.models.salad` and a memory bank of one unit vector per
training image, trained progressively (pre-training, then rounds of Eq. 3) in one resumable Lightning fit.

Resume is exact: the bank, the round's prototypical samples and their neighbourhoods are buffers of the
LightningModule, so they travel in ``checkpoints/last.ckpt`` with the weights and Adam's state; a round's
choice is recomputed only at the round's first epoch, from the bank as it then is. Batches and augmentations
are functions of (seed, epoch, batch) as everywhere in xrad.

Differences from the authors' code (reference-spec §7.2), and why: L_ss and L_agg are summed as Eq. 3 writes
(theirs gives a sample one or the other); the reconstruction loss is the masked MSE of the paper (L1 an
option); Adam's betas are the paper's (0.5, 0.999); the bank starts as random unit vectors as the paper says;
nothing is selected on the test set (``valid_auroc`` is only recorded); arccos is taken of clamped cosines.
The stage writes ``train/model.safetensors`` (the whole autoencoder) and ``train/memory.safetensors`` (the
bank, the bank rows it belongs to and their semi-labels).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor

from xrad.config import Config
from xrad.data.model_input import prepare_eval
from xrad.errors import ConfigError, DataError
from xrad.evaluation.metrics import auroc
from xrad.losses import (
    aggregation_loss,
    arccos_knn_score,
    instance_discrimination,
    masked_reconstruction_loss,
    memory_update,
    salad_loss,
)
from xrad.methods.autoencoder.scorer import input_support
from xrad.methods.base import Scorer
from xrad.methods.knn.patch_scorer import PatchKnnScorer, build_patch_memory
from xrad.methods.salad.bank import nearest_rows, prototypical_rows, random_unit_bank
from xrad.methods.salad.config import SaladConfig
from xrad.methods.salad.scorer import SaladScorer
from xrad.methods.stage_io import MODEL_FILE, load_tensors, save_tensors
from xrad.models.resnet import ResNet18Backbone
from xrad.models.salad import ResNetLatentEncoder, SaladNet, build_salad_net
from xrad.training.augment import augment_ad
from xrad.training.context import RunContext
from xrad.training.loaders import train_loader
from xrad.training.module import StageModule

MEMORY_FILE = "memory.safetensors"
PATCH_MEMORY_FILE = "patch_memory.safetensors"


def architecture(config: Config) -> dict[str, Any]:
    """The arguments that rebuild the encoder (stored with the scorer)."""
    salad: SaladConfig = config.section("salad")
    return {
        "network": salad.network,
        "image_size": config.data.image_size,
        "latent_dim": salad.latent_dim,
        "width": salad.conv_width,
    }


@dataclass
class SaladResult:
    """The trained autoencoder, its bank (rows of the train bank ``rows``, with their semi-labels) and, for
    ``level: patch``, the PatchCore bank of normal training cells."""

    net: SaladNet
    memory: Tensor
    rows: Tensor
    semi_labels: Tensor
    patch_memory: Tensor | None = None

    def normal_memory(self) -> Tensor:
        """The bank without the entries of known anomalies (discarded at scoring, as the paper says)."""
        return self.memory[self.semi_labels != -1]

    def scorer(self, config: Config) -> Scorer:
        """Eq. 4 over the normal bank entries, or PatchCore on the trained backbone (``level: patch``)."""
        salad: SaladConfig = config.section("salad")
        if salad.level == "patch":
            if self.patch_memory is None:
                raise DataError("SALAD's patch memory bank is missing; re-run its train stage")
            return PatchKnnScorer(_backbone(self.net), self.patch_memory, salad.patch_top_k, salad.patch_smooth)
        return SaladScorer(
            self.net.encoder, self.normal_memory(), architecture(config), salad.k, salad.formula, salad.chunk_size
        )


def _backbone(net: SaladNet) -> ResNet18Backbone:
    """The ResNet-18 backbone of the ``resnet18`` network (what the patch score reads)."""
    if not isinstance(net.encoder, ResNetLatentEncoder):
        raise ConfigError("salad.level: patch needs salad.network: resnet18")
    return net.encoder.backbone


def new_net(config: Config) -> SaladNet:
    """A freshly initialised SALAD autoencoder; its weights depend on the run's seed only."""
    salad: SaladConfig = config.section("salad")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return build_salad_net(
            salad.network, config.data.image_size, salad.latent_dim, salad.conv_width, salad.decoder_channels
        )


class SaladModule(StageModule):
    """Eq. 3 with the memory bank; pre-training epochs, then rounds with prototypical samples."""

    memory: Tensor  # (N, D) the bank, one unit vector per training row
    prototypical: Tensor  # (N,) bool: this round's B_ps
    neighbourhood: Tensor  # (N, 1 + k_max) own slot, then the nearest bank entries (this round)
    round_index: Tensor  # () the round the two above belong to (0: none yet)
    position: Tensor  # (rows of the train bank,) bank row -> memory row (−1: not trained)
    normal: Tensor  # (N,) bool: semi-label ≠ −1

    def __init__(
        self,
        net: SaladNet,
        config: Config,
        metrics_path: Path | None,
        ctx: RunContext,
        rows: list[int],
        memory: Tensor,
        semi_labels: Tensor,
    ) -> None:
        salad: SaladConfig = config.section("salad")
        super().__init__(config, salad, metrics_path)
        self.salad = salad
        self.net = net
        self.ctx = ctx
        n = len(rows)
        width = 1 + min(self.salad.neighbours_in(max(1, self.salad.rounds)), n - 1)
        self.register_buffer("memory", memory.detach().clone().float())
        self.register_buffer("prototypical", torch.zeros(n, dtype=torch.bool))
        self.register_buffer("neighbourhood", torch.arange(n)[:, None].repeat(1, width))
        self.register_buffer("round_index", torch.zeros((), dtype=torch.long))
        position = torch.full((len(ctx.banks["train"]),), -1, dtype=torch.long)
        position[torch.tensor(rows)] = torch.arange(n)
        self.register_buffer("position", position, persistent=False)
        self.register_buffer("normal", semi_labels != -1, persistent=False)
        self._pending: tuple[Tensor, Tensor] | None = None

    # -- rounds ------------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        round_ = self.salad.round_of(self.current_epoch)
        if round_ >= 1 and int(self.round_index) != round_:
            self.start_round(round_)

    @torch.no_grad()
    def start_round(self, round_: int) -> None:
        """Pick round ``round_``'s prototypical samples and their neighbourhoods from the bank as it is now."""
        s = self.salad
        chosen = prototypical_rows(self.memory, s.temperature, min(1.0, round_ * s.prototype_fraction))
        rows = chosen.nonzero().flatten()
        k = self.neighbourhood.shape[1] - 1
        self.neighbourhood[:] = torch.arange(len(self.memory), device=self.memory.device)[:, None]
        if k > 0:
            self.neighbourhood[rows, 1:] = nearest_rows(self.memory, rows, k)
        self.prototypical.copy_(chosen)
        self.round_index.fill_(round_)

    # -- steps -------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        s = self.salad
        images, masks = batch["image"], batch["mask"]
        if s.augment.enabled:
            x = augment_ad(images, masks, s.augment, self.augment_generator(batch_idx))
        else:
            x = prepare_eval(images, masks)
        index = self.position[batch["index"].to(self.position.device)]
        round_ = s.round_of(self.current_epoch)
        if s.reconstruction:
            recon, z = self.net(x)
            l_rec = masked_reconstruction_loss(recon, x, input_support(x), s.reconstruction_loss)
        else:  # without L_rec the decoder is not run (nothing would train it)
            z = self.net.encode(x)
        zero = z.sum() * 0.0
        if not s.reconstruction:
            l_rec = zero
        l_ss = zero
        if s.instance and (round_ >= 1 or s.warmup_instance):
            l_ss = instance_discrimination(z, self.memory, index, s.temperature)
        l_agg = zero
        if s.aggregation and round_ >= 1:
            chosen = self.prototypical[index]
            size = 1 + min(s.neighbours_in(round_), self.neighbourhood.shape[1] - 1)
            l_agg = aggregation_loss(z[chosen], self.memory, self.neighbourhood[index[chosen], :size], s.temperature)
        loss = salad_loss(l_rec, l_ss, l_agg, s.lam)
        self._pending = (index, z.detach())
        self.record_loss(loss, x.shape[0])
        return loss

    @torch.no_grad()
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """After the optimiser step: m_i ← normalise((1 − t)m_i + t·z_i) for the batch (every rank's)."""
        if self._pending is None:
            return
        index, z = self._pending
        self._pending = None
        if self.trainer.world_size > 1:
            index = cast(Tensor, self.all_gather(index)).flatten(0, 1)
            z = cast(Tensor, self.all_gather(z)).flatten(0, 1)
        self.memory.copy_(memory_update(self.memory, index, z, self.salad.momentum))

    # -- validation --------------------------------------------------------------------------------
    def epoch_end(self) -> dict[str, float]:
        valid = self.ctx.banks.get("valid")
        if valid is None or not len(valid) or not self.trainer.is_global_zero or not bool(self.normal.any()):
            return {}
        bank = self.memory[self.normal.to(self.memory.device)]
        s = self.salad

        def score(x: Tensor) -> Tensor:
            return arccos_knn_score(self.net.encode(x), bank, k=s.k, formula=s.formula, query_chunk=s.chunk_size)

        scores = self.eval_outputs(valid.images, valid.masks, score, self.config.data.eval_batch_size)
        return {"valid_auroc": auroc(valid.labels.numpy(), scores.numpy())}


def train_rows(ctx: RunContext) -> list[int]:
    """Every train row (known anomalies train like the rest), or the normal ones with ``exclude_known_abnormal``."""
    if ctx.config.section("salad").exclude_known_abnormal:
        return ctx.normal_train_rows()
    return list(range(len(ctx.banks["train"])))


def run(ctx: RunContext, stage: str, previous: Any = None) -> SaladResult:
    """Train SALAD (or one of its ablations) and save the autoencoder and the bank."""
    cfg = ctx.config
    salad: SaladConfig = cfg.section("salad")
    bank = ctx.banks["train"]
    rows = train_rows(ctx)
    if len(rows) < 2:
        raise DataError("SALAD needs at least two training images for its memory bank")
    net = new_net(cfg)
    memory = random_unit_bank(len(rows), salad.latent_dim, cfg.seed)
    semi = bank.semi_labels[torch.tensor(rows)].clone()
    if salad.epochs > 0:
        module = SaladModule(net, cfg, ctx.metrics_path(stage), ctx, rows, memory, semi)
        loader = train_loader(
            bank, rows, salad.batch_size, cfg.seed, cfg.data.workers, where="SALAD's rows of the train split"
        )
        ctx.fit(stage, module, loader, salad.epochs)
        memory = module.memory.detach().cpu().clone()
    net = net.cpu().eval()
    patch_memory = None
    if salad.level == "patch":
        normal = [r for r, y in zip(rows, semi.tolist()) if y != -1]
        patch_memory = build_patch_memory(
            _backbone(net),
            bank.images[normal],
            bank.masks[normal],
            size=salad.patch_memory_size,
            smooth=salad.patch_smooth,
            seed=cfg.seed,
            batch_size=cfg.data.eval_batch_size,
        )
    result = SaladResult(net, memory, torch.tensor(rows), semi, patch_memory)
    if ctx.is_global_zero:
        save_tensors(ctx.stage_dir(stage) / MODEL_FILE, net.state_dict())
        save_tensors(
            ctx.stage_dir(stage) / MEMORY_FILE,
            {"memory": memory, "rows": result.rows, "semi_labels": semi},
        )
        if patch_memory is not None:
            save_tensors(ctx.stage_dir(stage) / PATCH_MEMORY_FILE, {"memory": patch_memory})
    return result


def load(ctx: RunContext, stage: str, previous: Any = None) -> SaladResult:
    """The finished autoencoder and bank."""
    net = new_net(ctx.config)
    net.load_state_dict(load_tensors(ctx.stage_dir(stage) / MODEL_FILE), strict=True)
    saved = load_tensors(ctx.stage_dir(stage) / MEMORY_FILE)
    patch_path = ctx.stage_dir(stage) / PATCH_MEMORY_FILE
    patch_memory = load_tensors(patch_path)["memory"] if patch_path.is_file() else None
    return SaladResult(net.eval(), saved["memory"], saved["rows"], saved["semi_labels"], patch_memory)
