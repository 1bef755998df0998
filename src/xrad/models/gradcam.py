"""Grad-CAM (Selvaraju et al. 2017) of an anomaly score: the default heatmap of every scorer.

The block's activations weighted by the spatial mean of the score's gradient, ReLU'd, upsampled bilinearly
to the input size. Detectors with a better map of their own (reconstruction error, patch scores) override
:meth:`xrad.methods.base.Scorer.heatmap` instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CamScorer", "cam_layer", "grad_cam"]


class HasModules(Protocol):
    """A network whose submodules can be listed by name (any ``nn.Module``)."""

    def named_modules(self) -> Iterator[tuple[str, nn.Module]]: ...


class CamScorer(HasModules, Protocol):
    """What Grad-CAM reads of a scorer (an ``nn.Module`` with ``score``, as :class:`xrad.methods.base.Scorer`)."""

    def score(self, images: Tensor) -> tuple[Tensor, Tensor | None]: ...


def cam_layer(scorer: HasModules, layer: str | nn.Module | None = None) -> nn.Module:
    """The module whose output Grad-CAM weighs: ``layer`` (dotted name or module), else the last module
    named ``layer4`` (ResNet's last block), else the last ``Conv2d``."""
    if isinstance(layer, nn.Module):
        return layer
    modules: dict[str, nn.Module] = dict(scorer.named_modules())
    if isinstance(layer, str):
        if layer not in modules:
            raise ValueError(f"no module {layer!r} in {type(scorer).__name__}")
        return modules[layer]
    named = [m for name, m in modules.items() if name.split(".")[-1] == "layer4"]
    convs = [m for m in modules.values() if isinstance(m, nn.Conv2d)]
    if named:
        return named[-1]
    if convs:
        return convs[-1]
    raise ValueError(f"{type(scorer).__name__} has no convolutional layer for Grad-CAM; override heatmap()")


def grad_cam(scorer: CamScorer, images: Tensor, layer: str | nn.Module | None = None) -> Tensor:
    """Grad-CAM of ``scorer.score(images)`` on ``layer``: non-negative maps ``(B, 1, H, W)`` (not normalised).

    Each image's score depends on its own activations only (eval mode), so one backward pass of the
    summed scores gives every image's gradients. When the score carries no gradient (e.g. computed under
    ``torch.no_grad``), the map falls back to the channel-mean activation of ``layer``; when the ReLU'd map of
    an image is empty (every location lowers the score to first order), its absolute value is used.
    """
    target = cam_layer(scorer, layer)
    captured: dict[str, Tensor] = {}
    handle = target.register_forward_hook(lambda _m, _i, out: captured.__setitem__("a", out))
    try:
        with torch.enable_grad():
            # Gradients flow from the input, so frozen parameters (requires_grad=False) still work.
            x = images.detach().clone().requires_grad_(True)
            scores = scorer.score(x)[0]
            act = captured["a"]
            grads = None
            if scores.requires_grad:
                (grads,) = torch.autograd.grad(scores.sum(), act, allow_unused=True)
    finally:
        handle.remove()
    if grads is None:
        # The score is not differentiable (computed under no_grad, or independent of this layer): fall back
        # to the channel-mean activation map, which still shows what the backbone responds to.
        weights = torch.ones_like(act[:, :, :1, :1]) / act.shape[1]
    else:
        weights = grads.mean(dim=(2, 3), keepdim=True)
    raw = (weights * act).sum(dim=1, keepdim=True).detach()
    cam = F.relu(raw)
    # With a distance score every location can push the score down to first order (the map is all negative);
    # plain Grad-CAM then shows nothing, so such images get the magnitude of each location's contribution.
    empty = cam.flatten(1).amax(dim=1) <= 0
    cam = torch.where(empty[:, None, None, None], raw.abs(), cam)
    return F.interpolate(cam, size=tuple(images.shape[-2:]), mode="bilinear", align_corners=False)
