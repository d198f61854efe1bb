"""The ``ecvit`` command: ``train``, ``validate``, ``predict``, ``export``, ``attention``, ``models``,
``benchmark``.

``train`` and ``validate`` turn their arguments into the one typed :class:`~ecvit.config.Config`
and call the engine. Precedence, lowest to highest::

    config defaults  <  --cfg YAML file  <  explicit flags  <  trailing KEY VALUE overrides

Every flag sets exactly one config key (:data:`CONFIG_FLAGS`, shared with ``main.py``); a flag
left out never overrides the YAML file.
"""

from __future__ import annotations

import argparse
import copy
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ecvit import openmp
from ecvit.config import (AMP_CHOICES, DATASETS, DEVICE_DEFAULT, DEVICES, EXPORT_FORMATS, MAX_BATCH, MAX_CLASSES,
                          MAX_IMG_SIZE, MAX_WORKERS, OPTIMIZER_CHOICES, SCHED_CHOICES, TTA_CHOICES, Config,
                          config_from_dict, get_key, load_config)
from ecvit.errors import TrainingError, UsageError, printable
from ecvit.version import __version__

TRAIN, VALIDATE = "train", "validate"
MAX_STEPS = 100_000  # benchmark --iters/--warmup


# ------------------------------------------------------------------------ value parsers


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _at_most(parse: Callable[[str], int], high: int) -> Callable[[str], int]:
    """``parse`` with an upper bound: a count of 2**63 steps would run forever, not fail."""

    def bounded(text: str) -> int:
        value = parse(text)
        if value > high:
            raise argparse.ArgumentTypeError(f"expected at most {high}, got {text!r}")
        return value

    bounded.__name__ = parse.__name__
    return bounded


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _list_of(item: Callable[[str], Any], what: str) -> Callable[[str], list[Any]]:
    """A comma-separated per-stage list such as ``64,192,384``."""

    def parse(text: str) -> list[Any]:
        parts = [p.strip() for p in text.strip("[]").split(",")]
        try:
            values = [item(p) for p in parts]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {what} (one per stage, e.g. 1,2,10), got {text!r}"
            ) from None
        return values

    parse.__name__ = f"{what} list"
    return parse


# --------------------------------------------------------------------------- flag table


@dataclass(frozen=True)
class Flag:
    """One command-line flag and the config key it sets.

    ``eval_key`` replaces ``key`` when the command evaluates instead of training (so
    ``--batch-size`` is the training batch for ``train`` and the eval batch for ``validate``).
    ``type=None`` makes an on/off switch (``--x`` / ``--no-x``).
    """

    option: str
    key: str
    help: str
    type: Callable[[str], Any] | None = str
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    commands: tuple[str, ...] = (TRAIN, VALIDATE)
    eval_key: str | None = None
    default_text: str | None = None  # how to show an empty config default in --help
    const: Any = None  # with type=None: a one-way switch that sets this value (``--no-resume``)

    @property
    def dest(self) -> str:
        return self.option.lstrip("-").replace("-", "_")

    def key_for(self, command: str) -> str:
        return self.eval_key if command == VALIDATE and self.eval_key else self.key


