"""The front door in Python: load a trained detector in one line, score images into a table, explain one.

::

    import xrad
    detector = xrad.Detector.load("runs/default/detector/artefact")
    table = detector.score("my_images/")      # pandas DataFrame, the columns `xrad score -o` writes
    explanation = detector.heatmap("my_images/hand.png")

``xrad.fit(config, manifest, output)`` trains (or resumes) a detector exactly as ``xrad train`` does and
returns it loaded. Both are thin: scoring is :func:`xrad.inference.readout.score_images`, explaining is
:mod:`xrad.inference.heatmaps`, training is :func:`xrad.jobs.train.run_training` — the command line and this
API cannot drift apart. Lightning is imported by :func:`fit` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - keeps `import xrad` free of torch and pandas
    import numpy as np
    import pandas as pd

    from xrad.inference.artefact import ArtefactMeta
    from xrad.inference.heatmaps import Explanation
    from xrad.methods.base import Scorer

__all__ = ["Detector", "fit"]


class Detector:
    """A trained detector (an artefact folder), ready to score. Build it with :meth:`load` or :func:`fit`."""

    def __init__(self, scorer: Scorer, artefact_dir: Path, summary: dict[str, Any] | None = None) -> None:
        self.scorer = scorer
        self.artefact_dir = artefact_dir
        self.summary = summary  # the training summary when made by fit(), else None

    @classmethod
    def load(cls, artefact_dir: str | Path, device: str = "cpu") -> Detector:
        """Load an artefact folder (``model.safetensors`` + ``artefact.json``), e.g. ``RUN/artefact``."""
        from xrad.inference.scoring import load_scorer

        return cls(load_scorer(artefact_dir, device=device), Path(artefact_dir))

    @property
    def meta(self) -> ArtefactMeta:
        """The artefact's metadata: method, input spec, operating point, validation reference ..."""
        from xrad.inference.artefact import meta_of

        return meta_of(self.scorer)

    def __repr__(self) -> str:
        meta = self.meta
        calibrated = "calibrated" if meta.operating_point else "not calibrated"
        return f"Detector({meta.method!r}, {meta.image_size} px, {calibrated}, {str(self.artefact_dir)!r})"

    def score(
        self, images: str | Path | Sequence[str | Path] | pd.DataFrame, *, batch_size: int = 64, workers: int = 2
    ) -> pd.DataFrame:
        """Score images into a table, one row per image: the input's columns, ``score`` (raw), ``percentile``
        (among the validation normals; NaN for artefacts without a reference), ``flagged`` (when calibrated),
        ``degenerate`` and ``error`` (a one-line reason; the row's score is then NaN).

        ``images``: an image file, a folder (searched recursively), a manifest CSV, a list of image paths, or
        a table with a ``path`` column — as ``xrad score`` reads them.
        """
        import pandas as pd

        from xrad.inference.readout import score_images
        from xrad.inference.sources import collect_inputs

        if isinstance(images, pd.DataFrame):
            frame = images
        elif isinstance(images, (str, Path)):
            frame = collect_inputs(Path(images))
        else:
            frame = pd.DataFrame({"path": [str(Path(p).absolute()) for p in images]})
        return score_images(self.scorer, frame, batch_size=batch_size, workers=workers, on_error="skip")

    def heatmap(self, image: str | Path | np.ndarray, *, body_part: str | None = None) -> Explanation:
        """Score and explain one image (a file path, or a decoded grey array): the returned
        :class:`~xrad.inference.heatmaps.Explanation` has ``score``, ``heat`` (the map in [0, 1], on the
        image's own pixel grid), ``base`` (the image it is drawn on) and ``overlay_png()``."""
        from xrad.inference.heatmaps import explain_pixels, explain_row

        if isinstance(image, (str, Path)):
            return explain_row(self.scorer, {"path": str(Path(image).absolute())})
        return explain_pixels(self.scorer, image, body_part=body_part)


def fit(
    config: str | Path | dict[str, Any],
    manifest: str | Path,
    output: str | Path,
    *,
    overrides: Sequence[str] = (),
    progress: bool = True,
) -> Detector:
    """Train the detector of ``config`` (a packaged name such as ``"tiny"``, a YAML path or a mapping) on a
    split manifest into the run folder ``output`` — as ``xrad train`` does, resuming what is there — and
    return it loaded from ``output/artefact``. ``overrides`` are ``section.key=value`` strings."""
    from xrad.errors import ConfigError
    from xrad.jobs.train import run_training
    from xrad.run_folder import RunFolder

    summary = run_training(config, manifest, output, overrides=tuple(overrides), progress=progress)
    if "finished_stages" in summary or not summary:
        raise ConfigError(f"{output}: training did not finish every stage; run xrad.fit again to resume")
    detector = Detector.load(RunFolder(Path(output)).artefact)
    detector.summary = summary
    return detector
