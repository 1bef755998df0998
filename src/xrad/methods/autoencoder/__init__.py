"""The convolutional autoencoder (Davletshina et al.; "AE" pre-training of Ruff et al. [22]): its config
section, its reconstruction-error scorer and its training stage."""
