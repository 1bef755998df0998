"""Indexing: MURA trees (hand-built and phantoms) against ground truth, CSV tables, DICOM folders."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from xrad.cli import index as index_cli
from xrad.data.indexing import detect_source, index_csv, index_dicom_folder, index_mura, index_source
from xrad.data.manifest import read_manifest, write_manifest
from xrad.errors import ConfigError, DataError
from xrad.utils.hashing import pseudonymise

# (mura split, part, patient, study number, outcome, images): study numbers >= 10 on purpose.
MURA_STUDIES = [
    ("train", "HAND", "00001", 1, "positive", 2),
    ("train", "HAND", "00001", 2, "negative", 1),
    ("train", "HAND", "00001", 12, "negative", 3),
    ("train", "WRIST", "00001", 1, "positive", 1),
    ("train", "SHOULDER", "00002", 10, "positive", 2),
    ("train", "ELBOW", "00003", 3, "negative", 11),
    ("valid", "HAND", "11185", 1, "negative", 2),
    ("valid", "FINGER", "11186", 21, "positive", 1),
]


def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 5), 128, dtype=np.uint8)).save(path)


def _build_mura(base: Path, with_csvs: bool = True) -> pd.DataFrame:
    """Write a MURA-v1.1 layout under ``base`` and return its ground truth (one row per image)."""
    truth = []
    for split, part, patient, study, outcome, n_images in MURA_STUDIES:
        study_dir = f"MURA-v1.1/{split}/XR_{part}/patient{patient}/study{study}_{outcome}"
        for k in range(1, n_images + 1):
            rel = f"{study_dir}/image{k}.png"
            _png(base / rel)
            truth.append(
                {
                    "rel": rel,
                    "study_dir": study_dir,
                    "mura_split": split,
                    "body_part": part,
                    "patient_id": patient,
                    "study": study,
                    "label": int(outcome == "positive"),
                }
            )
    truth = pd.DataFrame(truth)
    if with_csvs:
        for split in ("train", "valid"):
            part = truth[truth["mura_split"] == split]
            # As in the release: no header; study folders with a trailing slash.
            (base / "MURA-v1.1" / f"{split}_image_paths.csv").write_text("\n".join(part["rel"]) + "\n")
            studies = part.drop_duplicates("study_dir")
            (base / "MURA-v1.1" / f"{split}_labeled_studies.csv").write_text(
                "".join(f"{d}/,{lab}\n" for d, lab in zip(studies["study_dir"], studies["label"], strict=True))
            )
    return truth


def _assert_matches(frame: pd.DataFrame, truth: pd.DataFrame, base: Path) -> None:
    assert len(frame) == len(truth)
    got = frame.set_index("path")
    for row in truth.itertuples():
        image = got.loc[str((base / row.rel).resolve())]
        assert image["patient_id"] == row.patient_id
        assert image["body_part"] == row.body_part
        assert int(image["label"]) == row.label
        assert image["mura_split"] == row.mura_split
        assert image["study_id"] == f"{row.body_part}/{row.patient_id}/study{row.study}"
        assert image["source"] == "mura" and image["view"] == ""
    # One study id per study folder, unique across the table.
    assert frame["study_id"].nunique() == truth["study_dir"].nunique()


@pytest.mark.parametrize("with_csvs", [True, False])
def test_mura_tree_matches_ground_truth(tmp_path: Path, with_csvs: bool) -> None:
    truth = _build_mura(tmp_path, with_csvs)
    assert detect_source(tmp_path) == "mura"
    frame = index_source(tmp_path)
    _assert_matches(frame, truth, tmp_path)
    # The MURA-v1.1 folder itself works too, and study numbers >= 10 keep their label.
    _assert_matches(index_mura(tmp_path / "MURA-v1.1"), truth, tmp_path)
    study12 = frame[frame["study_id"] == "HAND/00001/study12"]
    assert len(study12) == 3 and (study12["label"] == 0).all()


def test_mura_label_contradiction_names_the_study(tmp_path: Path) -> None:
    _build_mura(tmp_path)
    csv = tmp_path / "MURA-v1.1" / "train_labeled_studies.csv"
    csv.write_text(csv.read_text().replace("study10_positive/,1", "study10_positive/,0"))
    with pytest.raises(DataError, match="study10_positive"):
        index_mura(tmp_path)


def test_mura_missing_and_unlisted_images(tmp_path: Path) -> None:
    truth = _build_mura(tmp_path)
    extra = tmp_path / "MURA-v1.1/train/XR_HAND/patient00001/study2_negative/image9.png"
    _png(extra)
    with pytest.warns(UserWarning, match="not listed"):
        frame = index_mura(tmp_path)
    assert str(extra.resolve()) not in set(frame["path"]) and len(frame) == len(truth)
    (tmp_path / truth["rel"].iloc[0]).unlink()
    with pytest.raises(DataError, match="missing on disk"):
        index_mura(tmp_path)


def test_mura_study_without_label_row(tmp_path: Path) -> None:
    _build_mura(tmp_path)
    csv = tmp_path / "MURA-v1.1" / "valid_labeled_studies.csv"
    csv.write_text("".join(line + "\n" for line in csv.read_text().splitlines() if "study21" not in line))
    with pytest.raises(DataError, match="study21_positive has images but no label"):
        index_mura(tmp_path)


def test_generated_phantoms_match_their_ground_truth(tmp_path: Path) -> None:
    synth = pytest.importorskip("xrad.data.phantoms.generate")
    config = synth.SynthConfig(n_patients=8, seed=3, size=32, workers=1)
    synth.generate_phantoms(tmp_path, config, progress=False)
    truth = pd.read_csv(tmp_path / "ground_truth.csv", dtype=str, keep_default_na=False)
    mura_csvs = sorted(p.name for p in (tmp_path / "MURA-v1.1").glob("*.csv"))
    assert mura_csvs == [
        "train_image_paths.csv",
        "train_labeled_studies.csv",
        "valid_image_paths.csv",
        "valid_labeled_studies.csv",
    ]
    frame = index_source(tmp_path).set_index("path")
    assert len(frame) == len(truth)
    for row in truth.itertuples():
        image = frame.loc[str((tmp_path / row.path).resolve())]
        assert image["patient_id"] == row.patient_id
        assert image["body_part"] == row.body_part
        assert image["mura_split"] == row.mura_split
        assert int(image["label"]) == int(row.label)
        assert image["study_id"] == f"{row.body_part}/{row.patient_id}/study{int(row.study_number)}"
        assert row.study.startswith(f"study{int(row.study_number)}_")


def test_fracatlas_labels_csv(fracatlas_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frame = index_source(fracatlas_dir / "labels.csv", view_columns=["frontal", "lateral", "oblique"])
    assert len(frame) == 4083 and int((frame["label"] == 1).sum()) == 716
    by_part = frame.groupby(["body_part", "label"]).size().unstack()
    expected = {
        "HAND": (902, 379),
        "LEG": (1912, 212),
        "HIP": (169, 10),
        "SHOULDER": (91, 10),
        "MIXED": (293, 105),
    }
    assert {p: (int(by_part.at[p, 0]), int(by_part.at[p, 1])) for p in by_part.index} == expected
    assert (frame["patient_id"] == "").all() and frame["study_id"].is_unique
    assert frame["view"].isin(["", "frontal", "lateral", "oblique"]).sum() + frame["view"].str.contains(
        r"\+"
    ).sum() == len(frame)
    # Paths are absolute: the written manifest reads and resolves from another working directory.
    write_manifest(frame, tmp_path / "m.csv")
    monkeypatch.chdir(tmp_path)
    back = read_manifest(tmp_path / "m.csv")
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in back["path"].iloc[::400])


def _table(tmp_path: Path, rows: list[dict], name: str = "t.csv") -> Path:
    for row in rows:
        _png(tmp_path / "imgs" / row["file"])
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_csv_with_other_column_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [
        {
            "file": f"imgs/a{i}.png",
            "y": y,
            "pid": f"p{i // 2}",
            "part": "hand",
            "exam": f"s{i // 2}",
            "extra": i,
        }
        for i, y in enumerate(["true", "False", "abnormal", "normal", "", "1"])
    ]
    for row in rows:
        row["file"] = row["file"].split("/", 1)[1]
    table = _table(tmp_path, rows)
    frame = index_csv(
        table,
        path_column="file",
        label_column="y",
        patient_column="pid",
        body_part_column="part",
        study_column="exam",
        base_dir=tmp_path / "imgs",
        keep_columns=True,
    )
    assert frame["label"].tolist()[:4] == [1, 0, 1, 0] and frame["label"].isna().tolist() == [False] * 4 + [
        True,
        False,
    ]
    assert frame["patient_id"].tolist() == ["p0", "p0", "p1", "p1", "p2", "p2"]
    assert frame["study_id"].tolist()[:2] == ["p0/s0", "p0/s0"] and (frame["body_part"] == "HAND").all()
    assert "extra" in frame.columns and (frame["source"] == "csv").all()
    assert "extra" not in index_csv(table, path_column="file", label_column="y", base_dir=tmp_path / "imgs").columns
    # Relative paths resolve against the CSV's folder by default, whatever the working directory.
    (tmp_path / "imgs" / "plain.csv").write_text("path,label\na0.png,1\na1.png,0\n")
    monkeypatch.chdir("/")
    plain = index_source(tmp_path / "imgs" / "plain.csv")
    assert plain["path"].tolist() == [str((tmp_path / "imgs" / f"a{i}.png").resolve()) for i in (0, 1)]
    assert plain["study_id"].tolist() == ["a0", "a1"] and (plain["patient_id"] == "").all()


def test_csv_errors_are_one_line_data_errors(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    (tmp_path / "nopath.csv").write_text("file,label\na.png,1\n")
    (tmp_path / "maybe.csv").write_text("path,label\na.png,maybe\n")
    (tmp_path / "gone.csv").write_text("path,label\nb.png,1\n")
    cases = [
        (tmp_path / "missing_dir", "not found"),
        (tmp_path / "nopath.csv", "--path-column"),
        (tmp_path / "maybe.csv", "'maybe'"),
        (tmp_path / "gone.csv", "not found"),
    ]
    for source, fragment in cases:
        with pytest.raises(DataError, match=fragment) as info:
            index_source(source)
        assert "\n" not in str(info.value) and str(source.name) in str(info.value)
    with pytest.raises(ConfigError, match="do not apply"):
        index_source(tmp_path / "maybe.csv", labels=tmp_path / "x.csv")
    unlabelled = index_source(tmp_path / "nopath.csv", path_column="file", no_labels=True)
    assert unlabelled["label"].isna().all()


def _dicom(path: Path, patient: str, study: str, part: str, view: str) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.PatientName, ds.StudyInstanceUID = patient, "Doe^Jane", study
    ds.SeriesInstanceUID, ds.BodyPartExamined, ds.ViewPosition, ds.Modality = generate_uid(), part, view, "DX"
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 4, 4, 16, 12, 11
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PixelRepresentation = 1, "MONOCHROME2", 0
    ds.PixelData = np.arange(16, dtype=np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


@pytest.mark.filterwarnings("ignore:.*left out as not DICOM")  # its notes.txt (tested below)
def test_dicom_folder_never_writes_identifiers_in_clear(tmp_path: Path) -> None:
    folder = tmp_path / "dicoms"
    studies = ["1.2.826.0.1.3680043.8.498.111", "1.2.826.0.1.3680043.8.498.222"]
    _dicom(folder / "a" / "one.dcm", "PAT-4711-SECRET", studies[0], "HAND", "PA")
    _dicom(folder / "a" / "noextension", "PAT-4711-SECRET", studies[0], "HAND", "LL")
    _dicom(folder / "b" / "three.bin", "PAT-0815-SECRET", studies[1], "SHOULDER", "AP")
    (folder / "notes.txt").write_text("not a dicom")
    (tmp_path / "labels.csv").write_text(f"study_id,label\n{studies[0]},abnormal\n{pseudonymise(studies[1])},0\n")
    assert detect_source(folder) == "dicom"
    frame = index_source(folder, labels=tmp_path / "labels.csv")
    assert len(frame) == 3 and set(frame["source"]) == {"dicom"}
    assert sorted(frame["body_part"]) == ["HAND", "HAND", "SHOULDER"]
    assert frame.groupby("patient_id")["study_id"].nunique().tolist() == [1, 1]
    assert set(frame["patient_id"]) == {pseudonymise("PAT-4711-SECRET"), pseudonymise("PAT-0815-SECRET")}
    assert dict(zip(frame["body_part"], frame["label"], strict=True)) == {"HAND": 1, "SHOULDER": 0}
    out = tmp_path / "manifest.csv"
    write_manifest(frame, out)
    text = out.read_text()
    for secret in ("PAT-4711-SECRET", "PAT-0815-SECRET", "4711", *studies, "Doe"):
        assert secret not in text
    assert index_dicom_folder(folder)["label"].isna().all()


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    index_cli.add_arguments(parser)
    return index_cli.run(parser.parse_args(argv))


def test_cli_index_writes_manifest_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    truth = _build_mura(tmp_path / "data")
    assert _cli([str(tmp_path / "data"), "-o", str(tmp_path / "out" / "m.csv")]) == 0
    frame = read_manifest(tmp_path / "out" / "m.csv")
    assert len(frame) == len(truth) and "mura_split" in frame.columns
    printed = capsys.readouterr().out
    assert f"rows: {len(truth)}" in printed and f"patients: {truth['patient_id'].nunique()}" in printed
    with pytest.raises(ConfigError):
        _cli([str(tmp_path / "data"), "-o", str(tmp_path / "x.csv"), "--path-column", "file"])
    table = tmp_path / "t.csv"
    _png(tmp_path / "i.png")
    table.write_text("img,lab,body_part\ni.png,0,hand\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _cli([str(table), "-o", str(tmp_path / "t_m.csv"), "--path-column", "img", "--label-column", "lab"]) == 0
    assert "no patient ids" in capsys.readouterr().out


def test_dicom_folder_says_which_files_it_left_out(tmp_path: Path) -> None:
    _dicom(tmp_path / "dcm" / "one.dcm", "PAT-1", "1.2.3", "HAND", "PA")
    (tmp_path / "dcm" / "fake.dcm").write_text("not a DICOM file")
    (tmp_path / "dcm" / ".hidden").write_text("ignored")
    with pytest.warns(UserWarning, match=r"1 file\(s\) left out as not DICOM.*fake\.dcm"):
        frame = index_dicom_folder(tmp_path / "dcm")
    assert not frame["path"].str.endswith("fake.dcm").any()


def test_dicom_files_without_study_uid_are_studies_of_their_own_by_folder_path(tmp_path: Path) -> None:
    """Two ``1.dcm`` in different sub-folders, neither with a StudyInstanceUID: two studies, not one."""
    for sub in ("x", "y"):
        _dicom(tmp_path / "dcm" / sub / "1.dcm", "PAT-1", "", "HAND", "PA")
    frame = index_dicom_folder(tmp_path / "dcm")
    assert sorted(frame["study_id"]) == ["image:x/1.dcm", "image:y/1.dcm"]


def test_dicom_folder_leaves_out_unreadable_headers_and_never_opens_a_fifo(tmp_path: Path) -> None:
    import os

    _dicom(tmp_path / "dcm" / "one.dcm", "PAT-1", "1.2.3", "HAND", "PA")
    good = (tmp_path / "dcm" / "one.dcm").read_bytes()
    # 'DICM', then a group length of 3 bytes (no unsigned long): pydicom cannot parse the header.
    (tmp_path / "dcm" / "cut.dcm").write_bytes(good[:132] + b"\x02\x00\x00\x00UL\x03\x00\x01\x02\x03" + good[144:])
    os.mkfifo(tmp_path / "dcm" / "pipe.dcm")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = index_dicom_folder(tmp_path / "dcm")  # would block for ever opening the FIFO
    assert [Path(p).name for p in frame["path"]] == ["one.dcm"]
    messages = " | ".join(str(w.message) for w in caught)
    assert "1 DICOM file(s) left out because their header cannot be read, e.g. cut.dcm" in messages
    assert "1 entry(ies) left out as not regular files, e.g. pipe.dcm (named pipe (FIFO))" in messages


def test_empty_or_binary_labels_csv_is_a_one_line_error(tmp_path: Path) -> None:
    _dicom(tmp_path / "dcm" / "one.dcm", "PAT-1", "1.2.3", "HAND", "PA")
    for name, content in (("empty.csv", b""), ("binary.csv", bytes(range(256)) * 8)):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError, match=rf"{name}: not a readable labels CSV") as info:
            index_dicom_folder(tmp_path / "dcm", labels=tmp_path / name)
        assert "\n" not in str(info.value)


def test_csv_study_ids_stay_unique_when_names_differ_only_by_extension(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    _png(tmp_path / "a.jpg")  # a PNG in content: fine, the name is what matters here
    (tmp_path / "t.csv").write_text("path,label\na.png,0\na.jpg,1\n")
    assert sorted(index_csv(tmp_path / "t.csv")["study_id"]) == ["a.jpg", "a.png"]
