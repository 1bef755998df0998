"""Loss functions vs plain NumPy transcriptions of the paper's equations (lightly's reference tests)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xrad.errors import ConfigError
from xrad.losses import (
    balanced_deep_sad,
    gaussian_kld,
    info_nce,
    masked_error_map,
    masked_mse,
    multisphere_deep_sad,
    nearest_center,
    reconstruction_scores,
    smooth_error_map,
    supervised_contrastive,
    vae_loss,
)


# ---------------------------------------------------------------- NumPy references
def np_info_nce(z1: np.ndarray, z2: np.ndarray, tau: float) -> float:
    """Eq. 1 term by term: for each of the 2N anchors, -log(exp(sim(i, pos)/τ) / Σ_{k≠i} exp(sim(i, k)/τ))."""
    p = np.concatenate([z1, z2]).astype(np.float64)
    n2 = len(p)
    total = 0.0
    for i in range(n2):
        pos = (i + n2 // 2) % n2
        sim = [p[i] @ p[k] / (np.linalg.norm(p[i]) * np.linalg.norm(p[k])) for k in range(n2)]
        denom = sum(np.exp(sim[k] / tau) for k in range(n2) if k != i)
        total += -np.log(np.exp(sim[pos] / tau) / denom)
    return total / n2


def np_supcon(z1: np.ndarray, z2: np.ndarray, labels: np.ndarray, tau: float) -> float:
    """Khosla et al. L^sup_out: mean_i -1/|P(i)| Σ_{p∈P(i)} log(exp(s_ip/τ) / Σ_{a≠i} exp(s_ia/τ))."""
    p = np.concatenate([z1, z2]).astype(np.float64)
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    lab = np.concatenate([labels, labels])
    n2 = len(p)
    total = 0.0
    for i in range(n2):
        denom = sum(np.exp(p[i] @ p[a] / tau) for a in range(n2) if a != i)
        pos = [j for j in range(n2) if j != i and lab[j] == lab[i]]
        total += -np.mean([np.log(np.exp(p[i] @ p[j] / tau) / denom) for j in pos])
    return total / n2


def np_msdsad(z: np.ndarray, c: np.ndarray, y: np.ndarray, eta: float, eps: float) -> float:
    """Eq. 2's data term (reference-spec §5.2), one sample at a time."""
    out = []
    for zi, yi in zip(z.astype(np.float64), y):
        d2 = min(float(np.sum((zi - ck) ** 2)) for ck in c.astype(np.float64))
        out.append(d2 if yi == 0 else eta * (d2 + eps) ** float(yi))
    return float(np.mean(out))


# ---------------------------------------------------------------- InfoNCE / SupCon
@pytest.mark.parametrize("n,d,tau", [(1, 3, 0.5), (4, 8, 0.5), (7, 16, 0.1), (12, 5, 1.0)])
def test_info_nce_matches_numpy(n: int, d: int, tau: float) -> None:
    rng = np.random.default_rng(n * 100 + d)
    z1, z2 = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    got = info_nce(torch.tensor(z1), torch.tensor(z2), temperature=tau).item()
    assert got == pytest.approx(np_info_nce(z1, z2, tau), rel=1e-9, abs=1e-12)


def test_info_nce_scale_invariant_and_symmetric() -> None:
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 10, generator=g), torch.randn(6, 10, generator=g)
    base = info_nce(z1, z2)
    assert torch.allclose(info_nce(3.7 * z1, 0.01 * z2), base, atol=1e-5)
    assert torch.allclose(info_nce(z2, z1), base, atol=1e-6)
    # Aligned views give a lower loss than random ones.
    assert info_nce(z1, z1 + 0.01 * z2) < base


def test_info_nce_stable_at_low_temperature_and_grad_finite() -> None:
    g = torch.Generator().manual_seed(1)
    z1 = torch.randn(8, 4, generator=g, requires_grad=True)
    loss = info_nce(z1, z1.detach() * 2.0, temperature=0.01)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z1.grad).all()


