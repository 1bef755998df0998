"""Outputs: permissions that follow the umask, and sets of outputs published together (never a mix of runs)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from xrad.cli.main import main
from xrad.utils.atomic import FileSet, staged_folder, write_csv, write_json, write_text


@pytest.fixture()
def umask():
    """Set the process umask for one test and restore it."""
    previous = os.umask(0o022)
    os.umask(previous)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(
    ("mask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750), (0o077, 0o600, 0o700)]
)
def test_outputs_honour_the_umask(mask: int, file_mode: int, dir_mode: int, umask, tmp_path: Path) -> None:
    """Atomic writes went through mkstemp (always 0600): colleagues and web servers could not read outputs."""
    from xrad.data.io import write_png

    umask(mask)
    write_text(tmp_path / "a.txt", "x")
    write_json(tmp_path / "a.json", {"a": 1})
    write_csv(tmp_path / "a.csv", pd.DataFrame({"a": [1]}))
    write_png(tmp_path / "a.png", np.zeros((4, 4), np.float32))
    with FileSet() as files:
        files.write_text(tmp_path / "set.txt", "y")
    with staged_folder(tmp_path / "folder") as staged:
        write_text(staged / "inside.txt", "z")
    for name in ("a.txt", "a.json", "a.csv", "a.png", "set.txt", "folder/inside.txt"):
        assert _mode(tmp_path / name) == file_mode, name
    assert _mode(tmp_path / "folder") == dir_mode


def test_score_cli_outputs_are_readable_by_others(tiny_artefact: Path, tmp_path: Path, umask) -> None:
    umask(0o022)
    Image.fromarray(np.full((40, 40), 90, np.uint8)).save(tmp_path / "x.png")
    assert (
        main(
            [
                "score",
                str(tiny_artefact),
                str(tmp_path / "x.png"),
                "-o",
                str(tmp_path / "out" / "s.csv"),
                "--heatmaps",
                str(tmp_path / "heat"),
            ]
        )
        == 0
    )
    assert _mode(tmp_path / "out" / "s.csv") == 0o644 and _mode(tmp_path / "heat") == 0o755
    assert all(_mode(p) == 0o644 for p in (tmp_path / "heat").iterdir())


def test_a_file_set_is_published_only_when_every_file_was_written(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("old a")
    (tmp_path / "b.txt").write_text("old b")
    (tmp_path / "stale.txt").write_text("from an earlier run")
    with pytest.raises(RuntimeError), FileSet() as files:
        files.write_text(tmp_path / "a.txt", "new a")
        raise RuntimeError("the second table could not be made")
    assert (tmp_path / "a.txt").read_text() == "old a" and (tmp_path / "b.txt").read_text() == "old b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt", "stale.txt"]  # no temporaries left
    with FileSet() as files:
        files.write_text(tmp_path / "a.txt", "new a")
        files.write_text(tmp_path / "b.txt", "new b")
        files.remove_stale(tmp_path / "stale.txt")
        files.remove_stale(tmp_path / "b.txt")  # written by this set: kept
    assert (tmp_path / "a.txt").read_text() == "new a" and (tmp_path / "b.txt").read_text() == "new b"
    assert not (tmp_path / "stale.txt").exists()


def test_a_score_rerun_never_leaves_a_mix(tiny_artefact: Path, tmp_path: Path) -> None:
    """A re-run on input without patient ids removes the earlier run's patient table instead of leaving it
    beside the new image table; a failing re-run changes nothing."""
    folder = tmp_path / "img"
    folder.mkdir()
    rows = []
    for i in range(4):
        Image.fromarray(np.full((40, 40), 40 * i + 30, np.uint8)).save(folder / f"{i}.png")
        rows.append({"path": str(folder / f"{i}.png"), "study_id": f"s{i // 2}", "patient_id": f"p{i // 2}"})
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    out = tmp_path / "out" / "scores.csv"
    assert main(["score", str(tiny_artefact), str(tmp_path / "m.csv"), "-o", str(out)]) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["scores.csv", "scores_patients.csv", "scores_studies.csv"]
    pd.DataFrame(rows).drop(columns="patient_id").to_csv(tmp_path / "m.csv", index=False)
    assert main(["score", str(tiny_artefact), str(tmp_path / "m.csv"), "-o", str(out)]) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["scores.csv", "scores_studies.csv"]
    before = {p.name: p.read_bytes() for p in out.parent.iterdir()}
    assert main(["score", str(tiny_artefact), str(tmp_path / "m.csv"), "-o", str(out), "--aggregation", "top9x"]) == 2
    assert {p.name: p.read_bytes() for p in out.parent.iterdir()} == before
