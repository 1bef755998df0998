"""The semi-supervised split: exact unit counts, no leakage, mixed units out of train, reproducibility."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from xrad.cli import split as split_cli
from xrad.data.indexing import index_source
from xrad.data.manifest import read_manifest, write_manifest
from xrad.data.splits import SplitConfig, check_leakage, make_split, split_summary
from xrad.errors import ConfigError, DataError

PARTS = ("HAND", "WRIST", "SHOULDER")


def _manifest(n_patients: int, seed: int, multi_part: bool, p_abn: float = 0.35, p_mixed: float = 0.1) -> pd.DataFrame:
    """A labelled manifest: per patient 1 (or 1-3) body parts, 1-3 studies each of 1-2 images.

    A unit is normal, abnormal (all studies positive) or mixed (both kinds of studies).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        parts = rng.choice(PARTS, size=rng.integers(1, 4) if multi_part else 1, replace=False)
        for part in parts:
            kind = rng.choice(["normal", "abnormal", "mixed"], p=[1 - p_abn - p_mixed, p_abn, p_mixed])
            n_studies = 2 if kind == "mixed" else int(rng.integers(1, 4))
            for s in range(n_studies):
                label = {"normal": 0, "abnormal": 1, "mixed": s % 2}[kind]
                for k in range(int(rng.integers(1, 3))):
                    rows.append(
                        {
                            "path": f"/data/{part}/p{p:04d}/s{s}/i{k}.png",
                            "patient_id": f"{p:05d}",
                            "study_id": f"{part}/{p:05d}/s{s}",
                            "body_part": str(part),
                            "view": "",
                            "label": label,
                            "source": "mura",
                        }
                    )
    return pd.DataFrame(rows)


def _unit_classes(frame: pd.DataFrame) -> pd.Series:
    mean = frame.groupby(frame["patient_id"] + "|" + frame["body_part"])["label"].mean()
    return pd.Series(np.where(mean == 0, "normal", np.where(mean == 1, "abnormal", "mixed")), index=mean.index)


def _units_per(split: pd.DataFrame, name: str, cls: str, classes: pd.Series) -> int:
    units = split.loc[split["split"] == name, "unit_id"].unique()
    return int((classes.loc[units] == cls).sum())


@pytest.mark.parametrize("r_abn", [0.0, 0.025, 0.05, 0.10, 0.15])
@pytest.mark.parametrize("group", ["unit", "patient"])
def test_exact_unit_counts(r_abn: float, group: str) -> None:
    # One unit per patient: patient grouping must then hit the papers' counts exactly too.
    frame = _manifest(400, seed=1, multi_part=group == "unit")
    classes = _unit_classes(frame)
    n = {c: int((classes == c).sum()) for c in ("normal", "abnormal", "mixed")}
    out = make_split(frame, SplitConfig(seed=5, abnormal_ratio=r_abn, known_normal=0.05, group=group))
    train_size = int(0.5 * len(classes))
    want_norm, want_abn = math.floor((1 - r_abn) * train_size + 1e-9), math.floor(r_abn * train_size + 1e-9)
    assert _units_per(out, "train", "normal", classes) == want_norm
    assert _units_per(out, "train", "abnormal", classes) == want_abn
    assert _units_per(out, "train", "mixed", classes) == 0
    for cls, taken in (("normal", want_norm), ("abnormal", want_abn), ("mixed", 0)):
        assert _units_per(out, "valid", cls, classes) == (n[cls] - taken) // 2
        assert _units_per(out, "test", cls, classes) == n[cls] - taken - (n[cls] - taken) // 2
    semi = out.groupby("unit_id")["semi_label"].agg(["min", "max"])
    assert (semi["min"] == semi["max"]).all()  # a unit's images share their semi-label
    semi = semi["min"]
    train_units = out.loc[out["split"] == "train", "unit_id"].unique()
    assert int((semi.loc[train_units] == 1).sum()) == int(0.05 * train_size)
    assert int((semi.loc[train_units] == -1).sum()) == want_abn  # known_abnormal=1: all train anomalies known
    assert (out.loc[out["split"] != "train", "semi_label"] == 0).all()
    assert (out.loc[out["semi_label"] == 1, "label"] == 0).all() and (
        out.loc[out["semi_label"] == -1, "label"] == 1
    ).all()