CONFIG_FLAGS: tuple[Flag, ...] = (
    # model
    Flag("--model", "MODEL.NAME", "registered model name (see `ecvit models`)", metavar="NAME"),
    Flag("--drop-path", "MODEL.DROP_PATH_RATE", "stochastic depth rate of the deepest block",
         _number, metavar="RATE", commands=(TRAIN,), default_text="the variant's"),
    # per-stage shapes of the reference ECViT command line; they set MODEL.ARGS entries and
    # are checked against the chosen model's own constructor (a ViT takes --num-heads 3)
    Flag("--embed-dims", "MODEL.ARGS.EMBED_DIMS", "per-stage widths, comma-separated",
         _list_of(int, "integers"), metavar="D1,D2,..", default_text="the variant's"),
    Flag("--depths", "MODEL.ARGS.DEPTHS", "per-stage block counts, comma-separated",
         _list_of(int, "integers"), metavar="N1,N2,..", default_text="the variant's"),
    Flag("--num-heads", "MODEL.ARGS.NUM_HEADS", "attention heads (per stage, comma-separated)",
         _list_of(int, "integers"), metavar="H1,H2,..", default_text="the variant's"),
    Flag("--mlp-ratios", "MODEL.ARGS.MLP_RATIOS", "per-stage MLP expansion ratios, comma-separated",
         _list_of(float, "numbers"), metavar="R1,R2,..", default_text="the variant's"),
    Flag("--block-size", "MODEL.ARGS.BLOCK_SIZE", "ECViT attention block (window) size", int,
         metavar="N", default_text="the variant's"),
    Flag("--pretrained", "MODEL.PRETRAINED", "weights to start from (.pth, .safetensors, "
         "official CvT or transformers-layout CvT files; a model folder from `ecvit export "
         "--format hf`, timm or transformers CvT, as DIR, local-dir:DIR or hf-hub:ORG/NAME, "
         "the latter from the local Hugging Face cache when offline)", metavar="PATH",
         commands=(TRAIN,), default_text="none"),
    Flag("--finetune", "MODEL.FINETUNE", "start a new classifier when the --pretrained head "
         "has a different class count", None, commands=(TRAIN,)),
    # data
    Flag("--dataset", "DATA.DATASET", f"{', '.join(DATASETS)}; or a source: wds/NAME "
         "(webdataset shards in --data-path), hfds/NAME (Hugging Face dataset), torch/NAME "
         "(torchvision dataset on disk), csv (train.csv/val.csv of path,label lines)", metavar="NAME"),
    Flag("--data-path", "DATA.ROOT", "dataset root folder", metavar="DIR",
         default_text="the dataset's default"),
    Flag("--img-size", "DATA.IMG_SIZE", "input image size in pixels (a checkpoint written by "
         "train brings its own)", int, metavar="N", default_text="digits: 32, else the model's"),
    Flag("--num-classes", "DATA.NUM_CLASSES", "classes of the simulated dataset (real "
         "datasets bring their own)", int, metavar="N"),
    Flag("--train-size", "DATA.TRAIN_SIZE", "training images of the simulated dataset",
         int, metavar="N"),
    Flag("--val-size", "DATA.VAL_SIZE", "validation images of the simulated dataset",
         int, metavar="N"),
    Flag("--download", "DATA.DOWNLOAD", "allow downloading a missing dataset "
         "(cifar10/cifar100)", None),
    Flag("--skip-bad-images", "DATA.SKIP_BAD_IMAGES", "skip (and count) unreadable images "
         "instead of stopping", None),
    Flag("--exif-transpose", "DATA.EXIF_TRANSPOSE", "turn image files upright by their EXIF "
         "orientation tag, as image viewers do", None),
    Flag("--workers", "DATA.WORKERS", "data-loading worker processes", int, metavar="N"),
    # optimisation
    Flag("--batch-size", "TRAIN.BATCH_SIZE", "images per step and process", int, metavar="N", eval_key="TEST.BATCH_SIZE"),
    Flag("--epochs", "TRAIN.EPOCHS", "training epochs", int, metavar="N", commands=(TRAIN,)),
    Flag("--lr", "TRAIN.LR", "peak learning rate", _number, metavar="LR", commands=(TRAIN,)),
    Flag("--weight-decay", "TRAIN.WEIGHT_DECAY", "weight decay (not on norms, biases, "
         "tokens)", _number, metavar="WD", commands=(TRAIN,)),
    Flag("--optimizer", "TRAIN.OPTIMIZER", "optimizer", choices=OPTIMIZER_CHOICES,
         commands=(TRAIN,)),
    Flag("--amp", "TRAIN.AMP", "mixed precision", choices=AMP_CHOICES),
    Flag("--resume", "TRAIN.RESUME", "checkpoint to continue from", metavar="PATH",
         commands=(TRAIN,), default_text="<output-dir>/checkpoint.pth of the same run"),
    Flag("--no-resume", "TRAIN.AUTO_RESUME", "start fresh even when <output-dir> holds a "
         "checkpoint (it is overwritten)", None, commands=(TRAIN,), const=False),
    Flag("--grad-checkpointing", "TRAIN.GRAD_CHECKPOINTING", "recompute block activations in "
         "the backward pass: less memory, about a third more compute", None, commands=(TRAIN,)),
    Flag("--layer-decay", "TRAIN.LAYER_DECAY", "layer-wise lr decay (e.g. 0.75 when "
         "fine-tuning); 0 = off", _number, metavar="D", commands=(TRAIN,)),
    # common recipe keys under timm's train.py names
    Flag("--model-ema", "TRAIN.EMA", "keep an exponential moving average of the weights "
         "(decay TRAIN.EMA_DECAY), evaluated each epoch", None, commands=(TRAIN,)),
    Flag("--torchcompile", "TRAIN.COMPILE", "compile the model with torch.compile", None,
         commands=(TRAIN,)),
    Flag("--channels-last", "TRAIN.CHANNELS_LAST", "channels-last memory layout for the model "
         "and input batches", None, commands=(TRAIN,)),
    Flag("--smoothing", "AUG.LABEL_SMOOTHING", "label smoothing", _number, metavar="EPS",
         commands=(TRAIN,)),
    Flag("--mixup", "AUG.MIXUP", "Mixup alpha; 0 = off", _number, metavar="ALPHA",
         commands=(TRAIN,)),
    Flag("--cutmix", "AUG.CUTMIX", "CutMix alpha; 0 = off", _number, metavar="ALPHA",
         commands=(TRAIN,)),
    Flag("--clip-grad", "TRAIN.CLIP_GRAD", "clip the gradient norm to this value; 0 = off",
         _number, metavar="NORM", commands=(TRAIN,)),
    Flag("--grad-accum-steps", "TRAIN.ACCUM_STEPS", "accumulate gradients over N batches per "
         "optimizer update", int, metavar="N", commands=(TRAIN,)),
    Flag("--warmup-epochs", "TRAIN.WARMUP_EPOCHS", "linear lr warmup epochs", int, metavar="N",
         commands=(TRAIN,)),
    Flag("--sched", "TRAIN.SCHED", "lr schedule", choices=SCHED_CHOICES, commands=(TRAIN,)),
    Flag("--tta", "TEST.TTA", "test-time augmentation, averaging softmax probabilities: flip (the "
         "image and its mirror), five-crop (corner and center crops of the img_size/crop_pct "
         "resize), ten-crop (those and their mirrors)", choices=TTA_CHOICES, commands=(VALIDATE,)),
    Flag("--use-ema", "TEST.USE_EMA", "evaluate the EMA weights", None, commands=(VALIDATE,),
         default_text="the EMA weights when the checkpoint has them"),
    # run
    Flag("--seed", "SEED", "random seed", int, metavar="N"),
    Flag("--device", "DEVICE", "device to run on", choices=DEVICES, default_text=DEVICE_DEFAULT),
    Flag("--output-dir", "OUTPUT_DIR", "folder for checkpoints, metrics and plots; rerunning "
         "with the same folder resumes its run", metavar="DIR",
         default_text="a new folder per run, output/train/<date>-<model>-<size>, with "
                      "output/latest pointing at it"),
    Flag("--checkpoint", "TEST.MODEL_FILE", "checkpoint to evaluate", metavar="PATH",
         commands=(VALIDATE,),
         default_text="<output-dir>/model_best.pth, without --output-dir output/latest/model_best.pth"),
)

