"""The trained-detector artefact: a self-contained folder, loadable without pickle and without Lightning.

Layout::

    ARTEFACT/model.safetensors   every tensor the scorer needs (encoder weights, centres or memory bank)
    ARTEFACT/artefact.json       what the numbers mean: format, method, scorer kind and arguments,
                                 image_size, preprocessing parameters (or null), centres (readable copy),
                                 resolved config, package versions, training-data summary, xrad version,
                                 SHA-256 of model.safetensors, the validation normals' score distribution
                                 (``normal_reference``: every score's percentile) and (after ``xrad calibrate``)
                                 the operating point

``artefact.json`` is written last, so its presence means the folder is complete; the checksum catches a
weights file swapped or truncated afterwards.

The schema of ``artefact.json`` is written here and nowhere else: :class:`ArtefactMeta` is the one typed
record every reader uses (scoring, heatmaps, export, calibration, the service, the CLI), and every writer
goes through :func:`save_artefact` or :func:`update_artefact_meta`. Why one record: the keys used to be
read as strings in a dozen places, so a renamed or missing key failed far from here, and each reader
rebuilt the preprocessing parameters itself. :meth:`ArtefactMeta.input_spec` builds them once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xrad.errors import ConfigError, DataError
from xrad.utils.atomic import write_bytes, write_json

if TYPE_CHECKING:  # pragma: no cover - the preprocessing package imports OpenCV; only annotations need it
    from xrad.preprocess.params import PreprocessParams

__all__ = [
    "FORMAT",
    "META",
    "WEIGHTS",
    "ArtefactMeta",
    "InputSpec",
    "load_artefact",
    "meta_of",
    "package_versions",
    "read_artefact_meta",
    "read_meta",
    "save_artefact",
    "update_artefact_meta",
]

FORMAT = "xrad-artefact/1"
WEIGHTS = "model.safetensors"
META = "artefact.json"

# The keys of artefact.json that have a field of their own; any other key lives in ArtefactMeta.extra.
_SCHEMA = (
    "format",
    "method",
    "scorer",
    "image_size",
    "input",
    "preprocessing",
    "config",
    "training_data",
    "operating_point",
    "normal_reference",
    "xrad_version",
    "sha256",
    "versions",
)
_SCORER_KEYS = ("kind", "args")


@dataclass(frozen=True)
class InputSpec:
    """What a model input is made with: THE image size and the preprocessing parameters (None: the image is
    only rounded to 8 bits and resized, as the training banks do for rows without a cache file)."""

    image_size: int
    preprocessing: PreprocessParams | None = None


@dataclass(frozen=True)
class ArtefactMeta:
    """``artefact.json`` as one typed record (see the module docstring).

    A key that is absent from the file is None here and stays absent when written back; ``explicit_nulls``
    remembers the keys that were written as ``null`` (``preprocessing`` is, when images were not
    preprocessed), so a file reads back and writes out with exactly its keys and values.
    """

    method: str | None = None
    scorer_kind: str | None = None
    scorer_args: dict[str, Any] | None = None
    image_size: int | None = None
    input: str | None = None
    preprocessing: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    training_data: dict[str, Any] | None = None
    operating_point: dict[str, Any] | None = None
    # The validation normals' scores (sorted, or quantiles of many): see xrad.inference.readout. Artefacts
    # written before it existed have none; their percentiles are reported as unavailable.
    normal_reference: dict[str, Any] | None = None
    format: str | None = None
    xrad_version: str | None = None
    sha256: str | None = None
    versions: dict[str, str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. centres, n_spheres (Scorer.artefact_meta_fields)
    explicit_nulls: frozenset[str] = frozenset({"preprocessing"})
    where: str = field(default=META, compare=False, repr=False)  # the file, for messages
    _spec: InputSpec | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        clash = sorted(set(self.extra) & set(_SCHEMA))
        if clash:
            raise ValueError(f"extra artefact keys {clash} have fields of their own")

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str = META) -> ArtefactMeta:
        """The record of a parsed ``artefact.json`` (``where`` names it in errors); the types of the keys
        that readers rely on are checked here, once."""
        if not isinstance(data, Mapping):
            raise DataError(f"{where}: artefact metadata is not a JSON object; re-run `xrad train` to rewrite it")
        scorer = data.get("scorer")
        if scorer is not None:
            if not isinstance(scorer, Mapping) or set(scorer) - set(_SCORER_KEYS):
                raise DataError(
                    f"{where}: 'scorer' must be an object with 'kind' and 'args'; re-train or use "
                    "the xrad version that wrote it"
                )
            if scorer.get("args") is not None and not isinstance(scorer["args"], Mapping):
                raise DataError(
                    f"{where}: 'scorer.args' is not an object; re-train or use the xrad version that wrote it"
                )
        for key in ("preprocessing", "operating_point", "normal_reference", "config", "training_data", "versions"):
            if data.get(key) is not None and not isinstance(data[key], Mapping):
                raise DataError(f"{where}: {key!r} is not an object; re-train or use the xrad version that wrote it")
        return cls(
            method=data.get("method"),
            scorer_kind=None if scorer is None else scorer.get("kind"),
            scorer_args=None if scorer is None else scorer.get("args"),
            image_size=data.get("image_size"),
            input=data.get("input"),
            preprocessing=data.get("preprocessing"),
            config=data.get("config"),
            training_data=data.get("training_data"),
            operating_point=data.get("operating_point"),
            normal_reference=data.get("normal_reference"),
            format=data.get("format"),
            xrad_version=data.get("xrad_version"),
            sha256=data.get("sha256"),
            versions=data.get("versions"),
            extra={k: v for k, v in data.items() if k not in _SCHEMA},
            explicit_nulls=frozenset(k for k in _SCHEMA if k in data and data[k] is None),
            where=where,
        )

    def to_json(self) -> dict[str, Any]:
        """The ``artefact.json`` object: today's keys, in training's order (the file itself is key-sorted)."""
        out: dict[str, Any] = {}

        def put(key: str, value: Any) -> None:
            if value is not None or key in self.explicit_nulls:
                out[key] = value

        put("method", self.method)
        if self.scorer_kind is not None or self.scorer_args is not None:
            out["scorer"] = {k: v for k, v in (("kind", self.scorer_kind), ("args", self.scorer_args)) if v is not None}
        else:
            put("scorer", None)
        for key in ("image_size", "input", "preprocessing", "config", "training_data"):
            put(key, getattr(self, key))
        out.update(self.extra)
        for key in ("format", "xrad_version", "sha256", "versions", "normal_reference", "operating_point"):
            put(key, getattr(self, key))
        return out

    def input_spec(self) -> InputSpec:
        """The image size and preprocessing parameters every input path uses (built once per record)."""
        if self._spec is None:
            size = self.image_size
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise DataError(
                    f"{self.where}: 'image_size' is {size!r}, not a positive integer; re-run "
                    "`xrad train` to rewrite the artefact"
                )
            params = None
            if self.preprocessing is not None:
                from xrad.preprocess.params import PreprocessParams

                try:
                    params = PreprocessParams.from_dict(self.preprocessing)
                except (ConfigError, TypeError) as exc:
                    raise DataError(
                        f"{self.where}: preprocessing parameters are not usable ({exc}); use the "
                        "xrad version that wrote the artefact or re-train"
                    ) from None
            object.__setattr__(self, "_spec", InputSpec(size, params))
        assert self._spec is not None
        return self._spec


def meta_of(scorer: Any) -> ArtefactMeta:
    """The :class:`ArtefactMeta` a scorer loaded by :func:`xrad.inference.scoring.load_scorer` carries."""
    meta = getattr(scorer, "artefact_meta", None)
    if isinstance(meta, ArtefactMeta):
        return meta
    if isinstance(meta, Mapping):  # a scorer assembled by hand with a plain dict
        return ArtefactMeta.from_json(meta, "scorer.artefact_meta")
    raise TypeError("the scorer carries no artefact metadata; load it with xrad.inference.scoring.load_scorer")


def package_versions() -> dict[str, str]:
    """Versions of the packages that determine a trained model's numbers (for the record)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in (
        "xrad",
        "torch",
        "torchvision",
        "lightning",
        "numpy",
        "scikit-learn",
        "opencv-python-headless",
        "safetensors",
        "pandas",
    ):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def save_artefact(directory: str | Path, tensors: dict[str, Any], meta: ArtefactMeta | Mapping[str, Any]) -> Path:
    """Write ``tensors`` (name → torch.Tensor) as safetensors and ``meta`` as ``artefact.json`` beside it
    (last, so its presence means complete).

    ``format``, ``xrad_version`` and the weights' ``sha256`` are set here, ``versions`` unless ``meta`` has
    them. ``meta`` may be a plain mapping of artefact.json keys. Returns the folder.
    """
    import torch
    from safetensors.torch import save

    from xrad import __version__

    if not isinstance(meta, ArtefactMeta):
        meta = ArtefactMeta.from_json(meta, "artefact metadata")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # safetensors needs contiguous, non-shared CPU tensors.
    plain = {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}
    for name, t in plain.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"artefact tensor {name!r} is not a tensor")
    blob = save(plain, metadata={"format": FORMAT})
    write_bytes(directory / WEIGHTS, blob)
    versions = meta.versions
    if versions is None and "versions" not in meta.explicit_nulls:
        versions = package_versions()
    meta = dataclasses.replace(
        meta, format=FORMAT, xrad_version=__version__, sha256=hashlib.sha256(blob).hexdigest(), versions=versions
    )
    write_json(directory / META, meta.to_json())
    return directory


