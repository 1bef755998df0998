"""Phantom radiographs (`xrad synth`): layout, CSVs, determinism, ground truth, resume, learnability."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from xrad.data.phantoms.anatomy import PARTS, VIEW_KINDS, build_skeleton, sample_patient
from xrad.data.phantoms.anomalies import ANOMALY_TYPES, AnomalySpec, render_view
from xrad.data.phantoms.generate import GROUND_TRUTH_COLUMNS, SynthConfig, generate_phantoms, plan_census
from xrad.data.phantoms.render import plan_geometry
from xrad.errors import ConfigError

IMAGE_RE = re.compile(
    r"^MURA-v1\.1/(train|valid)/XR_(ELBOW|FINGER|FOREARM|HAND|HUMERUS|SHOULDER|WRIST)/"
    r"patient(\d{5})/study(\d+)_(positive|negative)/image(\d+)\.png$"
)
SMALL = dict(n_patients=12, size=128)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("synth") / "set"
    frame = generate_phantoms(out, SynthConfig(seed=3, workers=1, **SMALL), progress=False)
    return out, frame


def _load(root: Path, rel: str) -> np.ndarray:
    return np.asarray(Image.open(root / rel))


def _grey(root: Path, rel: str) -> np.ndarray:
    return np.asarray(Image.open(root / rel).convert("L")).astype(np.float32)


def _carrier_mask(row, shape) -> np.ndarray:
    import cv2

    mask = np.zeros(shape, np.uint8)
    corners = np.array(json.loads(row.carrier_corners))
    cv2.fillPoly(mask, [np.round(corners * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def test_same_seed_is_byte_identical_whatever_the_workers(phantoms, tmp_path):
    root, _ = phantoms
    again = tmp_path / "again"
    generate_phantoms(again, SynthConfig(seed=3, workers=2, **SMALL), progress=False)
    first, second = _files(root), _files(again)
    assert sorted(first) == sorted(second)
    assert all(first[k] == second[k] for k in first), [k for k in first if first[k] != second[k]][:5]


def test_different_seed_differs(phantoms, tmp_path):
    root, frame = phantoms
    other = generate_phantoms(tmp_path / "other", SynthConfig(seed=4, workers=1, **SMALL), progress=False)
    common = set(frame["path"]) & set(other["path"])
    assert common, "both sets start with patient00001"
    same = [p for p in common if (root / p).read_bytes() == (tmp_path / "other" / p).read_bytes()]
    assert not same


def test_layout_matches_mura(phantoms):
    root, frame = phantoms
    images = [p.relative_to(root).as_posix() for p in (root / "MURA-v1.1").rglob("*.png")]
    assert len(images) == len(frame) > 0
    for rel in images:
        m = IMAGE_RE.match(rel)
        assert m, rel
    others = {p.name for p in (root / "MURA-v1.1").iterdir() if p.is_file()}
    assert others == {
        "train_image_paths.csv",
        "valid_image_paths.csv",
        "train_labeled_studies.csv",
        "valid_labeled_studies.csv",
    }
    assert not list((root / "MURA-v1.1").rglob("*_body.png")), "masks must stay outside MURA-v1.1"
    for rel in images:  # 8-bit greyscale, a few RGB-encoded greyscale
        image = Image.open(root / rel)
        assert image.mode in ("L", "RGB")
        assert max(image.size) == SMALL["size"] and 0.55 <= min(image.size) / max(image.size) <= 1.0
        if image.mode == "RGB":
            arr = np.asarray(image)
            assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()


def test_csvs_match_the_tree(phantoms):
    root, frame = phantoms
    for split in ("train", "valid"):
        lines = (root / "MURA-v1.1" / f"{split}_image_paths.csv").read_text().splitlines()
        tree = {p.relative_to(root).as_posix() for p in (root / "MURA-v1.1" / split).rglob("*.png")}
        assert lines and set(lines) == tree and len(lines) == len(tree)  # no header, no duplicates
        studies = (root / "MURA-v1.1" / f"{split}_labeled_studies.csv").read_text().splitlines()
        folders = {p.parent.relative_to(root).as_posix() + "/" for p in (root / "MURA-v1.1" / split).rglob("*.png")}
        parsed = dict(line.rsplit(",", 1) for line in studies)
        assert set(parsed) == folders and len(studies) == len(folders)
        for folder, label in parsed.items():
            assert label == ("1" if folder.endswith("_positive/") else "0")
    assert list(frame.columns) == list(GROUND_TRUTH_COLUMNS)
    gt = pd.read_csv(root / "ground_truth.csv", dtype=str, keep_default_na=False)
    assert list(gt["path"]) == list(frame["path"])
    for row in frame.itertuples():
        m = IMAGE_RE.match(row.path)
        assert (m[1], m[2], m[3], int(m[4]), int(m[6])) == (
            row.mura_split,
            row.body_part,
            row.patient_id,
            row.study_number,
            row.image_number,
        )
        assert row.study == f"study{m[4]}_{m[5]}" and row.label == int(m[5] == "positive")
        assert (row.anomaly_type in ANOMALY_TYPES) == bool(row.label) and (row.anomaly_mask_path != "") == bool(
            row.label
        )


def test_census_guarantees(phantoms):
    _, frame = phantoms
    units = frame.groupby(["patient_id", "body_part"])
    assert units["study_number"].max().max() >= 10  # multi-digit study numbers
    assert (units["label"].nunique() == 2).any()  # a mixed unit
    assert set(frame["body_part"]) == set(PARTS)  # all parts once n_patients >= 7
    splits = frame.groupby("patient_id")["mura_split"].nunique()
    assert (splits == 1).all() and set(frame["mura_split"]) == {"train", "valid"}
    per_study = frame.groupby(["patient_id", "body_part", "study_number"])["image_number"]
    assert per_study.max().between(1, 4).all() and (per_study.max() == per_study.count()).all()
    for n in (1, 2, 3, 4):  # tiny sets: still a mixed unit whenever a unit has two studies
        units = plan_census(SynthConfig(n_patients=n, seed=1))
        if any(len(u["studies"]) >= 2 for u in units):
            assert any(len({s[0] for s in u["studies"]}) == 2 for u in units)


def test_a_one_part_census_is_valid():
    # Patients draw up to three distinct parts; with one weighted part they must get that part only
    # (this used to end in numpy's "Fewer non-zero entries in p than size").
    units = plan_census(SynthConfig(n_patients=60, seed=2, part_weights={"WRIST": 1.0}))
    assert {PARTS[u["part"]] for u in units} == {"WRIST"}
    assert len(units) == 60  # one unit per patient
    two = plan_census(SynthConfig(n_patients=60, seed=2, part_weights={"WRIST": 1.0, "HAND": 1.0}))
    assert {PARTS[u["part"]] for u in two} == {"WRIST", "HAND"} and max(
        sum(u["patient"] == p for u in two) for p in range(1, 61)
    ) <= 2


def test_masks_binary_and_aligned(phantoms):
    root, frame = phantoms
    for row in frame.itertuples():
        image = _grey(root, row.path)
        body = _load(root, row.body_mask_path)
        carrier = _carrier_mask(row, image.shape)
        assert body.shape == image.shape and body.dtype == np.uint8 and set(np.unique(body)) <= {0, 1}
        assert body.sum() > 0.05 * body.size
        assert (body.astype(bool) & ~carrier).sum() <= 0.02 * body.sum()  # (edge pixels of the polygon)
        if row.label:
            anomaly = _load(root, row.anomaly_mask_path).astype(bool)
            assert anomaly.shape == image.shape and anomaly.any(), row.path  # visible in every view
            assert (anomaly & ~(body.astype(bool) | carrier)).sum() <= 0.02 * anomaly.sum()


def test_carrier_corners_consistent(phantoms):
    root, frame = phantoms
    assert frame["carrier_rotation_deg"].abs().max() <= 15.0 + 1e-6
    for row in frame.itertuples():
        h, w = _grey(root, row.path).shape
        c = np.array(json.loads(row.carrier_corners))
        assert c.shape == (4, 2)
        angle = math.degrees(math.atan2(c[1, 1] - c[0, 1], c[1, 0] - c[0, 0]))
        assert abs(angle - row.carrier_rotation_deg) < 0.01
        top, right = c[1] - c[0], c[2] - c[1]
        assert abs(top @ right) < 1e-3 * np.linalg.norm(top) * np.linalg.norm(right)  # a rectangle
        assert np.allclose(c[0] + c[2], c[1] + c[3], atol=1e-2)
        inside = (c[:, 0] >= 0).all() and (c[:, 0] <= w - 1).all() and (c[:, 1] >= 0).all() and (c[:, 1] <= h - 1).all()
        assert inside != bool(row.carrier_clipped), row.path
        assert top[0] * right[1] - top[1] * right[0] > 0  # clockwise on screen (y down) from top-left


def test_intensity_statistics(phantoms):
    root, frame = phantoms
    seen = {0: 0, 1: 0}
    for row in frame.itertuples():
        image = _grey(root, row.path)
        carrier = _carrier_mask(row, image.shape)
        body = _load(root, row.body_mask_path).astype(bool)
        import cv2

        outside = ~cv2.dilate(carrier.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        empty = cv2.erode((carrier & ~body).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        if outside.sum() < 50 or empty.sum() < 50:
            continue
        surround, background, tissue = image[outside].mean(), image[empty].mean(), image[body].mean()
        if row.inverted:
            assert surround > 200 and surround > background > tissue, row.path
        else:
            assert surround < 40 and surround < background < tissue, row.path
        seen[row.inverted] += 1
    assert seen[0] > 10


def test_anomaly_mask_covers_the_change():
    """Rendering the same view with and without the anomaly changes pixels inside its mask only."""
    import cv2

    rng = np.random.default_rng(0)
    for part, kind in [
        ("FOREARM", "fracture_gap"),
        ("HUMERUS", "plate"),
        ("WRIST", "displaced_fragment"),
        ("ELBOW", "lesion"),
        ("FOREARM", "screws"),
        ("HUMERUS", "cortical_bump"),
    ]:
        patient = sample_patient(part, rng)
        geom = plan_geometry(
            192,
            np.random.default_rng(1),
            rotated_rate=0.5,
            max_rotation=15,
            clipped_rate=0,
            inverted_rate=0,
            rgb_rate=0,
            marker_rate=0,
        )
        sk = build_skeleton(part, patient, VIEW_KINDS[0])
        bone = max((i for i, b in enumerate(sk.bones) if b.long), key=lambda i: sk.bones[i].radius)
        spec = AnomalySpec(kind, bone, 0.5, 1.0, 20.0, {"u1": 0.2, "u2": 0.6, "u3": 0.5, "swelling": 0.0})
        clean, _, _ = render_view(sk, geom, None, 1.0, 0.0, "R", np.random.default_rng(2))
        dirty, _, mask = render_view(sk, geom, spec, 1.0, 0.0, "R", np.random.default_rng(2))
        changed = np.abs(clean.astype(int) - dirty.astype(int)) > 6
        near = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        assert mask.any() and changed.any(), (part, kind)
        assert (changed & ~near).sum() <= 0.02 * changed.sum(), (part, kind)
        assert (changed & mask).sum() >= 0.3 * min(mask.sum(), changed.sum()), (part, kind)


def test_difficulty_scales_contrast():
    """Same seed, harder difficulty: the same anomaly differs less from the clean rendering."""
    part, patient = "FOREARM", sample_patient("FOREARM", np.random.default_rng(5))
    geom = plan_geometry(
        192,
        np.random.default_rng(6),
        rotated_rate=0,
        max_rotation=15,
        clipped_rate=0,
        inverted_rate=0,
        rgb_rate=0,
        marker_rate=0,
    )
    sk = build_skeleton(part, patient, "pa")
    clean, _, _ = render_view(sk, geom, None, 1.0, 0.0, "R", np.random.default_rng(0))
    for kind in ("plate", "fracture_gap", "lesion"):
        spec = AnomalySpec(kind, 0, 0.5, 1.0, 10.0, {"u1": 0.2, "u2": 0.6, "u3": 0.5, "swelling": 0.0})
        change = []
        for difficulty in (0.5, 1.0, 2.0):
            dirty, _, _ = render_view(sk, geom, spec, 1.0 / difficulty, 0.0, "R", np.random.default_rng(0))
            change.append(np.abs(dirty.astype(float) - clean).sum())
        assert change[0] > change[1] > change[2] > 0, (kind, change)


def test_parts_have_distinct_anatomy():
    patient = sample_patient("HAND", np.random.default_rng(0))
    signatures = set()
    for part in PARTS:
        sk = build_skeleton(part, patient, "pa")
        visible = [b for b in sk.bones if abs(b.point(0.5)[0]) < 0.45 and abs(b.point(0.5)[1]) < 0.5]
        signatures.add((len(visible), round(float(np.mean([b.radius for b in visible])), 3)))
    assert len(signatures) == len(PARTS)


def test_resume_overwrite_and_config_mismatch(tmp_path):
    out = tmp_path / "set"
    config = SynthConfig(n_patients=3, size=64, seed=7, workers=1)
    first = generate_phantoms(out, config, progress=False)
    victim = out / first["path"].iloc[-1]
    original = victim.read_bytes()
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    victim.unlink()
    again = generate_phantoms(out, config, progress=False)
    pd.testing.assert_frame_equal(first, again)
    assert victim.read_bytes() == original  # the missing image is re-rendered identically
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items() if p != victim)  # others kept
    with pytest.raises(ConfigError, match="--overwrite"):
        generate_phantoms(out, SynthConfig(n_patients=3, size=64, seed=8, workers=1), progress=False)
    other = generate_phantoms(
        out, SynthConfig(n_patients=2, size=64, seed=8, workers=1), progress=False, overwrite=True
    )
    assert sorted(p.relative_to(out).as_posix() for p in (out / "MURA-v1.1").rglob("*.png")) == sorted(other["path"])
    with pytest.raises(ConfigError):
        SynthConfig(n_patients=0).validate()
    with pytest.raises(ConfigError):
        SynthConfig(anomaly_mix={"tumour": 1.0}).validate()


def test_cli(tmp_path, capsys):
    from xrad.cli.main import main

    out = tmp_path / "cli"
    assert main(["synth", "-o", str(out), "--patients", "3", "--size", "64", "--workers", "1", "--quiet"]) == 0
    text = capsys.readouterr().out
    n = len((out / "MURA-v1.1" / "train_image_paths.csv").read_text().splitlines())
    n += len((out / "MURA-v1.1" / "valid_image_paths.csv").read_text().splitlines())
    assert f"{n} images" in text and "3 patients" in text
    assert main(["synth", "-o", str(out), "--patients", "3", "--size", "64", "--seed", "1", "--quiet"]) == 2


def _crop64(root: Path, row) -> np.ndarray:
    """Carrier crop from the ground-truth corners, inversion undone, letterboxed to 64 px (a stand-in for
    the preprocessing stage)."""
    import cv2

    image = _grey(root, row.path) / 255.0
    if row.inverted:
        image = 1.0 - image
    c = np.array(json.loads(row.carrier_corners), np.float32)
    w, h = int(np.linalg.norm(c[1] - c[0])), int(np.linalg.norm(c[3] - c[0]))
    target = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float32)
    crop = cv2.warpPerspective(image, cv2.getPerspectiveTransform(c, target), (w, h))
    if w > h:
        crop, (w, h) = np.rot90(crop).copy(), (h, w)
    s = 64 / max(w, h)
    crop = cv2.resize(crop, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    out = np.zeros((64, 64), np.float32)
    y0, x0 = (64 - crop.shape[0]) // 2, (64 - crop.shape[1]) // 2
    out[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
    return out


@pytest.mark.slow
def test_anomalies_learnable_but_not_trivial(tmp_path):
    """Raw 32×32 pixels barely beat chance; a tiny CNN at 64 px learns the anomalies (patient-level halves)."""
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    root = tmp_path / "learn"
    frame = generate_phantoms(root, SynthConfig(n_patients=110, size=128, seed=11, workers=2), progress=False)
    y = frame["label"].to_numpy()
    train = np.array(frame["patient_id"].isin(set(frame["patient_id"].unique()[::2])))  # writable copy
    raw = np.stack(
        [
            np.asarray(Image.open(root / p).convert("L").resize((32, 32), Image.BILINEAR), np.float32).ravel()
            for p in frame["path"]
        ]
    )
    scaler = StandardScaler().fit(raw[train])
    floor = LogisticRegression(C=0.01, max_iter=2000).fit(scaler.transform(raw[train]), y[train])
    raw_auc = roc_auc_score(y[~train], floor.decision_function(scaler.transform(raw[~train])))

    x = torch.from_numpy(np.stack([_crop64(root, r) for r in frame.itertuples()]))[:, None]
    target = torch.from_numpy(y.astype(np.float32))
    with torch.random.fork_rng():
        torch.manual_seed(0)  # network initialisation only; the global state is restored afterwards
        layers = []
        for a, b in ((1, 16), (16, 32), (32, 64), (64, 64)):
            layers += [
                torch.nn.Conv2d(a, b, 3, padding=1),
                torch.nn.BatchNorm2d(b),
                torch.nn.ReLU(),
                torch.nn.MaxPool2d(2),
            ]
        net = torch.nn.Sequential(*layers, torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, 1))
    optimiser, gen = torch.optim.Adam(net.parameters(), 2e-3), torch.Generator().manual_seed(0)
    xt, yt = x[torch.from_numpy(train)], target[torch.from_numpy(train)]
    for _ in range(12):
        net.train()
        for batch in torch.randperm(len(xt), generator=gen).split(32):
            flip = [3] if torch.rand(1, generator=gen).item() < 0.5 else []
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(xt[batch].flip(flip)).squeeze(1), yt[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    net.eval()
    with torch.no_grad():
        scores = net(x[torch.from_numpy(~train)]).squeeze(1).numpy()
    cnn_auc = roc_auc_score(y[~train], scores)
    print(
        f"raw 32x32 logistic AUROC {raw_auc:.3f}; tiny CNN at 64 px AUROC {cnn_auc:.3f} "
        f"({train.sum()} train / {(~train).sum()} test images)"
    )
    assert raw_auc < 0.7  # not trivial: the anomalies are not visible in a thumbnail
    assert cnn_auc > 0.7 and cnn_auc > raw_auc + 0.1  # learnable at the resolution the project trains at
