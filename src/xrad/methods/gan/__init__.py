"""The GAN detectors of Davletshina et al. (DCGAN, BiGAN/ALI, α-GAN) and the one-class GAN baseline of the
self-taught paper's Table 1: one config section, one scorer and one adversarial training stage."""
