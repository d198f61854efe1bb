"""The one typed configuration every front end builds and the engine reads.

The YAML layout follows the official CvT experiments: upper-case sections and keys
(``TRAIN.LR``), which map to lower-case dataclass fields (``cfg.train.lr``). A YAML file
is merged over the defaults, then ``KEY VALUE`` overrides over that; every key must exist
and every value must have the field's type, otherwise a :class:`UsageError` names the key.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from ecvit.errors import UsageError

AMP_CHOICES = ("off", "bf16", "fp16")
OPTIMIZER_CHOICES = ("adamw", "sgd", "adam", "momentum")
SCHED_CHOICES = ("cosine", "constant", "step", "multistep", "tanh")
DEVICE_CHOICES = ("", "cpu", "cuda")  # "": cuda when available, else cpu
DEVICES = tuple(d for d in DEVICE_CHOICES if d)  # what --device offers
DEVICE_DEFAULT = "cuda when available, else cpu"  # what "" means, as --help says it
# DATA.DATASET's built-in datasets (ecvit.data.build); sources (wds/NAME, hfds/NAME, torch/NAME,
# csv) are read by ecvit.data.sources
DATASETS = ("digits", "simulated", "folder", "cifar10", "cifar100", "tiny-imagenet", "oxford-pets",
            "svhn", "mnist", "fashion-mnist")
EXPORT_FORMATS = ("onnx", "safetensors", "torchscript", "hf")  # ecvit export --format
INTERPOLATION_CHOICES = ("", "bilinear", "bicubic", "nearest", "lanczos", "box", "hamming")
CROP_MODE_CHOICES = ("center", "squash")
SAMPLER_CHOICES = ("default", "repeated_aug")
PIPELINE_CHOICES = ("timm", "torchvision", "resize-crop")
SPLIT_CHOICES = ("official", "random")
# TEST.TTA (validate): views whose softmax probabilities are averaged, see ecvit.engine.evaluate
TTA_CHOICES = ("none", "flip", "five-crop", "ten-crop")
CROP_TTA = ("five-crop", "ten-crop")  # these read the images at img_size / crop_pct, uncropped


@dataclass
class ModelConfig:
    """Which network to build. ``None`` and empty values mean "the variant's own".

    Only what every family shares is a key here; any other constructor argument goes in
    ``MODEL.ARGS`` (``{embed_dims: [64, 128], depths: [2, 2]}`` for ECViT, ``{depth: 6}``
    for a ViT), checked against the variant's own constructor before anything runs.
    """

    name: str = "ecvit_tiny"
    # stochastic depth; None: the variant's own; a list: one maximum per stage (CvT)
    drop_path_rate: float | list[float] | None = None
    args: dict[str, Any] = field(default_factory=dict)  # constructor arguments of the family
    pretrained: str = ""  # weights to start from (.pth / .safetensors / official CvT)
    finetune: bool = False  # drop a pretrained head whose class count differs
    # top-level modules (``stage0``, ``norm`` ...) taken from MODEL.PRETRAINED; "*": all
    pretrained_layers: list[str] = field(default_factory=lambda: ["*"])
    frozen_layers: list[str] = field(default_factory=list)  # top-level modules not trained


@dataclass
class DataConfig:
    """Where images come from and how they are shaped before the model sees them."""

    dataset: str = "digits"
    root: str = ""
    img_size: int | None = None  # None: the dataset's native size if it has one, else the model's
    num_classes: int = 10  # used by ``simulated``; real datasets bring their own
    train_size: int = 1000  # ``simulated`` only
    val_size: int = 200  # ``simulated`` only
    download: bool = False
    workers: int = 0
    skip_bad_images: bool = False
    exif_transpose: bool = True  # turn image files upright by their EXIF orientation tag
    mean: list[float] = field(default_factory=list)  # empty: the dataset's, else the model's
    std: list[float] = field(default_factory=list)
    interpolation: str = ""  # empty: the model's pretrained_cfg
    crop_pct: float | None = None  # eval resize = img_size / crop_pct, then center crop; None: the model's
    in_chans: int = 3  # 1: grey datasets (mnist, fashion-mnist) feed one channel; 3: RGB (weights transfer)
    train_fraction: float = 1.0  # <1: a class-stratified subset of the training split (fixed seed)
    train_split: str = "train"  # ``folder``: the training subfolder of DATA.ROOT; wds/hfds/torch/csv: the split
    val_split: str = "val"  # ``folder``: the validation subfolder of DATA.ROOT; wds/hfds/torch/csv: the split
    input_key: str = ""  # hfds: the image column (default "image"); wds: image extensions (default "jpg;png;webp")
    target_key: str = ""  # hfds: the label column (default "label"); wds: a field of KEY.json (default: KEY.cls)
    split: str = "official"  # ``oxford-pets``: official trainval/test, or random 80/20 of list.txt
    split_seed: int = 0  # seed of DATA.SPLIT random (fixed, not the run's SEED)
    crop_mode: str = "center"  # eval: "center" (resize short side, crop) or "squash" (resize to size x size)
    sampler: str = "default"  # training order: "default" or "repeated_aug" (3 augmented copies, DeiT/CvT)
    pin_memory: bool = True  # page-locked batches on CUDA


@dataclass
class AugConfig:
    """Training-time augmentation, built from timm's transforms and Mixup."""

    rand_augment: str = ""  # timm RandAugment spec, e.g. "rand-m9-mstd0.5-inc1"; "" = off
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    label_smoothing: float = 0.0
    reprob: float = 0.0  # random erasing probability
    hflip: float = 0.5
    scale: list[float] = field(default_factory=lambda: [0.08, 1.0])  # random-resized-crop area
    ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])  # random-resized-crop aspect
    color_jitter: float = 0.0
    # "timm": timm's pipeline (the keys above); "torchvision": random-resized crop, flip and
    # the three keys below only; "resize-crop": resize to size+32, random crop, flip (fine-tuning)
    pipeline: str = "timm"
    jitter: list[float] = field(default_factory=list)  # torchvision: brightness, contrast, saturation, hue, probability
    grayscale: float = 0.0  # torchvision: probability of a grey image
    gaussian_blur: float = 0.0  # torchvision: probability of a Gaussian blur (radius 0.1-2)
    vflip: float = 0.0
    remode: str = "pixel"  # random erasing fill: "pixel" (noise per pixel), "rand" (per channel), "const"
    recount: int = 1  # random erasing: boxes per image
    resplit: bool = False  # random erasing only on the second half of each batch (timm's re_split)
    interpolation: str = ""  # training resize; empty: DATA.INTERPOLATION
    cutmix_minmax: list[float] = field(default_factory=list)  # CutMix box area bounds instead of alpha
    mixup_switch_prob: float = 0.5  # with both on: chance of CutMix instead of Mixup
    mixup_mode: str = "batch"  # "batch", "pair" or "elem" (timm's Mixup)


@dataclass
class TrainConfig:
    """The optimisation recipe."""

    epochs: int = 30
    batch_size: int = 64  # per process
    lr: float = 1e-3
    lr_base_batch: int = 0  # >0: lr is scaled by global_batch / lr_base_batch
    min_lr: float = 1e-5
    warmup_lr: float = 1e-6
    warmup_epochs: int = 2
    sched: str = "cosine"
    optimizer: str = "adamw"
    momentum: float = 0.9
    weight_decay: float = 0.05
    clip_grad: float = 0.0  # 0 = no clipping
    accum_steps: int = 1
    ema: bool = False
    ema_decay: float = 0.9998
    amp: str = "off"
    compile: bool = False
    channels_last: bool = False
    sync_bn: bool = False
    resume: str = ""  # checkpoint to continue from; "" = auto-resume from output_dir
    auto_resume: bool = True
    grad_checkpointing: bool = False  # recompute block activations in backward (less memory)
    save_every_steps: int = 0  # >0: also a resumable checkpoint.pth every N optimizer updates
    layer_decay: float = 0.0  # >0: layer-wise lr decay (timm's --layer-decay), e.g. 0.75
    sched_on_epochs: bool = False  # the lr changes once per epoch (official CvT) instead of every update
    sched_args: dict[str, Any] = field(default_factory=dict)  # more of timm's create_scheduler_v2 arguments
    # parameters without weight decay; None: 1-d parameters and no_weight_decay() (timm);
    # a list: the official CvT rule, any of "bn", "ln", "gn", "bias", "dw" (depth-wise convs)
    no_weight_decay: list[str] | None = None
    amp_fallback: bool = False  # TRAIN.AMP fp16 without CUDA runs in fp32 with a note instead of failing
    print_freq: int = 0  # >0: a log line every N training steps
    save_all: bool = False  # also keep model_{epoch}.pth for every epoch
    detect_anomaly: bool = False  # torch.autograd anomaly detection (slow; names the op that made a NaN)
    # where scalars go (comma-separated): tensorboard (tb/), csv (summary.csv), wandb, mlflow
    # (optional extras ecvit[wandb], ecvit[mlflow]); metrics.json is always written
    loggers: str = "tensorboard,csv"
    log_every_steps: int = 50  # >0: train loss, lr and images/s to the loggers every N steps
    wandb_project: str = "ecvit"  # W&B project (WANDB_MODE=offline keeps the run on disk)
    mlflow_uri: str = ""  # MLflow tracking URI; empty: the file store <output-dir>/mlruns
    mlflow_experiment: str = "ecvit"  # MLflow experiment name


@dataclass
class TestConfig:
    """Evaluation settings (``validate`` / ``run.sh -t test``)."""

    batch_size: int = 128
    model_file: str = ""
    use_ema: bool | None = None  # None: the EMA weights when the checkpoint has them
    img_size: int | None = None  # evaluation size; None: DATA.IMG_SIZE
    valid_labels: str = ""  # file of output indices (one per line): evaluate on those logits only
    # validate's test-time augmentation: "flip" averages the softmax of each image and its
    # mirror; "five-crop" of the corner and center crops of the img_size / crop_pct resize;
    # "ten-crop" of those five and their mirrors
    tta: str = "none"


@dataclass
class CudnnConfig:
    """cuDNN switches, applied on CUDA devices only; None leaves PyTorch's setting."""

    benchmark: bool | None = None
    deterministic: bool | None = None
    enabled: bool | None = None


@dataclass
class OfficialConfig:
    """Where a config translated from a microsoft/CvT experiment file came from (filled by the
    translation, :mod:`ecvit.io.official_cvt`; informative only)."""

    file: str = ""
    no_effect: list[str] = field(default_factory=list)  # official keys the official code ignores too
    num_classes: int = 0  # the file's MODEL.NUM_CLASSES (the head follows the dataset)


@dataclass
class Config:
    """Everything one run needs; ``to_dict`` is what gets saved beside the outputs."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    test: TestConfig = field(default_factory=TestConfig)
    cudnn: CudnnConfig = field(default_factory=CudnnConfig)
    official: OfficialConfig = field(default_factory=OfficialConfig)
    output_dir: str = ""  # "" = a new folder per training run, output/train/<date>-<model>-<size>
    seed: int = 0
    device: str = ""  # "" = cuda when available, else cpu

    def to_dict(self) -> dict[str, Any]:
        """Upper-case nested dict, the same layout a YAML experiment uses."""
        return _to_upper_dict(self)


# ----------------------------------------------------------------------------- loading


# A config file is small: an alias bomb ("billion laughs") is refused before it expands.
MAX_YAML_ALIASES = 100
MAX_YAML_NODES = 100_000


class _ConfigLoader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false are booleans, so ``TRAIN.AMP off`` stays a string.

    Bounded and strict: more than :data:`MAX_YAML_ALIASES` aliases or a document that would
    expand to more than :data:`MAX_YAML_NODES` nodes is refused at once, and a key given
    twice in one mapping is an error naming it (instead of the last one silently winning).
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.alias_count = getattr(self, "alias_count", 0) + 1
            if self.alias_count > MAX_YAML_ALIASES:
                raise yaml.YAMLError(f"more than {MAX_YAML_ALIASES} aliases (*name): refused "
                                     "as a possible alias bomb")
        return super().compose_node(parent, index)

    def compose_document(self) -> Any:
        node = super().compose_document()
        if _expanded_size(node, {}) > MAX_YAML_NODES:
            raise yaml.YAMLError(f"the document expands to more than {MAX_YAML_NODES} values "
                                 "through its aliases: refused as an alias bomb")
        return node

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[str] = set()
        for key_node, _ in node.value if isinstance(node, yaml.MappingNode) else ():
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise yaml.YAMLError(f"duplicate key {key_node.value!r} (line "
                                         f"{key_node.start_mark.line + 1}): each key may appear once")
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: Any, memo: dict[int, int]) -> int:
    """Values the node stands for once every alias is expanded (shared nodes counted once
    per use), computed in time linear in the composed document."""
    key = id(node)
    if key not in memo:
        memo[key] = 1  # a recursive alias counts once (the constructor handles recursion)
        children = node.value if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)) else ()
        total = 1
        for child in children:
            parts = child if isinstance(child, tuple) else (child,)
            total += sum(_expanded_size(part, memo) for part in parts)
            if total > MAX_YAML_NODES:
                break
        memo[key] = total
    return memo[key]


_ConfigLoader.yaml_implicit_resolvers = {
    first: [r for r in resolvers if r[0] != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader subclass



# A reader of another project's YAML schema: ``(file data, path, overrides)`` -> None when
# the file is not in that schema, else ``(our mapping, overrides in that schema translated,
# the other overrides)`` (:func:`ecvit.io.official_cvt.translate_if_official`).
Dialect = Callable[[dict[str, Any], "str | Path", Sequence[str]],
                   "tuple[dict[str, Any], dict[str, Any], list[str]] | None"]


def load_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    base: Config | None = None,
    flags: Mapping[str, tuple[str, Any]] | None = None,
    dialect: Dialect | None = None,
) -> Config:
    """The one config builder: defaults (or ``base``) < YAML < flags < ``KEY VALUE`` overrides.

    ``flags`` maps a dotted key (``TRAIN.LR``) to ``(option, value)``, e.g. what the user
    typed as ``--lr 0.1``; an error about that key names the option. ``dialect`` reads
    files written in another schema (the command line passes the microsoft/CvT one). The
    result is checked (:func:`check_config`) but not resolved: ``None`` still means "the
    variant's own" until :func:`ecvit.engine.plan.resolve` turns it into a plan.
    """
    cfg = copy.deepcopy(base) if base is not None else Config()
    items = list(overrides)
    official_overrides: dict[str, Any] = {}
    if path:
        data = read_yaml(path)
        translated = dialect(data, path, items) if dialect is not None else None
        if translated is not None:  # e.g. a microsoft/CvT experiment file, as published
            data, official_overrides, items = translated
            cfg.model.args = {}  # the file's MODEL.SPEC is the whole model description
        merge_dict(cfg, data, source=str(path))
    given = dict(flags or {})
    for key, (option, value) in given.items():
        merge_dict(cfg, nested_from_key(key, value), source=option)
    if official_overrides:
        if "ARGS" in official_overrides.get("MODEL", {}):
            cfg.model.args = {}
        merge_dict(cfg, official_overrides, source="override")
    for key in items[::2]:
        if str(key).startswith("-"):
            raise UsageError(f"flags go before the KEY VALUE overrides; found {key!r} where a "
                             "KEY was expected")
        given.pop(str(key).upper(), None)  # an override, not the flag, set this key last
    apply_overrides(cfg, items)
    try:
        check_config(cfg)
    except UsageError as exc:
        message = str(exc)
        key = next((k for k in given if message.startswith(k)), None)
        if key:  # name the flag the user typed, not only the key
            raise UsageError(f"{given[key][0]}: {message}") from None
        raise
    return cfg


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, or raise a UsageError naming the file."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"config file not found: {p}")
    try:
        data = _load_yaml(p.read_text())
    except (UnicodeDecodeError, OSError) as exc:
        raise UsageError(f"{p}: cannot read as a text file ({exc})") from None
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        raise UsageError(f"{p}: not valid YAML ({exc})".replace("\n", " ")) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{p}: expected a mapping of sections at the top level")
    return data


def config_from_dict(data: dict[str, Any], source: str = "config") -> Config:
    """Rebuild a Config from ``to_dict`` output (e.g. the one saved in a checkpoint)."""
    cfg = Config()
    merge_dict(cfg, data, source=source)
    return cfg


def merge_dict(obj: Any, data: dict[str, Any], source: str, prefix: str = "") -> None:
    """Merge an upper- or lower-case nested mapping into a dataclass, checking every key."""
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in data.items():
        dotted = f"{prefix}{str(key).upper()}"
        name = str(key).lower()
        if name not in names:
            hint = _suggest(name, names, prefix)
            if prefix == "MODEL." and not hint:
                hint = f" (a model's own constructor arguments go in MODEL.ARGS: MODEL.ARGS.{name.upper()})"
            raise UsageError(f"{source}: unknown key {dotted}{hint}")
        current = getattr(obj, name)
        if isinstance(current, dict) and isinstance(value, dict):  # MODEL.ARGS: merged, keys lower-case
            current.update({str(k).lower(): v for k, v in value.items()})
        elif dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise UsageError(f"{source}: {dotted} must be a section (mapping), got {_short(value)}")
            merge_dict(current, value, source, prefix=f"{dotted}.")
        else:
            setattr(obj, name, coerce(value, hints[name], dotted, source))


def get_key(cfg: Config, key: str) -> Any:
    """The value of an upper-case dotted key such as ``DATA.IMG_SIZE``."""
    obj: Any = cfg
    for part in key.lower().split("."):
        obj = getattr(obj, part)
    return obj


def nested_from_key(key: str, value: Any) -> dict[str, Any]:
    """``"TRAIN.LR", 0.1`` -> ``{"TRAIN": {"LR": 0.1}}``: a dotted key as the mapping ``merge_dict`` takes."""
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def apply_overrides(cfg: Config, overrides: Sequence[str]) -> None:
    """Apply trailing ``KEY VALUE`` pairs, e.g. ``TRAIN.LR 0.1 MODEL.NAME cvt_13``."""
    items = list(overrides)
    if len(items) % 2:
        raise UsageError(f"overrides come in KEY VALUE pairs; {items[-1]!r} has no value")
    for key, text in zip(items[::2], items[1::2]):
        try:
            value = _load_yaml(text) if text != "" else ""
        except (yaml.YAMLError, ValueError, RecursionError):  # too long an int, too deep
            value = text
        merge_dict(cfg, nested_from_key(key, value), source="override")


def _yaml_scalar(text: str) -> Any:
    """One list item as YAML reads it; text YAML cannot parse stays a string."""
    try:
        return _load_yaml(text)
    except (yaml.YAMLError, ValueError, RecursionError):
        return text


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def coerce(value: Any, tp: Any, key: str, source: str = "config") -> Any:
    """Return ``value`` as type ``tp`` or raise a UsageError naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        if len(args) > 1 and isinstance(value, (list, tuple)):  # float | list[float]: the list member
            args = [a for a in args if typing.get_origin(a) is list] + [a for a in args if typing.get_origin(a) is not list]
        return coerce(value, args[0], key, source)
    if tp is Any:
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
            value = [_yaml_scalar(v) for v in value]
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise UsageError(f"{source}: {key} must be a list, got {_short(value)}")
        return [coerce(v, item_tp, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UsageError(f"{source}: {key} must be a mapping, got {_short(value)}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off", "1", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise UsageError(f"{source}: {key} must be true or false, got {_short(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise UsageError(f"{source}: {key} must be an integer, got {_short(value)}")
    if tp is float:
        number = None
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            try:
                number = float(value)
            except (ValueError, OverflowError):
                pass
        if number is not None and math.isfinite(number):
            return number
        raise UsageError(f"{source}: {key} must be a finite number, got {_short(value)}")
    if tp is str:
        if value is None:
            return ""
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise UsageError(f"{source}: {key} must be a string, got {_short(value)}")
    raise TypeError(f"unsupported config type {tp} for {key}")


# -------------------------------------------------------------------------- validation


def check_config(cfg: Config) -> None:
    """Reject values no run could use, naming the key; model arguments are checked by the plan."""
    _check_bounds(cfg)
    _choice("TRAIN.AMP", cfg.train.amp, AMP_CHOICES)
    _choice("TRAIN.OPTIMIZER", cfg.train.optimizer, OPTIMIZER_CHOICES)
    _choice("TRAIN.SCHED", cfg.train.sched, SCHED_CHOICES)
    _choice("TEST.TTA", cfg.test.tta, TTA_CHOICES)
    check_loggers(cfg)
    _choice("DEVICE", cfg.device, DEVICE_CHOICES)
    _choice("DATA.INTERPOLATION", cfg.data.interpolation, INTERPOLATION_CHOICES)
    _choice("AUG.INTERPOLATION", cfg.aug.interpolation, INTERPOLATION_CHOICES)
    _choice("DATA.CROP_MODE", cfg.data.crop_mode, CROP_MODE_CHOICES)
    _choice("DATA.SAMPLER", cfg.data.sampler, SAMPLER_CHOICES)
    _choice("DATA.SPLIT", cfg.data.split, SPLIT_CHOICES)
    _choice("AUG.PIPELINE", cfg.aug.pipeline, PIPELINE_CHOICES)
    _choice("AUG.REMODE", cfg.aug.remode, ("pixel", "rand", "const"))
    _choice("AUG.MIXUP_MODE", cfg.aug.mixup_mode, ("batch", "pair", "elem"))
    for key, value in (
        ("DATA.IMG_SIZE", cfg.data.img_size),
        ("DATA.NUM_CLASSES", cfg.data.num_classes),
        ("DATA.TRAIN_SIZE", cfg.data.train_size),
        ("DATA.VAL_SIZE", cfg.data.val_size),
        ("TRAIN.EPOCHS", cfg.train.epochs),
        ("TRAIN.BATCH_SIZE", cfg.train.batch_size),
        ("TRAIN.ACCUM_STEPS", cfg.train.accum_steps),
        ("TEST.BATCH_SIZE", cfg.test.batch_size),
        ("TEST.IMG_SIZE", cfg.test.img_size),
        ("AUG.RECOUNT", cfg.aug.recount),
    ):
        if value is not None and value <= 0:
            raise UsageError(f"{key} must be positive, got {value}")
    for key, value in (
        ("TRAIN.LR", cfg.train.lr),
        ("TRAIN.WEIGHT_DECAY", cfg.train.weight_decay),
        ("TRAIN.WARMUP_EPOCHS", cfg.train.warmup_epochs),
        ("TRAIN.CLIP_GRAD", cfg.train.clip_grad),
        ("TRAIN.SAVE_EVERY_STEPS", cfg.train.save_every_steps),
        ("DATA.WORKERS", cfg.data.workers),
        ("TRAIN.PRINT_FREQ", cfg.train.print_freq),
    ):
        if value < 0:
            raise UsageError(f"{key} must not be negative, got {value}")
    if cfg.train.lr == 0:
        raise UsageError("TRAIN.LR must be positive, got 0")
    for key, value in (
        ("AUG.MIXUP_PROB", cfg.aug.mixup_prob),
        ("AUG.REPROB", cfg.aug.reprob),
        ("AUG.HFLIP", cfg.aug.hflip),
        ("AUG.LABEL_SMOOTHING", cfg.aug.label_smoothing),
        ("TRAIN.LAYER_DECAY", cfg.train.layer_decay),
        ("AUG.VFLIP", cfg.aug.vflip),
        ("AUG.GRAYSCALE", cfg.aug.grayscale),
        ("AUG.GAUSSIAN_BLUR", cfg.aug.gaussian_blur),
        ("AUG.MIXUP_SWITCH_PROB", cfg.aug.mixup_switch_prob),
        *(("MODEL.DROP_PATH_RATE", v) for v in _as_list(cfg.model.drop_path_rate)),
    ):
        if value is not None and not 0.0 <= value <= 1.0:
            raise UsageError(f"{key} must be in [0, 1], got {value}")
    if len(cfg.aug.ratio) != 2 or not 0 < cfg.aug.ratio[0] <= cfg.aug.ratio[1]:
        raise UsageError(f"AUG.RATIO must be two numbers 0 < lo <= hi, got {cfg.aug.ratio}")
    if cfg.aug.jitter and (len(cfg.aug.jitter) != 5 or min(cfg.aug.jitter) < 0):
        raise UsageError("AUG.JITTER must be five non-negative numbers (brightness, contrast, "
                         f"saturation, hue, probability), got {cfg.aug.jitter}")
    if cfg.aug.cutmix_minmax and (len(cfg.aug.cutmix_minmax) != 2
                                  or not 0 < cfg.aug.cutmix_minmax[0] <= cfg.aug.cutmix_minmax[1] <= 1):
        raise UsageError(f"AUG.CUTMIX_MINMAX must be two numbers 0 < lo <= hi <= 1, got {cfg.aug.cutmix_minmax}")
    bad = sorted(set(cfg.train.no_weight_decay or ()) - set(NO_WEIGHT_DECAY_CHOICES))
    if bad:
        raise UsageError(f"TRAIN.NO_WEIGHT_DECAY: unknown {bad[0]!r}; choose from "
                         f"{', '.join(NO_WEIGHT_DECAY_CHOICES)}")
    if cfg.aug.mixup < 0 or cfg.aug.cutmix < 0:
        raise UsageError("AUG.MIXUP and AUG.CUTMIX must not be negative")
    if cfg.data.in_chans not in (1, 3):
        raise UsageError(f"DATA.IN_CHANS must be 1 or 3, got {cfg.data.in_chans}")
    if not 0.0 < cfg.data.train_fraction <= 1.0:
        raise UsageError(f"DATA.TRAIN_FRACTION must be in (0, 1], got {cfg.data.train_fraction}")
    if cfg.data.crop_pct is not None and not 0.0 < cfg.data.crop_pct <= 1.0:
        raise UsageError(f"DATA.CROP_PCT must be in (0, 1], got {cfg.data.crop_pct}")
    if len(cfg.aug.scale) != 2 or not 0 < cfg.aug.scale[0] <= cfg.aug.scale[1] <= 1:
        raise UsageError(f"AUG.SCALE must be two numbers 0 < lo <= hi <= 1, got {cfg.aug.scale}")
    for key, stats in (("DATA.MEAN", cfg.data.mean), ("DATA.STD", cfg.data.std)):
        if stats and len(stats) not in (1, 3):
            raise UsageError(f"{key} must have 1 or 3 values, got {len(stats)}")
    if any(s <= 0 for s in cfg.data.std):
        raise UsageError(f"DATA.STD values must be positive, got {cfg.data.std}")


# Upper bounds far above any real run and far below what would exhaust memory or processes
# (a batch of 2**63, 3e9 classes, 2**31 workers); SEED is what NumPy's seeding accepts.
MAX_CLASSES = 100_000
MAX_IMG_SIZE = 4096
MAX_SAMPLES = 100_000_000
MAX_BATCH = 1 << 20
MAX_WORKERS = 256
MAX_EPOCHS = 1_000_000
MAX_SEED = 2**32 - 1


# TRAIN.LOGGERS: the experiment trackers a run can log to (ecvit.engine.trackers)
LOGGER_CHOICES = ("tensorboard", "csv", "wandb", "mlflow")
# the module each logger imports and the pip extra that installs it
LOGGER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "ecvit[wandb]"),
                   "mlflow": ("mlflow", "ecvit[mlflow]")}


def logger_names(cfg: Config) -> list[str]:
    """``TRAIN.LOGGERS`` as a list (comma-separated; empty entries dropped)."""
    return [name.strip() for name in cfg.train.loggers.split(",") if name.strip()]


def check_loggers(cfg: Config) -> None:
    """A UsageError naming ``TRAIN.LOGGERS`` for an unknown logger or a missing package."""
    if cfg.train.log_every_steps < 0:
        raise UsageError(f"TRAIN.LOG_EVERY_STEPS must be 0 (off) or positive, got {cfg.train.log_every_steps}")
    for name in logger_names(cfg):
        if name not in LOGGER_CHOICES:
            raise UsageError(f"TRAIN.LOGGERS: unknown logger {name!r}; choose from "
                             f"{', '.join(LOGGER_CHOICES)} (comma-separated)")
        module, extra = LOGGER_PACKAGES.get(name, (None, None))
        if module and importlib.util.find_spec(module) is None:
            raise UsageError(f"TRAIN.LOGGERS {name}: the {module} package is not installed; "
                             f"pip install '{extra}' (or drop {name} from TRAIN.LOGGERS)")


def _check_bounds(cfg: Config) -> None:
    for key, value, high in (
        ("DATA.IMG_SIZE", cfg.data.img_size, MAX_IMG_SIZE),
        ("DATA.NUM_CLASSES", cfg.data.num_classes, MAX_CLASSES),
        ("DATA.TRAIN_SIZE", cfg.data.train_size, MAX_SAMPLES),
        ("DATA.VAL_SIZE", cfg.data.val_size, MAX_SAMPLES),
        ("DATA.WORKERS", cfg.data.workers, MAX_WORKERS),
        ("TRAIN.EPOCHS", cfg.train.epochs, MAX_EPOCHS),
        ("TRAIN.BATCH_SIZE", cfg.train.batch_size, MAX_BATCH),
        ("TRAIN.ACCUM_STEPS", cfg.train.accum_steps, MAX_BATCH),
        ("TRAIN.SAVE_EVERY_STEPS", cfg.train.save_every_steps, 10**9),
        ("TEST.BATCH_SIZE", cfg.test.batch_size, MAX_BATCH),
        ("SEED", cfg.seed, MAX_SEED),
    ):
        if value is not None and value > high:
            raise UsageError(f"{key} must be at most {high}, got {value}")
    if not 0 <= cfg.seed <= MAX_SEED:
        raise UsageError(f"SEED must be in [0, {MAX_SEED}], got {cfg.seed}")


NO_WEIGHT_DECAY_CHOICES = ("bn", "ln", "gn", "bias", "dw")


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _choice(key: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        shown = ", ".join(repr(c) for c in choices)
        raise UsageError(f"{key} must be one of {shown}; got {value!r}")


def _suggest(name: str, names: set[str], prefix: str) -> str:
    import difflib

    close = difflib.get_close_matches(name, sorted(names), n=3, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean " + ", ".join(f"{prefix}{c.upper()}" for c in close) + "?)"


def _to_upper_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name.upper(): _to_upper_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list):
        return list(obj)
    if isinstance(obj, dict):
        return dict(obj)
    return obj


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the merged config as YAML (the run's record of what it did)."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


__all__ = [
    "Config",
    "ModelConfig",
    "DataConfig",
    "AugConfig",
    "TrainConfig",
    "TestConfig",
    "CudnnConfig",
    "OfficialConfig",
    "load_config",
    "Dialect",
    "AMP_CHOICES",
    "OPTIMIZER_CHOICES",
    "DEVICE_CHOICES",
    "DEVICES",
    "DEVICE_DEFAULT",
    "DATASETS",
    "EXPORT_FORMATS",
    "LOGGER_CHOICES",
    "LOGGER_PACKAGES",
    "logger_names",
    "check_loggers",
    "config_from_dict",
    "apply_overrides",
    "merge_dict",
    "save_config",
    "check_config",
    "get_key",
    "coerce",
]
