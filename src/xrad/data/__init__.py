"""Data: radiograph I/O, dataset indexing into one manifest table, splits, phantoms, transforms."""
