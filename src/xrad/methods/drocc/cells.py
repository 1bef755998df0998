"""DROCC on the cells of a trained backbone (``drocc_synthetic``, stage ``finetune``).

DROCC from pixels stays at chance on the phantoms (``drocc_patch_cpu`` 0.52): a ResNet-18 trained from scratch
on normal images against small pixel perturbations has no reason to learn what a plate or a gap looks like.
The DROCC paper also applies its objective to feature vectors (its tabular experiments, an MLP). Here the
vectors are the layer2+layer3 cells of the synthetic-anomaly detector's backbone, which do see local defects
(the kNN and subspace read-outs of the same cells reach 0.79); DROCC decides where normal cells end.

The backbone is frozen. The stage embeds the normal training images once (semi-label ≠ −1, deterministic
inputs, eval mode), samples at most ``max_patches`` body cells, standardises them and trains the MLP
(:func:`fit_cell_classifier`) in memory: seconds to a minute on 2 cores, so it is not checkpointed — an
interrupted run redoes this stage only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.nn.functional import binary_cross_entropy_with_logits as bce

from xrad.config import Config
from xrad.data.model_input import prepare_eval
from xrad.errors import ConfigError
from xrad.methods.drocc.annulus import normalised_ascent_step, project_to_annulus
from xrad.methods.drocc.config import DroccCellsConfig
from xrad.methods.drocc.scorer import DroccCellScorer, cell_head
from xrad.methods.stage_io import load_tensors, save_tensors
from xrad.models.patch import body_cell_vectors, sample_cells
from xrad.models.resnet import ResNet18Backbone
from xrad.training.context import RunContext
from xrad.utils.atomic import write_csv

CELLS_FILE = "drocc_cells.safetensors"
RADIUS_QUERIES = 2_000  # normal vectors whose nearest-other distance sets the annulus scale (median)


@dataclass
class CellFit:
    """What :func:`fit_cell_classifier` learns: the MLP, the standardisation, the annulus radius it used and
    the mean training loss of each epoch."""

    head: torch.nn.Sequential
    mean: Tensor
    std: Tensor
    radius: float
    losses: list[float] = field(default_factory=list)


def median_nearest_distance(vectors: Tensor, seed: int, queries: int = RADIUS_QUERIES) -> float:
    """Median over (at most ``queries``, seeded) rows of their distance to the nearest *other* row."""
    pick = sample_cells(torch.arange(len(vectors))[:, None], queries, seed)[:, 0]
    nearest = []
    for start in range(0, len(pick), 256):
        rows = pick[start : start + 256]
        d = torch.cdist(vectors[rows], vectors)
        d[torch.arange(len(rows)), rows] = float("inf")  # not its own neighbour
        nearest.append(d.amin(dim=1))
    return float(torch.quantile(torch.cat(nearest).double(), 0.5))


def fit_cell_classifier(vectors: Tensor, section: DroccCellsConfig, seed: int) -> CellFit:
    """Train DROCC's MLP on normal ``vectors`` (N, C): BCE(logit(z), 1) + lam·BCE(logit(z + h), 0), h found by
    normalised ascent on BCE(logit(z + h), 0) (the points the classifier still calls normal) and projected onto
    the annulus r ≤ ‖h‖ ≤ gamma·r after every step; z are the standardised vectors and
    r = ``section.radius`` × their median nearest-other distance. Deterministic for ``seed`` on the CPU."""
    if len(vectors) < 2:
        raise ConfigError("DROCC on cells needs at least two normal body cells; check the train split")
    vectors = vectors.float()
    mean, std = vectors.mean(dim=0), vectors.std(dim=0).clamp_min(1e-6)
    z_all = (vectors - mean) / std
    radius = section.radius * max(median_nearest_distance(z_all, seed), 1e-6)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = cell_head(section.hidden, vectors.shape[1])
    optimiser = torch.optim.Adam(head.parameters(), lr=section.lr, weight_decay=section.weight_decay)
    losses = []
    for _ in range(section.epochs):
        order = torch.randperm(len(z_all), generator=generator)
        total = 0.0
        for start in range(0, len(order), section.batch_size):
            z = z_all[order[start : start + section.batch_size]]
            loss = bce(head(z)[:, 0], torch.ones(len(z)))
            if section.lam > 0:
                h = project_to_annulus(torch.randn(z.shape, generator=generator), radius, section.gamma)
                for _ in range(section.ascent_num_steps):
                    h = h.detach().requires_grad_(True)
                    (grad,) = torch.autograd.grad(bce(head(z + h)[:, 0], torch.zeros(len(z))), h)
                    step = normalised_ascent_step(h.detach(), grad, section.ascent_step_size * radius)
                    h = project_to_annulus(step, radius, section.gamma)
                loss = loss + section.lam * bce(head(z + h.detach())[:, 0], torch.zeros(len(z)))
            optimiser.zero_grad()
            grads = torch.autograd.grad(loss, list(head.parameters()))
            for parameter, grad in zip(head.parameters(), grads, strict=True):
                parameter.grad = grad
            optimiser.step()
            total += float(loss.detach()) * len(z)
        losses.append(total / len(z_all))
    return CellFit(head.eval(), mean, std, radius, losses)


@dataclass
class DroccCellsResult:
    """The frozen backbone and DROCC's MLP on its standardised cells."""

    backbone: ResNet18Backbone
    fit: CellFit

    def scorer(self, config: Config) -> DroccCellScorer:
        """softplus(−logit) per body cell, top-k mean per image."""
        section: DroccCellsConfig = config.section("drocc_cells")
        return DroccCellScorer(self.backbone, self.fit.head, self.fit.mean, self.fit.std, section.top_k)


