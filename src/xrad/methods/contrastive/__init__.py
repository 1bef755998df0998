"""Contrastive pre-training (SimCLR / supervised contrastive): stage 1 of the self-taught detector and of
the kNN ablation (:mod:`~xrad.methods.contrastive.stage`)."""
