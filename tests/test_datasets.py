"""In-memory image banks: cache PNGs and raw-file fallback, label mapping, order, memo, Dataset/DataLoader."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

import xrad.training.banks as datasets
from xrad.data.model_input import resize_image_and_mask
from xrad.errors import ImageReadError
from xrad.training.banks import BankDataset, ImageBank, load_image_bank, seed_worker


def write_cache(folder: Path, n: int, side: int = 40) -> pd.DataFrame:
    """n cached square PNGs (image i has constant value 20 + 10 i) with 0/1 masks (left part), and a frame."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        image = np.full((side, side), 20 + 10 * i, dtype=np.uint8)
        mask = np.zeros((side, side), dtype=np.uint8)
        mask[:, : side // 2 + i] = 1
        cache, mask_path = folder / f"img{i}.png", folder / f"img{i}_mask.png"
        cv2.imwrite(str(cache), image)
        cv2.imwrite(str(mask_path), mask)
        rows.append({"path": str(folder / f"orig{i}.jpg"), "cache_path": str(cache), "mask_path": str(mask_path)})
    frame = pd.DataFrame(rows)
    frame["label"] = pd.array([1, 0, None, 1, 0][:n] + [0] * max(0, n - 5), dtype="Int64")
    frame["semi_label"] = pd.array([-1, 1, 0, None, 0][:n] + [0] * max(0, n - 5), dtype="Int64")
    return frame


def test_resize_major_axis_and_centre_pad() -> None:
    image = np.arange(20 * 10, dtype=np.uint8).reshape(20, 10)  # tall: height is the major axis
    mask = np.zeros_like(image)
    mask[5:15, 2:8] = 255  # any nonzero value counts as body part
    out, out_mask = resize_image_and_mask(image, mask, 8)
    assert out.shape == out_mask.shape == (1, 8, 8) and out.dtype == out_mask.dtype == torch.uint8
    expected = cv2.resize(image, (4, 8), interpolation=cv2.INTER_AREA)
    assert torch.equal(out[0, :, 2:6], torch.from_numpy(expected))  # 4 columns, centred
    assert out[0, :, :2].sum() == 0 and out[0, :, 6:].sum() == 0  # padding is 0
    assert set(torch.unique(out_mask).tolist()) == {0, 1}
    assert out_mask[0, :, :2].sum() == 0 and out_mask[0, 3, 3] == 1
    # No mask: all ones over the image, zero over the padding.
    _, ones = resize_image_and_mask(image, None, 8)
    assert ones[0, :, 2:6].all() and ones[0, :, :2].sum() == 0
    # Already the right size: returned unchanged.
    square = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
    same, _ = resize_image_and_mask(square, None, 8)
    assert torch.equal(same[0], torch.from_numpy(square))


def test_load_bank_from_cache_png(tmp_path: Path) -> None:
    frame = write_cache(tmp_path, 5)
    frame.index = [10, 11, 12, 13, 14]  # the bank resets it
    bank = load_image_bank(frame, 20, workers=2, progress=False)
    assert bank.images.shape == bank.masks.shape == (5, 1, 20, 20)
    assert bank.images.dtype == bank.masks.dtype == torch.uint8
    assert bank.labels.dtype == bank.semi_labels.dtype == torch.int64
    assert bank.labels.tolist() == [1, 0, -1, 1, 0]
    assert bank.semi_labels.tolist() == [-1, 1, 0, 0, 0]
    assert list(bank.frame.index) == [0, 1, 2, 3, 4]
    # Order preserved: image i is constant 20 + 10 i; masks are 0/1 with the left half (and more) set.
    assert [int(bank.images[i].float().mean().round()) for i in range(5)] == [20 + 10 * i for i in range(5)]
    assert set(torch.unique(bank.masks).tolist()) == {0, 1}
    assert bank.masks[:, 0, :, :10].all() and not bank.masks[0, 0, :, 12:].any()
    assert len(bank) == 5


def test_semi_label_absent_means_unlabelled(tmp_path: Path) -> None:
    frame = write_cache(tmp_path, 3).drop(columns=["semi_label", "label"])
    bank = load_image_bank(frame, 16, workers=1, progress=False)
    assert bank.semi_labels.tolist() == [0, 0, 0] and bank.labels.tolist() == [-1, -1, -1]
    empty = load_image_bank(frame.iloc[:0], 16, cache_dir=tmp_path / "memo", progress=False)  # an empty split
    assert empty.images.shape == (0, 1, 16, 16) and len(BankDataset(empty)) == 0


def test_fallback_to_raw_images_without_cache_columns(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for i, (h, w) in enumerate([(30, 20), (20, 30), (25, 25)]):
        image = rng.integers(0, 256, (h, w), dtype=np.uint8)
        cv2.imwrite(str(tmp_path / f"raw{i}.png"), image)
        rows.append({"path": str(tmp_path / f"raw{i}.png"), "label": i % 2})
    bank = load_image_bank(pd.DataFrame(rows), 16, workers=2, progress=False)
    assert bank.images.shape == (3, 1, 16, 16) and bank.images.dtype == torch.uint8
    assert bank.labels.tolist() == [0, 1, 0]
    # Same result as the shared resize of the decoded file (what the scorer does).
    decoded = cv2.imread(rows[0]["path"], cv2.IMREAD_GRAYSCALE)
    expected, expected_mask = resize_image_and_mask(decoded, None, 16)
    assert (bank.images[0].int() - expected.int()).abs().max() <= 1  # float [0,1] round trip
    assert torch.equal(bank.masks[0], expected_mask)
    assert bank.masks[1, 0, 0].sum() == 0 and bank.masks[1, 0, 8].all()  # wide image: rows padded


def test_memo_is_reused_and_invalidated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frame = write_cache(tmp_path / "cache", 4)
    memo_dir = tmp_path / "memo"
    first = load_image_bank(frame, 16, cache_dir=memo_dir, progress=False)
    assert len(list(memo_dir.glob("bank_*.pt"))) == 1

    def fail(*args: object) -> None:
        raise AssertionError("decoded although the memo was valid")

    original = datasets._decode_row
    monkeypatch.setattr(datasets, "_decode_row", fail)
    second = load_image_bank(frame, 16, cache_dir=memo_dir, progress=False)
    assert torch.equal(first.images, second.images) and torch.equal(first.masks, second.masks)
    assert torch.equal(first.labels, second.labels)
    with pytest.raises(AssertionError, match="decoded"):  # another size is another key
        load_image_bank(frame, 8, cache_dir=memo_dir, progress=False)
    # Rewriting a cache file (new mtime) invalidates the memo.
    target = frame.loc[0, "cache_path"]
    cv2.imwrite(target, np.full((40, 40), 99, dtype=np.uint8))
    os.utime(target, ns=(1, 1))
    monkeypatch.setattr(datasets, "_decode_row", original)
    third = load_image_bank(frame, 16, cache_dir=memo_dir, progress=False)
    assert int(third.images[0].float().mean().round()) == 99


def test_unreadable_cache_file_raises_image_read_error(tmp_path: Path) -> None:
    frame = write_cache(tmp_path, 2)
    Path(frame.loc[1, "cache_path"]).write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match="img1.png"):
        load_image_bank(frame, 16, progress=False)
    os.unlink(frame.loc[1, "cache_path"])
    with pytest.raises(ImageReadError, match="not found"):
        load_image_bank(frame, 16, workers=1, progress=False)


def test_bank_dataset_items_subset_and_loader(tmp_path: Path) -> None:
    bank = load_image_bank(write_cache(tmp_path, 5), 16, progress=False)
    dataset = BankDataset(bank, indices=[4, 2])
    assert len(dataset) == 2
    item = dataset[0]
    assert set(item) == {"image", "mask", "label", "semi_label", "index"}
    assert item["image"].shape == (1, 16, 16) and item["image"].dtype == torch.uint8
    assert int(item["index"]) == 4 and int(item["label"]) == 0 and torch.equal(item["image"], bank.images[4])
    batch = next(iter(torch.utils.data.DataLoader(BankDataset(bank), batch_size=5)))
    assert batch["image"].shape == (5, 1, 16, 16) and batch["image"].dtype == torch.uint8
    assert batch["index"].tolist() == [0, 1, 2, 3, 4] and batch["label"].tolist() == [1, 0, -1, 1, 0]
    with pytest.raises(IndexError):
        BankDataset(bank, indices=[5])


class _NumpyDraws(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, item: int) -> torch.Tensor:
        return torch.tensor(np.random.randint(0, 2**31))


def test_seed_worker_gives_each_worker_its_own_numpy_stream() -> None:
    loader = torch.utils.data.DataLoader(
        _NumpyDraws(),
        batch_size=1,
        num_workers=2,
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(0),
    )
    draws = [int(x) for x in loader]
    # Worker 0 serves items 0 and 2, worker 1 items 1 and 3: the same position in the two workers'
    # streams must differ.
    assert draws[0] != draws[1] and draws[2] != draws[3]
    again = [
        int(x)
        for x in torch.utils.data.DataLoader(
            _NumpyDraws(),
            batch_size=1,
            num_workers=2,
            worker_init_fn=seed_worker,
            generator=torch.Generator().manual_seed(0),
        )
    ]
    assert draws == again  # reproducible from the loader's generator


def test_bank_from_real_fracatlas_images(fracatlas_dir: Path) -> None:
    labels = pd.read_csv(fracatlas_dir / "labels.csv").head(6)
    frame = pd.DataFrame({"path": [str(fracatlas_dir / p) for p in labels["path"]], "label": labels["label"]})
    bank = load_image_bank(frame, 64, workers=2, progress=False)
    assert isinstance(bank, ImageBank) and bank.images.shape == (6, 1, 64, 64)
    assert bank.labels.tolist() == labels["label"].tolist()
    assert (bank.images.flatten(1).float().std(1) > 5).all()  # real content, not blank
    # The major axis fills the square: some full row or column is inside the mask.
    assert all(bool(m[0].all(0).any() or m[0].all(1).any()) for m in bank.masks)