CONFIG_KEYS_EPILOG = ("Every config key can be given after the flags as KEY VALUE (e.g. "
                      "TRAIN.EMA_DECAY 0.999 AUG.RAND_AUGMENT rand-m9-mstd0.5-inc1);\n"
                      "--dry-run prints them all with their resolved values.")

PRECEDENCE = ("precedence (lowest to highest): config defaults < --cfg YAML < explicit flags < "
              "trailing KEY VALUE overrides (e.g. TRAIN.LR 0.1 MODEL.NAME cvt_13)")


def _default_text(flag: Flag, value: Any) -> str:
    if flag.default_text and value in ("", [], 0, None):
        return flag.default_text
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def add_config_flags(parser: argparse.ArgumentParser, commands: Sequence[str],
                     base: Config) -> None:
    """Add the flags of :data:`CONFIG_FLAGS` used by ``commands``, plus ``--cfg`` and overrides.

    Flags default to ``argparse.SUPPRESS`` so only flags actually given reach the config; the
    help shows the default taken from ``base``.
    """
    parser.add_argument("--cfg", metavar="FILE", default=argparse.SUPPRESS,
                        help="YAML experiment file (upper-case keys, e.g. experiments/"
                             "digits/ecvit/ecvit-tiny.yaml) (default: none)")
    for flag in CONFIG_FLAGS:
        if not set(flag.commands) & set(commands):
            continue
        keys = list(dict.fromkeys(flag.key_for(c) for c in commands if c in flag.commands))
        shown = _default_text(flag, _get_or_none(base, keys[0]))
        help_text = f"{flag.help} [{' / '.join(keys)}] (default: {shown})"
        if flag.const is not None:
            parser.add_argument(flag.option, dest=flag.dest, action="store_const", const=flag.const,
                                default=argparse.SUPPRESS, help=f"{flag.help} [{keys[0]} {flag.const}]")
        elif flag.type is None:
            parser.add_argument(flag.option, dest=flag.dest, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_text)
        else:
            parser.add_argument(flag.option, dest=flag.dest, type=flag.type, choices=flag.choices,
                                metavar=flag.metavar, default=argparse.SUPPRESS, help=help_text)
    add_openmp_flag(parser)
    if TRAIN in commands:
        parser.add_argument("--overwrite-output-dir", action="store_true",
                            help="start fresh in --output-dir even though it holds another run: "
                                 "that run's checkpoints, logs, metrics and events are removed "
                                 "first (other files stay); without it such a start is refused")
    parser.add_argument("--dry-run", action="store_true",
                        help="run the preflight (model built on the meta device, data root and "
                             "layout read, device, precision and resume checked), print the plan "
                             "and the resolved config as YAML, and exit without writing anything")
    parser.add_argument("overrides", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="config overrides after all flags, e.g. TRAIN.LR 0.1 DATA.IMG_SIZE 64")


