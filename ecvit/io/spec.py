"""The typed description a checkpoint carries: written once by ``train``, read once here.

``validate``, ``predict``, ``export`` and resuming all start from :class:`CheckpointSpec`:
which model (registered name and constructor arguments), trained on what (dataset, root,
class names), with which preprocessing (input size, mean/std, interpolation, crop), and
which weights it holds (raw, plus EMA when training kept one). The fields are stored as
plain top-level keys, so ``weights_only`` loading and safetensors metadata both hold them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ecvit.config import CROP_MODE_CHOICES, INTERPOLATION_CHOICES, MAX_CLASSES, MAX_IMG_SIZE
from ecvit.errors import CheckpointError, UsageError
from ecvit.models.registry import check_model_args, is_registered, resolve_name

# Where the weights sit in a checkpoint written by ``train``.
RAW, EMA = "model", "model_ema"


@dataclass(frozen=True)
class CheckpointSpec:
    """Everything needed to rebuild, feed and name the outputs of a trained model."""

    model_name: str
    num_classes: int
    class_names: tuple[str, ...]
    img_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str
    crop_pct: float
    model_args: dict[str, Any] = field(default_factory=dict)
    dataset: str = ""  # "" when the file does not say (exported weights, older checkpoints)
    data_root: str = ""
    has_ema: bool = False
    crop_mode: str = "center"  # "squash": the whole image resized to img_size x img_size

    def to_meta(self) -> dict[str, Any]:
        """Plain keys and values (lists, not tuples): what a checkpoint or an export stores."""
        meta = asdict(self)
        for key in ("class_names", "mean", "std"):
            meta[key] = list(meta[key])
        return meta

    def pretrained_cfg(self) -> dict[str, Any]:
        """The preprocessing as timm's ``pretrained_cfg`` keys (``resolve_data_config`` reads these)."""
        return {
            "input_size": (3, self.img_size, self.img_size),
            "mean": tuple(self.mean),
            "std": tuple(self.std),
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
            "crop_mode": self.crop_mode,
            "num_classes": self.num_classes,
            "label_names": list(self.class_names),
        }

    def single_weights(self) -> CheckpointSpec:
        """The spec of a model holding one set of weights (raw or EMA, chosen): what an export stores."""
        return replace(self, has_ema=False)

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], source: str) -> CheckpointSpec | None:
        """The spec stored in ``ckpt``; None for plain weight files (no model description).

        Every field is checked for type and bounds before anything is built from it (a
        checkpoint is a file from anywhere): a crafted class count or image size cannot
        make the loader allocate terabytes, and ``model_args`` may only hold the family's
        own constructor arguments, so no path (``checkpoint_path``) is ever taken from it.
        """
        if "model_name" not in ckpt:
            return None
        if "num_classes" not in ckpt:
            raise CheckpointError(f"{source} names a model but not its class count (num_classes)")
        field_of = _FieldReader(ckpt, source)
        num_classes = field_of.integer("num_classes", 1, MAX_CLASSES)
        names = field_of.strings("class_names", num_classes)
        spec = cls(
            model_name=field_of.model_name(),
            num_classes=num_classes,
            class_names=names,
            img_size=field_of.integer("img_size", MIN_IMG_SIZE, MAX_IMG_SIZE, default=224),
            mean=field_of.stats("mean", (0.485, 0.456, 0.406)),
            std=field_of.stats("std", (0.229, 0.224, 0.225), positive=True),
            interpolation=field_of.choice("interpolation", INTERPOLATIONS, "bicubic"),
            crop_pct=field_of.fraction("crop_pct", 0.875),
            model_args=field_of.mapping("model_args"),
            dataset=field_of.text("dataset"),
            data_root=field_of.text("data_root"),
            has_ema=isinstance(ckpt.get(EMA), dict),
            crop_mode=field_of.choice("crop_mode", CROP_MODE_CHOICES, "center"),
        )
        return spec.checked_model_args(source)

    def checked_model_args(self, source: str) -> CheckpointSpec:
        """``model_args`` checked against the family's constructor, like MODEL.ARGS."""
        own = dict(self.model_args)
        in_chans = own.pop("in_chans", 3)  # written for one-channel runs (DATA.IN_CHANS 1)
        if in_chans not in (1, 3) or isinstance(in_chans, bool):
            raise CheckpointError(f"{source}: model_args: in_chans must be 1 or 3, got {in_chans!r}")
        try:
            args = check_model_args(self.model_name, own)
        except UsageError as exc:
            raise CheckpointError(f"{source}: model_args: {exc}") from None
        if in_chans != 3:
            args["in_chans"] = in_chans
        return replace(self, model_args=args)


