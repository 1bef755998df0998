"""The run folder of one trained detector: every file name in one place.

Written by :func:`xrad.jobs.train.run_training`, read by the benchmark, the report and ``xrad score``::

    run/config.yaml                  resolved config
    run/env.json                     package versions, seed, git commit, command line
    run/<stage>/checkpoints/         last.ckpt (+ the epoch it links to): resume points of an unfinished stage,
                                     deleted once the stage is done (its weights are exported)
    run/<stage>/metrics.csv          one row per epoch: epoch, train_loss, valid_auroc, n_spheres, lr
    run/<stage>/logs/, tensorboard/  Lightning's CSV (and TensorBoard, when installed) logs
    run/<stage>/done.json            written when the stage finished (a re-run skips it)
    run/<stage>/<output>             the stage's weights (see the StageSpec of xrad.methods.registry)
    run/bank_cache/                  decoded image banks (memo; safe to delete)
    run/unreadable.csv               split, path, reason of images left out because they could not be read
    run/artefact/                    model.safetensors + artefact.json (xrad.inference.artefact)
    run/scores_{valid,test}.csv      path, patient_id, study_id, body_part, label, split, score, sphere
    run/embeddings_test.safetensors  h, z, sphere, labels, score of the test images (for t-SNE)
    run/embeddings_valid.safetensors, embeddings_valid_pretext.safetensors  h, z, labels of the validation images
                                     with the final and with the stage-1 encoder (Fig. 9: pretext beside fine-tuned)
    run/summary.json                 method, AUROCs, sphere history, timings, images per split
    run/gallery/                     the report's highest- and lowest-scored test images (xrad.inference.gallery)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SCORE_SPLITS = ("valid", "test")


def detector_folder(folder: str | Path) -> Path:
    """The detector's run folder of ``folder``: its ``detector/`` when ``folder`` is the folder of ``xrad run``
    (which holds ``pipeline.json``), else ``folder`` itself."""
    folder = Path(folder)
    if (folder / "pipeline.json").is_file() and (folder / "detector").is_dir():
        return folder / "detector"
    return folder


@dataclass(frozen=True)
class RunFolder:
    """Paths inside one detector's run folder ``root``."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def env(self) -> Path:
        return self.root / "env.json"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def artefact(self) -> Path:
        return self.root / "artefact"

    @property
    def embeddings(self) -> Path:
        return self.root / "embeddings_test.safetensors"

    def valid_embeddings(self, pretext: bool = False) -> Path:
        """Validation embeddings of the final scorer, or of the stage-1 encoder with ``pretext``."""
        return self.root / ("embeddings_valid_pretext.safetensors" if pretext else "embeddings_valid.safetensors")

    @property
    def bank_cache(self) -> Path:
        return self.root / "bank_cache"

    @property
    def unreadable(self) -> Path:
        """The images the banks could not read (left out of training and scoring), one line each."""
        return self.root / "unreadable.csv"

    def scores(self, split: str) -> Path:
        """``scores_<split>.csv`` (valid or test)."""
        return self.root / f"scores_{split}.csv"

    def stage(self, name: str) -> Path:
        """The folder of stage ``name``."""
        return self.root / name

    def stage_done(self, name: str) -> Path:
        """Written when stage ``name`` finished."""
        return self.stage(name) / "done.json"

    def stage_metrics(self, name: str) -> Path:
        """The per-epoch metrics of stage ``name``."""
        return self.stage(name) / "metrics.csv"

    def checkpoints(self, name: str) -> Path:
        """Lightning's resume checkpoints of stage ``name``."""
        return self.stage(name) / "checkpoints"

    def is_finished(self) -> bool:
        """Whether every stage ran and the run was scored (``summary.json`` exists)."""
        return self.summary.is_file()
