"""``xrad export ARTEFACT --onnx OUT.onnx``: the scorer as an ONNX graph, parity-checked with onnxruntime."""

from __future__ import annotations

import argparse
from pathlib import Path

from xrad.cli.options import float_at_least, int_in


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``xrad export``."""
    parser.add_argument("artefact", type=Path, help="artefact folder written by training")
    parser.add_argument("--onnx", type=Path, required=True, help="ONNX file to write")
    parser.add_argument("--opset", type=int_in(7, 20), default=17, help="ONNX opset version")
    parser.add_argument(
        "--tolerance",
        type=float_at_least(0.0),
        default=1e-4,
        help="largest |score difference| between onnxruntime and torch accepted on the check batch",
    )


def run(args: argparse.Namespace) -> int:
    """Export, verify, write."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        from xrad.errors import ConfigError

        raise ConfigError(
            "ONNX export needs onnx and onnxruntime; install them with `pip install 'xrad[export]'`"
        ) from None
    from xrad.inference.export import export_onnx

    report = export_onnx(args.artefact, args.onnx, opset=args.opset, tolerance=args.tolerance)
    limit = f"; batches of at most {report['max_batch']} images" if report["max_batch"] else ""
    print(
        f"wrote {report['path']} (inputs image, mask: uint8 (B, 1, {report['image_size']}, {report['image_size']}); "
        f"outputs {', '.join(report['outputs'])}{limit}); max |score difference| vs torch on "
        f"{report['n_checked']} images: {report['max_abs_diff']:.2e}"
    )
    return 0
