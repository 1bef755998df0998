"""Phantom radiographs in MURA's exact layout, with pixel ground truth (``xrad synth``).

The embedded default data set and the test fixture of xrad. Output under ``out_dir``::

    MURA-v1.1/{train,valid}/XR_<PART>/patient<5 digits>/study<n>_<positive|negative>/image<k>.png
    MURA-v1.1/{train,valid}_image_paths.csv       no header, one column (the image path)
    MURA-v1.1/{train,valid}_labeled_studies.csv   no header, "<study folder>/,<0|1>"
    ground_truth/<same relative path>/image<k>_body.png, image<k>_anomaly.png   0/1 uint8 masks
    ground_truth.csv                              one row per image (columns: GROUND_TRUTH_COLUMNS)
    synth_config.json                             the configuration (resuming needs an identical one)

Images are 8-bit greyscale PNGs; a fraction ``rgb_rate`` is RGB-encoded greyscale (R = G = B) like some
real MURA files. Masks live outside ``MURA-v1.1`` so a MURA indexer never sees them.

Census (who has what): patients 1..n_train are in ``train``, the next ones in ``valid`` (ids never
shared). A patient has 1–3 body parts (the first part of patient k < 7 is ``PARTS[k]``, so all seven
parts exist once n_patients >= 7); a (patient, part) unit has 1–4 studies, numbered per folder as in
MURA; a study has 1–4 views; each study is positive with probability ``abnormal_study_rate``.
Guarantees: when n_patients >= 5 the first unit of patient 1 has 10–12 studies (multi-digit study
numbers) and is *mixed* (both labels); otherwise the first unit with >= 2 studies is made mixed.
Every image of a positive study carries its study's anomaly, visible in each view (see
:mod:`xrad.data.phantoms.anomalies`), with a non-empty anomaly mask.

Determinism: every random draw comes from ``np.random.SeedSequence(seed, spawn_key=...)`` keyed by
(purpose, patient, part, study, image), so the output is byte-identical for a seed whatever ``workers``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import pandas as pd

from xrad.config.sizes import cache_size_problem
from xrad.data.phantoms.anatomy import PARTS, VIEW_KINDS, build_skeleton, sample_patient
from xrad.data.phantoms.anomalies import ANOMALY_TYPES, render_view, sample_spec
from xrad.data.phantoms.render import plan_geometry
from xrad.errors import ConfigError
from xrad.utils.atomic import write_csv, write_json

GENERATOR_VERSION = 2  # bump when the rendering changes: a resumed folder must not mix versions
CONFIG_FILE = "synth_config.json"
GROUND_TRUTH_COLUMNS: tuple[str, ...] = (
    "path",
    "mura_split",
    "body_part",
    "patient_id",
    "study",
    "study_number",
    "image_number",
    "label",
    "anomaly_type",
    "inverted",
    "carrier_rotation_deg",
    "carrier_corners",
    "body_mask_path",
    "anomaly_mask_path",
    "carrier_clipped",
    "rgb_encoded",
    "marker",
)


def _default_mix() -> dict[str, float]:
    # subtle kinds (lesion, cortical_bump) are a minority: most anomalies stay visible to the eye at 64 px.
    # Visible is not learnable: see benchmarks/bench_reference_points.py for what models reach on them.
    return {
        "plate": 0.3,
        "screws": 0.2,
        "fracture_gap": 0.2,
        "displaced_fragment": 0.2,
        "lesion": 0.05,
        "cortical_bump": 0.05,
    }


def _default_parts() -> dict[str, float]:
    # roughly MURA's share of studies per body part
    return {
        "ELBOW": 0.13,
        "FINGER": 0.14,
        "FOREARM": 0.06,
        "HAND": 0.15,
        "HUMERUS": 0.05,
        "SHOULDER": 0.22,
        "WRIST": 0.25,
    }


@dataclass
class SynthConfig:
    """Knobs of the phantom generator (every field is stored in ``synth_config.json``).

    Layout: ``n_patients`` (100), ``seed`` (0), ``size`` (256: major axis in px; the minor axis is
    0.6–1.0 of it, portrait 80 % of the time), ``valid_fraction`` (0.15 of patients under ``valid``),
    ``abnormal_study_rate`` (0.35: probability a study is positive), ``part_weights`` (share of body
    parts, MURA-like).

    Difficulty: ``difficulty`` (1.0; anomaly contrast is multiplied by 1/difficulty and sizes by its
    square root: 2.0 is harder, 0.5 easier), ``anomaly_mix`` (relative weights of the kinds: plate and
    screws are clear, fracture_gap / displaced_fragment visible, lesion / cortical_bump subtle),
    ``noise`` (1.0: multiplies the signal-dependent noise, std ≈ 0.6–2.4 % of full scale at 1.0).

    Nuisances: ``inverted_rate`` (0.1: white-background images), ``rotated_carrier_rate`` (0.3) with
    ``max_carrier_rotation`` (15°), ``clipped_carrier_rate`` (0.08: an axis-aligned carrier running past
    one image edge — its corners then lie outside the image), ``marker_rate`` (0.85: burned-in L/R
    marker), ``rgb_rate`` (0.05: RGB-encoded greyscale files).

    Execution (not part of the output's identity): ``workers`` (min(2, cpus) processes).
    """

    n_patients: int = 100
    seed: int = 0
    size: int = 256
    valid_fraction: float = 0.15
    abnormal_study_rate: float = 0.35
    difficulty: float = 1.0
    anomaly_mix: dict[str, float] = field(default_factory=_default_mix)
    noise: float = 1.0
    inverted_rate: float = 0.1
    rotated_carrier_rate: float = 0.3
    max_carrier_rotation: float = 15.0
    clipped_carrier_rate: float = 0.08
    marker_rate: float = 0.85
    rgb_rate: float = 0.05
    part_weights: dict[str, float] = field(default_factory=_default_parts)
    workers: int = field(default_factory=lambda: min(2, os.cpu_count() or 1))

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values the generator cannot honour."""
        checks = [
            (1 <= self.n_patients <= 99_999, "n_patients must be 1..99999 (5-digit patient ids)"),
            (cache_size_problem(self.size) is None, f"size {cache_size_problem(self.size)}"),
            (0 <= self.valid_fraction < 1, "valid_fraction must be in [0, 1)"),
            (0 <= self.abnormal_study_rate <= 1, "abnormal_study_rate must be in [0, 1]"),
            (self.difficulty > 0, "difficulty must be > 0"),
            (self.noise >= 0, "noise must be >= 0"),
            (
                set(self.anomaly_mix) <= set(ANOMALY_TYPES)
                and sum(self.anomaly_mix.values()) > 0
                and min(self.anomaly_mix.values()) >= 0,
                f"anomaly_mix keys must be among {ANOMALY_TYPES}",
            ),
            (
                set(self.part_weights) <= set(PARTS) and sum(self.part_weights.values()) > 0,
                f"part_weights keys must be among {PARTS}",
            ),
            (self.workers >= 1, "workers must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"synth config: {message}")

    def identity(self) -> dict[str, Any]:
        """The fields that determine the output (everything but ``workers``)."""
        out = asdict(self)
        out.pop("workers")
        out["generator_version"] = GENERATOR_VERSION
        return out


class Unit(TypedDict):
    """One (patient, body part) of the census: its split and its studies, each ``(label, number of views)``."""

    patient: int
    part: int  # index into PARTS
    split: str
    studies: list[tuple[int, int]]


def _rng(config: SynthConfig, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=tuple(int(k) for k in key)))


def plan_census(config: SynthConfig) -> list[Unit]:
    """The units: one dict per (patient, body part) with its split and studies (label, number of views)."""
    rng = _rng(config, 0)
    n = config.n_patients
    n_valid = int(round(n * config.valid_fraction))
    if config.valid_fraction > 0 and n >= 2:
        n_valid = min(max(n_valid, 1), n - 1)
    weights = np.array([config.part_weights.get(p, 0.0) for p in PARTS], float)
    units: list[Unit] = []
    for pid in range(1, n + 1):
        # at most as many parts as have weight (a one-part data set must not ask for three distinct parts)
        n_parts = min(int(rng.choice([1, 2, 3], p=[0.8, 0.15, 0.05])), int((weights > 0).sum()))
        parts = [int(x) for x in rng.choice(len(PARTS), size=n_parts, replace=False, p=weights / weights.sum())]
        if pid <= len(PARTS) and weights[pid - 1] > 0:  # coverage: every part present once n >= 7
            parts = [pid - 1] + [x for x in parts if x != pid - 1][: n_parts - 1]
        for part in sorted(parts):
            n_studies = int(rng.choice([1, 2, 3, 4], p=[0.8, 0.13, 0.05, 0.02]))
            studies = [
                (
                    int(rng.random() < config.abnormal_study_rate),
                    int(rng.choice([1, 2, 3, 4], p=[0.12, 0.33, 0.45, 0.1])),
                )
                for _ in range(n_studies)
            ]
            units.append(
                {"patient": pid, "part": part, "split": "train" if pid <= n - n_valid else "valid", "studies": studies}
            )
    if n >= 5:  # the multi-digit-study unit: patient 1's first unit
        big = units[0]
        extra = int(rng.integers(10, 13)) - len(big["studies"])
        big["studies"] += [
            (int(rng.random() < config.abnormal_study_rate), int(rng.integers(1, 5))) for _ in range(max(extra, 0))
        ]
        candidates = [big]
    else:
        candidates = [u for u in units if len(u["studies"]) >= 2][:1]
    if candidates and not any(len({s[0] for s in u["studies"]}) == 2 for u in units):
        studies = candidates[0]["studies"]
        studies[-1] = (1 - studies[0][0], studies[-1][1])
    return units


def _relpaths(unit: Unit, study: int, image: int, label: int) -> tuple[str, str, str, str]:
    folder = (
        f"MURA-v1.1/{unit['split']}/XR_{PARTS[unit['part']]}/patient{unit['patient']:05d}/"
        f"study{study}_{'positive' if label else 'negative'}"
    )
    return (
        folder,
        f"{folder}/image{image}.png",
        f"ground_truth/{folder}/image{image}_body.png",
        f"ground_truth/{folder}/image{image}_anomaly.png",
    )


def _anomaly_kind(config: SynthConfig, rng: np.random.Generator) -> str:
    kinds = [k for k in ANOMALY_TYPES if config.anomaly_mix.get(k, 0) > 0]
    w = np.array([config.anomaly_mix[k] for k in kinds], float)
    return kinds[int(rng.choice(len(kinds), p=w / w.sum()))]


def render_unit(config: SynthConfig, unit: Unit, out_dir: str) -> list[dict[str, Any]]:
    """Render (or, on resume, skip existing) every image of one unit; return its ground-truth rows."""
    from xrad.data.io import write_png

    out, part = Path(out_dir), PARTS[unit["part"]]
    pid, pidx = unit["patient"], unit["part"]
    patient = sample_patient(part, _rng(config, 1, pid, pidx))
    letter = "L" if patient["left"] else "R"
    rows, pending = [], []
    for s, (label, n_views) in enumerate(unit["studies"], start=1):
        study_rng = _rng(config, 2, pid, pidx, s)
        kind = _anomaly_kind(config, study_rng) if label else ""
        geoms = [
            plan_geometry(
                config.size,
                _rng(config, 3, pid, pidx, s, k),
                rotated_rate=config.rotated_carrier_rate,
                max_rotation=config.max_carrier_rotation,
                clipped_rate=config.clipped_carrier_rate,
                inverted_rate=config.inverted_rate,
                rgb_rate=config.rgb_rate,
                marker_rate=config.marker_rate,
            )
            for k in range(1, n_views + 1)
        ]
        paths = [_relpaths(unit, s, k, label) for k in range(1, n_views + 1)]
        done = all(
            (out / p[1]).is_file() and (out / p[2]).is_file() and (not label or (out / p[3]).is_file()) for p in paths
        )
        if not done:
            writer = _writer()
            skeletons = [build_skeleton(part, patient, VIEW_KINDS[k]) for k in range(n_views)]
            spec = sample_spec(kind, skeletons, geoms, study_rng) if label else None
            for k, (geom, sk, p) in enumerate(zip(geoms, skeletons, paths), start=1):
                if (out / p[1]).is_file() and (out / p[2]).is_file() and (not label or (out / p[3]).is_file()):
                    continue  # this view is finished (the study is re-rendered only for its missing views)
                image, body, anomaly = render_view(
                    sk, geom, spec, 1.0 / config.difficulty, config.noise, letter, _rng(config, 4, pid, pidx, s, k)
                )
                # resume checks all three files, so their order of completion does not matter
                for rel, pixels in ((p[2], body), (p[3], anomaly), (p[1], image)):
                    if pixels is not None and not (out / rel).is_file():
                        pending.append(writer.submit(write_png, out / rel, pixels))
        for k, (geom, p) in enumerate(zip(geoms, paths), start=1):
            rows.append(
                {
                    "path": p[1],
                    "mura_split": unit["split"],
                    "body_part": part,
                    "patient_id": f"{pid:05d}",
                    "study": p[0].rsplit("/", 1)[1],
                    "study_number": s,
                    "image_number": k,
                    "label": label,
                    "anomaly_type": kind,
                    "inverted": int(geom.inverted),
                    "carrier_rotation_deg": round(geom.rotation_deg, 3),
                    "carrier_corners": json.dumps(geom.corners()),
                    "body_mask_path": p[2],
                    "anomaly_mask_path": p[3] if label else "",
                    "carrier_clipped": int(geom.clipped),
                    "rgb_encoded": int(geom.rgb),
                    "marker": letter if geom.marker else "",
                }
            )
    for future in pending:
        future.result()  # re-raise write errors; the unit is reported only once its files exist
    return rows


_WRITER: tuple[int, ThreadPoolExecutor] | None = None


def _writer() -> ThreadPoolExecutor:
    """This process's PNG writer threads: atomic writes fsync, so overlapping them hides the disk latency.

    Keyed by process id: an executor inherited through fork has no threads and would block forever.
    """
    global _WRITER
    if _WRITER is None or _WRITER[0] != os.getpid():
        _WRITER = (os.getpid(), ThreadPoolExecutor(max_workers=4, thread_name_prefix="xrad-synth-png"))
    return _WRITER[1]


def _worker_init() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core: cv2's own threads would only oversubscribe


def _render_unit_star(args: tuple[SynthConfig, Unit, str]) -> list[dict[str, Any]]:
    return render_unit(*args)


def _prepare(out: Path, config: SynthConfig, overwrite: bool) -> None:
    """Create ``out`` or check it can be resumed; with ``overwrite`` remove what a previous run wrote."""
    cfg_path = out / CONFIG_FILE
    ours = [out / "MURA-v1.1", out / "ground_truth", out / "ground_truth.csv", cfg_path]
    if cfg_path.is_file() and not overwrite:
        try:
            previous = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            previous = None
        if previous != json.loads(json.dumps(config.identity())):
            raise ConfigError(
                f"{cfg_path}: this folder holds phantoms made with another configuration; "
                f"pass --overwrite to replace them or choose another output folder"
            )
        return  # identical configuration: resume, skipping finished images
    if not cfg_path.is_file() and (out / "MURA-v1.1").exists() and not overwrite:
        raise ConfigError(
            f"{out / 'MURA-v1.1'}: exists but was not written by `xrad synth`; pass --overwrite "
            f"to replace it or choose another output folder"
        )
    if overwrite:
        for p in ours:
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    write_json(cfg_path, config.identity())


def generate_phantoms(
    out_dir: str | Path, config: SynthConfig, progress: bool = True, overwrite: bool = False
) -> pd.DataFrame:
    """Generate the phantom data set under ``out_dir`` and return its ground-truth table (also written).

    Re-running into a folder generated with the identical configuration resumes (finished images are
    kept); a different configuration raises :class:`ConfigError` unless ``overwrite``.
    """
    from xrad.utils.progress import progress as progress_bar

    config.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _prepare(out, config, overwrite)
    units = plan_census(config)
    total = sum(n for u in units for _, n in u["studies"])
    tasks = [(config, u, str(out)) for u in units]
    rows: list[dict[str, Any]] = []
    results: Iterator[list[dict[str, Any]]]
    with progress_bar(total, "xrad synth", "img", enabled=progress) as bar:
        if config.workers == 1:
            results = map(_render_unit_star, tasks)
            pool = None
        else:
            # forkserver: never fork a parent whose PNG writer threads may be running
            pool = ProcessPoolExecutor(
                max_workers=config.workers,
                initializer=_worker_init,
                mp_context=multiprocessing.get_context("forkserver"),
            )
            results = pool.map(_render_unit_star, tasks, chunksize=4)
        try:
            for unit_rows in results:
                rows += unit_rows
                bar.update(len(unit_rows))
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
    frame = pd.DataFrame(rows, columns=list(GROUND_TRUTH_COLUMNS))
    frame = frame.sort_values(
        ["mura_split", "body_part", "patient_id", "study_number", "image_number"], kind="stable"
    ).reset_index(drop=True)
    _write_tables(out, frame)
    return frame


def _write_tables(out: Path, frame: pd.DataFrame) -> None:
    """MURA's four header-less CSVs, then the ground truth (written last: its presence means done)."""
    for split in ("train", "valid"):
        part = frame[frame["mura_split"] == split]
        write_csv(out / "MURA-v1.1" / f"{split}_image_paths.csv", part[["path"]], header=False)
        studies = part.assign(folder=part["path"].str.rsplit("/", n=1).str[0] + "/")
        studies = studies.drop_duplicates("folder")[["folder", "label"]]
        write_csv(out / "MURA-v1.1" / f"{split}_labeled_studies.csv", studies, header=False)
    write_csv(out / "ground_truth.csv", frame)


def summarise(frame: pd.DataFrame, seconds: float | None = None) -> str:
    """A short human-readable summary: counts and the abnormal fraction of studies per body part."""
    studies = frame.drop_duplicates(["mura_split", "body_part", "patient_id", "study"])
    lines = [
        f"{len(frame)} images, {len(studies)} studies, {frame['patient_id'].nunique()} patients "
        f"({(studies['mura_split'] == 'valid').sum()} studies in valid)"
        + (f" in {seconds:.1f} s" if seconds is not None else "")
    ]
    for part, group in studies.groupby("body_part"):
        lines.append(f"  {part:<9} {len(group):>5} studies, abnormal {group['label'].mean():.2f}")
    return "\n".join(lines)


def timed_generate(
    out_dir: str | Path, config: SynthConfig, progress: bool = True, overwrite: bool = False
) -> tuple[pd.DataFrame, float]:
    """:func:`generate_phantoms` and its wall time in seconds."""
    start = time.perf_counter()
    frame = generate_phantoms(out_dir, config, progress=progress, overwrite=overwrite)
    return frame, time.perf_counter() - start
