"""Batched, tensor-based online transforms (ISBI Fig. 5), with per-sample parameters and explicit seeds.

Images arrive as uint8 batches ``(B, 1, S, S)`` with binary masks of the same shape (square images from the
preprocessed cache). Augmentation runs on whatever device the batch is on, inside the training step:

- geometry (flips, scaling about the centre, rotation, random resized crop) is composed into **one**
  affine matrix per sample and applied with a single ``affine_grid`` + ``grid_sample`` (bilinear for the
  image, nearest for the mask so masks stay binary; zeros where the source is outside the image);
- intensity (brightness for the anomaly-detection step; brightness/contrast jitter and Gaussian blur for
  the contrastive views) is applied afterwards, then clamped to [0, 1], and the mask is applied last.

Nothing downstream re-normalises intensities, so the jitter is *not* undone (the authors' per-image
min-max after jitter cancelled it; reference-spec §3). All randomness is drawn from the ``torch.Generator``
passed in, which must live on the same device as the batch (``torch.Generator(device="cuda")`` for CUDA
batches; :func:`batch_generator` builds one). Evaluation uses :func:`prepare_eval`, which draws nothing.

Coordinates: ``affine_grid`` matrices map *output* normalised coordinates (x right, y down, in [-1, 1],
``align_corners=False``) to *input* coordinates, so the composed matrix is the inverse of the content
transform followed by the crop box.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from xrad.config import ADAugment, ContrastiveAugment
from xrad.data.model_input import check_batch, mask_float, to_float

# Blur kernels are cut at this many standard deviations (skimage's default truncate is 4; 3 keeps > 99.7 %).
_BLUR_TRUNCATE = 3.0
# Number of random-resized-crop proposals per sample before falling back to the whole image (as torchvision).
_CROP_TRIES = 10


# --------------------------------------------------------------------------------------------- basics


def batch_generator(seed: int, epoch: int, batch_index: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator whose stream depends only on ``(seed, epoch, batch_index)``.

    Hashing (rather than e.g. ``seed + epoch * 1000 + batch``) keeps streams of neighbouring triples
    unrelated, and makes a resumed run replay exactly the augmentations of an uninterrupted one.
    """
    digest = hashlib.sha256(f"xrad-augment:{int(seed)}:{int(epoch)}:{int(batch_index)}".encode()).digest()
    generator = torch.Generator(device=device)
    generator.manual_seed(int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF)
    return generator