def add_openmp_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--openmp", choices=openmp.CHOICES, default="shared",
                        help="how PyTorch's CPU threads wait: shared (spin briefly, then sleep, so "
                             "other busy processes do not slow every step down) or torch (OpenMP's "
                             f"own long spin; restarts the command; env {openmp.OPT_OUT}=torch "
                             "does the same without a restart)")


def apply_openmp_flag(args: argparse.Namespace, argv: Sequence[str] | None) -> None:
    """``--openmp torch``: start this command again under OpenMP's default wait policy, if
    the command line set its own when it started (only a new process reads the setting)."""
    if getattr(args, "openmp", "shared") != "torch" or not openmp.applied():
        return
    if argv is not None:  # called from Python: re-running the process would run its caller
        raise UsageError(f"--openmp torch: set {openmp.OPT_OUT}=torch before starting the command "
                         "(OpenMP reads its settings when torch loads)")
    openmp.restart_with_openmp_default()


def _get_or_none(cfg: Config, key: str) -> Any:
    try:
        return get_key(cfg, key)
    except AttributeError:  # MODEL.ARGS.<NAME>: not set unless given
        return None


def given_flags(args: argparse.Namespace, command: str) -> dict[str, tuple[str, Any]]:
    """``{config key: (option, value)}`` for the flags the user actually typed."""
    return {flag.key_for(command): (flag.option, getattr(args, flag.dest))
            for flag in CONFIG_FLAGS if hasattr(args, flag.dest)}


