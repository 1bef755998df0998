"""A quiet console: `xrad run` on a non-terminal writes a few kB without Lightning's banners, and every verb
takes --quiet / --verbose."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xrad.cli.main import VERBS, build_parser

SRC = Path(__file__).resolve().parents[1] / "src"
# What Lightning and tqdm print when left alone (banners, tips, the model table, bar redraws).
NOISE = ("GPU available", "TPU available", "HPU available", "Tip:", "LOCAL_RANK", "| Name", "Trainable params", "\r")


def _verb_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_verb_takes_quiet_and_verbose() -> None:
    parsers = _verb_parsers()
    assert set(parsers) == set(VERBS)
    for verb, parser in parsers.items():
        options = {s for action in parser._actions for s in action.option_strings}
        assert {"-q", "--quiet", "-v", "--verbose"} <= options, verb


def test_quiet_turns_progress_off_for_the_verb_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from xrad.cli.main import main
    from xrad.utils import progress

    assert main(["synth", "-o", str(tmp_path / "a"), "--patients", "2", "--size", "64", "--workers", "1", "-q"]) == 0
    assert "img/s" not in capsys.readouterr().err and progress._ENABLED  # restored after the verb
    assert main(["synth", "-o", str(tmp_path / "b"), "--patients", "2", "--size", "64", "--workers", "1"]) == 0
    assert "xrad synth: " in capsys.readouterr().err  # the plain progress line off a terminal


@pytest.mark.slow  # a real tiny `xrad run` in a subprocess (phantoms, preprocessing, two tiny trainings)
def test_xrad_run_on_a_non_terminal_is_short_and_has_no_lightning_banner(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "xrad.cli.main", "run", "-o", str(tmp_path / "R"), "--config", "tiny"]
    command += ["--patients", "12", "--cache-px", "64", "--workers", "1"]
    log = tmp_path / "log"
    with log.open("wb") as handle:  # stdout and stderr into one file: not a terminal
        subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env, check=True, timeout=900)
    text = log.read_text(encoding="utf-8")
    assert log.stat().st_size < 5_000, text
    assert not [noise for noise in NOISE if noise in text], text
    assert "test AUROC" in text and "[train] finished" in text and "split: train " in text
    # --quiet: the resumed run says its result in one line.
    quiet = subprocess.run(command + ["--quiet"], capture_output=True, text=True, env=env, check=True, timeout=300)
    assert quiet.stdout.count("\n") == 1 and quiet.stdout.startswith("test AUROC") and quiet.stderr == ""


def test_help_shows_no_default_where_there_is_none() -> None:
    for verb, parser in _verb_parsers().items():
        assert "(default: None)" not in parser.format_help(), verb
    train = _verb_parsers()["train"].format_help()
    from xrad.config import packaged_configs

    assert all(name in train for name in packaged_configs())  # every packaged config is listed
    assert "(default: all)" in train  # real defaults are still shown
