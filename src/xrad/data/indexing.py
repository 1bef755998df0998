"""Turn a data source into a manifest (:mod:`xrad.data.manifest`): a MURA tree, a CSV file or a DICOM folder.

:func:`index_source` detects the kind of source and dispatches to :func:`index_mura`, :func:`index_csv`
or :func:`index_dicom_folder`. Every indexer returns a frame with the manifest's core columns and
absolute paths, so the written manifest can be used from any working directory.

MURA consistency policy: when MURA's ``*_image_paths.csv`` files exist they are the authoritative list of
images. A listed image missing on disk, a listed study missing from ``*_labeled_studies.csv``, or a study
whose CSV label contradicts its ``_positive``/``_negative`` folder suffix raises :class:`DataError`. Image
files present on disk but not listed are ignored with a :class:`UserWarning` (the release's list wins).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from xrad.data.manifest import CACHE_COLUMNS, CORE_COLUMNS, SPLIT_COLUMNS, normalise_types
from xrad.errors import ConfigError, DataError, ImageReadError
from xrad.utils.files import entry_kind, open_regular
from xrad.utils.hashing import pseudonymise

MURA_DIR = "MURA-v1.1"
MURA_SPLITS = ("train", "valid")
# One regex for a MURA image path relative to the folder holding MURA-v1.1: any study and image number
# (the authors' fixed slice `study[7:]` broke on study numbers >= 10).
_MURA_IMAGE = re.compile(
    r"^MURA-v1\.1/(?P<split>train|valid)/XR_(?P<part>[A-Za-z]+)/patient(?P<patient>\d+)/"
    r"study(?P<study>\d+)_(?P<outcome>positive|negative)/image(?P<image>\d+)\.png$"
)
_MURA_STUDY = re.compile(
    r"^MURA-v1\.1/(?P<split>train|valid)/XR_(?P<part>[A-Za-z]+)/patient(?P<patient>\d+)/"
    r"study(?P<study>\d+)_(?P<outcome>positive|negative)/?$"
)


_TRUE = {"1", "1.0", "true", "yes", "abnormal", "positive"}
_FALSE = {"0", "0.0", "false", "no", "normal", "negative"}
_UNKNOWN = {"", "nan", "na", "n/a", "none", "unknown", "?"}
_RESERVED = set(CORE_COLUMNS) | set(SPLIT_COLUMNS) | set(CACHE_COLUMNS) | {"unit_id", "unit_kind"}


def _listed_split(path: str) -> str | None:
    """The split named by a MURA image path, None when it is not one."""
    match = _MURA_IMAGE.match(path)
    return match["split"] if match else None


def parse_label(value: Any, where: str) -> Any:
    """Map a label spelling (0/1, true/false, normal/abnormal, empty) to 1, 0 or ``pd.NA``."""
    text = str(value).strip().lower()
    if text in _TRUE:
        return 1
    if text in _FALSE:
        return 0
    if text in _UNKNOWN:
        return pd.NA
    raise DataError(f"{where}: label {value!r} is not 0/1, true/false, normal/abnormal or empty; fix the value")


# --------------------------------------------------------------------------------------------- MURA
def _mura_base(root: Path) -> Path:
    """The folder that contains ``MURA-v1.1`` (paths in MURA's CSV files are relative to it)."""
    if root.name == MURA_DIR and root.is_dir():
        return root.parent
    if (root / MURA_DIR).is_dir():
        return root
    raise DataError(f"{root}: no {MURA_DIR} folder here; pass the MURA-v1.1 folder or the folder containing it")


def _read_headerless(path: Path, n_columns: int) -> list[list[str]]:
    """Read one of MURA's header-less CSV files as rows of stripped strings."""
    try:
        frame = pd.read_csv(path, header=None, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable MURA CSV ({str(exc).splitlines()[0]})") from None
    if frame.shape[1] < n_columns:
        raise DataError(f"{path}: expected {n_columns} column(s) without header, found {frame.shape[1]}")
    return [
        [str(v).strip().replace("\\", "/") for v in row] for row in frame.iloc[:, :n_columns].itertuples(index=False)
    ]


def _walk_mura_images(base: Path, split: str) -> set[str]:
    """Relative paths (``MURA-v1.1/...``) of every MURA-pattern image on disk under one split folder."""
    found: set[str] = set()
    top = base / MURA_DIR / split
    for dirpath, _dirs, files in os.walk(top):
        rel_dir = Path(dirpath).relative_to(base).as_posix()
        for name in files:
            rel = f"{rel_dir}/{name}"
            if _MURA_IMAGE.match(rel):
                found.add(rel)
    return found


def _mura_study_labels(path: Path) -> dict[str, int]:
    """Study folder (no trailing slash) -> label from a ``*_labeled_studies.csv`` file."""
    labels: dict[str, int] = {}
    for line, (study, label) in enumerate(_read_headerless(path, 2), start=1):
        match = _MURA_STUDY.match(study)
        if not match:
            raise DataError(f"{path}: row {line} {study!r} is not a MURA study folder path")
        value = parse_label(label, f"{path} row {line}")
        if value is pd.NA:
            raise DataError(f"{path}: row {line} has no label; MURA studies are labelled 0 or 1")
        labels[study.rstrip("/")] = int(value)
    return labels


def index_mura(root: str | Path) -> pd.DataFrame:
    """Index MURA v1.1 as distributed (``root`` is ``MURA-v1.1`` or its parent folder).

    Labels are per study and inherited by every image. ``patient_id`` is MURA's digit string
    (``"00001"``), ``body_part`` the part without ``XR_``, ``study_id`` ``PART/patient/study<n>``,
    ``view`` empty; the extra column ``mura_split`` keeps MURA's own train/valid.
    """
    base = _mura_base(Path(root)).resolve()
    mura = base / MURA_DIR
    records: list[dict[str, Any]] = []
    for split in MURA_SPLITS:
        if not (mura / split).is_dir():
            continue
        on_disk = _walk_mura_images(base, split)
        paths_csv = mura / f"{split}_image_paths.csv"
        studies_csv = mura / f"{split}_labeled_studies.csv"
        if paths_csv.is_file():
            listed = [row[0] for row in _read_headerless(paths_csv, 1)]
            bad = [p for p in listed if _listed_split(p) != split]
            if bad:
                raise DataError(
                    f"{paths_csv}: {bad[0]!r} is not a MURA {split} image path "
                    f"(MURA-v1.1/{split}/XR_<PART>/patient<id>/study<n>_<positive|negative>/image<k>.png)"
                )
            missing = sorted(set(listed) - on_disk)
            if missing:
                raise DataError(
                    f"{paths_csv}: {len(missing)} listed image(s) missing on disk, e.g. {missing[0]}; "
                    f"restore them or remove their rows"
                )
            extra = sorted(on_disk - set(listed))
            if extra:
                warnings.warn(
                    f"{paths_csv}: {len(extra)} image(s) on disk are not listed and are ignored, e.g. {extra[0]}",
                    UserWarning,
                    stacklevel=2,
                )
            images = list(dict.fromkeys(listed))
        else:
            images = sorted(on_disk)
        study_labels = _mura_study_labels(studies_csv) if studies_csv.is_file() else None
        for rel in images:
            m = _MURA_IMAGE.match(rel)
            assert m is not None  # filtered above
            study_dir = rel.rsplit("/", 1)[0]
            suffix_label = int(m["outcome"] == "positive")
            if study_labels is not None:
                if study_dir not in study_labels:
                    raise DataError(f"{studies_csv}: study {study_dir} has images but no label row; add it")
                if study_labels[study_dir] != suffix_label:
                    raise DataError(
                        f"{studies_csv}: study {study_dir} is labelled {study_labels[study_dir]} but its "
                        f"folder says {m['outcome']}; fix the CSV or the folder name"
                    )
            part = m["part"].upper()
            study_id = f"{part}/{m['patient']}/study{int(m['study'])}"
            records.append(
                dict(
                    path=str(base / rel),
                    patient_id=m["patient"],
                    study_id=study_id,
                    body_part=part,
                    view="",
                    label=suffix_label,
                    source="mura",
                    mura_split=split,
                    _study_dir=study_dir,
                    _key=(split, part, m["patient"], int(m["study"]), int(m["image"])),
                )
            )
    if not records:
        raise DataError(f"{mura}: no MURA images found under train/ or valid/; check the folder")
    frame = pd.DataFrame.from_records(records)
    # Two study folders (e.g. study1_positive and study1_negative) must not share one study_id.
    clash = frame.groupby("study_id")["_study_dir"].nunique()
    if (clash > 1).any():
        raise DataError(f"{mura}: study {clash[clash > 1].index[0]} exists with both suffixes; remove one folder")
    frame = frame.sort_values("_key", kind="stable").drop(columns=["_key", "_study_dir"]).reset_index(drop=True)
    return normalise_types(frame)


# ---------------------------------------------------------------------------------------------- CSV
def _require(frame: pd.DataFrame, column: str, option: str, where: Path) -> None:
    if column not in frame.columns:
        raise DataError(
            f"{where}: no column {column!r} (columns: {', '.join(map(str, frame.columns))}); "
            f"name the right one with {option}"
        )


def index_csv(
    csv_path: str | Path,
    *,
    path_column: str = "path",
    label_column: str | None = "label",
    patient_column: str | None = None,
    study_column: str | None = None,
    body_part_column: str | None = None,
    view_column: str | None = None,
    view_columns: Iterable[str] | None = None,
    base_dir: str | Path | None = None,
    keep_columns: bool = False,
) -> pd.DataFrame:
    """Index a CSV table of images (one row per image) into a manifest.

    ``path`` values are relative to ``base_dir`` (default: the CSV's folder) unless absolute. Labels accept
    0/1, true/false, normal/abnormal, empty (unknown); ``label_column=None`` means an unlabelled table.
    ``body_part_column`` defaults to ``body_part`` when that column exists. Without ``patient_column`` the
    patient id is empty (no patient ids: splits become per image); without ``study_column`` every image
    is its own study (the file stem). ``view_columns`` names 0/1 flag columns (FracAtlas's
    ``frontal,lateral,oblique``) joined into ``view`` as ``frontal+lateral``. ``keep_columns`` keeps the
    table's other columns.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: CSV file not found; check the path")
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{csv_path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    _require(table, path_column, "--path-column", csv_path)
    if label_column is not None:
        _require(table, label_column, "--label-column (or --no-labels for an unlabelled table)", csv_path)
    optional = {
        "--patient-column": patient_column,
        "--study-column": study_column,
        "--body-part-column": body_part_column,
        "--view-column": view_column,
    }
    for option, column in optional.items():
        if column is not None:
            _require(table, column, option, csv_path)
    flags = [c.strip() for c in (view_columns or []) if c.strip()]
    for column in flags:
        _require(table, column, "--view-columns", csv_path)
    if body_part_column is None and "body_part" in table.columns:
        body_part_column = "body_part"
    if table.empty:
        raise DataError(f"{csv_path}: the table has no rows")

    base = Path(base_dir) if base_dir is not None else csv_path.parent
    base = base.resolve()
    raw_paths = table[path_column].str.strip()
    if (raw_paths == "").any():
        raise DataError(f"{csv_path}: row {int((raw_paths == '').to_numpy().argmax()) + 2} has an empty path")
    paths = [Path(p) if Path(p).is_absolute() else base / p for p in raw_paths]
    kinds = [(p, entry_kind(p)) for p in paths]
    missing = [str(p) for p, kind in kinds if kind == "missing"]
    if missing:
        raise DataError(
            f"{csv_path}: {len(missing)} image(s) not found, e.g. {missing[0]}; fix the paths or pass --base-dir"
        )
    special = [(p, kind) for p, kind in kinds if kind != "file"]
    if special:  # a FIFO would hang every later step, a folder or a broken link fail there: refuse them now
        raise DataError(
            f"{csv_path}: {len(special)} path(s) are not regular image files, e.g. {special[0][0]!s} "
            f"({special[0][1]}); fix or drop those rows"
        )
    out = pd.DataFrame({"path": [str(p.resolve()) for p in paths]})
    if out["path"].duplicated().any():
        raise DataError(f"{csv_path}: image {out.loc[out['path'].duplicated(), 'path'].iloc[0]} is listed twice")
    if label_column is None:
        out["label"] = pd.array([pd.NA] * len(table), dtype="Int64")
    else:
        # Row numbers in messages are the CSV's line numbers (header is line 1).
        out["label"] = pd.array(
            [parse_label(v, f"{csv_path} line {i + 2}") for i, v in enumerate(table[label_column])],
            dtype="Int64",
        )
    out["patient_id"] = table[patient_column].str.strip().to_numpy() if patient_column else ""
    if study_column:
        study = table[study_column].str.strip()
        # Study ids must be unique across the table; a per-patient study number is made unique by its patient.
        out["study_id"] = (out["patient_id"] + "/" + study.to_numpy()) if patient_column else study.to_numpy()
    else:
        stems = pd.Series([p.stem for p in paths])
        if stems.duplicated().any():
            stems = pd.Series([Path(os.path.relpath(p, base)).with_suffix("").as_posix() for p in paths])
        if stems.duplicated().any():  # a.png and a.jpg side by side: two images, two studies
            stems = pd.Series([Path(os.path.relpath(p, base)).as_posix() for p in paths])
        out["study_id"] = stems.to_numpy()
    out["body_part"] = table[body_part_column].str.strip().str.upper().to_numpy() if body_part_column else ""
    if view_column:
        out["view"] = table[view_column].str.strip().to_numpy()
    elif flags:
        on = {c: table[c].map(lambda v, c=c: parse_label(v, f"{csv_path} column {c}")) for c in flags}
        out["view"] = [
            "+".join(c for c in flags if on[c].iloc[i] is not pd.NA and on[c].iloc[i] == 1) for i in range(len(table))
        ]
    else:
        out["view"] = ""
    out["source"] = "csv"
    if keep_columns:
        used = {path_column, label_column, patient_column, study_column, body_part_column, view_column}
        used.update(flags)
        for column in table.columns:
            if column not in used and column not in _RESERVED and column not in out.columns:
                out[column] = table[column].to_numpy()
    return normalise_types(out)


# -------------------------------------------------------------------------------------------- DICOM
def is_dicom(path: Path) -> bool:
    """True when the file carries the DICOM preamble magic ``DICM`` at byte 128 (any extension)."""
    try:
        with open_regular(path) as handle:  # a FIFO, device or folder is not DICOM (and never blocks us)
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def find_dicom_files(folder: Path) -> list[Path]:
    """Every DICOM file under ``folder`` (recursive, hidden files skipped), sorted."""
    found: list[Path] = []
    for dirpath, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(dirpath) / n for n in sorted(files) if not n.startswith(".") and is_dicom(Path(dirpath) / n))
    return found


def index_dicom_folder(
    folder: str | Path, *, labels: str | Path | None = None, warn_left_out: bool = True, keep_unreadable: bool = False
) -> pd.DataFrame:
    """Index every DICOM file under ``folder``; identifiers are pseudonymised, never stored in clear.

    Patient, study, body part and view come from the headers (via :func:`xrad.data.dicom.read_dicom_tags`,
    which returns pseudonymised ids). ``labels`` optionally names a CSV with ``study_id`` (the clear
    StudyInstanceUID or its pseudonym) and ``label`` columns; otherwise labels are unknown. Files that are
    not DICOM are left out with a warning (``warn_left_out=False``: silently, for callers that read them).
    A DICOM file whose header cannot be read is left out with a warning naming it, or, with
    ``keep_unreadable`` (``xrad score``: its row then says why it was not scored), kept with empty tags.
    """
    from xrad.data.dicom import read_dicom_tags  # lazy: pydicom is only needed for DICOM sources

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found; check the path")
    files = find_dicom_files(folder)
    if not files:
        raise DataError(f"{folder}: no DICOM files found (none has 'DICM' at byte 128)")
    found = set(files)
    if warn_left_out:
        _warn_left_out(folder, found)
    rows, unreadable = [], []
    for path in files:
        try:
            tags = read_dicom_tags(path)
        except ImageReadError as exc:  # one damaged header must not stop the index: left out, and said
            if not keep_unreadable:
                unreadable.append(exc)
                continue
            tags = {}
        # read_dicom_tags already pseudonymised patient/study/series ids: nothing clear reaches the table.
        keys = ("patient_id", "study_id", "series_id", "view", "laterality")
        get = {k: str(tags.get(k) or "") for k in keys}
        rows.append(
            dict(
                path=str(path.resolve()),
                body_part=str(tags.get("body_part") or "").upper(),
                label=pd.NA,
                source="dicom",
                _rel=path.relative_to(folder).as_posix(),
                **get,
            )
        )
    if unreadable:
        first = unreadable[0]
        message = (
            f"{folder}: {len(unreadable)} DICOM file(s) left out because their header cannot be read, e.g. "
            f"{Path(first.path).relative_to(folder)} ({first.reason})"
        )
        if not rows:
            raise DataError(message.replace("left out", "found") + "; none could be indexed")
        warnings.warn(message, stacklevel=2)
    frame = pd.DataFrame.from_records(rows)
    # A file without a StudyInstanceUID is its own study so study_id stays a grouping key; it is named by its
    # path inside the folder (its name alone would merge two 1.dcm of different sub-folders into one study).
    no_study = frame["study_id"] == ""
    frame.loc[no_study, "study_id"] = ["image:" + rel for rel in frame.loc[no_study, "_rel"]]
    frame = frame.drop(columns="_rel")
    if labels is not None:
        frame["label"] = _dicom_labels(Path(labels), frame["study_id"])
    return normalise_types(frame)


def _warn_left_out(folder: Path, found: set[Path]) -> None:
    """Say (not silently drop) what a DICOM folder holds besides DICOM files: a file named .dcm that is not
    DICOM is likely a damaged export; a FIFO, socket or broken link is named as such (and never opened)."""
    not_dicom: list[tuple[Path, str]] = []
    special: list[tuple[Path, str]] = []
    for dirpath, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = Path(dirpath) / name
            if name.startswith(".") or path in found:
                continue
            kind = entry_kind(path)
            (not_dicom if kind == "file" else special).append((path, kind))
    if not_dicom:
        warnings.warn(
            f"{folder}: {len(not_dicom)} file(s) left out as not DICOM (no 'DICM' at byte 128), "
            f"e.g. {not_dicom[0][0].relative_to(folder)}",
            stacklevel=3,
        )
    if special:
        path, kind = special[0]
        warnings.warn(
            f"{folder}: {len(special)} entry(ies) left out as not regular files, e.g. "
            f"{path.relative_to(folder)!s} ({kind})",
            stacklevel=3,
        )


def _dicom_labels(labels_csv: Path, study_ids: pd.Series) -> pd.Series:
    """Look up per-study labels; the CSV's study ids may be clear (hashed here, in memory) or pseudonyms."""
    table = index_label_table(labels_csv)
    mapping: dict[str, Any] = {}
    for study, label in zip(table["study_id"], table["label"], strict=True):
        mapping[study] = label
        mapping[pseudonymise(study)] = label
    return pd.Series([mapping.get(s, pd.NA) for s in study_ids], dtype="Int64")


def index_label_table(labels_csv: Path) -> pd.DataFrame:
    """Read a two-column ``study_id,label`` CSV (labels parsed like everywhere else)."""
    if not labels_csv.is_file():
        raise DataError(f"{labels_csv}: labels CSV not found; check the path")
    try:
        table = pd.read_csv(labels_csv, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(
            f"{labels_csv}: not a readable labels CSV ({str(exc).splitlines()[0]}); write a "
            "'study_id,label' header and one row per study"
        ) from None
    for column in ("study_id", "label"):
        _require(table, column, "a header row 'study_id,label'", labels_csv)
    table["label"] = [parse_label(v, f"{labels_csv} line {i + 2}") for i, v in enumerate(table["label"])]
    return table


# ----------------------------------------------------------------------------------------- dispatch
_CSV_OPTIONS = {
    "path_column",
    "label_column",
    "patient_column",
    "study_column",
    "body_part_column",
    "view_column",
    "view_columns",
    "base_dir",
    "keep_columns",
    "no_labels",
}
_DICOM_OPTIONS = {"labels"}


def detect_source(source: str | Path) -> str:
    """Return ``"mura"``, ``"csv"`` or ``"dicom"`` for a source path, or raise :class:`DataError`."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source}: not found; pass a MURA folder, a CSV file or a folder of DICOM files")
    if source.is_file():
        if source.suffix.lower() == ".csv":
            return "csv"
        raise DataError(f"{source}: a file source must be a .csv table; pass a folder for MURA or DICOM")
    if source.name == MURA_DIR or (source / MURA_DIR).is_dir():
        return "mura"
    if find_dicom_files(source):
        return "dicom"
    raise DataError(f"{source}: neither a {MURA_DIR} tree nor a folder with DICOM files; check the path")


def index_source(source: str | Path, **options: Any) -> pd.DataFrame:
    """Index ``source`` (MURA tree, CSV file or DICOM folder, auto-detected) with its indexer's options.

    Options left at None/False are ignored; a set option that does not apply to the detected kind raises
    :class:`ConfigError`. ``no_labels=True`` indexes a CSV without label column (labels unknown).
    """
    kind = detect_source(source)
    given = {k for k, v in options.items() if v is not None and v is not False}
    allowed = {"mura": set(), "csv": _CSV_OPTIONS, "dicom": _DICOM_OPTIONS}[kind]
    unknown = sorted(given - allowed)
    if unknown:
        raise ConfigError(f"{source}: option(s) {', '.join(unknown)} do not apply to a {kind} source; drop them")
    kwargs = {k: v for k, v in options.items() if k in given}
    if kwargs.pop("no_labels", False):
        if "label_column" in kwargs:
            raise ConfigError(f"{source}: no_labels and label_column exclude each other; keep one")
        kwargs["label_column"] = None
    if kind == "mura":
        return index_mura(source)
    if kind == "csv":
        return index_csv(source, **kwargs)
    return index_dicom_folder(source, **kwargs)


def index_summary(frame: pd.DataFrame) -> str:
    """A few human-readable lines: rows, labels, body parts, patients (or that there are none)."""
    label = frame["label"]
    parts = frame["body_part"].replace("", "(unknown)").value_counts().sort_index()
    patients = frame["patient_id"][frame["patient_id"] != ""].nunique()
    lines = [
        f"rows: {len(frame)}  abnormal: {int((label == 1).sum())}  normal: {int((label == 0).sum())}  "
        f"unknown: {int(label.isna().sum())}",
        "body parts: " + ", ".join(f"{p} {n}" for p, n in parts.items()),
        f"patients: {patients}" if patients else "patients: no patient ids (splits will be per image)",
        f"studies: {frame['study_id'].nunique()}",
    ]
    return "\n".join(lines)
