"""The patch form of the self-taught detector's stage 2 (``finetune.level: patch``): multi-sphere Deep SAD on
the embeddings of feature-map cells instead of whole images.

Why: an image embedding is dominated by anatomy and pose; a plate or a fracture line changes a few cells.
Here every cell of the stage-1 encoder's layer2+layer3 map (:func:`xrad.models.patch.patch_features`) is
embedded by a 1×1-convolution head into the sphere space; cells of normal training images are pulled to their
nearest centre, and — Deep SAD's use of labelled anomalies — cells of local synthetic corruptions planted in
those images (:mod:`xrad.training.corruptions`) are pushed away, as is the farthest cell of each known
abnormal training image (where its anomaly most likely is). Centres are k-means of normal cell embeddings and
are pruned as in Algorithm 1, counting normal cells. The image score is the mean of the ``top_k`` largest
cell distances inside the body; the heatmap is the distance map.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from xrad.config import Config
from xrad.evaluation.metrics import auroc
from xrad.losses import balanced_deep_sad, nearest_center
from xrad.methods.base import ProvidesEncoder
from xrad.methods.multisphere.centres import kmeans_centers, mean_center, prune_mask, sphere_counts
from xrad.methods.multisphere.patch_scorer import PatchSphereNet, PatchSphereScorer
from xrad.methods.stage_io import MODEL_FILE, load_tensors, save_tensors
from xrad.models.patch import cell_mask
from xrad.training.augment import augment_ad_with_masks
from xrad.training.context import RunContext
from xrad.training.corruptions import corrupt_batch
from xrad.training.loaders import train_loader
from xrad.training.module import StageModule

MAX_KMEANS_CELLS = 20_000  # k-means on a seeded subsample of the normal cells: bounded time and memory


@dataclass
class PatchSpheresResult:
    """The fine-tuned cell network, every centre and which of them survived pruning."""

    net: PatchSphereNet
    centers: Tensor
    active: Tensor
    top_k: int

    def scorer(self, config: Config) -> PatchSphereScorer:
        """The cell network + the surviving centres."""
        return PatchSphereScorer(self.net, self.centers[self.active.bool()], self.top_k)


def new_net(config: Config, previous: ProvidesEncoder) -> PatchSphereNet:
    """Stage 1's backbone with a fresh cell head (seeded by the run's seed)."""
    import copy

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed + 1)
        return PatchSphereNet(
            copy.deepcopy(previous.encoder.backbone), config.model.head_dims[1:], bias=config.model.head_bias
        )


class PatchMADModule(StageModule):
    """Cell-level multi-sphere Deep SAD with synthetic and known anomalies, per-epoch pruning."""

    # Buffers (registered in __init__), so checkpoints carry them.
    centers: Tensor  # (K, D)
    active: Tensor  # (K,) bool
    initialised: Tensor  # () bool

    def __init__(self, net: PatchSphereNet, config: Config, metrics_path: Path | None, ctx: RunContext) -> None:
        super().__init__(config, config.finetune, metrics_path)
        self.net = net
        self.ctx = ctx
        k, dim = config.finetune.n_spheres, config.model.head_dims[-1]
        self.register_buffer("centers", torch.zeros(k, dim))
        self.register_buffer("active", torch.ones(k, dtype=torch.bool))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        self._counts = torch.zeros(k, dtype=torch.long)

    def on_fit_start(self) -> None:
        if not bool(self.initialised):
            self.init_centers()

    @torch.no_grad()
    def init_centers(self) -> None:
        """k-means (or the mean) of normal training cells' embeddings, in eval mode on clean inputs."""
        from xrad.data.model_input import prepare_eval

        bank, fin = self.ctx.banks["train"], self.section
        rows = torch.tensor(self.ctx.normal_train_rows())
        was_training = self.training
        self.eval()
        cells = []
        for start in range(0, len(rows), self.config.data.eval_batch_size):
            part = rows[start : start + self.config.data.eval_batch_size]
            x = prepare_eval(bank.images[part].to(self.device), bank.masks[part].to(self.device))
            z = self.net(x)
            inside = cell_mask(x, z.shape[-1])
            cells.append(z.permute(0, 2, 3, 1)[inside].float().cpu())
        self.train(was_training)
        z = torch.cat(cells)
        if len(z) > MAX_KMEANS_CELLS:
            pick = torch.randperm(len(z), generator=torch.Generator().manual_seed(self.config.seed))[:MAX_KMEANS_CELLS]
            z = z[pick]
        found = (
            mean_center(z.numpy(), min_abs=fin.center_min_abs)
            if fin.n_spheres == 1
            else kmeans_centers(z.numpy(), fin.n_spheres, seed=self.config.seed, min_abs=fin.center_min_abs)
        )
        self.centers.zero_()
        self.centers[: len(found)] = torch.from_numpy(found).to(self.centers)
        self.active.copy_(torch.arange(len(self.active), device=self.active.device) < len(found))
        self.initialised.fill_(True)

    def active_centers(self) -> tuple[Tensor, Tensor]:
        index = self.active.nonzero().flatten()
        return index, self.centers[index]

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._counts = torch.zeros(len(self.active), dtype=torch.long)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        fin = self.section
        clean, body = augment_ad_with_masks(
            batch["image"], batch["mask"], fin.augment, self.augment_generator(batch_idx)
        )
        known = batch["semi_label"] == -1
        corrupted, changed = corrupt_batch(
            clean[~known], body[~known], self.numpy_generator(batch_idx), tuple(fin.corruptions)
        )
        images = torch.cat([clean, corrupted])
        z = self.net(images)  # (N, D, g, g)
        cells = z.shape[-1]
        inside = cell_mask(images, cells)
        labels = torch.zeros(inside.shape, dtype=torch.long, device=z.device)
        hit = F.adaptive_avg_pool2d(changed, cells)[:, 0] > fin.cell_fraction
        labels[len(clean) :][hit] = -1
        index, centers = self.active_centers()
        if known.any():  # a known abnormal image: its farthest cell is where the anomaly most likely is
            with torch.no_grad():
                d2, _ = nearest_center(z[: len(clean)][known].permute(0, 2, 3, 1).reshape(-1, z.shape[1]), centers)
                d2 = d2.view(-1, cells * cells).masked_fill(~inside[: len(clean)][known].flatten(1), -1.0)
                far = d2.argmax(dim=1)
            flat = labels[: len(clean)][known].flatten(1)
            flat[:] = 2  # excluded, except the farthest cell
            flat[torch.arange(len(far)), far] = -1
            labels[: len(clean)][known] = flat.view(-1, cells, cells)
        keep = inside & (labels != 2)
        flat_z = z.permute(0, 2, 3, 1)[keep]
        flat_y = labels[keep]
        loss = balanced_deep_sad(flat_z, centers, flat_y, eta=fin.eta, eps=fin.eps)
        with torch.no_grad():
            _, nearest = nearest_center(flat_z.detach(), centers)
            self._counts += sphere_counts(index[nearest[flat_y == 0]].cpu(), len(self.active))
        self.record_loss(loss, images.shape[0])
        return loss

    def epoch_end(self) -> dict[str, float]:
        counts = self.trainer.strategy.reduce(self._counts.to(self.device), reduce_op="sum")
        if self.current_epoch >= self.section.prune_warmup:
            index, _ = self.active_centers()
            keep = prune_mask(counts[index], self.section.gamma)
            self.active[index[~keep.to(index.device)]] = False
        metrics = {"n_spheres": float(self.active.sum())}
        valid = self.ctx.banks.get("valid")
        if valid is not None and len(valid) and self.trainer.is_global_zero:
            scorer = PatchSphereScorer(self.net, self.active_centers()[1], self.section.top_k)
            scores = self.eval_outputs(
                valid.images, valid.masks, lambda x: scorer.score(x)[0], self.config.data.eval_batch_size
            )
            metrics["valid_auroc"] = auroc(valid.labels.numpy(), scores.numpy())
        return metrics


