"""Pure loss functions (no state): contrastive pre-training, (multi-sphere) Deep SAD, masked reconstruction,
SALAD's memory-bank losses (instance discrimination, aggregation) and its Eq. 4 weighted-kNN score, and the
adversarial losses of the GAN detectors (DCGAN, BiGAN/ALI, α-GAN, the one-class GAN).

Every function is a transcription of one equation, pinned by NumPy re-implementations in tests/test_losses.py.
Reduced-precision inputs (fp16/bf16 under autocast) are promoted to float32 before exponentials and sums.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from xrad.config.sections import is_box_width
from xrad.errors import ConfigError, DataError

__all__ = [
    "info_nce",
    "supervised_contrastive",
    "nearest_center",
    "multisphere_deep_sad",
    "balanced_deep_sad",
    "masked_mse",
    "masked_error_map",
    "smooth_error_map",
    "reconstruction_scores",
    "RECONSTRUCTION_KINDS",
    "masked_l1",
    "masked_reconstruction_loss",
    "gaussian_kld",
    "vae_loss",
    "instance_discrimination",
    "aggregation_loss",
    "salad_loss",
    "memory_update",
    "arccos_knn_score",
    "SALAD_SCORE_FORMULAS",
    "discriminator_loss",
    "generator_loss",
    "bigan_encoder_generator_loss",
    "alpha_gan_discriminator_loss",
    "alpha_gan_generator_loss",
    "alpha_gan_encoder_loss",
    "real_probability",
]

# Pixel error (squared or absolute) × aggregation (mean over the mask, or mean of its top k pixels).
RECONSTRUCTION_KINDS = ("mse", "l1", "topk", "l1_topk")


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


def _check_smooth(smooth: int) -> None:
    if not is_box_width(smooth):  # the config's rule: a scorer rebuilt from an artefact is checked alike
        raise ConfigError(f"smooth must be 0 (off) or an odd box width in pixels (got {smooth})")


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


def smooth_error_map(err: Tensor, mask: Tensor, smooth: int) -> Tensor:
    """Box-smoothed per-pixel error (B, 1, H, W) inside the mask, 0 outside.

    At an in-mask pixel: the mean error of the in-mask pixels of the ``smooth`` × ``smooth`` window centred on
    it, i.e. box(e·m) / box(m). Dividing by the smoothed mask keeps the zeros outside the body part out of the
    average, so the rim of the body part is not pulled down. ``smooth`` is an odd width in pixels; 0 (or 1) is
    no smoothing (err·m). A top-k mean of the smoothed map rewards errors that cover an area (a lesion) over
    isolated hot pixels (noise, edges).
    """
    _check_smooth(smooth)
    m = mask.to(err.dtype)
    if smooth <= 1:
        return err * m
    pad = smooth // 2
    # avg_pool2d's 1/smooth² (zero padding counted) is the same in numerator and denominator: it cancels.
    num = F.avg_pool2d(err * m, smooth, stride=1, padding=pad)
    den = F.avg_pool2d(m, smooth, stride=1, padding=pad)
    # An in-mask pixel has den ≥ 1/smooth² (itself), so the clamp only guards the outside, zeroed by m.
    return num / den.clamp_min(1e-12) * m


def masked_error_map(recon: Tensor, target: Tensor, mask: Tensor, kind: str = "mse", smooth: int = 0) -> Tensor:
    """Per-pixel reconstruction error (B, 1, H, W) inside the mask (0 outside), averaged over channels.

    ``kind`` "mse" and "topk" use the squared error, "l1" and "l1_topk" the absolute error; ``smooth`` > 0
    box-smooths it inside the mask (:func:`smooth_error_map`). Used for heatmaps and image scores.
    """
    _check_kind(kind)
    recon, target = _f32(recon), _f32(target)
    diff = recon - target
    err = diff.abs() if kind.startswith("l1") else diff.pow(2)
    return smooth_error_map(err.mean(dim=1, keepdim=True), mask, smooth)


def reconstruction_scores(
    recon: Tensor,
    target: Tensor,
    mask: Tensor,
    kind: str = "mse",
    top_k_fraction: float = 0.05,
    top_k_pixels: int = 0,
    smooth: int = 0,
) -> Tensor:
    """Per-image anomaly scores (B,) from a reconstruction.

    - ``"mse"``: Σ(e²·m)/Σm per image (the per-image :func:`masked_mse`);
    - ``"l1"``: Σ(|e|·m)/Σm per image;
    - ``"topk"`` / ``"l1_topk"``: mean of the k largest masked squared / absolute pixel errors — a small lesion
      is not averaged away by a large well-reconstructed body part. k is ``top_k_pixels`` when it is > 0 (a
      fixed count: Davletshina et al. use 200), else ⌈top_k_fraction·Σm⌉ (the fraction form); k is at least
      1 and at most Σm (an image whose body part is smaller than k pixels gets its mean error).
    ``smooth`` > 0 first box-smooths the pixel error inside the mask (:func:`smooth_error_map`, an odd width
    in pixels), so the top k are the k worst *neighbourhoods*; the mean kinds then average the smoothed map.
    0 leaves the error as it is. An image with an empty mask scores 0.
    """
    _check_kind(kind)
    err = masked_error_map(recon, target, mask, kind=kind, smooth=smooth).flatten(1)  # (B, P)
    m = mask.to(err.dtype).flatten(1)
    area = m.sum(dim=1)
    if not kind.endswith("topk"):
        return err.sum(dim=1) / area.clamp_min(1e-12)
    if top_k_pixels < 0:
        raise ConfigError(f"top_k_pixels must be ≥ 0 (0: use top_k_fraction; got {top_k_pixels})")
    if top_k_pixels > 0:
        k = torch.minimum(area, torch.full_like(area, float(top_k_pixels)))
    else:
        if not 0.0 < top_k_fraction <= 1.0:
            raise ConfigError(f"top_k_fraction must be in (0, 1] (got {top_k_fraction})")
        k = torch.ceil(top_k_fraction * area)
    k = k.clamp(1, err.shape[1]).long()  # per-image k, (B,)
    # Outside-mask errors are 0 and sort last, so the first k of each sorted row are the top in-mask errors.
    ranked = err.sort(dim=1, descending=True).values.cumsum(dim=1)
    return ranked.gather(1, (k - 1)[:, None]).squeeze(1) / k.to(err.dtype)


# ------------------------------------------------------------------------------------------------ VAE
def gaussian_kld(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(μ, diag σ²) ‖ N(0, I)) per sample (B,): −½ Σ_j (1 + log σ²_j − μ_j² − σ²_j) (Kingma & Welling,
    App. B), the VAE's latent term and one of its image scores (Davletshina et al.). ``logvar`` is log σ²."""
    if mu.shape != logvar.shape or mu.ndim != 2:
        raise ValueError(f"mu and logvar must both be (B, D); got {tuple(mu.shape)} and {tuple(logvar.shape)}")
    mu, logvar = _f32(mu), _f32(logvar)
    return -0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)


