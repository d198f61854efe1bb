"""Build a model from a config, and rebuild one from a checkpoint's :class:`CheckpointSpec`.

Every front end goes through these functions, so a checkpoint written by ``train`` always
carries what ``load_for_inference`` needs, and a model rebuilt from it carries the
checkpoint's preprocessing in its timm ``pretrained_cfg`` (so ``resolve_data_config``,
``save_for_hf`` and ``local-dir:`` see the real input size and statistics).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ecvit.checkpoint import extract_state_dict, read_checkpoint
from ecvit.config import Config
from ecvit.engine.spec import CheckpointSpec, choose_ema
from ecvit.errors import CheckpointError, UsageError
from ecvit.models.registry import create_model


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


def load_for_inference(path: str, use_ema: bool | None = None) -> tuple[nn.Module, CheckpointSpec]:
    """Rebuild the model a checkpoint describes, load its weights, eval mode.

    ``use_ema`` (``--use-ema``): None picks the EMA weights when the checkpoint has them;
    the returned spec describes the one set of weights loaded. The file is read with ``weights_only=True`` (or as safetensors): nothing in it runs.
    """
    return model_from_checkpoint(read_checkpoint(path), str(path), use_ema)


def model_from_checkpoint(ckpt: dict[str, Any], source: str,
                          use_ema: bool | None = None) -> tuple[nn.Module, CheckpointSpec]:
    """:func:`load_for_inference` for a checkpoint dict already read from ``source``."""
    spec = CheckpointSpec.from_checkpoint(ckpt, source)
    if spec is None:
        raise CheckpointError(
            f"{source} carries no model description (model_name, num_classes missing); "
            "pass a checkpoint written by `ecvit train` or build the model with "
            "create_model(name, checkpoint_path=...)"
        )
    ema = choose_ema(spec, use_ema, source)
    state = extract_state_dict(ckpt, prefer_ema=ema)
    check_fits(spec, state, source)
    model = create_model(spec.model_name, num_classes=spec.num_classes, img_size=spec.img_size,
                         **spec.model_args)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(line.strip() for line in str(exc).splitlines()[1:4])
        raise CheckpointError(f"{source} does not fit {spec.model_name}: {detail}") from None
    adopt_preprocessing(model, spec)
    model.eval()
    return model, spec.single_weights()


def check_fits(spec: CheckpointSpec, state: dict[str, torch.Tensor], source: str) -> None:
    """Build the described model on the meta device and compare its tensor shapes with the
    file's, before any memory is allocated: a description that does not match its own
    weights (a crafted class count, widths) is refused here, naming the tensors."""
    try:
        with torch.device("meta"):
            skeleton = create_model(spec.model_name, num_classes=spec.num_classes,
                                    img_size=spec.img_size, **spec.model_args)
    except Exception as exc:  # the constructor refused the described arguments
        raise CheckpointError(f"{source}: its model description does not build "
                              f"{spec.model_name}: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None
    expected = skeleton.state_dict()
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    missing = [k for k in expected if k not in state]
    if wrong or missing:
        detail = "; ".join(wrong[:3]) if wrong else f"missing {', '.join(missing[:3])}"
        raise CheckpointError(f"{source} does not fit {spec.model_name} as its metadata describes "
                              f"it (shape in file vs described: {detail})")


def adopt_preprocessing(model: nn.Module, spec: CheckpointSpec) -> None:
    """Record the checkpoint's preprocessing in the model's timm ``pretrained_cfg``."""
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    cfg.update(spec.pretrained_cfg())
    model.pretrained_cfg = cfg
    if hasattr(model, "default_cfg"):
        model.default_cfg = cfg


__all__ = ["build_model", "model_kwargs", "training_spec", "load_for_inference",
           "model_from_checkpoint", "adopt_preprocessing"]
