"""MoCo v2 pretext (He et al. 2020; Chen et al. 2020): momentum key encoder and a queue of negatives."""
