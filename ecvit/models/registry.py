"""One registry for every family: ``create_model`` / ``list_models``, mirrored into timm.

Model entry points are registered with timm's ``register_model`` too, so after
``import ecvit`` the same names work in ``timm.create_model`` (features_only included).
This module only builds networks; weights (``checkpoint_path=``, ``local-dir:`` folders)
are loaded by :mod:`ecvit.io.weights`.

Names that timm's own zoo could be mistaken for (timm has ``vit_*``, ``cait_*``, ``swin_*``
models and a ``cait`` module) are registered with the prefix :data:`PREFIX`, in timm modules
of their own (:data:`TIMM_MODULES`): ``dws_vit_tiny``, ``dws_cait_xxs24_dw``,
``dws_swin_tiny_dw`` (the models of the depth-wise shortcut study, its baselines included).
Their old names (``vit_tiny`` ...) still resolve here, with a DeprecationWarning, so old
checkpoints and configs keep loading; timm knows only the new ones.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib.machinery
import inspect
import sys
import types
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from timm.models import get_pretrained_cfg
from timm.models import register_model as timm_register_model
from torch import nn

from ecvit.config import coerce
from ecvit.errors import UsageError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    fn: Callable[..., nn.Module]
    paper: str


_MODELS: dict[str, ModelEntry] = {}
_ALIASES: dict[str, str] = {}  # deprecated name -> registered name

PREFIX = "dws_"
# the source module of a family whose names need PREFIX -> its timm module name (no timm
# module has these names, so ``timm.list_models(module=...)`` lists only ours)
TIMM_MODULES = {"vit_dw": "dws_vit", "cait": "dws_cait", "swin_dw": "dws_swin"}


def register_model(paper: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register an entry point here and in timm, under its function name (with
    :data:`PREFIX` for the families in :data:`TIMM_MODULES`, the old name kept as an alias)."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        family = fn.__module__.rsplit(".", 1)[-1]
        if family in TIMM_MODULES:
            entry = _renamed_entry(fn, PREFIX + fn.__name__, TIMM_MODULES[family])
            _ALIASES[fn.__name__] = entry.__name__
        else:
            entry = fn
        timm_register_model(entry)
        _MODELS[entry.__name__] = ModelEntry(entry.__name__, entry, paper)
        return fn

    return wrap


def _renamed_entry(fn: Callable[..., nn.Module], name: str, module_name: str) -> Callable[..., nn.Module]:
    """``fn`` as the entry point ``name`` of the timm module ``module_name``: timm reads an
    entry point's name and module, and its default cfg from that module's ``default_cfgs``."""
    full = f"{__name__.rsplit('.', 1)[0]}.{module_name}"
    module = sys.modules.get(full)
    if module is None:
        module = types.ModuleType(full, f"timm's view of {fn.__module__}'s models (see ecvit.models.registry)")
        module.__spec__ = importlib.machinery.ModuleSpec(full, None)
        module.default_cfgs = {}  # type: ignore[attr-defined]
        sys.modules[full] = module
    own_cfgs = getattr(sys.modules[fn.__module__], "default_cfgs", {})
    if fn.__name__ in own_cfgs:
        module.default_cfgs[name] = own_cfgs[fn.__name__]  # type: ignore[attr-defined]

    def entry(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        if not kwargs.get("pretrained_cfg"):  # the family builds under its old variant name
            kwargs["pretrained_cfg"] = get_pretrained_cfg(name)
        return fn(pretrained=pretrained, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__module__, entry.__doc__, entry.__wrapped__ = full, fn.__doc__, fn  # type: ignore[attr-defined]
    setattr(module, name, entry)
    return entry


def resolve_name(name: str) -> str:
    """The registered name of ``name``: itself, or for a deprecated name the new one (with a
    DeprecationWarning naming it)."""
    if name in _ALIASES:
        warnings.warn(f"model name {name!r} is deprecated; use {_ALIASES[name]!r}",
                      DeprecationWarning, stacklevel=_outside_ecvit())
        return _ALIASES[name]
    return name


def _outside_ecvit() -> int:
    """The ``stacklevel`` of the first caller outside this package: a warning names user code."""
    package = str(Path(__file__).resolve().parent.parent)
    frame, level = sys._getframe(1), 1
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def is_registered(name: str) -> bool:
    """True for a registered name or a deprecated one that still resolves."""
    return name in _MODELS or name in _ALIASES


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted; ``pattern`` is a shell wildcard like ``"cvt*"``.

    A pattern that matches deprecated names (``"vit_tiny*"``) also lists their new names.
    """
    names = sorted(_MODELS)
    if pattern:
        matched = {n for n in names if fnmatch.fnmatch(n, pattern)}
        renamed = {_ALIASES[a] for a in _ALIASES if fnmatch.fnmatch(a, pattern)} - matched
        if renamed:
            warnings.warn(f"model pattern {pattern!r} matches deprecated names; their new names "
                          f"are {', '.join(sorted(renamed))}", DeprecationWarning, stacklevel=_outside_ecvit())
        names = sorted(matched | renamed)
    return names


