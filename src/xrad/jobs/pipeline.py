"""The main job, ``xrad run``: phantoms → index → split → preprocess → pre-train → fine-tune → score.

Each step writes its outputs atomically into one run folder and records what it was run with in
``pipeline.json``; re-running the same command skips finished steps (and the training steps resume from
their last checkpoint), so an interrupted run costs only the step that was running.

Every option is validated before any step runs or anything is written (:func:`validate_options`), so a typo
costs nothing and leaves no trace.

Which option changes a folder accepts. Each step depends on a few options (:data:`STEP_OPTIONS`) and on
everything the steps before it depend on, because it reads their outputs. Re-running a folder with changed
options is refused only when a changed option is one a *finished* step depends on: mixing outputs of two
settings would be silently wrong, and the message names that step. Any other change is accepted: the new
options are recorded, finished steps are kept and the unfinished steps run with the new values (e.g. a
corrected ``--config`` after the training step failed keeps the phantoms and the preprocessing cache). What an
unfinished step had left behind from an attempt with other options is deleted before it runs again, because
the step's own resume check would otherwise refuse it.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from xrad.errors import ConfigError, DataError
from xrad.utils.atomic import write_json

# The options each step depends on directly, in the order the steps run. `workers` and the trainer
# overrides only change speed and devices, never outputs, so no step depends on them. The seed of
# training comes from the detector config, so `seed` is the phantoms' only.
STEP_OPTIONS: dict[str, tuple[str, ...]] = {
    "synth": ("patients", "difficulty", "seed", "cache_px"),
    "index": (),
    "split": ("split_seed", "abnormal_ratio", "known_normal"),
    "preprocess": ("cache_px",),
    "train": ("config", "overrides"),
}


def option_flag(name: str) -> str:
    """The command-line spelling of a :class:`RunOptions` field: ``abnormal_ratio`` → ``--abnormal-ratio``."""
    return "--set" if name == "overrides" else "--" + name.replace("_", "-")


def step_dependencies(step: str) -> set[str]:
    """The options ``step`` depends on: its own and, through the outputs it reads, every earlier step's."""
    names = list(STEP_OPTIONS)
    return {option for earlier in names[: names.index(step) + 1] for option in STEP_OPTIONS[earlier]}


@dataclass
class RunOptions:
    """Options of ``xrad run``; defaults finish in minutes on 2 CPU cores."""

    output: Path = Path("runs/default")
    config: str = "synthetic_knn_cpu"
    patients: int = 160
    difficulty: float = 1.0
    seed: int = 0
    split_seed: int = 0
    abnormal_ratio: float = 0.05
    known_normal: float = 0.05
    cache_px: int = 256
    workers: int = 2
    overrides: tuple[str, ...] = ()  # --set KEY=VALUE for the detector config (the training seed: seed=N)
    trainer_overrides: dict[str, Any] = field(default_factory=dict)

    def fingerprint(self) -> dict[str, Any]:
        """The options that determine the outputs (workers and trainer devices do not). No overrides is
        recorded as no key at all, so folders made before ``--set`` existed keep matching."""
        keep = {option for options in STEP_OPTIONS.values() for option in options}
        out = {k: v for k, v in asdict(self).items() if k in keep}
        out["overrides"] = list(out["overrides"])
        if not out["overrides"]:
            del out["overrides"]
        return out


def _checked(flag: str, check: Callable[[], object]) -> None:
    """Run ``check``; re-raise its :class:`ConfigError` as one line that starts with the option's name."""
    try:
        check()
    except ConfigError as exc:
        raise ConfigError(f"{flag}: {exc}") from None


def validate_options(options: RunOptions) -> None:
    """Raise :class:`ConfigError` naming the option and the fix for any value a step would refuse.

    Runs before any step so that a typo fails in a second instead of after the phantoms and the cache were
    made. The checks are those of the steps themselves (the config loader, :meth:`SynthConfig.validate`,
    :meth:`SplitConfig.validate`, :class:`PreprocessParams`), so the two cannot drift apart.
    """
    from xrad.data.phantoms.generate import SynthConfig
    from xrad.data.splits import SplitConfig
    from xrad.methods.registry import load_config
    from xrad.preprocess import PreprocessParams

    # One field at a time, the others at their (valid) defaults, so that the message names the option
    # that is wrong; the step's own validate() cannot say which field a failed check was about.
    for name, synth_field in (
        ("patients", "n_patients"),
        ("difficulty", "difficulty"),
        ("cache_px", "size"),
        ("workers", "workers"),
    ):
        _checked(option_flag(name), SynthConfig(**{synth_field: getattr(options, name)}).validate)
    _checked(option_flag("cache_px"), lambda: PreprocessParams(size=options.cache_px))
    for name in ("seed", "split_seed"):  # numpy refuses negative seeds, deep inside a step
        if getattr(options, name) < 0:
            raise ConfigError(f"{option_flag(name)}: must be ≥ 0, got {getattr(options, name)}")
    # known_normal must fit in the normal share of train (1 - abnormal_ratio): check each fraction alone
    # (with the other at 0, which never trips that joint rule), then the pair.
    _checked(
        option_flag("abnormal_ratio"), SplitConfig(abnormal_ratio=options.abnormal_ratio, known_normal=0.0).validate
    )
    _checked(option_flag("known_normal"), SplitConfig(abnormal_ratio=0.0, known_normal=options.known_normal).validate)
    _checked(
        f"{option_flag('known_normal')} with {option_flag('abnormal_ratio')}",
        SplitConfig(
            seed=options.split_seed, abnormal_ratio=options.abnormal_ratio, known_normal=options.known_normal
        ).validate,
    )
    _checked(option_flag("config"), lambda: load_config(options.config))
    _checked("--set", lambda: load_config(options.config, options.overrides))


