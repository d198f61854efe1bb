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

from ecvit.errors import CheckpointError
from ecvit.io.checkpoint import read_checkpoint
from ecvit.io.spec import CheckpointSpec
from ecvit.models.registry import is_registered


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


def set_rng_state(state: dict[str, Any], source: str = "the checkpoint") -> None:
    """Restore what :func:`rng_state` captured; a damaged state is a one-line CheckpointError."""
    try:
        _set_rng_state(state)
    except (TypeError, ValueError, RuntimeError, OverflowError, IndexError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{source} cannot be resumed from: rng: its RNG state is damaged "
                              f"({detail})") from None


def _set_rng_state(state: dict[str, Any]) -> None:
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
    """Read a checkpoint and check it carries what resuming needs, each field of its type."""
    ckpt = read_checkpoint(path)
    missing = [k for k in ("model", "epoch", "optimizer") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} cannot be resumed from: it has no {', '.join(missing)} "
                              "(use MODEL.PRETRAINED to start from its weights instead)")
    check_training_state(ckpt, str(path))
    spec = CheckpointSpec.from_checkpoint(ckpt, str(path))
    model = (ckpt.get("config") or {}).get("MODEL")
    if spec is not None and isinstance(model, dict) and model.get("NAME") != spec.model_name \
            and isinstance(model.get("NAME"), str) and is_registered(model["NAME"]):
        model["NAME"] = spec.model_name  # saved before a rename: the run's model by its new name
    return ckpt


def check_training_state(ckpt: dict[str, Any], source: str) -> None:
    """The resume fields' types and shapes, so a crafted or damaged state is one line naming
    the field instead of a traceback deep in ``load_state_dict`` or ``random.setstate``."""
    def bad(key: str, want: str) -> CheckpointError:
        return CheckpointError(f"{source} cannot be resumed from: {key} must be {want}")

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if not is_int(ckpt["epoch"]) or not 0 <= ckpt["epoch"] <= 10**7:
        raise bad("epoch", "a whole number of epochs >= 0")
    if "step" in ckpt and (not is_int(ckpt["step"]) or ckpt["step"] < 0):
        raise bad("step", "a whole number of steps >= 0")
    if not isinstance(ckpt["model"], dict):
        raise bad("model", "a mapping of tensors")
    opt = ckpt["optimizer"]
    if not (isinstance(opt, dict) and isinstance(opt.get("state"), dict)
            and isinstance(opt.get("param_groups"), list)
            and all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in opt["param_groups"])):
        raise bad("optimizer", "an optimizer state_dict (state, param_groups)")
    best = ckpt.get("best_top1", 0.0)
    if isinstance(best, bool) or not isinstance(best, (int, float)):
        raise bad("best_top1", "a number")
    history = ckpt.get("history", [])
    if not isinstance(history, list) or not all(isinstance(r, dict) and is_int(r.get("epoch"))
                                                for r in history):
        raise bad("history", "a list of per-epoch records, each with an integer epoch")
    resumes = ckpt.get("resumes", [])
    if not isinstance(resumes, list) or not all(isinstance(r, dict) for r in resumes):
        raise bad("resumes", "a list of records")
    for key in ("scaler", "model_ema", "progress"):
        if ckpt.get(key) is not None and not isinstance(ckpt[key], dict):
            raise bad(key, "a mapping")
    progress = ckpt.get("progress")
    if progress is not None and not (
            all(is_int(progress.get(k)) and progress[k] >= 0 for k in ("step", "steps", "updates", "seen", "bad"))
            and progress.get("epoch") == ckpt["epoch"] and 0 < progress["step"] < progress["steps"]
            and isinstance(progress.get("loss_sum"), float)):
        raise bad("progress", "where a mid-epoch checkpoint stopped (epoch, step < steps, "
                  "updates, loss_sum, seen, bad)")
    ranks = ckpt.get("rng_ranks") or [ckpt.get("rng")]
    if not isinstance(ranks, list) or not all(_rng_state_ok(r) for r in ranks):
        raise bad("rng" if "rng_ranks" not in ckpt else "rng_ranks",
                  "the RNG states a run saved (torch, python, numpy)")


def _rng_state_ok(state: Any) -> bool:
    """The shape :func:`rng_state` writes; :func:`set_rng_state` still checks the values."""
    if not isinstance(state, dict) or not isinstance(state.get("torch"), torch.Tensor):
        return False
    py, np_state = state.get("python"), state.get("numpy")
    return (isinstance(py, (list, tuple)) and len(py) == 3 and isinstance(py[1], (list, tuple))
            and isinstance(np_state, (list, tuple)) and len(np_state) == 5
            and isinstance(np_state[1], (list, tuple)) and len(np_state[1]) == 624)


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
           "load_training_checkpoint", "check_training_state", "load_module_state", "clean_stale_temporaries"]
