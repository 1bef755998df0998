"""Benchmark grid: config parsing, resumability (finished cells skipped, edited settings refused), tables,
Welch tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from xrad.config import merge_overrides
from xrad.errors import ConfigError
from xrad.evaluation.statistics import significance_code
from xrad.jobs.benchmark import RESULT_COLUMNS, run_benchmark
from xrad.jobs.benchmark_grid import iter_cells, load_benchmark_config, method_config, resolve_method


@pytest.fixture()
def bench_config(tmp_path, toy_manifest):
    (tmp_path / "good.yaml").write_text("method: good\nfake_shift: 1.5\nfinetune: {epochs: 9}\n")
    (tmp_path / "weak.yaml").write_text("method: weak\nfake_shift: 0.2\nfinetune: {epochs: 9}\n")
    config = {
        "methods": ["good.yaml", "weak.yaml"],
        "training_seeds": [0, 1],
        "split_seeds": [0, 1],
        "abnormal_ratios": [0.05],
        "overrides": {"finetune.epochs": 2},
        "data": {"manifest": toy_manifest.name, "body_parts": None, "known_normal": 0.05},
        "output": "bench",
    }
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_grid_runs_resumes_and_tabulates(bench_config, fake_run_training):
    calls = []

    def counting_train(config, manifest, run_dir, **kwargs):
        calls.append((config["method"], config["seed"], config["finetune"]["epochs"], str(manifest)))
        return fake_run_training(config, manifest, run_dir, **kwargs)

    config = load_benchmark_config(bench_config)
    results = run_benchmark(config, train=counting_train)
    assert len(calls) == 8 and {c[2] for c in calls} == {2}  # overrides applied, every cell trained once
    assert {(c[0], c[1]) for c in calls} == {(m, s) for m in ("good", "weak") for s in (0, 1)}
    # Both methods of one split seed train on the same split manifest.
    assert len({c[3] for c in calls}) == 2
    out = config.output
    tidy = pd.read_csv(out / "results.csv")
    assert list(tidy.columns) == list(RESULT_COLUMNS) and len(tidy) == 16
    assert set(tidy["split"]) == {"valid", "test"} and (tidy["n_images"] > 0).all()
    assert tidy["seconds"].notna().all()

    table = pd.read_csv(out / "table1.csv").set_index("method")
    assert table.loc["good", "n"] == 4 and table.loc["weak", "n"] == 4
    good = tidy[(tidy["method"] == "good") & (tidy["split"] == "test")]["auroc"]
    weak = tidy[(tidy["method"] == "weak") & (tidy["split"] == "test")]["auroc"]
    assert table.loc["good", "test_auroc_mean"] == pytest.approx(good.mean())
    low, high = stats.t.interval(0.95, df=3, loc=good.mean(), scale=stats.sem(good))
    assert (table.loc["good", "test_auroc_low"], table.loc["good", "test_auroc_high"]) == (
        pytest.approx(low),
        pytest.approx(high),
    )
    assert table.loc["good", "test_auroc_mean"] > table.loc["weak", "test_auroc_mean"]
    pairs = pd.read_csv(out / "pairwise.csv")
    p = stats.ttest_ind(good, weak, equal_var=False).pvalue
    assert pairs.loc[0, "p"] == pytest.approx(p) and pairs.loc[0, "code"] == significance_code(p)
    md = (out / "table1.md").read_text()
    assert "| good |" in md and "training seed and the split seed" in md and "Welch" in md

    # Re-running skips every finished cell; removing one summary re-runs exactly that cell.
    calls.clear()
    again = run_benchmark(config, train=counting_train)
    assert calls == [] and again.equals(results)
    cell = iter_cells(config)[3]
    (out / "cells" / cell.name / "summary.json").unlink()
    run_benchmark(config, train=counting_train)
    assert len(calls) == 1 and calls[0][0] == cell.method and calls[0][1] == cell.training_seed


def test_cli_benchmark_uses_run_training(bench_config, fake_run_training, monkeypatch, capsys, tmp_path):
    from xrad.cli.main import main

    calls = []
    import xrad.jobs.train

    monkeypatch.setattr(xrad.jobs.train, "run_training", lambda *a, **k: calls.append(1) or fake_run_training(*a, **k))
    assert main(["benchmark", str(bench_config), "-o", str(tmp_path / "cli_out")]) == 0
    assert len(calls) == 8 and (tmp_path / "cli_out" / "table1.md").is_file()
    assert "| weak |" in capsys.readouterr().out


def test_methods_of_one_family_share_stage_one(tmp_path, toy_manifest, fake_run_training):
    """kNN and uni-modal reuse the self-taught cell's encoder of the same split and seed; the AE family and a
    different pre-training budget train their own."""
    (tmp_path / "short.yaml").write_text("method: self_taught\npretrain: {epochs: 3}\n")
    config = {
        "methods": ["self_taught_cpu", "knn_cpu", "uni_modal_cpu", "ae_cpu", "knn_ae_cpu", "short.yaml"],
        "training_seeds": [0, 1],
        "split_seeds": [0],
        "abnormal_ratios": [0.05],
        "data": {"manifest": toy_manifest.name},
        "output": "bench",
    }
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(config))
    calls = {}

    def train(cfg, manifest, run_dir, **kwargs):
        calls[Path(run_dir).name] = cfg.get("pretrain", {}).get("encoder_from")
        (Path(run_dir) / "pretrain").mkdir(parents=True, exist_ok=True)
        name = "autoencoder" if cfg["method"] in ("autoencoder", "knn_ae") else "encoder"
        (Path(run_dir) / "pretrain" / f"{name}.safetensors").write_bytes(b"x")
        return fake_run_training(cfg, manifest, run_dir, **kwargs)

    bench = load_benchmark_config(tmp_path / "bench.yaml")
    run_benchmark(bench, train=train)
    cell = lambda m, s: f"{m}__r0.05__split0__seed{s}"
    for seed in (0, 1):
        source = str(bench.output / "cells" / cell("self_taught_cpu", seed))
        assert calls[cell("self_taught_cpu", seed)] is None
        assert calls[cell("knn_cpu", seed)] == source and calls[cell("uni_modal_cpu", seed)] == source
        assert calls[cell("ae_cpu", seed)] is None
        assert calls[cell("knn_ae_cpu", seed)] == str(bench.output / "cells" / cell("ae_cpu", seed))
        assert calls[cell("short", seed)] is None  # another pre-training budget: not interchangeable
    record = json.loads((bench.output / "cells" / cell("knn_cpu", 1) / "benchmark_cell.json").read_text())
    assert record["pretrain_from"].endswith(cell("self_taught_cpu", 1))


def test_per_method_overrides_and_only(tmp_path, toy_manifest, fake_run_training):
    (tmp_path / "good.yaml").write_text("method: good\nfake_shift: 1.5\nfinetune: {epochs: 9, lr: 0.1}\n")
    (tmp_path / "weak.yaml").write_text("method: weak\nfake_shift: 0.2\nfinetune: {epochs: 9}\n")
    config = {
        "methods": [{"good.yaml": {"finetune.epochs": 4}}, "weak.yaml"],
        "training_seeds": [0, 1],
        "split_seeds": [0, 1],
        "abnormal_ratios": [0.05],
        "overrides": {"finetune.epochs": 2},
        "data": {"manifest": toy_manifest.name},
        "output": "bench",
    }
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(config))
    bench = load_benchmark_config(tmp_path / "bench.yaml")
    calls = []

    def train(cfg, manifest, run_dir, **kwargs):
        calls.append((cfg["method"], Path(run_dir).name.split("__")[2], cfg["seed"], cfg["finetune"]))
        return fake_run_training(cfg, manifest, run_dir, **kwargs)

    # e.g. one of several processes sharing the output folder: one method, one split seed
    run_benchmark(bench, train=train, only=["weak"], only_split_seeds=[1])
    assert [c[:3] for c in calls] == [("weak", "split1", 0), ("weak", "split1", 1)] and calls[0][3] == {"epochs": 2}
    assert set(pd.read_csv(bench.output / "results.csv")["cell"].str.split("__").str[2]) == {"split1"}
    assert sorted(p.name for p in (bench.output / "splits").iterdir()) == ["split1__r0.05.csv"]  # only its split
    calls.clear()
    run_benchmark(bench, train=train, only=["weak"])
    assert [c[:3] for c in calls] == [("weak", "split0", 0), ("weak", "split0", 1)]  # split 1 is done: skipped
    assert set(pd.read_csv(bench.output / "results.csv")["method"]) == {"weak"}
    calls.clear()
    results = run_benchmark(bench, train=train)  # the rest; the tables now hold both methods
    assert [c[:3] for c in calls] == [("good", f"split{s}", t) for s in (0, 1) for t in (0, 1)]
    assert calls[0][3] == {"epochs": 4, "lr": 0.1}  # the method's own override wins over the benchmark's
    assert set(results["method"]) == {"good", "weak"} and len(results) == 16
    with pytest.raises(ConfigError, match="nope"):
        run_benchmark(bench, train=train, only=["nope"])
    with pytest.raises(ConfigError, match="split seeds"):
        run_benchmark(bench, train=train, only_split_seeds=[7])
    config["methods"] = ["weak.yaml", "weak.yaml"]
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="listed twice"):
        load_benchmark_config(tmp_path / "bench.yaml")


def _rewrite(path: Path, **changes) -> None:
    """Edit a benchmark YAML in place, as a user would between two runs."""
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), **changes}))


def test_changed_settings_after_a_finished_grid_are_refused(bench_config, fake_run_training, capsys, tmp_path):
    """Benchmark overrides, a method's own overrides and data.manifest are part of what a cell was trained
    from: once the grid is done, changing any of them is refused, naming the cell (or split) and the key."""
    from xrad.cli.main import main

    original = yaml.safe_load(bench_config.read_text())
    run_benchmark(load_benchmark_config(bench_config), train=fake_run_training)
    out = load_benchmark_config(bench_config).output
    table = (out / "table1.md").read_text()
    calls = []
    train = lambda *a, **k: calls.append(a) or fake_run_training(*a, **k)
    first = "good__r0.05__split0__seed0"  # the first cell of the grid that is checked

    _rewrite(bench_config, overrides={"finetune.epochs": 1})
    refusal = rf"cells/{first}: .*finetune\.epochs changed.*delete this cell folder"
    with pytest.raises(ConfigError, match=refusal):
        run_benchmark(load_benchmark_config(bench_config), train=train)
    # The command line says so in one line and fails, instead of "done, skipped" and a stale Table 1.
    assert main(["benchmark", str(bench_config)]) == 2
    captured = capsys.readouterr()
    assert "done, skipped" not in captured.out
    assert f"{first}: this cell was trained with other settings" in captured.err

    methods = [{"good.yaml": {"fake_shift": 3}}, "weak.yaml"]  # a change of one method's own overrides
    _rewrite(bench_config, overrides=original["overrides"], methods=methods)
    with pytest.raises(ConfigError, match=rf"{first}: .*fake_shift changed"):
        run_benchmark(load_benchmark_config(bench_config), train=train)

    (tmp_path / "other.csv").write_text("not,a\nmanifest,at all\n")
    _rewrite(bench_config, methods=original["methods"], data={**original["data"], "manifest": "other.csv"})
    with pytest.raises(ConfigError, match=r"split0__r0\.05\.csv: .*data\.manifest .*other\.csv"):
        run_benchmark(load_benchmark_config(bench_config), train=train)
    assert calls == [] and (out / "table1.md").read_text() == table  # nothing trained, nothing rewritten


def test_changed_split_option_with_an_existing_split_is_refused(bench_config, fake_run_training):
    """A cell crashed after its split was made: resuming with other split options (valid or not) must not
    reuse that split; resuming with another override must not resume that cell."""

    def crash(config, manifest, run_dir, **kwargs):
        raise RuntimeError("killed")

    config = load_benchmark_config(bench_config)
    with pytest.raises(RuntimeError, match="killed"):
        run_benchmark(config, train=crash, only=["good"], only_split_seeds=[0])
    assert (config.output / "splits" / "split0__r0.05.csv").is_file()
    data = yaml.safe_load(bench_config.read_text())["data"]
    for value in (0.1, 0.99):  # 0.99 is out of range: a fresh output folder refuses it too
        _rewrite(bench_config, data={**data, "known_normal": value})
        with pytest.raises(ConfigError, match=r"split0__r0\.05\.csv|known_normal=0\.99") as error:
            run_benchmark(load_benchmark_config(bench_config), train=fake_run_training)
        assert "data.known_normal changed" in str(error.value) or value == 0.99
    _rewrite(bench_config, data=data, overrides={"finetune.epochs": 3})
    with pytest.raises(ConfigError, match=r"good__r0\.05__split0__seed0: .*finetune\.epochs changed"):
        run_benchmark(load_benchmark_config(bench_config), train=fake_run_training)
    assert not (config.output / "cells" / "good__r0.05__split0__seed0" / "summary.json").exists()


def test_unchanged_rerun_and_execution_settings_reuse_finished_cells(
    bench_config, fake_run_training, monkeypatch, capsys
):
    """Re-running the same YAML, or one that only changes how cells run (trainer/devices, here and in the
    method configs, --only, --split-seeds), skips every finished cell with identical results."""
    import xrad.jobs.train
    from xrad.cli.main import main

    calls = []

    monkeypatch.setattr(xrad.jobs.train, "run_training", lambda *a, **k: calls.append(1) or fake_run_training(*a, **k))
    assert main(["benchmark", str(bench_config)]) == 0 and len(calls) == 8
    out = load_benchmark_config(bench_config).output
    results, table = (out / "results.csv").read_bytes(), (out / "table1.md").read_text()
    capsys.readouterr()
    # What each split and cell was made from is recorded (and is what later runs compare with).
    split = json.loads((out / "split_records" / "split1__r0.05.json").read_text())
    assert split["split"]["known_normal"] == 0.05 and split["split"]["seed"] == 1 and split["manifest_sha256"]
    inputs = json.loads((out / "cells" / "weak__r0.05__split1__seed0" / "benchmark_inputs.json").read_text())
    assert inputs["config"]["finetune"] == {"epochs": 2} and inputs["split"] == split

    devices = {
        "trainer": {"devices": 2, "accelerator": "cpu"},  # the benchmark's and, through an override,
        "overrides": {"finetune.epochs": 2, "trainer.devices": 2},
    }  # the method configs' trainer
    selection = ["--only", "weak", "--split-seeds", "1", "--progress"]
    for extra, changes in [([], {}), (selection, {}), ([], devices)]:
        if changes:
            _rewrite(bench_config, **changes)
        assert main(["benchmark", str(bench_config), *extra]) == 0
        assert capsys.readouterr().out.count("done, skipped") == 8 and len(calls) == 8
        assert (out / "results.csv").read_bytes() == results and (out / "table1.md").read_text() == table


def test_shared_stage_one_and_older_outputs_pass_the_checks(tmp_path, toy_manifest, fake_run_training):
    """A cell's record leaves out which identical stage 1 it loaded (that depends on the order cells ran in),
    and outputs from before records existed are adopted, then tied like new ones."""
    config = {
        "methods": ["self_taught_cpu", "knn_cpu"],
        "training_seeds": [0, 1],
        "split_seeds": [0],
        "abnormal_ratios": [0.05],
        "data": {"manifest": toy_manifest.name},
        "output": "bench",
    }
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(config))
    encoder_from = {}

    def train(cfg, manifest, run_dir, **kwargs):
        encoder_from[Path(run_dir).name] = cfg.get("pretrain", {}).get("encoder_from")
        (Path(run_dir) / "pretrain").mkdir(parents=True, exist_ok=True)
        (Path(run_dir) / "pretrain" / "encoder.safetensors").write_bytes(b"x")
        return fake_run_training(cfg, manifest, run_dir, **kwargs)

    bench = load_benchmark_config(tmp_path / "bench.yaml")
    cells = bench.output / "cells"
    run_benchmark(bench, train=train, only=["knn_cpu"])  # kNN first: no stage 1 to share yet, trains its own
    run_benchmark(bench, train=train)
    shutil.rmtree(cells / "knn_cpu__r0.05__split0__seed1")
    run_benchmark(bench, train=train)  # this time kNN loads the self-taught cell's stage 1
    assert encoder_from["knn_cpu__r0.05__split0__seed0"] is None
    source = cells / "self_taught_cpu__r0.05__split0__seed1"
    assert encoder_from["knn_cpu__r0.05__split0__seed1"] == str(source)
    knn = cells / "knn_cpu__r0.05__split0__seed1"
    assert "encoder_from" not in json.loads((knn / "benchmark_inputs.json").read_text())["config"]["pretrain"]
    encoder_from.clear()
    run_benchmark(bench, train=train)  # either way, the cells stay valid
    shutil.rmtree(cells / "self_taught_cpu__r0.05__split0__seed1" / "pretrain")
    run_benchmark(bench, train=train)  # also once the shared stage 1 can no longer be loaded
    assert encoder_from == {}

    # An output folder from before records existed: adopted as made from the present settings ...
    shutil.rmtree(bench.output / "split_records")
    for record in bench.output.glob("cells/*/benchmark_inputs.json"):
        record.unlink()
    run_benchmark(bench, train=train)
    assert encoder_from == {} and (bench.output / "split_records" / "split0__r0.05.json").is_file()
    assert (knn / "benchmark_inputs.json").is_file()
    # ... and from then on tied to them.
    _rewrite(tmp_path / "bench.yaml", overrides={"pretrain.epochs": 3})
    refusal = r"self_taught_cpu__r0\.05__split0__seed0: .*pretrain\.epochs changed"
    with pytest.raises(ConfigError, match=refusal):
        run_benchmark(load_benchmark_config(tmp_path / "bench.yaml"), train=train)


def test_config_errors(tmp_path, toy_manifest):
    path = tmp_path / "b.yaml"
    base = {
        "methods": ["nonexistent_method_xyz"],
        "training_seeds": [0],
        "split_seeds": [0],
        "abnormal_ratios": [0.05],
        "data": {"manifest": str(toy_manifest)},
        "output": "o",
    }
    path.write_text(yaml.safe_dump(base))
    with pytest.raises(ConfigError, match="nonexistent_method_xyz"):
        load_benchmark_config(path)
    path.write_text(yaml.safe_dump({**base, "seeds": [1]}))
    with pytest.raises(ConfigError, match="unknown key"):
        load_benchmark_config(path)
    (tmp_path / "m.yaml").write_text("seed: 0\n")
    path.write_text(yaml.safe_dump({**base, "methods": ["m.yaml"], "training_seeds": []}))
    with pytest.raises(ConfigError, match="training_seeds"):
        load_benchmark_config(path)


def test_merge_overrides():
    base = {"finetune": {"epochs": 10, "lr": 1e-4}, "seed": 0}
    out = merge_overrides(base, {"finetune.epochs": 2, "data": {"image_size": 32}, "seed": 5})
    assert out == {"finetune": {"epochs": 2, "lr": 1e-4}, "seed": 5, "data": {"image_size": 32}}
    assert base["finetune"]["epochs"] == 10  # the input is not mutated
    assert np.isfinite(out["finetune"]["lr"])


@pytest.mark.slow
def test_tiny_real_benchmark_end_to_end(tmp_path):
    """2 methods × 2 training seeds with the real run_training on generated phantoms, then the report."""
    pytest.importorskip("xrad.training")
    from xrad.data.indexing import index_source
    from xrad.data.manifest import write_manifest
    from xrad.data.phantoms.generate import SynthConfig, generate_phantoms
    from xrad.evaluation.report import render_report

    generate_phantoms(tmp_path / "data", SynthConfig(n_patients=24, seed=0, size=64, workers=1), progress=False)
    write_manifest(index_source(tmp_path / "data"), tmp_path / "manifest.csv")
    tiny = yaml.safe_load((resolve_method("tiny", tmp_path)).read_text())
    tiny["finetune"]["n_spheres"] = 1
    (tmp_path / "tiny_uni.yaml").write_text(yaml.safe_dump(tiny))
    (tmp_path / "bench.yaml").write_text(
        yaml.safe_dump(
            {
                "methods": ["tiny", "tiny_uni.yaml"],
                "training_seeds": [0, 1],
                "split_seeds": [0],
                "abnormal_ratios": [0.05],
                "data": {"manifest": "manifest.csv"},
                "output": "bench",
                "overrides": {"pretrain.epochs": 1, "finetune.epochs": 2},
            }
        )
    )
    config = load_benchmark_config(tmp_path / "bench.yaml")
    results = run_benchmark(config)
    assert len(results) == 8 and results["auroc"].between(0, 1).all()
    assert set(results["method"]) == {"tiny", "tiny_uni"} and (results["n_images"] > 0).all()
    for cell in iter_cells(config):
        assert (config.output / "cells" / cell.name / "artefact" / "artefact.json").is_file()
    table = pd.read_csv(config.output / "table1.csv")
    assert table["n"].tolist() == [2, 2]
    page = render_report(config.output).read_text()
    assert page.count("data:image/png;base64,") >= 8 and "<td>tiny_uni</td>" in page


def test_davletshina_ablation_grid_loads_and_runs_on_another_cache(tmp_path, toy_manifest, fake_run_training):
    """benchmarks/davletshina/ablation.yaml: every method is a loadable config, and --manifest / -o point the
    same grid at another preprocessing variant's cache without touching the first one's records."""
    from xrad.methods.registry import load_config

    path = Path(__file__).parents[1] / "benchmarks" / "davletshina" / "ablation.yaml"
    bench = load_benchmark_config(path, output=tmp_path / "raw", manifest=toy_manifest)
    assert bench.manifest == toy_manifest.resolve() and bench.output == tmp_path / "raw"
    assert list(bench.methods) == ["ae_cpu", "ae_top200_cpu", "vae_cpu", "vae_kld_cpu"]
    scores = {}
    for label in bench.methods:
        cfg = load_config(method_config(bench, iter_cells(bench)[list(bench.methods).index(label)]))
        assert cfg.pretrain.epochs == 10
        scores[label] = (cfg.method, cfg.section("ae" if cfg.method == "autoencoder" else "vae").score)
    assert scores == {
        "ae_cpu": ("autoencoder", "mse"),
        "ae_top200_cpu": ("autoencoder", "topk"),
        "vae_cpu": ("vae", "mse"),
        "vae_kld_cpu": ("vae", "kld"),
    }
    assert load_config(method_config(bench, iter_cells(bench)[1])).section("ae").top_k_pixels == 200
    bench.training_seeds = [0]
    results = run_benchmark(bench, train=fake_run_training)
    assert sorted(results["method"].unique()) == sorted(bench.methods)
    assert json.loads((tmp_path / "raw" / "benchmark.json").read_text())["manifest"] == str(toy_manifest.resolve())


def test_group_unit_on_data_with_patient_ids_makes_the_papers_split(bench_config, fake_run_training):
    """group: unit (the papers' patient × body-part units) is accepted on data that has patient ids: the
    benchmark runs, and the split lets a patient's hand and wrist fall in different splits, as the papers'."""
    raw = yaml.safe_load(bench_config.read_text())
    raw["data"]["group"] = "unit"
    raw["split_seeds"], raw["training_seeds"] = [0], [0]
    bench_config.write_text(yaml.safe_dump(raw))
    config = load_benchmark_config(bench_config)
    run_benchmark(config, train=fake_run_training)
    split = pd.read_csv(next((config.output / "splits").glob("*.csv")))
    units = split.groupby(["patient_id", "body_part"])["split"].nunique()
    assert (units == 1).all()  # a unit never crosses
    assert (split.groupby("patient_id")["split"].nunique() > 1).any()  # but patients do, by design
    assert len(pd.read_csv(config.output / "results.csv")) == 4
