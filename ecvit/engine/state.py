"""What a checkpoint holds beyond the weights, so a resumed run continues bit for bit.

Everything goes through ``weights_only=True`` loading, so RNG states are stored as
tensors (torch/CUDA) or plain lists and ints (Python ``random``, NumPy) — never as NumPy
arrays or other objects a safe unpickler would refuse.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ecvit.checkpoint import read_checkpoint
from ecvit.errors import CheckpointError


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) from one number."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every global RNG the training loop draws from, in a ``weights_only``-safe form."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [int(version), [int(v) for v in internal], gauss],
        "numpy": [str(name), [int(v) for v in keys], int(pos), int(has_gauss), float(cached)],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = list(state["cuda"])
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def find_resume_checkpoint(resume: str, auto_resume: bool, output_dir: str | Path) -> Path | None:
    """TRAIN.RESUME if given (it must exist), else ``output_dir/checkpoint.pth`` when auto-resuming."""
    if resume:
        path = Path(resume)
        if not path.is_file():
            raise CheckpointError(f"TRAIN.RESUME: checkpoint not found: {path}")
        return path
    candidate = Path(output_dir) / "checkpoint.pth"
    if auto_resume and candidate.is_file():
        return candidate
    return None


def load_training_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint and check it carries what resuming needs."""
    ckpt = read_checkpoint(path)
    missing = [k for k in ("model", "epoch", "optimizer") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} cannot be resumed from: it has no {', '.join(missing)} "
                              "(use MODEL.PRETRAINED to start from its weights instead)")
    return ckpt


def load_module_state(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict load with a one-line CheckpointError naming the mismatched tensors."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(line.strip() for line in str(exc).splitlines()[1:4])
        raise CheckpointError(f"{source} does not fit the model: {detail}") from None


def clean_stale_temporaries(output_dir: Path) -> None:
    """Remove temp files a killed save left behind (``save_atomic`` names them ``.NAME.*.tmp``)."""
    for tmp in output_dir.glob(".*.pth.*.tmp"):
        tmp.unlink(missing_ok=True)


__all__ = ["seed_everything", "rng_state", "set_rng_state", "find_resume_checkpoint",
           "load_training_checkpoint", "load_module_state", "clean_stale_temporaries"]
