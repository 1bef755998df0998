"""The main job, ``xrad run``: phantoms → index → split → preprocess → pre-train → fine-tune → score.

Each step writes its outputs atomically into one run folder and records what it was run with in
``pipeline.json``; re-running the same command skips finished steps (and the training steps resume from
their last checkpoint), so an interrupted run costs only the step that was running. Running the same
folder with different options is refused, because mixing outputs of two settings would be silently wrong.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from xrad.errors import DataError
from xrad.utils.atomic import write_json


@dataclass
class RunOptions:
    """Options of ``xrad run``; defaults finish in minutes on 2 CPU cores."""

    output: Path = Path("runs/default")
    config: str = "self_taught_cpu"
    patients: int = 160
    difficulty: float = 1.0
    seed: int = 0
    split_seed: int = 0
    abnormal_ratio: float = 0.05
    known_normal: float = 0.05
    image_px: int = 256
    workers: int = 2
    trainer_overrides: dict[str, Any] = field(default_factory=dict)

    def fingerprint(self) -> dict[str, Any]:
        """The options that determine the outputs (workers and trainer devices do not)."""
        keep = ("config", "patients", "difficulty", "seed", "split_seed", "abnormal_ratio", "known_normal", "image_px")
        return {k: v for k, v in asdict(self).items() if k in keep}


class Pipeline:
    """Runs named steps in order, skipping those already recorded as done in ``pipeline.json``."""

    def __init__(self, options: RunOptions, log: Callable[[str], None] = print) -> None:
        self.options = options
        self.root = Path(options.output).resolve()
        self.state_path = self.root / "pipeline.json"
        self.log = log
        self.state: dict[str, Any] = {"options": options.fingerprint(), "done": {}}
        if self.state_path.is_file():
            previous = json.loads(self.state_path.read_text(encoding="utf-8"))
            if previous.get("options") != options.fingerprint():
                raise DataError(f"{self.root}: this folder was made with other options "
                                f"({previous.get('options')}); choose another -o or delete the folder")
            self.state = previous

    def step(self, name: str, func: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run ``func`` unless ``name`` is recorded as done; record its result when it finishes."""
        if name in self.state["done"]:
            self.log(f"[{name}] done earlier, skipped")
            return self.state["done"][name]
        self.log(f"[{name}] ...")
        start = time.perf_counter()
        result = func()
        result["seconds"] = round(time.perf_counter() - start, 1)
        self.state["done"][name] = result
        self.root.mkdir(parents=True, exist_ok=True)
        write_json(self.state_path, self.state)
        self.log(f"[{name}] finished in {result['seconds']} s")
        return result


def run_pipeline(options: RunOptions, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the main job end to end and return the final summary (test AUROC and where things are)."""
    # Imported here so that `xrad --help` stays instant.
    from xrad.data.indexing import index_source
    from xrad.data.manifest import read_manifest, write_manifest
    from xrad.data.splits import SplitConfig, make_split, split_summary
    from xrad.data.synth import SynthConfig, generate_phantoms
    from xrad.preprocess import PreprocessParams
    from xrad.preprocess.cache import build_cache
    from xrad.training import run_training

    pipe = Pipeline(options, log)
    root = pipe.root
    data_dir, manifest_path, split_path = root / "data", root / "manifest.csv", root / "split.csv"
    cache_dir, run_dir = root / "cache", root / "detector"

    def synth() -> dict[str, Any]:
        truth = generate_phantoms(data_dir, SynthConfig(n_patients=options.patients, seed=options.seed,
                                                        size=options.image_px, difficulty=options.difficulty,
                                                        workers=options.workers))
        return {"images": int(len(truth)), "abnormal": int(truth["label"].sum()), "folder": str(data_dir)}

    def index() -> dict[str, Any]:
        frame = index_source(data_dir)
        write_manifest(frame, manifest_path)
        return {"images": int(len(frame)), "manifest": str(manifest_path)}

    def split() -> dict[str, Any]:
        frame = make_split(read_manifest(manifest_path), SplitConfig(
            seed=options.split_seed, abnormal_ratio=options.abnormal_ratio, known_normal=options.known_normal))
        write_manifest(frame, split_path)
        summary = split_summary(frame)
        log(summary.to_string(index=False))
        return {"manifest": str(split_path),
                "images": {s: int((frame["split"] == s).sum()) for s in ("train", "valid", "test")}}

    def preprocess() -> dict[str, Any]:
        summary = build_cache(read_manifest(split_path), cache_dir, PreprocessParams(size=options.image_px),
                              workers=options.workers)
        keep = ("images", "failed", "inverted", "uncropped", "low_contrast", "manifest")
        return {k: summary[k] for k in keep}

    def train() -> dict[str, Any]:
        summary = run_training(options.config, cache_dir / "manifest.csv", run_dir,
                               trainer_overrides=options.trainer_overrides or None)
        keep = ("method", "valid_auroc", "test_auroc", "n_spheres")
        return {**{k: summary[k] for k in keep if k in summary}, "run_dir": str(run_dir),
                "artefact": str(run_dir / "artefact"), "scores": str(run_dir / "scores_test.csv")}

    pipe.step("synth", synth)
    pipe.step("index", index)
    pipe.step("split", split)
    pipe.step("preprocess", preprocess)
    result = pipe.step("train", train)
    log(f"test AUROC {result.get('test_auroc', float('nan')):.3f} (validation {result.get('valid_auroc', float('nan')):.3f}); "
        f"scores: {result['scores']}; artefact: {result['artefact']}")
    log(f"score new images with: xrad score {result['artefact']} IMAGE_OR_FOLDER -o scores.csv")
    return pipe.state["done"]
