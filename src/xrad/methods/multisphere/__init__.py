"""Multi-sphere semi-supervised Deep SAD ("MAD", Eq. 2, Algorithm 1): k-means-initialised centres pruned
during training (:mod:`~xrad.methods.multisphere.centres`), the fine-tuning stage
(:mod:`~xrad.methods.multisphere.stage`) and its scorer (:mod:`~xrad.methods.multisphere.scorer`)."""
