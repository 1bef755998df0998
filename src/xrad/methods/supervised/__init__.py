"""Supervised ResNet-50 baseline of Table 1: class-balanced BCE on the labelled train images."""
