"""ONNX export of an artefact, verified against the torch scorer before it is written.

The graph takes exactly what :meth:`~xrad.methods.base.Scorer.score_batches` takes — ``image`` and
``mask``, uint8 ``(B, 1, S, S)`` (the resized and padded image, mask 1 on the body part) — and applies
:func:`~xrad.data.model_input.prepare_eval` inside the graph. Keeping the /255 and masking in the graph
removes the preprocessing ambiguity behind anomalib's export score mismatches (field guide §2.6). Outputs:
``score`` float32 ``(B,)`` and, for sphere detectors, ``sphere`` int64 ``(B,)``.

Decoding, preprocessing and the resize stay outside: a deployment reproduces
:func:`xrad.inference.input.prepare_input`, the one input path of ``xrad score``, heatmaps and the service.
The model's ``metadata_props`` record what that needs — the artefact's input spec
(:meth:`~xrad.inference.artefact.ArtefactMeta.input_spec`: ``image_size`` and the preprocessing parameters
scoring applies), the operating point and the artefact checksum.

Parity: after export, a seeded batch of images is scored by onnxruntime and by torch; the export is
refused (nothing is written) when the largest score difference exceeds ``tolerance`` (× the largest |score| when that
is above 1: float32 rounding grows with the scores, e.g. a VAE's KL divergence).
The legacy TorchScript exporter (``dynamo=False``) is used because it needs no extra package (onnxscript).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from xrad.errors import ConfigError, XradError
from xrad.utils.atomic import check_writable

if TYPE_CHECKING:  # pragma: no cover
    from xrad.methods.base import Scorer

__all__ = ["OnnxScorer", "export_onnx", "onnx_scores", "parity_batch"]

OPSET = 17

# What a caller runs before the graph (also in the README); tests/test_export.py runs exactly this.
RECIPE = (
    "stored = json.loads(props['xrad.preprocessing']); spec = xrad.inference.artefact.InputSpec("
    "int(props['xrad.image_size']), xrad.preprocess.PreprocessParams.from_dict(stored) if stored else None); "
    "ready = xrad.inference.input.prepare_input(path, spec)  # decode, carrier crop, inversion fix, body mask, "
    "resize-and-pad; then session.run(None, {'image': ready.image[None].numpy(), 'mask': ready.mask[None].numpy()}); "
    "the /255 and the masking are inside the graph"
)


class OnnxScorer(nn.Module):
    """The exported graph: uint8 image and mask → score (and nearest sphere)."""

    def __init__(self, scorer: Scorer) -> None:
        super().__init__()
        self.scorer = scorer

    def forward(self, image: Tensor, mask: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        """Same maths as ``score_batches``: float [0, 1] image times its 0/1 mask, then the score."""
        x = image.to(torch.float32) / 255.0 * (mask > 0).to(torch.float32)
        score, sphere = self.scorer.score(x)
        if sphere is None:
            return score.to(torch.float32)
        return score.to(torch.float32), sphere.to(torch.int64)


def parity_batch(size: int, n: int = 8, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A seeded batch of smooth random images with rectangular masks (uint8 ``(n, 1, size, size)``)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (n, 1, max(2, size // 8), max(2, size // 8))).astype(np.float32)
    images = torch.nn.functional.interpolate(
        torch.from_numpy(coarse), size=(size, size), mode="bilinear", align_corners=False
    )
    images = (images + torch.from_numpy(rng.normal(0, 8, (n, 1, size, size)).astype(np.float32))).clamp(0, 255)
    masks = torch.zeros((n, 1, size, size), dtype=torch.uint8)
    for i in range(n):
        top, left = rng.integers(0, size // 4, 2)
        masks[i, 0, top : size - top, left : size - left] = 1
    return images.round().to(torch.uint8), masks


def onnx_scores(path: str | Path, images: Tensor | np.ndarray, masks: Tensor | np.ndarray) -> np.ndarray:
    """Scores of an exported model under onnxruntime (CPU)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {"image": np.asarray(images, dtype=np.uint8), "mask": np.asarray(masks, dtype=np.uint8)}
    return np.asarray(session.run(["score"], feeds)[0], dtype=np.float64)