def test_patient_grouping_keeps_patients_whole_and_mixed_out_of_train() -> None:
    # Whole patients can meet the targets only if enough patients have no anomaly: keep anomalies rarer.
    frame = _manifest(300, seed=2, multi_part=True, p_abn=0.15, p_mixed=0.05)
    out = make_split(frame, SplitConfig(seed=3, abnormal_ratio=0.10))
    assert (out.groupby("patient_id")["split"].nunique() == 1).all()
    mixed_patients = {u.split("|")[0] for u, c in _unit_classes(frame).items() if c == "mixed"}
    assert mixed_patients and not mixed_patients & set(out.loc[out["split"] == "train", "patient_id"])
    # Targets are approached within one patient's units (at most 3 here).
    classes = _unit_classes(frame)
    train_size = int(0.5 * len(classes))
    assert abs(_units_per(out, "train", "normal", classes) - int(0.9 * train_size)) <= 3
    assert abs(_units_per(out, "train", "abnormal", classes) - int(0.1 * train_size)) <= 3
    # The papers' unit grouping does let patients cross splits, and the leakage check says so.
    paper = make_split(frame, SplitConfig(seed=3, abnormal_ratio=0.10, group="unit"))
    assert _units_per(paper, "train", "mixed", classes) == 0
    with pytest.raises(DataError, match=r"split leakage: patient \d+ is in"):
        check_leakage(paper)


def test_same_seed_same_output_any_row_order_and_new_seed_differs() -> None:
    frame = _manifest(200, seed=4, multi_part=True)
    config = SplitConfig(seed=11, abnormal_ratio=0.05)
    first = make_split(frame, config)
    shuffled = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    pd.testing.assert_frame_equal(first, make_split(shuffled, config))
    other = make_split(frame, SplitConfig(seed=12, abnormal_ratio=0.05))
    assert (other["split"] != first["split"]).any()
    assert not other[["split", "semi_label"]].equals(first[["split", "semi_label"]])


def test_known_abnormal_below_one_leaves_anomalies_unlabelled_in_train() -> None:
    frame = _manifest(400, seed=5, multi_part=False)
    out = make_split(frame, SplitConfig(seed=0, abnormal_ratio=0.10, known_abnormal=0.5))
    train = out[out["split"] == "train"]
    abn_units = train.loc[train["label"] == 1, "unit_id"].unique()
    known = train.loc[train["semi_label"] == -1, "unit_id"].unique()
    assert len(known) == math.floor(0.5 * len(abn_units) + 0.5) and 0 < len(known) < len(abn_units)
    unlabelled = train[(train["label"] == 1) & (train["semi_label"] == 0)]
    assert unlabelled["unit_id"].nunique() == len(abn_units) - len(known)
    assert any("contamination" in note for note in out.attrs["split_notes"])


def test_impossible_requests_and_bad_input_raise() -> None:
    frame = _manifest(60, seed=6, multi_part=False, p_abn=0.6, p_mixed=0.1)
    with pytest.raises(DataError, match="normal units"):
        make_split(frame, SplitConfig(train_fraction=0.9, abnormal_ratio=0.0))
    with pytest.raises(ConfigError):
        SplitConfig(abnormal_ratio=1.5).validate()
    unknown = frame.astype({"label": "Int64"})
    unknown.loc[0, "label"] = pd.NA
    with pytest.raises(DataError, match="no label"):
        make_split(unknown)
    with pytest.raises(DataError, match="body part"):
        make_split(frame, SplitConfig(body_parts=("KNEE",)))


