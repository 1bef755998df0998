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
from xrad.losses import balanced_deep_sad, nearest_center
from xrad.methods.base import ProvidesEncoder
from xrad.methods.multisphere.patch_scorer import PatchSphereNet, PatchSphereScorer
from xrad.methods.multisphere.sphere_module import SphereModule
from xrad.methods.stage_io import MODEL_FILE, load_tensors, save_tensors
from xrad.models.patch import cell_mask
from xrad.training.augment import augment_ad_with_masks
from xrad.training.context import RunContext
from xrad.training.corruptions import corrupt_batch
from xrad.training.loaders import train_loader

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


class PatchMADModule(SphereModule):
    """Cell-level multi-sphere Deep SAD with synthetic and known anomalies, per-epoch pruning."""

    def __init__(self, net: PatchSphereNet, config: Config, metrics_path: Path | None, ctx: RunContext) -> None:
        super().__init__(config, metrics_path, ctx)
        self.net = net

    @torch.no_grad()
    def init_centers(self) -> None:
        """k-means (or the mean) of normal training cells' embeddings, in eval mode on clean inputs."""
        from xrad.data.model_input import prepare_eval

        bank = self.ctx.banks["train"]
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
        found = self.find_centers(z.numpy())
        centers = torch.zeros_like(self.centers)
        centers[: len(found)] = torch.from_numpy(found).to(centers)
        self.set_centers(centers, len(found))

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        fin = self.section
        clean, body = augment_ad_with_masks(
            batch["image"], batch["mask"], fin.augment, self.augment_generator(batch_idx)
        )
        known = batch["semi_label"] == -1
        if fin.corruptions:
            corrupted, changed = corrupt_batch(
                clean[~known], body[~known], self.numpy_generator(batch_idx), tuple(fin.corruptions)
            )
        else:  # the ablation: Deep SAD on the cells of the images as they are (known anomalies only)
            corrupted, changed = clean[:0], body[:0]
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
        self.count_normals(flat_z[flat_y == 0], index, centers)
        self.record_loss(loss, images.shape[0])
        return loss

    def epoch_end(self) -> dict[str, float]:
        scorer = PatchSphereScorer(self.net, self.active_centers()[1], self.section.top_k)
        return self.prune_and_validate(lambda x: scorer.score(x)[0])


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