def run(ctx: RunContext, stage: str, previous: ProvidesEncoder) -> PatchSpheresResult:
    """Cell-level MAD fine-tuning of the previous stage's backbone."""
    cfg = ctx.config
    module = PatchMADModule(new_net(cfg, previous), cfg, ctx.metrics_path(stage), ctx)
    bank = ctx.banks["train"]
    if cfg.finetune.epochs > 0:
        loader = train_loader(bank, list(range(len(bank))), cfg.finetune.batch_size, cfg.seed, cfg.data.workers)
        ctx.fit(stage, module, loader, cfg.finetune.epochs)
    else:
        module.init_centers()
    module = module.cpu().eval()
    result = PatchSpheresResult(module.net, module.centers.clone(), module.active.clone(), cfg.finetune.top_k)
    if ctx.is_global_zero:
        tensors = {f"net.{k}": v for k, v in module.net.state_dict().items()}
        tensors.update(centers=module.centers, active=module.active.to(torch.uint8))
        save_tensors(ctx.stage_dir(stage) / MODEL_FILE, tensors)
    return result


def load(ctx: RunContext, stage: str, previous: ProvidesEncoder) -> PatchSpheresResult:
    """The finished stage's cell network and centres."""
    tensors = load_tensors(ctx.stage_dir(stage) / MODEL_FILE)
    net = new_net(ctx.config, previous)
    net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")}, strict=True)
    return PatchSpheresResult(net.eval(), tensors["centers"], tensors["active"].bool(), ctx.config.finetune.top_k)
