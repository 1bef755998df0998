"""The detector registry: one row declares a detector, and everything else follows from it.

The end-to-end test adds a throw-away detector — a stage and a scorer defined in this file, one registry row —
and trains, scores, saves, reloads and ``xrad score``s it with no other change anywhere: that is the promise
of the architecture (a new detector is its module, its YAML and one row).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest
import torch
from torch import Tensor

from xrad.config import CONFIG_DIR, packaged_configs, read_yaml
from xrad.errors import ConfigError
from xrad.methods import registry
from xrad.methods.base import Scorer
from xrad.methods.registry import DETECTORS, Detector, ScorerRef, StageSpec, load_config

# ------------------------------------------------------------------------- the throw-away detector


class BrightestPatchScorer(Scorer):
    """Score = the largest mean intensity of a ``window``×``window`` patch, scaled by a trained factor."""

    kind: ClassVar[str] = "brightest_patch_test"

    def __init__(self, scale: Tensor, window: int) -> None:
        super().__init__()
        self.register_buffer("scale", scale.detach().clone().float())
        self.window = int(window)

    def score(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        pooled = torch.nn.functional.avg_pool2d(images, self.window, stride=1)
        return pooled.flatten(1).amax(dim=1) * self.scale, None

    def embed(self, images: Tensor) -> dict[str, Tensor]:
        return {}

    def heatmap(self, images: Tensor) -> Tensor:
        return images

    def artefact_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        return {"scale": self.scale}, {"window": self.window}

    @classmethod
    def from_artefact(cls, tensors: dict[str, Tensor], args: dict[str, Any]) -> BrightestPatchScorer:
        return cls(tensors["scale"], args["window"])


@dataclass
class BrightestPatchSection:
    """The throw-away detector's own config section, validated like any other."""

    window: int = 4

    def checks(self) -> list[tuple[str, bool, str]]:
        return [("window", self.window >= 1, "must be ≥ 1")]


@dataclass
class FittedScale:
    scale: Tensor

    def scorer(self, config: Any) -> BrightestPatchScorer:
        return BrightestPatchScorer(self.scale, config.section("brightest").window)


def run(ctx: Any, stage: str, previous: Any) -> FittedScale:
    """ "Training": the inverse mean intensity of the normal training images (so normals score about 1)."""
    from xrad.data.model_input import prepare_eval
    from xrad.methods.stage_io import save_tensors

    bank = ctx.banks["train"]
    rows = ctx.normal_train_rows()
    mean = prepare_eval(bank.images[rows], bank.masks[rows]).mean()
    result = FittedScale(1.0 / mean.reshape(1))
    save_tensors(ctx.stage_dir(stage) / "scale.safetensors", {"scale": result.scale})
    return result


def load(ctx: Any, stage: str, previous: Any) -> FittedScale:
    from xrad.methods.stage_io import load_tensors

    return FittedScale(load_tensors(ctx.stage_dir(stage) / "scale.safetensors")["scale"])


BRIGHTEST = StageSpec("brightest_fit", __name__, "scale.safetensors", sections={"brightest": BrightestPatchSection})
ROW = Detector(
    "brightest_patch",
    (("fit", BRIGHTEST),),
    (ScorerRef(BrightestPatchScorer.kind, f"{__name__}:BrightestPatchScorer"),),
    "throw-away: brightest patch",
)


