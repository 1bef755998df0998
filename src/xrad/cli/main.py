"""Entry point of the ``xrad`` command.

Each verb lives in its own module ``xrad.cli.<verb>`` exposing ``add_arguments(parser)`` and
``run(args) -> int``. Modules are imported only when their verb is used, so ``xrad --help`` is instant
and never imports torch. A user error (:class:`xrad.errors.XradError`) is printed as one line and exits
with status 2, as is an operating-system error on a path (not writable, a folder where a file is expected);
Ctrl-C exits with 130 after the verb had a chance to leave its outputs consistent. Any other exception
is printed as one line with its type and exits with 1; ``XRAD_TRACEBACK=1`` shows the traceback instead.

Every verb takes ``-q/--quiet`` (no progress displays, no step lines: warnings, errors and the results only)
and ``-v/--verbose`` (also the ``xrad`` loggers' debug detail); messages of library code go through
:mod:`logging` (logger ``xrad.*``) to stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from xrad import __version__
from xrad.errors import XradError

# verb -> one-line help. The module xrad.cli.<verb with - replaced by _> implements it.
# Add a verb by adding its line here and writing xrad/cli/<verb>.py.
# Set to any value to let unexpected errors propagate with their traceback (for bug reports and debugging).
TRACEBACK_ENV = "XRAD_TRACEBACK"

VERBS: dict[str, str] = {
    "run": "the main job: phantoms → index → split → preprocess → train → score, resumable",
    "synth": "generate phantom radiographs in MURA's folder layout (the default data set)",
    "index": "index a MURA tree, a CSV file or a DICOM folder into a manifest",
    "split": "make a leak-free semi-supervised train/valid/test split of a manifest",
    "preprocess": "crop the X-ray carrier, fix inversion, segment the body part and cache resized images",
    "train": "train a detector from a YAML config on a split manifest",
    "score": "score images, a folder, a DICOM folder or a manifest with a trained artefact",
    "evaluate": "metrics with bootstrap intervals for a scores CSV (image, study, patient level)",
    "calibrate": "choose an operating point (threshold) on validation data and store it with the artefact",
    "worklist": "an HTML and CSV worklist of studies sorted by anomaly score",
    "report": "render a run or benchmark folder as one self-contained HTML report",
    "benchmark": "run a grid of methods × seeds × split seeds × anomaly ratios and tabulate it",
    "serve": "serve an artefact over HTTP (FastAPI) with an upload page",
    "export": "export an artefact to ONNX",
}


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default, except where there is none to show (required options, flags, unset values):
    ``(default: None)`` on a required option only confuses."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required or action.default in (None, False, argparse.SUPPRESS) or action.default == []:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with one sub-parser per verb."""
    parser = argparse.ArgumentParser(
        prog="xrad",
        description="Semi-supervised anomaly detection on radiographs.",
        epilog="Run `xrad VERB --help` for the options of one verb.",
    )
    parser.add_argument("--version", action="version", version=f"xrad {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", title="verbs")
    for verb, help_line in VERBS.items():
        module = importlib.import_module(f"xrad.cli.{verb.replace('-', '_')}")
        verb_parser = sub.add_parser(
            verb,
            help=help_line,
            description=help_line[0].upper() + help_line[1:] + ".",
            formatter_class=_DefaultsFormatter,
        )
        module.add_arguments(verb_parser)
        _add_console_options(verb_parser)
        verb_parser.set_defaults(_module=module)
    return parser


def _add_console_options(parser: argparse.ArgumentParser) -> None:
    console = parser.add_argument_group("console").add_mutually_exclusive_group()
    console.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress displays and no step lines: warnings, errors and results only",
    )
    console.add_argument("-v", "--verbose", action="store_true", help="also debug detail (e.g. the split table)")


class _ConsoleHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler ``main`` puts on the ``xrad`` logger (and takes off again): one line per message,
    ``warning:`` in front of warnings."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        return prefix + record.getMessage()


def _configure_console(args: argparse.Namespace) -> tuple[_ConsoleHandler, int]:
    """Logging level and progress displays for one verb; returns what :func:`_restore_console` undoes."""
    from xrad.utils.progress import set_progress

    logger = logging.getLogger("xrad")
    previous = logger.level
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose else logging.INFO)
    logger.setLevel(level)
    handler = _ConsoleHandler(sys.stderr)
    logger.addHandler(handler)
    set_progress(not args.quiet)
    return handler, previous


def _restore_console(handler: _ConsoleHandler, level: int) -> None:
    from xrad.utils.progress import set_progress

    logger = logging.getLogger("xrad")
    logger.removeHandler(handler)
    logger.setLevel(level)
    set_progress(True)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run the verb, and turn user errors into one-line messages."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 0
    handler, level = _configure_console(args)
    try:
        return int(args._module.run(args) or 0)
    except XradError as exc:
        print(f"xrad {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"xrad {args.verb}: interrupted; finished work is kept, run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    except OSError as exc:  # a path the user gave: not writable, a file where a folder is needed, ...
        if os.environ.get(TRACEBACK_ENV):
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(
            f"xrad {args.verb}: error: {where}{exc.strerror or exc}; check the path (or choose another -o)",
            file=sys.stderr,
        )
        return 2
    except Exception as exc:
        if os.environ.get(TRACEBACK_ENV):
            raise
        message = " ".join(str(exc).split()) or "(no message)"
        if len(message) > 300:
            message = message[:300] + " …"
        print(
            f"xrad {args.verb}: error: {type(exc).__name__}: {message}\n"
            f"(unexpected: set {TRACEBACK_ENV}=1 to see the traceback, and report it if the input was valid)",
            file=sys.stderr,
        )
        return 1
    finally:
        _restore_console(handler, level)


if __name__ == "__main__":
    sys.exit(main())
