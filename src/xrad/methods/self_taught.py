"""The self-taught detector: stage 1 contrastive pre-training (Eq. 1), stage 2 multi-sphere Deep SAD "MAD"
(Eq. 2, Algorithm 1). ``finetune.n_spheres: 1`` gives the uni-modal variant (Deep SAD with a mean centre).

Choices that differ from the authors' code (reference-spec §3–§5), and why:

- The whole encoder (backbone and head) is transferred to stage 2; the authors re-initialised the head,
  which discards the 128-d space that stage 1 organised and in which k-means places the centres
  (``finetune.transfer_head: false`` restores their behaviour).
- k-means runs on deterministic (:func:`~xrad.training.augment.prepare_eval`) embeddings of the training
  images with semi-label ≠ −1, in eval mode; validation and test are never augmented.
- Centres, the active-sphere mask and an "initialised" flag are buffers, so checkpoints carry them and a
  resumed run continues with the same spheres. Counting uses ``bincount``; under DDP the per-rank counts
  are summed before pruning so all ranks prune the same spheres.
- Under DDP, InfoNCE negatives are those of each rank's own batch (no cross-rank gather).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from xrad.training.augment import augment_ad, contrastive_views, prepare_eval
from xrad.errors import ConfigError, DataError
from xrad.losses import info_nce, multisphere_deep_sad, nearest_center, supervised_contrastive
from xrad.methods.scorers import SphereScorer
from xrad.methods.spheres import kmeans_centers, mean_center, prune_mask, sphere_counts
from xrad.models.encoder import Encoder, build_encoder
from xrad.models.heads import MLPHead
from xrad.training.context import RunContext
from xrad.training.loaders import train_loader
from xrad.training.module import StageModule, auroc

ENCODER_FILE = "encoder.safetensors"
MODEL_FILE = "model.safetensors"


def save_tensors(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> None:
    """Atomically write a safetensors file (stage outputs; no pickle)."""
    from safetensors.torch import save

    from xrad.utils.atomic import write_bytes

    write_bytes(path, save({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, metadata=metadata))


def load_tensors(path: Path) -> dict[str, Tensor]:
    """Read a safetensors file written by :func:`save_tensors`."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise DataError(f"{path}: stage output missing; re-run the stage (`xrad train --stage ...`)")
    return load_file(str(path))


# ------------------------------------------------------------------------------------------ stage 1
class ContrastiveModule(StageModule):
    """Stage 1: InfoNCE (SimCLR) or supervised-contrastive pretext on two augmented views."""

    def __init__(self, encoder: Encoder, config: Any, metrics_path: Path | None) -> None:
        super().__init__(config, config.pretrain, metrics_path)
        self.encoder = encoder
        self.augment = config.pretrain.augment

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        v1, v2 = contrastive_views(batch["image"], batch["mask"], self.augment, self.augment_generator(batch_idx))
        _, z = self.encoder(torch.cat([v1, v2]))
        z1, z2 = z.chunk(2)
        if self.section.pretext == "supcon":
            loss = supervised_contrastive(z1, z2, (batch["semi_label"] == -1).long(), self.section.temperature)
        else:
            loss = info_nce(z1, z2, self.section.temperature)
        self.record_loss(loss, v1.shape[0])
        return loss


