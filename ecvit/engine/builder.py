"""Build a model from the config, and rebuild one from a checkpoint's own metadata.

Every front end goes through these two functions, so a checkpoint written by ``train``
always carries what ``load_for_inference`` needs: the registered name, the constructor
arguments, the class names and the preprocessing (size, mean/std, interpolation, crop).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ecvit.checkpoint import extract_state_dict, read_checkpoint
from ecvit.config import Config
from ecvit.errors import CheckpointError
from ecvit.models.registry import create_model

# Checkpoint keys that describe the model and its preprocessing (see ``checkpoint_meta``).
META_KEYS = ("model_name", "model_args", "num_classes", "class_names", "img_size", "mean",
             "std", "interpolation", "crop_pct")


def model_kwargs(cfg: Config) -> dict[str, Any]:
    """Constructor kwargs from the non-empty per-stage MODEL.* lists plus MODEL.ARGS.

    Empty lists (and ``BLOCK_SIZE 0``) keep the variant's own defaults; MODEL.ARGS passes
    any other constructor argument through unchanged and wins over the lists.
    """
    m = cfg.model
    kwargs: dict[str, Any] = {}
    for key in ("embed_dims", "depths", "num_heads", "mlp_ratios"):
        values = getattr(m, key)
        if values:
            kwargs[key] = list(values)
    if m.block_size:
        kwargs["block_size"] = m.block_size
    kwargs.update(m.args)
    return kwargs


def build_model(cfg: Config, num_classes: int) -> nn.Module:
    """The model named by MODEL.NAME, sized for DATA.IMG_SIZE, optionally from MODEL.PRETRAINED."""
    return create_model(
        cfg.model.name,
        num_classes=num_classes,
        img_size=cfg.data.img_size,
        drop_path_rate=cfg.model.drop_path_rate,
        checkpoint_path=cfg.model.pretrained or None,
        finetune=cfg.model.finetune,
        **model_kwargs(cfg),
    )


def checkpoint_meta(cfg: Config, num_classes: int, class_names: list[str],
                    mean: list[float], std: list[float], crop_pct: float) -> dict[str, Any]:
    """The metadata every checkpoint carries so the model can be rebuilt without the config."""
    return {
        "model_name": cfg.model.name,
        "model_args": model_kwargs(cfg),
        "num_classes": int(num_classes),
        "class_names": [str(c) for c in class_names],
        "img_size": int(cfg.data.img_size),
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "interpolation": cfg.data.interpolation,
        "crop_pct": float(crop_pct),
    }


def load_for_inference(path: str) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint describes, load its (non-EMA) weights, eval mode.

    The file is read with ``weights_only=True`` (or as safetensors): nothing in it runs.
    Returns ``(model, meta)`` with ``meta`` holding the keys in :data:`META_KEYS`.
    """
    return model_from_checkpoint(read_checkpoint(path), str(path))


def model_from_checkpoint(ckpt: dict[str, Any], source: str) -> tuple[nn.Module, dict[str, Any]]:
    """:func:`load_for_inference` for a checkpoint dict already read from ``source``."""
    missing = [k for k in ("model_name", "num_classes") if k not in ckpt]
    if missing:
        raise CheckpointError(
            f"{source} carries no model description ({', '.join(missing)} missing); "
            "pass a checkpoint written by `ecvit train` or build the model with "
            "create_model(name, checkpoint_path=...)"
        )
    num_classes = int(ckpt["num_classes"])
    meta = {
        "model_name": str(ckpt["model_name"]),
        "model_args": dict(ckpt.get("model_args") or {}),
        "num_classes": num_classes,
        "class_names": [str(c) for c in ckpt.get("class_names") or range(num_classes)],
        "img_size": int(ckpt.get("img_size") or 224),
        "mean": [float(v) for v in ckpt.get("mean") or (0.485, 0.456, 0.406)],
        "std": [float(v) for v in ckpt.get("std") or (0.229, 0.224, 0.225)],
        "interpolation": str(ckpt.get("interpolation") or "bicubic"),
        "crop_pct": float(ckpt.get("crop_pct") or 0.875),
    }
    model = create_model(meta["model_name"], num_classes=num_classes, img_size=meta["img_size"],
                         **meta["model_args"])
    try:
        model.load_state_dict(extract_state_dict(ckpt), strict=True)
    except RuntimeError as exc:
        detail = " ".join(line.strip() for line in str(exc).splitlines()[1:4])
        raise CheckpointError(f"{source} does not fit {meta['model_name']}: {detail}") from None
    model.eval()
    return model, meta


__all__ = ["build_model", "model_kwargs", "load_for_inference", "model_from_checkpoint", "checkpoint_meta", "META_KEYS"]
