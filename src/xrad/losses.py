"""Pure loss functions (no state): contrastive pre-training, (multi-sphere) Deep SAD, masked reconstruction.

Every function is a transcription of one equation, pinned by NumPy re-implementations in tests/test_losses.py.
Reduced-precision inputs (fp16/bf16 under autocast) are promoted to float32 before exponentials and sums.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from xrad.errors import ConfigError

__all__ = [
    "info_nce",
    "supervised_contrastive",
    "nearest_center",
    "multisphere_deep_sad",
    "balanced_deep_sad",
    "masked_mse",
    "masked_error_map",
    "reconstruction_scores",
    "RECONSTRUCTION_KINDS",
]

RECONSTRUCTION_KINDS = ("mse", "l1", "topk")


def _f32(t: Tensor) -> Tensor:
    """Promote half/bfloat16 to float32 (softmax and distance sums lose too much precision otherwise)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _pair_logits(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """Cosine-similarity logits of the 2N stacked views / τ, with the diagonal (self-pairs) set to -inf."""
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"the two views must both be (N, D); got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if temperature <= 0:
        raise ConfigError(f"contrastive temperature must be > 0 (got {temperature})")
    p = F.normalize(_f32(torch.cat([z1, z2], dim=0)), dim=1)
    logits = p @ p.T / temperature
    self_mask = torch.eye(logits.shape[0], dtype=torch.bool, device=logits.device)
    # -inf removes k == i from the denominator (the indicator of Eq. 1); exp(-inf) = 0 with finite gradients.
    return logits.masked_fill(self_mask, float("-inf"))


def info_nce(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    """NT-Xent / InfoNCE loss of Eq. 1 (SimCLR), averaged over the 2N anchors.

    ``z1[i]`` and ``z2[i]`` are the embeddings of two augmentations of image i. The rows are L2-normalised
    inside, so the loss is invariant to the scale of z. For anchor a its positive is the other view of the
    same image and the denominator runs over all 2N − 1 other embeddings; the result is
    mean_a −log softmax_a(positive), computed with a stable log-sum-exp (cross-entropy).
    """
    logits = _pair_logits(z1, z2, temperature)
    n = z1.shape[0]
    idx = torch.arange(n, device=logits.device)
    targets = torch.cat([idx + n, idx])  # anchor i's positive is i + N and vice versa
    return F.cross_entropy(logits, targets)


def supervised_contrastive(z1: Tensor, z2: Tensor, labels: Tensor, temperature: float = 0.5) -> Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, L^sup_out), averaged over the 2N anchors.

    Positives of an anchor are all other embeddings with the same label, its own other view included; the
    denominator is the same as in :func:`info_nce`. xrad's use ("pretext task from [36]"): labels 1 for known
    abnormal, 0 otherwise, so every unlabelled/normal image attracts every other. With all labels distinct the
    loss equals :func:`info_nce`. No ``τ/base_τ`` rescaling is applied (Khosla's code default makes it 1).
    """
    logits = _pair_logits(z1, z2, temperature)
    if labels.shape != (z1.shape[0],):
        raise ValueError(f"labels must be (N,) = ({z1.shape[0]},); got {tuple(labels.shape)}")
    lab = torch.cat([labels, labels]).to(logits.device)
    not_self = ~torch.eye(lab.numel(), dtype=torch.bool, device=logits.device)
    positive = (lab[:, None] == lab[None, :]) & not_self
    log_prob = torch.log_softmax(logits, dim=1)
    # where() rather than multiplying by the mask: the diagonal of log_prob is -inf and -inf·0 would be NaN.
    pos_log_prob = torch.where(positive, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
    return -(pos_log_prob / positive.sum(dim=1)).mean()  # every anchor has ≥ 1 positive (its other view)


def nearest_center(z: Tensor, centers: Tensor) -> tuple[Tensor, Tensor]:
    """Squared Euclidean distance of each z (B, D) to its nearest centre (K, D), and that centre's index.

    Squared distances are computed from the differences directly (no sqrt, so the gradient is finite — zero —
    at z == c, and no ||z||² − 2z·c + ||c||² cancellation). Memory is O(B·K·D).
    """
    z = _f32(z)
    diff = z[:, None, :] - centers.to(dtype=z.dtype, device=z.device)[None, :, :]
    sq = diff.pow(2).sum(dim=2)
    d2, index = sq.min(dim=1)
    return d2, index


def multisphere_deep_sad(
    z: Tensor, centers: Tensor, semi_labels: Tensor, eta: float = 1.0, eps: float = 1e-6
) -> Tensor:
    """Data term of Eq. 2 (multi-sphere semi-supervised Deep SAD), averaged over the batch.

    With d² the squared distance of z to its nearest centre and ỹ ∈ {−1, 0, +1} the semi-label
    (0 unlabelled, +1 known normal, −1 known abnormal), each sample contributes
    d² if ỹ = 0 and η·(d² + ε)^ỹ otherwise — η(d² + ε) pulls known normals in, η/(d² + ε) pushes known
    abnormals out (ε keeps it finite at the centre). With a single centre this is Deep SAD (Ruff et al. 2020).
    The λ/2·Σ||W||² term of Eq. 2 is not here: it is the optimiser's weight decay (Adam ``weight_decay``).
    """
    d2, _ = nearest_center(z, centers)
    y = semi_labels.to(device=d2.device, dtype=d2.dtype)
    labelled = eta * torch.pow(d2 + eps, y)
    return torch.where(y == 0, d2, labelled).mean()


def balanced_deep_sad(z: Tensor, centers: Tensor, semi_labels: Tensor, eta: float = 1.0, eps: float = 1e-6) -> Tensor:
    """Multi-sphere Deep SAD with the two populations averaged separately (for patch cells).

    With d² the squared distance of z to its nearest centre,
    L = mean over ỹ ≥ 0 of (d² if ỹ = 0 else η·(d² + ε))  +  η · mean over ỹ = −1 of 1/(d² + ε). A patch
    batch holds thousands of normal cells and a few dozen corrupted ones; averaged together (as
    :func:`multisphere_deep_sad` does) the push on the anomalies would vanish. Either mean is 0 when its
    population is empty.
    """
    d2, _ = nearest_center(z, centers)
    y = semi_labels.to(device=d2.device, dtype=d2.dtype)
    normal = torch.where(y == 0, d2, eta * (d2 + eps))[y >= 0]
    abnormal = eta / (d2[y < 0] + eps)
    zero = d2.sum() * 0.0  # keeps the graph (and the dtype) when a population is empty
    return (normal.mean() if normal.numel() else zero) + (abnormal.mean() if abnormal.numel() else zero)


def _check_kind(kind: str) -> None:
    if kind not in RECONSTRUCTION_KINDS:
        raise ConfigError(
            f"reconstruction score kind {kind!r} is unknown; use one of {', '.join(RECONSTRUCTION_KINDS)}"
        )


def masked_mse(recon: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Σ((recon − target)²·m) / Σm over the whole batch: only body-part pixels count.

    ``mask`` (B, 1, H, W) broadcasts over channels. An all-zero mask gives 0 (nothing to reconstruct),
    not NaN.
    """
    recon, target = _f32(recon), _f32(target)
    m = mask.to(recon.dtype).expand_as(recon)
    num = ((recon - target).pow(2) * m).sum()
    # num is exactly 0 when Σm = 0, so the tiny clamp only turns 0/0 into 0.
    return num / m.sum().clamp_min(1e-12)


def masked_error_map(recon: Tensor, target: Tensor, mask: Tensor, kind: str = "mse") -> Tensor:
    """Per-pixel reconstruction error (B, 1, H, W) inside the mask (0 outside), averaged over channels.

    ``kind`` "mse" and "topk" use the squared error, "l1" the absolute error. Used for heatmaps.
    """
    _check_kind(kind)
    recon, target = _f32(recon), _f32(target)
    diff = recon - target
    err = diff.abs() if kind == "l1" else diff.pow(2)
    return err.mean(dim=1, keepdim=True) * mask.to(err.dtype)


def reconstruction_scores(
    recon: Tensor, target: Tensor, mask: Tensor, kind: str = "mse", top_k_fraction: float = 0.05
) -> Tensor:
    """Per-image anomaly scores (B,) from a reconstruction.

    - ``"mse"``: Σ(e²·m)/Σm per image (the per-image :func:`masked_mse`);
    - ``"l1"``: Σ(|e|·m)/Σm per image;
    - ``"topk"``: mean of the k largest masked squared pixel errors, k = ⌈top_k_fraction·Σm⌉ (at least 1) — a
      small lesion is not averaged away by a large well-reconstructed body part.
    An image with an empty mask scores 0.
    """
    _check_kind(kind)
    err = masked_error_map(recon, target, mask, kind=kind).flatten(1)  # (B, P)
    m = mask.to(err.dtype).flatten(1)
    area = m.sum(dim=1)
    if kind != "topk":
        return err.sum(dim=1) / area.clamp_min(1e-12)
    if not 0.0 < top_k_fraction <= 1.0:
        raise ConfigError(f"top_k_fraction must be in (0, 1] (got {top_k_fraction})")
    k = torch.ceil(top_k_fraction * area).clamp(1, err.shape[1]).long()  # per-image k, (B,)
    # Outside-mask errors are 0 and sort last, so the first k of each sorted row are the top in-mask errors.
    ranked = err.sort(dim=1, descending=True).values.cumsum(dim=1)
    return ranked.gather(1, (k - 1)[:, None]).squeeze(1) / k.to(err.dtype)
