"""kNN on embeddings (the paper's kNN-100 ablation): exact chunked search (:mod:`~xrad.methods.knn.search`),
the memory-bank stage (:mod:`~xrad.methods.knn.stage`) and its scorer (:mod:`~xrad.methods.knn.scorer`)."""
