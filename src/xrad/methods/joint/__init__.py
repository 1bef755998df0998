"""Joint Deep SAD: the autoencoder and the (multi-sphere) Deep SAD objective trained together."""