def new_encoder(ctx: RunContext) -> Encoder:
    """A freshly initialised encoder, its weights a function of the run's seed only."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ctx.config.seed)
        return build_encoder(ctx.config.model.head_dims, bias=ctx.config.model.head_bias)


def load_finished(source: str, network: nn.Module, filename: str, must_match: str) -> nn.Module:
    """Load ``pretrain.encoder_from``: a run folder (its ``pretrain/<filename>``) or such a file, into
    ``network``; one-line :class:`ConfigError` when it is missing or was trained with other settings."""
    path = Path(source)
    if path.is_dir():
        path = path / "pretrain" / filename
    if not path.is_file():
        raise ConfigError(f"pretrain.encoder_from: {source} is neither a run folder with a finished pretrain "
                          f"stage nor a {filename} file")
    try:
        network.load_state_dict(load_tensors(path), strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"pretrain.encoder_from: {path} was trained with other settings; match {must_match} "
                          f"({str(exc).splitlines()[0]})") from None
    return network


def _encoder_from_file(source: str, ctx: RunContext) -> Encoder:
    return load_finished(source, new_encoder(ctx), ENCODER_FILE, "model.head_dims and model.head_bias")


def run_pretrain(ctx: RunContext) -> None:
    """Stage 1: train (or load via ``pretrain.encoder_from``) the contrastive encoder → ``state['encoder']``."""
    cfg = ctx.config
    if cfg.pretrain.encoder_from:
        ctx.state["encoder"] = _encoder_from_file(cfg.pretrain.encoder_from, ctx)
    else:
        encoder = new_encoder(ctx)
        if cfg.pretrain.epochs > 0:
            module = ContrastiveModule(encoder, cfg, ctx.stage_dir("pretrain") / "metrics.csv")
            bank = ctx.banks["train"]
            loader = train_loader(bank, list(range(len(bank))), cfg.pretrain.batch_size, cfg.seed, cfg.data.workers)
            ctx.fit("pretrain", module, loader, cfg.pretrain.epochs)
        ctx.state["encoder"] = encoder.cpu().eval()
    if ctx.is_global_zero:
        save_tensors(ctx.stage_dir("pretrain") / ENCODER_FILE, ctx.state["encoder"].state_dict())


def load_pretrain(ctx: RunContext) -> None:
    """Load a finished stage 1."""
    encoder = new_encoder(ctx)
    encoder.load_state_dict(load_tensors(ctx.stage_dir("pretrain") / ENCODER_FILE), strict=True)
    ctx.state["encoder"] = encoder.eval()


def normal_train_indices(ctx: RunContext) -> list[int]:
    """Train rows with semi-label ≠ −1 (unlabelled + known normal): the "normal" data of k-means and kNN."""
    semi = ctx.banks["train"].semi_labels
    indices = (semi != -1).nonzero().flatten().tolist()
    if not indices:
        raise DataError("the train split has no unlabelled or known-normal image; check the split manifest")
    return indices


# ------------------------------------------------------------------------------------------ stage 2
class MADModule(StageModule):
    """Stage 2: multi-sphere semi-supervised Deep SAD with per-epoch pruning of weak spheres."""

    def __init__(self, encoder: Encoder, config: Any, metrics_path: Path | None, ctx: RunContext) -> None:
        super().__init__(config, config.finetune, metrics_path)
        self.encoder = encoder
        self.ctx = ctx
        k, dim = config.finetune.n_spheres, config.model.head_dims[-1]
        self.register_buffer("centers", torch.zeros(k, dim))
        self.register_buffer("active", torch.ones(k, dtype=torch.bool))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        self.augment = config.finetune.augment
        # Not a buffer: DDP re-broadcasts buffers from rank 0 at every forward, which would erase the
        # other ranks' counts. Reset at each epoch start, so checkpoints (taken at epoch ends) need none.
        self._counts = torch.zeros(k, dtype=torch.long)

    # -- centres -----------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        if not bool(self.initialised):
            self.init_centers()

    @torch.no_grad()
    def init_centers(self) -> None:
        """k-means (or the mean, for one sphere) of deterministic normal train embeddings; rank 0 computes,
        everyone receives the same centres."""
        fin = self.section
        centers = torch.zeros_like(self.centers)
        n_found = torch.zeros((), dtype=torch.long)
        trainer = self._trainer  # None when called outside fit (finetune.epochs = 0)
        if trainer is None or trainer.is_global_zero:
            bank = self.ctx.banks["train"]
            idx = torch.tensor(normal_train_indices(self.ctx))
            z = self.eval_outputs(bank.images[idx], bank.masks[idx], lambda x: self.encoder(x)[1],
                                  self.config.data.eval_batch_size).numpy()
            if fin.n_spheres == 1:
                found = mean_center(z, min_abs=fin.center_min_abs)
            else:
                found = kmeans_centers(z, fin.n_spheres, seed=self.config.seed, min_abs=fin.center_min_abs)
            centers[: len(found)] = torch.from_numpy(found).to(centers)
            n_found = torch.tensor(len(found))
        if trainer is not None and trainer.world_size > 1:
            centers = trainer.strategy.broadcast(centers.cpu(), src=0).to(self.device)
            n_found = trainer.strategy.broadcast(n_found, src=0)
        self.centers.copy_(centers)
        self.active.copy_(torch.arange(len(self.active), device=self.active.device) < int(n_found))
        self.initialised.fill_(True)

    def active_centers(self) -> tuple[Tensor, Tensor]:
        """(indices of the surviving centres, their coordinates)."""
        index = self.active.nonzero().flatten()
        return index, self.centers[index]

    # -- training ----------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._counts = torch.zeros(len(self.active), dtype=torch.long)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        images, masks, semi = batch["image"], batch["mask"], batch["semi_label"]
        if self.section.augment.enabled:
            x = augment_ad(images, masks, self.augment, self.augment_generator(batch_idx))
        else:
            x = prepare_eval(images, masks)
        _, z = self.encoder(x)
        index, centers = self.active_centers()
        loss = multisphere_deep_sad(z, centers, semi, eta=self.section.eta, eps=self.section.eps)
        with torch.no_grad():  # Algorithm 1 line 16: normal samples per centre, from this epoch's passes
            _, nearest = nearest_center(z.detach(), centers)
            normal = semi != -1
            # bincount on the CPU: CUDA's bincount refuses to run under deterministic mode.
            self._counts += sphere_counts(index[nearest[normal]].cpu(), len(self.active))
        self.record_loss(loss, x.shape[0])
        return loss

    def epoch_end(self) -> dict[str, float]:
        """Prune (after the warm-up), then validation AUROC with the surviving spheres."""
        counts = self.trainer.strategy.reduce(self._counts.to(self.device), reduce_op="sum")
        if self.current_epoch >= self.section.prune_warmup:
            index, _ = self.active_centers()
            keep = prune_mask(counts[index], self.section.gamma)
            self.active[index[~keep.to(index.device)]] = False
        metrics = {"n_spheres": float(self.active.sum())}
        valid = self.ctx.banks.get("valid")
        if valid is not None and len(valid) and self.trainer.is_global_zero:
            scores = self.eval_outputs(valid.images, valid.masks, self.score, self.config.data.eval_batch_size)
            metrics["valid_auroc"] = auroc(valid.labels.numpy(), scores.numpy())
        return metrics

    def score(self, x: Tensor) -> Tensor:
        """Distance to the nearest surviving centre."""
        _, z = self.encoder(x)
        sq, _ = nearest_center(z, self.active_centers()[1])
        return sq.clamp_min(0).sqrt()


def _stage2_encoder(ctx: RunContext) -> Encoder:
    encoder = copy.deepcopy(ctx.state["encoder"])
    if not ctx.config.finetune.transfer_head:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.config.seed + 1)
            encoder.head = MLPHead(ctx.config.model.head_dims, bias=ctx.config.model.head_bias)
    return encoder


def run_finetune(ctx: RunContext) -> None:
    """Stage 2: MAD fine-tuning → ``state['encoder_ad']``, ``state['centers']`` (surviving), ``state['active']``."""
    cfg = ctx.config
    if "encoder" not in ctx.state:
        raise ConfigError("the finetune stage needs a finished pretrain stage in this run folder; "
                          "run `xrad train --stage pretrain` (or all) first, or set pretrain.encoder_from")
    module = MADModule(_stage2_encoder(ctx), cfg, ctx.stage_dir("finetune") / "metrics.csv", ctx)
    bank = ctx.banks["train"]
    if cfg.finetune.epochs > 0:
        loader = train_loader(bank, list(range(len(bank))), cfg.finetune.batch_size, cfg.seed, cfg.data.workers)
        ctx.fit("finetune", module, loader, cfg.finetune.epochs)
    else:
        module.init_centers()
    module = module.cpu().eval()
    ctx.state.update(encoder_ad=module.encoder, centers=module.centers.clone(), active=module.active.clone())
    if ctx.is_global_zero:
        tensors = {f"encoder.{k}": v for k, v in module.encoder.state_dict().items()}
        tensors.update(centers=module.centers, active=module.active.to(torch.uint8))
        save_tensors(ctx.stage_dir("finetune") / MODEL_FILE, tensors)


def load_finetune(ctx: RunContext) -> None:
    """Load a finished stage 2."""
    tensors = load_tensors(ctx.stage_dir("finetune") / MODEL_FILE)
    encoder = new_encoder(ctx)
    encoder.load_state_dict({k[8:]: v for k, v in tensors.items() if k.startswith("encoder.")}, strict=True)
    ctx.state.update(encoder_ad=encoder.eval(), centers=tensors["centers"], active=tensors["active"].bool())


class SelfTaught:
    """``METHOD`` of the self-taught detector (and, with one sphere, of its uni-modal variant)."""

    name = "self_taught"
    stages = ("pretrain", "finetune")

    def run_stage(self, stage: str, ctx: RunContext) -> None:
        """Train one stage."""
        {"pretrain": run_pretrain, "finetune": run_finetune}[stage](ctx)

    def load_stage(self, stage: str, ctx: RunContext) -> None:
        """Load one finished stage."""
        {"pretrain": load_pretrain, "finetune": load_finetune}[stage](ctx)

    def build_scorer(self, ctx: RunContext) -> SphereScorer:
        """Encoder of stage 2 + the surviving centres."""
        return SphereScorer(ctx.state["encoder_ad"], ctx.state["centers"][ctx.state["active"].bool()])


METHOD = SelfTaught()
