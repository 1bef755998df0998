"""Anomaly detectors, one small module each, and their shared pieces (spheres, kNN)."""
