"""The pieces every xrad HTML report is built from: the page style, a section/figure builder (PNGs embedded
as data URIs), small HTML helpers, and the sections a run report and a benchmark report share (t-SNE of the
embeddings, per-epoch curves, the environment)."""

from __future__ import annotations

import base64
import html
import json
import platform
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from xrad.evaluation import plots
from xrad.evaluation.evaluate import read_scores

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

_STAGE_ORDER = ("pretrain", "finetune")
REPORT_CSS = """body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1200px;margin:24px auto;
padding:0 16px;color:#222}h1{border-bottom:2px solid #444}h2{margin-top:36px;border-bottom:1px solid #bbb}
img{max-width:100%;border:1px solid #ddd;margin:8px 0}
.notice{background:#fff4e5;border-left:4px solid #e65100;padding:6px 10px}.headline{font-size:18px}
table{border-collapse:collapse;margin:8px 0;font-size:14px}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f0f0f0}td:first-child{text-align:left}
pre{background:#f7f7f7;padding:10px;overflow-x:auto;font-size:12px}.missing{color:#a33;font-style:italic}
.note{color:#555}.warning{color:#b00020;font-weight:600}
.gallery{display:flex;flex-wrap:wrap;gap:8px}.gallery figure{margin:0;width:23%}
.gallery img{width:100%}.gallery figcaption{font-size:12px}"""


def stage_metrics(run_dir: Path) -> dict[str, pd.DataFrame]:
    """Epoch-level metrics per stage (one row per epoch; the last logged non-empty value of each column).

    Lightning's CSV logger writes training and validation values on separate rows, so rows are merged by
    epoch; missing columns simply stay missing.
    """
    found = {p.parent.name: p for p in sorted(run_dir.glob("*/metrics.csv"))}
    out = {}
    for stage in sorted(found, key=lambda s: (_STAGE_ORDER.index(s) if s in _STAGE_ORDER else 99, s)):
        try:
            frame = pd.read_csv(found[stage])
        except (pd.errors.ParserError, pd.errors.EmptyDataError):
            continue
        if "epoch" not in frame.columns or frame.empty:
            continue
        frame = frame.apply(pd.to_numeric, errors="coerce").dropna(subset=["epoch"])
        out[stage] = frame.groupby("epoch", sort=True).last().reset_index()
    return out


def embedded_png(data: bytes, alt: str) -> str:
    """An <img> carrying the PNG bytes as a data URI (the report needs no side files to be read)."""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'


def missing_note(text: str) -> str:
    """The note a section shows in place of what it could not find."""
    return f'<p class="missing">{html.escape(text)}</p>'


def html_table(frame: pd.DataFrame, digits: int = 4) -> str:
    """A data frame as an HTML table (no index, ``digits`` significant digits, n/a for missing values)."""
    markup: str = frame.to_html(index=False, border=0, na_rep="n/a", float_format=lambda v: f"{v:.{digits}g}")
    return markup


class ReportBuilder:
    """Collects sections and figures; figures are written to ``png_dir`` and embedded."""

    def __init__(self, png_dir: Path) -> None:
        self.png_dir = png_dir
        self.parts: list[str] = []

    def section(self, title: str) -> None:
        self.parts.append(f"<h2>{html.escape(title)}</h2>")

    def add(self, markup: str) -> None:
        self.parts.append(markup)

    def figure(self, fig: Figure, name: str, alt: str) -> None:
        self.parts.append(embedded_png(plots.save_png(fig, self.png_dir / f"{name}.png"), alt))


def environment_section(folder: Path, env_path: Path | None, extra: dict[str, Any] | None = None) -> str:
    import xrad

    info: dict[str, Any] = {"xrad": getattr(xrad, "__version__", "?"), "python": platform.python_version()}
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        info["report_commit"] = commit.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        info["report_commit"] = "unknown"
    parts = [f"<pre>{html.escape(json.dumps(info, indent=2))}</pre>"]
    if env_path is not None and env_path.is_file():
        parts.append(
            f"<p>Training environment ({html.escape(str(env_path.relative_to(folder)))}):</p>"
            f"<pre>{html.escape(env_path.read_text(encoding='utf-8'))}</pre>"
        )
    else:
        parts.append(missing_note("env.json not found: training versions, seeds and commit unknown"))
    for title, value in (extra or {}).items():
        parts.append(f"<p>{html.escape(title)}:</p><pre>{html.escape(value)}</pre>")
    return "\n".join(parts)


def _load_embeddings(run_dir: Path) -> dict[str, np.ndarray] | None:
    """The test embeddings a run wrote (``embeddings_test.safetensors``), or None."""
    path = run_dir / "embeddings_test.safetensors"
    if not path.is_file():
        return None
    from safetensors.numpy import load_file

    return load_file(str(path))


