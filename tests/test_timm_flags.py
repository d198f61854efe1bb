"""timm-named recipe flags on ``ecvit train`` / ``main.py`` and clean ``--help`` texts."""

from __future__ import annotations

import argparse
import re

import pytest

import main as main_py
from ecvit.cli import TRAIN, build_parser, config_from_args
from ecvit.config import get_key

TIMM_FLAGS = [
    (["--model-ema"], "TRAIN.EMA", True),
    (["--torchcompile"], "TRAIN.COMPILE", True),
    (["--channels-last"], "TRAIN.CHANNELS_LAST", True),
    (["--smoothing", "0.1"], "AUG.LABEL_SMOOTHING", 0.1),
    (["--mixup", "0.8"], "AUG.MIXUP", 0.8),
    (["--cutmix", "1.0"], "AUG.CUTMIX", 1.0),
    (["--clip-grad", "5"], "TRAIN.CLIP_GRAD", 5.0),
    (["--grad-accum-steps", "4"], "TRAIN.ACCUM_STEPS", 4),
    (["--warmup-epochs", "5"], "TRAIN.WARMUP_EPOCHS", 5),
    (["--sched", "step"], "TRAIN.SCHED", "step"),
    (["--layer-decay", "0.75"], "TRAIN.LAYER_DECAY", 0.75),
]


@pytest.mark.parametrize("argv,key,value", TIMM_FLAGS, ids=[f[0][0] for f in TIMM_FLAGS])
@pytest.mark.parametrize("parser_of", ["ecvit", "main.py"])
def test_timm_flag_sets_its_key(argv, key, value, parser_of):
    if parser_of == "ecvit":
        args = build_parser().parse_args(["train", *argv])
    else:
        args = main_py.build_parser().parse_args(argv)
    cfg = config_from_args(args, TRAIN)
    assert get_key(cfg, key) == value


def test_bad_sched_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["train", "--sched", "linear"])
    assert exc.value.code == 2
    assert "--sched" in capsys.readouterr().err


def test_dry_run_prints_the_timm_flag_values(capsys):
    from ecvit.cli import main

    assert main(["train", "--dataset", "simulated", "--model", "ecvit_tiny", "--img-size", "32",
                 "--grad-accum-steps", "2", "--smoothing", "0.2", "--sched", "constant",
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "ACCUM_STEPS: 2" in out and "LABEL_SMOOTHING: 0.2" in out and "SCHED: constant" in out


def _helps() -> dict[str, str]:
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {name: sub.format_help() for name, sub in subs.choices.items()}
    helps["ecvit"] = parser.format_help()
    helps["main.py"] = main_py.build_parser().format_help()
    return helps


def _entries(text: str) -> list[str]:
    """One string per option entry of a help text (wrapped lines joined)."""
    flat = " ".join(text.split())
    return re.split(r" (?=--?[a-zA-Z][\w-]*[ ,])", flat)


@pytest.mark.parametrize("name", sorted(_helps()))
def test_no_doubled_default_in_help(name):
    for entry in _entries(_helps()[name]):
        assert entry.count("(default:") <= 1, f"{name}: {entry}"
        assert "(default: None)" not in entry, f"{name}: {entry}"


@pytest.mark.parametrize("name", ["train", "main.py"])
def test_train_help_ends_with_the_key_value_note(name):
    text = _helps()[name].rstrip()
    last = " ".join(text.split("\n\n")[-1].split())
    assert "KEY VALUE" in last and "--dry-run prints them all" in last