def test_fracatlas_hand_shoulder_per_image(fracatlas_dir: Path) -> None:
    frame = index_source(fracatlas_dir / "labels.csv")
    out = make_split(frame, SplitConfig(seed=0, body_parts=("HAND", "SHOULDER")))
    # The authors' splitter on FracAtlas hand + shoulder (targets.md) gives train 690 / valid 345 / test 347 over
    # 1382 images; 13 of them form 6 groups of byte-identical files (1375 distinct images), which xrad keeps
    # together as one unit each, so no copy sits in train and test: 688 / 346 / 348.
    assert out["split"].value_counts().to_dict() == {"train": 688, "valid": 346, "test": 348}
    assert set(out["body_part"]) == {"HAND", "SHOULDER"} and (out["unit_kind"] == "image").all()
    assert out["unit_id"].nunique() == 1375 and (out.groupby("unit_id")["split"].nunique() == 1).all()
    assert any("no patient ids" in note for note in out.attrs["split_notes"])
    train = out[out["split"] == "train"]
    assert int((train["semi_label"] == 1).sum()) == int(0.05 * 686)
    assert int((train["semi_label"] == -1).sum()) == int((train["label"] == 1).sum()) == 34


def test_cli_split_writes_manifest_summary_and_prints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frame = _manifest(120, seed=7, multi_part=True)
    write_manifest(frame, tmp_path / "m.csv")
    parser = argparse.ArgumentParser()
    split_cli.add_arguments(parser)
    args = parser.parse_args(
        [
            str(tmp_path / "m.csv"),
            "-o",
            str(tmp_path / "s.csv"),
            "--seed",
            "9",
            "--abnormal-ratio",
            "0.1",
            "--known-abnormal",
            "0.5",
            "--body-parts",
            "hand,wrist",
        ]
    )
    assert split_cli.run(args) == 0
    out = read_manifest(tmp_path / "s.csv", require=("path", "split", "semi_label"))
    assert set(out["body_part"]) == {"HAND", "WRIST"} and set(out["split"]) == {"train", "valid", "test"}
    summary = pd.read_csv(tmp_path / "s.summary.csv")
    totals = summary[summary["body_part"] == "ALL"]
    assert int(totals["images"].sum()) == len(out)
    assert int(totals["known_abnormal"].sum()) == int((out["semi_label"] == -1).sum())
    detail = summary[summary["body_part"] != "ALL"].groupby("split")["images"].sum()
    assert detail.to_dict() == out["split"].value_counts().to_dict()
    printed = capsys.readouterr().out
    assert "leakage check passed" in printed and "known_abnormal" in printed
    assert split_summary(make_split(frame, SplitConfig(seed=9)))["split"].iloc[0] == "train"
    with Image.open(tmp_path / "s.summary.png") as figure:  # the same counts drawn (Fig. 6)
        assert figure.width > 400 and figure.height > 200


def test_split_figure_draws_the_split_counts(tmp_path: Path) -> None:
    """The stacked bars of the split figure are the split's images by semi-label and label, exactly."""
    from xrad.evaluation.plots import SPLIT_GROUPS, split_counts, split_summary_figure

    out = make_split(_manifest(160, seed=3, multi_part=True), SplitConfig(seed=4, known_abnormal=0.5))
    counts = split_counts(split_summary(out))
    for split, rows in out.groupby("split"):
        label, semi = rows["label"].astype(int), rows["semi_label"]
        assert counts.loc[split].to_dict() == {
            "known_normal": int(((semi == 1) & (label == 0)).sum()),
            "unlabelled_normal": int(((semi == 0) & (label == 0)).sum()),
            "unlabelled_abnormal": int(((semi == 0) & (label == 1)).sum()),
            "known_abnormal": int((semi == -1).sum()),
        }
    assert int(counts.to_numpy().sum()) == len(out)
    figure = split_summary_figure(split_summary(out), "split")
    left, right = figure.axes
    heights = np.array([p.get_height() for p in left.patches]).reshape(len(SPLIT_GROUPS), len(counts))
    assert np.array_equal(heights.T, counts.to_numpy(float))
    per_part = out.groupby("body_part").size().sum()
    assert sum(p.get_height() for p in right.patches) == per_part


