"""Checkpoint files: written atomically, read without ever executing code.

``torch.load`` runs with ``weights_only=True``, so a pickle that would construct arbitrary
Python objects is refused instead of executed; ``.safetensors`` files hold tensors only.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from ecvit.errors import CheckpointError

STATE_DICT_KEYS = ("model", "state_dict", "model_state_dict", "module")


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temp file in the same folder, fsync, then rename over ``path``.

    A crash (or ``kill -9``) at any moment leaves either the old or the new complete file;
    a full disk leaves the old file and raises a CheckpointError that says so.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            kept = "the previous checkpoint is intact" if path.exists() else "nothing was written"
            raise CheckpointError(f"could not write {path}: {exc.strerror or exc}; {kept}") from None
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a ``.pth``/``.bin``/``.safetensors`` file safely into a dict.

    For safetensors the tensors come back under ``"model"`` and any JSON metadata
    (model name, class names ...) is merged into the top level.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(
            f"refusing to load {path}: it holds Python objects that would execute code when "
            f"unpickled, and only tensors and plain containers are accepted ({first})"
        ) from None
    except Exception as exc:  # truncated zip, not a torch file, ...
        raise CheckpointError(f"{path} is not a readable checkpoint: {exc}".splitlines()[0]) from None
    if isinstance(obj, dict):
        return obj
    raise CheckpointError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")


def _read_safetensors(path: Path) -> dict[str, Any]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
            metadata = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from None
    out: dict[str, Any] = {}
    for key, text in metadata.items():
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    out["model"] = tensors
    return out


def extract_state_dict(ckpt: dict[str, Any], prefer_ema: bool = False) -> dict[str, torch.Tensor]:
    """The model weights inside a checkpoint dict, whatever wrapper key they sit under."""
    if prefer_ema and isinstance(ckpt.get("model_ema"), dict):
        state = ckpt["model_ema"]
    else:
        state = next((ckpt[k] for k in STATE_DICT_KEYS if isinstance(ckpt.get(k), dict)), ckpt)
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError("the checkpoint holds no tensors")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors
