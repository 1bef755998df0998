"""Subspace Deep SAD scoring: distance of an embedding to the span of the normal training embeddings."""
