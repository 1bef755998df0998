"""Name → module tables for detectors and their scorers, resolved lazily (no heavy imports here).

Adding a detector (issue 6) is one module that defines ``METHOD`` (a :class:`xrad.methods.base.Method`)
plus one YAML config, and one line in :data:`METHODS`. A scorer class that rebuilds the trained
detector from its artefact is registered in :data:`SCORERS`; its module must not import Lightning,
because ``xrad score`` and the service load it without the training stack.
"""

from __future__ import annotations

import importlib
from typing import Any

from xrad.errors import ConfigError

# method name -> module defining METHOD, or "module:ATTR" when one module defines several methods
# (training side; may import Lightning)
METHODS: dict[str, str] = {
    "self_taught": "xrad.methods.self_taught",
    "knn": "xrad.methods.knn_embedding",
    "autoencoder": "xrad.methods.autoencoder",
    "deep_sad_ae": "xrad.methods.deep_sad_ae:METHOD",
    "knn_ae": "xrad.methods.deep_sad_ae:KNN_AE",
    "deep_sad_imagenet": "xrad.methods.deep_sad_ae:IMAGENET",
    "supervised": "xrad.methods.supervised",
}

# method name -> (family, file its stage 1 writes under pretrain/): methods of one family train the same stage 1
# from the same config sections, so a benchmark can train it once per (split, seed) and hand the finished
# run folder to the others as ``pretrain.encoder_from`` (the paper's kNN ablation reuses the contrastive encoder).
PRETRAIN_FAMILIES: dict[str, tuple[str, str]] = {
    "self_taught": ("contrastive", "encoder.safetensors"),
    "knn": ("contrastive", "encoder.safetensors"),
    "autoencoder": ("autoencoder", "autoencoder.safetensors"),
    "deep_sad_ae": ("autoencoder", "autoencoder.safetensors"),
    "knn_ae": ("autoencoder", "autoencoder.safetensors"),
}

# scorer kind (stored in artefact.json) -> "module:Class" (framework-free torch.nn.Module)
SCORERS: dict[str, str] = {
    "sphere": "xrad.methods.scorers:SphereScorer",
    "knn": "xrad.methods.scorers:KnnScorer",
    "reconstruction": "xrad.methods.baseline_scorers:ReconstructionScorer",
    "classifier": "xrad.methods.baseline_scorers:ClassifierScorer",
}


def get_method(name: str) -> Any:
    """Import and return the ``METHOD`` object of detector ``name``."""
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    module_name, _, attr = METHODS[name].partition(":")
    return getattr(importlib.import_module(module_name), attr or "METHOD")


def import_method_sections(name: str) -> None:
    """Import a method's optional ``config_sections`` module so its config sections are registered.

    Convention: a method that needs its own section defines it (and calls
    :func:`xrad.config.register_section`) in a Lightning-free module named by ``METHOD_SECTIONS``
    below; unknown names are left for validation to report.
    """
    module = METHOD_SECTIONS.get(name)
    if module:
        importlib.import_module(module)


# method name -> module registering extra config sections
METHOD_SECTIONS: dict[str, str] = {
    name: "xrad.methods.baseline_sections"
    for name in ("autoencoder", "deep_sad_ae", "knn_ae", "deep_sad_imagenet", "supervised")
}


def get_scorer_class(kind: str) -> type:
    """Resolve a scorer kind from an artefact to its class (imports only torch-level modules)."""
    if kind not in SCORERS:
        raise ConfigError(f"artefact scorer {kind!r} is unknown to this xrad version (known: {sorted(SCORERS)}); "
                          "upgrade xrad or re-train")
    module_name, class_name = SCORERS[kind].split(":")
    return getattr(importlib.import_module(module_name), class_name)