def load_run_config(path: str | Path | None = None, overrides: Sequence[str] = (), base: Config | None = None,
                    flags: dict[str, tuple[str, Any]] | None = None) -> Config:
    """:func:`ecvit.config.load_config` that also reads microsoft/CvT experiment files as
    published (translated by :mod:`ecvit.io.official_cvt`): what ``--cfg FILE`` accepts."""
    from ecvit.io.official_cvt import translate_if_official

    return load_config(path, overrides, base=base, flags=flags, dialect=translate_if_official)


def config_from_args(args: argparse.Namespace, command: str, base: Config | None = None) -> Config:
    """Defaults (``base``) < ``--cfg`` YAML < explicit flags < ``KEY VALUE`` overrides, checked."""
    return load_run_config(getattr(args, "cfg", None), list(getattr(args, "overrides", None) or []),
                           base=base, flags=given_flags(args, command))


# ----------------------------------------------------------------------------- commands


def print_plan(plan: Any) -> None:
    """The ``--dry-run`` output: the plan as YAML comments, then the resolved config as YAML."""
    import yaml

    for line in plan.describe():
        print(f"# {line}")
    print(yaml.safe_dump(plan.cfg.to_dict(), sort_keys=False), end="")


def cmd_train(args: argparse.Namespace, base: Config | None = None) -> int:
    """``ecvit train``."""
    train_from_args(args, base)
    return 0


def train_from_args(args: argparse.Namespace, base: Config | None = None) -> Any:
    """Resolve the run (``main.py``'s training modes pass their own ``base`` defaults) and
    train it, or print the plan for ``--dry-run``; returns the plan (its ``cfg.output_dir``
    is the run's folder)."""
    from ecvit.engine import resolve, train

    plan = resolve(config_from_args(args, TRAIN, base),
                   overwrite_output_dir=getattr(args, "overwrite_output_dir", False))
    if args.dry_run:
        print_plan(plan)
    else:
        train(plan)
    return plan


def default_checkpoint(cfg: Config) -> str:
    """``TEST.MODEL_FILE``, else the run's ``model_best.pth``; a UsageError when neither exists."""
    if cfg.test.model_file:
        return cfg.test.model_file
    from ecvit.engine.outputs import latest_run

    best = Path(cfg.output_dir or latest_run()) / "model_best.pth"
    if best.is_file():
        return str(best)
    raise UsageError(f"no checkpoint to evaluate: pass --checkpoint PATH (or TEST.MODEL_FILE); "
                     f"{best} does not exist")


def validate_config(args: argparse.Namespace, base: Config | None = None
                    ) -> tuple[Config, str, str | None, dict[str, Any] | None]:
    """The config ``validate`` runs, the checkpoint, the explicit output folder (or None) and
    the checkpoint as read (None when the file is missing; ``validate`` reports that).

    A checkpoint written by ``train`` saved its config: that is the base, so with no other
    flag the checkpoint is evaluated on the dataset and root it was trained on; --cfg,
    flags and overrides still apply on top. The file is read once, here, and handed on.
    """
    from ecvit.io.checkpoint import read_checkpoint

    cfg = config_from_args(args, VALIDATE, base)
    checkpoint = default_checkpoint(cfg)
    flags = given_flags(args, VALIDATE)
    overrides = [str(k).upper() for k in list(getattr(args, "overrides", None) or [])[::2]]
    explicit_out = "OUTPUT_DIR" in flags or "OUTPUT_DIR" in overrides
    ckpt = read_checkpoint(checkpoint) if Path(checkpoint).is_file() else None
    trained = _trained_config(ckpt, checkpoint, base) if ckpt is not None else None
    if trained is not None:
        cfg = config_from_args(args, VALIDATE, trained)
    return cfg, checkpoint, cfg.output_dir if explicit_out else None, ckpt