def read_artefact_meta(directory: str | Path) -> dict[str, Any]:
    """``artefact.json`` as stored (a dict; format checked, no tensors read). Code that uses the metadata
    reads :func:`read_meta`; this is for tools that copy or compare the file verbatim."""
    directory = Path(directory)
    meta_path = directory / META
    if not meta_path.is_file():
        raise DataError(
            f"{directory}: not an xrad artefact (no {META}); point to the `artefact` folder of a "
            "finished `xrad train` run"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(
            f"{meta_path}: unreadable artefact metadata ({exc}); re-run `xrad train` to rewrite it"
        ) from None
    if not isinstance(meta, dict):
        raise DataError(f"{meta_path}: artefact metadata is not a JSON object; re-run `xrad train` to rewrite it")
    if meta.get("format") != FORMAT:
        raise DataError(
            f"{meta_path}: artefact format {meta.get('format')!r} is not {FORMAT!r}; "
            "use the xrad version that wrote it or re-train"
        )
    return meta


def read_meta(directory: str | Path) -> ArtefactMeta:
    """The artefact folder's metadata as an :class:`ArtefactMeta` (cheap; no tensors)."""
    return ArtefactMeta.from_json(read_artefact_meta(directory), str(Path(directory) / META))


def update_artefact_meta(directory: str | Path, **changes: Any) -> Path:
    """Rewrite ``artefact.json`` with the given fields changed (atomically; the weights are untouched), e.g.
    ``update_artefact_meta(folder, operating_point=point)``. Returns the file's path."""
    meta = dataclasses.replace(read_meta(directory), **changes)
    path = Path(directory) / META
    write_json(path, meta.to_json())
    return path


def load_artefact(directory: str | Path, verify: bool = True) -> tuple[dict[str, Any], ArtefactMeta]:
    """Return ``(tensors, meta)`` of an artefact folder; no pickle is involved (safetensors + JSON)."""
    from safetensors.torch import load

    directory = Path(directory)
    meta = read_meta(directory)
    weights = directory / WEIGHTS
    if not weights.is_file():
        raise DataError(f"{weights}: artefact weights missing; copy the whole artefact folder")
    blob = weights.read_bytes()
    if verify and meta.sha256 and hashlib.sha256(blob).hexdigest() != meta.sha256:
        raise DataError(f"{weights}: checksum does not match {META} (corrupt or replaced); copy the artefact again")
    try:
        tensors = load(blob)
    except Exception as exc:
        raise DataError(f"{weights}: not a readable safetensors file ({exc}); copy the artefact again") from None
    return tensors, meta
