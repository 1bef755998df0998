"""DROCC (Goyal et al. 2020): a classifier trained against adversarial negatives found in an annulus."""