def _trained_config(ckpt: dict[str, Any], checkpoint: str, base: Config | None) -> Config | None:
    """The config a checkpoint was trained with (or its dataset, for exports); None if neither."""
    trained = None
    if isinstance(ckpt.get("config"), dict):
        try:
            trained = config_from_dict(ckpt["config"], source=f"{checkpoint} (its saved config)")
        except UsageError:  # written by an older version: its dataset is still in the spec
            trained = None
    if trained is None and ckpt.get("dataset"):
        trained = copy.deepcopy(base) if base is not None else Config()
        trained.data.dataset, trained.data.root = str(ckpt["dataset"]), str(ckpt.get("data_root") or "")
    if trained is not None:
        trained.device = ""  # chosen afresh: a GPU run's checkpoint validates on a laptop
        trained.test.model_file = checkpoint
    return trained


def cmd_validate(args: argparse.Namespace, base: Config | None = None) -> int:
    """``ecvit validate`` (and ``main.py --mode validate``, with its own ``base`` defaults)."""
    from ecvit.engine import validate
    from ecvit.engine.validate_checkpoint import validation_plan

    cfg, checkpoint, output_dir, ckpt = validate_config(args, base)
    if args.dry_run:
        print_plan(validation_plan(cfg, checkpoint, ckpt)[0])
        return 0
    validate(cfg, checkpoint, output_dir, ckpt)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from ecvit.predict import predict_command

    return predict_command(args)


def cmd_export(args: argparse.Namespace) -> int:
    from ecvit.export import export_model

    out = export_model(args.checkpoint, args.format, args.out, use_ema=args.use_ema)
    print(f"wrote {out}")
    return 0


def cmd_attention(args: argparse.Namespace) -> int:
    """``ecvit attention``: where the class token looks, per stage, drawn over the image."""
    from ecvit.attention_map import class_token_attention, save_attention_png
    from ecvit.data import build_eval_transform, load_image
    from ecvit.io.weights import load_for_inference
    from ecvit.models import fuse

    model, spec = load_for_inference(args.checkpoint, args.use_ema)
    model = fuse(model)
    transform = build_eval_transform(spec.img_size, spec.mean, spec.std, spec.interpolation,
                                     spec.crop_pct, crop_mode=spec.crop_mode)
    image = transform(load_image(args.image))
    with warnings.catch_warnings():  # torchvision's FX note on train vs eval graphs: not ours
        warnings.filterwarnings("ignore", message="NOTE: The nodes obtained by tracing")
        maps = class_token_attention(model, image)
    out = Path(args.out) if args.out else Path(args.image).with_suffix(".attention.png")
    save_attention_png(maps, image, out)
    grids = ", ".join(f"{m.shape[0]}x{m.shape[1]}" for m in maps)
    print(f"wrote {out}: the class token's attention over {len(maps)} levels ({grids})")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from ecvit.model_table import format_table, model_rows

    rows = model_rows(args.pattern, args.img_size, args.num_classes)
    if not rows:
        raise UsageError(f"no registered model matches {args.pattern!r}")
    print(format_table(rows, markdown=args.markdown))
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from ecvit.bench import benchmark_command

    return benchmark_command(args)


# ------------------------------------------------------------------------------- parser


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the help, descriptions printed as written.

    A help text that already names its default, or a default of None (a required or "unset"
    value), gets no second ``(default: ...)``.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "(default:" in text or action.default is None:
            return text
        return super()._get_help_string(action)


