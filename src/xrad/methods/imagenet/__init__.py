"""ImageNet initialisation (Table 1 "Ruff et al. (Multi-Modal) Image-Net"): weights from a local
torchvision file, never downloaded."""
