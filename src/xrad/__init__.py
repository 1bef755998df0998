"""xrad: semi-supervised anomaly detection on radiographs.

The data flow, top to bottom: ``xrad.data`` (I/O, indexing, splits, phantoms, transforms) →
``xrad.preprocess`` (carrier crop, inversion, body-part mask) → ``xrad.models`` (plain ``torch.nn``
networks) → ``xrad.losses`` (pure functions) → ``xrad.methods`` (one module per detector) →
``xrad.evaluation`` (metrics, statistics, plots, reports) → ``xrad.cli`` / ``xrad.service``.
"""

__version__ = "0.1.0"
