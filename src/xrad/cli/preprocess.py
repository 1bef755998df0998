"""``xrad preprocess MANIFEST -o CACHE``: carrier crop, inversion fix, body mask, resize/pad — cached."""

from __future__ import annotations

import argparse
from pathlib import Path

from xrad.cli.options import int_at_least


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``xrad preprocess``."""
    parser.add_argument("manifest", type=Path, help="manifest CSV from `xrad index` or `xrad split`")
    parser.add_argument("-o", "--output", type=Path, required=True, help="cache folder (re-running resumes it)")
    parser.add_argument("--workers", type=int_at_least(1), default=2, help="worker processes")
    parser.add_argument("--size", type=int_at_least(32), default=512, help="major axis of the cached images, in px")
    parser.add_argument(
        "--visualize",
        type=int_at_least(0),
        default=0,
        metavar="K",
        help="also write contact_sheet.png with K random images",
    )
    parser.add_argument("--limit", type=int_at_least(1), default=None, help="only the first N rows (for a quick look)")
    ablation = parser.add_argument_group(
        "ablation switches (Davletshina et al.: raw / carrier crop / crop + body mask, each ± equalisation)"
    )
    ablation.add_argument(
        "--no-carrier-crop", action="store_true", help="keep the whole image (no carrier detection and crop)"
    )
    ablation.add_argument(
        "--no-body-mask", action="store_true", help="no body-part segmentation: the mask is the whole image"
    )
    ablation.add_argument(
        "--equalize",
        choices=("none", "global", "clahe"),
        default="none",
        help="histogram equalisation inside the body part of the cached image (OpenCV)",
    )
    ablation.add_argument("--clahe-clip-limit", type=float, default=2.0, help="CLAHE clip limit (OpenCV's clipLimit)")
    ablation.add_argument(
        "--clahe-tile-grid", type=int_at_least(1), default=8, help="CLAHE tiles per side (OpenCV's tileGridSize)"
    )


def run(args: argparse.Namespace) -> int:
    """Build (or resume) the cache and print its summary."""
    from xrad.data.manifest import read_manifest
    from xrad.preprocess import PreprocessParams
    from xrad.preprocess.cache import FLAG_COLUMNS, build_cache
    from xrad.preprocess.contact_sheet import contact_sheet

    frame = read_manifest(args.manifest)
    if frame.empty:
        from xrad.errors import DataError

        raise DataError(
            f"{args.manifest}: the manifest has no rows (a header only); index some images with `xrad index`"
        )
    if args.limit is not None:
        frame = frame.head(args.limit)
    params = PreprocessParams(
        size=args.size,
        carrier_crop=not args.no_carrier_crop,
        body_mask=not args.no_body_mask,
        equalize=args.equalize,
        clahe_clip_limit=args.clahe_clip_limit,
        clahe_tile_grid=args.clahe_tile_grid,
    )
    summary = build_cache(frame, args.output, params, workers=args.workers)
    rate = summary["images_per_second"]
    cached = summary["images"] - summary["failed"]
    print(
        f"{summary['images']} images: {cached} in the cache ({summary['processed']} worked on now"
        f"{f' at {rate} img/s' if rate else ''}, {summary['skipped']} done before), {summary['failed']} failed"
    )
    print("flags: " + ", ".join(f"{flag} {summary[flag]}" for flag in FLAG_COLUMNS))
    if summary["failed"]:
        print(f"failures: {Path(args.output) / 'failures.csv'}")
        if cached == 0:
            from xrad.errors import DataError

            raise DataError(
                f"{args.manifest}: none of the {summary['images']} image(s) could be preprocessed; "
                f"the reasons are in {Path(args.output) / 'failures.csv'}"
            )
    print(f"manifest for training: {summary['manifest']}")
    if args.visualize:
        sheet = contact_sheet(frame, params, Path(args.output) / "contact_sheet.png", k=args.visualize)
        print(f"contact sheet: {sheet}")
    return 0
