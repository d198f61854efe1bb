"""Reference command line: ``python main.py --mode {train,validate,train_and_validate} ...``.

The flags are those of the ECViT reference code (``--dataset``, ``--img-size``,
``--embed-dims 64,128`` ...), taken from the same table as ``ecvit train`` / ``ecvit
validate`` (:data:`ecvit.cli.CONFIG_FLAGS`), so both build the same config and call the
same engine. The defaults follow the reference: the paper's ECViT (``ecvit_small``) on
the ``simulated`` dataset at 224 px; everything else is the config default. Example::

    python main.py --mode train --dataset simulated --train-size 1000 --val-size 200 \\
        --img-size 224 --num-classes 10 --batch-size 64 --epochs 30
    python main.py --mode validate --dataset simulated --img-size 224 \\
        --checkpoint output/latest/model_best.pth
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from ecvit import openmp
from ecvit.cli import (CONFIG_KEYS_EPILOG, PRECEDENCE, TRAIN, VALIDATE, _Formatter, add_config_flags,
                       apply_openmp_flag, cmd_validate, config_from_args, run_command, train_from_args)
from ecvit.config import Config
from ecvit.errors import UsageError

MODES = ("train", "validate", "train_and_validate")


def reference_defaults() -> Config:
    """The reference CLI's defaults: the paper's model on simulated data (at its own 224 px)."""
    cfg = Config()
    cfg.model.name = "ecvit_small"
    cfg.data.dataset = "simulated"
    return cfg


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="main.py", formatter_class=_Formatter,
        description="ECViT reference command line: train and/or evaluate a model.\n"
                    "train_and_validate evaluates <output-dir>/model_best.pth after training.\n"
                    + PRECEDENCE, epilog=CONFIG_KEYS_EPILOG)
    parser.add_argument("--mode", choices=MODES, default="train_and_validate",
                        help="what to run")
    add_config_flags(parser, [TRAIN, VALIDATE], reference_defaults())
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``--mode`` through the same commands as ``ecvit train`` / ``ecvit validate``."""
    if args.mode == VALIDATE:
        return cmd_validate(args, reference_defaults())
    if hasattr(args, "checkpoint"):
        raise UsageError(f"--checkpoint is for --mode validate; --mode {args.mode} trains (use "
                         "--pretrained PATH to start from weights, --resume PATH to continue)")
    plan = train_from_args(args, reference_defaults())
    if args.mode == "train_and_validate" and not args.dry_run:
        from ecvit.engine import validate

        cfg = config_from_args(args, TRAIN, reference_defaults())
        cfg.output_dir = plan.cfg.output_dir  # the run's folder (a new one when none was given)
        validate(cfg, str(Path(cfg.output_dir) / "model_best.pth"), cfg.output_dir)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    openmp.apply_default()  # before anything imports torch: OpenMP reads its wait policy once
    args = build_parser().parse_args(argv)

    def go() -> int:
        apply_openmp_flag(args, argv)
        return run(args)

    return run_command(go)


if __name__ == "__main__":
    raise SystemExit(main())