def vae_loss(
    recon: Tensor, target: Tensor, mask: Tensor, mu: Tensor, logvar: Tensor, kld_weight: float = 1.0
) -> Tensor:
    """The VAE's training objective with the masked reconstruction loss of Davletshina et al.:
    :func:`masked_mse` + β · mean_b KLD_b / P, with P the pixels of one image (H·W·C).

    Dividing the KLD by P puts it on the per-pixel scale of the masked MSE, so β = 1 keeps the ratio of the
    usual summed-error ELBO (Σ_i (x_i − x̂_i)² + KLD) whatever the image size.
    """
    if kld_weight < 0:
        raise ConfigError(f"the VAE's kld_weight must be ≥ 0 (got {kld_weight})")
    pixels = target[0].numel()
    return masked_mse(recon, target, mask) + kld_weight * gaussian_kld(mu, logvar).mean() / pixels


# ---------------------------------------------------------------------------------------------- SALAD
def masked_l1(recon: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Σ(|recon − target|·m) / Σm over the whole batch (the L1 form of :func:`masked_mse`)."""
    recon, target = _f32(recon), _f32(target)
    m = mask.to(recon.dtype).expand_as(recon)
    return ((recon - target).abs() * m).sum() / m.sum().clamp_min(1e-12)


def masked_reconstruction_loss(recon: Tensor, target: Tensor, mask: Tensor, kind: str = "mse") -> Tensor:
    """L_rec of SALAD's Eq. 3: :func:`masked_mse` (``"mse"``, the paper) or :func:`masked_l1` (``"l1"``, the
    authors' code)."""
    if kind == "mse":
        return masked_mse(recon, target, mask)
    if kind == "l1":
        return masked_l1(recon, target, mask)
    raise ConfigError(f"reconstruction loss {kind!r} is unknown; use mse or l1")


def _bank_log_probs(z: Tensor, memory: Tensor, temperature: float) -> Tensor:
    """log p_ij (B, N) of Eq. 1: log softmax over the bank of z_iᵀm_j / τ."""
    if temperature <= 0:
        raise ConfigError(f"memory-bank temperature must be > 0 (got {temperature})")
    if z.ndim != 2 or memory.ndim != 2 or z.shape[1] != memory.shape[1]:
        raise ValueError(f"z {tuple(z.shape)} and memory {tuple(memory.shape)} must be (B, D) and (N, D)")
    z = _f32(z)
    return torch.log_softmax(z @ memory.to(dtype=z.dtype, device=z.device).T / temperature, dim=1)


def instance_discrimination(z: Tensor, memory: Tensor, index: Tensor, temperature: float = 0.1) -> Tensor:
    """L_ss of SALAD's Eq. 1 (instance discrimination over the memory bank, Wu et al. 2018).

    p_ij = exp(z_iᵀm_j/τ) / Σ_k exp(z_iᵀm_k/τ) over the N bank entries; image i's own slot ``index[i]`` holds
    the moving average of its earlier (augmented) embeddings, so it stands for AUG_i. Returns
    −(1/B) Σ_i log p_{i,index[i]}: the sum of Eq. 1 divided by the batch size, as the authors' criterion does
    (so λ weighs the same whatever the batch size). z and the bank are expected L2-normalised (not enforced).
    """
    log_p = _bank_log_probs(z, memory, temperature)
    return -log_p.gather(1, index.to(log_p.device).long()[:, None]).mean()


def aggregation_loss(z: Tensor, memory: Tensor, neighbours: Tensor, temperature: float = 0.1) -> Tensor:
    """L_agg of SALAD's Eq. 2 for the prototypical samples of a batch (the rows of ``z``).

    ``neighbours`` (B, k) are bank indices of each sample's neighbourhood N_k (the caller decides what it holds:
    xrad passes the sample's own slot and its k nearest bank entries). Returns
    −(1/B) Σ_i log Σ_{j∈N_k(i)} p_ij with p_ij as in :func:`instance_discrimination`, via log-sum-exp. An empty
    batch gives 0 (with a graph).
    """
    if z.shape[0] == 0:
        return z.sum() * 0.0
    log_p = _bank_log_probs(z, memory, temperature)
    picked = log_p.gather(1, neighbours.to(log_p.device).long())
    return -torch.logsumexp(picked, dim=1).mean()


def salad_loss(reconstruction: Tensor, instance: Tensor, aggregation: Tensor, lam: float = 0.25) -> Tensor:
    """SALAD's Eq. 3: L = L_rec + λ(L_ss + L_agg); an ablation passes a zero tensor for the term it drops."""
    return reconstruction + lam * (instance + aggregation)


def memory_update(memory: Tensor, index: Tensor, z: Tensor, momentum: float = 0.5) -> Tensor:
    """The bank after one batch: m_i ← normalise((1 − t)·m_i + t·z_i) for the rows ``index`` (t = ``momentum``);
    other rows unchanged. Returns a new tensor (``memory`` is not modified)."""
    if not 0.0 <= momentum <= 1.0:
        raise ConfigError(f"memory momentum t must be in [0, 1] (got {momentum})")
    out = memory.clone()
    rows = index.to(memory.device).long()
    mixed = (1.0 - momentum) * memory[rows] + momentum * z.detach().to(memory.dtype)
    out[rows] = F.normalize(mixed, dim=1)
    return out


SALAD_SCORE_FORMULAS = ("paper", "mean_angle")


def check_query_bank(queries: Tensor, memory: Tensor, bank: str, holds: str) -> None:
    """Refuse an empty or non-(M, D) ``memory`` with a :class:`DataError` naming ``bank`` and what it should
    hold, and queries whose dimension differs (a programming error: :class:`ValueError`)."""
    if memory.ndim != 2 or memory.shape[0] == 0:
        raise DataError(f"{bank} is empty or not (M, D) (shape {tuple(memory.shape)}); it needs {holds}")
    if queries.ndim != 2 or queries.shape[1] != memory.shape[1]:
        raise ValueError(f"queries {tuple(queries.shape)} and memory {tuple(memory.shape)} dimensions differ")


def arccos_knn_score(
    queries: Tensor,
    memory: Tensor,
    k: int = 100,
    formula: str = "paper",
    query_chunk: int = 256,
    memory_chunk: int = 65_536,
) -> Tensor:
    """SALAD's Eq. 4: A(x_i) = (1/K) Σ_{k≤K} w_ik, w_ik = arccos d(z_i, m_k) / Σ_{j≤N} arccos d(z_i, m_j).

    d is the cosine similarity (both sides normalised here), clamped to [−1, 1] before arccos (a rounding
    overshoot past ±1 would give NaN); the K terms are the K nearest bank entries (smallest angles; K capped at
    N). ``formula="mean_angle"`` is the authors' code instead: the mean of the K smallest angles divided by π
    (no division by the sum over the bank). Queries and bank are walked in chunks with a running sum and a
    running top-K, so peak memory is O(query_chunk × (memory_chunk + K)) whatever N is. Float32 or better.
    Returns (Q,).
    """
    if formula not in SALAD_SCORE_FORMULAS:
        raise ConfigError(f"SALAD score formula {formula!r} is unknown; use one of {SALAD_SCORE_FORMULAS}")
    if k < 1 or query_chunk < 1 or memory_chunk < 1:
        raise ConfigError(f"k and the chunk sizes must be ≥ 1 (got k={k}, {query_chunk}, {memory_chunk})")
    check_query_bank(queries, memory, "the SALAD memory bank", "the embeddings of the normal training images")
    dtype = torch.promote_types(torch.promote_types(queries.dtype, memory.dtype), torch.float32)
    k = min(int(k), memory.shape[0])
    out = []
    for start in range(0, queries.shape[0], query_chunk):
        q = F.normalize(queries[start : start + query_chunk].to(device=memory.device, dtype=dtype), dim=1)
        total = torch.zeros(q.shape[0], dtype=dtype, device=q.device)
        nearest = torch.empty(q.shape[0], 0, dtype=dtype, device=q.device)
        for m_start in range(0, memory.shape[0], memory_chunk):
            m = F.normalize(memory[m_start : m_start + memory_chunk].to(dtype), dim=1)
            angles = torch.arccos((q @ m.T).clamp(-1.0, 1.0))
            total = total + angles.sum(dim=1)
            merged = torch.cat([nearest, angles], dim=1)
            nearest = merged.topk(min(k, merged.shape[1]), dim=1, largest=False).values
        if formula == "mean_angle":
            out.append(nearest.mean(dim=1) / math.pi)
        else:  # Σ_j arccos = 0 only when every bank entry coincides with the query: the score is then 0.
            out.append(nearest.sum(dim=1) / (k * total.clamp_min(torch.finfo(dtype).tiny)))
    if not out:
        return torch.zeros(0, dtype=dtype, device=memory.device)
    return torch.cat(out)


# ------------------------------------------------------------------------------------------------ GANs
# Every adversarial term is written with logits, in the numerically stable BCE-with-logits form
# (−log σ(l) = softplus(−l), −log(1 − σ(l)) = softplus(l)), and averaged over its batch.
def _real(logits: Tensor) -> Tensor:
    """−mean log σ(l): the BCE of logits labelled "real" (1)."""
    return F.softplus(-_f32(logits)).mean()


def _fake(logits: Tensor) -> Tensor:
    """−mean log(1 − σ(l)): the BCE of logits labelled "fake" (0)."""
    return F.softplus(_f32(logits)).mean()


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """The discriminator's BCE of Goodfellow et al.: −E log D(real) − E log(1 − D(fake)), D = σ(logit).

    DCGAN's image discriminator, BiGAN/ALI's joint one (real = D(x, E(x)), fake = D(G(z), z)) and α-GAN's
    code discriminator (real = C(z) for prior samples z, fake = C(E(x))) all minimise this form.
    """
    return _real(real_logits) + _fake(fake_logits)


def generator_loss(fake_logits: Tensor) -> Tensor:
    """The non-saturating generator loss −E log D(G(z)) (Goodfellow et al.'s practical form, DCGAN's)."""
    return _real(fake_logits)


def bigan_encoder_generator_loss(real_pair_logits: Tensor, fake_pair_logits: Tensor) -> Tensor:
    """BiGAN/ALI's encoder + generator loss: the joint discriminator's labels inverted,
    −E log(1 − D(x, E(x))) − E log D(G(z), z) (the non-saturating form of Donahue et al. / Dumoulin et al.)."""
    return _fake(real_pair_logits) + _real(fake_pair_logits)


def alpha_gan_discriminator_loss(real_logits: Tensor, recon_logits: Tensor, sample_logits: Tensor) -> Tensor:
    """α-GAN's image discriminator (Rosca et al. 2017): real images against both kinds of generated ones,
    −E log D(x) − E log(1 − D(G(E(x)))) − E log(1 − D(G(z)))."""
    return _real(real_logits) + _fake(recon_logits) + _fake(sample_logits)


def alpha_gan_generator_loss(
    recon_logits: Tensor, sample_logits: Tensor, reconstruction: Tensor, weight: float = 1.0
) -> Tensor:
    """α-GAN's generator loss: λ·L_rec − E log D(G(E(x))) − E log D(G(z)) (non-saturating), where
    ``reconstruction`` is the (masked) reconstruction term L_rec of G(E(x)) and λ = ``weight``."""
    return weight * reconstruction + _real(recon_logits) + _real(sample_logits)


def alpha_gan_encoder_loss(code_logits: Tensor, reconstruction: Tensor, weight: float = 1.0) -> Tensor:
    """α-GAN's encoder loss: λ·L_rec − E log C(E(x)) — the code discriminator C plays the part of the VAE's KL
    term, pulling the codes towards the prior."""
    return weight * reconstruction + _real(code_logits)


def real_probability(logits: Tensor) -> Tensor:
    """σ(l) in float64: the probability a discriminator gives "real" (the GAN detectors' image score is
    1 − this, computed as σ(−l) so that confident "real" logits do not round to exactly 1)."""
    return torch.sigmoid(logits.double())