def export_onnx(
    artefact_dir: str | Path,
    output: str | Path,
    *,
    opset: int = OPSET,
    tolerance: float = 1e-4,
    n_check: int = 8,
    seed: int = 0,
) -> dict[str, Any]:
    """Export the artefact's scorer to ``output`` (ONNX), checked for parity with torch before it is moved
    into place. Returns ``{path, image_size, max_abs_diff, n_checked, outputs, opset, max_batch}``."""
    import onnx

    from xrad.inference.artefact import meta_of
    from xrad.inference.scoring import load_scorer
    from xrad.utils.atomic import write_bytes

    scorer = load_scorer(artefact_dir).cpu().eval()
    meta = meta_of(scorer)
    spec = meta.input_spec()
    size = spec.image_size
    graph = OnnxScorer(scorer).eval()
    images, masks = parity_batch(size, n_check, seed)
    # The traced graph unrolls Python loops: kNN's query chunking becomes one chunk, so a batch may not
    # exceed the chunk size (recorded as xrad.max_batch).
    max_batch = int(getattr(scorer, "chunk_size", 0) or 0)
    if max_batch and n_check > max_batch:
        raise ConfigError(f"n_check {n_check} exceeds the kNN chunk size {max_batch}; lower it")
    with torch.no_grad():
        expected = scorer.score_batches(images, masks, batch_size=n_check)["score"].numpy()
        sample = graph(images[:2], masks[:2])
    outputs = ["score"] if isinstance(sample, Tensor) else ["score", "sphere"]
    output = check_writable(output)
    tmp = output.with_name(f".{output.name}.export.tmp")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # torch.jit exports TracerWarning at run time but leaves it out of its __all__ (a stub gap).
            tracer_warning = torch.jit.TracerWarning  # type: ignore[attr-defined]
            warnings.simplefilter("ignore", tracer_warning)  # shape checks frozen at trace time
            warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter announces its end
            torch.onnx.export(
                graph,
                (images[:2], masks[:2]),
                str(tmp),
                input_names=["image", "mask"],
                output_names=outputs,
                opset_version=opset,
                dynamo=False,
                dynamic_axes={name: {0: "batch"} for name in ["image", "mask", *outputs]},
            )
        model = onnx.load(str(tmp))
        preprocessing = None if spec.preprocessing is None else spec.preprocessing.to_dict()
        props = {
            "xrad.image_size": str(size),
            "xrad.method": str(meta.method),
            "xrad.input": "image, mask: uint8 (B, 1, S, S) after xrad's resize-and-pad; mask 1 = body part",
            "xrad.recipe": RECIPE,
            "xrad.preprocessing": json.dumps(preprocessing, sort_keys=True),  # as artefact.json stores it
            "xrad.operating_point": json.dumps(meta.operating_point),
            "xrad.artefact_sha256": str(meta.sha256),
            "xrad.max_batch": str(max_batch or "unlimited"),
        }
        for key, value in props.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(model)
        blob = model.SerializeToString()
        tmp.write_bytes(blob)
        got = onnx_scores(tmp, images.numpy(), masks.numpy())
    finally:
        tmp.unlink(missing_ok=True)
    diff = float(np.max(np.abs(got - expected))) if len(got) else 0.0
    # Relative to the scores' scale once it exceeds 1: float32 keeps ~7 digits, so a score in the tens (a VAE's
    # KL divergence summed over its latent) differs by more than 1e-4 in absolute terms between two runtimes.
    scale = max(1.0, float(np.max(np.abs(expected)))) if len(expected) else 1.0
    if not np.isfinite(diff) or diff > tolerance * scale:
        raise XradError(
            f"{output}: ONNX scores differ from the torch artefact by up to {diff:.3g} "
            f"(> {tolerance:g} × {scale:.3g}); "
            "not written — report this with the artefact's method and opset"
        )
    write_bytes(output, blob)
    return {
        "path": str(output),
        "image_size": size,
        "max_abs_diff": diff,
        "n_checked": len(got),
        "outputs": outputs,
        "opset": opset,
        "max_batch": max_batch or None,
    }
