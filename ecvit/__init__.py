"""ecvit: convolutional vision transformers (ECViT, CvT, ViT with depth-wise shortcuts).

The public API: :func:`create_model` (``checkpoint_path=``, ``local-dir:DIR``,
``hf-hub:ORG/NAME``), :func:`list_models`, :func:`load_checkpoint`, :func:`fuse` (the inference form). After ``import ecvit``
the models are in timm's registry too (``timm.create_model("cvt_13")``,
``timm.create_model("local-dir:DIR")``).

Layers, imports pointing down only (:data:`ecvit.layering.LAYERS`, enforced by
``tests/test_layering.py``)::

    command line  ecvit.cli, python -m ecvit, main.py; this facade. Sets process-wide policy
                  (the OpenMP wait policy, ecvit.openmp) before torch loads; imports lazily
        tools     predict (+ onnx_predict, results_file), export, bench, attention_map,
                  detection: the inference commands, on top of the engine's helpers
        engine    plan (the preflight), trainer, evaluate, validate_checkpoint, state (resume),
                  trackers, distributed, loaders, optim, precision, outputs
        io        checkpoint files, the checkpoint spec, hub folders (folders: read, hub:
                  written), microsoft/CvT experiment files, and weights: the one module that
                  turns any weights source into a model
        models    the networks and their registration (here and in timm), flops, model_table
        data      datasets, sources, transforms, input file lists (data and models are
                  siblings: neither imports the other)
        config    the typed schema (every choice list), YAML loading, overrides; a foreign
                  YAML schema is read through a dialect the command line passes in
        base      errors, openmp, version

``import ecvit`` changes nothing in the process's environment and imports no torch: the
names above load on first use, and the models are registered in timm as soon as timm is
imported (or right away when it already is).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

from ecvit.version import __version__

# public name -> (module, attribute), imported on first use (PEP 562)
_LAZY = {"create_model": ("ecvit.io.weights", "create_model"),
         "fuse": ("ecvit.models.speed", "fuse"),
         "list_models": ("ecvit.models.registry", "list_models")}


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only`` pickle or safetensors): nothing in it runs."""
    from ecvit.io.checkpoint import read_checkpoint

    return read_checkpoint(path)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")  # ecvit.models, ecvit.io ... on first use
    raise AttributeError(f"module 'ecvit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


class _RegisterWithTimm(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds timm's own spec on its first import and, once timm has run, imports
    :mod:`ecvit.models` (which registers every family in timm); then steps aside."""

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != "timm":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("timm")
        if spec is None or spec.loader is None:
            return spec
        self.loader, spec.loader = spec.loader, self
        return spec

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = module.__spec__.loader = self.loader  # timm keeps its own loader
        self.loader.exec_module(module)
        importlib.import_module("ecvit.models")


if "timm" in sys.modules:  # timm is loaded already: register now
    importlib.import_module("ecvit.models")
elif not any(isinstance(f, _RegisterWithTimm) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWithTimm())

__all__ = ["__version__", "create_model", "fuse", "list_models", "load_checkpoint"]
