"""One registry for every family: ``create_model`` / ``list_models``, mirrored into timm.

Model entry points are registered with timm's ``register_model`` too, so after
``import ecvit`` the same names work in ``timm.create_model`` (features_only included).
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from timm.models import register_model as timm_register_model
from torch import nn

from ecvit.checkpoint import extract_state_dict, read_checkpoint
from ecvit.errors import CheckpointError, UsageError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    fn: Callable[..., nn.Module]
    paper: str


_MODELS: dict[str, ModelEntry] = {}


def register_model(paper: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register an entry point under its function name, here and in timm."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        timm_register_model(fn)
        _MODELS[fn.__name__] = ModelEntry(fn.__name__, fn, paper)
        return fn

    return wrap


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted; ``pattern`` is a shell wildcard like ``"cvt*"``."""
    names = sorted(_MODELS)
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return names


def model_entry(name: str) -> ModelEntry:
    """The entry for ``name``, or a UsageError suggesting the closest names."""
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(list_models())}"
        raise UsageError(f"unknown model {name!r}{hint}")
    return _MODELS[name]


# Arguments every family takes under its own config key, never through MODEL.ARGS.
GENERIC_ARGS = {"num_classes": "DATA.NUM_CLASSES (the dataset's classes)", "img_size": "DATA.IMG_SIZE",
                "drop_path_rate": "MODEL.DROP_PATH_RATE", "pretrained": "MODEL.PRETRAINED",
                "in_chans": "DATA.IN_CHANS"}


def model_arguments(name: str) -> dict[str, inspect.Parameter]:
    """The constructor arguments of ``name``'s family, read from its class signature.

    The variant is built once on the meta device (no memory, no compute) to find its class;
    the generic arguments (:data:`GENERIC_ARGS`) are left out: they have config keys of
    their own.
    """
    with torch.device("meta"):
        model = create_model(name)
    params = inspect.signature(type(model).__init__).parameters
    return {k: p for k, p in params.items()
            if k != "self" and k not in GENERIC_ARGS
            and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)}


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
    if name.startswith(("local-dir:", "hf-hub:")):  # a hub-style folder describes its own model
        from ecvit.hub import model_from_folder

        return model_from_folder(name, pretrained=kwargs.pop("pretrained", True))
    entry = model_entry(name)
    if img_size is not None:
        kwargs["img_size"] = img_size
    if drop_path_rate is not None:
        kwargs["drop_path_rate"] = drop_path_rate
    try:
        model = entry.fn(pretrained=False, num_classes=num_classes, **kwargs)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"cannot build {name}: {exc}") from None
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
    from ecvit.hub import is_folder_source, read_folder

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
        from ecvit.engine.builder import adopt_preprocessing
        from ecvit.engine.spec import CheckpointSpec

        spec = CheckpointSpec.from_checkpoint(ckpt, str(path))
        if spec is not None:
            adopt_preprocessing(model, spec)


def _classifier_keys(model: nn.Module, keys: dict[str, torch.Tensor]) -> set[str]:
    """The ``keys`` of the classifier named in the model's timm pretrained_cfg."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    heads = cfg.get("classifier", "head")
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    return {k for k in keys if any(k.startswith(h + ".") for h in heads)}


__all__ = ["register_model", "list_models", "create_model", "load_weights", "model_entry",
           "ModelEntry", "model_arguments", "GENERIC_ARGS"]
