"""ecvit: convolutional vision transformers (ECViT, CvT, ViT with depth-wise shortcuts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__version__ = "0.1.0"

from ecvit.checkpoint import read_checkpoint
from ecvit.models import create_model, list_models


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only`` pickle or safetensors): nothing in it runs."""
    return read_checkpoint(path)


__all__ = ["__version__", "create_model", "list_models", "load_checkpoint"]
