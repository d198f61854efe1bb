"""Every weights source turned into a model, in one place.

- :func:`create_model`: a registered model, optionally with weights from ``checkpoint_path``
  (our checkpoints, plain state dicts, safetensors, official CvT ``.pth`` files,
  transformers-layout CvT weights, model folders); ``local-dir:DIR`` / ``hf-hub:ORG/NAME``
  as the name build the folder's own model. ``ecvit.create_model`` is this function.
- :func:`load_for_inference` / :func:`model_from_checkpoint`: the model a checkpoint's
  :class:`~ecvit.io.spec.CheckpointSpec` describes, weights loaded, eval mode (``validate``,
  ``predict``, ``export``, ``attention``).

A model rebuilt from a checkpoint carries the checkpoint's preprocessing in its timm
``pretrained_cfg`` (so ``resolve_data_config``, hub exports and ``local-dir:`` see the real
input size and statistics). Files are read with ``weights_only=True`` or as safetensors:
nothing in them runs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ecvit.errors import CheckpointError, UsageError
from ecvit.io.checkpoint import extract_state_dict, read_checkpoint
from ecvit.io.folders import CONFIG, SOURCES, is_folder_source, read_folder
from ecvit.io.spec import CheckpointSpec, choose_ema
from ecvit.models import registry


def create_model(
    name: str,
    num_classes: int = 1000,
    img_size: int | None = None,
    drop_path_rate: float | None = None,
    checkpoint_path: str | Path | None = None,
    finetune: bool = False,
    pretrained_layers: Sequence[str] = ("*",),
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model, optionally loading weights from ``checkpoint_path``.

    ``checkpoint_path`` accepts our training checkpoints, plain state dicts, safetensors,
    official CvT ``.pth`` files and transformers-layout CvT weights, and model folders
    (``ecvit export --format hf``, timm's, transformers' CvT): a folder path,
    ``local-dir:DIR`` or ``hf-hub:ORG/NAME`` (the local Hugging Face cache when offline).
    ``name`` itself may be ``local-dir:DIR`` / ``hf-hub:ORG/NAME``: the folder's model, class
    count and preprocessing, its weights loaded (``pretrained=False``: only built). With ``finetune=True``
    a classifier whose class count differs is left freshly initialised instead of failing.
    ``pretrained_layers`` (the official CvT PRETRAINED_LAYERS): the top-level modules
    (``stage0``, ``norm``, ``head`` ...) taken from the checkpoint; ``"*"`` takes all.
    """
    if name.startswith(SOURCES):  # a hub-style folder describes its own model
        return model_from_folder(name, pretrained=kwargs.pop("pretrained", True))
    model = registry.create_model(name, num_classes=num_classes, img_size=img_size,
                                  drop_path_rate=drop_path_rate, **kwargs)
    if checkpoint_path:
        load_weights(model, checkpoint_path, finetune=finetune, layers=pretrained_layers)
    return model


def load_weights(model: nn.Module, path: str | Path, finetune: bool = False,
                 layers: Sequence[str] = ("*",)) -> None:
    """Load weights safely into ``model``; mismatches raise a CheckpointError naming tensors.

    A checkpoint written by ``ecvit train`` also brings its preprocessing (input size,
    mean/std, interpolation, crop) into the model's ``pretrained_cfg``, unless ``finetune``
    starts a new task.
    """
    ckpt = read_folder(path) if is_folder_source(path) else read_checkpoint(path)
    state = extract_state_dict(ckpt)
    filter_fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if filter_fn is not None:
        state = filter_fn(state, model)
    own = model.state_dict()
    partial = "*" not in layers
    if partial:  # only the named top-level modules come from the file; the rest keep their init
        unknown = sorted(set(layers) - {k.split(".")[0] for k in own})
        if unknown:
            tops = sorted({k.split(".")[0] for k in own})
            raise UsageError(f"MODEL.PRETRAINED_LAYERS: {type(model).__name__} has no module "
                             f"{unknown[0]!r}; its top-level modules are {', '.join(tops)}")
        state = {k: v for k, v in state.items() if k.split(".")[0] in layers}
        own = {k: v for k, v in own.items() if k.split(".")[0] in layers}
    head_keys = _classifier_keys(model, own)
    if finetune:  # a head of another shape stays freshly initialised
        state = {k: v for k, v in state.items()
                 if not (k in head_keys and k in own and own[k].shape != v.shape)}
    missing = [k for k in own if k not in state and not (finetune and k in head_keys)]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                      for k in wrong[:5]]
            parts.append("shape mismatch " + "; ".join(shapes) + (" ..." if len(wrong) > 5 else ""))
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        hint = (" (use --finetune to start a new classifier)"
                if wrong and set(wrong) <= head_keys else "")
        raise CheckpointError(f"{path} does not fit {type(model).__name__}: " + "; ".join(parts) + hint)
    model.load_state_dict(state, strict=not (finetune or partial))
    if not finetune and not partial:
        spec = CheckpointSpec.from_checkpoint(ckpt, str(path))
        if spec is not None:
            adopt_preprocessing(model, spec)


def _classifier_keys(model: nn.Module, keys: dict[str, torch.Tensor]) -> set[str]:
    """The ``keys`` of the classifier named in the model's timm pretrained_cfg."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    heads = cfg.get("classifier", "head")
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    return {k for k in keys if any(k.startswith(h + ".") for h in heads)}


def model_from_folder(ref: str, pretrained: bool = True) -> nn.Module:
    """``create_model("local-dir:DIR" | "hf-hub:ORG/NAME")``: the model the folder describes,
    its weights loaded (``pretrained=False``: freshly initialised) and its preprocessing in
    ``pretrained_cfg``."""
    ckpt = read_folder(ref)
    if "model_name" not in ckpt:
        raise CheckpointError(f"{ref}: a transformers CvT folder names no ecvit model; load it "
                              "with create_model('cvt_13', checkpoint_path=...) (or the variant "
                              "it was trained as)")
    if pretrained:
        return model_from_checkpoint(ckpt, f"{ref}/{CONFIG}")[0]
    spec = CheckpointSpec.from_checkpoint(ckpt, f"{ref}/{CONFIG}")
    model = registry.create_model(spec.model_name, num_classes=spec.num_classes, img_size=spec.img_size,
                         **spec.model_args)
    adopt_preprocessing(model, spec)
    return model


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
    model = registry.create_model(spec.model_name, num_classes=spec.num_classes, img_size=spec.img_size,
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
            skeleton = registry.create_model(spec.model_name, num_classes=spec.num_classes,
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

__all__ = ["create_model", "load_weights", "model_from_folder", "load_for_inference", "model_from_checkpoint",
           "check_fits", "adopt_preprocessing"]
