"""The typed description a checkpoint carries: written once by ``train``, read once here.

``validate``, ``predict``, ``export`` and resuming all start from :class:`CheckpointSpec`:
which model (registered name and constructor arguments), trained on what (dataset, root,
class names), with which preprocessing (input size, mean/std, interpolation, crop), and
which weights it holds (raw, plus EMA when training kept one). The fields are stored as
plain top-level keys, so ``weights_only`` loading and safetensors metadata both hold them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ecvit.errors import CheckpointError, UsageError

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
            "num_classes": self.num_classes,
            "label_names": list(self.class_names),
        }

    def single_weights(self) -> CheckpointSpec:
        """The spec of a model holding one set of weights (raw or EMA, chosen): what an export stores."""
        return replace(self, has_ema=False)

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], source: str) -> CheckpointSpec | None:
        """The spec stored in ``ckpt``; None for plain weight files (no model description)."""
        if "model_name" not in ckpt:
            return None
        if "num_classes" not in ckpt:
            raise CheckpointError(f"{source} names a model but not its class count (num_classes)")
        try:
            num_classes = int(ckpt["num_classes"])
            return cls(
                model_name=str(ckpt["model_name"]),
                num_classes=num_classes,
                class_names=tuple(str(c) for c in ckpt.get("class_names") or range(num_classes)),
                img_size=int(ckpt.get("img_size") or 224),
                mean=tuple(float(v) for v in ckpt.get("mean") or (0.485, 0.456, 0.406)),
                std=tuple(float(v) for v in ckpt.get("std") or (0.229, 0.224, 0.225)),
                interpolation=str(ckpt.get("interpolation") or "bicubic"),
                crop_pct=float(ckpt.get("crop_pct") or 0.875),
                model_args=dict(ckpt.get("model_args") or {}),
                dataset=str(ckpt.get("dataset") or ""),
                data_root=str(ckpt.get("data_root") or ""),
                has_ema=isinstance(ckpt.get(EMA), dict),
            )
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{source}: unreadable model description ({exc})") from None


def choose_ema(spec: CheckpointSpec, use_ema: bool | None, source: str) -> bool:
    """``--use-ema`` resolved: the EMA weights by default when the checkpoint has them."""
    if use_ema is None:
        return spec.has_ema
    if use_ema and not spec.has_ema:
        raise UsageError(f"--use-ema: {source} holds no EMA weights (train with TRAIN.EMA true); "
                         "drop the flag to use its weights")
    return use_ema


__all__ = ["CheckpointSpec", "choose_ema", "RAW", "EMA"]
