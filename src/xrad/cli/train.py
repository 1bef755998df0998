"""``xrad train``: train a detector from a YAML config on a split manifest (resumable)."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from xrad.cli.options import int_at_least


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``xrad train``."""
    # Light imports (no torch): the registry rows and the packaged configs' names.
    from xrad.config import packaged_configs
    from xrad.methods.registry import DETECTORS, stage_names

    stages = "; ".join(f"{d.name}: {', '.join(d.stage_names)}" for d in DETECTORS.values())
    parser.add_argument(
        "--config",
        required=True,
        help="YAML config file, or the name of a packaged one: " + ", ".join(packaged_configs()),
    )
    parser.add_argument("--manifest", required=True, help="split manifest (from `xrad split`, optionally preprocessed)")
    parser.add_argument("-o", "--output", required=True, help="run folder; re-running the same command resumes it")
    parser.add_argument(
        "--stage",
        choices=("all", *stage_names()),
        default="all",
        help=f"which stage to run (the method's own stages: {stages})",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set finetune.epochs=5 (repeatable)",
    )
    trainer = parser.add_argument_group("devices (passed to lightning.Trainer; override the config's trainer section)")
    trainer.add_argument("--accelerator", help="cpu, gpu, mps, auto ...")
    trainer.add_argument("--devices", help="number of devices, a list like 0,1, or auto")
    trainer.add_argument("--strategy", help="auto, ddp, ddp_spawn, fsdp ...")
    trainer.add_argument("--precision", help="32-true, 16-mixed, bf16-mixed ...")
    trainer.add_argument("--num-nodes", type=int_at_least(1), help="number of nodes (multi-node DDP)")
    parser.add_argument(
        "--allow-leakage",
        action="store_true",
        help="train although one image (same path or same content) is in two splits",
    )


def _devices(value: str) -> Any:
    if value.isdigit() or (value.startswith("-") and value[1:].isdigit()):
        return int(value)
    if "," in value:
        return [int(v) for v in value.split(",") if v.strip()]
    return value


def run(args: argparse.Namespace) -> int:
    """Train, then print a one-screen summary."""
    from xrad.jobs.train import run_training

    overrides = list(args.overrides)
    for name in ("accelerator", "strategy", "precision"):
        if getattr(args, name):
            overrides.append(f"trainer.{name}={getattr(args, name)}")
    if args.devices:
        overrides.append(f"trainer.devices={json.dumps(_devices(args.devices))}")
    if args.num_nodes:
        overrides.append(f"trainer.num_nodes={args.num_nodes}")
    stages = None if args.stage == "all" else (args.stage,)  # None: every stage of the configured method
    started = time.perf_counter()
    summary = run_training(
        args.config,
        args.manifest,
        args.output,
        stages=stages,
        overrides=overrides,
        progress=not args.quiet,
        allow_leakage=args.allow_leakage,
    )
    if not summary:  # a DDP rank other than 0
        return 0
    seconds = time.perf_counter() - started
    if "finished_stages" in summary:
        print(
            f"xrad train: finished stage(s) {', '.join(summary['finished_stages']) or 'none'} in {seconds:.0f} s; "
            f"run the remaining stage(s) with --stage all -o {args.output}"
        )
        return 0
    spheres = summary.get("n_spheres")
    lines = [
        f"xrad train: {summary['method']} → {args.output}",
        f"  images       train {summary['n_images']['train']}, valid {summary['n_images']['valid']}, "
        f"test {summary['n_images']['test']}",
        f"  valid AUROC  {summary['valid_auroc']:.4f}",
        f"  test AUROC   {summary['test_auroc']:.4f}",
    ]
    if spheres is not None:
        history = summary.get("n_spheres_history") or []
        lines.append(f"  spheres      {spheres} surviving" + (f" (per epoch: {history})" if history else ""))
    timings = ", ".join(f"{k} {v:.0f} s" for k, v in summary.get("timings_s", {}).items())
    lines.append(f"  seconds      {seconds:.0f} this invocation ({timings})")
    lines.append(f"  artefact     {summary['artefact']}  (score new images: xrad score {summary['artefact']} INPUT)")
    print("\n".join(lines))
    return 0
