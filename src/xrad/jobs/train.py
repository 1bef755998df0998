"""``run_training``: the one entry point of ``xrad train``, ``xrad run`` and ``xrad benchmark``.

The run folder's files are named by :class:`xrad.run_folder.RunFolder`.

Re-running the same command resumes: finished stages are loaded, an unfinished one continues from its
last checkpoint. Only global rank 0 writes files; under DDP the other ranks train and then return.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from xrad.config import Config, comparable_config, config_to_dict, dump_config
from xrad.data.manifest import CORE_COLUMNS, read_manifest
from xrad.data.splits import check_image_leakage
from xrad.errors import ConfigError, DataError
from xrad.evaluation.metrics import auroc
from xrad.inference.artefact import ArtefactMeta, package_versions, save_artefact
from xrad.methods.registry import Detector, get_detector, load_config, stage_epochs
from xrad.run_folder import RunFolder
from xrad.training.banks import ImageBank, load_image_bank
from xrad.training.context import RunContext, env_global_rank
from xrad.utils.atomic import write_csv, write_json, write_text
from xrad.utils.hashing import sha256_file

SCORE_COLUMNS = ("path", "patient_id", "study_id", "body_part", "label", "split", "score", "sphere")
SPLITS = ("train", "valid", "test")


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[3]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _check_same_config(folder: RunFolder, cfg: Config) -> None:
    """Refuse a run folder that holds a run with another config. The recorded config is read back through
    today's loader, so keys added to xrad since (with their defaults) do not count as a change."""
    import yaml

    path = folder.config
    if not path.is_file():
        return
    old = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    try:
        old = config_to_dict(load_config(old))
    except ConfigError:
        pass  # not loadable any more (a removed key...): compared as written, so it differs
    if comparable_config(old) != comparable_config(config_to_dict(cfg)):
        raise ConfigError(
            f"{path}: this run folder holds a run with a different config; choose a new -o folder "
            "(or delete the old run to start over)"
        )


def _preprocessing_params(frame: pd.DataFrame) -> dict[str, Any] | None:
    """The cache's params.json (xrad preprocess) for the artefact; None when images were not preprocessed."""
    if "cache_path" not in frame.columns:
        return None
    paths = [p for p in frame["cache_path"].astype(str) if p]
    if not paths:
        return None
    for parent in list(Path(paths[0]).parents)[:3]:
        candidate = parent / "params.json"
        if candidate.is_file():
            params: dict[str, Any] = json.loads(candidate.read_text(encoding="utf-8"))
            return params
    return None


def _data_summary(frame: pd.DataFrame, manifest: Path) -> dict[str, Any]:
    from xrad.inference.readout import is_phantom_path

    train = frame[frame["split"] == "train"]
    semi = train["semi_label"] if "semi_label" in train.columns else pd.Series(0, index=train.index)
    summary: dict[str, Any] = {
        "manifest": str(manifest.resolve()),
        "manifest_sha256": sha256_file(manifest),
        "images": {s: int((frame["split"] == s).sum()) for s in SPLITS},
        "train_semi_labels": {
            "known_normal": int((semi == 1).sum()),
            "unlabelled": int((semi == 0).sum()),
            "known_abnormal": int((semi == -1).sum()),
        },
        "labels": {
            s: {str(k): int(v) for k, v in frame.loc[frame["split"] == s, "label"].value_counts().items()}
            for s in SPLITS
        },
    }
    # A detector trained on generated phantoms says so whenever it scores (xrad.inference.readout).
    summary["phantoms"] = bool(len(train)) and all(is_phantom_path(p) for p in train["path"].head(5))
    if "body_part" in frame.columns:
        summary["train_body_parts"] = {str(k): int(v) for k, v in train["body_part"].value_counts().items()}
    return summary


