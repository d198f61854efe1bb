"""Build the model a config describes, and the spec of the checkpoints its run writes.

A checkpoint written by ``train`` carries (:func:`training_spec`) what
:func:`ecvit.io.weights.load_for_inference` needs to rebuild the model.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ecvit.config import Config
from ecvit.errors import UsageError
from ecvit.io.spec import CheckpointSpec
from ecvit.io.weights import create_model


def model_kwargs(cfg: Config) -> dict[str, Any]:
    """The family's own constructor arguments (MODEL.ARGS), plus ``in_chans`` for one-channel
    data (DATA.IN_CHANS 1), so a checkpoint rebuilds the model it was trained as."""
    kwargs = dict(cfg.model.args)
    if cfg.data.in_chans != 3:
        kwargs["in_chans"] = cfg.data.in_chans
    return kwargs


def build_model(cfg: Config, num_classes: int) -> nn.Module:
    """The model named by MODEL.NAME, sized for DATA.IMG_SIZE, optionally from MODEL.PRETRAINED.

    ``None`` values (drop path, image size) leave the variant's own defaults in place.
    """
    model = create_model(
        cfg.model.name,
        num_classes=num_classes,
        img_size=cfg.data.img_size,
        drop_path_rate=cfg.model.drop_path_rate,
        checkpoint_path=cfg.model.pretrained or None,
        finetune=cfg.model.finetune,
        pretrained_layers=cfg.model.pretrained_layers,
        **model_kwargs(cfg),
    )
    freeze_layers(model, cfg.model.frozen_layers)
    return model


def freeze_layers(model: nn.Module, names: list[str]) -> None:
    """MODEL.FROZEN_LAYERS: the named top-level modules (``stage0``, ...) are not trained."""
    children = dict(model.named_children())
    for name in names:
        if name not in children:
            raise UsageError(f"MODEL.FROZEN_LAYERS: {type(model).__name__} has no top-level module "
                             f"{name!r}; it has {', '.join(children)}")
        children[name].requires_grad_(False)


def training_spec(cfg: Config, class_names: list[str], mean: list[float], std: list[float],
                  crop_pct: float, has_ema: bool) -> CheckpointSpec:
    """The spec of a checkpoint written by a run of the resolved config ``cfg``."""
    return CheckpointSpec(
        model_name=cfg.model.name,
        num_classes=len(class_names),
        class_names=tuple(str(c) for c in class_names),
        img_size=int(cfg.test.img_size or cfg.data.img_size),  # the evaluation size
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        interpolation=cfg.data.interpolation,
        crop_pct=float(crop_pct),
        crop_mode=cfg.data.crop_mode,
        model_args=model_kwargs(cfg),
        dataset=cfg.data.dataset,
        data_root=cfg.data.root,
        has_ema=has_ema,
    )


__all__ = ["build_model", "model_kwargs", "freeze_layers", "training_spec"]