def _add_use_ema(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--use-ema", action=argparse.BooleanOptionalAction, default=None,
                        help="use the EMA weights (default: the EMA weights when the checkpoint "
                             "has them, the raw weights otherwise)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecvit",
        description="Convolutional vision transformers (ECViT, CvT, ViT with depth-wise "
                    "shortcuts): train, evaluate, predict, export, list and benchmark models.",
        epilog="Run `ecvit <command> --help` for a command's flags and their defaults.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"ecvit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    base = Config()

    p = sub.add_parser(TRAIN, help="train a model (no arguments: ecvit_tiny on the bundled "
                       "digits data)", formatter_class=_Formatter,
                       description="Train a model; outputs (checkpoints, metrics.json, "
                       "summary.csv, curves.png, TensorBoard events, config.yaml) go to "
                       f"--output-dir.\n{PRECEDENCE}", epilog=CONFIG_KEYS_EPILOG)
    add_config_flags(p, [TRAIN], base)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(VALIDATE, help="evaluate a checkpoint: top-1/top-5, loss, per-class "
                       "accuracy, confusion.png", formatter_class=_Formatter,
                       description="Evaluate a checkpoint on the validation split of the "
                       "configured dataset. A checkpoint written by `ecvit train` (or exported "
                       "to safetensors) brings its own model, image size and normalisation; "
                       "--model and the MODEL.* flags describe plain weight files such as "
                       f"official CvT .pth files.\n{PRECEDENCE}")
    add_config_flags(p, [VALIDATE], base)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("predict", help="classify images (files, folders, globs, @lists) with a "
                       "checkpoint", formatter_class=_Formatter,
                       description="Top-k classes per image. The model, class names, input "
                       "size and normalisation are read from the checkpoint (or from an "
                       "`ecvit export` .safetensors or .onnx file). Images stream through in "
                       "batches, so memory does not grow with their number.")
    p.add_argument("--checkpoint", required=True, metavar="PATH",
                   help="checkpoint written by `ecvit train`, or `ecvit export` .safetensors / "
                        ".onnx file (ONNX runs in onnxruntime)")
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files, folders (searched recursively), quoted globs "
                        "('photos/**/*.jpg') or @LIST (a text file naming one per line, "
                        "relative to the list's folder)")
    p.add_argument("--topk", type=_positive_int, default=5, metavar="K",
                   help="classes per image (at most the number of classes)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--results-file", metavar="FILE", default=None,
                   help="also write one row per image (filename, index_i, label_i, prob_i) to "
                        "FILE.csv, .json or .parquet; the console then shows the first 20 "
                        "images and a summary line")
    p.add_argument("--batch-size", type=_at_most(_positive_int, MAX_BATCH), default=32,
                   metavar="N", help="images per forward pass")
    p.add_argument("--workers", type=_at_most(_non_negative_int, MAX_WORKERS), default=2,
                   metavar="N", help="image-reading worker processes (0: read in this process)")
    p.add_argument("--device", choices=DEVICES, default=None, help=f"device (default: {DEVICE_DEFAULT})")
    p.add_argument("--amp", choices=AMP_CHOICES, default="off",
                   help="mixed precision (fp16: CUDA only; not for .onnx files)")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="skip (and count) unreadable images instead of stopping")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar and no table (errors and skipped images still shown)")
    _add_use_ema(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="export a checkpoint to ONNX, safetensors or TorchScript",
                       formatter_class=_Formatter,
                       description="Export a trained model. ONNX and TorchScript hold the fused "
                       "eval-mode model with a dynamic batch dimension; safetensors holds the "
                       "weights plus the metadata `ecvit predict`/`validate` need.")
    p.add_argument("--checkpoint", required=True, metavar="PATH", help="checkpoint to export")
    p.add_argument("--format", required=True, choices=EXPORT_FORMATS,
                   help="output format; hf: a hub-style folder (config.json with the "
                        "checkpoint's preprocessing and class names, model.safetensors, a "
                        "README model card) that timm's local-dir:/hf-hub: loaders read")
    p.add_argument("--out", "--output", metavar="PATH", default=None,
                   help="output file, or folder for --format hf (default: the checkpoint path "
                        "with .onnx, .safetensors or .torchscript.pt; for hf, <stem>-hf)")
    _add_use_ema(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("attention", help="draw the class token's attention per stage over an image",
                       formatter_class=_Formatter,
                       description="One forward pass of a checkpoint's model on IMAGE (with the "
                       "checkpoint's preprocessing); writes a PNG: the image, then one panel per "
                       "stage (ViT: per block) with the class token's attention over the patches, "
                       "averaged over heads and blocks.")
    p.add_argument("--checkpoint", required=True, metavar="PATH",
                   help="checkpoint written by `ecvit train` or `ecvit export --format safetensors`")
    p.add_argument("image", metavar="IMAGE", help="image file")
    p.add_argument("--out", metavar="PNG", default=None,
                   help="output file (default: IMAGE with the suffix .attention.png)")
    _add_use_ema(p)
    p.set_defaults(func=cmd_attention)

    p = sub.add_parser("models", help="list registered models with parameters and MACs",
                       formatter_class=_Formatter,
                       description="Registered models: parameters, MACs (multiply-accumulates, "
                       "the papers' 'FLOPs') at the input size, default input size, paper.")
    p.add_argument("--pattern", default=None, metavar="GLOB",
                   help="shell wildcard on the name, e.g. 'cvt*' (default: all)")
    p.add_argument("--img-size", type=_at_most(_positive_int, MAX_IMG_SIZE), default=None, metavar="N",
                   help="count at this input size (default: each model's own)")
    p.add_argument("--num-classes", type=_at_most(_positive_int, MAX_CLASSES), default=None, metavar="N",
                   help="classifier outputs (default: each model's own, 1000 unless its "
                        "config says otherwise)")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("benchmark", help="throughput, latency and memory of a model",
                       formatter_class=_Formatter,
                       description="Measure images/s, latency and peak memory of a model on "
                       "random inputs.")
    p.add_argument("--model", default="ecvit_tiny", metavar="NAME", help="registered model")
    p.add_argument("--batch-size", type=_at_most(_positive_int, MAX_BATCH), default=32, metavar="N",
                   help="images per step")
    p.add_argument("--img-size", type=_at_most(_positive_int, MAX_IMG_SIZE), default=None, metavar="N",
                   help="input size (default: the model's own)")
    p.add_argument("--amp", choices=AMP_CHOICES, default="off",
                   help="mixed precision")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--train", action="store_true",
                   help="time training steps (forward + backward + optimizer) instead of "
                        "inference")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    p.add_argument("--warmup", type=_at_most(_non_negative_int, MAX_STEPS), default=3, metavar="N",
                   help="untimed steps before timing")
    p.add_argument("--iters", type=_at_most(_positive_int, MAX_STEPS), default=10, metavar="N",
                   help="timed steps")
    p.add_argument("--json", metavar="FILE", default=None, help="also write results as JSON")
    p.add_argument("--device", choices=DEVICES, default=None, help=f"device (default: {DEVICE_DEFAULT})")
    p.set_defaults(func=cmd_benchmark)
    return parser


def run_command(func: Callable[[], int]) -> int:
    """Run a front end's work, mapping errors to one line on stderr and an exit code.

    UsageError (incl. CheckpointError, DataError): exit 2; TrainingError: exit 1 (a
    preemption signal: 128 + its number, after a resumable checkpoint); Ctrl-C: exit 130. Anything else is a bug and keeps its traceback.
    """
    try:
        return func()
    except UsageError as exc:
        _print_error(exc)
        return 2
    except TrainingError as exc:
        _print_error(exc)
        return getattr(exc, "exit_code", 1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _print_error(exc: BaseException) -> None:
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    print(printable(f"error: {text or type(exc).__name__}"), file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ecvit`` console script and ``python -m ecvit``.

    The OpenMP wait policy is set first, before anything imports torch (this module does not).
    """
    openmp.apply_default()
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_command(lambda: _run(args, argv))


def _run(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    apply_openmp_flag(args, argv)
    return args.func(args)


__all__ = ["main", "build_parser", "CONFIG_FLAGS", "CONFIG_KEYS_EPILOG", "Flag", "add_config_flags",
           "config_from_args", "load_run_config", "given_flags", "validate_config", "default_checkpoint",
           "run_command", "print_plan"]