def test_info_nce_loss_decreases_under_optimisation() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(16, 20, generator=g)
    net = torch.nn.Linear(20, 8)
    torch.nn.init.normal_(net.weight, generator=g)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    noise1, noise2 = 0.3 * torch.randn(16, 20, generator=g), 0.3 * torch.randn(16, 20, generator=g)
    losses = []
    for _ in range(20):
        loss = info_nce(net(x + noise1), net(x + noise2), temperature=0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05


@pytest.mark.parametrize("n,d,tau", [(4, 8, 0.5), (9, 6, 0.2)])
def test_supcon_matches_numpy(n: int, d: int, tau: float) -> None:
    rng = np.random.default_rng(7 + n)
    z1, z2 = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    labels = rng.integers(0, 2, size=n)
    got = supervised_contrastive(torch.tensor(z1), torch.tensor(z2), torch.tensor(labels), tau).item()
    assert got == pytest.approx(np_supcon(z1, z2, labels, tau), rel=1e-9)


def test_supcon_with_distinct_labels_is_info_nce() -> None:
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(10, 7, generator=g), torch.randn(10, 7, generator=g)
    sup = supervised_contrastive(z1, z2, torch.arange(10), temperature=0.3)
    assert torch.allclose(sup, info_nce(z1, z2, temperature=0.3), atol=1e-6)
    # With shared labels there are more positives, so the value changes.
    same = supervised_contrastive(z1, z2, torch.zeros(10, dtype=torch.long), temperature=0.3)
    assert not torch.allclose(same, sup)


def test_contrastive_rejects_bad_inputs() -> None:
    with pytest.raises(ConfigError):
        info_nce(torch.ones(2, 3), torch.ones(2, 3), temperature=0.0)
    with pytest.raises(ValueError):
        info_nce(torch.ones(2, 3), torch.ones(3, 3))


# ---------------------------------------------------------------- Deep SAD
def test_nearest_center_matches_brute_force() -> None:
    rng = np.random.default_rng(4)
    z, c = rng.normal(size=(30, 5)), rng.normal(size=(7, 5))
    d2, idx = nearest_center(torch.tensor(z), torch.tensor(c))
    brute = ((z[:, None, :] - c[None]) ** 2).sum(-1)
    np.testing.assert_allclose(d2.numpy(), brute.min(1), rtol=1e-12)
    np.testing.assert_array_equal(idx.numpy(), brute.argmin(1))


@pytest.mark.parametrize("n_centers", [1, 5])
@pytest.mark.parametrize("eta", [1.0, 2.5])
def test_multisphere_deep_sad_matches_numpy(n_centers: int, eta: float) -> None:
    rng = np.random.default_rng(10 * n_centers + int(eta))
    z, c = rng.normal(size=(40, 6)), rng.normal(size=(n_centers, 6))
    y = np.array([0, 1, -1] * 13 + [-1])
    got = multisphere_deep_sad(torch.tensor(z), torch.tensor(c), torch.tensor(y), eta=eta, eps=1e-6).item()
    assert got == pytest.approx(np_msdsad(z, c, y, eta, 1e-6), rel=1e-10)


def np_balanced_deep_sad(z, c, y, eta, eps):
    """The two-population form, written out: mean over ỹ ≥ 0 of the pull + η · mean over ỹ = −1 of the push."""
    d2 = ((z[:, None, :] - c[None, :, :]) ** 2).sum(-1).min(1)
    pull = [d if yi == 0 else eta * (d + eps) for d, yi in zip(d2, y) if yi >= 0]
    push = [eta / (d + eps) for d, yi in zip(d2, y) if yi == -1]
    return (np.mean(pull) if pull else 0.0) + (np.mean(push) if push else 0.0)


@pytest.mark.parametrize("labels", [[0, 1, -1] * 13 + [-1], [0] * 40, [-1] * 40, [0] * 39 + [-1]])
def test_balanced_deep_sad_matches_numpy(labels: list[int]) -> None:
    rng = np.random.default_rng(len(set(labels)))
    z, c, y = rng.normal(size=(40, 6)), rng.normal(size=(3, 6)), np.array(labels)
    got = balanced_deep_sad(torch.tensor(z), torch.tensor(c), torch.tensor(y), eta=2.0, eps=1e-6).item()
    assert got == pytest.approx(np_balanced_deep_sad(z, c, y, 2.0, 1e-6), rel=1e-10)


def test_deep_sad_label_semantics() -> None:
    c = torch.zeros(1, 2)
    z = torch.tensor([[3.0, 4.0]])  # d² = 25
    assert multisphere_deep_sad(z, c, torch.tensor([0]), eta=2.0).item() == pytest.approx(25.0)
    assert multisphere_deep_sad(z, c, torch.tensor([1]), eta=2.0, eps=0).item() == pytest.approx(50.0)
    assert multisphere_deep_sad(z, c, torch.tensor([-1]), eta=2.0, eps=0).item() == pytest.approx(2.0 / 25.0)


def test_deep_sad_gradient_finite_at_centre() -> None:
    c = torch.tensor([[0.5, -0.2, 0.1], [3.0, 3.0, 3.0]])
    z = c.clone().requires_grad_(True)  # every sample exactly on a centre
    loss = multisphere_deep_sad(z, c, torch.tensor([-1, 1]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
    assert torch.all(z.grad == 0)  # the gradient of d² at the centre is 0


# ---------------------------------------------------------------- reconstruction
def _recon_batch(seed: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    recon, target = rng.random((3, 1, 8, 10)), rng.random((3, 1, 8, 10))
    mask = (rng.random((3, 1, 8, 10)) > 0.4).astype(np.float64)
    mask[2] = 0.0  # one image without body part
    return recon, target, mask


def test_masked_mse_matches_numpy_and_guards_empty_mask() -> None:
    recon, target, mask = _recon_batch()
    got = masked_mse(*map(torch.tensor, (recon, target, mask))).item()
    assert got == pytest.approx(((recon - target) ** 2 * mask).sum() / mask.sum(), rel=1e-12)
    zero = masked_mse(torch.ones(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))
    assert zero.item() == 0.0


def test_reconstruction_scores_match_numpy() -> None:
    recon, target, mask = _recon_batch()
    tr = list(map(torch.tensor, (recon, target, mask)))
    sq, ab = (recon - target) ** 2, np.abs(recon - target)
    for kind, err in (("mse", sq), ("l1", ab)):
        want = [(err[i] * mask[i]).sum() / mask[i].sum() if mask[i].sum() else 0.0 for i in range(3)]
        np.testing.assert_allclose(reconstruction_scores(*tr, kind=kind).numpy(), want, rtol=1e-12)
    frac = 0.1
    want = []
    for i in range(3):
        vals = np.sort(sq[i][mask[i] > 0])[::-1]
        k = max(1, int(np.ceil(frac * mask[i].sum())))
        want.append(vals[:k].mean() if len(vals) else 0.0)
    np.testing.assert_allclose(reconstruction_scores(*tr, kind="topk", top_k_fraction=frac).numpy(), want, rtol=1e-12)
    # The paper's fixed-count form (k pixels, capped at the body part) for both pixel errors.
    for kind, err in (("topk", sq), ("l1_topk", ab)):
        for k_px in (5, 1000):
            want = []
            for i in range(3):
                vals = np.sort(err[i][mask[i] > 0])[::-1]
                want.append(vals[: max(1, min(k_px, len(vals)))].mean() if len(vals) else 0.0)
            got = reconstruction_scores(*tr, kind=kind, top_k_fraction=0.5, top_k_pixels=k_px).numpy()
            np.testing.assert_allclose(got, want, rtol=1e-12)
    with pytest.raises(ConfigError, match="top_k_pixels"):
        reconstruction_scores(*tr, kind="topk", top_k_pixels=-1)
    emap = masked_error_map(*tr, kind="l1")
    assert emap.shape == (3, 1, 8, 10)
    np.testing.assert_allclose(emap.numpy(), ab * mask, rtol=1e-12)
    with pytest.raises(ConfigError):
        reconstruction_scores(*tr, kind="ssim")


def np_smoothed_error(err: np.ndarray, mask: np.ndarray, width: int) -> np.ndarray:
    """Per image: the mean error of the in-mask pixels of the width × width window (zero-padded at the border)
    around each in-mask pixel, uniform(e·m) / uniform(m) with scipy; 0 outside the mask."""
    from scipy.ndimage import uniform_filter

    out = np.zeros_like(err)
    for i in range(len(err)):
        e, m = err[i, 0], mask[i, 0]
        num = uniform_filter(e * m, size=width, mode="constant", cval=0.0)
        den = uniform_filter(m, size=width, mode="constant", cval=0.0)
        out[i, 0] = np.where(m > 0, num / np.where(den > 0, den, 1.0), 0.0)
    return out


def test_smoothed_top_k_matches_scipy_and_smooth_zero_is_the_plain_score() -> None:
    recon, target, mask = _recon_batch(7)
    tr = list(map(torch.tensor, (recon, target, mask)))
    sq, ab = (recon - target) ** 2, np.abs(recon - target)
    for kind, err in (("topk", sq), ("l1_topk", ab)):
        for width in (3, 5):
            smoothed = np_smoothed_error(err, mask, width)
            np.testing.assert_allclose(masked_error_map(*tr, kind=kind, smooth=width).numpy(), smoothed, rtol=1e-12)
            for k_px in (4, 0):  # a fixed count, and the fraction form
                want = []
                for i in range(3):
                    vals = np.sort(smoothed[i][mask[i] > 0])[::-1]
                    k = k_px or int(np.ceil(0.2 * mask[i].sum()))
                    want.append(vals[: max(1, min(k, len(vals)))].mean() if len(vals) else 0.0)
                got = reconstruction_scores(*tr, kind=kind, top_k_fraction=0.2, top_k_pixels=k_px, smooth=width)
                np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)
    # The mean kinds average the smoothed map.
    smoothed = np_smoothed_error(sq, mask, 3)
    want = [smoothed[i].sum() / mask[i].sum() if mask[i].sum() else 0.0 for i in range(3)]
    np.testing.assert_allclose(reconstruction_scores(*tr, kind="mse", smooth=3).numpy(), want, rtol=1e-12)
    # smooth 0 (and the trivial width 1) is the unsmoothed score, bit for bit.
    for kind in ("mse", "l1", "topk", "l1_topk"):
        plain = reconstruction_scores(*tr, kind=kind, top_k_pixels=4)
        assert torch.equal(reconstruction_scores(*tr, kind=kind, top_k_pixels=4, smooth=0), plain)
        assert torch.equal(reconstruction_scores(*tr, kind=kind, top_k_pixels=4, smooth=1), plain)
    assert torch.equal(smooth_error_map(tr[0], tr[2], 0), tr[0] * tr[2])
    for bad in (-1, 2):
        with pytest.raises(ConfigError, match="smooth"):
            reconstruction_scores(*tr, kind="topk", smooth=bad)


# ---------------------------------------------------------------- VAE
def np_gaussian_kld(mu: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """KL(N(μ, σ²) ‖ N(0, 1)) summed over dimensions, from the densities: log(1/σ) + (σ² + μ²)/2 − 1/2."""
    sigma2 = np.exp(logvar)
    return (np.log(1.0 / np.sqrt(sigma2)) + (sigma2 + mu**2) / 2.0 - 0.5).sum(axis=1)


def test_gaussian_kld_matches_numpy_and_is_zero_at_the_prior() -> None:
    rng = np.random.default_rng(3)
    mu, logvar = rng.normal(size=(4, 6)), rng.normal(scale=0.7, size=(4, 6))
    got = gaussian_kld(torch.tensor(mu), torch.tensor(logvar)).numpy()
    np.testing.assert_allclose(got, np_gaussian_kld(mu, logvar), rtol=1e-12)
    assert (got > 0).all()
    assert gaussian_kld(torch.zeros(2, 5), torch.zeros(2, 5)).abs().max().item() == 0.0
    # A Monte-Carlo estimate E_q[log q(z) − log p(z)] agrees with the closed form (one row, 200k samples).
    z = mu[0] + np.exp(0.5 * logvar[0]) * rng.normal(size=(200_000, 6))
    log_q = -0.5 * (((z - mu[0]) ** 2) / np.exp(logvar[0]) + logvar[0] + np.log(2 * np.pi)).sum(axis=1)
    log_p = -0.5 * (z**2 + np.log(2 * np.pi)).sum(axis=1)
    assert (log_q - log_p).mean() == pytest.approx(got[0], rel=0.02)
    with pytest.raises(ValueError):
        gaussian_kld(torch.zeros(2, 5), torch.zeros(2, 4))


def test_vae_loss_is_masked_mse_plus_weighted_kld_per_pixel() -> None:
    recon, target, mask = _recon_batch()
    rng = np.random.default_rng(4)
    mu, logvar = rng.normal(size=(3, 7)), rng.normal(scale=0.5, size=(3, 7))
    beta = 0.3
    want = ((recon - target) ** 2 * mask).sum() / mask.sum() + beta * np_gaussian_kld(mu, logvar).mean() / (8 * 10)
    got = vae_loss(*map(torch.tensor, (recon, target, mask, mu, logvar)), kld_weight=beta).item()
    assert got == pytest.approx(want, rel=1e-12)
    with pytest.raises(ConfigError):
        vae_loss(*map(torch.tensor, (recon, target, mask, mu, logvar)), kld_weight=-1.0)