def model_entry(name: str) -> ModelEntry:
    """The entry for ``name`` (deprecated names resolve), or a UsageError suggesting the closest."""
    name = resolve_name(name)
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(list_models())}"
        raise UsageError(f"unknown model {name!r}{hint}")
    return _MODELS[name]


# Arguments every family takes under its own config key, never through MODEL.ARGS.
GENERIC_ARGS = {"num_classes": "DATA.NUM_CLASSES (the dataset's classes)", "img_size": "DATA.IMG_SIZE",
                "drop_path_rate": "MODEL.DROP_PATH_RATE", "pretrained": "MODEL.PRETRAINED",
                "in_chans": "DATA.IN_CHANS"}


def model_class(name: str) -> type[nn.Module]:
    """The class ``name`` builds: its entry point's return annotation, or (an entry point
    without one) the class of the variant built on the meta device (no memory, no compute)."""
    fn = inspect.unwrap(model_entry(name).fn)
    ret = fn.__annotations__.get("return")
    cls = fn.__globals__.get(ret) if isinstance(ret, str) else ret
    if isinstance(cls, type) and issubclass(cls, nn.Module):
        return cls
    with torch.device("meta"):
        return type(create_model(name))


def default_cfg(name: str) -> dict[str, Any]:
    """The variant's timm ``pretrained_cfg`` (input size, mean/std, interpolation, crop) as
    registered, without building it; {} for an entry point that registered none."""
    cfg = get_pretrained_cfg(model_entry(name).name)
    return cfg.to_dict() if cfg is not None else {}


def model_arguments(name: str) -> dict[str, inspect.Parameter]:
    """The constructor arguments of ``name``'s family, read from its class signature; the
    generic arguments (:data:`GENERIC_ARGS`) are left out: they have config keys of their own.
    """
    params = inspect.signature(model_class(name).__init__).parameters
    return {k: p for k, p in params.items()
            if k != "self" and k not in GENERIC_ARGS
            and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)}


def create_model(
    name: str,
    num_classes: int = 1000,
    img_size: int | None = None,
    drop_path_rate: float | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model, freshly initialised (weights: :func:`ecvit.io.weights.create_model`).

    ``None`` values (image size, drop path) leave the variant's own defaults in place.
    """
    if "checkpoint_path" in kwargs:
        raise UsageError("ecvit.models.create_model builds networks only; load weights with "
                         "ecvit.create_model(name, checkpoint_path=...) (ecvit.io.weights)")
    entry = model_entry(name)
    if img_size is not None:
        kwargs["img_size"] = img_size
    if drop_path_rate is not None:
        kwargs["drop_path_rate"] = drop_path_rate
    try:
        return entry.fn(pretrained=False, num_classes=num_classes, **kwargs)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"cannot build {entry.name}: {exc}") from None


def check_model_args(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """MODEL.ARGS checked against ``name``'s constructor: known names, values of its types."""
    if not args:
        return {}
    params = model_arguments(name)
    known = ", ".join(params)
    out: dict[str, Any] = {}
    for key, value in args.items():
        if key in GENERIC_ARGS:
            raise UsageError(f"MODEL.ARGS.{key.upper()}: {key} is set by {GENERIC_ARGS[key]}, "
                             "not through MODEL.ARGS")
        if key not in params:
            raise UsageError(f"MODEL.ARGS: {name} takes no argument {key!r}; its arguments are: {known}")
        out[key] = _coerce_arg(value, params[key], f"MODEL.ARGS.{key.upper()}", name)
    return out


def _coerce_arg(value: Any, param: inspect.Parameter, key: str, model: str) -> Any:
    """A value given as text or a one-item list, brought to the parameter's annotated type."""
    hint = param.annotation if isinstance(param.annotation, str) else getattr(
        param.annotation, "__name__", str(param.annotation))
    first = hint.split("|")[0].strip()
    if isinstance(value, str) and ("Sequence" in first or "list" in first or "tuple" in first):
        value = [yaml.safe_load(v) for v in value.strip("[]()").split(",") if v.strip()]
    if first in ("int", "float", "bool") and isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]  # --num-heads 3 on a single-width model
    if first in ("int", "float", "bool"):
        if value is None and "None" in hint:
            return None
        return coerce(value, {"int": int, "float": float, "bool": bool}[first], key, model)
    if first.startswith("Literal["):
        choices = [c.strip().strip("'\"") for c in first[len("Literal["):-1].split(",")]
        if str(value) not in choices:
            raise UsageError(f"{key} must be one of {', '.join(choices)} for {model}, got {value!r}")
    return value


__all__ = ["register_model", "list_models", "create_model", "model_entry", "ModelEntry", "model_arguments",
           "model_class", "default_cfg",
           "check_model_args", "resolve_name", "is_registered", "GENERIC_ARGS", "PREFIX", "TIMM_MODULES"]