# Bounds on what a checkpoint may describe: generous for real models (ImageNet-21k has
# 21,843 classes, CvT-W24 runs at 384 px), far below what would exhaust memory; the same
# upper bounds as the config's.
MIN_IMG_SIZE = 8
INTERPOLATIONS = tuple(c for c in INTERPOLATION_CHOICES if c)


class _FieldReader:
    """Typed, bounded reads of a checkpoint's metadata; errors name the file and the field."""

    def __init__(self, ckpt: dict[str, Any], source: str) -> None:
        self.ckpt, self.source = ckpt, source

    def _bad(self, key: str, want: str) -> CheckpointError:
        value = repr(self.ckpt.get(key))
        value = value if len(value) <= 40 else value[:37] + "..."
        return CheckpointError(f"{self.source}: unreadable model description: {key} must be "
                               f"{want}, got {value}")

    def _get(self, key: str, default: Any) -> Any:
        value = self.ckpt.get(key)
        return default if value is None or value == "" else value

    def model_name(self) -> str:
        name = self.ckpt.get("model_name")
        if not isinstance(name, str) or not is_registered(name):
            raise self._bad("model_name", "a registered model name (see `ecvit models`)")
        return resolve_name(name)  # a checkpoint from before a rename names the old one

    def integer(self, key: str, low: int, high: int, default: int | None = None) -> int:
        value = self._get(key, default)
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self._bad(key, f"an integer in [{low}, {high}]")
        return value

    def strings(self, key: str, count: int) -> tuple[str, ...]:
        value = self._get(key, None)
        if value is None:
            return tuple(str(i) for i in range(count))
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value) \
                or len(value) != count:
            raise self._bad(key, f"a list of {count} strings (one per class, num_classes {count})")
        return tuple(value)

    def stats(self, key: str, default: tuple[float, ...], positive: bool = False) -> tuple[float, ...]:
        value = self._get(key, default)
        ok = isinstance(value, (list, tuple)) and len(value) in (1, 3) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            and abs(v) <= 1e6 and (v > 0 or not positive) for v in value)
        if not ok:
            raise self._bad(key, f"1 or 3 finite{' positive' if positive else ''} numbers")
        return tuple(float(v) for v in value)

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self._get(key, default)
        if value not in choices:
            raise self._bad(key, f"one of {', '.join(choices)}")
        return value

    def fraction(self, key: str, default: float) -> float:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise self._bad(key, "a number in (0, 1]")
        return float(value)

    def mapping(self, key: str) -> dict[str, Any]:
        value = self._get(key, {})
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise self._bad(key, "a mapping of argument names to values")
        return dict(value)

    def text(self, key: str) -> str:
        value = self._get(key, "")
        if not isinstance(value, str):
            raise self._bad(key, "a string")
        return value


def choose_ema(spec: CheckpointSpec, use_ema: bool | None, source: str) -> bool:
    """``--use-ema`` resolved: the EMA weights by default when the checkpoint has them."""
    if use_ema is None:
        return spec.has_ema
    if use_ema and not spec.has_ema:
        raise UsageError(f"--use-ema: {source} holds no EMA weights (train with TRAIN.EMA true); "
                         "drop the flag to use its weights")
    return use_ema


__all__ = ["CheckpointSpec", "choose_ema", "RAW", "EMA", "MAX_CLASSES", "MAX_IMG_SIZE"]