class Pipeline:
    """Runs named steps in order, skipping those already recorded as done in ``pipeline.json``.

    Opening a folder refuses option changes that would invalidate a finished step (see the module
    docstring), then records the current options at once, so that a later run knows which options an
    unfinished step's leftovers were made with.
    """

    def __init__(self, options: RunOptions, log: Callable[[str], None] = print) -> None:
        self.options = options
        self.root = Path(options.output).resolve()
        self.state_path = self.root / "pipeline.json"
        self.log = log
        fingerprint = options.fingerprint()
        self.state: dict[str, Any] = {"options": fingerprint, "done": {}}
        # Unfinished steps whose leftovers (if any) were made with other options: they start afresh.
        self.stale: set[str] = set()
        if self.state_path.is_file():
            try:
                previous = json.loads(self.state_path.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise DataError(
                    f"{self.state_path}: not a pipeline record (not JSON); choose another -o or delete the folder"
                ) from None
            recorded = dict(previous.get("options") or {})
            if "image_px" in recorded:  # the cache size's name before xrad.config.sizes gave it one
                recorded.setdefault("cache_px", recorded.pop("image_px"))
            done = previous.get("done") or {}
            # A key missing from an older record counts as changed: unknown is not the same. The one key that
            # may be absent on purpose (no --set) is compared as absent on both sides.
            keys = list(fingerprint) + [k for k in ("overrides",) if k in recorded and k not in fingerprint]
            changed = [k for k in keys if k not in recorded or recorded[k] != fingerprint.get(k)]
            for step in STEP_OPTIONS:  # in running order, so the earliest invalidated step is named
                hit = [k for k in changed if k in step_dependencies(step)]
                if step in done and hit:
                    what = ", ".join(f"{option_flag(k)} {fingerprint.get(k)} (was {recorded.get(k)})" for k in hit)
                    raise DataError(
                        f"{self.root}: {what} would invalidate the finished step '{step}'; "
                        "re-run with the recorded value, or choose another -o (or delete the "
                        "folder)"
                    )
                if hit:
                    self.stale.add(step)
            self.state = {**previous, "options": fingerprint, "done": done}
            if changed:
                flags = ", ".join(option_flag(k) for k in changed)
                self.log(
                    f"options changed since the last run ({flags}); they only affect unfinished steps: "
                    "finished ones are kept"
                )
        self.root.mkdir(parents=True, exist_ok=True)
        write_json(self.state_path, self.state)

    def step(self, name: str, func: Callable[[], dict[str, Any]], outputs: Iterable[Path] = ()) -> dict[str, Any]:
        """Run ``func`` unless ``name`` is recorded as done; record its result when it finishes.

        ``outputs`` (files or folders) are deleted first when the step is stale: they were left by an
        attempt with other options, which the step's own resume check would refuse.
        """
        if name in self.state["done"]:
            self.log(f"[{name}] done earlier, skipped")
            recorded: dict[str, Any] = self.state["done"][name]
            return recorded
        if name in self.stale:
            leftovers = [p for p in outputs if p.exists()]
            if leftovers:
                self.log(
                    f"[{name}] deleting what an unfinished attempt with other options left: "
                    + ", ".join(str(p) for p in leftovers)
                )
            for path in leftovers:
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        self.log(f"[{name}] ...")
        start = time.perf_counter()
        result = func()
        result["seconds"] = round(time.perf_counter() - start, 1)
        self.state["done"][name] = result
        write_json(self.state_path, self.state)
        self.log(f"[{name}] finished in {result['seconds']} s")
        return result


def _kind_summary(scores_path: Path, data_dir: Path) -> str:
    """The test AUROC per anomaly kind of the phantoms (normals against each kind), as a small table."""
    import pandas as pd

    from xrad.evaluation.by_kind import auroc_by_kind, kind_table, phantom_kinds

    frame = phantom_kinds(pd.read_csv(scores_path), data_dir)
    values = auroc_by_kind(frame["label"], frame["anomaly_type"], frame["score"])
    return "test AUROC per anomaly kind (normals against each kind):\n" + kind_table({"detector": values})


def run_pipeline(options: RunOptions, log: Callable[[str], None] = print, until: str | None = None) -> dict[str, Any]:
    """Run the main job end to end and return the final summary (test AUROC and where things are).

    ``until`` names the last step to run (e.g. ``"preprocess"``: the data of a run without training it); the
    return value is then the recorded results of the steps done so far.
    """
    if until is not None and until not in STEP_OPTIONS:
        raise ConfigError(f"until must be one of {list(STEP_OPTIONS)}, got {until!r}")
    # Imported here so that `xrad --help` stays instant.
    from xrad.data.indexing import index_source
    from xrad.data.manifest import read_manifest, write_manifest
    from xrad.data.phantoms.generate import SynthConfig, generate_phantoms
    from xrad.data.splits import SplitConfig, make_split, split_summary
    from xrad.jobs.train import run_training
    from xrad.preprocess import PreprocessParams
    from xrad.preprocess.cache import build_cache

    validate_options(options)  # before the folder is touched: a typo must cost no step and leave no record
    pipe = Pipeline(options, log)
    root = pipe.root
    data_dir, manifest_path, split_path = root / "data", root / "manifest.csv", root / "split.csv"
    cache_dir, run_dir = root / "cache", root / "detector"

    def synth() -> dict[str, Any]:
        truth = generate_phantoms(
            data_dir,
            SynthConfig(
                n_patients=options.patients,
                seed=options.seed,
                size=options.cache_px,
                difficulty=options.difficulty,
                workers=options.workers,
            ),
        )
        return {"images": int(len(truth)), "abnormal": int(truth["label"].sum()), "folder": str(data_dir)}

    def index() -> dict[str, Any]:
        frame = index_source(data_dir)
        write_manifest(frame, manifest_path)
        return {"images": int(len(frame)), "manifest": str(manifest_path)}

    def split() -> dict[str, Any]:
        frame = make_split(
            read_manifest(manifest_path),
            SplitConfig(
                seed=options.split_seed, abnormal_ratio=options.abnormal_ratio, known_normal=options.known_normal
            ),
        )
        write_manifest(frame, split_path)
        images = {s: int((frame["split"] == s).sum()) for s in ("train", "valid", "test")}
        abnormal = {s: int(((frame["split"] == s) & (frame["label"] == 1)).sum()) for s in images}
        log("split: " + ", ".join(f"{s} {images[s]} images ({abnormal[s]} abnormal)" for s in images))
        # The per-body-part table is detail (`--verbose`): at 160 patients it alone was 4 kB of the console.
        logging.getLogger("xrad.pipeline").debug(split_summary(frame).to_string(index=False))
        return {
            "manifest": str(split_path),
            "images": images,
        }

    def preprocess() -> dict[str, Any]:
        summary = build_cache(
            read_manifest(split_path), cache_dir, PreprocessParams(size=options.cache_px), workers=options.workers
        )
        keep = ("images", "failed", "inverted", "uncropped", "low_contrast", "manifest")
        return {k: summary[k] for k in keep}

    def train() -> dict[str, Any]:
        summary = run_training(
            options.config,
            cache_dir / "manifest.csv",
            run_dir,
            overrides=options.overrides,
            trainer_overrides=options.trainer_overrides or None,
        )
        keep = ("method", "valid_auroc", "test_auroc", "n_spheres")
        return {
            **{k: summary[k] for k in keep if k in summary},
            "run_dir": str(run_dir),
            "artefact": str(run_dir / "artefact"),
            "scores": str(run_dir / "scores_test.csv"),
        }

    steps = {
        "synth": (synth, data_dir),
        "index": (index, manifest_path),
        "split": (split, split_path),
        "preprocess": (preprocess, cache_dir),
        "train": (train, run_dir),
    }
    for name, (func, outputs) in steps.items():
        result = pipe.step(name, func, [outputs])
        if name == until:
            return dict(pipe.state["done"])
    log(
        f"test AUROC {result.get('test_auroc', float('nan')):.3f} "
        f"(validation {result.get('valid_auroc', float('nan')):.3f}); "
        f"scores: {result['scores']}; artefact: {result['artefact']}"
    )
    if Path(result["scores"]).is_file():  # a detector scores its test split; no test split, no table
        log(_kind_summary(Path(result["scores"]), data_dir))
    log(f"score new images with: xrad score {result['artefact']} IMAGE_OR_FOLDER -o scores.csv")
    done: dict[str, Any] = pipe.state["done"]
    return done