def test_a_new_detector_is_one_row(
    squares_split: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from xrad.cli.main import main
    from xrad.inference.scoring import load_scorer
    from xrad.jobs.train import run_training

    monkeypatch.setitem(DETECTORS, ROW.name, ROW)
    config = {
        "method": "brightest_patch",
        "data": {"image_size": 32, "workers": 0, "decode_workers": 1},
        "brightest": {"window": 3},
        "trainer": {"accelerator": "cpu", "devices": 1},
    }
    with pytest.raises(ConfigError, match=r"brightest\.window must be ≥ 1"):  # its section is checked at load
        load_config({**config, "brightest": {"window": 0}})
    assert "fit" in registry.stage_names()

    summary = run_training(config, squares_split, tmp_path / "run", progress=False)
    assert summary["method"] == "brightest_patch" and summary["test_auroc"] > 0.9  # bright squares, found
    assert (tmp_path / "run" / "fit" / "done.json").is_file()
    scorer = load_scorer(tmp_path / "run" / "artefact")
    assert isinstance(scorer, BrightestPatchScorer) and scorer.window == 3

    written = pd.read_csv(tmp_path / "run" / "scores_test.csv")
    out = tmp_path / "scored.csv"
    assert main(["score", str(tmp_path / "run" / "artefact"), str(squares_split), "-o", str(out)]) == 0
    capsys.readouterr()
    rescored = pd.read_csv(out).set_index("path").loc[written["path"], "score"].to_numpy()
    np.testing.assert_allclose(rescored, written["score"].to_numpy(), rtol=1e-6)
    again = run_training(config, squares_split, tmp_path / "run", progress=False)  # finished: nothing re-runs
    assert again["test_auroc"] == summary["test_auroc"]


# ------------------------------------------------------------------------------------ the real rows


def test_rows_are_consistent() -> None:
    for name, detector in DETECTORS.items():
        assert detector.name == name and detector.stage_names and len(set(detector.stage_names)) == len(detector.stages)
        for ref in detector.scorers:
            assert registry.get_scorer_class(ref.kind).kind == ref.kind, f"{name}: {ref.path} declares another kind"
    kinds: dict[str, str] = {}
    for detector in DETECTORS.values():  # one kind, one class
        for ref in detector.scorers:
            assert kinds.setdefault(ref.kind, ref.path) == ref.path
    with pytest.raises(ConfigError, match="unknown to this xrad version"):
        registry.get_scorer_class("martian")


def test_every_packaged_config_loads_with_its_detectors_sections() -> None:
    for name in packaged_configs():
        cfg = load_config(name)
        raw = read_yaml(CONFIG_DIR / f"{name}.yaml")
        assert cfg.method == raw.get("method", "self_taught")
        for section in DETECTORS[cfg.method].sections:
            assert cfg.section(section) is not None


def test_stage_one_is_shared_only_between_identical_settings(tmp_path: Path) -> None:
    manifest = tmp_path / "split.csv"
    knn = registry.shared_stage_key(load_config("knn_cpu"), manifest)
    self_taught = registry.shared_stage_key(load_config("self_taught_cpu", ["pretrain.epochs=15"]), manifest)
    assert knn is not None and self_taught is not None
    ae = registry.shared_stage_key(load_config("ae_cpu"), manifest)
    assert ae is not None and ae[0] == "autoencoder.safetensors" and ae[1] != knn[1]
    # A different pretrain setting is a different stage 1; a different finetune setting is not.
    assert registry.shared_stage_key(load_config("knn_cpu", ["pretrain.lr=0.01"]), manifest) != knn
    assert registry.shared_stage_key(load_config("knn_cpu", ["finetune.epochs=99"]), manifest) == knn
    assert registry.shared_stage_key(load_config("supervised_resnet50_cpu"), manifest) is None


def test_config_loading_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"finetune\.lr must be a finite number"):
        load_config("tiny", ["finetune.lr=.inf"])
    with pytest.raises(ConfigError, match=r"pretrain\.lr must be > 0"):
        load_config("tiny", ["pretrain.lr=-1"])
    with pytest.raises(ConfigError, match=r"data\.image_size 48 must be a multiple of 32"):
        load_config("ae_cpu", ["data.image_size=48"])
    with pytest.raises(ConfigError, match=r"unknown key 'ae'"):  # a section of another detector
        load_config("tiny", ["ae.score=mse"])


def test_a_repeated_yaml_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "twice.yaml"
    path.write_text("method: self_taught\nfinetune:\n  epochs: 3\n  epochs: 4\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"twice\.yaml: line 4: key 'epochs' is given twice"):
        load_config(path)