def batch_numpy_generator(seed: int, epoch: int, batch_index: int) -> np.random.Generator:
    """The NumPy twin of :func:`batch_generator` (same hashing, its own stream)."""
    digest = hashlib.sha256(f"xrad-numpy:{int(seed)}:{int(epoch)}:{int(batch_index)}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _check_generator(generator: torch.Generator, images: Tensor) -> None:
    # A CPU generator cannot drive CUDA sampling (and vice versa); fail early with a clear message.
    if torch.device(generator.device).type != images.device.type:
        raise ValueError(
            f"generator is on {generator.device} but the batch is on {images.device}; "
            f"create it with batch_generator(..., device=images.device)"
        )


def _uniform(n: int, low: float, high: float, generator: torch.Generator, device: torch.device) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


def _bernoulli(n: int, p: float, generator: torch.Generator, device: torch.device) -> Tensor:
    """Boolean (n,) with P(True) = p (always drawn, so the stream does not depend on p)."""
    return torch.rand(n, generator=generator, device=device) < p


# ------------------------------------------------------------------------------------------- geometry


def affine_matrices(
    hflip: Tensor, vflip: Tensor, scale: Tensor, angle_deg: Tensor, crop: Tensor | None = None
) -> Tensor:
    """Compose per-sample ``affine_grid`` matrices ``(B, 2, 3)`` (output → input coordinates).

    The content transform is: flip, then scale by ``scale`` about the centre (> 1 zooms in), then rotate
    by ``angle_deg`` (positive = counter-clockwise on screen). ``crop`` ``(B, 4)`` = (centre x, centre y,
    width, height) in normalised coordinates of the transformed image (full image: 0, 0, 1, 1 with width
    and height as fractions of the side); the box is resized to the full output.
    """
    batch = scale.shape[0]
    dtype, device = torch.float32, scale.device
    theta = torch.deg2rad(angle_deg.to(dtype))
    cos, sin = torch.cos(theta), torch.sin(theta)
    if crop is None:
        crop = torch.tensor([0.0, 0.0, 1.0, 1.0], device=device).expand(batch, 4)
    cx, cy, w, h = crop.to(dtype).unbind(1)
    # Output u -> point in transformed image p = c + diag(w, h) u.
    box = torch.zeros(batch, 3, 3, dtype=dtype, device=device)
    box[:, 0, 0], box[:, 1, 1], box[:, 0, 2], box[:, 1, 2], box[:, 2, 2] = w, h, cx, cy, 1.0
    # Inverse content transform: input = F · S⁻¹ · R⁻¹ · p. On screen (y down) a counter-clockwise
    # rotation by θ is [[cos, sin], [-sin, cos]]; its inverse is the transpose.
    inv_rot = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
    flips = torch.stack([torch.where(hflip, -1.0, 1.0), torch.where(vflip, -1.0, 1.0)], 1).to(dtype)
    linear = (flips / scale.to(dtype).unsqueeze(1)).unsqueeze(2) * inv_rot
    return torch.bmm(linear, box[:, :2, :])


def apply_affine(
    images: Tensor, masks: Tensor, matrices: Tensor, image_mode: str = "bilinear"
) -> tuple[Tensor, Tensor]:
    """Warp float images (bilinear by default) and masks (nearest, stay 0/1) with one shared sampling grid.

    Output pixels whose source lies outside the image are 0 in both. Inside, the image is sampled with
    border extension rather than zero padding: with zero padding, bilinear samples within half a pixel of
    the edge would blend in black and darken the border of every crop/zoom.
    """
    grid = F.affine_grid(matrices.to(images.dtype), list(images.shape), align_corners=False)
    inside = (grid.abs() <= 1.0).all(dim=-1).unsqueeze(1).to(images.dtype)
    warped = F.grid_sample(images, grid, mode=image_mode, padding_mode="border", align_corners=False) * inside
    warped_mask = F.grid_sample(masks.to(images.dtype), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return warped, warped_mask


def sample_crop_boxes(
    n: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Random-resized-crop boxes ``(n, 4)`` = (centre x, centre y, width, height), normalised.

    Area fraction ~ U[scale], log(width/height) ~ U[log ratio]; the box lies inside the image with its
    position uniform. Each sample takes the first of ``_CROP_TRIES`` proposals that fits, else the whole
    image (torchvision's semantics, without the authors' (top, left, h, w) vs (left, top, right, bottom)
    mix-up). Fully vectorised: all proposals are drawn at once.
    """
    device = torch.device(device)
    area = _uniform(n * _CROP_TRIES, scale[0], scale[1], generator, device).view(n, _CROP_TRIES)
    log_ratio = _uniform(n * _CROP_TRIES, math.log(ratio[0]), math.log(ratio[1]), generator, device)
    aspect = torch.exp(log_ratio).view(n, _CROP_TRIES)
    width, height = torch.sqrt(area * aspect), torch.sqrt(area / aspect)
    fits = (width <= 1.0) & (height <= 1.0)
    first = torch.argmax(fits.to(torch.int8), dim=1)  # index of the first fitting proposal (0 if none)
    any_fit = fits.any(dim=1)
    rows = torch.arange(n, device=device)
    width = torch.where(any_fit, width[rows, first], torch.ones(n, device=device))
    height = torch.where(any_fit, height[rows, first], torch.ones(n, device=device))
    # Centre uniform over positions keeping the box inside [-1, 1] (box half-extent = width in these units).
    cx = (1.0 - width) * (2.0 * torch.rand(n, generator=generator, device=device) - 1.0)
    cy = (1.0 - height) * (2.0 * torch.rand(n, generator=generator, device=device) - 1.0)
    return torch.stack([cx, cy, width, height], dim=1)


# ------------------------------------------------------------------------------------------ intensity


def adjust_brightness_contrast(images: Tensor, masks: Tensor, brightness: Tensor, contrast: Tensor) -> Tensor:
    """Multiply by ``brightness``, then scale about the per-image mean inside the mask by ``contrast``; clamp.

    All factors are per sample ``(B,)``.
    """
    out = images * brightness.view(-1, 1, 1, 1)
    area = masks.sum(dim=(1, 2, 3), keepdim=True)
    mean = (out * masks).sum(dim=(1, 2, 3), keepdim=True) / area.clamp_min(1.0)
    out = mean + (out - mean) * contrast.view(-1, 1, 1, 1)
    return out.clamp_(0.0, 1.0)


def gaussian_blur(images: Tensor, sigma: Tensor) -> Tensor:
    """Separable Gaussian blur with a per-sample ``sigma`` (pixels); sigma <= 0 leaves a sample unchanged.

    Each axis is a weighted sum of shifted copies with per-sample weights: on CPU this is several times
    faster than a grouped convolution with one group per sample, and it only touches the blurred samples.
    Borders are reflected (no dark halo at the image edge).
    """
    active = torch.nonzero(sigma > 0).flatten()
    if active.numel() == 0:
        return images
    height, width = images.shape[-2:]
    chosen = sigma[active].to(images.dtype)
    radius = max(1, min(int(math.ceil(_BLUR_TRUNCATE * float(chosen.max()))), min(height, width) // 2 - 1))
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (offsets.view(1, -1) / chosen.view(-1, 1)) ** 2)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).view(-1, 1, 1, 1, 2 * radius + 1)
    x = images.index_select(0, active)
    padded = F.pad(x, (radius, radius, 0, 0), mode="reflect")
    x = kernel[..., 0] * padded[..., :width]
    for k in range(1, 2 * radius + 1):
        x.addcmul_(kernel[..., k], padded[..., k : k + width])
    padded = F.pad(x, (0, 0, radius, radius), mode="reflect")
    x = kernel[..., 0] * padded[..., :height, :]
    for k in range(1, 2 * radius + 1):
        x.addcmul_(kernel[..., k], padded[..., k : k + height, :])
    out = images.clone()
    out[active] = x
    return out


# ------------------------------------------------------------------------------------------ pipelines


def augment_ad(images: Tensor, masks: Tensor, config: ADAugment, generator: torch.Generator) -> Tensor:
    """Anomaly-detection augmentation: flips, brightness, scale about the centre, rotation, then mask.

    Returns float32 ``(B, 1, S, S)`` in [0, 1], zero outside the (warped) mask.
    """
    return augment_ad_with_masks(images, masks, config, generator)[0]


def augment_ad_with_masks(
    images: Tensor, masks: Tensor, config: ADAugment, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """:func:`augment_ad` that also returns the warped 0/1 masks (float32), for steps that plant
    something inside the body after augmenting (:mod:`xrad.training.corruptions`)."""
    check_batch(images, masks)
    _check_generator(generator, images)
    n, device = images.shape[0], images.device
    hflip = _bernoulli(n, config.hflip, generator, device)
    vflip = _bernoulli(n, config.vflip, generator, device)
    brightness = _uniform(n, *config.brightness, generator, device)
    scale = _uniform(n, *config.scale, generator, device)
    angle = _uniform(n, -config.rotation_deg, config.rotation_deg, generator, device)
    warped, warped_mask = apply_affine(to_float(images), mask_float(masks), affine_matrices(hflip, vflip, scale, angle))
    return (warped * brightness.view(-1, 1, 1, 1)).clamp_(0.0, 1.0) * warped_mask, warped_mask


def _contrastive(images: Tensor, masks: Tensor, config: ContrastiveAugment, generator: torch.Generator) -> Tensor:
    n, device = images.shape[0], images.device
    hflip = _bernoulli(n, config.hflip, generator, device)
    scale = _uniform(n, *config.scale, generator, device)
    angle = _uniform(n, -config.rotation_deg, config.rotation_deg, generator, device)
    crop = sample_crop_boxes(n, config.crop_scale, config.crop_ratio, generator, device)
    jitter = _bernoulli(n, config.jitter_p, generator, device)
    brightness = _uniform(n, 1.0 - config.brightness, 1.0 + config.brightness, generator, device)
    contrast = _uniform(n, 1.0 - config.contrast, 1.0 + config.contrast, generator, device)
    blur = _bernoulli(n, config.blur_p, generator, device)
    sigma = _uniform(n, *config.blur_sigma, generator, device) * (images.shape[-1] / config.blur_reference_px)
    no_vflip = torch.zeros(n, dtype=torch.bool, device=device)
    warped, warped_mask = apply_affine(
        to_float(images), mask_float(masks), affine_matrices(hflip, no_vflip, scale, angle, crop)
    )
    ones = torch.ones(n, device=device)
    out = adjust_brightness_contrast(
        warped, warped_mask, torch.where(jitter, brightness, ones), torch.where(jitter, contrast, ones)
    )
    out = gaussian_blur(out, torch.where(blur, sigma, torch.zeros_like(sigma)))
    # Mask last (after blur, as in Fig. 5) so the blur does not smear the background into the body part.
    return out.clamp_(0.0, 1.0) * warped_mask


def contrastive_views(
    images: Tensor, masks: Tensor, config: ContrastiveAugment, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Two independently augmented views of each image (float32 ``(B, 1, S, S)`` each, masked).

    Both views are produced in one pass over the doubled batch (one ``grid_sample``, one blur).
    """
    check_batch(images, masks)
    _check_generator(generator, images)
    both = _contrastive(torch.cat([images, images]), torch.cat([masks, masks]), config, generator)
    return both[: images.shape[0]], both[images.shape[0] :]