def test_a_split_with_an_empty_train_part_is_refused(toy_manifest: Path) -> None:
    frame = read_manifest(toy_manifest)
    with pytest.raises(DataError, match="leaves train empty"):
        make_split(frame, SplitConfig(train_fraction=0.0), where="toy")
    with pytest.raises(DataError, match="leaves train empty"):  # 1 patient × 2 parts: too few for a train unit
        make_split(frame[frame["patient_id"] == "p1"], SplitConfig(train_fraction=0.3), where="toy")


def test_a_header_only_manifest_is_a_one_line_error(tmp_path: Path, toy_manifest: Path) -> None:
    header = toy_manifest.read_text().splitlines()[0] + "\n"
    (tmp_path / "empty.csv").write_text(header)
    with pytest.raises(DataError, match=r"empty.csv: the manifest has no rows"):  # was an AttributeError
        make_split(read_manifest(tmp_path / "empty.csv"), where=str(tmp_path / "empty.csv"))


def _image(path: Path, value: int) -> str:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(path)
    return str(path)


def test_identical_files_without_patient_ids_are_one_unit_and_share_a_split(tmp_path: Path) -> None:
    paths = [_image(tmp_path / f"i{n}.png", 3 * n) for n in range(40)]
    copies = []
    for n in range(0, 40, 4):  # ten images with a copy under another name
        copy = tmp_path / f"copy{n}.png"
        copy.write_bytes(Path(paths[n]).read_bytes())
        copies.append((paths[n], str(copy)))
    rows = paths + [c for _, c in copies]
    frame = pd.DataFrame(
        {"path": rows, "patient_id": "", "body_part": "HAND", "label": [int(i % 7 == 0) for i in range(len(rows))]}
    )
    frame.loc[frame["path"].isin([c for _, c in copies]), "label"] = [
        int(i * 4 % 7 == 0) for i in range(len(copies))
    ]  # a copy has its original's label
    for seed in range(5):
        out = make_split(frame, SplitConfig(seed=seed, abnormal_ratio=0.1)).set_index("path")
        assert out["unit_id"].nunique() == 40
        assert all(out.at[a, "split"] == out.at[c, "split"] for a, c in copies)


def test_image_leakage_by_path_and_by_content_is_refused(tmp_path: Path) -> None:
    from xrad.data.splits import check_image_leakage

    a, b, c = (_image(tmp_path / f"{n}.png", v) for n, v in (("a", 10), ("b", 20), ("c", 30)))
    frame = pd.DataFrame({"path": [a, b, c], "split": ["train", "valid", "test"]})
    check_image_leakage(frame)  # three different images: fine
    with pytest.raises(DataError, match=r"image .*a.png is in test and train"):
        check_image_leakage(pd.concat([frame, frame.iloc[[0]].assign(split="test")]), where="m.csv")
    copy = tmp_path / "elsewhere" / "copy-of-b.png"
    copy.parent.mkdir()
    copy.write_bytes(Path(b).read_bytes())  # the same image under another name
    with pytest.raises(DataError, match=r"copy-of-b.png \(train\) and .*b.png \(valid\) are the same image") as info:
        check_image_leakage(pd.concat([frame, pd.DataFrame({"path": [str(copy)], "split": ["train"]})]))
    assert "\n" not in str(info.value)
    # Duplicates inside one split are not a leak; nor are rows without a split.
    check_image_leakage(pd.concat([frame, pd.DataFrame({"path": [str(copy), a], "split": ["valid", ""]})]))