def _read_metrics(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _score_split(scorer: Any, bank: ImageBank, batch_size: int, with_embeddings: bool) -> dict[str, Any]:
    out = scorer.score_batches(bank.images, bank.masks, batch_size=batch_size, with_embeddings=with_embeddings)
    frame = bank.frame.copy()
    frame["score"] = out["score"].numpy()
    frame["sphere"] = out["sphere"].numpy()
    for column in SCORE_COLUMNS:
        if column not in frame.columns:
            frame[column] = ""
    return {"frame": frame[list(SCORE_COLUMNS)], "raw": out}


@torch.no_grad()
def _encoder_embeddings(encoder: Any, bank: ImageBank, batch_size: int, device: torch.device) -> dict[str, Tensor]:
    """h and z of a stage-1 encoder on deterministic inputs of ``bank`` (eval mode), on the CPU."""
    from xrad.data.model_input import prepare_eval

    encoder = encoder.eval().to(device)
    parts: dict[str, list[Tensor]] = {"h": [], "z": []}
    for start in range(0, len(bank), batch_size):
        x = prepare_eval(
            bank.images[start : start + batch_size].to(device), bank.masks[start : start + batch_size].to(device)
        )
        h, z = encoder(x)
        parts["h"].append(h.float().cpu())
        parts["z"].append(z.float().cpu())
    encoder.cpu()
    return {k: torch.cat(v) for k, v in parts.items()}


def _finalise(
    ctx: RunContext,
    detector: Detector,
    final: Any,
    frame: pd.DataFrame,
    manifest: Path,
    started: float,
    pretext: Any = None,
) -> dict[str, Any]:
    """Artefact, test/valid scores (through the reloaded artefact), embeddings and summary. ``pretext`` is
    the first stage's result of a multi-stage detector: when it carries an encoder, the validation images'
    embeddings by it are written beside the final ones (Fig. 9)."""
    from safetensors.torch import save

    from xrad.data.model_input import input_appearance
    from xrad.inference.artefact import update_artefact_meta
    from xrad.inference.heatmaps import heat_scale_of
    from xrad.inference.readout import appearance_reference, input_statistics, normal_reference, statistics_reference
    from xrad.inference.scoring import load_scorer
    from xrad.utils.atomic import write_bytes

    cfg, folder = ctx.config, ctx.folder
    t0 = time.perf_counter()
    scorer = final.scorer(cfg)
    tensors, args = scorer.artefact_state()
    meta = ArtefactMeta(
        method=cfg.method,
        scorer_kind=scorer.kind,
        scorer_args=args,
        image_size=cfg.data.image_size,
        input="uint8 image x 0/1 mask, float in [0, 1] (xrad.data.model_input.prepare_eval)",
        preprocessing=_preprocessing_params(frame),
        config=config_to_dict(cfg),
        training_data=_data_summary(frame, manifest),
        extra=scorer.artefact_meta_fields(),
    )
    save_artefact(folder.artefact, tensors, meta)
    # Score through the artefact as it was written: what `xrad score` will reproduce.
    scorer = load_scorer(folder.artefact, device=ctx.device)
    results: dict[str, Any] = {}
    for split in ("valid", "test"):
        bank = ctx.banks[split]
        scored = _score_split(scorer, bank, cfg.data.eval_batch_size, with_embeddings=True)
        write_csv(folder.scores(split), scored["frame"])
        results[split] = auroc(bank.labels.numpy(), scored["raw"]["score"].numpy())
        if split == "valid" and len(bank):
            raw = scored["raw"]
            valid = {k: raw[k] for k in ("h", "z") if k in raw}
            write_bytes(folder.valid_embeddings(), save({**valid, "labels": bank.labels.clone().contiguous()}))
            if pretext is not None and hasattr(pretext, "encoder"):
                emb = _encoder_embeddings(pretext.encoder, bank, cfg.data.eval_batch_size, ctx.device)
                emb["labels"] = bank.labels.clone()
                write_bytes(folder.valid_embeddings(pretext=True), save({k: v.contiguous() for k, v in emb.items()}))
        if split == "valid":  # every later score is read as a percentile among these normals
            reference = normal_reference(bank.labels.numpy(), scored["raw"]["score"].numpy(), split)
            if reference is not None:  # and every heatmap is drawn on one scale fixed by their maps
                normals = torch.nonzero(bank.labels == 0).flatten()
                reference["heat_scale"] = heat_scale_of(scorer, bank.images[normals], bank.masks[normals])
                # The brightness/contrast range and the layout an input is compared with, both from the
                # training images not known to be abnormal (a known plate must neither widen the brightness
                # range nor make every plated input look familiar).
                train, usual = ctx.banks["train"], ctx.normal_train_rows()
                stats = input_statistics(train.images[usual].numpy(), train.masks[usual].numpy())
                reference["statistics"] = statistics_reference(stats)
                looks = input_appearance(train.images[usual].numpy(), train.masks[usual].numpy())
                reference["appearance"] = appearance_reference(looks, seed=cfg.seed)
            update_artefact_meta(folder.artefact, normal_reference=reference)
        if split == "test":
            raw = scored["raw"]
            embeddings = {k: raw[k] for k in ("h", "z") if k in raw}
            embeddings.update(sphere=raw["sphere"], labels=bank.labels.clone(), score=raw["score"])
            write_bytes(folder.embeddings, save({k: v.contiguous() for k, v in embeddings.items()}))
    ctx.timings["scoring"] = time.perf_counter() - t0
    last_rows = _read_metrics(folder.stage_metrics(detector.stage_names[-1]))
    history = [int(float(r["n_spheres"])) for r in last_rows if r.get("n_spheres")]
    summary = {
        "method": cfg.method,
        "seed": cfg.seed,
        "valid_auroc": results["valid"],
        "test_auroc": results["test"],
        "n_spheres": meta.extra.get("n_spheres"),
        "n_spheres_history": history,
        "valid_auroc_history": [float(r["valid_auroc"]) if r.get("valid_auroc") else None for r in last_rows],
        "n_images": {s: len(ctx.banks[s]) for s in SPLITS},
        "timings_s": {**ctx.timings, "total_this_invocation": time.perf_counter() - started},
        "artefact": str(folder.artefact),
    }
    write_json(folder.summary, summary)
    return summary


def _load_banks(
    cfg: Config, frame: pd.DataFrame, folder: RunFolder, progress: bool, write: bool = True
) -> dict[str, ImageBank]:
    """The three banks. An image that cannot be read is left out of its bank (never stopping the run) and
    listed, with its one-line reason, in the run folder's ``unreadable.csv`` and a warning."""
    import warnings

    cache_dir = Path(cfg.data.cache_dir) if cfg.data.cache_dir else folder.bank_cache
    banks = {}
    for split in SPLITS:
        banks[split] = load_image_bank(
            frame[frame["split"] == split],
            cfg.data.image_size,
            workers=cfg.data.decode_workers,
            cache_dir=cache_dir,
            progress=progress,
            on_error="skip",
        )
    failures = pd.concat([banks[s].failures.drop(columns="row").assign(split=s) for s in SPLITS], ignore_index=True)
    if write:
        if len(failures):
            write_csv(folder.unreadable, failures[["split", "path", "reason"]])
        elif folder.unreadable.is_file():
            folder.unreadable.unlink()
    if len(failures):
        warnings.warn(
            f"{len(failures)} image(s) could not be read and are left out (listed in {folder.unreadable}), "
            f"e.g. {failures['reason'].iloc[0]}",
            stacklevel=3,
        )
    odd = [
        (s, path, why) for s in SPLITS for path, why in zip(banks[s].frame.get("path", ""), banks[s].degenerate) if why
    ]
    if odd:  # kept (a data set may hold a few), but said: their scores and gradients mean little
        warnings.warn(
            f"{len(odd)} image(s) are degenerate (tiny or constant), e.g. {odd[0][1]} in {odd[0][0]}: {odd[0][2]}",
            stacklevel=3,
        )
    if len(banks["train"]) == 0:
        raise DataError(
            "the manifest has no readable train rows; make a split with `xrad split`"
            + (f" (see {folder.unreadable})" if len(failures) else "")
        )
    return banks


def run_training(
    config: str | Path | dict[str, Any] | Config,
    manifest: str | Path,
    run_dir: str | Path,
    *,
    stages: tuple[str, ...] | list[str] | None = None,
    trainer_overrides: dict[str, Any] | None = None,
    progress: bool = True,
    overrides: tuple[str, ...] | list[str] = (),
    allow_leakage: bool = False,
) -> dict[str, Any]:
    """Train the configured detector on a split manifest into ``run_dir`` (resuming what is there).

    ``config`` is a YAML path, a packaged config name, a mapping or a :class:`Config`; ``overrides`` are
    ``section.key=value`` strings; ``trainer_overrides`` go straight to ``lightning.Trainer`` (e.g.
    ``{"accelerator": "cpu", "devices": 2, "strategy": "ddp"}``, or test callbacks). ``stages`` selects
    which of the method's stages to run (None: all of them); earlier stages must be finished already.
    A manifest with one image in two splits (same path or same content) is refused unless ``allow_leakage``.

    Returns the run summary (also ``run_dir/summary.json``) once every stage is finished; otherwise
    ``{"finished_stages": [...]}``. On DDP ranks other than 0 it returns ``{}`` after training.
    """
    import lightning as L

    started = time.perf_counter()
    cfg = load_config(config, overrides)
    detector = get_detector(cfg.method)
    names = detector.stage_names
    stages = names if stages is None else tuple(stages)
    unknown = [s for s in stages if s not in names]
    if unknown:
        raise ConfigError(f"stage(s) {unknown} unknown to method {cfg.method!r}; choose from {list(names)}")
    manifest, run_dir = Path(manifest), Path(run_dir)
    folder = RunFolder(run_dir)
    frame = read_manifest(manifest, require=CORE_COLUMNS + ("split",))
    if not allow_leakage:  # before anything is written or trained
        check_image_leakage(frame, str(manifest))
    rank0 = env_global_rank() == 0
    _check_same_config(folder, cfg)
    if rank0:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(folder.config, dump_config(cfg))
        write_json(
            folder.env,
            {
                "versions": package_versions(),
                "seed": cfg.seed,
                "deterministic": cfg.deterministic,
                "git_commit": _git_commit(),
                "argv": sys.argv,
                "python": sys.version,
                "platform": platform.platform(),
                "cpu_count": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    banks = _load_banks(cfg, frame, folder, progress and rank0, write=rank0)
    ctx = RunContext(cfg, run_dir, banks, dict(trainer_overrides or {}), progress, global_rank=0 if rank0 else 1)
    ran_any = False
    result: Any = None  # the result of the last stage reached, handed to the next one
    first: Any = None  # stage 1's result (its encoder's validation embeddings: Fig. 9)
    for index, (stage, spec) in enumerate(detector.stages):
        done = folder.stage_done(stage)
        if index == 1:
            first = result
        if done.is_file():
            result = spec.implementation().load(ctx, stage, result)
            ctx.timings[stage] = float(json.loads(done.read_text(encoding="utf-8")).get("seconds", 0.0))
            continue
        if stage not in stages:
            if any(s in stages for s in names[index + 1 :]):
                raise ConfigError(
                    f"{run_dir}: stage {stage!r} is not finished; run `xrad train --stage {stage}` "
                    "(or --stage all) first"
                )
            break
        t0 = time.perf_counter()
        result = spec.implementation().run(ctx, stage, result)
        ctx.timings[stage] = time.perf_counter() - t0
        ran_any = True
        if ctx.is_global_zero:
            write_json(done, {"stage": stage, "seconds": ctx.timings[stage], "epochs": stage_epochs(cfg, stage)})
            # A finished stage is reloaded from its exported safetensors, never from a Lightning checkpoint;
            # the checkpoints (weights + optimiser state, ~3x the weights) would only fill the disk.
            shutil.rmtree(folder.checkpoints(stage), ignore_errors=True)
    finished = [s for s in names if folder.stage_done(s).is_file()]
    if not ctx.is_global_zero:
        return {}
    if len(finished) < len(names):
        return {"finished_stages": finished}
    if not ran_any and folder.summary.is_file() and (folder.artefact / "artefact.json").is_file():
        summary: dict[str, Any] = json.loads(folder.summary.read_text(encoding="utf-8"))
        return summary
    return _finalise(ctx, detector, result, frame, manifest, started, pretext=first)