def tsne_section(
    b: ReportBuilder, run_dir: Path, name: str, title: str, keys: tuple[str, ...], seed: int, max_points: int
) -> None:
    """t-SNE figures of the run's test embeddings ``keys``, coloured by label, body part and sphere."""
    emb = _load_embeddings(run_dir)
    if emb is None:
        b.add(missing_note(f"{run_dir.name}/embeddings_test.safetensors not found: no t-SNE"))
        return
    n = len(next(iter(emb.values())))
    scores_path = run_dir / "scores_test.csv"
    scores = read_scores(scores_path) if scores_path.is_file() else None
    keep = np.arange(n)
    if n > max_points:  # t-SNE is O(n log n) but slow on 2 cores; a seeded subsample keeps it to seconds
        keep = np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))
    colourings: dict[str, np.ndarray] = {}
    if "labels" in emb:
        colourings["label"] = np.where(emb["labels"][keep] > 0, "1", np.where(emb["labels"][keep] == 0, "0", "?"))
    if scores is not None and len(scores) == n and "body_part" in scores:
        colourings["body part"] = scores["body_part"].replace("", "unknown").to_numpy()[keep]
    if "sphere" in emb:
        colourings["sphere"] = emb["sphere"][keep].astype(int).astype(str)
    for key in keys:
        if key not in emb:
            continue
        coords = plots.tsne_coordinates(emb[key][keep].reshape(len(keep), -1), seed=seed)
        b.figure(
            plots.tsne_figure(
                coords,
                colourings or {"all": np.zeros(len(keep))},
                f"{title}: t-SNE of '{key}' embeddings ({len(keep)} test images)",
            ),
            f"tsne_{name}_{key}",
            f"t-SNE {key}",
        )


def pretext_tsne_section(b: ReportBuilder, run_dir: Path, seed: int, max_points: int) -> None:
    """Fig. 9: t-SNE of the validation images' embeddings by the stage-1 (pretext) encoder beside the final
    (fine-tuned) one, coloured by label."""
    from safetensors.numpy import load_file

    paths = [run_dir / "embeddings_valid_pretext.safetensors", run_dir / "embeddings_valid.safetensors"]
    if not all(p.is_file() for p in paths):
        return
    pretext, final = (load_file(str(p)) for p in paths)
    key = "z" if "z" in pretext and "z" in final else "h"
    if key not in pretext or key not in final:
        return
    n = len(pretext[key])
    keep = np.arange(n)
    if n > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))
    labels = np.where(final["labels"][keep] > 0, "1", "0")
    b.section("t-SNE of the validation embeddings: pretext beside fine-tuned (Fig. 9)")
    for name, emb in (("pretext", pretext), ("fine-tuned", final)):
        coords = plots.tsne_coordinates(emb[key][keep].reshape(len(keep), -1), seed=seed)
        b.figure(
            plots.tsne_figure(
                coords, {"label": labels}, f"{name} encoder: t-SNE of '{key}' ({len(keep)} valid images)"
            ),
            f"tsne_valid_{name}",
            f"t-SNE valid {name}",
        )


def curves_section(b: ReportBuilder, histories_by_stage: dict[str, dict[str, list[pd.DataFrame]]], prefix: str) -> None:
    """Validation AUROC (Fig. 8), surviving spheres and loss per epoch."""

    def pick(column: str) -> dict[str, list[pd.DataFrame]]:
        out: dict[str, list[pd.DataFrame]] = {}
        for stage, histories in histories_by_stage.items():
            for name, frames in histories.items():
                frames = [f for f in frames if column in f and f[column].notna().any()]
                if frames:
                    out[name if len(histories_by_stage) == 1 or prefix == "bench" else f"{name} ({stage})"] = frames
        return out

    b.section("Validation AUROC per epoch")
    auroc = pick("valid_auroc")
    if auroc:
        b.figure(
            plots.epoch_figure(auroc, "valid_auroc", "validation AUROC", "Validation AUROC per epoch (Fig. 8)"),
            f"{prefix}_valid_auroc",
            "validation AUROC per epoch",
        )
    else:
        b.add(missing_note("no valid_auroc column in any <stage>/metrics.csv"))
    b.section("Surviving spheres per epoch")
    spheres = pick("n_spheres")
    if spheres:
        b.figure(
            plots.epoch_figure(
                spheres, "n_spheres", "surviving spheres", "Surviving hyperspheres per epoch", integer=True
            ),
            f"{prefix}_spheres",
            "surviving spheres per epoch",
        )
    else:
        b.add(missing_note("no n_spheres column in any <stage>/metrics.csv (not a multi-sphere method)"))
    b.section("Loss curves")
    drawn = False
    for stage, histories in histories_by_stage.items():
        frames = {
            n: [f for f in fs if "train_loss" in f and f["train_loss"].notna().any()] for n, fs in histories.items()
        }
        frames = {n: fs for n, fs in frames.items() if fs}
        if frames:
            b.figure(
                plots.epoch_figure(frames, "train_loss", "training loss", f"Training loss per epoch: {stage}"),
                f"{prefix}_loss_{stage}",
                f"loss {stage}",
            )
            drawn = True
    if not drawn:
        b.add(missing_note("no train_loss column in any <stage>/metrics.csv"))