def _backbone_of(previous: Any, stage: str) -> ResNet18Backbone:
    backbone = getattr(previous, "backbone", None)
    if not isinstance(backbone, ResNet18Backbone):
        raise ConfigError(
            f"the {stage} stage needs a finished stage before it that trained a backbone (the synthetic "
            "detector's patch classifier); run `xrad train --stage pretrain` (or all) first"
        )
    return backbone


@torch.no_grad()
def normal_cells(ctx: RunContext, backbone: ResNet18Backbone, max_patches: int) -> Tensor:
    """A seeded sample of at most ``max_patches`` body-cell vectors of the normal training images."""
    bank, rows = ctx.banks["train"], torch.tensor(ctx.normal_train_rows())
    backbone = backbone.eval().to(ctx.device)
    parts = []
    for start in range(0, len(rows), ctx.config.data.eval_batch_size):
        batch = rows[start : start + ctx.config.data.eval_batch_size]
        x = prepare_eval(bank.images[batch].to(ctx.device), bank.masks[batch].to(ctx.device))
        parts.append(body_cell_vectors(backbone, x).float().cpu())
    backbone.cpu()
    return sample_cells(torch.cat(parts), max_patches, ctx.config.seed)


def run(ctx: RunContext, stage: str, previous: Any = None) -> DroccCellsResult:
    """Embed the normal training cells with the previous stage's frozen backbone and train DROCC's MLP."""
    section: DroccCellsConfig = ctx.config.section("drocc_cells")
    backbone = _backbone_of(previous, stage)
    fit = fit_cell_classifier(normal_cells(ctx, backbone, section.max_patches), section, ctx.config.seed)
    if ctx.is_global_zero:
        import pandas as pd

        tensors = {f"head.{k}": v for k, v in fit.head.state_dict().items()}
        tensors.update(mean=fit.mean, std=fit.std, radius=torch.tensor([fit.radius]))
        save_tensors(ctx.stage_dir(stage) / CELLS_FILE, tensors)
        epochs = range(len(fit.losses))
        write_csv(
            ctx.metrics_path(stage), pd.DataFrame({"epoch": epochs, "train_loss": fit.losses, "radius": fit.radius})
        )
    return DroccCellsResult(backbone.eval(), fit)


def load(ctx: RunContext, stage: str, previous: Any = None) -> DroccCellsResult:
    """The finished MLP and standardisation, on the previous stage's backbone."""
    section: DroccCellsConfig = ctx.config.section("drocc_cells")
    tensors = load_tensors(ctx.stage_dir(stage) / CELLS_FILE)
    head = cell_head(section.hidden, tensors["mean"].shape[0])
    head.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("head.")}, strict=True)
    fit = CellFit(head.eval(), tensors["mean"], tensors["std"], float(tensors["radius"][0]))
    return DroccCellsResult(_backbone_of(previous, stage).eval(), fit)
