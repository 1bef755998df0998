"""The papers' semi-supervised train/valid/test split, made leak-free and reproducible.

Protocol (reference-spec §2): the unit is (patient, body part); units are normal (all images normal),
abnormal (all abnormal) or mixed. ``train_size = ⌊train_fraction·n_units⌋``; train takes
``⌊(1−r_abn)·train_size⌋`` normal and ``⌊r_abn·train_size⌋`` pure-abnormal units; mixed units never go to
train; what is left of each class is split in halves (valid gets the smaller half, test the rest).
In train ``⌊known_normal·train_size⌋`` normal units are labelled +1 and ``round(known_abnormal·n)`` of the
``n`` abnormal units −1; everything else (and all of valid/test) is 0.

What xrad does better than the authors' splitter: the split seed is a parameter of its own; by default
(``group="patient"``) whole patients are allocated, so no patient crosses splits, and
:func:`check_leakage` fails loudly if one does; ``known_abnormal < 1`` leaves some train anomalies
unlabelled (a contaminated unlabelled pool, as the papers' framing assumes); without patient ids (e.g.
FracAtlas) the unit is the image and the output says so (``unit_kind``). ``group="unit"`` reproduces the
papers' patient×body-part units, where a patient's hand can be in train and wrist in test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from xrad.data.manifest import SPLITS, normalise_types
from xrad.errors import ConfigError, DataError

UNIT_PATIENT_PART = "patient_body_part"
UNIT_IMAGE = "image"
_EPS = 1e-9  # guards ⌊x⌋ against 0.29·100 = 28.999…; the papers' int() intends the exact product


def _floor(x: float) -> int:
    return int(math.floor(x + _EPS))


def _round(x: float) -> int:
    """Round half up (Python's round() is half-to-even, which would make 0.5·3 → 2 but 0.5·5 → 2)."""
    return int(math.floor(x + 0.5 + _EPS))


@dataclass(frozen=True)
class SplitConfig:
    """Parameters of the semi-supervised split (defaults: the papers' configured setting, seed apart).

    ``known_abnormal`` is the fraction of train abnormal units labelled −1; below 1 the rest stay in
    train unlabelled (contamination). ``group`` is ``"patient"`` (whole patients, leak-free) or
    ``"unit"`` (the papers' patient×body-part units). ``body_parts`` keeps only those parts.
    """

    seed: int = 0
    train_fraction: float = 0.5
    abnormal_ratio: float = 0.05
    known_normal: float = 0.05
    known_abnormal: float = 1.0
    group: str = "patient"
    body_parts: tuple[str, ...] | None = None

    def validate(self) -> None:
        """Raise :class:`ConfigError` for out-of-range values."""
        for name in ("train_fraction", "abnormal_ratio", "known_normal", "known_abnormal"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"split option {name}={value} must lie in [0, 1]")
        if self.train_fraction >= 1.0:
            raise ConfigError("split option train_fraction must be below 1 so that valid/test are not empty")
        if self.known_normal > 1.0 - self.abnormal_ratio + _EPS:
            raise ConfigError(
                f"known_normal={self.known_normal} exceeds the normal share of train "
                f"(1 - abnormal_ratio = {1 - self.abnormal_ratio:g}); lower it"
            )
        if self.group not in ("patient", "unit"):
            raise ConfigError(f"split option group={self.group!r} must be 'patient' or 'unit'")


def _units(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per unit: its group (patient, or the unit itself without patient id) and its class."""
    table = frame.groupby("unit_id", sort=True).agg(group=("_group", "first"), mean=("label", "mean"))
    table["cls"] = np.where(table["mean"] == 0, "normal", np.where(table["mean"] == 1, "abnormal", "mixed"))
    return table


def _halves(items: np.ndarray, rng: np.random.Generator) -> tuple[list[Any], list[Any]]:
    """Shuffle and split in two; the first (valid) gets ⌊n/2⌋ (as sklearn's test_size=0.5 split)."""
    perm = list(rng.permutation(items)) if len(items) else []
    half = len(perm) // 2
    return perm[:half], perm[half:]


def _assign_units(units: pd.DataFrame, n_norm: int, n_abn: int, rng: np.random.Generator) -> dict[Any, str]:
    """The papers' arithmetic on units: unit id -> split."""
    assign: dict[Any, str] = {}
    for cls, n_train in (("normal", n_norm), ("abnormal", n_abn), ("mixed", 0)):
        ids = np.array(sorted(units.index[units["cls"] == cls]), dtype=object)
        perm = list(rng.permutation(ids)) if len(ids) else []
        assign.update(dict.fromkeys(perm[:n_train], "train"))
        valid, test = _halves(np.array(perm[n_train:], dtype=object), rng)
        assign.update(dict.fromkeys(valid, "valid"))
        assign.update(dict.fromkeys(test, "test"))
    return assign


def _assign_patients(units: pd.DataFrame, n_norm: int, n_abn: int, rng: np.random.Generator) -> dict[Any, str]:
    """Whole groups (patients): greedy fill of the train unit targets in a seeded order, then halves.

    A group enters train only if it has no mixed unit and fits in both remaining targets, so the targets
    are met exactly whenever enough single-unit groups exist. The rest is split per stratum (which
    classes a group holds), so valid and test receive each class in halves.
    """
    counts = pd.crosstab(units["group"], units["cls"]).reindex(columns=["normal", "abnormal", "mixed"], fill_value=0)
    eligible = np.array(sorted(counts.index[counts["mixed"] == 0]), dtype=object)
    need_n, need_a = n_norm, n_abn
    train_groups: set[Any] = set()
    for group in rng.permutation(eligible) if len(eligible) else []:
        if need_n == 0 and need_a == 0:
            break
        cn, ca = int(counts.at[group, "normal"]), int(counts.at[group, "abnormal"])
        if cn <= need_n and ca <= need_a:
            train_groups.add(group)
            need_n, need_a = need_n - cn, need_a - ca
    group_split = dict.fromkeys(train_groups, "train")
    rest = counts.drop(index=list(train_groups))
    strata = (rest > 0).astype(int).astype(str).agg("".join, axis=1)
    for stratum in sorted(strata.unique()):
        valid, test = _halves(np.array(sorted(strata.index[strata == stratum]), dtype=object), rng)
        group_split.update(dict.fromkeys(valid, "valid"))
        group_split.update(dict.fromkeys(test, "test"))
    return {unit: group_split[group] for unit, group in units["group"].items()}


def make_split(frame: pd.DataFrame, config: SplitConfig | None = None, *, where: str = "manifest") -> pd.DataFrame:
    """Return the manifest rows (filtered to ``config.body_parts``, sorted by path) with ``split``,
    ``semi_label``, ``unit_id`` and ``unit_kind`` added. Same input set + seed → identical output.

    Raises :class:`DataError` (prefixed by ``where``, e.g. the manifest's file name) when labels are missing
    or the requested counts are impossible.
    """
    config = config or SplitConfig()
    config.validate()
    missing = [c for c in ("path", "patient_id", "body_part", "label") if c not in frame.columns]
    if missing:
        raise DataError(f"{where}: missing column(s) {', '.join(missing)}; make it with `xrad index`")
    frame = normalise_types(frame)
    if frame.empty:
        raise DataError(f"{where}: the manifest has no rows (a header only); index some images with `xrad index`")
    if config.body_parts:
        wanted = {p.strip().upper() for p in config.body_parts}
        frame = frame[frame["body_part"].isin(wanted)]
        if frame.empty:
            raise DataError(f"{where}: no image of body part(s) {', '.join(sorted(wanted))}; check --body-parts")
    if frame["label"].isna().any():
        raise DataError(
            f"{where}: {int(frame['label'].isna().sum())} image(s) have no label; the split needs "
            f"0/1 labels (e.g. {frame.loc[frame['label'].isna(), 'path'].iloc[0]})"
        )
    if frame["path"].duplicated().any():
        raise DataError(f"{where}: image {frame.loc[frame['path'].duplicated(), 'path'].iloc[0]} appears twice")
    # Sorting first makes the result independent of the input's row order.
    frame = frame.sort_values("path", kind="stable").reset_index(drop=True)
    has_pid = frame["patient_id"] != ""
    # Without patient ids the unit is the image — byte-identical files (FracAtlas ships some) one unit, so a
    # duplicate never lands in two splits.
    same_file = _same_content(frame.loc[~has_pid, "path"].astype(str).tolist())
    frame["unit_id"] = np.where(
        has_pid, frame["patient_id"] + "|" + frame["body_part"], frame["path"].map(lambda p: same_file.get(p, p))
    )
    frame["unit_kind"] = np.where(has_pid, UNIT_PATIENT_PART, UNIT_IMAGE)
    frame["_group"] = np.where(has_pid & (config.group == "patient"), frame["patient_id"], frame["unit_id"])
    units = _units(frame)

    n_units = len(units)
    n_class = units["cls"].value_counts()
    train_size = _floor(config.train_fraction * n_units)
    n_norm = _floor((1.0 - config.abnormal_ratio) * train_size)
    n_abn = _floor(config.abnormal_ratio * train_size)
    if n_norm > n_class.get("normal", 0):
        raise DataError(
            f"{where}: train needs {n_norm} normal units but only {n_class.get('normal', 0)} exist; "
            f"lower --train-fraction"
        )
    if n_abn > n_class.get("abnormal", 0):
        raise DataError(
            f"{where}: train needs {n_abn} abnormal units but only {n_class.get('abnormal', 0)} pure "
            f"abnormal units exist; lower --abnormal-ratio"
        )

    rng = np.random.default_rng(config.seed)
    if config.group == "unit":
        assign = _assign_units(units, n_norm, n_abn, rng)
    else:
        assign = _assign_patients(units, n_norm, n_abn, rng)
    units["split"] = units.index.map(assign)
    if not (units["split"] == "train").any():  # a detector cannot be trained on it: say so now, not at training
        raise DataError(
            f"{where}: the split leaves train empty ({n_units} unit(s), train fraction "
            f"{config.train_fraction:g}); raise --train-fraction or split more data"
        )

    # Semi-labels, per unit then inherited by its images; valid/test stay 0.
    train_normal = np.array(sorted(units.index[(units["split"] == "train") & (units["cls"] == "normal")]), dtype=object)
    train_abnormal = np.array(
        sorted(units.index[(units["split"] == "train") & (units["cls"] == "abnormal")]), dtype=object
    )
    n_known_n = min(_floor(config.known_normal * train_size), len(train_normal))
    n_known_a = _round(config.known_abnormal * len(train_abnormal))
    semi = dict.fromkeys(units.index, 0)
    if n_known_n:
        semi.update(dict.fromkeys(rng.permutation(train_normal)[:n_known_n], 1))
    if n_known_a:
        semi.update(dict.fromkeys(rng.permutation(train_abnormal)[:n_known_a], -1))

    frame["split"] = frame["unit_id"].map(units["split"])
    frame["semi_label"] = frame["unit_id"].map(semi).astype("Int64")
    frame = frame.drop(columns=["_group"])

    notes = [
        f"group={config.group} seed={config.seed}: {n_units} units; train target {n_norm} normal + {n_abn} "
        f"abnormal units, got {len(train_normal)} + {len(train_abnormal)}"
    ]
    if (len(train_normal), len(train_abnormal)) != (n_norm, n_abn):
        notes.append(
            "train is short of its target: not enough whole patients fit (too few patients without "
            "mixed units or anomalies); use group='unit' for the papers' exact counts"
        )
    if (~has_pid).all():
        notes.append("no patient ids: the unit is the image (images of one patient may fall in different splits)")
    elif (~has_pid).any():
        notes.append(f"{int((~has_pid).sum())} image(s) without patient id are units of their own")
    if len(train_abnormal) > n_known_a:
        notes.append(f"{len(train_abnormal) - n_known_a} train abnormal unit(s) left unlabelled (contamination)")
    if config.group == "patient":
        check_leakage(frame)
        if has_pid.any():
            notes.append("leakage check passed: no patient in two splits")
    else:
        crossing = _crossing_patients(frame)
        notes.append(f"group=unit (the papers' protocol): {len(crossing)} patient(s) cross splits")
    frame.attrs["split_notes"] = notes
    return frame


def _crossing_patients(frame: pd.DataFrame) -> pd.Series:
    known = frame[frame["patient_id"] != ""]
    n_splits = known.groupby("patient_id")["split"].nunique()
    return n_splits[n_splits > 1]


def check_leakage(frame: pd.DataFrame) -> None:
    """Raise :class:`DataError` naming a patient (or study) whose images are in more than one split."""
    crossing = _crossing_patients(frame)
    if len(crossing):
        patient = sorted(crossing.index)[0]
        where = sorted(frame.loc[frame["patient_id"] == patient, "split"].unique())
        raise DataError(
            f"split leakage: patient {patient} is in {' and '.join(where)} ({len(crossing)} patient(s) "
            f"cross splits); split with group='patient'"
        )
    if "study_id" in frame.columns:
        studies = frame[frame["study_id"] != ""].groupby("study_id")["split"].nunique()
        if (studies > 1).any():
            raise DataError(f"split leakage: study {sorted(studies.index[studies > 1])[0]} is in several splits")


def check_image_leakage(frame: pd.DataFrame, where: str = "manifest") -> None:
    """Raise :class:`DataError` when one image is in two splits: the same ``path``, or two paths with the same
    content (SHA-256 of the files; only files of equal size are hashed, so this reads little).

    A model scored on an image it was trained on (or chose its threshold on) reports a meaningless AUROC; a
    split made by ``xrad split`` never does this, a hand-edited or concatenated manifest can.
    """
    if "split" not in frame.columns or "path" not in frame.columns:
        return
    rows = frame[(frame["split"].astype(str) != "") & (frame["path"].astype(str) != "")]
    by_path = rows.groupby("path")["split"].nunique()
    if (by_path > 1).any():
        path = sorted(by_path.index[by_path > 1])[0]
        found = sorted(rows.loc[rows["path"] == path, "split"].unique())
        raise DataError(
            f"{where}: image {path} is in {' and '.join(found)} ({int((by_path > 1).sum())} image(s) in "
            "two splits); fix the split (or pass --allow-leakage if you mean it)"
        )
    _check_content_leakage(rows, where)


def _same_content(paths: list[str]) -> dict[str, str]:
    """For files whose bytes equal an earlier file's (in ``paths`` order), that earlier path; others absent.

    Only files of equal size are hashed, so a set without duplicates costs one ``stat`` per file; unreadable
    files are skipped (the loaders report them)."""
    import os

    from xrad.utils.hashing import sha256_file

    sizes: dict[int, list[str]] = {}
    for path in paths:
        try:
            sizes.setdefault(os.stat(path).st_size, []).append(path)
        except OSError:
            continue
    first: dict[str, str] = {}
    out: dict[str, str] = {}
    for group in sizes.values():
        if len(group) < 2:
            continue
        for path in group:
            try:
                digest = sha256_file(path)
            except OSError:
                continue
            canonical = first.setdefault(digest, path)
            if canonical != path:
                out[path] = canonical
    return out


def _check_content_leakage(rows: pd.DataFrame, where: str) -> None:
    import os

    from xrad.utils.hashing import sha256_file

    sizes: dict[int, list[tuple[str, str]]] = {}
    for path, split in zip(rows["path"].astype(str), rows["split"].astype(str), strict=True):
        try:
            sizes.setdefault(os.stat(path).st_size, []).append((path, split))
        except OSError:
            continue  # unreadable files are the loaders' to report
    seen: dict[str, tuple[str, str]] = {}
    for group in sizes.values():
        if len({split for _, split in group}) < 2:
            continue  # equal sizes within one split only: no leak possible
        for path, split in group:
            try:
                digest = sha256_file(path)
            except OSError:
                continue
            first = seen.setdefault(digest, (path, split))
            if first[1] != split:
                raise DataError(
                    f"{where}: {path} ({split}) and {first[0]} ({first[1]}) are the same image (same "
                    "content); remove one (or pass --allow-leakage if you mean it)"
                )


def split_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Counts per split × body part × label (images, units, patients, semi-labels), with per-split totals."""
    data = frame.assign(
        known_normal=(frame["semi_label"] == 1).astype(int),
        known_abnormal=(frame["semi_label"] == -1).astype(int),
        unlabelled=(frame["semi_label"] == 0).astype(int),
        _pid=frame["patient_id"].replace("", np.nan),
    )
    if "unit_id" not in data.columns:
        data["unit_id"] = data["path"]

    def count(grouped: pd.core.groupby.DataFrameGroupBy) -> pd.DataFrame:
        return grouped.agg(
            images=("path", "size"),
            units=("unit_id", "nunique"),
            patients=("_pid", "nunique"),
            known_normal=("known_normal", "sum"),
            known_abnormal=("known_abnormal", "sum"),
            unlabelled=("unlabelled", "sum"),
        ).reset_index()

    detail = count(data.groupby(["split", "body_part", "label"]))
    total = count(data.groupby(["split", "label"])).assign(body_part="ALL")
    summary = pd.concat([detail, total], ignore_index=True)
    summary["split"] = pd.Categorical(summary["split"], categories=list(SPLITS), ordered=True)
    summary["_all"] = summary["body_part"] == "ALL"
    summary = summary.sort_values(["split", "_all", "body_part", "label"]).drop(columns="_all")
    summary["split"] = summary["split"].astype(str)
    if "unit_kind" in frame.columns:
        summary["unit_kind"] = "+".join(sorted(frame["unit_kind"].unique()))
    return summary[
        [
            "split",
            "body_part",
            "label",
            "images",
            "units",
            "patients",
            "known_normal",
            "known_abnormal",
            "unlabelled",
        ]
        + (["unit_kind"] if "unit_kind" in summary.columns else [])
    ].reset_index(drop=True)


def format_summary(frame: pd.DataFrame, summary: pd.DataFrame) -> str:
    """The summary table followed by the split's notes (unit kind, leakage, contamination)."""
    lines = [summary.to_string(index=False)]
    lines += [f"note: {n}" for n in frame.attrs.get("split_notes", [])]
    return "\n".join(lines)
