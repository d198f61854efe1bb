"""ecvit: convolutional vision transformers (ECViT, CvT, ViT with depth-wise shortcuts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__version__ = "0.1.0"

from ecvit import openmp as _openmp

_openmp.apply_default()  # before torch loads: OpenMP reads its wait policy once (see ecvit.openmp)

from ecvit.checkpoint import read_checkpoint  # noqa: E402  (after the OpenMP setting)
from ecvit.models import create_model, fuse, list_models  # noqa: E402


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only`` pickle or safetensors): nothing in it runs."""
    return read_checkpoint(path)


__all__ = ["__version__", "create_model", "fuse", "list_models", "load_checkpoint"]
