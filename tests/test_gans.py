"""The GAN detectors (DCGAN, BiGAN/ALI, α-GAN, one-class GAN): losses against NumPy transcriptions of their
equations, the networks' shapes, and training end to end (deterministic for a seed, exact resume, scores and
heatmaps)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xrad import losses
from xrad.errors import ConfigError
from xrad.models.gan import GAN_VARIANTS, build_gan


# ------------------------------------------------------------------------------ NumPy transcriptions
def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _log_d(x: np.ndarray) -> np.ndarray:  # log D = log σ(l)
    return np.log(_sigmoid(x))


def _log_1md(x: np.ndarray) -> np.ndarray:  # log(1 − D)
    return np.log(1.0 - _sigmoid(x))


def _logits(seed: int, n: int = 7) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(n, generator=g, dtype=torch.float64) * 3 for _ in range(3))  # type: ignore[return-value]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gan_losses_equal_numpy_transcriptions(seed: int) -> None:
    a, b, c = _logits(seed)
    na, nb, nc = a.numpy(), b.numpy(), c.numpy()
    rec = torch.tensor(0.37, dtype=torch.float64)
    # Goodfellow et al.: L_D = −E log D(x) − E log(1 − D(G(z))); non-saturating L_G = −E log D(G(z)).
    np.testing.assert_allclose(losses.discriminator_loss(a, b), -_log_d(na).mean() - _log_1md(nb).mean(), rtol=1e-12)
    np.testing.assert_allclose(losses.generator_loss(b), -_log_d(nb).mean(), rtol=1e-12)
    # BiGAN: E and G minimise −E log(1 − D(x, E(x))) − E log D(G(z), z).
    np.testing.assert_allclose(
        losses.bigan_encoder_generator_loss(a, b), -_log_1md(na).mean() - _log_d(nb).mean(), rtol=1e-12
    )
    # α-GAN (Rosca et al.): D on real vs reconstructed vs sampled; G and E with λ·L_rec.
    np.testing.assert_allclose(
        losses.alpha_gan_discriminator_loss(a, b, c),
        -_log_d(na).mean() - _log_1md(nb).mean() - _log_1md(nc).mean(),
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        losses.alpha_gan_generator_loss(b, c, rec, weight=2.5),
        2.5 * 0.37 - _log_d(nb).mean() - _log_d(nc).mean(),
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        losses.alpha_gan_encoder_loss(a, rec, weight=2.5), 2.5 * 0.37 - _log_d(na).mean(), rtol=1e-12
    )
    np.testing.assert_allclose(losses.real_probability(a), _sigmoid(na), rtol=1e-12)


def test_gan_losses_are_finite_for_confident_logits_and_promote_half_precision() -> None:
    big = torch.tensor([80.0, 90.0], dtype=torch.float32)
    assert float(losses.discriminator_loss(big, -big)) < 1e-30  # a perfect discriminator: loss 0, not NaN
    assert float(losses.generator_loss(-big[:1])) == pytest.approx(80.0)  # −log σ(−80) = 80, not inf
    half = torch.tensor([0.5, -1.0], dtype=torch.float16)
    assert losses.discriminator_loss(half, half).dtype == torch.float32
    # In float64 a confident "real" logit (20) is still below probability 1: scores 1 − D keep their order.
    assert float(1.0 - losses.real_probability(torch.tensor([20.0]))[0]) > 0


def test_gan_loss_gradients_point_the_right_way() -> None:
    real = torch.zeros(4, requires_grad=True)
    fake = torch.zeros(4, requires_grad=True)
    losses.discriminator_loss(real, fake).backward()
    assert bool((real.grad < 0).all()) and bool((fake.grad > 0).all())  # D raises real logits, lowers fake ones
    fake2 = torch.zeros(4, requires_grad=True)
    losses.generator_loss(fake2).backward()
    assert bool((fake2.grad < 0).all())  # G raises the logits of its samples


# ---------------------------------------------------------------------------------------- networks
@pytest.mark.parametrize("variant", GAN_VARIANTS)
@pytest.mark.parametrize("spectral", [False, True])
def test_networks_have_the_variants_parts_and_shapes(variant: str, spectral: bool) -> None:
    torch.manual_seed(0)
    nets = build_gan(variant, 32, latent_dim=8, width=4, max_width=16, spectral_norm=spectral, joint_hidden=8)
    x = torch.rand(3, 1, 32, 32)
    z = torch.randn(3, 8)
    fake = nets.generator(z)
    assert fake.shape == (3, 1, 32, 32) and bool(((fake >= 0) & (fake <= 1)).all())
    assert (nets.encoder is None) == (variant == "dcgan")
    assert (nets.code_discriminator is not None) == (variant == "alpha_gan")
    assert nets.discriminate(x).shape == (3,)
    if nets.encoder is not None:
        assert nets.encode(x).shape == (3, 8)
    if nets.code_discriminator is not None:
        assert nets.code_discriminator(z).shape == (3,)
    has_sn = any("parametrizations" in name for name, _ in nets.discriminator.named_parameters())
    has_bn = any(isinstance(m, torch.nn.BatchNorm2d) for m in nets.discriminator.modules())
    assert has_sn == spectral and has_bn == (not spectral)  # SN-GAN style: no BatchNorm in a normalised critic


def test_widths_double_up_to_the_cap_and_sizes_must_be_powers_of_two() -> None:
    nets = build_gan("dcgan", 64, latent_dim=10, width=8, max_width=16)
    convs = [m for m in nets.discriminator.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16, 16, 16, 1]  # 64 → 32 → 16 → 8 → 4 → logit
    with pytest.raises(ConfigError, match="power of two"):
        build_gan("dcgan", 48)
    with pytest.raises(ConfigError, match="variant"):
        build_gan("wgan", 32)
